"""ctnetlink (conntrack) messages, sans-IO: events and dump entries in, NFCT output-key values out;
dump and get requests.

A conntrack message (``IPCTNL_MSG_CT_NEW`` or ``IPCTNL_MSG_CT_DELETE``, from the event groups or
as a dump entry) decodes straight into the value list a Source emits: ``[None, v1, ..., v28]``
in the order of :data:`KEYS`, ulogd2's NFCT output keys with 2.0.9's ``icmpv6.code`` and
``icmpv6.type`` after ``icmp.type``. ``None`` means "not valid for this event". Validity and
values follow ulogd2's ``propagate_ct()``:

* ``ct.event``: 1 NEW (``IPCTNL_MSG_CT_NEW`` with ``NLM_F_CREATE``/``NLM_F_EXCL``), 2 UPDATE
  (``IPCTNL_MSG_CT_NEW`` without them, which includes every dump entry), 4 DESTROY
  (``IPCTNL_MSG_CT_DELETE``);
* addresses as ``bytes`` (4 for IPv4, 16 for IPv6), taken from whichever address attribute
  the tuple carries; ``*.l4.sport/dport`` only for TCP, UDP, UDP-Lite, SCTP and DCCP (each
  tuple by its own protocol); ``icmp.*`` only for an ICMP flow and ``icmpv6.*`` only for an
  ICMPv6 flow, both from the original tuple;
* the four counters, ``ct.mark`` and ``ct.id`` always (0 when the kernel sent none; 64-bit
  counters, or the old 32-bit ones);
* ``flow.start`` from ``CTA_TIMESTAMP_START`` (``nf_conntrack_timestamp=1``), else, for a NEW
  event, the event time; ``flow.end`` from ``CTA_TIMESTAMP_STOP``, else, for a DESTROY, the
  event time. The event time is ``CTA_TIMESTAMP_EVENT`` (Linux >= 6.14, with timestamps on),
  else the caller's ``now``. A time whose seconds are 0 is left out, as ulogd does;
* ``oob.family`` = nfgenmsg family; ``oob.protocol`` = the L3 ethertype (0x0800, 0x86DD)
  as for packets (ulogd2 always writes 0 here); ``ct`` = the message's ``CTA_*`` attributes
  (``bytes``), the same form as NFLOG's ``ct`` key.

Malformed messages (a length outside its nest, or any attribute shorter than
:data:`CT_POLICY` says, read for a key or not) raise :class:`DecodeError`; the buffer-level
:meth:`Decoder.parse_buffer` counts and skips them. Speed: every message of one kind (say, IPv4 TCP DESTROY with
timestamps) has the same attribute layout. After the walker (:func:`walk`) has decoded a
message, the decoder keeps its layout as a *template*: one masked big-integer comparison
checks every attribute header the walk visited, one ``struct`` call reads every value, and
the same assembly code as the walker's turns them into the value list. A message that differs
in any header goes to the walker, so both paths give the same values by construction.

Walker, templates and decoder stay together here because they share the assembly code (and so
give the same values). Other jobs have modules of their own: ``nfct_filter`` (the accept
filters), ``ctbpf`` (the same as a kernel socket filter), ``nfct_describe`` (every attribute of
a message, for tools and tests); ``tests/builders/nfct.py`` builds messages.
"""

from __future__ import annotations

import operator
import socket
import struct
from collections.abc import Callable
from typing import Any

from pyulogd.codec import netlink as nl
from pyulogd.core.errors import DecodeError
from pyulogd.core.keys import Key, KeyType

IPCTNL_MSG_CT_NEW = 0
IPCTNL_MSG_CT_GET = 1
IPCTNL_MSG_CT_DELETE = 2
IPCTNL_MSG_CT_GET_CTRZERO = 3
CT_NEW_TYPE = nl.msg_type(nl.NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_NEW)
CT_DELETE_TYPE = nl.msg_type(nl.NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_DELETE)

# Legacy multicast group bits (bind() nl_groups), also the event_mask option's bits.
NF_NETLINK_CONNTRACK_NEW = 0x1
NF_NETLINK_CONNTRACK_UPDATE = 0x2
NF_NETLINK_CONNTRACK_DESTROY = 0x4

# ct.event values (libnetfilter_conntrack's NFCT_T_*)
NEW, UPDATE, DESTROY = 1, 2, 4

CTA_TUPLE_ORIG = 1
CTA_TUPLE_REPLY = 2
CTA_STATUS = 3
CTA_PROTOINFO = 4
CTA_HELP = 5
CTA_TIMEOUT = 7
CTA_MARK = 8
CTA_COUNTERS_ORIG = 9
CTA_COUNTERS_REPLY = 10
CTA_USE = 11
CTA_ID = 12
CTA_SECMARK = 17
CTA_ZONE = 18
CTA_SECCTX = 19
CTA_TIMESTAMP = 20
CTA_LABELS = 22
CTA_TIMESTAMP_EVENT = 27

CTA_TUPLE_IP = 1
CTA_TUPLE_PROTO = 2
CTA_TUPLE_ZONE = 3

