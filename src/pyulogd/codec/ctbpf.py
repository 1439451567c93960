"""The NFCT accept filters as a classic BPF socket filter, run by the kernel (sans-IO).

ulogd2 attaches ``accept_src_filter``, ``accept_dst_filter`` and ``accept_proto_filter`` to
the event socket as a socket filter (libnetfilter_conntrack's ``nfct_filter``), so that
events of other flows are dropped before they are queued: they take no room in the receive
buffer and no CPU in the daemon. :func:`compile_filter` does the same for a
:class:`~pyulogd.codec.nfct_filter.FlowFilter`. The program finds the original tuple's attributes
with the kernel's netlink helpers (``SKF_AD_NLATTR``/``SKF_AD_NLATTR_NEST``, so it does not
depend on where they are) and applies the FlowFilter's own rules: every test that is set must
pass; an address of a family with no network listed fails; a message without an original
tuple is accepted (user space decides; it is no conntrack event). User space applies the
FlowFilter again to what passes, so the kernel program may only ever be less strict, never
stricter, and it must never drop a flow the FlowFilter accepts (``tests/unit/test_ctbpf.py``
runs the program in :func:`run` against the FlowFilter).

Attribute values are big-endian, which is what BPF loads give. The assembler and the reference
interpreter are :mod:`pyulogd.codec.nlbpf`'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyulogd.codec import nfct
from pyulogd.codec.nlbpf import (
    ACCEPT_ALL,
    ALU,
    AND,
    IMM,
    IND,
    LD,
    MEM,
    MISC,
    NFGEN_END,
    RET,
    ST,
    TAX,
    Asm,
    B,
    Insn,
    K,
    TooLarge,
    W,
    pack,
    run,
)

if TYPE_CHECKING:
    from pyulogd.codec.nfct_filter import FlowFilter

# What callers use of nlbpf through this module (the NFCT input, the tests).
__all__ = ["ACCEPT_ALL", "RET", "Insn", "TooLarge", "compile_filter", "pack", "run"]


def compile_filter(flt: FlowFilter) -> list[Insn]:
    """The socket filter of a FlowFilter. Raises :class:`TooLarge` when it cannot be one."""
    a = Asm()
    a.op(LD | W | IMM, NFGEN_END)
    a.nlattr(nfct.CTA_TUPLE_ORIG, nested=False)
    a.jeq(0, "accept", None)  # no original tuple: not a conntrack entry, user space decides
    a.op(ST, 0)  # M[0]: the original tuple
    if flt.protos is not None:
        a.nlattr(nfct.CTA_TUPLE_PROTO, nested=True)
        a.jeq(0, "reject", None)
        a.nlattr(nfct.CTA_PROTO_NUM, nested=True)
        a.jeq(0, "reject", None)
        a.op(MISC | TAX)
        a.op(LD | B | IND, 4)
        for p in sorted(flt.protos):
            a.jeq(p, "proto_ok", None)
        a.ja("reject")
        a.label("proto_ok")
    for nets, v4_attr, v6_attr in ((flt.src, nfct.CTA_IP_V4_SRC, nfct.CTA_IP_V6_SRC),
                                   (flt.dst, nfct.CTA_IP_V4_DST, nfct.CTA_IP_V6_DST)):  # fmt: skip
        if nets is None:
            continue
        ok, try_v6 = a.fresh("addr_ok"), a.fresh("try_v6")
        a.op(LD | MEM, 0)
        a.nlattr(nfct.CTA_TUPLE_IP, nested=True)
        a.jeq(0, "reject", None)
        a.op(ST, 1)  # M[1]: the tuple's addresses
        a.nlattr(v4_attr, nested=True)
        a.jeq(0, try_v6, None)
        a.op(MISC | TAX)
        for net, mask in nets[4]:
            a.op(LD | W | IND, 4)
            a.op(ALU | AND | K, mask)
            a.jeq(net, ok, None)
        a.ja("reject")
        a.label(try_v6)
        a.op(LD | MEM, 1)
        a.nlattr(v6_attr, nested=True)
        a.jeq(0, "reject", None)
        a.op(MISC | TAX)
        for net, mask in nets[16]:
            nxt = a.fresh("next_net")
            for w in range(4):
                m = (mask >> (96 - 32 * w)) & 0xFFFFFFFF
                if not m:
                    continue
                a.op(LD | W | IND, 4 + 4 * w)
                a.op(ALU | AND | K, m)
                a.jeq((net >> (96 - 32 * w)) & 0xFFFFFFFF, None, nxt)
            a.ja(ok)
            a.label(nxt)
        a.ja("reject")
        a.label(ok)
    a.label("accept")
    a.op(RET | K, ACCEPT_ALL)
    a.label("reject")
    a.op(RET | K, 0)
    return a.assemble()
