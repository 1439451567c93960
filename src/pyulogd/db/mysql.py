"""MYSQL through PyMySQL (``pip install 'pyulogd[mysql]'``).

Plain table and ``procedure=INSERT``: ``executemany`` of one INSERT, which PyMySQL sends
as multi-row INSERTs (up to about 1 MB of statement each), one commit per batch. A stored
function (``INSERT_CT``) or ``CALL``: one statement per row in one transaction. Values
are escaped by the client library, never pasted from the packet. The first column is
always skipped (the auto-increment id), as in 2.0.8. An empty or ``localhost`` host means
the local socket, as with libmysqlclient.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from typing import Any

from pyulogd.db.backend import Backend, MissingTable, Rejected, Rows, Settings, TableInfo, Unavailable
from pyulogd.db.columns import skip_first
from pyulogd.db.statement import quote_ident, quote_path

# Imported by name: an optional dependency (and without type stubs).
try:
    pymysql: Any = importlib.import_module("pymysql")
except ImportError:  # pragma: no cover - depends on the installation
    pymysql = None

MISSING = "MYSQL needs PyMySQL: pip install 'pyulogd[mysql]' (or 'PyMySQL')"
SOCKETS = ("/run/mysqld/mysqld.sock", "/var/run/mysqld/mysqld.sock", "/tmp/mysql.sock")
# Server errors about the values of rows (so other rows can still go in): NULL into NOT
# NULL, duplicate key, foreign key, value out of range or truncated, bad value for the
# column, data too long, check constraint.
ROW_ERRORS = frozenset({1048, 1062, 1169, 1216, 1217, 1263, 1264, 1265, 1292, 1366, 1367, 1406, 1411, 1451,
                        1452, 1690, 3819, 4025})
NO_TABLE = frozenset({1146, 1051})


def available() -> bool:
    return pymysql is not None


class MysqlBackend(Backend):
    dialect = "mysql"
    render = "sql"
    skip_rule = "always"

    def __init__(self, settings: Settings, label: str) -> None:
        super().__init__(settings, label)
        self.con: Any = None
        self._sql: dict[tuple[str, ...], tuple[bool, str]] = {}

    def connect(self) -> None:
        if pymysql is None:
            raise Unavailable(MISSING)
        self.close()
        s = self.s
        kw: dict[str, Any] = {
            "user": s.user or None,
            "password": s.password,
            "database": s.db,
            "connect_timeout": s.connect_timeout,
            "read_timeout": 300,
            "write_timeout": 300,
            "autocommit": False,
            "charset": "utf8mb4",
        }
        if s.host.startswith("/"):
            kw["unix_socket"] = s.host  # a socket path (also reachable from another network namespace)
        elif s.host in ("", "localhost"):
            sock = next((p for p in SOCKETS if os.path.exists(p)), None)
            if sock is not None:
                kw["unix_socket"] = sock
            else:
                kw["host"] = "localhost"
        else:
            kw["host"] = s.host
        if s.port:
            kw["port"] = s.port
        try:
            self.con = pymysql.connect(**kw)
        except pymysql.MySQLError as e:
            raise Unavailable(f"cannot connect: {e}") from e

    def close(self) -> None:
        con, self.con = self.con, None
        if con is not None:
            try:
                con.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail in any way
                pass

    def fetch_one(self, sql: str) -> tuple[Any, ...] | None:
        con = self.con
        assert con is not None
        try:
            with con.cursor() as cur:
                cur.execute(sql)
                row = cur.fetchone()
            con.commit()
        except pymysql.MySQLError as e:
            raise Unavailable(str(e)) from e
        return None if row is None else tuple(row)

    def discover(self) -> TableInfo:
        con = self.con
        assert con is not None
        rel = quote_path(self.s.table, "mysql")
        try:
            with con.cursor() as cur:
                cur.execute(f"SELECT * FROM {rel} LIMIT 0")  # noqa: S608 - quoted identifier
                columns = [d[0] for d in cur.description or ()]
                cur.execute(
                    "SELECT table_type FROM information_schema.tables WHERE table_schema = "
                    "COALESCE(%s, DATABASE()) AND table_name = %s",
                    (self.s.table[0] if len(self.s.table) == 2 else None, self.s.table[-1]),
                )
                kind = cur.fetchone()
            con.commit()
        except pymysql.MySQLError as e:
            code = e.args[0] if e.args and isinstance(e.args[0], int) else 0
            if code in NO_TABLE:
                raise MissingTable(f"table or view '{'.'.join(self.s.table)}' not found") from e
            self.close()
            raise Unavailable(str(e)) from e
        self._sql.clear()
        return TableInfo(skip_first(columns, self.skip_rule), bool(kind and kind[0] == "BASE TABLE"))

    def _statement(self, columns: Sequence[str]) -> tuple[bool, str]:
        key = tuple(columns)
        stmt = self._sql.get(key)
        if stmt is None:
            t = self.s.target
            marks = ", ".join(["%s"] * len(columns))
            if t.inserts:
                rel = quote_path(t.relation if t.kind == "insert" else self.s.table, "mysql")
                cols = ", ".join(quote_ident(c, "mysql") for c in columns)
                verb = f"INSERT {t.modifier} INTO" if t.modifier else "INSERT INTO"
                stmt = (True, f"{verb} {rel} ({cols}) VALUES ({marks})")
            else:
                stmt = (False, f"{'CALL' if t.kind == 'call' else 'SELECT'} {t.routine}({marks})")
            self._sql[key] = stmt
        return stmt

    def write(self, columns: Sequence[str], rows: Rows) -> None:
        con = self.con
        if con is None:
            raise Unavailable("not connected")
        many, sql = self._statement(columns)
        try:
            with con.cursor() as cur:
                if many:
                    cur.executemany(sql, rows)
                else:
                    for row in rows:
                        cur.execute(sql, row)
                        cur.fetchall()
            con.commit()
        except pymysql.MySQLError as e:
            code = e.args[0] if e.args and isinstance(e.args[0], int) else 0
            try:
                con.rollback()
            except pymysql.MySQLError:
                pass
            if code in ROW_ERRORS or isinstance(e, pymysql.err.DataError | pymysql.err.IntegrityError):
                raise Rejected(str(e)) from e
            self.close()
            raise Unavailable(str(e)) from e

    def write_each(self, columns: Sequence[str], rows: Rows) -> list[str | None]:
        con = self.con
        if con is None:
            raise Unavailable("not connected")
        _many, sql = self._statement(columns)
        out: list[str | None] = []
        try:
            with con.cursor() as cur:
                for row in rows:
                    cur.execute("SAVEPOINT r")
                    try:
                        cur.execute(sql, row)
                        cur.fetchall()
                        out.append(None)
                    except pymysql.MySQLError as e:
                        code = e.args[0] if e.args and isinstance(e.args[0], int) else 0
                        if code not in ROW_ERRORS and not isinstance(
                            e, pymysql.err.DataError | pymysql.err.IntegrityError
                        ):
                            raise
                        cur.execute("ROLLBACK TO SAVEPOINT r")
                        out.append(str(e))
                    cur.execute("RELEASE SAVEPOINT r")
            con.commit()
        except pymysql.MySQLError as e:
            try:
                con.rollback()
            except pymysql.MySQLError:
                pass
            self.close()
            raise Unavailable(str(e)) from e
        return out

    def run_script(self, text: str) -> None:
        raise Unavailable("schema_file is not supported for MYSQL (load it with the mysql client)")

    def describe(self) -> str:
        s = self.s
        return f"{s.host or 'local socket'}/{s.db}.{'.'.join(s.table)}"