CTA_IP_V4_SRC = 1
CTA_IP_V4_DST = 2
CTA_IP_V6_SRC = 3
CTA_IP_V6_DST = 4

CTA_PROTO_NUM = 1
CTA_PROTO_SRC_PORT = 2
CTA_PROTO_DST_PORT = 3
CTA_PROTO_ICMP_ID = 4
CTA_PROTO_ICMP_TYPE = 5
CTA_PROTO_ICMP_CODE = 6
CTA_PROTO_ICMPV6_ID = 7
CTA_PROTO_ICMPV6_TYPE = 8
CTA_PROTO_ICMPV6_CODE = 9

CTA_COUNTERS_PACKETS = 1
CTA_COUNTERS_BYTES = 2
CTA_COUNTERS32_PACKETS = 3
CTA_COUNTERS32_BYTES = 4

CTA_TIMESTAMP_START = 1
CTA_TIMESTAMP_STOP = 2

CTA_PROTOINFO_TCP = 1
CTA_PROTOINFO_DCCP = 2
CTA_PROTOINFO_SCTP = 3
CTA_PROTOINFO_TCP_STATE = 1  # also CTA_PROTOINFO_DCCP_STATE and CTA_PROTOINFO_SCTP_STATE
CTA_HELP_NAME = 1
CTA_SECCTX_NAME = 1

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_DCCP = 33
IPPROTO_ICMPV6 = 58
IPPROTO_SCTP = 132
IPPROTO_UDPLITE = 136
# Protocols whose tuples carry ports (ulogd2: TCP, UDP, UDPLITE, SCTP, DCCP).
PORT_PROTOS = frozenset({IPPROTO_TCP, IPPROTO_UDP, IPPROTO_UDPLITE, IPPROTO_SCTP, IPPROTO_DCCP})
# oob.protocol for flows: the ethertype, as NFLOG's oob.protocol for packets.
ETHERTYPE = {socket.AF_INET: 0x0800, socket.AF_INET6: 0x86DD}

# The NFCT plugin's output keys (the one table: plugins/inputs/nfct.py and the tests import it),
# in ulogd2's declaration order; value i sits at list index i + 1.
T = KeyType
OUTPUT_KEYS: tuple[Key, ...] = (
    Key("orig.ip.saddr", T.IPADDR, help="original-direction source address"),
    Key("orig.ip.daddr", T.IPADDR, help="original-direction destination address"),
    Key("orig.ip.protocol", T.UINT8, help="layer 4 protocol number"),
    Key("orig.l4.sport", T.UINT16, help="original-direction source port (TCP, UDP, UDP-Lite, SCTP, DCCP)"),
    Key("orig.l4.dport", T.UINT16, help="original-direction destination port"),
    Key("orig.raw.pktlen", T.UINT64, help="original-direction bytes (needs nf_conntrack_acct)"),
    Key("orig.raw.pktcount", T.UINT64, help="original-direction packets (needs nf_conntrack_acct)"),
    Key("reply.ip.saddr", T.IPADDR, help="reply-direction source address (differs from orig.ip.daddr under DNAT)"),
    Key("reply.ip.daddr", T.IPADDR, help="reply-direction destination address (differs from orig.ip.saddr under SNAT)"),
    Key("reply.ip.protocol", T.UINT8, help="layer 4 protocol number of the reply tuple"),
    Key("reply.l4.sport", T.UINT16, help="reply-direction source port"),
    Key("reply.l4.dport", T.UINT16, help="reply-direction destination port"),
    Key("reply.raw.pktlen", T.UINT64, help="reply-direction bytes (needs nf_conntrack_acct)"),
    Key("reply.raw.pktcount", T.UINT64, help="reply-direction packets (needs nf_conntrack_acct)"),
    Key("icmp.code", T.UINT8, help="ICMP code of an ICMP flow"),
    Key("icmp.type", T.UINT8, help="ICMP type of an ICMP flow"),
    Key("icmpv6.code", T.UINT8, help="ICMPv6 code of an ICMPv6 flow (as ulogd2 2.0.9)"),
    Key("icmpv6.type", T.UINT8, help="ICMPv6 type of an ICMPv6 flow (as ulogd2 2.0.9)"),
    Key("ct.mark", T.UINT32, help="conntrack mark"),
    Key("ct.id", T.UINT32, help="kernel conntrack id"),
    Key("ct.event", T.UINT32, help="1 NEW, 2 UPDATE, 4 DESTROY"),
    Key("flow.start.sec", T.UINT32, help="flow start (kernel timestamp, else the time the NEW event was read)"),
    Key("flow.start.usec", T.UINT32, help="microseconds of flow.start.sec"),
    Key("flow.end.sec", T.UINT32, help="flow end (kernel timestamp, else the time the DESTROY was read)"),
    Key("flow.end.usec", T.UINT32, help="microseconds of flow.end.sec"),
    Key("oob.family", T.UINT8, help="protocol family (2 IPv4, 10 IPv6)"),
    Key("oob.protocol", T.UINT16, help="layer 3 protocol as ethertype (2048 IPv4, 34525 IPv6); ulogd2: always 0"),
    Key("ct", T.RAW, help="the conntrack entry's ctnetlink attributes"),
)
KEYS: tuple[str, ...] = tuple(k.name for k in OUTPUT_KEYS)
# Index of each key in a value list (slot 0 is the reserved None).
IDX: dict[str, int] = {name: i + 1 for i, name in enumerate(KEYS)}
I_ORIG_SADDR = IDX["orig.ip.saddr"]
I_ORIG_PROTO = IDX["orig.ip.protocol"]
I_ORIG_BYTES = IDX["orig.raw.pktlen"]
I_REPLY_PKTS = IDX["reply.raw.pktcount"]
I_ID = IDX["ct.id"]
I_EVENT = IDX["ct.event"]
I_START_SEC = IDX["flow.start.sec"]
I_START_USEC = IDX["flow.start.usec"]
I_END_SEC = IDX["flow.end.sec"]
I_END_USEC = IDX["flow.end.usec"]
I_FAMILY = IDX["oob.family"]
I_CT = IDX["ct"]

