"""The daemon's own log: every message escaped, and writing it never stops the daemon.

Failing writes are real ones: the log's descriptor is pointed at /dev/full (ENOSPC on every
write) with dup2() and back, so the file and the code path are the daemon's own.
"""

from __future__ import annotations

import errno
import io
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyulogd.core.context import Context
from pyulogd.core.log import LOST, Logger
from pyulogd.io.loop import Loop
from pyulogd.plugins.outputs.logemu import LogemuOutput
from tests.helpers import make_stack

FORGED = "qtest-nl\nDec  7 00:00:00 fakehost FORGED: IN=eth0 SRC=6.6.6.6"
NOT_UTF8 = b"qtest-\xff\xfe".decode("utf-8", "surrogateescape")


class Full:
    """Points a descriptor at /dev/full while in use, then back at its own file."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.saved = os.dup(fd)

    def __enter__(self) -> Full:
        full = os.open("/dev/full", os.O_WRONLY)
        os.dup2(full, self.fd)
        os.close(full)
        return self

    def __exit__(self, *exc: object) -> None:
        os.dup2(self.saved, self.fd)
        os.close(self.saved)


class FailingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.error: OSError | None = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def write(self, s: str) -> int:
        if self.error is not None:
            raise self.error
        return super().write(s)


@pytest.fixture()
def ctx(tmp_path: Path) -> Iterator[Context]:
    ctx = Context(loop=Loop())
    ctx.log.set_destination(str(tmp_path / "ulogd.log"))
    ctx.log.fallback = io.StringIO()
    yield ctx
    ctx.log.close()


LINE = re.compile(r"\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4} <\d> \S+:\d+ (.*)\Z")


def text(line: str) -> str:
    """The message of one log line (ulogd's format, checked)."""
    m = LINE.match(line)
    assert m is not None, line
    return m.group(1)


def log_lines(tmp_path: Path) -> list[str]:
    return (tmp_path / "ulogd.log").read_bytes().decode("utf-8").splitlines()


def test_every_message_is_escaped(ctx: Context, tmp_path: Path) -> None:
    ctx.log.notice(f"attached network namespace {FORGED}")
    ctx.log.error(f"namespace {NOT_UTF8} \\ \x1b[2J")
    lines = log_lines(tmp_path)  # valid UTF-8, or this raises
    assert len(lines) == 2
    assert lines[0].endswith(" attached network namespace qtest-nl\\nDec  7 00:00:00 fakehost FORGED: IN=eth0 "
                             "SRC=6.6.6.6")  # fmt: skip
    assert lines[1].endswith(" namespace qtest-\\xff\\xfe \\\\ \\x1b[2J")
    assert " <7> test_log.py:" in lines[1]  # the caller's file and line, as before
    assert ctx.log.last_error == "namespace qtest-\\xff\\xfe \\\\ \\x1b[2J"


def test_a_full_log_file_costs_lines_not_the_daemon(ctx: Context, tmp_path: Path) -> None:
    log = ctx.log
    log.notice("before")
    with Full(log.fd):
        log.notice("lost one")
        log.error("lost two")
    assert ctx.stats.get(LOST) == 2
    assert log.lines_lost == 2
    fallback = log.fallback
    assert isinstance(fallback, io.StringIO)
    err = fallback.getvalue().splitlines()
    # said once, then the lines themselves
    assert err[0].startswith("pyulogd: can't write the daemon log (") and "No space left on device" in err[0]
    assert [text(x) for x in err[1:]] == ["lost one", "lost two"]
    log.notice("after")
    lines = log_lines(tmp_path)
    assert [text(x) for x in lines] == [
        "before",
        "the daemon log works again; 2 line(s) could not be written to it (No space left on device)",
        "after",
    ]
    log.notice("and on")  # said once only
    assert len(log_lines(tmp_path)) == 4 and ctx.stats.get(LOST) == 2


def test_a_failing_stream_and_a_failing_stderr(tmp_path: Path) -> None:
    ctx = Context(loop=Loop())
    stream = FailingStream()
    ctx.log.stream = stream
    ctx.log.path = "test"
    ctx.log.fallback = FailingStream()  # standard error fails too: the line is only counted
    ctx.log.notice("one")
    stream.error = OSError(errno.EBADF, "Bad file descriptor")
    ctx.log.notice("two")
    stream.close()
    stream.error = None
    ctx.log.notice("three")  # ValueError: I/O operation on closed file
    assert ctx.stats.get(LOST) == 3


def test_verbose_copy_to_stderr_that_fails(ctx: Context, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", FailingStream())
    ctx.log.verbose = True
    ctx.log.fallback = None
    ctx.log.notice("copied to a broken stderr")
    with Full(ctx.log.fd):
        ctx.log.notice("lost, and no stderr either")
    assert ctx.stats.get(LOST) == 1
    assert len(log_lines(tmp_path)) == 1


def test_reopen_that_fails_keeps_the_old_file(ctx: Context, tmp_path: Path) -> None:
    log = ctx.log
    log.notice("one")
    os.rename(tmp_path / "ulogd.log", tmp_path / "ulogd.log.1")  # logrotate
    os.mkdir(tmp_path / "ulogd.log")  # and the new file cannot be opened (EISDIR)
    log.reopen()
    log.notice("two")
    old = (tmp_path / "ulogd.log.1").read_text().splitlines()
    assert [text(x) for x in old] == [
        "one", "can't reopen the log file '" + str(tmp_path / "ulogd.log") + "': Is a directory; going on with "
        "the old one", "two"]  # fmt: skip
    assert ctx.stats.get(LOST) == 0


def test_reopen_while_the_log_is_full(ctx: Context, tmp_path: Path) -> None:
    """SIGHUP with a full log: reopening works (the file exists) and the new descriptor writes."""
    log = ctx.log
    with Full(log.fd):
        log.notice("lost")
        log.reopen()  # a fresh descriptor of the real file
        log.notice("written")
    assert [text(x) for x in log_lines(tmp_path)] == [
        "the daemon log works again; 1 line(s) could not be written to it (No space left on device)", "written"]


def test_an_output_loss_logged_to_a_full_log(tmp_path: Path) -> None:
    """The issue's crash: LOGEMU could not write, said so in the log, the log could not be
    written either, and the OSError came out of flush()."""
    ctx = Context(loop=Loop())
    ctx.log.set_destination("/dev/full")
    ctx.log.fallback = io.StringIO()
    stack = make_stack([*_printing_stack(), (LogemuOutput, {"file": "/dev/full"})], ctx)
    stack.source.emit([None, "x\n"])  # type: ignore[attr-defined]
    sink = stack.instances[-1]
    sink.flush()
    assert ctx.stats.get("logemu.logemu1.lines_lost") == 1
    assert ctx.stats.get(LOST) == 1
    assert "LOGEMU: can't write to '/dev/full': No space left on device" in ctx.log.fallback.getvalue()
    ctx.log.close()


def _printing_stack() -> list[type]:
    from pyulogd.core.plugin import DataType, Key, KeyType, Source

    class PrintSource(Source):
        name = "PRINTSRC"
        output_type = DataType.PACKET
        output_keys = (Key("print", KeyType.STRING),)

    return [PrintSource]


def test_syslog_never_raises_and_gets_the_escaped_text(tmp_path: Path) -> None:
    """The default destination (no logfile=): glibc's syslog() on a /dev/log of a private
    mount namespace, caught here. Unescaped, Python's syslog() raised UnicodeEncodeError on
    the undecodable bytes of a namespace name, and a NUL would raise ValueError."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare to catch /dev/log")
    sock = tmp_path / "devlog"
    code = (
        "from pyulogd.core.log import Logger\n"
        "log = Logger()\n"
        f"log.notice('attached ' + {NOT_UTF8!r} + ' ' + {FORGED!r} + '\\x00')\n"
        "print('lost', log.lines_lost)\n"
    )
    script = f"mount -t tmpfs none /dev && ln -s {sock} /dev/log && exec {sys.executable} -c \"$0\""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(sock))
        server.settimeout(10)
        r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, code],
                           capture_output=True, text=True, timeout=30)  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "lost 0"
        msg = server.recv(65536)
    text = msg.decode("utf-8")  # valid UTF-8
    assert text.startswith("<29>") and " pyulogd[" in text
    assert text.endswith("attached qtest-\\xff\\xfe qtest-nl\\nDec  7 00:00:00 fakehost FORGED: IN=eth0 "
                         "SRC=6.6.6.6\\x00")  # fmt: skip
    assert "\n" not in text


def test_logger_without_counters() -> None:
    log = Logger()
    log.stream = FailingStream()
    log.path = "test"
    log.fallback = io.StringIO()
    log.notice("x")
    assert log.lines_lost == 1
