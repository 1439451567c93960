#!/usr/bin/env python3
"""The kernel's CPU per traced packet, and the highest lossless rate, NFTRACE against NFLOG
(issue 14, item 4), with a fast generator (bench/synflood.c, UDP with sendmmsg).

    python3 bench/nftrace_kernel.py kernel [--rate 20000] [--seconds 5] [--repeat 3]
    python3 bench/nftrace_kernel.py sweep  [--rates 10000,20000,40000,60000,80000] [--seconds 4]
    python3 bench/nftrace_kernel.py all    [--out-dir bench/results]  # both, tables in a .md

The lab, ruleset and daemon configurations are bench/nftrace_cost.py's: namespaces
``<tag>-a`` -> ``<tag>-b`` joined by a veth pair; in ``b`` an inet table with ``--rules``
rules that do not match, then ``udp dport 5001 accept``; the daemon (this checkout's code,
``python -m pyulogd``) in ``b`` writes JSON (``sync=0``).

``kernel``: per mode, ``--repeat`` times, the modes interleaved, the same fixed rate:

* ``none``: no logging at all (the baseline);
* ``nflog``: ``meta l4proto udp log group 7`` before the accept, pyulogd NFLOG reading;
* ``nftrace``: pyulogd NFTRACE (``trace_rule="meta l4proto udp"``) marking and reading, with
  its kernel socket filter (the default);
* ``nftrace-nofilter``: the same with ``kernel_filter=0`` (every trace event read);
* ``nftrace-nolistener``: the same marking table (added with nft, as NFTRACE adds it), nobody
  subscribed to NFNLGRP_NFTRACE: nft_trace_notify() returns at once when
  ``nfnetlink_has_listeners()`` is false, but every chain still runs nft_trace_init();
* ``trace-armed``: a marking rule that matches nothing (``udp dport 9``), no listener: what
  the mere presence of a ``meta nftrace set`` rule costs untraced packets (it turns on the
  global static key ``nft_trace_enabled``, and with it nft_trace_init() -- a siphash and
  the skb's flow hash -- at every base chain of every namespace).

Method: the veth hands the packet to the receiving namespace in the sender's own
sendmmsg() (the backlog softirq runs when the sender re-enables bottom halves), so the
whole receive path -- conntrack, the nft chains, the trace events or the NFLOG message,
the netlink multicast and the daemon's wake-up -- runs on the sender's time. Per trial: the
sender's run time (the scheduler's sum_exec_runtime from ``/proc/PID/schedstat``, read when
it has exited and before it is reaped; in nanoseconds, and with no IRQ-time accounting in
this kernel it includes the softirqs the task hosted) plus the ksoftirqd threads' run time
(softirqs deferred to them), per packet; a mode's kernel cost is that minus the baseline's
(the generator's own user time is the same in every mode). The daemon's run time, the same
way. Errors: softirqs that interrupt another task (another CPU's receive work, other jobs on
a shared machine) are charged to that task and missed here; the spread of the ``--repeat``
trials is printed. Tick-sampled utime/stime are kept in the JSON lines but not used: a
sender that runs in bursts shorter than the 4 ms tick is seen by the ticks all or nothing.
The machine-wide system+softirq time is printed beside it (other jobs' CPU lands in it).

``sweep``: per buffer (``default``: the kernel's default receive buffer; ``big``:
``netlink_socket_buffer_size=8388608``), per mode (nflog, nftrace, nftrace-nofilter), per rate: sent, records
(JSON lines), ENOBUFS counted by the daemon; a mode stops at the first rate that loses.
The highest lossless rate is the highest rate, as *achieved* by the generator, with every
lower rate lossless. Rates depend on the whole machine: re-run on a quiet one.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from nftrace_cost import config, ruleset  # noqa: E402
from nslab import cpu_times, sh, veth_lab, wait_for  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
MARK_TABLE = """table inet pyulogd_trace {{
  chain prerouting {{ type filter hook prerouting priority -190; policy accept; {rule} meta nftrace set 1; }}
  chain output {{ type filter hook output priority -190; policy accept; {rule} meta nftrace set 1; }}
}}
"""
KERNEL_MODES = ("none", "nflog", "nftrace", "nftrace-nofilter", "nftrace-nolistener", "trace-armed")
DAEMON_MODES = ("nflog", "nftrace", "nftrace-nofilter")


def build(tmp: Path) -> Path:
    exe = tmp / "synflood"
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(exe), str(ROOT / "bench" / "synflood.c")], check=True)
    return exe


def proc_ut_st(pid: int) -> tuple[float, float]:
    """(utime, stime) of a process, seconds."""
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(f[11]) / TICK, int(f[12]) / TICK


def runtime(pid: int) -> float:
    """Seconds a task has run on a CPU, to the nanosecond (``/proc/PID/schedstat``: the
    scheduler's sum_exec_runtime; with no IRQ-time accounting it includes the softirqs the
    task hosted). Tick-sampled utime/stime are useless for a sender that runs in bursts
    shorter than a tick: the ticks see it or miss it together."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9


