# ruff: noqa: E501 (the iptables-restore texts below keep Neutron's own rule lines whole)
"""A Neutron network node and an iptables_hybrid compute node, built from namespaces, veths
and an Open vSwitch userspace bridge, for end-to-end tests (docs/neutron.md, "The lab").

Everything is ours and unique per run (``tag`` = ``nl`` + 6 random hex digits ``hex``; router
ids are UUIDs that start with ``hex``, so ``qrouter-<hex>*`` follows this lab's routers and no
other, as Neutron names them; port ids are fresh UUIDs), and :meth:`NeutronLab.down` removes it all,
also after a failure: namespaces, the ovsdb-server and ovs-vswitchd this lab started (by
their pids, never by name) and their temporary directory. Traffic stays inside the lab.

* ``<tag>-node`` stands for the network node's own namespace: our ovsdb-server and
  ovs-vswitchd (``datapath_type=netdev``: no kernel module; run directory, database, sockets,
  pid and log files in the lab's temporary directory, never the system's) with ``br-int``
  and ``br-ex``. Every Neutron device's bridge side is an OVS port there whose Interface row
  carries ``external_ids:iface-id`` (the full port UUID), ``attached-mac`` and
  ``iface-status``, as Neutron's interface driver writes them.
* **legacy router** ``qrouter-<r1>``: ``qr-`` (tenant network 10.N.1.1/24) and ``qg-``
  (external 172.31.N.2/24, plus the floating IP 172.31.N.50 of ``vm1``), the L3 agent's NAT
  in iptables-nft (``neutron-l3-agent-PREROUTING`` DNAT, ``-float-snat`` SNAT,
  ``-snat`` ``--random-fully`` SNAT to the gateway), and FWaaS's chains with their NFLOG rules
  (random numeric prefixes, group ``group``): inbound TCP 22 accepted, UDP 9999 rejected,
  anything else inbound dropped, outbound accepted.
* **HA router** ``qrouter-<r2>``: ``qr-`` and ``ha-`` (169.254.192.N), keepalived's state
  file ``<tmp>/ha_confs/<r2>/state`` saying ``master``.
* **DVR router** ``r3``: ``qrouter-<r3>`` with ``qr-`` and ``rfp-<r3[:10]>``, its peer
  ``fpr-<r3[:10]>`` in ``fip-<external network id>`` with ``fg-``; ``snat-<r3>`` with ``sg-``
  and ``qg-``.
* ``qdhcp-<network id>`` with ``tap`` (10.N.1.2).
* ``<tag>-vm1``: an instance plugged the Open vSwitch way (its ``tap`` on ``br-int``), 10.N.1.10.
* **compute node** ``<tag>-cmp`` (iptables_hybrid): ``<tag>-vm2`` (10.N.1.11) -- ``tap`` in
  the Linux bridge ``qbr``, ``qvb``/``qvo`` veth pair, ``qvo`` on ``br-int``; Neutron's
  chains in iptables-nft (``neutron-openvswi-FORWARD`` with ``-m physdev``, ``-sg-chain``,
  ``-i<port>``/``-o<port>``, the shared ``-sg-fallback`` DROP), letting in ICMP and TCP 22 only.
* ``<tag>-ext``: the outside world, 172.31.N.100.
* the **mapping file** ``<tmp>/mapping.json``, as the NEUTRON filter reads it
  (``{"ports": [...], "floatingips": [...]}``, the API's own objects).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.linux.lab import have_root_and_tools, sh, wait_for

SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
TOOLS = ("iptables-nft-restore", "ethtool", "conntrack", "ovsdb-server", "ovsdb-tool", "ovs-vswitchd", "ovs-vsctl", "ip")


def skip_reason() -> str | None:
    """Why the lab cannot be built here (None: it can)."""
    why = have_root_and_tools(*TOOLS)
    if why is None and not os.path.exists(SCHEMA):
        why = "needs Debian's openvswitch-common (vswitch.ovsschema)"
    return why


def no_offload(ns: str, name: str) -> None:
    """Checksums computed in software: a veth hands the userspace switch packets whose TCP and
    UDP checksums are left to hardware that is not there, and the receiver would drop them."""
    sh("ethtool", "-K", name, "tx", "off", ns=ns)


def dev(prefix: str, port_id: str) -> str:
    """Neutron's device name: prefix + port id, cut to 14 characters."""
    return (prefix + port_id)[:14]


