"""NFTRACE against the real kernel, beside the kernel's own tool (``nft monitor trace``).

Each test builds network namespaces of its own (``nftr-<random>-<role>``), removed even on
failure; traffic stays inside them. The plugin runs in the daemon's loop on the test thread
(``network_namespace_path``), ``nft -a monitor trace`` runs in the same namespace on the same
packets, and every record is checked against what the monitor printed for its trace id:
verdict, table, chain and rule handle. Then the expected decision for each port is checked
by name (which table, chain, rule text), so a wrong grouping cannot pass because both sides
agree on nothing.

Also here: Neutron's iptables_hybrid chains (``-m physdev`` on a qbr bridge, br_netfilter)
and FWaaS's chains in a router namespace, built with iptables-nft; the ruleset must be
byte-identical before and after (our table excluded, and gone after stop).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pyulogd.codec import nfttrack
from pyulogd.core.context import Context
from pyulogd.io.loop import Loop
from pyulogd.plugins.inputs.nftrace import NftraceInput
from tests.helpers import typed_options

TOOLS = ("ip", "nft", "iptables-nft", "iptables-nft-save", "stdbuf")
can_run = os.geteuid() == 0 and all(shutil.which(t) for t in TOOLS)
pytestmark = [pytest.mark.linux, pytest.mark.skipif(not can_run, reason="needs root, " + ", ".join(TOOLS))]
OWN = "nftr_trace"


def sh(*args: str, ns: str | None = None, input: str | None = None, check: bool = True) -> str:
    cmd = list(args) if ns is None else ["ip", "netns", "exec", ns, *args]
    p = subprocess.run(cmd, input=input, text=True, capture_output=True, timeout=30)
    if check and p.returncode:
        raise AssertionError(f"{' '.join(cmd)}: {p.stderr.strip()}")
    return p.stdout


@contextlib.contextmanager
def namespaces(*roles: str) -> Iterator[dict[str, str]]:
    tag = f"nftr-{secrets.token_hex(3)}"
    names = {r: f"{tag}-{r}" for r in roles}
    try:
        for n in names.values():
            sh("ip", "netns", "add", n)
            sh("ip", "link", "set", "lo", "up", ns=n)
        yield names
    finally:
        for n in names.values():
            subprocess.run(["ip", "netns", "del", n], capture_output=True)


def veth(a: str, a_if: str, b: str, b_if: str) -> None:
    sh("ip", "link", "add", a_if, "netns", a, "type", "veth", "peer", "name", b_if, "netns", b)
    sh("ip", "link", "set", a_if, "up", ns=a)
    sh("ip", "link", "set", b_if, "up", ns=b)


def addr(ns: str, ifname: str, cidr: str) -> None:
    sh("ip", "addr", "add", cidr, "dev", ifname, ns=ns)


_PROBE = """import socket, sys
dst, proto, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
s.settimeout(0.3)
try:
    s.connect((dst, port)) if proto == "tcp" else s.sendto(b"x", (dst, port))
except OSError:
    pass
