"""A sender for network outputs that survives its peer (JSON sockets, SYSLOG, GRAPHITE, IPFIX).

ulogd2 connects once at start (a peer that is down then fails the stack) and afterwards
tries one reconnect per failed record, with a blocking socket. :class:`ReliableSender`
never blocks the event loop and never fails the stack because of the peer:

* Records are queued as *items* (a datagram, a chunk of whole text lines, or one binary
  message) and written with non-blocking ``send`` calls when the plugin flushes (after each
  batch of events) or when the queue holds ``FLUSH_AT`` bytes.
* The memory queue is bounded (``queue_bytes``). While the peer is down or too slow, items
  wait there; with a spool (``spool``: :class:`SpoolSettings`) an item that does not fit
  goes to the on-disk spool (``io/spool.py``) instead, and so does every item after it
  until the spool is empty again (one order: memory, disk, new records), counted in
  ``<prefix>.spooled``. When the peer is back the queue goes first, then the spool's frames
  one at a time, each acknowledged on disk once the socket took its last record (at least
  once: a frame cut by a broken connection or a SIGKILL goes again). Only a full spool
  (``spool_full``) or one that cannot be written (``spool_failed``) drops records; without
  a spool an item that does not fit is dropped (``<prefix>.queue_overflow``). Every lost
  record is counted in ``<prefix>.send_failures`` too; the first loss of a burst is logged
  as an error, the end of the burst as a notice with the number lost. A socket that exists
  (connected, or connecting) always gets ``SLACK`` bytes even when ``queue_bytes`` is 0, so
  a slow peer or a connect in progress loses nothing small.
* A peer that is down at start or goes away later is reconnected with capped exponential
  backoff (``backoff_min`` doubling up to ``backoff_max``, each wait shortened by up to
  ``jitter``) by a loop timer, so queued records go out without waiting for new traffic; a
  flush also reconnects when an attempt is due. The stream outputs cap it at 1 s, so they
  are back within a second of the peer's return. A connect (or TLS handshake) that takes
  more than ``CONNECT_TIMEOUT`` is given up and retried.
* TLS (``tls``: :class:`~pyulogd.io.tls.TlsSettings`): each new stream connection is wrapped
  and handshaken without blocking; records go only once the peer's certificate was checked.
  A failed handshake is a failed attempt (``<prefix>.tls_failures``), the records wait.
* Streams (tcp, unix stream): a partly sent item resumes where it stopped on the same
  connection. If the connection breaks in the middle of an item, a line-based item
  (``lines=True``) is resent from the first line the peer did not get whole, a binary
  item (an IPFIX message) whole, on the next connection: records are never silently cut
  or lost, at worst the old connection ends with a partial record. What the peer's TCP never
  acknowledged when the connection broke (SIOCOUTQ: the records sent after the peer closed
  or died, before the daemon saw it) is put back from the items recently sent and goes again
  too, counted in ``<prefix>.resent``.
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
import fcntl
import os
import socket
import ssl
import struct
import termios
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pyulogd.core import safefile
from pyulogd.core.backoff import Backoff
from pyulogd.core.context import TimerHandle
from pyulogd.core.options import Duration, Path, Size
from pyulogd.core.plugin import Option
from pyulogd.io.sendstate import FLUSH_AT, PROBE_WAIT, SLACK, SendQueue, SendState, Spill
from pyulogd.io.sink import SinkCounters
from pyulogd.io.spool import SPOOL_BASE, Frame, Spool, SpoolError, default_dir
from pyulogd.io.tls import TLS_PROBATION, TLS_RECORD, TlsSettings

if TYPE_CHECKING:
    from pyulogd.core.context import Context

__all__ = ["FLUSH_AT", "PROBE_WAIT", "RECONNECT_FIRST", "RECONNECT_JITTER", "SLACK", "SPOOL_BASE", "Endpoint",
           "ReliableSender", "SpoolSettings", "Target", "resolve", "sender_options", "spool_settings", "unix_target"]

# (family, type, proto, address) as socket.getaddrinfo gives them.
Target = tuple[int, int, int, Any]

# Largest single send on a stream.
_SEND_MAX = 256 * 1024
_PEER_GONE = frozenset({errno.ECONNREFUSED, errno.ENOENT, errno.ENOTCONN, errno.EDESTADDRREQ, errno.ECONNRESET,
                        errno.EHOSTUNREACH, errno.ENETUNREACH})
# The network outputs' reconnect: the first wait, and the jitter that shortens each wait (up
# to half), so that daemons restarted with their peer do not all knock at the same instant.
RECONNECT_FIRST = 0.25
RECONNECT_JITTER = 0.5
# A spool directory that could not be opened is tried again after this long (not per record).
_SPOOL_RETRY = 10.0
# A spool frame holds items of these two columns: the bytes as they go to the peer, and how
# many records they carry (io/recordfmt.py).
_FRAME_NAMES = ("data", "records")
# At stop, what is in memory goes to the spool in frames of about this size.
_EXIT_FRAME = 1 << 20


@dataclass(frozen=True)
class SpoolSettings:
    """Where a network output spills (``path``) and how much (``max_bytes``)."""

    path: str
    max_bytes: int


def spool_settings(ctx: Context, config: dict[str, Any], instance_id: str) -> SpoolSettings | None:
    """The spool of an output that declares :func:`sender_options` (None: ``spool_max=0``);
    by default one directory per daemon and instance (io/spool.py ``default_dir``)."""
    if not config["spool_max"]:
        return None
    return SpoolSettings(config["spool_dir"] or default_dir(ctx.state_name, instance_id), config["spool_max"])


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
    """Bounded queue + spool + non-blocking socket (+ TLS) + reconnect with backoff. See the
    module docstring.

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
        spool: SpoolSettings | None = None,
        tls: TlsSettings | None = None,
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
        # The spool: settings, the open spool (opened at start if it holds records from
        # before, else at the first spill), the order between it and memory, the frame out.
        self.spool_settings = spool
        self.spool: Spool | None = None
        self.spill = Spill()
        self._frame: Frame | None = None
        self._spool_retry_at = float("-inf")
        self.tls = tls
        self._handshaking = False
        self._probation = 0.0  # TLS 1.3 with a client certificate: until the server speaks (0: not)
        self._tls_len = 0  # bytes of a TLS send to retry with the same data (0: none)
        # The write-ahead log's commit mark of new items: the sequence number of the last
        # ``committed(seq)`` (io/wal.py), below which every record was durable then.
        self.mark = 0
        p = stat_prefix
        self._n_failures = p + ".send_failures"
        self._n_overflow = p + ".queue_overflow"
        self._n_reconnects = p + ".reconnects"
        self._n_sent = p + ".sent"
        self._n_spooled = p + ".spooled"
        self._n_resent = p + ".resent"
        self._n_tls = p + ".tls_failures"
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

    def committed(self, seq: int) -> int:
        """The commit cursor after a flush at ``seq`` (``Output.committed``, io/wal.py): ``seq``
        unless records are still in memory only (the queue, or on their way to the spool),
        then the mark of the oldest of them. Records the socket took count as committed (the
        kernel's), and so do records in the spool (including those read back into the queue,
        on disk until their frame is acknowledged) and records dropped (counted). Records that
        come after this call carry ``seq`` as their mark."""
        self.mark = seq
        low = self.state.queue.oldest_mark()
        if self.spill.pending and self.spill.pending_mark < low:
            low = self.spill.pending_mark
        return seq if low > seq else low

    @property
    def spooled_bytes(self) -> int:
        """Bytes waiting on disk (0 without a spool)."""
        return self.spool.bytes if self.spool is not None else 0

    # -- life cycle
    def open(self) -> None:
        """First connection attempt; a peer that is down only schedules retries. A spool
        directory that holds records from before is opened now (they go first); one that
        exists but cannot be used (another daemon holds it) refuses the start (SpoolError)."""
        self._closed = False
        cfg = self.spool_settings
        if cfg is not None and self.ctx.run_as is not None and not self.ctx.checking:
            # With -u the spool is opened later as the user, who may not create directories
            # where root can: made now (still root) for the user, or the start is refused.
            try:
                safefile.make_dir(cfg.path, self.ctx.run_as, 0o700)
            except OSError as e:
                raise SpoolError(f"cannot use spool directory {cfg.path!r}: {e.strerror or e}") from None
        if cfg is not None and _has_segments(cfg.path):
            spool = self._open_spool(at_start=True)
            if spool is not None and not spool.empty:
                self.ctx.log.notice(f"{self.label}: {spool.bytes} bytes of records from before are in "
                                    f"{spool.path}; they go to {self.peer} first")  # fmt: skip
        if not self._connect():
            what = (f"queueing up to {self.queue_bytes} bytes" if self.queue_bytes
                    else "dropping records until then")
            if self.spool_settings is not None:
                what = f"queueing up to {self.queue_bytes} bytes, then spooling to {self.spool_settings.path}"
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
        """Last flush; what cannot go now goes to the spool (sent after the next start), or
        without one is counted as lost."""
        self.flush()
        if self.sock is not None and not self.connected:
            self._ready()
            self.flush()
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._disconnect(requeue=False)  # what the peer has of a cut head is counted sent
        if self.spool_settings is not None:
            self._spool_at_exit()
        lost = self.state.queue.clear()
        if lost:
            self._lost(lost, "shutting down with the peer unreachable", "unsent_at_exit")
        if self.spool is not None:
            self.spool.close()
            self.spool = None

    def disconnect(self) -> None:
        """Close the connection now, keeping the queue (what fits in ``queue_bytes``); the
        usual back-off then reconnects. For tests and operators that want the peer to see the
        connection end (it reads to EOF what was sent)."""
        self._disconnect(requeue=True)

    # -- queueing
    def enqueue(self, data: bytes, records: int = 1, mark: int | None = None) -> bool:
        """Queue one item; False (and counted) if it does not fit. ``mark``: its commit mark
        (see :meth:`committed`) when it is older than the last call's (a batch that waited)."""
        if self.sock is None and not self._closed:
            self.poll()
        q = self.state.queue
        n = len(data)
        live = self.sock is not None  # the bound as it was when the record came
        spill = self.spill
        if mark is None:
            mark = self.mark
        if not spill.on_disk and not spill.pending:  # Spill.to_memory, written out: the usual case
            if q.fits(n, live):
                q.push(data, records, mark)
                return True
            if self.connected:
                self.flush()  # make room if the peer takes it
        if spill.to_memory(q, n, live):
            q.push(data, records, mark)
            return True
        if self.spool_settings is not None:
            if not spill.active:
                self.ctx.log.notice(f"{self.label}: {self.peer} does not take records fast enough (or is away): "
                                    f"spooling to {self.spool_settings.path}")  # fmt: skip
            if spill.add(data, records, mark):
                self._write_pending()
            return True
        self.ctx.stats.incr(self._n_overflow, records)
        self._lost(records, "queue full" if self.queue_bytes else "not connected", "queue_full")
        return False

    def flush(self) -> None:
        if self._closed:
            return
        spill = self.spill
        if spill.pending:
            self._write_pending()
        if not self.state.queue and not spill.on_disk:
            return
        if not self._ready():
            return
        self._send_all()

    def _send_all(self) -> None:
        """Send the queue; each time it is empty, the spool's next frame (in order)."""
        while True:
            if self.state.queue:
                if self.datagram:
                    self._send_datagrams()
                else:
                    self._send_stream()
            if not self._drain_step():
                return

    # -- the spool
    def _open_spool(self, at_start: bool = False) -> Spool | None:
        """The spool, opened (and its directory made) the first time it is needed; None
        while it cannot be used (logged, tried again after ``_SPOOL_RETRY``). At start a
        spool that cannot be used raises SpoolError instead: the daemon does not start."""
        if self.spool is not None:
            return self.spool
        cfg = self.spool_settings
        assert cfg is not None
        now = self.ctx.clock.monotonic()
        if not at_start and now < self._spool_retry_at:
            return None
        spool = Spool(cfg.path, cfg.max_bytes)
        try:
            safefile.make_dir(cfg.path, self.ctx.run_as, 0o700)
            with safefile.as_user(self.ctx.run_as):
                spool.open()
        except (OSError, SpoolError) as e:
            spool.close()
            reason = str(e) if isinstance(e, SpoolError) else f"cannot use spool directory {cfg.path!r}: {e.strerror}"
            if at_start:
                raise SpoolError(reason) from None
            self._spool_retry_at = now + _SPOOL_RETRY
            self.ctx.log.error(f"{self.label}: {reason}; records that do not fit in memory are dropped")
            return None
        self.spool = spool
        self.spill.on_disk = not spool.empty
        return spool

    def _write_pending(self) -> None:
        """Append what waits for the spool as one frame; what cannot be is counted lost."""
        items = self.spill.take_pending()
        if items:
            self._append(items)

    def _append(self, items: list[tuple[bytes, int]]) -> None:
        records = sum(r for _, r in items)
        spool = self._open_spool()
        if spool is None:
            self._lost(records, "the spool cannot be used", "spool_failed")
            return
        try:
            where = spool.append(_FRAME_NAMES, items)
        except OSError as e:
            self._lost(records, f"writing the spool failed: {e.strerror}", "spool_failed")
            return
        if where is None:
            self._lost(records, f"the spool is full ({spool.max_bytes} bytes)", "spool_full")
            return
        self.spill.on_disk = True
        self.counters.spooled += records
        self.ctx.stats.incr(self._n_spooled, records)

    def _drain_step(self) -> bool:
        """Acknowledge the frame in flight once it is out; queue the next one when the queue
        is empty and sending may go on. True when a frame was queued."""
        spool, spill, q = self.spool, self.spill, self.state.queue
        if spool is None:
            return False
        if spill.frame_sent(q) and self._frame is not None:
            spool.ack(self._frame)
            self._frame = None
            if spool.empty:
                self._drained()
        if not self.connected or not spill.wants_frame(q) or not self.state.may_send(self.ctx.clock.monotonic()):
            return False
        try:
            frame = spool.peek()
        except OSError as e:
            self.ctx.log.error(f"{self.label}: reading the spool failed ({e.strerror}); trying again later")
            self._arm_retry()
            return False
        if frame is None:
            self._drained()
            return False
        if tuple(frame.names) != _FRAME_NAMES:
            # Not a network output's frame (spool_dir shared with an SQL output?): skipped.
            self.ctx.log.error(f"{self.label}: {spool.path} holds a frame of another kind of output "
                               f"({len(frame.rows)} records of {', '.join(frame.names)}); skipping it")  # fmt: skip
        for row in frame.rows if tuple(frame.names) == _FRAME_NAMES else ():
            data, records = row if len(row) == 2 else (None, 0)
            if isinstance(data, bytes) and isinstance(records, int) and records >= 0:
                q.push(data, records)
        spill.frame_queued(q)
        self._frame = frame
        return True

    def _drained(self) -> None:
        """The spool is empty: new records go to memory again."""
        if self.spill.on_disk:
            self.spill.on_disk = False
            self.ctx.log.notice(f"{self.label}: every spooled record went to {self.peer}")

    def _spool_at_exit(self) -> None:
        """Stop with records in memory: they go to the spool's end (in frames), sent after
        the next start. The frame in flight is acknowledged: its records are in the queue."""
        spill, q = self.spill, self.state.queue
        # What is left in the queue of the frame in flight was counted as spooled already.
        counted = max(0, spill.mark - q.taken) if spill.mark is not None else 0
        if self._frame is not None and self.spool is not None:
            self.spool.ack(self._frame)
            self._frame = None
        spill.forget_frame()
        items = [(bytes(d), int(r)) for d, r, _m in q.items if r] + spill.take_pending()
        if not items:
            return
        q.clear()
        chunk: list[tuple[bytes, int]] = []
        size = 0
        for item in items:
            chunk.append(item)
            size += len(item[0])
            if size >= _EXIT_FRAME:
                self._append(chunk)
                chunk, size = [], 0
        if chunk:
            self._append(chunk)
        self.counters.spooled -= min(counted, self.counters.spooled)
        if self.spool is not None and not self.spool.empty:
            self.ctx.log.notice(f"{self.label}: {self.spool.bytes} bytes of records for {self.peer} are kept in "
                                f"{self.spool.path} until the next start")  # fmt: skip

    def poll(self) -> bool:
        """Reconnect if an attempt is due, finish a connect in progress; True when connected."""
        if self._closed:
            return False
        return self._ready()

    def _trim(self) -> None:
        if self.spool_settings is not None:
            return  # older than what is on disk: kept, it goes first at the next connection
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
                self.connected = False
                if typ == socket.SOCK_STREAM:
                    # Readable: the peer closed (or sent something we ignore), or TLS goes on.
                    self.ctx.loop.add_reader(sock.fileno(), self._on_readable)
                if err == 0:
                    self._up()
                return True
            err_text = os.strerror(err)
            sock.close()
        self._attempt_failed(err_text)
        self._trim()
        return False

    def _up(self) -> None:
        """The connection is made: TLS begins its handshake, anything else is established."""
        if self.tls is None or self.datagram:
            self.connected = True
            self._on_established()
            return
        sock = self.sock
        assert sock is not None
        try:
            self.sock = self.tls.context.wrap_socket(sock, server_hostname=self.tls.server_name,
                                                     do_handshake_on_connect=False)  # fmt: skip
        except (ssl.SSLError, OSError, ValueError) as e:
            self._tls_failed(str(e))
            return
        self._handshaking = True
        self._handshake()

    def _handshake(self) -> bool:
        """One step of the TLS handshake (non-blocking); True once it is done."""
        sock = self.sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            self._arm_retry()  # the reader wakes it when the peer answers; the timer checks the deadline
            return False
        except ssl.SSLCertVerificationError as e:
            self._tls_failed(f"certificate refused: {e.verify_message or e.reason}")
            return False
        except ssl.SSLError as e:
            self._tls_failed(str(e.reason or e))
            return False
        except OSError as e:
            self._tls_failed(e.strerror or str(e))
            return False
        self._handshaking = False
        assert self.tls is not None
        if self.tls.client_cert and sock.version() == "TLSv1.3":
            self._probation = self.ctx.clock.monotonic() + TLS_PROBATION
            self._arm_retry()
            return False
        self.connected = True
        self._on_established()
        return True

    def _probation_over(self, refused: str | None) -> bool:
        """The server spoke after the handshake (or did not within TLS_PROBATION): True
        when the connection may be used; ``refused``: it refused us (an alert, a close)."""
        self._probation = 0.0
        if refused is not None:
            self._tls_failed(f"the peer refused the client certificate ({refused})")
            return False
        self.connected = True
        self._on_established()
        return True

    def _tls_failed(self, reason: str) -> None:
        """The handshake failed: a failed attempt, counted on its own; the records wait."""
        self.ctx.stats.incr(self._n_tls)
        self._disconnect(requeue=True)
        self._attempt_failed(f"TLS: {reason}")
        self._arm_retry()

    def _unacked(self) -> int:
        """Bytes of the stream its peer has not acknowledged (SIOCOUTQ; with TLS, bytes on the
        wire: at least the plaintext they carry, so what goes again is never too little)."""
        sock = self.sock
        if sock is None or self.datagram:
            return 0
        try:
            out = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
        except OSError:
            return 0
        return int(struct.unpack("i", out)[0])

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
            # A timer set while a connection existed (a poll) may fire before the back-off
            # of the failure that ended it: the back-off decides.
            if not self.state.connect_due(self.ctx.clock.monotonic()) or not self._connect():
                self._arm_retry()
                return
        self.flush()
        if self.sock is None or self.state.queue or self.spill.on_disk:
            self._arm_retry()

    def _disconnect(self, requeue: bool = True) -> None:
        """Close the socket; ``requeue``: then keep only what fits in ``queue_bytes`` (all of
        it with a spool: it is older than what is on disk)."""
        sock, self.sock = self.sock, None
        self.connected = False
        self._handshaking = False
        self._probation = 0.0
        self._tls_len = 0
        done = self.state.queue.rewind()
        if done:
            self._sent(done)
        self.state.queue.forget_history()
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
        if self._handshaking:
            if self._handshake():
                self.flush()
            return
        if self._probation:
            try:
                data = sock.recv(4096)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                data = None  # a post-handshake message (a session ticket): accepted
            except (ssl.SSLError, OSError) as e:
                self._probation_over(str(e.reason if isinstance(e, ssl.SSLError) and e.reason else e))
                return
            if data == b"":
                self._probation_over("it closed the connection")
            elif self._probation_over(None):
                self.flush()
            return
        try:
            data = sock.recv(4096)
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except OSError as e:
            if not self.connected:  # a connect in progress was refused: a failed attempt, not a break
                self._disconnect()
                self._attempt_failed(e.strerror or str(e))
                self._arm_retry()
                return
            self._broken(e.strerror or str(e))
            return
        if not data:
            self._broken("peer closed the connection")

    def _broken(self, reason: str) -> None:
        self.ctx.log.error(f"{self.label}: connection to {self.peer} lost: {reason}; "
                           + ("queueing records" if self.queue_bytes else "dropping records") + ", reconnecting")
        # What the peer never acknowledged goes again (it is still in the socket's send
        # queue: the peer went away, or closed and answers with a reset).
        back = self.state.queue.unsent(self._unacked())
        if back:
            if self.spill.mark is not None:  # (as _sent counted them)
                self.counters.unspooled -= back
            else:
                self.counters.written -= back
            self.ctx.stats.incr(self._n_resent, back)
            self.ctx.log.notice(f"{self.label}: {back} records {self.peer} had not acknowledged go again "
                                "after the reconnect")  # fmt: skip
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
            if sock is None:  # the TLS wrap failed at once
                return False
        if not self.connected:
            if self.state.connect_expired(self.ctx.clock.monotonic()):
                self._disconnect()
                self._attempt_failed("no answer within the connect timeout")
                self._arm_retry()
                return False
            if self._probation:
                if self.ctx.clock.monotonic() < self._probation:
                    self._arm_retry()
                    return False
                if not self._probation_over(None):  # the server said nothing: go on
                    return False
                return self.state.may_send(self.ctx.clock.monotonic())
            if self._handshaking:
                if not self._handshake():
                    return False
                return self.state.may_send(self.ctx.clock.monotonic())
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
            self._up()
            if not self.connected:
                return False
        return self.state.may_send(self.ctx.clock.monotonic())

    # -- sending
    def _send_datagrams(self) -> None:
        sock = self.sock
        assert sock is not None
        state = self.state
        queue = state.queue
        sent = 0
        while queue:
            data = queue.items[0][0]
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
        tls = self.tls is not None
        while queue:
            try:
                if tls:
                    # One TLS record at a time; a send OpenSSL could not finish is retried
                    # with the same bytes.
                    view = queue.head_view(_SEND_MAX)[: self._tls_len or TLS_RECORD]
                    self._tls_len = len(view)
                    n = sock.send(view)
                    self._tls_len = 0
                else:
                    n = sock.send(queue.head_view(_SEND_MAX), socket.MSG_NOSIGNAL)
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
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
        # The sink's counters (io/sink.py): records that come from the spool were counted as
        # spooled when they went there; written from there they are unspooled, not written.
        if self.spill.mark is not None:
            self.counters.unspooled += records
        else:
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


