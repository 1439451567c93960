"""Neutron's device, chain and namespace names (netns/devices.py), row by row of the table in
../shared/research/neutron-logging.md, section 5.2."""

from __future__ import annotations

import pytest

from pyulogd.netns.devices import Device, parse_chain, parse_device

R = "0b1c2d3e-4f50-4a61-8b72-93a4b5c6d7e8"  # a router
N = "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9"  # a network

# device, namespace it is in, prefix, 11 (port) or 10 (router) characters, role, router id?,
# OVSDB names that hold its port id, direction of a packet entering / leaving through it
TABLE = [
    ("qr-1a2b3c4d-5e", f"qrouter-{R}", "qr-", "1a2b3c4d-5e", "router_interface", False,
     ("qr-1a2b3c4d-5e",), "egress", "ingress"),
    ("qg-1a2b3c4d-5e", f"qrouter-{R}", "qg-", "1a2b3c4d-5e", "router_gateway", False,
     ("qg-1a2b3c4d-5e",), "ingress", "egress"),
    ("qg-1a2b3c4d-5e", f"snat-{R}", "qg-", "1a2b3c4d-5e", "router_gateway", False,
     ("qg-1a2b3c4d-5e",), "ingress", "egress"),
    ("sg-1a2b3c4d-5e", f"snat-{R}", "sg-", "1a2b3c4d-5e", "snat", False, ("sg-1a2b3c4d-5e",), "egress", "ingress"),
    ("ha-1a2b3c4d-5e", f"qrouter-{R}", "ha-", "1a2b3c4d-5e", "ha", False, ("ha-1a2b3c4d-5e",), "ingress", "egress"),
    ("rfp-0b1c2d3e-4", f"qrouter-{R}", "rfp-", "0b1c2d3e-4", "floating_ip_gateway", True, (), "ingress", "egress"),
    ("fpr-0b1c2d3e-4", f"fip-{N}", "fpr-", "0b1c2d3e-4", "floating_ip_gateway", True, (), "egress", "ingress"),
    ("fg-1a2b3c4d-5e", f"fip-{N}", "fg-", "1a2b3c4d-5e", "floating_ip_gateway", False,
     ("fg-1a2b3c4d-5e",), "ingress", "egress"),
    ("tap1a2b3c4d-5e", f"qdhcp-{N}", "tap", "1a2b3c4d-5e", "dhcp", False, ("tap1a2b3c4d-5e",), "ingress", "egress"),
    ("tap1a2b3c4d-5e", None, "tap", "1a2b3c4d-5e", "vm_port", False,
     ("tap1a2b3c4d-5e", "qvo1a2b3c4d-5e"), "egress", "ingress"),
    ("qvb1a2b3c4d-5e", None, "qvb", "1a2b3c4d-5e", "vm_port", False, ("qvo1a2b3c4d-5e",), "ingress", "egress"),
    ("qvo1a2b3c4d-5e", None, "qvo", "1a2b3c4d-5e", "vm_port", False, ("qvo1a2b3c4d-5e",), "ingress", "egress"),
    ("qbr1a2b3c4d-5e", None, "qbr", "1a2b3c4d-5e", "vm_port", False, ("qvo1a2b3c4d-5e",), None, None),
]  # fmt: skip


@pytest.mark.parametrize(("name", "ns", "prefix", "ident", "role", "router", "ovsdb", "entering", "leaving"), TABLE)
def test_device_table(name: str, ns: str | None, prefix: str, ident: str, role: str, router: bool,
                      ovsdb: tuple[str, ...], entering: str | None, leaving: str | None) -> None:  # fmt: skip
    d = parse_device(name, ns)
    assert isinstance(d, Device)
    assert (d.prefix, d.ident, d.role, d.router, d.ovsdb_names) == (prefix, ident, role, router, ovsdb)
    assert len(name) == 14  # what Neutron makes: IFNAMSIZ - 1 is 15, Neutron uses 14
    assert (d.direction(False), d.direction(True)) == (entering, leaving)


@pytest.mark.parametrize("name", [None, "", "eth0", "lo", "br-int", "qr-", "qr-xyz", "qr-1A2B3C4D-5E",
                                  "qr-1a2b3c4d-5e6", "tap0", "rfp-0b1c2d3e-45", "qvo1a2b3c4d5e", "veth1"])
def test_not_neutron_devices(name: str | None) -> None:
    assert parse_device(name) is None


def test_north_south_traffic_has_one_direction_at_every_port() -> None:
    """Inbound: in through qg- (router gateway), out through qr- (router interface), out through
    the VM's tap on its compute node: ingress at each; outbound: egress at each."""
    qg, qr = parse_device("qg-1a2b3c4d-5e", f"qrouter-{R}"), parse_device("qr-2a2b3c4d-5e", f"qrouter-{R}")
    tap = parse_device("tap3a2b3c4d-5e")
    assert qg and qr and tap
    assert {qg.direction(False), qr.direction(True), tap.direction(True)} == {"ingress"}
    assert {qr.direction(False), qg.direction(True), tap.direction(False)} == {"egress"}


def test_hybrid_chains() -> None:
    assert parse_chain("neutron-openvswi-i2fc5a3b4-7") == ("2fc5a3b4-7", "ingress")
    assert parse_chain("neutron-openvswi-o2fc5a3b4-7") == ("2fc5a3b4-7", "egress")
    assert parse_chain("neutron-openvswi-s2fc5a3b4-7") == ("2fc5a3b4-7", "egress")
    for other in (None, "", "neutron-openvswi-sg-chain", "neutron-openvswi-sg-fallback", "neutron-l3-agent-accepted",
                  "neutron-openvswi-i2fc5a3b4-77", "FORWARD"):
        assert parse_chain(other) is None
