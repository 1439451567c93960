"""A record as a row of the audit table (audit/schema.py), compiled per stack like the ECS
document (audit/template.py): the same reading of the keys (time source, verdict, rule,
NAT from conntrack's reply tuple), values as every database takes them.

Addresses are 16 bytes (IPv4 as ``::ffff:a.b.c.d``); times are integer microseconds; texts
go through ``db/render.fix_string`` (cut at NUL, undecodable bytes as ``\\xNN``), so what
is stored is exactly what the tamper-evidence chain covered.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pyulogd.audit.template import compile_function
from pyulogd.audit.values import epoch_us
from pyulogd.codec.communityid import CommunityIdCache
from pyulogd.db.render import fix_string

V4_PREFIX = b"\x00" * 10 + b"\xff\xff"


def ip16(packed: Any) -> bytes:
    """An address as the table stores it (16 bytes)."""
    b = bytes(packed)
    return V4_PREFIX + b if len(b) == 4 else b


TEMPLATE = """
def build(rec, received):
    ts = None
    ts_source = "received"
    kind = "packet"
    action = rule = prefix = None
    family = proto = sa = da = sport = dport = itype = icode = None
    nsa = nda = nsport = ndport = None
    in_if = out_if = netns = router = network = port = project = role = direction = ha = None
    nbytes = packets = start = end = ct_id = cid = None
    suppressed = limit_key = loss_count = loss_reason = None
    nft_table = nft_chain = nft_handle = None
#if oob.time.sec
    sec = R[oob.time.sec]
    if sec is not None:
        ts = sec * 1000000 + (R[oob.time.usec] or 0)
        ts_source = OOB_SOURCE
#endif
#if ct.event
    cte = R[ct.event]
    if cte is not None:
        kind = CT_KINDS.get(cte, "flow_update")
        ct_id = R[ct.id]
#if flow.start.sec
        s0 = R[flow.start.sec]
        if s0 is not None:
            start = s0 * 1000000 + (R[flow.start.usec] or 0)
#endif
#if flow.end.sec
        s1 = R[flow.end.sec]
        if s1 is not None:
            end = s1 * 1000000 + (R[flow.end.usec] or 0)
            if ts is None:
                ts = end
                ts_source = "conntrack"
#endif
        if ts is None and start is not None:
            ts = start
            ts_source = "conntrack"
#endif
    if ts is None:
        ts = received
#if ip.saddr
    a = R[ip.saddr]
    if a is not None:
        sa = a
        da = R[ip.daddr]
        proto = R[ip.protocol]
#if ip6.nexthdr
        if proto is None:
            proto = R[ip6.nexthdr]
#endif
#endif
#if orig.ip.saddr
    if sa is None:
        a = R[orig.ip.saddr]
        if a is not None:
            sa = a
            da = R[orig.ip.daddr]
            proto = R[orig.ip.protocol]
#endif
    if sa is not None and da is not None:
        family = 4 if len(sa) == 4 else 6
        if proto == 6:
#if tcp.sport
            sport = R[tcp.sport]
            dport = R[tcp.dport]
#endif
            pass
        elif proto == 17:
#if udp.sport
            sport = R[udp.sport]
            dport = R[udp.dport]
#endif
            pass
        elif proto == 132:
#if sctp.sport
            sport = R[sctp.sport]
            dport = R[sctp.dport]
#endif
            pass
        elif proto == 1:
#if icmp.type
            itype = R[icmp.type]
            icode = R[icmp.code]
#endif
            pass
        elif proto == 58:
#if icmpv6.type
            itype = R[icmpv6.type]
            icode = R[icmpv6.code]
#endif
            pass
#if orig.l4.sport
        if sport is None and proto != 1 and proto != 58:
            sport = R[orig.l4.sport]
            dport = R[orig.l4.dport]
#endif
        if proto is not None:
            if itype is not None and icode is not None:
                cid = CID(proto, sa, da, itype, icode)
            elif sport is not None and dport is not None:
                cid = CID(proto, sa, da, sport, dport)
            else:
                cid = CID(proto, sa, da, None, None)
#if reply.ip.saddr
        ra = R[reply.ip.saddr]
        if ra is not None:
            rb = R[reply.ip.daddr]
            if ra != da:
                nda = IP16(ra)
                ndport = R[reply.l4.sport]
            if rb is not None and rb != sa:
                nsa = IP16(rb)
                nsport = R[reply.l4.dport]
#endif
        sa = IP16(sa)
        da = IP16(da)
