"""PRINTPKT: the 44 golden lines of ulogd2 2.0.8, every branch of the grammar, and the
deliberate corrections of docs/compat.md (ICMP detail by type, GATEWAY, IPv6 ESP)."""

from __future__ import annotations

import socket
import struct
from typing import Any

import pytest

from pyulogd.core.context import Context
from pyulogd.core.plugin import DataType, Key, Source
from pyulogd.io.loop import Loop
from pyulogd.io.rtnl import LinkCache
from pyulogd.plugins.filters.ifindex import IfindexFilter
from pyulogd.plugins.filters.ip2str import Ip2strFilter
from pyulogd.plugins.filters.printpkt import _INPUT_NAMES, PrintpktFilter
from tests.helpers import BaseKeys, Capture, NflogKeys, golden_packets, goldentool, make_stack


def golden_ctx() -> Context:
    ctx = Context(loop=Loop())
    ctx.hostname = "vm"
    cache = LinkCache(ctx, kernel=False)
    cache.update({2: "gbb0"})  # the golden lab's interface
    ctx.ifcache = cache  # type: ignore[attr-defined]
    return ctx


def test_golden_lines_of_ulogd_2_0_8() -> None:
    """NFLOG+BASE values of every golden packet, through the real IFINDEX, IP2STR, PRINTPKT."""
    ctx = golden_ctx()
    cap = Capture(ctx, "cap", {})
    stack = make_stack([NflogKeys, BaseKeys, IfindexFilter, Ip2strFilter, PrintpktFilter, cap], ctx)
    base = stack.instances[1]
    got, want = [], []
    for nflog, values, _obj, emu in golden_packets():
        base.values = values  # type: ignore[attr-defined]
        stack.source.emit_dict(nflog)  # type: ignore[attr-defined]
        line = cap.value(cap.records[-1], "print")
        assert line.endswith(" \n")
        got.append(emu[:19] + line[:-1])  # the golden line's "Mmm dd HH:MM:SS vm "
        want.append(emu)
    assert stack.errors == 0
    assert len(got) == 44
    tool = goldentool()
    for g, w in zip(tool.mask_logemu("\n".join(got)), tool.mask_logemu("\n".join(want)), strict=True):
        assert g == w


# -- single records
class PktSource(Source):
    """Declares every PRINTPKT input, so a test sets exactly the keys it wants valid."""

    name = "PKTSRC"
    output_type = DataType.PACKET
    output_keys = tuple(Key(n) for n in _INPUT_NAMES)


def line(**values: Any) -> str:
    row = {k.replace("_", ".").replace("mac.len", "mac_len"): v for k, v in values.items()}
    for name in row:
        assert name in _INPUT_NAMES, name
    cap = Capture(Context(loop=Loop()), "cap", {})
    stack = make_stack([PktSource, PrintpktFilter, cap])
    stack.source.emit([None] + [row.get(n) for n in _INPUT_NAMES])
    assert stack.errors == 0
    text: str = cap.value(cap.records[0], "print")
    return text


def ip4(**extra: Any) -> dict[str, Any]:
    base = dict(oob_family=2, oob_prefix="P", oob_in="eth0", oob_out="", oob_mark=0,
                ip_saddr_str="10.0.0.1", ip_daddr_str="10.0.0.2", ip_totlen=84, ip_tos=0,
                ip_ttl=64, ip_id=7, ip_fragoff=0)  # fmt: skip
    base.update(extra)
    return base


HEAD4 = "P IN=eth0 OUT= MAC= SRC=10.0.0.1 DST=10.0.0.2 LEN=84 TOS=00 PREC=0x00 TTL=64 ID=7 "


def icmp(itype: int, code: int, **extra: Any) -> str:
    return line(**ip4(ip_protocol=1, icmp_type=itype, icmp_code=code, **extra))


def test_declarations() -> None:
    assert PrintpktFilter.name == "PRINTPKT" and PrintpktFilter.so_name == "ulogd_filter_PRINTPKT.so"
    optional = {k.name for k in PrintpktFilter.input_keys if k.optional}
    assert optional == {"oob.uid", "oob.gid"}
    assert len(PrintpktFilter.input_keys) == 60
    assert [k.name for k in PrintpktFilter.output_keys] == ["print"]


