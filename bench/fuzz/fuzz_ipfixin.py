#!/usr/bin/env python3
"""Fuzz IPFIXIN's decoder (pyulogd.codec.ipfixin) for long runs (issue 16, item 5).

    PYTHONPATH=src python3 bench/fuzz/fuzz_ipfixin.py --n 1000000 [--seed 1]

Inputs come from a seeded ``random.Random`` (no dependency, the same run for the same seed):
the captured messages of tests/vectors/ipfix (softflowd's IPFIX in every time encoding,
biflows, hand-made withdrawals and redefinitions) and messages built here the way Open vSwitch
sends them (variable-length names, VMware tunnel elements, one record per message, options
in domain 0) and as NetFlow v9 and v5, each mutated: bit flips, byte sets, deletions,
insertions, truncations, 16-bit length or count fields overwritten, splices of two messages;
plus pure random bytes behind each version number. They are fed through collectors of
varied limits (UDP and TCP, tiny template and hold limits), from a few exporter addresses
and ports, with time moving on so that expiry runs too.

Checked for every input: no exception escapes ``Collector.feed``; exactly one outcome is
counted (decoded, malformed, unknown version, refused by a limit); every record is a value
list of the declared length whose values have their key's type; and after every 1000
inputs, per exporter, the templates and held bytes stay within their limits and agree with
what is stored. On the first failure it prints the input (hex), the seed and the iteration,
and exits 1. The short, in-suite version: tests/unit/test_ipfixin_fuzz.py (hypothesis).
"""

from __future__ import annotations

import argparse
import random
import socket
import struct
import sys
import time
import traceback
from pathlib import Path

from pyulogd.codec.ipfixin import keys as K
from pyulogd.codec.ipfixin.collector import Collector
from pyulogd.core.keys import KeyType

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "vectors" / "ipfix"
OUTCOMES = ("messages", "malformed", "bad_version", "exporter_limit", "domain_limit")
TYPES = [(i, k.type, k.name) for i, k in enumerate(K.OUTPUT_KEYS, 1)]
BITS = {KeyType.UINT8: 8, KeyType.UINT16: 16, KeyType.UINT32: 32, KeyType.UINT64: 64, KeyType.BOOL: 1}


def f(ie: int, n: int, pen: int = 0) -> bytes:
    return struct.pack("!HHI", ie | 0x8000, n, pen) if pen else struct.pack("!HH", ie, n)


def ipfix(seq: int, odid: int, *sets: tuple[int, bytes]) -> bytes:
    body = b"".join(struct.pack("!HH", sid, len(b) + 4) + b for sid, b in sets)
    return struct.pack("!HHIII", 10, 16 + len(body), 1_800_000_000, seq, odid) + body


def ovs_like() -> list[bytes]:
    fields = (f(138, 4), f(61, 1), f(56, 6), f(80, 6), f(256, 2), f(10, 4), f(82, 65535), f(83, 65535), f(14, 4),
              f(82, 65535), f(83, 65535), f(4, 1), f(8, 4), f(12, 4), f(7, 2), f(11, 2), f(891, 1, 6876),
              f(892, 65535, 6876), f(898, 65535, 6876), f(158, 4), f(159, 4), f(2, 8), f(86, 8), f(1, 8),
              f(136, 1))  # fmt: skip
    tmpl = (2, struct.pack("!HH", 281, len(fields)) + b"".join(fields))

    def v(b: bytes) -> bytes:
        return bytes([len(b)]) + b

    rec = (struct.pack("!IB", 88, 0) + bytes(12) + struct.pack("!HI", 0x800, 5) + v(b"vnet1") + v(b"")
           + struct.pack("!I", 6) + v(b"vnet2") + v(b"") + b"\x06" + socket.inet_aton("10.0.0.1")
           + socket.inet_aton("10.0.0.2") + struct.pack("!HHB", 1234, 80, 1) + v(b"\x00\x10\x92") + v(b"obs")
           + struct.pack("!IIQQQB", 1000, 10, 3, 99, 180, 2))  # fmt: skip
    stats = (3, struct.pack("!HHH", 462, 2, 1) + f(144, 4) + f(167, 8))
    return [ipfix(1, 123, tmpl), ipfix(1, 0, stats), ipfix(1, 0, (462, struct.pack("!IQ", 1, 0))),
            ipfix(2, 123, (281, rec)), ipfix(3, 123, tmpl, (281, rec)), ipfix(4, 77, (281, rec))]  # fmt: skip


