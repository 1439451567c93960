"""Capabilities: what survives the -u switch, and raising them only while needed.

Two halves:

* a recording fake :class:`~pyulogd.core.caps.Kernel`: every raise is paired with a drop,
  also when the block raises; a failed raise changes nothing; a failed drop stops the
  daemon; other threads and a process never lowered are left alone; ``confine`` cuts the
  bounding set, empties effective/inheritable/ambient and sets no_new_privs; and the
  netlink and namespace primitives (io/netlink.py, io/netns.py) raise exactly around the
  calls the kernel checks (real sockets as root, the fake only records);
* the real kernel, in forked children (uid changes cannot be undone), which report their
  /proc/thread-self/status through a pipe.
"""

from __future__ import annotations

import ast
import ctypes
import errno
import json
import os
import pwd
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pyulogd.core import caps as core_caps
from pyulogd.core.caps import Privileges, StillPrivileged
from pyulogd.daemon import caps

CAP_NET_ADMIN = 1 << 12
CAP_NET_RAW = 1 << 13
CAP_SYS_ADMIN = 1 << 21
CAP_SETPCAP = 1 << 8
PR_GET_KEEPCAPS = 7
PR_GET_NO_NEW_PRIVS = 39
LAST_CAP = 40
ALL = (1 << (LAST_CAP + 1)) - 1

root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (setuid)")


# -- the fake kernel


class FakeKernel:
    """A thread's capability sets and the calls made on them, as the kernel would check them
    (a raise beyond the permitted set is refused, as capset() refuses it)."""

    def __init__(self, permitted: int = ALL, fail: str = "") -> None:
        self.eff, self.prm, self.inh = permitted, permitted, 0
        self.bounding = ALL
        self.calls: list[tuple[Any, ...]] = []
        self.fail = fail  # "raise", "drop" or "bounding": make that call fail with EPERM

    def get(self) -> tuple[int, int, int]:
        return self.eff, self.prm, self.inh

    def set(self, effective: int, permitted: int, inheritable: int) -> None:
        raising = effective & ~self.eff
        if ((self.fail == "raise" and raising) or (self.fail == "drop" and not raising and effective != self.eff)
                or effective & ~permitted or permitted & ~self.prm):  # fmt: skip
            raise OSError(errno.EPERM, "capset refused")
        self.calls.append(("set", effective, permitted, inheritable))
        self.eff, self.prm, self.inh = effective, permitted, inheritable

    def prctl(self, option: int, arg: int = 0, arg2: int = 0) -> int:
        if option == core_caps.PR_CAPBSET_DROP:
            if self.fail == "bounding" or not self.eff & CAP_SETPCAP:
                raise OSError(errno.EPERM, "prctl refused")
            self.bounding &= ~(1 << arg)
        self.calls.append(("prctl", option, arg))
        return 0

    def last_cap(self) -> int:
        return LAST_CAP


def lowered(keep: int = CAP_NET_ADMIN | CAP_SYS_ADMIN, **kw: Any) -> tuple[FakeKernel, Privileges]:
    k = FakeKernel(**kw)
    p = Privileges(k)
    assert p.lower(keep) == keep
    k.calls.clear()
    return k, p


def test_lower_empties_the_effective_set_and_keeps_the_permitted() -> None:
    k = FakeKernel()
    p = Privileges(k)
    assert not p.lowered
    assert p.lower(CAP_NET_ADMIN | CAP_SYS_ADMIN) == CAP_NET_ADMIN | CAP_SYS_ADMIN
    assert k.calls == [("set", 0, CAP_NET_ADMIN | CAP_SYS_ADMIN, 0)]
    assert p.lowered and p.held == CAP_NET_ADMIN | CAP_SYS_ADMIN


def test_each_raise_is_paired_with_a_drop() -> None:
    k, p = lowered()
    held = CAP_NET_ADMIN | CAP_SYS_ADMIN
    with p.raised("CAP_NET_ADMIN"):
        assert k.eff == CAP_NET_ADMIN
    assert k.eff == 0
    assert k.calls == [("set", CAP_NET_ADMIN, held, 0), ("set", 0, held, 0)]
    assert p.raises == 1


