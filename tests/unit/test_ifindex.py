"""IFINDEX: the rtnetlink codec on hand-made bytes, the link cache, the filter, and the kernel."""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from pyulogd.codec import rtnl
from pyulogd.core.context import Context
from pyulogd.core.errors import PluginError
from pyulogd.core.plugin import KeyType
from pyulogd.io.loop import Loop
from pyulogd.io.rtnl import LinkCache, get_link_cache
from pyulogd.plugins.filters.ifindex import IfindexFilter
from tests.helpers import Capture, NflogKeys, make_stack, stop_stack

SRC = Path(__file__).resolve().parents[2] / "src"


# -- hand-made rtnetlink messages
def attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def link_msg(event: int, index: int, name: str | None, seq: int = 0, extra: bytes = b"") -> bytes:
    body = struct.pack("=BxHiII", 0, 1, index, 0, 0) + extra
    if name is not None:
        body += attr(rtnl.IFLA_IFNAME, name.encode() + b"\0")
    return struct.pack("=IHHII", 16 + len(body), event, 0, seq, 0) + body


def done_msg(seq: int) -> bytes:
    return struct.pack("=IHHIIi", 20, rtnl.NLMSG_DONE, rtnl.NLM_F_MULTI, seq, 0, 0)


def error_msg(seq: int, err: int) -> bytes:
    return struct.pack("=IHHIIi", 36, rtnl.NLMSG_ERROR, 0, seq, 0, -err) + bytes(16)


def test_parse_new_and_del_link() -> None:
    mtu = attr(4, struct.pack("=I", 1500))
    buf = link_msg(rtnl.RTM_NEWLINK, 2, "eth0", extra=mtu) + link_msg(rtnl.RTM_DELLINK, 7, None)
    batch = rtnl.parse_buffer(buf)
    assert batch.links == [(rtnl.RTM_NEWLINK, 2, "eth0"), (rtnl.RTM_DELLINK, 7, None)]
    assert batch.malformed == 0 and batch.done == [] and batch.errors == []


def test_parse_dump_end_error_and_unrelated_messages() -> None:
    route = struct.pack("=IHHII", 28, 24, 0, 5, 0) + bytes(12)  # RTM_NEWROUTE: skipped
    buf = link_msg(rtnl.RTM_NEWLINK, 1, "lo", seq=5) + route + done_msg(5) + error_msg(6, 19)
    batch = rtnl.parse_buffer(buf)
    assert batch.links == [(rtnl.RTM_NEWLINK, 1, "lo")]
    assert batch.seqs == [5]
    assert batch.done == [5]
    assert batch.errors == [(6, 19)]


def test_name_bytes_that_are_not_utf8_survive() -> None:
    body = struct.pack("=BxHiII", 0, 1, 3, 0, 0) + attr(rtnl.IFLA_IFNAME, b"v\xffx\0")
    msg = struct.pack("=IHHII", 16 + len(body), rtnl.RTM_NEWLINK, 0, 0, 0) + body
    (link,) = rtnl.parse_buffer(msg).links
    assert link.name is not None and link.name.encode("utf-8", "surrogateescape") == b"v\xffx"


@pytest.mark.parametrize(
    "bad",
    [
        link_msg(rtnl.RTM_NEWLINK, 2, None),  # NEWLINK without a name
        link_msg(rtnl.RTM_NEWLINK, 0, "x"),  # index 0
        struct.pack("=IHHII", 20, rtnl.RTM_NEWLINK, 0, 0, 0) + bytes(4),  # ifinfomsg cut short
        struct.pack("=IHHII", 16, rtnl.NLMSG_ERROR, 0, 0, 0),  # error without errno
    ],
)
def test_malformed_messages_are_counted(bad: bytes) -> None:
    good = link_msg(rtnl.RTM_NEWLINK, 9, "ok")
    batch = rtnl.parse_buffer(bad + good)
    assert batch.malformed == 1
    assert batch.links == [(rtnl.RTM_NEWLINK, 9, "ok")]


def test_attribute_overrunning_its_message_is_malformed() -> None:
    body = struct.pack("=BxHiII", 0, 1, 4, 0, 0) + struct.pack("=HH", 200, rtnl.IFLA_IFNAME) + b"eth0"
    msg = struct.pack("=IHHII", 16 + len(body), rtnl.RTM_NEWLINK, 0, 0, 0) + body
    assert rtnl.parse_buffer(msg).malformed == 1


