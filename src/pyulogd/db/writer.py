"""The threads of one SQL output: bounded queue, batches, reconnects, spool.

The event loop never waits for a database. ``interp()`` only builds a tuple; after each
loop round the output hands its rows to :meth:`Writer.put` (a lock, an append, maybe a
notify). Two threads take it from there:

* the **writer** writes batches of at most ``batch_size`` rows, as soon as that many are
  queued or the oldest has waited ``batch_timeout`` seconds, reconnecting with a capped
  exponential backoff when the database is unavailable;
* the **spiller** moves records from memory to the end of the on-disk spool when memory
  passes its bound (also while the writer is stuck in a database that stalls rather than
  fails: a lock, a full disk), and, while the database is unavailable, as soon as they
  waited ``spool_delay``, so that a SIGKILL during an outage loses nothing that reached it.

Order. Records form one FIFO: the batch being retried, then the spool (oldest), then
memory (newest). The spiller always takes the oldest records in memory, and first the
batch the writer is writing if it came from memory: that batch becomes the spool's first
frame, and if the writer then succeeds, that frame is acknowledged without being written
again. The writer reads the spool before memory, and takes memory only when the spool is
empty and nothing is on its way there. Delivery is at least once: a batch written just
before a SIGKILL, or written while it was also being spooled and then cut by an outage,
can be written twice; nothing is lost unless the spool is full.

Only a full spool (or, without a usable spool directory, a full memory queue) drops
records; they are counted and logged once per burst. Counters (``ctx.stats``):
``sql.<id>.rows`` written, ``.batches``, ``.reconnects`` (failed attempts), ``.spooled``,
``.duplicates`` (rows the table already had, skipped by PGSQL's ``unique_key``; among ``rows``)
(rows written to disk), ``.dropped``, ``.rejected`` (rows the database refused, e.g. a
value out of a column's range; the batch is split to find them, the others are written).

The output's side of it is :class:`WriterSink`, the :class:`~pyulogd.io.sink.LineSink` the SQL
outputs add their rows to (``db/output.py``); the spool is the generic one of ``io/spool.py``.
Besides the counters above, ``Writer.counters`` (the sink's) has the same events by cause:
rows written, dropped as ``memory_full``, ``spool_full``, ``spool_failed``,
``unsent_at_exit`` and ``rejected``.

When to write a batch, reconnect or spill is decided by :class:`~pyulogd.db.policy.WriterPolicy`
from the monotonic time alone; the threads read ``ctx.clock`` and wait through it
(``clock.wait(cond, deadline)``), so a test with a ``FakeClock`` moves them on by advancing
the clock instead of sleeping through batch timeouts and back-offs.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pyulogd.core.errors import ConfigError
from pyulogd.db.backend import Backend, Rejected, Rows, TableInfo, Unavailable
from pyulogd.db.policy import MOVING_CHECK, WriterPolicy, WriterSettings
from pyulogd.db.render import row_size
from pyulogd.io.sink import SinkCounters
from pyulogd.io.spool import Frame, Spool

if TYPE_CHECKING:
    from pyulogd.core.context import Context

__all__ = ["Batch", "Chunk", "Writer", "WriterSettings", "WriterSink"]

FrameRef = tuple[int, int]
# A refused batch is split in halves down to this many rows, which are then written one by
# one in a single transaction (a savepoint per row).
EACH_BELOW = 64


@dataclass
class Chunk:
    names: tuple[str, ...]  # the key each value of a row is for
    rows: Rows
    t: float  # monotonic time it was queued
    size: int  # estimated bytes
    # The commit cursor while this chunk is the oldest record not yet durable: the sequence
    # number the output was marked with at the round before it was handed over (io/wal.py).
    mark: int = 0
    seqs: list[int] | None = None  # each row's sequence number, when commits are tracked


@dataclass
class Batch:
    names: tuple[str, ...]
    rows: Rows
    frame: Frame | None  # where it came from in the spool (acked when written), or None: memory
    done: int = 0  # rows already written or rejected
    # For a batch from memory: the spiller copied it to the spool ("pending", then its frame).
    spooled: str | FrameRef | None = None
    written: bool = False
    mark: int = 0  # as Chunk.mark
    seqs: list[int] | None = None  # each row's sequence number, when commits are tracked
    # While the spiller copies it: the rows from here on are the spool's to count (spooled),
    # and what the writer delivers of them meanwhile waits in ``overlap`` until the spill
    # ends (then counted as unspooled if the spill worked, as written if not).
    spill_from: int = 0
    overlap: int = 0
    overlap_rejected: int = 0
    gave_up: bool = False  # the writer failed while the spill was under way


# What the spiller moves to disk: the batch it came from (if being written), names, rows, the
# commit cursor's mark (io/wal.py), and the rows' sequence numbers (when commits are tracked).
SpillItem = tuple["Batch | None", tuple[str, ...], Rows, int, "list[int] | None"]


class Writer:
    def __init__(
        self,
        ctx: Context,
        label: str,
        stat_prefix: str,
        backend: Backend,
        settings: WriterSettings,
        spool: Spool | None,
        map_table: Callable[[TableInfo], list[str]],
        on_table: Callable[[TableInfo, list[str]], None] | None = None,
        open_table: Callable[[], TableInfo] | None = None,
    ) -> None:
        self.ctx = ctx
        self.label = label
        self.backend = backend
        self.cfg = settings
        self.clock = ctx.clock
        self.policy = WriterPolicy(settings)
        self.spool = spool
        self.map_table = map_table
        self.on_table = on_table
        self.open_table = open_table
        self.cond = threading.Condition()
        # -- everything below up to the counters is guarded by cond
        self.mem: collections.deque[Chunk] = collections.deque()
        self.mem_rows = 0
        self.mem_bytes = 0
        self.hard_max = settings.mem_max * 2 if spool is not None else settings.mem_max
        self.stopping = False
        self.deadline = 0.0
        self.connected = False
        self._retry: Batch | None = None  # a batch from memory that failed: written first
        self._current: Batch | None = None  # the batch being written
        self._moving = 0  # spills on their way to disk
        self._skip: set[FrameRef] = set()  # spool frames whose rows are already written
        self._flush_all = False  # spiller: move everything (exit)
        self._writer_done = False
        self._reconnect_requested = False
        # The output's commit cursor (io/wal.py): the last mark given, and the marks of the
        # records the spiller is moving to disk.
        self.last_mark = 0
        self._moving_marks: list[int] = []
        # Deliveries (Output.commit_mark, NATSIN's acks): the sequence number of the last row
        # of the last batch written, and the daemon's sequence number at the last hand-over.
        # Rows are written in the order they came (retry, spool, memory), so every row up to
        # ``delivered`` is in the database, or was refused or dropped and counted. Unlike
        # ``committed`` (the write-ahead log's cursor), the spool does not count here.
        self.delivered = 0
        self.handed = 0
        # -- writer thread only
        self.columns: list[str] = []
        self.keys: list[str] = []
        self._projections: dict[tuple[str, ...], Callable[[tuple[Any, ...]], tuple[Any, ...]] | None] = {}
        self._outage_logged = False
        self._reject_burst = 0
        # -- counters
        self._drop_burst = 0
        self.stats_lock = threading.Lock()
        self.counters = SinkCounters()  # updated under stats_lock
        self._p = stat_prefix
        self.thread = threading.Thread(target=self._run_writer, name=f"pyulogd-{label}", daemon=True)
        self.spiller = threading.Thread(target=self._run_spiller, name=f"pyulogd-{label}-spool", daemon=True)

    # ------------------------------------------------------------------ event loop side
    def start(self) -> None:
        self.thread.start()
        if self.spool is not None:
            self.spiller.start()

    def put(self, names: tuple[str, ...], rows: Rows, seqs: list[int] | None = None) -> None:
        """Queue rows (called by the event loop; never blocks on the database or the disk)."""
        size = row_size(rows[0]) * len(rows)
        with self.cond:
            if self.mem_bytes + size > self.hard_max:
                self._drop(len(rows), "the memory queue is full" + ("" if self.spool else " and there is no spool"),
                           "memory_full")
                return
            was_empty = not self.mem
            self.mem.append(Chunk(names, rows, self.clock.monotonic(), size, self.last_mark, seqs))
            self.mem_rows += len(rows)
            self.mem_bytes += size
            if was_empty or self.mem_rows >= self.cfg.batch_size or self.mem_bytes > self.cfg.mem_max:
                self.cond.notify_all()

    def committed(self, seq: int) -> int:
        """Every row handed over so far came with records up to ``seq``: the commit cursor is
        that, unless rows are still on their way (memory, the batch being written or retried,
        rows moving to the spool), then the mark of the oldest of them."""
        with self.cond:
            self.last_mark = seq
            low = seq
            if self.mem:
                low = min(low, self.mem[0].mark)
            cur = self._current
            if cur is not None and cur.frame is None and not cur.written and not isinstance(cur.spooled, tuple):
                low = min(low, cur.mark)
            if self._retry is not None and self._retry.frame is None:
                low = min(low, self._retry.mark)
            if self._moving_marks:
                low = min(low, *self._moving_marks)
            return low

    def commit_mark(self) -> int:
        """Every row numbered up to this is in the database (or refused or dropped, counted):
        what was handed over when nothing waits anywhere, else the last row written."""
        with self.cond:
            if (not self.mem and self._retry is None and self._current is None and self._moving == 0
                    and (self.spool is None or self.spool.empty)):
                return self.handed
            return self.delivered

    def in_memory(self) -> int:
        """Rows received and not yet written, spooled nor dropped (counters.in_memory)."""
        with self.stats_lock:
            return self.counters.in_memory()

    def request_reconnect(self) -> None:
        with self.cond:
            self._reconnect_requested = True
            self.cond.notify_all()

    def stop(self, timeout: float) -> None:
        """Write what can be written within ``timeout`` seconds, spool the rest, end the threads."""
        with self.cond:
            self.stopping = True
            self.deadline = self.clock.monotonic() + timeout
            self.cond.notify_all()
        if self.thread.is_alive():
            self.thread.join(timeout + 2.0)
        if self.thread.is_alive():
            # Stuck in a database call: what is queued, and the batch it is writing, go to disk
            # (that batch is written twice if the call ends up succeeding).
            self.ctx.log.error(f"{self.label}: the database did not answer in time; spooling the queue")
        with self.cond:
            self._flush_all = True
            self.cond.notify_all()
        if self.spiller.is_alive():
            self.spiller.join(timeout + 10.0)
        if not self.thread.is_alive():
            self._lose_rest()
            if self.spool is not None:
                self.spool.close()

    def is_alive(self) -> bool:
        return self.thread.is_alive() or self.spiller.is_alive()

    # ------------------------------------------------------------------ writer thread
    def _run_writer(self) -> None:
        try:
            self._loop()
        except Exception as e:  # a bug here must not lose the queue silently
            self.ctx.log.error(f"{self.label}: writer failed: {type(e).__name__}: {e}; spooling the queue")
        finally:
            self.backend.close()
            with self.cond:
                self.connected = False
                self._writer_done = True
                self._flush_all = True
                self.cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self.cond:
                if self._reconnect_requested:
                    self._reconnect_requested = False
                    if self.connected:
                        self.backend.close()
                        self.connected = False
                        self.policy.reconnect_now()
                stopping = self.stopping
                if stopping and self.clock.monotonic() >= self.deadline:
                    return
            if not self.connected and not self._connect():
                if stopping:
                    return
                self._wait_down()
                continue
            batch = self._next_batch()
            if batch is None:
                with self.cond:
                    if self.stopping and not self.mem and self._retry is None and self._moving == 0 and (
                        self.spool is None or self.spool.empty
                    ):
                        return
                continue
            self._write(batch)

    def _wait_down(self) -> None:
        """The database is down: sleep until the next attempt is due (or something happens)."""
        with self.cond:
            if self._reconnect_requested or self.stopping:
                return  # checked under the lock: a wake-up sent before this wait is not lost
            now = self.clock.monotonic()
            self.clock.wait(self.cond, self.policy.idle_until(now, self.deadline if self.stopping else None))

    # -- connection
    def _connect(self) -> bool:
        if not self.policy.connect_due(self.clock.monotonic()):
            return False
        try:
            if self.open_table is not None:
                info = self.open_table()
            else:
                self.backend.connect()
                info = self.backend.discover()
            keys = self.map_table(info)
        except (Unavailable, ConfigError) as e:
            self.backend.close()
            self._failed(f"database unavailable: {_short(e)}")
            return False
        if info.columns != self.columns or keys != self.keys:
            if self.columns:
                self.ctx.log.notice(f"{self.label}: the table's columns changed: {', '.join(info.columns)}")
            self.columns, self.keys = info.columns, keys
            self._projections.clear()
            if self.on_table is not None:
                self.on_table(info, keys)
        with self.cond:
            self.connected = True
        if self._outage_logged:
            spooled = 0 if self.spool is None else self.spool.bytes
            self.ctx.log.notice(
                f"{self.label}: connected to the database again; writing the queue "
                f"({self.mem_rows} records in memory, {spooled} bytes spooled)"
            )
        self._outage_logged = False
        self.policy.connected()
        return True

    def _failed(self, what: str) -> None:
        """A connection attempt or a write failed: back off, tell once per outage."""
        self.policy.failed(self.clock.monotonic())
        self._count("reconnects")
        with self.cond:
            self.connected = False
            self.cond.notify_all()  # the spiller now spools what waits
        if not self._outage_logged:
            self._outage_logged = True
            where = f"spooling to {self.spool.path}" if self.spool else "queueing in memory"
            self.ctx.log.error(f"{self.label}: {what}; {where}, retrying")

    # -- choosing what to write
    def _next_batch(self) -> Batch | None:
        with self.cond:
            if self._retry is not None:
                batch, self._retry = self._retry, None
                self._current = batch
                return batch
            if self._moving:  # records on their way to the spool are older than memory
                self.clock.wait(self.cond, self.clock.monotonic() + MOVING_CHECK)
                return None
            from_spool = self.spool is not None and not self.spool.empty
            if not from_spool:
                return self._from_memory()
        assert self.spool is not None
        frame = self.spool.peek()  # the head: older than anything the spiller appends meanwhile
        if frame is None:
            return None
        with self.cond:
            ref = (frame.seg, frame.end)
            if ref in self._skip:  # already written while it was being spooled
                self._skip.discard(ref)
                self.spool.ack(frame)
                return None
            # Sequence numbers of an earlier run's frames are not this run's: no commit mark.
            fresh = frame.seqs is not None and frame.seg > self.spool.before
            batch = Batch(frame.names, frame.rows, frame, seqs=frame.seqs if fresh else None)
            self._current = batch
            return batch

    def _from_memory(self) -> Batch | None:
        """(cond held) A batch from the head of memory when it is due, else wait for one."""
        if not self.mem:
            if not self.stopping and not self._reconnect_requested:
                self.cond.wait()
            return None
        due = self.policy.batch_due(self.mem[0].t, self.mem_rows, self.stopping)
        if self.clock.monotonic() < due:
            self.clock.wait(self.cond, due)
            return None
        first = self.mem[0]
        names = first.names
        rows: Rows = []
        seqs: list[int] | None = [] if first.seqs is not None else None
        limit = self.cfg.batch_size
        while self.mem and self.mem[0].names == names and len(rows) < limit:
            chunk = self.mem[0]
            if (chunk.seqs is None) != (seqs is None):
                break  # tracking began: a batch has sequence numbers for all its rows or none
            room = limit - len(rows)
            if len(chunk.rows) <= room:
                self.mem.popleft()
                rows.extend(chunk.rows)
                if seqs is not None and chunk.seqs is not None:
                    seqs.extend(chunk.seqs)
                self.mem_rows -= len(chunk.rows)
                self.mem_bytes -= chunk.size
            else:
                part, chunk.rows = chunk.rows[:room], chunk.rows[room:]
                if seqs is not None and chunk.seqs is not None:
                    seqs.extend(chunk.seqs[:room])
                    chunk.seqs = chunk.seqs[room:]
                moved = chunk.size * len(part) // (len(part) + len(chunk.rows))
                chunk.size -= moved
                rows.extend(part)
                self.mem_rows -= len(part)
                self.mem_bytes -= moved
        batch = Batch(names, rows, None, mark=first.mark, seqs=seqs)
        self._current = batch
        return batch

    # -- writing
    def _write(self, batch: Batch) -> None:
        try:
            self._deliver(batch, batch.rows[batch.done :])
        except Unavailable as e:
            with self.cond:
                self._current = None
                if batch.frame is None and batch.spooled is None:
                    batch.rows = batch.rows[batch.done :]
                    if batch.seqs is not None:
                        batch.seqs = batch.seqs[batch.done :]
                    batch.done = 0
                    self._retry = batch
                elif batch.spooled == "pending":
                    batch.gave_up = True  # the spiller takes it back if its copy fails
                # else: the spool has it (from there, or copied by the spiller): read it again
            self.backend.close()
            self._failed(f"writing failed: {_short(e)}")
            return
        with self.cond:
            self._current = None
            batch.written = True
            if isinstance(batch.spooled, tuple):
                self._skip.add(batch.spooled)
            if batch.seqs:
                self.delivered = max(self.delivered, batch.seqs[-1])
        if batch.frame is not None and self.spool is not None:
            self.spool.ack(batch.frame)
        self._count("batches")
        if self._drop_burst:
            self.ctx.log.notice(f"{self.label}: writing again; {self._drop_burst} records were dropped")
            self._drop_burst = 0
        if self._reject_burst:
            self.ctx.log.notice(f"{self.label}: {self._reject_burst} records were refused by the database")
            self._reject_burst = 0

    def _deliver(self, batch: Batch, rows: Rows) -> None:
        """Write ``rows``; split them to find rows the database refuses. Raises Unavailable."""
        project = self._projection(batch.names)
        dups = self.backend.duplicates
        try:
            self.backend.write(self.columns, rows if project is None else [project(r) for r in rows])
            if self.backend.duplicates != dups:
                self._count("duplicates", self.backend.duplicates - dups)
        except Rejected as e:
            if len(rows) <= EACH_BELOW:
                # Few rows: one transaction, one savepoint per row (not one commit per row).
                values = rows if project is None else [project(r) for r in rows]
                try:
                    results = self.backend.write_each(self.columns, values)
                except NotImplementedError:
                    results = None
                if results is not None:
                    for reason in results:
                        if reason is not None:
                            self._refused(reason)
                    written = sum(1 for r in results if r is None)
                    self._settle(batch, written, len(rows) - written)
                    batch.done += len(rows)
                    if written:
                        self._count("rows", written)
                    return
                if len(rows) == 1:
                    self._refused(_short(e))
                    self._settle(batch, 0, 1)
                    batch.done += 1
                    return
            mid = len(rows) // 2
            self._deliver(batch, rows[:mid])
            self._deliver(batch, rows[mid:])
            return
        self._settle(batch, len(rows), 0)
        batch.done += len(rows)
        self._count("rows", len(rows))

    def _settle(self, batch: Batch, written: int, rejected: int) -> None:
        """Count ``written`` + ``rejected`` rows of ``batch`` from ``batch.done`` on, once: a
        batch from the spool was counted when it was spooled (unspooled now); rows the spiller
        is copying meanwhile wait for the end of the copy (:meth:`_spilled`)."""
        with self.cond, self.stats_lock:
            c = self.counters
            if batch.frame is not None or isinstance(batch.spooled, tuple):
                c.unspooled += written
                c.spool_lost += rejected
            elif batch.spooled == "pending" and batch.done + written + rejected > batch.spill_from:
                # Rows before spill_from are the writer's alone; after it, the spill's too.
                mine = max(0, batch.spill_from - batch.done)
                w_mine = min(written, mine)
                r_mine = min(rejected, mine - w_mine)
                c.written += w_mine
                c.drop("rejected", r_mine)
                batch.overlap += written - w_mine
                batch.overlap_rejected += rejected - r_mine
            else:
                c.written += written
                c.drop("rejected", rejected)

    def _refused(self, reason: str) -> None:
        self._count("rejected")
        if not self._reject_burst:
            self.ctx.log.error(f"{self.label}: the database refused a record: {reason.strip().splitlines()[0]}")
        self._reject_burst += 1

    def _projection(self, names: tuple[str, ...]) -> Callable[[tuple[Any, ...]], tuple[Any, ...]] | None:
        """How to turn rows of ``names`` into rows of the table's columns (None: as they are)."""
        if names == tuple(self.keys):
            return None
        if names not in self._projections:
            where = {n: i for i, n in enumerate(names)}
            idx = [where.get(k) for k in self.keys]
            if any(i is None for i in idx):
                missing = [k for k, i in zip(self.keys, idx, strict=True) if i is None]
                self.ctx.log.notice(f"{self.label}: queued records have no value for {', '.join(missing)}: NULL")
            self._projections[names] = _projector(idx)
        return self._projections[names]

    # ------------------------------------------------------------------ spiller thread
    def _run_spiller(self) -> None:
        while True:
            with self.cond:
                items = self._due()
                while items is None:
                    if self._flush_all and (self._writer_done or not self.thread.is_alive()) or (
                        self._flush_all and not self.mem and self._retry is None
                    ):
                        break
                    oldest = self.mem[0].t if self.mem else None
                    now = self.clock.monotonic()
                    self.clock.wait(self.cond, self.policy.spill_check_at(now, oldest, self.connected))
                    items = self._due()
                if items is None:
                    return
                self._moving += 1
                mark = min(item[3] for item in items)
                self._moving_marks.append(mark)
            try:
                self._to_spool(items)
            except Exception as e:  # a bug must not stop the spilling: count what it cost
                # ``items`` holds only what _to_spool had not accounted for yet: each row
                # is counted once (issue 12: rows already dropped were counted again here).
                lost = sum(len(item[2]) for item in items if item[0] is None)
                self._drop(lost, f"spooling failed: {type(e).__name__}: {e}", "spool_failed")
                for item in items:
                    b = item[0]
                    if b is not None and b.spooled == "pending":
                        self._spilled(b, None)
            finally:
                with self.cond:
                    self._moving -= 1
                    self._moving_marks.remove(mark)
                    self.cond.notify_all()

    def _due(self) -> list[SpillItem] | None:
        """(cond held) What to move to disk now, oldest first; None: nothing."""
        oldest = self.mem[0].t if self.mem else None
        keep = self.policy.spill_keep(self.clock.monotonic(), oldest, self.mem_bytes, self.connected, self._flush_all)
        if keep is None:
            return None
        items: list[SpillItem] = []
        # The batch being written or retried from memory is older than anything in memory.
        cur = self._current
        if cur is not None and cur.frame is None and cur.spooled is None and not cur.written:
            cur.spooled = "pending"
            cur.spill_from = cur.done
            cur.overlap = cur.overlap_rejected = 0
            cur.gave_up = False
            cur_seqs = None if cur.seqs is None else cur.seqs[cur.done :]
            items.append((cur, cur.names, cur.rows[cur.done :], cur.mark, cur_seqs))
        if self._retry is not None and self._retry.frame is None:
            r = self._retry
            items.append((None, r.names, r.rows[r.done :], r.mark, None if r.seqs is None else r.seqs[r.done :]))
            self._retry = None
        while self.mem and self.mem_bytes > keep:
            chunk = self.mem.popleft()
            self.mem_rows -= len(chunk.rows)
            self.mem_bytes -= chunk.size
            items.append((None, chunk.names, chunk.rows, chunk.mark, chunk.seqs))
        return items or None

    def _to_spool(self, items: list[SpillItem]) -> None:
        """Append ``items`` to the spool, counting each row once: spooled, or dropped by
        cause. ``items`` is consumed as it goes (what is left when this raises was not
        counted). Any failure of an append (a full disk, or a bug in the spool: it raised
        IndexError after a full disk once) costs that frame's rows and nothing else."""
        assert self.spool is not None
        size = self.cfg.batch_size
        while items:
            batch, names, rows, mark, seqs = items[0]
            if batch is not None:
                # The batch the writer is writing (at most batch_size rows: one frame). Its
                # copy failing loses nothing: the writer still has it (issue 12: such rows
                # were counted as dropped and then written, the counts adding up to more
                # records than there were).
                why = ""
                try:
                    ref = self.spool.append(names, rows, seqs)
                    if ref is None:
                        why = f"the spool is full ({self.spool.max_bytes} bytes)"
                except Exception as e:
                    why = f"writing the spool failed: {_failure(e)}"
                    ref = None
                if why:
                    self._tell_drop(why)
                items.pop(0)
                self._spilled(batch, ref, len(rows))
                continue
            part, rest = rows[:size], rows[size:]
            part_seqs, rest_seqs = (None, None) if seqs is None else (seqs[:size], seqs[size:])
            try:
                ref = self.spool.append(names, part, part_seqs)
            except Exception as e:
                ref, why, cause = None, f"writing the spool failed: {_failure(e)}", "spool_failed"
            else:
                why, cause = f"the spool is full ({self.spool.max_bytes} bytes)", "spool_full"
            if rest:
                items[0] = (None, names, rest, mark, rest_seqs)
            else:
                items.pop(0)
            if ref is not None:
                self._count("spooled", len(part))
                with self.stats_lock:
                    self.counters.spooled += len(part)
            else:
                self._drop(len(part), why, cause)

    def _spilled(self, batch: Batch, ref: FrameRef | None, rows: int = 0) -> None:
        """The spiller's copy of the batch being written ended: ``ref`` where it went, or
        None (failed: the writer keeps the batch, and takes back the rows it delivered)."""
        with self.cond, self.stats_lock:
            c = self.counters
            if ref is not None:
                batch.spooled = ref
                c.spooled += rows
                c.unspooled += batch.overlap
                c.spool_lost += batch.overlap_rejected
                self.ctx.stats.incr(f"{self._p}.spooled", rows)
                if batch.written:
                    self._skip.add(ref)
            else:
                batch.spooled = None
                c.written += batch.overlap
                c.drop("rejected", batch.overlap_rejected)
                if batch.gave_up and not batch.written and self._retry is None:
                    batch.rows = batch.rows[batch.done :]
                    if batch.seqs is not None:
                        batch.seqs = batch.seqs[batch.done :]
                    batch.done = 0
                    self._retry = batch
                    self.cond.notify_all()
            batch.overlap = batch.overlap_rejected = 0
            batch.gave_up = False

    def _tell_drop(self, why: str) -> None:
        if not self._drop_burst:
            self.ctx.log.error(f"{self.label}: cannot spool the batch being written: {why}")

    def _lose_rest(self) -> None:
        """After the threads ended: what is still in memory (no spool) is dropped, counted."""
        with self.cond:
            lost = self.mem_rows + (0 if self._retry is None else len(self._retry.rows) - self._retry.done)
            self.mem.clear()
            self.mem_rows = self.mem_bytes = 0
            self._retry = None
        if lost:
            self._drop(lost, "there is no spool to keep them" if self.spool is None else "stopping", "unsent_at_exit")

    # -- accounting
    def _drop(self, n: int, why: str, cause: str) -> None:
        self._count("dropped", n)
        with self.stats_lock:
            self.counters.drop(cause, n)
        if not self._drop_burst:
            self.ctx.log.error(f"{self.label}: dropping records: {why}")
        self._drop_burst += n

    def _count(self, what: str, n: int = 1) -> None:
        with self.stats_lock:
            self.ctx.stats.incr(f"{self._p}.{what}", n)


