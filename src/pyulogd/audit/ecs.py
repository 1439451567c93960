"""A record as an Elastic Common Schema document (ECS 9.4.0), rendered per stack.

The mapping (docs/audit.md has the full table, with the reasons):

* ``@timestamp``: the kernel's time of the packet (NFLOG ``oob.time.*``), the flow's time
  for conntrack records (``flow.end`` of a DESTROY, else ``flow.start``: kernel timestamps
  when ``nf_conntrack_timestamp=1``, else when pyulogd read the event), else the time the
  record was received; ``pyulogd.timestamp_source`` says which (``kernel``, ``conntrack``,
  ``received``), and ``event.created`` is always the reception time.
* ``event.*``: ``kind`` ``event`` (``metric`` for NFACCT counters, ``pipeline_error`` for
  loss records), ``category`` ``[network]``, ``type`` ``connection`` (+ ``start``/``end``
  for conntrack NEW/DESTROY) + ``allowed``/``denied`` from ``audit.action``; ``action`` the
  verdict in lower case (``accept``, ``drop``, ``reject``, ``other``), else what the record
  is (``logged``, ``connection-started``, ...); ``outcome`` ``success`` for every verdict the
  firewall carried out, ACCEPT and DROP alike, as ECS's categorization guide does (Filebeat's
  iptables module says ``failure`` for drops; ECS keeps the verdict in ``event.type``).
* ``source``/``destination``: ip, port, mac, bytes/packets (conntrack's orig/reply
  counters), ``nat.ip``/``nat.port`` from the reply tuple when NAT changed it;
  ``network.*``: type, transport, iana_number, direction, bytes, packets, community_id.
* ``observer``: hostname, type ``firewall``, vendor ``Linux``, product ``netfilter``,
  ``ingress``/``egress.interface.name`` (IFINDEX's ``oob.in``/``oob.out``).
* ``rule.name`` from ``audit.rule``, else the NFLOG prefix (trailing blanks cut);
  ``rule.ruleset``/``rule.id`` from NFTRACE's table, chain and handle.
* ``cloud.provider`` ``openstack``, ``cloud.account.id`` and ``cloud.project.id`` from
  ``neutron.project_id``.
* Everything ECS has no field for sits under the custom namespace ``pyulogd.*``: TCP flags,
  ICMP type/code, the namespace and every Neutron key, NFTRACE's keys, conntrack id/event,
  rate-limit summaries and loss records, the tamper-evidence chain.

Hot path: ``compile_ecs`` expands :data:`TEMPLATE` (audit/template.py) for the keys the stack
binds, once, so a record pays for the keys its stack has and nothing else. The line is
written from precomputed text pieces, as the JSON output does: building a ``dict`` and
encoding it with orjson cost about twice as much per record (measured: 5.7 + 1.6 µs against
about 3 µs), which alone would have put ECS below 0.8x of JSON's rate. Caches: JSON literals
of outside strings, address text, MAC headers, the second of each timestamp, Community IDs
of recent tuples.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from pyulogd.audit.template import compile_function
from pyulogd.audit.values import (
    CT_EVENTS,
    TRANSPORTS,
    AddressBytes,
    AddressText,
    IsoTime,
    JsonText,
    MacMembers,
    PrefixMembers,
    stamper,
)
from pyulogd.codec.communityid import CommunityIdCache, community_id

ECS_VERSION = "9.4.0"
# The custom namespace for what ECS has no field for (ECS's guidance: a name of our own).
CUSTOM = "pyulogd"

# audit.action -> (event.action, event.type verdict or None, event.outcome)
VERDICTS: dict[str, tuple[str, str | None, str]] = {
    "ACCEPT": ("accept", "allowed", "success"),
    "DROP": ("drop", "denied", "success"),
    "REJECT": ("reject", "denied", "success"),
    "OTHER": ("other", None, "unknown"),
}
# ct.event -> (event.type, event.action when there is no verdict)
CT_TYPES: dict[int, tuple[list[str], str]] = {
    1: (["connection", "start"], "connection-started"),
    2: (["connection", "info"], "connection-updated"),
    4: (["connection", "end"], "connection-ended"),
}
TCP_FLAGS = (("tcp.fin", "FIN"), ("tcp.syn", "SYN"), ("tcp.rst", "RST"), ("tcp.psh", "PSH"),
             ("tcp.ack", "ACK"), ("tcp.urg", "URG"), ("tcp.res2", "ECE"), ("tcp.res1", "CWR"))  # fmt: skip

# Every key the renderer reads (docs, and tests that check the mapping is complete).
KEYS = (
    "oob.time.sec", "oob.time.usec", "oob.family", "oob.protocol", "oob.prefix", "oob.hook", "oob.mark",
    "oob.in", "oob.out", "oob.netns", "raw.pktlen", "raw.mac", "raw.type",
    "ip.saddr", "ip.daddr", "ip.saddr.str", "ip.daddr.str", "ip.protocol", "ip6.nexthdr",
    "tcp.sport", "tcp.dport", "tcp.window", "udp.sport", "udp.dport", "sctp.sport", "sctp.dport",
    "icmp.type", "icmp.code", "icmpv6.type", "icmpv6.code", *(k for k, _ in TCP_FLAGS),
    "orig.ip.saddr", "orig.ip.daddr", "orig.ip.saddr.str", "orig.ip.daddr.str", "orig.ip.protocol",
    "orig.l4.sport", "orig.l4.dport", "orig.raw.pktlen", "orig.raw.pktcount",
    "reply.ip.saddr", "reply.ip.daddr", "reply.l4.sport", "reply.l4.dport", "reply.raw.pktlen",
    "reply.raw.pktcount", "ct.id", "ct.event", "ct.mark", "flow.start.sec", "flow.start.usec",
    "flow.end.sec", "flow.end.usec", "sum.name", "sum.pkts", "sum.bytes",
    "audit.action", "audit.rule", "nft.family", "nft.table", "nft.chain", "nft.handle", "nft.rule", "nft.verdict",
    "nft.policy", "nft.trace_id",
    "neutron.router_id", "neutron.network_id", "neutron.port_id", "neutron.project_id",
    "neutron.device_role", "neutron.direction", "neutron.ha_state",
    "audit.suppressed", "audit.first", "audit.last", "audit.limit_key",
    "audit.loss.count", "audit.loss.reason", "audit.loss.first", "audit.loss.last",
)  # fmt: skip

# The document template (see audit/template.py for the directives). Variables: ``rec`` the
# record, ``now`` the reception time as ISO text (the output makes it once per batch). The
# line is written from text pieces, as the JSON output does: a dict encoded by orjson cost
# twice as much.
# Outside strings go through J (JSON string literal, cached), numbers through N (a table
# below 65536) or str; addresses, MACs and times are ASCII we make ourselves.
TEMPLATE = """
def render(rec, now):
    x = ""
    ev = ""
    types = None
    action = None
    outcome = ""
    kind = '"event"'
    ts = None
    tsrc = TS_RECEIVED
    rule = None
    net = None
    srcdst = ""
