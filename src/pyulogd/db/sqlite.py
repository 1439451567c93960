"""SQLITE3 through the standard library: WAL mode, one transaction per batch.

ulogd2 2.0.8 commits every row on its own (about 1k rows/s with the default journal);
here a batch of rows is one ``executemany`` in one transaction, in WAL mode with
``synchronous=NORMAL`` (a commit does not wait for fsync; a power cut can lose the last
commits, never corrupt the file). Readers (``sqlite3 file 'select ...'``) are not blocked
by the writer in WAL mode. A locked database ("database is locked" after the busy
timeout) is an outage like a stopped server: records queue and spool until it frees up.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from pyulogd.db.backend import Backend, MissingTable, Rejected, Rows, Settings, TableInfo, Unavailable
from pyulogd.db.statement import quote_path

# ulogd2's SQLITE3_BUSY_TIMEOUT is 300 ms; a batch is worth waiting a little longer for.
BUSY_TIMEOUT = 2.0


class SqliteBackend(Backend):
    dialect = "sqlite"
    render = "sqlite"
    skip_rule = "never"

    def __init__(self, settings: Settings, label: str) -> None:
        super().__init__(settings, label)
        self.con: sqlite3.Connection | None = None
        self.wal = False
        self._sql: dict[tuple[str, ...], str] = {}

    @property
    def local_file(self) -> str | None:
        db = self.s.db
        return None if db in ("", ":memory:") or db.startswith("file:") else db

    def connect(self) -> None:
        self.close()
        try:
            con = sqlite3.connect(self.s.db, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise Unavailable(f"cannot open {self.s.db!r}: {e}") from e
        try:
            mode = con.execute("PRAGMA journal_mode=WAL").fetchone()
            con.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as e:
            con.close()
            raise Unavailable(f"cannot use {self.s.db!r}: {e}") from e
        self.wal = bool(mode and str(mode[0]).lower() == "wal")
        self.con = con

    def close(self) -> None:
        if self.con is not None:
            try:
                self.con.close()
            except sqlite3.Error:
                pass
            self.con = None

    def fetch_one(self, sql: str) -> tuple[Any, ...] | None:
        assert self.con is not None
        try:
            row = self.con.execute(sql).fetchone()
        except sqlite3.Error as e:
            raise Unavailable(str(e)) from e
        return None if row is None else tuple(row)

    def discover(self) -> TableInfo:
        assert self.con is not None
        table = quote_path(self.s.table, "sqlite")
        try:
            cur = self.con.execute(f"SELECT * FROM {table} LIMIT 0")  # noqa: S608 - quoted identifier
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):
                raise MissingTable(f"table '{'.'.join(self.s.table)}' is missing in {self.s.db!r}") from e
            raise Unavailable(str(e)) from e
        columns = [d[0] for d in cur.description or ()]
        kind = self.con.execute(
            "SELECT type FROM sqlite_master WHERE name = ?", (self.s.table[-1],)
        ).fetchone()
        return TableInfo(columns, plain=bool(kind and kind[0] == "table"))

    def _statement(self, columns: Sequence[str]) -> str:
        key = tuple(columns)
        sql = self._sql.get(key)
        if sql is None:
            t = self.s.target
            rel = quote_path(t.relation if t.kind == "insert" else self.s.table, "sqlite")
            cols = ", ".join(quote_path((c,), "sqlite") for c in columns)
            verb = f"INSERT {t.modifier} INTO" if t.modifier else "INSERT INTO"
            sql = self._sql[key] = f"{verb} {rel} ({cols}) VALUES ({', '.join('?' * len(columns))})"
        return sql

    def write(self, columns: Sequence[str], rows: Rows) -> None:
        con = self.con
        if con is None:
            raise Unavailable("not connected")
        sql = self._statement(columns)
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                con.executemany(sql, rows)
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
        except (sqlite3.IntegrityError, sqlite3.DataError, OverflowError, sqlite3.InterfaceError) as e:
            raise Rejected(str(e)) from e
        except sqlite3.Error as e:
            # locked, disk full or I/O error, table dropped: keep the records and retry
            self.close()
            raise Unavailable(str(e)) from e

    def write_each(self, columns: Sequence[str], rows: Rows) -> list[str | None]:
        con = self.con
        if con is None:
            raise Unavailable("not connected")
        sql = self._statement(columns)
        out: list[str | None] = []
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                for row in rows:
                    con.execute("SAVEPOINT r")
                    try:
                        con.execute(sql, row)
                        out.append(None)
                    except (sqlite3.IntegrityError, sqlite3.DataError, OverflowError, sqlite3.InterfaceError) as e:
                        con.execute("ROLLBACK TO r")
                        out.append(str(e))
                    con.execute("RELEASE r")
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            self.close()
            raise Unavailable(str(e)) from e
        return out

    def run_script(self, text: str) -> None:
        assert self.con is not None
        try:
            self.con.executescript(text)
        except sqlite3.Error as e:
            raise Unavailable(f"schema file failed: {e}") from e

    def describe(self) -> str:
        return f"{self.s.db}:{'.'.join(self.s.table)}"
