"""BASE against real ulogd2 2.0.8 (golden pkt-json case), its declarations, its deliberate
deviations from 2.0.8 (docs/compat.md), and robustness on truncated and random input."""

from __future__ import annotations

import struct
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from base_helpers import (  # noqa: E402
    GOLDEN_CASE,
    IN_FAM,
    IN_LEN,
    IN_PKT,
    IN_PROTO,
    JSON_NAMES,
    NSLOTS,
    OUT_BASE,
    ah,
    decode,
    esp,
    golden_from_shared,
    golden_from_vectors,
    ip4,
    ip6,
    json_view,
    make_base,
    ntop,
    outputs,
    record,
    tcp,
    udp,
)
from pyulogd.core.context import Context  # noqa: E402
from pyulogd.core.plugin import OK, DataType, Key, KeyType, Sink, Source  # noqa: E402
from pyulogd.core.stack import wire  # noqa: E402
from pyulogd.io.loop import Loop
from pyulogd.plugins.filters import base as B  # noqa: E402
from pyulogd.plugins.filters.base import OUTPUT_KEYS, BaseFilter  # noqa: E402

T = KeyType

# `ulogd -i BASE` of 2.0.8, in order, with the types of its key table.
ULOGD_KEYS = [
    ("ip.saddr", T.IPADDR), ("ip.daddr", T.IPADDR), ("ip.protocol", T.UINT8), ("ip.tos", T.UINT8),
    ("ip.ttl", T.UINT8), ("ip.totlen", T.UINT16), ("ip.ihl", T.UINT8), ("ip.csum", T.UINT16),
    ("ip.id", T.UINT16), ("ip.fragoff", T.UINT16), ("ip6.payloadlen", T.UINT16), ("ip6.priority", T.UINT8),
    ("ip6.flowlabel", T.UINT32), ("ip6.hoplimit", T.UINT8), ("ip6.nexthdr", T.UINT8),
    ("ip6.fragoff", T.UINT16), ("ip6.fragid", T.UINT32), ("tcp.sport", T.UINT16), ("tcp.dport", T.UINT16),
    ("tcp.seq", T.UINT32), ("tcp.ackseq", T.UINT32), ("tcp.window", T.UINT16), ("tcp.offset", T.UINT8),
    ("tcp.reserved", T.UINT8), ("tcp.urg", T.BOOL), ("tcp.urgp", T.UINT16), ("tcp.ack", T.BOOL),
    ("tcp.psh", T.BOOL), ("tcp.rst", T.BOOL), ("tcp.syn", T.BOOL), ("tcp.fin", T.BOOL), ("tcp.res1", T.BOOL),
    ("tcp.res2", T.BOOL), ("tcp.csum", T.UINT16), ("udp.sport", T.UINT16), ("udp.dport", T.UINT16),
    ("udp.len", T.UINT16), ("udp.csum", T.UINT16), ("icmp.type", T.UINT8), ("icmp.code", T.UINT8),
    ("icmp.echoid", T.UINT16), ("icmp.echoseq", T.UINT16), ("icmp.gateway", T.IPADDR),
    ("icmp.fragmtu", T.UINT16), ("icmp.csum", T.UINT16), ("icmpv6.type", T.UINT8), ("icmpv6.code", T.UINT8),
    ("icmpv6.echoid", T.UINT16), ("icmpv6.echoseq", T.UINT16), ("icmpv6.csum", T.UINT16),
    ("ahesp.spi", T.UINT32), ("oob.protocol", T.UINT16), ("arp.hwtype", T.UINT16),
    ("arp.protocoltype", T.UINT16), ("arp.operation", T.UINT16), ("arp.shwaddr", T.RAW),
    ("arp.saddr", T.IPADDR), ("arp.dhwaddr", T.RAW), ("arp.daddr", T.IPADDR), ("sctp.sport", T.UINT16),
    ("sctp.dport", T.UINT16), ("sctp.csum", T.UINT32),
]  # fmt: skip


# --- declarations ---------------------------------------------------------------------


