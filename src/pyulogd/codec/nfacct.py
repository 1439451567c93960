"""nfnetlink_acct (``nfacct``) messages, sans-IO: the dump request and its multipart answer.

Layout (``linux/netfilter/nfnetlink_acct.h``): subsystem ``NFNL_SUBSYS_ACCT`` (7); a dump is
``NFNL_MSG_ACCT_GET`` (1) or ``NFNL_MSG_ACCT_GET_CTRZERO`` (2, read and reset atomically)
with ``NLM_F_REQUEST | NLM_F_DUMP``. The kernel answers one ``NLM_F_MULTI`` message per
counter object, of type ``NFNL_MSG_ACCT_NEW`` whatever the request was, carrying
``NFACCT_NAME`` (NUL-terminated, at most 32 bytes with the NUL), ``NFACCT_PKTS`` and
``NFACCT_BYTES`` (big-endian u64), ``NFACCT_USE`` (u32) and, for quota objects,
``NFACCT_FLAGS`` and ``NFACCT_QUOTA``; the answer ends with ``NLMSG_DONE``, or with an
``NLMSG_ERROR`` if the kernel refused the dump (EPERM without CAP_NET_ADMIN, EBUSY while
another dump runs on the socket).

:func:`parse_buffer` sorts one ``recv()`` buffer into counters of the dump in progress,
its end, its error, malformed messages (counted, skipped) and messages that belong to no
dump of ours. It never raises.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field
from typing import NamedTuple

from pyulogd.codec import netlink as nl
from pyulogd.core.errors import DecodeError

NFNL_MSG_ACCT_NEW = 0
NFNL_MSG_ACCT_GET = 1
NFNL_MSG_ACCT_GET_CTRZERO = 2
NFNL_MSG_ACCT_DEL = 3
NFNL_MSG_ACCT_OVERQUOTA = 4

NFACCT_NAME = 1
NFACCT_PKTS = 2
NFACCT_BYTES = 3
NFACCT_USE = 4
NFACCT_FLAGS = 5
NFACCT_QUOTA = 6
NFACCT_FILTER = 7
NFACCT_PAD = 8

NFACCT_F_QUOTA_PKTS = 1
NFACCT_F_QUOTA_BYTES = 2
NFACCT_F_OVERQUOTA = 4

NFACCT_NAME_MAX = 32  # with the terminating NUL

TYPE_NEW = nl.msg_type(nl.NFNL_SUBSYS_ACCT, NFNL_MSG_ACCT_NEW)
# The kernel labels dumped objects ACCT_NEW (nfnl_acct_dump); GET answers a single-object
# request. Both are accepted, as libnetfilter_acct does not look at the type either.
_COUNTER_TYPES = frozenset({TYPE_NEW, nl.msg_type(nl.NFNL_SUBSYS_ACCT, NFNL_MSG_ACCT_GET),
                            nl.msg_type(nl.NFNL_SUBSYS_ACCT, NFNL_MSG_ACCT_GET_CTRZERO)})  # fmt: skip

_U64 = struct.Struct("!Q")
_U32 = struct.Struct("!I")


class Counter(NamedTuple):
    """One nfacct object as the kernel reported it."""

    name: str  # undecodable bytes kept with surrogateescape, like every STRING key
    pkts: int
    nbytes: int
    use: int | None  # references (rules using it)
    flags: int | None  # NFACCT_F_*, quota objects only
    quota: int | None
    raw: bytes  # the whole netlink message (the ``sum`` key)


@dataclass
class Batch:
    """What one ``recv()`` buffer held, for the dump with sequence number ``seq``."""

    counters: list[Counter] = field(default_factory=list)
    done: bool = False  # NLMSG_DONE of the dump seen
    error: int | None = None  # errno of an NLMSG_ERROR answering the dump (0 never stored)
    malformed: int = 0
    problem: str | None = None  # the first malformation, for the log
    stray: int = 0  # messages of another sequence number or of an unexpected type


def dump_request(seq: int, zero: bool, pid: int = 0) -> bytes:
    """The dump request ulogd's NFACCT sends: every counter, reset to 0 if ``zero``."""
    msgtype = NFNL_MSG_ACCT_GET_CTRZERO if zero else NFNL_MSG_ACCT_GET
    return nl.nfnl_msg(nl.NFNL_SUBSYS_ACCT, msgtype, socket.AF_UNSPEC, 0, seq=seq,
                       flags=nl.NLM_F_REQUEST | nl.NLM_F_DUMP, pid=pid)  # fmt: skip


