"""The shipped logrotate file (debian/pyulogd.logrotate), run by the real logrotate five
times during a flood into a real daemon: no record lost, none twice, no line split, every
file complete, the new files the daemon's user's.

The daemon runs as the package runs it without systemd (started as root with ``-u``, a
pidfile the postrotate script signals), with nobody for pyulogd. It takes UNIXSOCK frames
(no namespace needed), each with its own prefix ``R<number>``, and writes them as LOGEMU
lines and JSON lines; its own log is rotated too. A sender floods it while the test
rotates: each rotation waits until the daemon writes into the new files (its SIGHUP
arrived), so records land in all six generations. The paths of the shipped file are moved
to the test's directories, its user and group to nobody's; everything else (compress,
delaycompress, su, create, the postrotate script) is run as shipped.
"""

from __future__ import annotations

import grp
import gzip
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyulogd.ctl.unixsock import UnixsockClient, udp_packet
from tests.linux.lab import lines, wait_for

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "debian" / "pyulogd.logrotate"
ROTATIONS = 5
LOGEMU_LINE = re.compile(
    r"^\w{3} [ \d]\d \d\d:\d\d:\d\d \S+ R(\d{7})  MAC= SRC=192\.0\.2\.1 DST=192\.0\.2\.2 .* DPT=9 LEN=20 $"
)
LOG_LINE = re.compile(r"^\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4} <\d> \S+ .*$")


def _why_skip() -> str | None:
    if os.geteuid() != 0:
        return "needs root (the daemon starts as root and drops to nobody)"
    if shutil.which("logrotate") is None:
        return "needs logrotate (scripts/install-deps.sh test)"
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        return "needs user nobody"
    return None


pytestmark = [pytest.mark.linux, pytest.mark.skipif(_why_skip() is not None, reason=str(_why_skip()))]


@pytest.fixture()
def dirs() -> Iterator[tuple[Path, Path]]:
    """(logs, run): the log directory nobody owns, as pyulogd owns /var/log/pyulogd; root's
    run directory for the pidfile, as /run/pyulogd."""
    top = Path(tempfile.mkdtemp(prefix="opk-rotate-"))
    os.chmod(top, 0o755)
    logs, run = top / "logs", top / "run"
    logs.mkdir(mode=0o750)
    run.mkdir(mode=0o755)
    pw = pwd.getpwnam("nobody")
    os.chown(logs, pw.pw_uid, pw.pw_gid)
    yield logs, run
    shutil.rmtree(top, ignore_errors=True)


def logrotate_conf(logs: Path, pidfile: Path) -> str:
    """The shipped file with its paths and user moved; each substitution must happen."""
    text = SHIPPED.read_text()
    group = grp.getgrgid(pwd.getpwnam("nobody").pw_gid).gr_name
    for old, new in (("/var/log/pyulogd", str(logs)), ("/run/pyulogd/pyulogd.pid", str(pidfile)),
                     ("su pyulogd adm", f"su nobody {group}"),
                     ("create 0640 pyulogd adm", f"create 0640 nobody {group}")):  # fmt: skip
        assert old in text, f"{SHIPPED} no longer has {old!r}: update the test"
        text = text.replace(old, new)
    return text


def daemon_conf(logs: Path) -> str:
    return f"""[global]
logfile="{logs}/pyulogd.log"
loglevel=1
stack=us1:UNIXSOCK,base1:BASE,ip2str1:IP2STR,print1:PRINTPKT,emu1:LOGEMU
stack=us1:UNIXSOCK,base1:BASE,ip2str1:IP2STR,json1:JSON

[us1]
socket_path="{logs}/in.sock"

[emu1]
file="{logs}/audit.log"

[json1]
file="{logs}/audit.json"
"""


def generations(logs: Path, name: str) -> list[Path]:
    return sorted(p for p in logs.iterdir() if p.name == name or p.name.startswith(name + "."))