def test_identity() -> None:
    assert BaseFilter.name == "BASE"
    assert BaseFilter.so_name == "ulogd_raw2packet_BASE.so"
    assert BaseFilter.input_type == DataType.RAW
    assert BaseFilter.output_type == DataType.PACKET
    assert [(k.name, k.type, k.optional) for k in BaseFilter.input_keys] == [
        ("raw.pkt", T.RAW, False),
        ("raw.pktlen", T.UINT32, False),
        ("oob.family", T.UINT8, False),
        ("oob.protocol", T.UINT16, False),
    ]


def test_output_keys_are_ulogds_in_order_and_type() -> None:
    assert [(k.name, k.type) for k in OUTPUT_KEYS] == ULOGD_KEYS


def test_cim_aliases() -> None:
    cims = {k.name: k.cim for k in OUTPUT_KEYS if k.cim}
    assert cims == {
        "tcp.sport": "src_port", "tcp.dport": "dest_port",
        "udp.sport": "src_port", "udp.dport": "dest_port",
        "sctp.sport": "src_port", "sctp.dport": "dest_port",
    }  # fmt: skip


def test_key_offsets_are_fixed_module_constants() -> None:
    names = [k.name for k in OUTPUT_KEYS]
    assert B.K_TCP == names.index("tcp.sport") and B.K_TCP_END == names.index("tcp.csum") + 1
    assert B.K_UDP == names.index("udp.sport") and B.K_ICMP == names.index("icmp.type")
    assert B.K_OOB_PROTOCOL == names.index("oob.protocol") and B.K_ARP == names.index("arp.hwtype")
    assert B.K_SCTP_END == len(names)


# --- oracle: real ulogd2 2.0.8 on the same bytes ------------------------------------------


def _check_golden(packets: list[dict[str, Any]]) -> None:
    assert len(packets) == 44
    f = make_base()
    for n, p in enumerate(packets, 1):
        payload, j = p["payload"], p["json"]
        assert j["raw.pktlen"] == len(payload)
        got = decode(payload, p["family"], p["protocol"], len(payload), f)
        view = json_view(got)
        expected = {k: v for k, v in j.items() if k in JSON_NAMES}
        if "tcp.offset" in expected:
            # The one place pyulogd differs: 2.0.8 prints 0 for both (docs/compat.md).
            ihl = payload[0] & 15 if p["family"] == 2 else None
            l4 = 4 * ihl if ihl is not None else 40
            assert (expected["tcp.offset"], expected["tcp.reserved"]) == (0, 0)
            expected["tcp.offset"] = payload[l4 + 12] >> 4
            expected["tcp.reserved"] = payload[l4 + 12] & 15
        assert view == expected, f"packet {n} ({j['oob.prefix']})"
        # Addresses are not in ulogd's JSON, but IP2STR's text of them is.
        assert (ntop(got["ip.saddr"]), ntop(got["ip.daddr"])) == (j["src_ip"], j["dest_ip"]), n
    assert f.ctx.stats.snapshot() == {}  # nothing in the golden traffic is malformed


def test_golden_vectors_in_repository() -> None:
    _check_golden(golden_from_vectors())


@pytest.mark.skipif(not GOLDEN_CASE.is_dir(), reason="../shared/golden not present")
def test_golden_from_shared_raw_netlink() -> None:
    packets = golden_from_shared()
    _check_golden(packets)
    # ... and the repository's copy is the same data.
    copy = golden_from_vectors()
    assert [p["payload"] for p in packets] == [p["payload"] for p in copy]
    assert [(p["family"], p["protocol"]) for p in packets] == [(p["family"], p["protocol"]) for p in copy]


