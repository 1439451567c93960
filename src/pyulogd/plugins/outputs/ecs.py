"""ECS: one Elastic Common Schema document (ECS 9.4.0) per record, as JSON lines.

A plugin of its own rather than a mode of JSON: JSON writes ulogd2's objects byte for byte
(its keys, its order, its time format), which every consumer of ulogd's JSON expects; an
ECS document shares nothing of that layout. Filebeat, Elastic Agent, Vector or Fluent Bit
ship the file as is (no ingest pipeline needed); the mapping is in ``audit/ecs.py`` and
docs/audit.md, with the Community ID of every IP flow.

It takes every upstream key (like JSON) and reads those it knows: an NFLOG stack
(``NFLOG,BASE,IFINDEX,ECS``, IP2STR and HWHDR optional: addresses and MACs are formatted
here), an NFCT stack (``NFCT,ECS``), NFACCT, and the verdict, rule, Neutron and NFTRACE keys
when a stack has them. Rendering (``audit/ecs.py``: record -> document, compiled per stack)
is separate from writing (whole-line batches through the file sink, ``io/filesink.py``, of
the output base, ``io/output.py``). The line is made from precomputed text
pieces, as JSON's is, not by encoding a dict: that was twice as slow even with orjson.

``chain_key`` (tamper evidence, ``io/chain.py``): each line carries an HMAC chained to the
line before, ``pyulogd-audit verify --file`` finds lines deleted, changed or reordered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pyulogd.audit.ecs import compile_ecs
from pyulogd.audit.values import now_stamper
from pyulogd.core.loss import A_COUNT
from pyulogd.core.options import Bool, Int, Path, Str
from pyulogd.core.plugin import OK, DataType, Option
from pyulogd.io.chain import chain_options, line_chain
from pyulogd.io.filesink import FileSink
from pyulogd.io.output import Output
from pyulogd.io.sink import BufferedSink

if TYPE_CHECKING:
    from pyulogd.core.context import Context


class EcsOutput(Output[str]):
    name = "ECS"
    description = "Elastic Common Schema (ECS 9.4.0) JSON lines, with the Community ID of each flow"
    reopen_notice = "ECS: reopening logfile"
    audit_default = True  # pyulogd's own format: loss records unless loss_records=0
    input_type = DataType.PACKET | DataType.FLOW | DataType.SUM
    wildcard_inputs = True
    options = (
        Option("file", Path(), "/var/log/ulogd.ecs.json", extra=True, help="file to append to"),
        Option("sync", Bool(), 0, extra=True, help="accepted; lines are written before the daemon waits"),
        Option("dataset", Str(), "", extra=True,
               help="event.dataset (default: pyulogd.nflog, pyulogd.nfct, ... from the stack's input)"),
        Option("community_id_seed", Int(0, 65535), 0, extra=True, help="seed of the Community ID hash"),
        *chain_options(),
    )

    _file: BufferedSink[str]  # the sink, from configure() on

    def __init__(self, ctx: Context, instance_id: str, config: dict[str, Any]) -> None:
        super().__init__(ctx, instance_id, config)
        self._render: Callable[[list[Any], str], str] | None = None
        self._render_audit: Callable[[list[Any], str], str] | None = None
        # The reception time (event.created, or @timestamp when the record has no time of
        # its own): read once per batch of records, the batch the loop received together
        # (reset by flush), not once per record.
        self._now: str | None = None
        self._stamp_now = now_stamper()

    def make_sink(self) -> FileSink[str]:
        chain = line_chain(self.ctx, self.config, "compact", f"ECS '{self.id}'")
        self._file = FileSink(self.ctx, self.config["file"], f"ecs.{self.id}", "ECS", chain=chain)
        return self._file

    def _prepare(self) -> Callable[[list[Any], str], str]:
        slots: dict[str, int] = {}
        for key, slot in zip(self.wildcard_keys, self.in_slots, strict=True):
            if slot:
                slots[key.name] = slot  # every key of a name resolves to its nearest producer
        self._render = self._compile(slots)
        # Loss records: the same document, read with the audit keys (audit.loss.*, core/loss.py).
        akeys, aslots = self.audit_keys()
        self._render_audit = self._compile({k.name: s for k, s in zip(akeys, aslots, strict=True) if s})
        return self._render

    def _compile(self, slots: dict[str, int]) -> Callable[[list[Any], str], str]:
        render = compile_ecs(
            slots,
            self.ctx.hostname,
            dataset=self.config["dataset"],
            # NFACCT stamps its polls itself: oob.time is the kernel's only where sum.* is not
            oob_time_is_kernel="sum.name" not in slots,
            seed=self.config["community_id_seed"],
        )
        return render

    def render_audit(self, rec: list[Any]) -> str | None:
        """A loss record as an ECS document (event.kind pipeline_error, docs/loss.md); ECS has
        no form for a heartbeat (None)."""
        if rec[self.audit_base + A_COUNT] is None or self._render_audit is None:
            return None
        return self._render_audit(rec, self._stamp_now(self.ctx.clock.wall()))

    def prepare(self) -> None:
        self._prepare()

    def render(self, rec: list[Any]) -> str:
        render = self._render or self._prepare()
        now = self._now
        if now is None:
            now = self._now = self._stamp_now(self.ctx.clock.wall())
        return render(rec, now)

    def interp(self, rec: list[Any]) -> int:
        """``render`` and the file sink's buffered ``add`` written out (as LOGEMU and JSON do),
        with this output's flush at the limit: a new batch reads the reception time again."""
        render = self._render or self._prepare()
        now = self._now
        if now is None:
            now = self._now = self._stamp_now(self.ctx.clock.wall())
        line = render(rec, now)
        out = self._file
        out.pending.append(line)
        out.size += len(line)
        if out.size >= out.limit:
            self.flush()
        return OK

    def flush(self) -> None:
        self._now = None
        super().flush()