# -- the raw fields a walk finds, in this order (the "layout" maps field -> where it is)

(F_O_SADDR, F_O_DADDR, F_O_PROTO, F_O_SPORT, F_O_DPORT, F_O_ITYPE, F_O_ICODE, F_O_I6TYPE, F_O_I6CODE,
 F_R_SADDR, F_R_DADDR, F_R_PROTO, F_R_SPORT, F_R_DPORT,
 F_O_PKTS, F_O_BYTES, F_R_PKTS, F_R_BYTES, F_MARK, F_ID,
 F_TS_START, F_TS_STOP, F_TS_EVENT) = range(23)  # fmt: skip
NFIELDS = 23
_REPLY_SHIFT = F_R_SADDR - F_O_SADDR  # a tuple's fields for the reply direction

# -- the one definition of a well-formed attribute

# For each nest, attribute type -> the minimum payload length, or the policy of the nest the
# attribute holds: the kernel's ctnetlink policy for every attribute pyulogd reads, in the
# decoder or in a renderer (XML). The walker refuses a message with any attribute that breaks
# it and the renderers read nothing it does not allow (:func:`netlink.well_formed`), so whatever the
# decoder accepted, every output can render whole; a ``ct`` from elsewhere (NFLOG's
# ``attach_conntrack``) is rendered as far as it is well-formed. Attributes not named here
# are only framed (length within the nest), never read.
Policy = nl.Policy
IP_POLICY: Policy = {CTA_IP_V4_SRC: 4, CTA_IP_V4_DST: 4, CTA_IP_V6_SRC: 16, CTA_IP_V6_DST: 16}
PROTO_POLICY: Policy = {
    CTA_PROTO_NUM: 1, CTA_PROTO_SRC_PORT: 2, CTA_PROTO_DST_PORT: 2,
    CTA_PROTO_ICMP_ID: 2, CTA_PROTO_ICMP_TYPE: 1, CTA_PROTO_ICMP_CODE: 1,
    CTA_PROTO_ICMPV6_ID: 2, CTA_PROTO_ICMPV6_TYPE: 1, CTA_PROTO_ICMPV6_CODE: 1,
}  # fmt: skip
TUPLE_POLICY: Policy = {CTA_TUPLE_IP: IP_POLICY, CTA_TUPLE_PROTO: PROTO_POLICY, CTA_TUPLE_ZONE: 2}
COUNTERS_POLICY: Policy = {CTA_COUNTERS_PACKETS: 8, CTA_COUNTERS_BYTES: 8, CTA_COUNTERS32_PACKETS: 4,
                           CTA_COUNTERS32_BYTES: 4}  # fmt: skip
TIMESTAMP_POLICY: Policy = {CTA_TIMESTAMP_START: 8, CTA_TIMESTAMP_STOP: 8}
# The state of each protocol's CTA_PROTOINFO_* nest (all three have it as attribute 1).
PROTOINFO_POLICY: Policy = {kind: {CTA_PROTOINFO_TCP_STATE: 1}
                            for kind in (CTA_PROTOINFO_TCP, CTA_PROTOINFO_DCCP, CTA_PROTOINFO_SCTP)}
CT_POLICY: Policy = {
    CTA_TUPLE_ORIG: TUPLE_POLICY, CTA_TUPLE_REPLY: TUPLE_POLICY, CTA_STATUS: 4,
    CTA_PROTOINFO: PROTOINFO_POLICY, CTA_HELP: {CTA_HELP_NAME: 0}, CTA_TIMEOUT: 4, CTA_MARK: 4,
    CTA_COUNTERS_ORIG: COUNTERS_POLICY, CTA_COUNTERS_REPLY: COUNTERS_POLICY, CTA_USE: 4, CTA_ID: 4,
    CTA_SECMARK: 4, CTA_ZONE: 2, CTA_SECCTX: {CTA_SECCTX_NAME: 0}, CTA_TIMESTAMP: TIMESTAMP_POLICY,
    CTA_TIMESTAMP_EVENT: 8,
}  # fmt: skip

_SIZE = {"4s": 4, "16s": 16, "B": 1, "H": 2, "I": 4, "Q": 8}


