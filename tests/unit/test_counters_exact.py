"""Exact counters (issue 12, item 6): for the SQL writer, received = written + spooled +
dropped + what it still holds, every row counted once whatever happens to it (the database
away, refusing rows or stalling, the spool full or failing with ENOSPC), and every row the
database got counted as written or as unspooled.

The bug this guards against: with the spool failing (ENOSPC) while the writer was writing a
batch, the spiller counted that batch as dropped and the writer then wrote it, so 6000 packets
ended as dropped=5900 with 600 rows in the database.
"""

from __future__ import annotations

import errno
import resource
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from pyulogd.core.context import Context
from pyulogd.db.writer import Writer, WriterSettings
from pyulogd.io.sink import SinkCounters
from pyulogd.io.spool import Spool
from tests.clocked import fake_clock, fake_context
from tests.unit.test_append import limited
from tests.unit.test_sql import FakeBackend


class FlakySpool(Spool):
    """A spool whose disk can be made full (ENOSPC) at will."""

    def __init__(self, path: str, max_bytes: int) -> None:
        super().__init__(path, max_bytes)
        self.enospc = False

    def append(self, names: Sequence[str], rows: Sequence[Sequence[Any]],
               seqs: Sequence[int] | None = None) -> tuple[int, int] | None:  # fmt: skip
        if self.enospc:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().append(names, rows, seqs)


