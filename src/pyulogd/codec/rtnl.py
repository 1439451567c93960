"""rtnetlink link messages: requests to build, and replies/notifications to parse (sans-IO).

Only what the IFINDEX filter needs: ``RTM_NEWLINK``/``RTM_DELLINK`` reduced to
``(event, ifindex, name)``, the end of a dump (``NLMSG_DONE``) and errors. A buffer from
``recv()`` may hold several netlink messages; :func:`parse_buffer` never raises, it counts
what it cannot decode so that a malformed message from the kernel cannot stop the daemon.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import NamedTuple

from pyulogd.core.errors import DecodeError

NLMSG_HDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
IFINFOMSG = struct.Struct("=BxHiII")  # family, (pad), type, index, flags, change
RTATTR = struct.Struct("=HH")  # len, type
_I32 = struct.Struct("=i")
_U32 = struct.Struct("=I")

NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18

NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_DUMP = 0x300

IFLA_IFNAME = 3
IFLA_EXT_MASK = 29
# Link statistics are most of a link message and IFINDEX does not need them.
RTEXT_FILTER_SKIP_STATS = 1 << 3

RTMGRP_LINK = 0x1

_HDR_LEN = NLMSG_HDR.size
_IFI_LEN = IFINFOMSG.size


def _align(n: int) -> int:
    return (n + 3) & ~3


class LinkMsg(NamedTuple):
    event: int  # RTM_NEWLINK or RTM_DELLINK
    ifindex: int
    name: str | None  # None only for RTM_DELLINK without IFLA_IFNAME


@dataclass
class Batch:
    """Everything one receive buffer said."""

    links: list[LinkMsg] = field(default_factory=list)
    done: list[int] = field(default_factory=list)  # seq numbers of finished dumps
    # (seq, errno) of NLMSG_ERROR messages; errno 0 is a plain acknowledgement.
    errors: list[tuple[int, int]] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)  # seq of each link message, parallel to links
    malformed: int = 0
    overrun: bool = False


def getlink_request(seq: int, ifindex: int = 0) -> bytes:
    """RTM_GETLINK: a dump of every link (``ifindex`` 0) or the one link with that index."""
    flags = NLM_F_REQUEST | (NLM_F_DUMP if ifindex == 0 else 0)
    body = IFINFOMSG.pack(0, 0, ifindex, 0, 0) + RTATTR.pack(8, IFLA_EXT_MASK)
    body += _U32.pack(RTEXT_FILTER_SKIP_STATS)
    return NLMSG_HDR.pack(_HDR_LEN + len(body), RTM_GETLINK, flags, seq & 0xFFFFFFFF, 0) + body


def parse_link(buf: bytes | memoryview, off: int, end: int, msg_type: int) -> LinkMsg:
    """Decode the payload of one RTM_NEWLINK/RTM_DELLINK message (``buf[off:end]``)."""
    if end - off < _IFI_LEN:
        raise DecodeError(f"link message payload of {end - off} bytes, need {_IFI_LEN}")
    _family, _type, index, _flags, _change = IFINFOMSG.unpack_from(buf, off)
    name: str | None = None
    pos = off + _IFI_LEN
    while pos + 4 <= end:
        rta_len, rta_type = RTATTR.unpack_from(buf, pos)
        if rta_len < 4 or pos + rta_len > end:
            raise DecodeError(f"attribute of length {rta_len} at offset {pos} overruns the message")
        if rta_type & 0x3FFF == IFLA_IFNAME:
            raw = bytes(buf[pos + 4 : pos + rta_len])
            cut = raw.find(b"\0")
            if cut >= 0:
                raw = raw[:cut]
            if not raw:
                raise DecodeError("empty IFLA_IFNAME")
            name = raw.decode("utf-8", "surrogateescape")
        pos += _align(rta_len)
    if index <= 0:
        raise DecodeError(f"link message with ifindex {index}")
    if name is None and msg_type == RTM_NEWLINK:
        raise DecodeError(f"RTM_NEWLINK for ifindex {index} without IFLA_IFNAME")
    return LinkMsg(msg_type, index, name)


def parse_buffer(buf: bytes | memoryview) -> Batch:
    """Split a receive buffer into netlink messages and decode the ones that matter.

    Messages of other types are skipped; a message that cannot be decoded is counted in
    ``malformed``; a header that makes the rest of the buffer unreadable ends the walk.
    """
    out = Batch()
    off, total = 0, len(buf)
    while off + _HDR_LEN <= total:
        length, msg_type, _flags, seq, _pid = NLMSG_HDR.unpack_from(buf, off)
        if length < _HDR_LEN or off + length > total:
            out.malformed += 1
            return out
        start, end = off + _HDR_LEN, off + length
        if msg_type in (RTM_NEWLINK, RTM_DELLINK):
            try:
                out.links.append(parse_link(buf, start, end, msg_type))
                out.seqs.append(seq)
            except DecodeError:
                out.malformed += 1
        elif msg_type == NLMSG_DONE:
            out.done.append(seq)
        elif msg_type == NLMSG_ERROR:
            if end - start < 4:
                out.malformed += 1
            else:
                out.errors.append((seq, -_I32.unpack_from(buf, start)[0]))
        elif msg_type == NLMSG_OVERRUN:
            out.overrun = True
        off += _align(length)
    if off < total:
        out.malformed += 1  # trailing bytes too short for a header
    return out
