"""nf_tables trace events (``NFT_MSG_TRACE``) and ruleset change notifications, sans-IO.

A packet whose ``meta nftrace`` bit is set makes the kernel send, to the ``NFNLGRP_NFTRACE``
group, one message per rule it passes in every table (``net/netfilter/nf_tables_trace.c``):

* ``NFTA_TRACE_ID`` (be32) names the packet: a hash of the skb's address, flow hash and input
  interface. The same packet keeps its id from hook to hook while its skb lives (forwarded
  traffic: prerouting, forward, postrouting); a looped-back copy gets another one, and a later
  packet of the same flow may reuse an id once the first skb is freed.
* ``NFTA_TRACE_TYPE``: ``RULE`` (a rule matched; ``NFTA_TRACE_VERDICT`` nests the verdict code
  and the jump target), ``RETURN`` (the end of a user chain), ``POLICY`` (the end of a base chain,
  ``NFTA_TRACE_POLICY`` holds the policy verdict). A ``RULE`` event without a rule handle marks
  the end of a base chain's rules, just before its policy.
* the first event of every base-chain evaluation also carries the packet: the interfaces, the
  mark, and the first bytes of its link (20), network (40) and transport (20) headers.

The nfgenmsg family of a message is the *table*'s family (``inet``, ``ip``, ...);
``NFTA_TRACE_NFPROTO`` is the packet's (IPv4 in an ``inet`` table is 2).

:func:`parse_buffer` turns a ``recv()`` buffer into :class:`TraceEvent` s plus the ruleset
changes announced on ``NFNLGRP_NFTABLES`` (:class:`RulesetChange`); malformed messages are
counted, never raised. Grouping the events of one packet into a verdict is
:mod:`pyulogd.codec.nfttrack`'s work; the rules themselves come from :mod:`pyulogd.codec.nftruleset`.
"""

from __future__ import annotations

import struct
from typing import Any

from pyulogd.codec import netlink as nl
from pyulogd.core.errors import DecodeError

NFNL_SUBSYS_NFTABLES = 10

# nfnetlink multicast groups (linux/netfilter/nfnetlink.h)
NFNLGRP_NFTABLES = 7
NFNLGRP_NFTRACE = 9

# enum nf_tables_msg_types
NFT_MSG_NEWTABLE = 0
NFT_MSG_GETTABLE = 1
NFT_MSG_DELTABLE = 2
NFT_MSG_NEWCHAIN = 3
NFT_MSG_GETCHAIN = 4
NFT_MSG_DELCHAIN = 5
NFT_MSG_NEWRULE = 6
NFT_MSG_GETRULE = 7
NFT_MSG_DELRULE = 8
NFT_MSG_NEWSET = 9
NFT_MSG_DELSET = 11
NFT_MSG_NEWSETELEM = 12
NFT_MSG_DELSETELEM = 14
NFT_MSG_NEWGEN = 15
NFT_MSG_GETGEN = 16
NFT_MSG_TRACE = 17
TRACE_TYPE = nl.msg_type(NFNL_SUBSYS_NFTABLES, NFT_MSG_TRACE)

# enum nft_trace_attributes
NFTA_TRACE_TABLE = 1
NFTA_TRACE_CHAIN = 2
NFTA_TRACE_RULE_HANDLE = 3
NFTA_TRACE_TYPE = 4
NFTA_TRACE_VERDICT = 5
NFTA_TRACE_ID = 6
NFTA_TRACE_LL_HEADER = 7
NFTA_TRACE_NETWORK_HEADER = 8
NFTA_TRACE_TRANSPORT_HEADER = 9
NFTA_TRACE_IIF = 10
NFTA_TRACE_IIFTYPE = 11
NFTA_TRACE_OIF = 12
NFTA_TRACE_OIFTYPE = 13
NFTA_TRACE_MARK = 14
NFTA_TRACE_NFPROTO = 15
NFTA_TRACE_POLICY = 16
NFTA_TRACE_PAD = 17

# enum nft_trace_types
NFT_TRACETYPE_UNSPEC = 0
NFT_TRACETYPE_POLICY = 1
NFT_TRACETYPE_RETURN = 2
NFT_TRACETYPE_RULE = 3

# enum nft_verdict_attributes
NFTA_VERDICT_CODE = 1
NFTA_VERDICT_CHAIN = 2