def parse_counter(buf: nl.Buffer, off: int, ln: int) -> Counter:
    """The counter in the message at ``buf[off:off+ln]``; DecodeError if it is not a sane one."""
    nl.nfgen(buf, off, ln)  # raises when there is no nfgenmsg
    start = off + nl.NLMSG_HDRLEN + nl.NFGEN_HDRLEN
    tab = nl.attr_table(buf, start, off + ln)
    span = tab.get(NFACCT_NAME)
    if span is None:
        raise DecodeError("nfacct object without NFACCT_NAME")
    raw_name = bytes(buf[span[0] : span[1]])
    end = raw_name.find(b"\0")
    if end < 0 or end + 1 > NFACCT_NAME_MAX:
        raise DecodeError(f"nfacct name of {len(raw_name)} bytes is not a NUL-terminated string of at most "
                          f"{NFACCT_NAME_MAX} bytes")  # fmt: skip
    name = raw_name[:end].decode("utf-8", "surrogateescape")
    pkts = _get(buf, tab, NFACCT_PKTS, _U64, required=True)
    nbytes = _get(buf, tab, NFACCT_BYTES, _U64, required=True)
    assert pkts is not None and nbytes is not None
    use = _get(buf, tab, NFACCT_USE, _U32)
    flags = _get(buf, tab, NFACCT_FLAGS, _U32)
    quota = _get(buf, tab, NFACCT_QUOTA, _U64)
    return Counter(name, pkts, nbytes, use, flags, quota, bytes(buf[off : off + ln]))


def _get(buf: nl.Buffer, tab: dict[int, tuple[int, int]], atype: int, fmt: struct.Struct,
         required: bool = False) -> int | None:  # fmt: skip
    span = tab.get(atype)
    if span is None:
        if required:
            raise DecodeError(f"nfacct object without attribute {atype}")
        return None
    p, q = span
    if q - p != fmt.size:
        raise DecodeError(f"nfacct attribute {atype} has {q - p} bytes, not {fmt.size}")
    value: int = fmt.unpack_from(buf, p)[0]
    return value


def parse_buffer(buf: nl.Buffer, seq: int | None) -> Batch:
    """Sort the messages of one ``recv()`` buffer; ``seq`` is the dump in progress (None: none)."""
    batch = Batch()
    msgs, problem = nl.split(buf)
    if problem is not None:
        batch.malformed += 1
        batch.problem = problem
    for off, ln, typ, _flags, mseq, _pid in msgs:
        if seq is None or mseq != seq:
            batch.stray += 1
            continue
        if typ in _COUNTER_TYPES:
            try:
                batch.counters.append(parse_counter(buf, off, ln))
            except DecodeError as e:
                batch.malformed += 1
                if batch.problem is None:
                    batch.problem = str(e)
        elif typ == nl.NLMSG_DONE:
            batch.done = True
        elif typ == nl.NLMSG_ERROR:
            try:
                err, _ = nl.parse_error(buf, off, ln)
            except DecodeError as e:
                batch.malformed += 1
                if batch.problem is None:
                    batch.problem = str(e)
                continue
            if err:  # an ack (0) is not sent for dumps; ignore one if it comes
                batch.error = err
        else:
            batch.stray += 1
    return batch