def test_golden_specifics() -> None:
    """A few 2.0.8 behaviours visible in the golden data, spelled out."""
    pk = golden_from_vectors()
    first = decode(pk[0]["payload"], 2, 0x0800)
    assert first["ip.fragoff"] == 16384  # the whole field: DF
    assert first["icmp.csum"] == 45458 and pk[0]["payload"][22:24] == struct.pack("<H", 45458)  # not swapped
    nonfirst = decode(pk[34]["payload"], 2, 0x0800)  # IPv4 fragment at offset 185*8
    assert nonfirst["ip.fragoff"] == 8377 and nonfirst["udp.sport"] == 49345  # data read as UDP
    v6frag = decode(pk[39]["payload"], 10, 0x86DD)
    assert v6frag["ip6.fragoff"] == 1448 and v6frag["ip6.nexthdr"] == 17
    assert "ip.protocol" not in v6frag and "udp.sport" not in v6frag
    opts = decode(pk[31]["payload"], 2, 0x0800)
    assert opts["ip.ihl"] == 8 and opts["udp.dport"] == 7003
    xmas = decode(pk[43]["payload"], 2, 0x0800)
    assert xmas["tcp.urgp"] == 0 and all(
        xmas[f"tcp.{x}"] == 1 for x in ("urg", "ack", "psh", "rst", "syn", "fin")
    )
    syn = decode(pk[4]["payload"], 2, 0x0800)
    assert "tcp.urgp" not in syn


# --- the deviations from 2.0.8, each pinned (docs/compat.md) --------------------------


def test_tcp_offset_and_reserved_are_the_real_values() -> None:
    syn = golden_from_vectors()[4]["payload"]  # 2.0.8 printed tcp.offset 0, tcp.reserved 0
    got = decode(syn, 2, 0x0800)
    assert (got["tcp.offset"], got["tcp.reserved"]) == (10, 0)
    got = decode(ip4(6, tcp(doff=6, b12low=0b1011, flags=0xC2)), 2, 0x0800)
    assert (got["tcp.offset"], got["tcp.reserved"]) == (6, 11)
    # The BOOL keys keep 2.0.8's values: the bit-field values, res1 0..15 and res2 (CWR|ECE) 0..3.
    assert (got["tcp.res1"], got["tcp.res2"], got["tcp.syn"]) == (11, 3, 1)


def test_ahesp_spi_ipv4() -> None:
    got = decode(ip4(50, esp(0xC0FFEE01)), 2, 0x0800)
    assert got["ahesp.spi"] == 0xC0FFEE01 and got["ip.protocol"] == 50
    got = decode(ip4(51, ah(6, 0x01020304) + tcp()), 2, 0x0800)
    assert got["ahesp.spi"] == 0x01020304 and "tcp.sport" not in got  # no L4 behind AH in IPv4, as 2.0.8
    # Needs the fixed header: ESP 8 bytes, AH 12.
    assert "ahesp.spi" not in decode(ip4(50, esp(1)[:7]), 2, 0x0800)
    assert "ahesp.spi" not in decode(ip4(51, ah(6, 1)[:11]), 2, 0x0800)
    assert decode(ip4(51, ah(6, 1)[:12]), 2, 0x0800)["ahesp.spi"] == 1


def test_ahesp_spi_ipv6() -> None:
    got = decode(ip6(51, ah(17, 0xAABBCCDD) + udp()), 10, 0x86DD)
    assert got["ahesp.spi"] == 0xAABBCCDD
    assert (got["ip.protocol"], got["ip6.nexthdr"], got["udp.dport"]) == (17, 17, 7003)
    got = decode(ip6(50, esp(0x11223344)), 10, 0x86DD)
    assert got["ahesp.spi"] == 0x11223344 and got["ip6.nexthdr"] == 50 and "ip.protocol" not in got


def test_ipv6_esp_length_is_not_taken_from_the_spi() -> None:
    # SPI second byte 0xff: 2.0.8 wanted (0xff+2)*4 = 1028 bytes and left ip6.nexthdr invalid.
    got = decode(ip6(50, esp(0x00FF0001)), 10, 0x86DD)
    assert got["ip6.nexthdr"] == 50 and got["ahesp.spi"] == 0x00FF0001
    # Under 8 bytes (SPI + sequence) it is cut short, like 2.0.8's smallest case.
    got = decode(ip6(50, esp(1)[:7]), 10, 0x86DD)
    assert "ip6.nexthdr" not in got and "ahesp.spi" not in got


