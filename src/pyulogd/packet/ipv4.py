"""IPv4 header (RFC 791), read as ulogd2 2.0.8's BASE reads it."""

from __future__ import annotations

import struct
from typing import Final, TypeAlias

from pyulogd.packet import Buffer

HEADER = struct.Struct("!BBHHHBBH4s4s")

FIELDS = (
    "ip.saddr",
    "ip.daddr",
    "ip.protocol",
    "ip.tos",
    "ip.ttl",
    "ip.totlen",
    "ip.ihl",
    "ip.csum",
    "ip.id",
    "ip.fragoff",
)
Ip4Fields: TypeAlias = tuple[bytes, bytes, int, int, int, int, int, int, int, int]

PROTO: Final = 2  # index of ip.protocol in the result
IHL: Final = 6  # index of ip.ihl (32-bit words)
FRAGOFF: Final = 9  # index of ip.fragoff (flags and offset)


def decode(buf: Buffer, length: int) -> Ip4Fields | None:
    """The ``ip.*`` keys, or None when ulogd sets none of them.

    ulogd requires 20 bytes and at least one byte after the header (``length > ihl*4``);
    it checks neither the version nibble nor ``ihl >= 5``, so a bogus ihl moves the L4
    header (``ihl*4`` is where the caller decodes it from) but still decodes.
    ``ip.fragoff`` is the whole 16-bit flags+offset field (16384 = DF), as in ulogd.
    """
    if length < 20:
        return None
    vihl, tos, totlen, ident, frag, ttl, proto, csum, saddr, daddr = HEADER.unpack_from(buf)
    ihl = vihl & 15
    if length <= ihl << 2:
        return None
    return (saddr, daddr, proto, tos, ttl, totlen, ihl, csum, ident, frag)
