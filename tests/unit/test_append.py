"""Appending whole records when the file cannot grow (pyulogd.core.append).

A real short write: RLIMIT_FSIZE makes write() write up to the limit and then fail with
EFBIG, as a full filesystem writes what fits and then fails with ENOSPC. The limit is set
in a forked child, so nothing else of the test run is limited.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import resource
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyulogd.core.append import AppendError, append
from pyulogd.core.context import Context
from pyulogd.io.filesink import FileSink
from pyulogd.io.loop import Loop

F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ, Linux


def limited(limit: int, work: Callable[[], Any]) -> Any:
    """Run ``work()`` in a child whose files cannot grow past ``limit`` bytes; its result."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(r)
        try:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
            out = json.dumps(work()).encode()
        except BaseException as e:  # noqa: B036 - reported to the parent, whatever it is
            out = json.dumps({"raised": repr(e)}).encode()
        os.write(w, out)
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(data)


def test_a_half_line_is_cut_off(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"old\n")

    def work() -> Any:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        data = b"line one\nline two\nline three\n"
        try:
            append(fd, data)
        except AppendError as e:
            kept, torn = e.settle(fd, data)
            return {"kept": kept, "torn": torn, "errno": e.errno, "done": e.done}
        return "written"

    assert limited(20, work) == {"kept": 1, "torn": False, "errno": 27, "done": 16}  # EFBIG after 16 bytes
    assert path.read_bytes() == b"old\nline one\n"  # not b"old\nline one\nline tw"


def test_a_half_record_is_cut_off(tmp_path: Path) -> None:
    path = tmp_path / "f"
    records = [b"A" * 10, b"B" * 10, b"C" * 10]

    def work() -> Any:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        data = b"".join(records)
        try:
            append(fd, data)
        except AppendError as e:
            kept, torn = e.settle(fd, data, (10, 20, 30))
            return {"kept": kept, "torn": torn}
        return "written"

    assert limited(25, work) == {"kept": 2, "torn": False}
    assert path.read_bytes() == b"A" * 10 + b"B" * 10
    assert limited(5, work) == {"kept": 0, "torn": False}  # nothing fit: nothing stays
    assert path.read_bytes() == b"A" * 10 + b"B" * 10


def test_line_file_counts_and_keeps_whole_lines(tmp_path: Path) -> None:
    """LOGEMU's writer: lines written whole stay, the half one goes, the rest are counted,
    and the next batch that fits goes out (the file is retried, not given up)."""
    path = tmp_path / "emu.log"

    def work() -> Any:
        ctx = Context(loop=Loop())
        ctx.log.stream = open(os.devnull, "w")  # noqa: SIM115 - the log is not under test
        ctx.log.path = "test"
        out: FileSink[str] = FileSink(ctx, str(path), "logemu.emu1", "LOGEMU")
        out.open()
        for n in range(5):
            out.add(f"record {n}\n")  # 9 bytes each
        out.flush()
        first = dict(ctx.stats.snapshot())
        content = path.read_text()
        os.ftruncate(out.fd, 0)  # room again
        out.add("record 5\n")
        out.flush()
        return [first, content, ctx.stats.snapshot(), ctx.log.last_error]

    first, content, after, error = limited(30, work)
    assert content == "record 0\nrecord 1\nrecord 2\n"  # 3 bytes of "record 3" were cut off again
    assert first == {"logemu.emu1.lines_lost": 2, "logemu.emu1.write_errors": 1}
    assert after == first  # the next batch went out
    assert error == "LOGEMU: can't write to '" + str(path) + "': File too large; dropping lines"
    assert path.read_text() == "record 5\n"


def test_a_half_line_that_cannot_be_cut_is_ended_before_the_next(tmp_path: Path) -> None:
    """A pipe takes part of a batch and cannot be truncated: the next batch that gets through
    starts with a newline, so its first line is whole (and the half one stays visibly cut)."""
    r, w = os.pipe2(os.O_NONBLOCK)
    try:
        fcntl.fcntl(w, F_SETPIPE_SZ, 8192)
        os.write(w, b"x" * 4096)  # one page of two taken: a longer write stops after 4096 bytes
        ctx = Context(loop=Loop())
        ctx.log.stream = io.StringIO()
        ctx.log.path = "test"
        out: FileSink[str] = FileSink(ctx, "<pipe>", "logemu.emu1", "LOGEMU")
        out.fd = w
        out.add("a" * 99 + "\n")
        out.add("b" * 4999 + "\n")  # more than PIPE_BUF: the kernel may write part of it
        out.flush()
        assert ctx.stats.get("logemu.emu1.lines_lost") == 1
        assert os.read(r, 65536) == b"x" * 4096 + b"a" * 99 + b"\n" + b"b" * 3996
        out.add("next\n")
        out.flush()
        assert os.read(r, 65536) == b"\nnext\n"
        out.add("and on\n")
        out.flush()
        assert os.read(r, 65536) == b"and on\n"
    finally:
        os.close(r)
        os.close(w)