#if oob.time.sec
    sec = R[oob.time.sec]
    if sec is not None:
        if sec != SEC[0]:
            SEC_NEW(sec)
        u = R[oob.time.usec]
        ts = SEC[1] + ("000000Z" if u is None or u >= 1000000 else str(u + 1000000)[1:] + "Z")
        tsrc = TS_OOB
#endif
#if ct.event
    cte = R[ct.event]
    if cte is not None:
        types, action = CT_TYPES.get(cte, CT_OTHER)
        ct = CT_WORDS.get(cte) or ('"event":' + str(cte))
#if ct.id
        v = R[ct.id]
        if v is not None:
            ct += ',"id":' + str(v)
#endif
#if ct.mark
        v = R[ct.mark]
        if v:
            ct += ',"mark":' + str(v)
#endif
        x += ',"ct":{' + ct + '}'
#if flow.start.sec
        s0 = R[flow.start.sec]
        if s0 is not None:
            t0 = STAMP0(s0, R[flow.start.usec])
            ev += ',"start":"' + t0 + '"'
#endif
#if flow.end.sec
        s1 = R[flow.end.sec]
        if s1 is not None:
            t1 = STAMP1(s1, R[flow.end.usec])
            ev += ',"end":"' + t1 + '"'
            if ts is None:
                ts = t1
                tsrc = TS_CT
