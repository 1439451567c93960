"""SQLITE3: rows into a SQLite file (ulogd2 ``ulogd_output_SQLITE3.so``).

As 2.0.8: every column of ``table`` (no id-column rule) must name an upstream key
(``_`` for ``.``), values are bound with SQLITE3's types (``db/render.py``: IPv4 addresses
as the little-endian integer of their bytes, the golden pkt-sqlite3 and flow-sqlite3
cases reproduce). Unlike 2.0.8: rows are written by a thread in batched transactions in
WAL mode, a locked database queues and spools instead of dropping, and with
``schema_file`` (e.g. examples/sqlite3.table, Debian's schema) the tables are created when
``table`` does not exist yet. The spool is ``<db>.spool/`` unless ``spool_dir`` is set.
"""

from __future__ import annotations

from pyulogd.core.options import Duration, Int, Path, Str
from pyulogd.core.plugin import Option
from pyulogd.db.backend import Backend, Settings
from pyulogd.db.options import PYULOGD
from pyulogd.db.output import SqlOutput
from pyulogd.db.sqlite import SqliteBackend
from pyulogd.db.statement import Target, split_name

_SQLITE_EXTRA = tuple(o for o in PYULOGD) + (
    Option("reconnect", Duration(), 2, extra=True,
           help="seconds before retrying a locked or failing database (doubles)"),
)


class Sqlite3Output(SqlOutput):
    name = "SQLITE3"
    so_name = "ulogd_output_SQLITE3.so"
    description = "Rows into a SQLite database file, one column per key"
    start_without_db = False
    options = (
        Option("db", Path(), "", required=True, help="database file"),
        Option("table", Str(), "", required=True, help="table whose columns say what to write"),
        Option("buffer", Int(), 10, help="accepted; batch_size and batch_timeout replace it"),
        *_SQLITE_EXTRA,
    )

    def make_backend(self) -> Backend:
        settings = Settings(db=self.config["db"], table=split_name(self.table_name()), target=Target("table"))
        return SqliteBackend(settings, self.label)

    def default_spool(self) -> str:
        return f"{self.config['db']}.spool"
