#!/usr/bin/env python3
"""Side-by-side throughput comparison: ulogd2 vs pyulogd on the same traffic.

One invocation runs, for each configuration (JSON and LOGEMU sync=1, each with the
kernel's default netlink buffer and with big buffers), a fixed-rate sweep and a few
max-rate blasts, alternating the two daemons trial by trial (ulogd2, pyulogd,
ulogd2, pyulogd, ...) so that the noise of this shared 2-vCPU machine hits both.
Every trial is one call of the shared harness throughput.py (lab rebuilt, daemon
started in netns gbB, UDP flood through `counter log group 30`, output counted,
daemon stopped); its JSON row is appended to the results file with the fields
cmp_run / cmp_daemon / cmp_config / cmp_kind / cmp_seq added.  At the end it prints
one Markdown table per configuration (ulogd2, pyulogd, pyulogd/ulogd2) and
PASS/FAIL against the targets.

    sudo bench/compare.py --quick          # ~5 min: 1 trial per point
    sudo bench/compare.py                  # ~25 min: 3 trials per point
    sudo bench/compare.py --full           # ~60 min: more rates, longer points
    sudo bench/compare.py --mode ct        # ~15 min: conntrack events (NFCT->IP2STR->PRINTFLOW->LOGEMU,
                                           #   default and big buffers), TCP connection floods
    bench/compare.py --report bench/results/compare-XXXX.jsonl   # tables from a past run

--mode ct runs the configurations nfct/default and nfct/big through `throughput.py --mode ct`:
N TCP connection attempts to a closed port, each a NEW and a DESTROY event; loss counts the
[NEW] lines against the nft counter of new connections; "CPU µs/event" there is per connection
(NEW + DESTROY); compare.py also counts the DESTROY lines (destroy_logged,
cpu_us_per_ct_event) and prints the loss curve, since ulogd2 may lose events at every rate.

--ct-generator syn (--mode ct): instead of shared/bench/udpflood.c's socket()+connect() per attempt
(≈ 25-40k connections/s here, less than ulogd2 can log), compare.py compiles bench/synflood.c
(raw TCP SYNs with sendmmsg(), same command line and JSON line) as `udpflood` into
<workdir>/synflood-bin and gives throughput.py `--build-dir` of it: ≈ 115k SYNs/s with the lab
alone, ≈ 65-70k/s once conntrack events are built for a listener (bench/README.md).  Every
SYN is a NEW and, once gbB's RST kills the entry, a DESTROY event, as before.  This
mode has its own presets (higher rates, more connections per point); --count N sends N per trial.

    sudo bench/compare.py --mode ct --ct-generator syn --quick

Needs root.  Traffic stays inside the lab namespaces gbA/gbB.
"""
import argparse
import hashlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BIG = "LOG1_EXTRA=netlink_socket_buffer_size=8388608\\nnetlink_socket_buffer_maxsize=67108864"
BIG_CT = "CT1_EXTRA=netlink_socket_buffer_size=8388608\\nnetlink_socket_buffer_maxsize=67108864"
# 104 KiB asked, 208 KiB granted (the kernel doubles): the kernel's default. ulogd2 2.0.8 applies
# netlink_socket_buffer_size only below a larger maxsize, hence the maxsize one byte above.
KBUF_CT = "CT1_EXTRA=netlink_socket_buffer_size=106496\\nnetlink_socket_buffer_maxsize=106497"

# name -> (template, --set values, target kind)
CONFIGS = {
    "json/default": ("ulogd-json.conf.in", ["SYNC=1"], "json"),
    "json/big": ("ulogd-json.conf.in", ["SYNC=1", BIG], "json"),
    "logemu-sync1/default": ("ulogd-logemu.conf.in", ["SYNC=1"], "logemu"),
    "logemu-sync1/big": ("ulogd-logemu.conf.in", ["SYNC=1", BIG], "logemu"),
    # --mode ct: NFCT(event_mask=0x7, hash_enable=0) -> IP2STR -> PRINTFLOW -> LOGEMU (sync=1);
    # load = TCP connection attempts to a closed port, each a NEW and a DESTROY event.
    "nfct/default": ("ulogd-nfct-logemu.conf.in", ["SYNC=1"], "nfct"),
    "nfct/big": ("ulogd-nfct-logemu.conf.in", ["SYNC=1", BIG_CT], "nfct"),
    # Both daemons with the kernel's default receive buffer (208 KiB) set explicitly, which
    # pyulogd's own default (1 MiB) does not give: the like-for-like small buffer.
    "nfct/kernel-buffer": ("ulogd-nfct-logemu.conf.in", ["SYNC=1", KBUF_CT], "nfct"),
}
# throughput.py --mode of each kind of configuration (udp unless listed)
KIND_MODE = {"nfct": "ct"}
# the configurations each --mode runs by default
MODE_CONFIGS = {
    "udp": ["json/default", "json/big", "logemu-sync1/default", "logemu-sync1/big"],
    "ct": ["nfct/default", "nfct/big"],
}


def cfg_mode(cfg):
    return KIND_MODE.get(CONFIGS[cfg][2], "udp")

# Matrix presets.  A sweep point sends max(min_count, rate * seconds) packets at the
# fixed rate; a blast sends blast_count packets as fast as the generator goes.
PRESETS = {
    "quick": dict(rates=[10000, 25000, 50000, 100000], seconds=2.0, min_count=50000,
                  repeat=1, blast_count=200000, blast_repeat=1),
    "default": dict(rates=[10000, 25000, 50000, 75000, 100000, 150000], seconds=3.0, min_count=100000,
                    repeat=3, blast_count=200000, blast_repeat=3),
    "full": dict(rates=[10000, 25000, 50000, 75000, 100000, 125000, 150000, 200000], seconds=5.0,
                 min_count=100000, repeat=3, blast_count=1000000, blast_repeat=3),
}
# --mode ct: connections instead of packets (the generator manages ≈ 40k connections/s here).
# A point sends a fixed number of connections (min_count dominates: 50k at 5k/s = 10 s).
PRESETS_CT = {
    "quick": dict(rates=[5000, 10000, 20000, 30000], seconds=1.0, min_count=20000,
                  repeat=1, blast_count=20000, blast_repeat=1),
    "default": dict(rates=[5000, 10000, 15000, 20000, 30000, 40000], seconds=1.0, min_count=50000,
                    repeat=3, blast_count=50000, blast_repeat=3),
    "full": dict(rates=[5000, 10000, 15000, 20000, 25000, 30000, 40000], seconds=1.0, min_count=100000,
                 repeat=3, blast_count=100000, blast_repeat=3),
}