def _fields(policy: Policy, where: dict[int, tuple[int, str]]) -> dict[int, tuple[int, str]]:
    """attribute type -> (field, struct code) of the values a nest's attributes give; each
    read must fit the minimum length the policy guarantees."""
    for at, (_field, code) in where.items():
        need = policy[at]
        if not isinstance(need, int) or need < _SIZE[code]:  # the read would run past the attribute
            raise ValueError(f"attribute {at}: policy {need!r} does not cover a {code!r} read")
    return where


_IP_FIELDS = _fields(IP_POLICY, {
    CTA_IP_V4_SRC: (F_O_SADDR, "4s"),
    CTA_IP_V4_DST: (F_O_DADDR, "4s"),
    CTA_IP_V6_SRC: (F_O_SADDR, "16s"),
    CTA_IP_V6_DST: (F_O_DADDR, "16s"),
})  # fmt: skip
_PROTO_FIELDS = _fields(PROTO_POLICY, {
    CTA_PROTO_NUM: (F_O_PROTO, "B"),
    CTA_PROTO_SRC_PORT: (F_O_SPORT, "H"),
    CTA_PROTO_DST_PORT: (F_O_DPORT, "H"),
    CTA_PROTO_ICMP_TYPE: (F_O_ITYPE, "B"),
    CTA_PROTO_ICMP_CODE: (F_O_ICODE, "B"),
    CTA_PROTO_ICMPV6_TYPE: (F_O_I6TYPE, "B"),
    CTA_PROTO_ICMPV6_CODE: (F_O_I6CODE, "B"),
})  # fmt: skip
# Only the original tuple's ICMP values are reported (as ulogd2 does).
_ORIG_ONLY = frozenset({F_O_ITYPE, F_O_ICODE, F_O_I6TYPE, F_O_I6CODE})
_COUNTER_FIELDS = _fields(COUNTERS_POLICY, {
    CTA_COUNTERS_PACKETS: (0, "Q"),
    CTA_COUNTERS_BYTES: (1, "Q"),
    CTA_COUNTERS32_PACKETS: (0, "I"),
    CTA_COUNTERS32_BYTES: (1, "I"),
})  # fmt: skip
_TS_FIELDS = _fields(TIMESTAMP_POLICY, {CTA_TIMESTAMP_START: (F_TS_START, "Q"),
                                        CTA_TIMESTAMP_STOP: (F_TS_STOP, "Q")})  # fmt: skip
_TOP_FIELDS = _fields(CT_POLICY, {CTA_MARK: (F_MARK, "I"), CTA_ID: (F_ID, "I"),
                                  CTA_TIMESTAMP_EVENT: (F_TS_EVENT, "Q")})  # fmt: skip

_unpack_hdr2 = struct.Struct("=IHH").unpack_from
# A template's key: nlmsg_len, type and flags as one number, and the family (the layouts of
# IPv4 and IPv6 messages of the same length differ).
_key = struct.Struct("=Q8xB").unpack_from
_unpack_nla = nl.NLA.unpack_from
_READ: dict[str, Callable[[Any, int], tuple[Any, ...]]] = {
    code: struct.Struct("!" + code).unpack_from for code in _SIZE
}

# A field's place: (offset from the message start, struct code).
Place = tuple[int, str]


class Layout:
    """Where a message's fields are: what one walk over its attributes found."""

    __slots__ = ("fields", "headers")

    def __init__(self) -> None:
        self.fields: dict[int, Place] = {}
        self.headers: list[int] = []  # offsets of every attribute header visited


def _nest(buf: Any, start: int, end: int, off: int, lay: Layout) -> list[tuple[int, int, int]]:
    """``(type, payload_start, payload_end)`` of each attribute in ``buf[start:end]``; records headers."""
    out = []
    a = start
    headers = lay.headers
    while a + 4 <= end:
        al, at = _unpack_nla(buf, a)
        if al < 4 or a + al > end:
            raise DecodeError(f"ctnetlink attribute type {at & nl.NLA_TYPE_MASK} at offset {a - off}: "
                              f"bad length {al}")
        headers.append(a - off)
        out.append((at & nl.NLA_TYPE_MASK, a + 4, a + al))
        a += (al + 3) & ~3
    return out


def _check(buf: Any, policy: Policy, at: int, p: int, q: int, off: int, lay: Layout) -> None:
    """Raise DecodeError unless the attribute ``at`` at ``buf[p:q]`` (its payload) is as long as
    ``policy`` needs; a nest is checked attribute by attribute, its headers recorded."""
    rule = policy.get(at)
    if rule is None:
        return
    if isinstance(rule, int):
        if q - p < rule:
            raise DecodeError(f"ctnetlink attribute type {at} at offset {p - 4 - off}: {q - p} bytes, "
                              f"needs {rule}")
        return
    for t2, p2, q2 in _nest(buf, p, q, off, lay):
        _check(buf, rule, t2, p2, q2, off, lay)


