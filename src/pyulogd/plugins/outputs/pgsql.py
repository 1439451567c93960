"""PGSQL: rows into PostgreSQL (ulogd2 ``ulogd_output_PGSQL.so``), with psycopg 3.

ulogd2's options and statement kinds (``db/statement.py``); COPY into plain tables, the
writer thread, the spool and the reconnection backoff of ``db/writer.py``. The password
can come from ``pass``, ``pass_file`` or ``pass_env``. ``schema_file`` (e.g. Debian's
``pgsql-ulogd2-flat.sql``) creates the tables when ``table`` is missing at start.

``unique_key`` (issue 18: the central store behind NATSIN) names the columns of a unique key of
the table, e.g. ``pyulogd_node_id,pyulogd_node_seq,oob_time_sec`` (the node id and its record sequence
number, plus the partitioning time column, which PostgreSQL requires in any unique key of a
partitioned table). A row whose key is already there is skipped and counted
(``sql.<id>.duplicates``), so a record delivered twice (a collector killed before its ack, a
republish past JetStream's duplicate window) is stored once. The bulk path then copies into a
temporary staging table and inserts from it with ``ON CONFLICT DO NOTHING`` (COPY itself has no
conflict clause); since copies are rare, a batch is first copied straight into the table behind a
savepoint, and only a batch that meets a row already there (and the 16 after it) takes the
staging path. A view or a statement target gets the clause on its INSERT.
"""

from __future__ import annotations

from pyulogd.core.errors import ConfigError
from pyulogd.core.options import Port, Str
from pyulogd.core.plugin import Option
from pyulogd.db import pgsql
from pyulogd.db.backend import Backend
from pyulogd.db.options import HOST, PYULOGD, SECRETS, ULOGD_DB, password
from pyulogd.db.output import SqlOutput


class PgsqlOutput(SqlOutput):
    name = "PGSQL"
    so_name = "ulogd_output_PGSQL.so"
    description = "Rows into PostgreSQL: COPY into tables, or a stored function per record"
    options = (
        *ULOGD_DB,
        Option("db", Str(), "", required=True, help="database name"),
        Option("host", HOST, "", help="server host (empty: the local socket)"),
        Option("user", Str(), "", required=True, help="user name"),
        Option("pass", Str(), "", help="password"),
        Option("port", Port(zero=True), 0, help="server port (0: the default)"),
        Option("schema", Str(), "public", help="schema of the table (and first in search_path)"),
        Option("connstring", Str(), "", help="libpq connection string; replaces host, port, db, user, pass"),
        Option("unique_key", Str(), "", extra=True,
               help="columns of a unique key, comma-separated (e.g. node_id,node_seq,ts): rows already "
                    "there are skipped (staging table + ON CONFLICT DO NOTHING)"),
        *SECRETS,
        *PYULOGD,
    )

    def make_backend(self) -> Backend:
        if not pgsql.available():
            raise ConfigError(f"{self.label}: {pgsql.MISSING}")
        cfg = self.config
        settings = self.settings_common(
            db=cfg["db"],
            host=cfg["host"],
            port=cfg["port"],
            user=cfg["user"],
            password=password(cfg, self.label),
            schema=cfg["schema"] or "public",
            connstring=cfg["connstring"],
            unique_key=tuple(c.strip().lower() for c in cfg["unique_key"].split(",") if c.strip()),
        )
        return pgsql.PgsqlBackend(settings, self.label)
