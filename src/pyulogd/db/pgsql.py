"""PGSQL through psycopg 3 (``pip install 'pyulogd[pgsql]'``).

Plain table and ``procedure=INSERT``: ``COPY <schema>.<table> (<columns>) FROM STDIN``,
one COPY and one commit per batch (about 30x a row-by-row INSERT). A view, or
``INSERT INTO <name>``: ``executemany`` of one INSERT (psycopg pipelines it). A stored
function (``INSERT_CT``, ``INSERT_PACKET_FULL``) or ``CALL``: ``executemany`` in one
transaction, every value sent as an untyped literal so that the server converts it to
the parameter's type exactly as it converts ulogd2's quoted text (``'10.0.0.1'`` into an
``inet`` argument, ``'1'`` into a ``boolean``).

Columns are read from the catalog like 2.0.8 does (``pg_attribute`` of ``schema.table``);
the first is skipped only when its name starts with ``_`` (``_id``, ``_ct_id``). A
non-public ``schema`` also goes first in ``search_path``, as in 2.0.8, so that the
functions of the schema are found.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from pyulogd.db.backend import Backend, MissingTable, Rejected, Rows, Settings, TableInfo, Unavailable
from pyulogd.db.columns import skip_first
from pyulogd.db.statement import quote_ident, quote_path

# Imported by name: an optional dependency, so that type checks pass without it.
try:
    psycopg: Any = importlib.import_module("psycopg")
    pg_errors: Any = importlib.import_module("psycopg.errors")
except ImportError:  # pragma: no cover - depends on the installation
    psycopg = pg_errors = None

MISSING = "PGSQL needs psycopg 3: pip install 'pyulogd[pgsql]' (or 'psycopg[binary]')"

_COLUMNS = """
SELECT a.attname, c.relkind, n.nspname, c.relname
  FROM pg_catalog.pg_attribute a
  JOIN pg_catalog.pg_class c ON a.attrelid = c.oid
  JOIN pg_catalog.pg_namespace n ON c.relnamespace = n.oid
 WHERE c.relname = %s AND n.nspname = %s AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attnum
