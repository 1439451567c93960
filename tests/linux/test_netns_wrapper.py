"""pyulogd-netns-wrapper against the real kernel: namespaces created and deleted through it.

Every namespace is named pyuw<pid>-..., every file lives in pytest's tmp_path (the wrapper's
settings, template, run directory and the daemons' output), and everything is removed at the end.
The wrapper reads its settings from a file named in a launcher script, as an administrator
would install a second wrapper: the environment can no longer point it elsewhere.
The command-line classification tests at the bottom need neither root nor a kernel.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import pyulogd
from pyulogd.daemon.netns_wrapper import classify, file_stem
from tests.linux.lab import have_root_and_tools, lines, sh, wait_for

_skip = have_root_and_tools()
GROUP = 23
PREFIX = f"pyuw{os.getpid()}"
REAL_IP = shutil.which("ip") or "/usr/sbin/ip"
SRC = str(Path(pyulogd.__file__).resolve().parents[1])
# The daemon gets a fixed environment, so the code under test is named on its command line.
DAEMON = shlex.join(["/usr/bin/env", f"PYTHONPATH={SRC}", sys.executable, "-m", "pyulogd"])


def wrapper_cmd() -> list[str]:
    """The installed console script (what rootwrap would run), else the module."""
    for d in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        exe = os.path.join(d, "pyulogd-netns-wrapper")
        if os.access(exe, os.X_OK):
            return [exe]
    return [sys.executable, "-m", "pyulogd.daemon.netns_wrapper"]


TEMPLATE = f"""# per-namespace test config for @NETNS@ (id @NETNS_ID@)
[global]
logfile="@OUT@/@NETNS@.log"
loglevel=3
stack=log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,json1:JSON

[log1]
group={GROUP}
netlink_qthreshold=1

