"""NEUTRON end to end, in a small router of our own: records say which port, network, project
and router they belong to, in which direction, what became of the packet and by which rule,
and conntrack records carry their NAT context and totals.

The lab (names ``qrouter-nf<random>-<uuid>``, ``nf<random>-vm``, ``nf<random>-ext``, removed even
on failure; traffic stays inside them):

* ``vm`` (10.90.N.4 with a floating IP, 10.90.N.5 without) -- ``qr-<port>`` | router |
  ``qg-<port>`` -- ``ext`` (172.30.N.100); the router has the floating IP on ``qg-`` and the L3
  agent's NAT (DNAT and float-snat for .4, the gateway's ``--random-fully`` SNAT for the rest);
* FWaaS's chains as neutron-l3-agent writes them (iptables-nft): inbound TCP 22 accepted,
  UDP 9999 rejected, anything else inbound dropped, everything outbound accepted; its log rules
  with random numeric prefixes, one per event, at the top of ``-accepted``, ``-dropped`` and
  ``-rejected`` (NFLOG group 7 here, as FWaaS would use group 0);
* a real ovsdb-server (temporary directory) whose Interface rows carry ``iface-id`` for the
  ``qr-`` and ``qg-`` devices, a mapping file (ports, projects, fixed and floating IPs) and a
  keepalived state file saying ``master``.

pyulogd follows the router with NFLOG -> BASE -> IFINDEX -> IP2STR -> NEUTRON -> JSON (one file,
and split per project) and NFCT -> IP2STR -> NEUTRON -> JSON (accounting on); the test sends
the traffic, flushes conntrack (DESTROY of every flow), and checks every record.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.linux.lab import have_root_and_tools, sh, wait_for
from tests.linux.nsdaemon import Daemon, counters_at_exit

SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
_skip = have_root_and_tools("iptables-nft", "conntrack", "ovsdb-server", "ovsdb-tool", "ovs-vsctl")
if _skip is None and not os.path.exists(SCHEMA):
    _skip = "needs Debian's openvswitch-common (vswitch.ovsschema)"
pytestmark = [pytest.mark.linux, pytest.mark.skipif(_skip is not None, reason=_skip or "")]

GROUP = 7


class NeutronLab:
    def __init__(self, tmp: Path) -> None:
        tag = f"nf{secrets.token_hex(3)}"
        self.tmp = tmp
        self.router_id = f"{tag}-{uuid.uuid4()}"
        self.router = f"qrouter-{self.router_id}"
        self.router_tmp = ""
        self.vm, self.ext = f"{tag}-vm", f"{tag}-ext"
        self.glob = f"qrouter-{tag}-*"
        n = secrets.randbelow(200) + 20
        self.qr_port, self.qg_port, self.vm4_port, self.vm5_port = (str(uuid.uuid4()) for _ in range(4))
        self.qr, self.qg = "qr-" + self.qr_port[:11], "qg-" + self.qg_port[:11]
        self.net, self.ext_net = str(uuid.uuid4()), str(uuid.uuid4())
        self.project, self.admin = secrets.token_hex(16), secrets.token_hex(16)
        self.vm4, self.vm5, self.gw_in = f"10.90.{n}.4", f"10.90.{n}.5", f"10.90.{n}.1"
        self.gw, self.fip, self.client = f"172.30.{n}.2", f"172.30.{n}.10", f"172.30.{n}.100"
        self.p_accept, self.p_drop = str(secrets.randbits(64)), str(secrets.randbits(64))
        self.ovs_proc: subprocess.Popen[bytes] | None = None
        self.ovs_sock = str(tmp / "ovs" / "db.sock")

    def up(self, late: bool = False, ovsdb: bool = True) -> None:
        """Build the lab. ``late``: the router namespace is built under another name and shows
        up under its own, rules and all, only at the end (``ip netns attach``), as a namespace
        a daemon already running must pick up."""
        final = self.router
        if late:
            self.router = self.router_tmp = f"{self.vm[:-3]}-rtmp"
        for ns in (self.router, self.vm, self.ext):
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "set", "lo", "up", ns=ns)
        self._build(ovsdb)
        if late:
            keeper = subprocess.Popen(["ip", "netns", "exec", self.router, "sleep", "60"])
            try:
                wait_for(lambda: os.readlink(f"/proc/{keeper.pid}/ns/net") != os.readlink("/proc/self/ns/net"), 10,
                         "the keeper in the namespace")  # fmt: skip
                sh("ip", "netns", "attach", final, str(keeper.pid))
            finally:
                keeper.kill()
                keeper.wait(10)
            sh("ip", "netns", "del", self.router)
            self.router = final

    def _build(self, ovsdb: bool) -> None:
        sh("ip", "link", "add", self.qr, "netns", self.router, "type", "veth", "peer", "name", "eth0", "netns", self.vm)
        sh("ip", "link", "add", self.qg, "netns", self.router, "type", "veth", "peer", "name", "eth0", "netns",
           self.ext)  # fmt: skip
        r, vm, ext = self.router, self.vm, self.ext
        for cmd, ns in (
            (["ip", "addr", "add", f"{self.gw_in}/24", "dev", self.qr], r),
            (["ip", "addr", "add", f"{self.gw}/24", "dev", self.qg], r),
            (["ip", "addr", "add", f"{self.fip}/32", "dev", self.qg], r),
            (["ip", "link", "set", self.qr, "up"], r), (["ip", "link", "set", self.qg, "up"], r),
            (["sysctl", "-qw", "net.ipv4.ip_forward=1"], r),
            (["ip", "addr", "add", f"{self.vm4}/24", "dev", "eth0"], vm),
            (["ip", "addr", "add", f"{self.vm5}/24", "dev", "eth0"], vm),
            (["ip", "link", "set", "eth0", "up"], vm), (["ip", "route", "add", "default", "via", self.gw_in], vm),
            (["ip", "addr", "add", f"{self.client}/24", "dev", "eth0"], ext),
            (["ip", "link", "set", "eth0", "up"], ext),
        ):  # fmt: skip
            sh(*cmd, ns=ns)
        lim = "-m limit --limit 100/sec --limit-burst 25"
        log = f"--nflog-group {GROUP}"
        sh("iptables-nft-restore", ns=r, input=f"""*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:neutron-l3-agent-FORWARD - [0:0]
