"""NAT audit (issue 3, item 5): behind a Neutron-like router, pyulogd's flow records show both the
floating and the fixed address, each in its tuple.

``client`` - ``router`` - ``vm`` namespaces (tests/linux/nat_lab.py): the router DNATs a floating IP
on its outside to the vm's fixed address and SNATs the vm's network to its own outside address,
IPv4 and IPv6. pyulogd runs in the router with NFCT (event_mask 0x7, accounting=1) -> IP2STR ->
JSON and -> PRINTFLOW -> LOGEMU without the flow table, and a second NFCT with the table
(hash_enable=1) -> JSON. The client makes TCP, UDP and ICMP connections to the floating IP, the vm
to the client; ``conntrack -F`` in the router ends them all.

For DNAT, the original tuple is client -> floating IP and the reply tuple fixed address -> client;
for SNAT, the original tuple is fixed address -> client and the reply tuple client -> router's
outside address. Needs root, nft and the conntrack tool; the namespaces are deleted afterwards.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.linux.lab import have_root_and_tools, sh, wait_for
from tests.linux.nat_lab import (
    ETHERTYPE,
    Flow,
    NatLab,
    complete_lines,
    iter_json,
    printflow_part,
    record_key,
    stop,
    wait_listening,
)

_skip = have_root_and_tools("conntrack", "ping")
pytestmark = [pytest.mark.linux, pytest.mark.skipif(_skip is not None, reason=_skip or "")]

LOGEMU_PREFIX = re.compile(r"^[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \S+ ")
COUNTERS = ("orig.raw.pktcount", "orig.raw.pktlen", "reply.raw.pktcount", "reply.raw.pktlen")


def config(out: Path) -> str:
    return f"""[global]
logfile="{out}/daemon.log"
loglevel=3
stack=ct1:NFCT,ip2str1:IP2STR,json1:JSON
stack=ct1:NFCT,ip2str1:IP2STR,print1:PRINTFLOW,emu1:LOGEMU
stack=ct2:NFCT,ip2str2:IP2STR,json2:JSON

[ct1]
event_mask=0x7
hash_enable=0
accounting=1

[ct2]
event_mask=0x7
hash_enable=1

[json1]
file="{out}/events.json"
sync=1

[emu1]
file="{out}/flows.log"
sync=1

[json2]
file="{out}/hash.json"
sync=1
"""


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in iter_json(path)]


@pytest.fixture()
def lab() -> Iterator[NatLab]:
    with NatLab("nat") as lab:
        lab.start_servers()
        yield lab


def run(lab: NatLab, out: Path) -> None:
    """Start pyulogd in the router, make the traffic, flush the table, wait for every DESTROY, stop."""
    (out / "ulogd.conf").write_text(config(out))
    proc = lab.popen(lab.router, [sys.executable, "-m", "pyulogd", "-c", str(out / "ulogd.conf")],
                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    n = len(lab.flows())
    try:
        wait_listening(proc, 2, "pyulogd")
        # accounting=1 turned the counters and timestamps on in the router before any flow.
        for knob in ("nf_conntrack_acct", "nf_conntrack_timestamp"):
            assert sh("sysctl", "-n", f"net.netfilter.{knob}", ns=lab.router).stdout.strip() == "1", knob
        lab.traffic()
        assert lab.ct_count() == n, sh("conntrack", "-L", ns=lab.router).stdout
        lab.flush()

        def done() -> bool:
            return (len([r for r in records(out / "events.json") if r.get("ct.event") == 4]) >= n
                    and len(records(out / "hash.json")) >= n
                    and sum("[DESTROY]" in x for x in complete_lines(out / "flows.log")) >= n)

        wait_for(done, 10, "a DESTROY record of every flow in each output")
    finally:
        (rc,) = stop(proc)
    assert proc.stderr is not None
    err = proc.stderr.read().decode(errors="replace")
    assert rc == 0, err
    for name in ("events.json", "flows.log", "hash.json"):
        assert (out / name).read_text().endswith("\n"), f"{name}: last line incomplete"
    log = (out / "daemon.log").read_text()
    assert "Traceback" not in log and not re.search(r" <[78]> ", log), log  # no ERROR or FATAL line


def check_record(r: dict[str, Any], f: Flow) -> None:
    """The record's tuples, ports, protocol, ICMP type/code and family are those of ``f``."""
    assert (r["src_ip"], r["dest_ip"]) == (f.osrc, f.odst), f
    assert (r["reply.ip.saddr.str"], r["reply.ip.daddr.str"]) == (f.rsrc, f.rdst), f
    assert r["orig.ip.protocol"] == r["reply.ip.protocol"] == f.proto
    assert (r["oob.family"], r["oob.protocol"]) == (f.family, ETHERTYPE[f.family])
    ports = ("orig.l4.sport", "orig.l4.dport", "reply.l4.sport", "reply.l4.dport")
    if f.proto in (6, 17):
        assert [r[k] for k in ports] == [f.sport, f.dport, f.dport, f.sport], f
    else:
        assert not [k for k in ports if k in r], f
    icmp = [(k, r[k]) for k in ("icmp.type", "icmp.code", "icmpv6.type", "icmpv6.code") if k in r]
    want = {1: [("icmp.type", 8), ("icmp.code", 0)], 58: [("icmpv6.type", 128), ("icmpv6.code", 0)]}
    assert sorted(icmp) == sorted(want.get(f.proto, [])), f


