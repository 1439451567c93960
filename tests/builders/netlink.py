"""Netlink messages as the kernel sends them: errors, acks and the end of a batch or dump.

For tests only (moved from ``pyulogd.codec.netlink``, whose framing it uses).
"""

from __future__ import annotations

from pyulogd.codec.netlink import (
    _ERRNO,
    HDR,
    NFGEN_HDRLEN,
    NLM_F_MULTI,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSG_HDRLEN,
    _unpack_hdr,
    nlmsg,
)


def error_msg(errno: int, request: bytes = b"", seq: int | None = None, pid: int = 0) -> bytes:
    """An NLMSG_ERROR (ack when ``errno`` is 0) answering ``request``, as the kernel sends it."""
    if seq is None:
        seq = _unpack_hdr(request, 0)[3] if len(request) >= NLMSG_HDRLEN else 0
    orig = request[:NLMSG_HDRLEN] if request else HDR.pack(NLMSG_HDRLEN, 0, 0, seq, pid)
    return nlmsg(NLMSG_ERROR, 0, seq, _ERRNO.pack(-errno) + orig, pid)


def done_msg(seq: int = 0, pid: int = 0, flags: int = NLM_F_MULTI) -> bytes:
    """NLMSG_DONE as nfnetlink_log closes a batch (an nfgenmsg-sized zero payload)."""
    return nlmsg(NLMSG_DONE, flags, seq, b"\0" * NFGEN_HDRLEN, pid)