:neutron-l3-agent-accepted - [0:0]
:neutron-l3-agent-dropped - [0:0]
:neutron-l3-agent-rejected - [0:0]
:neutron-l3-agent-iv4fwg0001 - [0:0]
:neutron-l3-agent-ov4fwg0001 - [0:0]
-A FORWARD -j neutron-l3-agent-FORWARD
-A neutron-l3-agent-FORWARD -o {self.qr} -j neutron-l3-agent-iv4fwg0001
-A neutron-l3-agent-FORWARD -i {self.qr} -j neutron-l3-agent-ov4fwg0001
-A neutron-l3-agent-accepted -i {self.qr} {lim} -j NFLOG {log} --nflog-prefix {self.p_accept}
-A neutron-l3-agent-accepted -o {self.qr} {lim} -j NFLOG {log} --nflog-prefix {self.p_accept}
-A neutron-l3-agent-accepted -j ACCEPT
-A neutron-l3-agent-dropped -i {self.qr} {lim} -j NFLOG {log} --nflog-prefix {self.p_drop}
-A neutron-l3-agent-dropped -o {self.qr} {lim} -j NFLOG {log} --nflog-prefix {self.p_drop}
-A neutron-l3-agent-dropped -j DROP
-A neutron-l3-agent-rejected -i {self.qr} {lim} -j NFLOG {log} --nflog-prefix {self.p_drop}
-A neutron-l3-agent-rejected -o {self.qr} {lim} -j NFLOG {log} --nflog-prefix {self.p_drop}
-A neutron-l3-agent-rejected -j REJECT --reject-with icmp-port-unreachable
-A neutron-l3-agent-iv4fwg0001 -m state --state INVALID -j neutron-l3-agent-dropped
-A neutron-l3-agent-iv4fwg0001 -m state --state RELATED,ESTABLISHED -j ACCEPT
-A neutron-l3-agent-iv4fwg0001 -p tcp -m tcp --dport 22 -j neutron-l3-agent-accepted
-A neutron-l3-agent-iv4fwg0001 -p udp -m udp --dport 9999 -j neutron-l3-agent-rejected
-A neutron-l3-agent-iv4fwg0001 -j neutron-l3-agent-dropped
-A neutron-l3-agent-ov4fwg0001 -m state --state RELATED,ESTABLISHED -j ACCEPT
-A neutron-l3-agent-ov4fwg0001 -j neutron-l3-agent-accepted
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:neutron-l3-agent-PREROUTING - [0:0]
:neutron-l3-agent-float-snat - [0:0]
:neutron-l3-agent-snat - [0:0]
-A PREROUTING -j neutron-l3-agent-PREROUTING
-A POSTROUTING -j neutron-l3-agent-snat
-A neutron-l3-agent-PREROUTING -d {self.fip}/32 -j DNAT --to-destination {self.vm4}
-A neutron-l3-agent-snat -j neutron-l3-agent-float-snat
-A neutron-l3-agent-float-snat -s {self.vm4}/32 -j SNAT --to-source {self.fip}
-A neutron-l3-agent-snat -o {self.qg} -m conntrack ! --ctstate DNAT -j SNAT --to-source {self.gw} --random-fully
COMMIT
""")
        if ovsdb:
            self._ovsdb()
        (self.tmp / "ha" / self.router_id).mkdir(parents=True, exist_ok=True)
        (self.tmp / "ha" / self.router_id / "state").write_text("master\n")
        ports = [
            {"id": self.qr_port, "network_id": self.net, "project_id": self.project,
             "device_owner": "network:router_interface", "device_id": self.router_id,
             "fixed_ips": [{"ip_address": self.gw_in}]},
            {"id": self.qg_port, "network_id": self.ext_net, "project_id": self.admin,
             "device_owner": "network:router_gateway", "device_id": self.router_id,
             "fixed_ips": [{"ip_address": self.gw}]},
            {"id": self.vm4_port, "network_id": self.net, "project_id": self.project, "device_owner": "compute:nova",
             "fixed_ips": [{"ip_address": self.vm4}], "security_groups": ["web"]},
            {"id": self.vm5_port, "network_id": self.net, "project_id": self.project, "device_owner": "compute:nova",
             "fixed_ips": [{"ip_address": self.vm5}]},
        ]  # fmt: skip
        fips = [{"floating_ip_address": self.fip, "port_id": self.vm4_port, "fixed_ip_address": self.vm4}]
        (self.tmp / "ports.json").write_text(json.dumps({"ports": ports, "floatingips": fips}, indent=1))

    def _ovsdb(self) -> None:
        d = self.tmp / "ovs"
        d.mkdir()
        subprocess.run(["ovsdb-tool", "create", str(d / "db"), SCHEMA], check=True)
        self.ovs_proc = subprocess.Popen(["ovsdb-server", str(d / "db"), f"--remote=punix:{self.ovs_sock}",
                                          f"--unixctl={d}/ctl", "--no-chdir", f"--log-file={d}/log"],
                                         stderr=subprocess.DEVNULL)  # fmt: skip
        wait_for(lambda: os.path.exists(self.ovs_sock), 10, "ovsdb-server")
        vsctl = ["ovs-vsctl", f"--db=unix:{self.ovs_sock}", "--no-wait"]
        sh(*vsctl, "init")
        sh(*vsctl, "add-br", "br-int")
        for dev, port, mac in ((self.qr, self.qr_port, "fa:16:3e:00:00:01"),
                               (self.qg, self.qg_port, "fa:16:3e:00:00:02")):  # fmt: skip
            sh(*vsctl, "add-port", "br-int", dev, "--", "set", "Interface", dev, "type=internal",
               f"external_ids:iface-id={port}", f"external_ids:attached-mac={mac}")  # fmt: skip

    def down(self) -> None:
        for ns in (self.router, self.router_tmp, self.vm, self.ext):
            if ns:
                sh("ip", "netns", "del", ns, check=False)
        if self.ovs_proc is not None:
            self.ovs_proc.terminate()
            self.ovs_proc.wait(10)

    # -- traffic (each a program run in a namespace: its packets never leave the lab)

    def send(self, ns: str, proto: str, dst: str, port: int, src: str | None = None) -> None:
        code = (
            "import socket,sys\n"
            f"s=socket.socket(socket.AF_INET, socket.SOCK_{'STREAM' if proto == 'tcp' else 'DGRAM'})\n"
            + (f"s.bind(({src!r}, 0))\n" if src else "")
            + "s.settimeout(0.5)\n"
            + (f"try:\n    s.connect(({dst!r}, {port}))\nexcept OSError:\n    pass\n" if proto == "tcp"
               else f"s.sendto(b'x', ({dst!r}, {port}))\n")
        )  # fmt: skip
        sh("python3", "-c", code, ns=ns)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[NeutronLab]:
    lab = NeutronLab(tmp_path)
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


def config(lab: NeutronLab, out: Path, loglevel: int = 3) -> str:
    neutron = f'ovsdb="unix:{lab.ovs_sock}"\nmapping="{lab.tmp}/ports.json"\nha_confs="{lab.tmp}/ha"\n'
    return f"""[global]