def test_truncation_at_every_length_never_raises() -> None:
    buf = link_msg(rtnl.RTM_NEWLINK, 2, "eth0") + link_msg(rtnl.RTM_DELLINK, 3, "veth1") + done_msg(1)
    for n in range(len(buf) + 1):
        batch = rtnl.parse_buffer(buf[:n])
        assert len(batch.links) <= 2
    # a header claiming more than the buffer holds ends the walk, counted once
    batch = rtnl.parse_buffer(buf[:20])
    assert batch.malformed == 1 and batch.links == []


def test_random_bytes_never_raise() -> None:
    rnd = __import__("random").Random(7)
    for _ in range(2000):
        rtnl.parse_buffer(bytes(rnd.randrange(256) for _ in range(rnd.randrange(80))))


def test_getlink_requests() -> None:
    dump = rtnl.getlink_request(42)
    length, kind, flags, seq, pid = struct.unpack_from("=IHHII", dump)
    assert (length, kind, seq, pid) == (len(dump), rtnl.RTM_GETLINK, 42, 0)
    assert flags == rtnl.NLM_F_REQUEST | rtnl.NLM_F_DUMP
    one = rtnl.getlink_request(43, 17)
    _l, _k, flags, _s, _p = struct.unpack_from("=IHHII", one)
    assert flags == rtnl.NLM_F_REQUEST
    assert struct.unpack_from("=BxHiII", one, 16)[2] == 17


# -- the cache without a kernel
def test_cache_updates_renames_and_keeps_deleted_names() -> None:
    ctx = Context(loop=Loop())
    cache = LinkCache(ctx, kernel=False, keep_deleted=2)
    names = cache.names
    batch = rtnl.parse_buffer(
        link_msg(rtnl.RTM_NEWLINK, 2, "eth0") + link_msg(rtnl.RTM_NEWLINK, 3, "veth0")
        + link_msg(rtnl.RTM_NEWLINK, 2, "wan0")  # rename
        + link_msg(rtnl.RTM_DELLINK, 3, "veth0")
    )  # fmt: skip
    cache._apply(batch)
    assert cache.names is names  # updated in place: filters hold a reference
    # a packet logged before the veth went away still gets its name
    assert names == {2: "wan0", 3: "veth0"}
    for i in (4, 5, 6):
        cache._apply(rtnl.parse_buffer(link_msg(rtnl.RTM_NEWLINK, i, f"v{i}")))
        cache._apply(rtnl.parse_buffer(link_msg(rtnl.RTM_DELLINK, i, f"v{i}")))
    assert 3 not in names and 4 not in names and names[5] == "v5" and names[6] == "v6"


def test_cache_counts_malformed() -> None:
    ctx = Context(loop=Loop())
    cache = LinkCache(ctx, kernel=False)
    cache._apply(rtnl.parse_buffer(link_msg(rtnl.RTM_NEWLINK, 2, None)))
    assert ctx.stats.get("ifindex.rtnl.malformed") == 1


def test_one_cache_per_context() -> None:
    ctx, other = Context(loop=Loop()), Context(loop=Loop())
    assert get_link_cache(ctx) is get_link_cache(ctx)
    assert get_link_cache(ctx) is not get_link_cache(other)


# -- the filter
def static_ctx(names: dict[int, str]) -> Context:
    ctx = Context(loop=Loop())
    cache = LinkCache(ctx, kernel=False)
    cache.update(names)
    ctx.ifcache = cache  # type: ignore[attr-defined]
    return ctx


def run(ctx: Context, values: dict[str, Any]) -> tuple[Any, Any]:
    cap = Capture(ctx, "cap", {})
    stack = make_stack([NflogKeys, IfindexFilter, cap], ctx)
    stack.source.emit_dict(values)  # type: ignore[attr-defined]
    stop_stack(stack)
    rec = cap.records[-1]
    return cap.value(rec, "oob.in"), cap.value(rec, "oob.out")


def test_declarations() -> None:
    assert IfindexFilter.name == "IFINDEX" and IfindexFilter.so_name == "ulogd_filter_IFINDEX.so"
    assert [(k.name, k.type, k.optional) for k in IfindexFilter.input_keys] == [
        ("oob.ifindex_in", KeyType.UINT32, False),
        ("oob.ifindex_out", KeyType.UINT32, False),
        ("oob.netns", KeyType.STRING, True),  # pyulogd: names are resolved in the record's namespace
    ]
    assert [(k.name, k.type) for k in IfindexFilter.output_keys] == [
        ("oob.in", KeyType.STRING),
        ("oob.out", KeyType.STRING),
    ]


def test_names_and_empty_strings() -> None:
    ctx = static_ctx({1: "lo", 2: "gbb0"})
    assert run(ctx, {"oob.ifindex_in": 2}) == ("gbb0", "")
    assert run(ctx, {"oob.ifindex_out": 1}) == ("", "lo")
    assert run(ctx, {"oob.ifindex_in": 0, "oob.ifindex_out": 0}) == ("", "")


