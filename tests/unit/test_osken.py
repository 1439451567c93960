"""codec/osken.py against os-ken itself, on the same bytes.

Neutron's Open vSwitch log driver writes ``str(Packet(bytearray(frame)))``, the FWaaS driver
``str(ethernet) + str(ipv4) + str(l4)`` of an NFLOG packet (bytes). Random valid packets
(hypothesis: Ethernet, ARP, IPv4 with options, IPv6 with extension headers, TCP with options,
UDP, ICMP and ICMPv6 with their message bodies, truncated anywhere) and the golden packets
must print the same. Where os-ken raises anything but ``struct.error`` Neutron writes no line:
those inputs are not compared, but our renderer must still write one.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, find, given, settings
from hypothesis import strategies as st

from pyulogd.codec import osken
from tests.base_helpers import golden_from_vectors

packet = pytest.importorskip("os_ken.lib.packet.packet")
from os_ken.lib import addrconv  # noqa: E402
from os_ken.lib.packet import arp as k_arp  # noqa: E402
from os_ken.lib.packet import ethernet as k_ethernet  # noqa: E402
from os_ken.lib.packet import ipv4 as k_ipv4  # noqa: E402
from os_ken.lib.packet import ipv6 as k_ipv6  # noqa: E402
from os_ken.lib.packet import tcp as k_tcp  # noqa: E402

MAC = bytes.fromhex("fa163e5a0b01fa163e5a0b02")


def _no_endless_loop(parse: Any) -> Any:
    """os-ken's TCP option loop never ends on an option of length 0 (SACK, TCP-AO, unknown
    kinds): the agent hangs and writes nothing. Raised here instead, so the comparison skips
    such a packet (our renderer stops and prints the rest raw)."""
    def guarded(cls: Any, buf: Any) -> Any:
        if len(buf) >= 2 and buf[1] == 0:
            raise RuntimeError("os-ken would loop for ever on this TCP option")
        return parse.__func__(cls, buf)
    return classmethod(guarded)


@pytest.fixture(autouse=True, scope="module")
def guard_os_ken() -> Any:
    saved = {c: c.__dict__["parse"] for c in (k_tcp.TCPOptionUnknown, k_tcp.TCPOptionSACK,
                                              k_tcp.TCPOptionAuthentication)}
    for c, parse in saved.items():
        c.parse = _no_endless_loop(parse)
    yield
    for c, parse in saved.items():
        c.parse = parse

# Ports and protocols os-ken decodes further and we print raw (docs/neutron.md).
OSKEN_TCP_PORTS = {179, 6633, 6653, 2600}
OSKEN_UDP = ({67, 68, 546, 547}, {4789, 8472, 6081})


def osken_frame(frame: bytes) -> str | None:
    """What the Open vSwitch driver writes, or None where os-ken raises (no line)."""
    try:
        return str(packet.Packet(bytearray(frame)))
    except Exception:
        return None


def osken_fwaas(mac: bytes, hw_proto: int, pkt: bytes) -> str | None:
    """neutron-fwaas's ``decode()`` (libnetfilter_log.py) with os-ken, the IPv6 header added
    (FWaaS leaves it out: a bug we do not copy, docs/neutron.md)."""
    try:
        msg = ""
        if len(mac) >= 12:
            dst, src = struct.unpack_from("!6s6s", mac)
            msg = str(k_ethernet.ethernet(addrconv.mac.bin_to_text(dst), addrconv.mac.bin_to_text(src),
                                          ethertype=hw_proto))
        if hw_proto == 0x0800:
            ip_pkt, proto, data = k_ipv4.ipv4().parser(pkt)
            msg += str(ip_pkt)
            proto_pkt, _, _ = proto.parser(data)
            msg += str(proto_pkt)
        elif hw_proto == 0x86DD:
            ip_pkt, proto, data = k_ipv6.ipv6().parser(pkt)
            msg += str(ip_pkt)
            proto_pkt, _, _ = proto.parser(data)
            msg += str(proto_pkt)
        elif hw_proto == 0x0806:
            ip_pkt, _, _ = k_arp.arp().parser(pkt)
            msg += str(ip_pkt)
        else:
            msg += "Does not support hw_proto: " + str(hw_proto)
        return msg
    except Exception:
        return None


# --- packet builders ---------------------------------------------------------------------------

u8, u16, u32 = st.integers(0, 255), st.integers(0, 65535), st.integers(0, 2**32 - 1)
payload = st.binary(max_size=40)
tcp_port = u16.filter(lambda p: p not in OSKEN_TCP_PORTS)


@st.composite
def tcp_options(draw: Any) -> bytes:
    out = b""
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["mss", "ws", "sackp", "ts", "nop", "eol", "sack", "uto", "auth", "unknown"]))
        if kind == "mss":
            out += struct.pack("!BBH", 2, 4, draw(u16))
        elif kind == "ws":
            out += struct.pack("!BBB", 3, 3, draw(u8))
        elif kind == "sackp":
            out += b"\x04\x02"
        elif kind == "ts":
            out += struct.pack("!BBII", 8, 10, draw(u32), draw(u32))
        elif kind == "nop":
            out += b"\x01"
        elif kind == "eol":
            out += b"\x00"
        elif kind == "sack":
            n = draw(st.integers(0, 3))
            out += struct.pack("!BB", 5, 2 + 8 * n) + b"".join(struct.pack("!II", draw(u32), draw(u32))
                                                               for _ in range(n))
        elif kind == "uto":
            out += struct.pack("!BBH", 28, 4, draw(u16))
        elif kind == "auth":
            mac = draw(st.binary(max_size=8))
            out += struct.pack("!BBBB", 29, 4 + len(mac), draw(u8), draw(u8)) + mac
        else:
            value = draw(st.binary(max_size=6))
            out += bytes([draw(st.sampled_from([6, 7, 30, 34, 253])), 2 + len(value)]) + value
    if len(out) > 40:
        out = out[:40]  # may cut an option: os-ken then prints the options raw
    return out + b"\x00" * (-len(out) % 4)


@st.composite
def tcp_seg(draw: Any) -> bytes:
    opts = draw(tcp_options())
    off = (20 + len(opts)) // 4
    if draw(st.integers(0, 9)) == 0:
        off = draw(st.integers(0, 15))  # a data offset that lies, 0 included
    hdr = struct.pack("!HHIIBBHHH", draw(tcp_port), draw(tcp_port), draw(u32), draw(u32), off << 4 | draw(
        st.integers(0, 15)), draw(u8), draw(u16), draw(u16), draw(u16))
    return hdr + opts + draw(payload)


@st.composite
def udp_dgram(draw: Any) -> bytes:
    sport, dport = draw(u16), draw(u16)
    assume(not ((sport in (67, 68) and dport == 67) or (dport in (67, 68) and sport == 67)))
    assume(not ((sport in (546, 547) and dport == 547) or (dport in (546, 547) and sport == 547)))
    assume(dport not in OSKEN_UDP[1])
    data = draw(payload)
    length = 8 + len(data) if draw(st.booleans()) else draw(u16)
    return struct.pack("!HHHH", sport, dport, length, draw(u16)) + data


@st.composite
def icmp4(draw: Any) -> bytes:
    t = draw(st.sampled_from([0, 8, 3, 11, 5, 13, 42]))
    return struct.pack("!BBH", t, draw(u8), draw(u16)) + draw(st.binary(max_size=36))


def nd_opt(draw: Any, types: list[int]) -> bytes:
    t = draw(st.sampled_from(types))
    if t in (1, 2):
        return bytes([t, 1]) + draw(st.binary(min_size=6, max_size=6))
    if t == 3:
        return struct.pack("!BBBBIII16s", 3, 4, draw(u8), draw(u8), draw(u32), draw(u32), draw(u32),
                           draw(st.binary(min_size=16, max_size=16)))
    n = draw(st.integers(1, 2))
    return bytes([t, n]) + draw(st.binary(min_size=8 * n - 2, max_size=8 * n - 2))


@st.composite
def icmp6(draw: Any) -> bytes:
    t = draw(st.sampled_from([128, 129, 133, 134, 135, 136, 130, 131, 132, 143, 1, 3, 200]))
    addr = st.binary(min_size=16, max_size=16)
    if t in (135, 136):
        body = struct.pack("!I", draw(u32)) + draw(addr)
        if draw(st.booleans()):
            body += nd_opt(draw, [1, 2, 9])
    elif t == 133:
        body = struct.pack("!I", draw(u32)) + (nd_opt(draw, [1, 9]) if draw(st.booleans()) else b"")
    elif t == 134:
        body = struct.pack("!BBHII", draw(u8), draw(u8), draw(u16), draw(u32), draw(u32))
        body += b"".join(nd_opt(draw, [3, 9, 1]) for _ in range(draw(st.integers(0, 3))))
    elif t in (130, 131, 132):
        body = struct.pack("!H2x", draw(u16)) + draw(addr)
        if draw(st.booleans()):  # MLDv2 query
            srcs = draw(st.lists(addr, max_size=3))
            body += struct.pack("!BBH", draw(u8), draw(u8), len(srcs)) + b"".join(srcs)
    elif t == 143:
        recs = b""
        n = draw(st.integers(0, 2))
        for _ in range(n):
            srcs = draw(st.lists(addr, max_size=2))
            aux = draw(st.integers(0, 2))
            recs += struct.pack("!BBH", draw(u8), aux, len(srcs)) + draw(addr) + b"".join(srcs) + bytes(4 * aux)
        body = struct.pack("!2xH", n) + recs
    else:
        body = draw(st.binary(max_size=30))
    return struct.pack("!BBH", t, draw(u8), draw(u16)) + body


def l4(proto: int) -> Any:
    return {6: tcp_seg(), 17: udp_dgram(), 1: icmp4(), 58: icmp6()}.get(proto, payload)


@st.composite
def ipv4_pkt(draw: Any) -> bytes:
    proto = draw(st.sampled_from([6, 17, 1, 58, 50, 254]))
    data = draw(l4(proto))
    opts = draw(st.binary(max_size=12))
    opts += b"\x00" * (-len(opts) % 4)
    ihl = (20 + len(opts)) // 4
    if draw(st.integers(0, 12)) == 0:
        ihl = draw(st.integers(0, 15))
    total = 4 * ((20 + len(opts)) // 4) + len(data)
    if draw(st.integers(0, 6)) == 0:
        total = draw(u16)
    frag = draw(st.sampled_from([0, 0x4000, 0x2000 | 5, draw(u16)]))
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, draw(u8), total, draw(u16), frag, draw(u8), proto, draw(u16),
                      draw(st.binary(min_size=4, max_size=4)), draw(st.binary(min_size=4, max_size=4)))
    return hdr + opts + data


@st.composite
def ipv6_pkt(draw: Any) -> bytes:
    proto = draw(st.sampled_from([6, 17, 58, 1, 59, 50]))
    data = draw(l4(proto))
    ext = b""
    nxt = proto
    for kind in reversed(draw(st.lists(st.sampled_from([0, 60, 44, 51]), max_size=3))):
        if kind in (0, 60):
            n = draw(st.sampled_from([0, 8]))
            opts = b""
            while len(opts) < 6 + n:
                if 6 + n - len(opts) < 2 or draw(st.booleans()):
                    opts += b"\x00"
                else:
                    v = draw(st.binary(max_size=min(4, 6 + n - len(opts) - 2)))
                    opts += bytes([draw(st.integers(1, 255)), len(v)]) + v
            ext = bytes([nxt, n]) + opts[: 6 + n] + ext
        elif kind == 44:
            ext = struct.pack("!BxHI", nxt, draw(u16), draw(u32)) + ext
        else:
            size = draw(st.integers(1, 4))
            ext = struct.pack("!BB2xII", nxt, size, draw(u32), draw(u32)) + bytes((size + 2) * 4 - 12) + ext
        nxt = kind
    plen = len(ext) + len(data) if draw(st.integers(0, 5)) else draw(u16)
    hdr = struct.pack("!IHBB16s16s", 6 << 28 | draw(st.integers(0, 2**28 - 1)), plen, nxt, draw(u8),
                      draw(st.binary(min_size=16, max_size=16)), draw(st.binary(min_size=16, max_size=16)))
    return hdr + ext + data


@st.composite
def frames(draw: Any) -> tuple[int, bytes]:
    kind = draw(st.sampled_from([0x0800, 0x0800, 0x86DD, 0x86DD, 0x0806, 0x88B5]))
    if kind == 0x0800:
        body = draw(ipv4_pkt())
    elif kind == 0x86DD:
        body = draw(ipv6_pkt())
    elif kind == 0x0806:
        body = draw(st.binary(min_size=28, max_size=28)) + draw(st.sampled_from([b"", bytes(18), b"trailer"]))
    else:
        body = draw(payload)
    if draw(st.integers(0, 4)) == 0:
        body = body[: draw(st.integers(0, len(body)))]  # captured short (copy range) or cut
    return kind, body


# --- the tests ---------------------------------------------------------------------------------

@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames())
def test_ovs_driver_text_is_os_kens(f: tuple[int, bytes]) -> None:
    kind, body = f
    frame = MAC + struct.pack("!H", kind) + body
    ours = osken.render_frame(frame)
    theirs = osken_frame(frame)
    if theirs is not None:
        assert ours == theirs


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames())
def test_fwaas_driver_text_is_os_kens(f: tuple[int, bytes]) -> None:
    kind, body = f
    ours = osken.render_fwaas(MAC, kind, body)
    theirs = osken_fwaas(MAC, kind, body)
    if theirs is not None:
        assert ours == theirs


def test_golden_packets() -> None:
    """The golden capture's packets (ICMP, TCP, UDP over IPv4 and IPv6), in both formats."""
    packets = golden_from_vectors()
    assert len(packets) >= 10
    kinds = set()
    for p in packets:
        frame = MAC + struct.pack("!H", p["protocol"]) + p["payload"]
        theirs = osken_frame(frame)
        assert theirs is not None
        assert osken.render_frame(frame) == theirs
        fw = osken_fwaas(MAC, p["protocol"], p["payload"])
        if fw is not None:
            assert osken.render_fwaas(MAC, p["protocol"], p["payload"]) == fw
        kinds.add(theirs.split(", ")[2].split("(")[0] if theirs.count(", ") >= 2 else "")
    assert {"tcp", "udp", "icmp", "icmpv6"} <= kinds


