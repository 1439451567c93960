"""DBI: ulogd2's libdbi output (``ulogd_output_DBI.so``), dispatched on ``dbtype``.

libdbi is not needed: ``dbtype`` picks pyulogd's own client for ``pgsql``, ``mysql`` or
``sqlite3`` (``db`` is then the database file). DBI's own rules are kept: the first column
is always skipped, column names are matched in lower case, values are rendered as in the
other SQL outputs (not SQLITE3's).
"""

from __future__ import annotations

from pyulogd.core.checks import check_port_or_default
from pyulogd.core.errors import ConfigError
from pyulogd.core.plugin import Option
from pyulogd.core.plugin import OptionType as T
from pyulogd.db import mysql, pgsql
from pyulogd.db.backend import Backend
from pyulogd.db.options import PYULOGD, SECRETS, ULOGD_DB, password
from pyulogd.db.output import SqlOutput
from pyulogd.db.sqlite import SqliteBackend

DBTYPES = ("pgsql", "mysql", "sqlite3")


def _check_dbtype(value: object) -> str | None:
    return None if str(value).lower() in DBTYPES else f"unknown dbtype '{value}' (pyulogd has {', '.join(DBTYPES)})"


class DbiOutput(SqlOutput):
    name = "DBI"
    so_name = "ulogd_output_DBI.so"
    description = "Rows through libdbi's drivers: pgsql, mysql or sqlite3"
    options = (
        *ULOGD_DB,
        Option("db", T.STRING, "", required=True, help="database name (sqlite3: file)"),
        Option("host", T.STRING, "", help="server host"),
        Option("user", T.STRING, "", required=True, help="user name"),
        Option("pass", T.STRING, "", help="password"),
        Option("dbtype", T.STRING, "", required=True, help="pgsql, mysql or sqlite3", check=_check_dbtype),
        Option("port", T.INT, 0, help="server port (unused by 2.0.8's DBI)", check=check_port_or_default),
        Option("schema", T.STRING, "public", help="PostgreSQL schema (unused by 2.0.8's DBI)"),
        *SECRETS,
        *PYULOGD,
    )

    def make_backend(self) -> Backend:
        cfg = self.config
        dbtype = str(cfg["dbtype"]).lower()
        settings = self.settings_common(
            db=str(cfg["db"]),
            host=str(cfg["host"]),
            port=int(cfg["port"] or 0),
            user=str(cfg["user"]),
            password=password(cfg, self.label),
            schema=str(cfg["schema"] or "public"),
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
