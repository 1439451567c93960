"""The daemon's namespaces, shared by every plugin (one per :class:`Context`).

* One :class:`DirWatcher` per directory, however many inputs follow namespaces in it.
* One open :class:`NetnsHandle` per namespace, however many inputs work in it (an NFLOG
  and an NFCT input following ``qrouter-*`` pin each namespace with one fd, not two),
  counted by users and closed with the last.
* ``lookup(name)``: the handle of a namespace some input works in, by the name records
  carry in ``oob.netns`` (IFINDEX opens its rtnetlink sockets there).
* ``on_close``: told when a handle is closed, i.e. nothing works in that namespace any
  more, so per-namespace state elsewhere (IFINDEX's link caches) goes with it.
* ``on_open``: told when a namespace gets its first handle, so a plugin can prepare what
  it needs there before its first record (NEUTRON reads its ruleset).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyulogd.io.netns import NetnsHandle, is_netns_file
from pyulogd.netns.watch import DEFAULT_RESCAN, DirWatcher, Subscriber

if TYPE_CHECKING:
    from pyulogd.core.context import Context


@dataclass
class _Use:
    handle: NetnsHandle
    users: int = 1


class Namespaces:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._watchers: dict[str, DirWatcher] = {}
        # name -> uses; a list because two directories may hold the same name.
        self._open: dict[str, list[_Use]] = {}
        self.on_close: list[Callable[[NetnsHandle], None]] = []
        self.on_open: list[Callable[[NetnsHandle], None]] = []

    # -- handles
    def open(self, path: str, name: str) -> NetnsHandle:
        """A handle of the namespace at ``path`` (shared, counted); OSError if it cannot be
        opened (NotANamespace when the path is not a namespace file)."""
        ident = is_netns_file(path)
        for use in self._open.get(name, ()):
            if use.handle.path == path and ident is not None and ident[1] == use.handle.ino:
                use.users += 1
                return use.handle
        handle = NetnsHandle.open(path, name)
        self._open.setdefault(name, []).append(_Use(handle))
        for cb in list(self.on_open):
            try:
                cb(handle)
            except Exception as e:  # a listener's bug must not fail the attach
                self.ctx.log.error(f"netns: preparing {handle.name} failed: {e}")
        return handle

    def close(self, handle: NetnsHandle) -> None:
        uses = self._open.get(handle.name, [])
        for i, use in enumerate(uses):
            if use.handle is not handle:
                continue
            use.users -= 1
            if use.users > 0:
                return
            del uses[i]
            if not uses:
                del self._open[handle.name]
            for cb in list(self.on_close):
                try:
                    cb(handle)
                except Exception as e:  # a listener's bug must not keep the fd open
                    self.ctx.log.error(f"netns: releasing state of {handle.name} failed: {e}")
            handle.close()
            return

    def lookup(self, name: str) -> NetnsHandle | None:
        uses = self._open.get(name)
        return uses[0].handle if uses else None

    def names(self) -> list[str]:
        return sorted(self._open)

    # -- directories
    def watch(self, directory: str, sub: Subscriber, rescan: float = DEFAULT_RESCAN) -> DirWatcher:
        w = self._watchers.get(directory)
        if w is None:
            w = self._watchers[directory] = DirWatcher(self.ctx, directory)
        w.subscribe(sub, rescan)
        return w

    def unwatch(self, watcher: DirWatcher, sub: Subscriber) -> None:
        watcher.unsubscribe(sub)
        if not watcher.subscribers:
            self._watchers.pop(watcher.directory, None)


def get_namespaces(ctx: Context) -> Namespaces:
    """The context's registry, created on first use."""
    reg = ctx.namespaces
    if not isinstance(reg, Namespaces):
        reg = ctx.namespaces = Namespaces(ctx)
    return reg


def find_namespaces(ctx: Context) -> Namespaces | None:
    """The context's registry if something created it, else None (nothing works in another
    namespace)."""
    reg = ctx.namespaces
    return reg if isinstance(reg, Namespaces) else None