def ksoftirqd() -> float:
    """Seconds every ksoftirqd thread has run so far."""
    total = 0.0
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if (p / "comm").read_text().startswith("ksoftirqd/"):
                    total += runtime(int(p.name))
            except OSError:
                pass
    return total


def generate(exe: Path, ns: str, rate: int, secs: float, tmp: Path, perf: Path | None = None) -> dict[str, float]:
    """Send UDP datagrams from ``ns`` at ``rate`` for ``secs``; what was sent and what the
    sender (and the deferred softirqs) cost. ``perf``: sample the sender into this file
    (its run time is then perf's own, not the sender's: use the samples)."""
    out = tmp / "gen.out"
    q0, (k0, t0) = ksoftirqd(), cpu_times()
    pre = [] if perf is None else ["perf", "record", "-q", "-e", "cpu-clock", "-c", str(PERF_PERIOD_NS), "-g",
                                   "-o", str(perf), "--"]  # fmt: skip
    with out.open("w") as fh:
        p = subprocess.Popen(["ip", "netns", "exec", ns, *pre, str(exe), "udp", "-d", "10.96.0.2", "-p", "5001",
                              "-c", str(int(rate * secs)), "-r", str(rate), "-t", str(secs + 10)],
                             stdout=fh)  # fmt: skip
        os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: /proc still there
        ran = runtime(p.pid)
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    q1, (k1, t1) = ksoftirqd(), cpu_times()
    g = json.loads(out.read_text().strip().splitlines()[-1])
    return {"sent": int(g["sent"]), "send_s": float(g["seconds"]), "sender_run": ran, "sender_user": ru.ru_utime,
            "sender_sys": ru.ru_stime, "ksoftirqd": q1 - q0, "machine_sys_softirq": k1 - k0,
            "machine_total": t1 - t0}  # fmt: skip


PERF_PERIOD_NS = 50000  # one sample per 50 µs of the sender's CPU
# Kernel functions whose inclusive time (``perf report --children``) the ``perf`` part reports.
PERF_SYMBOLS = ("nft_do_chain", "nft_trace_notify", "nft_trace_init", "nfulnl_log_packet", "netlink_broadcast",
                "__netif_receive_skb")  # fmt: skip


def perf_times(data: Path) -> dict[str, float]:
    """The sender's CPU seconds in all, and inclusive in each of :data:`PERF_SYMBOLS`."""
    out = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--children", "--sort", "sym", "-g", "none",
                          "--comm", "synflood"], capture_output=True, text=True, check=True).stdout  # fmt: skip
    m = re.search(r"# Event count \(approx\.\): (\d+)", out)
    total = int(m.group(1)) / 1e9 if m else 0.0
    times = {"total": total}
    for sym in PERF_SYMBOLS:
        found = re.search(r"^\s+([\d.]+)%\s+[\d.]+%\s+\[k\] " + re.escape(sym) + r"\s*$", out, re.M)
        times[sym] = (float(found.group(1)) / 100 * total) if found else 0.0
    return times


Daemon = tuple[subprocess.Popen[bytes], Path, Path]
Rows = tuple[list[dict[str, object]], str]