[json1]
file="@OUT@/@NETNS@.json"
sync=1
"""


class Env:
    """A wrapper set-up in tmp_path, and the namespaces a test made through it."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.out = tmp / "out"
        self.run = tmp / "run"
        self.out.mkdir()
        self.spy_log = tmp / "spy.log"
        self.names: list[str] = []
        # The "real ip" the wrapper calls is a spy: before every `netns delete` it records which
        # processes are still inside the namespace, then execs the real ip.
        self.spy = tmp / "ip-spy"
        self.spy.write_text(f"""#!/bin/sh
prev= del=
for arg in "$@"; do
    if [ -n "$del" ]; then
        echo "delete $arg pids:$({REAL_IP} netns pids "$arg" 2>/dev/null | tr '\\n' ' ')" >> {self.spy_log}
        break
    fi
    case "$prev" in net|netn|netns) case "$arg" in d|de|del|dele|delet|delete) del=1 ;; esac ;; esac
    prev=$arg
done
exec {REAL_IP} "$@"
""")
        self.spy.chmod(0o755)
        (tmp / "template.conf.in").write_text(TEMPLATE.replace("@OUT@", str(self.out)))
        self.conf = tmp / "wrapper.conf"
        self.write_conf()
        # A wrapper whose settings file is this test's: what an administrator would write.
        self.launcher = tmp / "pyulogd-netns-wrapper"
        self.launcher.write_text(f"#!{sys.executable}\nimport sys\n"
                                 "from pyulogd.daemon.netns_wrapper import main\n"
                                 f"sys.exit(main(config={str(self.conf)!r}))\n")
        self.launcher.chmod(0o755)

    def write_conf(self, **extra: str) -> None:
        settings = {
            "ip": str(self.spy),
            "match": f"{PREFIX}-*, other-{PREFIX}",
            "template": str(self.tmp / "template.conf.in"),
            "rundir": str(self.run),
            "daemon": DAEMON,
            "syslog": "no",
            "stop_timeout": "5",
        }
        settings.update(extra)
        self.conf.write_text("# test\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))

    def wrap(self, *args: str, input: str | None = None, env: dict[str, str] | None = None,
             text: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.launcher), *args], env=env, capture_output=True, text=text, input=input,
                              timeout=60)

    def name(self, suffix: str) -> str:
        n = f"{PREFIX}-{suffix}"
        self.names.append(n)
        return n

    def files(self, name: str) -> dict[str, Path]:
        stem = file_stem(name)
        return {k: self.run / f"{stem}.{k}" for k in ("conf", "pid", "name")}

    def pid(self, name: str) -> int:
        return int(self.files(name)["pid"].read_text())

    def cleanup(self) -> None:
        """Kill what runs in each namespace and delete it; names go as argv, ip's output as bytes
        (it repeats a name that is not UTF-8)."""
        for n in self.names:
            pids = subprocess.run([REAL_IP, "netns", "pids", n], capture_output=True, timeout=30).stdout
            for p in pids.split():
                try:
                    os.kill(int(p), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run([REAL_IP, "netns", "del", n], capture_output=True, timeout=30)


@pytest.fixture()
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    try:
        yield e
    finally:
        e.cleanup()


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def netns_inode(name: str) -> tuple[int, int]:
    st = os.stat(f"/run/netns/{name}")
    return st.st_dev, st.st_ino


def proc_netns(pid: int) -> tuple[int, int]:
    st = os.stat(f"/proc/{pid}/ns/net")
    return st.st_dev, st.st_ino


def nflog_groups(name: str) -> set[int]:
    out = sh("cat", "/proc/net/netfilter/nfnetlink_log", ns=name, check=False).stdout
    return {int(line.split()[0]) for line in out.splitlines() if line.strip()}


def log_rule(name: str) -> None:
    sh("ip", "link", "set", "lo", "up", ns=name)
    sh("nft", "-f", "-", ns=name, input=f"""table inet t {{
  chain input {{ type filter hook input priority 0; policy accept;
    udp dport 9999 log prefix "HIT-{name} " group {GROUP} drop
  }}
}}""")


def send_udp(name: str, n: int) -> None:
    code = ("import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"for i in range({n}): s.sendto(b'x%d' % i, ('127.0.0.1', 9999))")
    sh(sys.executable, "-c", code, ns=name)


@pytest.mark.linux
@pytest.mark.skipif(_skip is not None, reason=_skip or "")
def test_add_starts_a_daemon_inside_that_logs_and_delete_stops_it_first(env: Env) -> None:
    names = [env.name("a"), env.name("b")]
    for n in names:
        r = env.wrap("netns", "add", n)
        assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
        assert os.path.exists(f"/run/netns/{n}")
    pids = {n: env.pid(n) for n in names}
    for n, pid in pids.items():
        assert alive(pid)
        # The daemon runs in the namespace it was started for, not in ours.
        assert proc_netns(pid) == netns_inode(n) != proc_netns(os.getpid())
        conf = env.files(n)["conf"].read_text()
        assert env.files(n)["name"].read_text() == f"{n}\n"
        assert f'file="{env.out}/{n}.json"' in conf and f"(id {n.split('-', 1)[1]})" in conf
        wait_for(lambda n=n: GROUP in nflog_groups(n), 10, f"NFLOG group bound in {n}")  # type: ignore[misc]

    for k, n in enumerate(names):
        log_rule(n)
        send_udp(n, 5 + k)
    for k, n in enumerate(names):
        path = env.out / f"{n}.json"
        wait_for(lambda path=path, k=k: len(lines(path)) >= 5 + k, 10, f"JSON lines of {n}")  # type: ignore[misc]
        recs = [json.loads(x) for x in lines(path)]
        assert len(recs) == 5 + k
        assert {r["oob.prefix"] for r in recs} == {f"HIT-{n} "}
        assert {r["dest_port"] for r in recs} == {9999}

    for n in names:
        r = env.wrap("netns", "delete", n)
        assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
        assert not alive(pids[n])
        assert not os.path.exists(f"/run/netns/{n}")
        assert not any(f.exists() for f in env.files(n).values())
    # When ip deleted each namespace, nothing was left running in it.
    assert env.spy_log.read_text().splitlines() == [f"delete {n} pids:" for n in names]


@pytest.mark.linux
@pytest.mark.skipif(_skip is not None, reason=_skip or "")
def test_abbreviations_and_non_matching_names(env: Env) -> None:
    a, other = env.name("abbr"), f"pyuv{os.getpid()}-x"
    env.names.append(other)
    r = env.wrap("net", "a", a)  # iproute2 accepts both abbreviations
    assert r.returncode == 0, r.stderr
    pid = env.pid(a)
    assert proc_netns(pid) == netns_inode(a)
    r = env.wrap("netns", "add", other)  # not matched by the globs: plain ip
    assert (r.returncode, r.stderr) == (0, "")
    assert not any(f.exists() for f in env.files(other).values())
    assert sh(REAL_IP, "netns", "pids", other).stdout.strip() == ""
    r = env.wrap("-4", "netns", "del", a)
    assert r.returncode == 0, r.stderr
    assert not alive(pid) and not os.path.exists(f"/run/netns/{a}")
    assert env.spy_log.read_text().splitlines() == [f"delete {a} pids:"]
    r = env.wrap("netns", "del", other)
    assert r.returncode == 0 and not os.path.exists(f"/run/netns/{other}")


@pytest.mark.linux
@pytest.mark.skipif(_skip is not None, reason=_skip or "")
def test_pass_through_output_status_and_stdin(env: Env) -> None:
    def both(*args: str, input: str | None = None) -> tuple[subprocess.CompletedProcess[str], ...]:
        real = subprocess.run([REAL_IP, *args], capture_output=True, text=True, input=input, timeout=30)
        return real, env.wrap(*args, input=input)

    # Only commands whose output does not depend on what other processes do meanwhile
    # (`ip netns list` would change while another test or benchmark adds a namespace).
    ok: list[tuple[str, ...]] = [("-V",), ("link", "show", "lo"), ("-o", "-4", "addr", "show", "dev", "lo")]
    failing: list[tuple[str, ...]] = [("link", "show", "dev", "pyuw-nonexistent0"),
                                      ("netns", "delete", f"{PREFIX}-never"), ("-nosuchoption",),
                                      ("link", "frobnicate"), ("netns", "add")]
    for args in ok:
        real, wrapped = both(*args)
        assert real.returncode == 0
        assert (wrapped.returncode, wrapped.stdout, wrapped.stderr) == (real.returncode, real.stdout, real.stderr)
    for args in failing:
        real, wrapped = both(*args)
        assert real.returncode != 0 and real.stderr
        assert (wrapped.returncode, wrapped.stdout, wrapped.stderr) == (real.returncode, real.stdout, real.stderr)
    real, wrapped = both("-batch", "-", input="link show lo\naddr show dev lo\n")  # stdin reaches ip
    assert real.returncode == 0 and "lo" in real.stdout
    assert (wrapped.returncode, wrapped.stdout, wrapped.stderr) == (real.returncode, real.stdout, real.stderr)
    # `ip netns exec` exit status of the command inside.
    n = env.name("exec")
    assert env.wrap("netns", "add", n).returncode == 0
    r = env.wrap("netns", "exec", n, "sh", "-c", "echo out; echo err >&2; exit 7")
    assert (r.returncode, r.stdout, r.stderr) == (7, "out\n", "err\n")
    assert env.wrap("netns", "del", n).returncode == 0


@pytest.mark.linux
@pytest.mark.skipif(_skip is not None, reason=_skip or "")
def test_a_daemon_that_fails_to_start_does_not_change_ips_status(env: Env) -> None:
    (env.tmp / "bad.conf.in").write_text("[global]\nstack=log1:NFLOG,nosuch1:NOSUCHPLUGIN\n[log1]\ngroup=5\n")
    env.write_conf(template=str(env.tmp / "bad.conf.in"))
    n = env.name("bad")
    r = env.wrap("netns", "add", n)
    assert r.returncode == 0 and r.stdout == ""
    assert "pyulogd failed to start" in r.stderr and n in r.stderr
    assert os.path.exists(f"/run/netns/{n}")
    assert not any(f.exists() for f in env.files(n).values())
    assert env.wrap("netns", "del", n).returncode == 0
    # A missing template: same, ip's result stands.
    env.write_conf(template=str(env.tmp / "missing.conf.in"))
    m = env.name("notemplate")
    r = env.wrap("netns", "add", m)
    assert r.returncode == 0 and "cannot read template" in r.stderr
    assert env.wrap("netns", "del", m).returncode == 0
    # ip's own failure (the namespace already exists) is ip's status and message, and no daemon.
    env.write_conf()
    d = env.name("dup")
    assert env.wrap("netns", "add", d).returncode == 0
    first = env.pid(d)
    real = subprocess.run([REAL_IP, "netns", "add", d], capture_output=True, text=True)
    r = env.wrap("netns", "add", d)
    assert (r.returncode, r.stderr) == (real.returncode, real.stderr) and r.returncode != 0
    assert env.pid(d) == first and alive(first)
    assert env.wrap("netns", "del", d).returncode == 0 and not alive(first)


@pytest.mark.linux
@pytest.mark.skipif(_skip is not None, reason=_skip or "")
def test_broken_wrapper_config_passes_everything_to_ip(env: Env) -> None:
    env.conf.write_text("match = x\nno such key\n")
    real = subprocess.run([REAL_IP, "link", "show", "lo"], capture_output=True, text=True)
    r = env.wrap("link", "show", "lo")  # unrelated commands: ip's output only
    assert (r.returncode, r.stdout, r.stderr) == (real.returncode, real.stdout, real.stderr)
    n = env.name("badconf")
    r = env.wrap("netns", "add", n)  # a namespace add: created, no daemon, and the wrapper says why
    assert r.returncode == 0 and "configuration error" in r.stderr and os.path.exists(f"/run/netns/{n}")
    assert not env.run.exists() and sh(REAL_IP, "netns", "pids", n).stdout.strip() == ""
    r = env.wrap("netns", "delete", n)
    assert r.returncode == 0 and not os.path.exists(f"/run/netns/{n}")


@pytest.mark.linux
@pytest.mark.skipif(_skip is not None, reason=_skip or "")
def test_sigkill_after_stop_timeout(env: Env) -> None:
    # A "daemon" that ignores SIGTERM; its command line names the rendered config.
    fake = env.tmp / "stubborn"
    fake.write_text(f"""#!/bin/sh
# called as: stubborn -d -c CONF -p PIDFILE; the pid is written once SIGTERM is ignored
setsid {sys.executable} -c '
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
with open(sys.argv[2], "w") as f:
    f.write(str(os.getpid()))
time.sleep(600)' "$3" "$5" </dev/null >/dev/null 2>&1 &
while [ ! -s "$5" ]; do sleep 0.02; done
""")
    fake.chmod(0o755)
    env.write_conf(daemon=str(fake), stop_timeout="0.5")
    n = env.name("stubborn")
    assert env.wrap("netns", "add", n).returncode == 0
    pid = env.pid(n)
    assert alive(pid) and proc_netns(pid) == netns_inode(n)
    t0 = time.monotonic()
    r = env.wrap("netns", "delete", n)
    assert r.returncode == 0
    assert "sending SIGKILL" in r.stderr
    assert not alive(pid) and time.monotonic() - t0 < 5
    assert env.spy_log.read_text().splitlines() == [f"delete {n} pids:"]


@pytest.mark.linux
@pytest.mark.skipif(_skip is not None, reason=_skip or "")
def test_parallel_adds_and_deletes(env: Env) -> None:
    names = [env.name(f"par{i}") for i in range(8)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda n: env.wrap("netns", "add", n), names))
    assert [r.returncode for r in results] == [0] * len(names), [r.stderr for r in results]
    pids = {n: env.pid(n) for n in names}
    for n, pid in pids.items():
        assert alive(pid) and proc_netns(pid) == netns_inode(n)
    status = env.wrap("--wrapper-status")
    assert status.returncode == 0 and status.stdout.count("running pid") == len(names)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda n: env.wrap("netns", "delete", n), names))
    assert [r.returncode for r in results] == [0] * len(names), [r.stderr for r in results]
    assert not any(alive(p) for p in pids.values())
    assert sorted(env.spy_log.read_text().splitlines()) == sorted(f"delete {n} pids:" for n in names)
    assert [p.name for p in env.run.iterdir()] == []


