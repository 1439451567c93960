"""A sender for network outputs that survives its peer (JSON sockets, SYSLOG, GRAPHITE, IPFIX).

ulogd2 connects once at start (a peer that is down then fails the stack) and afterwards
tries one reconnect per failed record, with a blocking socket. :class:`ReliableSender`
never blocks the event loop and never fails the stack because of the peer:

* Records are queued as *items* (a datagram, a chunk of whole text lines, or one binary
  message) and written with non-blocking ``send`` calls when the plugin flushes (after each
  batch of events) or when the queue holds ``FLUSH_AT`` bytes.
* The queue is bounded (``queue_bytes``). While the peer is down or too slow, items wait
  there; an item that does not fit is dropped and counted (``<prefix>.queue_overflow``,
  and in ``<prefix>.send_failures`` with every other lost record). The first loss of a
  burst is logged as an error, the end of the burst as a notice with the number lost.
  A socket that exists (connected, or connecting) always gets ``SLACK`` bytes even when
  ``queue_bytes`` is 0, so a slow peer or a connect in progress loses nothing small.
* A peer that is down at start or goes away later is reconnected with exponential backoff
  (``backoff_min`` doubling up to ``backoff_max``) by a loop timer, so queued records go
  out without waiting for new traffic; a flush also reconnects when an attempt is due.
* Streams (tcp, unix stream): a partly sent item resumes where it stopped on the same
  connection. If the connection breaks in the middle of an item, a line-based item
  (``lines=True``) is resent from the first line the peer did not get whole, a binary
  item (an IPFIX message) whole, on the next connection: records are never silently cut
  or lost, at worst the old connection ends with a partial record.
* Datagrams (udp, unix dgram): one ``send`` per item. UDP reports a dead peer only on a
  later ``send`` (ECONNREFUSED from an ICMP error): that datagram is counted as lost,
  the current one stays queued, and after the backoff one probe datagram goes first,
  the rest only if no error came back within ``PROBE_WAIT``.

``on_connect`` (optional) returns items that must open every new connection (IPFIX
templates); they bypass the queue limit.

The rules above that depend on time or on what the peer already has (queue bounds, the
back-off, the probe, what to resend) are the pure :class:`~pyulogd.io.sendstate.SendState`;
this module is its I/O shell: the socket, the loop's reader and timer, counters and logs.
Time comes from ``ctx.clock``, so tests move a ``FakeClock`` instead of waiting a back-off.
"""

from __future__ import annotations

import errno
import os
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pyulogd.core.backoff import Backoff
from pyulogd.core.context import TimerHandle
from pyulogd.core.options import Duration, Size
from pyulogd.core.plugin import Option
from pyulogd.io.sendstate import FLUSH_AT, PROBE_WAIT, SLACK, SendQueue, SendState
from pyulogd.io.sink import SinkCounters

if TYPE_CHECKING:
    from pyulogd.core.context import Context

__all__ = ["FLUSH_AT", "PROBE_WAIT", "SLACK", "Endpoint", "ReliableSender", "Target", "resolve", "sender_options",
           "unix_target"]

# (family, type, proto, address) as socket.getaddrinfo gives them.
Target = tuple[int, int, int, Any]

# Largest single send on a stream.
_SEND_MAX = 256 * 1024
_PEER_GONE = frozenset({errno.ECONNREFUSED, errno.ENOENT, errno.ENOTCONN, errno.EDESTADDRREQ, errno.ECONNRESET,
                        errno.EHOSTUNREACH, errno.ENETUNREACH})


def resolve(host: str, port: int, kind: int) -> list[Target]:
    """getaddrinfo for ``kind`` (SOCK_STREAM/SOCK_DGRAM); raises OSError (gaierror)."""
    infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, kind)
    return [(fam, typ, proto, addr) for fam, typ, proto, _cn, addr in infos]


def unix_target(path: str, kind: int) -> list[Target]:
    return [(socket.AF_UNIX, kind, 0, path)]


