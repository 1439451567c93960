"""IP2STR: addresses to text (ulogd2 ``ulogd_filter_IP2STR.so``).

Each valid address input ``X`` gives the output ``X.str``: dotted quad for IPv4, RFC 5952
for IPv6 (``inet_ntop``). The address family is taken from the value itself (4 or 16
bytes) rather than from ``oob.family``/``oob.protocol`` as ulogd2 does: the two always
agree for what BASE produces, and going by the bytes cannot print a wrong address.
``oob.family`` and ``oob.protocol`` stay required inputs so that a stack ulogd2 refuses
is refused here too. An address of another length is left without text and counted.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

from pyulogd.core.plugin import OK, DataType, Filter, Key, KeyType

if TYPE_CHECKING:
    from pyulogd.core.context import Context

_ADDRESS_KEYS = (
    "ip.saddr",
    "ip.daddr",
    "orig.ip.saddr",
    "orig.ip.daddr",
    "reply.ip.saddr",
    "reply.ip.daddr",
    "arp.saddr",
    "arp.daddr",
)
_CIM = {"ip.saddr": "src_ip", "ip.daddr": "dest_ip", "orig.ip.saddr": "src_ip", "orig.ip.daddr": "dest_ip"}
# Text of recently seen addresses: a dict hit costs a fifth of inet_ntop. Cleared when full.
_CACHE_MAX = 4096
_FAMILY = {4: socket.AF_INET, 16: socket.AF_INET6}


class Ip2strFilter(Filter):
    name = "IP2STR"
    so_name = "ulogd_filter_IP2STR.so"
    description = "IPv4/IPv6 addresses to strings"
    input_type = DataType.PACKET | DataType.FLOW
    output_type = DataType.PACKET | DataType.FLOW
    input_keys = (
        Key("oob.family", KeyType.UINT8),
        Key("oob.protocol", KeyType.UINT16),
        *(Key(k, KeyType.IPADDR, optional=True) for k in _ADDRESS_KEYS),
    )
    output_keys = tuple(Key(k + ".str", KeyType.STRING, cim=_CIM.get(k)) for k in _ADDRESS_KEYS)

    def __init__(self, ctx: Context, instance_id: str, config: dict[str, Any]) -> None:
        super().__init__(ctx, instance_id, config)
        self._pairs: tuple[tuple[int, int], ...] | None = None
        self._cache: dict[bytes, str] = {}
        self._bad_name = f"ip2str.{instance_id}.bad_address"

    @property
    def texts(self) -> dict[bytes, str]:
        """The text of recently seen addresses, by address bytes: what ``interp`` writes for
        an address found here. The same dict for the instance's life (emptied when full,
        never replaced), so a fused stack (plugins/fused.py) may keep it and read it."""
        return self._cache

    def address_pairs(self) -> tuple[tuple[int, int], ...]:
        """``(address slot, text slot)`` for each address input bound upstream (slot 0 is
        "unbound"): where ``interp`` reads an address and where it writes its text."""
        return tuple((slot, self.out_base + i) for i, slot in enumerate(self.in_slots[2:]) if slot != 0)

    def _prepare(self) -> tuple[tuple[int, int], ...]:
        pairs = self._pairs = self.address_pairs()
        return pairs

    def start(self) -> None:
        self._prepare()

    def interp(self, rec: list[Any]) -> int:
        pairs = self._pairs
        if pairs is None:
            pairs = self._prepare()
        cache = self._cache
        for src, dst in pairs:
            addr = rec[src]
            if addr is not None:
                text = cache.get(addr)
                rec[dst] = text if text is not None else self._format(addr)
        return OK

    def _format(self, addr: Any) -> str | None:
        family = _FAMILY.get(len(addr))
        if family is None:
            self.ctx.stats.incr(self._bad_name)
            return None
        text = socket.inet_ntop(family, addr)
        cache = self._cache
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        cache[bytes(addr)] = text
        return text
