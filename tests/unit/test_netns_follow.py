"""Following namespaces without root: the manager, the directory watcher and the registry
with a fake input and fake namespace files (plain files in a temporary directory, watched
by real inotify), plus tagging, IFINDEX per namespace, LOGEMU's prefix, capabilities and
the namespace switch's failure path."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from pyulogd.core.context import Context
from pyulogd.core.errors import ConfigError, PluginError
from pyulogd.core.loss import AUDIT_KEYS
from pyulogd.core.plugin import DataType, Key, KeyType, Option, OptionType, Source
from pyulogd.daemon import caps
from pyulogd.io import netns as io_netns
from pyulogd.io.loop import Loop
from pyulogd.io.netns import NetnsHandle, NotANamespace, WrongNamespace, in_netns
from pyulogd.io.rtnl import LinkCache
from pyulogd.netns import registry as registry_mod
from pyulogd.netns import watch as watch_mod
from pyulogd.netns.names import tag_values
from pyulogd.netns.registry import get_namespaces
from pyulogd.netns.source import NETNS_KEYS, NETNS_OPTIONS, NetnsSource
from pyulogd.plugins.filters.ifindex import IfindexFilter
from pyulogd.plugins.inputs.nfacct import NfacctInput
from pyulogd.plugins.inputs.nflog import NflogInput
from pyulogd.plugins.outputs.logemu import LogemuOutput
from tests.clocked import fake_context
from tests.helpers import NFLOG_KEYS, Capture, make_stack, stop_stack

RID = "4f0c2e3a-9b1d-4c55-8a2e-1f2d3c4b5a69"


class FakeNamespaces:
    """Regular files in a directory stand in for namespace files; names in ``not_ready``
    are files ``ip netns add`` has created but not mounted yet."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, directory: Path) -> None:
        self.dir = directory
        self.not_ready: set[str] = set()
        self.looked: list[str] = []  # names looked at, in order
        monkeypatch.setattr(watch_mod, "is_netns_file", self.ident)
        monkeypatch.setattr(registry_mod, "is_netns_file", self.ident)
        monkeypatch.setattr(NetnsHandle, "open", classmethod(lambda cls, path, name=None: self.open(path, name)))

    def ident(self, path: str) -> tuple[int, int] | None:
        self.looked.append(os.path.basename(path))
        if os.path.basename(path) in self.not_ready:
            return None
        try:
            return 0, os.stat(path).st_ino
        except OSError:
            return None

    def open(self, path: str, name: str | None) -> NetnsHandle:
        ident = self.ident(path)
        if ident is None:
            raise NotANamespace(22, f"{path} is not a namespace file")
        return NetnsHandle(name or os.path.basename(path), path, os.open(path, os.O_RDONLY | os.O_CLOEXEC), ident[1])

    def add(self, name: str) -> None:
        (self.dir / name).write_text("")

    def delete(self, name: str) -> None:
        (self.dir / name).unlink()


class FakeInput(NetnsSource):
    """Records what the manager does to it; ``push`` emits one event with value ``v``."""

    name = "FAKE"
    output_type = DataType.RAW
    options = (Option("x", OptionType.INT, 0),) + NETNS_OPTIONS
    output_keys = (Key("v", KeyType.UINT32),) + NETNS_KEYS
    fail: ClassVar[set[str]] = set()
    calls: ClassVar[list[tuple[str, str]]] = []

    def start_input(self) -> None:
        ns = self.netns_handle.name if self.netns_handle is not None else ""
        if ns in self.fail:
            raise PluginError("unable to bind to log group 7: Device or resource busy")
        self.calls.append(("start", self.id))
        self.timer = self.ctx.loop.call_later(3600, lambda: None)
        self.ctx.stats.incr(f"fake.{self.id}.starts")

    def stop_input(self) -> None:
        self.calls.append(("stop", self.id))
        timer = getattr(self, "timer", None)
        if timer is not None:
            timer.cancel()

    def signal_input(self, signum: int) -> None:
        self.calls.append(("signal", self.id))

    def netns_released(self) -> None:
        self.calls.append(("released", self.id))

    def push(self, v: int) -> None:
        self.emit([None, v])


