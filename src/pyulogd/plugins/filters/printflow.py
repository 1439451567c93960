"""PRINTFLOW: one text line per conntrack event (ulogd2 ``ulogd_filter_PRINTFLOW.so``).

``[NEW] ORIG: SRC=… DST=… PROTO=TCP SPT=… DPT=… PKTS=… BYTES=… , REPLY: SRC=… … \\n``:
the grammar of ulogd2 2.0.8 (``util/printflow.c``, spec 5.9), every field printed only
when its key is valid, except where docs/compat.md says otherwise: ICMP ``TYPE=`` and
``CODE=`` are the type and the code (2.0.8 swaps them), and ICMPv6 flows print
``PROTO=ICMPv6 TYPE=… CODE=…`` from the optional ``icmpv6.type``/``icmpv6.code`` inputs
(2.0.8 prints ``PROTO=58``).

The NFCT input has one pair of ICMP keys, taken from the original tuple, so the REPLY
part repeats the ORIG part's type and code, as in 2.0.8.

The formatter is a closure over the slot numbers, built once the stack is resolved; the
common TCP/UDP record with every key valid is one ``itemgetter`` and one %-format.
"""

from __future__ import annotations

import operator
from typing import Any

from pyulogd.core.plugin import DataType, Key, KeyType
from pyulogd.plugins.filters.printer import Printer, PrinterFilter
from pyulogd.plugins.fused import FLOW_LINE

T = KeyType
# The address texts are declared IPADDR, as 2.0.8 does, so that ``-i PRINTFLOW`` prints
# what ulogd2 prints; the values are IP2STR's strings.
_SIDE_KEYS = (
    ("ip.saddr.str", T.IPADDR),
    ("ip.daddr.str", T.IPADDR),
    ("ip.protocol", T.UINT8),
    ("l4.sport", T.UINT16),
    ("l4.dport", T.UINT16),
    ("raw.pktlen", T.UINT64),
    ("raw.pktcount", T.UINT64),
)
# 2.0.8's input keys, in its order, all required (so a stack without NFCT+IP2STR is refused
# as by 2.0.8); then the ICMPv6 keys NFCT gives since 2.0.9, optional so that an upstream
# without them still works.
INPUT_KEYS = (
    *(Key(f"orig.{n}", t) for n, t in _SIDE_KEYS),
    *(Key(f"reply.{n}", t) for n, t in _SIDE_KEYS),
    Key("icmp.code", T.UINT8),
    Key("icmp.type", T.UINT8),
    Key("ct.event", T.UINT32),
    Key("icmpv6.type", T.UINT8, optional=True),
    Key("icmpv6.code", T.UINT8, optional=True),
)

_EVENTS = {1: "[NEW] ", 2: "[UPDATE] ", 4: "[DESTROY] "}
_NAMED = {6: "PROTO=TCP ", 17: "PROTO=UDP ", 50: "PROTO=ESP ", 51: "PROTO=AH "}




def _fast_formats() -> dict[int, dict[Any, str]]:
    """Per protocol (TCP, UDP), per ``ct.event`` (None: any other), the %-format of a line
    with every key valid: orig saddr, daddr, sport, dport, packets, bytes, then reply's."""
    formats: dict[int, dict[Any, str]] = {}
    for proto in (6, 17):
        part = f"SRC=%s DST=%s {_NAMED[proto]}SPT=%d DPT=%d PKTS=%d BYTES=%d "
        body = f"ORIG: {part}, REPLY: {part}\n"
        formats[proto] = {ev: text + body for ev, text in _EVENTS.items()}
        formats[proto][None] = body
    return formats


# The common case's formats (also used by pyulogd.plugins.fused).
FAST_FORMATS = _fast_formats()