logfile="{out}/daemon.log"
loglevel={loglevel}
stack=log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,neutron1:NEUTRON,json1:JSON
stack=log1:NFLOG,base2:BASE,ifi2:IFINDEX,ip2str2:IP2STR,neutron2:NEUTRON,split1:JSON
stack=ct1:NFCT,ip2str3:IP2STR,neutron3:NEUTRON,json3:JSON

[log1]
group={GROUP}
netns="{lab.glob}"

[ct1]
netns="{lab.glob}"
event_mask=0x5
hash_enable=0
accounting=1

[neutron1]
{neutron}
[neutron2]
{neutron}
[neutron3]
{neutron}
[json1]
file="{out}/packets.json"
timestamp=0

[split1]
file="{out}/{{project}}.json"
split_by="neutron.project_id"
timestamp=0

[json3]
file="{out}/flows.json"
timestamp=0
"""


def records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def one(recs: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    found = [r for r in recs if all(r.get(k) == v for k, v in match.items())]
    assert len(found) == 1, (match, recs)
    return found[0]


def test_router_records_say_who_what_and_which_rule(lab: NeutronLab, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    d = Daemon(out, config(lab, out), out / "daemon.log")
    try:
        # the ruleset read, OVSDB monitored: every instance says so before traffic starts
        wait_for(lambda: d.text().count("NEUTRON '") >= 3, 10, "NEUTRON to start")
        lab.send(lab.ext, "tcp", lab.fip, 22)  # accepted (FWaaS rule), the vm answers RST
        lab.send(lab.ext, "udp", lab.fip, 9999)  # rejected
        lab.send(lab.ext, "tcp", lab.fip, 23)  # dropped
        lab.send(lab.vm, "tcp", lab.client, 80, src=lab.vm4)  # out through the floating IP
        lab.send(lab.vm, "tcp", lab.client, 80, src=lab.vm5)  # out through the gateway's SNAT
        wait_for(lambda: len(records(out / "packets.json")) >= 5, 10, "the NFLOG records")
        wait_for(lambda: len(records(out / "flows.json")) >= 3, 10, "the conntrack NEW records")
        sh("conntrack", "-F", ns=lab.router, check=False)
        wait_for(lambda: len(records(out / "flows.json")) >= 6, 10, "the conntrack DESTROY records")
        # SIGHUP with a broken mapping file: kept, logged, counted; the daemon goes on
        (lab.tmp / "ports.json").write_text('{"ports": [\n{"id": "nonsense"}]}')
        d.signal(signal.SIGHUP)
        wait_for(lambda: "keeping the 4 port(s) read before" in d.text(), 10, "the mapping error")
        lab.send(lab.vm, "tcp", lab.client, 81, src=lab.vm4)
        wait_for(lambda: len(records(out / "packets.json")) >= 6, 10, "a record after SIGHUP")
    finally:
        rc = d.stop()
    assert rc == 0, d.stderr()
    text = d.text()
    assert f"{lab.tmp}/ports.json:2: mapping file: a port needs an 'id' that is a UUID" in text
    counters = counters_at_exit(text)
    assert counters.get("neutron.neutron1.mapping_errors") == 1
    assert not any(k.endswith(("ovsdb_connect_failures", "ruleset_errors")) for k in counters), counters

    pkts = records(out / "packets.json")
    common = {"neutron.router_id": lab.router_id, "neutron.network_id": lab.net, "neutron.port_id": lab.qr_port,
              "neutron.device_role": "router_interface", "neutron.project_id": lab.project,
              "neutron.peer_port_id": lab.qg_port, "neutron.peer_project_id": lab.admin,
              "neutron.ha_state": "master", "neutron.resolved": 1, "oob.netns": lab.router}  # fmt: skip
    for r in (one(pkts, dest_port=22),):
        assert {k: r.get(k) for k in common} == common
        assert (r["neutron.direction"], r["audit.action"], r["oob.in"], r["oob.out"]) == ("ingress", "ACCEPT", lab.qg,
                                                                                          lab.qr)
        assert re.fullmatch(rf"ip filter neutron-l3-agent-accepted handle \d+: -o {lab.qr} -m limit --limit 100/sec "
                            rf"--limit-burst 25 -j NFLOG --nflog-prefix {lab.p_accept} --nflog-group {GROUP}",
                            r["audit.rule"]), r["audit.rule"]  # fmt: skip
    rejected = one(pkts, dest_port=9999)
    dropped = one(pkts, dest_port=23)
    for r in (rejected, dropped):
        # FWaaS logs DROP and REJECT with one prefix: DROP, and the rule names both chains
        assert (r["audit.action"], r["neutron.direction"], r["neutron.port_id"]) == ("DROP", "ingress", lab.qr_port)
        assert "neutron-l3-agent-dropped" in r["audit.rule"] and "neutron-l3-agent-rejected" in r["audit.rule"]
    for src, port in ((lab.vm4, 80), (lab.vm5, 80), (lab.vm4, 81)):  # 81: after SIGHUP, the mapping kept
        r = one(pkts, src_ip=src, dest_port=port)
        assert {k: r.get(k) for k in common} == common
        assert (r["neutron.direction"], r["audit.action"]) == ("egress", "ACCEPT")
        assert f"-i {lab.qr} " in r["audit.rule"]

    flows = records(out / "flows.json")
    assert all(r["audit.action"] == "ACCEPT" and r["neutron.router_id"] == lab.router_id for r in flows)
    assert not [r for r in flows if r.get("orig.l4.dport") in (23, 9999)]  # never confirmed: never a flow
    for event in (1, 4):
        inbound = one(flows, **{"ct.event": event, "orig.l4.dport": 22})
        assert (inbound["neutron.port_id"], inbound["neutron.direction"], inbound["neutron.project_id"]) == (
            lab.vm4_port, "ingress", lab.project)
        assert (inbound["nat.floating_ip"], inbound["nat.fixed_ip"], inbound.get("nat.snat_ip")) == (lab.fip, lab.vm4,
                                                                                                      None)
        assert inbound["neutron.security_groups"] == "web"
        out4 = one(flows, **{"ct.event": event, "src_ip": lab.vm4, "orig.l4.dport": 80})
        assert (out4["neutron.port_id"], out4["neutron.direction"]) == (lab.vm4_port, "egress")
        assert (out4["nat.fixed_ip"], out4["nat.floating_ip"], out4.get("nat.snat_ip")) == (lab.vm4, lab.fip, None)
        out5 = one(flows, **{"ct.event": event, "src_ip": lab.vm5, "orig.l4.dport": 80})
        assert (out5["neutron.port_id"], out5["nat.fixed_ip"], out5["nat.snat_ip"]) == (lab.vm5_port, lab.vm5, lab.gw)
        assert out5["nat.snat_port"] == out5["reply.l4.dport"]
        if event == 4:
            for r in (inbound, out4, out5):
                assert r["flow.packets"] == r["orig.raw.pktcount"] + r["reply.raw.pktcount"] >= 2
                assert r["flow.bytes"] == r["orig.raw.pktlen"] + r["reply.raw.pktlen"] > 0
                assert 0 <= r["flow.duration_ms"] < 60000

    # per project: the router interface's project has every packet record, the gateway's
    # project (the peer) too; nothing went unresolved
    mine, admins = records(out / f"{lab.project}.json"), records(out / f"{lab.admin}.json")
    assert len(mine) == len(admins) == len(pkts) == 6
    assert records(out / "unresolved.json") == []
    assert sorted(p.name for p in out.glob("*.json")) == sorted(
        [f"{lab.project}.json", f"{lab.admin}.json", "unresolved.json", "packets.json", "flows.json"])


def test_a_router_that_comes_later_and_rules_that_change(tmp_path: Path) -> None:
    """A router namespace appears while the daemon runs: its ruleset is read when the input
    attaches it, before its first record; a log rule added later is learnt from the ruleset's
    change notification. No record goes without its verdict."""
    lab = NeutronLab(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    d: Daemon | None = None
    try:
        lab._ovsdb()  # the daemon's OVSDB must be there before it starts
        (lab.tmp / "ports.json").write_text('{"ports": []}')
        (lab.tmp / "ha").mkdir()
        d = Daemon(out, config(lab, out, loglevel=1), out / "daemon.log")
        lab.up(late=True, ovsdb=False)
        read = f"NEUTRON 'neutron1': read the ruleset of {lab.router}: "
        wait_for(lambda: read + "2 log prefix(es)" in d.text(), 10, "the new router's ruleset")
        lab.send(lab.ext, "tcp", lab.fip, 22)
        wait_for(lambda: len(records(out / "packets.json")) >= 1, 10, "the first record")
        p_new = str(secrets.randbits(64))
        sh("iptables-nft", "-I", "neutron-l3-agent-accepted", "1", "-i", lab.qr, "-p", "tcp", "--dport", "80", "-j",
           "NFLOG", "--nflog-group", str(GROUP), "--nflog-prefix", p_new, ns=lab.router)  # fmt: skip
        wait_for(lambda: read + "3 log prefix(es)" in d.text(), 10, "the changed ruleset")
        lab.send(lab.vm, "tcp", lab.client, 80, src=lab.vm4)
        wait_for(lambda: len(records(out / "packets.json")) >= 3, 10, "the records after the change")
    finally:
        rc = d.stop() if d is not None else 0
        lab.down()
    assert rc == 0
    pkts = records(out / "packets.json")
    assert all(r["audit.action"] == "ACCEPT" for r in pkts), pkts
    new = one(pkts, **{"oob.prefix": p_new})
    assert new["audit.rule"].startswith("ip filter neutron-l3-agent-accepted handle ") and p_new in new["audit.rule"]
    assert (new["neutron.direction"], new["neutron.device_role"]) == ("egress", "router_interface")
    counters = counters_at_exit(d.text())
    assert "neutron.neutron1.verdict_unknown_prefix" not in counters, counters
