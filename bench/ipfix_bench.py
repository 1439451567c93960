#!/usr/bin/env python3
"""IPFIXIN against nfcapd on the same replayed Open vSwitch export (issue 16, item 8).

    PYTHONPATH=src python3 bench/ipfix_bench.py [--records 300000] [--rates 20000,50000,100000,0]
                                                [--targets json,null,nfcapd] [--out bench/results/ipfix]

The capture: Open vSwitch 3.1's real templates and records (tests/vectors/ipfix/ovs-bridge:
88 templates, per-bridge sampling, one ~300-byte record per message, as Open vSwitch sends
them), the data messages cycled to ``--records`` messages with the sequence numbers
rewritten to count on (so no receiver sees a gap), sent from one UDP socket to 127.0.0.1.
Each rate is a fixed number of messages per second (0: as fast as the sender goes); each
point sends ``--records`` messages at least, or 3 seconds' worth, whichever is more.

Receivers, one at a time, each started fresh for every point, with the same 4 MiB socket
receive buffer:

* ``json``: ``python -m pyulogd`` with IPFIXIN -> IP2STR -> JSON to a file (``ipfix.extra``
  and all);
* ``null``: IPFIXIN -> NULL (pyulogd's output that discards every record; a minimal one is
  registered here when the tree has none), so the decoding alone (``ipfix.extra`` not built,
  as no output reads it);
* ``nfcapd``: nfdump 1.7.1's collector, writing its binary files.

Per point: records sent, records the receiver counted (pyulogd's ``records`` counter at exit;
nfcapd's "Flows:" in its log), loss, the receiver's CPU while it received (utime + stime from
/proc/PID/stat, from when it had started and gone quiet to when it has read everything and
gone quiet again: start-up is not counted), CPU microseconds per record, peak RSS (VmHWM),
and the sender's rate.
Results go to ``--out``.jsonl and a Markdown table (``--out``.md); the machine's load average
before the run is in both, since the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CAPTURE = ROOT / "tests" / "vectors" / "ipfix" / "ovs-bridge" / "ovs-bridge.hexlog"
BUFFER = 4 << 20
TICK = os.sysconf("SC_CLK_TCK")


def corpus(records: int) -> tuple[list[bytes], list[bytes]]:
    """(template and options messages, ``records`` data messages with running sequence numbers)."""
    msgs = [bytes.fromhex(line.split()[3]) for line in CAPTURE.read_text().splitlines()]
    setup = [m for m in msgs if struct.unpack_from("!H", m, 16)[0] in (2, 3) or struct.unpack_from("!I", m, 12)[0] == 0]
    data = [m for m in msgs if m not in setup]
    out = []
    for i in range(records):
        m = bytearray(data[i % len(data)])
        struct.pack_into("!I", m, 8, 1 + i)  # one counter, one record per message: Open vSwitch's way
        out.append(bytes(m))
    return setup, out


def send(port: int, setup: list[bytes], data: list[bytes], rate: int) -> float:
    """Send everything; returns the rate achieved (messages/s)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER)
    dst = ("127.0.0.1", port)
    for m in setup:
        s.sendto(m, dst)
    time.sleep(0.2)  # the templates first, as an exporter that has just started
    sendto = s.sendto
    t0 = time.monotonic()
    if rate <= 0:
        for m in data:
            sendto(m, dst)
    else:
        batch = max(1, rate // 1000)  # paced every millisecond
        for i in range(0, len(data), batch):
            due = t0 + i / rate
            while time.monotonic() < due:
                pass
            for m in data[i : i + batch]:
                sendto(m, dst)
    dt = time.monotonic() - t0
    s.close()
    return len(data) / dt if dt > 0 else 0.0


def proc_stats(pid: int) -> tuple[float, int]:
    """(CPU seconds, peak RSS in KiB) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICK
    hwm = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
    return cpu, hwm


def wait_quiet(pid: int, limit: float = 60.0) -> None:
    """Until the receiver has used no CPU for half a second (it has read what was sent)."""
    end = time.monotonic() + limit
    last = proc_stats(pid)[0]
    quiet_since = time.monotonic()
    while time.monotonic() < end:
        time.sleep(0.1)
        now = proc_stats(pid)[0]
        if now != last:
            last, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= 0.5:
            return


def pyulogd_conf(d: Path, sink: str) -> Path:
    # json-noextra: IPFIXIN's extra=0 (no ipfix.extra built or written)
    stack = "f1:IPFIXIN,ip2str1:IP2STR,json1:JSON" if sink.startswith("json") else "f1:IPFIXIN,null1:NULL"
    extra = "extra=0\n" if sink == "json-noextra" else ""
    conf = d / "ulogd.conf"
    conf.write_text(f"""[global]
logfile="{d}/pyulogd.log"
loglevel=3
stack={stack}

[f1]
port=0
socket_buffer_size={BUFFER}
{extra}
[json1]
file="{d}/records.json"
""")
    return conf


def run_pyulogd(sink: str, setup: list[bytes], data: list[bytes], rate: int, src: str | None = None) -> dict[str, Any]:
    """One point of pyulogd; ``src``: the source tree to run (another revision's ``src``),
    else this process's."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = src + os.pathsep + str(ROOT)
    with tempfile.TemporaryDirectory(prefix="pyu-ipfixbench-") as tmp:
        d = Path(tmp)
        conf = pyulogd_conf(d, sink)
        p = subprocess.Popen([sys.executable, __file__, "--daemon", str(conf)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, env=env)  # fmt: skip
        log = d / "pyulogd.log"
        port = 0
        end = time.monotonic() + 20
        while not port and time.monotonic() < end and p.poll() is None:
            text = log.read_text() if log.exists() else ""
            if "listening on udp" in text:
                port = int(text.split("listening on udp 127.0.0.1 port ")[1].split()[0])
            time.sleep(0.05)
        if not port:
            p.kill()
            raise SystemExit(f"pyulogd did not start: {p.stderr.read().decode() if p.stderr else ''}")
        wait_quiet(p.pid)  # start-up done: its CPU is not the records'
        cpu0, _ = proc_stats(p.pid)
        achieved = send(port, setup, data, rate)
        wait_quiet(p.pid)
        cpu, hwm = proc_stats(p.pid)
        cpu -= cpu0
        p.send_signal(signal.SIGTERM)
        p.wait(30)
        text = log.read_text()
        counters = dict(kv.split("=") for kv in text.split("counters at exit: ")[-1].splitlines()[0].split(", ")
                        if "=" in kv) if "counters at exit: " in text else {}  # fmt: skip
        got = int(counters.get("ipfixin.f1.records", 0))
        path = d / "records.json"
        lines = sum(1 for _ in path.open()) if sink.startswith("json") and path.exists() else got
        return {"records": min(got, lines), "cpu": cpu, "rss_kib": hwm, "sent_rate": achieved, "counters": counters}


def run_nfcapd(setup: list[bytes], data: list[bytes], rate: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="pyu-ipfixbench-") as tmp:
        d = Path(tmp)
        (d / "flows").mkdir()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        log = (d / "nfcapd.log").open("wb")
        p = subprocess.Popen(["nfcapd", "-b", "127.0.0.1", "-p", str(port), "-w", str(d / "flows"), "-t", "3600",
                              "-B", str(BUFFER)], stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        end = time.monotonic() + 20
        while "Startup" not in (d / "nfcapd.log").read_text() and time.monotonic() < end:
            time.sleep(0.05)
        wait_quiet(p.pid)
        cpu0, _ = proc_stats(p.pid)
        achieved = send(port, setup, data, rate)
        wait_quiet(p.pid)
        cpu, hwm = proc_stats(p.pid)
        cpu -= cpu0
        p.send_signal(signal.SIGTERM)
        p.wait(30)
        log.close()
        text = (d / "nfcapd.log").read_text()
        got = 0
        for line in text.splitlines():
            if "Flows:" in line and "Ident" in line:
                got = int(line.split("Flows:")[1].split(",")[0])
        return {"records": got, "cpu": cpu, "rss_kib": hwm, "sent_rate": achieved}


def daemon(conf: str) -> int:
    """Run pyulogd for the ``null`` receiver: with its NULL output, or one registered here."""
    from pyulogd.core import registry
    from pyulogd.core.errors import ConfigError
    from pyulogd.core.plugin import OK, DataType, Sink
    from pyulogd.daemon.cli import main

    class NullSink(Sink):
        name = "NULL"
        description = "drops every record (ipfix_bench.py)"
        input_type = DataType.FLOW | DataType.PACKET | DataType.SUM

        def interp(self, rec: list[Any]) -> int:
            return OK

    try:
        registry.get("NULL")
    except ConfigError:
        registry.register(NullSink)
    return main(["-c", conf])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=300_000)
    ap.add_argument("--rates", default="20000,50000,100000,0", help="messages/s, comma list; 0: as fast as it goes")
    ap.add_argument("--targets", default="json,null,nfcapd")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "ipfix"))
    ap.add_argument("--base", help="another revision's source tree (its src directory): each pyulogd target "
                    "also runs on it, as <target>@base, in the same run (before/after)")
    ap.add_argument("--daemon", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.daemon:
        return daemon(args.daemon)
    load = os.getloadavg()
    setup, _ = corpus(1)
    rows = []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"load_before": load, "records": args.records, "capture": str(CAPTURE.relative_to(ROOT)),
            "python": sys.version.split()[0], "cpus": os.cpu_count(), "base": args.base}  # fmt: skip
    targets = []
    for target in args.targets.split(","):
        targets.append(target)
        if args.base and target not in ("nfcapd", "json-noextra"):  # (an option the code before lacks)
            targets.append(target + "@base")
    print(json.dumps(meta))
    with (out.with_suffix(".jsonl")).open("w") as jl:
        jl.write(json.dumps({"meta": meta}) + "\n")
        for rate in (int(r) for r in args.rates.split(",")):
            n = max(args.records, rate * 3)
            _, data = corpus(n)
            for target in targets:
                sink, _, base = target.partition("@")
                r = (run_nfcapd(setup, data, rate) if target == "nfcapd"
                     else run_pyulogd(sink, setup, data, rate, args.base if base else None))  # fmt: skip
                row = {"target": target, "rate": rate, "sent": n, **{k: v for k, v in r.items() if k != "counters"},
                       "lost": n - r["records"], "cpu_us_per_record": 1e6 * r["cpu"] / max(r["records"], 1),
                       "records_per_cpu_second": r["records"] / r["cpu"] if r["cpu"] else None}  # fmt: skip
                rows.append(row)
                jl.write(json.dumps(row) + "\n")
                jl.flush()
                print(f"{target:7} rate {rate or 'max':>7} sent {n} at {r['sent_rate']:,.0f}/s: got {r['records']} "
                      f"(lost {n - r['records']}), CPU {row['cpu_us_per_record']:.2f} us/record, "
                      f"peak RSS {r['rss_kib'] / 1024:.1f} MiB", flush=True)  # fmt: skip
    lines = [f"Load average before the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} CPUs, shared)",
             "", "| receiver | rate asked (msg/s) | sent at (msg/s) | records sent | received | lost | CPU µs/record "
             "| CPU / nfcapd's | records per CPU second | peak RSS (MiB) |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    ref = {r["rate"]: r["cpu_us_per_record"] for r in rows if r["target"] == "nfcapd"}
    for r in rows:
        ratio = f"{r['cpu_us_per_record'] / ref[r['rate']]:.2f}" if ref.get(r["rate"]) else "-"
        lines.append(f"| {r['target']} | {r['rate'] or 'max'} | {r['sent_rate']:,.0f} | {r['sent']} | {r['records']} | "
                     f"{r['lost']} | {r['cpu_us_per_record']:.2f} | {ratio} | "
                     f"{r['records_per_cpu_second'] or 0:,.0f} | "
                     f"{r['rss_kib'] / 1024:.1f} |")  # fmt: skip
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