@pytest.fixture()
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeNamespaces]:
    FakeInput.fail = set()
    FakeInput.calls = []
    d = tmp_path / "netns"
    d.mkdir()
    yield FakeNamespaces(monkeypatch, d)


def spin(ctx: Context, until: Any, timeout: float = 2.0) -> None:
    end = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < end, "timed out"
        ctx.loop.run_once(0.01)


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def follow(ctx: Context, fake: FakeNamespaces, spec: str = "qrouter-*,snat-*") -> tuple[Any, FakeInput, Capture]:
    cap = Capture(ctx, "cap", {})
    stack = make_stack([(FakeInput, {"netns": spec, "netns_dir": str(fake.dir)}), cap], ctx)
    manager = stack.source
    assert isinstance(manager, FakeInput)
    return stack, manager, cap


def test_manager_lifecycle(fake: FakeNamespaces) -> None:
    io_netns.home_fd()  # opened once for the process; not a leak of this test
    ctx = Context(loop=Loop())
    before = open_fds()
    fake.add(f"qrouter-{RID}")  # present at start
    fake.add("other")  # not matching
    stack, manager, cap = follow(ctx, fake)
    assert manager.follows and manager.children is not None
    assert set(manager.children) == {f"qrouter-{RID}"}

    fake.add("snat-b")  # appears later: inotify
    spin(ctx, lambda: "snat-b" in manager.children)  # type: ignore[operator]
    children = dict(manager.children)  # type: ignore[arg-type]
    assert [c.id for c in children.values()] == ["fake0.qrouter-" + RID, "fake0.snat-b"]

    # Each child's events carry its namespace, through the manager's stack.
    children[f"qrouter-{RID}"].push(1)
    children["snat-b"].push(2)
    got = [(cap.value(r, "v"), cap.value(r, "oob.netns"), cap.value(r, "neutron.router_id")) for r in cap.records]
    assert got == [(1, f"qrouter-{RID}", RID), (2, "snat-b", "b")]
    assert all(cap.value(r, "neutron.network_id") is None for r in cap.records)

    manager.signal(signal.SIGUSR2)
    assert sorted(c for c in FakeInput.calls if c[0] == "signal") == [
        ("signal", "fake0.qrouter-" + RID), ("signal", "fake0.snat-b")]  # fmt: skip

    # Deleted: released (last words, stop), handle closed, counters folded into the manager's.
    handle = children["snat-b"].netns_handle
    assert handle is not None and not handle.closed
    fake.delete("snat-b")
    spin(ctx, lambda: "snat-b" not in manager.children)  # type: ignore[operator]
    assert FakeInput.calls[-2:] == [("released", "fake0.snat-b"), ("stop", "fake0.snat-b")]
    assert handle.closed and get_namespaces(ctx).lookup("snat-b") is None
    snap = ctx.stats.snapshot()
    assert snap["fake.fake0.starts"] == 1 and "fake.fake0.snat-b.starts" not in snap
    assert snap["fake.fake0.netns_attached"] == 2 and snap["fake.fake0.netns_detached"] == 1
    n = len(cap.records)
    children["snat-b"].push(3)  # a released child feeds nothing
    assert len(cap.records) == n

    stop_stack(stack)  # stopping: every child stopped, watcher and handles closed
    assert manager.children is None
    assert ("stop", "fake0.qrouter-" + RID) in FakeInput.calls
    assert ("released", "fake0.qrouter-" + RID) not in FakeInput.calls  # still exists: nothing ended
    assert open_fds() == before
    assert ctx.loop._timers == [] or all(t.cancelled for _, _, t in ctx.loop._timers)


def test_same_name_new_namespace_is_reattached(fake: FakeNamespaces) -> None:
    ctx = Context(loop=Loop())
    stack, manager, _ = follow(ctx, fake)
    fake.add("qrouter-a")
    spin(ctx, lambda: "qrouter-a" in manager.children)  # type: ignore[operator]
    first = manager.children["qrouter-a"]  # type: ignore[index]
    # Replaced between two looks (an inotify overflow, say): the rescan sees a new inode.
    os.rename(fake.dir / "qrouter-a", fake.dir.parent / "old")
    fake.add("qrouter-a")
    (fake.dir.parent / "old").unlink()
    watcher = manager._watcher
    assert watcher is not None
    watcher.rescan()
    spin(ctx, lambda: manager.children.get("qrouter-a") not in (None, first))  # type: ignore[union-attr]
    stop_stack(stack)


