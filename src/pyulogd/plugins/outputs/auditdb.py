"""AUDITDB: records into pyulogd's audit table (audit/schema.py) in SQLite, PostgreSQL or MySQL,
for ``pyulogd-audit`` to query (docs/audit.md).

An output of its own rather than a mode of SQLITE3/PGSQL/MYSQL: those map a table's columns
to key names, so their rows depend on the stack (``ip_saddr_str`` from IP2STR, ``tcp_dport``
or ``orig_l4_dport``...), while the audit table has one meaning per column whatever the
input (a packet's and a flow's destination port are both ``dport``, the verdict is
``action``). What it shares with them is everything below the row: the writer thread,
batches, COPY into PostgreSQL, the spool while the database is down, the counters
(``sql.<id>.*``), reconnects with back-off (db/output.py, db/writer.py).

``db`` is a URL, the same that ``pyulogd-audit --db`` takes (``sqlite:///var/log/ulog/audit.db``,
``postgresql://ulog@127.0.0.1/audit``, ``mysql://ulog@127.0.0.1/audit``); the password goes in
``pass_file`` or ``pass_env`` rather than in the URL. A missing schema is created at start
(``create=1``, as ``pyulogd-audit schema create`` does); an older one refuses the start:
``pyulogd-audit schema migrate`` upgrades it (a daemon does not ALTER its store by itself).

``chain_key`` (tamper evidence, io/chain.py): every row gets ``seq`` and ``chain`` (an HMAC
of its values chained to the row before); the chain resumes from the table's last row at
start; ``pyulogd-audit verify --db URL --key FILE`` checks it.

``node_id``/``node_seq`` (schema version 3): the node and its sequence number of the record,
from NATSIN's ``pyulogd.node_id``/``pyulogd.node_seq`` on a collector, else this daemon's own. On a
central store (``pyulogd-audit schema create --central``, audit/central.py) they are the
unique key with ``ts``: rows already there are skipped, so a redelivered record is stored once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pyulogd.audit import central, schema
from pyulogd.audit.dburl import DbError, DbUrl, connect, parse
from pyulogd.audit.rows import compile_rows
from pyulogd.core.errors import ConfigError
from pyulogd.core.loss import A_COUNT
from pyulogd.core.options import Bool, Duration, Int, Str
from pyulogd.core.plugin import Option
from pyulogd.db import mysql, pgsql
from pyulogd.db.backend import Backend, MissingTable, Settings, TableInfo
from pyulogd.db.options import PYULOGD, SECRETS, password
from pyulogd.db.output import SqlOutput
from pyulogd.db.sqlite import SqliteBackend
from pyulogd.db.statement import Target
from pyulogd.io.chain import Chain, load_key, row_bytes

if TYPE_CHECKING:
    from pyulogd.core.context import Context


class AuditDbOutput(SqlOutput):
    audit_default = True  # pyulogd's own schema: loss records unless loss_records=0
    name = "AUDITDB"
    table_chain = False  # its schema has seq and chain columns of its own (render)
    description = "Rows into pyulogd's audit table (SQLite, PostgreSQL, MySQL) for pyulogd-audit"
    options = (
        Option("db", Str(), "", required=True, extra=True,
               help="database URL: sqlite:///PATH, postgresql://USER@HOST/DB, mysql://USER@HOST/DB"),
        Option("create", Bool(), 1, extra=True, help="create the audit schema at start when it is missing"),
        Option("connect_timeout", Int(0), 0, extra=True, help="seconds a connection attempt may take (0: 10)"),
        Option("reconnect", Duration(), 2, extra=True, help="seconds before the first reconnection attempt (doubles)"),
        Option("community_id_seed", Int(0, 65535), 0, extra=True, help="seed of the Community ID hash"),
        *SECRETS,
        *(o for o in PYULOGD if o.name != "schema_file"),
        Option("backlog_memcap", Int(0), 0, extra=True, help="bytes kept in memory before spooling (0: 64 MiB)"),
    )

    def __init__(self, ctx: Context, instance_id: str, config: dict[str, Any]) -> None:
        config = {**config, "schema_file": "", "table": schema.TABLE, "procedure": "INSERT"}
        super().__init__(ctx, instance_id, config)
        self.url: DbUrl | None = None
        self.chain: Chain | None = None
        self._rows_build: Callable[[list[Any], int], tuple[Any, ...]] | None = None
        self._audit_build: Callable[[list[Any], int], tuple[Any, ...]] | None = None
        self._received = -1
        self._node_slot = self._seq_slot = self._rx_slot = 0

    # -- set-up
    def _url(self) -> DbUrl:
        if self.url is None:
            try:
                self.url = parse(self.config["db"])
            except ValueError as e:
                raise ConfigError(f"{self.label}: {e}") from None
            if self.url.password and (self.config.get("pass_file") or self.config.get("pass_env")):
                raise ConfigError(f"{self.label}: give the password in the URL or in pass_file/pass_env, not both")
            if not self.url.password and self.url.dialect != "sqlite":
                self.url.password = password(self.config, self.label)
        return self.url

    def make_backend(self) -> Backend:
        url = self._url()
        table = (schema.TABLE,)
        timeout = float(self.config["connect_timeout"] or 10)
        if url.dialect == "sqlite":
            return SqliteBackend(Settings(db=url.path, table=table, target=Target("table")), self.label)
        settings = Settings(db=url.dbname, host=url.host, port=url.port, user=url.user, password=url.password,
                            table=table, schema="public", connect_timeout=timeout, target=Target("table"))
        if url.dialect == "pgsql":
            if not pgsql.available():
                raise ConfigError(f"{self.label}: {pgsql.MISSING}")
            return pgsql.PgsqlBackend(settings, self.label)
        if not mysql.available():
            raise ConfigError(f"{self.label}: {mysql.MISSING}")
        return mysql.MysqlBackend(settings, self.label)

    def default_spool(self) -> str:
        url = self._url()
        if url.dialect == "sqlite":
            return f"{url.path}.spool"
        return super().default_spool()

    def configure(self) -> None:
        self._url()
        key = load_key(self.config, self.label)
        super().configure()
        if key is not None:
            self.chain = Chain(key)
            self._resume_chain()

    def _schema_version(self, create: bool) -> int:
        """The schema version of the database (creating the schema if asked and missing)."""
        url = self._url()
        try:
            db = connect(url, create=True)
        except DbError as e:
            raise MissingTable(str(e)) from None
        try:
            tables = db.tables()
            if schema.TABLE not in tables:
                if not create:
                    raise MissingTable(f"no table {schema.TABLE} in {url.describe()}: run "
                                       f"'pyulogd-audit schema create --db URL' (or set create=1)")
                self.ctx.log.notice(f"{self.label}: creating the audit schema in {url.describe()}")
                db.run(schema.create(url.dialect))
                return schema.VERSION
            if schema.META not in tables:
                raise ConfigError(f"{self.label}: {url.describe()} has a table {schema.TABLE} but no "
                                  f"{schema.META}: not a pyulogd audit schema")
            found = db.rows(f"SELECT value FROM {schema.META} WHERE name = 'schema_version'")
            version = int(found[0][0]) if found else 0
            if version == schema.VERSION and central.is_central(db):
                # A fleet's central store (docs/central.md): records delivered twice are stored
                # once (unique key, staging table + ON CONFLICT), and the day partitions are
                # made ahead and old ones dropped at each connection (also: schema maintain).
                assert self.backend is not None
                self.backend.s.unique_key = central.UNIQUE
                central.maintain(db, self.ctx.clock.wall(), say=lambda m: self.ctx.log.notice(f"{self.label}: {m}"))
            return version
        except DbError as e:
            raise MissingTable(str(e)) from None
        finally:
            db.close()

    def open_table(self) -> TableInfo:
        if self.backend is not None and self.backend.con is None:  # type: ignore[attr-defined]
            version = self._schema_version(self.config["create"])
            if version != schema.VERSION:
                raise ConfigError(
                    f"{self.label}: the audit schema in {self._url().describe()} is version {version}, this "
                    f"pyulogd writes version {schema.VERSION}: run 'pyulogd-audit schema migrate --db URL'")
        assert self.backend is not None
        self.backend.connect()
        info = self.backend.discover()
        columns = [c.lower() for c in info.columns if c.lower() != "id"]
        missing = [n for n in schema.NAMES if n not in columns]
        if missing:
            raise ConfigError(f"{self.label}: table {schema.TABLE} lacks the columns {', '.join(missing)}: "
                              "run 'pyulogd-audit schema migrate --db URL'")
        return TableInfo([c for c in columns if c in schema.NAMES], info.plain)

    def _map_table(self, info: TableInfo) -> list[str]:
        return list(info.columns)

    def _save_cache(self, info: TableInfo) -> None:
        """The table's columns are ours: nothing to remember between starts."""

    def _cached_keys(self) -> list[str] | None:
        return list(schema.NAMES)

    def _all_keys(self) -> list[str]:
        return list(schema.NAMES)

    def _resume_chain(self) -> None:
        """Continue the chain from the table's last chained row (else a new chain starts)."""
        assert self.chain is not None
        try:
            db = connect(self._url())
        except DbError as e:
            self.ctx.log.error(f"{self.label}: cannot read the last chained row ({e}): a new chain starts")
            return
        try:
            last = db.rows(f"SELECT seq, chain FROM {schema.TABLE} WHERE seq IS NOT NULL ORDER BY seq DESC LIMIT 1")
        except DbError as e:
            self.ctx.log.error(f"{self.label}: cannot read the last chained row ({e}): a new chain starts")
            return
        finally:
            db.close()
        if last:
            self.chain.seq, self.chain.prev = int(last[0][0]), str(last[0][1])

    # -- running
    def _compile(self, keys: list[str]) -> None:
        slots: dict[str, int] = {}
        for key, slot in zip(self.wildcard_keys, self.in_slots, strict=True):
            if slot:
                slots[key.name] = slot
        self._rows_build = compile_rows(slots, self.ctx.hostname, oob_time_is_kernel="sum.name" not in slots,
                                        seed=self.config["community_id_seed"])
        # (node_id, node_seq): a collector's records carry the node's (NATSIN's keys); a node's
        # own records are this daemon's node id and sequence number.
        self._node_slot = slots.get("pyulogd.node_id", 0)
        self._seq_slot = slots.get("pyulogd.node_seq", 0)
        # A collector's records were received by their node: its time, never the collector's
        # (a record delivered twice must be the same row twice, ts included).
        self._rx_slot = slots.get("pyulogd.received", 0)
        # Loss records: the same row, read with the audit keys (kind "loss", core/loss.py).
        akeys, aslots = self.audit_keys()
        aslots_by_name = {k.name: s for k, s in zip(akeys, aslots, strict=True) if s}
        self._audit_build = compile_rows(aslots_by_name, self.ctx.hostname,
                                         oob_time_is_kernel="sum.name" not in slots,
                                         seed=self.config["community_id_seed"])
        self.keys = list(schema.NAMES)
        if self.writer_sink is not None:
            self.writer_sink.names = schema.NAMES

    def render(self, rec: list[Any]) -> tuple[Any, ...]:
        """The audit row of a record, with its place in the chain (``seq``, ``chain``)."""
        received = self._received
        if received < 0:
            received = self._received = int(self.ctx.clock.wall() * 1_000_000)
        build = self._rows_build
        assert build is not None
        if self._rx_slot and rec[self._rx_slot] is not None:
            received = rec[self._rx_slot]
        row = build(rec, received)
        if self._seq_slot:
            node = (rec[self._node_slot], rec[self._seq_slot])
        else:
            node = (self.ctx.node_id or self.ctx.hostname, self.ctx.seq or None)
        chain = self.chain
        if chain is None:
            return row + (None, None) + node
        tag = chain.link(row_bytes(row))
        return row + (chain.seq, tag) + node

    def render_audit(self, rec: list[Any]) -> tuple[Any, ...] | None:
        """A loss record as a row of kind ``loss`` (loss_count, loss_reason, start, end); the
        schema has no kind for a heartbeat (None)."""
        build = self._audit_build
        if rec[self.audit_base + A_COUNT] is None or build is None:
            return None
        rows_build = self._rows_build
        self._rows_build = build
        try:
            return self.render(rec)
        finally:
            self._rows_build = rows_build

    def flush(self) -> None:
        self._received = -1
        super().flush()

    def stop(self) -> None:
        super().stop()
        if self.chain is not None and self.chain.seq:
            self.ctx.log.notice(f"chain {self.label}: last seq {self.chain.seq} tag {self.chain.prev}")
