"""Filters, queries and summaries over the audit table, and over ulogd's own tables with the
filters those can answer.

Every value a user gives is checked here (times, addresses and CIDRs, ports, protocols,
verdicts) and reaches SQL only as a parameter; a filter the store cannot answer is an
:class:`AuditError` naming it, never a silently ignored condition.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pyulogd.audit import schema
from pyulogd.audit.dburl import Db
from pyulogd.audit.rows import ip16
from pyulogd.audit.values import ACTIONS, PROTO_NUMBERS, TRANSPORTS


class AuditError(Exception):
    """Bad input or an unusable store: one line for the user."""


_REL = re.compile(r"^-?(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)$")
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(text: str, now: float) -> int:
    """Microseconds since the epoch of ``text``: ISO 8601 (a time without a zone is UTC),
    ``@<unix seconds>``, ``now``, ``today``, or an age (``90s``, ``15m``, ``2h``, ``1d``)."""
    t = text.strip()
    if t == "now":
        return int(now * 1e6)
    if t == "today":
        day = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return int(day.timestamp() * 1e6)
    if t.startswith("@"):
        try:
            return int(float(t[1:]) * 1e6)
        except ValueError:
            raise AuditError(f"time '{text}': expected @<seconds since 1970>") from None
    m = _REL.match(t)
    if m:
        return int((now - float(m.group(1)) * _UNITS[m.group(2)]) * 1e6)
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise AuditError(f"time '{text}': expected ISO 8601 (2026-11-27T09:00:00Z), @SECONDS, now, today, "
                         "or an age such as 15m, 2h, 1d") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1e6)


def parse_span(text: str) -> int:
    """Seconds of a duration (``3600``, ``15m``, ``1h``)."""
    m = _REL.match(text.strip())
    if m and not text.strip().startswith("-"):
        return int(float(m.group(1)) * _UNITS[m.group(2)])
    try:
        v = int(text)
    except ValueError:
        raise AuditError(f"duration '{text}': expected seconds or 90s, 15m, 2h, 1d") from None
    if v <= 0:
        raise AuditError(f"duration '{text}' must be positive")
    return v


def parse_net(text: str) -> tuple[bytes, bytes]:
    """The 16-byte range (first, last) of an address or a CIDR."""
    try:
        net = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise AuditError(f"address '{text}': expected an IPv4/IPv6 address or a CIDR (10.0.0.0/8)") from None
    lo, hi = net.network_address.packed, net.broadcast_address.packed
    return ip16(lo), ip16(hi)


def parse_port(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = -1
    if not 0 <= v <= 65535:
        raise AuditError(f"port '{text}': expected 0..65535")
    return v


def parse_proto(text: str) -> int:
    t = text.strip().lower()
    if t in PROTO_NUMBERS:
        return PROTO_NUMBERS[t]
    try:
        v = int(t)
    except ValueError:
        v = -1
    if not 0 <= v <= 255:
        raise AuditError(f"protocol '{text}': expected a name ({', '.join(sorted(set(TRANSPORTS.values())))}) "
                         "or a number 0..255")
    return v


def parse_action(text: str) -> list[str]:
    out = []
    for part in text.split(","):
        word = part.strip().upper()
        if word not in ACTIONS:
            raise AuditError(f"action '{part.strip()}': expected {', '.join(ACTIONS)} (several: DROP,REJECT)")
        out.append(word)
    return out


@dataclass
class Filters:
    since: int | None = None
    until: int | None = None
    ip: list[tuple[bytes, bytes]] = field(default_factory=list)
    src: list[tuple[bytes, bytes]] = field(default_factory=list)
    dst: list[tuple[bytes, bytes]] = field(default_factory=list)
    port: int | None = None
    sport: int | None = None
    dport: int | None = None
    proto: int | None = None
    action: list[str] = field(default_factory=list)
    rule: str | None = None
    kind: str | None = None
    netns: str | None = None
    router: str | None = None
    network: str | None = None
    neutron_port: str | None = None
    project: str | None = None
    host: str | None = None

    def given(self) -> list[str]:
        """The filters set, by option name."""
        names = {"ip": "--ip", "src": "--src", "dst": "--dst", "neutron_port": "--port-id"}
        out = []
        for k, v in self.__dict__.items():
            if v is not None and v != []:
                out.append(names.get(k, "--" + k.replace("_", "-")))
        return out


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def where(f: Filters, dialect: str) -> tuple[str, list[Any]]:
    """The WHERE clause (with ``?`` placeholders) of the audit table for ``f``."""
    conds: list[str] = []
    args: list[Any] = []
    if f.since is not None:
        conds.append("ts >= ?")
        args.append(f.since)
    if f.until is not None:
        conds.append("ts < ?")
        args.append(f.until)
    for col, ranges in (("src_ip", f.src), ("dst_ip", f.dst)):
        if ranges:
            conds.append("(" + " OR ".join(f"{col} BETWEEN ? AND ?" for _ in ranges) + ")")
            for lo, hi in ranges:
                args += [lo, hi]
    if f.ip:
        parts = []
        for lo, hi in f.ip:
            for col in ("src_ip", "dst_ip", "nat_src_ip", "nat_dst_ip"):
                parts.append(f"{col} BETWEEN ? AND ?")
                args += [lo, hi]
        conds.append("(" + " OR ".join(parts) + ")")
    if f.port is not None:
        conds.append("(sport = ? OR dport = ? OR nat_sport = ? OR nat_dport = ?)")
        args += [f.port] * 4
    for col, v in (("sport", f.sport), ("dport", f.dport), ("proto", f.proto)):
        if v is not None:
            conds.append(f"{col} = ?")
            args.append(v)
    if f.action:
        conds.append("action IN (" + ", ".join("?" * len(f.action)) + ")")
        args += f.action
    if f.rule is not None:
        conds.append("rule LIKE ? ESCAPE '\\'" if dialect != "mysql" else "rule LIKE ? ESCAPE '\\\\'")
        args.append(_like(f.rule))
    texts: tuple[tuple[str, str | None], ...] = (
        ("kind", f.kind), ("netns", f.netns), ("router_id", f.router), ("network_id", f.network),
        ("port_id", f.neutron_port), ("project_id", f.project), ("host", f.host))
    for col, text in texts:
        if text is not None:
            conds.append(f"{col} = ?")
            args.append(text)
    return (" WHERE " + " AND ".join(conds)) if conds else "", args


# What a listing shows, in order (the audit table's columns).
LIST_COLUMNS = ("id", "ts", "kind", "action", "proto", "src_ip", "sport", "dst_ip", "dport", "icmp_type", "icmp_code",
                "nat_src_ip", "nat_sport", "nat_dst_ip", "nat_dport", "rule", "in_if", "out_if", "netns", "router_id",
                "network_id", "port_id", "project_id", "direction", "bytes", "packets", "community_id", "host",
                "ts_source", "suppressed", "loss_count", "loss_reason")  # fmt: skip


class Store:
    """An opened store: the audit table, or ulogd's tables (fewer filters)."""

    def __init__(self, db: Db) -> None:
        self.db = db
        tables = db.tables()
        self.version = 0
        if schema.TABLE in tables:
            self.kind = "audit"
            if schema.META in tables:
                found = db.rows(f"SELECT value FROM {schema.META} WHERE name = 'schema_version'")
                self.version = int(found[0][0]) if found and str(found[0][0]).isdigit() else 0
            if self.version < 1:
                raise AuditError(f"{db.url.describe()}: table {schema.TABLE} exists but its schema version is "
                                 "unknown: not made by pyulogd-audit")
        else:
            self.ulogd = [t for t in ULOGD_TABLES if t in tables and ULOGD_TABLES[t].dialects & {db.dialect}]
            if not self.ulogd:
                raise AuditError(f"{db.url.describe()}: not a pyulogd or ulogd database (no table {schema.TABLE}, "
                                 f"{', '.join(ULOGD_TABLES)})")
            self.kind = "ulogd"

    # -- listing
    def select(self, f: Filters, limit: int, newest_first: bool = False, after_id: int | None = None,
               ) -> list[dict[str, Any]]:
        if self.kind == "ulogd":
            return self._ulogd_select(f, limit, newest_first)
        clause, args = where(f, self.db.dialect)
        if after_id is not None:
            clause += (" AND " if clause else " WHERE ") + "id > ?"
            args.append(after_id)
        order = "id" if after_id is not None else ("ts DESC, id DESC" if newest_first else "ts, id")
        sql = f"SELECT {', '.join(LIST_COLUMNS)} FROM {schema.TABLE}{clause} ORDER BY {order} LIMIT ?"
        rows = self.db.rows(sql, [*args, limit])
        return [dict(zip(LIST_COLUMNS, r, strict=True)) for r in rows]

    # -- ulogd's tables
    def _ulogd_select(self, f: Filters, limit: int, newest_first: bool) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for name in self.ulogd:
            out += ULOGD_TABLES[name].select(self.db, name, f, limit, newest_first)
        out.sort(key=lambda r: r["ts"] or 0, reverse=newest_first)
        return out[:limit]

    def require_audit(self, what: str) -> None:
        if self.kind != "audit":
            raise AuditError(f"{what} needs pyulogd's audit schema (an AUDITDB output; 'pyulogd-audit schema "
                             f"create'); {self.db.url.describe()} has ulogd's tables only")

    # -- summary
    def summary(self, f: Filters, top: int, bucket: int) -> dict[str, Any]:
        self.require_audit("summary")
        clause, args = where(f, self.db.dialect)
        t = schema.TABLE
        q = self.db.rows
        and_ = " AND " if clause else " WHERE "
        out: dict[str, Any] = {}
        span = q(f"SELECT MIN(ts), MAX(ts), COUNT(*) FROM {t}{clause}", args)[0]
        out["first"], out["last"], out["records"] = span
        out["by_action"] = {str(a): int(n) for a, n in q(
            f"SELECT COALESCE(action, '-'), COUNT(*) FROM {t}{clause} GROUP BY COALESCE(action, '-') "
            "ORDER BY 2 DESC", args)}
        out["top_talkers"] = [
            {"src_ip": s, "records": int(n), "bytes": int(b or 0)}
            for s, n, b in q(f"SELECT src_ip, COUNT(*), SUM(bytes) FROM {t}{clause}{and_ if clause else ' WHERE '}"
                             f"src_ip IS NOT NULL GROUP BY src_ip ORDER BY 2 DESC, 1 LIMIT ?", [*args, top])]
        drop = f"{clause}{and_}action IN ('DROP', 'REJECT')"
        out["top_dropped_destinations"] = [
            {"dst_ip": d, "dport": p, "proto": pr, "records": int(n)}
            for d, p, pr, n in q(f"SELECT dst_ip, dport, proto, COUNT(*) FROM {t}{drop} GROUP BY dst_ip, dport, proto "
                                 "ORDER BY 4 DESC, 1 LIMIT ?", [*args, top])]
        div = "DIV" if self.db.dialect == "mysql" else "/"
        out["bucket"] = bucket
        series: dict[int, dict[str, int]] = {}
        width = int(bucket) * 1_000_000  # an integer we computed: written into the statement, so that
        # PostgreSQL sees one expression in SELECT and GROUP BY (two parameters would be two)
        for b, a, n in q(f"SELECT ts {div} {width}, COALESCE(action, '-'), COUNT(*) FROM {t}{clause} "
                         "GROUP BY 1, 2 ORDER BY 1", args):
            series.setdefault(int(b) * bucket, {})[str(a)] = int(n)
        out["over_time"] = [{"t": k, **v} for k, v in sorted(series.items())]
        for col, name in (("router_id", "per_router"), ("port_id", "per_port"), ("netns", "per_netns"),
                          ("project_id", "per_project")):
            rows = q(f"SELECT {col}, COALESCE(action, '-'), COUNT(*) FROM {t}{clause}{and_ if clause else ' WHERE '}"
                     f"{col} IS NOT NULL GROUP BY {col}, COALESCE(action, '-')", args)
            per: dict[str, dict[str, int]] = {}
            for key, a, n in rows:
                per.setdefault(str(key), {})[str(a)] = int(n)
            ranked = sorted(per.items(), key=lambda kv: -sum(kv[1].values()))[:top]
            out[name] = [{"key": k, **v} for k, v in ranked]
        sup = q(f"SELECT COUNT(*), SUM(suppressed) FROM {t}{clause}{and_ if clause else ' WHERE '}"
                "suppressed IS NOT NULL", args)[0]
        out["suppressed"] = {"summaries": int(sup[0] or 0), "records": int(sup[1] or 0)}
        out["losses"] = [
            {"ts": ts, "count": int(c or 0), "reason": r, "start_ts": s, "end_ts": e, "host": h}
            for ts, c, r, s, e, h in q(f"SELECT ts, loss_count, loss_reason, start_ts, end_ts, host FROM {t}{clause}"
                                       f"{and_ if clause else ' WHERE '}loss_count IS NOT NULL ORDER BY ts LIMIT 1000",
                                       args)]
        out["hosts"] = [str(h) for (h,) in q(f"SELECT DISTINCT host FROM {t}{clause}", args) if h]
        return out

    # -- who had an address
    def who_had(self, address: str, at: int, window: int) -> list[dict[str, Any]]:
        """Who held ``address`` around ``at`` (µs), within ``window`` seconds either side:
        from the records that carry it, with their port, project, router, namespace and NAT
        context, nearest first."""
        self.require_audit("who-had")
        lo, hi = parse_net(address)
        if lo != hi:
            raise AuditError(f"who-had takes one address, not the network '{address}'")
        w = window * 1_000_000
        cols = ("ts", "src_ip", "dst_ip", "nat_src_ip", "nat_dst_ip", "port_id", "project_id", "router_id",
                "network_id", "netns", "in_if", "out_if", "device_role", "host")
        sql = (f"SELECT {', '.join(cols)} FROM {schema.TABLE} WHERE ts >= ? AND ts < ? AND "
               "(src_ip = ? OR dst_ip = ? OR nat_src_ip = ? OR nat_dst_ip = ?)")
        rows = [dict(zip(cols, r, strict=True)) for r in self.db.rows(sql, [at - w, at + w, lo, lo, lo, lo])]
        holders: dict[tuple[Any, ...], dict[str, Any]] = {}
        for r in rows:
            if r["dst_ip"] == lo and r["nat_dst_ip"] is not None:
                role, fixed, floating = "floating IP (DNAT)", r["nat_dst_ip"], lo
            elif r["nat_dst_ip"] == lo:
                role, fixed, floating = "fixed IP behind a floating IP", lo, r["dst_ip"]
            elif r["src_ip"] == lo and r["nat_src_ip"] is not None:
                role, fixed, floating = "fixed IP (SNAT on the way out)", lo, r["nat_src_ip"]
            elif r["nat_src_ip"] == lo:
                role, fixed, floating = "SNAT address", r["src_ip"], lo
            else:
                role, fixed, floating = "address in the traffic", lo, None
            key = (r["port_id"], r["project_id"], r["router_id"], r["netns"], r["host"], role, fixed, floating)
            h = holders.get(key)
            if h is None:
                h = holders[key] = {"port_id": r["port_id"], "project_id": r["project_id"],
                                    "router_id": r["router_id"], "network_id": r["network_id"], "netns": r["netns"],
                                    "host": r["host"], "role": role, "fixed_ip": fixed, "floating_ip": floating,
                                    "first": r["ts"], "last": r["ts"], "records": 0, "before": None, "after": None}
            h["records"] += 1
            h["first"] = min(h["first"], r["ts"])
            h["last"] = max(h["last"], r["ts"])
            if r["ts"] <= at:
                h["before"] = max(h["before"] or r["ts"], r["ts"])
            else:
                h["after"] = min(h["after"] or r["ts"], r["ts"])
        return sorted(holders.values(), key=lambda h: min(abs(h["first"] - at), abs(h["last"] - at)))