# The table and chain name attributes of the ruleset messages (NFTA_TABLE_NAME; NFTA_CHAIN_TABLE,
# NFTA_CHAIN_NAME; NFTA_RULE_TABLE, NFTA_RULE_CHAIN): all that a change notification is read for.
NFTA_TABLE_NAME = 1
NFTA_CHAIN_TABLE = 1
NFTA_CHAIN_NAME = 3
NFTA_RULE_TABLE = 1
NFTA_RULE_CHAIN = 2

# Verdict codes: netfilter's (NF_*, the low byte of a non-negative code; NF_QUEUE carries the
# queue number above it) and nf_tables' own (negative).
NF_DROP = 0
NF_ACCEPT = 1
NF_STOLEN = 2
NF_QUEUE = 3
NF_REPEAT = 4
NF_STOP = 5
NFT_CONTINUE = -1
NFT_BREAK = -2
NFT_JUMP = -3
NFT_GOTO = -4
NFT_RETURN = -5
_NF_NAMES = {NF_DROP: "drop", NF_ACCEPT: "accept", NF_STOLEN: "stolen", NF_QUEUE: "queue", NF_REPEAT: "repeat",
             NF_STOP: "stop"}  # fmt: skip
_NFT_NAMES = {NFT_CONTINUE: "continue", NFT_BREAK: "break", NFT_JUMP: "jump", NFT_GOTO: "goto",
              NFT_RETURN: "return"}  # fmt: skip

# nfgenmsg family numbers (NFPROTO_*) and how nft writes them.
NFPROTO_INET = 1
NFPROTO_IPV4 = 2
NFPROTO_ARP = 3
NFPROTO_NETDEV = 5
NFPROTO_BRIDGE = 7
NFPROTO_IPV6 = 10
FAMILY_NAMES = {NFPROTO_INET: "inet", NFPROTO_IPV4: "ip", NFPROTO_ARP: "arp", NFPROTO_NETDEV: "netdev",
                NFPROTO_BRIDGE: "bridge", NFPROTO_IPV6: "ip6"}  # fmt: skip
FAMILY_NUMBERS = {v: k for k, v in FAMILY_NAMES.items()}

# What the kernel copies of each header at most (NFT_TRACETYPE_*_HSIZE).
LL_HSIZE = 20
NETWORK_HSIZE = 40
TRANSPORT_HSIZE = 20

_unpack_hdr2 = struct.Struct("=IH").unpack_from
_unpack_nla = nl.NLA.unpack_from
_unpack_u32 = struct.Struct("!I").unpack_from
_unpack_i32 = struct.Struct("!i").unpack_from
_unpack_u16 = struct.Struct("!H").unpack_from
_unpack_u64 = struct.Struct("!Q").unpack_from
_head3 = struct.Struct("=HH4xHH4xHH4x").unpack_from
_vals3 = struct.Struct("!4xI4xI4xI").unpack_from
_HEAD3 = (8, 15, 8, 4, 8, 6)  # (length, type) of NFTA_TRACE_NFPROTO, _TYPE, _ID


class TraceEvent:
    """One ``NFT_MSG_TRACE`` message. Absent attributes are None; names are ``str`` (bytes that
    are not UTF-8 kept with ``surrogateescape``); headers are ``bytes`` copies.

    The defaults are class attributes and an event sets only what its message holds (about
    half of them): one is made for every trace event, five or more per traced packet."""

    FIELDS = ("id", "family", "nfproto", "table", "chain", "handle", "type", "verdict", "target", "policy", "iif",
              "iiftype", "oif", "oiftype", "mark", "ll", "nh", "th")  # fmt: skip
    id = 0
    family = 0
    nfproto: int | None = None
    table = ""
    chain = ""
    handle: int | None = None
    type = NFT_TRACETYPE_UNSPEC
    verdict: int | None = None
    target: str | None = None
    policy: int | None = None
    iif: int | None = None
    iiftype: int | None = None
    oif: int | None = None
    oiftype: int | None = None
    mark: int | None = None
    ll: bytes | None = None
    nh: bytes | None = None
    th: bytes | None = None

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.FIELDS if getattr(self, k) is not None)
        return f"TraceEvent({fields})"

    def as_dict(self) -> dict[str, Any]:
        """The attributes that are set (tests, debugging)."""
        return {k: getattr(self, k) for k in self.FIELDS if getattr(self, k) is not None}


