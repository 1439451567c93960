"""pyulogd's audit schema: one table of events, the same columns on SQLite, PostgreSQL and
MySQL/MariaDB, created and migrated by ``pyulogd-audit schema create|migrate``.

ulogd's schemas have no verdict, rule, router, port or project, and spread one event over
columns named after keys (``orig_ip_saddr_str``, ``tcp_dport``, ``udp_dport``, ...). The
audit table holds what an auditor asks about, one row per record, whatever its input:

* time: ``ts`` (microseconds since the epoch, UTC: the ECS ``@timestamp``), ``ts_source``
  (``kernel``, ``conntrack``, ``received``), ``received``, ``start_ts``/``end_ts`` (a
  flow's start and end, a rate-limit summary's or a loss record's first and last);
* what: ``kind`` (``packet``, ``flow_start``, ``flow_update``, ``flow_end``, ``summary``,
  ``loss``, ``counter``), ``action`` (``ACCEPT``/``DROP``/``REJECT``/``OTHER``), ``rule``,
  ``prefix``;
* the flow: ``family`` (4/6), ``proto``, ``src_ip``/``dst_ip`` (16 bytes: IPv4 as
  ``::ffff:a.b.c.d``, so that an address or a CIDR is one range comparison on one index in
  every database), ports, ICMP type/code, ``nat_src_ip``/``nat_dst_ip`` and their ports (the
  translated addresses from conntrack's reply tuple), ``bytes``, ``packets``,
  ``community_id``, ``ct_id``;
* where: ``host``, ``in_if``, ``out_if``, ``netns`` and the Neutron columns (router,
  network, port, project, device role, direction, HA state), NFTRACE's table, chain, handle;
* the trail itself: ``suppressed``/``limit_key`` (rate-limit summaries), ``loss_count``/
  ``loss_reason`` (loss records), and from version 2 ``seq``/``chain`` (tamper evidence);
* from version 3, ``node_id``/``node_seq``: which node logged the record and its number there,
  the key a fleet's central store de-duplicates on (audit/central.py, docs/central.md).

Indexes: ``ts`` (every query has a time range, or should), ``(src_ip, ts)`` and
``(dst_ip, ts)`` (an address over a long range: "what did 10.0.0.5 talk to"). Other filters
are applied to the rows of the time range; one more index is one more write per row, so
the list stays short (bench/README.md, "Audit queries").

``pyulogd_meta`` holds ``schema_version``. :data:`MIGRATIONS` lists the steps from each
version to the next; ``migrate`` runs those a database lacks, in one transaction where the
database allows it (PostgreSQL, SQLite; MySQL commits each DDL statement itself).
"""

from __future__ import annotations

from dataclasses import dataclass

TABLE = "pyulogd_audit"
META = "pyulogd_meta"
VERSION = 3


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # "bigint", "int", "small", "text", "short", "ip"
    help: str = ""


# Version 1 columns, in table order (``id`` first, then these).
COLUMNS_V1 = (
    Column("ts", "bigint", "event time, µs since the epoch (UTC)"),
    Column("ts_source", "short", "kernel, conntrack or received"),
    Column("received", "bigint", "reception time, µs"),
    Column("host", "text", "the observer's host name"),
    Column("kind", "short", "packet, flow_start, flow_update, flow_end, summary, loss, counter"),
    Column("action", "short", "ACCEPT, DROP, REJECT, OTHER"),
    Column("rule", "text", "the rule that decided (audit.rule), else the NFLOG prefix"),
    Column("prefix", "text", "NFLOG prefix as logged"),
    Column("family", "small", "4 or 6"),
    Column("proto", "small", "IP protocol number"),
    Column("src_ip", "ip"),
    Column("dst_ip", "ip"),
    Column("sport", "int"),
    Column("dport", "int"),
    Column("icmp_type", "small"),
    Column("icmp_code", "small"),
    Column("nat_src_ip", "ip", "source after NAT (SNAT): conntrack reply destination"),
    Column("nat_dst_ip", "ip", "destination after NAT (DNAT, floating IP -> fixed IP)"),
    Column("nat_sport", "int"),
    Column("nat_dport", "int"),
    Column("in_if", "short"),
    Column("out_if", "short"),
    Column("netns", "text"),
    Column("router_id", "short"),
    Column("network_id", "short"),
    Column("port_id", "short"),
    Column("project_id", "short"),
    Column("device_role", "short"),
    Column("direction", "short"),
    Column("ha_state", "short"),
    Column("bytes", "bigint"),
    Column("packets", "bigint"),
    Column("start_ts", "bigint"),
    Column("end_ts", "bigint"),
    Column("ct_id", "bigint"),
    Column("community_id", "short"),
    Column("suppressed", "bigint"),
    Column("limit_key", "text"),
    Column("loss_count", "bigint"),
    Column("loss_reason", "text"),
    Column("nft_table", "short"),
    Column("nft_chain", "short"),
    Column("nft_handle", "bigint"),
)
COLUMNS_V2 = (
    Column("seq", "bigint", "tamper evidence: the record's number in its chain"),
    Column("chain", "short", "tamper evidence: HMAC tag chaining the row to the one before"),
)
COLUMNS_V3 = (
    Column("node_id", "short", "the node that logged the record (a fleet's central store: docs/central.md)"),
    Column("node_seq", "bigint", "the node's sequence number of the record: (node_id, node_seq) is unique"),
)
COLUMNS = COLUMNS_V1 + COLUMNS_V2 + COLUMNS_V3
NAMES = tuple(c.name for c in COLUMNS)
# What the chain's tag covers: every column but id and the chain's own two.
CHAINED = tuple(c.name for c in COLUMNS_V1)

