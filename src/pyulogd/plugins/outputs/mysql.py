"""MYSQL: rows into MySQL or MariaDB (ulogd2 ``ulogd_output_MYSQL.so``), with PyMySQL.

ulogd2's options and statement kinds (``db/statement.py``); multi-row INSERTs into plain
tables; the writer thread, the spool and the reconnection backoff of ``db/writer.py``.
"""

from __future__ import annotations

from pyulogd.core.checks import check_port_or_default
from pyulogd.core.errors import ConfigError
from pyulogd.core.plugin import Option
from pyulogd.core.plugin import OptionType as T
from pyulogd.db import mysql
from pyulogd.db.backend import Backend
from pyulogd.db.options import PYULOGD, SECRETS, ULOGD_DB, password
from pyulogd.db.output import SqlOutput


class MysqlOutput(SqlOutput):
    name = "MYSQL"
    so_name = "ulogd_output_MYSQL.so"
    description = "Rows into MySQL/MariaDB: multi-row INSERTs, or a stored function per record"
    options = (
        *ULOGD_DB,
        Option("db", T.STRING, "", required=True, help="database name"),
        Option("host", T.STRING, "", help="server host (empty or localhost: the local socket)"),
        Option("user", T.STRING, "", required=True, help="user name"),
        Option("pass", T.STRING, "", help="password"),
        Option("port", T.INT, 0, help="server port (0: 3306)", check=check_port_or_default),
        *SECRETS,
        *PYULOGD,
    )

    def make_backend(self) -> Backend:
        if not mysql.available():
            raise ConfigError(f"{self.label}: {mysql.MISSING}")
        cfg = self.config
        settings = self.settings_common(
            db=str(cfg["db"]),
            host=str(cfg["host"]),
            port=int(cfg["port"] or 0),
            user=str(cfg["user"]),
            password=password(cfg, self.label),
        )
        return mysql.MysqlBackend(settings, self.label)
