"""Database URLs (``--db`` of pyulogd-audit, ``db`` of the AUDITDB output) and a small
connection wrapper for the command's queries.

* ``sqlite:///var/log/ulog/audit.db`` (``sqlite:relative/path`` also works)
* ``postgresql://user[:password]@host[:port]/dbname`` (``postgres://``, ``pgsql://``;
  no host: the local socket; ``?host=/run/postgresql`` for a socket directory)
* ``mysql://user[:password]@host[:port]/dbname`` (``mariadb://``)

A password is better kept out of the URL: ``PGPASSWORD``/``~/.pgpass`` for PostgreSQL, or
the output's ``pass_file``/``pass_env`` and the command's ``--password-file``.

Statements are written with ``?`` placeholders and turned into the client's ``%s`` style
here; identifiers in them are ours (the schema's), never a user's: values are always
parameters.
"""

from __future__ import annotations

import importlib
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

SCHEMES = {"sqlite": "sqlite", "sqlite3": "sqlite", "postgresql": "pgsql", "postgres": "pgsql", "pgsql": "pgsql",
           "mysql": "mysql", "mariadb": "mysql"}  # fmt: skip


class DbError(Exception):
    """A database the command cannot use, with a one-line reason."""


@dataclass
class DbUrl:
    dialect: str
    path: str = ""  # sqlite
    host: str = ""
    port: int = 0
    user: str = ""
    password: str = field(default="", repr=False)
    dbname: str = ""

    def describe(self) -> str:
        """Where, without the password (for messages)."""
        if self.dialect == "sqlite":
            return f"sqlite:{self.path}"
        where = f"{self.host or 'local socket'}{':' + str(self.port) if self.port else ''}"
        scheme = "postgresql" if self.dialect == "pgsql" else self.dialect
        return f"{scheme}://{self.user + '@' if self.user else ''}{where}/{self.dbname}"


def parse(url: str) -> DbUrl:
    """A :class:`DbUrl`; ValueError naming what is wrong."""
    scheme, sep, rest = url.partition(":")
    dialect = SCHEMES.get(scheme.lower()) if sep else None
    if dialect is None:
        raise ValueError(f"database URL '{url}': expected sqlite:///PATH, postgresql://USER@HOST/DB or "
                         "mysql://USER@HOST/DB")
    if dialect == "sqlite":
        path = rest[2:] if rest.startswith("//") else rest
        if not path:
            raise ValueError(f"database URL '{url}': no file name")
        return DbUrl("sqlite", path=unquote(path))
    parts = urlsplit(url)
    name = unquote(parts.path.lstrip("/"))
    if not name:
        raise ValueError(f"database URL '{url}': no database name (…/DBNAME)")
    try:
        port = parts.port or 0
    except ValueError:
        raise ValueError(f"database URL '{url}': bad port") from None
    host = unquote(parts.hostname or "")
    query = parse_qs(parts.query)
    if "host" in query:
        host = query["host"][0]
    return DbUrl(dialect, host=host, port=port, user=unquote(parts.username or ""),
                 password=unquote(parts.password or ""), dbname=name)


class Db:
    """One connection, autocommit, ``?`` placeholders whatever the client."""

    def __init__(self, url: DbUrl, con: Any, errors: tuple[type[BaseException], ...]) -> None:
        self.url = url
        self.dialect = url.dialect
        self.con = con
        self.errors = errors

    def _sql(self, sql: str) -> str:
        return sql if self.dialect == "sqlite" else sql.replace("?", "%s")

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            cur = self.con.cursor()
            cur.execute(self._sql(sql), tuple(params))
            out = [tuple(r) for r in cur.fetchall()] if cur.description else []
            cur.close()
            return out
        except self.errors as e:
            raise DbError(_line(e)) from e

    def run(self, statements: Sequence[str], transaction: bool = True) -> None:
        """Run DDL/DML statements, in one transaction where the database can roll DDL back."""
        try:
            cur = self.con.cursor()
            if transaction and self.dialect != "mysql":
                cur.execute("BEGIN")
            try:
                for sql in statements:
                    cur.execute(sql)
            except BaseException:
                if transaction and self.dialect != "mysql":
                    cur.execute("ROLLBACK")
                raise
            if transaction and self.dialect != "mysql":
                cur.execute("COMMIT")
            cur.close()
        except self.errors as e:
            raise DbError(_line(e)) from e

    def tables(self) -> set[str]:
        if self.dialect == "sqlite":
            sql = "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')"
        elif self.dialect == "pgsql":
            sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        else:
            sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()"
        return {str(r[0]).lower() for r in self.rows(sql)}

    def columns(self, table: str) -> list[str]:
        if self.dialect == "sqlite":
            return [str(r[1]) for r in self.rows(f'PRAGMA table_info("{table}")')]
        schema = "current_schema()" if self.dialect == "pgsql" else "DATABASE()"
        return [str(r[0]).lower() for r in self.rows(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = " + schema
            + " AND table_name = ? ORDER BY ordinal_position", (table,))]

    def close(self) -> None:
        try:
            self.con.close()
        except Exception:  # noqa: BLE001 - closing a broken connection may fail in any way
            pass


def _line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def connect(url: DbUrl, *, create: bool = False) -> Db:
    """A connection; DbError with one line when it cannot be had. An SQLite file that does not
    exist is an error unless ``create`` (a mistyped path must not create an empty database)."""
    if url.dialect == "sqlite":
        import os

        if not create and not os.path.exists(url.path):
            raise DbError(f"{url.path}: no such database file")
        try:
            con = sqlite3.connect(url.path, isolation_level=None, timeout=10)
            con.execute("PRAGMA busy_timeout = 10000")
        except sqlite3.Error as e:
            raise DbError(f"{url.path}: {_line(e)}") from e
        return Db(url, con, (sqlite3.Error,))
    if url.dialect == "pgsql":
        try:
            psycopg: Any = importlib.import_module("psycopg")
        except ImportError:
            raise DbError("PostgreSQL needs psycopg 3: pip install 'pyulogd[pgsql]'") from None
        kw: dict[str, Any] = {"dbname": url.dbname, "autocommit": True, "connect_timeout": 10,
                              "application_name": "pyulogd-audit"}
        for k, v in (("host", url.host), ("port", url.port), ("user", url.user), ("password", url.password)):
            if v:
                kw[k] = v
        try:
            con = psycopg.connect(**kw)
        except psycopg.Error as e:
            raise DbError(f"{url.describe()}: {_line(e)}") from e
        return Db(url, con, (psycopg.Error,))
    try:
        pymysql: Any = importlib.import_module("pymysql")
    except ImportError:
        raise DbError("MySQL needs PyMySQL: pip install 'pyulogd[mysql]'") from None
    kw = {"database": url.dbname, "autocommit": True, "connect_timeout": 10, "charset": "utf8mb4"}
    for k, v in (("host", url.host), ("port", url.port), ("user", url.user), ("password", url.password)):
        if v:
            kw[k] = v
    if url.host.startswith("/"):
        kw.pop("host")
        kw["unix_socket"] = url.host
    try:
        con = pymysql.connect(**kw)
    except pymysql.Error as e:
        raise DbError(f"{url.describe()}: {_line(e)}") from e
    return Db(url, con, (pymysql.Error,))
