"""The base of every output: an output supplies its options, its render function and the sink
its lines go to; this class owns the rest (start, the hot path, flush, SIGHUP, stop).

An output declares (as every plugin) ``name``, ``options`` and ``input_keys``, and supplies

* ``make_sink()``: where its lines go (``io/filesink.py``, ``io/streamsink.py``,
  ``io/dgramsink.py``), called at ``configure()`` with the typed options;
* ``render(rec)``: the line of one record, or None for a record it does not write;
* ``prepare()`` (optional): at start, before the sink opens, read ``in_slots`` and build what
  ``render`` needs; an output that generates its renderer assigns it to ``self.renderer``.

The base then runs the life cycle the same way for every output: ``start`` prepares, opens
the sink and binds ``sink.add`` once; ``interp`` is ``add(render(rec))``, two calls and no
attribute lookups on the hot path; ``flush`` (after each loop round) and ``stop`` go to the
sink; SIGHUP logs the output's ``reopen_notice`` (ulogd2's "reopening logfile" lines) and
calls ``reopen()``, which reopens the sink. Losses are counted by the sink, by cause
(``counters``).

Here rather than in ``core/`` because it knows the sinks of ``io/`` (core imports nothing
above it), and rather than among the plugins because the SQL outputs' base (``db/``) derives
from it too.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pyulogd.core.errors import PluginError
from pyulogd.core.loss import AUDIT_KEYS
from pyulogd.core.plugin import OK, Key, Sink
from pyulogd.io.sink import LineSink, SinkCounters

if TYPE_CHECKING:
    from pyulogd.core.context import Context

LineT = TypeVar("LineT")


class Output(Sink, Generic[LineT]):
    """An output plugin writing one line per record to a :class:`~pyulogd.io.sink.LineSink`."""

    # Logged at notice level on SIGHUP before the sink reopens ("" for none), as ulogd2 does:
    # "syslogemu: reopening logfile".
    reopen_notice = ""

    def __init__(self, ctx: Context, instance_id: str, config: dict[str, Any]) -> None:
        super().__init__(ctx, instance_id, config)
        # The sink, from configure() on; public: tests, fused stacks (its bound ``add``).
        self.out: LineSink[LineT] | None = None
        # The render function interp calls: ``render`` unless prepare() generated one.
        self.renderer: Callable[[list[Any]], LineT | None] = self.render
        self._add: Callable[[LineT], None] = self._not_started
        # The sink's own commit cursor (see ``committed``), looked up once per attach.
        self._sink_committed: Callable[[int], int] | None = None
        self._flushed = 0  # ctx.seq at the last flush (commit_mark's default)

    # -- what an output supplies
    def make_sink(self) -> LineSink[LineT]:
        """Where this output's lines go (called by ``configure``)."""
        raise NotImplementedError

    def render(self, rec: list[Any]) -> LineT | None:
        """The line of one record; None: nothing to write for it."""
        raise NotImplementedError

    def prepare(self) -> None:
        """At start, before the sink opens: read ``in_slots``, build what ``render`` needs."""

    # -- what the base does
    def configure(self) -> None:
        self.out = self.make_sink()

    def start(self) -> None:
        out = self.out
        if out is None:
            raise PluginError(f"{self.name} instance '{self.id}' was not configured")
        self.prepare()
        out.open()
        self.attach(out)

    def attach(self, out: LineSink[LineT]) -> None:
        """Use ``out`` from now on (at start; XML's new file on SIGHUP)."""
        self.out = out
        self._add = out.add
        self._sink_committed = getattr(out, "committed", None)

    def interp(self, rec: list[Any]) -> int:
        line = self.renderer(rec)
        if line is not None:
            self._add(line)
        return OK

    def flush(self) -> None:
        if self.out is not None:
            self.out.flush()
        self._flushed = self.ctx.seq

    # -- commits. Two questions, two answers: ``committed`` (below) is "durable here", the
    # write-ahead log's cursor, for which an output's own spool counts; ``commit_mark`` is
    # "at the destination", for an input that acknowledges its own source (NATSIN), for which
    # a spool does not count (a collector's spool is not a commit).
    def track_commits(self) -> None:
        """An input that acknowledges its own source only once records are committed (NATSIN)
        asks for :meth:`commit_mark` from now on; an output that must track more per record
        to answer (the SQL outputs: each row's sequence number) starts here. Called at start,
        before any record."""

    def commit_mark(self) -> int:
        """The highest sequence number (``ctx.seq``) such that every record of this output
        numbered up to it is at its destination for good, or dropped and counted. A record
        an output writes nowhere (filtered, nothing to render) counts as delivered.

        The default is what the last ``flush`` handed on, which is a delivery for the outputs
        that write at flush (files: written, or the loss counted). Outputs that hand records
        to a thread or a peer override it (the SQL outputs: the transaction with the row
        committed; NATS: JetStream acknowledged it)."""
        return self._flushed

    def stop(self) -> None:
        if self.out is not None:
            self.out.close()

    def signal(self, signum: int) -> None:
        if signum != signal.SIGHUP or self.out is None:
            return
        if self.reopen_notice:
            self.ctx.log.notice(self.reopen_notice)
        self.reopen()

    def reopen(self) -> None:
        """SIGHUP, after the notice: the sink reopens (an output with more to do extends it)."""
        if self.out is not None:
            self.out.reopen()

    def committed(self, seq: int) -> int:
        """The commit cursor after a flush at sequence ``seq`` (the write-ahead log's, io/wal.py):
        the highest sequence number below which every record meant for this output is durable.

        The one place that says what an output's commit is. By default what ``flush`` handed
        on is committed: a file sink's ``write()`` (what it could not write is counted as
        dropped). A sink that holds records after its flush has a ``committed(seq)`` of its
        own, used instead: the SQL writer (committed or in its spool), the network sinks
        (io/streamsink.py: taken by the socket or in the spool, not in the sender's memory).
        """
        own = self._sink_committed
        return seq if own is None else own(seq)

    @property
    def counters(self) -> SinkCounters:
        """What the sink did with this output's records (received, written, dropped by cause)."""
        return self.out.counters if self.out is not None else SinkCounters()

    # -- audit records (loss records, heartbeats: core/loss.py)
    def render_audit(self, rec: list[Any]) -> LineT | None:
        """The line of an audit record in this output's format; None (the default): the
        format has no place for one (ulogd's SQL tables, PCAP, NACCT, ...), so the loss is in
        the counters and the log only. Outputs that read the audit keys as input keys (ECS,
        AUDITDB) return ``self.renderer(rec)``; wildcard outputs render :meth:`audit_keys`."""
        return None

    def audit(self, rec: list[Any]) -> bool:
        line = self.render_audit(rec)
        if line is None:
            return False
        self._add(line)
        return True

    def audit_keys(self) -> tuple[list[Key], list[int]]:
        """Keys and slots of an audit record for an output that takes every upstream key: the
        upstream keys (the input's namespace keys are set in audit records) and the audit keys."""
        keys = list(self.wildcard_keys) + list(AUDIT_KEYS)
        slots = list(self.in_slots) + [self.audit_base + i for i in range(len(AUDIT_KEYS))]
        return keys, slots

    def received(self) -> int:
        return self.out.counters.received if self.out is not None else 0

    def drops(self) -> dict[str, int]:
        return self.out.counters.dropped if self.out is not None else {}

    def loss_reported(self) -> dict[str, int]:
        # kept with the counters, which the write-ahead log persists (io/wal.py)
        return self.out.counters.loss_reported if self.out is not None else super().loss_reported()

    def _not_started(self, line: LineT) -> None:
        raise PluginError(f"{self.name} instance '{self.id}' was not started")
