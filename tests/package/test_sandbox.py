"""The daemon under the shipped unit's restrictions, imposed without systemd (unit_sandbox.py):
the user (nobody here: the machine's own unprivileged user, no account is added), exactly
the unit's capabilities as ambient ones, no_new_privs, systemd's own @system-service
system call list with the unit's exclusions, the address families, namespace, W^X and
real-time filters, a read-only root but for the output directory, the unit's umask.

* The filters bite: a probe under them gets the errors systemd's would give.
* With the netns drop-in the daemon follows a namespace created after it started (setns,
  NFLOG group bind and IFINDEX's rtnetlink inside it) and logs every packet, tagged.
* Without it (the main unit alone) the same configuration cannot attach, and says so:
  the drop-in is what makes following work, not something the sandbox forgot.
* The example configuration (NFLOG to LOGEMU, JSON and SQLite: the SQL writer's thread,
  ctypes calls) works under the main unit: MemoryDenyWriteExecute is safe for pyulogd.

Debian's /usr/bin/python3 runs the daemon with PYTHONPATH on this tree (the user cannot
reach a Python under /root).
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import sqlite3
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pyulogd.io.netns import NetnsHandle, in_netns
from tests.linux.lab import lines, sh, wait_for
from tests.package.unit_sandbox import NETNS_DROPIN, ROOT, UNIT, Sandbox, cap_mask, status_fields

SRC = ROOT / "src"
PROBE = r"""
import ctypes, json, os, socket
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
def err(fn):
    ctypes.set_errno(0)
    r = fn()
    return ctypes.get_errno() if r in (-1, ctypes.c_void_p(-1).value) else 0
res = {}
try:
    socket.socket(socket.AF_PACKET, socket.SOCK_RAW).close(); res["af_packet"] = 0
except OSError as e:
    res["af_packet"] = e.errno
socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0).close()
res["mmap_wx"] = err(lambda: libc.mmap(None, 4096, 0x2 | 0x4, 0x22, -1, 0))
res["mmap_w"] = err(lambda: libc.mmap(None, 4096, 0x1 | 0x2, 0x22, -1, 0))
res["unshare_uts"] = err(lambda: libc.unshare(0x04000000))
fd = os.open("/proc/self/ns/net", os.O_RDONLY)
res["setns_any"] = err(lambda: libc.setns(fd, 0))
res["setns_net"] = err(lambda: libc.setns(fd, 0x40000000))
res["chroot"] = err(lambda: libc.chroot(b"/"))
try:
    os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(1)); res["sched_rr"] = 0
except OSError as e:
    res["sched_rr"] = e.errno
try:
    open("/etc/pyulogd-sandbox-probe", "w"); res["write_etc"] = 0
except OSError as e:
    res["write_etc"] = e.errno
print(json.dumps(res))
"""


def _why_skip() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("setpriv", "unshare", "systemd-analyze", "ip", "nft", "nsenter"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    if not Path("/usr/bin/python3").exists():
        return "needs Debian's /usr/bin/python3"
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        return "needs user nobody"
    import ctypes.util

    if ctypes.util.find_library("seccomp") is None:
        return "needs libseccomp2"
    return None


pytestmark = [pytest.mark.linux, pytest.mark.skipif(_why_skip() is not None, reason=str(_why_skip()))]


def sandbox(*files: Path) -> Sandbox:
    sb = Sandbox.from_unit(*files)
    assert sb.user == "pyulogd"  # the unit's; the test runs as nobody (the package makes pyulogd)
    sb.user = "nobody"
    return sb


@pytest.fixture()
def out() -> Iterator[Path]:
    """nobody's own directory (0755 under /tmp): what /var/log/pyulogd is to pyulogd."""
    d = Path(tempfile.mkdtemp(prefix="opk-sandbox-"))
    pw = pwd.getpwnam("nobody")
    os.chown(d, pw.pw_uid, pw.pw_gid)
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture()
def namespaces() -> Iterator[list[str]]:
    """Names of namespaces the test made: deleted afterwards whatever happened."""
    made: list[str] = []
    yield made
    for name in made:
        sh("ip", "netns", "del", name, check=False)


def spec_file(sb: Sandbox, out: Path) -> Path:
    f = out / "seccomp.json"
    f.write_text(sb.seccomp_spec())
    f.chmod(0o644)
    return f


def env() -> dict[str, str]:
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(SRC), "LANG": "C.UTF-8"}


