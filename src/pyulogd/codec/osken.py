"""The text os-ken prints for a packet, as Neutron's log drivers write it after ``pkt=``.

Neutron's Open vSwitch log driver writes ``str(os_ken.lib.packet.packet.Packet(frame))``:
every decoded header as ``name(attr=repr(value),...)`` (attributes sorted by name), joined by
``", "``, and any bytes left undecoded (unless all zero: padding) as a bytes repr. The frame
is a ``bytearray`` there (os-ken's OpenFlow reader), so every slice of it prints as
``bytearray(b'...')``. The FWaaS driver decodes an NFLOG packet header by header with the
same classes and concatenates ``str(ethernet) + str(ipv4) + str(l4)`` with no separator;
its payload is ``bytes``. :func:`render_frame` and :func:`render_fwaas` write both, from our
own decoders (stdlib only: this is the packet path), and tests/unit/test_osken.py checks them
against os-ken itself on the same bytes.

What is decoded as os-ken does, quirks included (a TCP header with data offset 0 or an IPv4
header with IHL 0 is decoded but not printed, because os-ken tests the header's length for
truth; the IPv6 payload is cut at ``payload_length`` counted *after* the extension headers;
``hop_opts``/``dst_opts`` lengths are read as bytes, not 8-octet units; a header too short to
decode ends decoding and the bytes from there on are printed raw, as os-ken does on
``struct.error``): Ethernet, ARP, IPv4 (options raw), IPv6 with hop-by-hop, destination,
fragment and authentication headers, TCP with its options, UDP, ICMP (echo, destination
unreachable, time exceeded) and ICMPv6 (echo, neighbour and router discovery with their
link-layer and prefix options, MLD and MLDv2).

What os-ken decodes further and we print as raw bytes instead (documented in docs/neutron.md):
VLAN, MPLS, LLDP, LLC and the other Ethernet types; IGMP, SCTP, GRE, OSPF and BPDU
inside IP; IPv6 routing headers; DHCP, DHCPv6, VXLAN and Geneve by UDP port; BGP,
OpenFlow and Zebra by TCP port. Where os-ken raises an exception other than
``struct.error`` (Neutron then writes no line at all) we still write one: what decoded, then
the rest raw. The renderer never raises and always ends.

``redact=True`` writes payload bytes (the undecoded rest, the data of ICMP and ICMPv6
messages) as ``<redacted N bytes>``: headers stay, tenant payload does not reach the log.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from typing import Any

Data = bytes | bytearray

ETH_IPV4 = 0x0800
ETH_ARP = 0x0806
ETH_IPV6 = 0x86DD


class Short(Exception):
    """Fewer bytes than a header needs: what ``struct.error`` is in os-ken's parsers."""


class _Raised(Exception):
    """os-ken raises something else here (an assertion, an attribute error)."""


class Payload:
    """Bytes printed as their repr, or redacted."""

    __slots__ = ("data",)

    def __init__(self, data: Data) -> None:
        self.data = data


class Ctx:
    __slots__ = ("redact",)

    def __init__(self, redact: bool) -> None:
        self.redact = redact


# --- value formatting (os-ken's stringify: repr() of every attribute value) -------------------

def _val(v: Any, c: Ctx) -> str:
    if isinstance(v, Payload):
        if c.redact:
            return f"<redacted {len(v.data)} bytes>"
        return repr(v.data)
    if isinstance(v, Obj):
        return v.text(c)
    if isinstance(v, list):
        return "[" + ", ".join(_val(x, c) for x in v) + "]"
    return repr(v)


class Obj:
    """A decoded header: os-ken's class name and attributes (printed sorted by name)."""

    __slots__ = ("name", "attrs", "length")

    def __init__(self, name: str, attrs: dict[str, Any], length: int = 1) -> None:
        self.name = name
        self.attrs = attrs
        # os-ken's len(header): a header whose length is 0 is not printed (``if proto:``).
        self.length = length

    def text(self, c: Ctx) -> str:
        a = self.attrs
        return self.name + "(" + ",".join(f"{k}={_val(a[k], c)}" for k in sorted(a)) + ")"


def _need(buf: Data, off: int, n: int) -> None:
    if off < 0 or len(buf) < off + n:
        raise Short


def mac_text(b: bytes | bytearray) -> str:
    return ":".join(f"{x:02x}" for x in b)


