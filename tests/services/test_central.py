"""The central PostgreSQL layout (audit/central.py) on a PostgreSQL the test starts itself:
created by ``pyulogd-audit schema create --central``, day partitions and retention driven by
the command's injected clock, AUDITDB writing into it with duplicates skipped, ulogd-compatible
views, and row-level security by project tested with two project roles."""

from __future__ import annotations

import io
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from pyulogd.audit import central
from pyulogd.audit.cli import main as audit_main
from pyulogd.core.clock import FakeClock
from pyulogd.core.context import Context
from pyulogd.io.loop import Loop
from pyulogd.plugins.outputs.auditdb import AuditDbOutput
from tests.helpers import BaseKeys, NflogKeys, make_stack, stop_stack
from tests.services.servers import PgCluster, pg_bindir

pytest.importorskip("psycopg")
pytestmark = [pytest.mark.services, pytest.mark.skipif(pg_bindir() is None, reason="no PostgreSQL server binaries")]
NOW = 1_800_000_000.0  # 2027-01-15 08:00 UTC
DAY = 86_400


@pytest.fixture(scope="module")
def pg() -> Iterator[PgCluster]:
    cluster = PgCluster()
    try:
        cluster.start()
        cluster.psql("CREATE DATABASE central")
        cluster.psql("CREATE ROLE pyn4_alice LOGIN; CREATE ROLE pyn4_bob LOGIN; CREATE ROLE pyn4_eve LOGIN")
        yield cluster
    finally:
        cluster.close()


def url(pg: PgCluster) -> str:
    return f"postgresql://postgres@127.0.0.1:{pg.port}/central"


def audit(pg: PgCluster, *args: str, now: float = NOW) -> tuple[int, str]:
    out = io.StringIO()
    rc = audit_main(["schema", *args, "--db", url(pg)], out=out, clock=FakeClock(wall=now))
    return rc, out.getvalue()


def as_role(pg: PgCluster, role: str, sql: str) -> str:
    r = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(pg.port), "-U", role, "-d", "central", "-Atq",
                        "-v", "ON_ERROR_STOP=1"], input=sql, text=True, capture_output=True)
    return r.stdout if r.returncode == 0 else "ERROR: " + r.stderr


def parts(pg: PgCluster) -> list[str]:
    return pg.psql("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                   "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'pyulogd_audit' ORDER BY 1",
                   db="central").split()