"""


def probe(ns: str, dst: str, proto: str, port: int) -> None:
    """One new connection: a TCP SYN (connect, whatever the answer) or a UDP datagram."""
    sh("python3", "-c", _PROBE, dst, proto, str(port), ns=ns, check=False)


class Capture:
    def __init__(self) -> None:
        self.tail: list[Any] = [None, None, None]
        self.recs: list[dict[str, Any]] = []

    def run(self, rec: list[Any]) -> None:
        self.recs.append(nfttrack.as_dict(rec))


@contextlib.contextmanager
def tracing(ns: str, **options: Any) -> Iterator[tuple[NftraceInput, Capture, Context]]:
    ctx = Context(loop=Loop())
    ctx.log.stream = io.StringIO()
    ctx.log.path = "test"
    opts = {"network_namespace_path": f"/run/netns/{ns}", "trace_table": OWN, "trace_timeout": "200ms", **options}
    p = NftraceInput(ctx, "tr", typed_options(NftraceInput, opts))
    p.configure()
    cap = Capture()
    p.stacks = [cap]
    p.start()
    try:
        yield p, cap, ctx
    finally:
        p.stop()
        ctx.loop.close()


def pump(ctx: Context, cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while not cond() and time.monotonic() < end:
        ctx.loop.run_once(0.05)
    return cond()


_MON = re.compile(r"trace id ([0-9a-f]+) (\S+) (\S+) (\S+) "
                  r"(?:rule (.*) # handle (\d+) \(verdict ([^)]*)\)|policy (\w+))")


class Monitor:
    """``nft -a monitor trace`` in a namespace, its lines collected by a thread (line-buffered
    through stdbuf: nft's stdout is a pipe here)."""

    def __init__(self, ns: str) -> None:
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, "stdbuf", "-oL", "nft", "-a", "monitor", "trace"],
                                     stdout=subprocess.PIPE, text=True)  # fmt: skip
        self.lines: list[str] = []
        self.start = 0  # steps() reads from here on (mark())
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def steps(self) -> dict[int, list[tuple[str, str, str, int | None, str]]]:
        """Trace id -> verdict-giving lines (our table's and 'continue' left out), in order."""
        out: dict[int, list[tuple[str, str, str, int | None, str]]] = {}
        for line in self.lines[self.start :]:
            m = _MON.match(line)
            if m is None or m[3] == OWN:
                continue
            tid, fam, table, chain = int(m[1], 16), m[2], m[3], m[4]
            if m[8]:
                out.setdefault(tid, []).append((fam, table, chain, None, m[8]))
            elif m[7] != "continue":
                out.setdefault(tid, []).append((fam, table, chain, int(m[6]), m[7]))
        return out

    def mark(self) -> None:
        """Forget what was printed so far (the warm-up traffic)."""
        self.start = len(self.lines)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self._t.join(5)


@contextlib.contextmanager
def monitor(ns: str, ctx: Context, warm: Callable[[], None]) -> Iterator[Monitor]:
    """The monitor, once it prints: ``warm()`` sends traffic until it has shown a trace."""
    mon = Monitor(ns)
    try:
        end = time.monotonic() + 10
        while not mon.lines and time.monotonic() < end:
            warm()
            pump(ctx, lambda: False, 0.2)
        assert mon.lines, "nft monitor trace printed nothing"
        pump(ctx, lambda: False, 0.3)  # the warm-up's last events, on both sides
        mon.mark()
        yield mon
    finally:
        mon.close()


def dport(rec: dict[str, Any]) -> int | None:
    pkt = rec.get("raw.pkt")
    if not pkt or pkt[0] >> 4 != 4:
        return None
    off = (pkt[0] & 15) * 4
    return int.from_bytes(pkt[off + 2 : off + 4], "big") if len(pkt) >= off + 4 else None


def check_against_monitor(recs: list[dict[str, Any]], mon: Monitor) -> int:
    """Every final record with a rule is the monitor's last verdict line of its trace (or, for a
    trace id reused by a later packet, one of its verdict lines); every drop the monitor saw has
    its record. Returns how many records were compared."""
    steps = mon.steps()
    n = 0
    for r in recs:
        if r["nft.final"] != 1 or "audit.rule" not in r:
            continue
        tid = r["nft.trace_id"]
        assert tid in steps, f"trace {tid:08x} not seen by nft monitor trace: {r['audit.rule']}"
        verdict = r["nft.verdict"]
        mine = (r["nft.family"], r["nft.table"], r["nft.chain"], r.get("nft.handle"), verdict)
        absolute = [s for s in steps[tid] if s[4] in ("accept", "drop") or s[3] is None]
        assert mine in absolute, f"trace {tid:08x}: record {mine}, monitor {steps[tid]}"
        if verdict == "drop":
            assert absolute[-1] == mine or steps[tid].count(mine) >= 1
        n += 1
    drops = {(tid, s) for tid, ss in steps.items() for s in ss if s[4] == "drop"}
    recorded = {(r["nft.trace_id"], (r["nft.family"], r["nft.table"], r["nft.chain"], r.get("nft.handle"), "drop"))
                for r in recs if r.get("nft.verdict") == "drop"}  # fmt: skip
    assert drops <= recorded, f"drops the monitor saw without a record: {drops - recorded}"
    return n


