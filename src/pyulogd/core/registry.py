"""Every plugin pyulogd knows, by ulogd name, and the ulogd2 shared object it stands for.

Plugins are imported on first use so that start-up only pays for the plugins a config uses.
Adding a plugin is one line here.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

from pyulogd.core.errors import ConfigError
from pyulogd.core.plugin import Plugin

# name -> "module:Class" (module relative to pyulogd.plugins)
PLUGINS: dict[str, str] = {
    "NFLOG": "inputs.nflog:NflogInput",
    "NFCT": "inputs.nfct:NfctInput",
    "NFACCT": "inputs.nfacct:NfacctInput",
    "UNIXSOCK": "inputs.unixsock:UnixsockInput",
    "BASE": "filters.base:BaseFilter",
    "IFINDEX": "filters.ifindex:IfindexFilter",
    "IP2STR": "filters.ip2str:Ip2strFilter",
    "IP2BIN": "filters.ip2bin:Ip2binFilter",
    "IP2HBIN": "filters.ip2hbin:Ip2hbinFilter",
    "MARK": "filters.mark:MarkFilter",
    "PWSNIFF": "filters.pwsniff:PwsniffFilter",
    "HWHDR": "filters.hwhdr:HwhdrFilter",
    "PRINTPKT": "filters.printpkt:PrintpktFilter",
    "PRINTFLOW": "filters.printflow:PrintflowFilter",
    "LOGEMU": "outputs.logemu:LogemuOutput",
    "JSON": "outputs.json:JsonOutput",
    "SYSLOG": "outputs.syslog:SyslogOutput",
    "PCAP": "outputs.pcap:PcapOutput",
    "NACCT": "outputs.nacct:NacctOutput",
    "GRAPHITE": "outputs.graphite:GraphiteOutput",
    "IPFIX": "outputs.ipfix:IpfixOutput",
    "XML": "outputs.xml:XmlOutput",
    "GPRINT": "outputs.gprint:GprintOutput",
    "OPRINT": "outputs.oprint:OprintOutput",
    "SQLITE3": "outputs.sqlite3:Sqlite3Output",
    "PGSQL": "outputs.pgsql:PgsqlOutput",
    "MYSQL": "outputs.mysql:MysqlOutput",
    "DBI": "outputs.dbi:DbiOutput",
}

# Every shared object ulogd2 2.0.8 ships, by plugin name. Names missing from PLUGINS are
# ulogd2 plugins pyulogd does not implement yet: a plugin= line naming them is accepted
# (so Debian's ulogd.conf loads), a stack using them is refused.
SO_NAMES: dict[str, str] = {
    "ulogd_inppkt_NFLOG.so": "NFLOG",
    "ulogd_inppkt_ULOG.so": "ULOG",
    "ulogd_inppkt_UNIXSOCK.so": "UNIXSOCK",
    "ulogd_inpflow_NFCT.so": "NFCT",
    "ulogd_inpflow_NFACCT.so": "NFACCT",
    "ulogd_raw2packet_BASE.so": "BASE",
    "ulogd_filter_IFINDEX.so": "IFINDEX",
    "ulogd_filter_IP2STR.so": "IP2STR",
    "ulogd_filter_IP2BIN.so": "IP2BIN",
    "ulogd_filter_IP2HBIN.so": "IP2HBIN",
    "ulogd_filter_HWHDR.so": "HWHDR",
    "ulogd_filter_MARK.so": "MARK",
    "ulogd_filter_PRINTPKT.so": "PRINTPKT",
    "ulogd_filter_PRINTFLOW.so": "PRINTFLOW",
    "ulogd_filter_PWSNIFF.so": "PWSNIFF",
    "ulogd_output_LOGEMU.so": "LOGEMU",
    "ulogd_output_SYSLOG.so": "SYSLOG",
    "ulogd_output_OPRINT.so": "OPRINT",
    "ulogd_output_GPRINT.so": "GPRINT",
    "ulogd_output_JSON.so": "JSON",
    "ulogd_output_XML.so": "XML",
    "ulogd_output_NACCT.so": "NACCT",
    "ulogd_output_PCAP.so": "PCAP",
    "ulogd_output_GRAPHITE.so": "GRAPHITE",
    "ulogd_output_IPFIX.so": "IPFIX",
    "ulogd_output_SQLITE3.so": "SQLITE3",
    "ulogd_output_PGSQL.so": "PGSQL",
    "ulogd_output_MYSQL.so": "MYSQL",
    "ulogd_output_DBI.so": "DBI",
}
ULOGD_NAMES = frozenset(SO_NAMES.values())

# ulogd2 plugins pyulogd refuses on purpose, with the reason (a plugin= line naming them is
# still accepted, so a config that loads every plugin keeps working; a stack using them is not).
REFUSED: dict[str, str] = {
    "ULOG": (
        "plugin ULOG is not supported: the kernel's ULOG target (ipt_ULOG) was removed in Linux 3.17 "
        "and ulogd 2.0.9 dropped the plugin too; log with NFLOG instead: replace 'ULOG' by 'NFLOG' "
        "in the stack, 'nlgroup=N' by 'group=N' in its section, and the iptables rule "
        "'-j ULOG --ulog-nlgroup N' by '-j NFLOG --nflog-group N' (nft: 'log group N')"
    ),
}


def plugin_for_so(path: str) -> str:
    """The plugin name a ``plugin="…/ulogd_output_JSON.so"`` line stands for."""
    base = os.path.basename(path)
    name = SO_NAMES.get(base)
    if name is None:
        raise ConfigError(
            f"unknown plugin file '{base}' (pyulogd has the plugins of ulogd2: "
            + ", ".join(sorted(SO_NAMES))
            + ")"
        )
    return name


_extra: dict[str, type[Plugin]] = {}


def register(cls: type[Plugin]) -> None:
    """Make a plugin class available by its name (tests, site plugins)."""
    _extra[cls.name] = cls


def unregister(name: str) -> None:
    _extra.pop(name, None)


def get(name: str) -> type[Plugin]:
    if name in _extra:
        return _extra[name]
    spec = PLUGINS.get(name)
    if spec is None:
        if name in REFUSED:
            raise ConfigError(REFUSED[name])
        if name in ULOGD_NAMES:
            raise ConfigError(f"plugin {name} of ulogd2 is not implemented in pyulogd yet")
        raise ConfigError(f"can't find requested plugin {name} (known: {', '.join(sorted(PLUGINS))})")
    module, cls = spec.split(":")
    mod = importlib.import_module(f"pyulogd.plugins.{module}")
    plugin: type[Plugin] = getattr(mod, cls)
    return plugin


def fuse(stack: Any) -> Callable[[list[Any]], None] | None:
    """A fused ``run()`` for a stack of well-known plugins (:mod:`pyulogd.plugins.fused`), or None."""
    if not _FUSABLE.intersection(inst.name for inst in stack.instances[:1]):
        return None  # nothing to import for the other stacks
    from pyulogd.plugins.fused import fuse as fuse_stack

    return fuse_stack(stack)


_FUSABLE = frozenset({"NFCT"})  # inputs that start a stack pyulogd.plugins.fused knows


def names() -> list[str]:
    return sorted(PLUGINS)