def test_arp_addresses_are_network_order_bytes() -> None:
    sha, tha = bytes.fromhex("02000ac90001"), bytes.fromhex("000000000000")
    pkt = struct.pack(
        "!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, sha, bytes((10, 201, 0, 1)), tha, bytes((10, 201, 0, 2))
    )
    got = decode(pkt + b"\x00" * 18, 7, 0x0806)  # bridge family, padded Ethernet frame
    assert got == {
        "oob.protocol": 0x0806, "arp.hwtype": 1, "arp.protocoltype": 0x0800, "arp.operation": 1,
        "arp.shwaddr": sha, "arp.saddr": bytes((10, 201, 0, 1)), "arp.dhwaddr": tha,
        "arp.daddr": bytes((10, 201, 0, 2)),
    }  # fmt: skip
    assert decode(pkt[:27], 7, 0x0806) == {"oob.protocol": 0x0806}


# --- 2.0.8 behaviours kept -------------------------------------------------------------------


def test_oob_protocol_is_always_reemitted() -> None:
    assert decode(b"", 2, 0x0800) == {"oob.protocol": 0x0800}
    assert decode(None, None, 0x1234) == {"oob.protocol": 0x1234}
    assert decode(ip4(6, tcp()), 2, None)["oob.protocol"] == 0  # invalid input: ulogd copies its zero
    assert decode(ip4(6, tcp()), 99, 0x0800) == {"oob.protocol": 0x0800}


def test_family_dispatch() -> None:
    v4, v6 = ip4(17, udp()), ip6(17, udp())
    assert decode(v4, 2, 0)["udp.dport"] == 7003  # family decides, not oob.protocol
    assert decode(v6, 10, 0)["udp.dport"] == 7003
    assert decode(v4, 7, 0x0800)["udp.dport"] == 7003  # bridge: by oob.protocol
    assert decode(v6, 7, 0x86DD)["udp.dport"] == 7003
    assert decode(v4, 7, 0x8100) == {"oob.protocol": 0x8100}  # VLAN etc.: nothing, as 2.0.8
    assert decode(v4, 7, None) == {"oob.protocol": 0}
    arp = struct.pack(
        "!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 2, b"\x01" * 6, b"\x02" * 4, b"\x03" * 6, b"\x04" * 4
    )
    assert decode(arp, 3, 0x0806) == {"oob.protocol": 0x0806}  # nft arp family: not decoded in 2.0.8


def test_ipv4_header_fields() -> None:
    pkt = ip4(17, udp(), tos=0x10, ttl=3, ident=0xABCD, frag=0x2000 | 7, csum=0x1111, totlen=1500)
    got = decode(pkt, 2, 0x0800)
    assert {k: got[k] for k in got if k.startswith("ip.")} == {
        "ip.saddr": bytes((10, 201, 0, 1)), "ip.daddr": bytes((10, 201, 0, 2)), "ip.protocol": 17,
        "ip.tos": 0x10, "ip.ttl": 3, "ip.totlen": 1500, "ip.ihl": 5, "ip.csum": 0x1111, "ip.id": 0xABCD,
        "ip.fragoff": 0x2007,
    }  # fmt: skip


def test_ipv4_needs_a_byte_after_the_header() -> None:
    ctx = Context(loop=Loop())
    f = make_base(ctx)
    assert decode(ip4(59)[:20], 2, 0x0800, f=f) == {"oob.protocol": 0x0800}  # length <= ihl*4
    assert "ip.saddr" in decode(ip4(59, b"x"), 2, 0x0800, f=f)
    assert ctx.stats.get("base.base1.malformed") == 1


def test_ipv4_bogus_ihl_is_decoded_like_ulogd() -> None:
    pkt = bytearray(ip4(6, tcp()))
    pkt[0] = 0x42  # ihl 2: ulogd reads TCP from byte 8 on
    got = decode(bytes(pkt), 2, 0x0800)
    assert got["ip.ihl"] == 2 and got["tcp.sport"] == struct.unpack_from("!H", pkt, 8)[0]


