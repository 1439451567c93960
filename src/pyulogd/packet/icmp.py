"""ICMP header (RFC 792), with ulogd2 2.0.8's byte-order quirks."""

from __future__ import annotations

import struct
from typing import TypeAlias

from pyulogd.packet import Buffer

# type, code, checksum (read little-endian: see decode), then the 4 "rest of header" bytes
HEADER = struct.Struct("!BB2sHH")
SIZE = 8

ECHOREPLY = 0
DEST_UNREACH = 3
FRAG_NEEDED = 4  # code of DEST_UNREACH
REDIRECT = 5
ECHO = 8
PARAMETERPROB = 12

FIELDS = (
    "icmp.type",
    "icmp.code",
    "icmp.echoid",
    "icmp.echoseq",
    "icmp.gateway",
    "icmp.fragmtu",
    "icmp.csum",
)
IcmpFields: TypeAlias = tuple[int, int, int | None, int | None, bytes | None, int | None, int]


def decode(buf: Buffer, off: int, length: int) -> IcmpFields | None:
    """The ``icmp.*`` keys, or None with fewer than 8 bytes.

    As in 2.0.8: ``icmp.csum`` is the checksum *not* converted from network order (wire
    0xd56a reads 0x6ad5, the value of the two bytes on a little-endian host); echo id and
    sequence for echo request/reply; ``icmp.gateway`` for redirect and parameter problem
    (whose pointer is its first byte), holding ``ntohl()`` of the field: as an IPADDR value
    that is the 4 bytes reversed, i.e. the C key's memory on x86, so every consumer shows it
    exactly as 2.0.8 does there (IP2STR/inet_ntop: reversed, SQL's ``%u``: the conventional
    integer); ``icmp.fragmtu`` for "fragmentation needed".
    """
    if length < 8:
        return None
    itype, code, csum, w1, w2 = HEADER.unpack_from(buf, off)
    csum_le = csum[0] | csum[1] << 8
    if itype == ECHO or itype == ECHOREPLY:
        return (itype, code, w1, w2, None, None, csum_le)
    if itype == REDIRECT or itype == PARAMETERPROB:
        gateway = bytes((w2 & 0xFF, w2 >> 8, w1 & 0xFF, w1 >> 8))
        return (itype, code, None, None, gateway, None, csum_le)
    if itype == DEST_UNREACH and code == FRAG_NEEDED:
        return (itype, code, None, None, None, w2, csum_le)
    return (itype, code, None, None, None, None, csum_le)
