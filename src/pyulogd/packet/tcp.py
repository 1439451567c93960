"""TCP header (RFC 9293)."""

from __future__ import annotations

import struct
from typing import TypeAlias

from pyulogd.packet import Buffer

HEADER = struct.Struct("!HHIIBBHHH")
SIZE = 20
_unpack = HEADER.unpack_from

# Byte 13 -> (urg, ack, psh, rst, syn, fin, res2): indexing a table is cheaper than
# twelve shifts and masks per packet. BASE's IPv4 fast path uses it too.
FLAGS: tuple[tuple[int, int, int, int, int, int, int], ...] = tuple(
    (b >> 5 & 1, b >> 4 & 1, b >> 3 & 1, b >> 2 & 1, b >> 1 & 1, b & 1, b >> 6) for b in range(256)
)

FIELDS = (
    "tcp.sport",
    "tcp.dport",
    "tcp.seq",
    "tcp.ackseq",
    "tcp.window",
    "tcp.offset",
    "tcp.reserved",
    "tcp.urg",
    "tcp.urgp",
    "tcp.ack",
    "tcp.psh",
    "tcp.rst",
    "tcp.syn",
    "tcp.fin",
    "tcp.res1",
    "tcp.res2",
    "tcp.csum",
)
TcpFields: TypeAlias = tuple[
    int, int, int, int, int, int, int, int, int | None, int, int, int, int, int, int, int, int
]


def decode(buf: Buffer, off: int, length: int) -> TcpFields | None:
    """The ``tcp.*`` keys, or None with fewer than 20 bytes.

    Byte 12 is ``doff:4 res1:4`` and byte 13 ``res2:2 urg ack psh rst syn fin`` in Linux's
    ``struct tcphdr`` (res2 = CWR/ECE today, res1's low bit = AE). ulogd's BOOL keys hold the
    bit-field value, so ``tcp.res1`` is 0..15 and ``tcp.res2`` 0..3, not 0/1.
    ``tcp.offset`` is the data offset in 32-bit words and ``tcp.reserved`` the res1 nibble:
    what 2.0.8 meant; it prints 0 for both (``ntohs()`` of a 4-bit field, docs/compat.md).
    ``tcp.urgp`` is only set when URG is.
    """
    if length < 20:
        return None
    sport, dport, seq, ack, b12, b13, window, csum, urgp = _unpack(buf, off)
    f = FLAGS[b13]
    res1 = b12 & 15
    return (sport, dport, seq, ack, window, b12 >> 4, res1, f[0], urgp if f[0] else None,
            f[1], f[2], f[3], f[4], f[5], res1, f[6], csum)  # fmt: skip