def check_counters(r: dict[str, Any], f: Flow) -> None:
    """DESTROY with accounting: both directions carried packets (ping -c1: exactly one each way)."""
    assert all(r[k] > 0 for k in COUNTERS), (f, {k: r[k] for k in COUNTERS})
    if f.proto == 6:  # SYN, ACK, data, FIN / SYN-ACK, data, FIN (data and FIN may share a segment)
        assert r["orig.raw.pktcount"] >= 4 and r["reply.raw.pktcount"] >= 3, f
    else:  # one datagram, one echo request each way
        assert (r["orig.raw.pktcount"], r["reply.raw.pktcount"]) == (1, 1), f


def by_flow(recs: list[dict[str, Any]], flows: list[Flow]) -> dict[Flow, list[dict[str, Any]]]:
    index = {f.key: f for f in flows}
    out: dict[Flow, list[dict[str, Any]]] = {f: [] for f in flows}
    for r in recs:
        assert record_key(r) in index, f"a record of no connection the test made: {r}"
        out[index[record_key(r)]].append(r)
    return out


def test_dnat_and_snat_tuples_ipv4_and_ipv6(lab: NatLab, tmp_path: Path) -> None:
    started = time.time()
    run(lab, tmp_path)
    flows = lab.flows()
    assert {(f.kind, f.family, f.proto) for f in flows} == {
        (k, fam, p) for k in ("dnat", "snat") for fam, icmp in ((2, 1), (10, 58)) for p in (6, 17, icmp)}

    # Without the table: one NEW and one DESTROY per connection, same ct.id, nothing else.
    events = by_flow(records(tmp_path / "events.json"), flows)
    ids: dict[Flow, int] = {}
    for f, recs in events.items():
        assert sorted(r["ct.event"] for r in recs) == [1, 4], (f, recs)
        new, destroy = sorted(recs, key=lambda r: r["ct.event"])
        for r in recs:
            check_record(r, f)
        assert new["ct.id"] == destroy["ct.id"]
        ids[f] = new["ct.id"]
        assert all(new[k] == 0 for k in COUNTERS)  # a NEW event carries no counters
        check_counters(destroy, f)
        assert "flow.end.sec" not in new and new["flow.start.sec"] >= int(started)
        # nf_conntrack_timestamp (accounting=1): the kernel's start and stop times.
        assert destroy["flow.end.sec"] * 10**6 + destroy["flow.end.usec"] >= (
            destroy["flow.start.sec"] * 10**6 + destroy["flow.start.usec"])
    assert len(set(ids.values())) == len(flows)

    # With the table: one DESTROY per connection with its start time, the same tuples and ids.
    hashed = by_flow(records(tmp_path / "hash.json"), flows)
    for f, recs in hashed.items():
        assert len(recs) == 1, (f, recs)
        (r,) = recs
        check_record(r, f)
        assert r["ct.event"] == 4 and r["ct.id"] == ids[f]
        check_counters(r, f)
        start = r["flow.start.sec"] * 10**6 + r["flow.start.usec"]
        assert start <= r["flow.end.sec"] * 10**6 + r["flow.end.usec"] and r["flow.start.sec"] >= int(started)

    # PRINTFLOW through LOGEMU: both tuples on one line, exactly; the DESTROY line's counters are
    # those of the JSON record of the same event.
    want: Counter[str] = Counter()
    for f in flows:
        want[f"[NEW] ORIG: {printflow_part(f, False, 0, 0)}, REPLY: {printflow_part(f, True, 0, 0)}"] += 1
        d = next(r for r in events[f] if r["ct.event"] == 4)
        want[f"[DESTROY] ORIG: {printflow_part(f, False, d['orig.raw.pktcount'], d['orig.raw.pktlen'])}, "
             f"REPLY: {printflow_part(f, True, d['reply.raw.pktcount'], d['reply.raw.pktlen'])}"] += 1
    got = complete_lines(tmp_path / "flows.log")
    assert all(LOGEMU_PREFIX.match(x) for x in got), got
    assert Counter(LOGEMU_PREFIX.sub("", x) for x in got) == want

    # The audit question, spelled out: the floating and the fixed address of the same DNAT
    # connection on one line, and the vm's SNAT connection with the router's outside address.
    text = "\n".join(got)
    for fip, fixed, client in ((lab.fip4, lab.fixed4, lab.client4), (lab.fip6, lab.fixed6, lab.client6)):
        assert re.search(rf"ORIG: SRC={client} DST={fip} PROTO=TCP SPT=\d+ DPT=7001 .*, "
                         rf"REPLY: SRC={fixed} DST={client} PROTO=TCP SPT=7001 ", text)
    for fixed, client, ext in ((lab.fixed4, lab.client4, lab.router_ext4), (lab.fixed6, lab.client6, lab.router_ext6)):
        assert re.search(rf"ORIG: SRC={fixed} DST={client} PROTO=UDP SPT=\d+ DPT=7003 .*, "
                         rf"REPLY: SRC={client} DST={ext} PROTO=UDP SPT=7003 ", text)