@pytest.mark.linux
@pytest.mark.skipif(_skip is not None, reason=_skip or "")
def test_all_netns_delete_stops_every_daemon_first(env: Env) -> None:
    # The real `ip -all netns delete` would delete every namespace of the machine: this stand-in
    # records what is still running in ours when it is called, and deletes only those.
    names = [env.name("all0"), env.name("all1")]
    fake = env.tmp / "ip-all"
    fake.write_text(f"""#!/bin/sh
if [ "$1" = -all ]; then
    for n in {' '.join(names)}; do
        echo "all $n pids:$({REAL_IP} netns pids $n | tr '\\n' ' ')" >> {env.spy_log}
        {REAL_IP} netns delete $n
    done
    exit 0
fi
exec {REAL_IP} "$@"
""")
    fake.chmod(0o755)
    env.write_conf(ip=str(fake))
    for n in names:
        assert env.wrap("netns", "add", n).returncode == 0
    pids = [env.pid(n) for n in names]
    assert all(alive(p) for p in pids)
    r = env.wrap("-all", "netns", "delete")
    assert (r.returncode, r.stderr) == (0, "")
    assert not any(alive(p) for p in pids)
    assert env.spy_log.read_text().splitlines() == [f"all {n} pids:" for n in names]
    assert [p.name for p in env.run.iterdir()] == []


