"""The NATS output's publisher: a thread of its own with its own asyncio loop, between the
daemon's loop and a JetStream server, with the on-disk spool for outages.

The daemon's loop is a ``selectors`` loop with no threads (docs/design.md); nats-py is
asyncio. So the client runs in one thread with its own event loop, and the packet path only
ever touches a bounded hand-off: after each loop round the output calls :meth:`Publisher.put`
(a lock, an append, at most one wake-up of the thread through
``loop.call_soon_threadsafe``). Never a wait on the broker.

The thread, in order of age (one FIFO per subject):

1. the message being retried (a publish that got no ack),
2. the spool (``io/spool.py``: one frame per message, written when the broker was away),
3. memory (records handed over and not yet cut into a message).

A message is cut from memory when ``batch_size`` records wait or the oldest waited
``linger`` seconds (``io/natsmsg.py``); from then on it is a fixed unit with a fixed
``Nats-Msg-Id``, retried as it is and, if it is spilled, spooled as one frame, so that a
republish after a lost ack is the same message and JetStream drops the copy. Every publish
waits for JetStream's ack (``ack_timeout``). A failed publish or connection backs off (capped,
doubling) and, while the broker stays away, what waited ``spool_delay`` seconds (or anything
over ``queue_max`` records) goes to the spool, oldest first, and is drained in order when the
broker is back; memory is read only once the spool is empty. Only a full spool (or, without
one, a full memory queue) drops records, counted by cause.

The client is injected (:class:`Client`), so that this module imports no NATS library: the
plugin module adapts nats-py to it. Time comes from ``ctx.clock`` (the asyncio loop's own
timeouts only bound how long the thread sleeps).
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from pyulogd.core.backoff import Backoff
from pyulogd.io.natsmsg import HDR_MSG_ID, HDR_NODE, Chunk, cut, due_at, msg_id
from pyulogd.io.recordfmt import encode_batch
from pyulogd.io.sink import SinkCounters
from pyulogd.io.spool import Frame, Spool

if TYPE_CHECKING:
    from pyulogd.core.context import Context


class Client(Protocol):
    """What the publisher needs of a JetStream client (the plugin adapts nats-py)."""

    async def connect(self) -> None:
        """Connect (and create or check the stream); raise anything when that fails."""

    def connected(self) -> bool:
        """The connection is up now (a client reconnecting by itself says False)."""

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str], timeout: float) -> bool:
        """Publish and wait for JetStream's ack; True when the server says it was a duplicate.
        Raises on no ack, no stream, no connection."""

    async def close(self) -> None: ...


@dataclass
class PubSettings:
    batch_size: int = 1000
    linger: float = 0.1
    queue_max: int = 100_000  # records in memory before spilling (twice that: dropped)
    spool_delay: float = 1.0
    ack_timeout: float = 5.0
    reconnect: float = 0.5
    reconnect_max: float = 5.0
    node: str = ""


@dataclass
class Message:
    subject: str
    names: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    seqs: list[int]
    frame: Frame | None = None  # where it is in the spool (acked when published), or None


class Publisher:
    def __init__(
        self,
        ctx: Context,
        label: str,
        stat_prefix: str,
        client: Client,
        settings: PubSettings,
        spool: Spool | None,
        subject_of: Callable[[tuple[str, ...], tuple[Any, ...]], str],
    ) -> None:
        self.ctx = ctx
        self.label = label
        self.client = client
        self.cfg = settings
        self.spool = spool
        # The subject of a spooled message, from its first record (frames keep no subject).
        self.subject_of = subject_of
        self.clock = ctx.clock
        self.lock = threading.Lock()
        # -- guarded by lock
        self.mem: collections.deque[Chunk] = collections.deque()
        self.mem_records = 0
        self.stopping = False
        self.deadline = 0.0
        self.handed = 0  # the daemon's sequence number at the last hand-over
        self._spool_mark = 0  # commit_mark while the spool holds messages
        self._moving: int | None = None  # the oldest number taken from memory, not yet spooled
        # -- publisher thread only
        self._retry: Message | None = None
        self._outage_logged = False
        self._drop_burst = 0
        self._connected_once = False
        self.backoff = Backoff(settings.reconnect, settings.reconnect_max, jitter=0.2)
        # -- counters (stats_lock)
        self.stats_lock = threading.Lock()
        self.counters = SinkCounters()
        self._p = stat_prefix
        self.acked_seq = 0  # last sequence number of the last message acked (progress, for tests)
        self.up = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"pyulogd-{label}", daemon=True)

    # ------------------------------------------------------------------ daemon loop side
    def start(self) -> None:
        self.thread.start()
        self._ready.wait()

    def put(self, chunks: list[Chunk], upto: int) -> None:
        """Queue chunks of records (never blocks on the broker or the disk)."""
        n = sum(len(c.rows) for c in chunks)
        wake = False
        with self.lock:
            if n and self.mem_records + n > 2 * self.cfg.queue_max:
                self._drop(n, "the memory queue is full" + ("" if self.spool else " and there is no spool"),
                           "memory_full")
            elif n:
                wake = not self.mem or self.mem_records + n >= self.cfg.batch_size
                self.mem.extend(chunks)
                self.mem_records += n
            self.handed = upto
        if wake:
            self._wake()

    def commit_mark(self) -> int:
        """Every record numbered up to this is acknowledged by JetStream (or dropped, counted):
        one less than the oldest number still waiting in memory, being retried or moving to the
        spool, what was handed over when nothing waits; while the spool holds messages, the
        mark from before they were spooled (their numbers are on disk, not here)."""
        with self.lock:
            if self.spool is not None and not self.spool.empty:
                return self._spool_mark
            return self._mark()

    def committed(self, seq: int) -> int:
        """The commit cursor of the write-ahead log (``Output.committed``) after a flush at
        ``seq``: records count once JetStream acknowledged them or they are in the spool (on
        disk: durable here, as for the SQL outputs), so it is one less than the oldest number
        still in memory, being retried or on its way to the spool, else ``seq``."""
        with self.lock:
            low = self._low()
        return seq if low is None else min(seq, low - 1)

    def _mark(self) -> int:
        """(lock held) The mark from memory, the retry and what moves to the spool."""
        low = self._low()
        return self.handed if low is None else low - 1

    def _low(self) -> int | None:
        """(lock held) The oldest sequence number held in memory only (the queue, the retry
        of a message cut from it, messages leaving it for the spool), or None."""
        low = self._moving
        retry = self._retry
        if retry is not None and retry.seqs and retry.frame is None and (low is None or retry.seqs[0] < low):
            low = retry.seqs[0]
        mem = self.mem
        if mem:
            # The queue is in hand-over order and a later hand-over holds only higher numbers,
            # but one hand-over's chunks (one per subject) interleave: the first hand-over's
            # chunks (same time) hold the lowest.
            t = mem[0].t
            for c in mem:
                if c.t != t:
                    break
                if c.seqs and (low is None or c.seqs[0] < low):
                    low = c.seqs[0]
        return low

    def idle(self) -> bool:
        """Nothing is waiting anywhere (memory, a retry, the spool)."""
        with self.lock:
            return not self.mem and self._retry is None and (self.spool is None or self.spool.empty)

    def stop(self, timeout: float) -> None:
        """Publish what can be within ``timeout`` seconds, spool the rest, end the thread."""
        with self.lock:
            self.stopping = True
            self.deadline = self.clock.monotonic() + timeout
        self._wake()
        self.thread.join(timeout + 10.0)
        if self.thread.is_alive():
            self.ctx.log.error(f"{self.label}: the publisher did not stop in time")

    def _wake(self) -> None:
        loop, event = self._loop, self._event
        if loop is not None and event is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # the loop just closed
                pass

    # ------------------------------------------------------------------ publisher thread
    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._main(loop))
        except Exception as e:  # a bug here must not lose the queue silently
            self.ctx.log.error(f"{self.label}: publisher failed: {type(e).__name__}: {e}; spooling the queue")
            self._spill_all()
        finally:
            self._ready.set()
            try:
                loop.run_until_complete(self.client.close())
            except Exception:  # noqa: BLE001 - closing a broken client may fail in any way
                pass
            loop.close()
            self._lose_rest()

    async def _main(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()
        self._ready.set()
        while True:
            now = self.clock.monotonic()
            with self.lock:
                stopping, deadline = self.stopping, self.deadline
            if stopping and (now >= deadline or (not self.up and self.backoff.failures)):
                # Out of time, or no broker to publish to: what waits goes to the spool.
                self._spill_all()
                return
            if not self._connected_once and self.backoff.due(now):
                await self._connect(now)
            self.up = self._connected_once and self.client.connected()
            self._spill_due(now)
            if self.up:
                msg = self._next(now)
                if msg is not None:
                    await self._publish(msg)
                    continue
            with self.lock:
                if stopping and not self.mem and self._retry is None and (self.spool is None or self.spool.empty):
                    return
            await self._sleep(self._wake_at(now))

    async def _sleep(self, until: float | None) -> None:
        event = self._event
        assert event is not None
        if until is None:
            await event.wait()
        else:
            left = until - self.clock.monotonic()
            if left > 0:
                try:
                    await asyncio.wait_for(event.wait(), left)
                except TimeoutError:
                    pass
        event.clear()

    def _wake_at(self, now: float) -> float | None:
        """When something is due: a message to cut, a spill, a reconnection attempt."""
        at: list[float] = []
        with self.lock:
            oldest = self.mem[0].t if self.mem else None
            queued = self.mem_records
            stopping, deadline = self.stopping, self.deadline
        if stopping:
            at.append(deadline)
        if not self.up or self.backoff.failures:
            at.append(self.backoff.deadline())
            if oldest is not None:
                at.append(oldest + self.cfg.spool_delay)
            at.append(now + 1.0)  # the client may reconnect by itself: look again
        if self.backoff.failures:
            at.append(self.backoff.deadline())
        elif self._retry is None:
            due = due_at(oldest, queued, self.cfg.batch_size, self.cfg.linger, stopping)
            if due is not None:
                at.append(due)
        return max(min(at), now + 0.001) if at else None

    async def _connect(self, now: float) -> None:
        self.backoff.begin(now)
        try:
            await self.client.connect()
        except Exception as e:  # noqa: BLE001 - any failure of the client is an outage
            self._failed(f"cannot connect: {_short(e)}")
            return
        self._connected_once = True
        self.backoff.reset()
        self._back()

    def _back(self) -> None:
        if self._outage_logged:
            spooled = 0 if self.spool is None else self.spool.bytes
            self.ctx.log.notice(f"{self.label}: the broker takes messages again; sending the queue "
                                f"({self.mem_records} records in memory, {spooled} bytes spooled)")
        self._outage_logged = False

    def _failed(self, what: str) -> None:
        self.backoff.failed()
        self._count("failures")
        if not self._outage_logged:
            self._outage_logged = True
            where = f"spooling to {self.spool.path}" if self.spool else "queueing in memory"
            self.ctx.log.error(f"{self.label}: {what}; {where}, retrying")

    # -- choosing what to publish
    def _next(self, now: float) -> Message | None:
        if self.backoff.failures and not self.backoff.due(now):
            return None  # the last publish failed: wait for the back-off
        if self._retry is not None:
            return self._retry
        if self.spool is not None and not self.spool.empty:
            frame = self.spool.peek()
            if frame is not None:
                seqs = frame.seqs or []
                subject = self.subject_of(frame.names, frame.rows[0]) if frame.rows else ""
                return Message(subject, frame.names, frame.rows, seqs, frame)
            return None
        with self.lock:
            if not self.mem:
                return None
            due = due_at(self.mem[0].t, self.mem_records, self.cfg.batch_size, self.cfg.linger, self.stopping)
            if due is None or now < due:
                return None
            chunks = list(self.mem)
            taken = cut(chunks, self.cfg.batch_size)
            self.mem = collections.deque(chunks)
            self.mem_records -= taken[1]
        m = taken[0]
        self._retry = Message(m.subject, m.names, m.rows, m.seqs)
        return self._retry

    async def _publish(self, msg: Message) -> None:
        payload = encode_batch(msg.names, msg.rows, msg.seqs if msg.seqs else None)
        headers = {HDR_MSG_ID: msg_id(self.cfg.node, msg.seqs, payload), HDR_NODE: self.cfg.node}
        self.backoff.begin(self.clock.monotonic())
        try:
            duplicate = await self.client.publish(msg.subject, payload, headers, self.cfg.ack_timeout)
        except Exception as e:  # noqa: BLE001 - no ack, no stream, no connection: all retried
            self._failed(f"publishing failed: {_short(e)}")
            self.ctx.log.debug(f"{self.label}: message {headers[HDR_MSG_ID]} not acked: {_short(e)}")
            return
        if self.backoff.reset():
            self._back()
        n = len(msg.rows)
        if msg.frame is not None and self.spool is not None:
            self.spool.ack(msg.frame)
        else:
            self._retry = None
        self._count("messages")
        self._count("records", n)
        if duplicate:
            self._count("duplicates", n)
        with self.stats_lock:
            self.counters.written += n
            if msg.seqs:
                self.acked_seq = msg.seqs[-1]
        if self._drop_burst:
            self.ctx.log.notice(f"{self.label}: sending again; {self._drop_burst} records were dropped")
            self._drop_burst = 0

    # -- spilling
    def _spill_due(self, now: float) -> None:
        """While the broker is away, what waited ``spool_delay`` goes to disk; always what is
        over ``queue_max``."""
        if self.spool is None:
            return
        keep_young = not self.up or self.backoff.failures > 0
        items: list[Message] = []
        with self.lock:
            over = self.mem_records > self.cfg.queue_max
            if not keep_young and not over:
                return
            if keep_young and self._retry is not None and self._retry.frame is None:
                items.append(self._retry)
                self._retry = None
            while self.mem and (
                self.mem_records > self.cfg.queue_max or (keep_young and self.mem[0].t + self.cfg.spool_delay <= now)
            ):
                chunks = list(self.mem)
                m, n = cut(chunks, self.cfg.batch_size)
                self.mem = collections.deque(chunks)
                self.mem_records -= n
                items.append(Message(m.subject, m.names, m.rows, m.seqs))
            self._moving = _oldest(items)
        self._to_spool(items)

    def _spill_all(self) -> None:
        items: list[Message] = []
        with self.lock:
            if self._retry is not None and self._retry.frame is None:
                items.append(self._retry)
            self._retry = None
            while self.mem:
                chunks = list(self.mem)
                m, n = cut(chunks, self.cfg.batch_size)
                self.mem = collections.deque(chunks)
                self.mem_records -= n
                items.append(Message(m.subject, m.names, m.rows, m.seqs))
            self._moving = _oldest(items)
        if self.spool is None:
            lost = sum(len(m.rows) for m in items)
            if lost:
                self._drop(lost, "there is no spool to keep them", "unsent_at_exit")
            with self.lock:
                self._moving = None
            return
        self._to_spool(items)

    def _to_spool(self, items: list[Message]) -> None:
        """``items`` (taken from memory, their oldest number in ``_moving``) to the spool; the
        commit cursors pass them only once they are on disk (or dropped, counted)."""
        assert self.spool is not None or not items
        if items and self.spool is not None and self.spool.empty:
            # commit_mark stands still while the spool holds messages: below the oldest spilled.
            with self.lock:
                self._spool_mark = self._mark()
        for m in items:
            assert self.spool is not None
            try:
                ref = self.spool.append(m.names, m.rows, m.seqs if m.seqs else None)
            except OSError as e:
                self._drop(len(m.rows), f"writing the spool failed: {e.strerror}", "spool_failed")
                continue
            if ref is None:
                self._drop(len(m.rows), f"the spool is full ({self.spool.max_bytes} bytes)", "spool_full")
            else:
                self._count("spooled", len(m.rows))
                if m.seqs:
                    self.ctx.log.debug(f"{self.label}: spooled records {m.seqs[0]}..{m.seqs[-1]} ({len(m.seqs)})")
        if items:
            with self.lock:
                self._moving = None

    def _lose_rest(self) -> None:
        with self.lock:
            lost = self.mem_records + (0 if self._retry is None or self._retry.frame else len(self._retry.rows))
            self.mem.clear()
            self.mem_records = 0
            self._retry = None
        if lost:
            self._drop(lost, "stopping", "unsent_at_exit")

    # -- accounting
    def _drop(self, n: int, why: str, cause: str) -> None:
        with self.stats_lock:
            self.ctx.stats.incr(f"{self._p}.dropped", n)
            self.counters.drop(cause, n)
        if not self._drop_burst:
            self.ctx.log.error(f"{self.label}: dropping records: {why}")
        self._drop_burst += n

    def _count(self, what: str, n: int = 1) -> None:
        with self.stats_lock:
            self.ctx.stats.incr(f"{self._p}.{what}", n)


def _oldest(items: list[Message]) -> int | None:
    """The lowest sequence number of messages (each in ascending order), None if none has any."""
    return min((m.seqs[0] for m in items if m.seqs), default=None)


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__
