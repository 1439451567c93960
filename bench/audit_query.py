#!/usr/bin/env python3
"""Audit queries on a big store: 10 million rows, a query bounded to one hour (~1 % of the
rows) returning at most 10,000 rows, in under a second (issue 17).

    python3 bench/audit_query.py [--rows 10000000] [--db sqlite:///var/tmp/x.db | --pg] [--keep]

Fills pyulogd's audit schema (audit/schema.py, created by the same code as
``pyulogd-audit schema create``) with synthetic records spread evenly over 100 hours (so one
hour holds 1 % of them): 16 routers, 200 ports, 4 projects, 2,000 addresses, 10 % of the
records dropped. Rows go in first and the indexes are built after (much faster to fill; the
indexes are the same as the daemon's). Then runs, through the command's own code
(``audit/query.py``), each query 3 times and prints the first and the best time:

* one hour, every record (returns the 10,000 first);
* one hour, ``--action DROP`` (about 10,000 rows);
* one hour, ``--ip 10.1.0.0/16`` (an eighth of the addresses);
* six hours, ``--port-id`` of one port;
* ``summary`` of one hour; ``who-had`` of one address within ±1 hour.

``--pg`` uses the machine's PostgreSQL (127.0.0.1:5432, user postgres) in a database of its
own (``pyulogd_bench_<pid>``), dropped at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from pyulogd.audit import schema  # noqa: E402
from pyulogd.audit.dburl import Db, connect, parse  # noqa: E402
from pyulogd.audit.query import Filters, Store, parse_net  # noqa: E402
from pyulogd.audit.rows import ip16  # noqa: E402

HOURS = 100
T0 = 1_800_000_000
FIELDS = ("ts", "ts_source", "host", "kind", "action", "rule", "family", "proto", "src_ip", "dst_ip", "sport",
          "dport", "router_id", "port_id", "project_id", "bytes", "packets", "community_id")


def records(n: int, seed: int = 7) -> Iterator[tuple[Any, ...]]:
    rnd = random.Random(seed)
    addrs = [ip16(bytes([10, 1 + i // 250, i % 250, 1 + i % 7])) for i in range(2000)]
    outside = [ip16(bytes([198, 51, 100, i])) for i in range(1, 255)]
    routers = [f"router-{i:02d}" for i in range(16)]
    ports = [f"port-{i:03d}" for i in range(200)]
    projects = [f"project-{i}" for i in range(4)]
    step = HOURS * 3600 * 1_000_000 / n
    for i in range(n):
        p = rnd.randrange(200)
        drop = rnd.random() < 0.1
        src, dst = (rnd.choice(outside), addrs[rnd.randrange(2000)]) if drop else (addrs[rnd.randrange(2000)],
                                                                                    rnd.choice(outside))
        yield (T0 * 1_000_000 + int(i * step), "kernel", "net1", "packet", "DROP" if drop else "ACCEPT",
               "sg default drop" if drop else "sg allow egress", 4, 6 if rnd.random() < 0.8 else 17, src, dst,
               rnd.randrange(1024, 65536), rnd.choice((22, 80, 443, 53, 8080)), routers[p % 16], ports[p],
               projects[p % 4], rnd.randrange(40, 1500), 1, "1:bench")


def fill(db: Db, n: int) -> float:
    t = time.monotonic()
    statements = schema.create(db.dialect)
    indexes = [s for s in statements if s.startswith("CREATE INDEX")]
    db.run([s for s in statements if not s.startswith("CREATE INDEX")])
    if db.dialect == "sqlite":
        cols = ", ".join(FIELDS)
        sql = f"INSERT INTO {schema.TABLE} ({cols}) VALUES ({', '.join('?' * len(FIELDS))})"
        db.con.execute("PRAGMA journal_mode=WAL")
        db.con.execute("PRAGMA synchronous=NORMAL")
        batch: list[tuple[Any, ...]] = []
        for row in records(n):
            batch.append(row)
            if len(batch) == 100_000:
                db.con.execute("BEGIN")
                db.con.executemany(sql, batch)
                db.con.execute("COMMIT")
                batch.clear()
        if batch:
            db.con.execute("BEGIN")
            db.con.executemany(sql, batch)
            db.con.execute("COMMIT")
        db.run(indexes, transaction=False)
        db.con.execute("ANALYZE")
    else:
        with db.con.cursor() as cur, cur.copy(f"COPY {schema.TABLE} ({', '.join(FIELDS)}) FROM STDIN") as copy:
            for row in records(n):
                copy.write_row(row)
        db.run(indexes, transaction=False)
        db.rows(f"ANALYZE {schema.TABLE}")
    return time.monotonic() - t


def timed(what: str, fn: Any) -> None:
    times = []
    result: Any = None
    for _ in range(3):
        t = time.monotonic()
        result = fn()
        times.append(time.monotonic() - t)
    size = len(result) if isinstance(result, list) else result.get("records", "")
    print(f"  {what:52s} {size!s:>7} rows   first {times[0] * 1000:7.1f} ms   best {min(times) * 1000:7.1f} ms",
          flush=True)


def queries(db: Db) -> None:
    store = Store(db)
    hour = (T0 + 50 * 3600) * 1_000_000
    one = Filters(since=hour, until=hour + 3600_000_000)
    timed("one hour, all records (limit 10000)", lambda: store.select(one, 10000))
    timed("one hour, --action DROP", lambda: store.select(Filters(since=hour, until=hour + 3600_000_000,
                                                                   action=["DROP"]), 10000))
    timed("one hour, --ip 10.1.0.0/16", lambda: store.select(Filters(since=hour, until=hour + 3600_000_000,
                                                                      ip=[parse_net("10.1.0.0/16")]), 10000))
    timed("six hours, --port-id port-007", lambda: store.select(Filters(since=hour, until=hour + 6 * 3600_000_000,
                                                                         neutron_port="port-007"), 10000))
    timed("summary of one hour", lambda: store.summary(one, 10, 300))
    timed("who-had 10.1.0.1 at hour 50, +-1h", lambda: store.who_had("10.1.0.1", hour, 3600))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--db", default="", help="sqlite:///PATH (default: a file in a temporary directory)")
    ap.add_argument("--pg", action="store_true", help="the machine's PostgreSQL, a database of its own")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    admin = None
    name = ""
    tmp = None
    if a.pg:
        import psycopg

        admin = psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True)
        name = f"pyulogd_bench_{os.getpid()}"
        admin.execute(f'CREATE DATABASE "{name}"')
        url = parse(f"postgresql://postgres@127.0.0.1:5432/{name}")
    else:
        if not a.db:
            tmp = tempfile.mkdtemp(prefix="pyulogd-audit-bench-", dir="/var/tmp")
        url = parse(a.db or f"sqlite://{tmp}/audit.db")
    try:
        db = connect(url, create=True)
        print(f"{url.describe()}: filling {a.rows:,} rows over {HOURS} hours ...", flush=True)
        took = fill(db, a.rows)
        size = ""
        if url.dialect == "sqlite":
            size = f", {os.path.getsize(url.path) / 2**30:.2f} GiB"
        print(f"  filled in {took:.0f} s ({a.rows / took:,.0f} rows/s{size})", flush=True)
        queries(db)
        db.close()
    finally:
        if admin is not None:
            if not a.keep:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.close()
        if tmp and not a.keep:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
