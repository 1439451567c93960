"""Who a record belongs to in Neutron's terms, from what is known locally: the NEUTRON
filter's resolver, without I/O (the plugin feeds it OVSDB rows, the mapping file, the
rulesets and the HA states from the loop, and asks it on a cache miss).

What it derives, and from what (docs/neutron.md, "Keys and resolution", says the same for
users):

* the **devices** a packet went through (``oob.in``/``oob.out``, read by
  :mod:`~pyulogd.netns.devices`); the record is **attributed** to one of them: the one the
  deciding log rule names (FWaaS matches ``-i``/``-o <dev>``), else the one that stands for a
  tenant's instance or network (``ROLE_RANK``), the input device on a tie. The other Neutron
  device, when it is another port, is the **peer** (a flow between two projects goes to both);
* the **port id**: OVSDB ``external_ids:iface-id`` of the device (or of its ``qvo`` sibling),
  else the mapping file's port whose id starts with the device name's 11 characters;
  unresolved, the record keeps the device name (``neutron.device``, whose 11 characters
  start the port id) and says ``neutron.resolved=0``;
* the **router**: the ``qrouter-``/``snat-`` namespace, an ``rfp-``/``fpr-`` device, or the
  port's device_id for router ports; the **network**: the port's (mapping file), else the
  namespace's (``qdhcp-``, ``fip-``: the external network); the **project**, **device id**
  (instance), **security groups**: the mapping file (device id also from OVSDB ``vm-uuid``);
* the **role**: the port's device_owner, else the device name; the **direction**: by the
  device (:meth:`~pyulogd.netns.devices.Device.direction`), by an iptables_hybrid chain
  (``neutron-openvswi-i<port>``), or per record by the port's MAC (:attr:`Attribution.mac`);
* the **verdict** of an NFLOG record: the rule index of its namespace (the chain that holds
  the log rule, :mod:`~pyulogd.codec.neutronrules`), else the configured prefix patterns;
* **conntrack records** (:meth:`Resolver.flow`): the ports holding the original source
  (egress, the initiator) and the reply source (the responder, after DNAT) by the mapping
  file's fixed and floating IPs, seen from the namespace's router; else the device of the
  conntrack zone (raw table ``-j CT --zone``) when one device has it.
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat
from dataclasses import dataclass
from typing import Any

from pyulogd.codec.neutronrules import RuleIndex
from pyulogd.codec.ovsdb import Iface
from pyulogd.core.keys import AUDIT_ACTIONS
from pyulogd.netns.devices import (
    EGRESS,
    INGRESS,
    ROLE_RANK,
    UNKNOWN,
    UUID,
    VM_PORT,
    Device,
    parse_chain,
    parse_device,
)
from pyulogd.netns.names import neutron_ids
from pyulogd.netns.neutronmap import Mapping, PortInfo

# The keys a cache entry holds, in the filter's declaration order (one slice assignment).
CACHED_KEYS = ("neutron.router_id", "neutron.network_id", "neutron.port_id", "neutron.device",
               "neutron.device_role", "neutron.direction", "neutron.project_id", "neutron.peer_port_id",
               "neutron.peer_project_id", "neutron.ha_state", "neutron.resolved", "neutron.device_id",
               "neutron.security_groups", "audit.action", "audit.rule")  # fmt: skip
AT = {name: i for i, name in enumerate(CACHED_KEYS)}
I_DIRECTION, I_ACTION, I_RULE = AT["neutron.direction"], AT["audit.action"], AT["audit.rule"]
HA_STATES = {"master": "master", "primary": "master", "backup": "backup", "fault": "fault"}
_HA_READ = 64  # a state file holds one word
_ROUTER_DIR = re.compile(r"[0-9A-Za-z][0-9A-Za-z_.-]{0,127}\Z")


@dataclass(slots=True)
class Attribution:
    """A cache entry: the values of :data:`CACHED_KEYS`, and what must still be looked at per
    record (the direction by the port's MAC when nothing else told it)."""

    values: list[Any]
    mac: bytes | None = None
    verdict_ambiguous: bool = False


def namespace_ids(netns: str | None) -> tuple[str | None, str | None]:
    """(router id, network id) of a namespace name, as the inputs' trailer keys have them."""
    return neutron_ids(netns) if netns else (None, None)


def compile_patterns(pairs: tuple[tuple[str, str], ...]) -> list[tuple[re.Pattern[str], str]]:
    """``(glob, action)`` pairs of ``action_prefixes`` as matchers, in order."""
    return [(re.compile(fnmatch.translate(glob)), action) for glob, action in pairs]


class Resolver:
    def __init__(self, patterns: tuple[tuple[str, str], ...] = ()) -> None:
        self.ifaces: dict[str, Iface] = {}  # OVSDB Interface rows by name (the monitor's dict)
        self.mapping = Mapping()
        self.rules: dict[str | None, RuleIndex] = {}  # by namespace name (None: the daemon's own)
        self.ha: dict[str, str] = {}  # router id -> master / backup / fault
        self.patterns = compile_patterns(patterns)
        self._iface_ids: dict[str, str | None] | None = None  # 10 first chars of iface-ids -> id

    def ovsdb_changed(self) -> None:
        self._iface_ids = None

    # -- ports

    def _iface_prefix(self, short: str) -> str | None:
        """The OVSDB iface-id that starts with ``short`` (10 characters, from a chain name)."""
        if self._iface_ids is None:
            ids: dict[str, str | None] = {}
            for info in self.ifaces.values():
                pid = info.iface_id
                if pid:
                    k = pid[:10]
                    ids[k] = pid if ids.get(k, pid) == pid else None
            self._iface_ids = ids
        return self._iface_ids.get(short)

    def port_of(self, dev: Device) -> tuple[str | None, PortInfo | None, Iface | None]:
        """(full port id, what the mapping file says of it, what OVSDB says of the device)."""
        iface = None
        pid = None
        for name in dev.ovsdb_names:
            iface = self.ifaces.get(name)
            if iface is not None and iface.iface_id and UUID.match(iface.iface_id):
                pid = iface.iface_id
                break
        m = self.mapping
        info = m.ports.get(pid) if pid is not None else m.by_prefix.get(dev.ident)
        if pid is None and info is not None:
            pid = info.id
        return pid, info, iface

    def router_of(self, dev: Device, ns_router: str | None) -> str | None:
        """The router an ``rfp-``/``fpr-`` device names."""
        if ns_router is not None and ns_router.startswith(dev.ident):
            return ns_router
        return self.mapping.router_prefix.get(dev.ident)

    # -- records with interfaces (NFLOG, NFTRACE)

    def attribute(self, ns: str | None, in_name: str | None, out_name: str | None, prefix: str | None,
                  chain: str | None = None, verdict_wanted: bool = True) -> Attribution:  # fmt: skip
        ns_router, ns_network = namespace_ids(ns)
        din, dout = parse_device(in_name, ns), parse_device(out_name, ns)
        verdict = None
        idx = self.rules.get(ns)
        if verdict_wanted and prefix is not None and idx is not None:
            verdict = idx.verdict(prefix, in_name, out_name)
        cands = [(d, out) for d, out in ((din, False), (dout, True)) if d is not None]
        primary: tuple[Device, bool] | None = None
        if verdict is not None and verdict.device is not None:
            primary = next(((d, o) for d, o in cands if d.name == verdict.device and o == verdict.out), None)
        if primary is None and cands:
            primary = min(cands, key=lambda c: (ROLE_RANK.get(c[0].role, 9), c[1]))
        v: list[Any] = [None] * len(CACHED_KEYS)
        v[AT["neutron.router_id"]] = ns_router
        v[AT["neutron.network_id"]] = ns_network
        v[AT["neutron.resolved"]] = 0
        v[AT["neutron.device_role"]] = UNKNOWN
        att = Attribution(v)
        pid: str | None = None
        info: PortInfo | None = None
        iface: Iface | None = None
        direction: str | None = None
        if primary is not None:
            dev, out = primary
            v[AT["neutron.device"]] = dev.name
            v[AT["neutron.device_role"]] = dev.role
            direction = dev.direction(out)
            if dev.router:
                v[AT["neutron.router_id"]] = self.router_of(dev, ns_router) or ns_router
            else:
                pid, info, iface = self.port_of(dev)
        else:
            hybrid = parse_chain(chain)
            if hybrid is not None:
                short, direction = hybrid
                pid = self._iface_prefix(short)
                info = self.mapping.ports.get(pid) if pid is not None else self.mapping.by_prefix.get(short)
                if pid is None and info is not None:
                    pid = info.id
                v[AT["neutron.device_role"]] = VM_PORT
        if pid is not None:
            v[AT["neutron.port_id"]] = pid
            v[AT["neutron.resolved"]] = 1
        if info is not None:
            self._port_values(v, info)
        if iface is not None and v[AT["neutron.device_id"]] is None and iface.vm_uuid:
            v[AT["neutron.device_id"]] = iface.vm_uuid
        v[I_DIRECTION] = direction
        if direction is None and v[AT["neutron.device_role"]] == VM_PORT:
            att.mac = _mac(info, iface)
        # The other side, when it is another port.
        if primary is not None:
            for dev, _out in cands:
                if dev is primary[0] or dev.router:
                    continue
                ppid, pinfo, _ = self.port_of(dev)
                if ppid is not None and ppid == pid:
                    continue
                v[AT["neutron.peer_port_id"]] = ppid
                if pinfo is not None:
                    v[AT["neutron.peer_project_id"]] = pinfo.project_id
        if pid is not None:
            v[AT["neutron.device"]] = None  # resolved: the port id says it (the name is in oob.in/oob.out)
        router = v[AT["neutron.router_id"]]
        if router is not None:
            v[AT["neutron.ha_state"]] = self.ha.get(router)
        if verdict is not None:
            v[I_ACTION], v[I_RULE] = verdict.action, verdict.rule
            att.verdict_ambiguous = verdict.ambiguous
        if v[I_ACTION] is None and prefix is not None and verdict_wanted:
            for rx, action in self.patterns:
                if rx.match(prefix):
                    v[I_ACTION] = action
                    break
        return att

    def _port_values(self, v: list[Any], info: PortInfo) -> None:
        role = info.role
        if role is not None:
            v[AT["neutron.device_role"]] = role
        if info.network_id is not None:
            v[AT["neutron.network_id"]] = info.network_id
        if v[AT["neutron.router_id"]] is None and info.router_id is not None:
            v[AT["neutron.router_id"]] = info.router_id
        v[AT["neutron.project_id"]] = info.project_id
        if info.router_id is None:  # a router's port: its device is the router (neutron.router_id)
            v[AT["neutron.device_id"]] = info.device_id
        if info.security_groups:
            v[AT["neutron.security_groups"]] = ",".join(info.security_groups)

    # -- conntrack records

    def flow(self, ns: str | None, orig_src: bytes | None, reply_src: bytes | None,
             zone: int | None) -> Attribution:  # fmt: skip
        """A connection: attributed to the port that started it (egress), else to the one that
        answered (ingress); the other is the peer."""
        ns_router, ns_network = namespace_ids(ns)
        v: list[Any] = [None] * len(CACHED_KEYS)
        v[AT["neutron.router_id"]] = ns_router
        v[AT["neutron.network_id"]] = ns_network
        v[AT["neutron.resolved"]] = 0
        v[AT["neutron.device_role"]] = UNKNOWN
        m = self.mapping
        init = m.by_ip(orig_src, ns_router) if orig_src is not None else None
        resp = m.by_ip(reply_src, ns_router) if reply_src is not None else None
        primary, peer = (init, resp) if init is not None else (resp, None)
        direction: str | None = None
        if primary is not None:
            direction = EGRESS if init is not None else INGRESS
        elif zone is not None:
            idx = self.rules.get(ns)
            # A zone per port (older Neutron) or per network: only a zone whose devices are
            # all one port's (its tap and its qvb) names the port.
            devs = [d for d in (parse_device(n, ns) for n in (idx.zones.get(zone, ()) if idx else ())) if d]
            dev = devs[0] if devs and len({d.ident for d in devs}) == 1 else None
            if dev is not None and not dev.router:
                pid, info, _ = self.port_of(dev)
                v[AT["neutron.device_role"]] = dev.role
                if pid is not None:
                    v[AT["neutron.port_id"]] = pid
                    v[AT["neutron.resolved"]] = 1
                else:
                    v[AT["neutron.device"]] = dev.name
                if info is not None:
                    self._port_values(v, info)
        if primary is not None:
            v[AT["neutron.port_id"]] = primary.id
            v[AT["neutron.resolved"]] = 1
            v[AT["neutron.device_role"]] = primary.role or UNKNOWN
            self._port_values(v, primary)
            if peer is not None and peer is not primary:
                v[AT["neutron.peer_port_id"]] = peer.id
                v[AT["neutron.peer_project_id"]] = peer.project_id
        v[I_DIRECTION] = direction
        router = v[AT["neutron.router_id"]]
        if router is not None:
            v[AT["neutron.ha_state"]] = self.ha.get(router)
        return Attribution(v)

    def is_floating(self, ns: str | None, addr: bytes) -> bool:
        """Whether ``addr`` is a floating IP (mapping file, or the namespace's 1:1 NAT rules)."""
        if addr in self.mapping.floating:
            return True
        idx = self.rules.get(ns)
        return idx is not None and (addr in idx.dnat or addr in idx.snat.values())


def _mac(info: PortInfo | None, iface: Iface | None) -> bytes | None:
    if info is not None and info.mac is not None:
        return info.mac
    if iface is not None and iface.mac:
        try:
            b = bytes.fromhex(iface.mac.replace(":", ""))
        except ValueError:
            return None
        return b if len(b) == 6 else None
    return None


def read_ha_states(directory: str) -> tuple[dict[str, str], int]:
    """The keepalived states of the HA routers under ``directory``
    (``<directory>/<router id>/state``, what neutron-keepalived-state-change writes), and how
    many state files could not be read or hold no known state. Names that cannot be router ids
    (hidden, blanks, controls) are passed over; files are opened without following links, non-blocking (a FIFO
    cannot hang the daemon) and read only if regular, at most a few bytes."""
    states: dict[str, str] = {}
    bad = 0
    try:
        names = os.listdir(directory)
    except OSError:
        return states, 0
    for name in names:
        if name.startswith(".") or not _ROUTER_DIR.match(name):
            continue
        try:
            fd = os.open(os.path.join(directory, name, "state"),
                         os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)  # fmt: skip
        except FileNotFoundError:
            continue
        except OSError:
            bad += 1
            continue
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                bad += 1
                continue
            word = os.read(fd, _HA_READ).decode("ascii", "replace").strip().lower()
        except OSError:
            bad += 1
            continue
        finally:
            os.close(fd)
        state = HA_STATES.get(word)
        if state is None:
            bad += 1
        else:
            states[name] = state
    return states, bad


def parse_action_patterns(text: str) -> tuple[tuple[str, str], ...]:
    """``GLOB:ACTION,...`` (ACTION one of AUDIT_ACTIONS, any case); ValueError with the reason."""
    out = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        glob, sep, action = item.rpartition(":")
        action = action.strip().upper()
        if not sep or not glob:
            raise ValueError(f"'{item}' is not GLOB:ACTION (e.g. 'DROP*:DROP')")
        if action not in AUDIT_ACTIONS:
            raise ValueError(f"unknown action '{action}' in '{item}' (valid: {', '.join(AUDIT_ACTIONS)})")
        out.append((glob, action))
    return tuple(out)
