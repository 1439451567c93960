"""The loop both fuzz jobs share: run a check over seeded inputs, count outcomes, stop at the
first defect with its reproducer."""

from __future__ import annotations

import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# The generators and checks live in tests/fuzzing.py (the hypothesis tests use them too).
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def run(name: str, inputs: Iterator[Any], check: Callable[[Any], str], n: int,
        as_bytes: Callable[[Any], bytes]) -> Counter[str] | None:
    """Up to ``n`` inputs through ``check``; the outcome counts, or None after printing the
    first input that raised (hex, and the traceback)."""
    counts: Counter[str] = Counter()
    start = last = time.perf_counter()
    for i in range(n):
        data = next(inputs)
        try:
            counts[check(data)] += 1
        except Exception:  # anything but the outcomes is a defect: report it whole
            print(f"{name}: input {i} raised; reproducer (hex):\n{as_bytes(data).hex()}", file=sys.stderr)
            traceback.print_exc()
            return None
        now = time.perf_counter()
        if now - last >= 30:
            last = now
            print(f"  {name}: {i + 1} inputs, {(i + 1) / (now - start):.0f}/s", file=sys.stderr, flush=True)
    took = time.perf_counter() - start
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    print(f"{name}: {n} inputs in {took:.1f} s, {n / took:.0f} inputs/s; {outcomes}", flush=True)
    return counts