#if flow.start.sec
            if s0 is not None:
                dur = ((s1 - s0) * 1000000 + ((R[flow.end.usec] or 0) - (R[flow.start.usec] or 0))) * 1000
                ev += ',"duration":' + str(dur)
#endif
#endif
#if flow.start.sec
        if ts is None and s0 is not None:
            ts = t0
            tsrc = TS_CT
#endif
#endif
    if ts is None:
        ts = now
    else:
        ev += ',"created":"' + now + '"'
    fam = R[oob.family]
#ifany ip.saddr orig.ip.saddr ip.saddr.str orig.ip.saddr.str
    sa = da = None
#if ip.saddr
    sa = R[ip.saddr]
    if sa is not None:
        da = R[ip.daddr]
        proto = R[ip.protocol]
#if ip6.nexthdr
        if proto is None:
            # an IPv6 fragment after the first: BASE leaves ip.protocol out
            proto = R[ip6.nexthdr]
#endif
#endif
#if orig.ip.saddr
    if sa is None:
        sa = R[orig.ip.saddr]
        if sa is not None:
            da = R[orig.ip.daddr]
            proto = R[orig.ip.protocol]
#endif
#ifany ip.saddr.str orig.ip.saddr.str
    if sa is None:
        st = R[ip.saddr.str]
        if st is None:
            st = R[orig.ip.saddr.str]
            dt = R[orig.ip.daddr.str]
            proto = R[orig.ip.protocol]
        else:
            dt = R[ip.daddr.str]
            proto = R[ip.protocol]
        if st is not None and dt is not None:
            sa = ABYTES(st)
            da = ABYTES(dt)
#endif
#ifflag FAST
    if sa is not None and da is not None:
        sp = dp = None
        if proto is not None:
            if proto == 6:
#if tcp.sport
                sp = R[tcp.sport]
                if sp is not None:
                    dp = R[tcp.dport]
#ifany tcp.syn tcp.ack tcp.fin tcp.rst
                    fl = ",".join([name for slot, name in FLAG_SLOTS if rec[slot]])
#if tcp.window
                    w = R[tcp.window]
                    if w is None:
                        x += ',"tcp":{"flags":[' + fl + ']}'
                    else:
                        x += ',"tcp":{"flags":[' + fl + '],"window":' + N[w] + '}'
#else
                    x += ',"tcp":{"flags":[' + fl + ']}'
#endif
#endif
#endif
#if orig.l4.sport
                if sp is None:
                    sp = R[orig.l4.sport]
                    dp = R[orig.l4.dport]
#endif
                pass
            elif proto == 17:
#if udp.sport
                sp = R[udp.sport]
                dp = R[udp.dport]
#endif
#if orig.l4.sport
                if sp is None:
                    sp = R[orig.l4.sport]
                    dp = R[orig.l4.dport]
#endif
                pass
            elif proto == 1:
#if icmp.type
                sp = R[icmp.type]
                if sp is not None:
                    dp = R[icmp.code]
#endif
                pass
            elif proto == 58:
#if icmpv6.type
                sp = R[icmpv6.type]
                if sp is not None:
                    dp = R[icmpv6.code]
#endif
                pass
            elif proto == 132:
#if sctp.sport
                sp = R[sctp.sport]
                dp = R[sctp.dport]
#endif
#if orig.l4.sport
                if sp is None:
                    sp = R[orig.l4.sport]
                    dp = R[orig.l4.dport]
#endif
                pass
#if orig.l4.sport
            elif sp is None:
                sp = R[orig.l4.sport]
                dp = R[orig.l4.dport]