# --mode ct --ct-generator syn: raw SYNs (bench/synflood.c) reach ≈ 65-70k/s with a listener, and
# ulogd2 starts to lose beyond what connect() could send; points of ≥ 2 s, 200k connections at most.
PRESETS_CT_SYN = {
    "quick": dict(rates=[10000, 20000, 40000, 60000, 80000], seconds=2.0, min_count=50000,
                  repeat=1, blast_count=200000, blast_repeat=1),
    "default": dict(rates=[10000, 20000, 30000, 40000, 50000, 60000, 80000, 100000], seconds=2.0,
                    min_count=100000, repeat=2, blast_count=200000, blast_repeat=2),
    "full": dict(rates=[10000, 20000, 30000, 40000, 50000, 60000, 70000, 80000, 100000, 150000],
                 seconds=3.0, min_count=200000, repeat=3, blast_count=400000, blast_repeat=3),
}
CT_GENERATORS = {
    "connect": "shared/bench/udpflood.c tcp: socket()+connect() per connection attempt",
    "syn": "bench/synflood.c tcp: raw TCP SYNs via sendmmsg(), source ports 1024..65535",
}

# Targets (pyulogd / ulogd2) per configuration kind: (metric, comparison, bound)
TARGETS = {
    "json": [("lossless_rate", ">=", 1.0), ("cpu_us", "<=", 1.0)],
    "logemu": [("lossless_rate", ">=", 0.7)],
    "nfct": [("lossless_rate", ">=", 2.0)],
}
# What one event of the sweep is, per kind (for the tables).
UNIT = {"nfct": "connections"}
DAEMON_ORDER = ("ulogd2", "pyulogd")


def tree_digest(path):
    """Short digest of the .py files of a package tree (identifies the code benchmarked)."""
    h = hashlib.sha256()
    for root, dirs, files in sorted(os.walk(path)):
        dirs.sort()
        for f in sorted(files):
            if f.endswith(".py"):
                p = os.path.join(root, f)
                h.update(os.path.relpath(p, path).encode() + b"\0" + open(p, "rb").read())
    return h.hexdigest()[:12]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def count_lines(path, pat):
    """Lines containing ``pat`` (at most once per line) in a file; None if there is no file."""
    if not os.path.exists(path):
        return None
    n, rest = 0, b""
    with open(path, "rb") as f:
        while True:
            chunk = f.read(8 << 20)
            if not chunk:
                break
            chunk = rest + chunk
            cut = chunk.rfind(b"\n") + 1
            n += chunk[:cut].count(pat)
            rest = chunk[cut:]
    return n + (pat in rest)


# --------------------------------------------------------------------------- running

