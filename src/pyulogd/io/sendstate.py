"""The decisions of a network sender, without sockets or clocks (sans-IO, as the codecs).

:class:`~pyulogd.io.sender.ReliableSender` is the I/O shell: it owns the socket and the
loop's timer, and reports what happened here (an attempt began, failed, the connection
broke, a datagram went out, so many bytes were taken) with the current monotonic time.
:class:`SendState` answers what to do next: connect now or in how long, whether sending may
go on, what the peer already has. Nothing here blocks, reads a clock or logs, so every
timing rule is tested by passing numbers (``tests/unit/test_sendstate.py``).

* :class:`SendQueue`: the bounded queue of *items* (a datagram, a chunk of whole lines, one
  binary message), the head possibly partly sent; what the peer has when a stream breaks.
* :class:`SendState`: the queue, a :class:`~pyulogd.core.backoff.Backoff` for reconnects,
  the probe a datagram peer gets after a refusal, and how long a connect (or a TLS
  handshake) may take.
* :class:`Spill`: the order between the memory queue and the on-disk spool while the peer
  is away: which records go to disk, when a frame comes back from it, when it is delivered.

The reconnect promise of the stream outputs ("back within ``cap`` seconds of the peer's
return") is a property of these numbers alone: an attempt fails only while the peer is
away, and every wait is at most ``cap`` (jitter only shortens it), so the first attempt
after the return comes at most ``cap`` later (``tests/unit/test_sendstate.py`` checks it on
random failure histories).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from pyulogd.core.backoff import Backoff
from pyulogd.io.sink import FLUSH_AT

__all__ = ["CONNECT_TIMEOUT", "DURABLE", "FLUSH_AT", "HISTORY", "POLL", "PROBE_WAIT", "SLACK", "SendQueue", "SendState",
           "Spill"]

# Bytes a live (or connecting) socket may always hold back, whatever queue_bytes says.
SLACK = 4 * FLUSH_AT
# After a refused datagram: the first one sent is a probe, the rest wait this long for a
# refusal to come back.
PROBE_WAIT = 0.2
# Connecting, or the peer's buffers are full: look again this soon.
POLL = 0.05
# Bytes of items already sent that a stream remembers, in case its peer goes away before
# acknowledging them: more than a socket's send buffer holds (tcp_wmem's default maximum).
HISTORY = 4 << 20
# A connect (TCP, then the TLS handshake) that takes longer is given up and retried: a peer
# that drops SYNs would otherwise hold the sender for the kernel's two minutes of retries,
# and its return would go unnoticed meanwhile.
CONNECT_TIMEOUT = 10.0
# The commit mark of an item that holds nothing back: records read back from the spool (still
# on disk until their frame is acknowledged), IPFIX templates (no record).
DURABLE = 1 << 63


class SendQueue:
    """Items waiting to be sent, oldest first: ``[data, records, mark]``, the head possibly
    sent up to ``head_off`` bytes. ``queue_bytes`` bounds it while there is no socket; a socket
    that exists may hold :data:`SLACK` bytes more.

    ``mark`` is the write-ahead log's commit mark of the item (io/wal.py): the sequence number
    below which every record was already durable when the item's records came (the sink's
    last ``committed(seq)``), or :data:`DURABLE` for an item that holds nothing back (read
    back from the spool, a template). An item in memory is not durable: while it waits, the
    output's cursor stays at its mark (:meth:`oldest_mark`); once the socket took it, it is
    the kernel's and no longer holds the cursor back. Marks never decrease from the head to
    the tail (items come in the order of their records; what goes back to the head is older),
    so the oldest is the first item's that holds anything back."""

    def __init__(self, queue_bytes: int, lines: bool) -> None:
        self.queue_bytes = max(0, queue_bytes)
        self.lines = lines  # items are whole text lines (a broken stream resends from a line)
        self.items: deque[list[Any]] = deque()
        self.bytes = 0
        self.head_off = 0
        # Records that left the queue at its head (sent whole, or dropped as unsendable):
        # what tells :class:`Spill` that a frame from the spool has gone out.
        self.taken = 0
        # Streams: the items sent whole on this connection, newest last, as long as they could
        # still be in the socket's send queue (``history_cap`` bytes): what :meth:`unsent`
        # puts back when the connection breaks with bytes the peer never acknowledged.
        self.history: deque[tuple[bytes, int, int]] = deque()
        self.history_bytes = 0
        self.history_cap = HISTORY

    def __bool__(self) -> bool:
        return bool(self.items)

    @property
    def records(self) -> int:
        return sum(item[1] for item in self.items)

    def limit(self, live: bool) -> int:
        return max(self.queue_bytes, SLACK) if live else self.queue_bytes

    def fits(self, size: int, live: bool) -> bool:
        return self.bytes + size <= self.limit(live)

    def push(self, data: bytes, records: int, mark: int = DURABLE) -> None:
        self.items.append([data, records, mark])
        self.bytes += len(data)

    def push_front(self, items: list[tuple[bytes, int]]) -> None:
        """Items that must open a connection (IPFIX templates): first, beyond the limit."""
        for data, records in reversed(items):
            self.items.appendleft([data, records, DURABLE])
            self.bytes += len(data)

    def oldest_mark(self) -> int:
        """The commit mark of the oldest item that holds the cursor back (:data:`DURABLE`:
        none). Marks do not decrease along the queue, so this looks at the head only, past
        the templates or spooled items in front of it."""
        for item in self.items:
            if item[2] != DURABLE:
                return int(item[2])
        return DURABLE

    def trim(self) -> int:
        """Without a socket only ``queue_bytes`` may wait: drop the newest items beyond it.
        Returns the records dropped."""
        items = self.items
        dropped = 0
        while items and self.bytes > self.queue_bytes:
            data, records, _mark = items.pop()
            self.bytes -= len(data)
            dropped += records
        return dropped

    def clear(self) -> int:
        """Empty the queue; returns the records it held."""
        lost = self.records
        self.items.clear()
        self.bytes = 0
        self.head_off = 0
        return lost

    def rewind(self) -> int:
        """The connection is gone with the head partly sent. Lines: the peer has those before
        the last newline of the sent part, cut from the head (their count is returned);
        binary: the head goes again whole (0)."""
        done = 0
        if self.head_off and self.items:
            if self.lines:
                head = self.items[0]
                cut = head[0].rfind(b"\n", 0, self.head_off) + 1
                if cut:
                    done = head[0].count(b"\n", 0, cut)
                    head[0] = head[0][cut:]
                    head[1] = max(1, head[1] - done)
                    self.bytes -= cut
        self.head_off = 0
        self.taken += done
        return done

    # -- streams
    def head_view(self, max_send: int) -> memoryview:
        """The unsent bytes of the head (at most ``max_send``); small line items after it are
        joined to it first, so a batch of lines costs one send."""
        items = self.items
        if len(items) > 1 and len(items[0][0]) - self.head_off < FLUSH_AT and self.lines:
            self._merge_head(max_send)
        off = self.head_off
        return memoryview(items[0][0])[off : off + max_send]

    def _merge_head(self, max_send: int) -> None:
        """Join items after the head into it, keeping the record counts. Binary items keep
        their boundaries (a broken connection resends whole items)."""
        items = self.items
        head = items.popleft()
        parts = [head[0]]
        records = head[1]
        mark = head[2]
        size = len(head[0])
        while items and size < max_send:
            data, n, m = items.popleft()
            parts.append(data)
            records += n
            mark = min(mark, m)
            size += len(data)
        items.appendleft([b"".join(parts), records, mark])

    def took(self, n: int) -> int | None:
        """The socket took ``n`` more bytes of the head: the head's records when it is now
        sent whole (and dropped from the queue), None while part of it is left."""
        off = self.head_off + n
        data, records, mark = self.items[0]
        if off < len(data):
            self.head_off = off
            return None
        self.items.popleft()
        self.bytes -= len(data)
        self.head_off = 0
        self.taken += records
        self.history.append((data, records, mark))
        self.history_bytes += len(data)
        if self.history_bytes > self.history_cap:
            history = self.history
            while self.history_bytes - len(history[0][0]) >= self.history_cap:
                self.history_bytes -= len(history.popleft()[0])
        return int(records)

    def forget_history(self) -> None:
        """A new connection (or a clean close): nothing sent before can come back."""
        self.history.clear()
        self.history_bytes = 0

    def unsent(self, outq: int) -> int:
        """The connection broke with ``outq`` bytes its peer never acknowledged (SIOCOUTQ,
        the newest bytes sent): put what they belong to back at the head, to go again on the
        next connection (lines: from the first line not wholly acknowledged; binary: the
        whole item). Returns the records put back (they were counted as sent). The head's
        part sent is dealt with first (it is the newest); :meth:`rewind` then cuts what the
        peer has of it."""
        back = 0
        if outq <= 0:
            self.forget_history()
            return 0
        if self.head_off:
            k = min(self.head_off, outq)
            self.head_off -= k
            outq -= k
        while outq > 0 and self.history:
            data, records, mark = self.history.pop()
            self.history_bytes -= len(data)
            if len(data) > outq and self.lines:
                cut = data.rfind(b"\n", 0, len(data) - outq) + 1
                data = data[cut:]
                records = min(records, data.count(b"\n"))
            outq -= len(data) if outq >= len(data) else outq
            if data and records:  # (items of no record, IPFIX templates, open every connection anew)
                self.items.appendleft([data, records, mark])
                self.bytes += len(data)
                self.taken -= records
                back += records
        self.forget_history()
        return back

    # -- datagrams
    def pop(self) -> int:
        """Drop the head (sent, or never sendable); returns its records."""
        data, records, _mark = self.items.popleft()
        self.bytes -= len(data)
        self.taken += records
        return int(records)


