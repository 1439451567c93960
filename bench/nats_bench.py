#!/usr/bin/env python3
"""Node -> NATS JetStream -> collector -> PostgreSQL against node -> PostgreSQL, same run (issue 18).

A UDP flood from a client namespace hits ``udp dport 5001 counter log group 34 drop`` in a
server namespace. The node daemon (pyulogd, in the host namespace, its NFLOG input working in
the server namespace through ``network_namespace_path``) either

* **direct**: writes straight to PostgreSQL with PGSQL's bulk path (COPY, one transaction per
  batch), or
* **nats**: publishes to a JetStream stream (NATS output, batches of 500 records, acked), and a
  collector daemon (NATSIN -> PGSQL with ``unique_key``: COPY into a staging table, then
  ``INSERT ... ON CONFLICT DO NOTHING``, acked after the commit) writes the same table.

Both paths write the same table of a PostgreSQL started here (``initdb`` in a temporary
directory, fsync off, its own port) and the NATS server is one nats-server started here with
JetStream on ephemeral ports (file storage in a temporary directory): one node process and one
collector on this 2-core machine, as the issue asks. Trials alternate between the paths.

Measured per trial: rows in the table over time (``count(*)`` polled); **sustained rows/s** =
rows written between 10 % and 90 % of the final count divided by the time that took (so the
figure is the end-to-end delivery rate, not the generator's); the nft counter (what the
kernel logged); loss = counter - rows; **CPU per record per stage** (utime+stime from /proc
over the trial, divided by the rows): the node daemon, nats-server, the collector daemon,
PostgreSQL (the postmaster and all its children).

    sudo bench/nats_bench.py                          # max and 20k/s, 2 trials each, ~4 min
    sudo bench/nats_bench.py --rates max --count 300000 --trials 3

Results: ``bench/results/nats-<time>.{jsonl,md}``; bench/README.md ("NATS: many nodes, one
store") quotes them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
from nslab import build_generator, nft_counter, proc_cpu, sh, veth_lab  # noqa: E402
from tests.natsserver import NatsCluster  # noqa: E402
from tests.services.servers import PgCluster  # noqa: E402

CLI, SRV = "pyn4-nb-c", "pyn4-nb-s"
CLI4, SRV4 = "10.204.0.1", "10.204.0.2"
GROUP = 34
DB = "pyn4_bench"
STREAM = "PYN4BENCH"
# ulogd2's ulog_pkt (what sql_bench.py writes) for the direct path; the same plus the node id and
# sequence number, unique, for the collector (a direct node has neither key).
COLUMNS = """_id bigserial, raw_pktlen bigint, raw_pktcount bigint, oob_prefix varchar(64),
 oob_time_sec bigint, oob_time_usec bigint, oob_mark bigint, oob_hook smallint, oob_uid bigint, oob_gid bigint"""
TABLES = {"direct": "ulog_pkt", "nats": "ulog_pkt_central"}
SCHEMA = [f"CREATE TABLE ulog_pkt ({COLUMNS})",
          f"CREATE TABLE ulog_pkt_central ({COLUMNS}, pyulogd_node_id text, pyulogd_node_seq bigint, "
          "UNIQUE (pyulogd_node_id, pyulogd_node_seq, oob_time_sec))"]


RULES = f"""table inet pyn4b {{
  chain input {{ type filter hook input priority 0; policy accept;
    udp dport 5001 counter log prefix "FLOOD " group {GROUP} drop
  }}
}}"""


def lab() -> contextlib.AbstractContextManager[None]:
    """The client and server namespaces (bench/nslab.py), a stale pair of an earlier run removed first."""
    for ns in (CLI, SRV):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
    return veth_lab(CLI, SRV, "pyn4nb0", "pyn4nb1", f"{CLI4}/24", f"{SRV4}/24")


def logged_packets() -> int:
    return nft_counter(SRV, "inet", "pyn4b")


def pg_cpu(pg: PgCluster) -> float:
    """CPU seconds of the postmaster and every process it started (the backends)."""
    try:
        with open(os.path.join(pg.data, "postmaster.pid")) as f:
            master = int(f.readline())
    except OSError:
        return 0.0
    total = proc_cpu(master, gone=0.0)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == master:
                total += proc_cpu(int(entry), gone=0.0)
    return total


# The keys the direct path writes (ulog_pkt's columns): what --same-keys makes the node send.
SAME_KEYS = "raw.pktlen,raw.pktcount,oob.prefix,oob.time.sec,oob.time.usec,oob.mark,oob.hook,oob.uid,oob.gid"


def node_conf(work: str, path: str, urls: str, pg: PgCluster, same_keys: bool = False) -> str:
    keys = f'keys="{SAME_KEYS}"\n' if same_keys else ""
    out = f"""[global]
logfile="{work}/node.log"
loglevel=5
stack=log1:NFLOG,{"nats1:NATS" if path == "nats" else "pg1:PGSQL"}