def make_printer(slot: dict[str, int]) -> Printer:
    """Build the line formatter for a record layout (input key name -> slot)."""
    s_event = slot["ct.event"]
    s_itype, s_icode = slot["icmp.type"], slot["icmp.code"]
    s_6type, s_6code = slot["icmpv6.type"], slot["icmpv6.code"]

    def icmp_text(rec: list[Any], head: str, s_type: int, s_code: int) -> str:
        value = rec[s_type]
        if value is not None:
            head += f"TYPE={value} "
        value = rec[s_code]
        if value is not None:
            head += f"CODE={value} "
        return head

    def make_side(prefix: str) -> Printer:
        s_src, s_dst = slot[prefix + "ip.saddr.str"], slot[prefix + "ip.daddr.str"]
        s_proto = slot[prefix + "ip.protocol"]
        s_sport, s_dport = slot[prefix + "l4.sport"], slot[prefix + "l4.dport"]
        s_bytes, s_pkts = slot[prefix + "raw.pktlen"], slot[prefix + "raw.pktcount"]

        def side(rec: list[Any]) -> str:
            """One direction, field by field: any key may be invalid."""
            value = rec[s_src]
            line = "" if value is None else f"SRC={value} "
            value = rec[s_dst]
            if value is not None:
                line += f"DST={value} "
            proto = rec[s_proto]
            if proto is not None:
                if proto == 6 or proto == 17:
                    line += _NAMED[proto]
                    value = rec[s_sport]
                    if value is not None:
                        line += f"SPT={value} "
                    value = rec[s_dport]
                    if value is not None:
                        line += f"DPT={value} "
                elif proto == 1:
                    # Type from icmp.type, code from icmp.code: 2.0.8 swaps them (compat-flow.md).
                    line = icmp_text(rec, line + "PROTO=ICMP ", s_itype, s_icode)
                elif proto == 58:
                    # 2.0.8: "PROTO=58 " and nothing more (compat-flow.md).
                    line = icmp_text(rec, line + "PROTO=ICMPv6 ", s_6type, s_6code)
                elif proto == 50 or proto == 51:
                    line += _NAMED[proto]
                else:
                    line += f"PROTO={proto} "
            value = rec[s_pkts]
            if value is not None:
                line += f"PKTS={value} "
            value = rec[s_bytes]
            if value is not None:
                line += f"BYTES={value} "
            return line

        return side

    orig = make_side("orig.")
    reply = make_side("reply.")
    events = _EVENTS

    def slow(rec: list[Any]) -> str:
        return f"{events.get(rec[s_event], '')}ORIG: {orig(rec)}, REPLY: {reply(rec)}\n"

    # TCP and UDP with every key valid, most of what conntrack reports: one itemgetter and
    # one %-format. %d refuses None (TypeError), which stands in for 8 validity tests; the
    # addresses (%s would print "None") are tested.
    s_oproto, s_rproto = slot["orig.ip.protocol"], slot["reply.ip.protocol"]
    get = operator.itemgetter(*(slot[d + n] for d in ("orig.", "reply.") for n in (
        "ip.saddr.str", "ip.daddr.str", "l4.sport", "l4.dport", "raw.pktcount", "raw.pktlen")))
    f_tcp, f_udp = FAST_FORMATS[6], FAST_FORMATS[17]

    def render(rec: list[Any]) -> str:
        proto = rec[s_oproto]
        if (proto == 6 or proto == 17) and rec[s_rproto] == proto:
            t = get(rec)
            if t[0] is not None and t[1] is not None and t[6] is not None and t[7] is not None:
                fmt = f_tcp if proto == 6 else f_udp
                try:
                    line: str = (fmt.get(rec[s_event]) or fmt[None]) % t
                    return line
                except TypeError:  # a port or counter is not valid (or not an int)
                    pass
        return slow(rec)

    return render


class PrintflowFilter(PrinterFilter):
    name = "PRINTFLOW"
    so_name = "ulogd_filter_PRINTFLOW.so"
    description = "Conntrack event to a text line (for LOGEMU, SYSLOG)"
    input_type = DataType.FLOW
    output_type = DataType.FLOW
    input_keys = INPUT_KEYS
    make_printer = staticmethod(make_printer)
    # ulogd's flow-logging stack as one function (plugins/fused.py).
    fusions = (FLOW_LINE,)
