"""Watching a namespace directory (``/run/netns``): which namespaces exist, as they come and go.

inotify reports names created, deleted and renamed in the directory at once; a rescan
every few seconds is the safety net (a queue overflow, a directory that appears later,
anything inotify does not see, such as a namespace file unmounted in place).

A name counts as present only once it is a namespace file (:func:`is_netns_file`).
``ip netns add`` creates an empty file first and bind-mounts the new namespace onto it a
moment later, so IN_CREATE often arrives before the mount: the name is checked again
after 5, 10, 20 ... ms (about 2.5 s in all) and only then left to the rescan. The other
way round, ``ip netns delete`` unmounts before it unlinks: a name that stops being a
namespace file is gone even while the file is still there.

Subscribers (the inputs following namespaces) are told ``netns_appeared(name, path)``,
``netns_vanished(name)`` and, after each rescan, ``netns_rescanned()`` (their cue to
retry namespaces whose attach failed). A namespace replaced under the same name (a new
inode) is reported as vanished, then appeared.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING, Protocol

from pyulogd.core.context import TimerHandle
from pyulogd.io import inotify
from pyulogd.io.netns import is_netns_file

if TYPE_CHECKING:
    from pyulogd.core.context import Context

DIR_EVENTS = (inotify.IN_CREATE | inotify.IN_DELETE | inotify.IN_MOVED_FROM | inotify.IN_MOVED_TO
              | inotify.IN_DELETE_SELF | inotify.IN_MOVE_SELF | inotify.IN_ONLYDIR)  # fmt: skip
PARENT_EVENTS = inotify.IN_CREATE | inotify.IN_MOVED_TO | inotify.IN_ONLYDIR
# Re-checks of a name created but not yet a namespace file: 5 ms doubling, 10 times (~5 s).
RETRY_FIRST = 0.005
RETRY_COUNT = 10
DEFAULT_RESCAN = 5.0


class Subscriber(Protocol):
    def netns_appeared(self, name: str, path: str) -> None: ...

    def netns_vanished(self, name: str) -> None: ...

    def netns_rescanned(self) -> None: ...


class DirWatcher:
    def __init__(self, ctx: Context, directory: str) -> None:
        self.ctx = ctx
        self.directory = os.path.abspath(directory)
        self.present: dict[str, int] = {}  # name -> inode of its namespace
        self.subscribers: list[tuple[Subscriber, float]] = []
        self.rescans = 0
        self._ino: inotify.Inotify | None = None
        self._dir_wd = -1
        self._parent_wd = -1
        self._rescan_timer: TimerHandle | None = None
        self._interval = 0.0
        self._retries: dict[str, TimerHandle] = {}
        self._told_missing = False

    # -- subscribers
    def subscribe(self, sub: Subscriber, rescan: float = DEFAULT_RESCAN) -> None:
        """Add ``sub``; it hears at once about every namespace present."""
        first = not self.subscribers
        self.subscribers.append((sub, rescan))
        if first:
            self._open()  # its first scan tells ``sub`` about every namespace
        else:
            for name in list(self.present):
                sub.netns_appeared(name, self.path(name))
        self._set_interval()

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers = [(s, r) for s, r in self.subscribers if s is not sub]
        if not self.subscribers:
            self.close()
        else:
            self._set_interval()

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    # -- life cycle
    def _open(self) -> None:
        self._ino = inotify.Inotify()
        self.ctx.loop.add_reader(self._ino.fileno(), self._readable)
        self._watch()
        self._scan()

    def close(self) -> None:
        for t in self._retries.values():
            t.cancel()
        self._retries.clear()
        if self._rescan_timer is not None:
            self._rescan_timer.cancel()
            self._rescan_timer = None
        self._interval = 0.0
        if self._ino is not None:
            self.ctx.loop.remove_reader(self._ino.fileno())
            self._ino.close()
            self._ino = None
        self._dir_wd = self._parent_wd = -1
        self.present.clear()

    def _set_interval(self) -> None:
        interval = min((r for _, r in self.subscribers), default=0.0)
        if interval == self._interval or interval <= 0:
            return
        if self._rescan_timer is not None:
            self._rescan_timer.cancel()
        self._interval = interval
        self._rescan_timer = self.ctx.loop.call_later(interval, self.rescan, repeat=True)

    def _watch(self) -> None:
        """Watch the directory, or while it does not exist its parent (for its creation)."""
        ino = self._ino
        if ino is None or self._dir_wd >= 0:
            return
        try:
            self._dir_wd = ino.add_watch(self.directory, DIR_EVENTS)
        except OSError as e:
            if e.errno not in (errno.ENOENT, errno.ENOTDIR):
                self.ctx.log.error(f"netns: cannot watch {self.directory}: {e.strerror or e}; "
                                   f"relying on a rescan every {self._interval or DEFAULT_RESCAN:g} s")
                return
            if not self._told_missing:
                self._told_missing = True
                self.ctx.log.notice(f"netns: {self.directory} does not exist yet; waiting for it")
            if self._parent_wd < 0:
                try:
                    self._parent_wd = ino.add_watch(os.path.dirname(self.directory), PARENT_EVENTS)
                except OSError:
                    pass  # no parent either: the rescan timer will find the directory
            return
        if self._parent_wd >= 0:
            ino.rm_watch(self._parent_wd)
            self._parent_wd = -1
        self._told_missing = False

    # -- events
    def _readable(self) -> None:
        ino = self._ino
        if ino is None:
            return
        base = os.path.basename(self.directory)
        for ev in ino.read():
            if ev.mask & inotify.IN_Q_OVERFLOW:
                self.ctx.stats.incr("netns.inotify_overflows")
                self.rescan()
            elif ev.wd == self._dir_wd and ev.wd >= 0:
                if ev.mask & (inotify.IN_CREATE | inotify.IN_MOVED_TO):
                    self.check(ev.name, retry=0)
                elif ev.mask & (inotify.IN_DELETE | inotify.IN_MOVED_FROM):
                    self._gone(ev.name)
                elif ev.mask & (inotify.IN_DELETE_SELF | inotify.IN_MOVE_SELF | inotify.IN_IGNORED):
                    self._dir_lost()
            elif ev.wd == self._parent_wd and ev.wd >= 0 and ev.name == base:
                self._watch()
                self._scan()

    def _dir_lost(self) -> None:
        if self._dir_wd >= 0 and self._ino is not None:
            self._ino.rm_watch(self._dir_wd)
        self._dir_wd = -1
        for name in list(self.present):
            self._gone(name)
        self._watch()
        self._scan()

    def check(self, name: str, retry: int | None = None) -> None:
        """Look at one name now; ``retry`` (the attempt number) re-checks it later while it
        is not a namespace file yet."""
        if self._ino is None:
            return
        pending = self._retries.pop(name, None)
        if pending is not None:
            pending.cancel()
        ident = is_netns_file(self.path(name))
        known = self.present.get(name)
        if ident is None:
            if known is not None:
                self._gone(name)  # unmounted: being deleted
            elif retry is not None and retry < RETRY_COUNT:
                delay = RETRY_FIRST * (1 << retry)
                self._retries[name] = self.ctx.loop.call_later(delay, lambda: self.check(name, retry + 1))
            return
        ino = ident[1]
        if known == ino:
            return
        if known is not None:
            self._gone(name)  # same name, new namespace
        self.present[name] = ino
        for sub, _ in list(self.subscribers):
            sub.netns_appeared(name, self.path(name))

    def _gone(self, name: str) -> None:
        pending = self._retries.pop(name, None)
        if pending is not None:
            pending.cancel()
        if self.present.pop(name, None) is None:
            return
        for sub, _ in list(self.subscribers):
            sub.netns_vanished(name)

    def _scan(self) -> None:
        try:
            names = set(os.listdir(self.directory))
        except OSError:
            names = set()
        for name in list(self.present):
            if name not in names:
                self._gone(name)
        for name in sorted(names):
            if name not in self._retries:  # a name being re-checked has its own timer
                self.check(name)

    def rescan(self) -> None:
        """The periodic safety net (and the answer to an inotify queue overflow)."""
        if self._ino is None:
            return
        self.rescans += 1
        if self._dir_wd < 0:
            self._watch()
        self._scan()
        for sub, _ in list(self.subscribers):
            sub.netns_rescanned()
