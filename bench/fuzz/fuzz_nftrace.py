#!/usr/bin/env python3
"""Fuzz the NFTRACE decoder and grouping (issue 14), for long runs.

    python3 bench/fuzz/fuzz_nftrace.py --n 1000000 [--seed 1]

Inputs come from a seeded ``random.Random`` (same run for the same seed): the trace datagrams
captured from a real kernel (tests/vectors/nftrace/loopback.hex), mutated by byte flips, cuts,
insertions of attribute-shaped junk (lengths 0-7, 0xffff, nested flags), splices of two
datagrams and duplications; plus random bytes. For every input:

* ``nftrace.parse_buffer`` never raises; every event it returns has a table, a chain and a
  32-bit id;
* ``nftrace.parse_trace`` raises nothing but ``DecodeError``;
* the events go through a ``nfttrack.Tracker`` (small ``max_open``, with the captured
  ruleset), whose records all have ``audit.action`` in ``AUDIT_ACTIONS`` and one value per key.

On the first failure it prints the input as hex, the seed and the iteration, and exits 1. The
short, in-suite version is tests/unit/test_nftrace.py (hypothesis).
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
import time
from pathlib import Path

from pyulogd.codec import nftrace as nt
from pyulogd.codec import nfttrack
from pyulogd.codec.nftruleset import Ruleset
from pyulogd.core.errors import DecodeError
from pyulogd.core.keys import AUDIT_ACTIONS

VECTORS = Path(__file__).resolve().parents[2] / "tests" / "vectors" / "nftrace"


def corpus() -> list[bytes]:
    return [bytes.fromhex(line) for line in (VECTORS / "loopback.hex").read_text().splitlines()
            if line and not line.startswith("#")]  # fmt: skip


def mutate(rng: random.Random, seeds: list[bytes]) -> bytes:
    b = bytearray(rng.choice(seeds))
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        if op == 0 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 1 and b:
            del b[rng.randrange(len(b)) :]
        elif op == 2:
            at = rng.choice([rng.randrange(20), 0x8005, 5, 8, 3])
            ln = rng.choice([0, 1, 3, 4, 5, 7, 8, 0xFFFF, rng.randrange(64)])
            junk = struct.pack("=HH", ln, at) + bytes(rng.randrange(12))
            pos = rng.randrange(len(b) + 1)
            b[pos:pos] = junk
        elif op == 3:
            other = rng.choice(seeds)
            b = b[: rng.randrange(len(b) + 1)] + other[rng.randrange(len(other) + 1) :]
        elif op == 4:
            b = b + b
        elif op == 5 and len(b) >= 4:  # fix nlmsg_len to the new size, so the framing holds
            struct.pack_into("=I", b, 0, len(b))
    return bytes(b)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    seeds = corpus()
    rs = Ruleset.parse((VECTORS / "ruleset.json").read_text(), ("inet", "tmark"))
    rs.add_text((VECTORS / "ruleset.txt").read_text())
    tracker = nfttrack.Tracker(own=("inet", "tmark"), max_open=8, ruleset=rs)
    t0 = time.monotonic()
    for i in range(args.n):
        data = mutate(rng, seeds) if rng.random() < 0.9 else rng.randbytes(rng.randrange(200))
        try:
            batch = nt.parse_buffer(data)
            for ev in batch.events:
                assert isinstance(ev.table, str) and isinstance(ev.chain, str) and 0 <= ev.id < 2**32
            try:
                nt.parse_trace(data, 0, len(data))
            except DecodeError:
                pass
            recs = tracker.add(batch.events, float(i), float(i))
            if i % 97 == 0:
                recs += tracker.flush()
            for r in recs:
                assert len(r) == len(nfttrack.KEYS) + 1 and r[1] in AUDIT_ACTIONS
        except Exception as e:  # noqa: BLE001 - report any failure with its input
            print(f"FAIL at iteration {i} (seed {args.seed}): {type(e).__name__}: {e}\ninput: {data.hex()}")
            return 1
    print(f"{args.n} inputs, no failure ({time.monotonic() - t0:.1f} s)")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
