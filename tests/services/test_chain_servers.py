"""Tamper evidence for ulogd's tables on the real servers: PGSQL into PostgreSQL and MYSQL into
MariaDB with ``chain_key`` (columns ``pyulogd_seq``, ``pyulogd_chain`` added to a ulogd-style
table, its id column first, as ulogd's schemas have it); ``pyulogd-audit verify --db URL
--table T`` passes the rows as written and finds them edited, deleted, reordered (by the id
column) and inserted. Values come back from the servers in their own types (booleans, numerics),
which the chain's canonical form reads alike. Each test has its own database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pyulogd.core.clock import FakeClock
from pyulogd.core.context import Context
from pyulogd.io.loop import Loop
from pyulogd.plugins.outputs.mysql import MysqlOutput
from pyulogd.plugins.outputs.pgsql import PgsqlOutput
from tests.audit_helpers import chain_key_file, run
from tests.helpers import BaseKeys, NflogKeys, golden_packets, make_stack, stop_stack
from tests.services.conftest import MYSQL_ADDR, PG_ADMIN, mysql_admin

pytestmark = [pytest.mark.services]

PG_TABLE = ("CREATE TABLE t (_id bigserial PRIMARY KEY, oob_prefix varchar(32), oob_time_sec bigint, "
            "oob_mark bigint, ip_saddr bigint, ip_protocol smallint, tcp_syn boolean, tcp_ack integer, "
            "raw_mac bytea, pyulogd_seq bigint, pyulogd_chain varchar(32))")
MY_TABLE = ("CREATE TABLE t (_id bigint AUTO_INCREMENT PRIMARY KEY, oob_prefix varchar(32), oob_time_sec bigint, "
            "oob_mark bigint, ip_saddr bigint, ip_protocol smallint, tcp_syn boolean, tcp_ack integer, "
            "raw_mac varbinary(80), pyulogd_seq bigint, pyulogd_chain varchar(32))")


@pytest.fixture
def key(tmp_path: Path) -> Path:
    return chain_key_file(tmp_path)


def fill(cls: Any, cfg: dict[str, Any], n: int = 12) -> None:
    ctx = Context(loop=Loop(FakeClock(wall=1800000000.0)), hostname="fw1")
    stack = make_stack([NflogKeys, BaseKeys, (cls, {"table": "t", "procedure": "INSERT", "batch_timeout": "50ms",
                                                    **cfg})], ctx)  # fmt: skip
    base = stack.instances[1]
    for nflog, values, _obj, _emu in golden_packets()[:n]:
        base.values = values
        stack.source.emit_dict(nflog)
    stack.instances[-1].flush()
    stop_stack(stack)


def check(key: Path, url: str, execute: Any) -> None:
    """Verify as written, then after each kind of tampering (undone after each)."""

    def verify() -> tuple[int, list[str]]:
        rc, out, err = run("verify", "--key", str(key), "--db", url, "--table", "t", "--order-by", "_id")
        assert err == "", err
        return rc, out.splitlines()

    rc, out = verify()
    assert rc == 0 and "12 records in 1 chain(s), last seq 12" in out[-1], out
    cases = [
        (["UPDATE t SET oob_mark = oob_mark + 1 WHERE pyulogd_seq = 4"],
         ["UPDATE t SET oob_mark = oob_mark - 1 WHERE pyulogd_seq = 4"], "_id 4: changed: seq 4"),
        (["UPDATE t SET tcp_syn = NOT tcp_syn WHERE pyulogd_seq = 5"],
         ["UPDATE t SET tcp_syn = NOT tcp_syn WHERE pyulogd_seq = 5"], "_id 5: changed: seq 5"),
        (["UPDATE t SET _id = 100 WHERE _id = 2", "UPDATE t SET _id = 2 WHERE _id = 3",
          "UPDATE t SET _id = 3 WHERE _id = 100"],
         ["UPDATE t SET _id = 100 WHERE _id = 2", "UPDATE t SET _id = 2 WHERE _id = 3",
          "UPDATE t SET _id = 3 WHERE _id = 100"], "_id 3: moved: seq 2 comes after seq 3"),
        (["INSERT INTO t (_id, oob_prefix) VALUES (50, 'by hand')"], ["DELETE FROM t WHERE _id = 50"],
         "_id 50: unsealed"),
        (["DELETE FROM t WHERE pyulogd_seq IN (6, 7)"], [], "_id 8: missing: seq 6..7"),
    ]
    for do, undo, want in cases:
        execute(do)
        rc, out = verify()
        found = [line for line in out[:-1] if ": duplicate:" not in line]
        assert rc == 1 and found and found[0].startswith(want), (want, out)
        execute(undo)
        if undo:
            assert verify()[0] == 0


def test_pgsql_rows_chained(pg_db: str, key: Path) -> None:
    psycopg = pytest.importorskip("psycopg")
    with psycopg.connect(PG_ADMIN.replace("dbname=postgres", f"dbname={pg_db}"), autocommit=True) as con:
        con.execute(PG_TABLE)
    fill(PgsqlOutput, {"db": pg_db, "host": "127.0.0.1", "user": "postgres", "chain_key": str(key),
                       "spool_dir": str(key.parent / "spool")})  # fmt: skip

    def execute(statements: list[str]) -> None:
        with psycopg.connect(PG_ADMIN.replace("dbname=postgres", f"dbname={pg_db}"), autocommit=True) as con:
            for s in statements:
                con.execute(s)

    with psycopg.connect(PG_ADMIN.replace("dbname=postgres", f"dbname={pg_db}")) as con:
        got = con.execute("SELECT tcp_syn, pyulogd_seq FROM t ORDER BY _id").fetchall()
    assert [r[1] for r in got] == list(range(1, 13)) and any(r[0] is True for r in got)
    check(key, f"postgresql://postgres@127.0.0.1/{pg_db}", execute)


def test_mysql_rows_chained(my_db: str, key: Path) -> None:
    admin = mysql_admin()
    with admin.cursor() as cur:  # type: ignore[attr-defined]
        cur.execute(f"USE `{my_db}`")
        cur.execute(MY_TABLE)
    host, port = MYSQL_ADDR.rsplit(":", 1)
    fill(MysqlOutput, {"db": my_db, "host": host, "port": int(port), "user": "root", "chain_key": str(key),
                       "spool_dir": str(key.parent / "spool")})  # fmt: skip

    def execute(statements: list[str]) -> None:
        with admin.cursor() as cur:  # type: ignore[attr-defined]
            cur.execute(f"USE `{my_db}`")
            for s in statements:
                cur.execute(s)

    check(key, f"mysql://root@{host}:{port}/{my_db}", execute)


def test_dbi_table_with_its_id_column(pg_db: str, key: Path) -> None:
    """DBI skips the first column whatever its name: verify is told with --output DBI."""
    from pyulogd.plugins.outputs.dbi import DbiOutput

    psycopg = pytest.importorskip("psycopg")
    with psycopg.connect(PG_ADMIN.replace("dbname=postgres", f"dbname={pg_db}"), autocommit=True) as con:
        con.execute(PG_TABLE.replace("_id bigserial", "id bigserial"))
    fill(DbiOutput, {"db": pg_db, "dbtype": "pgsql", "host": "127.0.0.1", "user": "postgres",
                     "chain_key": str(key), "spool_dir": str(key.parent / "spool")}, n=5)  # fmt: skip
    url = f"postgresql://postgres@127.0.0.1/{pg_db}"
    rc, out, err = run("verify", "--key", str(key), "--db", url, "--table", "t", "--output", "DBI")
    assert rc == 0 and "5 records in 1 chain(s)" in out.splitlines()[-1], (out, err)
    rc, out, err = run("verify", "--key", str(key), "--db", url, "--table", "t")  # read as PGSQL's: id counts
    assert rc == 1 and "TAMPERED" in out
