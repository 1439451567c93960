"""NFLOG packet messages laid out as the kernel writes them (``__build_packet_message``).

For tests and benchmarks only: the daemon never builds a packet message, so this does not ship
in the package (moved from ``pyulogd.codec.nflog``, whose constants it uses).
"""

from __future__ import annotations

import struct

from pyulogd.codec import netlink as nl
from pyulogd.codec.nflog import (
    NFULA_CT,
    NFULA_GID,
    NFULA_HWADDR,
    NFULA_HWHEADER,
    NFULA_HWLEN,
    NFULA_HWTYPE,
    NFULA_IFINDEX_INDEV,
    NFULA_IFINDEX_OUTDEV,
    NFULA_MARK,
    NFULA_PACKET_HDR,
    NFULA_PAYLOAD,
    NFULA_PREFIX,
    NFULA_SEQ,
    NFULA_SEQ_GLOBAL,
    NFULA_TIMESTAMP,
    NFULA_UID,
    NFULNL_MSG_PACKET,
)


def build_packet(
    *,
    family: int = 2,
    group: int = 0,
    hw_protocol: int | None = 0x0800,
    hook: int = 1,
    mark: int | None = None,
    timestamp: tuple[int, int] | None = None,
    indev: int | None = None,
    outdev: int | None = None,
    hwaddr: bytes | None = None,
    hwtype: int | None = None,
    hwheader: bytes | None = None,
    payload: bytes | None = None,
    prefix: bytes | None = None,
    uid: int | None = None,
    gid: int | None = None,
    seq: int | None = None,
    seq_global: int | None = None,
    ct: bytes | None = None,
    nlmsg_flags: int = 0,
) -> bytes:
    """An NFULNL_MSG_PACKET message with the given attributes, in the kernel's order."""
    u32 = struct.Struct("!I").pack
    u16 = struct.Struct("!H").pack
    at: list[bytes] = []
    if hw_protocol is not None:
        at.append(nl.nla(NFULA_PACKET_HDR, struct.pack("!HBx", hw_protocol, hook)))
    if prefix is not None:
        at.append(nl.nla(NFULA_PREFIX, prefix + b"\0"))
    if indev is not None:
        at.append(nl.nla(NFULA_IFINDEX_INDEV, u32(indev)))
    if outdev is not None:
        at.append(nl.nla(NFULA_IFINDEX_OUTDEV, u32(outdev)))
    if mark is not None:
        at.append(nl.nla(NFULA_MARK, u32(mark)))
    if hwaddr is not None:
        at.append(nl.nla(NFULA_HWADDR, u16(len(hwaddr)) + b"\0\0" + hwaddr[:8].ljust(8, b"\0")))
    if hwheader is not None:
        at.append(nl.nla(NFULA_HWTYPE, u16(1 if hwtype is None else hwtype)))
        at.append(nl.nla(NFULA_HWLEN, u16(len(hwheader))))
        at.append(nl.nla(NFULA_HWHEADER, hwheader))
    if timestamp is not None:
        at.append(nl.nla(NFULA_TIMESTAMP, struct.pack("!QQ", *timestamp)))
    if uid is not None:
        at.append(nl.nla(NFULA_UID, u32(uid)))
    if gid is not None:
        at.append(nl.nla(NFULA_GID, u32(gid)))
    if seq is not None:
        at.append(nl.nla(NFULA_SEQ, u32(seq)))
    if seq_global is not None:
        at.append(nl.nla(NFULA_SEQ_GLOBAL, u32(seq_global)))
    if ct is not None:
        at.append(nl.nla(NFULA_CT | nl.NLA_F_NESTED, ct))
    if payload is not None:
        at.append(nl.nla(NFULA_PAYLOAD, payload))
    return nl.nfnl_msg(nl.NFNL_SUBSYS_ULOG, NFULNL_MSG_PACKET, family, group, at, 0, nlmsg_flags)
