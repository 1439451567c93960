"""nf_tables trace events and ruleset notifications as the kernel sends them (tests only).

Attribute order and sizes follow ``nf_tables_trace.c`` (kernel 6.x): nfproto, type, id, chain,
table, rule handle (64-bit, padded), verdict (nested), interfaces, mark, headers.
"""

from __future__ import annotations

import struct

from pyulogd.codec import netlink as nl
from pyulogd.codec import nftrace as nt


def _s(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape") + b"\0"


def trace_msg(
    tid: int,
    table: str,
    chain: str,
    *,
    family: int = nt.NFPROTO_INET,
    nfproto: int | None = nt.NFPROTO_IPV4,
    type: int = nt.NFT_TRACETYPE_RULE,
    handle: int | None = None,
    verdict: int | None = None,
    target: str | None = None,
    policy: int | None = None,
    iif: int | None = None,
    iiftype: int | None = None,
    oif: int | None = None,
    oiftype: int | None = None,
    mark: int | None = None,
    ll: bytes | None = None,
    nh: bytes | None = None,
    th: bytes | None = None,
    seq: int = 0,
) -> bytes:
    attrs: list[bytes] = []
    if nfproto is not None:
        attrs.append(nl.nla(nt.NFTA_TRACE_NFPROTO, struct.pack("!I", nfproto)))
    attrs.append(nl.nla(nt.NFTA_TRACE_TYPE, struct.pack("!I", type)))
    attrs.append(nl.nla(nt.NFTA_TRACE_ID, struct.pack("!I", tid)))
    attrs.append(nl.nla(nt.NFTA_TRACE_CHAIN, _s(chain)))
    attrs.append(nl.nla(nt.NFTA_TRACE_TABLE, _s(table)))
    if handle is not None:
        attrs.append(nl.nla(nt.NFTA_TRACE_PAD, b""))
        attrs.append(nl.nla(nt.NFTA_TRACE_RULE_HANDLE, struct.pack("!Q", handle)))
    if verdict is not None:
        inner = nl.nla(nt.NFTA_VERDICT_CODE, struct.pack("!i", verdict))
        if target is not None:
            inner += nl.nla(nt.NFTA_VERDICT_CHAIN, _s(target))
        attrs.append(nl.nla(nt.NFTA_TRACE_VERDICT | nl.NLA_F_NESTED, inner))
    if policy is not None:
        attrs.append(nl.nla(nt.NFTA_TRACE_POLICY, struct.pack("!I", policy)))
    for at, v in ((nt.NFTA_TRACE_IIF, iif), (nt.NFTA_TRACE_OIF, oif), (nt.NFTA_TRACE_MARK, mark)):
        if v is not None:
            attrs.append(nl.nla(at, struct.pack("!I", v)))
    for at, v in ((nt.NFTA_TRACE_IIFTYPE, iiftype), (nt.NFTA_TRACE_OIFTYPE, oiftype)):
        if v is not None:
            attrs.append(nl.nla(at, struct.pack("!H", v)))
    for at, b in ((nt.NFTA_TRACE_NETWORK_HEADER, nh), (nt.NFTA_TRACE_TRANSPORT_HEADER, th),
                  (nt.NFTA_TRACE_LL_HEADER, ll)):  # fmt: skip
        if b is not None:
            attrs.append(nl.nla(at, b))
    return nl.nfnl_msg(nt.NFNL_SUBSYS_NFTABLES, nt.NFT_MSG_TRACE, family, 0, attrs, seq, flags=0)


def change_msg(msg: int, table: str | None, chain: str | None = None, family: int = nt.NFPROTO_INET) -> bytes:
    """A ruleset notification (NFNLGRP_NFTABLES): NEWTABLE, DELRULE, NEWGEN..."""
    attrs: list[bytes] = []
    if msg in (nt.NFT_MSG_NEWTABLE, nt.NFT_MSG_DELTABLE):
        if table is not None:
            attrs.append(nl.nla(nt.NFTA_TABLE_NAME, _s(table)))
    elif msg != nt.NFT_MSG_NEWGEN:
        if table is not None:
            attrs.append(nl.nla(1, _s(table)))
        if chain is not None:
            attrs.append(nl.nla(nt.NFTA_CHAIN_NAME if msg in (nt.NFT_MSG_NEWCHAIN, nt.NFT_MSG_DELCHAIN)
                                else nt.NFTA_RULE_CHAIN, _s(chain)))  # fmt: skip
    return nl.nfnl_msg(nt.NFNL_SUBSYS_NFTABLES, msg, family, 0, attrs, 0, flags=0)


# Headers as the kernel copies them: an IPv4/UDP packet 10.0.0.1:1234 -> 10.0.0.2:53 and
# an IPv4/TCP SYN 10.0.0.1:40000 -> 10.0.0.2:22 (their first 20 transport bytes).
IP4_UDP = bytes.fromhex("4500002100014000401100000a0000010a000002")
UDP_TH = bytes.fromhex("04d20035000d0000") + b"hello-payload"[:12]
IP4_TCP = bytes.fromhex("4500003c00024000400600000a0000010a000002")
TCP_TH = bytes.fromhex("9c4000160000000100000000a002faf00000000002")[:20]
ETH_LL = bytes.fromhex("02000a4d000202000a4d00010800")