@pytest.mark.parametrize(
    ("itype", "code", "extra", "detail"),
    [
        (8, 0, {"icmp_echoid": 25089, "icmp_echoseq": 1}, "ID=25089 SEQ=1 "),
        (0, 0, {"icmp_echoid": 25089, "icmp_echoseq": 2}, "ID=25089 SEQ=2 "),
        (3, 4, {"icmp_fragmtu": 1400}, "MTU=1400 "),  # 2.0.8: never printed
        (3, 3, {}, ""),
        (3, 0, {}, ""),  # 2.0.8: "ID=0 SEQ=0 " (it switches on the code)
        (11, 0, {}, ""),  # 2.0.8: "ID=0 SEQ=0 "
        (3, 5, {}, ""),  # 2.0.8: "GATEWAY=0.0.0.0 "
        (3, 12, {}, ""),  # 2.0.8: "PARAMETER=0 "
        # BASE's icmp.gateway: ntohl() of the field as IPADDR bytes, i.e. reversed
        (5, 1, {"icmp_gateway": bytes([1, 7, 168, 192])}, "GATEWAY=192.168.7.1 "),
        (5, 0, {"icmp_gateway": 0xC0A80701}, "GATEWAY=192.168.7.1 "),
        (12, 0, {"icmp_gateway": bytes([0, 0, 0, 20])}, "PARAMETER=20 "),
    ],
)
def test_icmp_detail_by_type(itype: int, code: int, extra: dict[str, Any], detail: str) -> None:
    assert icmp(itype, code, **extra) == f"{HEAD4}PROTO=ICMP TYPE={itype} CODE={code} {detail}MARK=0x0 \n"


def test_icmp_incomplete() -> None:
    assert line(**ip4(ip_protocol=1)) == f"{HEAD4}PROTO=ICMP INCOMPLETEMARK=0x0 \n"


def icmp_packet(itype: int, code: int, rest: bytes) -> bytes:
    l4 = struct.pack("!BBH", itype, code, 0) + rest + bytes(28)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0, 64, 1, 0,
                      socket.inet_aton("10.0.0.9"), socket.inet_aton("10.0.0.2"))  # fmt: skip
    return hdr + l4


def test_gateway_through_the_real_base_filter() -> None:
    base_mod = pytest.importorskip("pyulogd.plugins.filters.base")
    ctx = golden_ctx()
    cap = Capture(ctx, "cap", {})
    plugins = [NflogKeys, base_mod.BaseFilter, IfindexFilter, Ip2strFilter, PrintpktFilter, cap]
    stack = make_stack(plugins, ctx)
    for pkt, detail in (
        (icmp_packet(5, 1, socket.inet_aton("192.168.7.1")), "GATEWAY=192.168.7.1 "),
        (icmp_packet(12, 0, bytes([20, 0, 0, 0])), "PARAMETER=20 "),
        (icmp_packet(3, 4, struct.pack("!HH", 0, 1400)), "MTU=1400 "),
    ):
        nflog = {"raw.pkt": pkt, "raw.pktlen": len(pkt), "oob.family": 2, "oob.protocol": 0x0800,
                 "oob.prefix": "X", "oob.ifindex_in": 2, "oob.mark": 0}  # fmt: skip
        stack.source.emit_dict(nflog)  # type: ignore[attr-defined]
        text = cap.value(cap.records[-1], "print")
        assert text.endswith(f" {detail}MARK=0x0 \n"), text


def test_tcp_flags_and_incomplete() -> None:
    flags = dict(tcp_urg=1, tcp_ack=1, tcp_psh=1, tcp_rst=1, tcp_syn=1, tcp_fin=1)
    got = line(**ip4(ip_protocol=6, tcp_sport=1, tcp_dport=2, tcp_seq=3, tcp_ackseq=4, tcp_window=5,
                     tcp_urgp=6, **flags))  # fmt: skip
    tail = "PROTO=TCP SPT=1 DPT=2 SEQ=3 ACK=4 WINDOW=5 URG ACK PSH RST SYN FIN URGP=6 MARK=0x0 \n"
    assert got == HEAD4 + tail
    # urgp is only valid with URG: 0 is printed, as in C
    got = line(**ip4(ip_protocol=6, tcp_sport=1, tcp_dport=2, tcp_seq=3, tcp_ackseq=4, tcp_window=5,
                     tcp_syn=1))  # fmt: skip
    assert got == HEAD4 + "PROTO=TCP SPT=1 DPT=2 SEQ=3 ACK=4 WINDOW=5 SYN URGP=0 MARK=0x0 \n"
    assert line(**ip4(ip_protocol=6)) == HEAD4 + "PROTO=TCP INCOMPLETEMARK=0x0 \n"