#endif
        key = (proto, sa, da, sp, dp)
        fl = FLOWS.get(key)
        if fl is None:
            # A new flow: its pieces made here (no call: a scan is all new flows) and kept.
            sip = None
    #if ip.saddr.str
            sip = R[ip.saddr.str]
            if sip is not None:
                dip = R[ip.daddr.str]
    #endif
    #if orig.ip.saddr.str
            if sip is None:
                sip = R[orig.ip.saddr.str]
                if sip is not None:
                    dip = R[orig.ip.daddr.str]
    #endif
            if sip is None:
                sip = ATEXT(sa)
                dip = ATEXT(da)
            s = '"ip":"' + sip + '"'
            t = '"ip":"' + dip + '"'
            related = '"' + sip + '"' if sip == dip else '"' + sip + '","' + dip + '"'
            net = NET4 if len(sa) == 4 else NET6
            v = ""
            if proto is not None:
                net += PROTO_TEXT[proto]
                if sp is not None and dp is not None:
                    if proto == 1 or proto == 58:
                        v = ',"icmp":{"type":' + N[sp] + ',"code":' + N[dp] + '}'
                    else:
                        s += ',"port":' + N[sp]
                        t += ',"port":' + N[dp]
                    net += ',"community_id":"' + CID1(proto, sa, da, sp, dp, SEED) + '"'
                else:
                    net += ',"community_id":"' + CID1(proto, sa, da, None, None, SEED) + '"'
            if len(FLOWS) >= FLOWS_MAX:
                FLOWS.clear()
            FLOWS[key] = (s, t, related, net, v)
        else:
            s, t, related, net, v = fl
        if v:
            x += v
#else
    if sa is not None and da is not None:
        sip = None
#if ip.saddr.str
        sip = R[ip.saddr.str]
        if sip is not None:
            dip = R[ip.daddr.str]
#endif
#if orig.ip.saddr.str
        if sip is None:
            sip = R[orig.ip.saddr.str]
            if sip is not None:
                dip = R[orig.ip.daddr.str]
#endif
        if sip is None:
            sip = ATEXT(sa)
            dip = ATEXT(da)
        s = '"ip":"' + sip + '"'
        t = '"ip":"' + dip + '"'
        related = '"' + sip + '"' if sip == dip else '"' + sip + '","' + dip + '"'
        net = NET4 if len(sa) == 4 else NET6
        sp = dp = None
        if proto is not None:
            net += PROTO_TEXT[proto]
            if proto == 6:
#if tcp.sport
                sp = R[tcp.sport]
                if sp is not None:
                    dp = R[tcp.dport]
#ifany tcp.syn tcp.ack tcp.fin tcp.rst
                    fl = ",".join([name for slot, name in FLAG_SLOTS if rec[slot]])
#if tcp.window
                    w = R[tcp.window]
                    if w is None:
                        x += ',"tcp":{"flags":[' + fl + ']}'
                    else:
                        x += ',"tcp":{"flags":[' + fl + '],"window":' + N[w] + '}'
#else
                    x += ',"tcp":{"flags":[' + fl + ']}'
#endif
#endif
#endif
#if orig.l4.sport
                if sp is None:
                    sp = R[orig.l4.sport]
                    dp = R[orig.l4.dport]
#endif
                pass
            elif proto == 17:
#if udp.sport
                sp = R[udp.sport]
                dp = R[udp.dport]
#endif
#if orig.l4.sport
                if sp is None:
                    sp = R[orig.l4.sport]
                    dp = R[orig.l4.dport]
#endif
                pass
            elif proto == 1:
#if icmp.type
                sp = R[icmp.type]
                if sp is not None:
                    dp = R[icmp.code]
#endif
                pass
            elif proto == 58:
#if icmpv6.type
                sp = R[icmpv6.type]
                if sp is not None:
                    dp = R[icmpv6.code]
#endif
                pass
            elif proto == 132:
#if sctp.sport
                sp = R[sctp.sport]
                dp = R[sctp.dport]
#endif
#if orig.l4.sport
                if sp is None:
                    sp = R[orig.l4.sport]
                    dp = R[orig.l4.dport]
#endif
                pass
#if orig.l4.sport
            elif sp is None:
                sp = R[orig.l4.sport]
                dp = R[orig.l4.dport]
#endif
            if sp is not None and dp is not None:
                if proto == 1 or proto == 58:
                    x += ',"icmp":{"type":' + N[sp] + ',"code":' + N[dp] + '}'
                else:
                    s += ',"port":' + N[sp]
                    t += ',"port":' + N[dp]
                v = CIDS.get((proto, sa, da, sp, dp)) or CID(proto, sa, da, sp, dp)
                net += ',"community_id":"' + v + '"'
            else:
                net += ',"community_id":"' + CID(proto, sa, da, None, None) + '"'