def test_attach_waits_for_the_mount(fake: FakeNamespaces) -> None:
    ctx, clock = fake_context()
    stack, manager, _ = follow(ctx, fake)
    fake.not_ready.add("qrouter-late")  # ip netns add: file created, not mounted yet
    fake.add("qrouter-late")
    spin(ctx, lambda: "qrouter-late" in fake.looked)  # inotify told: not a namespace yet
    clock.advance(watch_mod.RETRY_FIRST)
    ctx.loop.run_once(0)
    assert fake.looked.count("qrouter-late") == 2  # looked at again 5 ms later: still not mounted
    assert "qrouter-late" not in manager.children  # type: ignore[operator]
    fake.not_ready.clear()  # mounted
    clock.advance(watch_mod.RETRY_FIRST)
    ctx.loop.run_once(0)
    # The wait doubles (10 ms): not yet; then at the next look, not at the 5 s rescan.
    assert "qrouter-late" not in manager.children  # type: ignore[operator]
    clock.advance(watch_mod.RETRY_FIRST)
    spin(ctx, lambda: "qrouter-late" in manager.children)  # type: ignore[operator]
    stop_stack(stack)


def test_failed_attach_is_counted_and_retried_at_rescan(fake: FakeNamespaces) -> None:
    ctx = Context(loop=Loop())
    stack, manager, _ = follow(ctx, fake)
    FakeInput.fail = {"qrouter-busy"}
    fake.add("qrouter-busy")
    spin(ctx, lambda: ctx.stats.get("fake.fake0.netns_attach_failed") == 1)
    assert "qrouter-busy" not in manager.children  # type: ignore[operator]
    assert get_namespaces(ctx).lookup("qrouter-busy") is None  # its handle was closed again
    watcher = manager._watcher
    assert watcher is not None
    watcher.rescan()
    assert ctx.stats.get("fake.fake0.netns_attach_failed") == 2
    FakeInput.fail = set()
    watcher.rescan()
    assert "qrouter-busy" in manager.children  # type: ignore[operator]
    assert "fake.fake0.qrouter-busy.starts" in ctx.stats.snapshot()
    stop_stack(stack)


def test_failed_namespace_deleted_is_not_retried(fake: FakeNamespaces) -> None:
    ctx = Context(loop=Loop())
    stack, manager, _ = follow(ctx, fake)
    FakeInput.fail = {"qrouter-busy"}
    fake.add("qrouter-busy")
    spin(ctx, lambda: ctx.stats.get("fake.fake0.netns_attach_failed") == 1)
    fake.delete("qrouter-busy")
    spin(ctx, lambda: not manager._failed)
    FakeInput.fail = set()
    assert manager._watcher is not None
    manager._watcher.rescan()
    assert "qrouter-busy" not in manager.children  # type: ignore[operator]
    stop_stack(stack)


def test_two_inputs_share_one_watcher_and_one_handle(fake: FakeNamespaces) -> None:
    ctx = Context(loop=Loop())
    fake.add("qrouter-a")
    s1, m1, _ = follow(ctx, fake)
    s2, m2, _ = follow(ctx, fake, "qrouter-*")
    assert m1._watcher is m2._watcher
    h1 = m1.children["qrouter-a"].netns_handle  # type: ignore[index]
    h2 = m2.children["qrouter-a"].netns_handle  # type: ignore[index]
    assert h1 is h2 and h1 is not None
    stop_stack(s1)
    assert not h1.closed  # the other input still works there
    stop_stack(s2)
    assert h1.closed


