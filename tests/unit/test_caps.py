"""keep_capabilities(): what survives the -u switch. The uid changes happen in forked
children (they cannot be undone), which report their /proc/self/status through a pipe."""

from __future__ import annotations

import ctypes
import json
import os
import pwd
from collections.abc import Callable
from typing import Any

import pytest

from pyulogd.daemon import caps

CAP_NET_ADMIN = 1 << 12
PR_GET_KEEPCAPS = 7

root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (setuid)")


def nobody() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user nobody")


def status() -> dict[str, Any]:
    """Capability sets, uids and KEEPCAPS of the calling thread."""
    fields: dict[str, Any] = {}
    with open("/proc/thread-self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
                fields[key] = int(value, 16)
            elif key == "Uid":
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
    assert caps.capability_mask(["net_admin", "cap_net_raw"]) == CAP_NET_ADMIN | 1 << 13
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

    assert caps.wanted([A(), B(), A()]) == ["CAP_NET_ADMIN"]
    assert caps.wanted([B()]) == []
    assert "CAP_NET_ADMIN" in caps.wanted([NfacctInput])


def test_no_names_does_nothing() -> None:
    before = caps.get_capabilities()
    with caps.keep_capabilities([]) as kc:
        assert status()["keepcaps"] == 0
    assert kc.kept == [] and caps.get_capabilities() == before


@root
def test_plain_setuid_keeps_nothing() -> None:
    user = nobody()

    def body() -> dict[str, Any]:
        drop(user)
        return status()

    st = in_child(body)
    assert (st["CapEff"], st["CapPrm"]) == (0, 0)


@root
def test_keeps_exactly_the_named_capability() -> None:
    user = nobody()

    def body() -> dict[str, Any]:
        with caps.keep_capabilities(["CAP_NET_ADMIN"]) as kc:
            drop(user)
        return {**status(), "kept": kc.kept}

    st = in_child(body)
    assert "error" not in st, st
    assert st["Uid"] == [user.pw_uid] * 4
    assert (st["CapEff"], st["CapPrm"], st["CapInh"], st["CapAmb"]) == (CAP_NET_ADMIN, CAP_NET_ADMIN, 0, 0)
    assert st["kept"] == ["CAP_NET_ADMIN"]
    assert st["keepcaps"] == 0  # a later setuid/exec keeps nothing by accident


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
    assert "CAP_NET_ADMIN" in st["kept"] and "CAP_SYS_ADMIN" in st["kept"]


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
    assert st["kept"] == ["CAP_NET_RAW"] and st["CapEff"] == 1 << 13