def _ip4(b: bytes | bytearray) -> str:
    return socket.inet_ntop(socket.AF_INET, bytes(b))


def _ip6(b: bytes | bytearray) -> str:
    return socket.inet_ntop(socket.AF_INET6, bytes(b))


# A parser: buf -> (header, next parser or None, rest or None).
Parser = Callable[[Data], tuple[Obj, "Parser | None", "Data | None"]]


def ethernet(buf: Data) -> tuple[Obj, Parser | None, Data | None]:
    _need(buf, 0, 14)
    dst, src, ethertype = struct.unpack_from("!6s6sH", buf)
    obj = Obj("ethernet", {"dst": mac_text(dst), "ethertype": ethertype, "src": mac_text(src)})
    return obj, _ETHER_TYPES.get(0x05DC if ethertype <= 0x05DC else ethertype, _unknown), buf[14:]


def arp(buf: Data) -> tuple[Obj, Parser | None, Data | None]:
    _need(buf, 0, 28)
    hwtype, proto, hlen, plen, opcode, smac, sip, dmac, dip = struct.unpack_from("!HHBBH6s4s6s4s", buf)
    obj = Obj("arp", {
        "hwtype": hwtype, "proto": proto, "hlen": hlen, "plen": plen, "opcode": opcode,
        "src_mac": mac_text(smac), "src_ip": _ip4(sip), "dst_mac": mac_text(dmac), "dst_ip": _ip4(dip),
    })
    return obj, None, buf[28:]


def ipv4(buf: Data) -> tuple[Obj, Parser | None, Data | None]:
    _need(buf, 0, 20)
    ver, tos, total_length, ident, flags, ttl, proto, csum, src, dst = struct.unpack_from("!BBHHHBBH4s4s", buf)
    ihl = ver & 0xF
    length = ihl * 4
    obj = Obj("ipv4", {
        "version": ver >> 4, "header_length": ihl, "tos": tos, "total_length": total_length,
        "identification": ident, "flags": flags >> 13, "offset": flags & 0x1FFF, "ttl": ttl, "proto": proto,
        "csum": csum, "src": _ip4(src), "dst": _ip4(dst),
        # Header bytes, not payload: never redacted.
        "option": buf[20:length] if length > 20 else None,
    }, length)
    return obj, _IP_PROTOS.get(proto, _unknown), buf[length:total_length]


def _opt_header(name: str) -> Callable[[Data], tuple[Obj, int, int]]:
    def parse(buf: Data) -> tuple[Obj, int, int]:
        _need(buf, 0, 2)
        nxt, len_ = struct.unpack_from("!BB", buf)
        data_len = 8 + len_  # os-ken reads the length as bytes, not 8-octet units
        opts: list[Obj] = []
        size = 2
        while size < data_len:
            _need(buf, size, 1)
            t = buf[size]
            if t == 0:
                opts.append(Obj("option", {"type_": 0, "len_": -1, "data": None}))
                size += 1
                continue
            _need(buf, size, 2)
            olen = buf[size + 1]
            odata = None
            if olen:
                _need(buf, size + 2, olen)
                odata = bytes(buf[size + 2:size + 2 + olen])
            opts.append(Obj("option", {"type_": t, "len_": olen, "data": odata}))
            size += 2 + olen
        if len_ % 8:
            raise _Raised  # os-ken asserts the size is a multiple of 8
        return Obj(name, {"nxt": nxt, "size": len_, "data": opts}), nxt, 8 + len_
    return parse


def _fragment(buf: Data) -> tuple[Obj, int, int]:
    _need(buf, 0, 8)
    nxt, off_m, id_ = struct.unpack_from("!BxHI", buf)
    return Obj("fragment", {"nxt": nxt, "offset": off_m >> 3, "more": off_m & 1, "id_": id_}), nxt, 8


def _auth(buf: Data) -> tuple[Obj, int, int]:
    _need(buf, 0, 12)
    nxt, size, spi, seq = struct.unpack_from("!BB2xII", buf)
    total = (size + 2) * 4
    if total < 12:
        raise Short  # os-ken's struct format '-4s'
    _need(buf, 0, total)
    return Obj("auth", {"nxt": nxt, "size": size, "spi": spi, "seq": seq, "data": bytes(buf[12:total])}), nxt, total


