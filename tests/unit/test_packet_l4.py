"""pyulogd.packet tcp, udp, sctp, icmp, icmpv6, arp and ipsec decoders."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from base_helpers import ah, esp, golden_from_vectors, mk_tcp, mk_udp  # noqa: E402
from pyulogd.packet import arp, icmp, icmpv6, ipsec, sctp, tcp, udp  # noqa: E402


def test_tcp_fields() -> None:
    b = mk_tcp(40001, 7001, seq=0x01020304, ack=0x05060708, doff=8, b12low=0b0101, flags=0xFF,
               window=8192, csum=0xB258, urgp=0x77)  # fmt: skip
    assert tcp.decode(b, 0, len(b)) == (
        40001, 7001, 0x01020304, 0x05060708, 8192, 8, 5, 1, 0x77, 1, 1, 1, 1, 1, 5, 3, 0xB258,
    )  # fmt: skip
    plain = mk_tcp(flags=0x10)
    t = tcp.decode(plain, 0, 20)
    assert t is not None and t[tcp.FIELDS.index("tcp.urgp")] is None and t[tcp.FIELDS.index("tcp.ack")] == 1
    assert tcp.decode(plain, 0, 19) is None


@pytest.mark.parametrize("flags", range(256))
def test_tcp_flag_table(flags: int) -> None:
    t = tcp.decode(mk_tcp(flags=flags, urgp=9), 0, 20)
    assert t is not None
    got = dict(zip(tcp.FIELDS, t, strict=True))
    for bit, name in enumerate(("fin", "syn", "rst", "psh", "ack", "urg")):
        assert got[f"tcp.{name}"] == flags >> bit & 1
    assert got["tcp.res2"] == flags >> 6
    assert got["tcp.urgp"] == (9 if flags & 0x20 else None)


def test_udp_and_sctp() -> None:
    assert udp.decode(mk_udp(1, 2, b"abc", 0x99), 0, 11) == (1, 2, 11, 0x99)
    assert udp.decode(b"\x00" * 7, 0, 7) is None
    s = struct.pack("!HHII", 1, 2, 3, 0xFFFFFFFE)
    assert sctp.decode(s, 0, 12) == (1, 2, 0xFFFFFFFE) and sctp.decode(s, 0, 11) is None


def test_icmp() -> None:
    def dec(t: int, c: int, rest: bytes) -> icmp.IcmpFields | None:
        b = bytes((t, c)) + b"\xd5\x6a" + rest
        return icmp.decode(b, 0, len(b))

    assert dec(8, 0, b"\x62\x01\x00\x01") == (8, 0, 0x6201, 1, None, None, 0x6AD5)
    assert dec(0, 0, b"\x62\x01\x00\x02") == (0, 0, 0x6201, 2, None, None, 0x6AD5)
    assert dec(5, 0, bytes((10, 0, 0, 1))) == (5, 0, None, None, bytes((1, 0, 0, 10)), None, 0x6AD5)
    assert dec(12, 0, bytes((20, 0, 0, 0))) == (12, 0, None, None, bytes((0, 0, 0, 20)), None, 0x6AD5)
    assert dec(3, 4, b"\x00\x00\x05\x78") == (3, 4, None, None, None, 1400, 0x6AD5)
    assert dec(3, 1, b"\x00\x00\x05\x78") == (3, 1, None, None, None, None, 0x6AD5)
    assert dec(11, 0, b"") is None


def test_icmpv6() -> None:
    b = bytes((128, 0)) + b"\x48\x1c" + b"\x62\x01\x00\x01"
    assert icmpv6.decode(b, 0, 8) == (128, 0, 0x6201, 1, 0x1C48)
    b = bytes((1, 4)) + b"\x00\x01" + b"\x00" * 4
    assert icmpv6.decode(b, 0, 8) == (1, 4, None, None, 0x0100)
    assert icmpv6.decode(b, 0, 7) is None


def test_icmp_checksums_match_golden_json() -> None:
    """The golden icmp(v6).csum values are the wire checksums with their bytes swapped."""
    for p in golden_from_vectors():
        j = p["json"]
        if "icmp.csum" in j:
            assert p["payload"][22:24] == struct.pack("<H", j["icmp.csum"])
        if "icmpv6.csum" in j:
            assert p["payload"][42:44] == struct.pack("<H", j["icmpv6.csum"])


def test_arp() -> None:
    b = struct.pack(
        "!HHBBH6s4s6s4s", 1, 0x800, 6, 4, 2, b"\xaa" * 6, b"\x01\x02\x03\x04", b"\xbb" * 6, b"\x05" * 4
    )
    assert arp.decode(b, 28) == (1, 0x800, 2, b"\xaa" * 6, b"\x01\x02\x03\x04", b"\xbb" * 6, b"\x05" * 4)
    assert arp.decode(b, 27) is None


def test_ipsec() -> None:
    a = ah(6, 0x01020304)
    assert ipsec.ah_spi(a, 0, len(a)) == 0x01020304 and ipsec.ah_spi(a, 0, 11) is None
    e = esp(0xA0B0C0D0)
    assert ipsec.esp_spi(e, 0, 8) == 0xA0B0C0D0 and ipsec.esp_spi(e, 0, 7) is None


def test_against_dpkt() -> None:
    dpkt = pytest.importorskip("dpkt")
    for p in golden_from_vectors():
        pl = p["payload"]
        ip = dpkt.ip.IP(pl) if p["family"] == 2 else dpkt.ip6.IP6(pl)
        l4 = ip.data
        off = len(pl) - len(bytes(l4)) if not isinstance(l4, bytes) else None
        if isinstance(l4, dpkt.tcp.TCP) and off is not None:
            t = tcp.decode(pl, off, len(pl) - off)
            assert t is not None
            got = dict(zip(tcp.FIELDS, t, strict=True))
            assert (got["tcp.sport"], got["tcp.dport"], got["tcp.seq"], got["tcp.ackseq"]) == (
                l4.sport, l4.dport, l4.seq, l4.ack,
            )  # fmt: skip
            assert (got["tcp.window"], got["tcp.csum"], got["tcp.offset"]) == (l4.win, l4.sum, l4.off)
            assert got["tcp.syn"] == bool(l4.flags & dpkt.tcp.TH_SYN)
        elif isinstance(l4, dpkt.udp.UDP) and off is not None:
            assert udp.decode(pl, off, len(pl) - off) == (l4.sport, l4.dport, l4.ulen, l4.sum)


@given(st.binary(max_size=40), st.integers(0, 40))
def test_never_raise(data: bytes, off: int) -> None:
    length = max(0, len(data) - off)
    for dec in (tcp.decode, udp.decode, sctp.decode, icmp.decode, icmpv6.decode, ipsec.ah_spi, ipsec.esp_spi):
        dec(data, off, length)
    arp.decode(data, len(data))
