"""SYSLOG: options, glibc's wire format (compared with glibc's own syslog() where possible),
local/udp/tcp transports, and a syslog daemon that is down at start, restarts or is slow."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyulogd.core.clock import FakeClock
from pyulogd.core.context import Context
from pyulogd.core.errors import ConfigError
from pyulogd.core.plugin import DataType, Key, KeyType, Source
from pyulogd.io.loop import Loop
from pyulogd.io.sender import PROBE_WAIT, ReliableSender
from pyulogd.io.sendstate import POLL
from pyulogd.plugins.outputs.syslog import FACILITIES, LEVELS, SyslogOutput
from tests.clocked import fake_context, loop_until
from tests.helpers import make_stack, stop_stack


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = old
    time.tzset()


class PrintSource(Source):
    name = "PRINTSRC"
    output_type = DataType.PACKET
    output_keys = (Key("print", KeyType.STRING),)

    def push(self, text: str | None) -> None:
        self.emit([None, text])


def syslog_stack(ctx: Context | None = None, **opts: Any) -> Any:
    return make_stack([PrintSource, (SyslogOutput, opts)], ctx)


def out(stack: Any) -> ReliableSender:
    sender = stack.sink.out.sender
    assert isinstance(sender, ReliableSender)
    return sender


def dgram_server(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.settimeout(5)
    return s


def run_until(ctx: Context, pred: Any, step: float = 0.0) -> None:
    loop_until(ctx, pred, step=step)


def test_declarations() -> None:
    assert SyslogOutput.name == "SYSLOG" and SyslogOutput.so_name == "ulogd_output_SYSLOG.so"
    opts = {o.name: o.default for o in SyslogOutput.options}
    assert opts["facility"] == "LOG_KERN" and opts["level"] == "LOG_NOTICE"
    assert [k.name for k in SyslogOutput.input_keys] == ["print"]
    assert len(FACILITIES) == 11 and len(LEVELS) == 8


@pytest.mark.parametrize(("opt", "value", "msg"), [
    ("facility", "LOG_FOO", "unknown facility 'LOG_FOO'"),
    ("facility", "log_kern", "unknown facility 'log_kern'"),  # exact spelling, as 2.0.8
    ("level", "LOG_NOTE", "unknown level 'LOG_NOTE'"),
])  # fmt: skip
def test_unknown_facility_or_level(opt: str, value: str, msg: str) -> None:
    with pytest.raises(ConfigError, match=msg):
        syslog_stack(start=False, **{opt: value})


def test_wire_format_facility_level(tmp_path: Path) -> None:
    path = tmp_path / "log.sock"
    ctx = Context(loop=Loop(FakeClock(wall=1795766886.5)))  # Nov 27 08:08:06 UTC
    with dgram_server(path) as server:
        stack = syslog_stack(ctx, socket=str(path), facility="LOG_LOCAL2", level="LOG_INFO")
        stack.source.push("ACCEPT-TCP IN=lo OUT= MAC= MARK=0x0 \n")
        stack.source.push(None)  # no print: nothing sent
        stack.sink.flush()
        got = server.recv(4096)
        stop_stack(stack)
    assert got == f"<150>Nov 27 08:08:06 ulogd[{os.getpid()}]: ACCEPT-TCP IN=lo OUT= MAC= MARK=0x0 \n".encode()


def test_day_is_space_padded_and_kern_notice_default(tmp_path: Path) -> None:
    path = tmp_path / "log.sock"
    ctx = Context(loop=Loop(FakeClock(wall=1794038400.0)))  # Nov  7 08:00:00 UTC
    with dgram_server(path) as server:
        stack = syslog_stack(ctx, socket=str(path))
        stack.source.push("x\n")
        stack.sink.flush()
        assert server.recv(4096).startswith(b"<29>Nov  7 08:00:00 ulogd[")
        stop_stack(stack)


def _glibc_bytes(tmp_path: Path, pri: int, text: str) -> bytes | None:
    """What glibc's syslog() writes for ulogd2's openlog/syslog calls, caught on a /dev/log of a
    private mount namespace (needs root and unshare)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return None
    sock = tmp_path / "glibc.sock"
    code = (
        "import syslog\n"
        f"syslog.openlog('ulogd', syslog.LOG_NDELAY | syslog.LOG_PID, syslog.LOG_DAEMON)\n"
        f"syslog.syslog({pri}, {text!r})\n"
    )
    script = f"mount -t tmpfs none /dev && ln -s {sock} /dev/log && exec {sys.executable} -c \"$0\""
    with dgram_server(sock) as server:
        r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, code],
                           capture_output=True, text=True, timeout=20, env={**os.environ, "TZ": "UTC"})
        if r.returncode != 0:
            return None
        return server.recv(4096)


