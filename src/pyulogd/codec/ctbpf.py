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

Attribute values are big-endian, which is what BPF loads give.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from pyulogd.codec import nfct

if TYPE_CHECKING:
    from pyulogd.codec.nfct_filter import FlowFilter

# Classic BPF (linux/filter.h, linux/bpf_common.h).
LD, LDX, ST, ALU, JMP, RET = 0x00, 0x01, 0x02, 0x04, 0x05, 0x06
W, B = 0x00, 0x10
IMM, ABS, IND, MEM = 0x00, 0x20, 0x40, 0x60
AND = 0x50
JA, JEQ = 0x00, 0x10
K = 0x00
MISC, TAX = 0x07, 0x00
SKF_AD_OFF = -0x1000
SKF_AD_NLATTR, SKF_AD_NLATTR_NEST = 12, 16
ACCEPT_ALL = 0xFFFFFFFF
NFGEN_END = 20  # nlmsghdr + nfgenmsg: where a conntrack message's attributes start
MAX_INSNS = 4096  # BPF_MAXINSNS

Insn = tuple[int, int, int, int]  # code, jt, jf, k
_SOCK_FILTER = struct.Struct("=HBBI")


class TooLarge(ValueError):
    """The filter does not fit a classic BPF program (too many networks)."""


class _Asm:
    """Instructions with symbolic jump targets, resolved by :meth:`assemble`."""

    def __init__(self) -> None:
        self.code: list[tuple[int, object, object, int]] = []
        self.labels: dict[str, int] = {}
        self._n = 0

    def label(self, name: str) -> None:
        self.labels[name] = len(self.code)

    def fresh(self, what: str) -> str:
        self._n += 1
        return f"{what}{self._n}"

    def op(self, code: int, k: int = 0) -> None:
        self.code.append((code, 0, 0, k & 0xFFFFFFFF))

    def jeq(self, k: int, jt: object, jf: object) -> None:
        """``jt``/``jf``: a label, or None for the next instruction."""
        self.code.append((JMP | JEQ | K, jt, jf, k & 0xFFFFFFFF))

    def ja(self, target: str) -> None:
        self.code.append((JMP | JA, target, None, 0))

    def nlattr(self, attr: int, nested: bool) -> None:
        """A = offset of attribute ``attr`` searched at A (nested: inside the attribute at A), or 0."""
        self.op(LDX | W | IMM, attr)
        self.op(LD | B | ABS, SKF_AD_OFF + (SKF_AD_NLATTR_NEST if nested else SKF_AD_NLATTR))

    def assemble(self) -> list[Insn]:
        out: list[Insn] = []
        for i, (code, jt, jf, k) in enumerate(self.code):
            if code == JMP | JA:
                out.append((code, 0, 0, self.labels[str(jt)] - i - 1))
                continue
            if code & 0x07 == JMP:
                t = 0 if jt is None else self.labels[str(jt)] - i - 1
                f = 0 if jf is None else self.labels[str(jf)] - i - 1
                if not (0 <= t <= 255 and 0 <= f <= 255):
                    raise TooLarge("a conditional jump of the filter goes beyond 255 instructions")
                out.append((code, t, f, k))
                continue
            out.append((code, 0, 0, k))
        if len(out) > MAX_INSNS:
            raise TooLarge(f"the filter needs {len(out)} instructions, at most {MAX_INSNS}")
        return out


def compile_filter(flt: FlowFilter) -> list[Insn]:
    """The socket filter of a FlowFilter. Raises :class:`TooLarge` when it cannot be one."""
    a = _Asm()
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


def pack(prog: list[Insn]) -> bytes:
    """The program as the kernel's ``struct sock_filter`` array."""
    return b"".join(_SOCK_FILTER.pack(*insn) for insn in prog)


# -- a reference interpreter (tests): classic BPF with the two netlink helpers


def _nla_find(buf: bytes, start: int, end: int, attr: int) -> int:
    a = start
    while a + 4 <= end:
        ln, typ = struct.unpack_from("=HH", buf, a)
        if ln < 4 or a + ln > end:
            return 0
        if typ & 0x3FFF == attr:
            return a
        a += (ln + 3) & ~3
    return 0


def run(prog: list[Insn], buf: bytes) -> int:
    """What the kernel's interpreter returns for ``buf`` (a netlink message), as documented
    in Documentation/networking/filter.rst; a load beyond the message returns 0."""
    acc = x = 0
    mem = [0] * 16
    pc = 0
    n = len(buf)
    while True:
        code, jt, jf, k = prog[pc]
        pc += 1
        cls = code & 0x07
        if cls == RET:
            return k
        if cls == LD:
            mode, size = code & 0xE0, code & 0x18
            if mode == IMM:
                acc = k
            elif mode == MEM:
                acc = mem[k]
            elif mode == ABS and k >= (SKF_AD_OFF & 0xFFFFFFFF):
                ad = k - (SKF_AD_OFF & 0xFFFFFFFF)
                if ad == SKF_AD_NLATTR:
                    acc = _nla_find(buf, acc, n, x) if acc <= n - 4 else 0
                elif ad == SKF_AD_NLATTR_NEST:
                    if acc > n - 4:
                        acc = 0
                    else:
                        ln = struct.unpack_from("=H", buf, acc)[0]
                        acc = 0 if ln > n - acc else _nla_find(buf, acc + 4, acc + ln, x)
                else:
                    raise ValueError(f"ancillary load {ad} not emulated")
            else:
                at = k if mode == ABS else x + k
                width = {W: 4, B: 1}[size]
                if at + width > n:
                    return 0
                acc = int.from_bytes(buf[at : at + width], "big")
        elif cls == LDX:
            x = k
        elif cls == ST:
            mem[k] = acc
        elif cls == ALU:
            acc &= k
        elif cls == MISC:
            x = acc
        elif cls == JMP:
            if code & 0xF0 == JA:
                pc += k
            else:
                pc += jt if acc == k else jf
        else:
            raise ValueError(f"instruction {code:#x} not emulated")
