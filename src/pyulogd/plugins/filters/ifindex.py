"""IFINDEX: interface indexes to names (ulogd2 ``ulogd_filter_IFINDEX.so``).

Both outputs are always valid: an absent or zero index gives ``""`` (as in ulogd2).
Unlike 2.0.8, which leaves the previous packet's name in place for an index its cache
does not know, an unknown index is looked up in the kernel once (RTM_GETLINK by index,
bounded by a short timeout, not repeated for a second); if the kernel does not know it
either, the decimal index is logged (``IN=17``) and counted as ``ifindex.unknown``. An
auditor then sees that the packet did come through an interface, and which one by
number - ``""`` would read as "no interface" and a stale name would be wrong.

Records from another network namespace (``oob.netns`` valid, set by an input with
``netns=`` or ``network_namespace_path=``) are resolved in *that* namespace: index 2 in
``qrouter-a`` is not index 2 of the host. Each such namespace gets its own link cache,
opened inside it on its first record and released when the inputs release the namespace.
ulogd2 HEAD resolves them in its own namespace (wrong or missing names).
"""

from __future__ import annotations

from typing import Any

from pyulogd.core.errors import PluginError
from pyulogd.core.plugin import OK, DataType, Filter, Key, KeyType
from pyulogd.io.netns import NetnsHandle
from pyulogd.io.rtnl import LinkCache, get_link_cache
from pyulogd.netns.registry import find_namespaces, get_namespaces

# A namespace whose link table cannot be read is not tried again within this many seconds.
_RETRY_NETNS = 1.0


class IfindexFilter(Filter):
    name = "IFINDEX"
    so_name = "ulogd_filter_IFINDEX.so"
    description = "Interface indexes (oob.ifindex_in/out) to interface names (oob.in/out)"
    input_type = DataType.RAW | DataType.PACKET
    output_type = DataType.PACKET
    input_keys = (
        Key("oob.ifindex_in", KeyType.UINT32),
        Key("oob.ifindex_out", KeyType.UINT32),
        Key("oob.netns", KeyType.STRING, optional=True),
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
        self._in, self._out, self._ns = self.in_slots
        # Other namespaces' caches, by namespace name, and names that failed (monotonic time).
        self._ns_caches: dict[str, LinkCache] = {}
        self._ns_failed: dict[str, float] = {}
        if self._ns:
            get_namespaces(self.ctx).on_close.append(self._netns_closed)

    def stop(self) -> None:
        if self._cache is not None:
            self._cache.release()
            self._cache = None
        reg = find_namespaces(self.ctx)
        if reg is not None and self._netns_closed in reg.on_close:
            reg.on_close.remove(self._netns_closed)
        for cache in getattr(self, "_ns_caches", {}).values():
            cache.release()
        self._ns_caches = {}

    def interp(self, rec: list[Any]) -> int:
        base = self.out_base
        ns = rec[self._ns]
        if ns is not None:
            return self._interp_netns(rec, ns)
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

    # -- records from other network namespaces
    def _interp_netns(self, rec: list[Any], ns: str) -> int:
        base = self.out_base
        cache = self._ns_caches.get(ns)
        if cache is None:
            cache = self._open_netns(ns)
        for slot, out in ((self._in, base), (self._out, base + 1)):
            index = rec[slot]
            if not index:
                rec[out] = ""
            elif cache is None:
                rec[out] = str(index)
            else:
                name = cache.names.get(index)
                rec[out] = name if name is not None else cache.lookup_miss(index)
        return OK

    def _open_netns(self, ns: str) -> LinkCache | None:
        """The link cache of namespace ``ns``, opened inside it; None (indexes are logged as
        numbers, counted in ``ifindex.netns_unresolved``) when no input works there any more
        or its table cannot be read."""
        now = self.ctx.clock.monotonic()
        failed = self._ns_failed.get(ns)
        reg = find_namespaces(self.ctx)
        handle = reg.lookup(ns) if reg is not None else None
        if handle is None or (failed is not None and now - failed < _RETRY_NETNS):
            self.ctx.stats.incr("ifindex.netns_unresolved")
            return None
        cache = get_link_cache(self.ctx, handle)
        try:
            cache.acquire()
        except PluginError as e:
            if failed is None:
                self.ctx.log.error(f"IFINDEX: namespace {ns}: {e}; logging interface numbers")
            self._ns_failed[ns] = now
            self.ctx.stats.incr("ifindex.netns_unresolved")
            return None
        self._ns_failed.pop(ns, None)
        self._ns_caches[ns] = cache
        return cache

    def _netns_closed(self, handle: NetnsHandle) -> None:
        """No input works in ``handle`` any more: its link cache goes with it."""
        self._ns_failed.pop(handle.name, None)
        cache = self._ns_caches.get(handle.name)
        if cache is not None and cache.netns_ino == handle.ino:
            del self._ns_caches[handle.name]
            cache.release()
