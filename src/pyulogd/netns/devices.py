"""What Neutron's device and chain names say: which port or router, and what role.

Neutron names every device it creates ``<prefix><first 11 characters of a UUID>`` (14
characters, ``IFNAMSIZ`` allowing 15): the 8 first hex digits of the UUID, its dash and 2
more (research, neutron-logging.md section 5.2). Which UUID depends on the prefix:

============  ========================================  =====================  ============
prefix        where                                     UUID                   role
============  ========================================  =====================  ============
``qr-``       qrouter namespace                         router interface port  router_interface
``qg-``       qrouter (legacy, HA) or snat (DVR)        gateway port           router_gateway
``sg-``       snat namespace (DVR)                      SNAT interface port    snat
``ha-``       qrouter namespace (HA)                    HA port                ha
``fg-``       fip namespace (DVR)                       FIP agent gateway port floating_ip_gateway
``tap``       qdhcp namespace                           DHCP port              dhcp
``tap``       compute node (root namespace)             VM port                vm_port
``qvo``       compute node, OVS side of the veth pair   VM port                vm_port
``qvb``       compute node, bridge side (hybrid)        VM port                vm_port
``qbr``       compute node, per-port Linux bridge       VM port                vm_port
``rfp-``      qrouter namespace (DVR)                   **router** (10 chars)  floating_ip_gateway
``fpr-``      fip namespace (DVR)                       **router** (10 chars)  floating_ip_gateway
============  ========================================  =====================  ============

``rfp-``/``fpr-`` are the two ends of the veth between a DVR router and the FIP namespace:
no Neutron port stands behind them, only the router, so their role is the FIP path's.

Only the ``qr-``, ``qg-``, ``sg-``, ``ha-``, ``fg-``, ``tap`` and ``qvo`` devices are in
OVSDB (with ``external_ids:iface-id``); ``qvb``, ``qbr`` and the hybrid ``tap`` are found
through their ``qvo`` sibling (:attr:`Device.ovsdb_names`).

Direction: "ingress" is traffic heading for the tenant side of the port: the instance behind
a VM port, the project network behind a router interface or SNAT port (as FWaaS's ingress
policy, applied with ``-o qr-...``), the router behind its gateway port or its FIP link, the
DHCP server behind its port. So north-south traffic has the same direction at every port on
its way. :attr:`Device.ingress_is_out` says whether a packet *leaving* through the device
(``oob.out``) is ingress.

Chains of Neutron's iptables_hybrid firewall carry 10 characters of the port id and the
direction: ``neutron-openvswi-i<10>`` (to the VM: ingress), ``-o<10>`` (from the VM:
egress), ``-s<10>`` (anti-spoofing of what the VM sends: egress) (:func:`parse_chain`).

Pure functions on strings; no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ROLES = ("router_interface", "router_gateway", "snat", "floating_ip_gateway", "dhcp", "vm_port", "ha", "unknown")
ROUTER_INTERFACE, ROUTER_GATEWAY, SNAT, FIP_GATEWAY, DHCP, VM_PORT, HA, UNKNOWN = ROLES
INGRESS, EGRESS = "ingress", "egress"

# prefix -> (role, carries a router id rather than a port id, oob.out is ingress; None: cannot
# tell, as for the per-port bridge, which is both a packet's way in and its way out)
_PREFIXES: dict[str, tuple[str, bool, bool | None]] = {
    "qr-": (ROUTER_INTERFACE, False, True),
    "sg-": (SNAT, False, True),
    "qg-": (ROUTER_GATEWAY, False, False),
    "ha-": (HA, False, False),
    "fg-": (FIP_GATEWAY, False, False),
    "rfp-": (FIP_GATEWAY, True, False),
    "fpr-": (FIP_GATEWAY, True, True),
    "tap": (VM_PORT, False, True),  # in a qdhcp namespace: dhcp, oob.out is egress (see parse_device)
    "qvo": (VM_PORT, False, False),
    "qvb": (VM_PORT, False, False),
    "qbr": (VM_PORT, False, None),
}
# 11 characters of a port UUID; 10 of a router UUID (rfp-/fpr-) or of a port in a chain name.
_PORT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{2}\Z")
_SHORT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]\Z")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
# Role of a port by Neutron's device_owner (mapping file): what the device name cannot tell.
OWNER_ROLES = {
    "network:router_interface": ROUTER_INTERFACE,
    "network:router_interface_distributed": ROUTER_INTERFACE,
    "network:ha_router_replicated_interface": ROUTER_INTERFACE,
    "network:router_gateway": ROUTER_GATEWAY,
    "network:router_centralized_snat": SNAT,
    "network:floatingip_agent_gateway": FIP_GATEWAY,
    "network:router_ha_interface": HA,
    "network:dhcp": DHCP,
}
# Which role a record is attributed to when it went through two Neutron devices: the port
# that stands for a tenant's network or instance first (lower is preferred).
ROLE_RANK = {VM_PORT: 0, ROUTER_INTERFACE: 1, SNAT: 1, DHCP: 2, ROUTER_GATEWAY: 3, FIP_GATEWAY: 4, HA: 5,
             UNKNOWN: 6}  # fmt: skip
_CHAIN = re.compile(r"neutron-openvswi-([ios])([0-9a-f]{8}-[0-9a-f])\Z")


@dataclass(frozen=True, slots=True)
class Device:
    """A device name read by Neutron's conventions."""

    name: str
    prefix: str
    ident: str  # 11 characters of a port id, or 10 of a router id (``router``)
    role: str
    router: bool  # ident is a router id (rfp-/fpr-)
    ingress_is_out: bool | None

    @property
    def ovsdb_names(self) -> tuple[str, ...]:
        """The OVSDB Interface names that hold this device's port id, best first."""
        if self.router:
            return ()
        if self.prefix in ("qvb", "qbr"):
            return ("qvo" + self.ident,)
        if self.prefix == "tap" and self.role == VM_PORT:
            return (self.name, "qvo" + self.ident)  # OVS firewall: tap in OVSDB; hybrid: its qvo
        return (self.name,)

    def direction(self, out: bool) -> str | None:
        """The direction of a packet that entered (``out`` False) or left (True) through it;
        None where the name cannot tell (``qbr``)."""
        if self.ingress_is_out is None:
            return None
        return INGRESS if out == self.ingress_is_out else EGRESS


def parse_device(name: str | None, netns: str | None = None) -> Device | None:
    """The Neutron device ``name`` stands for, or None (``eth0``, ``lo``, a name with a
    prefix but no id after it). ``netns``: the namespace the record comes from (a ``tap``
    in a ``qdhcp-`` namespace is a DHCP port)."""
    if not name:
        return None
    for prefix in (name[:3], name[:4]):
        entry = _PREFIXES.get(prefix)
        if entry is None:
            continue
        role, router, ingress_is_out = entry
        ident = name[len(prefix):]
        if not (_SHORT_ID if router else _PORT_ID).match(ident):
            return None
        if prefix == "tap" and netns is not None and netns.startswith("qdhcp-"):
            role, ingress_is_out = DHCP, False
        return Device(name, prefix, ident, role, router, ingress_is_out)
    return None


def parse_chain(chain: str | None) -> tuple[str, str] | None:
    """(10 characters of the port id, direction) of an iptables_hybrid per-port chain, else None."""
    if not chain:
        return None
    m = _CHAIN.match(chain)
    if m is None:
        return None
    return m[2], (INGRESS if m[1] == "i" else EGRESS)