_EXT_HEADERS: dict[int, Callable[[Data], tuple[Obj, int, int]]] = {
    0: _opt_header("hop_opts"), 60: _opt_header("dst_opts"), 44: _fragment, 51: _auth,
}


def ipv6(buf: Data) -> tuple[Obj, Parser | None, Data | None]:
    _need(buf, 0, 40)
    v_tc_flow, payload_length, nxt, hlim, src, dst = struct.unpack_from("!IHBB16s16s", buf)
    offset = 40
    last = nxt
    ext: list[Obj] = []
    while True:
        if last == 43:  # routing: os-ken decodes type 3 only and fails on the others
            _need(buf, offset, 3)
            raise _Raised
        parse = _EXT_HEADERS.get(last)
        if parse is None:
            break
        hdr, last, n = parse(buf[offset:])
        ext.append(hdr)
        offset += n
    obj = Obj("ipv6", {
        "version": v_tc_flow >> 28, "traffic_class": (v_tc_flow >> 20) & 0xFF, "flow_label": v_tc_flow & 0xFFFFF,
        "payload_length": payload_length, "nxt": nxt, "hop_limit": hlim, "src": _ip6(src), "dst": _ip6(dst),
        "ext_hdrs": ext,
    }, 40)
    return obj, _IP_PROTOS.get(last, _unknown), buf[offset:offset + payload_length]


# --- TCP ---------------------------------------------------------------------------------------

def _tcp_option(buf: Data) -> tuple[Obj, Data]:
    _need(buf, 0, 1)
    kind = buf[0]
    if kind in (0, 1, 4):  # no length check: os-ken takes its fixed length
        name, length = {0: ("TCPOptionEndOfOptionList", 1), 1: ("TCPOptionNoOperation", 1),
                        4: ("TCPOptionSACKPermitted", 2)}[kind]
        return Obj(name, {"kind": kind, "length": length}), buf[length:]
    if kind == 2:
        _need(buf, 0, 4)
        return Obj("TCPOptionMaximumSegmentSize", {"kind": 2, "length": 4,
                                                    "max_seg_size": struct.unpack_from("!H", buf, 2)[0]}), buf[4:]
    if kind == 3:
        _need(buf, 0, 3)
        return Obj("TCPOptionWindowScale", {"kind": 3, "length": 3, "shift_cnt": buf[2]}), buf[3:]
    if kind == 8:
        _need(buf, 0, 10)
        ts_val, ts_ecr = struct.unpack_from("!II", buf, 2)
        return Obj("TCPOptionTimestamps", {"kind": 8, "length": 10, "ts_val": ts_val, "ts_ecr": ts_ecr}), buf[10:]
    if kind == 28:
        _need(buf, 0, 4)
        body = struct.unpack_from("!H", buf, 2)[0]
        return Obj("TCPOptionUserTimeout", {"kind": 28, "length": 4, "granularity": body >> 15,
                                            "user_timeout": body & 0x7FFF}), buf[4:]
    if kind == 5:
        _need(buf, 0, 2)
        length = buf[1]
        blocks_buf = buf[2:length]
        blocks = []
        while blocks_buf:
            _need(blocks_buf, 0, 8)
            blocks.append(struct.unpack_from("!II", blocks_buf))
            blocks_buf = blocks_buf[8:]
        return Obj("TCPOptionSACK", {"kind": 5, "length": length, "blocks": blocks}), _advance(buf, length)
    if kind == 29:
        _need(buf, 0, 4)
        length, key_id, r_next = buf[1], buf[2], buf[3]
        return Obj("TCPOptionAuthentication", {"kind": 29, "length": length, "key_id": key_id,
                                               "r_next_key_id": r_next, "mac": buf[4:length]}), _advance(buf, length)
    _need(buf, 0, 2)
    length = buf[1]
    return Obj("TCPOptionUnknown", {"kind": kind, "length": length, "value": buf[2:length]}), _advance(buf, length)


def _advance(buf: Data, length: int) -> Data:
    """``buf[length:]``; a length of 0 would make os-ken loop for ever: we stop there."""
    if length == 0:
        raise _Raised
    return buf[length:]