def ruleset_snapshot(ns: str) -> str:
    text = sh("nft", "-s", "list", "ruleset", ns=ns)
    save = "\n".join(line for line in sh("iptables-nft-save", ns=ns).splitlines() if not line.startswith("#"))
    return text + "\n--\n" + re.sub(r"\[\d+:\d+\]", "[-]", save)  # chain counters move with traffic


def without_own(snapshot: str) -> str:
    return re.sub(rf"table inet {OWN} \{{.*?\n\}}\n", "", snapshot, flags=re.S)


# -- nftables-native and iptables-nft rules, beside nft monitor trace


NATIVE = """
table inet audit_t {
  chain input {
    type filter hook input priority 0; policy drop;
    ct state established,related accept
    tcp dport 8001 accept
    tcp dport 8002 drop
    tcp dport 8003 reject with tcp reset
    tcp dport 8004 jump tenant
    udp dport 9003 counter
  }
  chain tenant {
    tcp dport 8004 drop
  }
}
"""


def test_native_and_iptables_rules_match_nft_monitor_trace() -> None:
    with namespaces("cli", "srv") as ns:
        veth(ns["cli"], "c0", ns["srv"], "s0")
        addr(ns["cli"], "c0", "10.99.0.1/24")
        addr(ns["srv"], "s0", "10.99.0.2/24")
        sh("nft", "-f", "-", ns=ns["srv"], input=NATIVE)
        # iptables-nft: a rate-limited accept, a REJECT (before the inet table's policy drop)
        for rule in (["-p", "udp", "--dport", "9001", "-m", "limit", "--limit", "100/sec", "-j", "ACCEPT"],
                     ["-p", "udp", "--dport", "9002", "-j", "REJECT"]):  # fmt: skip
            sh("iptables-nft", "-A", "INPUT", *rule, ns=ns["srv"])
        before = ruleset_snapshot(ns["srv"])
        with tracing(ns["srv"], trace_rule="ct state new") as (p, cap, ctx):
            assert without_own(ruleset_snapshot(ns["srv"])) == before
            with monitor(ns["srv"], ctx, lambda: probe(ns["cli"], "10.99.0.2", "tcp", 8001)) as mon:
                cap.recs.clear()
                for port in (8001, 8002, 8003, 8004, 8005):
                    probe(ns["cli"], "10.99.0.2", "tcp", port)
                for port in (9001, 9002, 9003):
                    probe(ns["cli"], "10.99.0.2", "udp", port)
                want = {8001, 8002, 8003, 8004, 8005, 9001, 9002, 9003}
                assert pump(ctx, lambda: want <= {dport(r) for r in cap.recs if r.get("oob.hook") == 1}), cap.recs
                pump(ctx, lambda: False, 0.3)  # the monitor's last lines
            by_port = {dport(r): r for r in cap.recs if r.get("oob.hook") == 1 and r["nft.final"]}
            assert check_against_monitor(cap.recs, mon) >= len(want)
            assert by_port[8001]["audit.action"] == "ACCEPT"
            assert by_port[8001]["audit.rule"].startswith("inet audit_t input handle ")
            assert by_port[8001]["audit.rule"].endswith(": tcp dport 8001 accept")
            assert (by_port[8002]["audit.action"], by_port[8002]["nft.rule"]) == ("DROP", "tcp dport 8002 drop")
            assert by_port[8003]["audit.action"] == "REJECT"
            assert by_port[8004]["nft.chain"] == "tenant" and "jump tenant" in by_port[8004]["nft.trail"]
            assert by_port[8005]["audit.rule"] == "inet audit_t input policy drop"
            assert by_port[8005]["audit.action"] == "DROP" and by_port[8005]["nft.policy"] == 1
            # the iptables-nft rules, in iptables' words; the limit-matched accept goes on to the
            # inet table, whose policy drops it: the final verdict is that drop
            assert by_port[9001]["audit.action"] == "DROP"
            assert "filter INPUT handle" in by_port[9001]["nft.trail"]
            assert by_port[9002]["audit.action"] == "REJECT"
            assert by_port[9002]["nft.rule"] == ("-p udp -m udp --dport 9002 -j REJECT "
                                                 "--reject-with icmp-port-unreachable")
            assert by_port[9003]["audit.rule"] == "inet audit_t input policy drop"  # a counter is no verdict
            for r in by_port.values():
                assert r["oob.ifindex_in"] and r["oob.family"] == 2 and r["raw.mac_len"] == 14
        assert ruleset_snapshot(ns["srv"]) == before  # our table is gone, nothing else changed


