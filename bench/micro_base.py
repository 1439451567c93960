"""Microbenchmark: µs per packet of BASE.interp on the 44 golden ulogd2 packets.

Run from the repository root: ``python bench/micro_base.py [--packets N] [--rounds N]``. Reports each
packet class (IPv4 TCP, IPv4 UDP, ...) and the mean over all packets. The record is a
fresh list per packet (as ``Source.emit`` builds it), so the copy is part of the cost and
is measured separately to show BASE's own share.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

from base_helpers import golden_from_vectors, make_base, record  # noqa: E402


def kind(p: dict[str, Any]) -> str:
    j = p["json"]
    fam = {2: "IPv4", 10: "IPv6"}.get(p["family"], str(p["family"]))
    proto = {1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6"}.get(j.get("ip.protocol", -1), "other")
    if "ip6.fragoff" in j or j.get("ip.fragoff", 0) & 0x3FFF:
        proto += " frag"
    return f"{fam} {proto}"


def measure(templates: list[list[Any]], packets: int, rounds: int) -> tuple[float, float]:
    """ns per packet of (record copy + interp, record copy alone): the minimum over
    ``rounds`` short alternating runs, which filters out a busy machine's noise."""
    interp = make_base().interp
    loops = max(1, packets // len(templates))
    best_work = best_copy = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        for _ in range(loops):
            for t in templates:
                interp(t[:])
        t1 = time.perf_counter_ns()
        for _ in range(loops):
            for t in templates:
                rec = t[:]  # the fresh record a source hands to the stack
        t2 = time.perf_counter_ns()
        best_work = min(best_work, (t1 - t0) / (loops * len(templates)))
        best_copy = min(best_copy, (t2 - t1) / (loops * len(templates)))
    del rec
    return best_work, best_copy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--packets", type=int, default=1000, help="packets per timed run")
    ap.add_argument("--rounds", type=int, default=200, help="timed runs per class (the fastest counts)")
    args = ap.parse_args()
    packets = golden_from_vectors()
    groups: dict[str, list[list[Any]]] = {}
    for p in packets:
        groups.setdefault(kind(p), []).append(record(p["payload"], p["family"], p["protocol"]))
    groups["all golden"] = [t for g in groups.values() for t in g]
    print(f"Python {sys.version.split()[0]}; µs per packet, BASE.interp alone (record copy subtracted)")
    print(f"{'packets':<18}{'n':>4}{'µs/packet':>12}{'copy µs':>10}")
    for name, g in groups.items():
        work, copy = measure(g, args.packets, args.rounds)
        print(f"{name:<18}{len(g):>4}{(work - copy) / 1000:>12.3f}{copy / 1000:>10.3f}")


if __name__ == "__main__":
    main()
