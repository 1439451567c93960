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

from pyulogd.core.clock import FakeClock
from pyulogd.core.config import parse_text
from pyulogd.core.context import Context
from pyulogd.daemon.service import Service
from pyulogd.io.loop import Loop
from pyulogd.io.rtnl import LinkCache
from pyulogd.io.wal import Journal

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


def run(stack: str, rounds: int, sync: int, traffic: str = "golden", wal: bool = False, drain: int = 1,
        fake: bool = False) -> float:
    """CPU µs per packet. ``drain``: datagrams read per round of the loop (one ``hold``/``release``
    and one flush around them, as NFLOG's drain and the loop do); 1: a flush after each."""
    with tempfile.TemporaryDirectory() as tmp:
        walconf = f'wal=1\nwal_dir="{tmp}/wal"\n' if wal else ""
        text = (
            f"[global]\n{walconf}stack={STACKS[stack]}\n[log1]\ngroup=11\n"
            f'[json1]\nfile="{tmp}/out.json"\nsync={sync}\n[emu1]\nfile="{tmp}/out.log"\nsync={sync}\n'
            f'[ecs1]\nfile="{tmp}/out.ecs.json"\nsync={sync}\n'
        )
        # With the write-ahead log measured: a clock that does not move, so that the 50 ms between two
        # saves of the cursors do not become fewer packets under valgrind (50x slower) than in a
        # real run; a save's own cost is measured apart (save_cost()).
        ctx = Context(loop=Loop(FakeClock()) if fake else Loop(), hostname="vm")
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
        if wal:  # as Service.start does: the log opened, the source and the output registered
            journal = Journal(ctx, svc.wal)
            journal.open()
            journal.register_sources([src])
            journal.register_outputs(svc.sinks)
            svc.journal = journal
        bufs = buffers() if traffic == "golden" else flood_buffers()
        npkt = 44
        feed = src.feed  # type: ignore[attr-defined]
        hold, release = src.hold, src.release  # what NFLOG's reading does around each batch
        t0 = time.process_time()
        groups = [bufs[i : i + drain] for i in range(0, len(bufs), drain)]
        for _ in range(rounds):
            for group in groups:
                hold()
                for b in group:
                    feed(b)
                release()
                svc.flush()
        cpu = time.process_time() - t0
        svc.stop()
        return cpu / (rounds * npkt) * 1e6


def save_cost() -> float:
    """µs of CPU one save of the state costs (two outputs' cursors and counters)."""
    from pyulogd.io.sink import SinkCounters
    from pyulogd.io.wal import WalFile

    with tempfile.TemporaryDirectory() as tmp:
        w = WalFile(tmp, 1 << 20, 1 << 30, False)
        w.open()
        c = SinkCounters()
        c.received = c.written = 123456789
        c.drop("write_failed", 12)
        state = {"node_id": "abcdef012345.ulogd", "reserved": 1 << 40, "seq": 1 << 39,
                 "cursors": {"json1": 1 << 39, "db1": 1 << 39},
                 "counters": {"json1": c.state(), "db1": c.state()}}
        n = 2000
        t0 = time.process_time()
        for _ in range(n):
            w.save_state(state)
        cpu = time.process_time() - t0
        w.close()
    return cpu / n * 1e6


def callgrind(stack: str, sync: int, traffic: str, wal: bool, drain: int = 1) -> float:
    """Instructions per packet (callgrind's Ir, start-up subtracted: two runs, 5 and 25 rounds)."""
    import re
    import subprocess

    ir = {}
    for rounds in (5, 25):
        with tempfile.TemporaryDirectory() as tmp:
            out = f"{tmp}/cg.out"
            subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
                            __file__, "--traffic", traffic, "--sync", str(sync), "--drain", str(drain),
                            "--one", stack, str(rounds),
                            "on" if wal else "off"], check=True, capture_output=True)
            m = re.search(r"^totals:\s+(\d+)", Path(out).read_text(), re.M)
            if m is None:
                raise RuntimeError("no totals in callgrind's output")
            ir[rounds] = int(m[1])
    return (ir[25] - ir[5]) / (20 * 44)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2000)
    ap.add_argument("--stack", choices=["json", "logemu", "ecs", "both", "json+ecs"], default="both",
                    help="both: json and logemu; json+ecs: JSON and ECS side by side, with their ratio")
    ap.add_argument("--sync", type=int, default=1)
    ap.add_argument("--traffic", choices=["golden", "flood"], default="golden")
    ap.add_argument("--wal", choices=["off", "on", "both"], default="off",
                    help="the write-ahead log (issue 12); both: each stack without and with it, and the ratio")
    ap.add_argument("--callgrind", action="store_true",
                    help="instructions per packet instead of CPU time: each point in a process of its own under "
                         "valgrind --tool=callgrind, (Ir(25 rounds) - Ir(5 rounds)) / (20 x 44 packets)")
    ap.add_argument("--drain", type=int, default=1,
                    help="datagrams per loop round (one flush after them; the flood has 3 per 44 packets)")
    ap.add_argument("--one", nargs=3, metavar=("STACK", "ROUNDS", "WAL"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if not GOLDEN.is_dir():
        print(f"needs the golden set at {GOLDEN}", file=sys.stderr)
        return 1
    os.environ.setdefault("TZ", "UTC")
    time.tzset()
    names = {"both": ["json", "logemu"], "json+ecs": ["json", "ecs"]}.get(a.stack, [a.stack])
    if a.one:  # one point, under callgrind
        run(a.one[0], int(a.one[1]), a.sync, a.traffic, a.one[2] == "on", a.drain, fake=True)
        return 0
    if a.wal != "off":
        modes = {"on": [True], "both": [False, True]}[a.wal]
        for name in names:
            got = {}
            for wal in modes:
                got[wal] = (callgrind(name, a.sync, a.traffic, wal, a.drain) if a.callgrind else
                            min(run(name, a.rounds, a.sync, a.traffic, wal, a.drain, fake=True) for _ in range(3)))
                unit = "instructions" if a.callgrind else "µs CPU"
                print(f"{name:7s} sync={a.sync} {a.traffic} drain={a.drain} wal={'on' if wal else 'off'}: "
                      f"{got[wal]:,.2f} {unit} per packet")
            if len(got) == 2:
                print(f"{name:7s} with the write-ahead log / without: {got[True] / got[False]:.3f} "
                      f"(rate ratio {got[False] / got[True]:.3f}, target >= 0.90)")
        us = save_cost()
        print(f"a save of the cursors and counters (at most every 50 ms): {us:.1f} µs CPU; at 50,000 packets/s "
              f"{us / 2500:.3f} µs per packet")
        return 0
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
