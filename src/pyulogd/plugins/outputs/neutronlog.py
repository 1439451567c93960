"""NEUTRONLOG: the lines Neutron's network log drivers write, so existing parsers keep working
(pyulogd extra; docs/neutron.md).

``format=ovs`` is the Open vSwitch firewall driver's record::

    action=DROP project_id=<p> log_resource_ids=['<log id>'] vm_port=<port id> pkt=ethernet(...), ipv4(...), tcp(...)

``format=fwaas`` the neutron-fwaas L3 driver's: commas after each field, ``port=`` for
``vm_port=``, and the headers concatenated without separator (``ethernet(...)ipv4(...)tcp(...)``).
``header=oslo`` (default) puts oslo.log's default prefix in front, as a
``local_output_log_base`` file has it (``2026-03-02 10:15:04.123 4121 INFO <driver module> [-] ``),
with the packet's time (``oob.time``, local time) and the daemon's pid; ``header=none`` writes
the bare record, as syslog carries it.

Values: ``action`` is ``audit.action`` (REJECT is written DROP with ``reject_as_drop=1``, as
FWaaS does and as parsers expecting ``ACCEPT|DROP`` need; a record without a verdict takes
``default_action``, or is skipped and counted in ``neutronlog.<id>.no_action``; a rate-limit
summary without one says ``action=None``);
``project_id`` and the port are ``neutron.project_id`` and ``neutron.port_id`` (``None``,
as Python prints it, when unresolved); ``log_resource_ids`` is ``neutron.log_resource_ids``
(comma-separated) when a filter sets it, else the ``log_resource_ids`` option (Neutron's log
object ids; pyulogd has no log objects), as a Python list. ``pkt=`` is os-ken's text of the
packet (codec/osken.py): the Ethernet frame rebuilt from ``raw.mac`` and ``raw.pkt`` (a packet
without a link-layer header starts at its IP header), empty for a record without a packet
(a conntrack event). Strings from outside (ids) are escaped with the daemon's one rule.

``redact_payload=1`` (the default) writes payload bytes as ``<redacted N bytes>``: an audit log
shipped off the node must not carry tenant data; Neutron prints them, set 0 for that.

A rate-limit summary (RATELIMIT upstream: ``audit.suppressed``) is a line of its own, the
same fields then ``suppressed=N first=<time> last=<time> limit_key=<key>`` instead of
``pkt=``, so a parser reading ``pkt=`` never takes it for a packet and nothing is lost silently.

Rendering (:meth:`NeutronLogOutput.render`) is apart from writing: the output base
(``pyulogd.io.output``) and its file sink (``pyulogd.io.filesink``: whole lines batched on an
``O_APPEND`` descriptor, losses counted by cause, SIGHUP reopens). ``chain_key`` (tamper
evidence, io/chain.py): each line ends in `` chain=<seq>:<tag>``, which a parser that reads
``pkt=`` to the end of the line must be told about.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from pyulogd.codec import osken
from pyulogd.core.escape import escape_text
from pyulogd.core.options import Bool, Choice, Path, Str
from pyulogd.core.plugin import DataType, Key, KeyType, Option
from pyulogd.io.chain import chain_options, line_chain
from pyulogd.io.filesink import FileSink
from pyulogd.io.output import Output

if TYPE_CHECKING:
    from pyulogd.core.context import Context

LOGGERS = {
    "ovs": "neutron.services.logapi.drivers.openvswitch.ovs_firewall_log",
    "fwaas": "neutron_fwaas.services.logapi.agents.drivers.iptables.log",
}
ARPHRD_ETHER = 1


def ids_list(ids: list[str]) -> str:
    """A Python list of strings, as ``%s`` of ``list(...)`` prints it, each id escaped."""
    return "[" + ", ".join(repr(escape_text(i)) for i in ids) + "]"


def split_ids(text: str) -> list[str]:
    return [i.strip() for i in text.split(",") if i.strip()]


class NeutronLogOutput(Output[str]):
    name = "NEUTRONLOG"
    description = (
        "Neutron's network log lines (`action=... project_id=... log_resource_ids=[...] vm_port=... "
        "pkt=...`: the Open vSwitch driver's, or FWaaS's with `format=fwaas`), pkt= as os-ken prints "
        "the packet; payload redacted by default."
    )
    reopen_notice = "NEUTRONLOG: reopening logfile"
    input_type = DataType.PACKET | DataType.FLOW
    options = (
        Option("file", Path(), "/var/log/pyulogd/neutron-network-log.log", extra=True, help="file to append to"),
        Option("format", Choice("ovs", "fwaas", what="format"), "ovs", extra=True,
               help="ovs: the Open vSwitch driver's line; fwaas: neutron-fwaas's (commas, port=)"),
        Option("header", Choice("oslo", "none", what="header"), "oslo", extra=True,
               help="oslo: oslo.log's default prefix (time, pid, INFO, driver module); none: the record only"),
        Option("redact_payload", Bool(), 1, extra=True,
               help="1: payload bytes in pkt= written as <redacted N bytes>; 0: as Neutron prints them"),
        Option("reject_as_drop", Bool(), 1, extra=True,
               help="1: REJECT written as DROP (Neutron knows ACCEPT and DROP only)"),
        Option("default_action", Choice("", "ACCEPT", "DROP", "REJECT", what="action"), "", extra=True,
               help="the action of records without audit.action (empty: such records are skipped, counted)"),
        Option("log_resource_ids", Str(), "", extra=True,
               help="comma-separated log object ids for log_resource_ids=[...] (neutron.log_resource_ids wins)"),
        Option("sync", Bool(), 0, extra=True, help="accepted; lines are written before the daemon waits"),
        *chain_options(),
    )
    input_keys = (
        Key("audit.action", KeyType.STRING, optional=True),
        Key("neutron.project_id", KeyType.STRING, optional=True),
        Key("neutron.port_id", KeyType.STRING, optional=True),
        Key("neutron.log_resource_ids", KeyType.STRING, optional=True),
        Key("raw.mac", KeyType.RAW, optional=True),
        Key("raw.type", KeyType.UINT16, optional=True),
        Key("raw.pkt", KeyType.RAW, optional=True),
        Key("oob.protocol", KeyType.UINT16, optional=True),
        Key("oob.time.sec", KeyType.UINT32, optional=True),
        Key("oob.time.usec", KeyType.UINT32, optional=True),
        Key("audit.suppressed", KeyType.UINT64, optional=True),
        Key("audit.first", KeyType.STRING, optional=True),
        Key("audit.last", KeyType.STRING, optional=True),
        Key("audit.limit_key", KeyType.STRING, optional=True),
    )

    def __init__(self, ctx: Context, instance_id: str, config: dict[str, Any]) -> None:
        super().__init__(ctx, instance_id, config)
        self.fwaas = config["format"] == "fwaas"
        self.oslo = config["header"] == "oslo"
        self.redact = bool(config["redact_payload"])
        self.reject_as_drop = bool(config["reject_as_drop"])
        self.default_action = config["default_action"] or None
        self.ids = ids_list(split_ids(config["log_resource_ids"]))
        self.logger = LOGGERS[config["format"]]
        self.pid = os.getpid()
        self._no_action = f"neutronlog.{instance_id}.no_action"

    def make_sink(self) -> FileSink[str]:
        # tamper evidence (io/chain.py): each line ends in " chain=<seq>:<tag>" (after pkt=)
        chain = line_chain(self.ctx, self.config, "text", f"NEUTRONLOG '{self.id}'")
        return FileSink(self.ctx, self.config["file"], f"neutronlog.{self.id}", "NEUTRONLOG", chain=chain)

    def prepare(self) -> None:
        """Slots of the input keys, read once."""
        (self._s_action, self._s_project, self._s_port, self._s_ids, self._s_mac, self._s_type, self._s_pkt,
         self._s_proto, self._s_sec, self._s_usec, self._s_supp, self._s_first, self._s_last,
         self._s_key) = self.in_slots
        self.pid = os.getpid()  # after -d forked

    def render(self, rec: list[Any]) -> str | None:
        """The line of one record (with its newline), None when it has no verdict to write."""
        action = rec[self._s_action]
        suppressed = rec[self._s_supp]
        if action is None:
            action = self.default_action
            if action is None:
                if suppressed is None:
                    self.ctx.stats.incr(self._no_action)
                    return None
                action = "None"  # a summary is written whatever it stands for: nothing silent
        if action == "REJECT" and self.reject_as_drop:
            action = "DROP"
        project = rec[self._s_project]
        port = rec[self._s_port]
        ids = rec[self._s_ids]
        ids_text = self.ids if ids is None else ids_list(split_ids(ids))
        head = self._header(rec)
        sep = ", " if self.fwaas else " "
        fields = [f"action={escape_text(action)}", f"project_id={_text(project)}", f"log_resource_ids={ids_text}",
                  f"{'port' if self.fwaas else 'vm_port'}={_text(port)}"]
        if suppressed is not None:
            fields += [f"suppressed={suppressed}", f"first={_text(rec[self._s_first])}",
                       f"last={_text(rec[self._s_last])}", f"limit_key={_text(rec[self._s_key])}"]
        else:
            fields.append("pkt=" + self.packet_text(rec))
        return head + sep.join(fields) + "\n"

    def packet_text(self, rec: list[Any]) -> str:
        """``pkt=``'s text: os-ken's rendering of the packet, as the configured driver writes it."""
        pkt = rec[self._s_pkt]
        if pkt is None:
            return ""
        mac = rec[self._s_mac]
        proto = rec[self._s_proto]
        if self.fwaas:
            return osken.render_fwaas(mac, proto if proto is not None else 0, pkt, redact=self.redact)
        if mac is not None and len(mac) == 14 and rec[self._s_type] in (ARPHRD_ETHER, None):
            return osken.render_frame(bytes(mac) + bytes(pkt), redact=self.redact)
        first = osken.l3_parser(proto) if proto is not None else None
        if first is None:
            return osken.render_from(pkt, osken.raw_parser, redact=self.redact)
        return osken.render_from(pkt, first, redact=self.redact)

    def _header(self, rec: list[Any]) -> str:
        if not self.oslo:
            return ""
        sec = rec[self._s_sec]
        if sec is None:
            now = self.ctx.clock.wall()
            sec, msec = int(now), int((now % 1) * 1000)
        else:
            msec = (rec[self._s_usec] or 0) // 1000
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(sec))
        return f"{stamp}.{msec:03d} {self.pid} INFO {self.logger} [-] "


def _text(value: Any) -> str:
    """A value as ``%s`` prints it, escaped (ids and times come from outside)."""
    return "None" if value is None else escape_text(str(value))