def netflow() -> list[bytes]:
    tmpl = struct.pack("!HH", 260, 5) + b"".join(struct.pack("!HH", ie, n) for ie, n in
                                                  ((8, 4), (12, 4), (4, 1), (22, 4), (21, 4)))  # fmt: skip
    opt = struct.pack("!HHH", 300, 4, 4) + struct.pack("!HHHH", 1, 4, 34, 4)
    rec = socket.inet_aton("10.0.0.1") + socket.inet_aton("10.0.0.2") + struct.pack("!BII", 6, 1000, 2000)

    def v9(seq: int, *sets: tuple[int, bytes]) -> bytes:
        body = b"".join(struct.pack("!HH", sid, len(b) + 4) + b for sid, b in sets)
        return struct.pack("!HHIIII", 9, len(sets), 5000, 1_800_000_000, seq, 1) + body

    v5rec = (socket.inet_aton("10.0.0.1") + socket.inet_aton("10.0.0.2") + bytes(4)
             + struct.pack("!HHIIIIHHBBBBHHBBH", 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 6, 0, 0, 0, 24, 24, 0))  # fmt: skip
    v5 = struct.pack("!HHIIIIBBH", 5, 2, 100, 1_800_000_000, 0, 7, 0, 0, 0) + v5rec * 2
    return [v9(0, (0, tmpl), (260, rec * 3)), v9(1, (1, opt), (300, bytes(8))), v9(2, (260, rec)), v5]


def corpus() -> list[bytes]:
    out = [bytes.fromhex(line.split()[3]) for p in sorted(VECTORS.glob("**/*.hexlog"))
           for line in p.read_text().splitlines()]  # fmt: skip
    return out + ovs_like() + netflow()


def mutate(rng: random.Random, data: bytes, other: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.choice((0, 1, 1, 2, 3, 5))):
        if not b:
            break
        p = rng.randrange(len(b))
        op = rng.randrange(7)
        if op == 0:
            b[p] ^= 1 << rng.randrange(8)
        elif op == 1:
            b[p] = rng.choice((0, 1, 0xFF, 0x80, rng.randrange(256)))
        elif op == 2:
            del b[p : p + rng.randint(1, 8)]
        elif op == 3:
            b[p:p] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 4:
            del b[p:]
        elif op == 5:
            b[p : p + 2] = struct.pack("!H", rng.choice((0, 1, 3, 4, 255, 256, 65535, rng.randrange(65536))))
        else:
            q = rng.randrange(len(other) + 1)
            b[p:] = other[q:]
    return bytes(b)


def check(c: Collector, data: bytes, addr: str, port: int, now: float) -> None:
    before = sum(c.counts[o] for o in OUTCOMES)
    for rec in c.feed(data, addr, port, now):
        if len(rec) != K.NVALUES or rec[0] is not None:
            raise AssertionError(f"record of {len(rec)} values")
        for i, t, name in TYPES:
            v = rec[i]
            if v is None:
                continue
            bits = BITS.get(t)
            ok = (isinstance(v, int) and 0 <= v < (1 << bits) if bits else
                  isinstance(v, bytes) and len(v) in (4, 16) if t == KeyType.IPADDR else
                  isinstance(v, str) if t == KeyType.STRING else
                  isinstance(v, dict) if t == KeyType.MAP else True)  # fmt: skip
            if not ok:
                raise AssertionError(f"{name} = {v!r}")
    if sum(c.counts[o] for o in OUTCOMES) != before + 1:
        raise AssertionError("not exactly one outcome counted")


def bounds(c: Collector) -> None:
    for exp in c.exporters.values():
        if not 0 <= exp.ntemplates <= c.max_templates:
            raise AssertionError(f"{exp.ntemplates} templates for {exp.addr}")
        if exp.ntemplates != sum(s.templates() for s in exp.sessions.values()):
            raise AssertionError("template count out of step")
        if not 0 <= exp.held_bytes <= c.hold_bytes or exp.held_bytes != sum(len(h.body) for h in exp.held):
            raise AssertionError(f"{exp.held_bytes} held bytes for {exp.addr}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    seeds = corpus()
    collectors = [Collector(), Collector(udp=False), Collector(max_templates=3, hold_bytes=200),
                  Collector(quirks=False, emit_options=True, extra=False, template_timeout=5.0)]  # fmt: skip
    addrs = ["192.0.2.1", "192.0.2.2", "fd00::1"]
    t0 = time.monotonic()
    records = 0
    for i in range(args.n):
        c = collectors[i % len(collectors)]
        pick = rng.random()
        if pick < 0.05:
            data = struct.pack("!H", rng.choice((5, 9, 10))) + rng.randbytes(rng.randrange(200))
        elif pick < 0.25:
            data = rng.choice(seeds)  # unmutated: keeps templates learned, so mutated data gets decoded
        else:
            data = mutate(rng, rng.choice(seeds), rng.choice(seeds))
        now = i / 100.0
        try:
            before = c.counts["records"]
            check(c, data, rng.choice(addrs), rng.choice((1, 2, 4739)), now)
            records += c.counts["records"] - before
            if i % 1000 == 999:
                c.expire(now)
                bounds(c)
        except Exception:
            print(f"FAILED at iteration {i} (seed {args.seed}), collector {i % len(collectors)}", file=sys.stderr)
            print(f"input: {data.hex()}", file=sys.stderr)
            traceback.print_exc()
            return 1
    dt = time.monotonic() - t0
    totals: dict[str, int] = {}
    for c in collectors:
        for k, v in c.counts.items():
            totals[k] = totals.get(k, 0) + v
    print(f"{args.n} inputs in {dt:.1f} s ({args.n / dt:,.0f}/s), seed {args.seed}: no exception, one outcome each, "
          f"records well-typed, bounds held; {records} records decoded")  # fmt: skip
    for k in sorted(totals):
        print(f"  {k}: {totals[k]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