class Runner:
    def __init__(self, a):
        self.a = a
        self.seq = 0
        self.failures = []
        self.rows = []
        self.env = dict(os.environ)
        # Benchmark the pyulogd of *this* checkout even if another one is installed, and
        # (unless --no-snapshot) a copy taken at start, so that edits made to the tree while
        # the run goes on do not change the daemon half-way.
        src = os.path.join(a.repo, "src")
        if os.path.isdir(os.path.join(src, "pyulogd")):
            if not a.no_snapshot:
                snap = os.path.join(a.workdir, "snapshot")
                shutil.rmtree(snap, ignore_errors=True)
                shutil.copytree(os.path.join(src, "pyulogd"), os.path.join(snap, "pyulogd"),
                                ignore=shutil.ignore_patterns("__pycache__"))
                src = snap
            old = self.env.get("PYTHONPATH")
            self.env["PYTHONPATH"] = src + (os.pathsep + old if old else "")
            a.src_digest = tree_digest(os.path.join(src, "pyulogd"))

    def template(self, name):
        """The shared template without its comment lines.  throughput.py substitutes the
        placeholders in comments too, so a multi-line LOG1_EXTRA turned the comment
        `# placeholders: ... @LOG1_EXTRA@ (see ...)` into a bare `netlink_socket_buffer_maxsize=...`
        line before [global]: ulogd2 ignores it, pyulogd refuses the config.  Both daemons
        get the same cleaned config."""
        dst = os.path.join(self.a.workdir, "templates", name)
        if not os.path.exists(dst):
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            with open(os.path.join(self.a.confdir, name)) as f:
                lines = [l for l in f if not l.lstrip().startswith("#")]
            with open(dst, "w") as f:
                f.writelines(lines)
        return dst

    def wait_lab_free(self):
        """Another benchmark using the lab would be torn down by ours (and spoil both)."""
        deadline = time.time() + self.a.lab_wait
        warned = False
        while True:
            ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
            if "gbB" not in ns and "gbA" not in ns:
                return
            if time.time() > deadline:
                log("  ! lab namespaces gbA/gbB still exist: taking them over")
                return
            if not warned:
                log(f"  lab namespaces gbA/gbB in use (another benchmark?): "
                    f"waiting ≤ {self.a.lab_wait:.0f} s")
                warned = True
            time.sleep(2)

    def trial(self, daemon, cfg, kind, rate, count, keep=False, rep=0):
        """One throughput.py trial; returns its row (dict) or None."""
        a = self.a
        template, sets, _ = CONFIGS[cfg]
        mode = cfg_mode(cfg)
        cmd_daemon = a.ulogd_cmd if daemon == "ulogd2" else a.pyulogd_cmd
        if rate == "max":
            max_s = a.blast_max_seconds
        else:
            max_s = count / rate * 2 + 10
        size = f"{count // 1000}k" if count < 1000000 else f"{count / 1e6:g}M"
        label = f"{daemon}/{cfg}/{kind}-{size}"
        fd, tmp = tempfile.mkstemp(prefix="cmp-", suffix=".json", dir=a.workdir)
        os.close(fd)
        argv = [sys.executable, a.harness, "--daemon", cmd_daemon,
                "--template", self.template(template),
                "--count", str(count), "--rates", str(rate), "--repeat", "1",
                "--max-seconds", f"{max_s:.0f}", "--drain-timeout", str(a.drain_timeout),
                "--workdir", os.path.join(a.workdir, "trials"), "--label", label, "--json", tmp]
        if mode != "udp":
            argv += ["--mode", mode]
        if mode == "ct" and a.gen_build_dir:
            argv += ["--build-dir", a.gen_build_dir]
        for s in sets:
            argv += ["--set", s]
        if keep or mode == "ct":  # ct: the output is read once more below (DESTROY lines)
            argv.append("--keep")
        self.wait_lab_free()
        t0 = time.time()
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=self.env, start_new_session=True)
        timeout = max_s + a.drain_timeout + 90
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            # SIGINT first: throughput.py's finally: stops the daemon and tears the lab down
            os.killpg(p.pid, signal.SIGINT)
            try:
                out, _ = p.communicate(timeout=25)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                out, _ = p.communicate()
            out = (out or "") + f"\n[compare.py: trial killed after {timeout:.0f} s]"
        except KeyboardInterrupt:
            os.killpg(p.pid, signal.SIGINT)
            p.wait(30)
            raise
        row = None
        try:
            with open(tmp) as f:
                lines = [l for l in f if l.strip()]
            if lines:
                row = json.loads(lines[-1])
        finally:
            os.unlink(tmp)
        self.seq += 1
        dt = time.time() - t0
        if row is None:
            tail = " | ".join(l.strip() for l in (out or "").strip().splitlines()[-1:])
            # the trial directory is reused by the next trial: keep the daemon's last words now
            tdir = os.path.join(a.workdir, "trials", f"trial-{rate}-0")
            for name in ("daemon.stdout", "ulogd.log"):
                pth = os.path.join(tdir, name)
                if os.path.exists(pth):
                    last = [l.strip() for l in open(pth, errors="replace").readlines()[-3:] if l.strip()]
                    if last:
                        tail += f" | {name}: " + " / ".join(last)
            self.failures.append(dict(daemon=daemon, config=cfg, kind=kind, rate=rate, count=count,
                                      output=tail))
            log(f"  [{self.seq:3d}] {daemon:8s} {cfg:21s} {kind:5s} {rate!s:>7}/s x{count}: "
                f"FAILED ({dt:.0f} s): {tail}")
            return None
        if mode == "ct":
            # throughput.py counts the [NEW] lines (one per connection); the DESTROY events the
            # daemon handled in the same CPU window are worth knowing for the CPU per event.
            tdir = os.path.join(a.workdir, "trials", f"trial-{rate}-0")
            row["destroy_logged"] = count_lines(os.path.join(tdir, "out.log"), b"[DESTROY]")
            ev = (row.get("logged") or 0) + (row["destroy_logged"] or 0)
            row["cpu_us_per_ct_event"] = (round(1e6 * row["daemon_cpu_s"] / ev, 2)
                                          if ev and row.get("daemon_cpu_s") is not None else None)
            if not keep:
                shutil.rmtree(tdir, ignore_errors=True)
        row.update(cmp_run=a.run_id, cmp_daemon=daemon, cmp_config=cfg, cmp_kind=kind, cmp_seq=self.seq,
                   cmp_rep=rep, cmp_mode=mode)
        if mode == "ct":
            row["cmp_generator"] = a.ct_generator
            if a.ct_generator == "syn" and a.syn_batch:
                row["cmp_syn_batch"] = a.syn_batch
        with open(a.out, "a") as f:
            f.write(json.dumps(row) + "\n")
        self.rows.append(row)
        log(f"  [{self.seq:3d}] {daemon:8s} {cfg:21s} {kind:5s} {rate!s:>7}/s x{count}: "
            f"logged {row['logged']}/{row['counter']} loss {row['loss_pct']}% "
            f"cpu {row['cpu_us_per_event']} us/ev rss {(row.get('rss_peak_kb') or 0) / 1024:.1f} MB "
            f"nl_drops {row['netlink_drops']} ({dt:.0f} s)")
        return row

    def preflight(self, daemons):
        """A small trial per daemon (and per mode): fail early and clearly if one cannot log at all."""
        smokes = []
        modes = {cfg_mode(c) for c in self.a.configs_sel}
        if "udp" in modes:
            smokes.append(("json/default", 5000, "5000 packets at 5000/s, JSON"))
        if "ct" in modes:
            smokes.append(("nfct/default", 2000, "2000 connections at 2000/s, NFCT"))
        for (cfg, n, what), d in ((s, d) for s in smokes for d in daemons):
            log(f"preflight: {d} ({what})")
            r = self.trial(d, cfg, "smoke", n, n, keep=True)
            if r is None or not r.get("logged"):
                where = os.path.join(self.a.workdir, "trials", f"trial-{n}-0")
                msg = f"preflight failed: {d} logged nothing"
                for name in ("daemon.stdout", "ulogd.log"):
                    pth = os.path.join(where, name)
                    if os.path.exists(pth):
                        tail = open(pth, errors="replace").readlines()[-15:]
                        msg += f"\n--- {pth} (tail)\n" + "".join(tail)
                raise SystemExit(msg)
        # smoke rows are not part of the comparison
        self.rows = [r for r in self.rows if r["cmp_kind"] != "smoke"]

    def run(self, daemons):
        a = self.a
        m = a.matrix
        order = list(daemons)
        for cfg in a.configs_sel:
            log(f"== {cfg}")
            stopped = set()  # daemons that lost events in every trial at some rate
            broken = set()  # daemons that failed twice in a row in this configuration
            fails = defaultdict(int)

            def go(d, kind, rate, count, rep, cfg=cfg, broken=broken, fails=fails):
                if d in broken:
                    return None
                r = self.trial(d, cfg, kind, rate, count, rep=rep)
                fails[d] = 0 if r is not None else fails[d] + 1
                if fails[d] >= 2:
                    log(f"  {d}: two failed trials in a row: skipping it for the rest of {cfg}")
                    broken.add(d)
                return r

            for rate in m["rates"]:
                count = max(m["min_count"], int(rate * m["seconds"]))
                lost_all = defaultdict(lambda: True)
                for rep in range(m["repeat"]):
                    seq = order if (a.order == "abab" or rep % 2 == 0) else order[::-1]
                    for d in seq:
                        if d in stopped:
                            continue
                        r = go(d, "sweep", rate, count, rep)
                        if r is None or (r["loss_pct"] or 0) < a.stop_loss:
                            lost_all[d] = False
                for d in order:
                    if d not in stopped and lost_all[d] and not a.no_early_stop:
                        log(f"  {d}: lost ≥ {a.stop_loss}% in every trial at {rate}/s: "
                            "skipping its higher rates")
                        stopped.add(d)
                if len(stopped | broken) == len(order):
                    break
            for rep in range(m["blast_repeat"]):
                seq = order if (a.order == "abab" or rep % 2 == 0) else order[::-1]
                for d in seq:
                    go(d, "blast", "max", m["blast_count"], rep)


# --------------------------------------------------------------------------- analysis

def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def lossless_limit(sw, ok):
    """Highest swept rate R such that ok(trials at r) holds for every r <= R.
    -> (R or None, first losing (rate, worst loss %) or None)."""
    best = None
    for rate in sorted({r["rate"] for r in sw}):
        at = [r for r in sw if r["rate"] == rate]
        if ok(at):
            best = rate
        else:
            return best, (rate, max(r["loss_pct"] for r in at))
    return best, None