def test_missing_directory_is_watched_for(fake: FakeNamespaces) -> None:
    ctx = Context(loop=Loop())
    later = fake.dir.parent / "later"
    cap = Capture(ctx, "cap", {})
    stack = make_stack([(FakeInput, {"netns": "*", "netns_dir": str(later)}), cap], ctx)
    manager = stack.source
    assert isinstance(manager, FakeInput) and manager.children == {}
    later.mkdir()
    (later / "qrouter-x").write_text("")
    spin(ctx, lambda: "qrouter-x" in manager.children)  # type: ignore[operator]
    stop_stack(stack)


def test_fixed_path(fake: FakeNamespaces) -> None:
    ctx = Context(loop=Loop())
    fake.add(f"qdhcp-{RID}")
    cap = Capture(ctx, "cap", {})
    stack = make_stack([(FakeInput, {"network_namespace_path": str(fake.dir / f"qdhcp-{RID}")}), cap], ctx)
    src = stack.source
    assert isinstance(src, FakeInput) and not src.follows and src.netns_handle is not None
    src.push(5)
    assert cap.value(cap.records[0], "oob.netns") == f"qdhcp-{RID}"
    assert cap.value(cap.records[0], "neutron.network_id") == RID
    handle = src.netns_handle
    stop_stack(stack)
    assert handle.closed and src.netns_handle is None


def test_fixed_path_missing_fails_start(fake: FakeNamespaces) -> None:
    with pytest.raises(PluginError, match="cannot use network namespace"):
        make_stack([(FakeInput, {"network_namespace_path": str(fake.dir / "nope")}), Capture])


def test_no_option_no_tags() -> None:
    ctx = Context(loop=Loop())
    cap = Capture(ctx, "cap", {})
    stack = make_stack([FakeInput, cap], ctx)
    src = stack.source
    assert isinstance(src, FakeInput) and not src.follows and src.netns_handle is None
    src.push(1)
    assert [cap.value(cap.records[0], k.name) for k in NETNS_KEYS] == [None, None, None]
    assert src.needed_capabilities() == {}
    stop_stack(stack)


@pytest.mark.parametrize(
    ("opts", "match"),
    [
        ({"netns": "qrouter-*", "network_namespace_path": "/run/netns/x"}, "exclude each other"),
        ({"netns": " , "}, "option 'netns'"),
        ({"netns": "a/b"}, "option 'netns'"),
    ],
)
def test_config_errors(opts: dict[str, Any], match: str) -> None:
    cfg = {o.name: o.default for o in FakeInput.options}
    cfg.update(opts)
    with pytest.raises(ConfigError, match=match):
        FakeInput(Context(loop=Loop()), "f", cfg).configure()


def test_relative_paths_are_made_absolute() -> None:
    cfg = {o.name: o.default for o in FakeInput.options}
    cfg.update(network_namespace_path="ns/x")
    p = FakeInput(Context(loop=Loop()), "f", cfg)
    p.configure()
    assert p.config["network_namespace_path"] == os.path.abspath("ns/x")


def test_capabilities_are_decided_per_instance() -> None:
    def inst(cls: type[NetnsSource], **opts: Any) -> NetnsSource:
        cfg = {o.name: o.default for o in cls.options}
        cfg.update(pollinterval=10, **opts)
        p = cls(Context(loop=Loop()), "i", cfg)
        p.configure()
        return p

    plain, following = inst(NflogInput), inst(NflogInput, netns="qrouter-*")
    fixed, acct = inst(NflogInput, network_namespace_path="/run/netns/x"), inst(NfacctInput, netns="snat-*")
    assert caps.wanted([plain]) == []
    assert caps.wanted([following]) == ["CAP_NET_ADMIN", "CAP_SYS_ADMIN"]
    assert caps.wanted([fixed]) == ["CAP_NET_ADMIN", "CAP_SYS_ADMIN"]
    why = caps.reasons([plain, following, acct])
    assert "NFLOG 'i' follows network namespaces (qrouter-* in /run/netns): setns()" in why["CAP_SYS_ADMIN"][0]
    assert any("dumps the nfacct counters" in r and "follows network namespaces (snat-*" in r
               for r in why["CAP_NET_ADMIN"])
    assert caps.wanted([NfacctInput]) == ["CAP_NET_ADMIN"]  # a class still works


