"""The NEUTRON filter (plugins/filters/neutron.py, netns/neutron.py) on exact records: identity
from OVSDB (a stand-in server on a unix socket) and the mapping file, verdicts from a recorded
ruleset, NFTRACE passed through, prefix patterns, conntrack records with their NAT context and
totals, HA states, SIGHUP, and what a bad mapping file or an absent ovsdb-server does.

Every wait of the filter (HA polling, OVSDB back-off) passes on a FakeClock.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyulogd.codec import neutronrules
from pyulogd.codec.nftruleset import Ruleset
from pyulogd.core.context import Context
from pyulogd.core.errors import ConfigError
from pyulogd.core.plugin import DataType, Key, Source
from pyulogd.core.plugin import KeyType as T
from pyulogd.plugins.filters.neutron import NeutronFilter
from pyulogd.plugins.outputs.json import JsonOutput
from tests.clocked import fake_context, loop_until
from tests.helpers import Capture, make_stack, typed_options
from tests.ovsdb_helpers import FakeServer

VEC = Path(__file__).resolve().parents[1] / "vectors" / "neutron"
R = "0b1c2d3e-4f50-4a61-8b72-93a4b5c6d7e8"
NS = f"qrouter-{R}"
NET_A, NET_B, EXT = ("5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9", "6e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9",
                     "7e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9")  # fmt: skip
PROJ_A, PROJ_B, ADMIN = "736672c700cd43e1bd321aeaf940365c", "836672c700cd43e1bd321aeaf940365c", "a" * 32
QR, QR_B, QG = ("1a2b3c4d-5e6f-4a1b-9c2d-3e4f5a6b7c8d", "2b3c4d5e-6f70-4a1b-9c2d-3e4f5a6b7c8d",
                "9f8e7d6c-5b4a-4c3d-8e2f-1a0b9c8d7e6f")  # fmt: skip
VM_A, VM_B, VM_H = ("e0259ade-86de-482e-a717-f58258f7173f", "f0259ade-86de-482e-a717-f58258f7173f",
                    "3c4d5e6f-7081-4a1b-9c2d-3e4f5a6b7c8d")  # fmt: skip
MAC_H = "fa:16:3e:00:00:0h".replace("h", "7")

PORTS = [
    {"id": QR, "network_id": NET_A, "project_id": PROJ_A, "device_owner": "network:router_interface",
     "device_id": R, "fixed_ips": [{"ip_address": "10.0.0.1"}]},
    {"id": QR_B, "network_id": NET_B, "project_id": PROJ_B, "device_owner": "network:router_interface",
     "device_id": R, "fixed_ips": [{"ip_address": "10.1.0.1"}]},
    {"id": QG, "network_id": EXT, "project_id": ADMIN, "device_owner": "network:router_gateway", "device_id": R,
     "fixed_ips": [{"ip_address": "172.24.4.2"}]},
    {"id": VM_A, "network_id": NET_A, "project_id": PROJ_A, "device_owner": "compute:nova",
     "device_id": "11111111-2222-4333-8444-555555555555", "mac_address": "fa:16:3e:50:aa:b5",
     "fixed_ips": [{"ip_address": "10.0.0.4"}], "security_groups": ["sg-web", "sg-ssh"]},
    {"id": VM_B, "network_id": NET_B, "project_id": PROJ_B, "device_owner": "compute:nova",
     "fixed_ips": [{"ip_address": "10.1.0.7"}]},
    {"id": VM_H, "network_id": NET_A, "project_id": PROJ_A, "device_owner": "compute:nova", "mac_address": MAC_H,
     "fixed_ips": [{"ip_address": "10.0.0.9"}]},
]  # fmt: skip
FIPS = [{"floating_ip_address": "172.24.4.10", "port_id": VM_A}]
OVSDB_ROWS = {
    "br-int": {},
    "qr-1a2b3c4d-5e": {"iface-id": QR, "attached-mac": "fa:16:3e:11:22:33"},
    "qg-9f8e7d6c-5b": {"iface-id": QG},
    "qvo3c4d5e6f-70": {"iface-id": VM_H, "attached-mac": MAC_H, "vm-uuid": "22222222-2222-4333-8444-555555555555"},
}

PKT_KEYS = ("oob.prefix", "oob.in", "oob.out", "raw.mac", "nft.chain", "audit.action", "audit.rule", "ct",
            "oob.netns", "neutron.router_id", "neutron.network_id")  # fmt: skip
CT_KEYS = ("orig.ip.saddr", "orig.ip.daddr", "reply.ip.saddr", "reply.ip.daddr", "reply.l4.dport", "ct.event",
           "flow.start.sec", "flow.start.usec", "flow.end.sec", "flow.end.usec", "orig.raw.pktlen",
           "orig.raw.pktcount", "reply.raw.pktlen", "reply.raw.pktcount", "ct", "oob.netns")  # fmt: skip
_TYPES = {"raw.mac": T.RAW, "ct": T.RAW, "ct.event": T.UINT32, "reply.l4.dport": T.UINT16}


class Pkt(Source):
    """Declares the keys NFLOG+IFINDEX (and NFTRACE) give the filter; the three trailer keys of a
    namespace input come last, as the real inputs have them."""

    name = "PKT"
    output_type = DataType.PACKET
    output_keys = tuple(Key(k, _TYPES.get(k, T.STRING)) for k in PKT_KEYS)
    trailer_keys = 0

    def send(self, **values: Any) -> None:
        self.emit([None] + [values.get(k.name.replace(".", "_")) for k in self.output_keys])


class Flow(Source):
    name = "FLOW"
    output_type = DataType.FLOW
    output_keys = tuple(Key(k, T.IPADDR if k.endswith("addr") else _TYPES.get(k, T.UINT64)) for k in CT_KEYS[:-1]) \
        + (Key("oob.netns", T.STRING),)  # fmt: skip

    def send(self, **values: Any) -> None:
        self.emit([None] + [values.get(k.name.replace(".", "_")) for k in self.output_keys])


def ip(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)


@pytest.fixture
def mapping(tmp_path: Path) -> Path:
    p = tmp_path / "ports.json"
    p.write_text(json.dumps({"ports": PORTS, "floatingips": FIPS}, indent=1))
    return p


@pytest.fixture
def ovsdb(tmp_path: Path) -> Iterator[FakeServer]:
    s = FakeServer(tmp_path / "db.sock")
    yield s
    s.close()


def recorded_rules() -> neutronrules.RuleIndex:
    doc = json.loads((VEC / "ruleset.json").read_text())
    rs = Ruleset.parse(doc)
    rs.add_iptables("ip", (VEC / "iptables-save.txt").read_text())
    return neutronrules.build(doc, rs)


class Rig:
    """A stack SOURCE -> NEUTRON -> CAPTURE on a fake clock; ``rec()`` is the last record as a dict."""

    def __init__(self, source: type[Source], opts: dict[str, Any], server: FakeServer | None = None,
                 rows: dict[str, dict[str, str]] | None = None) -> None:  # fmt: skip
        self.ctx, self.clock = fake_context()
        self.ctx.log.stream = self.log = io.StringIO()
        self.ctx.log.path = "test"
        opts = {"ruleset": 0, "ha_confs": "", "ovsdb": f"unix:{server.path}" if server else "", **opts}
        self.stack = make_stack([source, (NeutronFilter, opts), Capture], self.ctx)
        self.src: Any = self.stack.source
        self.filt: NeutronFilter = self.stack.instances[1]  # type: ignore[assignment]
        self.cap: Capture = self.stack.sink  # type: ignore[assignment]
        if server is not None:
            self.conn = server.serve_monitor(rows if rows is not None else OVSDB_ROWS)
            assert self.filt.ovsdb is not None
            loop_until(self.ctx, lambda: self.filt.ovsdb is not None and self.filt.ovsdb.synced)

    def rec(self) -> dict[str, Any]:
        r = self.cap.records[-1]
        return {k.name: r[s] for k, s in zip(self.cap.wildcard_keys, self.cap.in_slots, strict=True)
                if k.name.startswith(("neutron.", "audit.", "nat.", "flow.d", "flow.b", "flow.p"))}

    def stop(self) -> None:
        for inst in reversed(self.stack.instances):
            inst.stop()


def test_fwaas_record_in_a_router(mapping: Path, ovsdb: FakeServer) -> None:
    rig = Rig(Pkt, {"mapping": mapping}, ovsdb)
    rig.filt.resolver.rules[NS] = recorded_rules()
    rig.src.send(oob_prefix="12823226497704342389", oob_in="qg-9f8e7d6c-5b", oob_out="qr-1a2b3c4d-5e",
                 oob_netns=NS)  # fmt: skip
    assert rig.rec() == {
        "neutron.router_id": R, "neutron.network_id": NET_A, "neutron.port_id": QR, "neutron.device": None,
        "neutron.device_role": "router_interface", "neutron.direction": "ingress", "neutron.project_id": PROJ_A,
        "neutron.peer_port_id": QG, "neutron.peer_project_id": ADMIN, "neutron.ha_state": None,
        "neutron.resolved": 1, "neutron.device_id": None, "neutron.security_groups": None, "audit.action": "ACCEPT",
        "audit.rule": "ip filter neutron-l3-agent-accepted handle 14: -o qr-1a2b3c4d-5e -m limit --limit 100/sec "
                      "--limit-burst 25 -j NFLOG --nflog-prefix 12823226497704342389",
        "nat.fixed_ip": None, "nat.floating_ip": None, "nat.snat_ip": None, "nat.snat_port": None,
        "flow.duration_ms": None, "flow.bytes": None, "flow.packets": None,
    }  # fmt: skip
    # the same packet leaving the project network: egress, same port, the -i rule
    rig.src.send(oob_prefix="12823226497704342389", oob_in="qr-1a2b3c4d-5e", oob_out="qg-9f8e7d6c-5b", oob_netns=NS)
    r = rig.rec()
    assert (r["neutron.port_id"], r["neutron.direction"], r["audit.action"]) == (QR, "egress", "ACCEPT")
    assert "handle 13:" in r["audit.rule"]
    # FWaaS's DROP prefix: the dropped and the rejected chain hold it
    rig.src.send(oob_prefix="777001", oob_in="qg-9f8e7d6c-5b", oob_out="qr-1a2b3c4d-5e", oob_netns=NS)
    assert rig.rec()["audit.action"] == "DROP" and rig.ctx.stats.get("neutron.neutron1.verdict_ambiguous") == 1
    rig.stop()


def test_router_ids_from_ovsdb_win_over_the_name_and_the_rest_comes_from_the_mapping(mapping: Path,
                                                                                      ovsdb: FakeServer) -> None:
    """OVSDB says which port a device is even when the mapping file has another port whose id
    starts the same way; the mapping adds network, project, device, security groups."""
    rows = dict(OVSDB_ROWS, **{"tape0259ade-86": {"iface-id": VM_A}})
    rig = Rig(Pkt, {"mapping": mapping}, ovsdb, rows)
    rig.src.send(oob_in="tape0259ade-86", oob_out="")
    r = rig.rec()
    assert (r["neutron.port_id"], r["neutron.device_role"], r["neutron.direction"]) == (VM_A, "vm_port", "egress")
    assert (r["neutron.network_id"], r["neutron.project_id"]) == (NET_A, PROJ_A)
    assert r["neutron.device_id"] == "11111111-2222-4333-8444-555555555555"
    assert r["neutron.security_groups"] == "sg-web,sg-ssh" and r["neutron.router_id"] is None
    rig.stop()


def test_unresolved_device_keeps_its_name_and_says_so(ovsdb: FakeServer) -> None:
    rig = Rig(Pkt, {}, ovsdb)
    rig.src.send(oob_in="qr-ffffffff-ff", oob_out="eth0", oob_netns=NS)
    r = rig.rec()
    assert (r["neutron.device"], r["neutron.device_role"], r["neutron.resolved"]) == ("qr-ffffffff-ff",
                                                                                      "router_interface", 0)
    assert r["neutron.port_id"] is None and r["neutron.router_id"] == R and r["neutron.direction"] == "egress"
    rig.src.send(oob_in="eth0", oob_out="eth1")
    r = rig.rec()
    assert (r["neutron.device"], r["neutron.device_role"], r["neutron.resolved"]) == (None, "unknown", 0)
    assert rig.ctx.stats.get("neutron.neutron1.unresolved") == 1
    rig.stop()


def test_without_ovsdb_the_mapping_resolves_device_names(mapping: Path, tmp_path: Path) -> None:
    """ovsdb-server absent: a counted, logged degradation; the mapping file's ids by prefix."""
    rig = Rig(Pkt, {"mapping": mapping, "ovsdb": f"unix:{tmp_path}/absent.sock"})
    assert rig.ctx.stats.get("neutron.neutron1.ovsdb_connect_failures") == 1
    assert "cannot use ovsdb-server" in rig.log.getvalue() and "No such file or directory" in rig.log.getvalue()
    rig.src.send(oob_in="qr-2b3c4d5e-6f", oob_out="qg-9f8e7d6c-5b", oob_netns=NS)
    r = rig.rec()
    assert (r["neutron.port_id"], r["neutron.project_id"], r["neutron.peer_port_id"]) == (QR_B, PROJ_B, QG)
    rig.stop()