def tcp(buf: Data) -> tuple[Obj, Parser | None, Data | None]:
    _need(buf, 0, 20)
    sport, dport, seq, ack, off, bits, window, csum, urgent = struct.unpack_from("!HHIIBBHHH", buf)
    off >>= 4
    bits &= 0x3F  # os-ken keeps six flag bits (not ECE/CWR)
    length = off * 4
    option: Any = None
    if length > 20:
        option_buf = buf[20:length]
        try:
            opts = []
            while option_buf:
                opt, option_buf = _tcp_option(option_buf)
                opts.append(opt)
            option = opts
        except Short:
            option = buf[20:length]
    obj = Obj("tcp", {"src_port": sport, "dst_port": dport, "seq": seq, "ack": ack, "offset": off, "bits": bits,
                      "window_size": window, "csum": csum, "urgent": urgent, "option": option}, length)
    nxt: Parser | None = None
    if 179 in (sport, dport) or sport in (6633, 6653) or dport in (6633, 6653) or 2600 in (sport, dport):
        nxt = _unknown  # BGP, OpenFlow, Zebra: os-ken decodes them, we do not
    return obj, nxt, buf[length:]


def udp(buf: Data) -> tuple[Obj, Parser | None, Data | None]:
    _need(buf, 0, 8)
    sport, dport, total_length, csum = struct.unpack_from("!HHHH", buf)
    obj = Obj("udp", {"src_port": sport, "dst_port": dport, "total_length": total_length, "csum": csum}, 8)
    nxt: Parser | None = None
    if ((sport in (67, 68) and dport == 67) or (dport in (67, 68) and sport == 67)
            or (sport in (546, 547) and dport == 547) or (dport in (546, 547) and sport == 547)
            or dport in (4789, 8472, 6081)):
        nxt = _unknown  # DHCP, DHCPv6, VXLAN, Geneve
    return obj, nxt, buf[8:total_length]


# --- ICMP and ICMPv6 -----------------------------------------------------------------------------

def icmp(buf: Data) -> tuple[Obj, Parser | None, Data | None]:
    _need(buf, 0, 4)
    type_, code, csum = struct.unpack_from("!BBH", buf)
    data: Any = Payload(b"")  # os-ken's default, bytes whatever the buffer
    if len(buf) > 4:
        if type_ in (0, 8):
            data = _echo(buf)
        elif type_ == 3:
            _need(buf, 4, 4)
            data_len, mtu = struct.unpack_from("!xBH", buf, 4)
            data = Obj("dest_unreach", {"data_len": data_len, "mtu": mtu,
                                        "data": Payload(buf[8:]) if len(buf) > 8 else None})
        elif type_ == 11:
            _need(buf, 4, 4)
            data = Obj("TimeExceeded", {"data_len": buf[5], "data": Payload(buf[8:]) if len(buf) > 8 else None})
        else:
            data = Payload(buf[4:])
    return Obj("icmp", {"type": type_, "code": code, "csum": csum, "data": data}, 4), None, None


def _echo(buf: Data) -> Obj:
    _need(buf, 4, 4)
    id_, seq = struct.unpack_from("!HH", buf, 4)
    return Obj("echo", {"id": id_, "seq": seq, "data": Payload(buf[8:]) if len(buf) > 8 else None})


def _nd_option(buf: Data, offset: int, types: tuple[int, ...], advert: bool = False) -> tuple[Any, int]:
    """One ND option at ``offset`` (os-ken's classes for ``types``) and its os-ken length. An
    option os-ken does not know is raw bytes: the option (router advertisements) or
    everything from there on (the others)."""
    _need(buf, offset, 2)
    type_, length = buf[offset], buf[offset + 1]
    if length == 0:
        raise Short  # os-ken raises struct.error itself
    if type_ in (1, 2) and type_ in types:
        _need(buf, offset, 8)
        data = buf[offset + 8:] if len(buf) > offset + 8 else None
        obj = Obj("nd_option_sla" if type_ == 1 else "nd_option_tla",
                  {"length": length, "hw_src": mac_text(buf[offset + 2:offset + 8]), "data": data})
        return obj, 8 + (len(data) if data is not None else 0)
    if type_ == 3 and type_ in types:
        _need(buf, offset, 32)
        _, length, pl, res1, val_l, pre_l, res2, prefix = struct.unpack_from("!BBBBIII16s", buf, offset)
        return Obj("nd_option_pi", {"length": length, "pl": pl, "res1": res1 >> 5, "val_l": val_l, "pre_l": pre_l,
                                    "res2": res2, "prefix": _ip6(prefix)}), 32
    if type_ == 5 and type_ in types:
        raise _Raised  # os-ken's MTU option has no length: len() fails
    raw = buf[offset:offset + length * 8] if advert else buf[offset:]
    return raw, len(raw)