def _put(table: dict[int, tuple[int, str]], at: int, p: int, off: int, group: dict[int, Place],
         shift: int = 0) -> None:
    """Where the value of ``at`` is, if it gives one (its length was checked by the policy)."""
    spec = table.get(at)
    if spec is not None:
        group[spec[0] + shift] = (p - off, spec[1])


def walk(buf: Any, off: int, end: int) -> Layout:
    """The layout of the message at ``buf[off:end]`` (``end`` = off + nlmsg_len). Raises DecodeError
    for a message that breaks :data:`CT_POLICY` anywhere, read by the decoder or not.

    Only attribute headers decide what the walk does, never values: so any message whose
    headers (and length, type, flags) are the same has the same layout and the same verdict.
    """
    if end - off < nl.NLMSG_HDRLEN + nl.NFGEN_HDRLEN:
        raise DecodeError(f"ctnetlink message of {end - off} bytes has no nfgenmsg header")
    lay = Layout()
    fields = lay.fields
    for at, p, q in _nest(buf, off + 20, end, off, lay):
        if at == CTA_TUPLE_ORIG or at == CTA_TUPLE_REPLY:
            shift = 0 if at == CTA_TUPLE_ORIG else _REPLY_SHIFT
            group: dict[int, Place] = {}
            for t2, p2, q2 in _nest(buf, p, q, off, lay):
                if t2 == CTA_TUPLE_IP:
                    for t3, p3, q3 in _nest(buf, p2, q2, off, lay):
                        _check(buf, IP_POLICY, t3, p3, q3, off, lay)
                        _put(_IP_FIELDS, t3, p3, off, group)
                elif t2 == CTA_TUPLE_PROTO:
                    for t3, p3, q3 in _nest(buf, p2, q2, off, lay):
                        _check(buf, PROTO_POLICY, t3, p3, q3, off, lay)
                        _put(_PROTO_FIELDS, t3, p3, off, group)
                else:
                    _check(buf, TUPLE_POLICY, t2, p2, q2, off, lay)
            # A repeated tuple attribute replaces the earlier one entirely (the kernel keeps the last).
            for f in range(F_O_SADDR, F_O_I6CODE + 1):
                if shift and f in _ORIG_ONLY:
                    continue
                fields.pop(f + shift, None)
            for f, place in group.items():
                if shift and f in _ORIG_ONLY:
                    continue
                fields[f + shift] = place
        elif at == CTA_COUNTERS_ORIG or at == CTA_COUNTERS_REPLY:
            base = F_O_PKTS if at == CTA_COUNTERS_ORIG else F_R_PKTS
            group = {}
            for t2, p2, q2 in _nest(buf, p, q, off, lay):
                _check(buf, COUNTERS_POLICY, t2, p2, q2, off, lay)
                _put(_COUNTER_FIELDS, t2, p2, off, group, base)
            fields.pop(base, None)
            fields.pop(base + 1, None)
            fields.update(group)
        elif at == CTA_TIMESTAMP:
            group = {}
            for t2, p2, q2 in _nest(buf, p, q, off, lay):
                _check(buf, TIMESTAMP_POLICY, t2, p2, q2, off, lay)
                _put(_TS_FIELDS, t2, p2, off, group)
            fields.pop(F_TS_START, None)
            fields.pop(F_TS_STOP, None)
            fields.update(group)
        else:
            _check(buf, CT_POLICY, at, p, q, off, lay)
            _put(_TOP_FIELDS, at, p, off, fields)
    if F_O_SADDR not in fields and F_O_PROTO not in fields:
        raise DecodeError("ctnetlink message without an original tuple")
    return lay


def read_fields(buf: Any, off: int, lay: Layout) -> tuple[Any, ...]:
    """The raw field values (None where absent) of a walked message."""
    raw: list[Any] = [None] * NFIELDS
    for f, (rel, code) in lay.fields.items():
        raw[f] = _READ[code](buf, off + rel)[0]
    return tuple(raw)


def split_now(now: float) -> tuple[int, int]:
    """A wall-clock float as (seconds, microseconds)."""
    sec, usec = divmod(int(now * 1_000_000), 1_000_000)
    return sec, usec


# Raw field names, in field order, as the assembly code below uses them.
_NAMES = ("osa", "oda", "op", "osp", "odp", "oit", "oic", "oi6t", "oi6c", "rsa", "rda", "rp", "rsp", "rdp",
          "opk", "oby", "rpk", "rby", "mark", "cid", "tstart", "tstop", "tev")
assert len(_NAMES) == NFIELDS
# Raw fields -> value list. The one text both the walker's assemble() and every template run,
# so a template cannot compute anything the walker would not. Inputs: the raw fields, event,
# family, ct, now (the wall clock, a float, only read when the kernel gave no time).
_ASSEMBLY = """
    if op not in PORT_PROTOS:
        osp = odp = None
    if rp not in PORT_PROTOS:
        rsp = rdp = None
    if op != 1:
        oit = oic = None
    if op != 58:
        oi6t = oi6c = None
    ss = su = es = eu = None
    if tstart is not None and tstart >= 1000000000:
        ss, su = divmod(tstart // 1000, 1000000)
    if tstop is not None and tstop >= 1000000000:
        es, eu = divmod(tstop // 1000, 1000000)
    if (ss is None and event == 1) or (es is None and event == 4):
        if tev is not None and tev >= 1000000000:
            t = divmod(tev // 1000, 1000000)
        else:
            t = divmod(int(now * 1000000), 1000000)
        if t[0]:
            if event == 1:
                ss, su = t
            else:
                es, eu = t
    return [None, osa, oda, op, osp, odp, oby or 0, opk or 0, rsa, rda, rp, rsp, rdp, rby or 0, rpk or 0,
            oic, oit, oi6c, oi6t, mark or 0, cid or 0, event, ss, su, es, eu, family,
            2048 if family == 2 else 34525 if family == 10 else None, ct]
"""


