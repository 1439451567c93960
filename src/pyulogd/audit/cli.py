"""``pyulogd-audit``: query, summarize, report and verify the audit trail (docs/audit.md).

    pyulogd-audit schema create|migrate|show --db URL
    pyulogd-audit query   --db URL [filters] [--format table|jsonl|csv] [--limit N]
    pyulogd-audit summary --db URL [filters] [--top N] [--bucket 1h] [--format text|json]
    pyulogd-audit who-had --db URL IP TIME [--window 1h]
    pyulogd-audit follow  --db URL [filters] [--interval 1] [--format ...]
    pyulogd-audit report  --db URL --html FILE [filters]
    pyulogd-audit verify  --key FILE (--db URL [--table NAME] | --file FILE...)

``--db`` defaults to the environment variable ``PYULOGD_AUDIT_DB``. Filters: ``--since``,
``--until``, ``--ip`` (address or CIDR, either side or NAT'd), ``--src``, ``--dst``,
``--port``, ``--sport``, ``--dport``, ``--proto``, ``--action``, ``--rule`` (substring),
``--kind``, ``--netns``, ``--router``, ``--network``, ``--port-id``, ``--project``, ``--host``.

Bad input (an unknown option or filter, a malformed time, address or CIDR, a database that
is neither pyulogd's nor ulogd's) gives one line on standard error and exit status 2; a
failed verification exits 1. Never a traceback: anything unexpected is one line too.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TextIO

from pyulogd.audit import schema
from pyulogd.audit.dburl import Db, DbError, connect, parse
from pyulogd.audit.query import (
    LIST_COLUMNS,
    AuditError,
    Filters,
    Store,
    parse_action,
    parse_net,
    parse_port,
    parse_proto,
    parse_span,
    parse_time,
    readable,
    table_lines,
    time_text,
)
from pyulogd.core.clock import Clock, SystemClock
from pyulogd.core.escape import escape_text

PROG = "pyulogd-audit"
ENV_DB = "PYULOGD_AUDIT_DB"


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line (no usage dump), exit status 2."""

    def error(self, message: str) -> NoReturn:
        raise AuditError(message)