class SendState:
    """Queue, reconnect back-off and datagram probing of one sender; every method that
    depends on time takes ``now`` (monotonic seconds)."""

    def __init__(
        self,
        queue: SendQueue,
        backoff: Backoff,
        *,
        datagram: bool = False,
        probe_wait: float = PROBE_WAIT,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        self.queue = queue
        self.backoff = backoff
        self.datagram = datagram
        self.probe_wait = probe_wait
        self.connect_timeout = connect_timeout
        # Datagrams: after a refusal the next datagram is a probe; the rest wait until
        # ``probe_until`` (0.0: the probe has not gone yet) for a refusal to come back.
        self.probing = False
        self.probe_until = 0.0

    # -- connecting
    def connect_due(self, now: float) -> bool:
        """No socket: whether an attempt may be made now."""
        return self.backoff.due(now)

    def attempt(self, now: float) -> None:
        """A connection attempt begins (the back-off counts from here)."""
        self.backoff.begin(now)

    def attempt_failed(self) -> tuple[bool, float]:
        """The attempt failed: (first failure of a run, wait until the next attempt)."""
        wait = self.backoff.failed()
        return self.backoff.failures == 1, wait

    def connect_expired(self, now: float) -> bool:
        """A connect (or TLS handshake) in progress since the attempt began has taken too
        long: give it up (and count a failed attempt)."""
        return now - self.backoff.since >= self.connect_timeout

    def established(self) -> bool:
        """The connection is up. True if the peer is back after failures (worth a notice);
        a datagram peer under probation is back only once its probe went through."""
        if self.probing:
            return False
        return self.backoff.reset() > 0

    def broken(self, now: float) -> None:
        """A working connection broke: reconnect after the first wait."""
        self.backoff.broke(now)

    def refused(self) -> None:
        """The datagram peer refused (or its socket is gone): probe before sending the rest."""
        self.probing = True
        self.probe_until = 0.0

    def restart(self) -> None:
        """SIGHUP: a fresh connection is tried at once, with the first wait after it."""
        self.backoff.reset()

    def retry_in(self, now: float, have_socket: bool) -> float:
        """When the shell's timer should look again: the back-off without a socket, soon
        with one (a connect in progress, or the peer's buffers full)."""
        return POLL if have_socket else self.backoff.remaining(now)

    # -- sending datagrams
    def may_send(self, now: float) -> bool:
        """False while a probe waits for a refusal that may come back."""
        return not (self.probing and self.probe_until and now < self.probe_until)

    def datagram_sent(self, now: float) -> tuple[float | None, bool]:
        """A datagram went out. Returns (hold, back): ``hold`` seconds to wait before the
        rest when it was the probe (None: go on); ``back`` when it shows the peer is back
        (the first datagram after a probe window with no refusal)."""
        if not self.probing:
            return None, False
        if not self.probe_until:
            self.probe_until = now + self.probe_wait
            return self.probe_wait, False
        self.probing = False
        self.probe_until = 0.0
        return None, self.backoff.reset() > 0


class Spill:
    """Where a record goes while the peer is away, and when what is on disk comes back.

    One order for every record: the memory queue (oldest), then the spool, then ``pending``
    (records on their way to the spool, appended as one frame per round). Once anything is
    on disk or pending, new records go behind it (:meth:`to_memory` says no), so a peer that
    comes back gets them in the order they came. Delivery takes one frame at a time: when the
    memory queue is empty the shell reads the spool's oldest frame into it
    (:meth:`frame_queued`), and acknowledges the frame once the queue's head has passed its
    last record (:meth:`frame_sent`): a broken connection, a SIGKILL, leaves it on disk, sent
    again later (at least once). The shell tells :attr:`on_disk` (the spool holds frames not
    acknowledged yet); nothing here touches a file.
    """

    def __init__(self) -> None:
        self.pending: list[tuple[bytes, int]] = []  # (item, records), oldest first
        self.pending_bytes = 0
        # The commit mark of the oldest pending item (SendQueue's ``mark``): not on disk yet.
        self.pending_mark = DURABLE
        self.on_disk = False
        # queue.taken at which the frame in the queue is all out (None: no frame in flight)
        self.mark: int | None = None

    @property
    def active(self) -> bool:
        """Records are on disk or on their way there: new ones go behind them."""
        return self.on_disk or bool(self.pending)

    def to_memory(self, queue: SendQueue, size: int, live: bool) -> bool:
        """A new item of ``size`` bytes: True if it goes to the memory queue, False if to the
        spool (it does not fit, or older records are already there)."""
        return not self.active and queue.fits(size, live)

    def add(self, data: bytes, records: int, mark: int = DURABLE) -> bool:
        """An item for the spool; True when ``pending`` should be written now (a frame's worth)."""
        if not self.pending:
            self.pending_mark = mark
        self.pending.append((data, records))
        self.pending_bytes += len(data)
        return self.pending_bytes >= FLUSH_AT

    def take_pending(self) -> list[tuple[bytes, int]]:
        """The items to append as one frame (``pending`` is empty afterwards)."""
        items, self.pending = self.pending, []
        self.pending_bytes = 0
        self.pending_mark = DURABLE
        return items

    def wants_frame(self, queue: SendQueue) -> bool:
        """Read the next frame from disk: there is one, none is in flight, the queue is empty
        (what it holds is older than anything on disk and goes first)."""
        return self.on_disk and self.mark is None and not queue

    def frame_queued(self, queue: SendQueue) -> None:
        """The frame's items were pushed at the end of ``queue``."""
        self.mark = queue.taken + queue.records

    def frame_sent(self, queue: SendQueue) -> bool:
        """True once (then the shell acknowledges the frame): every record of the frame in
        flight has left the queue."""
        if self.mark is None or queue.taken < self.mark:
            return False
        self.mark = None
        return True

    def forget_frame(self) -> None:
        """The frame in flight is given up (stop: the queue goes to the spool's end as it is)."""
        self.mark = None
