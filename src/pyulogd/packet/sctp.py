"""SCTP common header (RFC 9260 section 3.1)."""

from __future__ import annotations

import struct
from typing import TypeAlias

from pyulogd.packet import Buffer

# source port, destination port, verification tag (not reported), checksum
HEADER = struct.Struct("!HHII")
SIZE = 12

FIELDS = ("sctp.sport", "sctp.dport", "sctp.csum")
SctpFields: TypeAlias = tuple[int, int, int]


def decode(buf: Buffer, off: int, length: int) -> SctpFields | None:
    """The ``sctp.*`` keys (sport, dport, csum as a 32-bit integer), or None under 12 bytes."""
    if length < 12:
        return None
    sport, dport, _vtag, csum = HEADER.unpack_from(buf, off)
    return (sport, dport, csum)
