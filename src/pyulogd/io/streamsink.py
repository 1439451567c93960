"""Lines to a tcp or unix stream (JSON, GRAPHITE, SYSLOG over tcp, IPFIX over tcp), through
the reliable sender (``io/sender.py``). A :class:`~pyulogd.io.sink.LineSink`.

What every network sink shares is :class:`SenderSink`: the sender (bounded memory queue,
then the on-disk spool while the peer is down or slow, reconnect within ``backoff_max``
with jittered back-off, TLS, counters), and one of two ways to hand it lines:

* ``batch=True`` (JSON): lines wait in ``pending`` and go to the queue at ``flush`` (after
  each round of the loop, or once ``FLUSH_AT`` bytes wait; with ``sync`` at once), a stream
  batch as one item, a datagram batch one item per line. While a connection is being made
  the batch stays here (up to the sender's slack), so nothing is dropped for a connect that
  takes a few milliseconds.
* ``batch=False`` (GRAPHITE, SYSLOG, IPFIX): each line is queued as it comes, so the queue
  bound applies record by record (what does not fit is counted at once), and the queue is
  sent once it holds ``FLUSH_AT`` bytes, else at ``flush``.

Commit cursor (the write-ahead log's, io/wal.py): :meth:`SenderSink.committed` holds it at
the oldest record still only in memory (a batch waiting for a connection here, the sender's
queue, items on their way to the spool); what the socket took or the spool holds counts as
committed, so a SIGKILL while the peer is away loses nothing the log cannot replay.

Streams: ``lines=True`` (text lines) lets a connection that breaks in the middle of a batch
resend from the first line the peer did not get whole; binary lines (SYSLOG's octet-counted
frames, IPFIX messages) are resent whole.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, Generic, TypeVar

from pyulogd.core.errors import ConfigError, PluginError
from pyulogd.io.sender import (
    FLUSH_AT,
    RECONNECT_FIRST,
    RECONNECT_JITTER,
    SLACK,
    Endpoint,
    ReliableSender,
    SpoolSettings,
)
from pyulogd.io.sink import SinkCounters
from pyulogd.io.spool import SpoolError
from pyulogd.io.tls import TlsSettings

if TYPE_CHECKING:
    from pyulogd.core.context import Context

LineT = TypeVar("LineT", str, bytes)

RESOLVE_FAILED = "{label}: cannot resolve {peer}: {reason}"


class SenderSink(Generic[LineT]):
    """Lines to a peer through a :class:`~pyulogd.io.sender.ReliableSender` (see the module
    docstring). ``sender`` is public: its queue and socket are what tests and operators look
    at (``sender.backlog``, ``sender.queue``, ``sender.sock``)."""

    # socket.SOCK_STREAM or socket.SOCK_DGRAM
    kind: ClassVar[int]

    def __init__(
        self,
        ctx: Context,
        label: str,
        endpoint: Endpoint,
        stat_prefix: str,
        *,
        queue_bytes: int,
        backoff_max: float,
        batch: bool = True,
        sync: bool = False,
        lines: bool = True,
        on_connect: Callable[[], list[tuple[bytes, int]]] | None = None,
        resolve_failed: str = RESOLVE_FAILED,
        spool: SpoolSettings | None = None,
        tls: TlsSettings | None = None,
    ) -> None:
        self.ctx = ctx
        self.label = label
        self.endpoint = endpoint
        self.batch = batch
        self.counters = SinkCounters()
        self.sender = ReliableSender(
            ctx, label, endpoint.peer, [], stat_prefix,
            queue_bytes=queue_bytes, backoff_min=min(RECONNECT_FIRST, backoff_max), backoff_max=backoff_max,
            jitter=RECONNECT_JITTER, lines=lines, on_connect=on_connect, counters=self.counters, spool=spool,
            tls=tls,
        )  # fmt: skip
        self.pending: list[LineT] = []
        self.size = 0
        self.limit = 0 if sync else FLUSH_AT
        self._resolve_failed = resolve_failed
        # The commit mark of the lines in ``pending`` when they were already there at the last
        # ``committed`` (None: they all came after it, so the sender's mark is theirs).
        self._pending_mark: int | None = None

    @property
    def sock(self) -> socket.socket | None:
        return self.sender.sock

    # -- life cycle
    def open(self) -> None:
        """Resolve the peer (a name that does not resolve stops the start) and make the first
        connection attempt (a peer that is down only schedules retries)."""
        sender = self.sender
        try:
            sender.targets = self.endpoint.targets(self.kind)
        except OSError as e:
            raise PluginError(self._resolve_failed.format(label=self.label, peer=sender.peer,
                                                          reason=e.strerror)) from e  # fmt: skip
        sender.datagram = self.kind == socket.SOCK_DGRAM
        try:
            sender.open()
        except SpoolError as e:
            raise PluginError(f"{self.label}: {e}") from None

    def reopen(self) -> None:
        """SIGHUP: what waits is queued, then a fresh connection (the queue goes to it), with
        the TLS files read again (certificate rotation; on failure the old ones stay)."""
        self.flush()
        tls = self.sender.tls
        if tls is not None:
            try:
                self.sender.tls = tls.reload()
            except ConfigError as e:
                self.ctx.log.error(f"{self.label}: cannot read the TLS files again ({e.reason}); "
                                   "keeping the ones in use")  # fmt: skip
        self.sender.reopen()

    def close(self) -> None:
        self.flush()
        if self.pending:  # still connecting at exit: whatever is queued now gets its chance
            for line in self.pending:
                self._enqueue(line, 1, self._pending_mark)
            self.pending.clear()
            self._pending_mark = None
            self.size = 0
        self.sender.close()

    # -- lines
    def add(self, line: LineT, records: int = 1, mark: int | None = None) -> None:
        """One line (``records``: how many records it carries, an IPFIX message several;
        ``mark``: their commit mark when the output held them since before the last
        ``committed``, IPFIX's message; unbatched sinks only)."""
        if self.batch:
            self.pending.append(line)
            self.size += len(line)
            if self.size >= self.limit:
                self.flush()
            return
        self.counters.received += records
        sender = self.sender
        self._enqueue(line, records, mark)
        if sender.queued >= FLUSH_AT:
            sender.flush()

    def _enqueue(self, line: LineT, records: int, mark: int | None = None) -> None:
        data = line if isinstance(line, bytes) else line.encode("utf-8", "surrogateescape")
        self.sender.enqueue(data, records, mark)

    def committed(self, seq: int) -> int:
        """The commit cursor after a flush at ``seq`` (``Output.committed``): the sender's
        (:meth:`~pyulogd.io.sender.ReliableSender.committed`), held back further by a batch
        still waiting here for a connection to finish."""
        if not self.pending:
            self._pending_mark = None
            return self.sender.committed(seq)
        if self._pending_mark is None:
            self._pending_mark = self.sender.mark  # they came after the last call
        return min(self._pending_mark, self.sender.committed(seq))

    def flush(self) -> None:
        sender = self.sender
        pending = self.pending
        if pending:
            if not sender.poll() and sender.sock is not None and self.size < SLACK:
                return  # connecting: the batch goes once the connection is up
            self.counters.received += len(pending)
            self._hand_over(pending, self._pending_mark)
            self._pending_mark = None
            pending.clear()
            self.size = 0
        sender.flush()

    def _hand_over(self, pending: list[LineT], mark: int | None) -> None:
        """Queue a batch: one item per line (datagrams), or the whole batch as one (streams);
        ``mark``: the batch's commit mark when older than the sender's (None: the sender's)."""
        raise NotImplementedError


class StreamSink(SenderSink[LineT]):
    """A tcp or unix stream; a batch of lines is one queue item (one ``send``)."""

    kind = socket.SOCK_STREAM

    def _hand_over(self, pending: list[LineT], mark: int | None) -> None:
        first = pending[0]
        if isinstance(first, bytes):
            data = b"".join(pending)
        else:
            data = "".join(pending).encode("utf-8", "surrogateescape")
        self.sender.enqueue(data, len(pending), mark)