def test_nested_raises_restore_the_outer_set() -> None:
    k, p = lowered()
    held = CAP_NET_ADMIN | CAP_SYS_ADMIN
    with p.raised("CAP_NET_ADMIN"):
        with p.raised("CAP_SYS_ADMIN"):
            assert k.eff == held
        assert k.eff == CAP_NET_ADMIN
        with p.raised("net_admin"):  # already effective: no call at all
            assert k.eff == CAP_NET_ADMIN
    assert k.eff == 0
    assert [c[1] for c in k.calls] == [CAP_NET_ADMIN, held, CAP_NET_ADMIN, 0]


def test_never_left_raised_after_an_exception() -> None:
    k, p = lowered()
    with pytest.raises(ValueError, match="boom"):
        with p.raised("CAP_NET_ADMIN", "CAP_SYS_ADMIN"):
            assert k.eff == CAP_NET_ADMIN | CAP_SYS_ADMIN
            raise ValueError("boom")
    assert k.eff == 0 and p.effective == 0
    # A BaseException too (the loop's SystemExit, a KeyboardInterrupt).
    with pytest.raises(KeyboardInterrupt):
        with p.raised("CAP_NET_ADMIN"):
            raise KeyboardInterrupt
    assert k.eff == 0
    assert [c[1] for c in k.calls] == [CAP_NET_ADMIN | CAP_SYS_ADMIN, 0, CAP_NET_ADMIN, 0]


def test_a_refused_raise_changes_nothing_and_skips_the_block() -> None:
    k, p = lowered(fail="raise")
    ran = []
    with pytest.raises(OSError, match="capset refused"):
        with p.raised("CAP_NET_ADMIN"):
            ran.append(1)
    assert ran == [] and k.calls == [] and k.eff == 0 and p.effective == 0


def test_a_failed_drop_stops_the_daemon() -> None:
    k, p = lowered()
    k.fail = "drop"
    with pytest.raises(StillPrivileged, match="cannot drop CAP_NET_ADMIN"):
        try:
            with p.raised("CAP_NET_ADMIN"):
                pass
        except Exception:  # what a plugin's error handling would catch: not this
            pytest.fail("StillPrivileged must not be an Exception")
    assert issubclass(StillPrivileged, SystemExit)


def test_nothing_happens_before_lowering_or_in_other_threads_or_for_caps_not_held() -> None:
    k = FakeKernel()
    p = Privileges(k)
    with p.raised("CAP_NET_ADMIN"):
        pass
    assert k.calls == []  # never lowered (root without -u): everything effective anyway

    k, p = lowered(CAP_NET_ADMIN)
    with p.raised("CAP_SYS_ADMIN"):  # not kept: nothing to raise, the kernel will refuse
        assert k.eff == 0
    seen: list[int] = []

    def other() -> None:
        with p.raised("CAP_NET_ADMIN"):
            seen.append(k.eff)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert seen == [0] and k.calls == [] and p.raises == 0


def test_unknown_names_are_refused() -> None:
    _k, p = lowered()
    with pytest.raises(ValueError, match="CAP_NOPE"):
        p.raised("CAP_NOPE")


def test_confine_cuts_the_bounding_set_and_sets_no_new_privs() -> None:
    k = FakeKernel()
    p = Privileges(k)
    # After setuid() with KEEPCAPS the effective set is empty, the permitted one full.
    k.eff = 0
    keep = CAP_NET_ADMIN | CAP_SYS_ADMIN
    assert caps.confine(keep, p) == keep
    assert k.bounding == keep
    assert (k.eff, k.prm, k.inh) == (0, keep, 0)
    assert k.calls[0] == ("set", CAP_SETPCAP, ALL, 0)  # only CAP_SETPCAP, only for the drops
    drops = [c[2] for c in k.calls if c[:2] == ("prctl", core_caps.PR_CAPBSET_DROP)]
    assert sorted(drops) == [b for b in range(LAST_CAP + 1) if not keep >> b & 1]
    ambient = ("prctl", core_caps.PR_CAP_AMBIENT, core_caps.PR_CAP_AMBIENT_CLEAR_ALL)
    assert k.calls[-3:] == [("set", 0, keep, 0), ambient, ("prctl", core_caps.PR_SET_NO_NEW_PRIVS, 1)]
    assert p.lowered