def _has_segments(path: str) -> bool:
    """Whether a spool directory holds records from before (an unreadable one: its open at
    start says why)."""
    try:
        return any(n.endswith(".seg") for n in os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return False  # made at the first spill (and if it cannot be, that spill says why)
    except OSError:
        return True


def sender_options(queue_default: int) -> tuple[Option, ...]:
    """The options every output using a ReliableSender takes (pyulogd extras)."""
    return (
        Option("queue", Size(), queue_default, extra=True,
               help="pyulogd extra: bytes of records kept in memory while the peer is down or slow; beyond "
                    "them records go to the spool (without one, they are dropped and counted in "
                    "<output>.<id>.queue_overflow)"),
        Option("reconnect_max", Duration(positive=True), 1, extra=True,
               help="pyulogd extra: longest wait in seconds between two connection attempts (the wait starts "
                    "at 0.25 s and doubles, each shortened by a random part of up to a half): the output is "
                    "back within this long of the peer's return"),
        Option("spool_dir", Path(), "", extra=True,
               help="pyulogd extra: where records wait on disk while the peer is away (empty: "
                    f"{SPOOL_BASE}/<daemon>/<id>, <daemon> the config file's name; created at the first spill)"),
        Option("spool_max", Size(), "1G", extra=True,
               help="pyulogd extra: bytes of the spool; records beyond it are dropped and counted (spool_full); "
                    "0: no spool"),
    )
