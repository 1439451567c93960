"""The plugin cases in tests/cases (see its README): a config, captured input bytes, expected files."""

from __future__ import annotations

import importlib
import ipaddress
import itertools
import json
import os
import re
import shutil
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyulogd.codec import ipfix as ipfix_codec
from pyulogd.core.clock import FakeClock
from pyulogd.core.config import parse_text
from pyulogd.core.context import Context
from pyulogd.core.plugin import Sink
from pyulogd.daemon.service import Service
from pyulogd.io.loop import Loop
from pyulogd.io.rtnl import LinkCache

CASES = Path(__file__).resolve().parents[1] / "cases"
REGEN = os.environ.get("PYULOGD_REGEN_CASES") == "1"
NOW = 1800000000.25
DEFAULT_INTERFACES = {"1": "lo", "2": "eth0"}


def case_dirs() -> list[Path]:
    return sorted(p.parent for p in CASES.glob("*/**/ulogd.conf") if not p.parent.name.startswith("_"))


def case_id(d: Path) -> str:
    return str(d.relative_to(CASES))


def read_chunks(path: Path, seen: tuple[Path, ...] = ()) -> list[bytes]:
    """The chunks of an input file (README): blank-line separated hex, comments, @file includes."""
    if path in seen:
        raise ValueError(f"{path}: @file loop")
    chunks: list[bytes] = []
    cur: list[str] = []

    def close() -> None:
        if cur:
            chunks.append(bytes.fromhex("".join(cur)))
            cur.clear()

    for line in path.read_text().splitlines():
        s = line.strip()
        if s.startswith("#"):
            continue
        if s.startswith("@file "):
            close()
            chunks += read_chunks((path.parent / s[6:].strip()).resolve(), (*seen, path))
        elif not s:
            close()
        else:
            cur.append(re.sub(r"\s+", "", s))
    close()
    return chunks


@pytest.fixture()
def utc() -> Iterator[None]:
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


def sqlite_dump(path: Path) -> str:
    con = sqlite3.connect(path)
    try:
        return "\n".join(con.iterdump()) + "\n"
    finally:
        con.close()


def ipfix_text(data: bytes) -> str:
    """IPFIX messages as text, one line per message, template and record; export time masked."""
    lines: list[str] = []
    for msg in ipfix_codec.decode(data):
        lines.append(f"message seq={msg.sequence} domain={msg.domain} export_time=*")
        for tid, fields in msg.templates:
            lines.append(f"  template {tid}: " + " ".join(f"{ie}/{size}" for ie, size in fields))
        for tid, rec in msg.records:
            values = {k: str(ipaddress.ip_address(v)) if isinstance(v, bytes) else v for k, v in rec.items()}
            lines.append(f"  record {tid}: " + " ".join(f"{k}={v}" for k, v in values.items()))
    return "\n".join(lines) + "\n"


DECODERS = {
    "raw": lambda data: data.decode("utf-8", "surrogateescape"),
    "ipfix": ipfix_text,
}
KINDS = {
    "tcp": (socket.AF_INET, socket.SOCK_STREAM),
    "udp": (socket.AF_INET, socket.SOCK_DGRAM),
    "unix": (socket.AF_UNIX, socket.SOCK_STREAM),
    "unixgram": (socket.AF_UNIX, socket.SOCK_DGRAM),
}


class Listener:
    """A local peer for a network output (case.json ``listen``, see the README): bound before
    the config is read (its port or path replaces ``@<name>@``), read after the daemon stopped."""

    def __init__(self, spec: dict[str, Any], out: Path) -> None:
        self.name = str(spec["name"])
        self.output = str(spec["output"])
        self.decode = DECODERS[spec.get("decode", "raw")]
        self.masks: list[list[str]] = spec.get("mask", [])
        family, self.kind = KINDS[spec["proto"]]
        self.sock = socket.socket(family, self.kind)
        if family == socket.AF_UNIX:
            self.address = str(out / f"{self.name.lower()}.sock")
            self.sock.bind(self.address)
        else:
            self.sock.bind(("127.0.0.1", 0))
            self.address = str(self.sock.getsockname()[1])
        if self.kind == socket.SOCK_STREAM:
            self.sock.listen(8)

    def received(self) -> bytes:
        """Everything the peer got: datagrams in order, or each connection's stream in turn."""
        data = b""
        if self.kind == socket.SOCK_DGRAM:
            self.sock.setblocking(False)
            while True:
                try:
                    data += self.sock.recv(65536)
                except BlockingIOError:
                    return data
        self.sock.settimeout(1.0)  # the connections were made (and closed) before the daemon stopped
        while True:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                return data
            self.sock.settimeout(0.05)  # a reconnection would already be waiting too
            with conn:
                conn.settimeout(2.0)
                while chunk := conn.recv(65536):
                    data += chunk

    def write(self, out: Path) -> None:
        try:
            data = self.received()
        finally:
            self.sock.close()
        if not data:
            return  # no output file: the case fails on its expected file
        text = self.decode(data)
        for pattern, repl in self.masks:
            text = re.sub(pattern, repl, text)
        (out / self.output).write_text(text, errors="surrogateescape")