def test_central_layout_end_to_end(pg: PgCluster, tmp_path: Any) -> None:
    rc, out = audit(pg, "create", "--central", "--retention-days", "3", "--ahead", "2")
    assert rc == 0, out
    assert parts(pg) == ["pyulogd_audit_default", "pyulogd_audit_p20270114", "pyulogd_audit_p20270115",
                         "pyulogd_audit_p20270116", "pyulogd_audit_p20270117"]
    rc, out = audit(pg, "create", "--central")
    assert rc == 2  # already there

    # AUDITDB on a collector: records with their nodes' (node_id, seq); the same records again
    # (a redelivery) are skipped by the unique key, not doubled.
    ctx = Context(loop=Loop(FakeClock(wall=NOW)))
    ctx.node_id = "node-x"
    stack = make_stack([NflogKeys, BaseKeys, (AuditDbOutput, {"db": url(pg), "spool_dir": str(tmp_path / "sp"),
                                                              "batch_timeout": "0"})], ctx)
    for inst in stack.instances:
        inst.running()
    src, base, out_ = stack.instances
    assert isinstance(src, NflogKeys) and isinstance(base, BaseKeys) and isinstance(out_, AuditDbOutput)
    base.values = {"ip.saddr": b"\x0a\x00\x00\x01", "ip.daddr": b"\x0a\x00\x00\x02", "ip.protocol": 6,
                   "tcp.sport": 1234, "tcp.dport": 22}
    for _again in range(2):
        ctx.seq = 0
        for i in range(10):
            src.emit_dict({"oob.prefix": "DROP", "oob.time.sec": int(NOW) + i, "oob.time.usec": 0})
        out_.flush()
    stop_stack(stack)
    assert ctx.stats.get("sql.auditdb2.duplicates") == 10
    rows = pg.psql("SELECT node_id, node_seq FROM pyulogd_audit ORDER BY node_seq", db="central").split()
    assert rows == [f"node-x|{i}" for i in range(1, 11)]
    # The ulogd view speaks ulogd2's columns.
    assert pg.psql("SELECT ip_saddr_str, ip_daddr_str, tcp_dport, oob_family FROM ulog2 LIMIT 1",
                   db="central").strip() == "10.0.0.1|10.0.0.2|22|2"

    # Row-level security: each project role reads its own project's rows, through the table and the views.
    pg.psql("INSERT INTO pyulogd_audit (ts, kind, project_id, node_id, node_seq, src_ip, dst_ip, family, proto) "
            f"SELECT {int(NOW) * 1000000} + g, 'packet', CASE WHEN g % 3 = 0 THEN 'proj-a' ELSE 'proj-b' END, "
            "'node-y', g, '\\x00000000000000000000ffff0a000001', '\\x00000000000000000000ffff0a000002', 4, 1 "
            "FROM generate_series(1, 30) g", db="central")
    assert audit(pg, "grant", "--role", "pyn4_alice", "--project", "proj-a")[0] == 0
    assert audit(pg, "grant", "--role", "pyn4_bob", "--project", "proj-b")[0] == 0
    assert audit(pg, "grant", "--role", "x; DROP TABLE y", "--project", "p")[0] == 2
    alice = as_role(pg, "pyn4_alice", "SELECT DISTINCT project_id, count(*) FROM pyulogd_audit GROUP BY 1")
    bob = as_role(pg, "pyn4_bob", "SELECT project_id, count(*) FROM ulog2 GROUP BY 1")
    assert alice.split() == ["proj-a|10"] and bob.split() == ["proj-b|20"]
    assert as_role(pg, "pyn4_bob", "SELECT count(*) FROM ulog2").strip() == "20"
    assert as_role(pg, "pyn4_eve", "SELECT count(*) FROM pyulogd_audit").startswith("ERROR")  # no grant
    assert as_role(pg, "pyn4_alice", "DELETE FROM pyulogd_audit").startswith("ERROR")  # read only

    # A record far in the future waits in the default partition, and moves into its day's
    # partition when maintenance makes that day.
    future = int(NOW + 10 * DAY) * 1000000  # beyond the partitions made so far (AUDITDB made 7 days ahead)
    pg.psql(f"INSERT INTO pyulogd_audit (ts, kind, node_id, node_seq) VALUES ({future}, 'packet', 'n', 1)",
            db="central")
    assert pg.psql("SELECT count(*) FROM pyulogd_audit_default", db="central").strip() == "1"
    # Five days later, retention (3 days) drops the three oldest days, and says how many rows went.
    rc, out = audit(pg, "maintain", now=NOW + 5 * DAY)
    assert rc == 0, out
    assert "dropped partition pyulogd_audit_p20270115 (40 rows, older than 3 days)" in out
    assert "40 rows dropped by retention" in out
    assert pg.psql("SELECT count(*) FROM pyulogd_audit_default", db="central").strip() == "0"
    assert pg.psql("SELECT count(*) FROM pyulogd_audit_p20270125", db="central").strip() == "1"
    remaining = parts(pg)
    assert "pyulogd_audit_p20270115" not in remaining and "pyulogd_audit_p20270118" in remaining
    assert pg.psql("SELECT value FROM pyulogd_meta WHERE name = 'retention_dropped_rows'",
                   db="central").strip() == "40"
    rc, out = audit(pg, "migrate", now=NOW + 5 * DAY)
    assert rc == 0 and "up to date" in out
    assert central.part_name(central.day_of(future)) == "pyulogd_audit_p20270125"
