"""Conntrack messages laid out as the kernel writes them (``ctnetlink_conntrack_event``), and
requests for one entry by its tuple.

For tests only: the daemon decodes conntrack messages and sends dump requests
(``pyulogd.codec.nfct``) but never builds these, so they do not ship in the package (moved
from ``pyulogd.codec.nfct``, whose constants they use).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pyulogd.codec import netlink as nl
from pyulogd.codec.nfct import (
    CTA_COUNTERS32_BYTES,
    CTA_COUNTERS32_PACKETS,
    CTA_COUNTERS_BYTES,
    CTA_COUNTERS_ORIG,
    CTA_COUNTERS_PACKETS,
    CTA_COUNTERS_REPLY,
    CTA_ID,
    CTA_IP_V4_DST,
    CTA_IP_V4_SRC,
    CTA_IP_V6_DST,
    CTA_IP_V6_SRC,
    CTA_MARK,
    CTA_PROTO_DST_PORT,
    CTA_PROTO_ICMP_CODE,
    CTA_PROTO_ICMP_ID,
    CTA_PROTO_ICMP_TYPE,
    CTA_PROTO_ICMPV6_CODE,
    CTA_PROTO_ICMPV6_ID,
    CTA_PROTO_ICMPV6_TYPE,
    CTA_PROTO_NUM,
    CTA_PROTO_SRC_PORT,
    CTA_STATUS,
    CTA_TIMEOUT,
    CTA_TIMESTAMP,
    CTA_TIMESTAMP_EVENT,
    CTA_TIMESTAMP_START,
    CTA_TIMESTAMP_STOP,
    CTA_TUPLE_IP,
    CTA_TUPLE_ORIG,
    CTA_TUPLE_PROTO,
    CTA_TUPLE_REPLY,
    CTA_TUPLE_ZONE,
    CTA_ZONE,
    DESTROY,
    IDX,
    IPCTNL_MSG_CT_DELETE,
    IPCTNL_MSG_CT_GET,
    IPCTNL_MSG_CT_NEW,
    IPPROTO_ICMPV6,
    NEW,
)


@dataclass(frozen=True)
class Tuple:
    """One direction of a conntrack entry."""

    saddr: bytes
    daddr: bytes
    proto: int
    sport: int | None = None
    dport: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    icmp_id: int | None = None
    zone: int | None = None

    def reversed(self) -> Tuple:
        """The reply tuple of an un-NATed flow (ICMP echo request -> echo reply)."""
        itype = self.icmp_type
        if itype is not None:
            itype = {8: 0, 13: 14, 15: 16, 17: 18, 128: 129}.get(itype, itype)
        return Tuple(self.daddr, self.saddr, self.proto, self.dport, self.sport, itype, self.icmp_code,
                     self.icmp_id, self.zone)


def _nest_attr(atype: int, parts: Iterable[bytes]) -> bytes:
    return nl.nla(atype | nl.NLA_F_NESTED, b"".join(parts))


def tuple_attr(atype: int, t: Tuple) -> bytes:
    """A ``CTA_TUPLE_ORIG``/``CTA_TUPLE_REPLY`` attribute, as ``ctnetlink_dump_tuples`` writes it."""
    v6 = len(t.saddr) == 16
    ip = _nest_attr(CTA_TUPLE_IP, [
        nl.nla(CTA_IP_V6_SRC if v6 else CTA_IP_V4_SRC, t.saddr),
        nl.nla(CTA_IP_V6_DST if v6 else CTA_IP_V4_DST, t.daddr),
    ])  # fmt: skip
    proto = [nl.nla(CTA_PROTO_NUM, bytes((t.proto,)))]
    if t.sport is not None:
        proto.append(nl.nla(CTA_PROTO_SRC_PORT, struct.pack("!H", t.sport)))
    if t.dport is not None:
        proto.append(nl.nla(CTA_PROTO_DST_PORT, struct.pack("!H", t.dport)))
    icmp6 = t.proto == IPPROTO_ICMPV6
    if t.icmp_id is not None:
        id_attr = CTA_PROTO_ICMPV6_ID if icmp6 else CTA_PROTO_ICMP_ID
        proto.append(nl.nla(id_attr, struct.pack("!H", t.icmp_id)))
    if t.icmp_type is not None:
        proto.append(nl.nla(CTA_PROTO_ICMPV6_TYPE if icmp6 else CTA_PROTO_ICMP_TYPE, bytes((t.icmp_type,))))
    if t.icmp_code is not None:
        proto.append(nl.nla(CTA_PROTO_ICMPV6_CODE if icmp6 else CTA_PROTO_ICMP_CODE, bytes((t.icmp_code,))))
    parts = [ip, _nest_attr(CTA_TUPLE_PROTO, proto)]
    if t.zone is not None:
        parts.append(nl.nla(CTA_TUPLE_ZONE, struct.pack("!H", t.zone)))
    return _nest_attr(atype, parts)


def _counters(atype: int, packets: int, nbytes: int, bits32: bool) -> bytes:
    if bits32:
        return _nest_attr(atype, [nl.nla(CTA_COUNTERS32_PACKETS, struct.pack("!I", packets)),
                                  nl.nla(CTA_COUNTERS32_BYTES, struct.pack("!I", nbytes))])
    return _nest_attr(atype, [nl.nla(CTA_COUNTERS_PACKETS, struct.pack("!Q", packets)),
                              nl.nla(CTA_COUNTERS_BYTES, struct.pack("!Q", nbytes))])


def build_ct(
    event: int,
    orig: Tuple,
    reply: Tuple | None = None,
    *,
    family: int | None = None,
    ct_id: int = 1,
    status: int | None = 0x8,
    timeout: int | None = 30,
    mark: int | None = None,
    zone: int | None = None,
    counters: tuple[int, int, int, int] | None = None,
    counters32: bool = False,
    timestamp: tuple[int, int | None] | None = None,
    event_time: int | None = None,
    seq: int = 0,
    pid: int = 0,
    flags: int | None = None,
    extra: Iterable[bytes] = (),
) -> bytes:
    """A conntrack event or dump entry in the kernel's attribute order (``ctnetlink_conntrack_event``).

    ``event``: NEW, UPDATE or DESTROY (a dump entry is an UPDATE with ``flags=NLM_F_MULTI``);
    ``counters``: (orig packets, orig bytes, reply packets, reply bytes); ``timestamp``: (start,
    stop) in ns; ``event_time``: CTA_TIMESTAMP_EVENT in ns.
    """
    if family is None:
        family = socket.AF_INET6 if len(orig.saddr) == 16 else socket.AF_INET
    if reply is None:
        reply = orig.reversed()
    u32 = struct.Struct("!I").pack
    at = [tuple_attr(CTA_TUPLE_ORIG, orig), tuple_attr(CTA_TUPLE_REPLY, reply)]
    if zone is not None:
        at.append(nl.nla(CTA_ZONE, struct.pack("!H", zone)))
    at.append(nl.nla(CTA_ID, u32(ct_id)))
    if status is not None:
        at.append(nl.nla(CTA_STATUS, u32(status)))
    if timeout is not None:
        at.append(nl.nla(CTA_TIMEOUT, u32(timeout)))
    if counters is not None:
        at.append(_counters(CTA_COUNTERS_ORIG, counters[0], counters[1], counters32))
        at.append(_counters(CTA_COUNTERS_REPLY, counters[2], counters[3], counters32))
    if timestamp is not None:
        ts = [nl.nla(CTA_TIMESTAMP_START, struct.pack("!Q", timestamp[0]))]
        if timestamp[1] is not None:
            ts.append(nl.nla(CTA_TIMESTAMP_STOP, struct.pack("!Q", timestamp[1])))
        at.append(_nest_attr(CTA_TIMESTAMP, ts))
    at.extend(extra)
    if mark is not None:
        at.append(nl.nla(CTA_MARK, u32(mark)))
    if event_time is not None:
        at.append(nl.nla(CTA_TIMESTAMP_EVENT, struct.pack("!Q", event_time)))
    msgtype = IPCTNL_MSG_CT_DELETE if event == DESTROY else IPCTNL_MSG_CT_NEW
    if flags is None:
        flags = nl.NLM_F_CREATE | nl.NLM_F_EXCL if event == NEW else 0
    return nl.nfnl_msg(nl.NFNL_SUBSYS_CTNETLINK, msgtype, family, 0, at, seq, flags, pid)


def get_request(seq: int, orig: Tuple, ct_id: int | None = None, zone: int | None = None,
                family: int | None = None) -> bytes:
    """Ask for one entry by its original tuple (and id, if given: the kernel answers ENOENT when
    the entry with that tuple has another id). Answered by the entry, then an ack, or an error."""
    if family is None:
        family = socket.AF_INET6 if len(orig.saddr) == 16 else socket.AF_INET
    at = [tuple_attr(CTA_TUPLE_ORIG, orig)]
    if zone is not None:
        at.append(nl.nla(CTA_ZONE, struct.pack("!H", zone)))
    if ct_id is not None:
        at.append(nl.nla(CTA_ID, struct.pack("!I", ct_id)))
    return nl.nfnl_msg(nl.NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_GET, family, 0, at, seq)


def tuple_of(values: list[Any]) -> Tuple:
    """The original tuple of a decoded entry (for :func:`get_request`); ICMP ids are not kept in
    the values, so ICMP entries are better found by dumping."""
    return Tuple(values[1], values[2], values[3], values[4], values[5], values[IDX["icmp.type"]],
                 values[IDX["icmp.code"]])
