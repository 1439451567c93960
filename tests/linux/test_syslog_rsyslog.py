"""SYSLOG through a real rsyslogd (Debian package rsyslog): a private instance with its own
config, unix socket, UDP/TCP ports and work directory (the machine's syslog is not touched).
rsyslog must parse pyulogd's messages as ulogd's (program ``ulogd``, the pid, facility and
severity from the options, the print string), receive records queued while it was down at
start, and the ones sent while it restarts."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyulogd.core.context import Context
from pyulogd.io.loop import Loop
from pyulogd.io.sender import ReliableSender
from pyulogd.plugins.outputs.syslog import SyslogOutput
from tests.helpers import make_stack, stop_stack
from tests.unit.test_syslog import PrintSource

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
pytestmark = [pytest.mark.linux,
              pytest.mark.skipif(not os.path.exists(RSYSLOGD), reason="needs rsyslogd (Debian package rsyslog)")]

TEMPLATE = "%pri%|%syslogfacility-text%|%syslogseverity-text%|%programname%|%procid%|%msg%|\\n"


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Rsyslog:
    def __init__(self, d: Path) -> None:
        self.dir = d
        self.sock = d / "log.sock"
        self.out = d / "out.log"
        self.udp = free_port(socket.SOCK_DGRAM)
        self.tcp = free_port(socket.SOCK_STREAM)
        self.proc: subprocess.Popen[bytes] | None = None
        (d / "rsyslog.conf").write_text(f"""
global(workDirectory="{d}")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{self.sock}")
module(load="imudp")
input(type="imudp" address="127.0.0.1" port="{self.udp}")
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="{self.tcp}")
template(name="t" type="string" string="{TEMPLATE}")
*.* action(type="omfile" file="{self.out}" template="t")
""")

    def start(self) -> None:
        self.proc = subprocess.Popen([RSYSLOGD, "-n", "-f", str(self.dir / "rsyslog.conf"),
                                      "-i", str(self.dir / "rsyslogd.pid")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = time.monotonic() + 10
        while not self.sock.exists():
            assert time.monotonic() < end and self.proc.poll() is None, "rsyslogd did not start"
            time.sleep(0.05)
        time.sleep(0.2)  # the network inputs

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
        self.proc = None

    def lines(self) -> list[list[str]]:
        if not self.out.exists():
            return []
        return [line.split("|") for line in self.out.read_text().splitlines() if line.endswith("|")]


@pytest.fixture()
def rsyslog(tmp_path: Path) -> Iterator[Rsyslog]:
    r = Rsyslog(tmp_path)
    try:
        yield r
    finally:
        r.stop()


def wait_lines(ctx: Context, stack: Any, r: Rsyslog, n: int, timeout: float = 10) -> list[list[str]]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = r.lines()
        if len(got) >= n:
            return got
        ctx.loop.run_once(0.05)
        stack.sink.flush()
    raise AssertionError(f"rsyslog wrote {len(r.lines())} of {n} lines")


@pytest.mark.parametrize(("facility", "level", "pri", "fac_text", "sev_text"), [
    ("LOG_KERN", "LOG_NOTICE", 29, "daemon", "notice"),  # facility 0: openlog()'s LOG_DAEMON, as glibc
    ("LOG_LOCAL2", "LOG_INFO", 150, "local2", "info"),
    ("LOG_DAEMON", "LOG_ERR", 27, "daemon", "err"),
    ("LOG_USER", "LOG_DEBUG", 15, "user", "debug"),
])  # fmt: skip
def test_facility_and_level(rsyslog: Rsyslog, facility: str, level: str, pri: int, fac_text: str,
                            sev_text: str) -> None:  # fmt: skip
    rsyslog.start()
    ctx = Context(loop=Loop())
    stack = make_stack([PrintSource, (SyslogOutput, {"socket": str(rsyslog.sock), "facility": facility,
                                                     "level": level})], ctx)  # fmt: skip
    stack.source.push("gbACCEPT IN=gbb0 OUT= MAC=02:00:0a:c9:00:02 SRC=10.201.0.1 DST=10.201.0.2 \n")
    (line,) = wait_lines(ctx, stack, rsyslog, 1)
    stop_stack(stack)
    assert line[:5] == [str(pri), fac_text, sev_text, "ulogd", str(os.getpid())]
    assert line[5].strip() == "gbACCEPT IN=gbb0 OUT= MAC=02:00:0a:c9:00:02 SRC=10.201.0.1 DST=10.201.0.2"


@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_remote_udp_and_tcp(rsyslog: Rsyslog, proto: str) -> None:
    rsyslog.start()
    ctx = Context(loop=Loop())
    port = rsyslog.udp if proto == "udp" else rsyslog.tcp
    stack = make_stack([PrintSource, (SyslogOutput, {"host": "127.0.0.1", "port": str(port), "proto": proto,
                                                     "facility": "LOG_LOCAL7"})], ctx)  # fmt: skip
    for i in range(3):
        stack.source.push(f"remote {i} \n")
    got = wait_lines(ctx, stack, rsyslog, 3)
    stop_stack(stack)
    assert [g[5].strip() for g in got] == [f"remote {i}" for i in range(3)]
    assert all(g[1:4] == ["local7", "notice", "ulogd"] for g in got)


def test_down_at_start_then_restart(rsyslog: Rsyslog) -> None:
    ctx = Context(loop=Loop())
    stack = make_stack([PrintSource, (SyslogOutput, {"socket": str(rsyslog.sock)})], ctx)
    sender = stack.sink.out.sender
    assert isinstance(sender, ReliableSender)
    for i in range(5):  # rsyslogd not running yet: queued
        stack.source.push(f"early {i} \n")
        stack.sink.flush()
    assert sender.backlog == 5
    rsyslog.start()
    wait_lines(ctx, stack, rsyslog, 5)
    rsyslog.stop()  # restart mid-run
    for i in range(5):
        stack.source.push(f"during {i} \n")
        stack.sink.flush()
    rsyslog.start()
    for i in range(5):
        stack.source.push(f"after {i} \n")
    got = wait_lines(ctx, stack, rsyslog, 15, timeout=15)
    stop_stack(stack)
    texts = [g[5].strip() for g in got]
    assert texts == [f"{w} {i}" for w in ("early", "during", "after") for i in range(5)]
    assert ctx.stats.get("syslog.syslog1.send_failures") == 0

