"""The write-ahead log (io/wal.py): its format on bytes (frames, torn tails, CRC, segments,
the state's two slots), sequence numbers across a crash, commit cursors and replay."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyulogd.core.config import parse_file
from pyulogd.core.context import Context
from pyulogd.core.errors import ConfigError
from pyulogd.core.plugin import OK, DataType, Key, Sink, Source
from pyulogd.core.plugin import KeyType as T
from pyulogd.io import wal
from pyulogd.io.sink import SinkCounters
from pyulogd.io.wal import HEADER, Journal, WalFile, WalSettings, decode_frames, encode_frame, encode_reads
from pyulogd.netns.source import NETNS_KEYS, NETNS_OPTIONS, NetnsSource
from pyulogd.plugins.filters.ratelimit import RateLimitFilter
from tests.clocked import fake_clock, fake_context
from tests.helpers import make_stack

NAMES = ("a.n", "a.s", "a.b")


def _rows(n: int, base: int = 0) -> list[tuple[Any, ...]]:
    return [(base + i, f"s{base + i}\udcff", bytes([i % 256]) * (i % 5)) for i in range(n)]


# -- frames


def test_frames_round_trip() -> None:
    data = encode_frame("src1", NAMES, _rows(5), [10, 11, 12, 13, 14]) + encode_reads(
        "nf1", [(1.5, 15, 2, b"\x01\x02"), (2.25, 17, 1, b"")]
    )
    frames, bad = decode_frames(data)
    assert bad == 0
    assert [(f.source, f.names, f.rows, f.seqs, f.reads) for f in frames] == [
        ("src1", NAMES, _rows(5), [10, 11, 12, 13, 14], None),
        ("nf1", (), [], [], [(1.5, 15, 2, b"\x01\x02"), (2.25, 17, 1, b"")]),
    ]
    assert [f.last for f in frames] == [14, 17]


def test_a_torn_tail_keeps_every_whole_frame() -> None:
    whole = encode_frame("s", NAMES, _rows(3), [1, 2, 3])
    last = encode_frame("s", NAMES, _rows(2, 3), [4, 5])
    for cut in range(len(last)):
        frames, bad = decode_frames(whole + last[:cut])
        assert [f.seqs for f in frames] == [[1, 2, 3]]
        assert bad == (1 if cut else 0)


@given(st.integers(min_value=0), st.integers(min_value=0, max_value=7))
@settings(max_examples=200, deadline=None)
def test_a_damaged_frame_ends_the_segment(pos: int, bit: int) -> None:
    a = encode_frame("s", NAMES, _rows(3), [1, 2, 3])
    b = encode_frame("s", NAMES, _rows(2, 3), [4, 5])
    c = encode_frame("s", NAMES, _rows(1, 5), [6])
    data = bytearray(a + b + c)
    at = len(a) + pos % len(b)  # somewhere in the second frame
    data[at] ^= 1 << bit
    frames, bad = decode_frames(bytes(data))
    # The first frame stays; the damaged one and everything after it are not trusted.
    assert [f.seqs for f in frames] == [[1, 2, 3]] and bad == 1


# -- the directory


def test_segments_rotate_trim_and_discard(tmp_path: Path) -> None:
    w = WalFile(str(tmp_path), segment_size=300, max_bytes=1 << 20, fsync=False)
    assert w.open() == {} and list(w.old_frames()) == []
    seq = 0
    for _ in range(6):
        frame = encode_frame("s", NAMES, _rows(3, seq), [seq + 1, seq + 2, seq + 3])
        seq += 3
        w.append(frame, seq)
    segs = sorted(w.segments)
    assert len(segs) > 1
    assert len(os.listdir(tmp_path)) == len(segs) + 2  # + LOCK, state
    # A cursor in the middle: segments whose every record is at or below it go.
    first_last = w.last_seq[segs[0]]
    w.trim(first_last)
    assert segs[0] not in w.segments and segs[1] in w.segments
    w.trim(seq)  # everything committed: all but the segment being appended to
    assert sorted(w.segments) == [segs[-1]]
    w.close()
    # What is left reads back, and the next run appends to a new segment.
    w2 = WalFile(str(tmp_path), 300, 1 << 20, False)
    w2.open()
    frames = list(w2.old_frames())
    assert frames and frames[-1].last == seq
    w2.append(encode_frame("s", NAMES, _rows(1), [seq + 1]), seq + 1)
    assert max(w2.segments) == segs[-1] + 1
    # Past max_bytes the oldest segment goes even if a cursor still needs it (counted).
    w2.max_bytes = 10
    w2.trim(0)
    assert w2.discarded == 1
    w2.close()


def test_one_daemon_per_directory(tmp_path: Path) -> None:
    w = WalFile(str(tmp_path), 1 << 20, 1 << 30, False)
    w.open()
    with pytest.raises(wal.WalError, match="another running daemon"):
        WalFile(str(tmp_path), 1 << 20, 1 << 30, False).open()
    w.close()


def test_a_link_is_not_a_segment(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").write_bytes(HEADER)
    os.symlink(tmp_path / "elsewhere", tmp_path / f"{1:020d}.wal")
    w = WalFile(str(tmp_path), 1 << 20, 1 << 30, False)
    w.open()
    assert list(w.old_frames()) == [] and w.corrupt == 1
    w.close()


def test_state_slots_survive_a_torn_write(tmp_path: Path) -> None:
    w = WalFile(str(tmp_path), 1 << 20, 1 << 30, False)
    w.open()
    w.save_state({"reserved": 1})
    w.save_state({"reserved": 2})
    w.close()
    assert wal.read_state(str(tmp_path)) == {"reserved": 2}
    # Tear the newer slot (generation 2: slot 0): the older one is read.
    with open(tmp_path / "state", "r+b") as f:
        f.seek(struct.calcsize("<IIQ") + 3)
        f.write(b"\xff")
    assert wal.read_state(str(tmp_path)) == {"reserved": 1}


# -- the journal: sources, outputs, cursors, replay


class Src(Source):
    name = "WALSRC"
    output_type = DataType.PACKET
    output_keys = (Key("a.n", T.UINT32), Key("a.s", T.STRING), Key("a.b", T.RAW))

    def send(self, rows: list[tuple[Any, ...]]) -> None:
        self.emit_all([[None, *r] for r in rows])


class RawSrc(Src):
    """Logs what it read (the datagram: a count); its records are a function of it and now."""

    name = "WALRAW"

    def read(self, data: bytes, now: float) -> None:
        self.hold()
        try:
            recs = self.wal_decode(data, now)
            raw = self.wal_raw
            if raw is not None:
                raw.append((now, self.ctx.seq + 1, len(recs), data))
            self.emit_all(recs)
        finally:
            self.release()

    def wal_decode(self, data: bytes, now: float) -> list[list[Any]]:
        return [[None, int(now) + i, f"p{i}", data] for i in range(data[0])]


class Out(Sink):
    """Keeps (seq, record values) of what it gets; ``durable`` plays the commit cursor."""

    name = "WALOUT"
    wildcard_inputs = True
    input_type = DataType.PACKET

    def __init__(self, ctx: Context, instance_id: str, config: dict[str, Any]) -> None:
        super().__init__(ctx, instance_id, config)
        self.got: list[tuple[int, tuple[Any, ...]]] = []
        self.durable: int | None = None  # None: committed at flush
        self.asked: list[int] = []  # what committed() was called with
        self.counters = SinkCounters()
        self.on_interp: Any = None

    def interp(self, rec: list[Any]) -> int:
        if self.on_interp is not None:
            self.on_interp(self.ctx.seq)
        self.got.append((self.ctx.seq, tuple(rec[s] for s in self.in_slots)))
        self.counters.received += 1
        self.counters.written += 1
        return OK

    def committed(self, seq: int) -> int:
        self.asked.append(seq)
        return seq if self.durable is None else self.durable


def _run(tmp: Path, src_cls: type[Src] = Src) -> tuple[Context, Journal, Src, Out]:
    ctx, _clock = fake_context()
    out = Out(ctx, "out1", {})
    stack = make_stack([src_cls, out], ctx)
    src = stack.source
    assert isinstance(src, Src)
    j = Journal(ctx, WalSettings(enabled=True, path=str(tmp), node_id="n1"))
    j.open()
    j.register_sources([src])
    j.register_outputs([out])
    return ctx, j, src, out


def _crash(j: Journal) -> None:
    """What a SIGKILL leaves: the files as they are (no last round, no last save)."""
    assert j.file is not None
    j.file.close()
    j.file = None


def test_replay_after_a_crash_gives_each_output_what_it_had_not_committed(tmp_path: Path) -> None:
    ctx, j, src, out = _run(tmp_path)
    src.send(_rows(5))
    j.write_round()
    j.after_flush()  # out1 committed 1..5
    out.durable = 5
    src.send(_rows(4, 5))
    j.write_round()
    j.after_flush()  # in the log, not committed: 6..9
    src.send(_rows(2, 9))  # read, never logged (the round did not end)
    top = ctx.seq
    _crash(j)

    ctx2, j2, src2, out2 = _run(tmp_path)
    assert ctx2.seq >= top + 1  # never a number given out before, even unlogged ones
    got = j2.replay()
    assert got == {"out1": 4}
    assert [s for s, _ in out2.got] == [6, 7, 8, 9]  # the original numbers
    assert [v for _, v in out2.got] == [tuple(r) for r in _rows(4, 5)]
    assert out2.counters.replayed == 4
    assert ctx2.seq == j2.reserved - wal.BLOCK  # back above every old number after the replay
    src2.send(_rows(1, 20))
    assert out2.got[-1][0] > top
    j2.close()


def test_replay_starts_each_outputs_marks_at_its_own_cursor(tmp_path: Path) -> None:
    """Outputs that hold records after their flush (SQL writer, network senders) mark each with
    their last ``committed(seq)``: before the replay they are told their cursor, so what they
    hold from then on keeps the cursor there, not at 0 (the whole log again after a crash)."""
    ctx, j, src, out = _run(tmp_path)
    src.send(_rows(5))
    j.write_round()
    out.durable = 3
    j.after_flush()  # cursor 3, saved
    _crash(j)
    _ctx2, j2, _src2, out2 = _run(tmp_path)
    out2.on_interp = lambda seq: out2.asked.append(-seq)  # when the replayed records came
    j2.replay()
    assert out2.asked == [3, -4, -5]  # its cursor first, then the records after it
    j2.close()


def test_counters_survive_the_crash(tmp_path: Path) -> None:
    ctx, j, src, out = _run(tmp_path)
    src.send(_rows(3))
    out.counters.drop("write_failed", 1)
    out.counters.written -= 1
    j.write_round()
    j.after_flush()
    _crash(j)
    _ctx2, j2, _src2, out2 = _run(tmp_path)
    c = out2.counters
    assert (c.received, c.written, c.dropped) == (3, 2, {"write_failed": 1})
    j2.close()


def test_a_source_that_logs_what_it_read_is_logged_before_the_stacks(tmp_path: Path) -> None:
    ctx, j, src, out = _run(tmp_path, RawSrc)
    assert isinstance(src, RawSrc)
    on_disk: list[set[int]] = []

    def check(seq: int) -> None:
        seqs = {f.first + i for fr in wal.read_dir(str(tmp_path)) for f in [_R(*r) for r in fr.reads or []]
                for i in range(f.n)}
        on_disk.append(seqs)
        assert seq in seqs, "a record reached an output before the log had it"

    out.on_interp = check
    src.read(b"\x03", 100.0)
    src.read(b"\x02", 200.0)
    assert [s for s, _ in out.got] == [1 + ctx.seq - 5 + i for i in range(5)]
    out.durable = out.got[2][0]  # the first read committed, not the second
    j.write_round()
    j.after_flush()
    first = [v for _, v in out.got]
    _crash(j)
    out.on_interp = None
    _ctx2, j2, _src2, out2 = _run(tmp_path, RawSrc)
    j2.replay()
    assert [v for _, v in out2.got] == first[3:]  # decoded again, with the same now
    j2.close()


class _R:
    def __init__(self, now: float, first: int, n: int, data: bytes) -> None:
        self.first, self.n = first, n


def test_segments_go_once_every_cursor_passed_them(tmp_path: Path) -> None:
    ctx, j, src, out = _run(tmp_path)
    assert j.file is not None
    j.file.segment_size = 200
    out.durable = 0
    for i in range(10):
        fake_clock(ctx).advance(wal.SAVE_EVERY)
        src.send(_rows(3, i * 3))
        j.write_round()
        j.after_flush()
    held = len(j.file.segments)
    assert held > 2
    out.durable = None  # everything committed
    src.send(_rows(1, 99))
    j.write_round()
    j.after_flush()  # saved at most every SAVE_EVERY: not yet, a timer will
    assert len(j.file.segments) == held + 1
    fake_clock(ctx).advance(wal.SAVE_EVERY)
    ctx.loop.run_once(0)  # type: ignore[attr-defined]
    assert len(j.file.segments) == 1  # trimmed once the cursor that passed them was saved
    assert wal.read_state(str(tmp_path))["cursors"] == {"out1": ctx.seq}
    j.close()


def test_unknown_sources_are_skipped_and_counted(tmp_path: Path) -> None:
    w = WalFile(str(tmp_path), 1 << 20, 1 << 30, False)
    w.open()
    w.append(encode_frame("gone", NAMES, _rows(2), [1, 2]), 2)
    w.close()
    ctx, j, _src, out = _run(tmp_path)
    assert ctx.seq >= 2
    assert j.replay() == {} and j.unknown == 2 and out.got == []
    j.close()


def test_global_options_are_typed_and_checked(tmp_path: Path) -> None:
    from pyulogd.daemon.service import Service
    from pyulogd.io.loop import Loop

    conf = tmp_path / "x.conf"
    conf.write_text(f'[global]\nwal=1\nwal_dir="{tmp_path}/w"\nwal_fsync=round\nwal_max=2M\nnode_id=edge-7\n'
                    "stack=l1:NFLOG,b1:BASE,o1:JSON\n[o1]\nfile=/dev/null\n")
    svc = Service(str(conf), Context(loop=Loop()))
    svc.load_config(parse_file(str(conf)))
    assert svc.wal == WalSettings(True, f"{tmp_path}/w", True, 16 << 20, 2 << 20, "edge-7")
    assert svc.ctx.node_id == "edge-7"
    conf.write_text("[global]\nwal_fsync=sometimes\nstack=l1:NFLOG,b1:BASE,o1:JSON\n")
    with pytest.raises(ConfigError, match=r"wal_fsync.*valid: never, round") as e:
        Service(str(conf), Context(loop=Loop())).load_config(parse_file(str(conf)))
    assert e.value.line == 2
    conf.write_text("[global]\nstack=l1:NFLOG,b1:BASE,o1:JSON\n")
    svc = Service(str(conf), Context(loop=Loop()))
    svc.load_config(parse_file(str(conf)))
    assert not svc.wal.enabled and svc.wal.path == "/var/lib/pyulogd/wal/x"
    assert svc.ctx.node_id.endswith(".x")


def test_outputs_added_or_removed_between_runs(tmp_path: Path) -> None:
    ctx, j, src, out = _run(tmp_path)
    out.durable = 0
    src.send(_rows(3))
    j.write_round()
    j.after_flush()
    _crash(j)
    # The same source, an output of another name: the old records were not meant for it, and
    # the old output's cursor no longer holds the segments.
    ctx2, _ = fake_context()
    other = Out(ctx2, "out2", {})
    stack = make_stack([Src, other], ctx2)
    j2 = Journal(ctx2, WalSettings(enabled=True, path=str(tmp_path), node_id="n1"))
    j2.open()
    j2.register_sources([stack.source])
    j2.register_outputs([other])
    assert j2.replay() == {} and other.got == []
    assert set(j2.cursors) == {"out2"}
    stack.source.emit_all([[None, *r] for r in _rows(1, 50)])  # type: ignore[attr-defined]
    j2.write_round()
    j2.after_flush()
    assert j2.file is not None and len(j2.file.segments) == 1  # the old segment went
    j2.close()


def test_the_counters_and_the_log_in_the_metrics(tmp_path: Path) -> None:
    from pyulogd.daemon.metrics import Collector

    ctx, j, src, out = _run(tmp_path)
    src.send(_rows(4))
    out.counters.drop("write_failed", 1)
    out.counters.written -= 1
    j.write_round()
    j.after_flush()
    col = Collector(ctx, [src, out], j).collect()
    labels = (("plugin", "WALOUT"), ("id", "out1"))
    records = col.samples["pyulogd_output_records_total"]
    assert records[(*labels, ("outcome", "received"))] == 4
    assert records[(*labels, ("outcome", "written"))] == 3
    assert col.samples["pyulogd_output_dropped_records_total"] == {(*labels, ("cause", "write_failed")): 1}
    assert col.samples["pyulogd_output_in_memory_records"] == {labels: 0}
    assert col.samples["pyulogd_output_commit_cursor"] == {labels: ctx.seq}
    assert col.total("pyulogd_wal_records_total") == 4
    assert col.total("pyulogd_wal_sequence") == ctx.seq
    assert col.total("pyulogd_wal_segments") == 1
    j.close()


class NsSrc(NetnsSource):
    """A netns= input without sockets: the children it makes are NetnsSource's own
    (``make_child``), fed by hand as a namespace's input would be."""

    name = "WALNS"
    output_type = DataType.PACKET
    options = NETNS_OPTIONS
    output_keys = (*Src.output_keys, *NETNS_KEYS)

    def send(self, rows: list[tuple[Any, ...]]) -> None:
        self.emit_all([[None, *r] for r in rows])