class RulesetChange:
    """A message of ``NFNLGRP_NFTABLES``: a table, chain, rule, set... was added or deleted,
    or a transaction ended (``NFT_MSG_NEWGEN``). Only what tells whose ruleset changed is kept."""

    __slots__ = ("msg", "family", "table", "chain")

    def __init__(self, msg: int, family: int, table: str | None, chain: str | None) -> None:
        self.msg = msg
        self.family = family
        self.table = table
        self.chain = chain

    def __repr__(self) -> str:
        return f"RulesetChange(msg={self.msg}, family={self.family}, table={self.table!r}, chain={self.chain!r})"


def _name(buf: bytes, p: int, q: int) -> str:
    n = buf.find(b"\0", p, q)
    return str(buf[p : q if n < 0 else n], "utf-8", "surrogateescape")


# Table and chain names by their attribute bytes (a few names, in every event): one slice and
# one lookup instead of a search, a slice and a decoding.
_NAMES: dict[bytes, str] = {}


def _cached_name(raw: bytes) -> str:
    n = raw.find(b"\0")
    name = str(raw if n < 0 else raw[:n], "utf-8", "surrogateescape")
    if len(_NAMES) >= 1024:
        _NAMES.clear()
    _NAMES[raw] = name
    return name


def parse_trace(buf: bytes, off: int, end: int, fast: bool = True) -> TraceEvent:
    """The trace message at ``buf[off:end]`` (``end`` = off + nlmsg_len). Raises :class:`DecodeError`.

    A trace message without an id, a table or a chain is refused: it cannot be attributed.
    ``fast=False``: every attribute through the loop (what the fast path is tested against).
    """
    if end - off < 20:
        raise DecodeError(f"trace message of {end - off} bytes has no nfgenmsg header")
    ev = TraceEvent()
    ev.family = buf[off + 16]
    have_id = False
    table = chain = None
    a = off + 20
    if fast and end - a >= 24 and _head3(buf, a) == _HEAD3:
        # Every trace message the kernel sends starts with NFPROTO, TYPE and ID (4 bytes
        # each): read with one call; anything else goes through the loop below.
        ev.nfproto, ev.type, ev.id = _vals3(buf, a)
        have_id = True
        a += 24
    while a + 4 <= end:
        al, at = _unpack_nla(buf, a)
        q = a + al
        if al < 4 or q > end:
            raise DecodeError(f"trace attribute type {at & 0x3FFF} at offset {a - off}: bad length {al}")
        at &= 0x3FFF
        p = a + 4
        n = al - 4
        if at == NFTA_TRACE_ID:
            if n < 4:
                raise DecodeError(f"NFTA_TRACE_ID of {n} bytes")
            ev.id = _unpack_u32(buf, p)[0]
            have_id = True
        elif at == NFTA_TRACE_TABLE:
            raw = buf[p:q]
            table = _NAMES.get(raw) or _cached_name(raw)
        elif at == NFTA_TRACE_CHAIN:
            raw = buf[p:q]
            chain = _NAMES.get(raw) or _cached_name(raw)
        elif at == NFTA_TRACE_TYPE:
            if n < 4:
                raise DecodeError(f"NFTA_TRACE_TYPE of {n} bytes")
            ev.type = _unpack_u32(buf, p)[0]
        elif at == NFTA_TRACE_RULE_HANDLE:
            if n < 8:
                raise DecodeError(f"NFTA_TRACE_RULE_HANDLE of {n} bytes")
            ev.handle = _unpack_u64(buf, p)[0]
        elif at == NFTA_TRACE_VERDICT:
            _verdict(buf, p, q, ev)
        elif at == NFTA_TRACE_POLICY:
            if n < 4:
                raise DecodeError(f"NFTA_TRACE_POLICY of {n} bytes")
            ev.policy = _unpack_u32(buf, p)[0]
        elif at == NFTA_TRACE_NETWORK_HEADER:
            ev.nh = buf[p:q]
        elif at == NFTA_TRACE_TRANSPORT_HEADER:
            ev.th = buf[p:q]
        elif at == NFTA_TRACE_LL_HEADER:
            ev.ll = buf[p:q]
        elif at in _U32:
            if n < 4:
                raise DecodeError(f"trace attribute type {at} of {n} bytes")
            v = _unpack_u32(buf, p)[0]
            if at == NFTA_TRACE_IIF:
                ev.iif = v
            elif at == NFTA_TRACE_OIF:
                ev.oif = v
            elif at == NFTA_TRACE_MARK:
                ev.mark = v
            else:
                ev.nfproto = v
        elif at == NFTA_TRACE_IIFTYPE or at == NFTA_TRACE_OIFTYPE:
            if n < 2:
                raise DecodeError(f"trace attribute type {at} of {n} bytes")
            if at == NFTA_TRACE_IIFTYPE:
                ev.iiftype = _unpack_u16(buf, p)[0]
            else:
                ev.oiftype = _unpack_u16(buf, p)[0]
        # Anything else (NFTA_TRACE_PAD, attributes of later kernels) is skipped.
        a += (al + 3) & ~3
    if not have_id or table is None or chain is None:
        raise DecodeError("trace message without " + ", ".join(
            w for w, ok in (("id", have_id), ("table", table is not None), ("chain", chain is not None)) if not ok))
    ev.table = table
    ev.chain = chain
    return ev


