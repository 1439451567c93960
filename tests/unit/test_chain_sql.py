"""Tamper evidence for ulogd's SQL tables (SQLITE3 here; PGSQL and MYSQL against the real
servers in tests/services/test_chain_servers.py): with ``chain_key`` each row carries
``pyulogd_seq`` and ``pyulogd_chain``; ``pyulogd-audit verify --db URL --table T`` finds rows
edited, deleted, reordered and inserted; without the option the rows are what they were."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from pyulogd.core.clock import FakeClock
from pyulogd.core.context import Context
from pyulogd.core.errors import ConfigError
from pyulogd.io.loop import Loop
from pyulogd.plugins.outputs.sqlite3 import Sqlite3Output
from tests.audit_helpers import chain_key_file, run
from tests.helpers import BaseKeys, NflogKeys, golden_packets, make_stack, stop_stack

# ulogd-style columns of several types: text, integers, an address (an integer in SQLite),
# booleans, bytes; then the two chain columns
COLUMNS = ("oob_prefix text, oob_time_sec integer, oob_mark integer, ip_saddr integer, ip_protocol integer, "
           "tcp_syn integer, tcp_ack integer, raw_mac blob")
CHAINED = COLUMNS + ", pyulogd_seq integer, pyulogd_chain varchar(32)"


@pytest.fixture
def key(tmp_path: Path) -> Path:
    return chain_key_file(tmp_path)


def table(db: Path, columns: str) -> None:
    con = sqlite3.connect(db)
    con.execute(f"CREATE TABLE t ({columns})")
    con.commit()
    con.close()


def fill(db: Path, packets: list[Any], **opts: Any) -> None:
    ctx = Context(loop=Loop(FakeClock(wall=1800000000.0)), hostname="fw1")
    cfg = {"db": str(db), "table": "t", "batch_timeout": "50ms", **opts}
    stack = make_stack([NflogKeys, BaseKeys, (Sqlite3Output, cfg)], ctx)
    base = stack.instances[1]
    for nflog, values, _obj, _emu in packets:
        base.values = values
        stack.source.emit_dict(nflog)
    stack.instances[-1].flush()
    stop_stack(stack)


def rows(db: Path, sql: str = "SELECT * FROM t ORDER BY rowid") -> list[tuple[Any, ...]]:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def change(db: Path, *sql: str) -> None:
    con = sqlite3.connect(db)
    for s in sql:
        con.execute(s)
    con.commit()
    con.close()


def verify(key: Path, db: Path, *more: str) -> tuple[int, list[str]]:
    rc, out, err = run("verify", "--key", str(key), "--db", f"sqlite:///{db}", "--table", "t", *more)
    assert err == "", err
    return rc, out.splitlines()


def test_sqlite3_rows_are_chained_and_tampering_is_found(tmp_path: Path, key: Path) -> None:
    packets = golden_packets()[:12]
    plain, chained = tmp_path / "plain.db", tmp_path / "chained.db"
    table(plain, COLUMNS)
    table(chained, CHAINED)
    fill(plain, packets)
    fill(chained, packets, chain_key=str(key))
    got = rows(chained)
    assert [r[:-2] for r in got] == rows(plain)  # the values are what they were without the chain
    assert [r[-2] for r in got] == list(range(1, 13)) and all(len(r[-1]) == 22 for r in got)
    assert any(r[5] == 1 for r in got) and any(isinstance(r[7], bytes) for r in got)
    rc, out = verify(key, chained)
    assert rc == 0 and out[-1].endswith(f"12 records in 1 chain(s), last seq 12 tag {got[-1][-1]}: OK"), out

    def tampered(*sql: str) -> list[str]:
        db = tmp_path / f"t{len(os.listdir(tmp_path))}.db"
        db.write_bytes(chained.read_bytes())
        change(db, *sql)
        rc, out = verify(key, db)
        assert rc == 1 and out[-1].endswith("TAMPERED"), out
        return [line for line in out[:-1] if ": duplicate:" not in line]

    assert tampered("UPDATE t SET oob_mark = 7 WHERE pyulogd_seq = 4")[0].startswith("rowid 4: changed: seq 4")
    assert tampered("UPDATE t SET tcp_syn = 1 - tcp_syn WHERE pyulogd_seq = 5")[0].startswith("rowid 5: changed")
    assert tampered("DELETE FROM t WHERE pyulogd_seq IN (6, 7)")[0].startswith("rowid 8: missing: seq 6..7")
    # two rows swapped (their places in insertion order): moved
    assert tampered("UPDATE t SET rowid = 100 WHERE rowid = 2", "UPDATE t SET rowid = 2 WHERE rowid = 3",
                    "UPDATE t SET rowid = 3 WHERE rowid = 100")[0].startswith("rowid 3: moved: seq 2 comes after seq 3")
    found = tampered("INSERT INTO t (oob_prefix, pyulogd_seq, pyulogd_chain) "
                     "VALUES ('forged', 20, 'AAAAAAAAAAAAAAAAAAAAAA')")
    assert any("rowid 13: missing: seq 13..19" in f for f in found)  # a forged seal cannot join the chain
    assert tampered("INSERT INTO t (oob_prefix) VALUES ('by hand')")[0].startswith("rowid 13: unsealed")


def test_restart_resumes_the_chain(tmp_path: Path, key: Path) -> None:
    db = tmp_path / "c.db"
    table(db, CHAINED)
    packets = golden_packets()[:6]
    fill(db, packets[:3], chain_key=str(key))
    fill(db, packets[3:], chain_key=str(key))
    assert [r[0] for r in rows(db, "SELECT pyulogd_seq FROM t ORDER BY rowid")] == [1, 2, 3, 4, 5, 6]
    rc, out = verify(key, db)
    assert rc == 0 and "6 records in 1 chain(s)" in out[-1]
    rc, out = verify(key, db, "--order-by", "pyulogd_seq")
    assert rc == 0 and out[-1].endswith("6 records in 1 chain(s), last seq 6 tag " + out[-1][-26:-4] + ": OK")
    rc, out, err = run("verify", "--key", str(key), "--db", f"sqlite:///{db}", "--table", "t", "--output", "JSON")
    assert rc != 0 and "--output JSON" in err


def test_chain_needs_the_columns_and_verify_needs_a_chained_table(tmp_path: Path, key: Path) -> None:
    db = tmp_path / "p.db"
    table(db, COLUMNS)
    with pytest.raises(ConfigError, match="pyulogd_seq and pyulogd_chain.*ALTER TABLE t ADD COLUMN pyulogd_seq"):
        fill(db, [], chain_key=str(key))
    rc, out, err = run("verify", "--key", str(key), "--db", f"sqlite:///{db}", "--table", "t")
    assert rc != 0 and "not chained" in err and "Traceback" not in err
    rc, out, err = run("verify", "--key", str(key), "--db", f"sqlite:///{db}", "--table", "t; DROP TABLE t")
    assert rc != 0 and "not a plain table" in err

