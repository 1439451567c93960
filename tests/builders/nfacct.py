"""nfacct messages: counter objects as the kernel puts them in a dump answer, and the requests
the ``nfacct`` tool sends to create and delete counters.

For tests only: the daemon only dumps counters (moved from ``pyulogd.codec.nfacct``, whose
constants it uses).
"""

from __future__ import annotations

import socket

from pyulogd.codec import netlink as nl
from pyulogd.codec.nfacct import (
    _U32,
    _U64,
    NFACCT_BYTES,
    NFACCT_FLAGS,
    NFACCT_NAME,
    NFACCT_PKTS,
    NFACCT_QUOTA,
    NFACCT_USE,
    NFNL_MSG_ACCT_DEL,
    NFNL_MSG_ACCT_NEW,
)


def counter_msg(name: str | bytes, pkts: int, nbytes: int, seq: int = 0, pid: int = 0, use: int | None = 1,
                flags: int | None = None, quota: int | None = None, multi: bool = True) -> bytes:  # fmt: skip
    """One counter object as ``nfnl_acct_fill_info()`` puts it in a dump answer."""
    raw_name = name.encode("utf-8", "surrogateescape") if isinstance(name, str) else name
    attrs = [nl.nla(NFACCT_NAME, raw_name + b"\0"), nl.nla(NFACCT_PKTS, _U64.pack(pkts)),
             nl.nla(NFACCT_BYTES, _U64.pack(nbytes))]  # fmt: skip
    if use is not None:
        attrs.append(nl.nla(NFACCT_USE, _U32.pack(use)))
    if flags is not None:
        attrs.append(nl.nla(NFACCT_FLAGS, _U32.pack(flags)))
    if quota is not None:
        attrs.append(nl.nla(NFACCT_QUOTA, _U64.pack(quota)))
    return nl.nfnl_msg(nl.NFNL_SUBSYS_ACCT, NFNL_MSG_ACCT_NEW, socket.AF_UNSPEC, 0, attrs, seq=seq,
                       flags=nl.NLM_F_MULTI if multi else 0, pid=pid)  # fmt: skip


def new_request(name: str, seq: int) -> bytes:
    """Create a counter (``nfacct add NAME``), with an ack."""
    return nl.nfnl_msg(nl.NFNL_SUBSYS_ACCT, NFNL_MSG_ACCT_NEW, socket.AF_UNSPEC, 0,
                       [nl.nla(NFACCT_NAME, name.encode() + b"\0")], seq=seq,
                       flags=nl.NLM_F_REQUEST | nl.NLM_F_ACK | nl.NLM_F_CREATE)  # fmt: skip


def del_request(name: str, seq: int) -> bytes:
    """Delete a counter (``nfacct delete NAME``), with an ack."""
    return nl.nfnl_msg(nl.NFNL_SUBSYS_ACCT, NFNL_MSG_ACCT_DEL, socket.AF_UNSPEC, 0,
                       [nl.nla(NFACCT_NAME, name.encode() + b"\0")], seq=seq)  # fmt: skip
