"""IP2HBIN: IPv4 addresses in host byte order (ulogd2 ``ulogd_filter_IP2HBIN.so``, spec 5.5).

For SQL integer columns: an ``IPADDR`` key normally holds the address in network order,
which ulogd2's SQL outputs print as the byte-swapped integer (127.0.0.1 -> 16777343).
IP2HBIN's keys hold ``ntohl()`` of it, so the column gets the conventional number
(127.0.0.1 -> 2130706433). A pyulogd ``IPADDR`` value is the bytes of ulogd's key cell, so
here the value is the host-order 32-bit number as this machine stores it
(``int.to_bytes(4, sys.byteorder)``): every output then renders it as 2.0.8 renders
IP2HBIN's cell.

``oob.family`` decides as in 2.0.8: 2 and 10 are converted, 7 (bridge) needs
``oob.protocol`` (IPv4, ARP or IPv6 inside), any other family is an error for the event
(NOTICE, the stack stops for that event).

Corrections (docs/compat.md): 2.0.8's loop stopped one key short, so
``reply.ip.hdaddr`` was declared but never set; here it is. 2.0.8 put a pointer in the
cell for IPv6 addresses (garbage for every output); here an IPv6 address is kept as its 16
bytes, as ulogd 2.0.9 does.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from pyulogd.core.plugin import ERR, OK, DataType, Filter, Key, KeyType

if TYPE_CHECKING:
    from pyulogd.core.context import Context

_ADDRESS_KEYS = ("ip.saddr", "ip.daddr", "orig.ip.saddr", "orig.ip.daddr", "reply.ip.saddr", "reply.ip.daddr")
_OUTPUT_NAMES = ("ip.hsaddr", "ip.hdaddr", "orig.ip.hsaddr", "orig.ip.hdaddr", "reply.ip.hsaddr", "reply.ip.hdaddr")
AF_INET, AF_INET6, AF_BRIDGE = 2, 10, 7
_BRIDGE_PROTOCOLS = frozenset({0x0800, 0x0806, 0x86DD})
_LITTLE = sys.byteorder == "little"


class Ip2hbinFilter(Filter):
    name = "IP2HBIN"
    so_name = "ulogd_filter_IP2HBIN.so"
    description = (
        "IPv4 addresses in host byte order, for SQL integer columns (127.0.0.1 is stored as "
        "2130706433); IPv6 addresses are passed on as their 16 bytes."
    )
    input_type = DataType.PACKET | DataType.FLOW
    output_type = DataType.PACKET | DataType.FLOW
    input_keys = (
        Key("oob.family", KeyType.UINT8),
        Key("oob.protocol", KeyType.UINT16),
        *(Key(k, KeyType.IPADDR, optional=True) for k in _ADDRESS_KEYS),
    )
    output_keys = tuple(
        Key(out, KeyType.IPADDR, help=f"`{inp}` in host byte order")
        for out, inp in zip(_OUTPUT_NAMES, _ADDRESS_KEYS, strict=True)
    )

    def __init__(self, ctx: Context, instance_id: str, config: dict[str, Any]) -> None:
        super().__init__(ctx, instance_id, config)
        self._pairs: tuple[tuple[int, int], ...] | None = None
        self._bad = f"ip2hbin.{instance_id}.bad_family"

    def _prepare(self) -> tuple[tuple[int, int], ...]:
        self._pairs = tuple((slot, self.out_base + i) for i, slot in enumerate(self.in_slots[2:]) if slot)
        return self._pairs

    def start(self) -> None:
        self._prepare()

    def interp(self, rec: list[Any]) -> int:
        pairs = self._pairs
        if pairs is None:
            pairs = self._prepare()
        family = rec[self.in_slots[0]]
        if family != AF_INET and family != AF_INET6:
            problem = self._check_family(family, rec[self.in_slots[1]])
            if problem:
                return self._refuse(problem)
        for src, dst in pairs:
            addr = rec[src]
            if addr is None:
                continue
            if len(addr) == 4:
                rec[dst] = bytes(reversed(addr)) if _LITTLE else bytes(addr)
            elif len(addr) == 16:
                rec[dst] = bytes(addr)
        return OK

    @staticmethod
    def _check_family(family: Any, protocol: Any) -> str | None:
        if family == AF_BRIDGE:
            if protocol is None:
                return "No protocol inside AF_BRIDGE packet"
            if protocol not in _BRIDGE_PROTOCOLS:
                return "Unknown protocol inside AF_BRIDGE packet"
            return None
        return "Unknown protocol inside packet"

    def _refuse(self, problem: str) -> int:
        stats = self.ctx.stats
        stats.incr(self._bad)
        n = stats.get(self._bad)
        if n == 1 or n % 1000 == 0:
            self.ctx.log.notice(f"IP2HBIN '{self.id}': {problem} ({n} so far)")
        return ERR