NAMES = {"ethernet(", "arp(", "ipv4(", "ipv6(", "tcp(", "udp(", "icmp(", "icmpv6(", "echo(", "nd_neighbor(",
         "nd_router_advert(", "TCPOption", "hop_opts(", "fragment("}


def test_covers_every_required_kind() -> None:
    """The generator reaches every header the issue names (so the comparisons above mean it)."""
    seen: set[str] = set()

    @settings(max_examples=1500, deadline=None, database=None, derandomize=True)
    @given(frames())
    def collect(f: tuple[int, bytes]) -> None:
        text = osken_frame(MAC + struct.pack("!H", f[0]) + f[1]) or ""
        for name in NAMES:
            if name in text:
                seen.add(name)

    collect()
    # A rare header (ND neighbour messages: about 1 in 250 frames) may be missed by that
    # fixed sample; look for it on purpose (find() stops at the first frame that has it).
    for name in NAMES - seen:
        find(frames(), lambda f, name=name: name in (osken_frame(MAC + struct.pack("!H", f[0]) + f[1]) or ""),
             settings=settings(max_examples=20000, database=None, deadline=None))
        seen.add(name)
    assert seen == NAMES


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=120), st.booleans())
def test_never_raises_and_always_ends(data: bytes, redact: bool) -> None:
    for kind in (0x0800, 0x86DD, 0x0806, 0x8100, 0x0001):
        text = osken.render_frame(MAC + struct.pack("!H", kind) + data, redact=redact)
        assert isinstance(text, str)
        assert isinstance(osken.render_fwaas(MAC, kind, data, redact=redact), str)
        for first in (osken.ipv4, osken.ipv6):
            assert isinstance(osken.render_from(data, first, redact=redact), str)