def _filters(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("filters")
    g.add_argument("--since", metavar="TIME", help="from TIME (ISO 8601, @SECONDS, today, or an age: 2h, 1d)")
    g.add_argument("--until", metavar="TIME", help="before TIME")
    g.add_argument("--ip", action="append", metavar="ADDR|CIDR", help="either side, before or after NAT")
    g.add_argument("--src", action="append", metavar="ADDR|CIDR")
    g.add_argument("--dst", action="append", metavar="ADDR|CIDR")
    g.add_argument("--port", metavar="N", help="either port, before or after NAT")
    g.add_argument("--sport", metavar="N")
    g.add_argument("--dport", metavar="N")
    g.add_argument("--proto", metavar="NAME|N", help="tcp, udp, icmp, ipv6-icmp, sctp, ... or a number")
    g.add_argument("--action", metavar="A[,A]", help="ACCEPT, DROP, REJECT, OTHER")
    g.add_argument("--rule", metavar="TEXT", help="rule (or prefix) containing TEXT")
    g.add_argument("--kind", choices=["packet", "flow_start", "flow_update", "flow_end", "summary", "loss", "counter"])
    g.add_argument("--netns", metavar="NAME")
    g.add_argument("--router", metavar="ID")
    g.add_argument("--network", metavar="ID")
    g.add_argument("--port-id", metavar="ID", dest="port_id", help="Neutron port")
    g.add_argument("--project", metavar="ID")
    g.add_argument("--host", metavar="NAME", help="the pyulogd host that logged it")


def make_filters(a: argparse.Namespace, now: float) -> Filters:
    return Filters(
        since=None if a.since is None else parse_time(a.since, now),
        until=None if a.until is None else parse_time(a.until, now),
        ip=[parse_net(x) for x in a.ip or ()],
        src=[parse_net(x) for x in a.src or ()],
        dst=[parse_net(x) for x in a.dst or ()],
        port=None if a.port is None else parse_port(a.port),
        sport=None if a.sport is None else parse_port(a.sport),
        dport=None if a.dport is None else parse_port(a.dport),
        proto=None if a.proto is None else parse_proto(a.proto),
        action=[] if a.action is None else parse_action(a.action),
        rule=a.rule, kind=a.kind, netns=a.netns, router=a.router, network=a.network, neutron_port=a.port_id,
        project=a.project, host=a.host,
    )


def build_parser() -> _Parser:
    p = _Parser(prog=PROG, description="Query, summarize, report and verify pyulogd's audit trail.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def with_db(sp: argparse.ArgumentParser, required: bool = True) -> None:
        sp.add_argument("--db", metavar="URL", help=f"sqlite:///PATH, postgresql://USER@HOST/DB, mysql://USER@HOST/DB "
                                                    f"(default: ${ENV_DB})")
        sp.add_argument("--password-file", metavar="FILE", help="the database password (first line)")

    s = sub.add_parser("schema", help="create or migrate the audit schema")
    s.add_argument("action", choices=["create", "migrate", "show"])
    with_db(s)
    q = sub.add_parser("query", help="list records")
    with_db(q)
    _filters(q)
    q.add_argument("--format", choices=["table", "jsonl", "csv"], default="table")
    q.add_argument("--limit", type=int, default=10000, help="at most N records (default 10000)")
    q.add_argument("--newest-first", action="store_true")
    m = sub.add_parser("summary", help="top talkers, dropped destinations, drops over time, per router/port")
    with_db(m)
    _filters(m)
    m.add_argument("--top", type=int, default=10)
    m.add_argument("--bucket", default="", metavar="SPAN",
                   help="width of the time buckets (default: about 48 in the range)")
    m.add_argument("--format", choices=["text", "json"], default="text")
    w = sub.add_parser("who-had", help="which port/project held an address at a time")
    with_db(w)
    w.add_argument("address", metavar="IP")
    w.add_argument("time", metavar="TIME")
    w.add_argument("--window", default="1h", help="look this far either side of TIME (default 1h)")
    w.add_argument("--format", choices=["text", "json"], default="text")
    f = sub.add_parser("follow", help="print new records as they arrive")
    with_db(f)
    _filters(f)
    f.add_argument("--format", choices=["table", "jsonl", "csv"], default="jsonl")
    f.add_argument("--interval", default="1", help="seconds between polls (default 1)")
    f.add_argument("--max-records", type=int, default=0, help="stop after N records (0: never)")
    r = sub.add_parser("report", help="one self-contained HTML page with charts")
    with_db(r)
    _filters(r)
    r.add_argument("--html", required=True, metavar="FILE")
    r.add_argument("--top", type=int, default=10)
    r.add_argument("--bucket", default="", metavar="SPAN")
    v = sub.add_parser("verify", help="check the tamper-evidence chain of files or of the audit table")
    with_db(v, required=False)
    v.add_argument("--key", required=True, metavar="FILE", help="the chain_key file the outputs used")
    v.add_argument("--file", action="append", metavar="FILE", help="a chained file (give rotated files oldest first)")
    v.add_argument("--table", metavar="NAME", help="with --db: a ulogd table chained by PGSQL, MYSQL or SQLITE3 "
                   "(its pyulogd_seq and pyulogd_chain columns) instead of the audit table")
    v.add_argument("--order-by", metavar="COLUMN", default="", help="with --table: the column that gives the rows' "
                   "order of insertion (default: rowid for SQLite, else pyulogd_seq)")
    v.add_argument("--output", metavar="PLUGIN", default="", help="with --table: the output that wrote it, "
                   "for its id-column rule (default: SQLITE3, PGSQL or MYSQL by the database; DBI must be named)")
    return p


def _db(a: argparse.Namespace, create: bool = False) -> Db:
    url_text = a.db or os.environ.get(ENV_DB, "")
    if not url_text:
        raise AuditError(f"no database: give --db URL or set {ENV_DB}")
    try:
        url = parse(url_text)
    except ValueError as e:
        raise AuditError(str(e)) from None
    if a.password_file:
        try:
            with open(a.password_file, encoding="utf-8") as fh:
                url.password = fh.readline().rstrip("\r\n")
        except OSError as e:
            raise AuditError(f"--password-file {a.password_file}: {e.strerror}") from None
    try:
        return connect(url, create=create)
    except DbError as e:
        raise AuditError(str(e)) from None


def cmd_schema(a: argparse.Namespace, out: TextIO) -> int:
    db = _db(a, create=a.action == "create")
    try:
        tables = db.tables()
        have = 0
        if schema.META in tables:
            found = db.rows(f"SELECT value FROM {schema.META} WHERE name = 'schema_version'")
            have = int(found[0][0]) if found and str(found[0][0]).isdigit() else 0
        elif schema.TABLE in tables:
            raise AuditError(f"{db.url.describe()}: a table {schema.TABLE} not made by pyulogd-audit is in the way")
        if a.action == "show":
            out.write(f"{db.url.describe()}: schema version {have or 'none'} (this pyulogd: {schema.VERSION})\n")
            return 0
        if a.action == "create":
            if have:
                raise AuditError(f"{db.url.describe()}: the audit schema is already there (version {have}); "
                                 "use 'schema migrate'")
            db.run(schema.create(db.dialect))
            out.write(f"{db.url.describe()}: audit schema version {schema.VERSION} created\n")
            return 0
        if not have:
            raise AuditError(f"{db.url.describe()}: no audit schema to migrate; use 'schema create'")
        if have > schema.VERSION:
            raise AuditError(f"{db.url.describe()}: schema version {have} is newer than this pyulogd's "
                             f"({schema.VERSION})")
        if have == schema.VERSION:
            out.write(f"{db.url.describe()}: schema version {have}, up to date\n")
            return 0
        db.run(schema.steps(db.dialect, have))
        out.write(f"{db.url.describe()}: migrated from version {have} to {schema.VERSION}\n")
        return 0
    except DbError as e:
        raise AuditError(str(e)) from None
    finally:
        db.close()


def _printer(fmt: str, out: TextIO) -> Callable[[list[dict[str, Any]], bool], None]:
    """How rows are printed; the callable takes rows and whether a header is due."""
    writer = csv.writer(out, lineterminator="\n") if fmt == "csv" else None

    def emit(rows: list[dict[str, Any]], head: bool) -> None:
        if fmt == "jsonl":
            for r in rows:
                out.write(json.dumps(readable(r), ensure_ascii=False) + "\n")
        elif fmt == "csv":
            assert writer is not None
            if head:
                writer.writerow(LIST_COLUMNS)
            for r in rows:
                t = readable(r)
                writer.writerow(["" if t.get(c) is None else t[c] for c in LIST_COLUMNS])
        else:
            lines = table_lines(rows)
            for line in lines[0 if head else 1:]:
                out.write(escape_text(line) + "\n")
        out.flush()

    return emit


def cmd_query(a: argparse.Namespace, out: TextIO, clock: Clock) -> int:
    if a.limit <= 0:
        raise AuditError("--limit must be positive")
    f = make_filters(a, clock.wall())
    db = _db(a)
    try:
        rows = Store(db).select(f, a.limit, newest_first=a.newest_first)
    except DbError as e:
        raise AuditError(str(e)) from None
    finally:
        db.close()
    _printer(a.format, out)(rows, True)
    return 0


def _bucket(a: argparse.Namespace, f: Filters, clock: Clock) -> int:
    if a.bucket:
        return parse_span(a.bucket)
    lo = f.since if f.since is not None else None
    hi = f.until if f.until is not None else int(clock.wall() * 1e6)
    span = (hi - lo) // 1_000_000 if lo is not None else 86400
    for step in (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 86400, 7 * 86400):
        if span / step <= 48:
            return step
    return 30 * 86400


def cmd_summary(a: argparse.Namespace, out: TextIO, clock: Clock) -> int:
    f = make_filters(a, clock.wall())
    db = _db(a)
    try:
        s = Store(db).summary(f, a.top, _bucket(a, f, clock))
    except DbError as e:
        raise AuditError(str(e)) from None
    finally:
        db.close()
    if a.format == "json":
        out.write(json.dumps(_readable_summary(s), ensure_ascii=False, indent=1) + "\n")
        return 0
    r = _readable_summary(s)
    w = out.write
    w(f"records: {r['records']}  from {r['first']} to {r['last']}  hosts: {', '.join(r['hosts']) or '-'}\n")
    w("by action: " + ", ".join(f"{k} {v}" for k, v in r["by_action"].items()) + "\n")
    w(f"rate-limited: {r['suppressed']['records']} records in {r['suppressed']['summaries']} summaries; "
      f"lost: {sum(x['count'] for x in r['losses'])} records in {len(r['losses'])} loss records\n")
    w("\ntop talkers (source, records, bytes):\n")
    for t in r["top_talkers"]:
        w(f"  {t['src_ip']:40} {t['records']:>10} {t['bytes']:>14}\n")
    w("\ntop dropped destinations (destination, port, proto, records):\n")
    for t in r["top_dropped_destinations"]:
        w(f"  {t['dst_ip'] or '-':40} {t['dport'] if t['dport'] is not None else '-':>6} {t['proto'] or '-':>10} "
          f"{t['records']:>10}\n")
    w(f"\nover time (buckets of {r['bucket']} s):\n")
    for b in r["over_time"]:
        w(f"  {b['t']}  " + ", ".join(f"{k} {v}" for k, v in b.items() if k != "t") + "\n")
    for name, title in (("per_router", "per router"), ("per_port", "per port"), ("per_netns", "per namespace"),
                        ("per_project", "per project")):
        if r[name]:
            w(f"\n{title}:\n")
            for row in r[name]:
                w(f"  {escape_text(row['key']):40} " + ", ".join(f"{k} {v}" for k, v in row.items() if k != "key")
                  + "\n")
    return 0


def _readable_summary(s: dict[str, Any]) -> dict[str, Any]:
    from pyulogd.audit.query import ip_text, proto_name

    r = dict(s)
    r["first"], r["last"] = time_text(s["first"]), time_text(s["last"])
    r["top_talkers"] = [{**t, "src_ip": ip_text(t["src_ip"])} for t in s["top_talkers"]]
    r["top_dropped_destinations"] = [{**t, "dst_ip": ip_text(t["dst_ip"]), "proto": proto_name(t["proto"])}
                                     for t in s["top_dropped_destinations"]]
    r["over_time"] = [{**b, "t": time_text(b["t"] * 1_000_000)} for b in s["over_time"]]
    r["losses"] = [readable(x) for x in s["losses"]]
    return r


def cmd_who_had(a: argparse.Namespace, out: TextIO, clock: Clock) -> int:
    at = parse_time(a.time, clock.wall())
    window = parse_span(a.window)
    db = _db(a)
    try:
        holders = Store(db).who_had(a.address, at, window)
    except DbError as e:
        raise AuditError(str(e)) from None
    finally:
        db.close()
    rows = [readable(h) for h in holders]
    if a.format == "json":
        out.write(json.dumps(rows, ensure_ascii=False, indent=1) + "\n")
        return 0 if rows else 3
    if not rows:
        out.write(f"{a.address}: no record carries it within {window} s of {time_text(at)}\n")
        return 3
    out.write(f"{a.address} around {time_text(at)} (±{window} s), nearest first:\n")
    for h in rows:
        who = ", ".join(f"{k} {escape_text(str(h[k]))}" for k in ("port_id", "project_id", "router_id", "network_id",
                                                                  "netns", "host") if k in h)
        nat = f" fixed {h.get('fixed_ip')}" + (f" floating/SNAT {h['floating_ip']}" if h.get("floating_ip") else "")
        out.write(f"  {h['role']}:{nat}; {who or 'no port or namespace recorded'}; seen {h['records']} times "
                  f"from {h['first']} to {h['last']}\n")
    return 0


def cmd_follow(a: argparse.Namespace, out: TextIO, clock: Clock) -> int:
    interval = float(parse_span(a.interval)) if not a.interval.replace(".", "", 1).isdigit() else float(a.interval)
    if interval <= 0:
        raise AuditError("--interval must be positive")
    f = make_filters(a, clock.wall())
    db = _db(a)
    stop = []
    old = signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    try:
        store = Store(db)
        store.require_audit("follow")
        last = store.db.rows(f"SELECT MAX(id) FROM {schema.TABLE}")[0][0] or 0
        emit = _printer(a.format, out)
        head, shown = True, 0
        while not stop:
            rows = store.select(f, 1000, after_id=int(last))
            if rows:
                last = rows[-1]["id"]
                if a.max_records:
                    rows = rows[: a.max_records - shown]
                emit(rows, head)
                head = False
                shown += len(rows)
                if a.max_records and shown >= a.max_records:
                    break
                continue
            clock.sleep(interval)
    except KeyboardInterrupt:
        pass
    except DbError as e:
        raise AuditError(str(e)) from None
    finally:
        signal.signal(signal.SIGTERM, old)
        db.close()
    return 0


def cmd_report(a: argparse.Namespace, out: TextIO, clock: Clock) -> int:
    from pyulogd.audit.report import write_report

    f = make_filters(a, clock.wall())
    db = _db(a)
    try:
        store = Store(db)
        s = store.summary(f, a.top, _bucket(a, f, clock))
        recent = store.select(f, 50, newest_first=True)
    except DbError as e:
        raise AuditError(str(e)) from None
    finally:
        db.close()
    try:
        write_report(a.html, s, recent, db.url.describe(), f, clock.wall())
    except OSError as e:
        raise AuditError(f"{a.html}: {e.strerror}") from None
    out.write(f"{a.html}: report of {s['records']} records\n")
    return 0


def cmd_verify(a: argparse.Namespace, out: TextIO) -> int:
    from pyulogd.audit import verify
    from pyulogd.io.chain import read_key

    try:
        key = read_key(a.key)
    except OSError as e:
        raise AuditError(f"--key {a.key}: {e.strerror or e}") from None
    if a.file and a.db:
        raise AuditError("give either --file FILE... or --db URL, not both")
    if not a.file and not (a.db or os.environ.get(ENV_DB)):
        raise AuditError("give --file FILE... (chained files) or --db URL (the audit table)")
    if a.file:
        try:
            report = verify.check(verify.file_records(a.file, key), key)
        except OSError as e:
            raise AuditError(f"{e.filename}: {e.strerror}") from None
        what = ", ".join(a.file)
    else:
        db = _db(a)
        try:
            if a.table:
                report = verify.check(verify.table_records(db, a.table, a.order_by, a.output), key)
                return _verdict(report, f"{db.url.describe()} table {a.table}", out)
            store = Store(db)
            store.require_audit("verify")
            if store.version < 2:
                raise AuditError(f"{db.url.describe()}: schema version {store.version} has no chain columns: "
                                 "'pyulogd-audit schema migrate' (and an AUDITDB output with chain_key)")
            report = verify.check(verify.db_records(db), key)
        except DbError as e:
            raise AuditError(str(e)) from None
        finally:
            db.close()
        what = db.url.describe()
    return _verdict(report, what, out)


def _verdict(report: Any, what: str, out: TextIO) -> int:
    for finding in report.findings:
        out.write(escape_text(finding.line()) + "\n")
    last = f"last seq {report.last[0]} tag {report.last[1]}" if report.last else "no chained record"
    verdict = "OK" if report.ok else "TAMPERED"
    out.write(f"{what}: {report.records} records in {report.chains} chain(s), {last}: {verdict}\n")
    return 0 if report.ok else 1


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, clock: Clock | None = None) -> int:
    out = out or sys.stdout
    clock = clock or SystemClock()
    try:
        a = build_parser().parse_args(argv)
        if a.command == "schema":
            return cmd_schema(a, out)
        if a.command == "query":
            return cmd_query(a, out, clock)
        if a.command == "summary":
            return cmd_summary(a, out, clock)
        if a.command == "who-had":
            return cmd_who_had(a, out, clock)
        if a.command == "follow":
            return cmd_follow(a, out, clock)
        if a.command == "report":
            return cmd_report(a, out, clock)
        return cmd_verify(a, out)
    except AuditError as e:
        print(f"{PROG}: {escape_text(str(e))}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except Exception as e:  # noqa: BLE001 - one line, never a traceback (the brief's rule)
        print(f"{PROG}: internal error: {type(e).__name__}: {escape_text(str(e))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
