"""``pyulogd --check-config``: every error with file and line, exit status 0/1/2, and nothing
opened, bound, connected or created while checking (an audit hook watches the real run)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pyulogd.daemon import check
from pyulogd.daemon.cli import main
from tests.privs import nobody, nobody_can, reachable_tmp, why_skip

ROOT = Path(__file__).resolve().parents[2]

BAD = """[global]
logfile="TMP/nodir/daemon.log"
loglevel=loud
nonsense=1
metrics="192.0.2.7:9317"
stack=log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,print1:PRINTPKT,emu1:LOGEMU
stack=log2:NFLOG,base1:BASE,ip2str1:IP2STR,json1:JSON
stack=x1:NOSUCH,emu1:LOGEMU

[log1]
group=1
nope=2
netlink_socket_buffer_size=big

[emu1]
file="TMP/nodir2/emu.log"
sync=2x

[log2]
group=2
network_namespace_path="/run/netns/pyu-opsd-never-made"

[json1]
file="TMP/out.json"
mode=carrier-pigeon
"""


def run_check(path: Path) -> tuple[int, list[str], str]:
    out, err = io.StringIO(), io.StringIO()
    code = check.main(str(path), out=out, err=err)
    return code, err.getvalue().splitlines(), out.getvalue()


def test_every_error_with_file_and_line(tmp_path: Path) -> None:
    conf = tmp_path / "bad.conf"
    conf.write_text(BAD.replace("TMP", str(tmp_path)))
    code, lines, out = run_check(conf)
    assert code == 1 and out == ""
    p = str(conf)
    expected = [
        f"{p}:2: can't open logfile '{tmp_path}/nodir/daemon.log': No such file or directory",
        f"{p}:3: loglevel needs an integer, not 'loud'",
        f"{p}:4: unknown config key 'nonsense' in [global]",
        f"{p}:5: metrics: 192.0.2.7 is not a loopback address",
        f"{p}:8: can't find requested plugin NOSUCH",
        f"{p}:12: unknown option 'nope' for NFLOG instance 'log1'",
        f"{p}:13: option 'netlink_socket_buffer_size' of 'log1': needs a size in bytes",
        f"{p}:16: LOGEMU 'emu1': file '{tmp_path}/nodir2/emu.log': directory '{tmp_path}/nodir2' does not exist",
        f"{p}:17: option 'sync' of 'emu1': needs 0 or 1",
        f"{p}:21: warning: NFLOG 'log2': network_namespace_path '/run/netns/pyu-opsd-never-made': does not exist",
        f"{p}:25: option 'mode' of 'json1': unknown mode 'carrier-pigeon'",
    ]
    for want in expected:
        assert any(line.startswith(want) for line in lines), f"missing: {want}\n" + "\n".join(lines)
    errors = [line for line in lines[:-1] if ": warning: " not in line]
    assert lines[-1] == f"{p}: {len(errors)} error(s)" and len(errors) == len(expected) - 1
    # In line order, each once.
    numbers = [int(line[len(p) + 1:].split(":")[0]) for line in lines[:-1]]
    assert numbers == sorted(numbers) and len(set(lines)) == len(lines)


def test_a_good_config_exits_0_and_says_so(tmp_path: Path) -> None:
    conf = tmp_path / "good.conf"
    conf.write_text(f"""[global]
logfile="{tmp_path}/daemon.log"
metrics="[::1]:9317"
control_socket="{tmp_path}/run/control.sock"
stack=log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,print1:PRINTPKT,emu1:LOGEMU

[log1]
group=1

[emu1]
file="{tmp_path}/emu.log"
""")
    assert run_check(conf) == (0, [], f"{conf}: OK\n")
    assert sorted(os.listdir(tmp_path)) == ["good.conf"]  # nothing created


def test_warnings_alone_keep_exit_0(tmp_path: Path) -> None:
    conf = tmp_path / "w.conf"
    conf.write_text(f"""stray=1
[global]
stack=log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,print1:PRINTPKT,emu1:LOGEMU

loglevel

[emu1]
file="{tmp_path}/emu.log"
sync