@pytest.mark.linux
@pytest.mark.skipif(_skip is not None, reason=_skip or "")
def test_shell_shim_in_front(env: Env) -> None:
    """examples/netns-wrapper/ip: ip directly, the wrapper only for netns add/attach/delete."""
    shim = env.tmp / "ip"
    text = (Path(__file__).resolve().parents[2] / "examples" / "netns-wrapper" / "ip").read_text()
    text = text.replace("REAL_IP=/usr/sbin/ip", f"REAL_IP={env.spy}")
    text = text.replace("WRAPPER=/usr/local/bin/pyulogd-netns-wrapper", f"WRAPPER={env.launcher}")
    shim.write_text(text)
    shim.chmod(0o755)

    def via_shim(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(shim), *args], capture_output=True, text=True, timeout=60)

    real = subprocess.run([REAL_IP, "link", "show", "lo"], capture_output=True, text=True)
    r = via_shim("link", "show", "lo")
    assert (r.returncode, r.stdout, r.stderr) == (real.returncode, real.stdout, real.stderr)
    real = subprocess.run([REAL_IP, "route", "get", "300.0.0.1"], capture_output=True, text=True)
    r = via_shim("route", "get", "300.0.0.1")
    assert real.returncode != 0 and (r.returncode, r.stdout, r.stderr) == (real.returncode, real.stdout, real.stderr)
    n = env.name("shim")
    assert via_shim("netns", "a", n).returncode == 0
    pid = env.pid(n)
    assert proc_netns(pid) == netns_inode(n)
    assert via_shim("net", "del", n).returncode == 0
    assert not alive(pid) and not os.path.exists(f"/run/netns/{n}")
    assert env.spy_log.read_text().splitlines() == [f"delete {n} pids:"]


