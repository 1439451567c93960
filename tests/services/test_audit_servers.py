"""The audit schema, the AUDITDB output and pyulogd-audit on the real PostgreSQL and MariaDB
(marker ``services``; each test in a database of its own, dropped afterwards): schema
create and migrate, rows written by COPY / multi-row INSERT, filters, summary, who-had,
and the tamper-evidence chain read back unchanged through each client library."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pyulogd.audit import schema
from pyulogd.audit.dburl import connect, parse
from tests.audit_helpers import PORT_A, fill, run

pytestmark = pytest.mark.services


def pg_url(name: str) -> str:
    return f"postgresql://postgres@127.0.0.1:5432/{name}"


def my_url(name: str) -> str:
    return f"mysql://root@127.0.0.1:3306/{name}"


@pytest.fixture(params=["pgsql", "mysql"])
def url(request: pytest.FixtureRequest) -> str:
    if request.param == "pgsql":
        return pg_url(request.getfixturevalue("pg_db"))
    return my_url(request.getfixturevalue("my_db"))


@pytest.fixture
def key(tmp_path: Path) -> Path:
    d = tmp_path / "k"
    d.mkdir(mode=0o700)
    path = d / "chain.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, os.urandom(32))
    os.close(fd)
    return path


def test_store_query_verify(url: str, tmp_path: Path, key: Path) -> None:
    assert run("schema", "create", "--db", url)[0] == 0
    fill(url, tmp_path / "spool", chain_key=str(key))
    rc, out, err = run("query", "--db", url, "--format", "jsonl", "--ip", "203.0.113.0/24", "--port-id", PORT_A)
    assert (rc, err) == (0, "") and len(out.splitlines()) == 20
    first = json.loads(out.splitlines()[0])
    assert first["nat_dst_ip"] == "10.0.0.5" and first["rule"] == "sg allow ssh"
    rc, out, _ = run("query", "--db", url, "--format", "jsonl", "--rule", "default", "--action", "DROP,REJECT")
    assert rc == 0 and len(out.splitlines()) == 30
    rc, out, _ = run("summary", "--db", url, "--format", "json", "--bucket", "1h")
    s = json.loads(out)
    assert rc == 0 and s["records"] == 62 and s["suppressed"]["records"] == 250 and len(s["over_time"]) == 3
    rc, out, _ = run("who-had", "--db", url, "203.0.113.5", "2027-01-15T08:10:00Z", "--format", "json")
    assert rc == 0 and json.loads(out)[0]["port_id"] == PORT_A
    rc, out, _ = run("verify", "--db", url, "--key", str(key))
    assert rc == 0 and "62 records in 1 chain(s)" in out
    db = connect(parse(url))
    try:
        db.run([f"UPDATE {schema.TABLE} SET rule = 'nothing to see' WHERE id = 7"], transaction=False)
    finally:
        db.close()
    rc, out, _ = run("verify", "--db", url, "--key", str(key))
    assert rc == 1 and out.startswith("id 7: changed")


def test_migrate_from_version_1(url: str, tmp_path: Path) -> None:
    db = connect(parse(url))
    try:
        db.run(schema.create_v1(db.dialect), transaction=db.dialect != "mysql")
    finally:
        db.close()
    rc, out, _ = run("schema", "migrate", "--db", url)
    assert rc == 0 and f"from version 1 to {schema.VERSION}" in out
    fill(url, tmp_path / "spool")
    rc, out, _ = run("query", "--db", url, "--format", "jsonl", "--kind", "loss")
    assert rc == 0 and json.loads(out)["loss_count"] == 17
