"""The audit store (AUDITDB output, audit schema) and ``pyulogd-audit`` on SQLite: filters,
formats, summary, who-had, follow, schema create/migrate, ulogd's tables, bad input."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pyulogd.audit import schema
from pyulogd.audit.dburl import parse
from pyulogd.audit.query import parse_net, parse_time
from pyulogd.core.clock import FakeClock
from pyulogd.core.errors import ConfigError
from pyulogd.plugins.outputs.auditdb import AuditDbOutput
from tests.audit_helpers import PORT_A, PORT_B, PROJECT, ROUTER, T0, fill, ip, run, trail


@pytest.fixture
def store(tmp_path: Path) -> str:
    d = tmp_path / "db"
    d.mkdir(mode=0o700)
    url = f"sqlite:///{d}/audit.db"
    fill(url, tmp_path / "spool")
    return url


def jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


# -- the rows
def test_rows_of_every_kind(store: str) -> None:
    con = sqlite3.connect(parse(store).path)
    con.row_factory = sqlite3.Row
    rows = con.execute(f"SELECT * FROM {schema.TABLE} ORDER BY id").fetchall()
    assert len(rows) == len(trail())
    first = rows[0]
    assert first["ts"] == T0 * 1_000_000 and first["ts_source"] == "conntrack" and first["kind"] == "flow_start"
    assert first["src_ip"] == b"\x00" * 10 + b"\xff\xff" + ip("198.51.100.9")
    assert first["dst_ip"][12:] == ip("203.0.113.5") and first["nat_dst_ip"][12:] == ip("10.0.0.5")
    assert first["nat_src_ip"] is None and (first["sport"], first["dport"], first["nat_dport"]) == (40000, 22, 22)
    assert (first["action"], first["rule"], first["port_id"], first["router_id"], first["project_id"]) == (
        "ACCEPT", "sg allow ssh", PORT_A, ROUTER, PROJECT)
    assert first["host"] == "net1" and first["proto"] == 6 and first["family"] == 4
    assert first["community_id"].startswith("1:")
    summary = [r for r in rows if r["kind"] == "summary"]
    assert len(summary) == 1 and summary[0]["suppressed"] == 250
    assert summary[0]["start_ts"] == (T0 + 3650) * 1_000_000
    loss = [r for r in rows if r["kind"] == "loss"]
    assert loss[0]["loss_count"] == 17 and loss[0]["loss_reason"] == "enobufs"
    assert all(r["seq"] is None for r in rows)  # no chain_key: no chain


def test_indexes_and_version(store: str) -> None:
    con = sqlite3.connect(parse(store).path)
    names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"ix_pyulogd_audit_ts", "ix_pyulogd_audit_src", "ix_pyulogd_audit_dst"} <= names
    plan = " ".join(str(r) for r in con.execute(
        f"EXPLAIN QUERY PLAN SELECT * FROM {schema.TABLE} WHERE ts >= 1 AND ts < 2 ORDER BY ts LIMIT 10"))
    assert "ix_pyulogd_audit_ts" in plan
    assert con.execute(f"SELECT value FROM {schema.META}").fetchone()[0] == str(schema.VERSION)


# -- filters
@pytest.mark.parametrize(
    ("args", "count"),
    [
        ((), 62),
        (("--action", "DROP"), 21),
        (("--action", "drop,REJECT"), 31),
        (("--ip", "203.0.113.5"), 30),
        (("--ip", "10.0.0.0/24"), 62),  # every record has 10.0.0.x on one side or after NAT
        (("--src", "192.0.2.64/30"), 31),
        (("--dst", "192.0.2.66"), 0),
        (("--ip", "2001:db8::/32"), 0),
        (("--port", "22"), 20),
        (("--dport", "443"), 10),
        (("--sport", "60000"), 31),
        (("--proto", "tcp"), 62),
        (("--proto", "17"), 0),
        (("--rule", "DEFAULT"), 30),
        (("--rule", "%"), 0),  # LIKE wildcards are taken literally
        (("--port-id", PORT_B), 10),
        (("--router", ROUTER), 61),
        (("--project", PROJECT), 61),
        (("--kind", "flow_end"), 30),
        (("--kind", "loss"), 1),
        (("--since", "2027-01-15T09:00:00Z", "--until", "2027-01-15T10:00:00"), 32),
        (("--since", "@1800003600", "--until", "@1800003610"), 10),
        (("--since", "2027-01-15T09:00:00+01:00", "--until", "2027-01-15T08:00:30Z"), 1),
        (("--since", "1d"), 62),  # the clock stands one day after T0
        (("--since", "1h"), 0),
        (("--netns", "qrouter-x"), 0),
        (("--host", "net1"), 62),
    ],
)
def test_query_filters(store: str, args: tuple[str, ...], count: int) -> None:
    rc, out, err = run("query", "--db", store, "--format", "jsonl", *args)
    assert (rc, err) == (0, "")
    assert len(jsonl(out)) == count


def test_query_formats(store: str) -> None:
    rc, out, _ = run("query", "--db", store, "--port-id", PORT_B, "--format", "csv", "--limit", "3")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rc == 0 and len(rows) == 3
    assert rows[0]["src_ip"] == "198.51.100.10" and rows[0]["nat_dst_ip"] == "10.0.0.6" and rows[0]["dport"] == "443"
    rc, out, _ = run("query", "--db", store, "--kind", "flow_start", "--limit", "2")
    lines = out.splitlines()
    assert rc == 0 and lines[0].split()[:4] == ["time", "kind", "action", "proto"]
    assert "198.51.100.9:40000" in lines[1] and "dnat 10.0.0.5:22" in lines[1] and "sg allow ssh" in lines[1]
    rc, out, _ = run("query", "--db", store, "--newest-first", "--limit", "1", "--format", "jsonl")
    assert jsonl(out)[0]["dst_ip"] == "203.0.113.5" and jsonl(out)[0]["ts"] == "2027-01-15T10:09:00.000000Z"


def test_summary(store: str) -> None:
    rc, out, _ = run("summary", "--db", store, "--format", "json", "--bucket", "1h")
    s = json.loads(out)
    assert rc == 0 and s["records"] == 62 and s["hosts"] == ["net1"]
    assert s["by_action"] == {"ACCEPT": 30, "DROP": 21, "REJECT": 10, "-": 1}
    assert s["top_talkers"][0] == {"src_ip": "192.0.2.66", "records": 31, "bytes": 0}
    assert s["top_dropped_destinations"][0]["dst_ip"] == "10.0.0.5"
    assert [b["t"] for b in s["over_time"]] == ["2027-01-15T08:00:00.000000Z", "2027-01-15T09:00:00.000000Z",
                                                "2027-01-15T10:00:00.000000Z"]
    assert s["over_time"][1]["DROP"] == 21 and s["over_time"][1]["REJECT"] == 10
    assert s["per_port"][0] == {"key": PORT_A, "ACCEPT": 20, "DROP": 20, "REJECT": 10}
    assert s["per_router"][0]["key"] == ROUTER
    assert s["suppressed"] == {"summaries": 1, "records": 250}
    assert s["losses"][0]["count"] == 17 and s["losses"][0]["reason"] == "enobufs"
    rc, out, _ = run("summary", "--db", store, "--since", "2027-01-15T09:00:00Z", "--until", "2027-01-15T10:00:00Z")
    assert rc == 0 and "records: 32" in out and "192.0.2.66" in out and "per port:" in out


def test_who_had_a_floating_ip(store: str) -> None:
    """The abuse-report question: who held 203.0.113.5 at 08:10 (port A) and at 10:05 (port B)."""
    rc, out, _ = run("who-had", "--db", store, "203.0.113.5", "2027-01-15T08:10:00Z", "--format", "json")
    holders = json.loads(out)
    assert rc == 0 and holders[0]["port_id"] == PORT_A and holders[0]["fixed_ip"] == "10.0.0.5"
    assert holders[0]["role"] == "floating IP (DNAT)" and holders[0]["project_id"] == PROJECT
    rc, out, _ = run("who-had", "--db", store, "203.0.113.5", "2027-01-15T10:05:00Z", "--window", "30m")
    assert rc == 0 and PORT_B in out and "10.0.0.6" in out and PORT_A not in out
    rc, out, _ = run("who-had", "--db", store, "10.0.0.6", "2027-01-15T10:05:00Z", "--format", "json")
    assert json.loads(out)[0]["role"] == "fixed IP behind a floating IP"
    assert json.loads(out)[0]["floating_ip"] == "203.0.113.5"
    rc, out, _ = run("who-had", "--db", store, "203.0.113.5", "2027-01-16T08:10:00Z")
    assert rc == 3 and "no record" in out


class FillingClock(FakeClock):
    """A clock whose sleeps are when new records arrive (follow's poll interval)."""

    def __init__(self, url: str, spool: Path) -> None:
        super().__init__(wall=T0 + 86400)
        self.url, self.spool, self.sleeps = url, spool, 0

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        fill(self.url, self.spool, trail()[:3])


def test_follow_prints_new_records(store: str, tmp_path: Path) -> None:
    clock = FillingClock(store, tmp_path / "spool2")
    rc, out, _ = run("follow", "--db", store, "--max-records", "5", "--port-id", PORT_A, clock=clock)
    rows = jsonl(out)
    assert rc == 0 and len(rows) == 5 and clock.sleeps == 2
    assert all(r["port_id"] == PORT_A for r in rows) and rows[0]["id"] == 63  # only what came after the start


def test_schema_create_migrate_show(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/new.db"
    assert run("schema", "show", "--db", url)[0] == 2  # a mistyped path creates nothing
    rc, out, _ = run("schema", "create", "--db", url)
    assert rc == 0 and f"version {schema.VERSION} created" in out
    rc, _, err = run("schema", "create", "--db", url)
    assert rc == 2 and "already there" in err
    assert "up to date" in run("schema", "migrate", "--db", url)[1]
    old = tmp_path / "old.db"
    con = sqlite3.connect(old)
    con.executescript(";".join(schema.create_v1("sqlite")))
    con.execute(f"INSERT INTO {schema.TABLE} (ts, kind) VALUES (1, 'packet')")
    con.commit()
    con.close()
    rc, out, _ = run("schema", "show", "--db", f"sqlite:///{old}")
    assert "version 1" in out
    with pytest.raises(ConfigError, match="schema migrate"):
        fill(f"sqlite:///{old}", tmp_path / "sp")  # the daemon refuses an old schema, it does not ALTER it
    rc, out, _ = run("schema", "migrate", "--db", f"sqlite:///{old}")
    assert rc == 0 and f"from version 1 to {schema.VERSION}" in out
    con = sqlite3.connect(old)
    cols = [r[1] for r in con.execute(f"PRAGMA table_info({schema.TABLE})")]
    assert cols[-4:] == ["seq", "chain", "node_id", "node_seq"]
    assert con.execute(f"SELECT ts FROM {schema.TABLE}").fetchall() == [(1,)]
    fill(f"sqlite:///{old}", tmp_path / "sp", trail()[:2])
    assert con.execute(f"SELECT COUNT(*) FROM {schema.TABLE}").fetchone()[0] == 3


def test_ulogd_tables_with_fewer_filters(tmp_path: Path) -> None:
    """Debian's sqlite3.table keeps working: time, ports, protocol, prefix; other filters
    are refused by name."""
    db = tmp_path / "ulogd.db"
    con = sqlite3.connect(db)
    con.executescript((Path(__file__).resolve().parents[2] / "examples" / "sqlite3.table").read_text())
    con.execute("INSERT INTO ulog_ct (flow_start_sec, orig_ip_protocol, orig_l4_sport, orig_l4_dport) "
                "VALUES (?, 6, 1234, 22)", (T0,))
    con.execute("INSERT INTO ulog_pkt (oob_time_sec, oob_prefix, raw_pktlen) VALUES (?, 'DROP in ', 60)", (T0 + 5,))
    con.commit()
    url = f"sqlite:///{db}"
    rc, out, _ = run("query", "--db", url, "--format", "jsonl")
    assert rc == 0 and [r["kind"] for r in jsonl(out)] == ["ulogd:ulog_ct", "ulogd:ulog_pkt"]
    rc, out, _ = run("query", "--db", url, "--since", "@1800000001", "--format", "jsonl")
    assert [r["rule"] for r in jsonl(out)] == ["DROP in "]
    rc, _, err = run("query", "--db", url, "--dport", "22")
    assert rc == 2 and "ulog_pkt cannot answer" in err
    rc, _, err = run("query", "--db", url, "--action", "DROP")
    assert rc == 2 and "--action" in err and len(err.splitlines()) == 1
    rc, _, err = run("summary", "--db", url)
    assert rc == 2 and "audit schema" in err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (("query", "--colour", "red"), "unrecognized arguments: --colour"),
        (("query", "--ip", "10.0.0.0/33"), "expected an IPv4/IPv6 address or a CIDR"),
        (("query", "--src", "fe80::/129"), "expected an IPv4/IPv6 address or a CIDR"),
        (("query", "--since", "yesterday-ish"), "time 'yesterday-ish'"),
        (("query", "--until", "2027-13-01"), "time '2027-13-01'"),
        (("query", "--port", "70000"), "port '70000'"),
        (("query", "--proto", "tcpx"), "protocol 'tcpx'"),
        (("query", "--action", "ALLOW"), "action 'ALLOW'"),
        (("query", "--kind", "x"), "invalid choice"),
        (("query", "--limit", "0"), "--limit must be positive"),
        (("who-had", "10.0.0.0/24", "now"), "one address"),
        (("who-had", "10.0.0.1", "now", "--window", "-5"), "duration"),
        (("frobnicate",), "invalid choice"),
    ],
)
def test_bad_input_is_one_line(store: str, argv: tuple[str, ...], says: str) -> None:
    rc, out, err = run(*argv[:1], "--db", store, *argv[1:]) if argv[0] != "frobnicate" else run(*argv)
    assert rc == 2 and out == ""
    assert len(err.splitlines()) == 1 and says in err and "Traceback" not in err, err