@dataclass(frozen=True)
class Endpoint:
    """Where a network output sends: ``host`` and ``port``, or the ``path`` of a unix socket."""

    host: str = ""
    port: int = 0
    path: str = ""

    @property
    def peer(self) -> str:
        """As log lines name it: the socket's path, or ``host:port``."""
        return self.path or f"{self.host}:{self.port}"

    def targets(self, kind: int) -> list[Target]:
        """The addresses to try for ``kind`` (SOCK_STREAM/SOCK_DGRAM); raises OSError (a name
        that does not resolve: socket.gaierror)."""
        if self.path:
            return unix_target(self.path, kind)
        return resolve(self.host, self.port, kind)


class ReliableSender:
    """Bounded queue + non-blocking socket + reconnect with backoff. See the module docstring.

    ``jitter`` (a fraction) shortens each back-off wait by a random part of up to that much,
    drawn from ``rand`` (default: a generator of the sender's own); 0 keeps the exact waits.
    """

    def __init__(
        self,
        ctx: Context,
        label: str,
        peer: str,
        targets: list[Target],
        stat_prefix: str,
        *,
        queue_bytes: int = 1 << 20,
        backoff_min: float = 1.0,
        backoff_max: float = 60.0,
        jitter: float = 0.0,
        rand: Callable[[], float] | None = None,
        lines: bool = False,
        on_connect: Callable[[], list[tuple[bytes, int]]] | None = None,
        counters: SinkCounters | None = None,
    ) -> None:
        self.ctx = ctx
        self.label = label
        self.peer = peer
        self.targets = targets
        self.on_connect = on_connect
        backoff = Backoff(backoff_min, max(backoff_min, backoff_max), jitter=jitter, rand=rand)
        self.state = SendState(SendQueue(queue_bytes, lines), backoff,
                               datagram=bool(targets) and targets[0][1] == socket.SOCK_DGRAM)
        self.sock: socket.socket | None = None
        self.connected = False
        self._timer: TimerHandle | None = None
        self._failing = False
        self._lost_in_burst = 0
        self._closed = False
        p = stat_prefix
        self._n_failures = p + ".send_failures"
        self._n_overflow = p + ".queue_overflow"
        self._n_reconnects = p + ".reconnects"
        self._n_sent = p + ".sent"
        # The sink's view of the same events (records written, dropped by cause).
        self.counters = counters if counters is not None else SinkCounters()

    # -- what plugins and tests look at
    @property
    def queue(self) -> deque[list[Any]]:
        """Items waiting, oldest first: ``[data, records]``."""
        return self.state.queue.items

    @property
    def queued(self) -> int:
        """Bytes in the queue."""
        return self.state.queue.bytes

    @property
    def queue_bytes(self) -> int:
        return self.state.queue.queue_bytes

    @property
    def datagram(self) -> bool:
        return self.state.datagram

    @datagram.setter
    def datagram(self, value: bool) -> None:
        self.state.datagram = value

    @property
    def backlog(self) -> int:
        """Records waiting in the queue."""
        return self.state.queue.records

    # -- life cycle
    def open(self) -> None:
        """First connection attempt; a peer that is down only schedules retries."""
        self._closed = False
        if not self._connect():
            what = (f"queueing up to {self.queue_bytes} bytes" if self.queue_bytes
                    else "dropping records until then")
            self.ctx.log.error(f"{self.label}: {self.peer} is not reachable; retrying with backoff, {what}")
            self._failing = not self.queue_bytes
            self._arm_retry()

    def reopen(self) -> None:
        """SIGHUP: a fresh connection (queued records are kept and go to it)."""
        self.flush()
        self._disconnect(requeue=True)
        self.state.restart()
        if not self._connect():
            self._arm_retry()

    def close(self) -> None:
        """Last flush (nothing waits: what cannot go now is counted as lost)."""
        self.flush()
        if self.sock is not None and not self.connected:
            self._ready()
            self.flush()
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        lost = self.state.queue.clear()
        if lost:
            self._lost(lost, "shutting down with the peer unreachable", "unsent_at_exit")
        self._disconnect()

    def disconnect(self) -> None:
        """Close the connection now, keeping the queue (what fits in ``queue_bytes``); the
        usual back-off then reconnects. For tests and operators that want the peer to see the
        connection end (it reads to EOF what was sent)."""
        self._disconnect(requeue=True)

    # -- queueing
    def enqueue(self, data: bytes, records: int = 1) -> bool:
        """Queue one item; False (and counted) if it does not fit."""
        if self.sock is None and not self._closed:
            self.poll()
        q = self.state.queue
        n = len(data)
        live = self.sock is not None  # the bound as it was when the record came
        if not q.fits(n, live) and self.connected:
            self.flush()  # make room if the peer takes it
        if not q.fits(n, live):
            self.ctx.stats.incr(self._n_overflow, records)
            self._lost(records, "queue full" if self.queue_bytes else "not connected", "queue_full")
            return False
        q.push(data, records)
        return True

    def flush(self) -> None:
        if not self.state.queue or self._closed:
            return
        if not self._ready():
            return
        if self.datagram:
            self._send_datagrams()
        else:
            self._send_stream()

    def poll(self) -> bool:
        """Reconnect if an attempt is due, finish a connect in progress; True when connected."""
        if self._closed:
            return False
        return self._ready()

    def _trim(self) -> None:
        dropped = self.state.queue.trim()
        if dropped:
            self.ctx.stats.incr(self._n_overflow, dropped)
            self._lost(dropped, "queue full" if self.queue_bytes else "not connected", "queue_full")

    # -- connection
    def _connect(self) -> bool:
        self.state.attempt(self.ctx.clock.monotonic())
        self._disconnect(requeue=False)
        err_text = "no address"
        for fam, typ, proto, addr in self.targets:
            try:
                sock = socket.socket(fam, typ | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK, proto)
            except OSError as e:
                err_text = e.strerror or str(e)
                continue
            err = sock.connect_ex(addr)
            if err in (0, errno.EINPROGRESS):
                self.sock = sock
                self.connected = err == 0
                if typ == socket.SOCK_STREAM:
                    # Readable: the peer closed (or sent something we ignore).
                    self.ctx.loop.add_reader(sock.fileno(), self._on_readable)
                if self.connected:
                    self._on_established()
                return True
            err_text = os.strerror(err)
            sock.close()
        self._attempt_failed(err_text)
        self._trim()
        return False

    def _on_established(self) -> None:
        if self.state.established():
            self._back_again()
        if self.on_connect is not None:
            self.state.queue.push_front(self.on_connect())

    def _back_again(self) -> None:
        self.ctx.stats.incr(self._n_reconnects)
        self.ctx.log.notice(f"{self.label}: connected to {self.peer} again")

    def _attempt_failed(self, reason: str) -> None:
        first, wait = self.state.attempt_failed()
        # The first failure of a run is an error an operator must see; retries are debug noise.
        log = self.ctx.log.error if first else self.ctx.log.debug
        log(f"{self.label}: connecting to {self.peer} failed ({reason}); next attempt in {wait:g} s")

    def _arm_retry(self) -> None:
        if self._closed or (self._timer is not None and not self._timer.cancelled):
            return
        delay = self.state.retry_in(self.ctx.clock.monotonic(), self.sock is not None)
        self._timer = self.ctx.loop.call_later(delay, self._retry)

    def _retry(self) -> None:
        self._timer = None
        if self._closed:
            return
        if self.sock is None:
            if not self._connect():
                self._arm_retry()
                return
        self.flush()
        if self.sock is None or self.state.queue:
            self._arm_retry()

    def _disconnect(self, requeue: bool = True) -> None:
        """Close the socket; ``requeue``: then keep only what fits in ``queue_bytes``."""
        sock, self.sock = self.sock, None
        self.connected = False
        done = self.state.queue.rewind()
        if done:
            self._sent(done)
        if sock is not None:
            if sock.type == socket.SOCK_STREAM:
                self.ctx.loop.remove_reader(sock.fileno())
            sock.close()
        if requeue:
            self._trim()

    def _on_readable(self) -> None:
        sock = self.sock
        if sock is None:
            return
        try:
            data = sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._broken(e.strerror or str(e))
            return
        if not data:
            self._broken("peer closed the connection")

    def _broken(self, reason: str) -> None:
        self.ctx.log.error(f"{self.label}: connection to {self.peer} lost: {reason}; "
                           + ("queueing records" if self.queue_bytes else "dropping records") + ", reconnecting")
        self._disconnect(requeue=True)
        self.state.broken(self.ctx.clock.monotonic())
        self._arm_retry()

    def _ready(self) -> bool:
        """True when a send may be tried now; reconnects when an attempt is due."""
        sock = self.sock
        if sock is None:
            if not self.state.connect_due(self.ctx.clock.monotonic()) or not self._connect():
                self._arm_retry()
                return False
            sock = self.sock
            assert sock is not None
        if not self.connected:
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self._disconnect()
                self._attempt_failed(errno.errorcode.get(err, str(err)))
                self._arm_retry()
                return False
            try:
                sock.getpeername()
            except OSError:
                self._arm_retry()  # still connecting: look again soon
                return False
            self.connected = True
            self._on_established()
        return self.state.may_send(self.ctx.clock.monotonic())

    # -- sending
    def _send_datagrams(self) -> None:
        sock = self.sock
        assert sock is not None
        state = self.state
        queue = state.queue
        sent = 0
        while queue:
            data, records = queue.items[0]
            try:
                sock.send(data, socket.MSG_NOSIGNAL)
            except (BlockingIOError, InterruptedError):
                self._arm_retry()  # receiver busy: the rest a little later
                break
            except OSError as e:
                if e.errno in _PEER_GONE:
                    self._refused(sock, e)
                    break
                # Not the peer's state (EMSGSIZE, ...): this datagram can never go.
                self._lost(queue.pop(), e.strerror, "send_failed")
                continue
            sent += queue.pop()
            if state.probing:
                hold, back = state.datagram_sent(self.ctx.clock.monotonic())
                if hold is not None:
                    # The probe is out: the rest after the wait if no refusal comes back.
                    self.ctx.loop.call_later(hold, self.flush)
                    break
                if back:
                    self._back_again()
        if sent:
            self._sent(sent)
            self._ok()

    def _refused(self, sock: socket.socket, e: OSError) -> None:
        """An earlier datagram was refused (UDP) or the receiver is gone (unix): count one
        lost (UDP: that earlier datagram), keep the current one, back off, then probe."""
        if e.errno == errno.ECONNREFUSED and sock.family != socket.AF_UNIX:
            self._lost(1, e.strerror, "refused")
        else:
            self._note_failure(e.strerror)
        self.state.refused()
        self._disconnect()
        self._attempt_failed(e.strerror or str(e))
        self._arm_retry()

    def _send_stream(self) -> None:
        sock = self.sock
        assert sock is not None
        queue = self.state.queue
        while queue:
            try:
                n = sock.send(queue.head_view(_SEND_MAX), socket.MSG_NOSIGNAL)
            except (BlockingIOError, InterruptedError):
                self._arm_retry()
                return
            except OSError as e:
                self._broken(e.strerror or str(e))
                return
            records = queue.took(n)
            if records is None:
                self._arm_retry()  # the socket buffer is full: the rest a little later
                return
            self._sent(records)
            self._ok()

    # -- accounting
    def _sent(self, records: int) -> None:
        self.ctx.stats.incr(self._n_sent, records)
        self.counters.written += records

    def _ok(self) -> None:
        if self._failing:
            self._failing = False
            self.ctx.log.notice(
                f"{self.label}: sending to {self.peer} works again ({self._lost_in_burst} records were lost)"
            )
            self._lost_in_burst = 0

    def _note_failure(self, reason: str | None) -> None:
        if not self._failing:
            self._failing = True
            self.ctx.log.error(f"{self.label}: Failure sending message to {self.peer}: {reason}; dropping records")

    def _lost(self, records: int, reason: str | None, cause: str) -> None:
        if records <= 0:
            return
        self.ctx.stats.incr(self._n_failures, records)
        self.counters.drop(cause, records)
        self._lost_in_burst += records
        self._note_failure(reason)


def sender_options(queue_default: int) -> tuple[Option, ...]:
    """The options every output using a ReliableSender takes (pyulogd extras)."""
    return (
        Option("queue", Size(), queue_default, extra=True,
               help="pyulogd extra: bytes of records kept while the peer is down or slow (0: drop them); "
                    "overflow is counted in <output>.<id>.queue_overflow"),
        Option("reconnect_max", Duration(positive=True), 60, extra=True,
               help="pyulogd extra: longest wait in seconds between two connection attempts "
                    "(the wait starts at 1 s and doubles)"),
    )