def test_confine_lowers_even_when_the_bounding_set_cannot_be_cut() -> None:
    k = FakeKernel(fail="bounding")
    k.eff = 0
    p = Privileges(k)
    with pytest.raises(OSError, match="prctl refused"):
        caps.confine(CAP_NET_ADMIN, p)
    assert (k.eff, k.prm, k.inh) == (0, CAP_NET_ADMIN, 0) and p.lowered


def test_confine_unprivileged() -> None:
    k = FakeKernel(permitted=0)
    assert caps.confine_unprivileged(["CAP_NET_ADMIN"], Privileges(k)) is None
    assert k.calls == []
    # Ambient CAP_NET_ADMIN and CAP_SYS_ADMIN, no CAP_SETPCAP: the bounding set stays as it is.
    k = FakeKernel(permitted=CAP_NET_ADMIN | CAP_SYS_ADMIN)
    k.inh = CAP_NET_ADMIN | CAP_SYS_ADMIN
    assert caps.confine_unprivileged(["CAP_NET_ADMIN"], Privileges(k)) == ["CAP_NET_ADMIN"]
    assert (k.eff, k.prm, k.inh, k.bounding) == (0, CAP_NET_ADMIN, 0, ALL)


# -- the primitives raise around exactly the calls the kernel checks


@pytest.fixture()
def recorded() -> Iterator[FakeKernel]:
    """The process's Privileges replaced by a lowered one on a fake kernel (the test runs as
    root, so the real calls succeed whatever the fake says)."""
    k, p = lowered()
    old = core_caps.use(p)
    try:
        yield k
    finally:
        core_caps.use(old)


def pairs(k: FakeKernel) -> list[int]:
    """The capabilities raised, one entry per raise, checking each was dropped right after."""
    raised = []
    for up, down in zip(k.calls[::2], k.calls[1::2], strict=True):
        assert up[0] == down[0] == "set" and down[1] == 0 and up[1] != 0, k.calls
        raised.append(up[1])
    return raised


@root
def test_netlink_operations_raise_and_drop(recorded: FakeKernel) -> None:
    from pyulogd.codec import nfacct, nflog
    from pyulogd.io.netlink import NetlinkSocket

    k = recorded
    sock = NetlinkSocket()
    try:
        assert pairs(k) == [CAP_NET_ADMIN]  # socket() and bind(): the opener's credentials count
        k.calls.clear()
        sock.send(nfacct.dump_request(sock.next_seq(), zero=False, pid=sock.portid))
        assert pairs(k) == [CAP_NET_ADMIN]
        k.calls.clear()
        sock.set_rcvbuf(1 << 18)
        assert pairs(k) == [CAP_NET_ADMIN]
        k.calls.clear()
        # A configuration request for a group nobody bound: the kernel answers with an error
        # (nothing changes), and the capability is dropped all the same.
        with pytest.raises(OSError):
            sock.request(nflog.set_mode(65533, seq=sock.next_seq()), timeout=2.0)
        assert pairs(k) == [CAP_NET_ADMIN]
        k.calls.clear()
        sock.recv()  # reading needs nothing
        sock.rcvbuf()
        assert k.calls == []
    finally:
        sock.close()


@root
def test_setns_raises_sys_admin_for_each_switch_only(recorded: FakeKernel) -> None:
    from pyulogd.io.netns import NetnsHandle, in_netns

    k = recorded
    h = NetnsHandle.open("/proc/self/ns/net")  # our own namespace: the switch changes nothing
    try:
        with in_netns(h):
            inside = k.eff
        assert inside == 0  # the block itself runs without CAP_SYS_ADMIN
        assert pairs(k) == [CAP_SYS_ADMIN, CAP_SYS_ADMIN]  # into the namespace, and back
    finally:
        h.close()


