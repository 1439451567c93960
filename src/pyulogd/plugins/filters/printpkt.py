"""PRINTPKT: one kernel-LOG-like text line per packet (ulogd2 ``ulogd_filter_PRINTPKT.so``).

The line is byte-identical to ulogd2 2.0.8 (``util/printpkt.c``), trailing blank and all,
except where docs/compat.md says otherwise: the ICMP detail is chosen by the ICMP
type (2.0.8 switches on the code), GATEWAY= prints the gateway in the right byte order,
IPv6 ESP is called ESP, and the prefix and interface names are escaped
(pyulogd.core.escape: a control character, ``\\`` or a byte that is not UTF-8 in them
can neither end the line nor reach the reader's terminal; ordinary ones are unchanged).

Like the C code, fields printed without a validity check print 0 when their key is not
valid (``rec[slot] or 0``). The formatter is a closure over the slot numbers, built once
the stack is resolved, so the hot path only indexes the record. IPv4 with TCP or UDP (most
of what gets logged) is written by ``render`` itself with one f-string per line; every other
case goes through the helpers (``ipv4``, ``ports``, ``icmp``, ``ipv6``, ``arp``), which
produce the same text.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

from pyulogd.core.escape import EscapeCache
from pyulogd.core.plugin import DataType, Key
from pyulogd.plugins.filters.printer import Printer, PrinterFilter

if TYPE_CHECKING:
    pass

_INPUT_NAMES = (
    "oob.family", "oob.protocol", "oob.prefix", "oob.in", "oob.out", "oob.uid", "oob.gid",
    "oob.mark", "raw.mac", "raw.mac_len", "ip.saddr.str", "ip.daddr.str", "ip.totlen", "ip.tos",
    "ip.ttl", "ip.id", "ip.fragoff", "ip.protocol", "ip6.payloadlen", "ip6.priority",
    "ip6.hoplimit", "ip6.flowlabel", "ip6.nexthdr", "ip6.fragoff", "ip6.fragid", "tcp.sport",
    "tcp.dport", "tcp.seq", "tcp.ackseq", "tcp.window", "tcp.syn", "tcp.ack", "tcp.psh",
    "tcp.rst", "tcp.fin", "tcp.urg", "tcp.urgp", "udp.sport", "udp.dport", "udp.len",
    "icmp.type", "icmp.code", "icmp.echoid", "icmp.echoseq", "icmp.gateway", "icmp.fragmtu",
    "icmpv6.type", "icmpv6.code", "icmpv6.echoid", "icmpv6.echoseq", "ahesp.spi", "arp.hwtype",
    "arp.protocoltype", "arp.operation", "arp.shwaddr", "arp.saddr.str", "arp.dhwaddr",
    "arp.daddr.str", "sctp.sport", "sctp.dport",
)  # fmt: skip
_OPTIONAL = frozenset({"oob.uid", "oob.gid"})

_HEX2 = tuple(f"{i:02X}" for i in range(256))
# "TOS=%02X PREC=0x%02X " of ip.tos & 0x1E and & 0xE0, indexed by ip.tos & 0xFE
_TOS_PREC = tuple(f"TOS={_HEX2[t & 0x1E]} PREC=0x{_HEX2[t & 0xE0]} " for t in range(256))
# "MARK=0x%x " of the usual small marks
_MARKS = tuple(f"MARK={i:#x} " for i in range(256))
# the flag bits of ip.fragoff >> 13: CE (reserved bit), DF, MF
_IP_FLAGS = ("", "MF ", "DF ", "DF MF ", "CE ", "CE MF ", "CE DF ", "CE DF MF ")
# nexthdr/protocol numbers that share the port-protocol printer
_PORT_PROTOS = frozenset({6, 17, 132, 50, 51})
_ARP_OPS = {1: "REQUEST ", 2: "REPLY ", 10: "NAK "}
_MAC_CACHE_MAX = 1024



def _gateway_wire(value: Any) -> bytes:
    """The 4 bytes of icmp.gateway in wire order.

    BASE keeps 2.0.8's value, ``ntohl()`` of the field: as IPADDR bytes that is the wire
    bytes reversed (the C key's memory on x86); as an integer, the big-endian number.
    """
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value[:4])[::-1]
    number: int = value & 0xFFFFFFFF
    return number.to_bytes(4, "big")


def make_printer(slot: dict[str, int]) -> Printer:
    """Build the line formatter for a record layout (input key name -> slot)."""
    s_family, s_proto = slot["oob.family"], slot["oob.protocol"]
    s_prefix, s_in, s_out = slot["oob.prefix"], slot["oob.in"], slot["oob.out"]
    s_uid, s_gid, s_mark = slot["oob.uid"], slot["oob.gid"], slot["oob.mark"]
    s_mac, s_maclen = slot["raw.mac"], slot["raw.mac_len"]
    s_saddr, s_daddr = slot["ip.saddr.str"], slot["ip.daddr.str"]
    s_totlen, s_tos, s_ttl, s_id = slot["ip.totlen"], slot["ip.tos"], slot["ip.ttl"], slot["ip.id"]
    s_fragoff, s_ipproto = slot["ip.fragoff"], slot["ip.protocol"]
    s_plen, s_prio, s_hlim = slot["ip6.payloadlen"], slot["ip6.priority"], slot["ip6.hoplimit"]
    s_flow, s_nexthdr = slot["ip6.flowlabel"], slot["ip6.nexthdr"]
    s_frag6, s_fragid = slot["ip6.fragoff"], slot["ip6.fragid"]
    s_tsport, s_tdport = slot["tcp.sport"], slot["tcp.dport"]
    s_seq, s_ack = slot["tcp.seq"], slot["tcp.ackseq"]
    s_win, s_urgp = slot["tcp.window"], slot["tcp.urgp"]
    s_furg, s_fack, s_fpsh = slot["tcp.urg"], slot["tcp.ack"], slot["tcp.psh"]
    s_frst, s_fsyn, s_ffin = slot["tcp.rst"], slot["tcp.syn"], slot["tcp.fin"]
    s_usport, s_udport, s_ulen = slot["udp.sport"], slot["udp.dport"], slot["udp.len"]
    s_itype, s_icode = slot["icmp.type"], slot["icmp.code"]
    s_iid, s_iseq = slot["icmp.echoid"], slot["icmp.echoseq"]
    s_igw, s_imtu = slot["icmp.gateway"], slot["icmp.fragmtu"]
    s_6type, s_6code = slot["icmpv6.type"], slot["icmpv6.code"]
    s_6id, s_6seq = slot["icmpv6.echoid"], slot["icmpv6.echoseq"]
    s_spi = slot["ahesp.spi"]
    s_arpop, s_sha = slot["arp.operation"], slot["arp.shwaddr"]
    s_spa, s_tpa = slot["arp.saddr.str"], slot["arp.daddr.str"]
    s_ssport, s_sdport = slot["sctp.sport"], slot["sctp.dport"]
    tos_prec = _TOS_PREC
    ip_flags = _IP_FLAGS
    marks = _MARKS
    macs: dict[bytes, str] = {}
    texts = EscapeCache()
    escaped, escape = texts.known, texts.miss

    def mac_text(mac: Any, n: int) -> str:
        key = mac if n == len(mac) and type(mac) is bytes else bytes(mac[:n])
        text = macs.get(key)
        if text is None:
            # "%02x" and ':' between bytes, ' ' after the last; nothing at all for 0 bytes
            text = key.hex(":") + " " if key else ""
            if len(macs) >= _MAC_CACHE_MAX:
                macs.clear()
            macs[key] = text
        return text

    def ports(rec: list[Any], proto: int) -> str:
        if proto == 6:
            sport = rec[s_tsport]
            if sport is None:
                return "PROTO=TCP INCOMPLETE"
            flags = "URG " if rec[s_furg] else ""
            if rec[s_fack]:
                flags += "ACK "
            if rec[s_fpsh]:
                flags += "PSH "
            if rec[s_frst]:
                flags += "RST "
            if rec[s_fsyn]:
                flags += "SYN "
            if rec[s_ffin]:
                flags += "FIN "
            return (
                f"PROTO=TCP SPT={sport} DPT={rec[s_tdport] or 0} SEQ={rec[s_seq] or 0} "
                f"ACK={rec[s_ack] or 0} WINDOW={rec[s_win] or 0} {flags}URGP={rec[s_urgp] or 0} "
            )
        if proto == 17:
            sport = rec[s_usport]
            if sport is None:
                return "PROTO=UDP INCOMPLETE"
            return f"PROTO=UDP SPT={sport} DPT={rec[s_udport] or 0} LEN={rec[s_ulen] or 0} "
        if proto == 132:
            sport = rec[s_ssport]
            if sport is None:
                return "PROTO=SCTP INCOMPLETE"
            return f"PROTO=SCTP SPT={sport} DPT={rec[s_sdport] or 0} "
        # ESP/AH; 2.0.8 names it from ip.protocol, which IPv6 ESP leaves unset ("AH").
        head = "PROTO=ESP " if proto == 50 else "PROTO=AH "
        spi = rec[s_spi]
        if spi is None:
            return head + "INCOMPLETE"
        return f"{head}SPI={spi:#x} "

    def icmp(rec: list[Any]) -> str:
        itype = rec[s_itype]
        if itype is None:
            return "PROTO=ICMP INCOMPLETE"
        code = rec[s_icode] or 0
        line = f"PROTO=ICMP TYPE={itype} CODE={code} "
        # By type, not by code as 2.0.8 does (docs/compat.md).
        if itype == 0 or itype == 8:
            return f"{line}ID={rec[s_iid] or 0} SEQ={rec[s_iseq] or 0} "
        if itype == 5:
            return f"{line}GATEWAY={socket.inet_ntoa(_gateway_wire(rec[s_igw] or 0))} "
        if itype == 12:  # the pointer is the first byte after the checksum
            return f"{line}PARAMETER={_gateway_wire(rec[s_igw] or 0)[0]} "
        if itype == 3 and code == 4:
            return f"{line}MTU={rec[s_imtu] or 0} "
        return line

    def ipv4(rec: list[Any]) -> str:
        addr = rec[s_saddr]
        src = "" if addr is None else f"SRC={addr} "
        addr = rec[s_daddr]
        if addr is not None:
            src = f"{src}DST={addr} "
        tos = rec[s_tos] or 0
        frag = rec[s_fragoff] or 0
        flags = ip_flags[frag >> 13 & 7]
        if frag & 0x1FFF:
            flags = f"{flags}FRAG:{frag & 0x1FFF} "
        proto = rec[s_ipproto] or 0
        if proto in _PORT_PROTOS:
            detail = ports(rec, proto)
        elif proto == 1:
            detail = icmp(rec)
        else:
            detail = f"PROTO={proto} "
        return (
            f"{src}LEN={rec[s_totlen] or 0} {tos_prec[tos & 0xFE]}"
            f"TTL={rec[s_ttl] or 0} ID={rec[s_id] or 0} {flags}{detail}"
        )

    def ipv6(rec: list[Any]) -> str:
        line = ""
        value = rec[s_saddr]
        if value is not None:
            line = f"SRC={value} "
        value = rec[s_daddr]
        if value is not None:
            line += f"DST={value} "
        value = rec[s_plen]
        if value is not None:
            line += f"LEN={value + 40} "
        value = rec[s_prio]
        if value is not None:
            line += f"TC={value} "
        value = rec[s_hlim]
        if value is not None:
            line += f"HOPLIMIT={value} "
        value = rec[s_flow]
        if value is not None:
            line += f"FLOWLBL={value} "
        value = rec[s_frag6]
        fragid = rec[s_fragid]
        if value is not None and fragid is not None:
            line += f"FRAG: {value} ID: {fragid:08x} "
        nexthdr = rec[s_nexthdr] or 0
        if nexthdr in _PORT_PROTOS:
            return line + ports(rec, nexthdr)
        if nexthdr == 58:
            itype = rec[s_6type]
            if itype is None:
                return line + "PROTO=ICMPv6 INCOMPLETE"
            code = rec[s_6code]
            if code is None:
                return line + "PROTO=ICMPv6 TRUNCATED"
            line += f"PROTO=ICMPv6 TYPE={itype} CODE={code} "
            if itype == 128 or itype == 129:
                line += f"ID={rec[s_6id] or 0} SEQ={rec[s_6seq] or 0} "
            return line
        return f"{line}PROTO={nexthdr} "

    def arp(rec: list[Any]) -> str:
        line = ""
        addr = rec[s_spa]
        if addr is not None:
            line = f"SRC={addr} "
        addr = rec[s_tpa]
        if addr is not None:
            line += f"DST={addr} "
        line += "PROTO=ARP "
        op = rec[s_arpop]
        if op is not None:
            line += _ARP_OPS.get(op) or f"CODE={op} "
            sha = rec[s_sha]
            if op == 2 and sha is not None:
                line += f"REPLY_MAC={bytes(sha[:6]).hex(':')} "
        return line

    def bridge(rec: list[Any]) -> str:
        proto = rec[s_proto] or 0
        if proto == 0x0800:
            return ipv4(rec)
        if proto == 0x86DD:
            return ipv6(rec)
        if proto == 0x0806:
            return arp(rec)
        return f"PROTO={proto} "

    def render(rec: list[Any]) -> str:
        value = rec[s_prefix]
        prefix = "" if value is None else value + " "
        value = rec[s_in]
        out = rec[s_out]
        if value is not None and out is not None:
            prefix = f"{prefix}IN={value} OUT={out} "
        # The outside strings (prefix, interface names) escaped, all at once: the rule works
        # character by character, so escaping the joined text is escaping each part.
        value = escaped.get(prefix)
        prefix = value if value is not None else escape(prefix)
        value = rec[s_mac]
        if value is None:
            mac = "MAC= "
        else:
            n = rec[s_maclen] or 0
            text = macs.get(value) if type(value) is bytes and len(value) == n else None
            mac = "MAC=" + (text if text is not None else mac_text(value, n))
        value = rec[s_uid]
        tail = "" if value is None else f"UID={value} "
        value = rec[s_gid]
        if value is not None:
            tail = f"{tail}GID={value} "
        value = rec[s_mark]
        if value is not None:
            tail = f"{tail}{marks[value]}" if 0 <= value < 256 else f"{tail}MARK={hex(value)} "
        family = rec[s_family]
        if family == 2:
            proto = rec[s_ipproto]
            if proto == 17 or proto == 6:
                # IPv4 with TCP/UDP: the whole line at once (same text as ipv4() + ports())
                sport = rec[s_usport] if proto == 17 else rec[s_tsport]
                if sport is not None:
                    addr = rec[s_saddr]
                    src = "" if addr is None else f"SRC={addr} "
                    addr = rec[s_daddr]
                    if addr is not None:
                        src = f"{src}DST={addr} "
                    frag = rec[s_fragoff] or 0
                    flags = ip_flags[frag >> 13 & 7]
                    if frag & 0x1FFF:
                        flags = f"{flags}FRAG:{frag & 0x1FFF} "
                    tos = rec[s_tos] or 0
                    if proto == 17:
                        return (
                            f"{prefix}{mac}{src}LEN={rec[s_totlen] or 0} {tos_prec[tos & 0xFE]}"
                            f"TTL={rec[s_ttl] or 0} ID={rec[s_id] or 0} {flags}PROTO=UDP SPT={sport} "
                            f"DPT={rec[s_udport] or 0} LEN={rec[s_ulen] or 0} {tail}\n"
                        )
                    tcp = "URG " if rec[s_furg] else ""
                    if rec[s_fack]:
                        tcp += "ACK "
                    if rec[s_fpsh]:
                        tcp += "PSH "
                    if rec[s_frst]:
                        tcp += "RST "
                    if rec[s_fsyn]:
                        tcp += "SYN "
                    if rec[s_ffin]:
                        tcp += "FIN "
                    return (
                        f"{prefix}{mac}{src}LEN={rec[s_totlen] or 0} {tos_prec[tos & 0xFE]}"
                        f"TTL={rec[s_ttl] or 0} ID={rec[s_id] or 0} {flags}PROTO=TCP SPT={sport} "
                        f"DPT={rec[s_tdport] or 0} SEQ={rec[s_seq] or 0} ACK={rec[s_ack] or 0} "
                        f"WINDOW={rec[s_win] or 0} {tcp}URGP={rec[s_urgp] or 0} {tail}\n"
                    )
            net = ipv4(rec)
        elif family == 10:
            net = ipv6(rec)
        elif family == 7:
            net = bridge(rec)
        else:
            net = ""  # 2.0.8 prints nothing for other families (nft "arp" tables, family 3)
        return f"{prefix}{mac}{net}{tail}\n"

    return render


class PrintpktFilter(PrinterFilter):
    name = "PRINTPKT"
    so_name = "ulogd_filter_PRINTPKT.so"
    description = "Packet to a kernel-LOG-like text line (for LOGEMU, SYSLOG)"
    input_type = DataType.PACKET
    output_type = DataType.PACKET
    input_keys = tuple(Key(n, optional=n in _OPTIONAL) for n in _INPUT_NAMES)
    make_printer = staticmethod(make_printer)