def _define(src: str, name: str, ns: dict[str, Any]) -> Any:
    ns["PORT_PROTOS"] = PORT_PROTOS
    exec(compile(src, f"<nfct {name}>", "exec"), ns)  # noqa: S102 - generated from constants only
    return ns[name]


_assemble: Callable[..., list[Any]] = _define(
    "def assemble(r, event, family, ct, now):\n    (" + ", ".join(_NAMES) + ",) = r\n" + _ASSEMBLY,
    "assemble", {})


def assemble(r: tuple[Any, ...], event: int, family: int, ct: bytes, now: float) -> list[Any]:
    """The value list from a message's raw fields (``now``: the wall clock, for missing kernel times)."""
    return _assemble(r, event, family, ct, now)


def event_of(nlmsg_type: int, flags: int) -> int:
    """ct.event for a conntrack message's type and flags; 0 for other messages."""
    if nlmsg_type == CT_NEW_TYPE:
        return NEW if flags & (nl.NLM_F_CREATE | nl.NLM_F_EXCL) else UPDATE
    if nlmsg_type == CT_DELETE_TYPE:
        return DESTROY
    return 0


def parse_ct(buf: Any, off: int, end: int, now: float) -> list[Any]:
    """Values of the conntrack message at ``buf[off:end]`` (``end`` = off + nlmsg_len), by walking
    it (no templates). ``now``: the wall clock, for times the kernel did not give. Raises DecodeError."""
    if end - off < 20:
        raise DecodeError(f"ctnetlink message of {end - off} bytes has no nfgenmsg header")
    _ln, typ, flags = _unpack_hdr2(buf, off)
    event = event_of(typ, flags)
    if not event:
        raise DecodeError(f"netlink message type {typ:#x} is not a conntrack entry")
    lay = walk(buf, off, end)
    return _assemble(read_fields(buf, off, lay), event, buf[off + 16], bytes(buf[off + 20 : end]), now)


# -- templates

_Fast = Callable[[Any, int, int, float], "list[Any] | None"]
_MAX_PER_KEY = 4
# A walk costs about 10 template hits, a compile about 30 walks: compile freely at first, then
# one per 64 hits, so traffic whose layout never repeats stays on the walker.
_FREE_COMPILES, _HITS_PER_COMPILE = 64, 64


def make_template(buf: Any, off: int, end: int, lay: Layout, event: int) -> _Fast:
    """A function ``f(buf, off, n, now)`` giving the values of a message laid out like ``lay``
    (the layout of the message at ``buf[off:end]``) at ``buf[off:off + n]``, or None when the
    message is laid out differently or ``n`` (the bytes there are: a datagram's length, or
    nlmsg_len) does not fit. The caller guarantees the same nlmsg_len, type and flags (the
    template's key).

    Every attribute header the walk visited, and the padding after each attribute (the kernel
    zeroes it; a producer that does not only misses the template), must be equal: one masked
    big-integer comparison. Then one ``struct`` reads every value, one ``itemgetter`` puts them
    in field order and the walker's own assembly code makes the value list.

    A closure, not generated code: making one costs about a tenth of compiling source, which
    matters for the first events after start (each new layout is learnt while the socket
    buffer fills) and for every namespace followed (each has its own templates).
    """
    ln = end - off
    keep = bytearray(ln)
    for h in lay.headers:
        al = _unpack_nla(buf, off + h)[0]
        keep[h : h + 4] = b"\xff\xff\xff\xff"
        pad = min(h + ((al + 3) & ~3), ln) - (h + al)
        if pad > 0:
            keep[h + al : h + al + pad] = b"\xff" * pad
    mask = int.from_bytes(keep, "big")
    expect = int.from_bytes(bytes(buf[off:end]), "big") & mask
    items = sorted([(16, "B", -1)] + [(rel, code, f) for f, (rel, code) in lay.fields.items()])
    fmt, pos = ["!"], 0
    for rel, code, _f in items:
        if rel < pos:
            raise ValueError("overlapping fields")  # cannot happen for a walked layout
        if rel > pos:
            fmt.append(f"{rel - pos}x")
        fmt.append(code)
        pos = rel + _SIZE[code]
    unpack = struct.Struct("".join(fmt)).unpack_from
    where = {f: i for i, (_rel, _code, f) in enumerate(items)}
    absent = len(items)  # the index of the None appended to the unpacked values
    in_order = operator.itemgetter(*(where.get(f, absent) for f in range(NFIELDS)))
    at_family = where[-1]
    from_bytes = int.from_bytes
    assemble = _assemble

    ln4 = (ln + 3) & ~3

    def fast(buf: Any, off: int, n: int, now: float) -> list[Any] | None:
        # n: the bytes there are (a datagram may carry the message's padding, not less)
        if n != ln and (n < ln or n > ln4):
            return None
        end = off + ln
        if from_bytes(buf[off:end], "big") & mask != expect:
            return None
        v = unpack(buf, off) + (None,)
        return assemble(in_order(v), event, v[at_family], bytes(buf[off + 20 : end]), now)

    return fast