_U32 = frozenset({NFTA_TRACE_IIF, NFTA_TRACE_OIF, NFTA_TRACE_MARK, NFTA_TRACE_NFPROTO})


def _verdict(buf: bytes, p: int, q: int, ev: TraceEvent) -> None:
    a = p
    while a + 4 <= q:
        al, at = _unpack_nla(buf, a)
        if al < 4 or a + al > q:
            raise DecodeError(f"verdict attribute type {at & 0x3FFF}: bad length {al}")
        at &= 0x3FFF
        if at == NFTA_VERDICT_CODE:
            if al < 8:
                raise DecodeError(f"NFTA_VERDICT_CODE of {al - 4} bytes")
            ev.verdict = _unpack_i32(buf, a + 4)[0]
        elif at == NFTA_VERDICT_CHAIN:
            ev.target = _name(buf, a + 4, a + al)
        a += (al + 3) & ~3


def _change(buf: bytes, off: int, end: int, msg: int) -> RulesetChange:
    if end - off < 20:
        raise DecodeError(f"nf_tables message of {end - off} bytes has no nfgenmsg header")
    table = chain = None
    tattr: int | None
    cattr: int | None
    if msg in (NFT_MSG_NEWTABLE, NFT_MSG_DELTABLE):
        tattr, cattr = NFTA_TABLE_NAME, None
    elif msg in (NFT_MSG_NEWCHAIN, NFT_MSG_DELCHAIN):
        tattr, cattr = NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME
    elif msg in (NFT_MSG_NEWRULE, NFT_MSG_DELRULE):
        tattr, cattr = NFTA_RULE_TABLE, NFTA_RULE_CHAIN
    else:  # sets, elements, objects, flowtables, generations: the first attribute is the table
        tattr, cattr = (None, None) if msg == NFT_MSG_NEWGEN else (1, None)
    for at, p, q in nl.attrs(buf, off + 20, end):
        if at == tattr:
            table = _name(buf, p, q)
        elif at == cattr:
            chain = _name(buf, p, q)
    return RulesetChange(msg, buf[off + 16], table, chain)


class TraceBatch:
    """What one ``recv()`` buffer held. Problems are counted, never raised."""

    __slots__ = ("events", "changes", "malformed", "problem", "errors", "other")

    def __init__(self) -> None:
        self.events: list[TraceEvent] = []
        self.changes: list[RulesetChange] = []
        self.malformed = 0
        self.problem: str | None = None
        self.errors: list[int] = []
        self.other = 0

    def bad(self, why: str) -> None:
        self.malformed += 1
        if self.problem is None:
            self.problem = why


