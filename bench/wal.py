#!/usr/bin/env python3
"""The write-ahead log's cost: pyulogd with ``wal=0`` and with ``wal=1``, and ulogd2 as the
reference, on the same traffic in the same run (issue 12, item 1: at most 10 % fewer
events/s at the lossless rate).

Every trial is one call of the shared harness throughput.py (lab rebuilt, daemon started in
netns gbB, UDP flood through `counter log group 30`, output counted, daemon stopped), as in
compare.py; the three daemons alternate trial by trial (the order rotates each repetition) so
that the noise of this shared machine hits all three. Per offered rate it prints loss and
CPU µs per event of each, and the ratios WAL on / WAL off and WAL on / ulogd2; then the
lossless rate of each (the highest rate every trial of which lost nothing) and its ratio.

    sudo bench/wal.py                       # JSON (sync=1, big buffers), rates 10k..100k, 2 trials
    sudo bench/wal.py --config logemu --rates 25000,50000 --repeat 3
    bench/wal.py --report bench/results/wal-XXXX.jsonl

The rows go to bench/results/wal-<time>.jsonl (the harness's fields, plus variant and config),
the tables to the .md beside it. bench/micro_pipeline.py --wal counts instructions
(callgrind) per record with and without the log, which the machine's load cannot blur.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BIG = "LOG1_EXTRA=netlink_socket_buffer_size=8388608\\nnetlink_socket_buffer_maxsize=67108864"
TEMPLATES = {"json": "ulogd-json.conf.in", "logemu": "ulogd-logemu.conf.in"}
VARIANTS = ("ulogd2", "pyulogd", "pyulogd+wal")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def template(a: argparse.Namespace, name: str, wal: bool) -> str:
    """The shared template without comment lines (compare.py's reason), with the log on or off."""
    dst = os.path.join(a.workdir, "templates", ("wal-" if wal else "") + name)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    with open(os.path.join(a.confdir, name)) as f:
        lines = [ln for ln in f if not ln.lstrip().startswith("#")]
    out = []
    for ln in lines:
        out.append(ln)
        if wal and ln.strip() == "[global]":
            out.append("wal=1\nwal_dir=\"@OUTDIR@/wal\"\n")
    with open(dst, "w") as f:
        f.writelines(out)
    return dst


def wait_lab_free(seconds: float = 600) -> None:
    """Another benchmark using the lab (gbA/gbB) would be torn down by ours (and spoil both)."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
        if "gbB" not in ns and "gbA" not in ns:
            return
        time.sleep(2)
    log("  ! lab namespaces gbA/gbB still exist: taking them over")


def trial(a: argparse.Namespace, variant: str, rate: int, count: int) -> dict | None:
    wait_lab_free()
    cmd = a.ulogd_cmd if variant == "ulogd2" else a.pyulogd_cmd
    fd, tmp = tempfile.mkstemp(prefix="wal-", suffix=".json", dir=a.workdir)
    os.close(fd)
    argv = [sys.executable, a.harness, "--daemon", cmd,
            "--template", template(a, TEMPLATES[a.config], variant == "pyulogd+wal"),
            "--count", str(count), "--rates", str(rate), "--repeat", "1",
            "--max-seconds", f"{count / rate * 2 + 10:.0f}", "--drain-timeout", "60",
            "--workdir", os.path.join(a.workdir, "trials"), "--label", f"{variant}/{a.config}/{rate}",
            "--json", tmp, "--set", "SYNC=1"]
    if a.big:
        argv += ["--set", BIG]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.join(REPO, "src") + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=count / rate * 2 + 200)
    try:
        with open(tmp) as f:
            rows = [json.loads(x) for x in f if x.strip()]
    finally:
        os.unlink(tmp)
    if p.returncode != 0 or not rows:
        log(f"  ! {variant} at {rate}/s failed: {p.stdout[-500:]} {p.stderr[-500:]}")
        return None
    row = rows[-1]
    row.update(variant=variant, config=a.config + ("/big" if a.big else "/default"), run_id=a.run_id)
    return row


def report(rows: list[dict]) -> str:
    out = []
    by: dict[tuple[str, str, int], list[dict]] = {}
    for r in rows:
        by.setdefault((r["config"], r["variant"], r["rate"]), []).append(r)
    for config in sorted({r["config"] for r in rows}):
        rates = sorted({r["rate"] for r in rows if r["config"] == config})
        out.append(f"\n### {config}\n")
        out.append("| offered/s | " + " | ".join(f"{v} loss % | {v} CPU µs/event" for v in VARIANTS)
                   + " | CPU wal/no-wal | CPU wal/ulogd2 |")
        out.append("|---:|" + "---:|" * (2 * len(VARIANTS) + 2))
        for rate in rates:
            cells, cpu = [], {}
            for v in VARIANTS:
                rs = by.get((config, v, rate), [])
                loss = max((r["loss_pct"] or 0 for r in rs), default=None)
                c = [r["cpu_us_per_event"] for r in rs if r.get("cpu_us_per_event")]
                cpu[v] = statistics.median(c) if c else None
                cells += ["–" if loss is None else f"{loss:.2f}", "–" if cpu[v] is None else f"{cpu[v]:.2f}"]
            ratio = [f"{cpu['pyulogd+wal'] / cpu[b]:.2f}" if cpu.get("pyulogd+wal") and cpu.get(b) else "–"
                     for b in ("pyulogd", "ulogd2")]
            out.append(f"| {rate} | " + " | ".join(cells) + " | " + " | ".join(ratio) + " |")
        lossless = {}
        for v in VARIANTS:
            ok = [rate for rate in rates if by.get((config, v, rate))
                  and all((r["loss_pct"] or 0) == 0 for r in by[(config, v, rate)])]
            # the highest rate below which every tried rate was lossless too
            best = 0
            for rate in rates:
                if rate not in ok:
                    break
                best = rate
            lossless[v] = best
        out.append("\nlossless rate: " + ", ".join(f"{v} {lossless[v]}/s" for v in VARIANTS))
        if lossless["pyulogd"]:
            ratio = lossless["pyulogd+wal"] / lossless["pyulogd"]
            out.append(f"\nwal/no-wal lossless rate: {ratio:.2f} (target ≥ 0.90: {'PASS' if ratio >= 0.9 else 'FAIL'})")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=list(TEMPLATES), default="json")
    ap.add_argument("--default-buffers", dest="big", action="store_false", help="the kernel's default buffer")
    ap.add_argument("--rates", default="10000,25000,50000,75000,100000")
    ap.add_argument("--seconds", type=float, default=2.0, help="per point: max(min-count, rate * seconds) packets")
    ap.add_argument("--min-count", type=int, default=50000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--harness", default=os.path.join(REPO, "..", "shared", "bench", "throughput.py"))
    ap.add_argument("--ulogd-cmd", default="/usr/sbin/ulogd -c {conf}")
    ap.add_argument("--pyulogd-cmd", default=f"{sys.executable} -m pyulogd -c {{conf}}")
    ap.add_argument("--workdir", default="/tmp/pyw1-walbench")
    ap.add_argument("--out")
    ap.add_argument("--report", nargs="+", metavar="JSONL")
    a = ap.parse_args()
    if a.report:
        rows = [json.loads(x) for p in a.report for x in open(p) if x.strip()]
        print(report(rows))
        return 0
    if os.geteuid() != 0:
        sys.exit("bench/wal.py: run as root (network namespaces)")
    a.harness = os.path.abspath(a.harness)
    a.confdir = os.path.join(os.path.dirname(a.harness), "configs")
    a.run_id = time.strftime("%Y%m%dT%H%M%S")
    os.makedirs(os.path.join(a.workdir, "trials"), exist_ok=True)
    out = a.out or os.path.join(HERE, "results", f"wal-{a.run_id}.jsonl")
    rows: list[dict] = []
    rates = [int(float(x)) for x in a.rates.split(",")]
    for rate in rates:
        count = max(a.min_count, int(rate * a.seconds))
        for rep in range(a.repeat):
            order = VARIANTS[rep % 3:] + VARIANTS[: rep % 3]
            for v in order:
                r = trial(a, v, rate, count)
                if r is None:
                    continue
                log(f"  {v:12} {rate:>7}/s loss {r['loss_pct']}% cpu {r['cpu_us_per_event']} µs/event")
                rows.append(r)
                with open(out, "a") as f:
                    f.write(json.dumps(r) + "\n")
    text = f"# bench/wal.py {a.run_id}\n\n`{' '.join(sys.argv[1:])}`\n" + report(rows) + "\n"
    with open(out[: -len(".jsonl")] + ".md", "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