def probe(sb: Sandbox, out: Path) -> dict[str, int]:
    r = subprocess.run(sb.argv(spec_file(sb, out), [out], ["/usr/bin/python3", "-c", PROBE]), capture_output=True,
                       text=True, timeout=30, env=env())  # fmt: skip
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)  # type: ignore[no-any-return]


EPERM, EROFS, EAFNOSUPPORT = 1, 30, 97


def test_the_filters_bite(out: Path) -> None:
    main = probe(sandbox(UNIT), out)
    assert main == {"af_packet": EAFNOSUPPORT, "mmap_wx": EPERM, "mmap_w": 0, "unshare_uts": EPERM,
                    "setns_any": EPERM, "setns_net": EPERM, "chroot": EPERM, "sched_rr": EPERM,
                    "write_etc": EROFS}, main  # fmt: skip
    netns = probe(sandbox(UNIT, NETNS_DROPIN), out)
    assert netns == dict(main, setns_net=0), netns  # joining a network namespace, and only that


def follow_conf(out: Path, pattern: str, group: int) -> str:
    return f"""[global]
logfile="{out}/daemon.log"
loglevel=3
stack=log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,json1:JSON

[log1]
group={group}
netns="{pattern}"
netns_rescan=1
netlink_qthreshold=1

[json1]
file="{out}/pkt.json"
sync=1
"""


def add_namespace(name: str, group: int, prefix: str) -> None:
    sh("ip", "netns", "add", name)
    sh("ip", "-n", name, "link", "set", "lo", "up")
    rules = f"""table inet opk {{
  chain out {{ type filter hook output priority 0; policy accept;
    udp dport 9 log prefix "{prefix}" group {group}
  }}
}}"""
    sh("nsenter", f"--net=/run/netns/{name}", "nft", "-f", "-", input=rules)


def nflog_bound(name: str, group: int) -> bool:
    """Whether someone listens to NFLOG ``group`` in the namespace (the example logs at notice
    level, so "entering main loop" is not in its log)."""
    text = sh("nsenter", f"--net=/run/netns/{name}", "cat", "/proc/net/netfilter/nfnetlink_log").stdout
    return any(line.split()[:1] == [str(group)] for line in text.splitlines())


def send(name: str, n: int) -> None:
    h = NetnsHandle.open(f"/run/netns/{name}")
    try:
        with in_netns(h):
            s = __import__("socket").socket(2, 2)  # AF_INET, SOCK_DGRAM, made inside the namespace
    finally:
        h.close()
    with s:
        for i in range(n):
            s.sendto(b"%d" % i, ("127.0.0.1", 9))


class Running:
    """The daemon, started once "entering main loop" is logged (or ``ready()`` says so)."""

    def __init__(self, argv: list[str], out: Path, ready: Callable[[], bool] | None = None) -> None:
        self.out = out
        with open(out / "stderr", "wb") as err:
            self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env=env())
        started = ready or (lambda: "entering main loop" in self.log())
        try:
            wait_for(lambda: started() or self.proc.poll() is not None, 20, "the daemon")
        except AssertionError:
            self.kill()
            raise
        assert self.proc.poll() is None, self.log() + (out / "stderr").read_text()

    def log(self) -> str:
        return "".join(lines(self.out / "daemon.log"))

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def daemon_argv(sb: Sandbox, out: Path, conf: Path, netns: str | None = None) -> list[str]:
    cmd = ["/usr/bin/python3", "-m", "pyulogd", "-c", str(conf), "--no-realtime"]
    argv = sb.argv(spec_file(sb, out), [out], cmd)
    return ["nsenter", f"--net=/run/netns/{netns}", *argv] if netns else argv