def test_table_is_readded_after_a_flush_and_refused_rules() -> None:
    with namespaces("one") as ns:
        with tracing(ns["one"]) as (p, cap, ctx):
            sh("nft", "flush", "ruleset", ns=ns["one"])
            assert pump(ctx, lambda: ctx.stats.get("nftrace.tr.table_reasserted") >= 1)
            assert pump(ctx, lambda: f"table inet {OWN}" in sh("nft", "list", "ruleset", ns=ns["one"]))
            listing = sh("nft", "list", "table", "inet", OWN, ns=ns["one"])
            assert "ct state new meta nftrace set 1" in listing and "hook prerouting priority -190" in listing
        assert OWN not in sh("nft", "list", "ruleset", ns=ns["one"])
        ctx = Context(loop=Loop())
        ctx.log.stream = io.StringIO()
        for rule, why in (("ct state new drop", "terminal statement"), ("ct state new log", "holds a 'log'"),
                          ("meta mark set 1", "holds a 'mangle'"), ("no such thing", "cannot add")):  # fmt: skip
            p = NftraceInput(ctx, "bad", typed_options(NftraceInput, {
                "network_namespace_path": f"/run/netns/{ns['one']}", "trace_table": OWN, "trace_rule": rule}))
            p.configure()
            with pytest.raises(Exception, match=why):
                p.start()
            p.stop()
            assert OWN not in sh("nft", "list", "ruleset", ns=ns["one"])  # refused: nothing left behind
        ctx.loop.close()


# -- Neutron recipes


# Neutron's rule comments (iptables_comments.py)
C_DIRECT = '"Direct traffic from the VM interface to the security group chain."'
C_JUMP = '"Jump to the VM specific chain."'
C_KNOWN = '"Direct packets associated with a known session to the RETURN chain."'
C_INVALID = ('"Drop packets that appear related to an existing connection (e.g. TCP ACK/FIN) but do not have an '
             'entry in conntrack."')


