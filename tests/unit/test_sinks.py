"""The transport layer (pyulogd.io: sink.py, filesink.py, streamsink.py, dgramsink.py,
output.py, spool.py) on its own: what every output relies on, tested once here instead of
through each output. The outputs' own tests check their bytes on top of it."""

from __future__ import annotations

import os
import signal
import socket
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest

from pyulogd.core.context import Context
from pyulogd.core.errors import PluginError
from pyulogd.core.plugin import DataType, Key, KeyType, Source
from pyulogd.io.dgramsink import DgramSink
from pyulogd.io.filesink import PCAP_FILE, FileSink, StdoutSink
from pyulogd.io.loop import Loop
from pyulogd.io.output import Output
from pyulogd.io.recordfmt import encode_batch
from pyulogd.io.sender import Endpoint
from pyulogd.io.sink import FLUSH_AT, BufferedSink, LineSink, SinkCounters
from pyulogd.io.spool import Spool
from pyulogd.io.streamsink import StreamSink
from tests.clocked import fake_context, loop_until
from tests.helpers import make_stack, stop_stack


def quiet(ctx: Context, tmp_path: Path) -> Context:
    ctx.log.set_destination(str(tmp_path / "daemon.log"))
    return ctx


# -- counters


def test_counters_by_cause() -> None:
    c = SinkCounters()
    c.received = 5
    c.written = 2
    c.drop("queue_full", 2)
    c.drop("queue_full", 0)  # nothing lost: no cause appears
    c.drop("refused", 1)
    assert c.lost == 3
    assert c.snapshot() == {"received": 5, "written": 2, "dropped.queue_full": 2, "dropped.refused": 1}


# -- files


def test_file_sink_batches_and_counts(tmp_path: Path) -> None:
    ctx = Context(loop=Loop())
    sink: FileSink[str] = FileSink(ctx, str(tmp_path / "f.log"), "t.t1", "T")
    sink.open()
    for i in range(3):
        sink.add(f"line {i}\n")
    assert (tmp_path / "f.log").read_text() == "" and sink.counters.received == 0  # counted at flush
    sink.flush()
    assert (tmp_path / "f.log").read_text() == "line 0\nline 1\nline 2\n"
    assert sink.counters.snapshot() == {"received": 3, "written": 3}
    sink.close()
    sink.close()  # twice is safe


def test_file_sink_cuts_the_half_line_a_killed_daemon_left(tmp_path: Path) -> None:
    """A write to a file stops short when SIGKILL comes: the next start cuts off the half line
    (the write-ahead log replays that record), and never what is not a line of its own."""
    ctx = Context(loop=Loop())
    path = tmp_path / "f.log"
    path.write_bytes(b'{"a": 1}\n{"a": 2}\n{"a"')
    sink: FileSink[str] = FileSink(ctx, str(path), "t.t1", "T")
    sink.open()
    sink.add('{"a": 3}\n')
    sink.flush()
    sink.close()
    assert path.read_bytes() == b'{"a": 1}\n{"a": 2}\n{"a": 3}\n'
    # No newline at all: not ours to cut; the next batch starts on a line of its own.
    path.write_bytes(b"seed")
    sink = FileSink(ctx, str(path), "t.t1", "T")
    sink.open()
    sink.add("x\n")
    sink.flush()
    sink.close()
    assert path.read_bytes() == b"seed\nx\n"


