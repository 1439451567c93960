"""NEUTRON: which router, network, port and project a record belongs to, in which direction,
and what became of the packet (pyulogd only; docs/neutron.md, "Keys and resolution").

From what the record carries (``oob.netns``, IFINDEX's ``oob.in``/``oob.out``, the NFLOG
prefix or NFTRACE's chain, NFCT's tuples and zone) and from what is known locally:

* **OVSDB** (``ovsdb``, the local ovsdb-server's unix socket): ``Interface`` rows with
  ``external_ids:iface-id`` (the full port UUID), ``attached-mac``, ``vm-uuid``, kept current
  with a monitor (:mod:`pyulogd.io.ovsdb`, on the daemon's loop, reconnected with back-off);
* the **mapping file** (``mapping``, JSON or CSV exported from the Neutron API): network,
  project, device owner, security groups, fixed and floating IPs; read at start (a bad file
  refuses the start with its file and line) and again on SIGHUP (a bad file then keeps the
  old mapping, logged and counted);
* the **keepalived state files** of HA routers (``ha_confs``), read every ``ha_poll``;
* each namespace's **ruleset** (``ruleset=1``): which chain holds the NFLOG rule of a prefix
  and what that chain does (FWaaS's ``neutron-l3-agent-accepted``/``-dropped``/``-rejected``),
  the raw table's conntrack zones, the nat table's floating IPs; read through libnftables or
  nft (:mod:`pyulogd.io.nftables`, as NFTRACE), again on the ruleset's change notifications,
  on a prefix no rule has, and one namespace at a time every ``ruleset_refresh``.

Nothing is looked up on the packet path but a dict: the answer for (namespace, in, out,
prefix) is computed once (:class:`pyulogd.netns.neutron.Resolver`) and cached until OVSDB,
the mapping, a ruleset or an HA state changes. Nothing ever calls Neutron's API or RPC.

The filter re-emits ``neutron.router_id`` and ``neutron.network_id``, the namespace trailer
keys of the inputs (netns/source.py): downstream plugins see the filter's values, which are
exact where the inputs only parse the namespace name (docs/design.md, slots and shadowing);
``audit.action``/``audit.rule`` likewise, NFTRACE's passed through unchanged.
"""

from __future__ import annotations

import os
import signal
import socket
from typing import TYPE_CHECKING, Any

from pyulogd.codec import neutronrules
from pyulogd.codec.nfct import zone_of
from pyulogd.codec.nftrace import NFNLGRP_NFTABLES
from pyulogd.codec.nftruleset import Ruleset
from pyulogd.core.errors import ConfigError, DecodeError
from pyulogd.core.keys import ACCEPT
from pyulogd.core.options import Bool, Choice, Duration, OptionKind, Path, Str
from pyulogd.core.plugin import OK, DataType, Filter, Key, KeyType, Option
from pyulogd.core.ratelimit import Burst
from pyulogd.io.netlink import NetlinkSocket
from pyulogd.io.netns import NetnsHandle
from pyulogd.io.nftables import Nft, NftError
from pyulogd.io.ovsdb import OvsdbMonitor, socket_path
from pyulogd.netns import neutronmap
from pyulogd.netns.neutron import (
    AT,
    CACHED_KEYS,
    I_ACTION,
    I_DIRECTION,
    Attribution,
    Resolver,
    parse_action_patterns,
    read_ha_states,
)
from pyulogd.netns.registry import find_namespaces

if TYPE_CHECKING:
    from pyulogd.core.context import Context, TimerHandle

T = KeyType
CACHE_MAX = 65536  # cached answers; the cache starts over when full
REREAD_MIN = 1.0  # a ruleset is read again for an unknown prefix at most this often
NOTIFY_DELAY = 0.1  # a change notification reads the ruleset this much later (one read per transaction)
NFT_NOTIFY_BUF = 1 << 16
SIGHUP_SPREAD = 0.02  # on SIGHUP, one namespace's ruleset is read every this many seconds