def start_daemon(mode: str, ns: str, tmp: Path, label: str, bufsize: int | None) -> Daemon:
    out, log = tmp / f"{label}.json", tmp / f"{label}.log"
    conf = tmp / f"{label}.conf"
    text = config("nflog" if mode == "nflog" else "nftrace", ns, out, log)
    if mode == "nftrace-nofilter":
        text = text.replace('trace_rule="meta l4proto udp"\n', 'trace_rule="meta l4proto udp"\nkernel_filter=0\n')
    if bufsize is None:  # the kernel's default buffer
        text = text.replace("netlink_socket_buffer_size=8388608\n", "")
    else:
        text = text.replace("netlink_socket_buffer_size=8388608", f"netlink_socket_buffer_size={bufsize}")
    conf.write_text(text)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    d = subprocess.Popen([sys.executable, "-m", "pyulogd", "-c", str(conf)], env=env)
    if not wait_for(log, "working in network namespace" if mode == "nflog" else "tracing", 30, d):
        d.kill()
        raise SystemExit(f"daemon {label} did not start: {log.read_text() if log.exists() else ''}")
    time.sleep(0.5)  # the ruleset read of a fresh start is not part of the measurement
    return d, out, log


def stop_daemon(d: subprocess.Popen[bytes], out: Path, log: Path, sent: int) -> tuple[int, int, float, float, float]:
    """Wait until the records stop coming (all there, or none new for 2 s), read the daemon's
    CPU, stop it; (records, enobufs, utime, stime)."""
    def count() -> int:
        if not out.exists():
            return 0
        with out.open("rb") as fh:
            return sum(1 for _ in fh)
    last, since = -1, time.monotonic()
    while True:
        n = count()
        if n >= sent or time.monotonic() - since > 2.0:
            break
        if n != last:
            last, since = n, time.monotonic()
        time.sleep(0.1)
    ut, st = proc_ut_st(d.pid)
    ran = runtime(d.pid)
    d.terminate()
    d.wait(30)
    enobufs = 0
    for m in re.finditer(r"\.enobufs=(\d+)", log.read_text()):  # "counters at exit: a=1, b=2, ..."
        enobufs += int(m.group(1))
    return count(), enobufs, ut, st, ran


def trial(exe: Path, a: str, b: str, mode: str, rate: int, secs: float, rules: int, tmp: Path,
          bufsize: int | None = 8388608, perf: bool = False) -> dict[str, object]:  # fmt: skip
    """One run of the generator at ``rate`` for ``secs`` with ``mode``'s logging in ``b``."""
    sh("nft", "flush", "ruleset", ns=b)
    sh("nft", "-f", "-", ns=b, input=ruleset(rules, "nflog" if mode == "nflog" else "none"))
    if mode == "nftrace-nolistener":
        sh("nft", "-f", "-", ns=b, input=MARK_TABLE.format(rule="meta l4proto udp"))
    elif mode == "trace-armed":
        sh("nft", "-f", "-", ns=b, input=MARK_TABLE.format(rule="udp dport 9"))
    d = None
    if mode in DAEMON_MODES:
        d, out, log = start_daemon(mode, b, tmp, f"{mode}-{rate}-{secrets.token_hex(2)}", bufsize)
        du0, ds0 = proc_ut_st(d.pid)
        dr0 = runtime(d.pid)
    data = tmp / "perf.data" if perf else None
    try:
        g = generate(exe, a, rate, secs, tmp, data)
        if data is not None:
            g.update({f"perf_{k}": v for k, v in perf_times(data).items()})
    finally:
        if d is not None and d.poll() is None and sys.exc_info()[0] is not None:
            d.kill()
    row: dict[str, object] = {"mode": mode, "rate": rate, "buffer": "default" if bufsize is None else bufsize,
                              **g, "records": 0, "enobufs": 0, "daemon_user": 0.0, "daemon_sys": 0.0,
                              "daemon_run": 0.0}  # fmt: skip
    if d is not None:
        records, enobufs, du1, ds1, dr1 = stop_daemon(d, out, log, int(g["sent"]))
        row.update(records=records, enobufs=enobufs, daemon_user=du1 - du0, daemon_sys=ds1 - ds0,
                   daemon_run=dr1 - dr0)
    sh("nft", "flush", "ruleset", ns=b)
    return row


