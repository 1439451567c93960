"""Offline parity for SQLITE3: the golden pkt-sqlite3 and flow-sqlite3 cases of ulogd2 2.0.8.

As in test_golden_offline.py: the case's own ulogd.conf (database redirected), the table
created from Debian's schema as goldentool does, the captured netlink buffers in order;
then the database compared with goldentool's ``mask_sqlite`` (flows as sorted rows:
``conntrack -F`` orders the DESTROY events by hash bucket).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.compat.test_golden_offline import GOLDEN, SET, goldentool, replay, utc  # noqa: F401 - utc is a fixture

pytestmark = pytest.mark.skipif(not (SET / "pkt-sqlite3").is_dir(), reason="../shared/golden is not there")
SCHEMA = GOLDEN / "configs" / "sqlite3.table"


def create_table(db: Path, table: str) -> None:
    """What goldentool's render() does: the one CREATE TABLE of Debian's schema the case uses."""
    con = sqlite3.connect(db)
    for stmt in SCHEMA.read_text().split(";"):
        if f"TABLE {table} " in stmt:
            con.execute(stmt)
    con.commit()
    con.close()


def rows(db: Path, table: str) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(db)
    try:
        return con.execute(f"select * from {table}").fetchall()
    finally:
        con.close()


def test_pkt_sqlite3(tmp_path: Path, utc: None) -> None:  # noqa: F811
    create_table(tmp_path / "ulogd.sqlite3", "ulog_pkt")
    svc = replay("pkt-sqlite3", tmp_path)
    gt = goldentool()
    ref = gt.mask_sqlite(str(SET / "pkt-sqlite3" / "ulogd.sqlite3"))
    cand = gt.mask_sqlite(str(tmp_path / "ulogd.sqlite3"))
    assert len(cand) == len(ref) == 45  # the table line and 44 rows
    assert cand == ref
    # Unmasked: input-hook rows carry the kernel's timestamp, identical to 2.0.8's.
    ref_rows = rows(SET / "pkt-sqlite3" / "ulogd.sqlite3", "ulog_pkt")
    cand_rows = rows(tmp_path / "ulogd.sqlite3", "ulog_pkt")
    stamped = [(c, r) for c, r in zip(cand_rows, ref_rows, strict=True) if r[6] != 3]  # oob_hook 3: no stamp
    assert len(stamped) > 20
    assert all(c[:7] == r[:7] for c, r in stamped)
    assert svc.ctx.stats.get("sql.sqlite3_pkt.rows") == 44
    assert svc.ctx.stats.get("sql.sqlite3_pkt.dropped") == 0


def test_flow_sqlite3(tmp_path: Path, utc: None) -> None:  # noqa: F811
    pytest.importorskip("pyulogd.plugins.inputs.nfct")
    create_table(tmp_path / "ulogd.sqlite3", "ulog_ct")
    svc = replay("flow-sqlite3", tmp_path)
    gt = goldentool()
    ref = gt.mask_sqlite(str(SET / "flow-sqlite3" / "ulogd.sqlite3"))
    cand = gt.mask_sqlite(str(tmp_path / "ulogd.sqlite3"))
    assert len(cand) == len(ref) == 19
    assert cand[0] == ref[0]
    assert sorted(cand[1:]) == sorted(ref[1:])
    # IPv4 addresses are stored as 2.0.8 stores them: 10.201.0.1 -> 16828682; IPv6: first 8 bytes.
    addrs = {(r[4], r[5]) for r in rows(tmp_path / "ulogd.sqlite3", "ulog_ct")}
    assert addrs == {(16828682, 33605898), (16908541, 16908541)}
    # DESTROY rows carry the kernel's stop time: exactly 2.0.8's.
    ends = sorted(r[2:4] for r in rows(tmp_path / "ulogd.sqlite3", "ulog_ct") if r[2] is not None)
    ref_ends = sorted(r[2:4] for r in rows(SET / "flow-sqlite3" / "ulogd.sqlite3", "ulog_ct") if r[2] is not None)
    assert ends == ref_ends
    assert svc.ctx.stats.get("sql.sqlite3_ct.rows") == 18