class GatedBackend(FakeBackend):
    """A database that can stall (a lock) as well as fail."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()
        self.stalled = threading.Event()

    def write(self, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        if not self.gate.is_set():
            self.stalled.set()
            self.gate.wait(10)
        super().write(columns, rows)


def _writer(tmp: Path, backend: FakeBackend, spool_max: int = 1 << 20, **kw: Any) -> tuple[Writer, Context,
                                                                                          FlakySpool]:
    ctx, _ = fake_context()
    spool = FlakySpool(str(tmp), spool_max)
    spool.open()
    cfg = WriterSettings(**{"batch_size": 10, "batch_timeout": 0.05, "reconnect": 0.05, "reconnect_max": 0.1,
                            "spool_delay": 0.05, **kw})
    w = Writer(ctx, "FAKE", "sql.t", backend, cfg, spool, lambda info: ["k"])
    w.start()
    return w, ctx, spool


def _wait(pred: Any, timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


def _check_settled(w: Writer, b: FakeBackend, received: int) -> SinkCounters:
    c = w.counters
    assert c.received == received
    assert c.in_memory() == 0, c.snapshot()
    assert c.received == c.written + c.spooled + c.lost, c.snapshot()
    # Every row the database took is counted once: from memory (written) or from the spool.
    assert len(b.rows) == c.written + c.unspooled, (len(b.rows), c.snapshot())
    return c


def _left_in_spool(tmp: Path) -> list[int]:
    s = Spool(str(tmp), 1 << 30)
    s.open()
    out = []
    while (f := s.peek()) is not None:
        out.extend(r[0] for r in f.rows)
        s.ack(f)
    s.close()
    return out


def test_enospc_while_the_writer_writes_counts_each_row_once(tmp_path: Path) -> None:
    b = GatedBackend()
    w, ctx, spool = _writer(tmp_path, b, mem_max=4000, batch_size=5)
    w.counters.received = 0
    b.gate.clear()  # the database stalls on the first batch
    w.put(("k", "pad"), [(i, "z" * 30) for i in range(5)])
    w.counters.received += 5
    assert b.stalled.wait(5)
    spool.enospc = True  # and the disk is full: the spiller cannot copy that batch
    for i in range(5, 200):
        w.put(("k", "pad"), [(i, "z" * 30)])
        w.counters.received += 1
    _wait(lambda: w.counters.lost > 0)
    b.gate.set()  # the stuck batch is written after all: it must not count as dropped
    spool.enospc = False
    fake_clock(ctx).advance(0.1)
    w.stop(2)
    c = _check_settled(w, b, 200)
    written = {r[0] for r in b.rows}
    assert set(range(5)) <= written  # the batch the spiller could not copy
    # What was dropped is exactly what is nowhere.
    assert c.lost + c.spool_lost == 200 - len(written | set(_left_in_spool(tmp_path)))


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(1, 25)),
        st.tuples(st.sampled_from(["db_down", "db_up", "stall", "unstall", "enospc", "disk_ok", "bad"]),
                  st.just(0)),
        st.tuples(st.just("advance"), st.integers(1, 3)),
    ),
    max_size=25,
)


@given(OPS)
@settings(max_examples=60, deadline=None)
def test_counting_identity_under_random_faults(tmp_path_factory: Any, ops: list[tuple[str, int]]) -> None:
    tmp = tmp_path_factory.mktemp("spool")
    b = GatedBackend()
    w, ctx, spool = _writer(tmp, b, spool_max=6000, mem_max=600)
    clock = fake_clock(ctx)
    n = 0
    try:
        for op, arg in ops:
            if op == "put":
                rows = [(n + i, "p" * 20) for i in range(arg)]
                n += arg
                w.counters.received += arg  # as WriterSink.flush counts them
                w.put(("k", "pad"), rows)
            elif op == "db_down":
                b.up = False
            elif op == "db_up":
                b.up = True
            elif op == "stall":
                b.gate.clear()
            elif op == "unstall":
                b.gate.set()
            elif op == "enospc":
                spool.enospc = True
            elif op == "disk_ok":
                spool.enospc = False
            elif op == "bad":
                b.bad.add(n - 1)
            else:
                clock.advance(0.05 * arg)
            # At any moment: no row counted twice (what the writer holds is never negative).
            assert w.counters.in_memory() >= 0, w.counters.snapshot()
    finally:
        b.gate.set()
        b.up = True
        spool.enospc = False
    clock.advance(1)
    w.stop(3)
    c = _check_settled(w, b, n)
    event(f"dropped={bool(c.lost)} spooled={bool(c.spooled)} unspooled={bool(c.unspooled)}")
    # Nothing unexplained: every row is in the database, left in the spool, or counted dropped.
    kept = {r[0] for r in b.rows} | set(_left_in_spool(tmp))
    assert len(set(range(n)) - kept) == c.lost + c.spool_lost


# -- a real full disk under the real spool (RLIMIT_FSIZE in a forked child: write() writes
# what fits, then fails with EFBIG, as a full filesystem does with ENOSPC)
def _spill(w: Writer, ctx: Context, rows: list[tuple[Any, ...]], settled: Any) -> None:
    """Queue ``rows`` with the database down, let them wait ``spool_delay``, and wait until
    the spiller dealt with them (``settled(counters)``)."""
    w.counters.received += len(rows)  # as WriterSink.flush counts them
    w.put(("k", "pad"), rows)
    fake_clock(ctx).advance(0.1)
    _wait(lambda: settled(w.counters))


def _drain(w: Writer, ctx: Context, b: FakeBackend) -> dict[str, Any]:
    """The database back: the spool written, the writer stopped; what the child reports."""
    b.up = True
    spool = w.spool
    assert spool is not None
    _wait_advancing(ctx, lambda: spool.empty and w.counters.in_memory() == 0)
    w.stop(2)
    return {"counters": w.counters.snapshot(), "lost": w.counters.lost, "db": [r[0] for r in b.rows],
            "corrupt": spool.corrupt}


def _wait_advancing(ctx: Context, pred: Any, timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "timed out"
        fake_clock(ctx).advance(0.2)  # the writer's back-off and batch timeouts
        time.sleep(0.005)


def _room_again() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))


def _rows(first: int, n: int = 10) -> list[tuple[Any, ...]]:
    return [(i, "p" * 20) for i in range(first, first + n)]


def test_a_segment_whose_header_does_not_fit_counts_each_row_once(tmp_path: Path) -> None:
    """The disk full when the spool starts a segment: nothing half-made stays behind. Before
    the fix the segment's header failed after the file was opened, the next append raised
    IndexError, and the spiller counted the rows it had already dropped a second time
    (the fault matrix's "received 340, spooled 20, dropped 326"); the spool then stayed
    unusable after the disk had room again."""

    def work() -> Any:
        b = FakeBackend()
        b.up = False
        w, ctx, _ = _writer(tmp_path, b, mem_max=1 << 20)
        w.counters.received = 0
        # Three frames in one spill: the first fails at the header, the others must too,
        # each counted once.
        for first in (0, 10, 20):
            w.counters.received += 10
            w.put(("k", "pad"), _rows(first))
        fake_clock(ctx).advance(0.1)
        _wait(lambda: w.counters.in_memory() <= 0)
        after_full = w.counters.snapshot()
        assert w.counters.in_memory() == 0, f"rows counted twice: {after_full}"
        _room_again()
        _spill(w, ctx, _rows(30), lambda c: c.spooled == 10)
        return {"full": after_full, **_drain(w, ctx, b)}

    out = limited(8, work)  # 8 bytes: half a segment header
    assert "raised" not in out, out
    assert out["full"] == {"received": 30, "written": 0, "dropped.spool_failed": 30}, out
    c = out["counters"]
    assert c["received"] == c["written"] + c["spooled"] + out["lost"] == 40, out
    assert sorted(out["db"]) == list(range(30, 40)) and c["unspooled"] == 10 and out["corrupt"] == 0, out


def test_a_frame_cut_by_a_full_disk_loses_only_its_rows(tmp_path: Path) -> None:
    """A frame half written when the disk filled is cut off: the frames spooled after it, once
    there is room, are read back (before the fix they followed the torn frame, and the reader
    skipped them as damaged: rows counted spooled never reached the database)."""
    scratch = Spool(str(tmp_path / "scratch"), 1 << 20)  # where the frames end, from the real format
    scratch.open()
    ends = [ref[1] for first in (0, 10) if (ref := scratch.append(("k", "pad"), _rows(first))) is not None]
    scratch.close()
    assert len(ends) == 2

    def work() -> Any:
        b = FakeBackend()
        b.up = False
        w, ctx, _ = _writer(tmp_path / "spool", b, mem_max=1 << 20)
        w.counters.received = 0
        _spill(w, ctx, _rows(0), lambda c: c.spooled == 10)
        _spill(w, ctx, _rows(10), lambda c: c.lost == 10)  # torn by the full disk
        _room_again()
        _spill(w, ctx, _rows(20), lambda c: c.spooled == 20)
        return _drain(w, ctx, b)

    out = limited((ends[0] + ends[1]) // 2, work)  # the second frame half fits
    assert "raised" not in out, out
    c = out["counters"]
    assert c == {"received": 30, "written": 0, "spooled": 20, "unspooled": 20, "spool_lost": 0,
                 "dropped.spool_failed": 10}, out
    assert sorted(out["db"]) == list(range(10)) + list(range(20, 30)) and out["corrupt"] == 0, out


class BrokenSpool(Spool):
    """A spool with a bug: its ``fail_at``-th append raises something else than OSError."""

    def __init__(self, path: str, max_bytes: int, fail_at: int) -> None:
        super().__init__(path, max_bytes)
        self.calls = 0
        self.fail_at = fail_at

    def append(self, names: Sequence[str], rows: Sequence[Sequence[Any]],
               seqs: Sequence[int] | None = None) -> tuple[int, int] | None:  # fmt: skip
        self.calls += 1
        if self.calls == self.fail_at:
            raise IndexError("list index out of range")
        return super().append(names, rows, seqs)


def test_a_spool_bug_in_the_middle_of_a_spill_costs_its_frame_only(tmp_path: Path) -> None:
    """The frames of one spill before and after the one whose append raised are counted once
    each: spooled or dropped, never both, never twice."""
    ctx, _ = fake_context()
    spool = BrokenSpool(str(tmp_path), 1 << 20, fail_at=2)
    spool.open()
    b = FakeBackend()
    b.up = False
    w = Writer(ctx, "FAKE", "sql.t", b, WriterSettings(batch_size=10, batch_timeout=0.05, reconnect=0.05,
                                                       reconnect_max=0.1, spool_delay=0.05), spool, lambda i: ["k"])
    w.start()
    w.counters.received = 30
    w.put(("k", "pad"), _rows(0, 30))  # one chunk: three frames in one spill
    fake_clock(ctx).advance(0.1)
    _wait(lambda: w.counters.in_memory() <= 0)
    assert w.counters.snapshot() == {"received": 30, "written": 0, "spooled": 20, "unspooled": 0, "spool_lost": 0,
                                     "dropped.spool_failed": 10}
    out = _drain(w, ctx, b)
    assert sorted(out["db"]) == list(range(10)) + list(range(20, 30))
