"""MYSQL: rows into MySQL or MariaDB (ulogd2 ``ulogd_output_MYSQL.so``), with PyMySQL.

ulogd2's options and statement kinds (``db/statement.py``); multi-row INSERTs into plain
tables; the writer thread, the spool and the reconnection backoff of ``db/writer.py``.
"""

from __future__ import annotations

from pyulogd.core.errors import ConfigError
from pyulogd.core.options import Port, Str
from pyulogd.core.plugin import Option
from pyulogd.db import mysql
from pyulogd.db.backend import Backend
from pyulogd.db.options import HOST, PYULOGD, SECRETS, ULOGD_DB, password
from pyulogd.db.output import SqlOutput


class MysqlOutput(SqlOutput):
    name = "MYSQL"
    so_name = "ulogd_output_MYSQL.so"
    description = "Rows into MySQL/MariaDB: multi-row INSERTs, or a stored function per record"
    options = (
        *ULOGD_DB,
        Option("db", Str(), "", required=True, help="database name"),
        Option("host", HOST, "", help="server host (empty or localhost: the local socket)"),
        Option("user", Str(), "", required=True, help="user name"),
        Option("pass", Str(), "", help="password"),
        Option("port", Port(zero=True), 0, help="server port (0: 3306)"),
        *SECRETS,
        *PYULOGD,
    )

    def make_backend(self) -> Backend:
        if not mysql.available():
            raise ConfigError(f"{self.label}: {mysql.MISSING}")
        cfg = self.config
        settings = self.settings_common(
            db=cfg["db"],
            host=cfg["host"],
            port=cfg["port"],
            user=cfg["user"],
            password=password(cfg, self.label),
        )
        return mysql.MysqlBackend(settings, self.label)
