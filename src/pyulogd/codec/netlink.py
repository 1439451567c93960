"""Netlink framing, sans-IO: split a ``recv()`` buffer into messages, walk attributes, build requests.

Layout (``linux/netlink.h``, ``linux/netfilter/nfnetlink.h``): every message starts with a
16-byte ``nlmsghdr`` (length, type, flags, seq, pid; host byte order), messages follow each
other 4-byte aligned. Netfilter messages then carry a 4-byte ``nfgenmsg`` (family, version,
``res_id`` big-endian) and a list of attributes (``nlattr``: 2-byte length including the
4-byte header, 2-byte type; payload padded to 4 bytes).

Errors: a message whose ``nlmsg_len`` is impossible (shorter than its header, or running past
the buffer) breaks the framing, so nothing after it can be trusted; :func:`split` stops there
and reports why, keeping every message before it. A bad attribute inside a message with a
sane length only spoils that message: :func:`attrs` raises :class:`DecodeError` and the caller
moves on to the next message.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import Any, TypeAlias

from pyulogd.core.errors import DecodeError

# Message types below NLMSG_MIN_TYPE are netlink's own.
NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4
NLMSG_MIN_TYPE = 0x10

NLM_F_REQUEST = 0x01
NLM_F_MULTI = 0x02
NLM_F_ACK = 0x04
NLM_F_ECHO = 0x08
NLM_F_DUMP_INTR = 0x10
NLM_F_ROOT = 0x100
NLM_F_MATCH = 0x200
NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_APPEND = 0x800

NLA_F_NESTED = 0x8000
NLA_F_NET_BYTEORDER = 0x4000
NLA_TYPE_MASK = 0x3FFF

NETLINK_NETFILTER = 12
NFNETLINK_V0 = 0

# nfnetlink subsystems (the high byte of nlmsg_type)
NFNL_SUBSYS_CTNETLINK = 1
NFNL_SUBSYS_CTNETLINK_EXP = 2
NFNL_SUBSYS_QUEUE = 3
NFNL_SUBSYS_ULOG = 4
NFNL_SUBSYS_ACCT = 7

NLMSG_HDRLEN = 16
NFGEN_HDRLEN = 4

HDR = struct.Struct("=IHHII")
NLA = struct.Struct("=HH")
NFGEN = struct.Struct("!BBH")
_ERRNO = struct.Struct("=i")

_unpack_hdr = HDR.unpack_from
_unpack_nla = NLA.unpack_from

# (offset, nlmsg_len, nlmsg_type, nlmsg_flags, nlmsg_seq, nlmsg_pid)
Header = tuple[int, int, int, int, int, int]


def align(n: int) -> int:
    return (n + 3) & ~3


Buffer = bytes | bytearray | memoryview


def split(buf: Buffer, start: int = 0, end: int | None = None) -> tuple[list[Header], str | None]:
    """All messages in ``buf[start:end]`` whose framing is sane, and why splitting stopped early.

    The second item is ``None`` when the whole buffer was consumed (up to at most 3 bytes of
    trailing padding), else a description of the first framing error; the messages before the
    error are still returned. Never raises.
    """
    if end is None:
        end = len(buf)
    out: list[Header] = []
    off = start
    while off + NLMSG_HDRLEN <= end:
        ln, typ, flags, seq, pid = _unpack_hdr(buf, off)
        if ln < NLMSG_HDRLEN:
            return out, f"nlmsg_len {ln} < {NLMSG_HDRLEN} at offset {off}"
        if off + ln > end:
            return out, f"nlmsg_len {ln} at offset {off} runs past the buffer end {end}"
        out.append((off, ln, typ, flags, seq, pid))
        off += (ln + 3) & ~3
    # Up to 3 zero bytes are padding; anything else is a cut-off header.
    if off < end and (end - off >= 4 or any(buf[off:end])):
        return out, f"{end - off} stray bytes at offset {off}"
    return out, None


def messages(buf: Buffer, start: int = 0, end: int | None = None) -> Iterator[Header]:
    """Like :func:`split`, as an iterator that raises :class:`DecodeError` where the framing breaks.

    The messages before the break are yielded first, so a caller that counts the error still
    gets them.
    """
    msgs, problem = split(buf, start, end)
    yield from msgs
    if problem is not None:
        raise DecodeError(problem)


def attrs(buf: Buffer, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """``(type, payload_start, payload_end)`` for each attribute in ``buf[start:end]``.

    ``type`` has the NESTED and NET_BYTEORDER flag bits removed. Fewer than 4 trailing bytes
    are ignored, as the kernel's own parser does.
    """
    a = start
    while a + 4 <= end:
        al, at = _unpack_nla(buf, a)
        if al < 4 or a + al > end:
            raise DecodeError(f"attribute type {at & NLA_TYPE_MASK} at offset {a}: bad length {al}")
        yield at & NLA_TYPE_MASK, a + 4, a + al
        a += (al + 3) & ~3


# For each nest, attribute type -> the minimum payload length, or the policy of the nest the
# attribute holds (the kernel's nla_policy, for what pyulogd reads; see codec.nfct.CT_POLICY).
Policy: TypeAlias = "dict[int, int | Policy]"


def well_formed(buf: Buffer, start: int, end: int, policy: Policy) -> tuple[list[tuple[int, int, int]], str | None]:
    """For renderers, which must write what they can of a record rather than drop it:
    ``(type, payload_start, payload_end)`` of each attribute of the nest at ``buf[start:end]``
    that ``policy`` allows at this level (a nested attribute's content is checked when the
    caller looks into it, with ``policy[type]``), and the first problem met (None: none).

    A bad length ends the nest (nothing after it can be framed); an attribute shorter than its
    minimum is left out. Never raises. A decoder that refuses whatever breaks the same policy
    (codec.nfct's walker) guarantees its records a whole rendering.
    """
    out: list[tuple[int, int, int]] = []
    problem = None
    end = min(end, len(buf))
    a = start
    while a + 4 <= end:
        al, at = _unpack_nla(buf, a)
        at &= NLA_TYPE_MASK
        if al < 4 or a + al > end:
            return out, f"attribute type {at} at offset {a}: bad length {al}"
        rule = policy.get(at)
        if isinstance(rule, int) and al - 4 < rule:
            if problem is None:
                problem = f"attribute type {at} at offset {a}: {al - 4} bytes, needs {rule}"
        else:
            out.append((at, a + 4, a + al))
        a += (al + 3) & ~3
    return out, problem


def attr_table(buf: Buffer, start: int, end: int) -> dict[int, tuple[int, int]]:
    """Attribute type -> (payload_start, payload_end); a repeated type keeps the last one, like the kernel."""
    return {t: (p, q) for t, p, q in attrs(buf, start, end)}


def nfgen(buf: Buffer, off: int, ln: int) -> tuple[int, int, int]:
    """``(family, version, res_id)`` of the nfgenmsg after the header of the message at ``off``."""
    if ln < NLMSG_HDRLEN + NFGEN_HDRLEN:
        raise DecodeError(f"nfnetlink message of {ln} bytes has no nfgenmsg header")
    family, version, res_id = NFGEN.unpack_from(buf, off + NLMSG_HDRLEN)
    return family, version, res_id


def parse_error(buf: Buffer, off: int, ln: int) -> tuple[int, int | None]:
    """``(errno, seq)`` of an NLMSG_ERROR message: errno positive (0 for an ack), ``seq`` of the
    request it answers (None if the kernel did not echo the request header)."""
    if ln < NLMSG_HDRLEN + 4:
        raise DecodeError(f"NLMSG_ERROR of {ln} bytes has no error code")
    err = -_ERRNO.unpack_from(buf, off + NLMSG_HDRLEN)[0]
    if err < 0:
        raise DecodeError(f"NLMSG_ERROR with positive error code {-err}")
    seq = None
    if ln >= NLMSG_HDRLEN + 4 + NLMSG_HDRLEN:
        seq = _unpack_hdr(buf, off + NLMSG_HDRLEN + 4)[3]
    return err, seq


def subsys(nlmsg_type: int) -> int:
    return nlmsg_type >> 8


def msg_type(subsystem: int, msgtype: int) -> int:
    return (subsystem << 8) | msgtype


# -- builders


def nla(atype: int, payload: bytes) -> bytes:
    """One attribute, padded to 4 bytes."""
    ln = 4 + len(payload)
    if ln > 0xFFFF:
        raise ValueError(f"attribute payload of {len(payload)} bytes is too long")
    return NLA.pack(ln, atype) + payload + b"\0" * (-ln & 3)


def nlmsg(nlmsg_type: int, flags: int, seq: int, payload: bytes = b"", pid: int = 0) -> bytes:
    """One netlink message (header + payload, padded to 4 bytes; nlmsg_len excludes the padding)."""
    ln = NLMSG_HDRLEN + len(payload)
    return HDR.pack(ln, nlmsg_type, flags, seq & 0xFFFFFFFF, pid) + payload + b"\0" * (-ln & 3)


def nfnl_msg(
    subsystem: int,
    msgtype: int,
    family: int,
    res_id: int,
    attributes: Iterable[bytes] = (),
    seq: int = 0,
    flags: int = NLM_F_REQUEST | NLM_F_ACK,
    pid: int = 0,
) -> bytes:
    """An nfnetlink message: header, nfgenmsg (version 0), attributes built with :func:`nla`."""
    body = NFGEN.pack(family, NFNETLINK_V0, res_id) + b"".join(attributes)
    return nlmsg(msg_type(subsystem, msgtype), flags, seq, body, pid)


class Batch:
    """What one ``recv()`` buffer held. Problems are counted here, never raised."""

    __slots__ = ("records", "malformed", "problem", "errors", "acks", "other")

    def __init__(self) -> None:
        self.records: list[list[Any]] = []
        # Messages skipped as undecodable; a broken framing counts once and ends the buffer.
        self.malformed = 0
        self.problem: str | None = None  # the first one, for the log
        self.errors: list[int] = []  # errno of each NLMSG_ERROR with a non-zero error
        self.acks = 0  # NLMSG_ERROR with error 0 (late acks of our own requests)
        self.other = 0  # messages that are not records nor DONE/NOOP/ERROR

    def _bad(self, why: str) -> None:
        self.malformed += 1
        if self.problem is None:
            self.problem = why

    def error_message(self, buf: bytes | bytearray | memoryview, off: int, ln: int) -> None:
        """Count an NLMSG_ERROR message: an ack (error 0) or an errno."""
        try:
            err, _ = parse_error(buf, off, ln)
        except DecodeError as ex:
            self._bad(str(ex))
            return
        if err:
            self.errors.append(err)
        else:
            self.acks += 1

    def tail(self, buf: bytes | bytearray | memoryview, off: int, end: int) -> None:
        """Bytes left after the last whole message (zero padding is fine)."""
        if off < end and (end - off >= 4 or any(buf[off:end])):
            self._bad(f"{end - off} stray bytes at offset {off}")

