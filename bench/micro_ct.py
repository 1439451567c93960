#!/usr/bin/env python3
"""CPU cost of the conntrack-event path per event, without the kernel: µs per event.

Replays conntrack event datagrams (one NEW and one DESTROY per TCP connection attempt, as the
kernel sends them during ``throughput.py --mode ct``) through pyulogd's
NFCT(hash_enable=0)->IP2STR->PRINTFLOW->LOGEMU stack, many times, writing to a file in a
temp directory:

    python3 bench/micro_ct.py [--rounds 200] [--events FILE.hex] [--profile] [--no-fusion] [--hash]
    valgrind --tool=callgrind python3 bench/micro_ct.py --once --rounds N [--hash]   # instructions

``--hash``: with the flow table (``hash_enable=1``): each NEW is cached, each DESTROY makes the
line (with ``flow.start``), so half as many lines. ``--once``: one run, no best of 3 (for
callgrind: instructions per event = (Ir(N rounds) - Ir(M rounds)) / ((N - M) x 400)).

FILE.hex: one datagram per line in hex (default: bench/data/ct-events.hex, 400 datagrams
captured from the lab: 200 connections to a closed port, NEW + DESTROY each). The datagrams
differ in ports and ids, as real ones do, so the address/port caches see realistic traffic.
Events are fed one datagram at a time, with one flush every 16 (the daemon writes once per
receive round). This is the user-space share only: recv() and the wake-ups are not in it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from pyulogd.core.config import parse_text
from pyulogd.core.context import Context
from pyulogd.daemon.service import Service
from pyulogd.io.loop import Loop
from pyulogd.io.netlink import lay_out

DEFAULT = Path(__file__).resolve().parent / "data" / "ct-events.hex"
STACK = "ct1:NFCT,ip2str1:IP2STR,print1:PRINTFLOW,emu1:LOGEMU"


def run(
    bufs: list[bytes], rounds: int, sync: int, profile: bool = False, batch: int = 0, fusion: bool = True,
    hash_enable: bool = False,
) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        text = (
            f"[global]\nstack={STACK}\nfusion={int(fusion)}\n[ct1]\nevent_mask=0x7\nhash_enable={int(hash_enable)}\n"
            f'[emu1]\nfile="{tmp}/out.log"\nsync={sync}\n'
        )
        ctx = Context(loop=Loop(), hostname="vm")
        svc = Service(f"{tmp}/u.conf", ctx)
        svc.load_config(parse_text(text))
        for inst in svc.stacks[0].instances[1:]:
            inst.start()
            svc.started.append(inst)
        svc.sinks.append(svc.stacks[0].sink)
        src = svc.stacks[0].source
        feed = src.feed  # type: ignore[attr-defined]
        flush = svc.flush
        for b in bufs:  # warm-up: learn the templates
            feed(b)
        flush()
        # --batch: the daemon's hot path, datagrams back to back in one buffer as read_many()
        # leaves them, handed over `batch` at a time, one flush per batch.
        view, spans = lay_out(bufs)
        chunks = [spans[i : i + batch] for i in range(0, len(spans), batch)] if batch else []
        prof = None
        if profile:
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
        t0 = time.process_time()
        for _ in range(rounds):
            if chunks:
                for chunk in chunks:
                    src._feed_spans(view, chunk)  # type: ignore[attr-defined]
                    flush()
                continue
            for i, b in enumerate(bufs):
                feed(b)
                if i & 15 == 15:
                    flush()
            flush()
        cpu = time.process_time() - t0
        if prof is not None:
            import pstats

            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(15)
        lines = sum(1 for _ in open(f"{tmp}/out.log"))
        want = (rounds + 1) * len(bufs) // (2 if hash_enable else 1)
        if lines != want:
            print(f"warning: {lines} lines for {want} flows", file=sys.stderr)
        svc.stop()
        return cpu / (rounds * len(bufs)) * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--sync", type=int, default=1)
    ap.add_argument("--events", default=str(DEFAULT))
    ap.add_argument("--profile", action="store_true", help="cProfile one run (slower; shares only)")
    ap.add_argument("--batch", type=int, default=0, help="N > 0: the read_many() path, N datagrams per "
                    "round and one flush per round (0: feed() one datagram at a time, a flush per 16)")
    ap.add_argument("--no-fusion", action="store_true", help="the plugins' own run, not the fused one")
    ap.add_argument("--hash", action="store_true", help="with the flow table (hash_enable=1)")
    ap.add_argument("--once", action="store_true", help="one run, no best of 3 (for callgrind)")
    a = ap.parse_args()
    bufs = [bytes.fromhex(x) for x in Path(a.events).read_text().split()]
    os.environ.setdefault("TZ", "UTC")
    time.tzset()
    if a.profile or a.once:
        run(bufs, a.rounds, a.sync, a.profile, a.batch, not a.no_fusion, a.hash)
        return 0
    best = min(run(bufs, a.rounds, a.sync, batch=a.batch, fusion=not a.no_fusion, hash_enable=a.hash)
               for _ in range(3))
    how = f"read_many path, {a.batch} per round" if a.batch else "feed(), a flush per 16"
    how += ", not fused" if a.no_fusion else ""
    how += ", flow table" if a.hash else ""
    print(
        f"NFCT->IP2STR->PRINTFLOW->LOGEMU sync={a.sync} ({how}): {best:.2f} µs CPU per event, "
        f"{2 * best:.2f} per connection (best of 3, {a.rounds * len(bufs)} events each)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
