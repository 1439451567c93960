"""Every plugin pyulogd has, found where it lives, and the plugins ulogd2 ships, as data.

A plugin registers itself by existing: it is a class deriving from
:class:`~pyulogd.core.plugin.Plugin`, defined in a module of ``pyulogd.plugins.inputs``,
``.filters`` or ``.outputs``, that declares its own ``name`` (and ``so_name``, the ulogd2
shared object it replaces, only where ulogd2 has that plugin). Nothing here lists plugins,
so adding one is one new file (plus its test, case folder, docs line and CHANGELOG line).

Plugins are imported on first use, so that start-up only pays for the plugins a config
uses (PGSQL's module imports psycopg, MYSQL's pymysql): :func:`get` imports the module
named after the plugin (``filters/ip2str.py`` for IP2STR) and only when that module does
not define it falls back to :func:`names`, which imports every plugin module. Third-party
plugins are not discovered (no entry points); a test adds a class with :func:`register`.

``plugin="…/ulogd_xxx.so"`` lines are looked up in :data:`SO_NAMES`, a list of what ulogd2
ships, without importing anything: Debian's ulogd.conf names every plugin, databases
included.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
from types import ModuleType

from pyulogd.core.errors import ConfigError
from pyulogd.core.plugin import Plugin

# Where plugins live; a plugin's module is found here by its lower-case name.
PACKAGES = ("pyulogd.plugins.inputs", "pyulogd.plugins.filters", "pyulogd.plugins.outputs")

# Every shared object ulogd2 2.0.8 ships, by plugin name: data about ulogd2, not about
# pyulogd (a plugin's ``so_name`` must be one of these; the compliance test checks). Names
# pyulogd has no plugin for are accepted on plugin= lines (so Debian's ulogd.conf loads); a
# stack using them is refused.
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
# Plugins discovered so far, by name (all of them after names()).
_found: dict[str, type[Plugin]] = {}


def register(cls: type[Plugin]) -> None:
    """Make a plugin class available by its name (tests, site plugins); it wins over a
    discovered plugin of the same name."""
    _extra[cls.name] = cls


def unregister(name: str) -> None:
    _extra.pop(name, None)


def get(name: str) -> type[Plugin]:
    """The plugin class called ``name``; a ConfigError saying why when there is none."""
    cls = _extra.get(name) or _found.get(name) or _by_module_name(name)
    if cls is None:
        names()  # a plugin in a module named otherwise
        cls = _found.get(name)
    if cls is not None:
        return cls
    if name in REFUSED:
        raise ConfigError(REFUSED[name])
    if name in ULOGD_NAMES:
        raise ConfigError(f"plugin {name} of ulogd2 is not implemented in pyulogd yet")
    raise ConfigError(f"can't find requested plugin {name} (known: {', '.join(names())})")


def names() -> list[str]:
    """Every plugin pyulogd has, found afresh (importing every plugin module); not those
    added by :func:`register`."""
    found: dict[str, type[Plugin]] = {}
    for package in PACKAGES:
        pkg = importlib.import_module(package)
        for info in pkgutil.iter_modules(pkg.__path__):
            _add(importlib.import_module(f"{package}.{info.name}"), found)
    _found.clear()
    _found.update(found)
    return sorted(found)


def declared(module: ModuleType) -> list[type[Plugin]]:
    """The plugins a module defines: its own Plugin subclasses that declare a ``name``
    themselves (so a shared base class such as io/output.py's Output is not one)."""
    return [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, Plugin)
        and obj.__module__ == module.__name__
        and obj.__dict__.get("name")
    ]


def _add(module: ModuleType, found: dict[str, type[Plugin]]) -> None:
    for cls in declared(module):
        other = found.setdefault(cls.name, cls)
        if other is not cls:
            raise RuntimeError(
                f"two plugins are called {cls.name}: {other.__module__}.{other.__qualname__} "
                f"and {cls.__module__}.{cls.__qualname__}"
            )


def _by_module_name(name: str) -> type[Plugin] | None:
    """The fast path of :func:`get`: the plugin from the module named after it, if any."""
    base = name.lower()
    if not base.isidentifier():
        return None
    for package in PACKAGES:
        full = f"{package}.{base}"
        if importlib.util.find_spec(full) is not None:
            _add(importlib.import_module(full), _found)
            if name in _found:
                return _found[name]
    return None