def _exploit(tag: str) -> str:
    """The issue's exploit, under this test's prefix: the same lines, other file names."""
    return (f'{PREFIX}-e"\nstack=ux9:UNIXSOCK,j9:JSON\n[ux9]\nsocket_path="{tag}-evil.sock"\nperms=0666\n'
            f'[j9]\nfile="{tag}-evil.json"\n[zz\n#')


def _evil_files(env: Env, tag: str) -> list[Path]:
    """Where the exploit's relative paths would land: the daemon's cwd (/), and ours."""
    return [d / f"{tag}-evil.{ext}" for d in (Path("/"), env.tmp, env.out, env.run, Path.cwd())
            for ext in ("sock", "json")]


@pytest.mark.linux
@pytest.mark.skipif(_skip is not None, reason=_skip or "")
def test_the_issues_exploit_gets_no_daemon_and_keeps_ips_status(env: Env) -> None:
    tag = f"{PREFIX}{secrets.token_hex(4)}"
    name = _exploit(tag)
    env.names.append(name)
    evil = _evil_files(env, tag)
    try:
        r = env.wrap("netns", "add", name)
        assert r.returncode == 0 and r.stdout == ""
        assert os.path.exists(f"/run/netns/{name}")  # ip did its job
        # No daemon, so no socket for anyone to write to, and no file written.
        assert [p for p in evil if p.exists()] == []
        assert sh(REAL_IP, "netns", "pids", name).stdout.strip() == ""
        assert not env.run.exists() or list(env.run.iterdir()) == []
        # One line on stderr, the name escaped, the reason given.
        assert r.stderr.count("\n") == 1 and "\r" not in r.stderr
        assert r.stderr.startswith(f"pyulogd-netns-wrapper: netns '{PREFIX}-e\"\\nstack=ux9:UNIXSOCK,j9:JSON\\n")
        assert "not starting pyulogd: unsafe name: character '\"'" in r.stderr
        # ip's own failure stays ip's: status and message (here the name exists already).
        real = subprocess.run([REAL_IP, "netns", "add", name], capture_output=True, text=True)
        r = env.wrap("netns", "add", name)
        assert real.returncode != 0 and r.returncode == real.returncode and real.stderr in r.stderr
        r = env.wrap("netns", "delete", name)
        assert (r.returncode, r.stderr) == (0, "") and not os.path.exists(f"/run/netns/{name}")
    finally:
        for p in evil:
            if p.exists() or p.is_symlink():
                p.unlink()