class ActionPrefixes(OptionKind[tuple[tuple[str, str], ...]]):
    """A comma list of ``GLOB:ACTION``: NFLOG prefixes (shell globs) and the verdict they mean."""

    name = "Prefix list"

    def convert(self, text: str) -> tuple[tuple[str, str], ...]:
        return parse_action_patterns(text)

    def show(self, value: tuple[tuple[str, str], ...]) -> str:
        return ",".join(f"{g}:{a}" for g, a in value)

    def describe(self) -> str:
        return "comma list of GLOB:ACTION (ACTION: ACCEPT, DROP, REJECT, OTHER)"


def _check_ovsdb(text: str) -> str | None:
    if not text:
        return None
    try:
        socket_path(text)
    except ValueError as e:
        return str(e)
    return None


OPTIONS = (
    Option("ovsdb", Str(), "unix:/run/openvswitch/db.sock", check=_check_ovsdb,
           help="ovsdb-server's local socket (unix:PATH): device names to port UUIDs (Interface "
           "external_ids:iface-id), kept current with a monitor; empty: no OVSDB"),
    Option("mapping", Path(), "", help="JSON or CSV file exported from the Neutron API (ports with network, "
           "project, device owner, security groups, fixed and floating IPs); re-read on SIGHUP; empty: none"),
    Option("ha_confs", Path(), "/var/lib/neutron/ha_confs",
           help="where keepalived's state of each HA router is (<ha_confs>/<router id>/state); empty: none"),
    Option("ha_poll", Duration(0.1, 3600), 2, help="how often the HA state files are read again"),
    Option("action_prefixes", ActionPrefixes(), "",
           help="NFLOG prefixes whose verdict is known by name, e.g. 'DROP*:DROP,ACCEPT*:ACCEPT' "
           "(after the ruleset's chains)"),
    Option("ruleset", Bool(), 1, help="learn each NFLOG prefix's chain and verdict (FWaaS: -accepted, -dropped, "
           "-rejected), conntrack zones and 1:1 NAT from each namespace's ruleset"),
    Option("ruleset_refresh", Duration(1, 86400), 60,
           help="every namespace's ruleset is read again within this time (one at a time), besides "
           "change notifications"),
    Option("iptables_text", Bool(), 1, help="read iptables-nft-save for rule texts, zones and NAT of "
           "iptables-nft tables (needed for Neutron's own rules)"),
    Option("nft_api", Choice("auto", "libnftables", "nft"), "auto",
           help="how rulesets are read: libnftables (python3-nftables), the nft command, or auto"),
    Option("reconnect_max", Duration(1, 3600), 60, help="longest wait between two attempts to reach ovsdb-server"),
)  # fmt: skip