@pytest.mark.parametrize(
    ("db", "says"),
    [
        ("oracle://x/y", "expected sqlite:///PATH"),
        ("sqlite:///nonexistent/dir/x.db", "no such database file"),
        ("postgresql://nobody@127.0.0.1:1/x", "postgresql://nobody@127.0.0.1:1/x"),
        ("mysql://root@127.0.0.1:1/x", "mysql://root@127.0.0.1:1/x"),
    ],
)
def test_bad_databases(db: str, says: str) -> None:
    rc, out, err = run("query", "--db", db)
    assert rc == 2 and len(err.splitlines()) == 1 and says in err, err


def test_not_a_pyulogd_database(tmp_path: Path) -> None:
    con = sqlite3.connect(tmp_path / "other.db")
    con.execute("CREATE TABLE customers (id INTEGER)")
    con.commit()
    (tmp_path / "junk.db").write_bytes(b"this is not a database at all" * 100)
    for name, says in (("other.db", "not a pyulogd or ulogd database"), ("junk.db", "not a database")):
        rc, _, err = run("query", "--db", f"sqlite:///{tmp_path / name}")
        assert rc == 2 and says in err and len(err.splitlines()) == 1, err


def test_the_console_script_never_shows_a_traceback(tmp_path: Path) -> None:
    """As a user runs it: one line on stderr, status 2."""
    p = subprocess.run([sys.executable, "-m", "pyulogd.audit.cli", "query", "--db", "sqlite:///" + str(tmp_path),
                        "--ip", "nonsense"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and p.stdout == "" and len(p.stderr.splitlines()) == 1
    assert "Traceback" not in p.stderr


def test_parsers() -> None:
    assert parse_time("2027-01-15T08:00:00Z", 0) == T0 * 1_000_000
    assert parse_time("15m", T0) == (T0 - 900) * 1_000_000
    assert parse_time("today", T0 + 5000) == (T0 - 8 * 3600) * 1_000_000
    assert parse_net("10.0.0.0/8") == (b"\x00" * 10 + b"\xff\xff" + ip("10.0.0.0"),
                                       b"\x00" * 10 + b"\xff\xff" + ip("10.255.255.255"))
    assert parse("postgresql://u:p%40ss@db.example:5433/audit").password == "p@ss"
    assert parse("postgresql://u@/audit?host=/run/postgresql").host == "/run/postgresql"
    assert parse("sqlite:relative.db").path == "relative.db"


def test_auditdb_options_are_checked(tmp_path: Path) -> None:
    from tests.helpers import make_stack
    from tests.unit.test_ecs import CtSource

    with pytest.raises(ConfigError, match="expected sqlite:///PATH"):
        make_stack([CtSource, (AuditDbOutput, {"db": "db.sqlite"})])