def test_udp_sctp_esp_ah_other() -> None:
    assert line(**ip4(ip_protocol=17, udp_sport=1, udp_dport=2, udp_len=9)).endswith(
        "PROTO=UDP SPT=1 DPT=2 LEN=9 MARK=0x0 \n"
    )
    got = line(**ip4(ip_protocol=132, sctp_sport=1, sctp_dport=2))
    assert got.endswith("PROTO=SCTP SPT=1 DPT=2 MARK=0x0 \n")
    assert line(**ip4(ip_protocol=132)).endswith("PROTO=SCTP INCOMPLETEMARK=0x0 \n")
    assert line(**ip4(ip_protocol=50)).endswith("PROTO=ESP INCOMPLETEMARK=0x0 \n")
    assert line(**ip4(ip_protocol=51, ahesp_spi=0x1234)).endswith("PROTO=AH SPI=0x1234 MARK=0x0 \n")
    assert line(**ip4(ip_protocol=47)).endswith(" ID=7 PROTO=47 MARK=0x0 \n")


def test_ipv4_tos_and_fragment_flags() -> None:
    got = line(**ip4(ip_tos=0xFF, ip_fragoff=0x8000 | 0x4000 | 0x2000 | 185, ip_protocol=47))
    assert " LEN=84 TOS=1E PREC=0xE0 TTL=64 ID=7 CE DF MF FRAG:185 PROTO=47 " in got


def test_ipv4_header_keys_invalid_print_zero() -> None:
    # family 2 but the packet was too short for BASE: C reads 0 from the invalid keys
    got = line(oob_family=2, oob_prefix="P", oob_mark=1)
    assert got == "P MAC= LEN=0 TOS=00 PREC=0x00 TTL=0 ID=0 PROTO=0 MARK=0x1 \n"


IP6 = dict(oob_family=10, oob_prefix="P", oob_in="", oob_out="lo", oob_mark=0, ip_saddr_str="::1",
           ip_daddr_str="::1", ip6_payloadlen=64, ip6_priority=0, ip6_hoplimit=64,
           ip6_flowlabel=112396)  # fmt: skip
HEAD6 = "P IN= OUT=lo MAC= SRC=::1 DST=::1 LEN=104 TC=0 HOPLIMIT=64 FLOWLBL=112396 "


def test_ipv6() -> None:
    got = line(**IP6, ip6_nexthdr=58, icmpv6_type=128, icmpv6_code=0, icmpv6_echoid=15173,
               icmpv6_echoseq=1, oob_uid=0, oob_gid=0)  # fmt: skip
    assert got == HEAD6 + "PROTO=ICMPv6 TYPE=128 CODE=0 ID=15173 SEQ=1 UID=0 GID=0 MARK=0x0 \n"
    assert line(**IP6, ip6_nexthdr=58, icmpv6_type=1, icmpv6_code=4).endswith("TYPE=1 CODE=4 MARK=0x0 \n")
    assert line(**IP6, ip6_nexthdr=58).endswith(" PROTO=ICMPv6 INCOMPLETEMARK=0x0 \n")
    assert line(**IP6, ip6_nexthdr=58, icmpv6_type=1).endswith(" PROTO=ICMPv6 TRUNCATEDMARK=0x0 \n")
    got = line(**IP6, ip6_nexthdr=17, ip6_fragoff=1448, ip6_fragid=0x486B012F)
    assert got == HEAD6 + "FRAG: 1448 ID: 486b012f PROTO=UDP INCOMPLETEMARK=0x0 \n"
    assert line(**IP6, ip6_nexthdr=0).endswith(" PROTO=0 MARK=0x0 \n")
    assert line(oob_family=10, oob_mark=0) == "MAC= PROTO=0 MARK=0x0 \n"


def test_ipv6_esp_is_called_esp() -> None:
    # 2.0.8 names ESP/AH after ip.protocol, which BASE leaves unset for IPv6 ESP: "PROTO=AH"
    assert line(**IP6, ip6_nexthdr=50).endswith(" PROTO=ESP INCOMPLETEMARK=0x0 \n")
    assert line(**IP6, ip6_nexthdr=51, ahesp_spi=255).endswith(" PROTO=AH SPI=0xff MARK=0x0 \n")


def test_bridge_and_arp() -> None:
    arp = dict(oob_family=7, oob_protocol=0x0806, oob_mark=0, arp_saddr_str="10.0.0.1",
               arp_daddr_str="10.0.0.2")  # fmt: skip
    mac = bytes.fromhex("020000c90001")
    got = line(**arp, arp_operation=2, arp_shwaddr=mac)
    assert got == "MAC= SRC=10.0.0.1 DST=10.0.0.2 PROTO=ARP REPLY REPLY_MAC=02:00:00:c9:00:01 MARK=0x0 \n"
    assert line(**arp, arp_operation=1, arp_shwaddr=mac).endswith(" PROTO=ARP REQUEST MARK=0x0 \n")
    assert line(**arp, arp_operation=10).endswith(" PROTO=ARP NAK MARK=0x0 \n")
    assert line(**arp, arp_operation=9).endswith(" PROTO=ARP CODE=9 MARK=0x0 \n")
    assert line(**arp).endswith(" PROTO=ARP MARK=0x0 \n")
    assert line(oob_family=7, oob_protocol=0x8864) == "MAC= PROTO=34916 \n"
    assert line(oob_family=7) == "MAC= PROTO=0 \n"
    got = line(**{**ip4(ip_protocol=47), "oob_family": 7, "oob_protocol": 0x0800})
    assert got == HEAD4 + "PROTO=47 MARK=0x0 \n"


