"""IFINDEX: interface indexes to names (ulogd2 ``ulogd_filter_IFINDEX.so``).

Both outputs are always valid: an absent or zero index gives ``""`` (as in ulogd2).
Unlike 2.0.8, which leaves the previous packet's name in place for an index its cache
does not know, an unknown index is looked up in the kernel once (RTM_GETLINK by index,
bounded by a short timeout, not repeated for a second); if the kernel does not know it
either, the decimal index is logged (``IN=17``) and counted as ``ifindex.unknown``. An
auditor then sees that the packet did come through an interface, and which one by
number - ``""`` would read as "no interface" and a stale name would be wrong.
"""

from __future__ import annotations

from typing import Any

from pyulogd.core.plugin import OK, DataType, Filter, Key, KeyType
from pyulogd.io.rtnl import LinkCache, get_link_cache


class IfindexFilter(Filter):
    name = "IFINDEX"
    so_name = "ulogd_filter_IFINDEX.so"
    description = "Interface indexes (oob.ifindex_in/out) to interface names (oob.in/out)"
    input_type = DataType.RAW | DataType.PACKET
    output_type = DataType.PACKET
    input_keys = (
        Key("oob.ifindex_in", KeyType.UINT32),
        Key("oob.ifindex_out", KeyType.UINT32),
    )
    output_keys = (
        Key("oob.in", KeyType.STRING, help="name of the input interface, \"\" if none"),
        Key("oob.out", KeyType.STRING, help="name of the output interface, \"\" if none"),
    )

    _cache: LinkCache | None = None

    def start(self) -> None:
        cache = get_link_cache(self.ctx)
        cache.acquire()
        self._cache = cache
        self._names = cache.names  # updated in place by the cache
        self._lookup = cache.lookup_miss
        self._in, self._out = self.in_slots

    def stop(self) -> None:
        if self._cache is not None:
            self._cache.release()
            self._cache = None

    def interp(self, rec: list[Any]) -> int:
        base = self.out_base
        names = self._names
        index = rec[self._in]
        if index:
            name = names.get(index)
            rec[base] = name if name is not None else self._lookup(index)
        else:
            rec[base] = ""
        index = rec[self._out]
        if index:
            name = names.get(index)
            rec[base + 1] = name if name is not None else self._lookup(index)
        else:
            rec[base + 1] = ""
        return OK