class Ovs:
    """An ovsdb-server and an ovs-vswitchd of our own, in ``tmp``, the switch in namespace ``ns``."""

    def __init__(self, tmp: Path, ns: str) -> None:
        self.dir = tmp
        self.ns = ns
        self.sock = tmp / "db.sock"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.env = {**os.environ, "OVS_RUNDIR": str(tmp), "OVS_LOGDIR": str(tmp), "OVS_DBDIR": str(tmp),
                    "OVS_SYSCONFDIR": str(tmp)}

    def start(self) -> None:
        d = self.dir
        subprocess.run(["ovsdb-tool", "create", str(d / "conf.db"), SCHEMA], check=True, env=self.env)
        self.procs.append(subprocess.Popen(
            ["ovsdb-server", str(d / "conf.db"), f"--remote=punix:{self.sock}", f"--unixctl={d / 'ovsdb.ctl'}",
             f"--log-file={d / 'ovsdb-server.log'}", f"--pidfile={d / 'ovsdb-server.pid'}"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for(lambda: self.sock.exists(), 10, "ovsdb-server's socket")
        self.vsctl("--no-wait", "init")
        self.procs.append(subprocess.Popen(
            ["ip", "netns", "exec", self.ns, "ovs-vswitchd", f"unix:{self.sock}", f"--unixctl={d / 'vswitchd.ctl'}",
             f"--log-file={d / 'ovs-vswitchd.log'}", f"--pidfile={d / 'ovs-vswitchd.pid'}"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for(lambda: (d / "vswitchd.ctl").exists(), 10, "ovs-vswitchd")

    def vsctl(self, *args: str) -> str:
        return subprocess.run(["ovs-vsctl", f"--db=unix:{self.sock}", "--timeout=10", *args], check=True, text=True,
                              capture_output=True, env=self.env).stdout

    def add_bridge(self, name: str) -> None:
        self.vsctl("add-br", name, "--", "set", "bridge", name, "datapath_type=netdev")
        sh("ip", "link", "set", name, "up", ns=self.ns, check=False)

    def add_port(self, bridge: str, name: str, port_id: str | None = None, mac: str | None = None,
                 vm: str | None = None) -> None:
        args = ["add-port", bridge, name]
        if port_id is not None:
            args += ["--", "set", "Interface", name, f"external_ids:iface-id={port_id}",
                     "external_ids:iface-status=active"]
            if mac is not None:
                args.append(f"external_ids:attached-mac={mac}")
            if vm is not None:
                args.append(f"external_ids:vm-uuid={vm}")
        self.vsctl(*args)

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
        self.procs.clear()


@dataclass
class Port:
    """A Neutron port as the lab made it (and as the mapping file says)."""

    id: str
    device: str
    owner: str
    network_id: str
    project_id: str | None
    device_id: str
    mac: str
    ips: list[str] = field(default_factory=list)
    security_groups: list[str] = field(default_factory=list)
    floating_ip: str | None = None

    def api(self) -> dict[str, Any]:
        owner = {} if self.project_id is None else {"project_id": self.project_id, "tenant_id": self.project_id}
        return {"id": self.id, "network_id": self.network_id, **owner, "device_owner": self.owner,
                "device_id": self.device_id,
                "mac_address": self.mac, "fixed_ips": [{"ip_address": ip, "subnet_id": str(uuid.uuid5(
                    uuid.NAMESPACE_OID, self.network_id))} for ip in self.ips],
                "security_groups": self.security_groups, "status": "ACTIVE", "admin_state_up": True}


def _mac(n: int, k: int) -> str:
    return f"fa:16:3e:{n:02x}:{k >> 8:02x}:{k & 0xff:02x}"


class NeutronLab:
    """The lab described in the module docstring: ``up()`` builds it, ``down()`` removes it."""

    def __init__(self, tmp: Path, group: int = 11) -> None:
        # Router ids are UUIDs (rfp-/fpr- carry 10 characters of one, which must look like one)
        # that start with the lab's random hex digits, so ``qrouter-<hex>*`` finds this lab's.
        self.hex = secrets.token_hex(3)
        self.tag = f"nl{self.hex}"
        self.tmp = tmp
        self.group = group
        self.n = secrets.randbelow(200) + 20
        n = self.n
        self.project = uuid.uuid4().hex  # keystone project ids: 32 hex digits
        self.admin_project = uuid.uuid4().hex
        self.net_id = str(uuid.uuid4())
        self.ext_net_id = str(uuid.uuid4())
        self.ha_net_id = str(uuid.uuid4())
        self.r1, self.r2, self.r3 = (self.hex + str(uuid.uuid4())[6:] for _ in range(3))
        self.node = f"{self.tag}-node"
        self.cmp = f"{self.tag}-cmp"
        self.vm1, self.vm2, self.ext = f"{self.tag}-vm1", f"{self.tag}-vm2", f"{self.tag}-ext"
        self.qrouter1, self.qrouter2, self.qrouter3 = (f"qrouter-{r}" for r in (self.r1, self.r2, self.r3))
        self.snat3 = f"snat-{self.r3}"
        self.fip = f"fip-{self.ext_net_id}"
        self.qdhcp = f"qdhcp-{self.net_id}"
        self.namespaces = [self.node, self.cmp, self.vm1, self.vm2, self.ext, self.qrouter1, self.qrouter2,
                           self.qrouter3, self.snat3, self.fip, self.qdhcp]
        self.vm1_id, self.vm2_id = str(uuid.uuid4()), str(uuid.uuid4())
        self.gw4, self.vm1_ip, self.vm2_ip, self.dhcp_ip = f"10.{n}.1.1", f"10.{n}.1.10", f"10.{n}.1.11", f"10.{n}.1.2"
        self.ext_ip, self.qg_ip, self.fip_ip = f"172.31.{n}.100", f"172.31.{n}.2", f"172.31.{n}.50"
        sg = str(uuid.uuid4())
        P = Port
        ports = {
            "qr1": P(str(uuid.uuid4()), "", "network:router_interface", self.net_id, self.project, self.r1, _mac(n, 1),
                     [self.gw4]),
            "qg1": P(str(uuid.uuid4()), "", "network:router_gateway", self.ext_net_id, self.admin_project, self.r1,
                     _mac(n, 2), [self.qg_ip]),
            "vm1": P(str(uuid.uuid4()), "", "compute:nova", self.net_id, self.project, self.vm1_id, _mac(n, 3),
                     [self.vm1_ip], [sg], self.fip_ip),
            "vm2": P(str(uuid.uuid4()), "", "compute:nova", self.net_id, self.project, self.vm2_id, _mac(n, 4),
                     [self.vm2_ip], [sg]),
            "dhcp": P(str(uuid.uuid4()), "", "network:dhcp", self.net_id, self.project, f"dhcp-{self.tag}",
                      _mac(n, 5), [self.dhcp_ip]),
            "qr2": P(str(uuid.uuid4()), "", "network:ha_router_replicated_interface", self.net_id, self.project,
                     self.r2, _mac(n, 6), [f"10.{n}.1.3"]),
            "ha2": P(str(uuid.uuid4()), "", "network:router_ha_interface", self.ha_net_id, None, self.r2, _mac(n, 7),
                     [f"169.254.192.{n}"]),
            "qr3": P(str(uuid.uuid4()), "", "network:router_interface_distributed", self.net_id, self.project,
                     self.r3, _mac(n, 8), [f"10.{n}.1.4"]),
            "sg3": P(str(uuid.uuid4()), "", "network:router_centralized_snat", self.net_id, self.project, self.r3,
                     _mac(n, 9), [f"10.{n}.1.5"]),
            "qg3": P(str(uuid.uuid4()), "", "network:router_gateway", self.ext_net_id, self.admin_project, self.r3,
                     _mac(n, 10), [f"172.31.{n}.3"]),
            "fg": P(str(uuid.uuid4()), "", "network:floatingip_agent_gateway", self.ext_net_id, self.admin_project,
                    f"agent-{self.tag}", _mac(n, 11), [f"172.31.{n}.4"]),
        }
        prefixes = {"qr1": "qr-", "qg1": "qg-", "vm1": "tap", "vm2": "tap", "dhcp": "tap", "qr2": "qr-", "ha2": "ha-",
                    "qr3": "qr-", "sg3": "sg-", "qg3": "qg-", "fg": "fg-"}
        for k, p in ports.items():
            p.device = dev(prefixes[k], p.id)
        self.ports = ports
        self.sg = sg
        self.ovs = Ovs(tmp / "ovs", self.node)
        self.ha_confs = tmp / "ha_confs"
        self.mapping = tmp / "mapping.json"
        # FWaaS's random numeric prefixes, one per (port, event) (uuid4().int & (2**64-1)).
        self.prefix_accept = str(uuid.uuid4().int & (2**64 - 1))
        self.prefix_drop = str(uuid.uuid4().int & (2**64 - 1))
        self.rfp, self.fpr = f"rfp-{self.r3}"[:14], f"fpr-{self.r3}"[:14]

    # --- building ------------------------------------------------------------------------------
    def up(self) -> NeutronLab:
        try:
            self._up()
        except BaseException:
            self.down()
            raise
        return self

    def _up(self) -> None:
        for ns in self.namespaces:
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "set", "lo", "up", ns=ns)
            sh("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", ns=ns, check=False)
        (self.tmp / "ovs").mkdir(parents=True, exist_ok=True)
        self.ovs.start()
        self.ovs.add_bridge("br-int")
        self.ovs.add_bridge("br-ex")
        p = self.ports
        n = self.n
        # Neutron's devices: the namespace side carries the name, the bridge side is an OVS
        # port of the same name in the node's namespace, with the port's iface-id.
        self._plug(self.qrouter1, p["qr1"], "br-int", f"{self.gw4}/24")
        self._plug(self.qrouter1, p["qg1"], "br-ex", f"{self.qg_ip}/24", extra=[f"{self.fip_ip}/32"])
        self._plug(self.vm1, p["vm1"], "br-int", f"{self.vm1_ip}/24", inside="eth0", vm=self.vm1_id)
        self._plug(self.qdhcp, p["dhcp"], "br-int", f"{self.dhcp_ip}/24")
        self._plug(self.qrouter2, p["qr2"], "br-int", f"10.{n}.1.3/24")
        self._plug(self.qrouter2, p["ha2"], "br-int", f"169.254.192.{n}/18")
        self._plug(self.qrouter3, p["qr3"], "br-int", f"10.{n}.1.4/24")
        self._plug(self.snat3, p["sg3"], "br-int", f"10.{n}.1.5/24")
        self._plug(self.snat3, p["qg3"], "br-ex", f"172.31.{n}.3/24")
        self._plug(self.fip, p["fg"], "br-ex", f"172.31.{n}.4/24")
        # DVR: rfp-/fpr- (named after the router) join the router and the FIP namespace.
        sh("ip", "link", "add", self.rfp, "netns", self.qrouter3, "type", "veth", "peer", "name", self.fpr,
           "netns", self.fip)
        sh("ip", "addr", "add", "169.254.106.114/31", "dev", self.rfp, ns=self.qrouter3)
        sh("ip", "addr", "add", "169.254.106.115/31", "dev", self.fpr, ns=self.fip)
        sh("ip", "link", "set", self.rfp, "up", ns=self.qrouter3)
        sh("ip", "link", "set", self.fpr, "up", ns=self.fip)
        # The outside world on br-ex.
        ext_side = f"ex{self.tag}"[:14]
        sh("ip", "link", "add", "eth0", "netns", self.ext, "type", "veth", "peer", "name", ext_side, "netns", self.node)
        sh("ip", "addr", "add", f"{self.ext_ip}/24", "dev", "eth0", ns=self.ext)
        sh("ip", "link", "set", "eth0", "up", ns=self.ext)
        sh("ip", "link", "set", ext_side, "up", ns=self.node)
        no_offload(self.ext, "eth0")
        no_offload(self.node, ext_side)
        self.ovs.add_port("br-ex", ext_side)
        # Routing: the VMs through the legacy router; the router forwards.
        for ns in (self.qrouter1, self.qrouter2, self.qrouter3, self.snat3, self.fip):
            sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=ns)
        sh("ip", "route", "add", "default", "via", self.gw4, ns=self.vm1)
        sh("ip", "route", "add", "default", "via", self.qg_ip, ns=self.ext, check=False)
        self._compute_node()
        self._router_rules()
        self._ha_state("master")
        self.write_mapping()
        # The switch learns every MAC once (netdev datapath: the first packets are slow).
        wait_for(lambda: self.ping(self.vm1, self.gw4), 20, "vm1 to reach its router through br-int")
        wait_for(lambda: self.ping(self.vm2, self.gw4), 20, "vm2 to reach its router through the hybrid plug")
        wait_for(lambda: self.ping(self.qrouter1, self.ext_ip), 20, "the router to reach the outside")

    def _plug(self, ns: str, port: Port, bridge: str, cidr: str, *, inside: str | None = None,
              extra: list[str] | None = None, vm: str | None = None) -> None:
        name = inside or port.device
        sh("ip", "link", "add", name, "netns", ns, "address", port.mac, "type", "veth", "peer", "name", port.device,
           "netns", self.node)
        for c in [cidr, *(extra or [])]:
            sh("ip", "addr", "add", c, "dev", name, ns=ns)
        sh("ip", "link", "set", name, "up", ns=ns)
        sh("ip", "link", "set", port.device, "up", ns=self.node)
        no_offload(ns, name)
        no_offload(self.node, port.device)
        self.ovs.add_port(bridge, port.device, port.id, port.mac, vm)

    def _compute_node(self) -> None:
        """vm2 plugged the iptables_hybrid way: tap -- qbr -- qvb/qvo -- br-int."""
        port = self.ports["vm2"]
        short = port.id[:11]
        self.tap2, self.qbr2, self.qvb2, self.qvo2 = (f"{p}{short}" for p in ("tap", "qbr", "qvb", "qvo"))
        sh("ip", "link", "add", "eth0", "netns", self.vm2, "address", port.mac, "type", "veth", "peer", "name",
           self.tap2, "netns", self.cmp)
        sh("ip", "link", "add", self.qbr2, "type", "bridge", ns=self.cmp)
        sh("ip", "link", "add", self.qvb2, "netns", self.cmp, "type", "veth", "peer", "name", self.qvo2,
           "netns", self.node)
        for d in (self.tap2, self.qvb2):
            sh("ip", "link", "set", d, "master", self.qbr2, ns=self.cmp)
        for d in (self.qbr2, self.tap2, self.qvb2):
            sh("ip", "link", "set", d, "up", ns=self.cmp)
        sh("ip", "link", "set", self.qvo2, "up", ns=self.node)
        for ns, d in ((self.vm2, "eth0"), (self.cmp, self.tap2), (self.cmp, self.qvb2), (self.node, self.qvo2)):
            no_offload(ns, d)
        self.ovs.add_port("br-int", self.qvo2, port.id, port.mac, self.vm2_id)
        sh("ip", "addr", "add", f"{self.vm2_ip}/24", "dev", "eth0", ns=self.vm2)
        sh("ip", "link", "set", "eth0", "up", ns=self.vm2)
        sh("ip", "route", "add", "default", "via", self.gw4, ns=self.vm2)
        self.hybrid_filtering = sh("sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1", ns=self.cmp,
                                   check=False).returncode == 0
        sh("iptables-nft-restore", ns=self.cmp, input=self.hybrid_rules())

    def hybrid_rules(self) -> str:
        """The OVSHybridIptablesFirewallDriver's chains for vm2 (neutron/agent/linux/iptables_firewall.py)."""
        port, tap = self.ports["vm2"], self.tap2
        i, o, s = (f"neutron-openvswi-{c}{port.id}"[:28] for c in ("i", "o", "s"))
        return f"""*raw
:PREROUTING ACCEPT [0:0]
:neutron-openvswi-PREROUTING - [0:0]
-A PREROUTING -j neutron-openvswi-PREROUTING
-A neutron-openvswi-PREROUTING -m physdev --physdev-in {self.qvb2} -m comment --comment "Set zone for {port.id[:11]}" -j CT --zone 4097
-A neutron-openvswi-PREROUTING -m physdev --physdev-in {tap} -m comment --comment "Set zone for {port.id[:11]}" -j CT --zone 4097
COMMIT
*filter
:FORWARD ACCEPT [0:0]
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
-A neutron-openvswi-FORWARD -m physdev --physdev-out {tap} --physdev-is-bridged -m comment --comment "Direct traffic from the VM interface to the security group chain." -j neutron-openvswi-sg-chain
-A neutron-openvswi-FORWARD -m physdev --physdev-in {tap} --physdev-is-bridged -m comment --comment "Direct traffic from the VM interface to the security group chain." -j neutron-openvswi-sg-chain
-A neutron-openvswi-sg-chain -m physdev --physdev-out {tap} --physdev-is-bridged -m comment --comment "Jump to the VM specific chain." -j {i}
-A neutron-openvswi-sg-chain -m physdev --physdev-in {tap} --physdev-is-bridged -m comment --comment "Jump to the VM specific chain." -j {o}
-A neutron-openvswi-sg-chain -j ACCEPT
-A {i} -m state --state RELATED,ESTABLISHED -m comment --comment "Direct packets associated with a known session to the RETURN chain." -j RETURN
-A {i} -p icmp -j RETURN
-A {i} -p tcp -m tcp --dport 22 -j RETURN
-A {i} -m state --state INVALID -m comment --comment "Drop packets that appear related to an existing connection (e.g. TCP ACK/FIN) but do not have an entry in conntrack." -j DROP
-A {i} -m comment --comment "Send unmatched traffic to the fallback chain." -j neutron-openvswi-sg-fallback
-A {o} -s 0.0.0.0/32 -d 255.255.255.255/32 -p udp -m udp --sport 68 --dport 67 -m comment --comment "Allow DHCP client traffic." -j RETURN
-A {o} -j {s}
-A {o} -m state --state RELATED,ESTABLISHED -m comment --comment "Direct packets associated with a known session to the RETURN chain." -j RETURN
-A {o} -j RETURN
-A {s} -s {self.vm2_ip}/32 -m mac --mac-source {port.mac.upper()} -m comment --comment "Allow traffic from defined IP/MAC pairs." -j RETURN
-A {s} -m comment --comment "Drop traffic without an IP/MAC allow rule." -j DROP
-A neutron-openvswi-sg-fallback -m comment --comment "Default drop rule for unmatched traffic." -j DROP
COMMIT
"""

    def router_rules(self) -> str:
        """The legacy router's iptables (L3 agent NAT, FWaaS v2 with its log rules)."""
        qr, qg = self.ports["qr1"].device, self.ports["qg1"].device
        fwg = uuid.uuid4().hex[:8]
        iv4, ov4 = f"neutron-l3-agent-iv4{fwg}", f"neutron-l3-agent-ov4{fwg}"
        log = f"-m limit --limit 100/sec --limit-burst 25 -j NFLOG --nflog-group {self.group}"
        return f"""*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:neutron-l3-agent-PREROUTING - [0:0]
:neutron-l3-agent-OUTPUT - [0:0]
:neutron-l3-agent-POSTROUTING - [0:0]
:neutron-l3-agent-float-snat - [0:0]
:neutron-l3-agent-snat - [0:0]
:neutron-postrouting-bottom - [0:0]
-A PREROUTING -j neutron-l3-agent-PREROUTING
-A OUTPUT -j neutron-l3-agent-OUTPUT
-A POSTROUTING -j neutron-l3-agent-POSTROUTING
-A POSTROUTING -j neutron-postrouting-bottom
-A neutron-l3-agent-PREROUTING -d {self.fip_ip}/32 -i {qg} -j DNAT --to-destination {self.vm1_ip}
-A neutron-l3-agent-OUTPUT -d {self.fip_ip}/32 -o lo -j DNAT --to-destination {self.vm1_ip}
-A neutron-l3-agent-POSTROUTING ! -o {qg} -m conntrack ! --ctstate DNAT -j ACCEPT
-A neutron-l3-agent-float-snat -s {self.vm1_ip}/32 -j SNAT --to-source {self.fip_ip} --random-fully
-A neutron-l3-agent-snat -j neutron-l3-agent-float-snat
-A neutron-l3-agent-snat -o {qg} -j SNAT --to-source {self.qg_ip} --random-fully
-A neutron-postrouting-bottom -m comment --comment "Perform source NAT on outgoing traffic." -j neutron-l3-agent-snat
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:neutron-l3-agent-FORWARD - [0:0]
:neutron-l3-agent-INPUT - [0:0]
:neutron-l3-agent-accepted - [0:0]
:neutron-l3-agent-dropped - [0:0]
:neutron-l3-agent-rejected - [0:0]
:neutron-l3-agent-fwaas-defau - [0:0]
:{iv4} - [0:0]
:{ov4} - [0:0]
-A INPUT -j neutron-l3-agent-INPUT
-A FORWARD -j neutron-l3-agent-FORWARD
-A neutron-l3-agent-INPUT -p tcp -m tcp --dport 9697 -j DROP
-A neutron-l3-agent-FORWARD -o {qr} -j {iv4}
-A neutron-l3-agent-FORWARD -i {qr} -j {ov4}
-A neutron-l3-agent-FORWARD -o {qr} -j neutron-l3-agent-fwaas-defau
-A neutron-l3-agent-FORWARD -i {qr} -j neutron-l3-agent-fwaas-defau
-A neutron-l3-agent-fwaas-defau -j neutron-l3-agent-dropped
-A {iv4} -m state --state INVALID -j neutron-l3-agent-dropped
-A {iv4} -m state --state RELATED,ESTABLISHED -j ACCEPT
-A {iv4} -p tcp -m tcp --dport 22 -j neutron-l3-agent-accepted
-A {iv4} -p udp -m udp --dport 9999 -j neutron-l3-agent-rejected
-A {iv4} -j neutron-l3-agent-dropped
-A {ov4} -m state --state INVALID -j neutron-l3-agent-dropped
-A {ov4} -m state --state RELATED,ESTABLISHED -j ACCEPT
-A {ov4} -j neutron-l3-agent-accepted
-A neutron-l3-agent-accepted -i {qr} {log} --nflog-prefix {self.prefix_accept}
-A neutron-l3-agent-accepted -o {qr} {log} --nflog-prefix {self.prefix_accept}
-A neutron-l3-agent-accepted -j ACCEPT
-A neutron-l3-agent-dropped -i {qr} {log} --nflog-prefix {self.prefix_drop}
-A neutron-l3-agent-dropped -o {qr} {log} --nflog-prefix {self.prefix_drop}
-A neutron-l3-agent-dropped -j DROP
-A neutron-l3-agent-rejected -i {qr} {log} --nflog-prefix {self.prefix_drop}
-A neutron-l3-agent-rejected -o {qr} {log} --nflog-prefix {self.prefix_drop}
-A neutron-l3-agent-rejected -p udp -j REJECT --reject-with icmp-port-unreachable
-A neutron-l3-agent-rejected -j REJECT --reject-with icmp-port-unreachable
COMMIT
"""

    def _router_rules(self) -> None:
        sh("iptables-nft-restore", ns=self.qrouter1, input=self.router_rules())

    def _ha_state(self, state: str) -> None:
        d = self.ha_confs / self.r2
        d.mkdir(parents=True, exist_ok=True)
        (d / "state").write_text(state + "\n")

    def set_ha_state(self, state: str) -> None:
        """keepalived's notify script writes the new state (master, backup, fault)."""
        self._ha_state(state)

    def write_mapping(self) -> None:
        """The Neutron API's ports and floating IPs, as ``openstack`` exports them."""
        p = self.ports
        doc = {
            "ports": [port.api() for port in p.values()],
            "floatingips": [{"id": str(uuid.uuid4()), "floating_ip_address": self.fip_ip,
                             "fixed_ip_address": self.vm1_ip, "port_id": p["vm1"].id,
                             "router_id": self.r1, "project_id": self.project,
                             "floating_network_id": self.ext_net_id}],
        }
        self.mapping.write_text(json.dumps(doc, indent=1))

    # --- using ---------------------------------------------------------------------------------
    def ping(self, ns: str, addr: str, count: int = 1) -> bool:
        return sh("ping", "-c", str(count), "-W", "1", "-i", "0.2", addr, ns=ns, check=False).returncode == 0

    def udp(self, ns: str, addr: str, port: int, payload: bytes = b"lab", sport: int = 0) -> None:
        """One UDP datagram from ``ns``."""
        code = ("import socket,sys;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);"
                f"s.bind(('',{sport}));s.sendto(sys.stdin.buffer.read(),({addr!r},{port}))")
        subprocess.run(["ip", "netns", "exec", ns, "python3", "-c", code], input=payload, check=True, timeout=10)

    def tcp_connect(self, ns: str, addr: str, port: int, timeout: float = 2.0) -> bool:
        """A TCP connection attempt from ``ns``: True when it was accepted."""
        code = ("import socket,sys\ntry:\n socket.create_connection((sys.argv[1],int(sys.argv[2])),"
                f"timeout={timeout}).close()\nexcept OSError: sys.exit(1)")
        return subprocess.run(["ip", "netns", "exec", ns, "python3", "-c", code, addr, str(port)],
                              timeout=timeout + 10).returncode == 0

    def listen_tcp(self, ns: str, port: int) -> subprocess.Popen[bytes]:
        """A TCP server in ``ns`` accepting and closing connections until killed."""
        code = ("import socket\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
                f"s.bind(('',{port}));s.listen(16)\nwhile True:\n c,_=s.accept();c.close()")
        proc = subprocess.Popen(["ip", "netns", "exec", ns, "python3", "-c", code])
        wait_for(lambda: f":{port:04X}" in sh("cat", "/proc/net/tcp", ns=ns).stdout, 10, "the TCP server")
        return proc

    def conntrack_flush(self, ns: str) -> None:
        sh("conntrack", "-F", ns=ns, check=False)

    def down(self) -> None:
        self.ovs.stop()
        for ns in self.namespaces:
            sh("ip", "netns", "del", ns, check=False)
        shutil.rmtree(self.tmp / "ovs", ignore_errors=True)

    def __enter__(self) -> NeutronLab:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()


def flood(ns: str, addr: str, port: int, count: int, rate: float) -> float:
    """``count`` UDP datagrams from ``ns`` at ``rate`` per second, paced on the clock (not
    bursts); returns the seconds it took."""
    code = f"""
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
start = time.monotonic()
for i in range({count}):
    due = start + i / {rate}
    now = time.monotonic()
    if due > now:
        time.sleep(due - now)
    s.sendto(b"flood %d" % i, ({addr!r}, {port}))
print(time.monotonic() - start)
"""
    out = subprocess.run(["ip", "netns", "exec", ns, "python3", "-c", code], check=True, text=True,
                         capture_output=True, timeout=count / rate + 60).stdout
    return float(out.strip())
