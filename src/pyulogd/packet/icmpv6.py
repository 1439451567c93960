"""ICMPv6 header (RFC 4443), with ulogd2 2.0.8's checksum quirk."""

from __future__ import annotations

import struct
from typing import TypeAlias

from pyulogd.packet import Buffer

HEADER = struct.Struct("!BB2sHH")
SIZE = 8

ECHO_REQUEST = 128
ECHO_REPLY = 129

FIELDS = ("icmpv6.type", "icmpv6.code", "icmpv6.echoid", "icmpv6.echoseq", "icmpv6.csum")
Icmpv6Fields: TypeAlias = tuple[int, int, int | None, int | None, int]


def decode(buf: Buffer, off: int, length: int) -> Icmpv6Fields | None:
    """The ``icmpv6.*`` keys, or None with fewer than 8 bytes.

    Echo id/sequence only for echo request/reply; ``icmpv6.csum`` not converted from
    network order (the two wire bytes read little-endian), as 2.0.8 reports it.
    """
    if length < 8:
        return None
    itype, code, csum, w1, w2 = HEADER.unpack_from(buf, off)
    csum_le = csum[0] | csum[1] << 8
    if itype == ECHO_REQUEST or itype == ECHO_REPLY:
        return (itype, code, w1, w2, csum_le)
    return (itype, code, None, None, csum_le)