def test_ipv4_other_protocols() -> None:
    sctp = struct.pack("!HHII", 5000, 6000, 0xDEAD, 0xCAFEBABE)
    assert json_view(decode(ip4(132, sctp), 2, 0x0800))["src_port"] == 5000
    got = decode(ip4(132, sctp), 2, 0x0800)
    assert (got["sctp.sport"], got["sctp.dport"], got["sctp.csum"]) == (5000, 6000, 0xCAFEBABE)
    got = decode(ip4(47, b"\x00" * 8), 2, 0x0800)  # GRE: IP keys only
    assert got["ip.protocol"] == 47 and not any(k.split(".")[0] in ("tcp", "udp", "icmp") for k in got)
    assert "sctp.sport" not in decode(ip6(132, sctp), 10, 0x86DD)  # 2.0.8 reads no SCTP over IPv6


def test_icmp_types() -> None:
    def icmp(t: int, c: int, rest: bytes) -> dict[str, Any]:
        return decode(ip4(1, bytes((t, c)) + b"\xd5\x6a" + rest), 2, 0x0800)

    echo = icmp(8, 0, b"\x62\x01\x00\x01")
    assert (echo["icmp.echoid"], echo["icmp.echoseq"], echo["icmp.csum"]) == (0x6201, 1, 0x6AD5)
    redirect = icmp(5, 1, bytes((192, 168, 1, 254)))
    # ntohl() of the field, as 2.0.8 keeps it: the address bytes reversed (x86 memory of the key).
    assert redirect["icmp.gateway"] == bytes((254, 1, 168, 192)) and "icmp.echoid" not in redirect
    assert icmp(12, 0, b"\x14\x00\x00\x00")["icmp.gateway"] == b"\x00\x00\x00\x14"  # pointer 20
    assert icmp(3, 4, b"\x00\x00\x05\xdc")["icmp.fragmtu"] == 1500
    unreach = icmp(3, 3, b"\x00\x00\x05\xdc")
    assert set(unreach) - {"oob.protocol"} - {k for k in unreach if k.startswith("ip.")} == {
        "icmp.type",
        "icmp.code",
        "icmp.csum",
    }


def test_memoryview_payload() -> None:
    for p in golden_from_vectors():
        buf = bytearray(b"\xee" * 7 + p["payload"] + b"\xee" * 5)
        view = memoryview(buf)[7 : 7 + len(p["payload"])]
        assert decode(view, p["family"], p["protocol"]) == decode(p["payload"], p["family"], p["protocol"])


def _by_decoders(pkt: bytes, family: int) -> dict[str, Any]:
    """BASE's keys for a plain IPv4/IPv6 + TCP/UDP packet, put together from the decoders."""
    from pyulogd.packet import ipv4, ipv6
    from pyulogd.packet import tcp as tcpmod
    from pyulogd.packet import udp as udpmod

    names: list[str]
    values: list[Any]
    if family == 2:
        t4 = ipv4.decode(pkt, len(pkt))
        assert t4 is not None
        names, values, off, proto = list(ipv4.FIELDS), list(t4), 4 * t4[ipv4.IHL], t4[ipv4.PROTO]
    else:
        t6 = ipv6.decode(pkt, len(pkt))
        assert t6 is not None
        keys, p, off, _rem, _spi, _cut = ipv6.walk(pkt, len(pkt))
        assert p is not None
        names = ["ip.saddr", "ip.daddr", *ipv6.FIELDS, *ipv6.WALK_FIELDS, "ip.protocol"]
        values, proto = [*t6, *keys, p], p
    mod = tcpmod if proto == 6 else udpmod
    l4 = mod.decode(pkt, off, len(pkt) - off)
    assert l4 is not None
    expected = {
        n: v for n, v in zip(names + list(mod.FIELDS), values + list(l4), strict=True) if v is not None
    }
    expected["oob.protocol"] = 0x0800 if family == 2 else 0x86DD
    return expected


