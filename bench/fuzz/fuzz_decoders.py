#!/usr/bin/env python3
"""Fuzz the input decoders: NFLOG, NFCT (templates and walker), NFACCT, UNIXSOCK, NFTRACE.

    PYTHONPATH=src python3 bench/fuzz/fuzz_decoders.py [--n 1000000] [--seed 1] [--only nfct,...]
    PYTHONPATH=src python3 bench/fuzz/fuzz_decoders.py --only nfct --replay HEX

Per decoder, ``--n`` seeded inputs (mutated golden buffers, random attribute trees, random
bytes; tests/fuzzing.py) through its check: only DecodeError (or a count of malformed
messages) may come out, NFCT's and NFLOG's templates must give what their walkers give, and
XML must render whole every record its decoder accepted. Prints inputs/s and the outcomes
(accepted, rejected, other: no record to decode); on anything else prints the input in hex
and the traceback and exits 1. bench/fuzz/README.md has the figures.
"""

from __future__ import annotations

import argparse
import sys

from _run import run  # first: it puts the repository on sys.path for tests.fuzzing
from tests import fuzzing


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10**6, help="inputs per decoder (default 10^6)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", default="nflog,nfct,nfacct,unixsock,nftrace", help="comma-separated decoders")
    ap.add_argument("--replay", metavar="HEX", help="run one input (a reproducer) through --only's check")
    a = ap.parse_args()
    checks = fuzzing.decoder_checks()
    names = [x for x in a.only.split(",") if x]
    unknown = set(names) - set(checks)
    if unknown:
        ap.error(f"unknown decoder(s) {', '.join(sorted(unknown))} (have {', '.join(checks)})")
    if a.replay is not None:
        for name in names:
            print(f"{name}: {checks[name][1](bytes.fromhex(a.replay))}")
        return 0
    print(f"seed {a.seed}, {a.n} inputs per decoder", flush=True)
    for name in names:
        inputs, check = checks[name]
        if run(name, inputs(a.seed), check, a.n, lambda b: b) is None:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
