"""The central PostgreSQL layout of a fleet (issue 18, docs/central.md): the audit schema
(audit/schema.py) partitioned by day, with retention, ulogd-compatible views and per-project
read access, created, migrated and maintained by ``pyulogd-audit schema``.

* **Partitions**: ``pyulogd_audit`` is ``PARTITION BY RANGE (ts)`` (µs since the epoch), one
  partition per UTC day, ``pyulogd_audit_pYYYYMMDD``, created ``ahead`` days in advance by
  :func:`maintain`, and ``pyulogd_audit_default`` for anything outside them (a node with a
  wrong clock), whose rows :func:`maintain` moves into their day's partition once it exists.
  A day is dropped whole, which is what makes retention cheap (no DELETE, no vacuum).
* **Unique key**: ``(node_id, node_seq, ts)``: a record delivered twice (a collector killed
  before its ack, a republish past JetStream's duplicate window) is stored once; ``ts`` is
  there because PostgreSQL requires the partition key in every unique index of a partitioned
  table. AUDITDB sees ``layout=central`` and writes through a staging table with
  ``ON CONFLICT DO NOTHING`` (db/pgsql.py).
* **Retention**: ``retention_days`` (in ``pyulogd_meta``, set at create or by
  ``--retention-days``): :func:`maintain` drops the partitions whose whole day is older, and
  says which, with how many rows; the total is kept in ``pyulogd_meta``
  (``retention_dropped_rows``).
* **Views** for ulogd's readers: ``ulog2`` (packets, the columns of ulogd2's
  ``pgsql-ulogd2-flat.sql`` that the audit row holds) and ``ulog2_ct`` (flows), with
  ``security_invoker`` so that row-level security applies to whoever reads them.
* **Row-level security** by ``project_id``: ``pyulogd_project_roles`` maps database roles to
  the projects they may read; ``schema grant --role R --project P`` adds a line and grants
  SELECT on the table and views. The table's owner (the collector's user) is not subject to
  the policy; project roles only ever SELECT.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable

from pyulogd.audit import schema
from pyulogd.audit.dburl import Db

DAY_US = 86_400_000_000
PART_PREFIX = f"{schema.TABLE}_p"
DEFAULT_PART = f"{schema.TABLE}_default"
ROLES = "pyulogd_project_roles"
UNIQUE = ("node_id", "node_seq", "ts")
_PART = re.compile(rf"^{PART_PREFIX}(\d{{8}})$")
_ROLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,62}$")


def day_of(ts_us: int) -> int:
    """The first µs of the UTC day ``ts_us`` falls in."""
    return ts_us - ts_us % DAY_US


def part_name(day_us: int) -> str:
    d = dt.datetime.fromtimestamp(day_us / 1e6, dt.UTC)
    return f"{PART_PREFIX}{d:%Y%m%d}"


def part_day(name: str) -> int | None:
    m = _PART.match(name)
    if m is None:
        return None
    d = dt.datetime.strptime(m[1], "%Y%m%d").replace(tzinfo=dt.UTC)
    return int(d.timestamp()) * 1_000_000


def _column(c: schema.Column) -> str:
    return schema._column(c, "pgsql")  # noqa: SLF001 - the same column types as the plain layout


INET = """CREATE FUNCTION pyulogd_inet(a bytea) RETURNS inet LANGUAGE sql IMMUTABLE STRICT AS $$
  SELECT CASE WHEN length(a) = 16 AND substr(a, 1, 12) = '\\x00000000000000000000ffff'::bytea
    THEN (get_byte(a, 12) || '.' || get_byte(a, 13) || '.' || get_byte(a, 14) || '.' || get_byte(a, 15))::inet
    WHEN length(a) = 16 THEN regexp_replace(encode(a, 'hex'), '(.{4})(?!$)', '\\1:', 'g')::inet
    WHEN length(a) = 4 THEN (get_byte(a, 0) || '.' || get_byte(a, 1) || '.' || get_byte(a, 2) || '.'
                              || get_byte(a, 3))::inet
  END $$"""

VIEWS = [
    f"""CREATE VIEW ulog2 WITH (security_invoker = true) AS SELECT
  id AS _id, (ts / 1000000)::bigint AS oob_time_sec, (ts % 1000000)::integer AS oob_time_usec,
  prefix AS oob_prefix, in_if AS oob_in, out_if AS oob_out,
  CASE family WHEN 4 THEN 2 WHEN 6 THEN 10 END::smallint AS oob_family,
  pyulogd_inet(src_ip) AS ip_saddr_str, pyulogd_inet(dst_ip) AS ip_daddr_str, proto AS ip_protocol,
  CASE WHEN proto = 6 THEN sport END AS tcp_sport, CASE WHEN proto = 6 THEN dport END AS tcp_dport,
  CASE WHEN proto = 17 THEN sport END AS udp_sport, CASE WHEN proto = 17 THEN dport END AS udp_dport,
  CASE WHEN proto = 132 THEN sport END AS sctp_sport, CASE WHEN proto = 132 THEN dport END AS sctp_dport,
  CASE WHEN proto = 1 THEN icmp_type END AS icmp_type, CASE WHEN proto = 1 THEN icmp_code END AS icmp_code,
  CASE WHEN proto = 58 THEN icmp_type END AS icmpv6_type, CASE WHEN proto = 58 THEN icmp_code END AS icmpv6_code,
  bytes AS raw_pktlen, packets AS raw_pktcount,
  host, action, rule, netns, router_id, port_id, project_id, node_id, node_seq
  FROM {schema.TABLE} WHERE kind = 'packet'""",
    f"""CREATE VIEW ulog2_ct WITH (security_invoker = true) AS SELECT
  id AS _ct_id, CASE family WHEN 4 THEN 2 WHEN 6 THEN 10 END::smallint AS oob_family,
  pyulogd_inet(src_ip) AS orig_ip_saddr_str, pyulogd_inet(dst_ip) AS orig_ip_daddr_str, proto AS orig_ip_protocol,
  sport AS orig_l4_sport, dport AS orig_l4_dport, bytes AS orig_raw_pktlen, packets AS orig_raw_pktcount,
  pyulogd_inet(nat_src_ip) AS reply_ip_daddr_str, pyulogd_inet(nat_dst_ip) AS reply_ip_saddr_str,
  nat_sport AS reply_l4_dport, nat_dport AS reply_l4_sport, ct_id AS ct_id,
  (start_ts / 1000000)::bigint AS flow_start_sec, (start_ts % 1000000)::integer AS flow_start_usec,
  (end_ts / 1000000)::bigint AS flow_end_sec, (end_ts % 1000000)::integer AS flow_end_usec,
  kind AS ct_event, host, netns, router_id, project_id, node_id, node_seq
  FROM {schema.TABLE} WHERE kind IN ('flow_start', 'flow_update', 'flow_end')""",
]

RLS = [
    f"CREATE TABLE {ROLES} (role_name TEXT NOT NULL, project_id TEXT NOT NULL, PRIMARY KEY (role_name, project_id))",
    f"ALTER TABLE {schema.TABLE} ENABLE ROW LEVEL SECURITY",
    # The policy asks a SECURITY DEFINER function, so that a project role needs no right on
    # the mapping table (and cannot read which roles see which projects).
    f"""CREATE FUNCTION pyulogd_projects_of(who name) RETURNS SETOF text LANGUAGE sql STABLE SECURITY DEFINER
  AS $$ SELECT r.project_id FROM {ROLES} r WHERE pg_catalog.pg_has_role(who, r.role_name, 'MEMBER') $$""",
    f"""CREATE POLICY pyulogd_project_read ON {schema.TABLE} FOR SELECT
  USING (project_id IN (SELECT pyulogd_projects_of(current_user)))""",
]


def create(retention_days: int) -> list[str]:
    """The statements that create the central layout in an empty PostgreSQL database (the
    partitions come from :func:`maintain`, run right after)."""
    cols = ", ".join(["id BIGINT GENERATED ALWAYS AS IDENTITY"] + [_column(c) for c in schema.COLUMNS])
    out = [
        schema._meta("pgsql"),  # noqa: SLF001
        f"INSERT INTO {schema.META} (name, value) VALUES ('schema_version', '{schema.VERSION}'), "
        f"('layout', 'central'), ('retention_days', '{int(retention_days)}'), ('retention_dropped_rows', '0')",
        f"CREATE TABLE {schema.TABLE} ({cols}) PARTITION BY RANGE (ts)",
        f"CREATE TABLE {DEFAULT_PART} PARTITION OF {schema.TABLE} DEFAULT",
    ]
    out += [f"CREATE INDEX {name} ON {schema.TABLE} ({', '.join(c)})"
            for name, c in (*schema.INDEXES_V1, *schema.INDEXES_V2)]
    out.append(f"CREATE UNIQUE INDEX ux_pyulogd_audit_node ON {schema.TABLE} ({', '.join(UNIQUE)})")
    out.append(f"CREATE INDEX ix_pyulogd_audit_id ON {schema.TABLE} (id)")
    return out + [INET, *VIEWS, *RLS]


def is_central(db: Db) -> bool:
    if db.dialect != "pgsql" or schema.META not in db.tables():
        return False
    found = db.rows(f"SELECT value FROM {schema.META} WHERE name = 'layout'")
    return bool(found) and found[0][0] == "central"


def _meta(db: Db, name: str, default: str = "") -> str:
    found = db.rows(f"SELECT value FROM {schema.META} WHERE name = ?", (name,))
    return str(found[0][0]) if found else default


def _set_meta(name: str, value: str) -> str:
    return (f"INSERT INTO {schema.META} (name, value) VALUES ('{name}', '{value}') "
            f"ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value")


def partitions(db: Db) -> dict[str, int]:
    """The day partitions there are: name -> first µs of the day."""
    rows = db.rows(
        "SELECT c.relname FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_catalog.pg_class p ON p.oid = i.inhparent WHERE p.relname = ?", (schema.TABLE,))
    out: dict[str, int] = {}
    for (name,) in rows:
        day = part_day(str(name))
        if day is not None:
            out[str(name)] = day
    return out


def maintain(db: Db, now: float, ahead: int = 7, retention_days: int | None = None,
             say: Callable[[str], None] = lambda _m: None) -> tuple[list[str], int]:
    """Create the partitions from yesterday to ``ahead`` days on (moving rows of those days out
    of the default partition), and drop those older than the retention. Returns the partitions
    created and the rows dropped; ``say`` hears one line per partition created or dropped."""
    if retention_days is not None:
        db.run([_set_meta("retention_days", str(int(retention_days)))])
    keep = int(_meta(db, "retention_days", "0") or 0)
    have = partitions(db)
    today = day_of(int(now * 1_000_000))
    created: list[str] = []
    for n in range(-1, ahead + 1):
        day = today + n * DAY_US
        name = part_name(day)
        if name in have or (keep and day + DAY_US <= today - (keep - 1) * DAY_US):
            continue
        lo, hi = day, day + DAY_US
        # Rows of that day in the default partition must move first: PostgreSQL refuses to add a
        # partition whose range the default partition holds rows of.
        db.run([
            f"CREATE TABLE {name} (LIKE {schema.TABLE} INCLUDING DEFAULTS)",
            f"WITH moved AS (DELETE FROM {DEFAULT_PART} WHERE ts >= {lo} AND ts < {hi} RETURNING *) "
            f"INSERT INTO {name} SELECT * FROM moved",
            f"ALTER TABLE {schema.TABLE} ATTACH PARTITION {name} FOR VALUES FROM ({lo}) TO ({hi})",
        ])
        created.append(name)
        say(f"created partition {name}")
    dropped_rows = 0
    if keep:
        limit = today - (keep - 1) * DAY_US  # the oldest day kept starts here
        for name, day in sorted(have.items(), key=lambda kv: kv[1]):
            if day + DAY_US > limit:
                continue
            rows = int(db.rows(f"SELECT count(*) FROM {name}")[0][0])
            total = int(_meta(db, "retention_dropped_rows", "0") or 0) + rows
            db.run([f"ALTER TABLE {schema.TABLE} DETACH PARTITION {name}", f"DROP TABLE {name}",
                    _set_meta("retention_dropped_rows", str(total))])
            dropped_rows += rows
            say(f"dropped partition {name} ({rows} rows, older than {keep} days)")
    return created, dropped_rows


def grant(db: Db, role: str, project: str) -> None:
    """Let ``role`` read the rows (and views) of ``project``."""
    if not _ROLE.match(role):
        raise ValueError(f"'{role}' is not a role name pyulogd-audit accepts ([A-Za-z_][A-Za-z0-9_-]*)")
    quoted = '"' + role + '"'
    db.rows(f"INSERT INTO {ROLES} (role_name, project_id) VALUES (?, ?) ON CONFLICT DO NOTHING", (role, project))
    db.run([f"GRANT SELECT ON {schema.TABLE}, ulog2, ulog2_ct TO {quoted}"])