def test_fast_paths_equal_general_decoders() -> None:
    """IPv4 ihl=5 and IPv6 without extension headers, with TCP or UDP, go through one
    combined unpack in BASE; the generic decoders must give the same keys."""
    for flags in range(256):
        seg = tcp(flags=flags, urgp=77, b12low=flags & 15, doff=5 + flags % 11, seq=flags << 20)
        dgram = udp(sport=flags, data=bytes(flags % 9))
        for family, pkt in (
            (2, ip4(6, seg, tos=flags, ttl=flags, ident=flags * 7)),
            (2, ip4(17, dgram, frag=flags)),
            (10, ip6(6, seg, tclass=flags, flow=flags * 4099, hlim=flags)),
            (10, ip6(17, dgram, tclass=255 - flags)),
        ):
            assert decode(pkt, family, 0x0800 if family == 2 else 0x86DD) == _by_decoders(pkt, family)
    # And the general path itself (IPv4 options, an IPv6 extension header) agrees too.
    assert decode(ip4(6, tcp(), options=b"\x01" * 4), 2, 0x0800) == _by_decoders(
        ip4(6, tcp(), options=b"\x01" * 4), 2
    )
    from base_helpers import ext

    assert decode(ip6(0, ext(17) + udp()), 10, 0x86DD) == _by_decoders(ip6(0, ext(17) + udp()), 10)


def test_pktlen_limits_decoding_and_overlong_pktlen_is_clamped() -> None:
    pkt = ip4(6, tcp())
    assert "tcp.sport" not in decode(pkt, 2, 0x0800, pktlen=39)
    assert decode(pkt, 2, 0x0800, pktlen=10_000) == decode(pkt, 2, 0x0800)
    assert decode(pkt, 2, 0x0800, pktlen=-5) == {"oob.protocol": 0x0800}


# --- robustness ----------------------------------------------------------------------------


def test_every_truncation_of_every_golden_payload() -> None:
    ctx = Context(loop=Loop())
    f = make_base(ctx)
    for p in golden_from_vectors():
        payload = p["payload"]
        full = decode(payload, p["family"], p["protocol"], f=f)
        for cut in range(len(payload)):
            for args in ((payload[:cut], None), (payload, cut)):  # by the bytes, by raw.pktlen
                got = decode(args[0], p["family"], p["protocol"], pktlen=args[1], f=f)
                # A prefix never invents a value: everything decoded is what the whole packet gives.
                assert all(full.get(k) == v for k, v in got.items()), (p["n"], cut)
    assert ctx.stats.get("base.base1.malformed") > 0


def test_malformed_counter() -> None:
    ctx = Context(loop=Loop())
    f = make_base(ctx, "b7")
    decode(ip4(6, tcp())[:30], 2, 0x0800, f=f)  # TCP cut short
    decode(ip6(6, tcp())[:39], 10, 0x86DD, f=f)  # IPv6 header cut short
    decode(ip6(0, b"\x06\x05" + b"\x00" * 6), 10, 0x86DD, f=f)  # hop-by-hop says 48 bytes
    decode(ip4(17, udp()), 2, 0x0800, f=f)  # fine
    decode(ip4(17, b"\x00" * 4, frag=0x0010), 2, 0x0800, f=f)  # non-first fragment: not malformed
    decode(b"\x00" * 10, 99, 0, f=f)  # unknown family: not decoded, not malformed
    assert ctx.stats.snapshot() == {"base.b7.malformed": 3}


class _Weird:
    def __len__(self) -> int:
        return 100

    def __getitem__(self, i: Any) -> Any:
        raise RuntimeError("boom")


@pytest.mark.parametrize(
    "pkt,pktlen",
    [("a string", 8), (b"\x45" * 60, "60"), (_Weird(), 100), (12345, 4), (b"\x45" * 60, 3.5)],
)
def test_garbage_inputs_never_raise(pkt: Any, pktlen: Any) -> None:
    f = make_base()
    for fam, proto in ((2, 0x800), (10, 0x86DD), (7, 0x0806), (7, 0x800)):
        rec = record(pkt, fam, proto, pktlen)
        assert f.interp(rec) == OK
        assert len(rec) == NSLOTS