[log1]
group={GROUP}
network_namespace_path="/run/netns/{SRV}"
netlink_socket_buffer_size=8388608
netlink_socket_buffer_maxsize=67108864
"""
    if path == "nats":
        return out + f"""
[nats1]
servers="{urls}"
stream="{STREAM}"
subject="pyn4.bench.{{node}}"
node_id="bench-node"
create_stream=1
spool_dir="{work}/node.spool"
batch_size=500
{keys}"""
    return out + f"""
[pg1]
db="{DB}"
host="127.0.0.1"
port={pg.port}
user="postgres"
table="ulog_pkt"
procedure="INSERT"
spool_dir="{work}/node.spool"
"""


def collector_conf(work: str, urls: str, pg: PgCluster) -> str:
    return f"""[global]
logfile="{work}/collector.log"
loglevel=5
stack=in1:NATSIN,pg1:PGSQL

[in1]
servers="{urls}"
stream="{STREAM}"
durable="pyn4-bench"
keys_from="NFLOG"
max_inflight=256
fetch_batch=64

[pg1]
db="{DB}"
host="127.0.0.1"
port={pg.port}
user="postgres"
table="ulog_pkt_central"
procedure="INSERT"
unique_key="pyulogd_node_id,pyulogd_node_seq,oob_time_sec"
spool_dir="{work}/collector.spool"
"""


def start(args: list[str], log: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(log, "ab"))  # noqa: SIM115


def stop(p: subprocess.Popen[bytes] | None) -> None:
    if p is None or p.poll() is not None:
        return
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(10)


def reset_stream(urls: str) -> None:
    import asyncio

    import nats

    async def go() -> None:
        nc = await nats.connect(servers=urls.split(","))
        try:
            try:
                await nc.jetstream().delete_stream(STREAM)
            except Exception:  # noqa: BLE001 - not there yet
                pass
        finally:
            await nc.close()

    asyncio.run(go())


def trial(path: str, gen: str, work: str, rate: str, count: int, max_seconds: float, nats: NatsCluster,
          pg: PgCluster) -> dict[str, object]:
    tbl = TABLES[path.split("/")[0]]
    pg.psql(f"TRUNCATE {tbl}", db=DB)
    reset_stream(nats.urls)
    for d in ("node.spool", "collector.spool"):
        subprocess.run(["rm", "-rf", os.path.join(work, d)], check=True)
    counted = logged_packets()
    with open(os.path.join(work, "node.conf"), "w") as f:
        f.write(node_conf(work, path.split("/")[0], nats.urls, pg, path.endswith("/same-keys")))
    collector = None
    if path.startswith("nats"):
        with open(os.path.join(work, "collector.conf"), "w") as f:
            f.write(collector_conf(work, nats.urls, pg))
        collector = start([sys.executable, "-m", "pyulogd", "-c", os.path.join(work, "collector.conf")],
                          os.path.join(work, "collector.err"))
    node = start([sys.executable, "-m", "pyulogd", "-c", os.path.join(work, "node.conf")],
                 os.path.join(work, "node.err"))
    try:
        end = time.monotonic() + 20
        while f"\n{GROUP:5d}" not in "\n" + sh("cat", "/proc/net/netfilter/nfnetlink_log", ns=SRV):
            if time.monotonic() > end or node.poll() is not None:
                raise SystemExit(f"the node did not bind NFLOG group {GROUP}: see {work}/node.log")
            time.sleep(0.1)
        time.sleep(1.0)  # the collector's consumer and the node's stream exist before the flood
        server = nats.procs[0]
        assert server is not None
        cpu0 = {"node": proc_cpu(node.pid), "nats-server": proc_cpu(server.pid),
                "collector": proc_cpu(collector.pid) if collector else 0.0, "postgresql": pg_cpu(pg)}
        g = subprocess.Popen(["ip", "netns", "exec", CLI, gen, "udp", "-d", SRV4, "-p", "5001", "-c", str(count),
                              "-r", "0" if rate == "max" else rate, "-t", str(max_seconds), "-s", "16"],
                             stdout=subprocess.PIPE, text=True)
        t0 = time.monotonic()
        samples: list[tuple[float, int]] = []
        last_change = t0
        while True:
            time.sleep(0.5)
            n = int(pg.psql(f"SELECT count(*) FROM {tbl}", db=DB).strip() or 0)
            now = time.monotonic()
            if not samples or n != samples[-1][1]:
                last_change = now
            samples.append((now - t0, n))
            if g.poll() is not None and now - last_change > 4:
                break
            if now - t0 > max_seconds + 60:
                break
        gen_out = json.loads(g.communicate()[0].strip().splitlines()[-1])
        cpu = {"node": proc_cpu(node.pid) - cpu0["node"],
               "nats-server": proc_cpu(server.pid) - cpu0["nats-server"] if collector else 0.0,
               "collector": proc_cpu(collector.pid) - cpu0["collector"] if collector else 0.0,
               "postgresql": pg_cpu(pg) - cpu0["postgresql"]}
    finally:
        stop(node)
        stop(collector)
    final = int(pg.psql(f"SELECT count(*) FROM {tbl}", db=DB).strip() or 0)
    distinct = int(pg.psql("SELECT count(DISTINCT pyulogd_node_seq) FROM ulog_pkt_central", db=DB).strip() or 0)
    logged = logged_packets() - counted
    lo, hi = 0.1 * final, 0.9 * final
    t_lo = next((t for t, n in samples if n >= lo), 0.0)
    t_hi = next((t for t, n in samples if n >= hi), 0.0)
    sustained = (hi - lo) / (t_hi - t_lo) if t_hi > t_lo else 0.0
    return {
        "path": path, "offered": rate, "sent": gen_out.get("sent"), "gen_rate": round(gen_out.get("rate", 0)),
        "logged": logged, "rows": final, "distinct_seqs": distinct if collector else None,
        "loss_pct": round(100 * (logged - final) / logged, 3) if logged else None,
        "sustained_rows_per_s": round(sustained),
        "cpu_s": {k: round(v, 2) for k, v in cpu.items()},
        "cpu_us_per_record": {k: round(1e6 * v / final, 1) if final else None for k, v in cpu.items()},
    }


def table(results: list[dict[str, object]]) -> str:
    out = ["| path | offered | logged | rows | loss % | sustained rows/s | node µs/rec | nats-server µs/rec "
           "| collector µs/rec | PostgreSQL µs/rec |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        c = r["cpu_us_per_record"]
        assert isinstance(c, dict)
        out.append(f"| {r['path']} | {r['offered']} | {r['logged']} | {r['rows']} | {r['loss_pct']} | "
                   f"{r['sustained_rows_per_s']} | {c['node']} | {c['nats-server']} | {c['collector']} | "
                   f"{c['postgresql']} |")
    return "\n".join(out)


def summary(results: list[dict[str, object]]) -> str:
    lines = ["", "| offered | path | rows/s (median) | direct rows/s (median) | ratio to direct | lossless | "
             "CPU µs/record, all stages (median) |", "|---|---|---|---|---|---|---|"]
    for rate in dict.fromkeys(str(r["offered"]) for r in results):
        def med(path: str, what: str, rate: str = rate) -> float | None:
            vals = []
            for r in results:
                if r["path"] == path and r["offered"] == rate:
                    v = r[what] if what != "cpu" else sum(r["cpu_us_per_record"].values())  # type: ignore[union-attr]
                    vals.append(float(v))  # type: ignore[arg-type]
            return statistics.median(vals) if vals else None

        d = med("direct", "sustained_rows_per_s")
        for path in dict.fromkeys(str(r["path"]) for r in results):
            n = med(path, "sustained_rows_per_s")
            if n is None or d is None:
                continue
            lossless = all(r["loss_pct"] == 0 for r in results if r["path"] == path and r["offered"] == rate)
            lines.append(f"| {rate} | {path} | {n:.0f} | {d:.0f} | {n / d:.2f} | {'yes' if lossless else 'NO'} | "
                         f"{med(path, 'cpu'):.1f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="max,20000", help="offered rates: max or packets/s, comma-separated")
    ap.add_argument("--count", type=int, default=200_000, help="packets per trial")
    ap.add_argument("--max-seconds", type=float, default=30.0)
    ap.add_argument("--trials", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--paths", default="direct,nats,nats/same-keys",
                    help="direct, nats (every key, raw packet included), nats/same-keys (the direct path's keys)")
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (namespaces, nftables)")
    work = tempfile.mkdtemp(prefix="pyn4-nb-")
    os.chmod(work, 0o755)
    gen = build_generator(work)
    nats = NatsCluster(1, name="pyn4b")
    pg = PgCluster()
    results: list[dict[str, object]] = []
    stack = contextlib.ExitStack()
    try:
        stack.enter_context(lab())
        sh("nft", "-f", "-", ns=SRV, input=RULES)
        nats.start()
        nats.wait_ready()
        pg.start()
        pg.psql(f"CREATE DATABASE {DB}")
        for sql in SCHEMA:
            pg.psql(sql, db=DB)
        for rate in a.rates.split(","):
            for t in range(a.trials):
                paths = a.paths.split(",")
                for path in (paths if t % 2 == 0 else paths[::-1]):
                    r = trial(path, gen, work, rate, a.count, a.max_seconds, nats, pg)
                    print(json.dumps(r), flush=True)
                    results.append(r)
    finally:
        stack.close()
        nats.close()
        pg.close()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, f"nats-{stamp}.jsonl"), "w") as f:
        for r in results:
            f.write(json.dumps(r) + "\n")
    text = (f"# nats_bench {stamp}\n\n`{' '.join(sys.argv)}` (count {a.count}, {a.trials} trials per path and rate)\n\n"
            + table(results) + "\n" + summary(results) + "\n")
    with open(os.path.join(a.out, f"nats-{stamp}.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
