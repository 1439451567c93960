"""Everything of one conntrack message, including what is no NFCT key (status, zone, timeout,
use, TCP state, helper, raw timestamps in ns): for tools and tests, not on the event path.

Apart from :mod:`pyulogd.codec.nfct` (which decodes messages into key values), whose constants
and walker it uses.
"""

from __future__ import annotations

from typing import Any

from pyulogd.codec import netlink as nl
from pyulogd.codec.nfct import (
    _READ,
    CTA_HELP,
    CTA_HELP_NAME,
    CTA_PROTO_ICMP_ID,
    CTA_PROTO_ICMPV6_ID,
    CTA_PROTOINFO,
    CTA_PROTOINFO_TCP,
    CTA_PROTOINFO_TCP_STATE,
    CTA_STATUS,
    CTA_TIMEOUT,
    CTA_TIMESTAMP,
    CTA_TIMESTAMP_EVENT,
    CTA_TIMESTAMP_START,
    CTA_TUPLE_ORIG,
    CTA_TUPLE_PROTO,
    CTA_TUPLE_REPLY,
    CTA_TUPLE_ZONE,
    CTA_USE,
    CTA_ZONE,
    _unpack_hdr2,
    as_dict,
    event_of,
    parse_ct,
)


def describe(buf: Any, off: int = 0, end: int | None = None) -> dict[str, Any]:
    """Everything this module understands of one conntrack message, including what is no
    output key (status, zone, timeout, use, TCP state, helper, raw timestamps in ns)."""
    if end is None:
        end = off + _unpack_hdr2(buf, off)[0]
    out: dict[str, Any] = {"values": as_dict(parse_ct(buf, off, end, 0.0))}
    _ln, typ, flags = _unpack_hdr2(buf, off)
    out["event"] = event_of(typ, flags)
    out["family"] = buf[off + 16]
    u32 = _READ["I"]
    for at, p, q in nl.attrs(buf, off + 20, end):
        n = q - p
        if at == CTA_STATUS and n >= 4:
            out["status"] = u32(buf, p)[0]
        elif at == CTA_TIMEOUT and n >= 4:
            out["timeout"] = u32(buf, p)[0]
        elif at == CTA_USE and n >= 4:
            out["use"] = u32(buf, p)[0]
        elif at == CTA_ZONE and n >= 2:
            out["zone"] = _READ["H"](buf, p)[0]
        elif at == CTA_TIMESTAMP:
            for t2, p2, q2 in nl.attrs(buf, p, q):
                if q2 - p2 >= 8:
                    out["start" if t2 == CTA_TIMESTAMP_START else "stop"] = _READ["Q"](buf, p2)[0]
        elif at == CTA_TIMESTAMP_EVENT and n >= 8:
            out["event_time"] = _READ["Q"](buf, p)[0]
        elif at == CTA_PROTOINFO:
            for t2, p2, q2 in nl.attrs(buf, p, q):
                if t2 == CTA_PROTOINFO_TCP:
                    for t3, p3, q3 in nl.attrs(buf, p2, q2):
                        if t3 == CTA_PROTOINFO_TCP_STATE and q3 > p3:
                            out["tcp_state"] = buf[p3]
        elif at == CTA_HELP:
            for t2, p2, q2 in nl.attrs(buf, p, q):
                if t2 == CTA_HELP_NAME:
                    out["helper"] = bytes(buf[p2:q2]).split(b"\0", 1)[0].decode("ascii", "replace")
        elif at in (CTA_TUPLE_ORIG, CTA_TUPLE_REPLY):
            for t2, p2, q2 in nl.attrs(buf, p, q):
                if t2 == CTA_TUPLE_ZONE and q2 - p2 >= 2:
                    out["orig_zone" if at == CTA_TUPLE_ORIG else "reply_zone"] = _READ["H"](buf, p2)[0]
                elif t2 == CTA_TUPLE_PROTO:
                    for t3, p3, q3 in nl.attrs(buf, p2, q2):
                        if t3 in (CTA_PROTO_ICMP_ID, CTA_PROTO_ICMPV6_ID) and q3 - p3 >= 2 \
                                and at == CTA_TUPLE_ORIG:
                            out["icmp_id"] = _READ["H"](buf, p3)[0]
    return out