@settings(max_examples=400, deadline=None)
@given(
    data=st.binary(max_size=120),
    family=st.sampled_from([2, 10, 7, 3, 0]),
    protocol=st.sampled_from([0x0800, 0x86DD, 0x0806, 0]),
    prefix=st.sampled_from(
        [b"", bytes([0x45]), bytes([0x45, 0, 0, 0, 0, 0, 0, 0, 0, 6]), bytes([0x60] + [0] * 5)]
    ),
)
def test_random_bytes(data: bytes, family: int, protocol: int, prefix: bytes) -> None:
    f = make_base()
    rec = record(prefix + data, family, protocol)
    assert f.interp(rec) == OK
    assert len(rec) == NSLOTS
    for k, v in outputs(rec).items():
        key = OUTPUT_KEYS[[x.name for x in OUTPUT_KEYS].index(k)]
        if key.type in (T.IPADDR, T.RAW):
            assert isinstance(v, bytes)
        else:
            assert isinstance(v, int)


@settings(max_examples=300, deadline=None)
@given(chain=st.lists(st.sampled_from([0, 43, 60, 44, 51, 50]), max_size=6), tail=st.binary(max_size=40))
def test_random_ipv6_extension_chains(chain: list[int], tail: bytes) -> None:
    from base_helpers import ext, frag6

    body = tail
    nxt = 17
    for h in reversed(chain):
        if h == 44:
            body = frag6(nxt, 0) + body
        elif h == 51:
            body = ah(nxt, 7) + body
        elif h == 50:
            body = esp(9) + body
        else:
            body = ext(nxt) + body
        nxt = h
    pkt = ip6(nxt, body)
    for cut in range(40, len(pkt) + 1):
        f = make_base()
        rec = record(pkt[:cut], 10, 0x86DD)
        assert f.interp(rec) == OK and len(rec) == NSLOTS


# --- in a stack --------------------------------------------------------------------------------


class _FakeInput(Source):
    name = "FAKEIN"
    output_keys = (
        Key("raw.pkt", T.RAW), Key("raw.pktlen", T.UINT32), Key("oob.family", T.UINT8),
        Key("oob.protocol", T.UINT16),
    )  # fmt: skip


class _Collect(Sink):
    name = "COLLECT"
    wildcard_inputs = True

    def __init__(self, ctx: Context, instance_id: str, config: dict[str, Any]) -> None:
        super().__init__(ctx, instance_id, config)
        self.seen: list[dict[str, Any]] = []

    def interp(self, rec: list[Any]) -> int:
        d = {}
        for k, s in zip(self.wildcard_keys, self.in_slots, strict=True):
            if rec[s] is not None:
                d[k.cim or k.name] = rec[s]
        self.seen.append(d)
        return OK


def test_in_a_stack_shadowing_oob_protocol() -> None:
    ctx = Context(loop=Loop())
    src, base, out = _FakeInput(ctx, "in", {}), BaseFilter(ctx, "b", {}), _Collect(ctx, "out", {})
    stack = wire(ctx, [src, base, out], spec="in:FAKEIN,b:BASE,out:COLLECT")
    pkt = golden_from_vectors()[4]["payload"]
    src.emit([None, pkt, len(pkt), 2, 0x0800])
    (seen,) = out.seen
    assert seen["src_port"] == 40001 and seen["dest_port"] == 7001 and seen["oob.protocol"] == 0x0800
    # Both oob.protocol inputs of the wildcard sink resolve to BASE's copy (nearest producer).
    slots = [s for k, s in zip(out.wildcard_keys, out.in_slots, strict=True) if k.name == "oob.protocol"]
    assert slots == [base.out_base + B.K_OOB_PROTOCOL] * 2
    assert stack.errors == 0


def test_helper_layout() -> None:
    assert (IN_PKT, IN_LEN, IN_FAM, IN_PROTO) == (1, 2, 3, 4) and OUT_BASE == 5
