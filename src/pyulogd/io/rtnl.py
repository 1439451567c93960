"""The interface-name cache: ifindex -> name for one network namespace.

One cache per namespace and process (per :class:`Context`), shared by every IFINDEX
instance, like ulogd2's single ``nlif`` handle; the daemon's own namespace has one, and
so does every other namespace records come from (``oob.netns``), with its sockets created
inside that namespace and closed when the last user releases it. A cache is filled by an
RTM_GETLINK dump when the first user acquires it and kept current by RTMGRP_LINK
notifications read from a non-blocking socket the loop watches. A second, blocking
socket with a short timeout answers the rare question "which name has index N?" for an
index the cache does not know yet.

Names of deleted interfaces are kept (up to ``keep_deleted``): a packet logged just before
its interface went away (a container's veth, a PPP link) is often read after the
RTM_DELLINK, and Linux does not hand out an index again soon, so the old name is the truth
for it.
"""

from __future__ import annotations

import errno
import socket
from collections import OrderedDict
from typing import TYPE_CHECKING

from pyulogd.codec import rtnl
from pyulogd.core.errors import PluginError
from pyulogd.io.netns import NetnsHandle, in_netns

if TYPE_CHECKING:
    from pyulogd.core.context import Context

_RECV_SIZE = 1 << 16
# Notifications read per wake-up at most, so a flood of link changes cannot starve packets.
_MAX_READS = 64
# A failed lookup of an index is not repeated within this many seconds.
_RETRY_UNKNOWN = 1.0
_MAX_UNKNOWN = 4096