class Batch(nl.Batch):
    """A ``recv()`` buffer of conntrack messages; dumps also end or get interrupted."""

    __slots__ = ("done", "interrupted")

    def __init__(self) -> None:
        super().__init__()
        self.done = False  # NLMSG_DONE seen (end of a dump)
        self.interrupted = False  # a dump message had NLM_F_DUMP_INTR: the table changed meanwhile


class Decoder:
    """Decodes ``recv()`` buffers; owns the template cache, so keep one per socket kind."""

    def __init__(self, templates: bool = True, max_templates: int = 256) -> None:
        self.templates = templates
        self.max_templates = max_templates
        # (first 8 bytes: nlmsg_len, type, flags; family) -> templates, newest first
        self._cands: dict[tuple[int, int], list[_Fast]] = {}
        self._ntemplates = 0
        self._hits = 0
        self._compiles = 0

    def parse_buffer(self, buf: Any, now: float) -> Batch:
        """Every conntrack message of a buffer, as value lists. Never raises.

        ``now`` (a ``time.time()`` float) stands in for times the kernel did not send.
        """
        batch = Batch()
        append = batch.records.append
        cands = self._cands
        end = len(buf)
        off = 0
        while off + 16 <= end:
            ln, typ, flags = _unpack_hdr2(buf, off)
            e = off + ln
            if ln < 16 or e > end:
                batch._bad(f"nlmsg_len {ln} at offset {off} of a {end}-byte buffer")
                return batch
            if typ == CT_NEW_TYPE or typ == CT_DELETE_TYPE:
                if flags & 0x10:  # NLM_F_DUMP_INTR
                    batch.interrupted = True
                r = None
                fs = cands.get(_key(buf, off)) if ln >= 20 else None
                if fs is not None:
                    r = fs[0](buf, off, ln, now)
                    if r is None and len(fs) > 1:
                        r = self._try_others(fs, buf, off, ln, now)
                if r is None:
                    event = (NEW if flags & 0x600 else UPDATE) if typ == CT_NEW_TYPE else DESTROY
                    try:
                        if ln < 20:
                            raise DecodeError(f"ctnetlink message of {ln} bytes has no nfgenmsg header")
                        lay = walk(buf, off, e)
                        r = _assemble(read_fields(buf, off, lay), event, buf[off + 16],
                                      bytes(buf[off + 20 : e]), now)
                    except (ValueError, IndexError, struct.error) as ex:  # DecodeError is a ValueError
                        batch._bad(str(ex))
                    else:
                        self._learn(buf, off, e, lay, event)
                    if r is not None:
                        append(r)
                else:
                    self._hits += 1
                    append(r)
            elif typ == nl.NLMSG_DONE:
                batch.done = True
            elif typ == nl.NLMSG_NOOP:
                pass
            elif typ == nl.NLMSG_ERROR:
                batch.error_message(buf, off, ln)
            else:
                batch.other += 1
            off += (ln + 3) & ~3
        batch.tail(buf, off, end)
        return batch

    def parse_one(self, buf: Any, now: float) -> list[Any] | None:
        """The values of a buffer that is exactly one conntrack message of a known layout (an
        event datagram, the common case), else None: then use :meth:`parse_buffer`. Never raises."""
        return self.parse_at(buf, 0, len(buf), now)

    def parse_at(self, buf: Any, off: int, n: int, now: float) -> list[Any] | None:
        """:meth:`parse_one` for the ``n``-byte datagram at ``buf[off:]`` (datagrams read back
        to back into one buffer). Never raises."""
        fs = self._cands.get(_key(buf, off)) if n >= 20 else None
        if fs is None:
            return None
        # The key holds nlmsg_len, type and flags: a template checks the rest.
        r = fs[0](buf, off, n, now)
        if r is None and len(fs) > 1:
            r = self._try_others(fs, buf, off, n, now)
        if r is not None:
            self._hits += 1
        return r

    def lookup(self) -> tuple[Callable[[Any, int], tuple[int, int]], dict[tuple[int, int], list[_Fast]]]:
        """For a caller's own loop over many datagrams (the NFCT input's hot path): the key
        function and the template table. ``fs = table.get(key(buf, off))`` (datagrams of 20
        bytes or more), then ``fs[0](buf, off, n, now)``; whatever gives None goes through
        :meth:`parse_at` (other templates) or :meth:`parse_buffer`. Report the hits with
        :meth:`count_hits` (they pay for new templates)."""
        return _key, self._cands

    def count_hits(self, n: int) -> None:
        self._hits += n

    @staticmethod
    def _try_others(fs: list[_Fast], buf: Any, off: int, n: int, now: float) -> list[Any] | None:
        """Templates after the first of a key; one that matches moves to the front, since
        messages of one kind tend to come in runs."""
        for i in range(1, len(fs)):
            r = fs[i](buf, off, n, now)
            if r is not None:
                fs.insert(0, fs.pop(i))
                return r
        return None

    def _learn(self, buf: Any, off: int, end: int, lay: Layout, event: int) -> None:
        if not self.templates or self._compiles >= _FREE_COMPILES + self._hits // _HITS_PER_COMPILE:
            return
        self._compiles += 1
        try:
            fn = make_template(buf, off, end, lay, event)
        except (ValueError, IndexError, struct.error):  # a template must never cost a message
            return
        if self._ntemplates >= self.max_templates:
            # Unbounded variety of layouts: start over rather than grow.
            self._cands.clear()
            self._ntemplates = 0
        cands = self._cands.setdefault(_key(buf, off), [])
        if len(cands) >= _MAX_PER_KEY:
            cands.pop()
            self._ntemplates -= 1
        cands.insert(0, fn)
        self._ntemplates += 1