def _run_ns(tmp: Path) -> tuple[Context, Journal, NsSrc, Out]:
    ctx, _clock = fake_context()
    out = Out(ctx, "out1", {})
    stack = make_stack([(NsSrc, {"netns": "gp-*"}), out], ctx, start=False)
    src = stack.source
    assert isinstance(src, NsSrc) and src.follows
    j = Journal(ctx, WalSettings(enabled=True, path=str(tmp), node_id="n1"))
    j.open()
    j.register_sources([src])
    j.register_outputs([out])
    return ctx, j, src, out


def test_a_namespace_input_made_at_run_time_is_logged_and_replayed(tmp_path: Path) -> None:
    """A netns= input's children (one per namespace, made after the log was opened) log their
    records under their own id in the daemon's one sequence; after a crash the records are
    replayed with their namespace's tags, also when that namespace is gone by then."""
    ctx, j, mgr, out = _run_ns(tmp_path)
    assert mgr.wal_adopt is not None and mgr.wal_let_go is not None
    kids = {}
    for name in ("gp-a", "gp-b"):
        kids[name] = kid = mgr.make_child(name, None)
        mgr.wal_adopt(kid)
    kids["gp-a"].send(_rows(3))
    kids["gp-b"].send(_rows(2, 3))
    j.write_round()
    out.durable = 0  # nothing committed
    j.after_flush()
    kids["gp-b"].send(_rows(1, 5))  # emitted in the round its namespace goes away
    mgr.wal_let_go(kids["gp-b"])  # logged before the child leaves the log's list
    kids["gp-b"].send(_rows(1, 6))  # (a stopped child emits nothing; if it did, not logged)
    logged = {(f.source, s) for f in wal.read_dir(str(tmp_path)) for s in f.seqs}
    assert logged == {("walns0.gp-a", s) for s in (1, 2, 3)} | {("walns0.gp-b", s) for s in (4, 5, 6)}
    first = [(s, v) for s, v in out.got if s <= 6]
    assert [v[-3] for _, v in first] == ["gp-a"] * 3 + ["gp-b"] * 3  # oob.netns, from the trailer
    _crash(j)

    # Started again: gp-a is attached again (a running child), gp-b is gone.
    _ctx2, j2, mgr2, out2 = _run_ns(tmp_path)
    assert mgr2.wal_adopt is not None
    mgr2.children = {"gp-a": mgr2.make_child("gp-a", None)}
    mgr2.wal_adopt(mgr2.children["gp-a"])
    got = j2.replay()
    assert got == {"out1": 6} and j2.unknown == 0
    assert out2.got == first  # the original numbers, values and namespace tags
    j2.close()


