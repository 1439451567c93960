"""IPv6 header (RFC 8200) and ulogd2's walk over its extension headers."""

from __future__ import annotations

import struct
from typing import TypeAlias

from pyulogd.packet import Buffer, ipsec

# version/traffic class/flow label, payload length, next header, hop limit, src, dst
HEADER = struct.Struct("!IHBB16s16s")
SIZE = 40
_FRAG = struct.Struct("!HI")  # offset+flags, identification (after next header, reserved)

HOPOPTS = 0
ROUTING = 43
FRAGMENT = 44
ESP = 50
AH = 51
NONE = 59
DSTOPTS = 60
# What ulogd's ip6_ext_hdr() walks; every other next header ends the walk.
EXTENSION_HEADERS = frozenset((HOPOPTS, ROUTING, FRAGMENT, ESP, AH, DSTOPTS))

# The fixed header's keys (ip.saddr, ip.daddr; then the first four ip6.* keys).
Ip6Fields: TypeAlias = tuple[bytes, bytes, int, int, int, int]
FIELDS = ("ip6.payloadlen", "ip6.priority", "ip6.flowlabel", "ip6.hoplimit")
# What walk() reports for the contiguous keys ip6.nexthdr, ip6.fragoff, ip6.fragid.
WALK_FIELDS = ("ip6.nexthdr", "ip6.fragoff", "ip6.fragid")
Ip6Walk: TypeAlias = tuple[
    tuple[int | None, int | None, int | None],  # ip6.nexthdr, ip6.fragoff, ip6.fragid
    int | None,  # ip.protocol: the upper-layer protocol, None when the walk stopped before it
    int,  # where the upper-layer header starts
    int,  # bytes from there
    int | None,  # ahesp.spi
    bool,  # an extension header was cut short
]


def decode(buf: Buffer, length: int) -> Ip6Fields | None:
    """(saddr, daddr, payloadlen, priority, flowlabel, hoplimit), or None under 40 bytes.

    ``ip6.priority`` is the traffic class byte, ``ip6.flowlabel`` the low 20 bits; the
    version nibble is not checked (nor is it by ulogd).
    """
    if length < 40:
        return None
    vtf, plen, _nxt, hlim, saddr, daddr = HEADER.unpack_from(buf)
    return (saddr, daddr, plen, vtf >> 20 & 0xFF, vtf & 0xFFFFF, hlim)


def walk(buf: Buffer, length: int) -> Ip6Walk:
    """Follow the next-header chain from the fixed header as ulogd2 2.0.8 does.

    Call only when ``length >= 40``. Hop-by-hop, routing and destination options are
    skipped by their length ((n+1)*8), AH by its length ((n+2)*4); a fragment header sets
    ``ip6.fragoff`` (in bytes: the 13-bit offset times 8) and ``ip6.fragid``, and a non-zero
    offset stops the walk at the next header that follows (which is what ``ip6.nexthdr``
    then holds, with no ``ip.protocol`` and no L4 keys); ESP stops the walk with
    ``ip6.nexthdr`` = 50. Otherwise ``ip.protocol`` and ``ip6.nexthdr`` are the upper-layer
    protocol. A header cut short ends the walk with neither set (keys set before stay set).

    Deviations from 2.0.8 (docs/compat.md): ``ahesp.spi`` is reported for AH and ESP, and
    ESP's length test is its fixed 8 bytes, where 2.0.8 computed (spi[1]+2)*4 from the SPI's
    second byte (ESP has no length field) and so lost ``ip6.nexthdr`` on short packets.
    """
    cur = buf[6]
    ptr = 40
    rem = length - 40
    fragoff: int | None = None
    fragid: int | None = None
    spi: int | None = None
    fragment = False
    while cur in EXTENSION_HEADERS:
        if rem < 2:
            return (None, fragoff, fragid), None, ptr, rem, spi, True
        if cur == FRAGMENT:
            if rem < 8:
                return (None, fragoff, fragid), None, ptr, rem, spi, True
            offlg, fragid = _FRAG.unpack_from(buf, ptr + 2)
            fragoff = offlg & 0xFFF8
            if fragoff:
                fragment = True
            hdrlen = 8
        elif fragment:
            break
        elif cur == AH:
            hdrlen = (buf[ptr + 1] + 2) << 2
            if rem < hdrlen:
                return (None, fragoff, fragid), None, ptr, rem, spi, True
            spi = ipsec.ah_spi(buf, ptr, rem)
        elif cur == ESP:
            if rem < ipsec.ESP_SIZE:
                return (None, fragoff, fragid), None, ptr, rem, spi, True
            spi = ipsec.esp_spi(buf, ptr, rem)
            return (ESP, fragoff, fragid), None, ptr, rem, spi, False
        else:  # hop-by-hop, routing, destination options
            hdrlen = (buf[ptr + 1] + 1) << 3
            if rem < hdrlen:
                return (None, fragoff, fragid), None, ptr, rem, spi, True
        rem -= hdrlen
        cur = buf[ptr]
        ptr += hdrlen
    if fragment:
        return (cur, fragoff, fragid), None, ptr, rem, spi, False
    return (cur, fragoff, fragid), cur, ptr, rem, spi, False