def read(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()


def records(logs: Path, name: str) -> dict[Path, list[int]]:
    """The record numbers in every generation of ``name``, each line checked whole."""
    out: dict[Path, list[int]] = {}
    for path in generations(logs, name):
        data = read(path)
        assert data == b"" or data.endswith(b"\n"), f"{path} ends inside a line"
        got = []
        for line in data.decode().splitlines():
            if name.endswith(".json"):
                got.append(int(json.loads(line)["oob.prefix"][1:8]))
            else:
                m = LOGEMU_LINE.match(line)
                assert m, f"{path}: not a whole LOGEMU line: {line!r}"
                got.append(int(m.group(1)))
        out[path] = got
    return out


class Flood(threading.Thread):
    """Frames R0000000, R0000001, ... until told to stop."""

    def __init__(self, sock: Path) -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.sent = 0
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self.packet = udp_packet("192.0.2.1", "192.0.2.2")

    def run(self) -> None:
        try:
            with UnixsockClient(str(self.sock)) as c:
                while not self.stopping.is_set():
                    c.send(self.packet, prefix=f"R{self.sent:07d} ", indev="eth0")
                    self.sent += 1
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e


def count(logs: Path, name: str) -> int:
    return sum(len(v) for v in records(logs, name).values())


def test_rotation_during_a_flood_loses_and_splits_nothing(dirs: tuple[Path, Path]) -> None:
    logs, run = dirs
    pidfile = run / "pyulogd.pid"
    (run / "logrotate.conf").write_text(logrotate_conf(logs, pidfile))
    (run / "pyulogd.conf").write_text(daemon_conf(logs))
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    argv = [sys.executable, "-m", "pyulogd", "-c", str(run / "pyulogd.conf"), "-p", str(pidfile), "-u", "nobody",
            "--no-realtime"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    flood = Flood(logs / "in.sock")
    try:
        wait_for(lambda: "entering main loop" in "".join(lines(logs / "pyulogd.log")) or proc.poll() is not None,
                 15, "the daemon")  # fmt: skip
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        flood.start()
        for _ in range(ROTATIONS):
            # The daemon writes into the current files (after the previous rotation: its SIGHUP
            # arrived) before the next rotation, which compresses the generation before.
            wait_for(lambda: all(len(lines(logs / n)) >= 200 for n in ("audit.log", "audit.json"))
                     or flood.error is not None or proc.poll() is not None, 30, "records in the new files")  # fmt: skip
            r = subprocess.run(["logrotate", "-f", "-s", str(run / "state"), str(run / "logrotate.conf")],
                               capture_output=True, text=True, timeout=60)  # fmt: skip
            assert r.returncode == 0, r.stderr
        wait_for(lambda: len(lines(logs / "audit.log")) >= 200 or flood.error is not None, 30, "the last records")
        flood.stopping.set()
        flood.join(30)
        assert flood.error is None, flood.error
        sent = flood.sent
        wait_for(lambda: count(logs, "audit.log") >= sent and count(logs, "audit.json") >= sent, 60,
                 f"all {sent} records")  # fmt: skip
    finally:
        flood.stopping.set()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert rc == 0
    nobody = pwd.getpwnam("nobody").pw_uid
    for name in ("audit.log", "audit.json"):
        per_file = records(logs, name)
        assert len(per_file) == ROTATIONS + 1, sorted(p.name for p in per_file)
        assert all(per_file.values()), {p.name: len(v) for p, v in per_file.items()}  # records in every generation
        numbers = Counter(n for v in per_file.values() for n in v)
        assert set(numbers) == set(range(sent)), f"lost: {len(set(range(sent)) - set(numbers))}"
        assert max(numbers.values()) == 1, "a record written twice"
        # Within each file, in order: a generation is one stretch of the flood.
        for path, got in per_file.items():
            assert got == sorted(got), path
        st = (logs / name).stat()
        assert (st.st_uid, st.st_mode & 0o777) == (nobody, 0o640)  # made by `create` for the daemon's user
        assert [p.name for p in per_file if p.suffix == ".gz"] == [f"{name}.{i}.gz" for i in range(2, ROTATIONS + 1)]
    daemon_log = generations(logs, "pyulogd.log")
    assert len(daemon_log) == ROTATIONS + 1, daemon_log
    reopened = 0
    for path in daemon_log:
        for line in read(path).decode().splitlines():
            assert LOG_LINE.match(line), f"{path}: {line!r}"
            reopened += line.endswith("JSON: reopening logfile")
    assert reopened == ROTATIONS  # one SIGHUP per rotation (sharedscripts), each one heard
    assert "counters at exit" in "".join(lines(logs / "pyulogd.log"))
