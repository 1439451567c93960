"""Loss records and heartbeats: what the daemon lost, written into the trail itself (issue 12).

Counting a loss is not enough for an audit trail: whoever reads the file, the table or the
peer's copy later must see there that records are missing, how many, from when to when and
why, as cloud flow logs mark skipped data (AWS VPC flow logs' ``log-status SKIPDATA``). So a
loss becomes a record of its own, an **audit record**, delivered to the outputs of the stacks
it affected, through their sink like any record (counted as received, written, dropped).

One engine, no plugin knows another:

* whoever counts a loss reports it once, to :class:`LossLedger` (``ctx.losses.report``): an
  input for what the kernel dropped (ENOBUFS, a gap in NFLOG's sequence numbers), a stack for
  a record a plugin failed on (:meth:`~pyulogd.core.stack.Stack.on_exception`); what an
  output's sink drops (a full disk, a full spool or queue, a peer that refused) is counted by
  the sink already (``SinkCounters.dropped``) and read from there
  (:meth:`~pyulogd.core.plugin.Sink.drops`), so no sink has to learn a second way;
* :class:`AuditTrail`, on a one-second timer of the loop's clock, turns what was reported into
  one record per affected stack and origin (losses of one second are one record, a flood of
  ENOBUFS is not a flood of loss records), and hands it to the stack's output
  (:meth:`~pyulogd.core.plugin.Sink.audit`), which renders it in its own format. An output's
  own losses are written into that output once it drops no more (a record written while
  the disk is still full would be lost too); a loss record that is lost itself is counted and
  reported in the next one;
* every ``heartbeat`` seconds (``[global] heartbeat=``, off by default) each output gets a
  heartbeat record: the daemon was alive and logging, with how many records the output took
  since the previous one.

Audit records skip the stack's filters (they are about packets, and a rate limit must never
hold back a loss record) and go straight to the output; they carry the input's namespace
keys (``oob.netns``, ...) where the loss happened in one. Their keys (:data:`AUDIT_KEYS`)
occupy the last slots of every stack's layout (``Stack.audit_base``), so an output that names
them as input keys (ECS, AUDITDB) reads them as any other key, and an output that takes every
upstream key (JSON, GPRINT, OPRINT, XML) does not see them in its ordinary records, whose
bytes stay ulogd2's. Which outputs take them: ``[global] loss_records=auto`` (the default)
gives them to pyulogd's own formats only (:attr:`~pyulogd.core.plugin.Sink.audit_default`),
``1`` to every output that has a form for them, ``0`` to none (counters and log only).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pyulogd.core.escape import escape_text
from pyulogd.core.keys import Key, KeyType

if TYPE_CHECKING:
    from pyulogd.core.context import Context, TimerHandle
    from pyulogd.core.plugin import Sink, Source
    from pyulogd.core.stack import Stack

# The keys of audit records, in slot order after a stack's plugins' slots.
AUDIT_KEYS: tuple[Key, ...] = (
    Key("audit.status", KeyType.STRING, help="SKIPDATA (records were lost: a loss record) or HEARTBEAT "
        "(audit records only)"),
    Key("audit.loss.count", KeyType.UINT64, help="records lost (a lower bound where audit.loss.reason says so)"),
    Key("audit.loss.reason", KeyType.STRING, help="why: causes separated by ';': enobufs, seq_gap, "
        "plugin_error, or the output's drop cause (write_failed, spool_full, queue_full, ...)"),
    Key("audit.loss.first", KeyType.STRING, help="when the first of them was lost (ISO 8601, UTC)"),
    Key("audit.loss.last", KeyType.STRING, help="when the last of them was lost (ISO 8601, UTC)"),
    Key("audit.loss.source", KeyType.STRING, help="where: the input, stack or output that lost them"),
    Key("audit.heartbeat.records", KeyType.UINT64, help="records this output took since the previous "
        "heartbeat (heartbeat records only)"),
    Key("audit.heartbeat.since", KeyType.STRING, help="time of the previous heartbeat, or of the start "
        "(ISO 8601, UTC)"),
)
AUDIT_INDEX: dict[str, int] = {k.name: i for i, k in enumerate(AUDIT_KEYS)}
A_STATUS, A_COUNT, A_REASON, A_FIRST, A_LAST, A_SOURCE, A_HB_RECORDS, A_HB_SINCE = range(len(AUDIT_KEYS))

SKIPDATA = "SKIPDATA"
HEARTBEAT = "HEARTBEAT"
# Causes whose count is the number of times it happened, not of records: the kernel does not
# say how many records an overrun cost, so a record with it counts a lower bound (docs/loss.md).
LOWER_BOUND = frozenset({"enobufs"})
# loss_records= values.
LOSS_MODES = ("auto", "1", "0")


def iso_time(t: float) -> str:
    """``t`` (seconds since the epoch) as ISO 8601 in UTC with microseconds (RATELIMIT's form)."""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass
class Loss:
    """Losses of one origin not yet written into the trail."""

    origin: object
    count: int = 0
    causes: dict[str, int] = field(default_factory=dict)
    first: float = 0.0
    last: float = 0.0

    def add(self, count: int, cause: str, now: float) -> None:
        if not self.count:
            self.first = now
        self.count += count
        self.causes[cause] = self.causes.get(cause, 0) + count
        self.last = now

    def reason(self) -> str:
        """The causes, separated by ``;`` (not ``,``: GPRINT separates its fields with it);
        ``enobufs`` counts overruns, a lower bound (docs/loss.md)."""
        return ";".join(sorted(self.causes))


class LossLedger:
    """Losses reported since the trail last wrote them, by origin (an input instance, a
    stack). ``report`` is all a plugin calls; the daemon's :class:`AuditTrail` takes them."""

    def __init__(self) -> None:
        self.pending: dict[int, Loss] = {}

    def report(self, origin: object, count: int, cause: str, now: float) -> None:
        """``count`` records lost at ``now`` by ``origin`` (a Source or a Stack) for ``cause``."""
        if count <= 0:
            return
        loss = self.pending.get(id(origin))
        if loss is None:
            loss = self.pending[id(origin)] = Loss(origin)
        loss.add(count, cause, now)

    def take(self) -> list[Loss]:
        out = list(self.pending.values())
        self.pending.clear()
        return out


def describe(origin: object) -> str:
    """``audit.loss.source`` of an origin: ``NFLOG 'log1'``, ``NFLOG 'log1' in namespace X``,
    ``stack 'log1:NFLOG,...'``, ``output JSON 'json1'``."""
    spec = getattr(origin, "spec", None)
    if isinstance(spec, str):
        return f"stack '{escape_text(spec)}'"
    name = getattr(origin, "name", "?")
    text = f"{name} '{escape_text(str(getattr(origin, 'id', '?')))}'"
    ns = getattr(origin, "netns_name", None)
    if isinstance(ns, str) and ns:
        text += f" in namespace {escape_text(ns)}"
    return text


class _OutputWatch:
    """What the trail knows of one output: the drops it reported, those not yet written."""

    __slots__ = ("sink", "stack", "reported", "seen", "pending", "received", "since")

    def __init__(self, sink: Sink, stack: Stack, now: float) -> None:
        self.sink = sink
        self.stack = stack
        # What loss records took of the sink's drops (kept by the sink: a restart with counters
        # restored by the write-ahead log reports what the killed daemon had not yet written).
        self.reported = sink.loss_reported()
        self.seen = dict(self.reported)  # the drops as the last tick saw them
        self.pending: Loss | None = None
        self.received = sink.received()
        self.since = now


class AuditTrail:
    """Writes loss records (and heartbeats) into the outputs, on the loop's clock.

    ``mode``: ``[global] loss_records`` (auto, 1, 0); ``heartbeat``: seconds, 0 for none;
    ``interval``: how often reported losses are written (1 s).
    """

    def __init__(self, ctx: Context, stacks: list[Stack], *, mode: str = "auto", heartbeat: float = 0.0,
                 interval: float = 1.0) -> None:  # fmt: skip
        self.ctx = ctx
        self.stacks = stacks
        self.mode = mode
        self.heartbeat = heartbeat
        self.interval = interval
        self._timer: TimerHandle | None = None
        self._hb_timer: TimerHandle | None = None
        self._outputs: list[_OutputWatch] = []
        self.records = 0  # audit records outputs took
        self._sent: dict[int, int] = {}  # the same per output (id of the sink), since its last heartbeat
        self._taken: dict[int, int] = {}  # the same per output, in all
        for stack in stacks:
            sink = stack.sink
            sink.audit_records = mode == "1" or (mode == "auto" and sink.audit_default)

    def start(self) -> None:
        """After every instance started: the timers, and the outputs' counters as they are."""
        now = self.ctx.clock.wall()
        seen: set[int] = set()
        for stack in self.stacks:
            if id(stack.sink) not in seen:
                seen.add(id(stack.sink))
                self._outputs.append(_OutputWatch(stack.sink, stack, now))
        loop = self.ctx.loop
        if self.mode != "0":
            self._timer = loop.call_later(self.interval, self.tick, repeat=True)
        if self.heartbeat > 0:
            self._hb_timer = loop.call_later(self.heartbeat, self.beat, repeat=True)

    def stop(self) -> None:
        """At stop, after the inputs stopped and before the outputs do: what is left is written
        (an output still dropping gets its loss record anyway: the last chance)."""
        for timer in (self._timer, self._hb_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._hb_timer = None
        if self.mode != "0":
            self.tick(final=True)

    # -- losses
    def tick(self, final: bool = False) -> None:
        """Write what was reported since the last tick, and the outputs' own losses."""
        now = self.ctx.clock.wall()
        for loss in self.ctx.losses.take():
            origin = loss.origin
            stacks: list[Any] = [origin] if hasattr(origin, "spec") else list(getattr(origin, "stacks", ()))
            for stack in stacks:
                self._deliver(stack, self._loss_record(stack, origin, loss))
        for watch in self._outputs:
            drops = watch.sink.drops()
            new = {c: n - watch.seen.get(c, 0) for c, n in drops.items() if n > watch.seen.get(c, 0)}
            if new:
                watch.seen = dict(drops)
                if watch.pending is None:
                    watch.pending = Loss(watch.sink)
                for cause, n in new.items():
                    watch.pending.add(n, cause, now)
                if not final:
                    continue  # still dropping: wait for a round without new drops
            pend2 = watch.pending
            if pend2 is not None:
                watch.pending = None
                watch.reported.update(watch.seen)  # in a loss record from now on
                self._deliver(watch.stack, self._loss_record(watch.stack, watch.sink, pend2))

    def _loss_record(self, stack: Stack, origin: object, loss: Loss) -> list[Any]:
        rec = self._blank(stack, origin)
        base = stack.audit_base
        rec[base + A_STATUS] = SKIPDATA
        rec[base + A_COUNT] = loss.count
        rec[base + A_REASON] = loss.reason()
        rec[base + A_FIRST] = iso_time(loss.first)
        rec[base + A_LAST] = iso_time(loss.last)
        rec[base + A_SOURCE] = f"output {describe(origin)}" if origin is stack.sink else describe(origin)
        return rec

    def _blank(self, stack: Stack, origin: object) -> list[Any]:
        """A record of ``stack``'s layout, the input's namespace keys set where ``origin`` (an
        input working in a namespace) has them."""
        rec: list[Any] = [None] * stack.nslots
        src: Source = stack.source
        tails = getattr(origin, "tails", None)
        stacks = getattr(origin, "stacks", None)
        n = src.trailer_keys
        if n and tails is not None and stacks is not None:
            for s, tail in zip(stacks, tails, strict=False):
                if s is stack:
                    head = stack.nslots - len(stack.tail)
                    rec[head:head + n] = tail[:n]
                    break
        return rec

    def _deliver(self, stack: Stack, rec: list[Any], force: bool = False) -> None:
        """Hand ``rec`` to the stack's output if it takes audit records (``force``: a heartbeat,
        which every output with a form for it takes once ``heartbeat=`` is set)."""
        sink = stack.sink
        if not (sink.audit_records or force):
            return
        self.ctx.seq += 1
        try:
            if sink.audit(rec):
                self.records += 1
                self._sent[id(sink)] = self._sent.get(id(sink), 0) + 1
                self._taken[id(sink)] = self._taken.get(id(sink), 0) + 1
                self.ctx.stats.incr("audit.records")
        except Exception as e:  # an output's bug must not stop the others' audit records
            self.ctx.stats.incr("audit.errors")
            self.ctx.log.error(f"{sink.name} '{sink.id}': writing an audit record failed: "
                               f"{type(e).__name__}: {e}")

    def taken(self, sink: Sink) -> int:
        """Audit records ``sink`` took (they are in its received count, with the records)."""
        return self._taken.get(id(sink), 0)

    # -- heartbeat
    def beat(self) -> None:
        """A heartbeat record to every output with a form for it: the daemon was alive and
        logging, and this output took ``audit.heartbeat.records`` records since the last one."""
        now = self.ctx.clock.wall()
        for watch in self._outputs:
            sink = watch.sink
            received = sink.received()
            sent = self._sent.pop(id(sink), 0)  # audit records are not the news
            rec = self._blank(watch.stack, None)
            base = watch.stack.audit_base
            rec[base + A_STATUS] = HEARTBEAT
            rec[base + A_HB_RECORDS] = max(0, received - watch.received - sent)
            rec[base + A_HB_SINCE] = iso_time(watch.since)
            watch.received = received
            watch.since = now
            self._deliver(watch.stack, rec, force=True)


def audit_text(rec: list[Any], base: int) -> str:
    """The key=value text of an audit record, for the line formats (LOGEMU, SYSLOG): every
    value escaped (core/escape.py), keys in :data:`AUDIT_KEYS` order, invalid ones left out."""
    parts = []
    for i, key in enumerate(AUDIT_KEYS):
        v = rec[base + i]
        if v is None:
            continue
        parts.append(key.name + "=" + escape_text(str(v)).replace(" ", "\\x20"))
    return " ".join(parts)


def audit_value_getter(base: int) -> Callable[[list[Any]], dict[str, Any]]:
    """``rec -> {name: value}`` of the valid audit keys (for outputs that build objects)."""

    def get(rec: list[Any]) -> dict[str, Any]:
        return {k.name: rec[base + i] for i, k in enumerate(AUDIT_KEYS) if rec[base + i] is not None}

    return get