def test_redaction_keeps_headers_and_hides_payload() -> None:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + 8 + 11, 1, 0, 64, 1, 0, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    frame = MAC + b"\x08\x00" + ip + struct.pack("!BBHHH", 8, 0, 0, 7, 1) + b"secret text"
    full = osken.render_frame(frame)
    assert "bytearray(b'secret text')" in full
    red = osken.render_frame(frame, redact=True)
    assert "secret" not in red and "data=<redacted 11 bytes>" in red and "src='10.0.0.1'" in red
    tcp = struct.pack("!HHIIBBHHH", 1, 2, 3, 4, 5 << 4, 0x18, 5, 6, 0) + b"GET / HTTP/1.1"
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0, 64, 6, 0, bytes(4), bytes([1, 2, 3, 4]))
    red = osken.render_frame(MAC + b"\x08\x00" + ip + tcp, redact=True)
    assert red.endswith("window_size=5), <redacted 14 bytes>")
    assert "GET" not in osken.render_fwaas(MAC, 0x0800, ip + tcp, redact=True)


def test_what_os_ken_decodes_further_is_printed_raw() -> None:
    """A DHCP datagram: os-ken decodes the DHCP message, we print udp(...) and the bytes."""
    body = b"\x01\x01\x06\x00" + bytes(232) + b"\x63\x82\x53\x63\x35\x01\x01\xff"
    udp = struct.pack("!HHHH", 68, 67, 8 + len(body), 0) + body
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, bytes(4), b"\xff" * 4)
    text = osken.render_frame(MAC + b"\x08\x00" + ip + udp)
    assert "udp(csum=0,dst_port=67,src_port=68,total_length=252), bytearray(b'\\x01\\x01\\x06" in text
    assert "dhcp(" in (osken_frame(MAC + b"\x08\x00" + ip + udp) or "")