#endif
#if reply.ip.saddr
        ra = R[reply.ip.saddr]
        if ra is not None:
            rb = R[reply.ip.daddr]
            if ra != da:
                v = ATEXT(ra)
                related += ',"' + v + '"'
#if reply.l4.sport
                w = R[reply.l4.sport]
                if w is not None and dp is not None and proto != 1 and proto != 58:
                    t += ',"nat":{"ip":"' + v + '","port":' + N[w] + '}'
                else:
                    t += ',"nat":{"ip":"' + v + '"}'
#else
                t += ',"nat":{"ip":"' + v + '"}'
#endif
            if rb is not None and rb != sa:
                v = ATEXT(rb)
                related += ',"' + v + '"'
#if reply.l4.dport
                w = R[reply.l4.dport]
                if w is not None and sp is not None and proto != 1 and proto != 58:
                    s += ',"nat":{"ip":"' + v + '","port":' + N[w] + '}'
                else:
                    s += ',"nat":{"ip":"' + v + '"}'
#else
                s += ',"nat":{"ip":"' + v + '"}'
#endif
#endif
#if orig.raw.pktcount
        v = R[orig.raw.pktcount]
        if v is not None:
            vb = R[orig.raw.pktlen] or 0
            s += ',"bytes":' + str(vb) + ',"packets":' + str(v)
            w = R[reply.raw.pktcount]
            if w is not None:
                wb = R[reply.raw.pktlen] or 0
                t += ',"bytes":' + str(wb) + ',"packets":' + str(w)
                net += ',"bytes":' + str(vb + wb) + ',"packets":' + str(v + w)
            else:
                net += ',"bytes":' + str(vb) + ',"packets":' + str(v)
#if raw.pktlen
        else:
            v = R[raw.pktlen]
            if v is not None:
                net += ',"bytes":' + str(v) + ',"packets":1'
#endif
#else
#if raw.pktlen
        v = R[raw.pktlen]
        if v is not None:
#ifflag FAST
            net += ONE.get(v) or ONE_MISS(v)
#else
            net += ',"bytes":' + str(v) + ',"packets":1'
#endif
#endif
#endif
#if raw.mac
        v = R[raw.mac]
        if v is not None and R[raw.type] == 1:
            v = MACS.get(v) or MAC_MISS(v)
            if v is not None:
                s += v[0]
                t += v[1]
#endif
        srcdst = ',"source":{' + s + '},"destination":{' + t + '},"related":{"ip":[' + related + ']}'
        if types is None:
            types = '"connection"'
    elif fam is not None:
        net = FAMILY_NET.get(fam) or '"type":"unknown"'
#else
    if fam is not None:
        net = FAMILY_NET.get(fam) or '"type":"unknown"'
#endif
#if oob.hook
    hook = R[oob.hook]
    if hook is not None:
        x += ',"hook":' + N[hook]
        if net is not None and (fam == 2 or fam == 10):
            v = HOOK_DIRECTIONS.get(hook)
            if v is not None:
                net += v
#endif
#ifany oob.in oob.out
    v = R[oob.in]
    w = R[oob.out]
#ifflag FAST
    obs = OBSES.get((v, w)) or OBS_MISS(v, w)
#else
    obs = OBS
    if v:
        obs += ',"ingress":{"interface":{"name":' + (JD.get(v) or J(v)) + '}}'
    if w:
        obs += ',"egress":{"interface":{"name":' + (JD.get(w) or J(w)) + '}}'
#endif
#else
    obs = OBS
#endif
#if oob.mark
    v = R[oob.mark]
    if v:
        x += ',"mark":' + str(v)
#endif
#if oob.prefix
    v = R[oob.prefix]
    if v is not None:
        v = PREFIXES.get(v) or PREFIX(v)
        x += v[0]
        rule = v[1]
#endif
#if audit.rule
    v = R[audit.rule]
    if v is not None:
        rule = '"name":' + (JD.get(v) or J(v))
#endif
#ifany nft.*
    nft = []
    rs = []
#if nft.family
    v = R[nft.family]
    if v is not None:
        nft.append('"family":' + J(str(v)))
        rs.append(str(v))
#endif
#if nft.table
    v = R[nft.table]
    if v is not None:
        nft.append('"table":' + J(v))
        rs.append(v)