[emu1]
file="/elsewhere"
""")
    code, lines, _ = run_check(conf)
    assert code == 0
    assert lines == [f"{conf}:1: warning: ignoring 'stray' outside of any [section]",
                     f"{conf}:5: warning: ignoring malformed config directive 'loglevel' (no value)",
                     f"{conf}:9: warning: ignoring malformed config directive 'sync' (no value)",
                     f"{conf}:11: warning: section [emu1] appears again; only the first is read"]  # fmt: skip


def test_outside_text_in_a_finding_is_one_printable_line(tmp_path: Path) -> None:
    conf = tmp_path / "x.conf"
    conf.write_text('[global]\nstack=log1:NFLOG,emu1:LOGEMU\n[emu1]\nfile="/no/dir/\x1b]0;owned\x07.log"\n')
    code, lines, _ = run_check(conf)
    # The config parser refuses the control characters themselves, with the line.
    assert code == 1 and all(ch.isprintable() for line in lines for ch in line)


def test_command_line_forms_and_exit_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.conf"
    good.write_text(f'[global]\nstack=log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,print1:PRINTPKT,'
                    f'emu1:LOGEMU\n[emu1]\nfile="{tmp_path}/emu.log"\n')  # fmt: skip
    bad = tmp_path / "bad.conf"
    bad.write_text("[global]\nloglevel=x\nstack=log1:NFLOG,emu1:LOGEMU\n")
    assert main(["--check-config", str(good)]) == 0
    assert main(["-c", str(good), "--check-config"]) == 0
    assert main(["--check-config", "-c", str(good)]) == 0
    assert main(["--check-config", str(bad)]) == 1
    assert main(["--check-config", str(tmp_path / "missing.conf")]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:2: loglevel needs an integer, not 'x'" in err
    assert f"{tmp_path}/missing.conf: cannot read config file: No such file or directory" in err
    # Usage errors: 2 (a script tells them from a bad config).
    assert main(["--check-config", str(good), "-c", str(bad)]) == 2
    assert main(["--check-config", str(good), "-d"]) == 2
    assert main(["--check-config", str(good), "-u", "no-such-user-pyu"]) == 2
    with pytest.raises(SystemExit) as e:
        main(["--check-config", str(good), "--bogus"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:  # without --check-config, ulogd's 1
        main(["--bogus"])
    assert e.value.code == 1


EVERYTHING = """[global]
logfile="TMP/daemon.log"
metrics="127.0.0.1:0"
control_socket="TMP/run/control.sock"
stack=log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,print1:PRINTPKT,emu1:LOGEMU
stack=log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,json1:JSON
stack=log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,jsontcp:JSON
stack=log1:NFLOG,base1:BASE,pcap1:PCAP
stack=log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,print1:PRINTPKT,sys1:SYSLOG
stack=log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,lite1:SQLITE3
stack=log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,pg1:PGSQL
stack=ct1:NFCT,ip2str2:IP2STR,flow1:PRINTFLOW,emu2:LOGEMU
stack=ct1:NFCT,ipfix1:IPFIX
stack=ct1:NFCT,xml1:XML
stack=acct1:NFACCT,gr1:GRAPHITE
stack=us1:UNIXSOCK,base2:BASE,ip2str3:IP2STR,json2:JSON

[log1]
group=9
netns="pyu-opsd-*"

[emu1]
file="TMP/emu.log"

[emu2]
file="TMP/flows.log"

[json1]
file="TMP/out.json"

[jsontcp]
mode=tcp
host=127.0.0.1
port=1

[pcap1]
file="TMP/out.pcap"

[sys1]
socket="TMP/devlog"

[lite1]
db="TMP/audit.sqlite"
table=ulog

[pg1]
db=nodb
host=127.0.0.1
port=1
table=ulog
procedure=INSERT_PACKET_FULL
user=nobody
pass=x

[ct1]
hash_enable=1

[ipfix1]
oid=1
host=127.0.0.1
port=1

[xml1]
directory="TMP"

[acct1]
pollinterval=1

[gr1]
host=127.0.0.1
port=1

[us1]
socket_path="TMP/us.sock"

[json2]
file="TMP/us.json"
"""

# Run in a fresh interpreter with an audit hook that records every socket, bind, connect,
# file opened for writing or created, directory made, file removed or renamed.
HOOK = r"""
import json, os, sys
events = []
WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
def hook(event, args):
    if event in ("socket.__new__", "socket.bind", "socket.connect", "os.mkdir", "os.remove", "os.rename",
                 "os.rmdir", "os.chmod", "os.chown", "os.link", "os.symlink", "os.truncate"):
        events.append([event, repr(args)[:200]])
    elif event == "open":
        path, mode, flags = args
        if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (flags or 0) & WRITE:
            events.append([event, repr(args)[:200]])