def test_same_bytes_as_glibc_syslog(tmp_path: Path) -> None:
    text = "gbACCEPT IN=gbb0 OUT= MAC=02:00 SRC=10.201.0.1 \n"
    ref = _glibc_bytes(tmp_path, FACILITIES["LOG_LOCAL2"] | LEVELS["LOG_INFO"], text)
    if ref is None:
        pytest.skip("needs root and unshare to catch glibc's /dev/log output")
    # glibc stamps the time of the call; give ours the same second.
    stamp = ref.split(b">", 1)[1][:15].decode()
    sec = time.mktime(time.strptime(f"{time.gmtime().tm_year} {stamp}", "%Y %b %d %H:%M:%S"))
    path = tmp_path / "ours.sock"
    with dgram_server(path) as server:
        ctx = Context(loop=Loop(FakeClock(wall=sec)))
        stack = syslog_stack(ctx, socket=str(path), facility="LOG_LOCAL2", level="LOG_INFO")
        stack.source.push(text)
        stack.sink.flush()
        ours = server.recv(4096)
        stop_stack(stack)
    pid_free = [x.split(b"[", 1)[0] + b"]" + x.split(b"]", 1)[1] for x in (ref, ours)]
    assert pid_free[0] == pid_free[1]


def test_udp_and_tcp_remote(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.bind(("127.0.0.1", 0))
        u.settimeout(5)
        stack = syslog_stack(host="127.0.0.1", port=str(u.getsockname()[1]), level="LOG_ERR")
        stack.source.push("over udp\n")
        stack.sink.flush()
        assert u.recv(4096).endswith(b"]: over udp\n")
        stop_stack(stack)
    with socket.socket() as t:
        t.bind(("127.0.0.1", 0))
        t.listen(1)
        ctx = Context(loop=Loop())
        stack = syslog_stack(ctx, host="127.0.0.1", port=str(t.getsockname()[1]), proto="tcp")
        conn, _ = t.accept()
        with conn:
            stack.source.push("one\n")
            stack.source.push("two\n")
            run_until(ctx, lambda: (stack.sink.flush(), not out(stack).queue)[1])
            conn.settimeout(5)
            data = b""
            while data.count(b"\n") < 2:
                data += conn.recv(4096)
            stop_stack(stack)
    first_len, rest = data.split(b" ", 1)
    assert rest[: int(first_len)].startswith(b"<29>") and rest[: int(first_len)].endswith(b"]: one\n")


def test_daemon_down_at_start_then_up(tmp_path: Path) -> None:
    path = tmp_path / "log.sock"
    ctx, clock = fake_context()
    stack = syslog_stack(ctx, socket=str(path))  # no socket yet: not fatal
    assert "not reachable" in (ctx.log.last_error or "")
    for i in range(5):
        stack.source.push(f"queued {i}\n")
        stack.sink.flush()  # never blocks or raises
    assert out(stack).backlog == 5
    with dgram_server(path) as server:
        clock.advance(0.1)
        ctx.loop.run_once(0)
        assert out(stack).sock is None
        clock.advance(0.15)
        run_until(ctx, lambda: not out(stack).queue)  # the retry timer reconnects (0.25 s at most)
        got = [server.recv(4096) for _ in range(5)]
        stop_stack(stack)
    assert [g.split(b"]: ", 1)[1] for g in got] == [f"queued {i}\n".encode() for i in range(5)]
    assert ctx.stats.get("syslog.syslog1.send_failures") == 0
    assert ctx.stats.get("syslog.syslog1.sent") == 5


def test_daemon_restart_mid_run(tmp_path: Path) -> None:
    path = tmp_path / "log.sock"
    ctx, clock = fake_context()
    server = dgram_server(path)
    stack = syslog_stack(ctx, socket=str(path))
    stack.source.push("before\n")
    stack.sink.flush()
    assert server.recv(4096).endswith(b"before\n")
    server.close()
    path.unlink()  # the daemon stops ...
    for i in range(3):
        stack.source.push(f"during {i}\n")
        stack.sink.flush()
    assert out(stack).backlog == 3
    with dgram_server(path) as server2:  # ... and comes back on the same path
        clock.advance(1)  # the back-off; then a probe datagram ...
        run_until(ctx, lambda: out(stack).backlog == 2)
        got = [server2.recv(4096).split(b"]: ", 1)[1]]
        clock.advance(PROBE_WAIT)  # ... and the rest when no refusal came back
        run_until(ctx, lambda: not out(stack).queue)
        got += [server2.recv(4096).split(b"]: ", 1)[1] for _ in range(2)]
        stop_stack(stack)
    assert got == [f"during {i}\n".encode() for i in range(3)]
    assert ctx.stats.get("syslog.syslog1.send_failures") == 0
    assert ctx.stats.get("syslog.syslog1.reconnects") == 1


def test_overflow_counted_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "log.sock"
    ctx, clock = fake_context()
    stack = syslog_stack(ctx, socket=str(path), queue=1000, spool_max=0)  # memory only
    for i in range(100):
        stack.source.push(f"record {i:03d}\n")
    stack.sink.flush()
    kept = out(stack).backlog
    assert 0 < kept < 100
    assert ctx.stats.get("syslog.syslog1.queue_overflow") == 100 - kept
    assert ctx.stats.get("syslog.syslog1.send_failures") == 100 - kept
    assert "queue full" in (ctx.log.last_error or "") or "not reachable" in (ctx.log.last_error or "")
    with dgram_server(path) as server:
        got: list[bytes] = []

        def drained() -> bool:
            server.setblocking(False)
            try:
                while True:
                    got.append(server.recv(4096))
            except BlockingIOError:
                pass
            return not out(stack).queue and len(got) == kept

        clock.advance(1)  # the back-off after the failed connect at start
        run_until(ctx, drained, step=POLL)  # the receiver's queue fills: the sender looks again soon
        stop_stack(stack)
    # the oldest records are the ones kept, in order
    assert [g.split(b"]: ", 1)[1] for g in got] == [f"record {i:03d}\n".encode() for i in range(kept)]


def test_reader_that_never_reads_does_not_block(tmp_path: Path) -> None:
    path = tmp_path / "log.sock"
    ctx = Context(loop=Loop())
    with dgram_server(path):
        stack = syslog_stack(ctx, socket=str(path), queue=64 * 1024, spool_max=0)
        start = time.monotonic()
        for i in range(20000):
            stack.source.push(f"{i:06d} " + "x" * 200 + "\n")
            if i % 100 == 0:
                stack.sink.flush()
        assert time.monotonic() - start < 10
        assert ctx.stats.get("syslog.syslog1.queue_overflow") > 0
        stop_stack(stack)


def test_sighup_reconnects(tmp_path: Path) -> None:
    path = tmp_path / "log.sock"
    with dgram_server(path) as server:
        stack = syslog_stack(socket=str(path))
        first = out(stack).sock
        stack.sink.signal(signal.SIGHUP)
        assert out(stack).sock is not first and out(stack).sock is not None
        stack.source.push("after hup\n")
        stack.sink.flush()
        assert server.recv(4096).endswith(b"after hup\n")
        stop_stack(stack)


def test_names_from_printpkt_cannot_forge_a_line(tmp_path: Path) -> None:
    """PRINTPKT escapes the prefix and interface names; SYSLOG sends its line as it is: one
    line per datagram, ending in the one newline PRINTPKT puts there, valid UTF-8."""
    from pyulogd.plugins.filters.printpkt import _INPUT_NAMES, PrintpktFilter

    class PktSource(Source):
        name = "PKTSRC"
        output_type = DataType.PACKET
        output_keys = tuple(Key(n) for n in _INPUT_NAMES)

    path = tmp_path / "log.sock"
    forged = "qtest-nl\nDec  7 00:00:00 fakehost FORGED: IN=eth0 SRC=6.6.6.6"
    with dgram_server(path) as server:
        stack = make_stack([PktSource, PrintpktFilter, (SyslogOutput, {"socket": str(path)})],
                           Context(loop=Loop(FakeClock(wall=1794038400.0))))  # fmt: skip
        row = {"oob.prefix": forged, "oob.in": b"e\xff".decode("utf-8", "surrogateescape"), "oob.out": ""}
        stack.source.emit([None] + [row.get(n) for n in _INPUT_NAMES])
        stack.sink.flush()
        msg = server.recv(4096)
        stop_stack(stack)
    text = msg.decode("utf-8")
    assert text.endswith(": qtest-nl\\nDec  7 00:00:00 fakehost FORGED: IN=eth0 SRC=6.6.6.6 IN=e\\xff OUT= MAC= \n")
    assert text.count("\n") == 1