@pytest.mark.linux
@pytest.mark.skipif(_skip is not None, reason=_skip or "")
def test_hostile_names_get_no_daemon_and_keep_ips_status(env: Env) -> None:
    rnd = secrets.token_hex(3)
    hostile = {
        "quote": (f'{PREFIX}-{rnd}q"x', "character '\"'"),
        "newline": (f"{PREFIX}-{rnd}n\n[x]", "character '\\n'"),
        "cr": (f"{PREFIX}-{rnd}r\rstack=x", "character '\\r'"),
        "hash": (f"{PREFIX}-{rnd}#x", "character '#'"),
        "bracket": (f"{PREFIX}-{rnd}[x]", "character '['"),
        "not utf-8": (os.fsdecode(f"{PREFIX}-{rnd}".encode() + b"\xff\xfe"), "character '\\xff'"),
        "dotdot": (f"{PREFIX}-{rnd}..x", "contains '..'"),
    }
    for what, (name, why) in hostile.items():
        env.names.append(name)
        r = env.wrap("netns", "add", name, text=False)
        err = r.stderr.decode()  # the wrapper's own line is ASCII whatever the name
        assert (r.returncode, r.stdout) == (0, b""), what
        assert os.path.exists(os.path.join(b"/run/netns", os.fsencode(name))), what
        assert sh(REAL_IP, "netns", "pids", name).stdout.strip() == "", what
        assert err.count("\n") == 1 and err.isascii() and "\r" not in err, (what, err)
        assert "not starting pyulogd: unsafe name" in err and why in err, (what, err)
        r = env.wrap("netns", "del", name)
        assert (r.returncode, r.stderr) == (0, ""), what
        assert not os.path.exists(os.path.join(b"/run/netns", os.fsencode(name))), what
    assert not env.run.exists() or list(env.run.iterdir()) == []
    # Longer than ip's limit: ip refuses it, and the wrapper's status is ip's.
    too_long = f"{PREFIX}-" + "x" * (256 - len(PREFIX) - 1)
    real = subprocess.run([REAL_IP, "netns", "add", too_long], capture_output=True, text=True)
    r = env.wrap("netns", "add", too_long)
    assert real.returncode != 0 and r.returncode == real.returncode and real.stderr in r.stderr
    assert "256 bytes long" in r.stderr


@pytest.mark.linux
@pytest.mark.skipif(_skip is not None, reason=_skip or "")
def test_a_255_byte_name_gets_a_daemon_with_short_file_names(env: Env) -> None:
    # The template must not put the name into a file name: NAME.json would be too long.
    (env.tmp / "long.conf.in").write_text(TEMPLATE.replace("@OUT@/@NETNS@", f"{env.out}/long"))
    env.write_conf(template=str(env.tmp / "long.conf.in"))
    n = env.name(secrets.token_hex(3) + "-" + "l" * (255 - len(PREFIX) - 8))
    assert len(n) == 255
    r = env.wrap("netns", "add", n)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    pid = env.pid(n)
    assert alive(pid) and proc_netns(pid) == netns_inode(n)
    assert env.files(n)["name"].read_text() == f"{n}\n"
    status = env.wrap("--wrapper-status")
    assert status.stdout == f"{n}\trunning pid {pid}\tnetns present\n"
    r = env.wrap("netns", "del", n)
    assert (r.returncode, r.stderr) == (0, "") and not alive(pid)
    assert list(env.run.iterdir()) == []