# -- tagging costs nothing for sources without trailer values
def test_stack_tail_covers_trailer_keys() -> None:
    ctx = Context(loop=Loop())
    a, b = Capture(ctx, "a", {}), Capture(ctx, "b", {})
    s1 = make_stack([FakeInput, a], ctx)
    src = s1.source
    s2 = make_stack([src, b], ctx, start=False)
    # the trailer keys, then the audit keys' slots (core/loss.py): all None in ordinary records
    blank = [None] * (3 + len(AUDIT_KEYS))
    assert s1.tail == blank and s2.tail == blank
    src.set_trailer(tag_values("fip-n1"))
    src.push(7)
    for cap in (a, b):
        assert cap.value(cap.records[0], "neutron.network_id") == "n1"
        assert cap.value(cap.records[0], "v") == 7


# -- IFINDEX in the record's namespace
class NsPackets(Source):
    name = "NSPKT"
    output_type = DataType.RAW
    output_keys = NFLOG_KEYS + NETNS_KEYS
    trailer_keys = len(NETNS_KEYS)

    def send(self, ifin: int) -> None:
        self.emit([None] + [ifin if k.name == "oob.ifindex_in" else None for k in NFLOG_KEYS])


def test_ifindex_resolves_in_the_records_namespace(fake: FakeNamespaces) -> None:
    ctx = Context(loop=Loop())
    own = LinkCache(ctx, kernel=False)
    own.update({2: "eth0"})
    ctx.ifcache = own
    fake.add("qrouter-a")
    reg = get_namespaces(ctx)
    handle = reg.open(str(fake.dir / "qrouter-a"), "qrouter-a")
    ns_cache = LinkCache(ctx, kernel=False, netns=handle)  # stands in for one opened inside qrouter-a
    ns_cache.update({2: "qr-1a2b3c4d-5e"})
    ctx.ns_ifcaches[handle.ino] = ns_cache

    cap = Capture(ctx, "cap", {})
    stack = make_stack([NsPackets, IfindexFilter, cap], ctx)
    src = stack.source
    assert isinstance(src, NsPackets)
    src.send(2)  # own namespace
    src.set_trailer(tag_values("qrouter-a"))
    src.send(2)
    assert [cap.value(r, "oob.in") for r in cap.records] == ["eth0", "qr-1a2b3c4d-5e"]
    assert ns_cache.users == 1

    reg.close(handle)  # the inputs let the namespace go: its cache goes too
    assert ns_cache.users == 0 and handle.ino not in ctx.ns_ifcaches
    src.send(2)  # a late record of a namespace nobody works in: the number, counted
    assert cap.value(cap.records[-1], "oob.in") == "2"
    assert ctx.stats.get("ifindex.netns_unresolved") == 1
    stop_stack(stack)
    assert reg.on_close == []


# -- LOGEMU
class PrintNs(Source):
    name = "PRINTNS"
    output_type = DataType.PACKET
    output_keys = (Key("print", KeyType.STRING), Key("oob.time.sec", KeyType.UINT32)) + NETNS_KEYS
    trailer_keys = len(NETNS_KEYS)