def achieved(r):
    """The rate the generator really sent at (it falls behind when the CPUs are busy)."""
    return r["generator"]["sent"] / r["send_s"] if r.get("send_s") else None


def achieved_limit(sw):
    """Highest *achieved* send rate of a lossless trial below the lowest achieved rate of any
    trial that lost events. -> dict like lossless_limit's."""
    lossy = [(achieved(r), r["loss_pct"]) for r in sw if r["loss_pct"] and achieved(r)]
    low = min(lossy) if lossy else None
    ok = [achieved(r) for r in sw
          if r["loss_pct"] == 0 and achieved(r) and (low is None or achieved(r) < low[0])]
    best = round(max(ok), -2) if ok else None
    return dict(rate=best, capped=bool(ok) and low is None,
                first_loss=(round(low[0], -2), low[1]) if low else None, achieved=True)


def every_trial(at):
    return all(r["loss_pct"] == 0 for r in at)


def majority(at):
    return statistics.median(r["loss_pct"] for r in at) == 0


def analyse(rows):
    """-> {cfg: {"metrics": {daemon: {...}}, "detail": [...]}}"""
    by = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r.get("cmp_kind") in ("sweep", "blast"):
            by[r["cmp_config"]][r["cmp_daemon"]].append(r)
    res = {}
    for cfg, per_d in by.items():
        out = {}
        sweep_rates = sorted({r["rate"] for rs in per_d.values() for r in rs if r["cmp_kind"] == "sweep"})
        top = max(sweep_rates) if sweep_rates else None
        for d, rs in per_d.items():
            sw = [r for r in rs if r["cmp_kind"] == "sweep"]
            blast = [r for r in rs if r["cmp_kind"] == "blast"]
            m = {}
            for key, ok in (("strict", every_trial), ("majority", majority)):
                best, first = lossless_limit(sw, ok)
                capped = best is not None and first is None and best == top
                m[key] = dict(rate=best, capped=capped, first_loss=first)
            m["achieved"] = achieved_limit(sw)
            m.update(
                blast_loss=med([r["loss_pct"] for r in blast]),
                blast_loss_range=(min(r["loss_pct"] for r in blast), max(r["loss_pct"] for r in blast))
                if blast else None,
                blast_n=len(blast),
                blast_lps99=med([r.get("logged_per_s_99") or r.get("logged_per_s") for r in blast]),
                blast_offered=med([r["generator"]["sent"] / r["send_s"] for r in blast if r.get("send_s")]),
                cpu_own=med([r["cpu_us_per_event"] for r in sw if r["loss_pct"] == 0]),
                rss_mb=max((r.get("rss_peak_kb") or 0) for r in rs) / 1024 if rs else None,
                trials=len(rs),
            )
            out[d] = m
        # CPU per event only over the fixed rates at which *every* trial of *both* daemons was
        # lossless: the cost per event falls as the rate rises (more packets per recv), so
        # medians over different sets of rates would favour the daemon that reached higher rates.
        common = [rate for rate in sweep_rates
                  if all(any(r["rate"] == rate and r["cmp_kind"] == "sweep" for r in rs) and
                         every_trial([r for r in rs if r["rate"] == rate and r["cmp_kind"] == "sweep"])
                         for rs in per_d.values())]
        for d, rs in per_d.items():
            vals = [r["cpu_us_per_event"] for r in rs if r["cmp_kind"] == "sweep" and r["rate"] in common]
            out[d].update(cpu_us=med(vals), cpu_us_n=len(vals), cpu_common_rates=common)
        # paired ratios: pyulogd trial / the ulogd2 trial of the same rate and repetition
        # (run back to back, so they share the machine's state of the moment)
        pairs = []
        if "ulogd2" in per_d and "pyulogd" in per_d:
            idx = defaultdict(dict)
            for d in ("ulogd2", "pyulogd"):
                for r in per_d[d]:
                    if r["cmp_kind"] == "sweep" and r["rate"] in common and "cmp_rep" in r:
                        idx[(r["rate"], r["cmp_rep"])][d] = r["cpu_us_per_event"]
            pairs = [v["pyulogd"] / v["ulogd2"] for v in idx.values()
                     if len(v) == 2 and v["ulogd2"] and v["pyulogd"] is not None]
        res[cfg] = dict(metrics=out, cpu_pair_ratio=med(pairs), cpu_pairs=len(pairs),
                        cpu_pair_range=(min(pairs), max(pairs)) if pairs else None, detail=[])
        for rate in sweep_rates + ["max"]:
            line = {"rate": rate}
            for d, rs in per_d.items():
                line[d] = [r for r in rs if r["rate"] == rate and r["cmp_kind"] in ("sweep", "blast")]
            res[cfg]["detail"].append(line)
        res[cfg].update(loss_figures(per_d, sweep_rates))
    return res


LOW_LOSS = 1.0  # % : a trial counts for the "all trials" CPU figures below this loss


def loss_figures(per_d, sweep_rates):
    """Figures for when a daemon loses events at every rate (ulogd2's NFCT with the default
    buffer): the loss curve (median loss per offered rate), loss compared at equal offered rates,
    and CPU per event over every sweep trial that lost < LOW_LOSS % (paired by rate and repetition)."""
    curve = []
    for rate in sweep_rates + ["max"]:
        kind = "blast" if rate == "max" else "sweep"
        pt = {"rate": rate}
        for d, rs in per_d.items():
            at = [r for r in rs if r["rate"] == rate and r["cmp_kind"] == kind]
            if at:
                pt[d] = dict(loss=med([r["loss_pct"] for r in at]),
                             lo=min(r["loss_pct"] for r in at), hi=max(r["loss_pct"] for r in at),
                             sent=med([achieved(r) for r in at]), n=len(at),
                             cpu=med([r["cpu_us_per_event"] for r in at]),
                             cpu_ev=med([r.get("cpu_us_per_ct_event") for r in at]),
                             drops=med([r.get("netlink_drops") for r in at]))
        curve.append(pt)
    # loss at equal offered rates (sweep only): how many rates pyulogd lost less / as much / more
    cmp_ = dict(less=0, equal=0, more=0)
    for pt in curve:
        if pt["rate"] != "max" and "ulogd2" in pt and "pyulogd" in pt:
            u, p = pt["ulogd2"]["loss"], pt["pyulogd"]["loss"]
            cmp_["less" if p < u else "equal" if p == u else "more"] += 1
    idx = defaultdict(dict)
    for d, rs in per_d.items():
        for r in rs:
            if r["cmp_kind"] == "sweep" and "cmp_rep" in r and (r["loss_pct"] or 0) < LOW_LOSS:
                idx[(r["rate"], r["cmp_rep"])][d] = r
    pairs = [v["pyulogd"]["cpu_us_per_event"] / v["ulogd2"]["cpu_us_per_event"] for v in idx.values()
             if len(v) == 2 and v["ulogd2"].get("cpu_us_per_event") and v["pyulogd"].get("cpu_us_per_event")]
    own = {}
    for d, rs in per_d.items():
        ok = [r for r in rs if r["cmp_kind"] == "sweep" and (r["loss_pct"] or 0) < LOW_LOSS]
        own[d] = dict(cpu=med([r["cpu_us_per_event"] for r in ok]),
                      cpu_ev=med([r.get("cpu_us_per_ct_event") for r in ok]), n=len(ok))
    return dict(curve=curve, loss_cmp=cmp_, cpu_low_pairs=pairs, cpu_low=own)


