"""BASE (``ulogd_raw2packet_BASE.so``): decode the L3/L4 headers of a logged packet.

Reads ``raw.pkt``/``raw.pktlen`` with ``oob.family`` (2 IPv4, 10 IPv6, 7 bridge: then by
``oob.protocol`` 0x0800/0x86DD/0x0806 ARP; 3, nft's ``arp`` family, is not decoded, as in
2.0.8) and writes the header fields as ulogd2 2.0.8 does, in its key order. Where 2.0.8
computes a wrong value pyulogd writes the right one; each case is listed in
docs/compat.md: ``tcp.offset``/``tcp.reserved``, ``ahesp.spi``, ``arp.saddr``/``arp.daddr``
(and IPv6 ESP's length test).

This is the hot path of every packet stack: the decoders in ``pyulogd.packet`` return
tuples in key order and the filter stores each with one slice assignment at an offset
fixed at import time; IPv4 (without options) and IPv6 (without extension headers)
carrying TCP or UDP take a fast path that unpacks both headers at once. Only valid keys
are written: the record must arrive with BASE's slots ``None``, as the fresh record
``Source.emit`` builds per event does. A packet too short for a header leaves that
header's keys (and those after it) invalid, returns OK like ulogd and is counted in
``base.<id>.malformed``; nothing a packet holds can raise out of ``interp``.
"""

from __future__ import annotations

import struct
from typing import Any

from pyulogd.core.context import Context
from pyulogd.core.plugin import OK, DataType, Filter, Key
from pyulogd.core.plugin import KeyType as T
from pyulogd.packet import arp, icmp, icmpv6, ipsec, ipv4, ipv6, sctp, tcp, udp

INPUT_KEYS = (
    Key("raw.pkt", T.RAW),
    Key("raw.pktlen", T.UINT32),
    Key("oob.family", T.UINT8),
    Key("oob.protocol", T.UINT16),
)

