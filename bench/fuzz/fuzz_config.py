#!/usr/bin/env python3
"""Fuzz the config reader: ``parse_text`` and the build of every stack through the registry.

    PYTHONPATH=src python3 bench/fuzz/fuzz_config.py [--n 1000000] [--seed 1]
    PYTHONPATH=src python3 bench/fuzz/fuzz_config.py --replay HEX

Inputs (tests/fuzzing.py): configs from a grammar of every plugin's stacks and options with
edge values, and mutations (lines, characters, values, section headers, stack elements) of
the real configs (examples/, tests/cases, the golden cases, Debian's when installed). Each
goes as far as the daemon goes before starting anything: parse, instances, option checks,
configure(), key resolution. Only ConfigError (naming the file) may come out. Nothing is
opened: no socket, no output file, no log file (logfile= is only checked as opening it
would), no database (the SQL outputs' configure(), which connects, is left out).
Prints inputs/s and the outcomes; on anything else prints the input (UTF-8 hex, undecodable
bytes as they were) and the traceback and exits 1.
"""

from __future__ import annotations

import argparse
import sys

from _run import run  # first: it puts the repository on sys.path for tests.fuzzing
from tests import fuzzing


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10**6, help="inputs (default 10^6)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--replay", metavar="HEX", help="run one input (a reproducer)")
    a = ap.parse_args()
    check = fuzzing.ConfigChecker()
    try:
        if a.replay is not None:
            print(check(bytes.fromhex(a.replay).decode("utf-8", "surrogateescape")))
            return 0
        print(f"seed {a.seed}, {a.n} inputs", flush=True)
        return 0 if run("config", fuzzing.config_inputs(a.seed), check, a.n, _bytes) is not None else 1
    finally:
        check.close()


if __name__ == "__main__":
    sys.exit(main())