def fmt_rate(lim):
    if lim["rate"] is None:
        s = "none tested"
    else:
        s = ("≥ " if lim["capped"] else "") + f"{lim['rate']:,.0f}"
    if lim["first_loss"] and lim.get("achieved"):
        s += f" (lost {lim['first_loss'][1]:.2f}% at {lim['first_loss'][0]:,.0f})"
    elif lim["first_loss"]:
        s += f" (loss ≤ {lim['first_loss'][1]:.2f}% at {lim['first_loss'][0]:,})"
    return s


def ratio(py, ul):
    if py is None or ul is None or ul == 0:
        return None
    return py / ul


def rate_ratio(lp, lu):
    """Lossless-rate ratio with bounds: (text, lo, hi), the true ratio being in [lo, hi]
    (a daemon lossless at the top of the sweep may go higher)."""
    p, u = lp["rate"] or 0, lu["rate"] or 0
    if u == 0 and p == 0:
        return "n/a (neither lossless at the lowest rate)", None, None
    if u == 0:
        return "∞ (ulogd2 lossless at no tested rate)", float("inf"), float("inf")
    r = p / u
    if lp["capped"] and lu["capped"]:
        return f"≥ {r:.2f}? (both at the top of the sweep)", r, float("inf")
    if lu["capped"]:
        return f"≤ {r:.2f} (ulogd2 at the top of the sweep)", 0.0, r
    if lp["capped"]:
        return f"≥ {r:.2f} (pyulogd at the top of the sweep)", r, float("inf")
    return f"{r:.2f}", r, r


def verdict(metric, op, bound, res_cfg, kind=None):
    ms = res_cfg["metrics"]
    mp, mu = ms["pyulogd"], ms["ulogd2"]
    if metric == "lossless_rate":
        txt, lo, hi = rate_ratio(mp["achieved"], mu["achieved"])
        maj, _, _ = rate_ratio(mp["majority"], mu["majority"])
        strict, _, _ = rate_ratio(mp["strict"], mu["strict"])
        txt = f"{txt} [nominal rates: median trial {maj}, every trial {strict}]"
        if kind == "nfct" and not mu["achieved"]["rate"]:
            # No lossless rate for ulogd2 at all: a ratio against "nothing" is no measurement.
            c = res_cfg.get("loss_cmp") or {}
            n = sum(c.values())
            return ("NOT MEASURABLE: ulogd2 lost events at every tested rate", txt +
                    f"; instead, loss at equal offered rates: pyulogd lost less at {c.get('less', 0)}, "
                    f"as much at {c.get('equal', 0)}, more at {c.get('more', 0)} of {n} rates "
                    "(loss curve above)")
        if lo is None:
            return "n/a", txt
        if lo >= bound:
            return "PASS", txt
        if hi < bound:
            return "FAIL", txt
        return "INCONCLUSIVE (extend the sweep)", txt
    r = res_cfg["cpu_pair_ratio"]
    how = f"paired median of {res_cfg['cpu_pairs']}"
    if r is None:
        r, how = ratio(mp["cpu_us"], mu["cpu_us"]), "ratio of medians"
    if r is None:
        return "n/a (no rate lossless for both)", "-"
    ok = r <= bound if op == "<=" else r >= bound
    return ("PASS" if ok else "FAIL"), f"{r:.2f} ({how})"


def f1(v, nd=1, unit=""):
    return "-" if v is None else f"{v:,.{nd}f}{unit}"


def _r(v, nd=2):
    return "-" if v is None else f"{v:.{nd}f}"


def loss_cell(m):
    if m["blast_loss"] is None:
        return "-"
    lo, hi = m["blast_loss_range"]
    rng = f" ({lo:.1f}–{hi:.1f}, n={m['blast_n']})" if m["blast_n"] > 1 else ""
    return f"{m['blast_loss']:.1f}{rng}"