sys.addaudithook(hook)
from pyulogd.daemon.cli import main
code = main(["--check-config", sys.argv[1]])
sys.stdout.flush()
sys.stderr.write("\nEVENTS " + json.dumps(events) + "\n")
sys.exit(code)
"""


def _interpreter(user: bool) -> str | None:
    """This interpreter, or for nobody the system's when this one is out of its reach (pyenv
    under /root, a checkout under a root-only directory); None when neither is."""
    if not user:
        return sys.executable
    for candidate in (sys.executable, "/usr/bin/python3"):
        if nobody_can(candidate, os.X_OK):
            return candidate
    return None


@contextmanager
def _source_for(user: bool) -> Iterator[Path]:
    """The package's source where the user running the check can read it: this checkout, or
    for nobody a copy in a world-readable temporary directory when the checkout is not."""
    src = ROOT / "src"
    if not user or nobody_can(src / "pyulogd" / "__init__.py", os.R_OK):
        yield src
        return
    with reachable_tmp() as d:
        shutil.copytree(src / "pyulogd", d / "pyulogd", ignore=shutil.ignore_patterns("__pycache__"))
        for root, dirs, files in os.walk(d):
            for name in dirs:
                os.chmod(Path(root) / name, 0o755)
            for name in files:
                os.chmod(Path(root) / name, 0o644)
        yield d


def _audited(conf: Path, user: bool, src: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(src)}
    pw = nobody() if user else None
    interpreter = _interpreter(user)
    assert interpreter is not None

    def drop() -> None:
        if pw is not None:
            os.setgroups([])
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)

    hook = HOOK if check else HOOK.replace('"--check-config", ', '"-c", ')
    return subprocess.run([interpreter, "-c", hook, str(conf)], env=env, capture_output=True, text=True,
                          timeout=120, preexec_fn=drop, cwd="/")  # fmt: skip


@pytest.mark.skipif(why_skip() is not None, reason=why_skip() or "")
@pytest.mark.parametrize("as_nobody", [False, True], ids=["root", "nobody"])
def test_checking_opens_binds_connects_and_creates_nothing(as_nobody: bool) -> None:
    if _interpreter(as_nobody) is None:
        pytest.skip("no Python interpreter that nobody can run")
    with _source_for(as_nobody) as src, reachable_tmp() as d:
        conf = d / "everything.conf"
        text = EVERYTHING.replace("TMP", str(d))
        if as_nobody:  # the system's Python may lack psycopg: PGSQL is checked as root
            text = text.replace("stack=log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,pg1:PGSQL\n", "")
        conf.write_text(text)
        before = sorted(os.listdir(d))
        r = _audited(conf, as_nobody, src)
        head, _, tail = r.stderr.rpartition("\nEVENTS ")
        assert tail, r.stderr
        events = json.loads(tail)
        assert r.returncode == 0, head + r.stdout
        assert r.stdout == f"{conf}: OK\n"
        assert events == [], events
        assert sorted(os.listdir(d)) == before
        # The hook does see what a check must not do: the daemon itself (no --check-config)
        # opens its log file while reading [global], before a bad line stops it.
        probe = d / "probe.conf"
        probe.write_text(f'[global]\nlogfile="{d}/daemon.log"\nloglevel=x\n')
        r = _audited(probe, as_nobody, src, check=False)
        assert r.returncode == 1 and "daemon.log" in r.stderr.rpartition("\nEVENTS ")[2]  # opened by dir_fd


def test_files_the_daemon_would_refuse_are_errors(tmp_path: Path) -> None:
    """The rules of core/safefile.py, applied without opening: a link in the file's place,
    a file with a second hard link, a directory where the file should be."""
    (tmp_path / "target").write_text("")
    (tmp_path / "link.log").symlink_to(tmp_path / "target")
    (tmp_path / "hard.log").write_text("")
    os.link(tmp_path / "hard.log", tmp_path / "hard2")
    (tmp_path / "dir.log").mkdir()
    conf = tmp_path / "f.conf"
    stack = "base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,print1:PRINTPKT"
    conf.write_text(f"""[global]
logfile="{tmp_path}/link.log"
stack=log1:NFLOG,{stack},e1:LOGEMU
stack=log1:NFLOG,{stack},e2:LOGEMU
stack=log1:NFLOG,{stack},e3:LOGEMU

[e1]
file="{tmp_path}/hard.log"

[e2]
file="{tmp_path}/dir.log"

[e3]
file="{tmp_path}/fine.log"
""")
    code, lines, _ = run_check(conf)
    assert code == 1
    t = tmp_path
    assert lines[0] == f"{conf}:2: can't open logfile '{t}/link.log': refused: '{t}/link.log' is a symbolic link"
    assert lines[1].startswith(f"{conf}:8: LOGEMU 'e1': file '{t}/hard.log': refused: '{t}/hard.log' has 2 hard")
    assert lines[2] == f"{conf}:11: LOGEMU 'e2': file '{t}/dir.log': refused: '{t}/dir.log' is not a regular file"
    assert lines[3] == f"{conf}: 3 error(s)"


def test_every_path_option_is_checked_or_says_why_not() -> None:
    from pyulogd.core import registry
    from pyulogd.core.options import Path as PathKind

    paths = {(name, o.name) for name in registry.names() for o in registry.get(name).options
             if isinstance(o.type, PathKind)}  # fmt: skip
    assert len(paths) >= 12  # the kinds are declared (a table matching nothing would pass)
    known = set(check.PATH_OPTIONS) | set(check.NOT_CHECKED)
    missing = {(n, o) for n, o in paths if (n, o) not in known and ("*", o) not in known}
    assert not missing, f"path options daemon/check.py does not know: {sorted(missing)}"


def test_what_a_plugin_refuses_when_made_is_located_at_its_stack(tmp_path: Path) -> None:
    """A plugin's constructor that refuses an option value (NATSIN's keys_from naming no
    plugin; the config fuzzer found it said neither file nor line) is reported at its stack."""
    conf = tmp_path / "natsin.conf"
    conf.write_text(f'[global]\nlogfile="{tmp_path}/d.log"\nstack=in1:NATSIN,j1:JSON\n\n'
                    f'[in1]\nkeys_from="FILE"\n\n[j1]\nfile="{tmp_path}/o.json"\n')
    code, errors, _ = run_check(conf)
    assert code != 0
    assert any(e.startswith(f"{conf}:3: ") and "keys_from" in e for e in errors), errors
