#!/usr/bin/env python3
"""CPU cost of the write-ahead log's round with many sources, as a netns= input following
many namespaces makes them (one source per namespace, each logged: docs/wal.md).

Every loop round the log looks at each source's pending records; with nothing pending that
is all it does. This measures that idle round, in CPU time (``time.process_time``, so a busy
shared machine changes it little), for 1 source and for N:

    python3 bench/micro_wal_sources.py [--rounds 20000] [--sources 1,100,500,2000]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from pyulogd.core.clock import FakeClock
from pyulogd.core.context import Context
from pyulogd.core.plugin import DataType, Key, KeyType, Source
from pyulogd.io.loop import Loop
from pyulogd.io.wal import Journal, WalSettings


class Idle(Source):
    name = "BENCHSRC"
    output_type = DataType.PACKET
    output_keys = (Key("a.n", KeyType.UINT32),)


def idle_round_us(sources: int, rounds: int) -> float:
    ctx = Context(loop=Loop(FakeClock()))
    with tempfile.TemporaryDirectory() as d:
        j = Journal(ctx, WalSettings(enabled=True, path=d, node_id="bench"))
        j.open()
        j.register_sources([Idle(ctx, f"s{i}", {}) for i in range(sources)])
        t = time.process_time()
        for _ in range(rounds):
            j.write_round()
        spent = time.process_time() - t
        j.close()
    return spent / rounds * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=20000)
    ap.add_argument("--sources", default="1,100,500,2000")
    args = ap.parse_args()
    for n in (int(x) for x in args.sources.split(",")):
        print(f"{n:6d} sources: {idle_round_us(n, args.rounds):8.2f} us CPU per idle round")


if __name__ == "__main__":
    main()