# The database servers a case may require (case.json ``requires``): loopback, trust / empty
# password admin users, as on the CI machine (see tests/services/conftest.py).
SERVERS = {"pgsql": ("psycopg", 5432), "mysql": ("pymysql", 3306)}
_db_seq = itertools.count()


def service_missing(service: str) -> str | None:
    """Why a required service cannot be used (None: it can). Listed in PYULOGD_CASE_SERVICES:
    always used, so that a server that should be there fails the case instead of skipping it."""
    if service in os.environ.get("PYULOGD_CASE_SERVICES", "").split(","):
        return None
    if service not in SERVERS:
        return f"unknown service {service}"
    module, port = SERVERS[service]
    try:
        importlib.import_module(module)
    except ImportError:
        return f"{service}: the client library {module} is not installed"
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError as e:
        return f"{service}: nothing answers on 127.0.0.1:{port} ({e})"
    return None


def _value(v: object) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, bytes | bytearray | memoryview):
        return bytes(v).hex()
    return repr(v) if isinstance(v, str) else str(v)


class Database:
    """A fresh database on a server (case.json ``database``, see the README): created with
    ``setup`` before the config is read (its name replaces ``@DB@``), every table dumped to
    ``<table>.rows`` after the daemon stopped, then dropped."""

    def __init__(self, spec: dict[str, Any], case: Path) -> None:
        self.server = str(spec["server"])
        self.name = f"pyulogd_case_{os.getpid()}_{next(_db_seq)}"
        if self.server == "pgsql":
            import psycopg

            self.admin: Any = psycopg.connect(
                "host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True, connect_timeout=3
            )
            self.admin.execute(f'CREATE DATABASE "{self.name}"')
        else:
            import pymysql

            self.admin = pymysql.connect(
                host="127.0.0.1", port=3306, user="root", password="", autocommit=True, connect_timeout=3
            )
            with self.admin.cursor() as cur:
                cur.execute(f"CREATE DATABASE `{self.name}`")
        try:
            with self.connect() as con:
                for stmt in (case / spec.get("setup", "setup.sql")).read_text().split(";"):
                    if stmt.strip():
                        self.query(con, stmt)
        except BaseException:
            self.drop()
            raise

    def connect(self) -> Any:
        if self.server == "pgsql":
            import psycopg

            return psycopg.connect(f"host=127.0.0.1 port=5432 user=postgres dbname={self.name}", autocommit=True)
        import pymysql

        return pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", database=self.name,
                               autocommit=True)

    @staticmethod
    def query(con: Any, sql: str, args: tuple[Any, ...] = ()) -> tuple[list[str], list[tuple[Any, ...]]]:
        cur = con.cursor()
        try:
            cur.execute(sql, args or None)
            if cur.description is None:
                return [], []
            return [d[0] for d in cur.description], list(cur.fetchall())
        finally:
            cur.close()

    def dump(self, out: Path) -> None:
        """Every base table as text: a header of column names, then its rows by the first column."""
        where = "table_schema = 'public'" if self.server == "pgsql" else "table_schema = %s"
        args = () if self.server == "pgsql" else (self.name,)
        with self.connect() as con:
            _, tables = self.query(
                con, f"SELECT table_name FROM information_schema.tables WHERE {where} "
                "AND table_type = 'BASE TABLE' ORDER BY table_name", args)
            for (table,) in tables:
                q = f'"{table}"' if self.server == "pgsql" else f"`{table}`"
                names, rows = self.query(con, f"SELECT * FROM {q} ORDER BY 1")
                lines = ["|".join(names)] + ["|".join(_value(v) for v in row) for row in rows]
                (out / f"{table}.rows").write_text("\n".join(lines) + "\n")

    def drop(self) -> None:
        try:
            if self.server == "pgsql":
                self.admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            else:
                with self.admin.cursor() as cur:
                    cur.execute(f"DROP DATABASE IF EXISTS `{self.name}`")
        finally:
            self.admin.close()


