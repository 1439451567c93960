#!/usr/bin/env python3
"""End-to-end SQL benchmark: NFLOG flood -> daemon -> PostgreSQL plain table, pyulogd vs ulogd2.

A UDP flood from a client namespace hits ``udp dport 5001 counter log group 33 drop`` in a
server namespace where the daemon runs with ``stack=log1:NFLOG,pg1:PGSQL`` and
``procedure="INSERT"`` into a plain table with the columns of ulogd2's ``ulog_pkt``
(sqlite3.table) plus a ``_id bigserial`` (which PGSQL skips). The same config file runs
both daemons (2.0.8 ignores pyulogd's extra ``spool_dir``). The database is the machine's
PostgreSQL, reached through its Unix socket (/var/run/postgresql) from the namespace;
each trial starts from an empty table.

Measured per trial: rows in the table over time (``count(*)`` polled); **sustained
rows/s** = rows written between 10 % and 90 % of the trial's final count divided by the
time that took; the nft counter (packets logged by the kernel); loss = counter - rows;
daemon CPU seconds; for pyulogd its own count of dropped records. Modes: ``max`` (generator as
fast as it goes, the daemon's ceiling), fixed offered rates (``--rates 50000,100000``), and
with ``--drain`` a second ``max`` trial in which the whole flood arrives while another
session holds an exclusive lock on the table (a database that stalls), after which the
daemon writes its backlog with the generator idle: the rate of that drain is the writer's
own rate into PostgreSQL. Rows not in the table when a trial ends are not necessarily lost:
pyulogd's are in its spool (written at its next start) unless counted as dropped.

    sudo bench/sql_bench.py                    # pyulogd and ulogd2, max + 100k/s, ~3 min
    sudo bench/sql_bench.py --daemons pyulogd --count 2000000 --rates max

Needs root, gcc, nft, PostgreSQL with trust auth for user postgres on its socket, and
for ulogd2 the Debian package ulogd2-pgsql. Traffic stays in the two namespaces.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
UDPFLOOD = os.path.join(REPO, "..", "shared", "bench", "udpflood.c")
PLUGDIR = "/usr/lib/x86_64-linux-gnu/ulogd"
CLI, SRV = "pyu-sqlb-c", "pyu-sqlb-s"
CLI4, SRV4 = "10.203.0.1", "10.203.0.2"
GROUP = 33
DB = "pyulogd_bench"
SOCKET_DIR = "/var/run/postgresql"
TABLE = """CREATE TABLE ulog_pkt (_id bigserial, raw_pktlen bigint, raw_pktcount bigint, oob_prefix varchar(64),
 oob_time_sec bigint, oob_time_usec bigint, oob_mark bigint, oob_hook smallint, oob_uid bigint, oob_gid bigint)"""
DAEMONS = {
    "pyulogd": [sys.executable, "-m", "pyulogd", "-c"],
    "ulogd2": ["/usr/sbin/ulogd", "-c"],
}


def sh(*args: str, check: bool = True, ns: str | None = None, **kw: object) -> subprocess.CompletedProcess[str]:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    return subprocess.run(cmd, check=check, text=True, capture_output=True, **kw)  # type: ignore[call-overload]


def psql(sql: str, db: str = DB) -> str:
    return sh("psql", "-h", SOCKET_DIR, "-U", "postgres", "-d", db, "-Atq", "-v", "ON_ERROR_STOP=1", "-c", sql).stdout


def lab_up() -> None:
    lab_down()
    sh("ip", "netns", "add", CLI)
    sh("ip", "netns", "add", SRV)
    sh("ip", "link", "add", "pyusqlb0", "netns", CLI, "type", "veth", "peer", "name", "pyusqlb1", "netns", SRV)
    for ns, dev, addr in ((CLI, "pyusqlb0", CLI4), (SRV, "pyusqlb1", SRV4)):
        sh("ip", "addr", "add", f"{addr}/24", "dev", dev, ns=ns)
        sh("ip", "link", "set", dev, "up", ns=ns)
        sh("ip", "link", "set", "lo", "up", ns=ns)
    sh("nft", "-f", "-", ns=SRV, input=f"""table inet b {{
  chain input {{ type filter hook input priority 0; policy accept;
    udp dport 5001 counter log prefix "FLOOD " group {GROUP} drop
  }}
}}""")


def lab_down() -> None:
    for ns in (CLI, SRV):
        sh("ip", "netns", "del", ns, check=False)


def nft_counter() -> int:
    m = re.search(r"counter packets (\d+)", sh("nft", "list", "table", "inet", "b", ns=SRV).stdout)
    return int(m[1]) if m else 0


def build_generator(work: str) -> str:
    exe = os.path.join(work, "udpflood")
    sh("gcc", "-O2", "-o", exe, UDPFLOOD)
    return exe


def config(work: str) -> str:
    return f"""[global]
