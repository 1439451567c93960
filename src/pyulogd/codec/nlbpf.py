"""Classic BPF socket filters for netlink messages, sans-IO: an assembler with symbolic jumps,
the kernel's ``struct sock_filter`` packing, and a reference interpreter.

A socket filter runs in the kernel on every message before it is queued to the socket: what
it drops takes no room in the receive buffer and no CPU in the daemon. Two programs are built
with this: :mod:`pyulogd.codec.ctbpf` (NFCT's accept filters) and :mod:`pyulogd.codec.nftbpf`
(NFTRACE's events that cannot change a record). Both find attributes with the kernel's netlink
helpers (``SKF_AD_NLATTR``/``SKF_AD_NLATTR_NEST``), so they do not depend on where an attribute
is. :func:`run` is what the kernel's interpreter does (Documentation/networking/filter.rst,
``net/core/filter.c``) for the instructions these programs use; the tests run the programs
in it against the user-space code they stand in for, and check it against the kernel on live
messages. Loads are big-endian, as the kernel's are.
"""

from __future__ import annotations

import struct

# Classic BPF (linux/filter.h, linux/bpf_common.h).
LD, LDX, ST, ALU, JMP, RET = 0x00, 0x01, 0x02, 0x04, 0x05, 0x06
W, H, B = 0x00, 0x08, 0x10
IMM, ABS, IND, MEM = 0x00, 0x20, 0x40, 0x60
AND = 0x50
JA, JEQ = 0x00, 0x10
K = 0x00
MISC, TAX = 0x07, 0x00
SKF_AD_OFF = -0x1000
SKF_AD_NLATTR, SKF_AD_NLATTR_NEST = 12, 16
ACCEPT_ALL = 0xFFFFFFFF
NFGEN_END = 20  # nlmsghdr + nfgenmsg: where an nfnetlink message's attributes start
MAX_INSNS = 4096  # BPF_MAXINSNS

Insn = tuple[int, int, int, int]  # code, jt, jf, k
_SOCK_FILTER = struct.Struct("=HBBI")


class TooLarge(ValueError):
    """The filter does not fit a classic BPF program."""


class Asm:
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
                width = {W: 4, H: 2, B: 1}[size]
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