"""
# SQLSTATE classes of errors about the values of rows, not about the server or the schema:
# 22 data exception (out of range, bad text), 23 integrity constraint violation.
_ROW_CLASSES = ("22", "23")


def available() -> bool:
    return psycopg is not None


class PgsqlBackend(Backend):
    dialect = "pgsql"
    render = "sql"
    skip_rule = "underscore"

    def __init__(self, settings: Settings, label: str) -> None:
        super().__init__(settings, label)
        self.con: Any = None
        self.relation: tuple[str, str] = ("", "")
        self.plain = False
        self._sql: dict[tuple[str, ...], Any] = {}

    def _params(self) -> dict[str, Any]:
        s = self.s
        if s.connstring:
            return {"conninfo": s.connstring, "connect_timeout": max(1, int(s.connect_timeout))}
        kw: dict[str, Any] = {"dbname": s.db, "connect_timeout": max(1, int(s.connect_timeout))}
        if s.host:
            kw["host"] = s.host
        if s.port:
            kw["port"] = s.port
        if s.user:
            kw["user"] = s.user
        if s.password:
            kw["password"] = s.password
        return kw

    def connect(self) -> None:
        if psycopg is None:
            raise Unavailable(MISSING)
        self.close()
        params = self._params()
        conninfo = params.pop("conninfo", "")
        try:
            con = psycopg.connect(conninfo, autocommit=False, application_name="pyulogd", **params)
        except psycopg.Error as e:
            raise Unavailable(f"cannot connect: {e}") from e
        try:
            schema = self._schema()
            if schema != "public":
                path = f"{quote_ident(schema, 'pgsql')}, \"$user\", public"
                con.execute("SELECT pg_catalog.set_config('search_path', %s, false)", (path,))
            con.commit()
        except psycopg.Error as e:
            con.close()
            raise Unavailable(str(e)) from e
        self.con = con

    def _schema(self) -> str:
        return self.s.table[0] if len(self.s.table) == 2 else (self.s.schema or "public")

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
            row = con.execute(sql).fetchone()
            con.commit()
        except psycopg.Error as e:
            self._rollback()
            raise Unavailable(str(e)) from e
        return None if row is None else tuple(row)

    def table_path(self) -> tuple[str, ...]:
        return (self._schema(), self.s.table[-1])

    def discover(self) -> TableInfo:
        con = self.con
        assert con is not None
        schema, table = self._schema(), self.s.table[-1]
        try:
            found = con.execute(_COLUMNS, (table, schema)).fetchall()
            con.commit()
        except psycopg.Error as e:
            self.close()
            raise Unavailable(str(e)) from e
        if not found:
            raise MissingTable(f"table or view '{schema}.{table}' not found")
        self.relation = (found[0][2], found[0][3])
        self.plain = found[0][1] in ("r", "p")
        self._sql.clear()
        return TableInfo(skip_first([r[0] for r in found], self.skip_rule), self.plain)

    def _statement(self, columns: Sequence[str]) -> Any:
        key = tuple(columns)
        stmt = self._sql.get(key)
        if stmt is not None:
            return stmt
        t = self.s.target
        marks = ", ".join(["%s"] * len(columns))
        cols = ", ".join(quote_ident(c, "pgsql") for c in columns)
        if t.kind == "table":
            rel = quote_path(self.relation, "pgsql")
            if self.plain:
                stmt = ("copy", f"COPY {rel} ({cols}) FROM STDIN")
            else:
                stmt = ("many", f"INSERT INTO {rel} ({cols}) VALUES ({marks})")
        elif t.kind == "insert":
            # The name as written in the config, folded to lower case as PostgreSQL folds it.
            rel = quote_path(tuple(p.lower() for p in t.relation), "pgsql")
            stmt = ("many", f"INSERT INTO {rel} ({cols}) VALUES ({marks})")
        elif t.kind == "call":
            stmt = ("text", f"CALL {t.routine}({marks})")
        else:
            stmt = ("text", f"SELECT {t.routine}({marks})")
        self._sql[key] = stmt
        return stmt

    def write(self, columns: Sequence[str], rows: Rows) -> None:
        con = self.con
        if con is None:
            raise Unavailable("not connected")
        how, sql = self._statement(columns)
        try:
            with con.cursor() as cur:
                if how == "copy":
                    with cur.copy(sql) as copy:
                        write_row = copy.write_row
                        for row in rows:
                            write_row(row)
                elif how == "many":
                    cur.executemany(sql, rows)
                else:
                    cur.executemany(sql, [tuple(None if v is None else _text(v) for v in r) for r in rows])
            con.commit()
        except psycopg.Error as e:
            self._rollback()
            state = getattr(e, "sqlstate", None) or ""
            if state[:2] in _ROW_CLASSES and not isinstance(e, psycopg.OperationalError):
                raise Rejected(str(e)) from e
            if isinstance(e, pg_errors.UndefinedTable | pg_errors.UndefinedColumn | pg_errors.UndefinedFunction):
                self.close()
                raise Unavailable(f"{e} (was the schema changed?)") from e
            self.close()
            raise Unavailable(str(e)) from e

    def write_each(self, columns: Sequence[str], rows: Rows) -> list[str | None]:
        con = self.con
        if con is None:
            raise Unavailable("not connected")
        how, sql = self._statement(columns)
        if how == "copy":  # one row at a time: an INSERT
            rel = quote_path(self.relation, "pgsql")
            cols = ", ".join(quote_ident(c, "pgsql") for c in columns)
            how, sql = "many", f"INSERT INTO {rel} ({cols}) VALUES ({', '.join(['%s'] * len(columns))})"
        out: list[str | None] = []
        try:
            with con.cursor() as cur:
                for row in rows:
                    args = row if how == "many" else tuple(None if v is None else _text(v) for v in row)
                    # Plain SAVEPOINT statements: psycopg's nested transaction() costs 10x more.
                    cur.execute("SAVEPOINT r")
                    try:
                        cur.execute(sql, args)
                        out.append(None)
                    except psycopg.Error as e:
                        if (getattr(e, "sqlstate", None) or "")[:2] not in _ROW_CLASSES:
                            raise
                        cur.execute("ROLLBACK TO SAVEPOINT r")
                        out.append(str(e))
                    cur.execute("RELEASE SAVEPOINT r")
            con.commit()
        except psycopg.Error as e:
            self._rollback()
            self.close()
            raise Unavailable(str(e)) from e
        return out

    def _rollback(self) -> None:
        try:
            if self.con is not None and not self.con.closed:
                self.con.rollback()
        except psycopg.Error:
            pass

    def run_script(self, text: str) -> None:
        con = self.con
        assert con is not None
        try:
            con.execute(text)  # no parameters: the simple protocol runs every statement
            con.commit()
        except psycopg.Error as e:
            self._rollback()
            raise Unavailable(f"schema file failed: {e}") from e

    def describe(self) -> str:
        s = self.s
        where = "connstring" if s.connstring else f"{s.host or 'local socket'}{':' + str(s.port) if s.port else ''}"
        return f"{where}/{s.db}:{self._schema()}.{s.table[-1]}"


def _text(v: Any) -> Any:
    """A value for a routine argument: text that the server casts, like ulogd2's literals."""
    if isinstance(v, bytes):
        return v  # bytea
    return v if isinstance(v, str) else str(v)