def test_neutron_iptables_hybrid_port_chains() -> None:
    """A compute node's hybrid plug: VM tap and qvb on a qbr bridge, Neutron's chains matched
    with -m physdev (br_netfilter), built with iptables-nft. New connections to the VM: port
    22 allowed by the port's ingress chain, port 23 dropped by the shared fallback chain."""
    port = "2fc5a3b4-7"
    with namespaces("host", "vm", "peer") as ns:
        host = ns["host"]
        veth(ns["vm"], "eth0", host, f"tap{port}")
        veth(ns["peer"], "eth0", host, f"qvb{port}")
        sh("ip", "link", "add", f"qbr{port}", "type", "bridge", ns=host)
        for dev in (f"tap{port}", f"qvb{port}"):
            sh("ip", "link", "set", dev, "master", f"qbr{port}", ns=host)
        sh("ip", "link", "set", f"qbr{port}", "up", ns=host)
        sh("sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1", ns=host)
        addr(ns["vm"], "eth0", "10.98.0.5/24")
        addr(ns["peer"], "eth0", "10.98.0.9/24")
        i, o, s = (f"neutron-openvswi-{d}{port}" for d in "ios")
        PHYS_OUT = f"-m physdev --physdev-out tap{port} --physdev-is-bridged"  # noqa: N806
        PHYS_IN = f"-m physdev --physdev-in tap{port} --physdev-is-bridged"  # noqa: N806
        script = f"""*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:neutron-filter-top - [0:0]
:neutron-openvswi-FORWARD - [0:0]
:neutron-openvswi-local - [0:0]
:neutron-openvswi-sg-chain - [0:0]
:neutron-openvswi-sg-fallback - [0:0]
:{i} - [0:0]
:{o} - [0:0]
:{s} - [0:0]
-A FORWARD -j neutron-filter-top
-A FORWARD -j neutron-openvswi-FORWARD
-A neutron-filter-top -j neutron-openvswi-local
-A neutron-openvswi-FORWARD {PHYS_OUT} -m comment --comment {C_DIRECT} -j neutron-openvswi-sg-chain
-A neutron-openvswi-FORWARD {PHYS_IN} -m comment --comment {C_DIRECT} -j neutron-openvswi-sg-chain
-A neutron-openvswi-sg-chain {PHYS_OUT} -m comment --comment {C_JUMP} -j {i}
-A neutron-openvswi-sg-chain {PHYS_IN} -m comment --comment {C_JUMP} -j {o}
-A neutron-openvswi-sg-chain -j ACCEPT
-A {i} -m state --state RELATED,ESTABLISHED -m comment --comment {C_KNOWN} -j RETURN
-A {i} -p tcp -m tcp --dport 22 -j RETURN
-A {i} -m state --state INVALID -m comment --comment {C_INVALID} -j DROP
-A {i} -m comment --comment "Send unmatched traffic to the fallback chain." -j neutron-openvswi-sg-fallback
-A {o} -j {s}
-A {o} -m state --state RELATED,ESTABLISHED -j RETURN
-A {o} -j RETURN
-A {s} -s 10.98.0.5/32 -j RETURN
-A {s} -j DROP
-A neutron-openvswi-sg-fallback -m comment --comment "Default drop rule for unmatched traffic." -j DROP
COMMIT
"""
        sh("iptables-nft-restore", ns=host, input=script)
        before = ruleset_snapshot(host)
        with tracing(host, rule_records=1) as (p, cap, ctx):
            with monitor(host, ctx, lambda: probe(ns["peer"], "10.98.0.5", "tcp", 23)) as mon:
                cap.recs.clear()
                probe(ns["peer"], "10.98.0.5", "tcp", 22)
                probe(ns["peer"], "10.98.0.5", "tcp", 23)

                def done() -> bool:
                    return {22, 23} <= {dport(r) for r in cap.recs if r["nft.final"] and r.get("nft.chain")}

                assert pump(ctx, done), cap.recs
                pump(ctx, lambda: False, 0.3)
            check_against_monitor(cap.recs, mon)
            final = {dport(r): r for r in cap.recs if r["nft.final"] and r.get("oob.hook") == 2}
            # 23: dropped by the shared fallback chain, reached from this port's ingress chain
            assert final[23]["audit.action"] == "DROP" and final[23]["nft.chain"] == "neutron-openvswi-sg-fallback"
            assert final[23]["nft.rule"] == ('-m comment --comment "Default drop rule for unmatched traffic." -j DROP')
            assert f"filter {i} handle " in final[23]["nft.trail"]
            assert "jump neutron-openvswi-sg-fallback" in final[23]["nft.trail"]
            # 22: the port chain's rule returned, the sg-chain accepted
            assert final[22]["audit.action"] == "ACCEPT"
            assert final[22]["audit.rule"].startswith("ip filter neutron-openvswi-sg-chain handle ")
            tid = final[22]["nft.trace_id"]
            steps = [r for r in cap.recs if r["nft.trace_id"] == tid and not r["nft.final"]]
            assert any(r["nft.chain"] == i and r["nft.verdict"] == "return"
                       and r["nft.rule"] == "-p tcp -m tcp --dport 22 -j RETURN" for r in steps), steps
            assert "physdev" in final[22]["nft.trail"] or f"filter {i}" in final[22]["nft.trail"]
            assert final[22]["oob.ifindex_in"] and final[22]["oob.ifindex_out"]
            assert without_own(ruleset_snapshot(host)) == before
        assert ruleset_snapshot(host) == before


