"""LOGEMU: the 2.0.8 line format, batching and sync, SIGHUP reopen, write errors, golden."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyulogd.core.clock import FakeClock
from pyulogd.core.context import Context
from pyulogd.core.errors import PluginError
from pyulogd.core.plugin import DataType, Key, KeyType, Source
from pyulogd.io.loop import Loop
from pyulogd.io.rtnl import LinkCache
from pyulogd.io.sink import FLUSH_AT
from pyulogd.plugins.filters.ifindex import IfindexFilter
from pyulogd.plugins.filters.ip2str import Ip2strFilter
from pyulogd.plugins.filters.printpkt import PrintpktFilter
from pyulogd.plugins.outputs.logemu import LogemuOutput
from tests.helpers import BaseKeys, NflogKeys, golden_packets, goldentool, make_stack, stop_stack


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
    output_keys = (Key("print", KeyType.STRING), Key("oob.time.sec", KeyType.UINT32))

    def push(self, text: str | None, sec: int | None = 1795764125) -> None:
        self.emit([None, text, sec])


class Writes:
    """Counts os.write calls on one fd."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[int] = []
        real = os.write

        def write(fd: int, data: Any) -> int:
            self.calls.append(len(data))
            return real(fd, data)

        monkeypatch.setattr(os, "write", write)


def emu(path: Path, ctx: Context | None = None, sync: int = 0) -> tuple[Any, LogemuOutput]:
    ctx = ctx or Context(loop=Loop())
    ctx.hostname = "vm"
    stack = make_stack([PrintSource, (LogemuOutput, {"file": str(path), "sync": sync})], ctx)
    out = stack.sink
    assert isinstance(out, LogemuOutput)
    return stack, out


def test_declarations() -> None:
    assert LogemuOutput.name == "LOGEMU" and LogemuOutput.so_name == "ulogd_output_LOGEMU.so"
    assert {o.name: o.default for o in LogemuOutput.options} == {
        "file": "/var/log/ulogd_syslogemu.log",
        "sync": 0,
        "netns_prefix": 0,  # pyulogd extra
        "chain_key": "",  # pyulogd extra: tamper evidence (io/chain.py)
        "split_by": "",  # pyulogd extra
    }
    keys = [(k.name, k.optional) for k in LogemuOutput.input_keys]
    assert keys == [("print", False), ("oob.time.sec", True), ("oob.netns", True),
                    ("neutron.project_id", True), ("neutron.peer_project_id", True)]  # fmt: skip


def test_line_format(tmp_path: Path) -> None:
    path = tmp_path / "emu.log"
    stack, out = emu(path)
    stack.source.push("gbACCEPT  IN=gbb0 OUT= MARK=0x0 \n")
    stack.source.push("x \n", sec=1795764125 - 22 * 86400)  # a day < 10: space-padded
    stack.source.push(None)  # no print: nothing written
    out.stop()
    assert path.read_text() == (
        "Nov 27 07:22:05 vm gbACCEPT  IN=gbb0 OUT= MARK=0x0 \n"
        "Nov  5 07:22:05 vm x \n"
    )


def test_time_is_now_without_packet_time(tmp_path: Path) -> None:
    ctx = Context(loop=Loop(FakeClock(wall=1795764130.9)))
    stack, out = emu(tmp_path / "e.log", ctx)
    stack.source.push("a\n", sec=None)
    out.stop()
    assert (tmp_path / "e.log").read_text() == "Nov 27 07:22:10 vm a\n"