def test_netlink_sockets_are_only_written_through_the_raising_methods() -> None:
    """``x.sock.send(...)`` or SO_RCVBUFFORCE outside io/netlink.py would skip the raise
    and fail with EPERM after -u (NFCT's and NFACCT's dumps once did it)."""
    src = Path(core_caps.__file__).resolve().parents[1]
    bad = []
    for path in src.rglob("*.py"):
        if path.name == "netlink.py" and path.parent.name == "io":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("send", "sendto", "sendmsg")
                    and isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "sock"):  # fmt: skip
                bad.append(f"{path.relative_to(src)}:{node.lineno}")
            if isinstance(node, ast.Name) and node.id == "SO_RCVBUFFORCE":
                bad.append(f"{path.relative_to(src)}:{node.lineno} SO_RCVBUFFORCE")
    assert bad == []


# -- the real kernel


def nobody() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user nobody")


def status() -> dict[str, Any]:
    """Capability sets, uids, KEEPCAPS and no_new_privs of the calling thread."""
    fields: dict[str, Any] = {}
    with open("/proc/thread-self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("CapInh", "CapPrm", "CapEff", "CapAmb", "CapBnd"):
                fields[key] = int(value, 16)
            elif key in ("Uid", "NoNewPrivs"):
                fields[key] = [int(x) for x in value.split()]
    libc = ctypes.CDLL(None, use_errno=True)
    fields["keepcaps"] = libc.prctl(PR_GET_KEEPCAPS, 0, 0, 0, 0)
    return fields


def in_child(body: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``body`` in a forked child; its result (or its exception's text) comes back."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(r)
        try:
            result = body()
        except BaseException as e:
            result = {"error": f"{type(e).__name__}: {e}"}
        os.write(w, json.dumps(result).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    out: dict[str, Any] = json.loads(data)
    return out


def drop(user: pwd.struct_passwd) -> None:
    os.setgid(user.pw_gid)
    os.initgroups(user.pw_name, user.pw_gid)
    os.setuid(user.pw_uid)


def test_names_and_masks() -> None:
    assert caps.capability_mask(["CAP_NET_ADMIN"]) == CAP_NET_ADMIN
    assert caps.capability_mask(["net_admin", "cap_net_raw"]) == CAP_NET_ADMIN | CAP_NET_RAW
    assert caps.capability_mask([]) == 0
    with pytest.raises(ValueError, match="CAP_NOPE"):
        caps.capability_mask(["CAP_NOPE"])
    assert caps.mask_names(CAP_NET_ADMIN | 1) == ["CAP_CHOWN", "CAP_NET_ADMIN"]


def test_wanted_collects_what_plugins_declare() -> None:
    class A:
        capabilities = ("CAP_NET_ADMIN",)

    class B:
        pass

    from pyulogd.plugins.inputs.nfacct import NfacctInput
    from pyulogd.plugins.inputs.nfct import NfctInput

    assert caps.wanted([A(), B(), A()]) == ["CAP_NET_ADMIN"]
    assert caps.wanted([B()]) == []
    assert "CAP_NET_ADMIN" in caps.wanted([NfacctInput])
    assert "CAP_NET_ADMIN" in caps.wanted([NfctInput])  # its dumps after start


@root
def test_plain_setuid_keeps_nothing() -> None:
    user = nobody()

    def body() -> dict[str, Any]:
        drop(user)
        return status()

    st = in_child(body)
    assert (st["CapEff"], st["CapPrm"]) == (0, 0)


@root
def test_keeps_the_named_capability_permitted_and_raises_it_on_demand() -> None:
    user = nobody()

    def body() -> dict[str, Any]:
        with caps.keep_capabilities(["CAP_NET_ADMIN"]) as kc:
            drop(user)
        after = status()
        with core_caps.raised("CAP_NET_ADMIN"):
            inside = status()
        with core_caps.raised("CAP_SYS_ADMIN"):  # not kept: nothing to raise
            not_kept = status()
        try:
            with core_caps.raised("CAP_NET_ADMIN"):
                raise RuntimeError("in the block")
        except RuntimeError:
            pass
        return {"after": after, "inside": inside, "not_kept": not_kept, "end": status(), "kept": kc.kept}

    st = in_child(body)
    assert "error" not in st, st
    after = st["after"]
    assert after["Uid"] == [user.pw_uid] * 4
    assert (after["CapEff"], after["CapPrm"], after["CapInh"], after["CapAmb"]) == (0, CAP_NET_ADMIN, 0, 0)
    assert after["CapBnd"] == CAP_NET_ADMIN  # an execve() can never gain anything else
    assert after["NoNewPrivs"] == [1]
    assert after["keepcaps"] == 0  # a later setuid/exec keeps nothing by accident
    assert st["kept"] == ["CAP_NET_ADMIN"]
    assert (st["inside"]["CapEff"], st["inside"]["CapPrm"]) == (CAP_NET_ADMIN, CAP_NET_ADMIN)
    assert st["not_kept"]["CapEff"] == 0
    assert (st["end"]["CapEff"], st["end"]["CapPrm"]) == (0, CAP_NET_ADMIN)


@root
def test_keeping_nothing_still_cuts_the_bounding_set() -> None:
    user = nobody()

    def body() -> dict[str, Any]:
        with caps.keep_capabilities([]) as kc:
            drop(user)
        return {**status(), "kept": kc.kept}

    st = in_child(body)
    assert "error" not in st, st
    assert (st["CapEff"], st["CapPrm"], st["CapBnd"], st["kept"]) == (0, 0, 0, [])
    assert st["NoNewPrivs"] == [1] and st["keepcaps"] == 0


@root
def test_threads_started_after_the_drop_hold_nothing_effective_and_cannot_raise() -> None:
    user = nobody()

    def body() -> dict[str, Any]:
        with caps.keep_capabilities(["CAP_NET_ADMIN"]):
            drop(user)
        seen: dict[str, Any] = {}
        go, done = threading.Event(), threading.Event()

        def writer() -> None:  # as the SQL writer threads: started after the drop
            seen["start"] = status()
            with core_caps.raised("CAP_NET_ADMIN"):  # not the lowering thread: nothing raised
                seen["raised"] = status()
            go.wait(10)
            seen["while_main_raised"] = status()
            done.set()

        t = threading.Thread(target=writer)
        t.start()
        with core_caps.raised("CAP_NET_ADMIN"):  # per thread: the writer's sets do not change
            seen["main"] = status()
            go.set()
            done.wait(10)
        t.join()
        return seen

    st = in_child(body)
    assert "error" not in st, st
    assert (st["start"]["CapEff"], st["start"]["CapPrm"]) == (0, CAP_NET_ADMIN)
    assert st["raised"]["CapEff"] == 0
    assert st["main"]["CapEff"] == CAP_NET_ADMIN and st["while_main_raised"]["CapEff"] == 0


@root
def test_exception_in_the_block_propagates_and_resets_keepcaps() -> None:
    def body() -> dict[str, Any]:
        try:
            with caps.keep_capabilities(["CAP_NET_ADMIN"]):
                raise PermissionError("setuid failed")
        except PermissionError as e:
            return {**status(), "raised": str(e)}
        return {}

    st = in_child(body)
    assert st["raised"] == "setuid failed" and st["keepcaps"] == 0
    assert st["Uid"][0] == 0 and st["CapEff"] != 0  # still root, untouched


@root
def test_still_root_keeps_everything() -> None:
    def body() -> dict[str, Any]:
        before = status()
        with caps.keep_capabilities(["CAP_NET_ADMIN"]) as kc:
            os.setuid(0)
        return {"before": before, "after": status(), "kept": kc.kept}

    st = in_child(body)
    assert st["after"]["CapEff"] == st["before"]["CapEff"] != 0
    assert st["after"]["CapBnd"] == st["before"]["CapBnd"]
    assert "CAP_NET_ADMIN" in st["kept"] and "CAP_SYS_ADMIN" in st["kept"]
    assert st["after"]["keepcaps"] == 0


@root
def test_capability_the_process_lacks_is_not_invented() -> None:
    user = nobody()

    def body() -> dict[str, Any]:
        eff, prm, inh = caps.get_capabilities()
        caps.set_capabilities(eff & ~CAP_NET_ADMIN, prm & ~CAP_NET_ADMIN, inh)
        with caps.keep_capabilities(["CAP_NET_ADMIN", "CAP_NET_RAW"]) as kc:
            drop(user)
        return {**status(), "kept": kc.kept}

    st = in_child(body)
    assert st["kept"] == ["CAP_NET_RAW"] and (st["CapEff"], st["CapPrm"]) == (0, CAP_NET_RAW)