DIALECTS = ("sqlite", "pgsql", "mysql")
_TYPES = {
    "sqlite": {"bigint": "INTEGER", "int": "INTEGER", "small": "INTEGER", "text": "TEXT", "short": "TEXT",
               "ip": "BLOB"},
    "pgsql": {"bigint": "BIGINT", "int": "INTEGER", "small": "SMALLINT", "text": "TEXT", "short": "TEXT",
              "ip": "BYTEA"},
    "mysql": {"bigint": "BIGINT", "int": "INT", "small": "SMALLINT", "text": "TEXT", "short": "VARCHAR(255)",
              "ip": "VARBINARY(16)"},
}  # fmt: skip
_ID = {
    "sqlite": "id INTEGER PRIMARY KEY AUTOINCREMENT",
    "pgsql": "id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    "mysql": "id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY",
}
INDEXES_V1 = (("ix_pyulogd_audit_ts", ("ts",)), ("ix_pyulogd_audit_src", ("src_ip", "ts")),
              ("ix_pyulogd_audit_dst", ("dst_ip", "ts")))  # fmt: skip
INDEXES_V2 = (("ix_pyulogd_audit_seq", ("seq",)),)


def _column(c: Column, dialect: str) -> str:
    null = " NOT NULL" if c.name == "ts" else ""
    return f"{c.name} {_TYPES[dialect][c.kind]}{null}"


def _meta(dialect: str) -> str:
    key = "VARCHAR(64)" if dialect == "mysql" else "TEXT"
    return f"CREATE TABLE {META} (name {key} PRIMARY KEY, value TEXT)"


def _set_version(version: int) -> str:
    return f"UPDATE {META} SET value = '{version}' WHERE name = 'schema_version'"


def create_v1(dialect: str) -> list[str]:
    cols = ", ".join([_ID[dialect]] + [_column(c, dialect) for c in COLUMNS_V1])
    tail = " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4" if dialect == "mysql" else ""
    out = [_meta(dialect), f"INSERT INTO {META} (name, value) VALUES ('schema_version', '1')",
           f"CREATE TABLE {TABLE} ({cols}){tail}"]
    out += [f"CREATE INDEX {name} ON {TABLE} ({', '.join(cols_)})" for name, cols_ in INDEXES_V1]
    return out


def v1_to_v2(dialect: str) -> list[str]:
    out = [f"ALTER TABLE {TABLE} ADD COLUMN {_column(c, dialect)}" for c in COLUMNS_V2]
    out += [f"CREATE INDEX {name} ON {TABLE} ({', '.join(cols)})" for name, cols in INDEXES_V2]
    return out + [_set_version(2)]


def v2_to_v3(dialect: str) -> list[str]:
    out = [f"ALTER TABLE {TABLE} ADD COLUMN {_column(c, dialect)}" for c in COLUMNS_V3]
    return out + [_set_version(3)]


# version -> the statements that take a database from it to the next one
MIGRATIONS = {1: v1_to_v2, 2: v2_to_v3}


def create(dialect: str) -> list[str]:
    """The statements that create the current schema in an empty database."""
    out = create_v1(dialect)
    for version in range(1, VERSION):
        out += MIGRATIONS[version](dialect)
    return out


def steps(dialect: str, have: int) -> list[str]:
    """The statements that take a database from version ``have`` to :data:`VERSION`."""
    out: list[str] = []
    for version in range(have, VERSION):
        out += MIGRATIONS[version](dialect)
    return out