def test_other_families_print_no_network_part() -> None:
    assert line(oob_family=3, oob_prefix="arp", oob_in="eth0", oob_out="", oob_mark=0) == (
        "arp IN=eth0 OUT= MAC= MARK=0x0 \n"
    )


def test_prefix_interfaces_mac_uid_gid() -> None:
    assert line(oob_prefix="") == " MAC= \n"
    assert line(oob_prefix="two  ") == "two   MAC= \n"
    assert line(oob_in="eth0") == "MAC= \n"  # IN/OUT only when both are valid
    got = line(raw_mac=bytes(range(14)), raw_mac_len=14)
    assert got == "MAC=00:01:02:03:04:05:06:07:08:09:0a:0b:0c:0d \n"
    assert line(raw_mac=bytes(range(14)), raw_mac_len=6) == "MAC=00:01:02:03:04:05 \n"
    assert line(raw_mac=b"", raw_mac_len=0) == "MAC=\n"  # C's loop prints nothing, no blank
    assert line(raw_mac=bytes(14)) == "MAC=\n"  # mac_len invalid reads 0
    assert line(oob_uid=1000, oob_gid=100, oob_mark=0xFF) == "MAC= UID=1000 GID=100 MARK=0xff \n"


def test_prefix_bytes_that_are_not_utf8_are_escaped() -> None:
    """2.0.8 writes them raw (a log that is not UTF-8); pyulogd as \\xHH (pyulogd.core.escape)."""
    prefix = b"caf\xe9 \xff".decode("utf-8", "surrogateescape")
    got = line(oob_prefix=prefix)
    assert got == "caf\\xe9 \\xff MAC= \n"
    assert line(oob_prefix="café") == "café MAC= \n"  # UTF-8 text is text


FORGED = "qtest-nl\nDec  7 00:00:00 fakehost FORGED: IN=eth0 SRC=6.6.6.6"


@pytest.mark.parametrize("field", ["oob_prefix", "oob_in", "oob_out"])
def test_outside_strings_cannot_forge_a_line(field: str) -> None:
    got = line(**ip4(**{field: FORGED}, ip_protocol=17, udp_sport=1, udp_dport=2, udp_len=8))
    assert got.count("\n") == 1 and got.endswith(" \n")
    assert "qtest-nl\\nDec  7 00:00:00 fakehost FORGED: IN=eth0 SRC=6.6.6.6" in got


def test_escaping_is_unambiguous_and_leaves_ordinary_prefixes_alone() -> None:
    assert line(oob_prefix="a\\b\x1b[31m\t") == "a\\\\b\\x1b[31m\\t MAC= \n"
    # one stack, prefixes and names seen again (from the filter's cache) print the same
    cap = Capture(Context(loop=Loop()), "cap", {})
    stack = make_stack([PktSource, PrintpktFilter, cap])
    for prefix in ["gbACCEPT ", "x\ny", "gbACCEPT ", "x\ny", ""] * 2:
        row = {"oob.prefix": prefix, "oob.in": "gbb0", "oob.out": "e\x7f"}
        stack.source.emit([None] + [row.get(n) for n in _INPUT_NAMES])
    got = [cap.value(r, "print") for r in cap.records]
    assert got == ["gbACCEPT  IN=gbb0 OUT=e\\x7f MAC= \n", "x\\ny IN=gbb0 OUT=e\\x7f MAC= \n",
                   "gbACCEPT  IN=gbb0 OUT=e\\x7f MAC= \n", "x\\ny IN=gbb0 OUT=e\\x7f MAC= \n",
                   " IN=gbb0 OUT=e\\x7f MAC= \n"] * 2  # fmt: skip


def test_runs_without_start() -> None:
    cap = Capture(Context(loop=Loop()), "cap", {})
    stack = make_stack([PktSource, PrintpktFilter, cap], start=False)
    stack.source.emit([None] * (1 + len(_INPUT_NAMES)))
    assert cap.value(cap.records[0], "print") == "MAC= \n"