#if orig.raw.pktcount
    v = R[orig.raw.pktcount]
    if v is not None:
        packets = v + (R[reply.raw.pktcount] or 0)
        nbytes = (R[orig.raw.pktlen] or 0) + (R[reply.raw.pktlen] or 0)
#endif
#if raw.pktlen
    if nbytes is None and sa is not None:
        nbytes = R[raw.pktlen]
        if nbytes is not None:
            packets = 1
#endif
#if oob.in
    v = R[oob.in]
    if v:
        in_if = TXT(v)
#endif
#if oob.out
    v = R[oob.out]
    if v:
        out_if = TXT(v)
#endif
#if oob.prefix
    v = R[oob.prefix]
    if v is not None:
        prefix = TXT(v)
        rule = prefix.rstrip() or None
#endif
#if audit.rule
    v = R[audit.rule]
    if v is not None:
        rule = TXT(v)
#endif
#if audit.action
    v = R[audit.action]
    if v is not None:
        action = TXT(str(v))
#endif
#if oob.netns
    v = R[oob.netns]
    if v is not None:
        netns = TXT(v)
#endif
#if neutron.router_id
    v = R[neutron.router_id]
    if v is not None:
        router = TXT(v)
#endif
#if neutron.network_id
    v = R[neutron.network_id]
    if v is not None:
        network = TXT(v)
#endif
#if neutron.port_id
    v = R[neutron.port_id]
    if v is not None:
        port = TXT(v)
#endif
#if neutron.project_id
    v = R[neutron.project_id]
    if v is not None:
        project = TXT(v)
#endif
#if neutron.device_role
    v = R[neutron.device_role]
    if v is not None:
        role = TXT(v)
#endif
#if neutron.direction
    v = R[neutron.direction]
    if v is not None:
        direction = TXT(v)
#endif
#if neutron.ha_state
    v = R[neutron.ha_state]
    if v is not None:
        ha = TXT(v)
#endif
#if nft.table
    v = R[nft.table]
    if v is not None:
        nft_table = TXT(v)
#endif
#if nft.chain
    v = R[nft.chain]
    if v is not None:
        nft_chain = TXT(v)
#endif
#if nft.handle
    nft_handle = R[nft.handle]
#endif
#if audit.suppressed
    v = R[audit.suppressed]
    if v is not None:
        kind = "summary"
        suppressed = v
        start = TIME(R[audit.first])
        end = TIME(R[audit.last])
        v = R[audit.limit_key]
        if v is not None:
            limit_key = TXT(str(v))
#endif
#if audit.loss.count
    v = R[audit.loss.count]
    if v is not None:
        kind = "loss"
        loss_count = v
        v = R[audit.loss.reason]
        if v is not None:
            loss_reason = TXT(str(v))
        start = TIME(R[audit.loss.first])
        end = TIME(R[audit.loss.last])
#endif
#if sum.name
    v = R[sum.name]
    if v is not None:
        kind = "counter"
        rule = TXT(v)
        packets = R[sum.pkts]
        nbytes = R[sum.bytes]
#endif
    return (ts, ts_source, received, HOST, kind, action, rule, prefix, family, proto, sa, da, sport, dport,
            itype, icode, nsa, nda, nsport, ndport, in_if, out_if, netns, router, network, port, project, role,
            direction, ha, nbytes, packets, start, end, ct_id, cid, suppressed, limit_key, loss_count,
            loss_reason, nft_table, nft_chain, nft_handle)
"""


def _text(v: str) -> str:
    return v if v.isascii() and "\x00" not in v else fix_string(v)


def compile_rows(
    slots: Mapping[str, int], hostname: str, *, oob_time_is_kernel: bool = True, seed: int = 0
) -> Callable[[list[Any], int], tuple[Any, ...]]:
    """``build(rec, received_us) -> row`` (schema.CHAINED order) for a stack's slots."""
    namespace: dict[str, Any] = {
        "OOB_SOURCE": "kernel" if oob_time_is_kernel else "received",
        "CT_KINDS": {1: "flow_start", 2: "flow_update", 4: "flow_end"},
        "CID": CommunityIdCache(seed=seed).get,
        "IP16": ip16,
        "TXT": _text,
        "TIME": epoch_us,
        "HOST": _text(hostname),
    }
    build: Callable[[list[Any], int], tuple[Any, ...]] = compile_function(
        TEMPLATE, "build", slots, namespace, label="<audit row builder>"
    )
    return build