def test_ovsdb_updates_change_the_answer(ovsdb: FakeServer) -> None:
    rig = Rig(Pkt, {}, ovsdb)
    rig.src.send(oob_in="qr-1a2b3c4d-5e", oob_netns=NS)
    assert rig.rec()["neutron.port_id"] == QR
    ovsdb.update(1, "qr-1a2b3c4d-5e", {"iface-id": QR_B})  # Neutron re-plugged the device
    loop_until(rig.ctx, lambda: rig.ctx.stats.get("neutron.neutron1.ovsdb_updates") == 1)
    rig.src.send(oob_in="qr-1a2b3c4d-5e", oob_netns=NS)
    assert rig.rec()["neutron.port_id"] == QR_B
    ovsdb.update(1, "qr-1a2b3c4d-5e", None)
    loop_until(rig.ctx, lambda: rig.ctx.stats.get("neutron.neutron1.ovsdb_updates") == 2)
    rig.src.send(oob_in="qr-1a2b3c4d-5e", oob_netns=NS)
    assert rig.rec()["neutron.resolved"] == 0
    rig.stop()


def test_nftrace_verdict_passes_through_and_hybrid_chains_name_the_port(ovsdb: FakeServer) -> None:
    rig = Rig(Pkt, {"action_prefixes": "ACCEPT*:DROP"}, ovsdb)  # a pattern must not override NFTRACE
    rule = "ip filter neutron-openvswi-i3c4d5e6f-7 handle 9: -p tcp -m tcp --dport 22 -j RETURN"
    rig.src.send(oob_prefix="ACCEPT ip filter neutron-openvswi-i3c4d5e6f-7:", oob_in="qbr3c4d5e6f-70",
                 oob_out="qbr3c4d5e6f-70", nft_chain="neutron-openvswi-i3c4d5e6f-7", audit_action="ACCEPT",
                 audit_rule=rule)  # fmt: skip
    r = rig.rec()
    assert (r["audit.action"], r["audit.rule"]) == ("ACCEPT", rule)
    assert (r["neutron.port_id"], r["neutron.device_role"]) == (VM_H, "vm_port")
    assert r["neutron.device_id"] == "22222222-2222-4333-8444-555555555555"  # OVSDB vm-uuid
    # qbr cannot tell the direction; the chain can't here (the device is there): the MAC does
    assert r["neutron.direction"] is None
    mac_h = bytes.fromhex(MAC_H.replace(":", ""))
    rig.src.send(oob_in="qbr3c4d5e6f-70", oob_out="qbr3c4d5e6f-70", raw_mac=b"\xff" * 6 + mac_h + b"\x08\x00",
                 audit_action="DROP")  # fmt: skip
    assert (rig.rec()["neutron.direction"], rig.rec()["audit.action"]) == ("egress", "DROP")
    rig.src.send(oob_in="qbr3c4d5e6f-70", oob_out="qbr3c4d5e6f-70", raw_mac=mac_h + b"\x02" * 6 + b"\x08\x00")
    assert rig.rec()["neutron.direction"] == "ingress"
    # a chain alone (no Neutron device): its 10 characters and direction
    rig.src.send(oob_prefix="DROP ip filter neutron-openvswi-o3c4d5e6f-7:", oob_in="eth0",
                 nft_chain="neutron-openvswi-o3c4d5e6f-7", audit_action="DROP")  # fmt: skip
    r = rig.rec()
    assert (r["neutron.port_id"], r["neutron.direction"], r["audit.action"]) == (VM_H, "egress", "DROP")
    rig.stop()