def run_case(case: Path, out: Path) -> Service:
    meta: dict[str, Any] = json.loads((case / "case.json").read_text()) if (case / "case.json").exists() else {}
    text = (case / "ulogd.conf").read_text().replace("@OUT@", str(out)).replace("@CASE@", str(case))
    database = Database(meta["database"], case) if "database" in meta else None
    try:
        if database is not None:
            text = text.replace("@DB@", database.name)
        listeners = [Listener(spec, out) for spec in meta.get("listen", [])]
        for lst in listeners:
            text = text.replace(f"@{lst.name}@", lst.address)
        try:
            return _run(case, out, text, meta)
        finally:
            for lst in listeners:
                lst.write(out)
            if database is not None:
                database.dump(out)
    finally:
        if database is not None:
            database.drop()


def _run(case: Path, out: Path, text: str, meta: dict[str, Any]) -> Service:
    ctx = Context(loop=Loop(FakeClock(wall=float(meta.get("now", NOW)))), hostname=meta.get("hostname", "testhost"))
    ctx.log.set_destination(str(out / "ulogd.log"))
    cache = LinkCache(ctx, kernel=False)
    cache.names.update({int(k): v for k, v in meta.get("interfaces", DEFAULT_INTERFACES).items()})
    ctx.ifcache = cache
    svc = Service(str(out / "ulogd.conf"), ctx)
    svc.load_config(parse_text(text, str(case / "ulogd.conf")))
    sources = list(svc.sources.values())
    try:
        for stack in svc.stacks:
            for inst in stack.instances[1:]:
                if inst not in svc.started:
                    inst.start()
                    svc.started.append(inst)
                    if isinstance(inst, Sink):
                        svc.sinks.append(inst)
        for src in sources:
            name = f"input.{src.id}.hex" if len(sources) > 1 else "input.hex"
            for chunk in read_chunks(case / name):
                if src.name == "NFACCT":
                    # NFACCT only takes the answer to a dump it asked for: play the request (seq 0).
                    src._seq = 0  # type: ignore[attr-defined]
                src.feed(chunk)  # type: ignore[attr-defined]
                svc.flush()
    finally:
        svc.stop()
        for src in sources:
            src.stop()
    return svc


def produced(out: Path, name: str) -> str | None:
    if name.endswith(".dump"):
        db = out / name[: -len(".dump")]
        return sqlite_dump(db) if db.exists() else None
    path = out / name
    return path.read_text(errors="surrogateescape") if path.exists() else None


@pytest.mark.parametrize("case", case_dirs(), ids=case_id)
def test_case(case: Path, tmp_path: Path, utc: None) -> None:
    meta = json.loads((case / "case.json").read_text()) if (case / "case.json").exists() else {}
    services = [*meta.get("requires", []), *([meta["database"]["server"]] if "database" in meta else [])]
    missing = [why for s in dict.fromkeys(services) if (why := service_missing(s))]
    if missing:
        pytest.skip("; ".join(missing))
    run_case(case, tmp_path)
    expected = case / "expected"
    if REGEN:
        if expected.exists():
            shutil.rmtree(expected)
        expected.mkdir()
        for f in sorted(tmp_path.iterdir()):
            if f.name in ("ulogd.log", "ulogd.conf") or not f.is_file():
                continue
            try:
                sqlite3.connect(f"file:{f}?mode=ro", uri=True).execute("select 1 from sqlite_master").fetchall()
                is_db = f.read_bytes()[:15] == b"SQLite format 3"
            except sqlite3.DatabaseError:
                is_db = False
            if is_db:
                (expected / (f.name + ".dump")).write_text(sqlite_dump(f))
            else:
                shutil.copyfile(f, expected / f.name)
        pytest.skip("expected files regenerated")
    names = sorted(p.name for p in expected.iterdir()) if expected.is_dir() else []
    assert names, f"{case_id(case)}: no expected/ files"
    log = (tmp_path / "ulogd.log").read_text() if (tmp_path / "ulogd.log").exists() else ""
    for name in names:
        got = produced(tmp_path, name)
        assert got is not None, f"{case_id(case)}: no output file {name}; daemon log:\n{log}"
        want = (expected / name).read_text(errors="surrogateescape")
        assert got == want, f"{case_id(case)}: {name} differs"


def test_read_chunks(tmp_path: Path) -> None:
    (tmp_path / "a.hex").write_text("# c\n00 01\n02\n\n03\n")
    (tmp_path / "b.hex").write_text("ff\n\n@file a.hex\nee\n")
    assert read_chunks(tmp_path / "b.hex") == [b"\xff", b"\x00\x01\x02", b"\x03", b"\xee"]