OUTPUT_KEYS = (
    Key("neutron.router_id", T.STRING, help="router id: the qrouter-/snat- namespace, an rfp-/fpr- device, or "
        "the device_id of a router port (mapping); shadows the input's id parsed from the namespace name"),
    Key("neutron.network_id", T.STRING, help="network of the port the record is attributed to (mapping file); "
        "else the id a qdhcp-/fip-/ovnmeta- namespace name carries (fip-: the external network)"),
    Key("neutron.port_id", T.STRING, help="full UUID of the port the record is attributed to (OVSDB iface-id, "
        "or the mapping file's port whose id the device name starts); invalid when unresolved"),
    Key("neutron.device", T.STRING, help="when the port is not resolved: the device the record is attributed "
        "to (qr-1a2b3c4d-5e: its 11 characters start the port id)"),
    Key("neutron.device_role", T.STRING, help="router_interface, router_gateway, snat, floating_ip_gateway, "
        "dhcp, vm_port, ha or unknown"),
    Key("neutron.direction", T.STRING, help="ingress (towards the tenant side of the port: instance, project "
        "network, router, DHCP server) or egress"),
    Key("neutron.project_id", T.STRING, help="project of the port the record is attributed to (mapping file)"),
    Key("neutron.peer_port_id", T.STRING, help="the other Neutron port the packet went through, when another"),
    Key("neutron.peer_project_id", T.STRING, help="project of that other port (a flow between two projects)"),
    Key("neutron.ha_state", T.STRING, help="master, backup or fault: keepalived's state of the HA router"),
    Key("neutron.resolved", T.BOOL, help="1 when neutron.port_id holds the full port UUID"),
    Key("neutron.device_id", T.STRING, help="device of the port: the instance (OVSDB vm-uuid, mapping), the "
        "router, the DHCP agent's"),
    Key("neutron.security_groups", T.STRING, help="security group ids of the port, comma separated (mapping)"),
    Key("audit.action", T.STRING, help="ACCEPT, DROP, REJECT or OTHER: NFTRACE's verdict, else what the chain of "
        "the NFLOG rule does, else an action_prefixes pattern; ACCEPT for conntrack events"),
    Key("audit.rule", T.STRING, help="the rule: NFTRACE's, or the NFLOG rule ('<family> <table> <chain> handle "
        "<n>: <text>')"),
    Key("nat.fixed_ip", T.STRING, help="conntrack records: the fixed (inside) address of a NATed connection"),
    Key("nat.floating_ip", T.STRING, help="conntrack records: the floating IP (DNAT destination, or the source "
        "address known as floating from the mapping file or the nat rules)"),
    Key("nat.snat_ip", T.STRING, help="conntrack records: the address a connection was source-NATed to"),
    Key("nat.snat_port", T.UINT16, help="conntrack records: the port it was source-NATed to"),
    Key("flow.duration_ms", T.UINT64, help="conntrack DESTROY: flow.end - flow.start, in milliseconds"),
    Key("flow.bytes", T.UINT64, help="conntrack DESTROY: bytes of both directions (NFCT accounting=1)"),
    Key("flow.packets", T.UINT64, help="conntrack DESTROY: packets of both directions (NFCT accounting=1)"),
)  # fmt: skip
N_CACHED = len(CACHED_KEYS)
assert tuple(k.name for k in OUTPUT_KEYS[:N_CACHED]) == CACHED_KEYS
NAT_FIXED, NAT_FLOATING, NAT_SNAT_IP, NAT_SNAT_PORT, DURATION, BYTES, PACKETS = range(N_CACHED, len(OUTPUT_KEYS))

INPUT_KEYS = (
    Key("oob.netns", T.STRING, optional=True),
    Key("oob.in", T.STRING, optional=True),
    Key("oob.out", T.STRING, optional=True),
    Key("oob.prefix", T.STRING, optional=True),
    Key("nft.chain", T.STRING, optional=True),
    Key("audit.action", T.STRING, optional=True),
    Key("audit.rule", T.STRING, optional=True),
    Key("raw.mac", T.RAW, optional=True),
    Key("ct", T.RAW, optional=True),
    Key("ct.event", T.UINT32, optional=True),
    Key("orig.ip.saddr", T.IPADDR, optional=True),
    Key("orig.ip.daddr", T.IPADDR, optional=True),
    Key("reply.ip.saddr", T.IPADDR, optional=True),
    Key("reply.ip.daddr", T.IPADDR, optional=True),
    Key("reply.l4.dport", T.UINT16, optional=True),
    Key("flow.start.sec", T.UINT32, optional=True),
    Key("flow.start.usec", T.UINT32, optional=True),
    Key("flow.end.sec", T.UINT32, optional=True),
    Key("flow.end.usec", T.UINT32, optional=True),
    Key("orig.raw.pktlen", T.UINT64, optional=True),
    Key("orig.raw.pktcount", T.UINT64, optional=True),
    Key("reply.raw.pktlen", T.UINT64, optional=True),
    Key("reply.raw.pktcount", T.UINT64, optional=True),
)
STAT_NAMES = ("cache_misses", "unresolved", "verdict_ambiguous", "verdict_unknown_prefix", "ruleset_reads",
              "ruleset_errors", "ruleset_unavailable", "mapping_reloads", "mapping_errors", "ha_errors",
              "ha_changes")  # fmt: skip