class WriterSink:
    """The SQL outputs' :class:`~pyulogd.io.sink.LineSink`: rows (tuples of column values,
    in the order of ``names``) to the writer threads.

    ``add`` only appends; every ``handoff`` rows, and after each round of the event loop,
    ``flush`` hands the batch to :meth:`Writer.put` (a lock and an append). ``open`` starts
    the threads (the output calls it once ``-u`` dropped root: they open the spool's
    segments and connect as the user), ``reopen`` (SIGHUP) asks for a fresh connection, as
    ulogd2 does, and ``close`` writes what it can within ``stop_timeout`` and spools the rest.
    """

    def __init__(self, writer: Writer, names: tuple[str, ...], handoff: int, stop_timeout: float) -> None:
        self.writer = writer
        self.names = names  # the key of each value of the rows added from now on
        self.handoff = handoff
        self.stop_timeout = stop_timeout
        self.counters = writer.counters
        self.ctx = writer.ctx
        self.pending: Rows = []
        self.seqs: list[int] | None = None  # the pending rows' sequence numbers, when tracked
        self._started = False
        self._closed = False

    def open(self) -> None:
        if not self._started and not self._closed:
            self._started = True
            self.writer.start()

    def add(self, row: tuple[Any, ...]) -> None:
        pending = self.pending
        pending.append(row)
        if len(pending) >= self.handoff:
            self.flush()

    def track_commits(self) -> Callable[[tuple[Any, ...]], None]:
        """From now on every row is added with its sequence number (``ctx.seq``); returns the
        ``add`` that does it (the output binds it instead of :meth:`add`)."""
        if self.seqs is None:
            self.seqs = []
        return self.add_numbered

    def add_numbered(self, row: tuple[Any, ...]) -> None:
        pending = self.pending
        pending.append(row)
        seqs = self.seqs
        assert seqs is not None
        seqs.append(self.ctx.seq)
        if len(pending) >= self.handoff:
            self.flush()

    def flush(self) -> None:
        rows = self.pending
        if rows:
            self.pending = []
            seqs = self.seqs
            if seqs is not None:
                self.seqs = []
            self.counters.received += len(rows)
            self.writer.put(self.names, rows, seqs)
        self.writer.handed = self.ctx.seq

    def reopen(self) -> None:
        self.writer.request_reconnect()

    def committed(self, seq: int) -> int:
        """The commit cursor (io/output.py's ``Output.committed``): rows count once committed
        by the database or in the spool."""
        return self.writer.committed(seq)

    def close(self) -> None:
        if self._closed:
            return
        self.flush()
        self._closed = True
        self.writer.stop(self.stop_timeout)


def _projector(idx: list[int | None]) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    def project(row: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(None if i is None else row[i] for i in idx)

    return project


def _failure(e: Exception) -> str:
    """Why an append to the spool failed, for the log: the system's words for an OSError."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return f"{type(e).__name__}: {e}"


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
