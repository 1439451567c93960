"""Information elements: names and abstract data types by (enterprise number, element id).

The IANA registry ships as data (``iana-ipfix-ie.csv`` beside this module: where it comes
from, its date and its licence are in its header), read once on first use. On top of it:

* **RFC 5103 reverse elements**: enterprise 29305 with element ``n`` is the reverse
  direction of IANA element ``n``, named ``reverse`` + its name (``reverseOctetDeltaCount``),
  with its type.
* **VMware (6876)**, as Open vSwitch sends them (``ofproto/ipfix-enterprise-entities.def``
  and ``ofproto-dpif-ipfix.c``, read at v3.1.0): the tunnel elements and ``virtualObsID``.
* **NetFlow v9 scope fields** (RFC 3954 6.1: System, Interface, Line Card, Cache, Template):
  their type numbers collide with IANA elements 1-5, so they get a pseudo enterprise number
  of their own, :data:`PEN_V9_SCOPE`, which never comes from the wire (a PEN is 32 bits).

Anything else is unknown: named ``<pen>.<id>`` (``0.<id>`` for an unassigned IANA number)
and carried as bytes, never refused.
"""

from __future__ import annotations

import csv
import re
from functools import cache
from importlib import resources

PEN_IANA = 0
PEN_REVERSE = 29305  # RFC 5103 biflow reverse elements
PEN_VMWARE = 6876  # Open vSwitch
PEN_V9_SCOPE = -1  # NetFlow v9 options scope fields (not a real PEN)

REGISTRY_FILE = "iana-ipfix-ie.csv"

VMWARE: dict[int, tuple[str, str]] = {
    891: ("tunnelType", "unsigned8"),  # 1 VXLAN, 2 GRE, 3 LISP, 4 STT, 7 Geneve
    892: ("tunnelKey", "octetArray"),  # variable length: 3 bytes VNI, 4 bytes GRE key
    893: ("tunnelSourceIPv4Address", "ipv4Address"),
    894: ("tunnelDestinationIPv4Address", "ipv4Address"),
    895: ("tunnelProtocolIdentifier", "unsigned8"),
    896: ("tunnelSourceTransportPort", "unsigned16"),
    897: ("tunnelDestinationTransportPort", "unsigned16"),
    898: ("virtualObsID", "string"),  # other_config:virtual_obs_id of the IPFIX row
}
V9_SCOPES: dict[int, str] = {1: "scopeSystem", 2: "scopeInterface", 3: "scopeLineCard", 4: "scopeCache",
                             5: "scopeTemplate"}  # fmt: skip

# What a name may look like: registry names and "<pen>.<id>" (generated code embeds them).
SAFE_NAME = re.compile(r"-?[A-Za-z0-9_.]+\Z")


@cache
def registry() -> dict[int, tuple[str, str]]:
    """IANA element id -> (name, abstract data type), from the shipped CSV."""
    text = resources.files(__package__).joinpath(REGISTRY_FILE).read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    out: dict[int, tuple[str, str]] = {}
    for row in csv.DictReader(lines):
        name = row["Name"]
        if SAFE_NAME.match(name):
            out[int(row["ElementID"])] = (name, row["Abstract Data Type"])
    return out


def registry_meta() -> list[str]:
    """The comment lines heading the CSV (source, date, licence)."""
    text = resources.files(__package__).joinpath(REGISTRY_FILE).read_text(encoding="utf-8")
    return [line[1:].strip() for line in text.splitlines() if line.startswith("#")]


@cache
def ie_info(pen: int, ie: int) -> tuple[str, str]:
    """``(name, abstract data type)`` of element ``ie`` of enterprise ``pen``; unknown ones are
    ``("<pen>.<id>", "octetArray")``."""
    if pen == PEN_IANA:
        found = registry().get(ie)
        if found is not None:
            return found
    elif pen == PEN_REVERSE:
        found = registry().get(ie)
        if found is not None:
            name, dtype = found
            return "reverse" + name[0].upper() + name[1:], dtype
    elif pen == PEN_VMWARE:
        found = VMWARE.get(ie)
        if found is not None:
            return found
    elif pen == PEN_V9_SCOPE:
        return V9_SCOPES.get(ie, f"scope{ie}"), "unsigned64"
    return f"{pen}.{ie}", "octetArray"