def _mld(buf: Data) -> Obj:
    body = buf[4:]
    if len(body) > 20:
        _need(body, 0, 24)
        maxresp, address, s_qrv, qqic, num = struct.unpack_from("!H2x16sBBH", body)
        srcs: list[str] = []
        off = 24
        while len(body) > off and num > len(srcs):
            if len(body) - off < 16:
                raise _Raised
            srcs.append(_ip6(body[off:off + 16]))
            off += 16
        if num != len(srcs):
            raise _Raised
        return Obj("mldv2_query", {"maxresp": maxresp, "address": _ip6(address), "s_flg": (s_qrv >> 3) & 1,
                                   "qrv": s_qrv & 7, "qqic": qqic, "num": num, "srcs": srcs})
    _need(buf, 4, 20)
    maxresp, address = struct.unpack_from("!H2x16s", buf, 4)
    return Obj("mld", {"maxresp": maxresp, "address": _ip6(address)})


def _mldv2_report(buf: Data) -> Obj:
    _need(buf, 4, 4)
    (record_num,) = struct.unpack_from("!2xH", buf, 4)
    offset = 8
    records: list[Obj] = []
    while len(buf) > offset and record_num > len(records):
        rec = buf[offset:]
        _need(rec, 0, 20)
        type_, aux_len, num, address = struct.unpack_from("!BBH16s", rec)
        srcs: list[str] = []
        off = 20
        while len(rec) > off and num > len(srcs):
            if len(rec) - off < 16:
                raise _Raised
            srcs.append(_ip6(rec[off:off + 16]))
            off += 16
        if num != len(srcs):
            raise _Raised
        aux = None
        if aux_len:
            _need(rec, off, aux_len * 4)
            aux = bytes(rec[off:off + aux_len * 4])
        records.append(Obj("mldv2_report_group", {"type_": type_, "aux_len": aux_len, "num": num,
                                                  "address": _ip6(address), "srcs": srcs, "aux": aux}))
        offset += 20 + 16 * len(srcs) + aux_len * 4
    if record_num != len(records):
        raise _Raised
    return Obj("mldv2_report", {"record_num": record_num, "records": records})


def icmpv6(buf: Data) -> tuple[Obj, Parser | None, Data | None]:
    _need(buf, 0, 4)
    type_, code, csum = struct.unpack_from("!BBH", buf)
    data: Any = Payload(b"")
    if len(buf) > 4:
        if type_ in (128, 129):
            data = _echo(buf)
        elif type_ in (135, 136):
            _need(buf, 4, 20)
            res, dst = struct.unpack_from("!I16s", buf, 4)
            option: Any = None
            if len(buf) > 24:
                option, _ = _nd_option(buf, 24, (1, 2))
            data = Obj("nd_neighbor", {"res": res >> 29, "dst": _ip6(dst), "option": option})
        elif type_ == 133:
            _need(buf, 4, 4)
            (res,) = struct.unpack_from("!I", buf, 4)
            option = None
            if len(buf) > 8:
                option, _ = _nd_option(buf, 8, (1,))
            data = Obj("nd_router_solicit", {"res": res, "option": option})
        elif type_ == 134:
            _need(buf, 4, 12)
            ch_l, res, rou_l, rea_t, ret_t = struct.unpack_from("!BBHII", buf, 4)
            offset = 16
            options = []
            while len(buf) > offset:
                opt, n = _nd_option(buf, offset, (1, 3, 5), advert=True)
                options.append(opt)
                offset += n
            data = Obj("nd_router_advert", {"ch_l": ch_l, "res": res >> 6, "rou_l": rou_l, "rea_t": rea_t,
                                            "ret_t": ret_t, "options": options})
        elif type_ in (130, 131, 132):
            data = _mld(buf)
        elif type_ == 143:
            data = _mldv2_report(buf)
        else:
            data = Payload(buf[4:])
    return Obj("icmpv6", {"type_": type_, "code": code, "csum": csum, "data": data}, 4), None, None


def _unknown(buf: Data) -> tuple[Obj, Parser | None, Data | None]:
    """A header os-ken decodes and we do not: stop, the rest is printed raw."""
    raise _Raised