def _run_limited(tmp: Path) -> tuple[Context, Journal, Src, Out]:
    """Src -> RATELIMIT (2 at once, then 1/s, one bucket, 10 s windows) -> Out."""
    ctx, _clock = fake_context()
    out = Out(ctx, "out1", {})
    stack = make_stack([Src, (RateLimitFilter, {"rate": 1, "burst": 2}), out], ctx)
    src = stack.source
    assert isinstance(src, Src)
    j = Journal(ctx, WalSettings(enabled=True, path=str(tmp), node_id="n1"))
    j.open()
    j.register_sources([src])
    j.register_outputs([out])
    j.register_stacks([stack])
    return ctx, j, src, out


def test_records_a_rate_limit_holds_back_keep_the_cursor_below_them(tmp_path: Path) -> None:
    """RATELIMIT's summaries are not logged: they are made again from the logged records. So
    the records it holds back count as committed for the output after it only once their
    summary went on; a crash before that replays them (passed or summarised again)."""
    ctx, j, src, out = _run_limited(tmp_path)
    src.send(_rows(5))  # 1 and 2 pass; 3, 4 and 5 are held back until the window ends
    j.write_round()
    j.after_flush()
    assert [s for s, _ in out.got] == [1, 2]
    assert j.cursors["out1"] == 2  # out1 wrote all it got, but 3..5 are only in the window
    fake_clock(ctx).advance(10)
    ctx.loop.run_once(0)  # the window ends: the summary of 3..5 goes to out1
    assert out.got[-1][1][-4] == 3  # audit.suppressed
    j.write_round()
    j.after_flush()
    assert j.cursors["out1"] == 5
    src.send(_rows(3, 5))  # 6 and 7 pass (the bucket refilled), 8 is held
    j.write_round()
    fake_clock(ctx).advance(wal.SAVE_EVERY)  # the cursors are saved at most that often
    j.after_flush()
    assert j.cursors["out1"] == 7 and wal.read_state(str(tmp_path))["cursors"]["out1"] == 7
    _crash(j)  # the window with 8 in it is lost with the process

    _ctx2, j2, _src2, out2 = _run_limited(tmp_path)
    assert j2.replay() == {"out1": 1}
    assert [s for s, _ in out2.got] == [8]  # through a fresh RATELIMIT: it passes this time
    j2.close()