def test_following_namespaces_under_the_unit_with_the_netns_dropin(out: Path, namespaces: list[str]) -> None:
    tag = f"opk-{secrets.token_hex(4)}"
    conf = out / "pyulogd.conf"
    conf.write_text(follow_conf(out, f"{tag}-*", 51))
    sb = sandbox(UNIT, NETNS_DROPIN)
    d = Running(daemon_argv(sb, out, conf), out)
    try:
        name = f"{tag}-a"
        namespaces.append(name)
        add_namespace(name, 51, "SANDBOX ")  # after the start: setns happens under the filters
        wait_for(lambda: f"attached network namespace {name}" in d.log() or d.proc.poll() is not None, 10,
                 "the attach")  # fmt: skip
        send(name, 20)
        wait_for(lambda: len(lines(out / "pkt.json")) >= 20 or d.proc.poll() is not None, 10, "20 records")
        status = status_fields(d.proc.pid)  # after an attach: what it keeps, between raises
        sh("ip", "netns", "del", name)
        wait_for(lambda: f"released network namespace {name}" in d.log(), 10, "the release")
    finally:
        rc = d.stop()
    assert rc == 0, d.log()
    assert status["Uid"].split()[0] == str(pwd.getpwnam("nobody").pw_uid)
    # Permitted, raised only around the calls that need them (docs/security.md).
    assert int(status["CapPrm"], 16) == cap_mask({"CAP_NET_ADMIN", "CAP_SYS_ADMIN"})
    assert int(status["CapEff"], 16) == 0
    assert int(status["CapBnd"], 16) == cap_mask({"CAP_NET_ADMIN", "CAP_SYS_ADMIN"})
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2" and int(status["Seccomp_filters"]) >= 5, status
    records = [json.loads(line) for line in lines(out / "pkt.json")]
    assert len(records) == 20
    assert {r["oob.netns"] for r in records} == {name}
    assert {r["oob.prefix"] for r in records} == {"SANDBOX "}
    assert {r["oob.out"] for r in records} == {"lo"}  # IFINDEX's rtnetlink inside the namespace


def test_the_main_unit_alone_cannot_follow_and_says_so(out: Path, namespaces: list[str]) -> None:
    tag = f"opk-{secrets.token_hex(4)}"
    conf = out / "pyulogd.conf"
    conf.write_text(follow_conf(out, f"{tag}-*", 52))
    d = Running(daemon_argv(sandbox(UNIT), out, conf), out)
    try:
        name = f"{tag}-b"
        namespaces.append(name)
        add_namespace(name, 52, "NOPE ")
        wait_for(lambda: name in d.log() or d.proc.poll() is not None, 10, "the failed attach")
        send(name, 3)
    finally:
        rc = d.stop()
    log = d.log()
    assert rc == 0, log  # a namespace that cannot be attached never stops the daemon
    assert f"attached network namespace {name}" not in log, log
    assert f"cannot attach network namespace {name}: unable to open nfnetlink socket: setns: Operation not permitted" \
        in log, log
    assert "nflog.log1.netns_attach_failed=1" in log, log
    assert lines(out / "pkt.json") == []


def test_example_config_under_the_main_unit(out: Path, namespaces: list[str]) -> None:
    """examples/ulogd.conf as the package installs it (paths moved to the output directory)."""
    name = f"opk-{secrets.token_hex(4)}-ex"
    namespaces.append(name)
    add_namespace(name, 5, "EXAMPLE ")
    text = (ROOT / "examples" / "ulogd.conf").read_text()
    text = text.replace("/var/log/pyulogd", str(out)).replace("/usr/share/doc/ulogd2/sqlite3.table",
                                                                 str(ROOT / "examples" / "sqlite3.table"))  # fmt: skip
    conf = out / "pyulogd.conf"
    conf.write_text(text)
    d = Running(daemon_argv(sandbox(UNIT), out, conf, netns=name), out, ready=lambda: nflog_bound(name, 5))
    try:
        send(name, 10)
        wait_for(lambda: len(lines(out / "audit.log")) >= 10 or d.proc.poll() is not None, 10, "10 audit lines")
        status = status_fields(d.proc.pid)
    finally:
        rc = d.stop()
    assert rc == 0, d.log()
    # The example's inputs send no netlink request after start: nothing is kept at all.
    assert int(status["CapPrm"], 16) == int(status["CapEff"], 16) == 0
    assert status["Seccomp"] == "2"
    assert len([x for x in lines(out / "audit.log") if "EXAMPLE " in x]) == 10
    assert len(lines(out / "audit.json")) == 10
    with sqlite3.connect(out / "audit.sqlite") as db:
        assert db.execute("select count(*) from ulog_pkt where oob_prefix = 'EXAMPLE '").fetchone()[0] == 10
    for f in ("audit.log", "audit.json", "audit.sqlite", "pyulogd.log"):
        st = (out / f).stat()
        assert st.st_uid == pwd.getpwnam("nobody").pw_uid and st.st_mode & 0o777 == 0o640, (f, oct(st.st_mode))
