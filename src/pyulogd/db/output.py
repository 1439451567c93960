"""The output every SQL output derives from: columns to keys, rows to the writer thread.

At ``configure()`` (stacks are configured output first, so every upstream key is known)
the output connects once, reads the columns of ``table`` and maps each to the key it
names (``db/columns.py``); a column that no upstream plugin produces refuses the stack,
naming the column and the keys there are. The column list is cached in the spool
directory. If the server is down at start, pyulogd starts anyway (ulogd2 did not): with
the cached columns, or, the first time, with every upstream key; the writer maps them to
the table's columns once it can connect, and the output switches to the table's columns.

An output like the others (``io/output.py``): its render function is the generated row
builder (one tuple per record), its sink the writer's (``db/writer.py:WriterSink``), which
hands the rows to the writer thread after each round of the event loop; SIGHUP reconnects,
stop writes what it can and spools the rest. Nothing here waits for the database.

Tamper evidence (``chain_key``, io/chain.py): the table gets two more columns,
``pyulogd_seq`` (an integer) and ``pyulogd_chain`` (text, 22 characters), which the column
mapping reads as the keys ``pyulogd.seq`` and ``pyulogd.chain``; each row is chained by its
other values (:func:`~pyulogd.io.chain.canon_bytes`, in the table's column order) as the
row is made, in the event loop, so rows keep the order of the records whatever the writer
and the spool do with them. At start the chain resumes from the table's last chained row.
A table without the two columns refuses the start (with the statement that adds them).
Records written while the columns were not known (the database down at the first start)
carry no seal, which ``pyulogd-audit verify --db URL --table T`` reports.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pyulogd.core import safefile
from pyulogd.core.errors import ConfigError, PluginError
from pyulogd.core.plugin import DataType, KeyType
from pyulogd.db.backend import Backend, MissingTable, Settings, TableInfo, Unavailable
from pyulogd.db.columns import map_columns
from pyulogd.db.render import compile_builder
from pyulogd.db.writer import Writer, WriterSettings, WriterSink
from pyulogd.io.chain import CHAIN_COLUMNS, CHAIN_KEYS, Chain, canon_bytes, load_key
from pyulogd.io.output import Output
from pyulogd.io.spool import Spool, SpoolError, default_dir

if TYPE_CHECKING:
    from pyulogd.core.context import Context

DEFAULT_MEM = 64 << 20
# Keys whose values are whole packets or netlink messages: not worth queueing for a table
# whose columns are not known yet (a RAW column then gets NULL).
_POINTER_TYPES = (KeyType.RAW,)


class SqlOutput(Output[tuple[Any, ...]]):
    input_type = DataType.PACKET | DataType.FLOW | DataType.SUM
    wildcard_inputs = True
    # Whether the stack may start while the database is unreachable (not for a local file).
    start_without_db: bool = True
    # Whether chain_key chains the rows of ulogd's table here (AUDITDB chains its own rows).
    table_chain: bool = True

    def __init__(self, ctx: Context, instance_id: str, config: dict[str, Any]) -> None:
        super().__init__(ctx, instance_id, config)
        self.label = f"{self.name} '{instance_id}'"
        self.backend: Backend | None = None
        self.writer_sink: WriterSink | None = None  # the sink, once started
        self.keys: list[str] = []  # the key of each value in a row
        self._types: dict[str, KeyType] = {}
        self._pending_keys: list[str] | None = None
        self._schema_file = ""
        self._schema_text: str | OSError | None = None
        self.chain: Chain | None = None  # chain_key, ulogd's tables (table_chain)

    # -- what subclasses provide
    def make_backend(self) -> Backend:
        raise NotImplementedError

    def default_spool(self) -> str:
        return default_dir(self.ctx.state_name, self.id)

    # -- set-up
    def configure(self) -> None:
        for key in self.wildcard_keys:
            self._types[key.name] = key.type  # the nearest producer is declared last
        self.backend = self.make_backend()
        cfg = self.config
        if self.table_chain:
            secret = load_key(cfg, self.label)
            self.chain = None if secret is None else Chain(secret)
        self._schema_file = cfg["schema_file"]
        self.wsettings = WriterSettings(
            batch_size=cfg["batch_size"],
            batch_timeout=cfg["batch_timeout"],
            mem_max=cfg.get("backlog_memcap") or DEFAULT_MEM,  # SQLITE3 has no backlog_memcap
            reconnect=cfg["reconnect"] or 1.0,
            reconnect_max=cfg["reconnect_max"],
        )
        # While the database is unavailable, records go to disk after waiting as long as they
        # would have waited for their batch.
        self.wsettings.spool_delay = max(self.wsettings.batch_timeout, 0.05)
        self.spool_dir: str = cfg["spool_dir"] or self.default_spool()
        self.spool_max: int = cfg["spool_max"]
        self.stop_timeout: float = cfg["stop_timeout"]
        if self.ctx.checking:
            # --check-config: the options are checked; nothing is created or connected to
            # (its path checks are daemon/check.py's), and the columns stay unknown.
            self.keys = self._all_keys()
            return
        self._check_local_files()
        self._schema_text = self._read_schema()
        try:
            # With -u, as the user: what the database creates is the user's, and no root
            # access follows a link planted in a directory the user can write.
            with safefile.as_user(self.ctx.run_as):
                info = self.open_table()
                last = self._last_chain(info)
        except Unavailable as e:
            self.backend.close()
            # A table that is not there is a configuration error; a server that is down is not.
            if not self.start_without_db or isinstance(e, MissingTable):
                raise ConfigError(f"{self.label}: {e}") from None
            cached = self._cached_keys()
            self.keys = cached or self._all_keys()
            how = (
                "with the columns cached at the last connection"
                if cached
                else f"keeping all {len(self.keys)} keys of each record until the table's columns can be read"
            )
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
            self.ctx.log.error(f"{self.label}: database unavailable at start ({reason}); starting anyway, {how}")
            if self.chain is not None:
                self.ctx.log.error(f"{self.label}: cannot read the chain's last row: a new chain starts")
            return
        finally:
            self.backend.close()
        with safefile.as_user(self.ctx.run_as):
            self.keys = self._map_table(info)  # map_columns, and the column cache saved
        if self.chain is not None and last is not None:
            self.chain.seq, self.chain.prev = last

    def _last_chain(self, info: TableInfo) -> tuple[int, str] | None:
        """Connected, with the table's columns: the chain's last row (chain_key), after
        checking that the table has the two chain columns."""
        if self.chain is None:
            return None
        missing = [c for c in CHAIN_COLUMNS if c not in self._column_keys(info)]
        if missing:
            t = self.table_name()
            raise ConfigError(
                f"{self.label}: chain_key needs the columns {' and '.join(missing)} in table '{t}': "
                f"ALTER TABLE {t} ADD COLUMN pyulogd_seq BIGINT; ALTER TABLE {t} ADD COLUMN pyulogd_chain VARCHAR(32)")
        return self.backend.last_chain() if self.backend is not None else None

    def _check_local_files(self) -> None:
        """Refuse to start unless every local path this output writes later can be written
        (with -u, by the user it writes as). A database that cannot be reached is an outage
        (the spool keeps the records); a spool or SQLite file that cannot be written is not."""
        run_as = self.ctx.run_as
        try:
            safefile.make_dir(self.spool_dir, run_as, 0o700)
        except OSError as e:
            raise ConfigError(f"{self.label}: cannot use spool_dir '{self.spool_dir}': {e.strerror}") from None
        assert self.backend is not None
        db = self.backend.local_file
        if db is None:
            return
        folder = os.path.dirname(os.path.abspath(db))
        try:
            os.close(safefile.open_dir(folder, run_as))
            # SQLite creates (and removes) its -wal, -shm and -journal files next to the database.
            safefile.require_writable(folder, run_as, "creates the database's -wal and -shm files there",
                                      os.W_OK | os.X_OK)
            if os.path.lexists(db):
                safefile.require_writable(db, run_as, "writes the database")
        except OSError as e:
            raise ConfigError(f"{self.label}: cannot use db '{db}': {e.strerror}") from None

    def _read_schema(self) -> str | OSError | None:
        """The text of ``schema_file``, read now (as root, before -u) but needed only if the
        table is missing: a file that cannot be read is an error only then."""
        if not self._schema_file:
            return None
        try:
            with open(self._schema_file, encoding="utf-8") as f:
                return f.read()
        except OSError as err:
            return err

    def open_table(self) -> TableInfo:
        """Connect and read the columns; create the table from ``schema_file`` if missing."""
        assert self.backend is not None
        self.backend.connect()
        try:
            return self.backend.discover()
        except MissingTable as e:
            if not self._schema_file:
                raise
            # A schema file that is not there matters only if the table is not.
            text = self._schema_text
            if isinstance(text, OSError) or text is None:
                why = f"schema_file '{self._schema_file}' cannot be read: {getattr(text, 'strerror', '?')}"
                raise MissingTable(f"{e}, and {why}") from text
            self.ctx.log.notice(f"{self.label}: creating the tables from {self._schema_file}")
            self.backend.run_script(text)
            return self.backend.discover()

    def table_name(self) -> str:
        name: str = self.config["table"]
        return name

    def _column_keys(self, info: TableInfo) -> list[str]:
        lower = self.backend is not None and self.backend.s.lower_case
        return [c.lower() for c in info.columns] if lower else list(info.columns)

    def _map_table(self, info: TableInfo) -> list[str]:
        """Writer side: the keys of a freshly read table (ConfigError: a column has no key)."""
        keys = map_columns(self._column_keys(info), self._available(), self.table_name(), self.label)
        self._save_cache(info)
        return keys

    def _available(self) -> list[str]:
        """The keys a column may name: the upstream ones, and the chain's two (chain_key)."""
        names = list(self._types)
        return names + list(CHAIN_KEYS) if self.chain is not None else names

    def _on_table(self, info: TableInfo, keys: list[str]) -> None:
        if keys != self.keys:
            self._pending_keys = keys  # picked up by the event loop in flush()

    def _all_keys(self) -> list[str]:
        seen: dict[str, None] = {}
        for key in self.wildcard_keys:
            if key.type not in _POINTER_TYPES:
                seen[key.name] = None
        return list(seen)

    # -- the column cache, for starting while the database is down
    def _cache_path(self) -> str:
        return os.path.join(self.spool_dir, "columns.json")

    def _save_cache(self, info: TableInfo) -> None:
        if not self.start_without_db:
            return
        data = {"table": self.table_name(), "columns": info.columns, "plain": info.plain}
        try:
            try:
                with open(self._cache_path(), encoding="utf-8") as f:
                    if json.load(f) == data:
                        return
            except (OSError, ValueError):
                pass
            tmp = self._cache_path() + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(data, f)
            os.replace(tmp, self._cache_path())
        except OSError as e:
            self.ctx.log.notice(f"{self.label}: cannot cache the column list in {self.spool_dir}: {e.strerror}")

    def _cached_keys(self) -> list[str] | None:
        try:
            with open(self._cache_path(), encoding="utf-8") as f:
                data = json.load(f)
            if data.get("table") != self.table_name():
                return None
            info = TableInfo(list(data["columns"]), bool(data.get("plain")))
            return map_columns(self._column_keys(info), self._available(), self.table_name(), self.label)
        except (OSError, ValueError, KeyError, TypeError, ConfigError):
            return None

    # -- running
    def start(self) -> None:
        if self.backend is None:
            raise PluginError(f"{self.label} was not configured")
        spool = Spool(self.spool_dir, self.spool_max)
        try:
            # As the -u user: the spool is written by the user's threads from now on.
            with safefile.as_user(self.ctx.run_as):
                spool.open()
        except SpoolError as e:
            raise PluginError(f"{self.label}: {e}") from None
        if not spool.empty:
            self.ctx.log.notice(f"{self.label}: {spool.bytes} bytes of records from before are in {spool.path}")
        writer = Writer(
            self.ctx,
            self.label,
            f"sql.{self.id}",
            self.backend,
            self.wsettings,
            spool,
            self._map_table,
            self._on_table,
            self.open_table,
        )
        self.writer_sink = WriterSink(writer, (), self.wsettings.batch_size, self.stop_timeout)
        self._compile(self.keys)
        self.attach(self.writer_sink)
        if self.ctx.run_as is None:
            self.writer_sink.open()
        # else running() starts the writer once -u has dropped root: its threads then connect,
        # and create the spool's segments, as the user, never as root (that was a race).

    def running(self) -> None:
        if self.writer_sink is not None:
            self.writer_sink.open()

    def track_commits(self) -> None:
        """Rows carry their sequence numbers from now on (into the spool too), so that
        :meth:`commit_mark` can say which are in the database."""
        if self.writer_sink is not None:
            self._add = self.writer_sink.track_commits()

    def commit_mark(self) -> int:
        """Committed means the transaction with the row committed: the writer's mark. Rows in
        this output's spool are not committed."""
        writer = self.writer
        return self._flushed if writer is None else writer.commit_mark()

    @property
    def writer(self) -> Writer | None:
        """The writer threads' state (queue, spool, counters), once started."""
        return self.writer_sink.writer if self.writer_sink is not None else None

    def _compile(self, keys: list[str]) -> None:
        slot_of: dict[str, int] = {}
        for key, slot in zip(self.wildcard_keys, self.in_slots, strict=True):
            slot_of[key.name] = slot
        assert self.backend is not None
        build = compile_builder(
            [self._types.get(k, KeyType.STRING) for k in keys], [slot_of.get(k, 0) for k in keys], self.backend.render
        )
        self.renderer = build
        if self.chain is not None and all(k in keys for k in CHAIN_KEYS):
            self.renderer = chained(build, self.chain, keys)
        self.keys = keys
        if self.writer_sink is not None:
            self.writer_sink.names = tuple(keys)

    def flush(self) -> None:
        super().flush()
        pending = self._pending_keys
        if pending is not None:
            self._pending_keys = None
            self._compile(pending)

    def stop(self) -> None:
        if self.out is not None:
            super().stop()  # what waits is written within stop_timeout, the rest spooled
        elif self.backend is not None:
            self.backend.close()
        if self.chain is not None and self.chain.seq:
            self.ctx.log.notice(f"chain {self.label}: last seq {self.chain.seq} tag {self.chain.prev}")

    def settings_common(self, **kw: Any) -> Settings:
        from pyulogd.db.statement import parse_procedure, split_name

        cfg = self.config
        return Settings(
            table=split_name(self.table_name()),
            connect_timeout=cfg["connect_timeout"] or 10.0,
            target=parse_procedure(cfg["procedure"] or "INSERT"),
            **kw,
        )


def chained(build: Callable[[list[Any]], tuple[Any, ...]], chain: Chain,
            keys: list[str]) -> Callable[[list[Any]], tuple[Any, ...]]:
    """The row builder of a chained table: ``build``'s row with its place in the chain in the
    two chain columns, the tag covering the other columns' values in table order."""
    i_seq, i_tag = keys.index(CHAIN_KEYS[0]), keys.index(CHAIN_KEYS[1])
    data = [i for i in range(len(keys)) if i not in (i_seq, i_tag)]
    link = chain.link

    def row(rec: list[Any]) -> tuple[Any, ...]:
        values = list(build(rec))
        tag = link(canon_bytes([values[i] for i in data]))
        values[i_seq] = chain.seq
        values[i_tag] = tag
        return tuple(values)

    return row