def per_pkt(row: dict[str, object], key: str) -> float:
    return float(row[key]) / max(1, int(row["sent"])) * 1e6  # type: ignore[arg-type,call-overload]


def kernel_part(exe: Path, a: str, b: str, args: argparse.Namespace, tmp: Path) -> Rows:
    rows = []
    for i in range(args.repeat):
        for mode in KERNEL_MODES:
            r = trial(exe, a, b, mode, args.rate, args.seconds, args.rules, tmp)
            r["repeat"] = i
            r["sender_us"] = per_pkt(r, "sender_run") + per_pkt(r, "ksoftirqd")
            print(json.dumps(r), flush=True)
            rows.append(r)
    base = [float(r["sender_us"]) for r in rows if r["mode"] == "none"]  # type: ignore[arg-type]
    b0 = statistics.median(base)
    md = [f"Fixed rate {args.rate}/s, {args.seconds} s per trial, {args.repeat} trials per mode (interleaved), "
          f"{args.rules} non-matching rules before the accept.\n",
          "| mode | sent/s (median) | sender + ksoftirqd CPU µs/pkt (median, range) | kernel µs/pkt over `none` | "
          "daemon CPU µs/pkt | records/sent | ENOBUFS | machine sys+softirq µs/pkt |",
          "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for mode in KERNEL_MODES:
        rs = [r for r in rows if r["mode"] == mode]
        k = [float(r["sender_us"]) for r in rs]  # type: ignore[arg-type]
        dmn = [per_pkt(r, "daemon_run") for r in rs]
        rate = statistics.median(int(r["sent"]) / float(r["send_s"]) for r in rs)  # type: ignore[call-overload,arg-type]
        mach = statistics.median(per_pkt(r, "machine_sys_softirq") for r in rs)
        rec = f"{sum(int(r['records']) for r in rs)}/{sum(int(r['sent']) for r in rs)}" \
            if mode in DAEMON_MODES else "-"  # type: ignore[call-overload]
        md.append(f"| {mode} | {rate:,.0f} | {statistics.median(k):.2f} ({min(k):.2f}-{max(k):.2f}) | "
                  f"{statistics.median(k) - b0:+.2f} | "
                  f"{statistics.median(dmn):.2f} ({min(dmn):.2f}-{max(dmn):.2f}) | {rec} | "
                  f"{sum(int(r['enobufs']) for r in rs)} | {mach:.2f} |"
                  if mode in DAEMON_MODES else
                  f"| {mode} | {rate:,.0f} | {statistics.median(k):.2f} ({min(k):.2f}-{max(k):.2f}) | "
                  f"{statistics.median(k) - b0:+.2f} | - | - | - | {mach:.2f} |")  # fmt: skip
    return rows, "\n".join(md) + "\n"


def perf_part(exe: Path, a: str, b: str, args: argparse.Namespace, tmp: Path) -> Rows:
    rows = []
    for i in range(args.repeat):
        for mode in KERNEL_MODES:
            r = trial(exe, a, b, mode, args.rate, args.seconds, args.rules, tmp, perf=True)
            r["repeat"] = i
            print(json.dumps(r), flush=True)
            rows.append(r)
    cols = ("total", *PERF_SYMBOLS)
    md = [f"perf record -e cpu-clock -c {PERF_PERIOD_NS} -g of the sender (kernel functions inclusive of their "
          f"callees), fixed rate {args.rate}/s, {args.seconds} s, {args.repeat} trials per mode; CPU µs per packet, "
          "median (range):\n",
          "| mode | " + " | ".join(c for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for mode in KERNEL_MODES:
        rs = [r for r in rows if r["mode"] == mode]
        cells = []
        for c in cols:
            v = [per_pkt(r, f"perf_{c}") for r in rs]
            cells.append(f"{statistics.median(v):.2f} ({min(v):.2f}-{max(v):.2f})")
        md.append(f"| {mode} | " + " | ".join(cells) + " |")
    return rows, "\n".join(md) + "\n"


def sweep_part(exe: Path, a: str, b: str, args: argparse.Namespace, tmp: Path) -> Rows:
    rows: list[dict[str, object]] = []
    rates = [int(r) for r in args.rates.split(",")]
    best: dict[tuple[str, str], str] = {}
    for buf_name, buf in (("default", None), ("big", 8388608)):
        for mode in DAEMON_MODES:
            top = None
            for rate in rates:
                r = trial(exe, a, b, mode, rate, max(args.seconds, 60000 / rate), args.rules, tmp, buf)
                r["buffer"] = buf_name
                r["achieved"] = round(int(r["sent"]) / float(r["send_s"]))  # type: ignore[call-overload,arg-type]
                r["daemon_us"] = per_pkt(r, "daemon_run")
                print(json.dumps(r), flush=True)
                rows.append(r)
                if r["records"] != r["sent"] or r["enobufs"]:
                    best[(buf_name, mode)] = (f"{top:,}" if top else "< " + f"{r['achieved']:,}") + \
                        f" (lost {int(r['sent']) - int(r['records'])} of {r['sent']} at {r['achieved']:,}/s, " \
                        f"{r['enobufs']} ENOBUFS)"  # type: ignore[call-overload]
                    break
                top = int(r["achieved"])  # type: ignore[call-overload]
            else:
                best[(buf_name, mode)] = f"≥ {top:,} (no loss up to the top of the sweep)"
    md = ["| buffer | mode | offered/s | achieved/s | sent | records | ENOBUFS | daemon µs/pkt |",
          "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['buffer']} | {r['mode']} | {r['rate']:,} | {r['achieved']:,} | {r['sent']} | {r['records']} | "
                  f"{r['enobufs']} | {float(r['daemon_us']):.2f} |")  # type: ignore[arg-type]
    md += ["", "| buffer | NFLOG highest lossless rate/s | NFTRACE (kernel filter) | NFTRACE (kernel_filter=0) |",
           "|---|---|---|---|"]
    for buf_name in ("default", "big"):
        md.append(f"| {buf_name} | {best[(buf_name, 'nflog')]} | {best[(buf_name, 'nftrace')]} | "
                  f"{best[(buf_name, 'nftrace-nofilter')]} |")
    return rows, "\n".join(md) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=("kernel", "perf", "sweep", "all"))
    ap.add_argument("--rate", type=int, default=20000, help="kernel: the fixed rate")
    ap.add_argument("--rates", default="10000,20000,30000,40000,60000,80000,120000", help="sweep: offered rates")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rules", type=int, default=10)
    ap.add_argument("--out-dir", type=Path, default=None, help="write nftrace-kernel-<time>.{jsonl,md} here")
    ap.add_argument("--tag", default="nt-k", help="prefix of the namespaces' names")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so that the namespaces go at a kill too
    tag = f"{args.tag}-{secrets.token_hex(3)}"
    a, b = f"{tag}-a", f"{tag}-b"
    load = Path("/proc/loadavg").read_text().split()[:3]
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    rows: list[dict[str, object]] = []
    md = [f"# NFTRACE vs NFLOG: kernel CPU per packet and lossless rate ({stamp} UTC)\n",
          f"`python3 bench/nftrace_kernel.py {' '.join(sys.argv[1:])}`; kernel {os.uname().release}, "
          f"{os.cpu_count()} CPUs, load average before the run: {' '.join(load)}.\n"]
    with veth_lab(a, b, "va", "vb", "10.96.0.1/24", "10.96.0.2/24"):
        with tempfile.TemporaryDirectory(prefix="nftk-") as d:
            tmp = Path(d)
            exe = build(tmp)
            if args.part in ("kernel", "all"):
                r, t = kernel_part(exe, a, b, args, tmp)
                rows += r
                md += ["## Kernel CPU per packet\n", t]
            if args.part in ("perf", "all") and shutil.which("perf"):
                r, t = perf_part(exe, a, b, args, tmp)
                rows += r
                md += ["## Where the sender's kernel time goes (perf)\n", t]
            if args.part in ("sweep", "all"):
                r, t = sweep_part(exe, a, b, args, tmp)
                rows += r
                md += ["## Lossless rate\n", t]
    md.append(f"Load average after the run: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}.\n")
    text = "\n".join(md)
    print("\n" + text)
    if args.out_dir:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        (args.out_dir / f"nftrace-kernel-{stamp}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (args.out_dir / f"nftrace-kernel-{stamp}.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
