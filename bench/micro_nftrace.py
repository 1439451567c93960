#!/usr/bin/env python3
"""NFTRACE's cost per traced packet in the daemon, without the kernel: deterministic under callgrind.

    PYTHONPATH=src python3 bench/micro_nftrace.py [--rounds 300] [--batch 8]
    python3 bench/micro_nftrace.py --callgrind     # instructions per packet (valgrind)

Replays the trace datagrams captured from Linux 6.18 (tests/vectors/nftrace/loopback.hex: 69
events, one per datagram, of 14 packets through the test's ruleset: our marking table, drops,
rejects, a jump, policy accepts) through the input's own ``feed`` and the stack of
bench/nftrace_cost.py (NFTRACE -> BASE -> IP2STR -> JSON into a temp file), with the recorded
ruleset, so that rule texts are resolved as in the daemon, ``--batch`` datagrams per read (the
input's ``feed_many``; a revision without it is fed one datagram at a time, which is what its
reader did). Each round gives the packets new
trace ids; at the end of a round the clock (a FakeClock) moves past the trace timeout, so
accepted packets complete as they would. ``--callgrind`` runs it twice under valgrind
(``--rounds`` 20 and 120) and prints ``(Ir(120) - Ir(20)) / (100 * 14)``: instructions per
packet, start-up left out. Compare with bench/micro_pipeline.py's NFLOG figure
(bench/README.md, "NFTRACE against NFLOG").
"""

from __future__ import annotations

import argparse
import os
import re
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "tests" / "vectors" / "nftrace"
PACKETS = 14  # packets in the capture (tests/unit/test_nftrace.py checks it)


def datagrams() -> list[bytes]:
    return [bytes.fromhex(line) for line in (VECTORS / "loopback.hex").read_text().splitlines()
            if line and not line.startswith("#")]  # fmt: skip


def with_ids(msgs: list[bytes], offset: int) -> list[bytes]:
    """The datagrams with every NFTA_TRACE_ID moved by ``offset`` (a new set of packets)."""
    out = []
    for m in msgs:
        b = bytearray(m)
        a = 20
        while a + 4 <= len(b):
            al, at = struct.unpack_from("=HH", b, a)
            if al < 4:
                break
            if at & 0x3FFF == 6:
                tid = struct.unpack_from("!I", b, a + 4)[0]
                struct.pack_into("!I", b, a + 4, (tid + offset) & 0xFFFFFFFF)
            a += (al + 3) & ~3
        out.append(bytes(b))
    return out


def kernel_filtered(msgs: list[bytes]) -> list[bytes]:
    """What the input's kernel socket filter lets through (pyulogd.codec.nftbpf, run in the
    reference interpreter the tests check against the kernel)."""
    from pyulogd.codec import nftbpf, nlbpf

    prog = nftbpf.compile_filter("tmark")
    return [m for m in msgs if nlbpf.run(prog, m)]


def run(rounds: int, batch: int, kfilter: bool = False) -> float:
    from pyulogd.codec.nftruleset import Ruleset
    from pyulogd.core.clock import FakeClock
    from pyulogd.core.config import parse_text
    from pyulogd.core.context import Context
    from pyulogd.daemon.service import Service
    from pyulogd.io.loop import Loop

    with tempfile.TemporaryDirectory(prefix="pyu-micronft-") as tmp:
        text = ("[global]\nstack=t1:NFTRACE,base1:BASE,ip2str1:IP2STR,json1:JSON\n[t1]\ntrace_table=tmark\n"
                f'[json1]\nfile="{tmp}/out.json"\nsync=0\n')  # fmt: skip
        clock = FakeClock(wall=1_800_000_000.0)
        ctx = Context(loop=Loop(clock), hostname="vm")
        svc = Service(f"{tmp}/u.conf", ctx)
        svc.load_config(parse_text(text))
        for inst in svc.stacks[0].instances[1:]:
            inst.start()
            svc.started.append(inst)
        svc.sinks.append(svc.stacks[0].sink)
        src = svc.stacks[0].source
        rs = Ruleset.parse((VECTORS / "ruleset.json").read_text(), ("inet", "tmark"))
        rs.add_text((VECTORS / "ruleset.txt").read_text())
        src.tracker.ruleset = rs  # type: ignore[attr-defined]
        base = datagrams()
        if kfilter:
            base = kernel_filtered(base)
        sets = [with_ids(base, 1000 * (i + 1)) for i in range(8)]
        feed = src.feed  # type: ignore[attr-defined]
        many = getattr(src, "feed_many", None)  # (older revisions read one datagram at a time)
        timeout = src.config["trace_timeout"]
        cpu = 0.0
        for r in range(rounds + 1):
            msgs = sets[r % len(sets)]
            t0 = time.process_time()
            for i in range(0, len(msgs), batch):
                if many is not None:
                    many(msgs[i : i + batch])
                else:
                    for m in msgs[i : i + batch]:
                        feed(m)
                svc.flush()
            clock.advance(timeout)
            ctx.loop.run_once(0)
            svc.flush()
            if r:
                cpu += time.process_time() - t0
        written = sum(1 for _ in open(f"{tmp}/out.json"))
        svc.stop()
        if written != (rounds + 1) * PACKETS:
            raise SystemExit(f"{written} records for {(rounds + 1) * PACKETS} packets")
        return cpu / (rounds * PACKETS) * 1e6


def callgrind(batch: int, kfilter: bool = False) -> float:
    irs = []
    for rounds in (20, 120):
        out = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
                              __file__, "--rounds", str(rounds), "--batch", str(batch)]
                             + (["--kernel-filter"] if kfilter else []),
                             capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})  # fmt: skip
        m = re.search(r"Collected : (\d+)", out.stderr)
        if m is None:
            raise SystemExit(out.stderr[-2000:])
        irs.append(int(m.group(1)))
    return (irs[1] - irs[0]) / (100 * PACKETS)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--batch", type=int, default=8, help="datagrams per read (one trace event each; 1: a "
                    "wake-up per event, as at low rates)")
    ap.add_argument("--callgrind", action="store_true")
    ap.add_argument("--kernel-filter", action="store_true", help="feed only the datagrams the input's kernel "
                    "socket filter keeps (40 of the 69), as the daemon reads them with kernel_filter=1")
    a = ap.parse_args()
    what = "NFTRACE -> BASE -> IP2STR -> JSON" + (" (kernel filter)" if a.kernel_filter else "")
    if a.callgrind:
        ir = callgrind(a.batch, a.kernel_filter)
        print(f"{what}: {ir:,.0f} instructions per traced packet (callgrind)")
        return 0
    print(f"{what}: {run(a.rounds, a.batch, a.kernel_filter):.2f} µs CPU per traced packet "
          f"({a.rounds} x {PACKETS} packets)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