# ulogd's declaration order (``ulogd -i BASE``): JSON, OPRINT and GPRINT print in it.
OUTPUT_KEYS = (
    Key("ip.saddr", T.IPADDR, help="source address (IPv4 or IPv6)"),
    Key("ip.daddr", T.IPADDR, help="destination address (IPv4 or IPv6)"),
    Key("ip.protocol", T.UINT8, help="IPv4 protocol / IPv6 upper-layer protocol"),
    Key("ip.tos", T.UINT8, help="IPv4 type of service"),
    Key("ip.ttl", T.UINT8, help="IPv4 time to live"),
    Key("ip.totlen", T.UINT16, help="IPv4 total length"),
    Key("ip.ihl", T.UINT8, help="IPv4 header length in 32-bit words"),
    Key("ip.csum", T.UINT16, help="IPv4 header checksum"),
    Key("ip.id", T.UINT16, help="IPv4 identification"),
    Key("ip.fragoff", T.UINT16, help="IPv4 flags and fragment offset (the whole 16-bit field)"),
    Key("ip6.payloadlen", T.UINT16, help="IPv6 payload length"),
    Key("ip6.priority", T.UINT8, help="IPv6 traffic class"),
    Key("ip6.flowlabel", T.UINT32, help="IPv6 flow label"),
    Key("ip6.hoplimit", T.UINT8, help="IPv6 hop limit"),
    Key("ip6.nexthdr", T.UINT8, help="IPv6 next header where decoding stopped"),
    Key("ip6.fragoff", T.UINT16, help="IPv6 fragment offset in bytes"),
    Key("ip6.fragid", T.UINT32, help="IPv6 fragment identification"),
    Key("tcp.sport", T.UINT16, cim="src_port", help="TCP source port"),
    Key("tcp.dport", T.UINT16, cim="dest_port", help="TCP destination port"),
    Key("tcp.seq", T.UINT32, help="TCP sequence number"),
    Key("tcp.ackseq", T.UINT32, help="TCP acknowledgement number"),
    Key("tcp.window", T.UINT16, help="TCP window"),
    Key("tcp.offset", T.UINT8, help="TCP data offset in 32-bit words"),
    Key("tcp.reserved", T.UINT8, help="TCP reserved bits (the 4 bits after the data offset)"),
    Key("tcp.urg", T.BOOL, help="TCP URG flag"),
    Key("tcp.urgp", T.UINT16, help="TCP urgent pointer (only with URG)"),
    Key("tcp.ack", T.BOOL, help="TCP ACK flag"),
    Key("tcp.psh", T.BOOL, help="TCP PSH flag"),
    Key("tcp.rst", T.BOOL, help="TCP RST flag"),
    Key("tcp.syn", T.BOOL, help="TCP SYN flag"),
    Key("tcp.fin", T.BOOL, help="TCP FIN flag"),
    Key("tcp.res1", T.BOOL, help="TCP reserved bits after the data offset (value 0-15)"),
    Key("tcp.res2", T.BOOL, help="TCP CWR and ECE bits (value 0-3)"),
    Key("tcp.csum", T.UINT16, help="TCP checksum"),
    Key("udp.sport", T.UINT16, cim="src_port", help="UDP source port"),
    Key("udp.dport", T.UINT16, cim="dest_port", help="UDP destination port"),
    Key("udp.len", T.UINT16, help="UDP length"),
    Key("udp.csum", T.UINT16, help="UDP checksum"),
    Key("icmp.type", T.UINT8, help="ICMP type"),
    Key("icmp.code", T.UINT8, help="ICMP code"),
    Key("icmp.echoid", T.UINT16, help="ICMP echo identifier"),
    Key("icmp.echoseq", T.UINT16, help="ICMP echo sequence number"),
    Key("icmp.gateway", T.IPADDR, help="ICMP redirect gateway / parameter problem (host order)"),
    Key("icmp.fragmtu", T.UINT16, help="ICMP fragmentation-needed next-hop MTU"),
    Key("icmp.csum", T.UINT16, help="ICMP checksum (bytes swapped, as ulogd)"),
    Key("icmpv6.type", T.UINT8, help="ICMPv6 type"),
    Key("icmpv6.code", T.UINT8, help="ICMPv6 code"),
    Key("icmpv6.echoid", T.UINT16, help="ICMPv6 echo identifier"),
    Key("icmpv6.echoseq", T.UINT16, help="ICMPv6 echo sequence number"),
    Key("icmpv6.csum", T.UINT16, help="ICMPv6 checksum (bytes swapped, as ulogd)"),
    Key("ahesp.spi", T.UINT32, help="IPsec AH/ESP security parameters index"),
    Key("oob.protocol", T.UINT16, help="link-layer protocol, copied from the input"),
    Key("arp.hwtype", T.UINT16, help="ARP hardware type"),
    Key("arp.protocoltype", T.UINT16, help="ARP protocol type"),
    Key("arp.operation", T.UINT16, help="ARP operation"),
    Key("arp.shwaddr", T.RAW, help="ARP sender MAC (6 bytes)"),
    Key("arp.saddr", T.IPADDR, help="ARP sender IPv4 address"),
    Key("arp.dhwaddr", T.RAW, help="ARP target MAC (6 bytes)"),
    Key("arp.daddr", T.IPADDR, help="ARP target IPv4 address"),
    Key("sctp.sport", T.UINT16, cim="src_port", help="SCTP source port"),
    Key("sctp.dport", T.UINT16, cim="dest_port", help="SCTP destination port"),
    Key("sctp.csum", T.UINT32, help="SCTP checksum"),
)

_INDEX = {k.name: i for i, k in enumerate(OUTPUT_KEYS)}


def _block(fields: tuple[str, ...]) -> int:
    """Offset of the first of ``fields``, which must be contiguous in OUTPUT_KEYS in that
    order: a decoder's tuple is stored with one slice assignment, and a tuple of the wrong
    width would resize the record instead of failing."""
    start = _INDEX[fields[0]]
    if tuple(k.name for k in OUTPUT_KEYS[start : start + len(fields)]) != fields:
        raise RuntimeError(f"BASE key order does not match decoder fields {fields}")
    return start


