"""What a key is: name and type of a value a plugin produces or consumes.

Apart from :mod:`pyulogd.core.plugin`, so that the codecs, which fill value lists in key
order, can declare their keys (names, types, help) once, and the plugins that use those
codecs import the table, without the codecs depending on the plugin framework. Imports
nothing of pyulogd (see the layer table in docs/design.md).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class KeyType(enum.IntEnum):
    """ulogd's key types; the numbers are ulogd's own (``ULOGD_RET_*``)."""

    NONE = 0x0000
    INT8 = 0x0001
    INT16 = 0x0002
    INT32 = 0x0003
    INT64 = 0x0004
    UINT8 = 0x0011
    UINT16 = 0x0012
    UINT32 = 0x0013
    UINT64 = 0x0014
    BOOL = 0x0050
    IPADDR = 0x0100
    IP6ADDR = 0x0200
    STRING = 0x8020
    RAW = 0x8030
    RAWSTR = 0x8040
    # pyulogd's own, not a ulogd type: a ``dict`` of names to JSON-able values (IPFIXIN's
    # ``ipfix.extra``). Outputs without a way to write one leave it out, as they do RAW.
    MAP = 0x9000


@dataclass(frozen=True, slots=True)
class Key:
    """A named value a plugin produces (output key) or consumes (input key)."""

    name: str
    type: KeyType = KeyType.NONE
    optional: bool = False
    inactive: bool = False
    cim: str | None = None  # the JSON output's field name for this key (src_ip, dest_port, ...)
    help: str = ""


# The values of ``audit.action``, a closed list every plugin that decides or reports a verdict
# uses (NFTRACE first): declared once here, where every layer may import it, so that outputs,
# filters and later inputs compare against the same words. ``OTHER`` is any verdict that is
# none of the three (queued to user space, stolen, ...).
AUDIT_ACTIONS: tuple[str, ...] = ("ACCEPT", "DROP", "REJECT", "OTHER")
ACCEPT, DROP, REJECT, OTHER = AUDIT_ACTIONS
