"""pyulogd.packet.ipv4: the IPv4 header as ulogd2 2.0.8's BASE reads it."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from base_helpers import DST4, SRC4, golden_from_vectors, ip4, tcp, udp  # noqa: E402
from pyulogd.packet import ipv4  # noqa: E402


def test_fields_in_key_order() -> None:
    pkt = ip4(17, udp(), tos=0xB8, ttl=9, ident=0x4242, frag=0x2000 | 3, csum=0x0102, totlen=999)
    assert ipv4.decode(pkt, len(pkt)) == (SRC4, DST4, 17, 0xB8, 9, 999, 5, 0x0102, 0x4242, 0x2003)
    assert ipv4.FIELDS[ipv4.PROTO] == "ip.protocol"
    assert ipv4.FIELDS[ipv4.IHL] == "ip.ihl" and ipv4.FIELDS[ipv4.FRAGOFF] == "ip.fragoff"


def test_options_header() -> None:
    pkt = ip4(6, tcp(), options=b"\x07\x0b\x04" + b"\x00" * 9)  # record route, ihl 8
    t = ipv4.decode(pkt, len(pkt))
    assert t is not None and t[ipv4.IHL] == 8


def test_length_rules() -> None:
    pkt = ip4(6, tcp())
    assert ipv4.decode(pkt, 19) is None
    assert ipv4.decode(pkt, 20) is None  # ulogd wants length > ihl*4
    assert ipv4.decode(pkt, 21) is not None
    opt = ip4(6, tcp(), options=b"\x01" * 8)  # ihl 7
    assert ipv4.decode(opt, 28) is None and ipv4.decode(opt, 29) is not None


def test_version_not_checked() -> None:
    pkt = bytearray(ip4(17, udp()))
    pkt[0] = 0x65
    t = ipv4.decode(bytes(pkt), len(pkt))
    assert t is not None and t[ipv4.IHL] == 5


def test_memoryview_and_bytearray() -> None:
    pkt = ip4(6, tcp())
    assert (
        ipv4.decode(memoryview(pkt), len(pkt))
        == ipv4.decode(bytearray(pkt), len(pkt))
        == ipv4.decode(pkt, 40)
    )


def test_golden_against_dpkt() -> None:
    dpkt = pytest.importorskip("dpkt")
    for p in golden_from_vectors():
        if p["family"] != 2:
            continue
        t = ipv4.decode(p["payload"], len(p["payload"]))
        d = dpkt.ip.IP(p["payload"])
        assert t == (d.src, d.dst, d.p, d.tos, d.ttl, d.len, d.hl, d.sum, d.id, d.off)


@given(st.binary(max_size=64))
def test_never_raises(data: bytes) -> None:
    t = ipv4.decode(data, len(data))
    if t is not None:
        assert len(data) > 4 * (data[0] & 15) and len(data) >= 20
        assert t[0] == data[12:16] and t[1] == data[16:20]
        assert t[9] == struct.unpack_from("!H", data, 6)[0]