@pytest.mark.parametrize(("prefix", "expect"), [
    (1, "Nov 27 07:22:05 vm [qrouter-a] IN=qr-1 OUT= \nNov 27 07:22:05 vm IN=lo OUT= \n"),
    (0, "Nov 27 07:22:05 vm IN=qr-1 OUT= \nNov 27 07:22:05 vm IN=lo OUT= \n"),
])  # fmt: skip
def test_logemu_netns_prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefix: int, expect: str) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        ctx = Context(loop=Loop())
        ctx.hostname = "vm"
        path = tmp_path / "emu.log"
        stack = make_stack([PrintNs, (LogemuOutput, {"file": str(path), "netns_prefix": prefix})], ctx)
        src = stack.source
        src.set_trailer(tag_values("qrouter-a"))
        src.emit([None, "IN=qr-1 OUT= \n", 1795764125])
        src.tails = None  # the daemon's own namespace
        src.emit([None, "IN=lo OUT= \n", 1795764125])
        stop_stack(stack)
        assert path.read_text() == expect
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_logemu_names_cannot_forge_a_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A namespace named with a newline and a fake syslog head, one that is not UTF-8, and a
    host name with a control character: one line per record, escaped (pyulogd.core.escape)."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        ctx = Context(loop=Loop())
        ctx.hostname = "vm\x1b"
        path = tmp_path / "emu.log"
        stack = make_stack([PrintNs, (LogemuOutput, {"file": str(path), "netns_prefix": 1})], ctx)
        src = stack.source
        for name in ("qtest-nl\nDec  7 00:00:00 fakehost FORGED: IN=eth0 SRC=6.6.6.6",
                     b"qtest-\xff\xfe".decode("utf-8", "surrogateescape"), "qrouter-a"):
            src.set_trailer(tag_values(name))
            src.emit([None, "IN=qr-1 OUT= \n", 1795764125])
            src.emit([None, "IN=qr-2 OUT= \n", 1795764125])  # the name again, from the cache
        stop_stack(stack)
        assert path.read_bytes().decode("utf-8").split("\n") == [
            "Nov 27 07:22:05 vm\\x1b [qtest-nl\\nDec  7 00:00:00 fakehost FORGED: IN=eth0 SRC=6.6.6.6] IN=qr-1 OUT= ",
            "Nov 27 07:22:05 vm\\x1b [qtest-nl\\nDec  7 00:00:00 fakehost FORGED: IN=eth0 SRC=6.6.6.6] IN=qr-2 OUT= ",
            "Nov 27 07:22:05 vm\\x1b [qtest-\\xff\\xfe] IN=qr-1 OUT= ",
            "Nov 27 07:22:05 vm\\x1b [qtest-\\xff\\xfe] IN=qr-2 OUT= ",
            "Nov 27 07:22:05 vm\\x1b [qrouter-a] IN=qr-1 OUT= ",
            "Nov 27 07:22:05 vm\\x1b [qrouter-a] IN=qr-2 OUT= ",
            "",
        ]
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


# -- the switch itself
def test_in_netns_none_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(io_netns, "setns", lambda fd, nstype=0: pytest.fail("setns called"))
    with in_netns(None):
        pass


def test_switching_back_failing_is_fatal(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[int] = []

    def setns(fd: int, nstype: int = io_netns.CLONE_NEWNET) -> None:
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(1, "setns: Operation not permitted")

    monkeypatch.setattr(io_netns, "setns", setns)
    (tmp_path / "f").write_text("")
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    handle = NetnsHandle("qrouter-x", str(tmp_path / "f"), fd, 1)
    with pytest.raises(WrongNamespace, match="cannot switch back .* after entering qrouter-x"), in_netns(handle):
        pass
    assert calls == [fd, io_netns.home_fd()]
    assert issubclass(WrongNamespace, SystemExit)  # no `except Exception` keeps the daemon going
    handle.close()
    with pytest.raises(OSError, match="no longer open"), in_netns(handle):
        pass


def test_entering_failing_leaves_us_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[int] = []

    def setns(fd: int, nstype: int = io_netns.CLONE_NEWNET) -> None:
        calls.append(fd)
        raise OSError(1, "setns: Operation not permitted")

    monkeypatch.setattr(io_netns, "setns", setns)
    (tmp_path / "f").write_text("")
    handle = NetnsHandle("x", str(tmp_path / "f"), os.open(tmp_path / "f", os.O_RDONLY), 1)
    with pytest.raises(OSError, match="not permitted"), in_netns(handle):
        pytest.fail("ran the block")
    assert len(calls) == 1
    handle.close()


def test_a_regular_file_is_not_a_namespace(tmp_path: Path) -> None:
    (tmp_path / "qrouter-x").write_text("")  # what ip netns add creates before it mounts
    assert io_netns.is_netns_file(str(tmp_path / "qrouter-x")) is None
    with pytest.raises(NotANamespace):
        NetnsHandle.open(str(tmp_path / "qrouter-x"))
    assert io_netns.is_netns_file("/proc/self/ns/net") is not None