@pytest.mark.linux
@pytest.mark.skipif(_skip is not None, reason=_skip or "")
def test_the_callers_environment_chooses_nothing(env: Env) -> None:
    """Neither the settings nor the daemon's command or environment come from the caller's environment."""
    marker = env.tmp / "owned"
    evil = dict(os.environ, PYULOGD_NETNS_DAEMON=f"/bin/sh -c 'touch {marker}'",
                PYULOGD_NETNS_IP="/bin/false", PYULOGD_NETNS_RUNDIR=str(env.tmp / "evil-run"),
                PYULOGD_NETNS_TEMPLATE=str(env.tmp / "evil.in"), PYUW_CALLER_SECRET="1")
    env.write_conf(ip=REAL_IP)  # the spy is a shell script, and a shell adds PWD
    n = env.name("envsafe")
    r = env.wrap("netns", "add", n, env=evil)
    assert (r.returncode, r.stderr) == (0, "")
    pid = env.pid(n)  # started from the settings file's daemon and run directory
    assert alive(pid) and not marker.exists() and not (env.tmp / "evil-run").exists()
    with open(f"/proc/{pid}/environ", "rb") as f:
        environ = dict(v.split(b"=", 1) for v in f.read().split(b"\0") if v)
    assert environ == {b"PATH": b"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                       b"PROCESS_TAG": f"pyulogd-{n}".encode(), b"PYTHONPATH": SRC.encode()}
    assert env.wrap("netns", "del", n, env=evil).returncode == 0 and not alive(pid)
    # The console script itself: the old variables, the settings file's name among them, are ignored.
    evil["PYULOGD_NETNS_WRAPPER_CONF"] = str(env.conf)
    r = subprocess.run([*wrapper_cmd(), "--wrapper-check"], env=evil, capture_output=True, text=True, timeout=60)
    assert str(env.conf) not in r.stdout and str(marker) not in r.stdout and "/bin/false" not in r.stdout
    assert ("ignored:       PYULOGD_NETNS_DAEMON, PYULOGD_NETNS_IP, PYULOGD_NETNS_RUNDIR, "
            "PYULOGD_NETNS_TEMPLATE, PYULOGD_NETNS_WRAPPER_CONF") in r.stdout


@pytest.mark.linux
@pytest.mark.skipif(_skip is not None, reason=_skip or "")
def test_settings_template_or_rundir_others_could_write_are_refused(env: Env) -> None:
    n = env.name("perm")
    env.conf.chmod(0o666)  # settings: pass everything to ip, manage nothing
    r = env.wrap("netns", "add", n)
    assert r.returncode == 0 and "configuration error" in r.stderr and "writable by group or others" in r.stderr
    assert sh(REAL_IP, "netns", "pids", n).stdout.strip() == ""
    assert env.wrap("netns", "del", n).returncode == 0
    env.conf.chmod(0o644)
    (env.tmp / "template.conf.in").chmod(0o664)
    r = env.wrap("netns", "add", n)
    assert r.returncode == 0 and "refusing the template" in r.stderr and "writable by group or others" in r.stderr
    assert sh(REAL_IP, "netns", "pids", n).stdout.strip() == ""
    assert env.wrap("netns", "del", n).returncode == 0
    (env.tmp / "template.conf.in").chmod(0o644)
    env.run.mkdir(exist_ok=True)
    env.run.chmod(0o777)
    r = env.wrap("netns", "add", n)
    assert r.returncode == 0 and f"run directory {env.run}" in r.stderr and "writable by group" in r.stderr
    assert sh(REAL_IP, "netns", "pids", n).stdout.strip() == ""
    assert env.wrap("netns", "del", n).returncode == 0


@pytest.mark.linux
@pytest.mark.skipif(_skip is not None, reason=_skip or "")
def test_a_daemon_started_by_an_earlier_version_is_still_stopped_on_delete(env: Env) -> None:
    """Earlier versions named the files RUNDIR/NAME.conf and NAME.pid: an upgrade must not leave
    such a daemon holding its namespace after `ip netns delete`."""
    n = env.name("legacy")
    sh(REAL_IP, "netns", "add", n)
    env.run.mkdir(mode=0o755)
    conf, pidf = env.run / f"{n}.conf", env.run / f"{n}.pid"
    conf.write_text(TEMPLATE.replace("@OUT@", str(env.out)).replace("@NETNS@", n).replace("@NETNS_ID@", "legacy"))
    sh(REAL_IP, "netns", "exec", n, *shlex.split(DAEMON), "-d", "-c", str(conf), "-p", str(pidf))
    pid = int(pidf.read_text())
    assert alive(pid) and proc_netns(pid) == netns_inode(n)
    status = env.wrap("--wrapper-status")
    assert status.stdout == f"{n}\trunning pid {pid}\tnetns present\n"
    r = env.wrap("netns", "delete", n)
    assert (r.returncode, r.stderr) == (0, "") and not alive(pid)
    assert env.spy_log.read_text().splitlines() == [f"delete {n} pids:"]
    assert list(env.run.iterdir()) == []


# ---------------------------------------------------------------- no root needed


@pytest.mark.parametrize(("args", "kind", "name"), [
    (["netns", "add", "qrouter-1"], "add", "qrouter-1"),
    (["netns", "a", "x"], "add", "x"),
    (["net", "ad", "x"], "add", "x"),
    (["netns", "attach", "x", "1234"], "add", "x"),
    (["ne", "add", "x"], "other", ""),  # "ne" is neighbor
    (["-4", "-o", "netns", "del", "x"], "delete", "x"),
    (["netns", "d", "x"], "delete", "x"),
    (["-all", "netns", "delete"], "delete-all", ""),
    (["-a", "netns", "del", "x"], "delete-all", ""),  # ip deletes all of them, whatever the name
    (["-n", "x", "netns", "add", "y"], "other", ""),
    (["-n", "x", "netns", "delete", "y"], "delete", "y"),
    (["-c=never", "-rc", "4096", "netns", "add", "x"], "add", "x"),
    (["-batch", "f"], "other", ""),
    (["-b", "-", "netns", "add", "x"], "other", ""),
    (["-all", "netns", "exec", "true"], "other", ""),
    (["netns", "exec", "x", "ip", "netns", "add", "y"], "other", ""),
    (["netns", "list"], "other", ""),
    (["netns", "add"], "other", ""),
    (["-V", "netns", "add", "x"], "other", ""),
    (["-nosuch", "netns", "add", "x"], "other", ""),
    (["--", "netns", "add", "x"], "add", "x"),
    (["netns", "add", 'q-e"\n[x]\n#'], "add", 'q-e"\n[x]\n#'),  # a hostile name reaches the name checks whole
    ([], "other", ""),
])
def test_classify_like_iproute2(args: list[str], kind: str, name: str) -> None:
    c = classify(args)
    assert (c.kind, c.name) == (kind, name)


SPOOL_TEMPLATE = f"""[global]
logfile="@OUT@/@NETNS@.log"
loglevel=3
wal=1
stack=log1:NFLOG,base1:BASE,ip2str1:IP2STR,json1:JSON

[log1]
group={GROUP}
netlink_qthreshold=1

[json1]
mode=tcp
host="127.0.0.1"
port=1
queue=0
"""


def _spooled_records(path: Path) -> int:
    """Records in a network output's spool directory (frames of (data, records) rows)."""
    from pyulogd.io.spool import Spool

    spool = Spool(str(path), 1 << 30)
    spool.open()
    n = 0
    try:
        while (frame := spool.peek()) is not None:
            n += sum(int(row[1]) for row in frame.rows)
            spool.ack(frame)
    finally:
        spool.close()
    return n


@pytest.mark.linux
@pytest.mark.skipif(_skip is not None, reason=_skip or "")
def test_each_daemon_spools_and_logs_in_directories_of_its_own(env: Env) -> None:
    """One template, so the same instance ids in every rendered config: with the defaults, each
    namespace's daemon still gets its own spool (/var/spool/pyulogd/ns-HASH/json1) and its own
    write-ahead log (/var/lib/pyulogd/wal/ns-HASH), so both spill while their peer is away (one
    shared spool: the second could not lock it and would drop)."""
    (env.tmp / "template.conf.in").write_text(SPOOL_TEMPLATE.replace("@OUT@", str(env.out)))
    names = [env.name("spool-a"), env.name("spool-b")]
    dirs = [Path("/var/spool/pyulogd") / file_stem(n) for n in names]
    dirs += [Path("/var/lib/pyulogd/wal") / file_stem(n) for n in names]
    try:
        for n in names:
            r = env.wrap("netns", "add", n)
            assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
            wait_for(lambda n=n: GROUP in nflog_groups(n), 10, f"NFLOG group bound in {n}")  # type: ignore[misc]
        for k, n in enumerate(names):
            log_rule(n)
            send_udp(n, 5 + k)
        for k, n in enumerate(names):
            spool = dirs[k] / "json1"
            wait_for(lambda spool=spool: spool.is_dir() and any(p.suffix == ".seg" and p.stat().st_size > 16
                                                                for p in spool.iterdir()),
                     10, f"the spool of {n}")  # type: ignore[misc]  # fmt: skip
        for n in names:
            r = env.wrap("netns", "delete", n)  # SIGTERM: what is in memory goes to the spool too
            assert r.returncode == 0
        for k, n in enumerate(names):
            assert _spooled_records(dirs[k] / "json1") == 5 + k, f"records of {n} in its spool"
            assert (dirs[2 + k] / "state").exists()  # its own write-ahead log
            log = (env.out / f"{n}.log").read_text()
            assert "cannot use spool" not in log and "spool_failed" not in log, log
    finally:
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
