"""IP2BIN: addresses as 16 bytes for ``BINARY(16)`` columns (ulogd2 ``ulogd_filter_IP2BIN.so``).

Needed by the MySQL schemas ulogd2 ships (``ip_saddr_bin``, ``orig_ip_saddr_bin``...). Each
valid address ``X`` gives ``X.bin``: the IPv6 address, or the IPv4 one mapped into IPv6
(``::ffff:a.b.c.d``). 2.0.8 produced a ``0x...`` SQL literal pasted into the statement;
the SQL outputs here bind the same 16 bytes as a parameter. Correction: 2.0.8 never
produced ``reply.ip.daddr.bin`` (a loop stopping one short); here it is produced.
"""

from __future__ import annotations

from typing import Any

from pyulogd.core.plugin import OK, DataType, Filter, Key, KeyType

_ADDRESS_KEYS = ("ip.saddr", "ip.daddr", "orig.ip.saddr", "orig.ip.daddr", "reply.ip.saddr", "reply.ip.daddr")
_V4_MAPPED = bytes(10) + b"\xff\xff"


class Ip2binFilter(Filter):
    name = "IP2BIN"
    so_name = "ulogd_filter_IP2BIN.so"
    description = "IPv4/IPv6 addresses to 16 bytes (IPv4-mapped IPv6) for SQL binary columns"
    input_type = DataType.PACKET | DataType.FLOW
    output_type = DataType.PACKET | DataType.FLOW
    input_keys = (
        Key("oob.family", KeyType.UINT8),
        Key("oob.protocol", KeyType.UINT16),
        *(Key(k, KeyType.IPADDR, optional=True) for k in _ADDRESS_KEYS),
    )
    output_keys = tuple(Key(k + ".bin", KeyType.RAWSTR) for k in _ADDRESS_KEYS)

    def start(self) -> None:
        self._pairs = tuple((slot, self.out_base + i) for i, slot in enumerate(self.in_slots[2:]) if slot)

    def interp(self, rec: list[Any]) -> int:
        for src, dst in self._pairs:
            addr = rec[src]
            if addr is not None:
                if len(addr) == 4:
                    rec[dst] = _V4_MAPPED + bytes(addr)
                elif len(addr) == 16:
                    rec[dst] = bytes(addr)
        return OK
