#!/usr/bin/env python3
"""IPFIXIN's cost per record in the daemon's own read path, deterministic enough for callgrind.

    PYTHONPATH=src python3 bench/micro_ipfix.py [--rounds 20] [--batch 1000] [--sink null|json]
    valgrind --tool=callgrind --callgrind-out-file=/dev/null python3 bench/micro_ipfix.py --rounds 5
    python3 bench/micro_ipfix.py --callgrind        # both counts under valgrind, and the difference

The daemon's service (IPFIXIN -> NULL, or -> IP2STR -> JSON into a temp file) listens on a
loopback UDP socket; a sender in a process of its own (not traced by callgrind) puts
``--batch`` data messages of the Open vSwitch replay (bench/ipfix_bench.py's corpus) into the
socket's buffer per round, then this process reads them the way the loop does (the input's
reader until the socket is empty, then the sinks' flush). CPU time per record is printed;
``--callgrind`` runs the benchmark twice under valgrind (``--rounds`` 5 and 25) and prints
``(Ir(25) - Ir(5)) / (20 * batch)``: instructions per record, start-up and the sender left
out, the same from run to run on a busy machine (bench/README.md, "IPFIXIN").
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from ipfix_bench import corpus  # noqa: E402


def sender(port: int, batch: int) -> int:
    """The child: on each line of stdin, send the next ``batch`` data messages; answer a line."""
    setup, data = corpus(batch * 64)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dst = ("127.0.0.1", port)
    for m in setup:
        s.sendto(m, dst)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    i = 0
    for _line in sys.stdin:
        for _ in range(batch):
            s.sendto(data[i % len(data)], dst)
            i += 1
        sys.stdout.write("sent\n")
        sys.stdout.flush()
    return 0


def run(rounds: int, batch: int, sink: str, extra: bool = True) -> tuple[float, int]:
    from pyulogd.core.config import parse_text
    from pyulogd.core.context import Context
    from pyulogd.daemon.service import Service
    from pyulogd.io.loop import Loop

    with tempfile.TemporaryDirectory(prefix="pyu-microipfix-") as tmp:
        stack = "f1:IPFIXIN,ip2str1:IP2STR,json1:JSON" if sink == "json" else "f1:IPFIXIN,null1:NULL"
        text = (f'[global]\nstack={stack}\n[f1]\nport=0\nsocket_buffer_size=8M\nextra={int(extra)}\n'
                f'[json1]\nfile="{tmp}/out.json"\n')
        ctx = Context(loop=Loop(), hostname="vm")
        svc = Service(f"{tmp}/u.conf", ctx)
        svc.load_config(parse_text(text))
        svc.start()
        src = svc.stacks[0].source
        child = subprocess.Popen([sys.executable, __file__, "--sender", str(src.port), "--batch", str(batch)],  # type: ignore[attr-defined]
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)  # fmt: skip
        assert child.stdin is not None and child.stdout is not None
        child.stdout.readline()
        read = src._read  # type: ignore[attr-defined]
        loop = ctx.loop
        sock = src.sock  # type: ignore[attr-defined]

        def drain() -> None:
            while True:
                read()
                svc.flush()
                try:
                    sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
                except BlockingIOError:
                    return

        child.stdin.write("go\n")  # templates in, a first round to warm the caches
        child.stdout.readline()
        drain()
        cpu = 0.0
        for _ in range(rounds):
            child.stdin.write("go\n")
            child.stdout.readline()
            t0 = time.process_time()
            drain()
            cpu += time.process_time() - t0
        child.stdin.close()
        child.wait()
        del loop
        got = ctx.stats.get("ipfixin.f1.records")
        svc.stop()
        if got != (rounds + 1) * batch:
            raise SystemExit(f"{got} records decoded of {(rounds + 1) * batch} sent: the socket buffer lost some")
        return cpu / (rounds * batch) * 1e6, got


def callgrind(batch: int, sink: str, extra: bool = True) -> float:
    irs = []
    for rounds in (5, 25):
        out = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
                              __file__, "--rounds", str(rounds), "--batch", str(batch), "--sink", sink,
                              *([] if extra else ["--no-extra"])],
                             capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})  # fmt: skip
        m = re.search(r"Collected : (\d+)", out.stderr)
        if m is None:
            raise SystemExit(out.stderr[-2000:])
        irs.append(int(m.group(1)))
    return (irs[1] - irs[0]) / (20 * batch)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--batch", type=int, default=1000, help="messages per round (they must fit the socket buffer)")
    ap.add_argument("--sink", choices=["null", "json"], default="null")
    ap.add_argument("--callgrind", action="store_true", help="instructions per record under valgrind")
    ap.add_argument("--no-extra", action="store_true", help="IPFIXIN's extra=0: no ipfix.extra built or written")
    ap.add_argument("--sender", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.sender:
        return sender(a.sender, a.batch)
    if a.callgrind:
        cost = callgrind(a.batch, a.sink, not a.no_extra)
        print(f"IPFIXIN{' extra=0' if a.no_extra else ''} -> {a.sink}: {cost:,.0f} instructions per record (callgrind)")
        return 0
    us, _got = run(a.rounds, a.batch, a.sink, not a.no_extra)
    print(f"IPFIXIN{' extra=0' if a.no_extra else ''} -> {a.sink}: {us:.2f} µs CPU per record "
          f"({a.rounds} x {a.batch} records)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