def test_unknown_index_is_logged_as_its_number_not_a_stale_name() -> None:
    ctx = static_ctx({2: "gbb0"})
    assert run(ctx, {"oob.ifindex_in": 2}) == ("gbb0", "")
    assert run(ctx, {"oob.ifindex_in": 77}) == ("77", "")
    assert ctx.stats.get("ifindex.unknown") == 1


def test_instances_share_the_cache_and_release_it() -> None:
    ctx = static_ctx({2: "gbb0"})
    a = make_stack([NflogKeys, IfindexFilter, Capture], ctx)
    b = make_stack([NflogKeys, IfindexFilter, Capture], ctx)
    fa, fb = a.instances[1], b.instances[1]
    assert fa._cache is fb._cache is ctx.ifcache  # type: ignore[attr-defined]
    assert ctx.ifcache._users == 2  # type: ignore[attr-defined]
    stop_stack(a)
    stop_stack(b)
    assert ctx.ifcache._users == 0  # type: ignore[attr-defined]
    fa.stop()  # a second stop is harmless


# -- the machine's own kernel
def netlink_route_available() -> bool:
    try:
        socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE).close()
    except (OSError, AttributeError):
        return False
    return True


needs_rtnetlink = pytest.mark.skipif(not netlink_route_available(), reason="no AF_NETLINK/NETLINK_ROUTE")


@needs_rtnetlink
def test_live_dump_knows_lo_as_index_1() -> None:
    ctx = Context(loop=Loop())
    cache = get_link_cache(ctx)
    cache.acquire()
    try:
        assert cache.names[1] == "lo"
        assert dict(socket.if_nameindex()).items() <= cache.names.items()
    finally:
        cache.release()
        ctx.loop.close()


@needs_rtnetlink
def test_live_unknown_index_asks_the_kernel_once() -> None:
    ctx = Context(loop=Loop())
    cache = get_link_cache(ctx)
    cache.acquire()
    try:
        missing = max(cache.names) + 1000
        assert cache.name(missing) == str(missing)
        assert cache.name(missing) == str(missing)
        assert ctx.stats.get("ifindex.rtnl.queries") == 1  # not again within the second
        assert ctx.stats.get("ifindex.unknown") == 2
        cache.names.pop(1)  # forget lo: a direct question brings it back
        assert cache.name(1) == "lo"
    finally:
        cache.release()
        ctx.loop.close()


def test_acquire_failure_is_a_plugin_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_a: Any, **_k: Any) -> None:
        raise PermissionError(1, "Operation not permitted")

    ctx = Context(loop=Loop())
    cache = LinkCache(ctx)
    monkeypatch.setattr(cache, "_open", refuse)
    with pytest.raises(PluginError, match="interface table"):
        cache.acquire()
    assert cache._users == 0


LIVE_NOTIFICATIONS = textwrap.dedent(
    """
    import subprocess
    from pyulogd.core.context import Context
    from pyulogd.io.loop import Loop
    from pyulogd.io.rtnl import get_link_cache

    def ip(*args):
        subprocess.run(["ip", "link", *args], check=True)

    ctx = Context(loop=Loop())
    cache = get_link_cache(ctx)
    cache.acquire()
    assert cache.names == {1: "lo"}, cache.names
    ip("add", "pyu0", "type", "veth", "peer", "name", "pyu1")
    ctx.loop.run_once(1.0)
    idx = {v: k for k, v in cache.names.items()}
    assert {"pyu0", "pyu1"} <= set(idx), cache.names
    ip("set", "pyu0", "name", "pyu9")
    ctx.loop.run_once(1.0)
    assert cache.names[idx["pyu0"]] == "pyu9", cache.names
    ip("del", "pyu9")
    ctx.loop.run_once(1.0)
    ctx.loop.run_once(0.1)
    # deleted, but a late packet from it still gets its name
    assert cache.name(idx["pyu0"]) == "pyu9" and cache.name(idx["pyu1"]) == "pyu1"
    assert ctx.stats.get("ifindex.rtnl.queries") == 0, ctx.stats.snapshot()
    cache.release()
    print("OK")
    """
)


@pytest.mark.linux
@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"),
    reason="needs root, unshare and ip",
)
def test_live_notifications_in_a_private_namespace() -> None:
    env = dict(os.environ, PYTHONPATH=f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", LIVE_NOTIFICATIONS],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    if proc.returncode != 0 and "Operation not permitted" in proc.stderr:
        pytest.skip("network namespaces not allowed here")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "OK"