def test_time_is_formatted_once_per_second(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stack, out = emu(tmp_path / "e.log")
    calls: list[float] = []
    real = time.ctime
    def ctime(sec: float) -> str:
        calls.append(sec)
        return real(sec)

    monkeypatch.setattr(time, "ctime", ctime)
    for sec in (10, 10, 10, 11, 11, 10):
        stack.source.push("x\n", sec=sec)
    assert calls == [10, 11, 10]
    out.stop()


def test_batched_until_flush(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "e.log"
    stack, out = emu(path)
    writes = Writes(monkeypatch)
    for i in range(100):
        stack.source.push(f"line {i}\n")
    assert writes.calls == [] and path.read_text() == ""
    out.flush()
    assert len(writes.calls) == 1
    assert len(path.read_text().splitlines()) == 100
    out.flush()  # nothing pending: no write
    assert len(writes.calls) == 1
    out.stop()


def test_big_batches_are_written_at_64k(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stack, out = emu(tmp_path / "e.log")
    writes = Writes(monkeypatch)
    text = "y" * 999 + "\n"
    for _ in range(200):  # ~200 KB
        stack.source.push(text)
    assert len(writes.calls) == 3
    assert all(n >= FLUSH_AT for n in writes.calls)
    assert all(n % 1019 == 0 for n in writes.calls)  # whole lines of 19 + 1000 bytes
    out.stop()
    assert len((tmp_path / "e.log").read_text().splitlines()) == 200


def test_sync_writes_once_per_round(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """sync=1 records are in the file when the round ends, with one write() for the round."""
    path = tmp_path / "e.log"
    stack, out = emu(path, sync=1)
    writes = Writes(monkeypatch)
    stack.source.push("one\n")
    stack.source.push("two\n")
    out.flush()  # the loop does this after every round of ready sockets
    assert path.read_text() == "Nov 27 07:22:05 vm one\nNov 27 07:22:05 vm two\n"
    assert len(writes.calls) == 1
    out.stop()


def test_appends_to_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "e.log"
    path.write_text("old\n")
    stack, out = emu(path)
    stack.source.push("new\n")
    out.stop()
    assert path.read_text() == "old\nNov 27 07:22:05 vm new\n"


def test_sighup_reopens(tmp_path: Path) -> None:
    path = tmp_path / "e.log"
    stack, out = emu(path)
    stack.source.push("before\n")
    path.rename(tmp_path / "e.log.1")
    out.signal(signal.SIGHUP)  # pending lines still go to the old file first
    stack.source.push("after\n")
    out.stop()
    assert (tmp_path / "e.log.1").read_text() == "Nov 27 07:22:05 vm before\n"
    assert path.read_text() == "Nov 27 07:22:05 vm after\n"


def test_failed_reopen_keeps_the_old_file(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    path = folder / "e.log"
    ctx = Context(loop=Loop())
    stack, out = emu(path, ctx)
    path.rename(tmp_path / "moved.log")
    folder.rmdir()  # the name cannot be created again
    out.signal(signal.SIGHUP)
    assert "keeping old file" in (ctx.log.last_error or "")
    stack.source.push("still here\n")
    out.stop()
    assert (tmp_path / "moved.log").read_text() == "Nov 27 07:22:05 vm still here\n"


def test_other_signals_are_ignored(tmp_path: Path) -> None:
    stack, out = emu(tmp_path / "e.log")
    fd = out.out.fd
    out.signal(signal.SIGUSR1)
    assert out.out.fd == fd
    out.stop()


def test_bytes_that_are_not_utf8_are_written_as_received(tmp_path: Path) -> None:
    path = tmp_path / "e.log"
    stack, out = emu(path)
    stack.source.push(b"pr\xe9fix \xff MAC= \n".decode("utf-8", "surrogateescape"))
    out.stop()
    assert path.read_bytes() == b"Nov 27 07:22:05 vm pr\xe9fix \xff MAC= \n"


def test_open_failure_is_a_plugin_error(tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="can't open"):
        emu(tmp_path / "missing" / "e.log")


def test_stop_is_safe_without_start_and_twice(tmp_path: Path) -> None:
    out = LogemuOutput(Context(loop=Loop()), "emu1", {"file": str(tmp_path / "x"), "sync": 0})
    out.stop()
    out.stop()
    assert not (tmp_path / "x").exists()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_write_errors_are_counted_not_raised() -> None:
    ctx = Context(loop=Loop())
    stack, out = emu(Path("/dev/full"), ctx)
    stack.source.push("a\n")
    stack.source.push("b\n")
    out.flush()
    stack.source.push("c\n")
    out.flush()
    assert ctx.stats.get("logemu.logemu1.write_errors") == 2
    assert ctx.stats.get("logemu.logemu1.lines_lost") == 3
    assert "dropping lines" in (ctx.log.last_error or "")
    out.stop()


def test_two_stacks_one_file_never_split_lines(tmp_path: Path) -> None:
    path = tmp_path / "shared.log"
    ctx = Context(loop=Loop())
    s1, o1 = emu(path, ctx)
    s2, o2 = emu(path, ctx)
    for i in range(300):
        s1.source.push(f"first {i} " + "a" * 300 + "\n")
        s2.source.push(f"second {i} " + "b" * 300 + "\n")
        if i % 7 == 0:
            o1.flush()
        if i % 5 == 0:
            o2.flush()
    o1.stop()
    o2.stop()
    lines = path.read_text().splitlines()
    assert len(lines) == 600
    assert all(line.endswith("a" * 300) or line.endswith("b" * 300) for line in lines)


def test_golden_logemu_file(tmp_path: Path) -> None:
    """The whole golden stack (IFINDEX, IP2STR, PRINTPKT, LOGEMU) against 2.0.8's file."""
    ctx = Context(loop=Loop())
    ctx.hostname = "vm"
    cache = LinkCache(ctx, kernel=False)
    cache.update({2: "gbb0"})
    ctx.ifcache = cache  # type: ignore[attr-defined]
    path = tmp_path / "logemu.log"
    emu_out = (LogemuOutput, {"file": str(path)})
    stack = make_stack([NflogKeys, BaseKeys, IfindexFilter, Ip2strFilter, PrintpktFilter, emu_out], ctx)
    base = stack.instances[1]
    want = []
    for nflog, values, _obj, line in golden_packets():
        base.values = values  # type: ignore[attr-defined]
        stack.source.emit_dict(nflog)  # type: ignore[attr-defined]
        want.append(line)
    stop_stack(stack)
    got = path.read_text()
    assert got.count("\n") == 44
    tool = goldentool()
    assert tool.mask_logemu(got) == tool.mask_logemu("\n".join(want))
    # the packet time is the JSON run's, seconds apart from the LOGEMU run's: same shape
    assert got.splitlines()[0].startswith("Nov 27 07:22:10 vm gbACCEPT  IN=gbb0 OUT= MAC=02:00:0a:c9:00:02:")