def parse_buffer(buf: Any, now: float) -> Batch:
    """:meth:`Decoder.parse_buffer` without templates (the walker only). Never raises."""
    return Decoder(templates=False).parse_buffer(buf, now)


def decode(msg: Any, now: float = 0.0) -> list[Any]:
    """Values of a single conntrack message (tests and tools). Raises DecodeError."""
    if len(msg) < 16:
        raise DecodeError(f"{len(msg)} bytes is no netlink message")
    ln = _unpack_hdr2(msg, 0)[0]
    if ln < 16 or ln > len(msg):
        raise DecodeError(f"nlmsg_len {ln} for a {len(msg)}-byte message")
    return parse_ct(msg, 0, ln, now)


def as_dict(values: list[Any]) -> dict[str, Any]:
    """Key name -> value for the valid keys of a value list (tests and debugging)."""
    return {name: values[i + 1] for i, name in enumerate(KEYS) if values[i + 1] is not None}


def flow_key(values: list[Any]) -> tuple[Any, ...]:
    """What identifies a flow in a flow table: the kernel's id and the original tuple.

    ulogd2 compares both tuples; the id adds the conntrack object, so a flow that ends and
    starts again with the same tuple while events were lost is not taken for the old one.
    """
    return (values[I_ID], values[1], values[2], values[3], values[4], values[5], values[I_FAMILY])


# -- requests the NFCT input sends


def dump_request(seq: int, family: int = socket.AF_UNSPEC, zero: bool = False) -> bytes:
    """Dump the whole table (``IPCTNL_MSG_CT_GET``), or dump and zero every entry's counters
    (``IPCTNL_MSG_CT_GET_CTRZERO``). ``AF_UNSPEC`` dumps IPv4 and IPv6. Ends with NLMSG_DONE."""
    msgtype = IPCTNL_MSG_CT_GET_CTRZERO if zero else IPCTNL_MSG_CT_GET
    return nl.nfnl_msg(nl.NFNL_SUBSYS_CTNETLINK, msgtype, family, 0, (), seq,
                       nl.NLM_F_REQUEST | nl.NLM_F_DUMP)


def get_request_for(seq: int, values: list[Any]) -> bytes:
    """Ask for the entry a value list came from: its original tuple (taken verbatim from the
    ``ct`` attributes, ICMP id and tuple zone included), zone and id."""
    ct = values[I_CT]
    if not ct:
        raise ValueError("no ct attributes to build a request from")
    at: list[bytes] = []
    a = 0
    while a + 4 <= len(ct):
        al, t = _unpack_nla(ct, a)
        if al < 4 or a + al > len(ct):
            raise ValueError(f"bad attribute length {al} in the ct attributes")
        if t & nl.NLA_TYPE_MASK in (CTA_TUPLE_ORIG, CTA_ZONE):
            at.append(bytes(ct[a : a + al]) + b"\0" * (-al & 3))
        a += (al + 3) & ~3
    at.append(nl.nla(CTA_ID, struct.pack("!I", values[I_ID] or 0)))
    return nl.nfnl_msg(nl.NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_GET, values[I_FAMILY] or 0, 0, at, seq)


def zone_of(ct: Any) -> int | None:
    """The conntrack zone (``CTA_ZONE``) among the ``ct`` attributes of an NFCT record or of an
    NFLOG packet logged with its conntrack entry; None when the entry has none (zone 0 is not
    sent) or the attributes are cut short."""
    if not ct:
        return None
    a, n = 0, len(ct)
    while a + 4 <= n:
        al, t = _unpack_nla(ct, a)
        if al < 4 or a + al > n:
            return None
        if t & nl.NLA_TYPE_MASK == CTA_ZONE:
            return int.from_bytes(bytes(ct[a + 4 : a + 6]), "big") if al >= 6 else None
        a += (al + 3) & ~3
    return None
