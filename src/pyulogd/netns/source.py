"""Inputs that work in other network namespaces: the base of NFLOG, NFCT and NFACCT.

Three ways an instance runs, chosen by its options:

* no namespace option: in the daemon's own namespace, exactly as before; the keys
  ``oob.netns``, ``neutron.router_id``, ``neutron.network_id`` stay invalid.
* ``network_namespace_path=PATH`` (ulogd2 HEAD): the instance itself works in that one
  namespace; every socket it opens, at start or later (resyncs, dumps), is created there.
* ``netns=GLOBS``: the instance is a *manager*. It opens nothing itself; for every
  namespace in ``netns_dir`` whose name matches it creates a *child*, an instance of the
  same plugin class working in that namespace (as with ``network_namespace_path``), with
  its own state (flow table, sequence tracking, counters under ``<id>.<namespace>``),
  feeding the manager's stacks. A namespace that goes away takes its child with it
  (sockets closed, timers cancelled, state dropped, counters folded into the manager's);
  one that appears gets a child at once (:mod:`pyulogd.netns.watch`). A child that
  cannot start (an NFLOG group already bound in that namespace, say) is logged, counted
  and tried again after each rescan; it never stops the daemon.

Records from a namespace carry its name in ``oob.netns``, through the trailer-key
mechanism of :class:`~pyulogd.core.plugin.Source` (the values ride in the stack tails, so
tagging costs nothing per event).

A plugin derives from :class:`NetnsSource`, adds :data:`NETNS_OPTIONS` and
:data:`NETNS_KEYS` to its declarations, calls ``super().configure()``, implements
``start_input``/``stop_input``/``signal_input`` instead of ``start``/``stop``/``signal``,
and creates every socket with ``netns=self.netns_handle`` (sysctls inside
``in_netns(self.netns_handle)``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from pyulogd.core.errors import ConfigError, PluginError
from pyulogd.core.options import Duration, Path, Str
from pyulogd.core.plugin import Key, KeyType, Option, Source
from pyulogd.io.netns import NetnsHandle, home_fd
from pyulogd.netns.names import NameMatcher, tag_values
from pyulogd.netns.registry import get_namespaces
from pyulogd.netns.watch import DirWatcher

if TYPE_CHECKING:
    from pyulogd.core.context import Context

DEFAULT_DIR = "/run/netns"
DELETED = "namespace deleted"


NETNS_OPTIONS = (
    Option("network_namespace_path", Path(), "",
           help="work in the network namespace at this path (as ulogd2 2.0.9+), e.g. "
           "/run/netns/qrouter-<id>; records carry its file name in oob.netns"),
    Option("netns", Str(), "", extra=True,
           help="pyulogd extra: follow every network namespace in netns_dir whose name matches this comma "
           "list of names or globs (qrouter-*,snat-*), including those created later; records carry the "
           "name in oob.netns"),
    Option("netns_dir", Path(), DEFAULT_DIR, extra=True,
           help="pyulogd extra: where netns= looks for namespaces (ip netns uses /run/netns)"),
    Option("netns_rescan", Duration(1), 5, extra=True,
           help="pyulogd extra: seconds between two rescans of netns_dir (inotify reports changes at once; "
           "the rescan is the safety net and retries namespaces whose attach failed)"),
)  # fmt: skip

NETNS_KEYS = (
    Key("oob.netns", KeyType.STRING,
        help="name of the network namespace the event comes from (netns= or network_namespace_path=)"),
    Key("neutron.router_id", KeyType.STRING, help="router id from a qrouter-<id> or snat-<id> namespace name"),
    Key("neutron.network_id", KeyType.STRING,
        help="network id from a qdhcp-<id>, fip-<id> or ovnmeta-<id> namespace name"),
)  # fmt: skip


class NetnsSource(Source):
    trailer_keys = len(NETNS_KEYS)

    def __init__(self, ctx: Context, instance_id: str, config: dict[str, Any]) -> None:
        super().__init__(ctx, instance_id, config)
        # The namespace this instance's sockets live in; None: the daemon's own.
        self.netns_handle: NetnsHandle | None = None
        self.parent: NetnsSource | None = None
        self.matcher: NameMatcher | None = None
        # Manager only: the children by namespace name (None when not following).
        self.children: dict[str, NetnsSource] | None = None
        self._watcher: DirWatcher | None = None
        self._failed: dict[str, str] = {}  # name -> path of namespaces to retry at the next rescan
        self._failures: dict[str, int] = {}  # name -> attach failures in a row
        self._owns_handle = False  # network_namespace_path: this instance closes the handle
        self._stat = f"{self.name.lower()}.{instance_id}."

    # -- what a plugin implements
    def start_input(self) -> None:
        """Open sockets and start timers (in ``self.netns_handle``)."""

    def stop_input(self) -> None:
        """Close and cancel everything; safe when start_input() failed or never ran."""

    def signal_input(self, signum: int) -> None:
        """SIGHUP, SIGUSR1, SIGUSR2 for this namespace's instance."""

    def netns_released(self) -> None:
        """The namespace was deleted and is about to be let go (stop_input() follows):
        last chance to report what ends with it."""

    # -- configuration
    def configure(self) -> None:
        c = self.config
        path, spec = c["network_namespace_path"], c["netns"]
        if path and spec:
            raise ConfigError(f"{self.name} '{self.id}': network_namespace_path and netns exclude each other "
                              "(one fixed namespace, or every namespace matching netns)")  # fmt: skip
        if path:
            # Made absolute now: -d changes the directory to / before start.
            c["network_namespace_path"] = os.path.abspath(path)
        if spec:
            try:
                self.matcher = NameMatcher(spec)
            except ValueError as e:
                raise ConfigError(f"{self.name} '{self.id}': option 'netns': {e}") from None
            c["netns_dir"] = os.path.abspath(c["netns_dir"])

    @property
    def follows(self) -> bool:
        """Whether this instance is a manager of per-namespace children (``netns=``)."""
        return self.matcher is not None

    def needed_capabilities(self) -> dict[str, str]:
        caps = super().needed_capabilities()
        c = self.config
        if self.follows:
            what = f"{self.name} '{self.id}' follows network namespaces ({c['netns']} in {c['netns_dir']})"
        elif c.get("network_namespace_path"):
            what = f"{self.name} '{self.id}' works in network namespace {c['network_namespace_path']}"
        else:
            return caps
        for cap, why in (("CAP_SYS_ADMIN", f"{what}: setns() to create its sockets there after start"),
                         ("CAP_NET_ADMIN", f"{what}: its netlink requests there (group binds, dumps)")):
            caps[cap] = f"{caps[cap]}; {why}" if cap in caps else why
        return caps

    # -- life cycle
    def start(self) -> None:
        if self.follows:
            self._follow()
            return
        path = self.config["network_namespace_path"]
        if path and self.netns_handle is None:
            home_fd()
            name = os.path.basename(path.rstrip("/"))
            try:
                self.netns_handle = get_namespaces(self.ctx).open(path, name)
            except OSError as e:
                raise PluginError(f"{self.name} '{self.id}': cannot use network namespace {path}: "
                                  f"{e.strerror or e}") from None  # fmt: skip
            self._owns_handle = True
            self.set_trailer(tag_values(name))
            self.ctx.log.notice(f"{self.name} '{self.id}': working in network namespace {name} ({path})")
        try:
            self.start_input()
        except BaseException:
            self._release_handle()
            raise

    def stop(self) -> None:
        if self.children is not None:
            self._unfollow()
            return
        try:
            self.stop_input()
        finally:
            self._release_handle()

    def _release_handle(self) -> None:
        if self._owns_handle and self.netns_handle is not None:
            get_namespaces(self.ctx).close(self.netns_handle)
            self.netns_handle = None
            self._owns_handle = False

    def signal(self, signum: int) -> None:
        if self.children is None:
            self.signal_input(signum)
            return
        for name, child in list(self.children.items()):
            try:
                child.signal_input(signum)
            except Exception as e:
                self.ctx.log.error(f"{self.name} '{self.id}': namespace {name} failed handling signal {signum}: {e}")

    # -- the manager
    def _follow(self) -> None:
        c = self.config
        self.children = {}
        home_fd()  # pin the daemon's own namespace before the first switch (and before -u)
        self.ctx.log.notice(f"{self.name} '{self.id}': following network namespaces {c['netns']} "
                            f"in {c['netns_dir']}")  # fmt: skip
        self._watcher = get_namespaces(self.ctx).watch(c["netns_dir"], self, c["netns_rescan"])
        self.ctx.log.notice(f"{self.name} '{self.id}': {len(self.children)} network namespace(s) attached at start")

    def _unfollow(self) -> None:
        if self._watcher is not None:
            get_namespaces(self.ctx).unwatch(self._watcher, self)
            self._watcher = None
        for name in list(self.children or ()):
            self._detach(name, "stopping")
        self._failed.clear()
        self._failures.clear()
        self.children = None

    def netns_appeared(self, name: str, path: str) -> None:
        if self.children is None or self.matcher is None or not self.matcher(name) or name in self.children:
            return
        self._attach(name, path)

    def netns_vanished(self, name: str) -> None:
        self._failed.pop(name, None)
        self._failures.pop(name, None)
        if self.children is not None and name in self.children:
            self._detach(name, DELETED)

    def netns_rescanned(self) -> None:
        for name, path in list(self._failed.items()):
            self._failed.pop(name, None)
            self._attach(name, path)

    def _attach(self, name: str, path: str) -> None:
        assert self.children is not None
        reg = get_namespaces(self.ctx)
        t0 = self.ctx.clock.monotonic()
        try:
            handle = reg.open(path, name)
        except OSError as e:
            self._attach_failed(name, path, f"cannot open {path}: {e.strerror or e}")
            return
        child = self.make_child(name, handle)
        if self.wal_adopt is not None:
            self.wal_adopt(child)  # what the child emits goes to the write-ahead log (io/wal.py)
        try:
            child.start()
        except Exception as e:
            try:
                child.stop()
            except Exception as e2:
                self.ctx.log.error(f"{self.name} '{self.id}': cleaning up namespace {name} failed: {e2}")
            if self.wal_let_go is not None:
                self.wal_let_go(child)
            reg.close(handle)
            self._fold_stats(child)
            self._attach_failed(name, path, str(e))
            return
        self.children[name] = child
        self.ctx.stats.incr(self._stat + "netns_attached")
        failures = self._failures.pop(name, 0)
        after = f" after {failures} failed attempt(s)" if failures else ""
        self.ctx.log.notice(f"{self.name} '{self.id}': attached network namespace {name}{after} in "
                            f"{(self.ctx.clock.monotonic() - t0) * 1000:.1f} ms ({len(self.children)} attached)")

    def make_child(self, name: str, handle: NetnsHandle | None) -> NetnsSource:
        """A fresh instance of this plugin for one namespace, feeding this instance's stacks
        (``handle`` None: one that is never started, to replay what a child logged)."""
        cfg = dict(self.config)
        cfg.update(network_namespace_path="", netns="")
        child = type(self)(self.ctx, f"{self.id}.{name}", cfg)
        child.parent = self
        child.netns_handle = handle
        child.configure()
        child.stacks = self.stacks
        child.set_trailer(tag_values(name))
        return child

    def wal_source_for(self, source_id: str) -> Source | None:
        """The child of ``source_id`` (``<id>.<namespace>``) to replay what it logged: the
        running one, else one made for the replay alone (the namespace may be gone, or its
        attach failed at this start): same stacks, same ``oob.netns`` and router id."""
        if not self.follows or not source_id.startswith(self.id + "."):
            return None
        name = source_id[len(self.id) + 1 :]
        if self.children is not None and name in self.children:
            return self.children[name]
        return self.make_child(name, None)

    def _attach_failed(self, name: str, path: str, why: str) -> None:
        self.ctx.stats.incr(self._stat + "netns_attach_failed")
        n = self._failures[name] = self._failures.get(name, 0) + 1
        self._failed[name] = path
        msg = (f"{self.name} '{self.id}': cannot attach network namespace {name}: {why}; "
               f"trying again every {self.config['netns_rescan']:g} s")  # fmt: skip
        # The first failure is an error; the retries of the same namespace are quiet.
        (self.ctx.log.error if n == 1 else self.ctx.log.debug)(msg)

    def _detach(self, name: str, why: str) -> None:
        assert self.children is not None
        child = self.children.pop(name)
        try:
            if why == DELETED:
                child.netns_released()
            child.stop()
        except Exception as e:
            self.ctx.log.error(f"{self.name} '{self.id}': stopping namespace {name} failed: {e}")
        finally:
            if self.wal_let_go is not None:
                self.wal_let_go(child)  # its last records (netns_released, stop) logged first
            handle = child.netns_handle
            child.netns_handle = None
            child.stacks = []
            child.tails = None
            if handle is not None:
                get_namespaces(self.ctx).close(handle)
        self._fold_stats(child)
        self.ctx.stats.incr(self._stat + "netns_detached")
        self.ctx.log.notice(f"{self.name} '{self.id}': released network namespace {name} ({why}; "
                            f"{len(self.children)} attached)")  # fmt: skip

    def _fold_stats(self, child: NetnsSource) -> None:
        """A released namespace's counters are added to the manager's own, so they are not
        lost, and the daemon does not keep counters of every namespace it ever saw."""
        self.ctx.stats.fold(child._stat, self._stat)