#endif
#if nft.chain
    v = R[nft.chain]
    if v is not None:
        nft.append('"chain":' + J(v))
        rs.append(v)
#endif
#if nft.handle
    v = R[nft.handle]
    if v is not None:
        nft.append('"handle":' + str(v))
        rule = (rule + "," if rule else "") + '"id":"' + str(v) + '"'
#endif
#if nft.rule
    v = R[nft.rule]
    if v is not None:
        nft.append('"rule":' + J(v))
#endif
#if nft.verdict
    v = R[nft.verdict]
    if v is not None:
        nft.append('"verdict":' + J(v))
#endif
#if nft.policy
    v = R[nft.policy]
    if v is not None:
        nft.append('"policy":' + ("true" if v else "false"))
#endif
#if nft.trace_id
    v = R[nft.trace_id]
    if v is not None:
        nft.append('"trace_id":' + str(v))
#endif
    if nft:
        x += ',"nft":{' + ",".join(nft) + '}'
        if rs:
            rule = (rule + "," if rule else "") + '"ruleset":' + J(" ".join(rs))
#endif
#if audit.action
    v = R[audit.action]
    if v is not None:
        verdict = VERDICTS.get(v)
        if verdict is None:
            action = J(str(v).lower())
            outcome = OUTCOME_UNKNOWN
        else:
            action, vt, outcome = verdict
            if vt is not None:
                types = (types or '"connection"') + vt
#endif
#if audit.suppressed
    v = R[audit.suppressed]
    if v is not None:
        au = '"suppressed":' + str(v)
        if action is not None:
            au += ',"action":' + action
        types = '"info"' + (',"denied"' if types and '"denied"' in types else
                            ',"allowed"' if types and '"allowed"' in types else "")
        action = '"rate-limited"'
        w = TIME(R[audit.first])
        if w is not None:
            ev += ',"start":"' + w + '"'
        w = TIME(R[audit.last])
        if w is not None:
            ev += ',"end":"' + w + '"'
        w = R[audit.limit_key]
        if w is not None:
            au += ',"limit_key":' + J(str(w))
        x += ',"audit":{' + au + '}'
#endif
#if audit.loss.count
    v = R[audit.loss.count]
    if v is not None:
        kind = '"pipeline_error"'
        types = '"info"'
        action = '"records-lost"'
        outcome = OUTCOME_FAILURE
        lo = '"count":' + str(v)
        w = R[audit.loss.reason]
        if w is not None:
            lo += ',"reason":' + J(str(w))
        w = TIME(R[audit.loss.first])
        if w is not None:
            ev += ',"start":"' + w + '"'
        w = TIME(R[audit.loss.last])
        if w is not None:
            ev += ',"end":"' + w + '"'
        x += ',"loss":{' + lo + '}'
#endif
#if sum.name
    v = R[sum.name]
    if v is not None:
        kind = '"metric"'
        types = '"info"'
        action = '"accounting"'
        x += ',"nfacct":{"name":' + J(v) + '}'
        w = ',"packets":' + str(R[sum.pkts]) + ',"bytes":' + str(R[sum.bytes])
        net = w[1:] if net is None else net + w
#endif
    cloud = ""
#if oob.netns
    v = R[oob.netns]
    if v is not None:
        x += ',"netns":' + (JD.get(v) or J(v))
#endif
#ifany neutron.*
    neu = []
#if neutron.router_id
    v = R[neutron.router_id]
    if v is not None:
        neu.append('"router_id":' + (JD.get(v) or J(v)))
#endif
#if neutron.network_id
    v = R[neutron.network_id]
    if v is not None:
        neu.append('"network_id":' + (JD.get(v) or J(v)))
#endif
#if neutron.port_id
    v = R[neutron.port_id]
    if v is not None:
        neu.append('"port_id":' + (JD.get(v) or J(v)))
#endif
#if neutron.device_role
    v = R[neutron.device_role]
    if v is not None:
        neu.append('"device_role":' + (JD.get(v) or J(v)))
#endif
#if neutron.ha_state
    v = R[neutron.ha_state]
    if v is not None:
        neu.append('"ha_state":' + (JD.get(v) or J(v)))