K_IP4 = _block(ipv4.FIELDS)
K_IP4_END = K_IP4 + len(ipv4.FIELDS)
K_IP_SADDR = _INDEX["ip.saddr"]
K_IP_DADDR = _INDEX["ip.daddr"]
K_IP_PROTOCOL = _INDEX["ip.protocol"]
K_IP6_NEXTHDR = _INDEX["ip6.nexthdr"]
K_IP6 = _block(ipv6.FIELDS)
K_IP6_END = K_IP6 + len(ipv6.FIELDS)
K_IP6_WALK = _block(ipv6.WALK_FIELDS)
K_IP6_WALK_END = K_IP6_WALK + len(ipv6.WALK_FIELDS)
K_TCP = _block(tcp.FIELDS)
K_TCP_END = K_TCP + len(tcp.FIELDS)
K_UDP = _block(udp.FIELDS)
K_UDP_END = K_UDP + len(udp.FIELDS)
K_ICMP = _block(icmp.FIELDS)
K_ICMP_END = K_ICMP + len(icmp.FIELDS)
K_ICMPV6 = _block(icmpv6.FIELDS)
K_ICMPV6_END = K_ICMPV6 + len(icmpv6.FIELDS)
K_AHESP_SPI = _INDEX["ahesp.spi"]
K_OOB_PROTOCOL = _INDEX["oob.protocol"]
K_ARP = _block(arp.FIELDS)
K_ARP_END = K_ARP + len(arp.FIELDS)
K_SCTP = _block(sctp.FIELDS)
K_SCTP_END = K_SCTP + len(sctp.FIELDS)
if (K_IP4, K_IP_SADDR, K_IP_DADDR, K_IP_PROTOCOL, K_IP6_END, K_IP6_NEXTHDR) != (0, 0, 1, 2, 14, 14):
    raise RuntimeError("BASE's fast paths expect ip.saddr, ip.daddr, ip.protocol first, ip6.nexthdr at 14")

# Keys written together or not at all (each group's first is never None when it is written, and
# a record arrives with every BASE slot None): outputs may skip a group by its first key.
KEY_BLOCKS: tuple[tuple[str, ...], ...] = (
    ipv4.FIELDS[3:],  # ip.tos .. ip.fragoff: IPv4 only
    tuple(k.name for k in OUTPUT_KEYS[_INDEX["ip6.payloadlen"] : _INDEX["ip6.fragid"] + 1]),
    tcp.FIELDS,
    udp.FIELDS,
    icmp.FIELDS,
    icmpv6.FIELDS,
    arp.FIELDS,
    sctp.FIELDS,
)
if KEY_BLOCKS[0][0] != "ip.tos" or KEY_BLOCKS[1][0] != "ip6.payloadlen":
    raise RuntimeError("BASE's key blocks expect ip.tos and ip6.payloadlen first")

# oob.family values (NFPROTO_*) and the ethertypes a bridge-family packet is decoded by.
NFPROTO_IPV4 = 2
NFPROTO_ARP = 3
NFPROTO_BRIDGE = 7
NFPROTO_IPV6 = 10
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ESP = 50
IPPROTO_AH = 51
IPPROTO_ICMPV6 = 58
IPPROTO_SCTP = 132

# The common cases, IPv4 without options (first byte 0x45) and IPv6 without extension
# headers carrying TCP or UDP, are read with one unpack of both headers; the result equals
# the ipv4/ipv6 + tcp/udp decoders' (tested).
_ip4_tcp = struct.Struct(ipv4.HEADER.format + tcp.HEADER.format.lstrip("!")).unpack_from
_ip4_udp = struct.Struct(ipv4.HEADER.format + udp.HEADER.format.lstrip("!")).unpack_from
_ip6_tcp = struct.Struct(ipv6.HEADER.format + tcp.HEADER.format.lstrip("!")).unpack_from
_ip6_udp = struct.Struct(ipv6.HEADER.format + udp.HEADER.format.lstrip("!")).unpack_from
_tcp_flags = tcp.FLAGS

_ip4_decode = ipv4.decode
_ip6_decode = ipv6.decode
_ip6_walk = ipv6.walk
_ip6_ext = ipv6.EXTENSION_HEADERS
_tcp_decode = tcp.decode
_udp_decode = udp.decode
_icmp_decode = icmp.decode
_icmpv6_decode = icmpv6.decode
_sctp_decode = sctp.decode
_arp_decode = arp.decode


