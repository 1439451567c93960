#!/usr/bin/env python3
"""What tracing costs: NFTRACE against an NFLOG rule logging the same packets (issue 14, item 4).

    python3 bench/nftrace_cost.py [--rates 2000,5000,10000] [--seconds 3] [--rules 10] [--out FILE]

Two namespaces of its own (``nftrb-<random>-a`` -> ``-b``, a veth pair; removed at the end).
In ``b`` an inet table holds ``--rules`` rules that do not match the traffic, then
``udp dport 5001 accept``. Per mode and rate, the daemon (``python -m pyulogd``, this
checkout's code) runs in ``b``, a sender in ``a`` sends UDP datagrams to port 5001 at the
rate for ``--seconds``, and the run reports:

* ``records``: lines the daemon wrote (JSON), against ``sent``: lossless when equal;
* ``daemon µs/pkt``: the daemon's CPU (utime+stime of the process) per packet;
* ``kernel µs/pkt``: the machine's system+softirq time per packet *above the same traffic
  with neither* (mode ``none``): the kernel's work of tracing every rule, or of NFLOG;
* ``enobufs``: trace events / log messages the socket could not take.

Modes: ``none`` (baseline), ``nflog`` (``meta l4proto udp log group 7`` at the end of the
input chain's rules -> NFLOG -> JSON), ``nftrace`` (trace_rule ``meta l4proto udp`` -> NFTRACE ->
JSON). Run it alone on a quiet machine: every figure is per packet, and other jobs' CPU lands
in the kernel figure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from nslab import cpu_times, proc_cpu, send, sh, veth_lab, wait_for  # noqa: E402


def config(mode: str, ns: str, out: Path, log: Path) -> str:
    head = f'[global]\nlogfile="{log}"\nloglevel=3\n'
    if mode == "nftrace":
        return (head + "stack=t1:NFTRACE,base1:BASE,ip2str1:IP2STR,json1:JSON\n"
                f'[t1]\nnetwork_namespace_path="/run/netns/{ns}"\ntrace_rule="meta l4proto udp"\n'
                "netlink_socket_buffer_size=8388608\n"
                f'[json1]\nfile="{out}"\nsync=0\n')  # fmt: skip
    return (head + "stack=l1:NFLOG,base1:BASE,ip2str1:IP2STR,json1:JSON\n"
            f'[l1]\ngroup=7\nnetwork_namespace_path="/run/netns/{ns}"\nnetlink_socket_buffer_size=8388608\n'
            f'[json1]\nfile="{out}"\nsync=0\n')  # fmt: skip


def ruleset(rules: int, mode: str) -> str:
    body = "\n".join(f"    udp dport {6000 + i} counter drop" for i in range(rules))
    log = "    meta l4proto udp log group 7\n" if mode == "nflog" else ""
    return ("table inet bench {\n  chain input {\n    type filter hook input priority 0; policy accept;\n"
            f"{body}\n{log}    udp dport 5001 accept\n  }}\n}}\n")  # fmt: skip


def trial(a: str, b: str, mode: str, rate: int, secs: float, rules: int, tmp: Path, src: Path = ROOT / "src",
          label: str = "") -> dict[str, object]:  # fmt: skip
    sh("nft", "flush", "ruleset", ns=b)
    sh("nft", "-f", "-", ns=b, input=ruleset(rules, mode))
    out, log = tmp / f"{mode}{label}-{rate}.json", tmp / f"{mode}{label}-{rate}.log"
    daemon = None
    if mode != "none":
        conf = tmp / f"{mode}{label}.conf"
        conf.write_text(config(mode, b, out, log))
        env = dict(os.environ, PYTHONPATH=str(src))
        daemon = subprocess.Popen([sys.executable, "-m", "pyulogd", "-c", str(conf)], env=env)
        wait_for(log, "tracing" if mode == "nftrace" else "working in network namespace", 20)
        time.sleep(0.5)
    k0, _ = cpu_times()
    d0 = proc_cpu(daemon.pid) if daemon else 0.0
    sent = send(a, rate, secs, "10.96.0.2")
    time.sleep(1.0)  # the last records (NFTRACE: its 250 ms timeout for accepted packets)
    k1, _ = cpu_times()
    d1 = proc_cpu(daemon.pid) if daemon else 0.0
    records = enobufs = 0
    if daemon is not None:
        daemon.terminate()
        daemon.wait(30)
        records = sum(1 for _ in out.open()) if out.exists() else 0
        for m in re.finditer(r"\.enobufs=(\d+)", log.read_text()):  # "counters at exit: a=1, b=2, ..."
            enobufs += int(m.group(1))
    return {"mode": mode + label, "rate": rate, "sent": sent, "records": records, "kernel_s": k1 - k0,
            "daemon_s": d1 - d0, "enobufs": enobufs}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="2000,5000,10000")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rules", type=int, default=10)
    ap.add_argument("--out", type=Path, default=None, help="also write the rows here (JSON lines)")
    ap.add_argument("--base", type=Path, default=None, help="another revision's src directory: its NFTRACE "
                    "runs too (mode nftrace@base), same run, for before/after")
    ap.add_argument("--tag", default="nftrb", help="prefix of the namespaces' names")
    args = ap.parse_args()
    tag = f"{args.tag}-{secrets.token_hex(3)}"
    a, b = f"{tag}-a", f"{tag}-b"
    rows = []
    with veth_lab(a, b, "va", "vb", "10.96.0.1/24", "10.96.0.2/24"):
        with tempfile.TemporaryDirectory(prefix="nftrb-") as d:
            for rate in (int(r) for r in args.rates.split(",")):
                base = None
                modes = [("none", ROOT / "src", ""), ("nflog", ROOT / "src", ""), ("nftrace", ROOT / "src", "")]
                if args.base:
                    modes.append(("nftrace", args.base, "@base"))
                for mode, src, label in modes:
                    row = trial(a, b, mode, rate, args.seconds, args.rules, Path(d), src, label)
                    if mode == "none":
                        base = row
                    assert base is not None
                    n = max(1, int(row["sent"]))  # type: ignore[call-overload]
                    extra = float(row["kernel_s"]) - float(base["kernel_s"])  # type: ignore[arg-type]
                    row["kernel_us_per_pkt"] = round(extra / n * 1e6, 2)
                    row["daemon_us_per_pkt"] = round(float(row["daemon_s"]) / n * 1e6, 2)  # type: ignore[arg-type]
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    print("\n| rate/s | mode | sent | records | lossless | kernel µs/pkt (over none) | daemon µs/pkt |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if r["mode"] == "none":
            continue
        ok = "yes" if r["records"] == r["sent"] else f"no ({r['records']})"
        print(f"| {r['rate']} | {r['mode']} | {r['sent']} | {r['records']} | {ok} | {r['kernel_us_per_pkt']} | "
              f"{r['daemon_us_per_pkt']} |")
    if args.out:
        args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
