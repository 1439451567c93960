"""NFTRACE's socket filter: the kernel drops the trace events that cannot change a record (sans-IO).

A traced packet makes the kernel send one event per rule it meets in every base chain; about
half of them are of no use to :mod:`pyulogd.codec.nfttrack`, and each costs the daemon a
datagram to read and decode. An event is *needed* when any of these holds:

* it carries the packet (``NFTA_TRACE_NETWORK_HEADER``: the first event of a base chain's
  evaluation): it opens the trace, tells the base chain (reused ids are found by it) and its
  packet headers, interfaces and mark are the record's;
* it gives a verdict of someone else's: a ``POLICY`` event, or a ``RULE`` event with a rule
  handle and a verdict other than ``continue``/``break`` (``nfttrack._step``), in a table
  other than our own marking table (``inet <trace_table>``, whose events never count);
* it is not a trace event at all (ruleset notifications, replies to our requests), or has
  something unusual (no type, no table, no verdict code): user space decides and counts.

Everything else is dropped: our own table's events after its first (the end of its rules
and its policy), ``RETURN`` events (the end of a user chain), rules that matched and went on
(``counter``, ``log``...), and the end-of-rules marker before a policy. In the tracker such
an event only refreshes the trace's deadline and its place among the open traces, and the
event that comes with it from the same base chain does that again: the records are the
same with and without the filter (tests/unit/test_nftbpf.py replays captured and generated
events through both; tests/linux/test_nftbpf_live.py checks the kernel runs the program as
:func:`~pyulogd.codec.nlbpf.run` does). Two things differ: the ``events``/``own_events``
counters count only what reached the daemon, and a trace whose first event was lost
(ENOBUFS) yields no stray record from its later events.
"""

from __future__ import annotations

import struct

from pyulogd.codec import nftrace as nt
from pyulogd.codec.nlbpf import (
    ABS,
    ACCEPT_ALL,
    IMM,
    IND,
    LD,
    MISC,
    NFGEN_END,
    RET,
    TAX,
    Asm,
    B,
    H,
    Insn,
    K,
    W,
)

NLMSG_TYPE_AT = 4  # nlmsghdr.nlmsg_type: host byte order
NFGEN_FAMILY_AT = 16  # nfgenmsg.nfgen_family


def _host_u16_as_loaded(v: int) -> int:
    """What a BPF half-word load (big-endian) reads from a host-order u16 ``v``."""
    return int.from_bytes(struct.pack("=H", v), "big")


def compile_filter(own_table: str) -> list[Insn]:
    """The program for an instance whose marking table is ``inet <own_table>``."""
    name = own_table.encode() + b"\0"  # NFTA_TRACE_TABLE: a NUL-terminated string
    a = Asm()
    a.op(LD | H | ABS, NLMSG_TYPE_AT)
    a.jeq(_host_u16_as_loaded(nt.TRACE_TYPE), None, "accept")
    # The packet's first event in a base chain: always needed.
    a.op(LD | W | IMM, NFGEN_END)
    a.nlattr(nt.NFTA_TRACE_NETWORK_HEADER, nested=False)
    a.jeq(0, None, "accept")
    # Our own table's events (family inet, our name), when they do not carry the packet.
    a.op(LD | B | ABS, NFGEN_FAMILY_AT)
    a.jeq(nt.NFPROTO_INET, None, "foreign")
    a.op(LD | W | IMM, NFGEN_END)
    a.nlattr(nt.NFTA_TRACE_TABLE, nested=False)
    a.jeq(0, "accept", None)  # no table: user space refuses it and counts it
    a.op(MISC | TAX)
    a.op(LD | H | IND, 0)  # nla_len
    a.jeq(_host_u16_as_loaded(4 + len(name)), None, "foreign")
    for i in range(0, len(name), 4):
        chunk = name[i : i + 4]
        if len(chunk) == 4:
            a.op(LD | W | IND, 4 + i)
            a.jeq(int.from_bytes(chunk, "big"), None, "foreign")
        else:
            for j, byte in enumerate(chunk):
                a.op(LD | B | IND, 4 + i + j)
                a.jeq(byte, None, "foreign")
    a.ja("reject")
    # Someone else's: needed when it gives a verdict.
    a.label("foreign")
    a.op(LD | W | IMM, NFGEN_END)
    a.nlattr(nt.NFTA_TRACE_TYPE, nested=False)
    a.jeq(0, "accept", None)
    a.op(MISC | TAX)
    a.op(LD | W | IND, 4)
    a.jeq(nt.NFT_TRACETYPE_POLICY, "accept", None)
    a.jeq(nt.NFT_TRACETYPE_RULE, None, "reject")  # RETURN (and UNSPEC): no verdict of a rule
    a.op(LD | W | IMM, NFGEN_END)
    a.nlattr(nt.NFTA_TRACE_RULE_HANDLE, nested=False)
    a.jeq(0, "reject", None)  # the end-of-rules marker before a policy
    a.op(LD | W | IMM, NFGEN_END)
    a.nlattr(nt.NFTA_TRACE_VERDICT, nested=False)
    a.jeq(0, "accept", None)
    a.nlattr(nt.NFTA_VERDICT_CODE, nested=True)
    a.jeq(0, "accept", None)
    a.op(MISC | TAX)
    a.op(LD | W | IND, 4)
    a.jeq(nt.NFT_CONTINUE, "reject", None)
    a.jeq(nt.NFT_BREAK, "reject", "accept")
    a.label("accept")
    a.op(RET | K, ACCEPT_ALL)
    a.label("reject")
    a.op(RET | K, 0)
    return a.assemble()