class BaseFilter(Filter):
    name = "BASE"
    so_name = "ulogd_raw2packet_BASE.so"
    description = "Decode the IPv4/IPv6/TCP/UDP/ICMP/ICMPv6/SCTP/ARP headers of a logged packet"
    input_type = DataType.RAW
    output_type = DataType.PACKET
    input_keys = INPUT_KEYS
    output_keys = OUTPUT_KEYS
    key_blocks = KEY_BLOCKS

    def __init__(self, ctx: Context, instance_id: str, config: dict[str, Any]) -> None:
        super().__init__(ctx, instance_id, config)
        self._malformed = f"base.{instance_id}.malformed"

    def interp(self, rec: list[Any]) -> int:
        s_pkt, s_len, s_fam, s_proto = self.in_slots
        b = self.out_base
        proto = rec[s_proto]
        # Re-emitted even when the input is invalid: ulogd copies the cleared value, 0.
        rec[b + K_OOB_PROTOCOL] = 0 if proto is None else proto
        pkt = rec[s_pkt]
        n = rec[s_len]
        if pkt is None or n is None:
            return OK
        fam = rec[s_fam]
        try:
            # raw.pktlen is what ulogd trusts; never read past the bytes actually there.
            if n > len(pkt):
                n = len(pkt)
            if fam == NFPROTO_IPV4 or (fam == NFPROTO_BRIDGE and proto == ETH_P_IP):
                # IPv4 with TCP or UDP is most of what gets logged: kept inline here.
                if n >= 28 and pkt[0] == 0x45:
                    p = pkt[9]
                    if p == IPPROTO_TCP and n >= 40:
                        (_, tos, totlen, ident, frag, ttl, p, csum, saddr, daddr,
                         sport, dport, seq, ack, b12, b13, window, tcsum, urgp) = _ip4_tcp(pkt)  # fmt: skip
                        rec[b + K_IP4 : b + K_IP4_END] = (
                            saddr, daddr, p, tos, ttl, totlen, 5, csum, ident, frag,
                        )  # fmt: skip
                        f = _tcp_flags[b13]
                        res1 = b12 & 15
                        rec[b + K_TCP : b + K_TCP_END] = (
                            sport, dport, seq, ack, window, b12 >> 4, res1, f[0], urgp if f[0] else None,
                            f[1], f[2], f[3], f[4], f[5], res1, f[6], tcsum,
                        )  # fmt: skip
                        return OK
                    if p == IPPROTO_UDP:
                        (_, tos, totlen, ident, frag, ttl, p, csum, saddr, daddr,
                         sport, dport, ulen, ucsum) = _ip4_udp(pkt)  # fmt: skip
                        rec[b + K_IP4 : b + K_IP4_END] = (
                            saddr, daddr, p, tos, ttl, totlen, 5, csum, ident, frag,
                        )  # fmt: skip
                        rec[b + K_UDP : b + K_UDP_END] = (sport, dport, ulen, ucsum)
                        return OK
                t = _ip4_decode(pkt, n)
                if t is not None:
                    rec[b + K_IP4 : b + K_IP4_END] = t
                    off = t[ipv4.IHL] << 2
                    p = t[ipv4.PROTO]
                    if p == IPPROTO_TCP:
                        x: Any = _tcp_decode(pkt, off, n - off)
                        if x is not None:
                            rec[b + K_TCP : b + K_TCP_END] = x
                            return OK
                    elif p == IPPROTO_UDP:
                        x = _udp_decode(pkt, off, n - off)
                        if x is not None:
                            rec[b + K_UDP : b + K_UDP_END] = x
                            return OK
                    elif _ip4_other(rec, b, pkt, off, n - off, p):
                        return OK
                    # Too short for its L4 header. Not malformed in a non-first fragment,
                    # which 2.0.8 (and so pyulogd) reads as if it began with one.
                    if t[ipv4.FRAGOFF] & 0x1FFF:
                        return OK
            elif fam == NFPROTO_IPV6 or (fam == NFPROTO_BRIDGE and proto == ETH_P_IPV6):
                if _ip6(rec, b, pkt, n):
                    return OK
            elif fam == NFPROTO_BRIDGE and proto == ETH_P_ARP:
                x = _arp_decode(pkt, n)
                if x is not None:
                    rec[b + K_ARP : b + K_ARP_END] = x
                    return OK
            else:
                return OK  # families 3 (nft arp) and others: 2.0.8 decodes nothing
        except Exception:  # a decoder bug must cost one record's keys, never the stack
            pass
        self.ctx.stats.incr(self._malformed)
        return OK