#endif
#if neutron.direction
    v = R[neutron.direction]
    if v is not None:
        neu.append('"direction":' + (JD.get(v) or J(v)))
        if v == "ingress" or v == "egress":
            w = '"direction":"' + v + '"'
            if net is None:
                net = w
            elif '"direction"' not in net:
                net += "," + w
#endif
#if neutron.project_id
    v = R[neutron.project_id]
    if v is not None:
        w = JD.get(v) or J(v)
        neu.append('"project_id":' + w)
        cloud = ',"cloud":{"provider":"openstack","account":{"id":' + w + '},"project":{"id":' + w + '}}'
#endif
    if neu:
        x += ',"neutron":{' + ",".join(neu) + '}'
        if not cloud:
            cloud = ',"cloud":{"provider":"openstack"}'
#endif
    net = "" if net is None else ',"network":{' + net + '}'
    rule = "" if rule is None else ',"rule":{' + rule + '}'
    return (f'{{"@timestamp":"{ts}{HEAD}{kind}{CATEGORY}{types or INFO}],"action":{action or DEFAULT_ACTION}'
            f'{outcome}{DSET}{ev}}},"observer":{{{obs}}}{srcdst}{net}{rule}{cloud},"{CUSTOM}":{{{tsrc}{x}}}}}\\n')
