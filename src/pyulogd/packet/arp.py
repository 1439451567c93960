"""ARP over Ethernet/IPv4 (RFC 826, ``struct ether_arp``), for bridge-family packets."""

from __future__ import annotations

import struct
from typing import TypeAlias

from pyulogd.packet import Buffer

# hardware type, protocol type, hln, pln, operation, sha, spa, tha, tpa
HEADER = struct.Struct("!HHBBH6s4s6s4s")
SIZE = 28

FIELDS = (
    "arp.hwtype",
    "arp.protocoltype",
    "arp.operation",
    "arp.shwaddr",
    "arp.saddr",
    "arp.dhwaddr",
    "arp.daddr",
)
ArpFields: TypeAlias = tuple[int, int, int, bytes, bytes, bytes, bytes]


def decode(buf: Buffer, length: int) -> ArpFields | None:
    """The ``arp.*`` keys, or None with fewer than 28 bytes.

    Like ulogd, the fixed Ethernet/IPv4 layout is assumed whatever hln/pln say. The
    addresses are 4 network-order bytes (2.0.9's values; 2.0.8 stored pointers into the
    packet there, which IP2STR turned into garbage), the MACs 6 bytes.
    """
    if length < 28:
        return None
    hrd, pro, _hln, _pln, op, sha, spa, tha, tpa = HEADER.unpack_from(buf)
    return (hrd, pro, op, sha, spa, tha, tpa)