def test_prefix_patterns(tmp_path: Path) -> None:
    rig = Rig(Pkt, {"action_prefixes": "FW-DROP*:drop, FW-OK*:ACCEPT,*reject*:REJECT"})
    for prefix, action in (("FW-DROP in ", "DROP"), ("FW-OK ", "ACCEPT"), ("x reject y", "REJECT"), ("other", None)):
        rig.src.send(oob_prefix=prefix, oob_in="eth0")
        assert rig.rec()["audit.action"] == action, prefix
    rig.stop()


@pytest.mark.parametrize(("text", "why"), [
    ("DROP", "is not GLOB:ACTION"), (":DROP", "is not GLOB:ACTION"), ("x:MAYBE", "unknown action 'MAYBE'"),
])  # fmt: skip
def test_bad_prefix_patterns(text: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        typed_options(NeutronFilter, {"action_prefixes": text})


def ct_zone(zone: int) -> bytes:
    return struct.pack("=HH", 6, 18) + struct.pack("!H", zone) + b"\0\0"


def test_conntrack_records(mapping: Path) -> None:
    rig = Rig(Flow, {"mapping": mapping})
    rig.filt.resolver.rules[NS] = recorded_rules()
    send = rig.src.send
    # the VM opens a connection to the world through the gateway's SNAT
    send(orig_ip_saddr=ip("10.0.0.9"), orig_ip_daddr=ip("198.51.100.1"), reply_ip_saddr=ip("198.51.100.1"),
         reply_ip_daddr=ip("172.24.4.2"), reply_l4_dport=61001, ct_event=1, oob_netns=NS)  # fmt: skip
    r = rig.rec()
    assert (r["neutron.port_id"], r["neutron.direction"], r["neutron.project_id"]) == (VM_H, "egress", PROJ_A)
    assert (r["audit.action"], r["audit.rule"], r["neutron.router_id"]) == ("ACCEPT", None, R)
    assert (r["nat.fixed_ip"], r["nat.snat_ip"], r["nat.snat_port"], r["nat.floating_ip"]) == (
        "10.0.0.9", "172.24.4.2", 61001, None)
    # a client reaches the VM's floating IP (DNAT), and the VM's own way out (float-snat)
    send(orig_ip_saddr=ip("198.51.100.1"), orig_ip_daddr=ip("172.24.4.10"), reply_ip_saddr=ip("10.0.0.4"),
         reply_ip_daddr=ip("198.51.100.1"), ct_event=1, oob_netns=NS)  # fmt: skip
    r = rig.rec()
    assert (r["neutron.port_id"], r["neutron.direction"]) == (VM_A, "ingress")
    assert (r["nat.floating_ip"], r["nat.fixed_ip"], r["nat.snat_ip"]) == ("172.24.4.10", "10.0.0.4", None)
    send(orig_ip_saddr=ip("10.0.0.4"), orig_ip_daddr=ip("198.51.100.1"), reply_ip_saddr=ip("198.51.100.1"),
         reply_ip_daddr=ip("172.24.4.10"), reply_l4_dport=40000, ct_event=4, flow_start_sec=100,
         flow_start_usec=900000, flow_end_sec=102, flow_end_usec=100000, orig_raw_pktlen=300, orig_raw_pktcount=5,
         reply_raw_pktlen=7000, reply_raw_pktcount=6, oob_netns=NS)  # fmt: skip
    r = rig.rec()
    assert (r["nat.floating_ip"], r["nat.fixed_ip"], r["nat.snat_ip"], r["nat.snat_port"]) == (
        "172.24.4.10", "10.0.0.4", None, None)
    assert (r["flow.duration_ms"], r["flow.bytes"], r["flow.packets"]) == (1200, 7300, 11)
    # between two projects' networks on one router: project A's, project B's as the peer
    send(orig_ip_saddr=ip("10.0.0.4"), orig_ip_daddr=ip("10.1.0.7"), reply_ip_saddr=ip("10.1.0.7"),
         reply_ip_daddr=ip("10.0.0.4"), ct_event=1, oob_netns=NS)  # fmt: skip
    r = rig.rec()
    assert (r["neutron.project_id"], r["neutron.peer_project_id"], r["neutron.peer_port_id"]) == (PROJ_A, PROJ_B,
                                                                                                   VM_B)
    assert r["nat.fixed_ip"] is None and r["nat.snat_ip"] is None
    # unknown addresses: the router only
    send(orig_ip_saddr=ip("192.0.2.1"), orig_ip_daddr=ip("192.0.2.2"), reply_ip_saddr=ip("192.0.2.2"),
         reply_ip_daddr=ip("192.0.2.1"), ct_event=1, oob_netns=NS)  # fmt: skip
    r = rig.rec()
    assert (r["neutron.router_id"], r["neutron.resolved"], r["neutron.device_role"]) == (R, 0, "unknown")
    rig.stop()


def test_conntrack_zone_names_the_port(mapping: Path, ovsdb: FakeServer) -> None:
    """On a hybrid compute node (own namespace): zone 4097 is one port's tap and qvb; zone 4098
    is shared by two ports (per network): it names none."""
    rig = Rig(Flow, {}, ovsdb)
    rig.filt.resolver.rules[None] = recorded_rules()
    args = {"orig_ip_saddr": ip("192.0.2.1"), "orig_ip_daddr": ip("192.0.2.2"), "reply_ip_saddr": ip("192.0.2.2"),
            "reply_ip_daddr": ip("192.0.2.1"), "ct_event": 1}  # fmt: skip
    rig.src.send(**args, ct=ct_zone(4097))
    r = rig.rec()
    assert (r["neutron.port_id"], r["neutron.device"], r["neutron.resolved"]) == (VM_H, None, 1)
    rig.src.send(**args, ct=ct_zone(4098))
    assert rig.rec()["neutron.port_id"] is None
    rig.stop()


def test_ha_state_follows_the_state_file(tmp_path: Path) -> None:
    ha = tmp_path / "ha_confs"
    (ha / R).mkdir(parents=True)
    (ha / R / "state").write_text("master\n")
    (ha / "not-a-router").mkdir()
    (ha / "1b1c2d3e-4f50-4a61-8b72-93a4b5c6d7e8").mkdir()
    os.mkfifo(ha / "1b1c2d3e-4f50-4a61-8b72-93a4b5c6d7e8" / "state")  # must not hang the daemon
    rig = Rig(Pkt, {"ha_confs": str(ha), "ha_poll": 2})
    assert rig.ctx.stats.get("neutron.neutron1.ha_errors") == 1
    rig.src.send(oob_in="ha-1a2b3c4d-5e", oob_netns=NS)
    assert (rig.rec()["neutron.ha_state"], rig.rec()["neutron.device_role"]) == ("master", "ha")
    (ha / R / "state").write_text("backup")
    rig.clock.advance(1.9)
    rig.ctx.loop.run_once(0)
    rig.src.send(oob_in="ha-1a2b3c4d-5e", oob_netns=NS)
    assert rig.rec()["neutron.ha_state"] == "master"  # not read again yet
    rig.clock.advance(0.1)
    rig.ctx.loop.run_once(0)
    rig.src.send(oob_in="ha-1a2b3c4d-5e", oob_netns=NS)
    assert rig.rec()["neutron.ha_state"] == "backup"
    (ha / R / "state").write_text("primary")  # newer Neutron's word
    rig.clock.advance(2)
    rig.ctx.loop.run_once(0)
    rig.src.send(oob_in="qr-1a2b3c4d-5e", oob_netns=NS)
    assert rig.rec()["neutron.ha_state"] == "master"
    rig.stop()


def test_sighup_reads_the_mapping_again_and_keeps_it_when_bad(mapping: Path) -> None:
    rig = Rig(Pkt, {"mapping": mapping})
    rig.src.send(oob_in="qr-1a2b3c4d-5e", oob_netns=NS)
    assert rig.rec()["neutron.project_id"] == PROJ_A
    changed = [dict(p, project_id=PROJ_B) if p["id"] == QR else p for p in PORTS]
    mapping.write_text(json.dumps(changed))
    rig.filt.signal(signal.SIGHUP)
    rig.src.send(oob_in="qr-1a2b3c4d-5e", oob_netns=NS)
    assert rig.rec()["neutron.project_id"] == PROJ_B
    mapping.write_text('[\n{"id": "' + QR + '",\n "mac_address": "nonsense"}]')
    rig.filt.signal(signal.SIGHUP)
    rig.src.send(oob_in="qr-1a2b3c4d-5e", oob_netns=NS)
    assert rig.rec()["neutron.project_id"] == PROJ_B  # the old mapping stays
    assert rig.ctx.stats.get("neutron.neutron1.mapping_errors") == 1
    assert rig.ctx.stats.get("neutron.neutron1.mapping_reloads") == 1
    assert f"{mapping}:2: mapping file: port {QR}: 'mac_address' is not a MAC address; keeping the 6 port(s)" \
        in rig.log.getvalue()
    rig.stop()


class PktNoDevices(Pkt):
    """NFLOG without IFINDEX: interface names never reach the filter."""

    name = "PKTNODEV"
    output_keys = tuple(k for k in Pkt.output_keys if k.name not in ("oob.in", "oob.out"))


@pytest.mark.parametrize(("source", "said"), [(PktNoDevices, True), (Pkt, False), (Flow, False)])
def test_a_packet_stack_without_device_names_is_told_at_start(source: type[Source], said: bool) -> None:
    rig = Rig(source, {})
    try:
        assert ("put IFINDEX before NEUTRON" in rig.log.getvalue()) is said, rig.log.getvalue()
    finally:
        rig.stop()


def test_a_bad_mapping_file_refuses_the_start(tmp_path: Path) -> None:
    bad = tmp_path / "ports.csv"
    bad.write_text(f"id,fixed_ips\n{QR},10.0.0.1\n{QG},10.0.0.1;oops\n")
    ctx = Context(loop=fake_context()[0].loop)
    with pytest.raises(ConfigError) as e:
        make_stack([Pkt, (NeutronFilter, {"mapping": bad, "ovsdb": "", "ruleset": 0}), Capture], ctx, start=False)
    assert f"NEUTRON 'neutron1': {bad}:3: mapping file: 'fixed_ips' holds something" in str(e.value)


def test_bad_ovsdb_option() -> None:
    with pytest.raises(ConfigError, match="is not a unix socket"):
        typed_options(NeutronFilter, {"ovsdb": "tcp:127.0.0.1:6640"})


def test_exact_ids_shadow_the_inputs_namespace_ids_in_json(mapping: Path, tmp_path: Path) -> None:
    """The inputs parse the namespace name (trailer keys); NEUTRON's values are what JSON shows,
    and where NEUTRON has none (a qdhcp- network without mapping), the input's value stays."""
    ctx, _clock = fake_context()
    out = tmp_path / "out.json"
    stack = make_stack([Pkt, (NeutronFilter, {"mapping": mapping, "ovsdb": "", "ruleset": 0, "ha_confs": ""}),
                        (JsonOutput, {"file": out, "timestamp": 0})], ctx)  # fmt: skip
    src: Any = stack.source
    src.send(oob_in="qr-2b3c4d5e-6f", oob_netns=NS, neutron_router_id="from-the-name", neutron_network_id=None)
    src.send(oob_in="tap00000000-00", oob_netns=f"qdhcp-{NET_B}", neutron_network_id=NET_B)
    stack.sink.flush()
    first, second = (json.loads(line) for line in out.read_text().splitlines())
    assert (first["neutron.router_id"], first["neutron.network_id"], first["neutron.project_id"]) == (R, NET_B, PROJ_B)
    assert (second["neutron.network_id"], second["neutron.device_role"]) == (NET_B, "dhcp")
    for inst in stack.instances:
        inst.stop()


def test_answers_are_cached_until_something_changes(mapping: Path) -> None:
    rig = Rig(Pkt, {"mapping": mapping})
    for _ in range(5):
        rig.src.send(oob_in="qr-1a2b3c4d-5e", oob_out="qg-9f8e7d6c-5b", oob_netns=NS)
    assert rig.ctx.stats.get("neutron.neutron1.cache_misses") == 1
    assert len({id(r) for r in rig.cap.records}) == 5  # every record its own list, values copied
    rig.filt.signal(signal.SIGHUP)
    rig.src.send(oob_in="qr-1a2b3c4d-5e", oob_out="qg-9f8e7d6c-5b", oob_netns=NS)
    assert rig.ctx.stats.get("neutron.neutron1.cache_misses") == 2
    rig.stop()
