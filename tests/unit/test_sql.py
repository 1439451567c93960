"""The SQL framework without a server: columns, statements, rendering, spool, writer, SQLITE3."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from pyulogd.core.context import Context
from pyulogd.core.errors import ConfigError
from pyulogd.core.plugin import KeyType as T
from pyulogd.db import sqlite as sqlite_backend
from pyulogd.db.backend import Backend, Rejected, Settings, TableInfo, Unavailable
from pyulogd.db.columns import map_columns, match_key, skip_first
from pyulogd.db.options import PYULOGD, password
from pyulogd.db.policy import AT_ONCE, WriterPolicy
from pyulogd.db.render import compile_builder, fix_string
from pyulogd.db.statement import Target, parse_procedure, quote_ident
from pyulogd.db.writer import Writer, WriterSettings
from pyulogd.io.spool import Spool
from pyulogd.plugins.outputs.sqlite3 import Sqlite3Output
from tests.clocked import fake_clock, fake_context
from tests.helpers import NflogKeys, make_stack, stop_stack

# -- columns and statements


def test_columns_map_to_keys() -> None:
    keys = ["ip.saddr.str", "oob.ifindex_in", "raw.mac_len", "oob.prefix"]
    assert match_key("ip_saddr_str", keys) == "ip.saddr.str"
    # ulogd2 cannot reach keys with "_" in their name; here the column names them
    assert match_key("oob_ifindex_in", keys) == "oob.ifindex_in"
    assert match_key("nothing", keys) is None
    assert skip_first(["_id", "a"], "underscore") == ["a"]
    assert skip_first(["id", "a"], "underscore") == ["id", "a"]
    assert skip_first(["id", "a"], "always") == ["a"]
    assert skip_first(["id", "a"], "never") == ["id", "a"]
    with pytest.raises(ConfigError, match=r"column 'no_key' of table 't' needs the key 'no.key'.*oob\.prefix"):
        map_columns(["oob_prefix", "no_key"], keys, "t", "PGSQL 'p'")


def test_procedure_forms() -> None:
    assert parse_procedure("INSERT") == Target("table")
    assert parse_procedure("insert") == Target("table")
    assert parse_procedure("INSERT INTO ulog") == Target("insert", ("ulog",))
    assert parse_procedure("INSERT IGNORE INTO s.t") == Target("insert", ("s", "t"), modifier="IGNORE")
    assert parse_procedure("CALL add_pkt") == Target("call", routine="add_pkt")
    assert parse_procedure("INSERT_CT") == Target("select", routine="INSERT_CT")
    for bad in ("INSERT INTO x; DROP TABLE y", "f(1)", "CALL x; y", "a b", "INSERT INTO"):
        with pytest.raises(ConfigError):
            parse_procedure(bad)
    assert quote_ident('we"ird', "pgsql") == '"we""ird"'
    assert quote_ident("we`ird", "mysql") == "`we``ird`"


def test_options() -> None:
    opt = {o.name: o for o in PYULOGD}
    spool_max, batch_timeout = opt["spool_max"], opt["batch_timeout"]
    assert spool_max.parse("1G") == 1 << 30 and spool_max.parse("512M") == 512 << 20
    assert spool_max.parse("1000") == 1000 and spool_max.default == 1 << 30
    assert batch_timeout.parse("1") == 1.0 and batch_timeout.parse("250ms") == 0.25 and batch_timeout.default == 1.0
    with pytest.raises(ValueError):
        spool_max.parse("lots")


def test_password_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert password({"pass": "a"}, "x") == "a"
    (tmp_path / "pw").write_text("s3cret\nignored\n")
    assert password({"pass_file": str(tmp_path / "pw")}, "x") == "s3cret"
    monkeypatch.setenv("PW_TEST", "from-env")
    assert password({"pass_env": "PW_TEST"}, "x") == "from-env"
    with pytest.raises(ConfigError, match="only one"):
        password({"pass": "a", "pass_env": "PW_TEST"}, "x")
    with pytest.raises(ConfigError, match="not set"):
        password({"pass_env": "PW_NOT_SET_ANYWHERE"}, "x")


# -- rendering


def test_render_sqlite_and_sql() -> None:
    types = [T.IPADDR, T.IPADDR, T.BOOL, T.UINT32, T.UINT64, T.STRING, T.RAW, T.UINT8]
    rec: list[Any] = [None, bytes([127, 0, 0, 1]), bytes.fromhex("fd000201" + "00" * 11 + "01"), 1, 2**32 - 1,
                      2**64 - 1, "a\x00b", memoryview(b"\x01\x02"), None]
    slots = list(range(1, 9))
    want = (16777343, 16908541, 1, 2**32 - 1, -1, "a", b"\x01\x02", None)
    assert compile_builder(types, slots, "sqlite")(rec) == want
    assert compile_builder(types, slots, "sql")(rec) == (16777343, 16908541, "1", 2**32 - 1, 2**64 - 1, "a",
                                                         b"\x01\x02", None)
    assert compile_builder([T.STRING], [0], "sql")(rec) == (None,)


def test_strings_that_are_not_utf8() -> None:
    raw = b"pre\xff\xfefix".decode("utf-8", "surrogateescape")
    assert fix_string(raw) == "pre\\xff\\xfefix"
    assert fix_string("plain") == "plain"
    assert fix_string("ü\x00rest") == "ü"


# -- spool


def test_spool_order_restart_and_ack(tmp_path: Path) -> None:
    sp = Spool(str(tmp_path), 1 << 20)
    sp.open()
    names = ("a", "b")
    for i in range(5):
        assert sp.append(names, [(i, str(i))])
    f = sp.peek()
    assert f is not None and f.rows == [(0, "0")]
    sp.ack(f)
    sp.close()  # as after SIGKILL: no more acks
    sp = Spool(str(tmp_path), 1 << 20)
    sp.open()
    got = []
    while (f := sp.peek()) is not None:
        got.append(f.rows[0][0])
        sp.ack(f)
    assert got == [1, 2, 3, 4]
    assert sp.empty and not [n for n in os.listdir(tmp_path) if n.endswith(".seg")]
    sp.append(names, [(9, "9")])  # numbering goes on after everything was consumed
    sp.close()
    sp = Spool(str(tmp_path), 1 << 20)
    sp.open()
    f = sp.peek()
    assert f is not None and f.rows == [(9, "9")]
    sp.close()


def test_spool_torn_tail_and_full(tmp_path: Path) -> None:
    sp = Spool(str(tmp_path), 1 << 20)
    sp.open()
    sp.append(("a",), [(1,)])
    sp.append(("a",), [(2,)])
    sp.close()
    seg = next(p for p in tmp_path.iterdir() if p.suffix == ".seg")
    seg.write_bytes(seg.read_bytes()[:-3])  # a kill in the middle of the last write
    sp = Spool(str(tmp_path), 200)
    sp.open()
    f = sp.peek()
    assert f is not None and f.rows == [(1,)]
    sp.ack(f)
    assert sp.peek() is None and sp.corrupt == 1
    assert sp.append(("a",), [(3,)])
    assert not sp.append(("a",), [("4" * 200,)])  # beyond max_bytes
    assert sp.refused == 1
    sp.close()
    with pytest.raises(Exception, match="used by another"):
        a, b = Spool(str(tmp_path), 1000), Spool(str(tmp_path), 1000)
        a.open()
        try:
            b.open()
        finally:
            a.close()


# -- the writer's timing rules (db/policy.py): numbers in, decisions out

NOW = 500.0


def test_policy_batches() -> None:
    p = WriterPolicy(WriterSettings(batch_size=10, batch_timeout=1.0))
    assert p.batch_due(NOW, 3, stopping=False) == NOW + 1.0  # when the oldest has waited batch_timeout
    assert p.batch_due(NOW, 10, stopping=False) == AT_ONCE  # a full batch goes now
    assert p.batch_due(NOW, 1, stopping=True) == AT_ONCE  # at exit nothing waits


def test_policy_reconnect_backoff() -> None:
    p = WriterPolicy(WriterSettings(reconnect=2.0, reconnect_max=10.0))
    assert p.connect_due(NOW)  # the first attempt at once
    assert [p.failed(NOW + i) for i in range(4)] == [2.0, 4.0, 8.0, 10.0]  # counted from the failure
    assert not p.connect_due(NOW + 12.9) and p.connect_due(NOW + 13)
    assert p.idle_until(NOW + 3, None) == NOW + 4  # down: look again within a second
    assert p.idle_until(NOW + 12.5, None) == NOW + 13  # or at the next attempt, if sooner
    assert p.idle_until(NOW + 3, NOW + 3.5) == NOW + 3.5  # stopping: not past the stop deadline
    p.connected()
    assert p.failed(NOW + 20) == 2.0  # a new outage starts from the first wait
    p.reconnect_now()  # SIGHUP
    assert p.connect_due(NOW + 20)
    assert WriterPolicy(WriterSettings(reconnect=5.0, reconnect_max=1.0)).failed(NOW) == 1.0  # the cap wins


def test_policy_spilling() -> None:
    cfg = WriterSettings(mem_max=1000, spool_delay=1.0)
    p = WriterPolicy(cfg)
    keep = p.spill_keep
    assert keep(NOW, NOW - 5, 500, connected=True, flush_all=False) is None  # written soon enough
    assert keep(NOW, None, 0, connected=False, flush_all=False) is None  # nothing to spill
    assert keep(NOW, NOW - 0.5, 500, connected=False, flush_all=False) is None  # down, but not long
    assert keep(NOW, NOW - 1.0, 500, connected=False, flush_all=False) == 0  # down for spool_delay: all
    assert keep(NOW, NOW, 1001, connected=True, flush_all=False) == 500  # memory over its bound: half
    assert keep(NOW, NOW, 10, connected=True, flush_all=True) == 0  # exit: everything
    # When the spiller looks again unprompted: exactly when the oldest is due, or a safety poll.
    assert p.spill_check_at(NOW, NOW - 0.8, connected=False) == NOW - 0.8 + 1.0
    assert p.spill_check_at(NOW, NOW, connected=False) == NOW + 0.5
    assert p.spill_check_at(NOW, NOW, connected=True) == NOW + 1.0
    # At the instant spill_check_at names, the spill is due: the spiller must not wake to find
    # nothing to do (1000.05 - 1000.0 < 0.05 in floating point).
    quick = WriterPolicy(WriterSettings(spool_delay=0.05))
    for oldest in (1000.0, 1000.05, 123.456):
        when = quick.spill_check_at(oldest, oldest, connected=False)
        assert when == oldest + 0.05
        assert quick.spill_keep(when, oldest, 10, connected=False, flush_all=False) == 0


# -- writer, with a backend that can be switched off


class FakeBackend(Backend):
    def __init__(self) -> None:
        super().__init__(Settings(table=("t",)), "FAKE")
        self.up = True
        self.rows: list[tuple[Any, ...]] = []
        self.bad: set[Any] = set()
        self.writes = 0

    def connect(self) -> None:
        if not self.up:
            raise Unavailable("down")

    def close(self) -> None:
        pass

    def discover(self) -> TableInfo:
        return TableInfo(["k"], True)

    def write(self, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        if not self.up:
            raise Unavailable("down")
        if any(r[0] in self.bad for r in rows):
            raise Rejected("bad value")
        self.writes += 1
        self.rows.extend(rows)


def writer(tmp: Path | None, backend: FakeBackend, **kw: Any) -> tuple[Writer, Context]:
    """A started Writer on a FakeClock: batch timeouts, back-offs and spool delays pass only
    when the test advances ``fake_clock(ctx)``."""
    ctx, _ = fake_context()
    spool = None
    if tmp is not None:
        spool = Spool(str(tmp), int(kw.pop("spool_max", 1 << 20)))
        spool.open()
    settings = WriterSettings(**{"batch_size": 10, "batch_timeout": 0.05, "reconnect": 0.05, "reconnect_max": 0.1,
                                 "spool_delay": 0.05, **kw})
    w = Writer(ctx, "FAKE", "sql.t", backend, settings, spool, lambda info: ["k"])
    w.start()
    return w, ctx


def wait(pred: Any, timeout: float = 5) -> None:
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def test_writer_batches_in_time(tmp_path: Path) -> None:
    b = FakeBackend()
    w, ctx = writer(tmp_path, b)
    w.put(("k",), [(1,), (2,)])
    fake_clock(ctx).advance(0.05)
    wait(lambda: len(b.rows) == 2)  # fewer than batch_size rows still go out after batch_timeout
    w.put(("k",), [(i,) for i in range(3, 28)])
    wait(lambda: len(b.rows) == 22)  # two full batches go at once, without waiting
    fake_clock(ctx).advance(0.05)
    wait(lambda: len(b.rows) == 27)  # the rest after batch_timeout
    w.stop(1)
    assert b.rows == [(i,) for i in range(1, 28)]
    assert ctx.stats.get("sql.t.batches") == 4  # 25 rows in batches of at most 10


def test_writer_outage_keeps_order_through_the_spool(tmp_path: Path) -> None:
    b = FakeBackend()
    w, ctx = writer(tmp_path, b)
    clock = fake_clock(ctx)
    w.put(("k",), [(0,)])
    clock.advance(0.05)
    wait(lambda: len(b.rows) == 1)
    b.up = False
    for i in range(1, 200):
        w.put(("k",), [(i,)])
        if i % 50 == 0:
            clock.advance(0.1)  # the writer retries, the spiller spools what waited spool_delay
    wait(lambda: ctx.stats.get("sql.t.spooled") > 0)
    b.up = True
    clock.advance(0.1)  # reconnect_max: the next attempt is due
    wait(lambda: len(b.rows) == 200)
    w.stop(1)
    assert b.rows == [(i,) for i in range(200)]
    assert ctx.stats.get("sql.t.dropped") == 0 and ctx.stats.get("sql.t.reconnects") >= 1


def test_writer_stops_into_the_spool_and_resumes(tmp_path: Path) -> None:
    b = FakeBackend()
    b.up = False
    w, _ = writer(tmp_path, b)
    w.put(("k",), [(i,) for i in range(30)])
    w.stop(0.2)
    b.up = True
    w2, ctx2 = writer(tmp_path, b)
    w2.put(("k",), [(30,)])
    wait(lambda: len(b.rows) == 30)  # the spool first, at once
    fake_clock(ctx2).advance(0.05)
    wait(lambda: len(b.rows) == 31)
    w2.stop(1)
    assert b.rows == [(i,) for i in range(31)]


def test_writer_refused_rows_do_not_block(tmp_path: Path) -> None:
    b = FakeBackend()
    b.bad = {3, 7}
    w, ctx = writer(tmp_path, b)
    w.put(("k",), [(i,) for i in range(10)])
    wait(lambda: len(b.rows) == 8)
    w.stop(1)
    assert [r[0] for r in b.rows] == [0, 1, 2, 4, 5, 6, 8, 9]
    assert ctx.stats.get("sql.t.rejected") == 2


def test_writer_full_spool_drops_and_counts(tmp_path: Path) -> None:
    b = FakeBackend()
    b.up = False
    w, ctx = writer(tmp_path, b, spool_max=300)
    for i in range(20):
        w.put(("k", "pad"), [(i, "x" * 20)])
    fake_clock(ctx).advance(0.05)  # spool_delay: the records go to disk, until it is full
    wait(lambda: ctx.stats.get("sql.t.dropped") > 0)
    w.stop(0.1)
    assert ctx.stats.get("sql.t.spooled") + ctx.stats.get("sql.t.dropped") == 20


def test_writer_without_spool_bounds_memory() -> None:
    b = FakeBackend()
    b.up = False
    w, ctx = writer(None, b, mem_max=2000)
    for i in range(100):
        w.put(("k", "pad"), [(i, "y" * 40)])
    assert ctx.stats.get("sql.t.dropped") > 0
    w.stop(0.1)


# -- SQLITE3 as a plugin


def sqlite_stack(tmp: Path, ctx: Context | None = None, **opts: Any) -> Any:
    cfg = {"db": str(tmp / "a.db"), "table": "t", "batch_timeout": "50ms", **opts}
    return make_stack([NflogKeys, (Sqlite3Output, cfg)], ctx)


def test_sqlite_values_are_parameters(tmp_path: Path) -> None:
    con = sqlite3.connect(tmp_path / "a.db")
    con.execute("CREATE TABLE t (oob_prefix text, oob_mark integer, oob_ifindex_in integer)")
    con.close()
    stack = sqlite_stack(tmp_path)
    evil = "x'); DROP TABLE t; --"
    stack.source.emit_dict({"oob.prefix": evil, "oob.mark": 2**32 - 1, "oob.ifindex_in": 3})
    stack.instances[-1].flush()
    stop_stack(stack)
    con = sqlite3.connect(tmp_path / "a.db")
    # UINT32 keeps its value (2.0.8 stored it as a negative 32-bit number)
    assert con.execute("SELECT * FROM t").fetchall() == [(evil, 2**32 - 1, 3)]
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_sqlite_missing_table_and_schema_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="table 't' is missing"):
        sqlite_stack(tmp_path)
    schema = tmp_path / "schema.sql"
    schema.write_text("CREATE TABLE t (oob_prefix VARCHAR(64), raw_pktlen INT UNSIGNED);")
    stack = sqlite_stack(tmp_path, schema_file=str(schema))
    stack.source.emit_dict({"oob.prefix": "p ", "raw.pktlen": 60})
    stack.instances[-1].flush()
    stop_stack(stack)
    assert sqlite3.connect(tmp_path / "a.db").execute("SELECT * FROM t").fetchall() == [("p ", 60)]


def test_sqlite_locked_database_queues(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_backend, "BUSY_TIMEOUT", 0.1)  # sqlite's own wait, in real time
    con = sqlite3.connect(tmp_path / "a.db", isolation_level=None)
    con.execute("CREATE TABLE t (raw_pktlen integer)")
    ctx, clock = fake_context()
    stack = sqlite_stack(tmp_path, ctx, reconnect=1)
    out = stack.instances[-1]
    con.execute("BEGIN EXCLUSIVE")  # another program holds the database
    for n in range(5):
        stack.source.emit_dict({"raw.pktlen": n})
    out.flush()
    clock.advance(0.05)  # batch_timeout
    wait(lambda: ctx.stats.get(f"sql.{out.id}.reconnects") == 1)  # the busy timeout passed: failed, kept
    assert ctx.stats.get(f"sql.{out.id}.rows") == 0
    con.execute("COMMIT")
    clock.advance(1)  # reconnect=1
    wait(lambda: ctx.stats.get(f"sql.{out.id}.rows") == 5)
    stop_stack(stack)
    assert [r[0] for r in con.execute("SELECT * FROM t")] == [0, 1, 2, 3, 4]


def test_writer_thread_ends(tmp_path: Path) -> None:
    con = sqlite3.connect(tmp_path / "a.db")
    con.execute("CREATE TABLE t (raw_pktlen integer)")
    con.close()
    before = threading.active_count()
    stack = sqlite_stack(tmp_path)
    stop_stack(stack)
    assert threading.active_count() == before


class FakeOutput(Sqlite3Output):
    """An output whose database can be down at start (as PGSQL/MYSQL), on FakeBackend."""

    name = "FAKESQL"
    start_without_db = True
    backend_obj: FakeBackend

    def make_backend(self) -> Backend:
        return self.backend_obj


def test_down_at_start_keeps_all_keys_then_maps(tmp_path: Path) -> None:
    fake = FakeBackend()
    fake.discover = lambda: TableInfo(["oob_prefix", "raw_pktlen"], True)  # type: ignore[method-assign]
    fake.up = False
    FakeOutput.backend_obj = fake
    cfg = {"db": "x", "table": "t", "batch_timeout": "50ms", "spool_dir": str(tmp_path / "spool"), "reconnect": 1}
    ctx, clock = fake_context()
    stack = make_stack([NflogKeys, (FakeOutput, cfg)], ctx)
    out = stack.instances[-1]
    assert "raw.pktlen" in out.keys and len(out.keys) > 10  # every key of NFLOG but the RAW ones
    stack.source.emit_dict({"oob.prefix": "early ", "raw.pktlen": 1})
    out.flush()
    fake.up = True
    clock.advance(1)  # the writer's next attempt (reconnect=1)
    wait(lambda: len(fake.rows) == 1)
    out.flush()  # the event loop picks up the table's columns
    assert out.keys == ["oob.prefix", "raw.pktlen"]
    stack.source.emit_dict({"oob.prefix": "late ", "raw.pktlen": 2})
    out.flush()
    clock.advance(0.05)
    wait(lambda: len(fake.rows) == 2)
    stop_stack(stack)
    assert fake.rows == [("early ", 1), ("late ", 2)]
    assert (tmp_path / "spool" / "columns.json").exists()  # the next start can use these columns


class StallingBackend(FakeBackend):
    """Writes block until released: a database that stalls (a lock) instead of failing."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.stalled = threading.Event()

    def write(self, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        self.stalled.set()
        self.gate.wait(10)
        super().write(columns, rows)


def test_stalled_database_spills_and_writes_each_row_once(tmp_path: Path) -> None:
    b = StallingBackend()
    w, ctx = writer(tmp_path, b, mem_max=4000, batch_size=5)
    w.put(("k", "pad"), [(i, "z" * 30) for i in range(5)])  # the batch the writer gets stuck on
    assert b.stalled.wait(5)
    for i in range(5, 200):
        w.put(("k", "pad"), [(i, "z" * 30)])
        # Between two rounds of the event loop the spiller keeps memory within its bound.
        wait(lambda: w.mem_bytes <= w.cfg.mem_max)
    # memory passed its bound while the writer was stuck: the spiller moved it to disk,
    # the stuck batch first; nothing was dropped
    wait(lambda: ctx.stats.get("sql.t.spooled") >= 150)
    assert ctx.stats.get("sql.t.dropped") == 0
    b.gate.set()
    wait(lambda: len(b.rows) == 200)
    w.stop(1)
    assert [r[0] for r in b.rows] == list(range(200))  # in order, the stuck batch not twice


def test_sqlite_refused_rows_one_transaction(tmp_path: Path) -> None:
    """Rows a constraint refuses are counted; the others of their batch are written, in order."""
    con = sqlite3.connect(tmp_path / "a.db")
    con.execute("CREATE TABLE t (raw_pktlen integer CHECK (raw_pktlen % 3 != 0))")
    con.close()
    stack = sqlite_stack(tmp_path)
    out = stack.instances[-1]
    for n in range(1, 301):
        stack.source.emit_dict({"raw.pktlen": n})
    out.flush()
    stop_stack(stack)
    got = [r[0] for r in sqlite3.connect(tmp_path / "a.db").execute("SELECT raw_pktlen FROM t")]
    assert got == [n for n in range(1, 301) if n % 3]
    assert out.ctx.stats.get(f"sql.{out.id}.rejected") == 100
    assert out.ctx.stats.get(f"sql.{out.id}.rows") == 200