def ct_tables(rc, mu, mp):
    """The extra NFCT rows and the loss curve (ulogd2 may lose events at every rate)."""
    L = []
    lo = rc["cpu_low"]
    pr = rc["cpu_low_pairs"]
    pair_txt = (f"{med(pr):.2f} (paired, n={len(pr)}, {min(pr):.2f}–{max(pr):.2f})" if pr else "-")
    u, p = lo.get("ulogd2", {}), lo.get("pyulogd", {})
    L.append(f"| CPU µs/connection, median over every sweep trial that lost < {LOW_LOSS:g} % "
             f"| {f1(u.get('cpu'))} (n={u.get('n', 0)}) | {f1(p.get('cpu'))} (n={p.get('n', 0)}) | {pair_txt} |")
    L.append(f"| CPU µs per conntrack event (NEW + DESTROY written), same trials | {f1(u.get('cpu_ev'))} "
             f"| {f1(p.get('cpu_ev'))} | {_r(ratio(p.get('cpu_ev'), u.get('cpu_ev')))} |")
    L.append("")
    L.append("Loss curve (median loss % of the trials at each offered rate, range, connections/s really "
             "sent, netlink socket drops, CPU µs per connection):")
    L.append("")
    L.append("| offered conn/s | ulogd2 sent/s | ulogd2 loss % | ulogd2 nl drops | ulogd2 µs/conn "
             "| pyulogd sent/s | pyulogd loss % | pyulogd nl drops | pyulogd µs/conn |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    for pt in rc["curve"]:
        cells = []
        for d in ("ulogd2", "pyulogd"):
            x = pt.get(d)
            if not x:
                cells += ["-"] * 4
                continue
            rng = f" ({x['lo']:.2f}–{x['hi']:.2f})" if x["n"] > 1 else ""
            cells += [f1(x["sent"], 0), f"{x['loss']:.2f}{rng}", f1(x["drops"], 0), f1(x["cpu"])]
        L.append(f"| {pt['rate']} | " + " | ".join(cells) + " |")
    L.append("")
    c = rc["loss_cmp"]
    if not sum(c.values()):  # a single-daemon run
        return L
    L.append(f"At equal offered rates (sweep), pyulogd's median loss was lower at {c['less']}, equal at "
             f"{c['equal']} and higher at {c['more']} of {sum(c.values())} rates.")
    L.append("")
    return L


def report(rows, meta, show_detail=True):
    res = analyse(rows)
    L = []
    if meta:
        L.append(f"Run `{meta.get('run_id', '?')}`: {meta.get('date', '')}; {meta.get('machine', '')}; "
                 f"preset {meta.get('preset', '?')} ({meta.get('wall_s', 0) / 60:.0f} min); "
                 f"ulogd2 `{meta.get('ulogd_cmd', '')}`, pyulogd `{meta.get('pyulogd_cmd', '')}` "
                 f"(rev {meta.get('pyulogd_rev', '')}, src sha256 {meta.get('pyulogd_src_sha256')}); "
                 f"load average at start {' '.join(meta.get('loadavg_start', []))}.")
        if meta.get("aa"):
            L.append("")
            L.append("**A/A calibration run: the `pyulogd` column is a second ulogd2** (same binary, same "
                     "config): its ratios show how far noise alone moves each figure.")
        L.append("")
    # conntrack load generator (rows and meta files from before --ct-generator: connect)
    gens = sorted({r.get("cmp_generator", "connect") for r in rows
                   if r.get("cmp_mode") == "ct" and r.get("cmp_kind") != "smoke"})
    if gens:
        sha = (meta or {}).get("ct_generator_src_sha256")
        L.append("Conntrack load generator: " + "; ".join(
            f"**{g}** ({CT_GENERATORS.get(g, '?')}" + (f", src sha256 {sha}" if sha and g == "syn" else "")
            + (f", {meta['ct_generator_batch']} SYNs per sendmmsg()" if g == "syn" and (meta or {}).get(
                "ct_generator_batch") else "") + ")"
            for g in gens) + ".")
        L.append("")
    verdicts = []
    for cfg in [c for c in CONFIGS if c in res] + [c for c in res if c not in CONFIGS]:
        ms = res[cfg]["metrics"]
        mu, mp = ms.get("ulogd2"), ms.get("pyulogd")
        tpl, sets, kind = CONFIGS.get(cfg, ("?", [], None))
        L.append(f"### {cfg}  (`{tpl}` {' '.join(sets)})")
        L.append("")
        unit = UNIT.get(kind, "events")
        if not mu or not mp:
            L.append(f"only {', '.join(ms)} has results")
            L.append("")
            if kind == "nfct":  # a single-daemon run (calibration): its loss curve and CPU
                L.append("| metric | ulogd2 | pyulogd | pyulogd/ulogd2 |")
                L.append("|---|---|---|---|")
                cell = {d: fmt_rate(m["achieved"]) if m else "-" for d, m in (("u", mu), ("p", mp))}
                L.append(f"| **highest lossless rate, {unit}/s, as sent** | {cell['u']} | {cell['p']} | |")
                L.extend(ct_tables(res[cfg], mu, mp))
            continue
        common = mu["cpu_common_rates"]
        ev = "connection" if kind == "nfct" else "event"
        L.append("| metric | ulogd2 | pyulogd | pyulogd/ulogd2 |")
        L.append("|---|---|---|---|")
        L.append(f"| **highest lossless rate, {unit}/s, as sent** (fastest lossless trial below the slowest "
                 f"lossy one) | {fmt_rate(mu['achieved'])} | {fmt_rate(mp['achieved'])} "
                 f"| {rate_ratio(mp['achieved'], mu['achieved'])[0]} |")
        L.append(f"| highest lossless offered rate, {unit}/s (median trial lossless at it and below) "
                 f"| {fmt_rate(mu['majority'])} | {fmt_rate(mp['majority'])} "
                 f"| {rate_ratio(mp['majority'], mu['majority'])[0]} |")
        L.append(f"| highest lossless offered rate, {unit}/s (every trial lossless) "
                 f"| {fmt_rate(mu['strict'])} | {fmt_rate(mp['strict'])} "
                 f"| {rate_ratio(mp['strict'], mu['strict'])[0]} |")
        L.append(f"| loss % at max blast, median (range) | {loss_cell(mu)} | {loss_cell(mp)} | "
                 f"{_r(ratio(mp['blast_loss'], mu['blast_loss']))} |")
        pr = res[cfg]["cpu_pair_ratio"]
        prr = res[cfg]["cpu_pair_range"]
        if pr is not None:
            pair_txt = f"{pr:.2f} (paired, n={res[cfg]['cpu_pairs']}, {prr[0]:.2f}–{prr[1]:.2f})"
        else:
            pair_txt = _r(ratio(mp["cpu_us"], mu["cpu_us"]))
        rates_txt = ", ".join(f"{r // 1000}k" for r in common) or "none"
        L.append(f"| CPU µs/{ev}, median over the rates lossless for both ({rates_txt}) "
                 f"| {f1(mu['cpu_us'])} (n={mu['cpu_us_n']}) | {f1(mp['cpu_us'])} (n={mp['cpu_us_n']}) "
                 f"| {pair_txt} |")
        L.append(f"| CPU µs/{ev}, median over each daemon's own lossless sweep trials | {f1(mu['cpu_own'])} "
                 f"| {f1(mp['cpu_own'])} | {_r(ratio(mp['cpu_own'], mu['cpu_own']))} |")
        L.append(f"| peak RSS MB (max over trials) | {f1(mu['rss_mb'])} | {f1(mp['rss_mb'])} | "
                 f"{_r(ratio(mp['rss_mb'], mu['rss_mb']), 1)} |")
        L.append(f"| logged/s at max blast (99 % point), median | {f1(mu['blast_lps99'], 0)} "
                 f"| {f1(mp['blast_lps99'], 0)} | {_r(ratio(mp['blast_lps99'], mu['blast_lps99']))} |")
        L.append(f"| generator rate during the blast ({'conn' if kind == 'nfct' else 'pkt'}/s), median "
                 f"| {f1(mu['blast_offered'], 0)} "
                 f"| {f1(mp['blast_offered'], 0)} | |")
        if kind == "nfct":
            L.extend(ct_tables(res[cfg], mu, mp))
        else:
            L.append("")
        for metric, op, bound in TARGETS.get(kind, []):
            v, txt = verdict(metric, op, bound, res[cfg], kind)
            name = "lossless rate" if metric == "lossless_rate" else "CPU µs/event"
            verdicts.append((cfg, f"{name} pyulogd/ulogd2 {op} {bound}", txt, v))
        if show_detail:
            L.append("<details><summary>per rate: loss % and CPU µs/event of each trial, in run order"
                     "</summary>")
            L.append("")
            L.append("| offered/s | packets | ulogd2 sent k/s | pyulogd sent k/s | ulogd2 loss % "
                     "| pyulogd loss % | ulogd2 µs/ev | pyulogd µs/ev |")
            L.append("|---|---|---|---|---|---|---|---|")
            for line in res[cfg]["detail"]:
                u, p = line.get("ulogd2", []), line.get("pyulogd", [])
                cnt = (u or p)[0]["count"] if (u or p) else "-"

                def col(rs, key):
                    vals = ("-" if r.get(key) is None else f"{r[key]:.2f}" for r in rs)
                    return ", ".join(vals) or "(skipped)"

                def ach(rs):
                    return ", ".join(f"{achieved(r) / 1000:.0f}" if achieved(r) else "-" for r in rs) or "-"
                L.append(f"| {line['rate']} | {cnt} | {ach(u)} | {ach(p)} | {col(u, 'loss_pct')} "
                         f"| {col(p, 'loss_pct')} | {col(u, 'cpu_us_per_event')} | {col(p, 'cpu_us_per_event')} |")
            L.append("")
            L.append("</details>")
            L.append("")
    if verdicts:
        L.append("### Targets")
        L.append("")
        L.append("| configuration | target | measured | verdict |")
        L.append("|---|---|---|---|")
        for cfg, t, txt, v in verdicts:
            L.append(f"| {cfg} | {t} | {txt} | **{v}** |")
        L.append("")
        L.append("Lossless-rate verdicts use the rates the generator really achieved (it falls behind the "
                 "requested rate when the two vCPUs are busy: a nominal 150k/s trial may send at 45k/s); "
                 "the limits on the nominal sweep rates are in brackets. CPU verdicts use the median of the "
                 "paired ratios (each pyulogd trial against the ulogd2 trial run next to it at the same rate).")
        L.append("")
    return "\n".join(L)


# --------------------------------------------------------------------------- main

def machine_desc():
    try:
        model = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor()
    mem = next((int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0) / 2**20
    return f"{os.cpu_count()} vCPU {model}, {mem:.0f} GiB, kernel {platform.release()}"


def git_rev(repo):
    try:
        rev = subprocess.run(["git", "-C", repo, "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--", "src"], capture_output=True,
                               text=True).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "?"


def build_syn_generator(a):
    """Compile bench/synflood.c as <workdir>/synflood-bin/udpflood, newer than the shared
    udpflood.c so that throughput.py (given --build-dir) runs it instead of rebuilding its own."""
    src = os.path.join(HERE, "synflood.c")
    bdir = os.path.join(a.workdir, "synflood-bin")
    exe = os.path.join(bdir, "udpflood")
    os.makedirs(bdir, exist_ok=True)
    p = subprocess.run(["gcc", "-O2", "-Wall", "-o", exe, src], capture_output=True, text=True)
    if p.returncode:
        sys.exit(f"compare.py: cannot compile {src}:\n{p.stderr}")
    shared_src = os.path.join(os.path.dirname(a.harness), "udpflood.c")
    t = max(time.time(), os.path.getmtime(shared_src) + 1 if os.path.exists(shared_src) else 0)
    os.utime(exe, (t, t))
    a.gen_src_sha256 = hashlib.sha256(open(src, "rb").read()).hexdigest()[:12]
    return bdir


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_const", dest="preset", const="quick",
                   help="~5 min: 1 trial per point")
    g.add_argument("--full", action="store_const", dest="preset", const="full", help="~60 min")
    ap.set_defaults(preset="default")
    ap.add_argument("--repo", default=REPO, help="pyulogd checkout (default: the one holding this script)")
    ap.add_argument("--harness", help="throughput.py (default: <repo>/../shared/bench/throughput.py)")
    ap.add_argument("--ulogd-cmd", default="/usr/sbin/ulogd -c {conf}")
    ap.add_argument("--pyulogd-cmd", default=f"{sys.executable} -m pyulogd -c {{conf}}")
    ap.add_argument("--mode", choices=["udp", "ct"], default="udp",
                    help="udp: the NFLOG packet configurations (default); ct: conntrack events, "
                         "NFCT->IP2STR->PRINTFLOW->LOGEMU under TCP connection floods (its own presets)")
    ap.add_argument("--ct-generator", choices=list(CT_GENERATORS), default="connect",
                    help="--mode ct load: connect = shared udpflood.c, one socket()+connect() per "
                         "attempt (default; ≈ 25-40k/s); syn = bench/synflood.c, raw SYNs with sendmmsg() "
                         "(≈ 65-70k/s with a daemon; own presets)")
    ap.add_argument("--syn-batch", type=int,
                    help="--ct-generator syn: SYNs per sendmmsg() (default: rate/2000 clamped to 1..64, "
                         "64 for max blasts; 1 = no bursts, like connect)")
    ap.add_argument("--configs", help=f"comma list out of {', '.join(CONFIGS)} "
                    f"(default: {', '.join(MODE_CONFIGS['udp'])}; with --mode ct: {', '.join(MODE_CONFIGS['ct'])})")
    ap.add_argument("--daemons", default="ulogd2,pyulogd", help="comma list (order = order within a pair)")
    ap.add_argument("--rates", help="override the preset's sweep rates (comma list)")
    ap.add_argument("--repeat", type=int, help="override trials per sweep point")
    ap.add_argument("--seconds", type=float, help="override: a sweep point lasts this long ...")
    ap.add_argument("--min-count", type=int, help="override: ... but sends at least this many packets")
    ap.add_argument("--count", type=int,
                    help="every trial (sweep point and blast) sends exactly this many packets/connections "
                         "(= --seconds 0 --min-count N --blast-count N)")
    ap.add_argument("--blast-count", type=int, help="override packets per max blast")
    ap.add_argument("--blast-repeat", type=int, help="override max blasts per daemon")
    ap.add_argument("--order", choices=["abab", "abba"], default="abab",
                    help="abab: ulogd2 first in every pair; abba: alternate who goes first")
    ap.add_argument("--stop-loss", type=float,
                    help="stop sweeping a daemon once every trial at a rate lost >= this %% (default 1; "
                         "--mode ct: 50, so that the loss curves of both daemons cover every rate)")
    ap.add_argument("--no-early-stop", action="store_true", help="sweep every rate for both daemons")
    ap.add_argument("--drain-timeout", type=float, default=60, help="per trial (throughput.py)")
    ap.add_argument("--blast-max-seconds", type=float, default=60, help="generator bound of a blast")
    ap.add_argument("--lab-wait", type=float, default=120, help="wait this long for a busy lab")
    ap.add_argument("--no-preflight", action="store_true")
    ap.add_argument("--no-snapshot", action="store_true",
                    help="run <repo>/src live instead of a copy taken at start")
    ap.add_argument("--aa", action="store_true",
                    help="A/A noise calibration: run ulogd2 in the pyulogd slot too")
    ap.add_argument("--workdir", default="/tmp/gbbench-compare")
    ap.add_argument("--out", help="results JSONL (default bench/results/compare-<date>.jsonl)")
    ap.add_argument("--report", nargs="+", metavar="JSONL", help="only print the tables of past results")
    ap.add_argument("--no-detail", action="store_true", help="leave out the per-rate tables")
    a = ap.parse_args()

    if a.report:
        rows = [json.loads(l) for p in a.report for l in open(p) if l.strip()]
        meta = None
        mp = os.path.splitext(a.report[-1])[0] + ".meta.json"
        if os.path.exists(mp):
            meta = json.load(open(mp))
        print(report(rows, meta, not a.no_detail))
        return

    a.repo = os.path.abspath(a.repo)
    a.harness = os.path.abspath(a.harness or os.path.join(a.repo, "..", "shared", "bench", "throughput.py"))
    if not os.path.isfile(a.harness):
        sys.exit(f"compare.py: benchmark harness not found: {a.harness}\n"
                 "  (expected the shared bench next to the repo: <repo>/../shared/bench/throughput.py; "
                 "give its path with --harness)")
    a.confdir = os.path.join(os.path.dirname(a.harness), "configs")
    if os.geteuid():
        sys.exit("compare.py: needs root (network namespaces, nftables)")
    a.configs_sel = [c.strip() for c in a.configs.split(",")] if a.configs else list(MODE_CONFIGS[a.mode])
    bad = [c for c in a.configs_sel if c not in CONFIGS]
    if bad:
        sys.exit(f"compare.py: unknown configuration(s) {bad}; choose from {list(CONFIGS)}")
    daemons = [d.strip() for d in a.daemons.split(",")]
    if any(d not in DAEMON_ORDER for d in daemons):
        sys.exit(f"compare.py: --daemons takes {DAEMON_ORDER}")
    if a.stop_loss is None:
        a.stop_loss = 50.0 if a.mode == "ct" else 1.0
    if a.mode == "ct":
        m = dict((PRESETS_CT_SYN if a.ct_generator == "syn" else PRESETS_CT)[a.preset])
    else:
        m = dict(PRESETS[a.preset])
    if a.count is not None:
        m.update(seconds=0.0, min_count=a.count, blast_count=a.count)
    if a.rates:
        m["rates"] = [int(float(x)) for x in a.rates.split(",")]
    for k in ("repeat", "seconds", "min_count", "blast_count", "blast_repeat"):
        if getattr(a, k) is not None:
            m[k] = getattr(a, k)
    a.matrix = m
    a.run_id = time.strftime("%Y%m%dT%H%M%S")
    a.gen_build_dir = a.gen_src_sha256 = None
    has_ct = any(cfg_mode(c) == "ct" for c in a.configs_sel)
    if a.ct_generator == "syn" and has_ct:
        a.gen_build_dir = build_syn_generator(a)
        if a.syn_batch:
            os.environ["SYNFLOOD_BATCH"] = str(a.syn_batch)  # Runner copies os.environ
    if a.aa:
        a.pyulogd_cmd = a.ulogd_cmd
    name = ("aa-" if a.aa else "compare-") + a.run_id
    a.out = os.path.abspath(a.out or os.path.join(HERE, "results", f"{name}.jsonl"))
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    os.makedirs(os.path.join(a.workdir, "trials"), exist_ok=True)

    meta = dict(run_id=a.run_id, date=time.strftime("%Y-%m-%d %H:%M %Z"), machine=machine_desc(),
                preset=a.preset, mode=a.mode, matrix=m, configs=a.configs_sel, order=a.order,
                ulogd_cmd=a.ulogd_cmd, pyulogd_cmd=a.pyulogd_cmd, pyulogd_rev=git_rev(a.repo),
                harness=a.harness, aa=a.aa, loadavg_start=open("/proc/loadavg").read().split()[:3])
    if has_ct:
        meta.update(ct_generator=a.ct_generator, ct_generator_desc=CT_GENERATORS[a.ct_generator],
                    ct_generator_build_dir=a.gen_build_dir, ct_generator_src_sha256=a.gen_src_sha256,
                    ct_generator_batch=a.syn_batch if a.ct_generator == "syn" else None)
    n_sweep = len(m["rates"]) * m["repeat"] + m["blast_repeat"]
    gen_rate = (100000 if a.ct_generator == "syn" else 30000) if a.mode == "ct" else 150000
    est = sum(max(m["min_count"], r * m["seconds"]) / r + 5 for r in m["rates"]) * m["repeat"] \
        + m["blast_repeat"] * (m["blast_count"] / gen_rate + 6)
    gen_txt = f"; ct generator: {a.ct_generator}" if has_ct else ""
    log(f"compare.py: preset {a.preset}{gen_txt}: {len(a.configs_sel)} configs x {len(daemons)} daemons x "
        f"≤{n_sweep} trials; rates {m['rates']}; ≈{est * len(a.configs_sel) * len(daemons) / 60:.0f} min "
        f"(more if a daemon drains slowly)\n  results: {a.out}")
    a.src_digest = None
    r = Runner(a)
    meta["pyulogd_src_sha256"] = a.src_digest
    interrupted = False
    t0 = time.time()

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)  # also when started in the background (SIG_IGN inherited)
    try:
        if not a.no_preflight:
            r.preflight(daemons)
        r.run(daemons)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: tables from the trials so far")
    meta.update(wall_s=round(time.time() - t0), failures=r.failures, interrupted=interrupted,
                loadavg_end=open("/proc/loadavg").read().split()[:3])
    with open(os.path.splitext(a.out)[0] + ".meta.json", "w") as f:
        json.dump(meta, f, indent=1)
    text = report(r.rows, meta, True)
    if r.failures:
        text += f"\n{len(r.failures)} trial(s) failed: " + "; ".join(
            f"{x['daemon']} {x['config']} {x['rate']}: {x['output'][:200]}" for x in r.failures) + "\n"
    with open(os.path.splitext(a.out)[0] + ".md", "w") as f:
        f.write(text + "\n")
    print(text)
    log(f"wall {meta['wall_s'] / 60:.1f} min; results {a.out} (+ .meta.json, .md)")


if __name__ == "__main__":
    main()