def parse_buffer(buf: bytes, batch: TraceBatch | None = None) -> TraceBatch:
    """Every trace event and ruleset change in a ``recv()`` buffer. Never raises.

    A message with an impossible length ends the buffer (the framing after it cannot be
    trusted); a bad attribute spoils only its own message. ``batch``: add to this one (the
    datagrams of one read, handled together) instead of a new one.
    """
    if batch is None:
        batch = TraceBatch()
    end = len(buf)
    off = 0
    sub = NFNL_SUBSYS_NFTABLES << 8
    while off + 16 <= end:
        ln, typ = _unpack_hdr2(buf, off)
        e = off + ln
        if ln < 16 or e > end:
            batch.bad(f"nlmsg_len {ln} at offset {off} of a {end}-byte buffer")
            return batch
        try:
            if typ == TRACE_TYPE:
                batch.events.append(parse_trace(buf, off, e))
            elif typ & 0xFF00 == sub:
                batch.changes.append(_change(buf, off, e, typ & 0xFF))
            elif typ == nl.NLMSG_ERROR:
                err, _ = nl.parse_error(buf, off, ln)
                if err:
                    batch.errors.append(err)
            elif typ not in (nl.NLMSG_DONE, nl.NLMSG_NOOP):
                batch.other += 1
        except (ValueError, IndexError, struct.error) as ex:  # DecodeError is a ValueError
            batch.bad(str(ex))
        off += (ln + 3) & ~3
    if off < end and (end - off >= 4 or any(buf[off:end])):
        batch.bad(f"{end - off} stray bytes at offset {off}")
    return batch


# -- verdicts


def verdict_name(code: int | None, target: str | None = None) -> str:
    """How nft writes a verdict: ``accept``, ``drop``, ``jump CHAIN``, ``queue 3``..."""
    if code is None:
        return "none"
    if code < 0:
        word = _NFT_NAMES.get(code, f"verdict {code}")
        return f"{word} {target}" if target and code in (NFT_JUMP, NFT_GOTO) else word
    base = code & 0xFF
    word = _NF_NAMES.get(base, f"verdict {code}")
    if base == NF_QUEUE and code >> 16:
        return f"queue {code >> 16}"
    return word


def is_final(code: int | None) -> bool:
    """Whether a verdict ends the packet's way through netfilter (anything but accept, which
    only ends a base chain, and nf_tables' own continue, jump, goto, return)."""
    return code is not None and code >= 0 and code & 0xFF != NF_ACCEPT


# -- the packet as BASE reads it


def ethertype(nfproto: int | None, ll: bytes | None, nh: bytes | None) -> int | None:
    """The layer 3 protocol as an ethertype (``oob.protocol``): from the packet's family, else
    from a 14-byte Ethernet header, else from the IP version nibble."""
    if nfproto == NFPROTO_IPV4:
        return 0x0800
    if nfproto == NFPROTO_IPV6:
        return 0x86DD
    if ll is not None and len(ll) >= 14:
        return int.from_bytes(ll[12:14], "big")
    if nh:
        v = nh[0] >> 4
        return 0x0800 if v == 4 else 0x86DD if v == 6 else None
    return None


# IPv6 extension headers: the transport header does not follow the 40-byte fixed header.
_IPV6_EXT = frozenset({0, 43, 44, 50, 51, 60, 135, 139, 140, 253, 254})


def packet_bytes(nh: bytes | None, th: bytes | None) -> bytes | None:
    """``raw.pkt``: the network header followed by the transport header, when the two join up.

    The kernel copies at most 40 bytes of network header (IPv4 options beyond 20 bytes and
    IPv6 extension headers may be cut) and 20 of transport header (TCP options cut; for
    shorter headers, the first payload bytes, which are left out here: UDP and ICMP keep
    their 8 header bytes, so no payload ever reaches a record). The transport header is
    appended only where it starts right after the network header's copy: IPv4 whose whole
    header was copied, IPv6 without extension headers. Otherwise ``raw.pkt`` is the network
    header alone, and BASE decodes the IP keys only.
    """
    if nh is None:
        return None
    if th is None or not nh:
        return nh
    v = nh[0] >> 4
    if v == 4:
        if (nh[0] & 0x0F) * 4 == len(nh):
            return nh + th[: _L4_HEADER.get(nh[9], len(th))]
        return nh
    if v == 6 and len(nh) == 40 and nh[6] not in _IPV6_EXT:
        return nh + th[: _L4_HEADER.get(nh[6], len(th))]
    return nh


# The kernel copies 20 bytes from the transport header on, payload included where the header is
# shorter: keep only the header (TCP's fixed part, UDP's, ICMP's first 8 bytes, SCTP's common header).
_L4_HEADER = {6: 20, 17: 8, 136: 8, 1: 8, 58: 8, 132: 12}