def _ip4_other(rec: list[Any], b: int, pkt: Any, off: int, rem: int, p: int) -> bool:
    """IPv4 payloads other than TCP/UDP; False when too short for their header."""
    if p == IPPROTO_ICMP:
        x: Any = _icmp_decode(pkt, off, rem)
        if x is not None:
            rec[b + K_ICMP : b + K_ICMP_END] = x
            return True
    elif p == IPPROTO_SCTP:
        x = _sctp_decode(pkt, off, rem)
        if x is not None:
            rec[b + K_SCTP : b + K_SCTP_END] = x
            return True
    elif p == IPPROTO_ESP:
        x = ipsec.esp_spi(pkt, off, rem)
        if x is not None:
            rec[b + K_AHESP_SPI] = x
            return True
    elif p == IPPROTO_AH:
        x = ipsec.ah_spi(pkt, off, rem)
        if x is not None:
            rec[b + K_AHESP_SPI] = x
            return True
    else:
        return True
    return False


def _ip6(rec: list[Any], b: int, pkt: Any, n: int) -> bool:
    """Write the IPv6, extension header and L4 keys; False when a header was cut short."""
    if n >= 48:
        # No extension header and TCP/UDP: both headers in one unpack, as for IPv4.
        p = pkt[6]
        if p == IPPROTO_TCP and n >= 60:
            (vtf, plen, _, hlim, saddr, daddr,
             sport, dport, seq, ack, b12, b13, window, tcsum, urgp) = _ip6_tcp(pkt)  # fmt: skip
            rec[b : b + K_IP6_NEXTHDR + 1] = (
                saddr, daddr, p, None, None, None, None, None, None, None,
                plen, vtf >> 20 & 0xFF, vtf & 0xFFFFF, hlim, p,
            )  # fmt: skip
            f = _tcp_flags[b13]
            res1 = b12 & 15
            rec[b + K_TCP : b + K_TCP_END] = (
                sport, dport, seq, ack, window, b12 >> 4, res1, f[0], urgp if f[0] else None,
                f[1], f[2], f[3], f[4], f[5], res1, f[6], tcsum,
            )  # fmt: skip
            return True
        if p == IPPROTO_UDP:
            vtf, plen, _, hlim, saddr, daddr, sport, dport, ulen, ucsum = _ip6_udp(pkt)
            rec[b : b + K_IP6_NEXTHDR + 1] = (
                saddr, daddr, p, None, None, None, None, None, None, None,
                plen, vtf >> 20 & 0xFF, vtf & 0xFFFFF, hlim, p,
            )  # fmt: skip
            rec[b + K_UDP : b + K_UDP_END] = (sport, dport, ulen, ucsum)
            return True
    h = _ip6_decode(pkt, n)
    if h is None:
        return False
    saddr, daddr, plen, prio, flow, hlim = h
    # ip.saddr .. ip6.hoplimit in one store; the IPv4-only keys between stay None.
    rec[b : b + K_IP6_END] = (
        saddr, daddr, None, None, None, None, None, None, None, None, plen, prio, flow, hlim,
    )  # fmt: skip
    p = pkt[6]
    if p in _ip6_ext:
        keys, p, off, rem, spi, cut = _ip6_walk(pkt, n)
        rec[b + K_IP6_WALK : b + K_IP6_WALK_END] = keys
        if spi is not None:
            rec[b + K_AHESP_SPI] = spi
        if p is None:
            return not cut
    else:  # no extension header: what walk() would find at once
        rec[b + K_IP6_NEXTHDR] = p
        off = 40
        rem = n - 40
    rec[b + K_IP_PROTOCOL] = p
    if p == IPPROTO_TCP:
        x: Any = _tcp_decode(pkt, off, rem)
        if x is not None:
            rec[b + K_TCP : b + K_TCP_END] = x
            return True
    elif p == IPPROTO_UDP:
        x = _udp_decode(pkt, off, rem)
        if x is not None:
            rec[b + K_UDP : b + K_UDP_END] = x
            return True
    elif p == IPPROTO_ICMPV6:
        x = _icmpv6_decode(pkt, off, rem)
        if x is not None:
            rec[b + K_ICMPV6 : b + K_ICMPV6_END] = x
            return True
    else:
        return True
    return False
