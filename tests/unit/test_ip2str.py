"""IP2STR: declarations as in ulogd2 (spec 5.3), text of IPv4/IPv6 addresses, the cache."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from pyulogd.core.context import Context
from pyulogd.core.plugin import DataType, Key, KeyType, Source
from pyulogd.io.loop import Loop
from pyulogd.plugins.filters.ip2str import Ip2strFilter
from tests.helpers import Capture, make_stack, stop_stack

ADDRS = ("ip.saddr", "ip.daddr", "orig.ip.saddr", "orig.ip.daddr",
         "reply.ip.saddr", "reply.ip.daddr", "arp.saddr", "arp.daddr")  # fmt: skip


class AddrSource(Source):
    name = "ADDRSRC"
    output_type = DataType.PACKET
    output_keys = (
        Key("oob.family", KeyType.UINT8),
        Key("oob.protocol", KeyType.UINT16),
        *(Key(a, KeyType.IPADDR) for a in ADDRS),
    )


def v4(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET, text)


def v6(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, text)


def convert(values: dict[str, Any], family: int = 2, ctx: Context | None = None) -> dict[str, Any]:
    ctx = ctx or Context(loop=Loop())
    cap = Capture(ctx, "cap", {})
    stack = make_stack([AddrSource, Ip2strFilter, cap], ctx)
    row = {"oob.family": family, "oob.protocol": 0x0800, **values}
    stack.source.emit([None] + [row.get(k.name) for k in AddrSource.output_keys])
    stop_stack(stack)
    rec = cap.records[-1]
    return {a + ".str": cap.value(rec, a + ".str") for a in ADDRS}


def test_declarations_match_ulogd() -> None:
    assert Ip2strFilter.name == "IP2STR" and Ip2strFilter.so_name == "ulogd_filter_IP2STR.so"
    assert [(k.name, k.type, k.optional) for k in Ip2strFilter.input_keys] == [
        ("oob.family", KeyType.UINT8, False),
        ("oob.protocol", KeyType.UINT16, False),
    ] + [(a, KeyType.IPADDR, True) for a in ADDRS]
    assert [(k.name, k.type, k.cim) for k in Ip2strFilter.output_keys] == [
        ("ip.saddr.str", KeyType.STRING, "src_ip"),
        ("ip.daddr.str", KeyType.STRING, "dest_ip"),
        ("orig.ip.saddr.str", KeyType.STRING, "src_ip"),
        ("orig.ip.daddr.str", KeyType.STRING, "dest_ip"),
        ("reply.ip.saddr.str", KeyType.STRING, None),
        ("reply.ip.daddr.str", KeyType.STRING, None),
        ("arp.saddr.str", KeyType.STRING, None),
        ("arp.daddr.str", KeyType.STRING, None),
    ]


def test_ipv4_and_ipv6_text() -> None:
    out = convert({"ip.saddr": v4("10.201.0.1"), "ip.daddr": v4("127.0.0.1")})
    assert out["ip.saddr.str"] == "10.201.0.1" and out["ip.daddr.str"] == "127.0.0.1"
    assert out["orig.ip.saddr.str"] is None  # invalid input, invalid output
    out = convert({"ip.saddr": v6("::1"), "ip.daddr": v6("fd00:201:0:0:0:0:0:2")}, family=10)
    assert out["ip.saddr.str"] == "::1" and out["ip.daddr.str"] == "fd00:201::2"
    out = convert({"ip.saddr": v6("::ffff:10.0.0.1")}, family=10)
    assert out["ip.saddr.str"] == "::ffff:10.0.0.1"


def test_every_address_input() -> None:
    values = {a: v4(f"10.0.0.{i + 1}") for i, a in enumerate(ADDRS)}
    out = convert(values, family=7)  # bridge: the family does not matter, the bytes do
    assert out == {a + ".str": f"10.0.0.{i + 1}" for i, a in enumerate(ADDRS)}


@pytest.mark.parametrize("family", [3, 0, 99])
def test_any_family_with_a_valid_address(family: int) -> None:
    # 2.0.8 stops the event ("Unknown protocol family"); the bytes say what the address is.
    assert convert({"arp.saddr": v4("192.168.1.1")}, family=family)["arp.saddr.str"] == "192.168.1.1"


def test_address_of_a_wrong_length_is_counted_not_fatal() -> None:
    ctx = Context(loop=Loop())
    out = convert({"ip.saddr": b"\x01\x02\x03", "ip.daddr": v4("1.2.3.4")}, ctx=ctx)
    assert out["ip.saddr.str"] is None and out["ip.daddr.str"] == "1.2.3.4"
    assert ctx.stats.get("ip2str.ip2str1.bad_address") == 1


def test_unbound_inputs_are_skipped() -> None:
    class OnlySaddr(Source):
        name = "ONLYSADDR"
        output_keys = (Key("oob.family", KeyType.UINT8), Key("oob.protocol", KeyType.UINT16),
                       Key("ip.saddr", KeyType.IPADDR))  # fmt: skip

    cap = Capture(Context(loop=Loop()), "cap", {})
    stack = make_stack([OnlySaddr, Ip2strFilter, cap])
    f = stack.instances[1]
    assert isinstance(f, Ip2strFilter)
    assert f._pairs == ((3, f.out_base),)
    stack.source.emit([None, 2, 0x800, v4("1.1.1.1")])
    assert cap.value(cap.records[0], "ip.saddr.str") == "1.1.1.1"


def test_cache_is_bounded_and_correct() -> None:
    ctx = Context(loop=Loop())
    cap = Capture(ctx, "cap", {})
    stack = make_stack([AddrSource, Ip2strFilter, cap], ctx)
    f = stack.instances[1]
    assert isinstance(f, Ip2strFilter)
    for i in range(5000):
        addr = i.to_bytes(4, "big")
        stack.source.emit([None, 2, 0x800, addr] + [None] * 7)
        assert cap.value(cap.records[-1], "ip.saddr.str") == socket.inet_ntop(socket.AF_INET, addr)
    assert 0 < len(f._cache) <= 4096
