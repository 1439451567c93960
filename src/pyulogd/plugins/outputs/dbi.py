"""DBI: ulogd2's libdbi output (``ulogd_output_DBI.so``), dispatched on ``dbtype``.

libdbi is not needed: ``dbtype`` picks pyulogd's own client for ``pgsql``, ``mysql`` or
``sqlite3`` (``db`` is then the database file). DBI's own rules are kept: the first column
is always skipped, column names are matched in lower case, values are rendered as in the
other SQL outputs (not SQLITE3's).
"""

from __future__ import annotations

from pyulogd.core.errors import ConfigError
from pyulogd.core.options import Choice, Port, Str
from pyulogd.core.plugin import Option
from pyulogd.db import mysql, pgsql
from pyulogd.db.backend import Backend
from pyulogd.db.options import HOST, PYULOGD, SECRETS, ULOGD_DB, password
from pyulogd.db.output import SqlOutput
from pyulogd.db.sqlite import SqliteBackend

DBTYPES = ("pgsql", "mysql", "sqlite3")


class DbiOutput(SqlOutput):
    name = "DBI"
    so_name = "ulogd_output_DBI.so"
    description = "Rows through libdbi's drivers: pgsql, mysql or sqlite3"
    options = (
        *ULOGD_DB,
        Option("db", Str(), "", required=True, help="database name (sqlite3: file)"),
        Option("host", HOST, "", help="server host"),
        Option("user", Str(), "", required=True, help="user name"),
        Option("pass", Str(), "", help="password"),
        Option("dbtype", Choice(*DBTYPES, what="dbtype"), None, required=True, help="pgsql, mysql or sqlite3"),
        Option("port", Port(zero=True), 0, help="server port (unused by 2.0.8's DBI)"),
        Option("schema", Str(), "public", help="PostgreSQL schema (unused by 2.0.8's DBI)"),
        *SECRETS,
        *PYULOGD,
    )

    def make_backend(self) -> Backend:
        cfg = self.config
        dbtype = cfg["dbtype"]
        settings = self.settings_common(
            db=cfg["db"],
            host=cfg["host"],
            port=cfg["port"],
            user=cfg["user"],
            password=password(cfg, self.label),
            schema=cfg["schema"] or "public",
            lower_case=True,
        )
        backend: Backend
        if dbtype == "pgsql":
            if not pgsql.available():
                raise ConfigError(f"{self.label}: {pgsql.MISSING}")
            backend = pgsql.PgsqlBackend(settings, self.label)
        elif dbtype == "mysql":
            if not mysql.available():
                raise ConfigError(f"{self.label}: {mysql.MISSING}")
            backend = mysql.MysqlBackend(settings, self.label)
        else:
            self.start_without_db = False
            backend = SqliteBackend(settings, self.label)
        # DBI's rules, whatever the database: first column skipped, values as in util/db.c.
        backend.skip_rule = "always"
        backend.render = "sql"
        return backend