class _Namespace:
    """What the filter keeps per namespace whose records it saw: its ruleset reader."""

    __slots__ = ("name", "handle", "nft", "sock", "last_read", "timer", "failed")

    def __init__(self, name: str | None) -> None:
        self.name = name
        self.handle: NetnsHandle | None = None
        self.nft: Nft | None = None
        self.sock: NetlinkSocket | None = None
        self.last_read = float("-inf")
        self.timer: TimerHandle | None = None
        self.failed = False


class NeutronFilter(Filter):
    name = "NEUTRON"
    description = ("Neutron identity of every record: router, network, port (full UUID through OVSDB and a "
                   "mapping file), role, direction, project, HA state; its verdict and rule (NFTRACE, the chain "
                   "of the NFLOG rule, prefix patterns, conntrack); NAT context and totals of connections")
    input_type = DataType.PACKET | DataType.FLOW | DataType.RAW
    output_type = DataType.PACKET | DataType.FLOW
    options = OPTIONS
    input_keys = INPUT_KEYS
    output_keys = OUTPUT_KEYS
    # Keys never valid without the first of their group: JSON skips a group with one test.
    key_blocks = (
        ("neutron.peer_port_id", "neutron.peer_project_id"),
        ("nat.fixed_ip", "nat.floating_ip", "nat.snat_ip", "nat.snat_port"),
        ("flow.bytes", "flow.packets"),
    )

    def __init__(self, ctx: Context, instance_id: str, config: dict[str, Any]) -> None:
        super().__init__(ctx, instance_id, config)
        self.resolver = Resolver(config["action_prefixes"])
        # Answers by (namespace, in, out, prefix): the values of CACHED_KEYS; those that need a
        # look at each record (the MAC) apart; conntrack records' by (namespace, addresses, zone).
        self.cache: dict[tuple[Any, ...], list[Any]] = {}
        self.per_record: dict[tuple[Any, ...], Attribution] = {}
        self.flows: dict[tuple[Any, ...], list[Any]] = {}
        self._span = slice(0)
        self.ovsdb: OvsdbMonitor | None = None
        self.namespaces: dict[str | None, _Namespace] = {}
        self._ha_timer: TimerHandle | None = None
        self._refresh_timer: TimerHandle | None = None
        self._ntop: dict[bytes, str] = {}
        p = f"neutron.{instance_id}."
        self.stat = {n: p + n for n in STAT_NAMES}
        self._burst = {n: Burst() for n in ("ruleset", "ha", "unavailable")}
        self._started = False

    # -- configuration and life cycle

    def needed_capabilities(self) -> dict[str, str]:
        """Reading rulesets after -u: libnftables' netlink requests and the change notifications
        (CAP_NET_ADMIN), in other namespaces (setns: CAP_SYS_ADMIN)."""
        if not self.config["ruleset"]:
            return {}
        who = f"NEUTRON '{self.id}'"
        return {"CAP_NET_ADMIN": f"{who} reads rulesets and follows their changes",
                "CAP_SYS_ADMIN": f"{who} reads the rulesets of other network namespaces"}

    def configure(self) -> None:
        c = self.config
        for opt in ("mapping", "ha_confs"):
            if c[opt]:
                c[opt] = os.path.abspath(c[opt])  # -d changes the directory to / before start
        if c["mapping"]:
            try:
                self.resolver.mapping = neutronmap.load(c["mapping"])
            except ConfigError as e:
                raise ConfigError(f"NEUTRON '{self.id}': {e}") from None

    def start(self) -> None:
        (self._s_ns, self._s_in, self._s_out, self._s_prefix, self._s_chain, self._s_action, self._s_rule,
         self._s_mac, self._s_ct, self._s_event, self._s_osrc, self._s_odst, self._s_rsrc, self._s_rdst,
         self._s_rdport, self._s_ssec, self._s_susec, self._s_esec, self._s_eusec, self._s_obytes,
         self._s_opkts, self._s_rbytes, self._s_rpkts) = self.in_slots  # fmt: skip
        self._span = slice(self.out_base, self.out_base + N_CACHED)
        # The slots every record reads, in one attribute.
        self._hot = (self._s_ns, self._s_in, self._s_out, self._s_prefix, self._s_event, self._s_action)
        c = self.config
        log = self.ctx.log
        self._started = True
        if self._s_prefix and not (self._s_in or self._s_out):
            # NFLOG gives interface indexes only: without IFINDEX every packet stays unresolved
            # (and RATELIMIT's neutron preset puts every port under one key). Not refused: the
            # namespace's router and network ids still come.
            log.notice(f"NEUTRON '{self.id}': nothing before it gives oob.in/oob.out (put IFINDEX before "
                       "NEUTRON in this stack): packets cannot be resolved to their port, network and project")
        if c["ovsdb"]:
            self.ovsdb = OvsdbMonitor(self.ctx, socket_path(c["ovsdb"]), self._ovsdb_changed, f"NEUTRON '{self.id}'",
                                      f"neutron.{self.id}", cap=c["reconnect_max"])  # fmt: skip
            self.resolver.ifaces = self.ovsdb.table.by_name
            self.ovsdb.start()
        if c["ha_confs"]:
            self._read_ha()
        if c["ruleset"]:
            # Rulesets are read before records need them: the own namespace's and those the
            # inputs already work in now (start-up may take the time), every namespace an
            # input attaches later as soon as it does (from the loop).
            self._seen(None, at_once=True)
            for name in self._known():
                self._seen(name, at_once=True)
            reg = find_namespaces(self.ctx)
            if reg is not None:
                reg.on_close.append(self._netns_closed)
                reg.on_open.append(self._netns_opened)
            self._refresh_timer = self.ctx.loop.call_later(self._refresh_step(), self._refresh_tick)
        log.info(f"NEUTRON '{self.id}': {len(self.resolver.mapping)} port(s) from the mapping file, OVSDB "
                 f"{socket_path(c['ovsdb']) if c['ovsdb'] else 'off'}, rulesets {'on' if c['ruleset'] else 'off'}")

    def stop(self) -> None:
        self._started = False
        if self.ovsdb is not None:
            self.ovsdb.stop()
            self.ovsdb = None
        for t in (self._ha_timer, self._refresh_timer):
            if t is not None:
                t.cancel()
        self._ha_timer = self._refresh_timer = None
        for ns in list(self.namespaces.values()):
            self._drop(ns)
        self.namespaces.clear()
        reg = find_namespaces(self.ctx)
        if reg is not None:
            if self._netns_closed in reg.on_close:
                reg.on_close.remove(self._netns_closed)
            if self._netns_opened in reg.on_open:
                reg.on_open.remove(self._netns_opened)

    def signal(self, signum: int) -> None:
        """SIGHUP: the mapping file again (kept as it was if the new one is bad), OVSDB at once if
        it was away, the HA states and every ruleset."""
        if signum != signal.SIGHUP:
            return
        c = self.config
        if c["mapping"]:
            try:
                mapping = neutronmap.load(c["mapping"])
            except ConfigError as e:
                self.ctx.stats.incr(self.stat["mapping_errors"])
                self.ctx.log.error(f"NEUTRON '{self.id}': {e}; keeping the {len(self.resolver.mapping)} port(s) "
                                   "read before")  # fmt: skip
            else:
                self.resolver.mapping = mapping
                self.ctx.stats.incr(self.stat["mapping_reloads"])
                self.ctx.log.notice(f"NEUTRON '{self.id}': mapping file read again: {len(mapping)} port(s)")
                self._forget()
        if self.ovsdb is not None:
            self.ovsdb.reconnect_now()
        if c["ha_confs"]:
            self._read_ha(reschedule=False)
        # One namespace after the other from the loop, not all in this call: the records of
        # every namespace keep flowing meanwhile.
        for i, entry in enumerate(self.namespaces.values()):
            if entry.timer is not None:
                entry.timer.cancel()
                entry.timer = None
            self._read_soon(entry, i * SIGHUP_SPREAD)

    # -- the packet path

    def interp(self, rec: list[Any]) -> int:
        s_ns, s_in, s_out, s_prefix, s_event, s_action = self._hot
        if rec[s_event] is not None:
            return self._flow(rec)
        values = self.cache.get((rec[s_ns], rec[s_in], rec[s_out], rec[s_prefix]))
        if values is None:
            return self._interp_slow(rec)
        rec[self._span] = values
        if rec[s_action] is not None:  # NFTRACE's verdict, passed through
            self._pass_verdict(rec)
        return OK

    def _interp_slow(self, rec: list[Any]) -> int:
        """A cache miss, or an answer that needs a look at the record itself (the MAC)."""
        key = (rec[self._s_ns], rec[self._s_in], rec[self._s_out], rec[self._s_prefix])
        att = self.per_record.get(key)
        if att is None:
            att = self._miss(key, rec)
        rec[self._span] = att.values
        if att.mac is not None:
            self._mac_direction(rec, att.mac)
        if rec[self._s_action] is not None:
            self._pass_verdict(rec)
        return OK

    def _pass_verdict(self, rec: list[Any]) -> None:
        base = self.out_base
        rec[base + I_ACTION] = rec[self._s_action]
        rec[base + I_ACTION + 1] = rec[self._s_rule]

    def _mac_direction(self, rec: list[Any], port_mac: bytes) -> None:
        """Direction by the port's MAC where the device cannot tell (a qbr bridge): sent by
        the port (source MAC) is egress, sent to it is ingress."""
        mac = rec[self._s_mac]
        if mac is not None and len(mac) >= 12:
            if mac[6:12] == port_mac:
                rec[self.out_base + I_DIRECTION] = "egress"
            elif mac[0:6] == port_mac:
                rec[self.out_base + I_DIRECTION] = "ingress"

    def _miss(self, key: tuple[Any, ...], rec: list[Any]) -> Attribution:
        ns, in_name, out_name, prefix = key
        stats = self.ctx.stats
        stats.incr(self.stat["cache_misses"])
        has_action = rec[self._s_action] is not None
        att = self.resolver.attribute(ns, in_name, out_name, prefix, rec[self._s_chain], not has_action)
        if att.values[AT["neutron.resolved"]] == 0 and att.values[AT["neutron.device"]] is not None:
            stats.incr(self.stat["unresolved"])
        if att.verdict_ambiguous:
            stats.incr(self.stat["verdict_ambiguous"])
        if self.config["ruleset"] and self._started:
            entry = self._seen(ns)
            if (entry is not None and not has_action and prefix is not None
                    and att.values[I_ACTION] is None and not entry.failed):  # fmt: skip
                # A prefix no rule has: the ruleset may have changed since it was read.
                stats.incr(self.stat["verdict_unknown_prefix"])
                self._read_soon(entry, max(0.0, entry.last_read + REREAD_MIN - self.ctx.clock.monotonic()))
        if len(self.cache) + len(self.per_record) >= CACHE_MAX:
            self._forget()
        if att.mac is None:
            self.cache[key] = att.values
        else:
            self.per_record[key] = att
        return att

    def _forget(self) -> None:
        """Every cached answer is stale (OVSDB, the mapping, a ruleset or an HA state changed)."""
        self.cache.clear()
        self.per_record.clear()
        self.flows.clear()

    def _flow(self, rec: list[Any]) -> int:
        """A conntrack record: who (by its addresses, or its zone), ACCEPT, NAT, totals."""
        ns = rec[self._s_ns]
        osrc, rsrc = rec[self._s_osrc], rec[self._s_rsrc]
        ct = rec[self._s_ct]
        zone = zone_of(ct) if ct is not None else None
        key = (ns, osrc, rsrc, zone)
        values = self.flows.get(key)
        if values is None:
            self.ctx.stats.incr(self.stat["cache_misses"])
            values = self.resolver.flow(ns, osrc, rsrc, zone).values
            values[I_ACTION] = ACCEPT  # conntrack confirms only what the rules let through
            if self.config["ruleset"] and self._started:
                self._seen(ns)
            if len(self.flows) >= CACHE_MAX:
                self.flows.clear()
            self.flows[key] = values
        base = self.out_base
        rec[self._span] = values
        if rec[self._s_action] is not None:
            self._pass_verdict(rec)
        odst, rdst = rec[self._s_odst], rec[self._s_rdst]
        ntop = self._text
        if odst is not None and rsrc is not None and odst != rsrc:  # DNAT: floating IP -> fixed
            rec[base + NAT_FLOATING] = ntop(odst)
            rec[base + NAT_FIXED] = ntop(rsrc)
        if osrc is not None and rdst is not None and osrc != rdst:  # SNAT: fixed -> floating or gateway
            if rec[base + NAT_FIXED] is None:
                rec[base + NAT_FIXED] = ntop(osrc)
            if self.resolver.is_floating(ns, rdst):
                rec[base + NAT_FLOATING] = ntop(rdst)
            else:
                rec[base + NAT_SNAT_IP] = ntop(rdst)
                rec[base + NAT_SNAT_PORT] = rec[self._s_rdport]
        end = rec[self._s_esec]
        if end is not None:
            start = rec[self._s_ssec]
            if start is not None:
                ms = (end - start) * 1000 + ((rec[self._s_eusec] or 0) - (rec[self._s_susec] or 0)) // 1000
                if ms >= 0:
                    rec[base + DURATION] = ms
            ob, rb = rec[self._s_obytes], rec[self._s_rbytes]
            if ob is not None and rb is not None:
                rec[base + BYTES] = ob + rb
            op, rp = rec[self._s_opkts], rec[self._s_rpkts]
            if op is not None and rp is not None:
                rec[base + PACKETS] = op + rp
        return OK

    def _text(self, addr: bytes) -> str:
        t = self._ntop.get(addr)
        if t is None:
            if len(self._ntop) >= CACHE_MAX:
                self._ntop.clear()
            fam = socket.AF_INET if len(addr) == 4 else socket.AF_INET6
            try:
                t = socket.inet_ntop(fam, addr)
            except (ValueError, OSError):
                t = addr.hex()
            self._ntop[addr] = t
        return t

    # -- OVSDB and HA

    def _ovsdb_changed(self, names: set[str]) -> None:
        self.resolver.ovsdb_changed()
        self._forget()

    def _read_ha(self, reschedule: bool = True) -> None:
        states, bad = read_ha_states(self.config["ha_confs"])
        if bad:
            self.ctx.stats.incr(self.stat["ha_errors"], bad)
            n = self._burst["ha"].due(self.ctx.clock.monotonic(), bad)
            if n:
                self.ctx.log.error(f"NEUTRON '{self.id}': {n} HA state file(s) under {self.config['ha_confs']} "
                                   "could not be read or hold no known state")  # fmt: skip
        if states != self.resolver.ha:
            self.resolver.ha = states
            self.ctx.stats.incr(self.stat["ha_changes"])
            self._forget()
        if reschedule and self._started:
            self._ha_timer = self.ctx.loop.call_later(self.config["ha_poll"], self._read_ha)

    # -- rulesets

    def _known(self) -> list[str]:
        reg = find_namespaces(self.ctx)
        return reg.names() if reg is not None else []

    def _netns_opened(self, handle: NetnsHandle) -> None:
        if self._started:
            self._seen(handle.name)

    def _seen(self, ns: str | None, at_once: bool = False) -> _Namespace | None:
        """The namespace's entry; a new one is read from the loop as soon as it can (never on
        the packet path), or here and now with ``at_once`` (at start)."""
        entry = self.namespaces.get(ns)
        if entry is not None:
            return entry
        handle = None
        if ns is not None:
            reg = find_namespaces(self.ctx)
            handle = reg.lookup(ns) if reg is not None else None
            if handle is None:
                # No input works there (any more): nothing to read it through.
                self.ctx.stats.incr(self.stat["ruleset_unavailable"])
                return None
        entry = self.namespaces[ns] = _Namespace(ns)
        entry.handle = handle
        try:
            entry.sock = NetlinkSocket(groups=1 << (NFNLGRP_NFTABLES - 1), bufsize=NFT_NOTIFY_BUF,
                                       netns=entry.handle, clock=self.ctx.clock)  # fmt: skip
        except OSError as e:
            n = self._burst["unavailable"].due(self.ctx.clock.monotonic())
            if n:
                self.ctx.log.error(f"NEUTRON '{self.id}': no ruleset change notifications for "
                                   f"{ns or 'the own namespace'}: {e.strerror}; reading it every "
                                   f"{self.config['ruleset_refresh']:g} s only")  # fmt: skip
        else:
            sock = entry.sock
            self.ctx.loop.add_reader(sock.fileno(), lambda: self._notified(entry))
        if at_once:
            self._read_rules(entry)
        else:
            self._read_soon(entry, 0.0)
        return entry

    def _notified(self, entry: _Namespace) -> None:
        sock = entry.sock
        if sock is None:
            return
        try:
            sock.drain(lambda _b: None, lambda: None, 256)
        except OSError:
            pass
        self._read_soon(entry, NOTIFY_DELAY)

    def _read_soon(self, entry: _Namespace, delay: float) -> None:
        if entry.timer is None and self._started:
            entry.timer = self.ctx.loop.call_later(delay, lambda: self._read_rules(entry))

    def _read_rules(self, entry: _Namespace) -> None:
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        if entry.name is not None and entry.handle is None:
            return
        entry.last_read = self.ctx.clock.monotonic()
        stats = self.ctx.stats
        stats.incr(self.stat["ruleset_reads"])
        try:
            if entry.nft is None:
                entry.nft = Nft(entry.handle, self.config["nft_api"])
            doc = entry.nft.list_json()
            rs = Ruleset.parse(doc)
            rs.add_text(entry.nft.list_text())
            if self.config["iptables_text"]:
                for fam in rs.iptables_families():
                    save = entry.nft.iptables_save(fam)
                    if save:
                        rs.add_iptables(fam, save)
            index = neutronrules.build(doc, rs)
        except (NftError, DecodeError, OSError) as e:
            stats.incr(self.stat["ruleset_errors"])
            entry.failed = True
            n = self._burst["ruleset"].due(self.ctx.clock.monotonic())
            if n:
                where = entry.name or "the own namespace"
                self.ctx.log.error(f"NEUTRON '{self.id}': cannot read the ruleset of {where}: {e} ({n} since "
                                   "last report); verdicts from chains are missing there")  # fmt: skip
            return
        entry.failed = False
        self.resolver.rules[entry.name] = index
        self._forget()
        self.ctx.log.debug(f"NEUTRON '{self.id}': read the ruleset of {entry.name or 'the own namespace'}: "
                           f"{len(index.by_prefix)} log prefix(es)")  # fmt: skip

    def _refresh_step(self) -> float:
        return max(0.5, float(self.config["ruleset_refresh"]) / max(1, len(self.namespaces)))

    def _refresh_tick(self) -> None:
        """One namespace per tick, the one read longest ago, if that was a refresh period ago."""
        self._refresh_timer = None
        if not self._started:
            return
        now = self.ctx.clock.monotonic()
        period = self.config["ruleset_refresh"]
        due = [e for e in self.namespaces.values() if e.timer is None and now - e.last_read >= period]
        if due:
            self._read_rules(min(due, key=lambda e: e.last_read))
        self._refresh_timer = self.ctx.loop.call_later(self._refresh_step(), self._refresh_tick)

    def _netns_closed(self, handle: NetnsHandle) -> None:
        entry = self.namespaces.get(handle.name)
        if entry is not None and entry.handle is handle:
            self._drop(entry)
            del self.namespaces[handle.name]
            self.resolver.rules.pop(handle.name, None)
            self._forget()

    def _drop(self, entry: _Namespace) -> None:
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        if entry.sock is not None:
            self.ctx.loop.remove_reader(entry.sock.fileno())
            entry.sock.close()
            entry.sock = None
        entry.nft = None