@dataclass(frozen=True)
class UlogdTable:
    """How to read one of ulogd's tables: SQL expressions for the fields a listing shows,
    and the filters that can be answered."""

    dialects: frozenset[str]
    ts: str  # seconds
    fields: dict[str, str]  # listing field -> expression
    filters: frozenset[str]

    def select(self, db: Db, table: str, f: Filters, limit: int, newest_first: bool) -> list[dict[str, Any]]:
        unsupported = [g for g in f.given() if g not in self.filters]
        if unsupported:
            raise AuditError(f"{', '.join(unsupported)}: ulogd's table {table} cannot answer "
                             f"{'this filter' if len(unsupported) == 1 else 'these filters'} (it has no such column); "
                             "use pyulogd's audit schema (AUDITDB output)")
        conds: list[str] = []
        args: list[Any] = []
        if f.since is not None:
            conds.append(f"{self.ts} >= ?")
            args.append(f.since // 1_000_000)
        if f.until is not None:
            conds.append(f"{self.ts} < ?")
            args.append(-(-f.until // 1_000_000))
        for name, v in (("proto", f.proto), ("sport", f.sport), ("dport", f.dport)):
            if v is not None:
                conds.append(f"{self.fields[name]} = ?")
                args.append(v)
        if f.port is not None:
            conds.append(f"({self.fields['sport']} = ? OR {self.fields['dport']} = ?)")
            args += [f.port, f.port]
        if f.rule is not None:
            conds.append(f"{self.fields['rule']} LIKE ?")
            args.append(_like(f.rule))
        w = (" WHERE " + " AND ".join(conds)) if conds else ""
        names = list(self.fields)
        exprs = ", ".join(self.fields[n] for n in names)
        sql = (f"SELECT {self.ts}, {exprs} FROM {table}{w} ORDER BY {self.ts}{' DESC' if newest_first else ''} "
               "LIMIT ?")
        out = []
        for r in db.rows(sql, [*args, limit]):
            d = {"ts": None if r[0] is None else int(r[0]) * 1_000_000, "kind": "ulogd:" + table}
            d.update(zip(names, r[1:], strict=True))
            out.append(d)
        return out


_BASE = frozenset({"--since", "--until"})
_PORTS = frozenset({"--port", "--sport", "--dport", "--proto"})
ULOGD_TABLES: dict[str, UlogdTable] = {
    # Debian's sqlite3.table (what the SQLITE3 example writes)
    "ulog_pkt": UlogdTable(frozenset({"sqlite"}), "oob_time_sec", {"rule": "oob_prefix", "bytes": "raw_pktlen"},
                           _BASE | {"--rule"}),
    "ulog_ct": UlogdTable(frozenset({"sqlite"}), "flow_start_sec",
                          {"proto": "orig_ip_protocol", "sport": "orig_l4_sport", "dport": "orig_l4_dport",
                           "bytes": "orig_raw_pktlen", "packets": "orig_raw_pktcount"}, _BASE | _PORTS),
    # Debian's pgsql-ulogd2-flat.sql / mysql-ulogd2-flat.sql
    "ulog2": UlogdTable(frozenset({"pgsql", "mysql"}), "oob_time_sec",
                        {"rule": "oob_prefix", "proto": "ip_protocol",
                         "sport": "COALESCE(tcp_sport, udp_sport, sctp_sport)",
                         "dport": "COALESCE(tcp_dport, udp_dport, sctp_dport)", "in_if": "oob_in", "out_if": "oob_out"},
                        _BASE | _PORTS | {"--rule"}),
    "ulog2_ct": UlogdTable(frozenset({"pgsql", "mysql"}), "flow_start_sec",
                           {"proto": "orig_ip_protocol", "sport": "orig_l4_sport", "dport": "orig_l4_dport",
                            "bytes": "orig_raw_pktlen", "packets": "orig_raw_pktcount"}, _BASE | _PORTS),
}


def ip_text(v: Any) -> str | None:
    """A stored 16-byte address as text (IPv4 without its ``::ffff:``)."""
    if v is None:
        return None
    b = bytes(v)
    if len(b) == 16 and b[:12] == b"\x00" * 10 + b"\xff\xff":
        b = b[12:]
    try:
        return str(ipaddress.ip_address(b))
    except ValueError:
        return b.hex()


def time_text(us: Any) -> str | None:
    if us is None:
        return None
    dt = datetime.fromtimestamp(int(us) / 1e6, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def readable(row: dict[str, Any]) -> dict[str, Any]:
    """A row with addresses and times as text, None fields left out."""
    out = {}
    for k, v in row.items():
        if v is None:
            continue
        if k.endswith("_ip") or k in ("fixed_ip", "floating_ip"):
            v = ip_text(v)
        elif k in ("ts", "start_ts", "end_ts", "first", "last", "before", "after", "received"):
            v = time_text(v)
        elif isinstance(v, bytes):
            v = v.hex()
        out[k] = v
    return out


def proto_name(p: Any) -> str:
    return "" if p is None else TRANSPORTS.get(int(p), str(p))


def endpoint(ip: Any, port: Any) -> str:
    text = ip_text(ip) if isinstance(ip, (bytes, bytearray, memoryview)) else (ip or "")
    if port is None:
        return str(text)
    return f"[{text}]:{port}" if ":" in str(text) else f"{text}:{port}"


def table_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Rows as an aligned text table (the default output)."""
    head = ("time", "kind", "action", "proto", "source", "destination", "nat", "rule", "where")
    body = []
    for r in rows:
        icmp = f" type {r['icmp_type']}/{r.get('icmp_code')}" if r.get("icmp_type") is not None else ""
        nat = []
        if r.get("nat_src_ip") is not None:
            nat.append("snat " + endpoint(r["nat_src_ip"], r.get("nat_sport")))
        if r.get("nat_dst_ip") is not None:
            nat.append("dnat " + endpoint(r["nat_dst_ip"], r.get("nat_dport")))
        place = " ".join(str(r[k]) for k in ("netns", "router_id", "port_id", "in_if", "out_if") if r.get(k))
        body.append((
            time_text(r.get("ts")) or "", str(r.get("kind") or ""), str(r.get("action") or ""),
            proto_name(r.get("proto")) + icmp, endpoint(r.get("src_ip"), r.get("sport")),
            endpoint(r.get("dst_ip"), r.get("dport")), ", ".join(nat), str(r.get("rule") or ""), place,
        ))
    widths = [max([len(h)] + [len(b[i]) for b in body]) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:{w}}}" for w in widths)
    return [fmt.format(*head).rstrip()] + [fmt.format(*b).rstrip() for b in body]
