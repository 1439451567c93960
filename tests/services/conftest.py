"""Fixtures for tests against real database servers on loopback (marker ``services``).

Each test gets its own database, created here and dropped afterwards, on the servers the
machine runs (PostgreSQL 127.0.0.1:5432, MariaDB 127.0.0.1:3306, both with trust/empty
password for their admin user); tests skip when a server or its client library is not
there. Override with PYULOGD_TEST_PG (a libpq conninfo of an admin connection) and
PYULOGD_TEST_MYSQL (host:port). The servers a test starts itself: tests/natsserver.py
(PYULOGD_TEST_NATS_SERVER: which nats-server; its version is in pytest's header) and
tests/services/servers.py (PYULOGD_TEST_PG_PORT).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest

PG_ADMIN = os.environ.get("PYULOGD_TEST_PG", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
MYSQL_ADDR = os.environ.get("PYULOGD_TEST_MYSQL", "127.0.0.1:3306")
_seq = itertools.count()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "services: needs the PostgreSQL / MariaDB servers on loopback")


def pytest_report_header(config: pytest.Config) -> str:
    from tests.natsserver import have_nats_server, nats_server_version

    return have_nats_server() or nats_server_version()


def unique(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{next(_seq)}"


@pytest.fixture()
def pg_db() -> Iterator[str]:
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
    except psycopg.Error as e:
        pytest.skip(f"PostgreSQL is not reachable ({PG_ADMIN}): {e}")
    name = unique("pyulogd_t")
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def mysql_admin() -> object:
    pymysql = pytest.importorskip("pymysql")
    host, port = MYSQL_ADDR.rsplit(":", 1)
    try:
        return pymysql.connect(host=host, port=int(port), user="root", password="", connect_timeout=3, autocommit=True)
    except pymysql.MySQLError as e:
        pytest.skip(f"MariaDB is not reachable ({MYSQL_ADDR}): {e}")


@pytest.fixture()
def my_db() -> Iterator[str]:
    admin = mysql_admin()
    name = unique("pyulogd_t")
    with admin.cursor() as cur:  # type: ignore[attr-defined]
        cur.execute(f"CREATE DATABASE `{name}`")
    try:
        yield name
    finally:
        with admin.cursor() as cur:  # type: ignore[attr-defined]
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()  # type: ignore[attr-defined]