def test_file_sink_writes_at_the_limit(tmp_path: Path) -> None:
    ctx = Context(loop=Loop())
    sink: FileSink[str] = FileSink(ctx, str(tmp_path / "f.log"), "t.t1", "T")
    sink.open()
    line = "x" * 1023 + "\n"
    for _ in range(FLUSH_AT // 1024):
        sink.add(line)
    assert (tmp_path / "f.log").stat().st_size == FLUSH_AT and not sink.pending
    sink.close()


def test_file_sink_not_open_counts_the_loss(tmp_path: Path) -> None:
    ctx = quiet(Context(loop=Loop()), tmp_path)
    sink: FileSink[str] = FileSink(ctx, str(tmp_path / "f.log"), "t.t1", "T")
    sink.add("lost\n")
    sink.flush()
    assert sink.counters.dropped == {"not_open": 1}
    assert ctx.stats.get("t.t1.lines_lost") == 1 and ctx.stats.get("t.t1.write_errors") == 1
    assert not (tmp_path / "f.log").exists()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_file_sink_write_failures_by_cause_and_once_per_burst(tmp_path: Path) -> None:
    ctx = quiet(Context(loop=Loop()), tmp_path)
    sink: FileSink[str] = FileSink(ctx, "/dev/full", "t.t1", "T")
    sink.open()
    for _ in range(2):
        sink.add("a\n")
        sink.flush()
    sink.close()
    assert sink.counters.dropped == {"write_failed": 2} and sink.counters.written == 0
    log = (tmp_path / "daemon.log").read_text()
    assert log.count("T: can't write to '/dev/full': No space left on device; dropping lines") == 1


def test_binary_file_sink_header_only_on_an_empty_file(tmp_path: Path) -> None:
    ctx = Context(loop=Loop())
    path = tmp_path / "f.bin"

    def run(record: bytes) -> None:
        sink: FileSink[bytes] = FileSink(ctx, str(path), "t.t1", "T", binary=True, header=lambda: b"HEAD",
                                         lost_name="records_lost", wording=PCAP_FILE)  # fmt: skip
        sink.open()
        sink.add(record)
        sink.close()

    run(b"one")
    run(b"two")
    assert path.read_bytes() == b"HEADonetwo"


def test_binary_file_sink_open_failure_in_its_own_words(tmp_path: Path) -> None:
    ctx = Context(loop=Loop())
    sink: FileSink[bytes] = FileSink(ctx, str(tmp_path / "no" / "f"), "t.t1", "T", binary=True, wording=PCAP_FILE)
    with pytest.raises(PluginError, match=f"^T: can't open pcap file {tmp_path}/no/f: No such file"):
        sink.open()


def test_file_sink_reopen_keeps_the_old_file_when_the_new_cannot_be_opened(tmp_path: Path) -> None:
    ctx = quiet(Context(loop=Loop()), tmp_path)
    d = tmp_path / "d"
    d.mkdir()
    sink: FileSink[str] = FileSink(ctx, str(d / "f.log"), "t.t1", "T")
    sink.open()
    sink.add("before\n")
    (d / "f.log").rename(tmp_path / "moved.log")
    d.rmdir()
    sink.reopen()
    sink.add("after\n")
    sink.close()
    assert (tmp_path / "moved.log").read_text() == "before\nafter\n"
    assert "T: can't reopen" in (ctx.log.last_error or "") and "keeping old file" in (ctx.log.last_error or "")


def test_stdout_sink_never_closes_standard_output(capfd: pytest.CaptureFixture[str]) -> None:
    ctx = Context(loop=Loop())
    sink = StdoutSink(ctx, "t.t1", "T")
    sink.open()
    sink.add("a\n")
    sink.reopen()
    sink.add("b\n")
    sink.close()
    os.fstat(1)  # still open
    assert capfd.readouterr().out == "a\nb\n"


def test_the_sinks_are_line_sinks(tmp_path: Path) -> None:
    """What outputs rely on: every sink has the LineSink methods and counters; the buffering
    ones also the BufferedSink attributes LOGEMU and JSON write to directly."""
    ctx = Context(loop=Loop())
    where = Endpoint("127.0.0.1", 9)
    file: FileSink[str] = FileSink(ctx, str(tmp_path / "f"), "t.t1", "T")
    stream: StreamSink[str] = StreamSink(ctx, "T", where, "t.t1", queue_bytes=0, backoff_max=1)
    dgram: DgramSink[str] = DgramSink(ctx, "T", where, "t.t1", queue_bytes=0, backoff_max=1)
    sinks = (file, StdoutSink(ctx, "t.t1", "T"), stream, dgram)
    for sink in sinks:
        for name in ("open", "add", "flush", "reopen", "close"):
            assert callable(getattr(sink, name)), (sink, name)
        assert isinstance(sink.counters, SinkCounters)
        assert isinstance(sink.pending, list) and sink.size == 0 and sink.limit == FLUSH_AT
    # The sinks as the outputs hold them (``MYPYPATH=src mypy tests/unit/test_sinks.py`` checks
    # that they implement the protocols).
    line_sinks: list[LineSink[str]] = [sinks[0], sinks[1], sinks[2], sinks[3]]
    buffered: list[BufferedSink[str]] = [sinks[0], sinks[1], sinks[2], sinks[3]]
    assert len(line_sinks) == len(buffered) == 4


# -- network


def listener(kind: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    s.settimeout(5)
    if kind == socket.SOCK_STREAM:
        s.listen(1)
    return s


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_stream_batch_goes_as_one_send_at_flush() -> None:
    ctx, _ = fake_context()
    with listener(socket.SOCK_STREAM) as server:
        sink: StreamSink[str] = StreamSink(ctx, "T", Endpoint("127.0.0.1", server.getsockname()[1]), "t.t1",
                                           queue_bytes=1 << 20, backoff_max=60)  # fmt: skip
        sink.open()
        conn, _ = server.accept()
        with conn:
            sink.add("a\n")
            sink.add("b\n")
            assert sink.sender.backlog == 0 and len(sink.pending) == 2  # waits for the round's end
            sink.flush()
            conn.settimeout(5)
            data = b""
            while data.count(b"\n") < 2:
                data += conn.recv(100)
            sink.close()
    assert data == b"a\nb\n"
    assert sink.counters.snapshot() == {"received": 2, "written": 2}
    assert ctx.stats.get("t.t1.sent") == 2


def test_stream_line_by_line_counts_each_record_that_does_not_fit(tmp_path: Path) -> None:
    ctx, _ = quiet(fake_context()[0], tmp_path), None
    sink: StreamSink[str] = StreamSink(ctx, "T", Endpoint("127.0.0.1", free_port(socket.SOCK_STREAM)), "t.t1",
                                       queue_bytes=10, backoff_max=60, batch=False)  # fmt: skip
    sink.open()
    loop_until(ctx, lambda: sink.sock is None)  # the refused connect is noticed
    for _ in range(4):
        sink.add("1234\n")  # 5 bytes: two fit in the queue
    assert sink.sender.backlog == 2 and sink.counters.dropped == {"queue_full": 2}
    assert ctx.stats.get("t.t1.queue_overflow") == 2
    sink.close()
    assert sink.counters.received == 4 and sink.counters.dropped == {"queue_full": 2, "unsent_at_exit": 2}


def test_stream_resolution_failure_in_the_outputs_words() -> None:
    ctx = Context(loop=Loop())
    sink: StreamSink[str] = StreamSink(ctx, "T", Endpoint("name.invalid", 1), "t.t1", queue_bytes=0, backoff_max=1,
                                       resolve_failed="{label}: getaddrinfo: {reason}")  # fmt: skip
    with pytest.raises(PluginError, match="^T: getaddrinfo: "):
        sink.open()


def test_datagrams_one_per_line_and_sync() -> None:
    ctx, _ = fake_context()
    with listener(socket.SOCK_DGRAM) as server:
        sink: DgramSink[bytes] = DgramSink(ctx, "T", Endpoint("127.0.0.1", server.getsockname()[1]), "t.t1",
                                           queue_bytes=1 << 20, backoff_max=60, sync=True)  # fmt: skip
        sink.open()
        sink.add(b"one")  # sync: handed over and sent at once
        assert server.recv(100) == b"one"
        sink.add(b"two")
        sink.add(b"three")
        assert [server.recv(100), server.recv(100)] == [b"two", b"three"]
        sink.close()
    assert sink.counters.snapshot() == {"received": 3, "written": 3}


def test_unix_datagram_endpoint(tmp_path: Path) -> None:
    ctx, _ = fake_context()
    path = str(tmp_path / "d.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        server.settimeout(5)
        sink: DgramSink[str] = DgramSink(ctx, "T", Endpoint(path=path), "t.t1", queue_bytes=1 << 20,
                                         backoff_max=60, batch=False)  # fmt: skip
        assert sink.sender.peer == path
        sink.open()
        sink.add("x\n")
        sink.flush()
        assert server.recv(100) == b"x\n"
        sink.close()


# -- the output base


class LineSource(Source):
    name = "LINESRC"
    output_type = DataType.PACKET
    output_keys = (Key("print", KeyType.STRING),)

    def push(self, text: str | None) -> None:
        self.emit([None, text])


class Echo(Output[str]):
    """The smallest output: the ``print`` string, to a file."""

    name = "ECHO"
    input_type = DataType.PACKET
    input_keys = (Key("print", KeyType.STRING),)
    reopen_notice = "ECHO: reopening logfile"

    def make_sink(self) -> FileSink[str]:
        return FileSink(self.ctx, self.config["file"], f"echo.{self.id}", "ECHO")

    def prepare(self) -> None:
        self._slot = self.in_slots[0]

    def render(self, rec: list[Any]) -> str | None:
        text = rec[self._slot]
        return None if text is None else text + "\n"


def echo_stack(tmp_path: Path, ctx: Context | None = None, start: bool = True) -> Any:
    return make_stack([LineSource, (Echo, {"file": str(tmp_path / "e.log")})], ctx, start=start)


def test_output_is_options_render_and_sink(tmp_path: Path) -> None:
    ctx = quiet(Context(loop=Loop()), tmp_path)
    stack = echo_stack(tmp_path, ctx)
    stack.source.push("a")
    stack.source.push(None)  # nothing to write for it
    stack.source.push("b")
    stack.sink.flush()
    assert (tmp_path / "e.log").read_text() == "a\nb\n"
    (tmp_path / "e.log").rename(tmp_path / "e.log.1")
    stack.sink.signal(signal.SIGUSR1)  # not a reopen
    stack.sink.signal(signal.SIGHUP)
    stack.source.push("c")
    stop_stack(stack)
    assert (tmp_path / "e.log").read_text() == "c\n"
    assert "ECHO: reopening logfile" in (tmp_path / "daemon.log").read_text()
    assert stack.sink.counters.snapshot() == {"received": 3, "written": 3}
    assert stack.errors == 0


def test_output_stop_is_safe_before_configure_and_twice(tmp_path: Path) -> None:
    out = Echo(Context(loop=Loop()), "e1", {"file": str(tmp_path / "never")})
    out.stop()
    out.flush()
    out.signal(signal.SIGHUP)
    out.stop()
    assert out.counters.snapshot() == {"received": 0, "written": 0}
    assert not (tmp_path / "never").exists()


def test_output_not_started_is_an_error_of_the_record_not_a_crash(tmp_path: Path) -> None:
    ctx = quiet(Context(loop=Loop()), tmp_path)
    stack = echo_stack(tmp_path, ctx, start=False)
    stack.source.push("early")  # the stack counts it; the daemon goes on
    assert stack.errors == 1
    out = Echo(ctx, "e2", {"file": str(tmp_path / "x")})
    with pytest.raises(PluginError, match="ECHO instance 'e2' was not configured"):
        out.start()


# -- the spool, in the one record format


def test_spool_keeps_sequence_numbers(tmp_path: Path) -> None:
    sp = Spool(str(tmp_path), 1 << 20)
    sp.open()
    sp.append(("a", "b"), [(1, "x"), (2, None)], [10, 11])
    sp.append(("a",), [(3,)])
    first = sp.peek()
    assert first is not None and first.names == ("a", "b") and first.seqs == [10, 11]
    assert first.rows == [(1, "x"), (2, None)]
    sp.ack(first)
    second = sp.peek()
    assert second is not None and second.seqs is None and second.rows == [(3,)]
    sp.close()


def test_spool_skips_a_frame_of_another_format(tmp_path: Path) -> None:
    """A frame whose checksum is right but whose bytes are no record batch (another version,
    a bug) is skipped and counted; the frames after it are read."""
    sp = Spool(str(tmp_path), 1 << 20)
    sp.open()
    sp.append(("a",), [(1,)])
    sp.close()
    seg = next(tmp_path.glob("*.seg"))
    alien = b"PR\x09\x00" + bytes(8)  # version 9
    good = encode_batch(("a",), [(2,)])
    with open(seg, "ab") as f:
        for payload in (alien, good):
            f.write(struct.pack("<II", len(payload), zlib.crc32(payload)) + payload)
    sp = Spool(str(tmp_path), 1 << 20)
    sp.open()
    got = []
    while (frame := sp.peek()) is not None:
        got += frame.rows
        sp.ack(frame)
    sp.close()
    assert got == [(1,), (2,)] and sp.corrupt == 1


def test_spool_ignores_segments_of_the_marshal_format(tmp_path: Path) -> None:
    (tmp_path / f"{1:020d}.seg").write_bytes(b"PYULOGD-SPOOL 1\n" + struct.pack("<II", 3, zlib.crc32(b"abc")) + b"abc")
    sp = Spool(str(tmp_path), 1 << 20)
    sp.open()
    assert sp.peek() is None and sp.corrupt == 1
    sp.close()


# -- the SQL outputs' sink


def test_sql_rows_counted_written_and_refused_by_cause(tmp_path: Path) -> None:
    """SQLITE3 on the output base: rows through WriterSink to the writer thread; the counters
    say what the database took and what it refused, as ``sql.<id>.*`` do."""
    import sqlite3

    from pyulogd.plugins.outputs.sqlite3 import Sqlite3Output
    from tests.helpers import NflogKeys

    con = sqlite3.connect(tmp_path / "a.db")
    con.execute("CREATE TABLE t (raw_pktlen integer CHECK (raw_pktlen != 3))")
    con.close()
    ctx = quiet(Context(loop=Loop()), tmp_path)
    stack = make_stack([NflogKeys, (Sqlite3Output, {"db": str(tmp_path / "a.db"), "table": "t"})], ctx)
    for n in range(1, 6):
        stack.source.emit_dict({"raw.pktlen": n})
    stop_stack(stack)  # writes what waits (stop_timeout), then the threads end
    got = [r[0] for r in sqlite3.connect(tmp_path / "a.db").execute("SELECT raw_pktlen FROM t")]
    assert got == [1, 2, 4, 5]
    assert stack.sink.counters.snapshot() == {"received": 5, "written": 4, "dropped.rejected": 1}
    assert ctx.stats.get("sql.sqlite31.rows") == 4 and ctx.stats.get("sql.sqlite31.rejected") == 1
