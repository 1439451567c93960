"""The interface the writer thread drives, one implementation per client library.

A backend is used by one thread at a time: ``discover`` runs in ``configure()`` on a
short-lived connection, everything else in the output's writer thread. Errors are sorted
into two kinds, because they call for opposite reactions:

* :class:`Unavailable`: the database cannot take writes now (down, unreachable, locked,
  table missing, server shutting down). Keep every record, reconnect later.
* :class:`Rejected`: the database refused these values (out of range, constraint). Other
  records still go in: the writer splits the batch to find and count the bad rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pyulogd.db.statement import Target, quote_ident, quote_path
from pyulogd.io.chain import CHAIN_COLUMNS

Rows = list[tuple[Any, ...]]


class Unavailable(Exception):
    """Writing is impossible now; try again later."""


class Rejected(Exception):
    """The database refused the values of at least one of the rows."""


class MissingTable(Unavailable):
    """Connected, but the table or view is not there."""


@dataclass
class Settings:
    """Connection settings, from the plugin's options."""

    db: str = ""
    host: str = ""
    port: int = 0
    user: str = ""
    password: str = ""
    table: tuple[str, ...] = ()
    schema: str = ""
    connstring: str = ""
    connect_timeout: float = 10.0
    target: Target = field(default_factory=lambda: Target("table"))
    lower_case: bool = False  # DBI lower-cases column names


@dataclass
class TableInfo:
    columns: list[str]  # after the id-column rule, in table order
    plain: bool  # a base table (PostgreSQL can COPY into it)


class Backend:
    """Base class; see the module docstring."""

    dialect = ""  # "sqlite", "pgsql", "mysql": quoting and client
    render = "sql"  # value dialect of pyulogd.db.render
    skip_rule = "never"  # which first column is an id column (columns.skip_first)

    def __init__(self, settings: Settings, label: str) -> None:
        self.s = settings
        self.label = label

    @property
    def local_file(self) -> str | None:
        """The database file on this machine (SQLite), or None for a server."""
        return None

    def connect(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def discover(self) -> TableInfo:
        """Columns of ``settings.table`` (connected)."""
        raise NotImplementedError

    def write(self, columns: Sequence[str], rows: Rows) -> None:
        """Write rows (values in ``columns`` order) in one transaction."""
        raise NotImplementedError

    def write_each(self, columns: Sequence[str], rows: Rows) -> list[str | None]:
        """Write rows one by one in one transaction, skipping those refused (a savepoint each).

        Returns, per row, None (written) or the database's reason for refusing it. Raises
        Unavailable like ``write``. Used for small groups of rows that contain a refused one:
        one transaction instead of one per row.
        """
        raise NotImplementedError

    def fetch_one(self, sql: str) -> tuple[Any, ...] | None:
        """The first row of a query of ours (identifiers quoted, no parameters), connected;
        Unavailable when it fails."""
        raise NotImplementedError

    def table_path(self) -> tuple[str, ...]:
        """The table the columns were read from, as a quoted path takes it."""
        return self.s.table

    def last_chain(self) -> tuple[int, str] | None:
        """(seq, tag) of the last chained row of the table (tamper evidence, io/chain.py), or
        None: the table has no chained row yet."""
        seq, tag = (quote_ident(c, self.dialect) for c in CHAIN_COLUMNS)
        rel = quote_path(self.table_path(), self.dialect)
        row = self.fetch_one(f"SELECT {seq}, {tag} FROM {rel} WHERE {seq} IS NOT NULL "  # noqa: S608 - quoted
                             f"ORDER BY {seq} DESC LIMIT 1")
        return None if row is None or row[1] is None else (int(row[0]), str(row[1]))

    def run_script(self, text: str) -> None:
        """Run a schema file (creates the tables)."""
        raise NotImplementedError(f"{self.label}: schema_file is not supported for this database")

    def describe(self) -> str:
        """Where this backend writes, for log lines (never the password)."""
        return ".".join(self.s.table)