logfile="{work}/daemon.log"
loglevel=5
plugin="{PLUGDIR}/ulogd_inppkt_NFLOG.so"
plugin="{PLUGDIR}/ulogd_output_PGSQL.so"
stack=log1:NFLOG,pg1:PGSQL

[log1]
group={GROUP}
netlink_socket_buffer_size=8388608
netlink_socket_buffer_maxsize=67108864

[pg1]
db="{DB}"
host="{SOCKET_DIR}"
user="postgres"
table="ulog_pkt"
procedure="INSERT"
spool_dir="{work}/spool"
"""


def cpu_seconds(pid: int) -> float:
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def rows() -> int:
    return int(psql("SELECT count(*) FROM ulog_pkt").strip() or 0)


def lock_table() -> subprocess.Popen[str]:
    """A session holding an exclusive lock on the table: writers wait (a database that stalls)."""
    p = subprocess.Popen(["psql", "-h", SOCKET_DIR, "-U", "postgres", "-d", DB, "-q"], stdin=subprocess.PIPE,
                         stdout=subprocess.DEVNULL, text=True)
    assert p.stdin is not None
    p.stdin.write("BEGIN; LOCK TABLE ulog_pkt IN ACCESS EXCLUSIVE MODE; SELECT 1;\n")
    p.stdin.flush()
    time.sleep(0.5)
    return p


def unlock_table(p: subprocess.Popen[str]) -> None:
    assert p.stdin is not None
    p.stdin.write("COMMIT;\n")
    p.stdin.close()
    p.wait(30)


def trial(daemon: str, gen: str, work: str, rate: str, count: int, max_seconds: float,
          drain: bool = False) -> dict[str, object]:
    psql("TRUNCATE ulog_pkt")
    counted = nft_counter()
    shutil.rmtree(os.path.join(work, "spool"), ignore_errors=True)
    conf = os.path.join(work, "daemon.conf")
    with open(conf, "w") as f:
        f.write(config(work))
    proc = subprocess.Popen(["ip", "netns", "exec", SRV, *DAEMONS[daemon], conf],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 15
        while f"\n{GROUP:5d}" not in "\n" + sh("cat", "/proc/net/netfilter/nfnetlink_log", ns=SRV).stdout:
            if time.monotonic() > end or proc.poll() is not None:
                raise SystemExit(f"{daemon} did not bind NFLOG group {GROUP}: see {work}/daemon.log")
            time.sleep(0.1)
        cpu0 = cpu_seconds(proc.pid)
        lock = lock_table() if drain else None
        g = subprocess.Popen(["ip", "netns", "exec", CLI, gen, "udp", "-d", SRV4, "-p", "5001", "-c", str(count),
                              "-r", "0" if rate == "max" else rate, "-t", str(max_seconds), "-s", "16"],
                             stdout=subprocess.PIPE, text=True)
        if lock is not None:
            # Drain mode: the whole flood arrives while the table is locked; then the daemon
            # writes its backlog with the generator idle.
            g.wait()
            prev = -1
            while (cur := nft_counter()) != prev:
                prev = cur
                time.sleep(2)
            time.sleep(2)
            unlock_table(lock)
        t0 = time.monotonic()
        samples: list[tuple[float, int]] = []
        last_change = t0
        while True:
            time.sleep(0.5)
            n = rows()
            now = time.monotonic()
            if not samples or n != samples[-1][1]:
                last_change = now
            samples.append((now - t0, n))
            if g.poll() is not None and now - last_change > 3:
                break
            if now - t0 > max_seconds + (90 if drain else 30):
                break
        gen_out = json.loads(g.communicate()[0].strip().splitlines()[-1])
        cpu = cpu_seconds(proc.pid) - cpu0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    final = rows()
    logged = nft_counter() - counted
    # pyulogd's own count of records it dropped (the rest of "logged - rows" is in its spool
    # when a trial ends before the backlog is written: written at the next start)
    log = open(os.path.join(work, "daemon.log"), errors="replace").read() if daemon == "pyulogd" else ""
    found = re.findall(r"sql\.pg1\.dropped=(\d+)", log)
    dropped = int(found[-1]) if found else (0 if daemon == "pyulogd" else None)
    lo, hi = 0.1 * final, 0.9 * final
    # drain: the rate is measured while the backlog is written (from the unlock on)
    t_lo = next((t for t, n in samples if n >= lo), 0.0)
    t_hi = next((t for t, n in samples if n >= hi), 0.0)
    sustained = (hi - lo) / (t_hi - t_lo) if t_hi > t_lo else 0.0
    return {
        "daemon": daemon, "offered": rate + (" (drain)" if drain else ""), "sent": gen_out.get("sent"),
        "gen_rate": round(gen_out.get("rate", 0)),
        "logged": logged, "rows": final, "loss_pct": round(100 * (logged - final) / logged, 2) if logged else None,
        "dropped": dropped,
        "sustained_rows_per_s": round(sustained), "cpu_s": round(cpu, 2),
        "cpu_us_per_row": round(1e6 * cpu / final, 1) if final else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--daemons", default="pyulogd,ulogd2")
    ap.add_argument("--rates", default="max,100000")
    ap.add_argument("--count", type=int, default=1_000_000, help="packets per pyulogd trial")
    ap.add_argument("--ulogd2-count", type=int, default=200_000, help="packets per ulogd2 trial (it is slow)")
    ap.add_argument("--seconds", type=float, default=20, help="generator time limit per trial")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--drain", action="store_true", help="also a drain trial: flood while the table is locked")
    ap.add_argument("--json", help="append result rows to this file")
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (network namespaces, nftables)")
    work = tempfile.mkdtemp(prefix="pyulogd-sqlbench-")
    gen = build_generator(work)
    psql(f'DROP DATABASE IF EXISTS "{DB}"', db="postgres")
    psql(f'CREATE DATABASE "{DB}"', db="postgres")
    psql(TABLE)
    lab_up()
    results = []
    try:
        for _ in range(a.repeat):
            for rate in a.rates.split(","):
                for daemon in a.daemons.split(","):
                    count = a.count if daemon == "pyulogd" else a.ulogd2_count
                    for drain in (False, True) if a.drain and rate == "max" else (False,):
                        r = trial(daemon, gen, work, rate, count, a.seconds, drain)
                        results.append(r)
                        print(json.dumps(r), flush=True)
                        if a.json:
                            with open(a.json, "a") as f:
                                f.write(json.dumps(r) + "\n")
    finally:
        lab_down()
        psql(f'DROP DATABASE IF EXISTS "{DB}"', db="postgres")
    print("\n| daemon | offered/s | generator pkt/s | logged (nft) | rows at the end | not in the table % "
          "| dropped (counted) | sustained rows/s | CPU µs/row |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['daemon']} | {r['offered']} | {r['gen_rate']:,} | {r['logged']:,} | {r['rows']:,} | "
              f"{r['loss_pct']} | {r['dropped']} | {r['sustained_rows_per_s']:,} | {r['cpu_us_per_row']} |")
    best: dict[str, float] = {}
    for r in results:
        name, rate = str(r["daemon"]), float(str(r["sustained_rows_per_s"]))
        best[name] = max(best.get(name, 0.0), rate)
    if "pyulogd" in best and best.get("ulogd2"):
        print(f"\nbest sustained rows/s: pyulogd {best['pyulogd']:,.0f}, ulogd2 {best['ulogd2']:,.0f}, "
              f"ratio {best['pyulogd'] / best['ulogd2']:.1f}x")


if __name__ == "__main__":
    main()
