#!/usr/bin/env python3
"""CPU cost of the whole packet path per event, without the kernel: µs per packet.

Replays the netlink buffers real ulogd2 read in the golden pkt-json case (44 packets of
every kind: ICMP, TCP, UDP, IPv6, options, fragments) through pyulogd's stacks, many
times, and writes to a file in a temp directory:

    python3 bench/micro_pipeline.py [--rounds 2000] [--stack json|logemu|both] [--traffic golden|flood]

``--traffic flood`` replays what compare.py's flood looks like instead: batches of 18
``gbFLOOD`` UDP datagrams (64-byte payload, input hook, kernel timestamps within one
second, the IP id counting up), 44 packets per round as well. The golden packets alternate
kernel timestamps with reception times, so per-second caches miss there far more often
than in a flood.

This is the per-event cost that bounds the lossless rate; bench/compare.py measures the
real thing against ulogd2 with kernel traffic.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from pyulogd.core.config import parse_text
from pyulogd.core.context import Context
from pyulogd.daemon.service import Service
from pyulogd.io.loop import Loop
from pyulogd.io.rtnl import LinkCache

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT.parent / "shared" / "golden" / "ulogd2-2.0.8" / "pkt-json"
STACKS = {
    "json": "log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,json1:JSON",
    "logemu": "log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,print1:PRINTPKT,emu1:LOGEMU",
    # JSON's stack with ECS in its place (issue 17: ECS keeps at least 0.8x JSON's rate)
    "ecs": "log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,ecs1:ECS",
}


def buffers() -> list[bytes]:
    d = GOLDEN / "raw-daemon"
    index = [json.loads(x) for x in (d / "index.jsonl").read_text().splitlines() if x.strip()]
    return [bytes.fromhex((d / r["file"]).read_text().replace("\n", "")) for r in index]


def flood_buffers(npkt: int = 44, per_batch: int = 18) -> list[bytes]:
    """NFLOG datagrams as the kernel sends them during the benchmark flood (gbA -> gbB:5001)."""
    import struct

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # the message builders are in tests/builders
    from tests.builders.nflog import build_packet

    mac_hdr = bytes.fromhex("02000000000b02000000000a0800")
    out: list[bytes] = []
    batch: list[bytes] = []
    for i in range(npkt):
        ident = (4242 + i) & 0xFFFF
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 92, ident, 0x4000, 64, 17, 0, bytes([10, 99, 0, 1]),
                         bytes([10, 99, 0, 2]))  # fmt: skip
        udp = struct.pack("!HHHH", 40000, 5001, 72, (0x1234 + i) & 0xFFFF)
        batch.append(build_packet(
            family=2, group=30, hook=1, prefix=b"gbFLOOD ", indev=2, hwaddr=mac_hdr[6:12], hwtype=1,
            hwheader=mac_hdr, timestamp=(1795764135, 100000 + 37 * i), payload=ip + udp + bytes(64),
        ))  # fmt: skip
        if len(batch) == per_batch or i == npkt - 1:
            done = struct.pack("=IHHII", 20, 3, 2, 0, 0) + bytes(4)
            out.append(b"".join(batch) + done)
            batch = []
    return out


def run(stack: str, rounds: int, sync: int, traffic: str = "golden") -> float:
    with tempfile.TemporaryDirectory() as tmp:
        text = (
            f"[global]\nstack={STACKS[stack]}\n[log1]\ngroup=11\n"
            f'[json1]\nfile="{tmp}/out.json"\nsync={sync}\n[emu1]\nfile="{tmp}/out.log"\nsync={sync}\n'
            f'[ecs1]\nfile="{tmp}/out.ecs.json"\nsync={sync}\n'
        )
        ctx = Context(loop=Loop(), hostname="vm")
        cache = LinkCache(ctx, kernel=False)
        cache.names.update({1: "lo", 2: "gbb0"})
        ctx.ifcache = cache  # type: ignore[attr-defined]
        svc = Service(f"{tmp}/u.conf", ctx)
        svc.load_config(parse_text(text))
        for inst in svc.stacks[0].instances[1:]:
            inst.start()
            svc.started.append(inst)
        svc.sinks.append(svc.stacks[0].sink)
        src = svc.stacks[0].source
        bufs = buffers() if traffic == "golden" else flood_buffers()
        npkt = 44
        feed = src.feed  # type: ignore[attr-defined]
        t0 = time.process_time()
        for _ in range(rounds):
            for b in bufs:
                feed(b)
                svc.flush()
        cpu = time.process_time() - t0
        svc.stop()
        return cpu / (rounds * npkt) * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2000)
    ap.add_argument("--stack", choices=["json", "logemu", "ecs", "both", "json+ecs"], default="both",
                    help="both: json and logemu; json+ecs: JSON and ECS side by side, with their ratio")
    ap.add_argument("--sync", type=int, default=1)
    ap.add_argument("--traffic", choices=["golden", "flood"], default="golden")
    a = ap.parse_args()
    if not GOLDEN.is_dir():
        print(f"needs the golden set at {GOLDEN}", file=sys.stderr)
        return 1
    os.environ.setdefault("TZ", "UTC")
    time.tzset()
    names = {"both": ["json", "logemu"], "json+ecs": ["json", "ecs"]}.get(a.stack, [a.stack])
    best: dict[str, float] = {}
    for name in names:
        best[name] = min(run(name, a.rounds, a.sync, a.traffic) for _ in range(3))
        print(f"{name:7s} sync={a.sync} {a.traffic}: {best[name]:.2f} µs CPU per packet "
              f"(best of 3, {a.rounds * 44} packets each)")
    if "json" in best and "ecs" in best:
        print(f"ECS rate / JSON rate: {best['json'] / best['ecs']:.2f} (target >= 0.8)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