def test_neutron_fwaas_chains_in_a_router_namespace() -> None:
    """FWaaS v2's chains in a router namespace (named like qrouter-, but ours): accepted,
    rejected and default-dropped new connections through the router."""
    fwg = "1a2b3c4d"
    with namespaces("ext", "qrouter", "int") as ns:
        r = ns["qrouter"]
        veth(ns["ext"], "eth0", r, "qg-0a1b2c3d-4e")
        veth(ns["int"], "eth0", r, "qr-1a2b3c4d-5e")
        addr(ns["ext"], "eth0", "172.31.9.10/24")
        addr(r, "qg-0a1b2c3d-4e", "172.31.9.1/24")
        addr(r, "qr-1a2b3c4d-5e", "10.97.0.1/24")
        addr(ns["int"], "eth0", "10.97.0.5/24")
        sh("ip", "route", "add", "default", "via", "172.31.9.1", ns=ns["ext"])
        sh("ip", "route", "add", "default", "via", "10.97.0.1", ns=ns["int"])
        sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=r)
        iv, ov = f"neutron-l3-agent-iv4{fwg}", f"neutron-l3-agent-ov4{fwg}"
        script = f"""*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:neutron-l3-agent-FORWARD - [0:0]
:neutron-l3-agent-accepted - [0:0]
:neutron-l3-agent-dropped - [0:0]
:neutron-l3-agent-rejected - [0:0]
:neutron-l3-agent-fwaas-defau - [0:0]
:{iv} - [0:0]
:{ov} - [0:0]
-A FORWARD -j neutron-l3-agent-FORWARD
-A neutron-l3-agent-FORWARD -o qr-1a2b3c4d-5e -j {iv}
-A neutron-l3-agent-FORWARD -i qr-1a2b3c4d-5e -j {ov}
-A neutron-l3-agent-FORWARD -o qr-1a2b3c4d-5e -j neutron-l3-agent-fwaas-defau
-A neutron-l3-agent-FORWARD -i qr-1a2b3c4d-5e -j neutron-l3-agent-fwaas-defau
-A {iv} -m state --state INVALID -j neutron-l3-agent-dropped
-A {iv} -m state --state RELATED,ESTABLISHED -j ACCEPT
-A {iv} -p tcp -m tcp --dport 80 -j neutron-l3-agent-accepted
-A {iv} -p tcp -m tcp --dport 81 -j neutron-l3-agent-rejected
-A {ov} -m state --state INVALID -j neutron-l3-agent-dropped
-A {ov} -m state --state RELATED,ESTABLISHED -j ACCEPT
-A neutron-l3-agent-accepted -j ACCEPT
-A neutron-l3-agent-dropped -j DROP
-A neutron-l3-agent-rejected -p tcp -j REJECT --reject-with tcp-reset
-A neutron-l3-agent-rejected -j REJECT --reject-with icmp-port-unreachable
-A neutron-l3-agent-fwaas-defau -j neutron-l3-agent-dropped
COMMIT
"""
        sh("iptables-nft-restore", ns=r, input=script)
        before = ruleset_snapshot(r)
        with tracing(r) as (p, cap, ctx):
            with monitor(r, ctx, lambda: probe(ns["ext"], "10.97.0.5", "tcp", 82)) as mon:
                cap.recs.clear()
                for port in (80, 81, 82):
                    probe(ns["ext"], "10.97.0.5", "tcp", port)
                assert pump(ctx, lambda: {80, 81, 82} <= {dport(x) for x in cap.recs if x.get("nft.chain")}), cap.recs
                pump(ctx, lambda: False, 0.3)
            check_against_monitor(cap.recs, mon)
            final = {dport(x): x for x in cap.recs if x.get("oob.hook") == 2}
            assert (final[80]["audit.action"], final[80]["nft.chain"]) == ("ACCEPT", "neutron-l3-agent-accepted")
            assert (final[81]["audit.action"], final[81]["nft.chain"]) == ("REJECT", "neutron-l3-agent-rejected")
            assert final[81]["nft.rule"] == "-p tcp -j REJECT --reject-with tcp-reset"
            assert (final[82]["audit.action"], final[82]["nft.chain"]) == ("DROP", "neutron-l3-agent-dropped")
            assert "neutron-l3-agent-fwaas-defau" in final[82]["nft.trail"]
            assert f"{iv} handle" in final[80]["nft.trail"]
        assert ruleset_snapshot(r) == before
