"""MARK: keep only the events whose mark matches (ulogd2 ``ulogd_filter_MARK.so``, spec 5.7).

``(ct.mark & mask) == mark`` when ``ct.mark`` is valid, else ``(oob.mark & mask) == mark``
when ``oob.mark`` is valid; a mismatch stops the event for this stack (STOP: silently, the
other stacks still get it); an event with neither key passes. Used to split one NFLOG
group, or the conntrack events, into several stacks by nfmark / ctmark. Both values are
taken as 32-bit numbers, so ``mask=-1`` (what ``ulogd -i`` shows as the default) is
``0xffffffff``. As in 2.0.8 the ``[id]`` section is optional.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pyulogd.core.options import Int
from pyulogd.core.plugin import OK, STOP, DataType, Filter, Key, KeyType, Option

if TYPE_CHECKING:
    from pyulogd.core.context import Context

_U32 = 0xFFFFFFFF


class MarkFilter(Filter):
    name = "MARK"
    so_name = "ulogd_filter_MARK.so"
    description = (
        "Drop the events whose mark does not match: `(ct.mark & mask) == mark` when the event "
        "has a conntrack mark, else `(oob.mark & mask) == mark` when it has a packet mark; an "
        "event with neither passes. The event stops for this stack only."
    )
    input_type = DataType.PACKET | DataType.FLOW
    output_type = DataType.PACKET | DataType.FLOW
    options = (
        Option("mark", Int(), 0, help="the value the masked mark must equal"),
        Option("mask", Int(), -1, help="bits of the mark compared (-1: all 32)"),
    )
    input_keys = (
        Key("ct.mark", KeyType.UINT32, optional=True, help="conntrack mark (NFCT)"),
        Key("oob.mark", KeyType.UINT32, optional=True, help="packet mark (NFLOG)"),
    )

    def __init__(self, ctx: Context, instance_id: str, config: dict[str, Any]) -> None:
        super().__init__(ctx, instance_id, config)
        self.mark = config["mark"] & _U32  # -1 and 0xffffffff alike, as ulogd's u_int32_t
        self.mask = config["mask"] & _U32
        self._stopped = f"mark.{instance_id}.stopped"

    def interp(self, rec: list[Any]) -> int:
        ct_slot, oob_slot = self.in_slots
        value = rec[ct_slot]
        if value is None:
            value = rec[oob_slot]
            if value is None:
                return OK
        if value & self.mask == self.mark:
            return OK
        self.ctx.stats.incr(self._stopped)
        return STOP
