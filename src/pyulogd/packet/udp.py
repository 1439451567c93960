"""UDP header (RFC 768)."""

from __future__ import annotations

import struct
from typing import TypeAlias

from pyulogd.packet import Buffer

HEADER = struct.Struct("!HHHH")
SIZE = 8

FIELDS = ("udp.sport", "udp.dport", "udp.len", "udp.csum")
UdpFields: TypeAlias = tuple[int, int, int, int]


def decode(buf: Buffer, off: int, length: int) -> UdpFields | None:
    """The ``udp.*`` keys (sport, dport, len, csum), or None with fewer than 8 bytes."""
    if length < 8:
        return None
    sport, dport, ulen, csum = HEADER.unpack_from(buf, off)
    return (sport, dport, ulen, csum)
