#!/usr/bin/env python3
"""Keep OpenFlow sampling flows on an Open vSwitch bridge, whoever deletes them.

    ovs-sampling-watcher.py [--interval SECONDS] [--ofctl PATH] [--once] BRIDGE FLOWFILE

Neutron's Open vSwitch agent removes, when it restarts (and at its periodic clean-ups), every
flow on br-int whose cookie is not one of its own: flows added by hand or by another tool,
such as the ``sample()`` flows that export dropped or accepted packets to a flow collector
(docs/flows.md), disappear then. This watcher holds the flows of FLOWFILE (``ovs-ofctl
add-flows`` syntax, one per line, ``#`` comments; every flow must carry a ``cookie=``, by
which it is found again) and every ``--interval`` seconds (default 5) checks that each cookie
still has its flows on BRIDGE; when one is missing, it adds that cookie's flows again (adding
a flow whose match exists replaces it, so this is safe to repeat) and says so on stdout.

It only reads and adds; it never deletes anything. ``ovs-ofctl`` runs with the environment
given (``OVS_RUNDIR`` for a bridge of a private Open vSwitch). ``--once`` checks once and
exits with 0 if nothing was missing, 1 if it re-added flows (a cron job or a test).
Standard library only; stop it with SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

COOKIE = re.compile(r"(?:^|[\s,])cookie=(0x[0-9a-fA-F]+|\d+)(?:/\S+)?(?=[\s,])")


def read_flows(path: Path) -> dict[int, list[str]]:
    """The flows of ``path`` by cookie; a flow without a cookie is an error (it could not be found)."""
    by_cookie: dict[int, list[str]] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        flow = line.strip()
        if not flow or flow.startswith("#"):
            continue
        m = COOKIE.search(" " + flow + " ")
        if m is None or int(m[1], 0) == 0:
            raise SystemExit(f"{path}:{n}: a flow needs a non-zero cookie= to be watched: {flow}")
        by_cookie.setdefault(int(m[1], 0), []).append(flow)
    if not by_cookie:
        raise SystemExit(f"{path}: no flows")
    return by_cookie


def present(ofctl: str, bridge: str, cookie: int) -> int:
    """How many flows with ``cookie`` the bridge has."""
    out = subprocess.run([ofctl, "dump-flows", bridge, f"cookie={cookie:#x}/-1"], capture_output=True, text=True,
                         timeout=30, check=True).stdout  # fmt: skip
    return sum(1 for line in out.splitlines() if "cookie=" in line)


def check(ofctl: str, bridge: str, flows: dict[int, list[str]]) -> int:
    """Re-add the flows of every cookie that lost some; the number of cookies re-added."""
    readded = 0
    for cookie, lines in flows.items():
        have = present(ofctl, bridge, cookie)
        if have >= len(lines):
            continue
        subprocess.run([ofctl, "add-flows", bridge, "-"], input="\n".join(lines) + "\n", text=True, timeout=30,
                       check=True, capture_output=True)  # fmt: skip
        print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {bridge}: cookie {cookie:#x} had {have} of {len(lines)} flows: "
              f"re-added", flush=True)  # fmt: skip
        readded += 1
    return readded


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bridge")
    ap.add_argument("flowfile", type=Path)
    ap.add_argument("--interval", type=float, default=5.0)
    ap.add_argument("--ofctl", default="ovs-ofctl")
    ap.add_argument("--once", action="store_true")
    args = ap.parse_args(argv)
    flows = read_flows(args.flowfile)
    if args.once:
        return 1 if check(args.ofctl, args.bridge, flows) else 0
    stop = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"watching {sum(len(v) for v in flows.values())} flow(s), {len(flows)} cookie(s), on {args.bridge} "
          f"every {args.interval:g} s", flush=True)  # fmt: skip
    while not stop:
        try:
            check(args.ofctl, args.bridge, flows)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
            err = getattr(e, "stderr", "") or ""
            print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {args.bridge}: ovs-ofctl failed ({e}): {err.strip()}",
                  flush=True)  # fmt: skip
        deadline = time.monotonic() + args.interval
        while not stop and time.monotonic() < deadline:
            time.sleep(min(0.2, args.interval))
    return 0


if __name__ == "__main__":
    sys.exit(main())