"""

SMALL = tuple(str(i) for i in range(65536))
# ',"iana_number":"6","transport":"tcp"' per protocol number
PROTO_TEXT = tuple(f',"iana_number":"{n}"' + (f',"transport":"{TRANSPORTS[n]}"' if n in TRANSPORTS else "")
                   for n in range(256))
FAMILIES = {2: "ipv4", 10: "ipv6", 7: "bridge", 3: "arp", 1: "unix", 0: "unspec"}
# NF_INET hooks, from the host's point of view (ECS: ingress/egress for host-based context).
HOOK_DIRECTIONS = {1: "ingress", 3: "egress"}
DATASETS = (("ct.event", "nfct"), ("sum.name", "nfacct"), ("nft.table", "nftrace"), ("raw.pkt", "nflog"),
            ("oob.prefix", "nflog"))  # fmt: skip


class _Pieces:
    """Text pieces of the fast renderer, computed once per distinct input (bounded: cleared
    when full): per flow (filled by the renderer's own code), per pair of interfaces and per
    packet length (filled here). Each writes what the plain renderer's lines write, in their
    order; tests/unit/test_ecs.py holds the two renderers to the same bytes."""

    def __init__(self, text: JsonText, size: int = 4096) -> None:
        self.text = text
        self.size = size
        # Flows: (proto, saddr, daddr, sport, dport) -> (source, destination, related, network,
        # extra) pieces, filled by the renderer itself (a miss costs no call).
        self.flows: dict[tuple[Any, ...], tuple[str, str, str, str, str]] = {}
        self.observers: dict[tuple[Any, Any], str] = {}
        self.one: dict[int, str] = {}
        self.obs = ""  # OBS, set by compile_ecs

    def _keep(self, table: dict[Any, Any], key: Any, value: Any) -> Any:
        if len(table) >= self.size:
            table.clear()
        table[key] = value
        return value

    def observer(self, v: Any, w: Any) -> str:
        """The observer's fields with its ingress and egress interfaces."""
        obs = self.obs
        if v:
            obs += ',"ingress":{"interface":{"name":' + (self.text.known.get(v) or self.text.miss(v)) + "}}"
        if w:
            obs += ',"egress":{"interface":{"name":' + (self.text.known.get(w) or self.text.miss(w)) + "}}"
        return self._keep(self.observers, (v, w), obs)  # type: ignore[no-any-return]

    def packet(self, v: int) -> str:
        """The bytes of one packet."""
        return self._keep(self.one, v, ',"bytes":' + str(v) + ',"packets":1')  # type: ignore[no-any-return]


def dataset_for(slots: Mapping[str, int]) -> str:
    """``event.dataset`` from what the stack's input produces."""
    for key, name in DATASETS:
        if slots.get(key):
            return f"pyulogd.{name}"
    return "pyulogd.log"


def compile_ecs(
    slots: Mapping[str, int],
    hostname: str,
    *,
    dataset: str = "",
    oob_time_is_kernel: bool = True,
    seed: int = 0,
    fast: bool = True,
) -> Callable[[list[Any], str], str]:
    """``render(rec, now) -> line`` (the JSON document and its newline) for a stack whose keys
    are bound to ``slots``; ``now`` is the reception time as :func:`~pyulogd.audit.values.now_stamper`
    writes it.

    ``oob_time_is_kernel``: whether ``oob.time.*`` is the kernel's time of the event (NFLOG)
    or the daemon's (NFACCT stamps its polls itself). ``fast=False``: without the caches of
    text pieces per flow, observer and packet length (:class:`_Pieces`), the renderer the
    fast one is tested against.
    """
    flag_slots = tuple((slots[k], f'"{name}"') for k, name in TCP_FLAGS if slots.get(k))
    text = JsonText()
    macs = MacMembers()
    cids = CommunityIdCache(seed=seed)
    prefixes = PrefixMembers(text)
    # The text of the second of oob.time (as stamper(), inlined in the template: the hot path)
    oob_second: list[Any] = [-1, ""]

    def new_second(sec: int) -> None:
        oob_second[0] = sec
        oob_second[1] = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(sec))
    ds = dataset or dataset_for(slots)
    namespace: dict[str, Any] = {
        "HEAD": f'","ecs":{{"version":"{ECS_VERSION}"}},"event":{{"kind":',
        "CATEGORY": ',"category":["network"],"type":[',
        "DSET": ',"module":"pyulogd","dataset":' + text.literal(ds),
        "OBS": f'"hostname":{text.literal(hostname)},"type":"firewall","vendor":"Linux","product":"netfilter"',
        "TS_OOB": '"timestamp_source":"kernel"' if oob_time_is_kernel else '"timestamp_source":"received"',
        "TS_CT": '"timestamp_source":"conntrack"',
        "TS_RECEIVED": '"timestamp_source":"received"',
        "CT_TYPES": {n: ('"' + '","'.join(t) + '"', f'"{a}"') for n, (t, a) in CT_TYPES.items()},
        "CT_OTHER": ('"connection","info"', '"connection-event"'),
        "CT_WORDS": {n: f'"event":"{w}"' for n, w in CT_EVENTS.items()},
        "SEC": oob_second,
        "SEC_NEW": new_second,
        "PREFIXES": prefixes.known,
        "PREFIX": prefixes.miss,
        "STAMP0": stamper(),
        "STAMP1": stamper(),
        "INFO": '"info"',
        "TIME": IsoTime().any,
        "ATEXT": AddressText(),
        "ABYTES": AddressBytes(),
        "J": text.miss,
        "JD": text.known,
        "MACS": macs.known,
        "MAC_MISS": macs.miss,
        "CID": cids.get,
        "CIDS": cids.known,
        "N": SMALL,
        "PROTO_TEXT": PROTO_TEXT,
        "FLAG_SLOTS": flag_slots,
        "NET4": '"type":"ipv4"',
        "NET6": '"type":"ipv6"',
        "FAMILY_NET": {n: f'"type":"{t}"' for n, t in FAMILIES.items()},
        "HOOK_DIRECTIONS": {h: f',"direction":"{d}"' for h, d in HOOK_DIRECTIONS.items()},
        "VERDICTS": {v: (f'"{a}"', None if t is None else f',"{t}"', f',"outcome":"{o}"')
                     for v, (a, t, o) in VERDICTS.items()},
        "OUTCOME_UNKNOWN": ',"outcome":"unknown"',
        "OUTCOME_FAILURE": ',"outcome":"failure"',
        "DEFAULT_ACTION": '"logged"',
        "CUSTOM": CUSTOM,
    }
    pieces = _Pieces(text)
    pieces.obs = namespace["OBS"]
    namespace.update({"FLOWS": pieces.flows, "FLOWS_MAX": pieces.size, "CID1": community_id, "SEED": seed,
                      "OBSES": pieces.observers, "OBS_MISS": pieces.observer, "ONE": pieces.one,
                      "ONE_MISS": pieces.packet})  # fmt: skip
    render: Callable[[list[Any], str], str] = compile_function(
        TEMPLATE, "render", slots, namespace, frozenset({"FAST"}) if fast else frozenset(), label="<ecs renderer>"
    )
    return render