# For a packet of a kind we do not decode: everything printed raw.
raw_parser: Parser = _unknown

_ETHER_TYPES: dict[int, Parser] = {ETH_IPV4: ipv4, ETH_ARP: arp, ETH_IPV6: ipv6}
# os-ken has one table for Ethernet types and IP protocols: what it decodes, we decode or stop.
_IP_PROTOS: dict[int, Parser] = {1: icmp, 6: tcp, 17: udp, 58: icmpv6}
for _n in (2, 47, 66, 89, 132):  # IGMP, GRE, BPDU(!), OSPF, SCTP
    _IP_PROTOS[_n] = _unknown
for _n in (0x88CC, 0x8809, 0x05DC, 0x8902, 0x8100, 0x88E7, 0x88A8, 0x8847):
    _ETHER_TYPES[_n] = _unknown
_OSKEN_ETHER = frozenset(_ETHER_TYPES)


def _walk(data: Data, first: Parser) -> tuple[list[Obj], Data | None]:
    """os-ken's ``Packet._parser``: headers while there are non-zero bytes, then the rest."""
    out: list[Obj] = []
    rest: Data | None = data
    parser: Parser | None = first
    while parser is not None:
        assert rest is not None
        if not bytes(rest).strip(b"\x00"):
            break
        try:
            obj, parser, after = parser(rest)
        except (Short, _Raised):
            break
        if obj.length:
            out.append(obj)
        rest = after
    return out, rest


def _as_data(buf: Any, mutable: bool) -> Data:
    if mutable:
        return buf if isinstance(buf, bytearray) else bytearray(buf)
    return buf if isinstance(buf, bytes) else bytes(buf)


def render_frame(frame: Any, *, redact: bool = False, mutable: bool = True) -> str:
    """``str(Packet(frame))`` as Neutron's Open vSwitch driver writes it; ``frame`` is an
    Ethernet frame, printed as a ``bytearray`` (``mutable``, what os-ken's OpenFlow reader
    hands over) or ``bytes``."""
    return render_from(frame, ethernet, redact=redact, mutable=mutable)


def render_from(buf: Any, first: Parser, *, redact: bool = False, mutable: bool = True) -> str:
    """:func:`render_frame` for a buffer that starts with the header ``first`` decodes
    (a packet without its link-layer header: ``ipv4``, ``ipv6``, ``arp``)."""
    c = Ctx(redact)
    objs, rest = _walk(_as_data(buf, mutable), first)
    parts = [o.text(c) for o in objs]
    if rest and bytes(rest).strip(b"\x00"):
        parts.append(_val(Payload(rest), c))
    return ", ".join(parts)


def l3_parser(ethertype: int) -> Parser | None:
    """The decoder for a packet of this Ethernet type, None when we print it raw."""
    p = _ETHER_TYPES.get(ethertype)
    return None if p is _unknown else p


def render_fwaas(mac: Any, hw_proto: int, payload: Any, *, redact: bool = False) -> str:
    """The ``pkt=`` text of neutron-fwaas's NFLOG reader: ``ethernet(...)`` from the first 12
    bytes of the link-layer header (and the NFLOG hardware protocol), then the IP header
    (IPv6 too, which FWaaS leaves out by a bug) or ARP, then the transport header, with no
    separator; ``Does not support hw_proto: N`` for anything else. Payload is ``bytes``."""
    c = Ctx(redact)
    msg = ""
    if mac is not None and len(mac) >= 12:
        dst, src = bytes(mac[:6]), bytes(mac[6:12])
        msg = Obj("ethernet", {"dst": mac_text(dst), "ethertype": hw_proto, "src": mac_text(src)}).text(c)
    pkt = _as_data(payload if payload is not None else b"", False)
    first = {ETH_IPV4: ipv4, ETH_IPV6: ipv6, ETH_ARP: arp}.get(hw_proto)
    if first is None:
        return msg + f"Does not support hw_proto: {hw_proto}"
    try:
        obj, nxt, rest = first(pkt)
    except (Short, _Raised):
        return msg + _val(Payload(pkt), c) if pkt else msg
    msg += obj.text(c)
    if nxt is None or rest is None or nxt is _unknown:
        return msg
    try:
        l4, _, _ = nxt(rest)
    except (Short, _Raised):
        return msg
    return msg + l4.text(c)