class LinkCache:
    def __init__(
        self,
        ctx: Context,
        *,
        kernel: bool = True,
        query_timeout: float = 0.05,
        dump_timeout: float = 2.0,
        keep_deleted: int = 1024,
        netns: NetnsHandle | None = None,
    ) -> None:
        self.ctx = ctx
        # The namespace whose links these are (None: the daemon's own); only used to open.
        self.netns = netns
        self.netns_ino = netns.ino if netns is not None else 0
        self._who = f"IFINDEX (namespace {netns.name})" if netns is not None else "IFINDEX"  # for log lines
        # ifindex -> name. Users may keep a reference: it is updated in place, never replaced.
        self.names: dict[int, str] = {}
        self.kernel = kernel
        self.query_timeout = query_timeout
        self.dump_timeout = dump_timeout
        self.keep_deleted = keep_deleted
        self._deleted: OrderedDict[int, None] = OrderedDict()
        self._unknown: dict[int, float] = {}  # index -> monotonic time of the failed lookup
        self._users = 0
        self._mon: socket.socket | None = None
        self._req: socket.socket | None = None
        self._seq = int(ctx.clock.wall()) & 0xFFFF  # distinguishes our replies from stale ones

    # -- life cycle
    def acquire(self) -> None:
        """First user opens the sockets and loads the table; raises PluginError on failure."""
        self._users += 1
        if self._users == 1 and self.kernel:
            try:
                self._open()
            except OSError as e:
                self._users -= 1
                self._close()
                self._forget()
                raise PluginError(f"cannot read the interface table (rtnetlink): {e.strerror or e}") from e

    def release(self) -> None:
        if self._users <= 0:
            return
        self._users -= 1
        if self._users == 0:
            self._close()
            self._forget()

    def _forget(self) -> None:
        """A namespace's cache nobody uses leaves the context: the namespace may be gone
        soon, and a later user must open a fresh one inside whatever has that inode then."""
        if self.netns is not None and self._users == 0:
            if self.ctx.ns_ifcaches.get(self.netns_ino) is self:
                del self.ctx.ns_ifcaches[self.netns_ino]
            self.netns = None

    @property
    def users(self) -> int:
        return self._users

    def _open(self) -> None:
        flags = socket.SOCK_RAW | socket.SOCK_CLOEXEC
        # Subscribe before dumping so that no change between the two is missed.
        with in_netns(self.netns):
            mon = socket.socket(socket.AF_NETLINK, flags | socket.SOCK_NONBLOCK, socket.NETLINK_ROUTE)
            self._mon = mon
            req = socket.socket(socket.AF_NETLINK, flags, socket.NETLINK_ROUTE)
            self._req = req
        mon.bind((0, rtnl.RTMGRP_LINK))
        req.bind((0, 0))
        self.ctx.loop.add_reader(mon.fileno(), self._on_readable)
        if not self.dump():
            raise OSError(errno.ETIMEDOUT, "no complete answer to the link dump")

    def _close(self) -> None:
        if self._mon is not None:
            self.ctx.loop.remove_reader(self._mon.fileno())
            self._mon.close()
            self._mon = None
        if self._req is not None:
            self._req.close()
            self._req = None

    # -- lookups
    def name(self, index: int) -> str:
        """The name of ``index``; for an index nobody knows, its decimal number."""
        found = self.names.get(index)
        if found is not None:
            return found
        return self.lookup_miss(index)

    def lookup_miss(self, index: int) -> str:
        now = self.ctx.clock.monotonic()
        last = self._unknown.get(index)
        if last is None or now - last >= _RETRY_UNKNOWN:
            self._drain()  # a pending RTM_NEWLINK is cheaper than a question
            found = self.names.get(index)
            if found is None and self._req is not None:
                found = self._query(index)
            if found is not None:
                return found
            if len(self._unknown) >= _MAX_UNKNOWN:
                self._unknown.clear()
            if last is None:
                self.ctx.log.notice(f"{self._who}: no interface with index {index}, logging the number")
            self._unknown[index] = now
        self.ctx.stats.incr("ifindex.unknown")
        return str(index)

    # -- applying what the kernel says
    def update(self, names: dict[int, str]) -> None:
        """Add or rename links (also for tests and for callers without a kernel)."""
        for index, name in names.items():
            self._set(index, name)

    def _set(self, index: int, name: str) -> None:
        self.names[index] = name
        self._deleted.pop(index, None)
        self._unknown.pop(index, None)

    def _deleted_link(self, index: int) -> None:
        if index not in self.names:
            return
        self._deleted[index] = None
        self._deleted.move_to_end(index)
        while len(self._deleted) > self.keep_deleted:
            old, _ = self._deleted.popitem(last=False)
            self.names.pop(old, None)

    def _apply(self, batch: rtnl.Batch) -> None:
        if batch.malformed:
            self.ctx.stats.incr("ifindex.rtnl.malformed", batch.malformed)
        for msg in batch.links:
            if msg.event == rtnl.RTM_NEWLINK and msg.name is not None:
                self._set(msg.ifindex, msg.name)
            elif msg.event == rtnl.RTM_DELLINK:
                self._deleted_link(msg.ifindex)

    def _on_readable(self) -> None:
        self._drain()

    def _drain(self) -> None:
        mon = self._mon
        if mon is None:
            return
        for _ in range(_MAX_READS):
            try:
                data = mon.recv(_RECV_SIZE)
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    # Notifications were lost: only a new dump makes the table right again.
                    self.ctx.stats.incr("ifindex.rtnl.enobufs")
                    self.dump()
                    continue
                self.ctx.stats.incr("ifindex.rtnl.errors")
                self.ctx.log.error(f"{self._who}: reading link notifications failed: {e}")
                return
            if not data:
                return
            self._apply(rtnl.parse_buffer(data))

    # -- questions to the kernel (blocking, bounded by timeouts)
    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        return self._seq

    def dump(self) -> bool:
        """Reload the whole table; True when the dump completed."""
        req = self._req
        if req is None:
            return False
        seq = self._next_seq()
        before = set(self.names) - set(self._deleted)
        seen: set[int] = set()
        deadline = self.ctx.clock.monotonic() + self.dump_timeout
        try:
            req.send(rtnl.getlink_request(seq))
            while True:
                left = deadline - self.ctx.clock.monotonic()
                if left <= 0:
                    self.ctx.stats.incr("ifindex.rtnl.timeouts")
                    return False
                req.settimeout(left)
                batch = rtnl.parse_buffer(req.recv(_RECV_SIZE))
                self._apply(batch)
                seen.update(m.ifindex for m, s in zip(batch.links, batch.seqs, strict=True) if s == seq)
                if any(s == seq for s, _ in batch.errors):
                    return False
                if seq in batch.done:
                    break
        except OSError as e:
            self.ctx.stats.incr("ifindex.rtnl.errors")
            self.ctx.log.error(f"{self._who}: link dump failed: {e}")
            return False
        for index in before - seen:
            self._deleted_link(index)
        return True

    def _query(self, index: int) -> str | None:
        req = self._req
        if req is None:
            return None
        self.ctx.stats.incr("ifindex.rtnl.queries")
        seq = self._next_seq()
        deadline = self.ctx.clock.monotonic() + self.query_timeout
        try:
            req.send(rtnl.getlink_request(seq, index))
            while True:
                left = deadline - self.ctx.clock.monotonic()
                if left <= 0:
                    raise TimeoutError
                req.settimeout(left)
                batch = rtnl.parse_buffer(req.recv(_RECV_SIZE))
                self._apply(batch)
                if any(s == seq for s in batch.seqs) or any(s == seq for s, _ in batch.errors):
                    return self.names.get(index)
        except TimeoutError:
            self.ctx.stats.incr("ifindex.rtnl.timeouts")
        except OSError as e:
            self.ctx.stats.incr("ifindex.rtnl.errors")
            self.ctx.log.error(f"{self._who}: asking the kernel for interface {index} failed: {e}")
        return None


def get_link_cache(ctx: Context, netns: NetnsHandle | None = None) -> LinkCache:
    """The link cache of the daemon's namespace, or of ``netns``, hung on the context
    (created on first use; one per namespace, by its inode)."""
    if netns is not None:
        found = ctx.ns_ifcaches.get(netns.ino)
        if found is None:
            found = ctx.ns_ifcaches[netns.ino] = LinkCache(ctx, netns=netns)
        assert isinstance(found, LinkCache)
        return found
    cache = ctx.ifcache
    if cache is None:
        cache = ctx.ifcache = LinkCache(ctx)
    assert isinstance(cache, LinkCache)
    return cache
