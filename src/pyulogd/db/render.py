"""Key values to column values, with ulogd's per-type semantics (spec section 3).

Two dialects. ``sqlite`` is what ulogd2's SQLITE3 binds; ``sql`` is what its MYSQL, PGSQL
and DBI outputs print into the statement text, here handed to the client as parameters:

=========  ==========================================  ===========================================
type       sqlite                                      sql (PGSQL, MYSQL, DBI)
=========  ==========================================  ===========================================
integers   the integer                                 the integer
UINT64     as signed 64-bit (what bind_int64 stores)   the integer
BOOL       0 / 1                                       ``'0'`` / ``'1'`` (a string: fits boolean
                                                       and integer columns alike, as in ulogd)
IPADDR     IPv4: the little-endian reading of the      IPv4: the little-endian reading of the
           network-order bytes (127.0.0.1 ->           network-order bytes; IPv6: of its first
           16777343); IPv6: first 8 bytes, signed      4 bytes (2.0.8's ``%u`` of the cell)
STRING     text                                        text
RAW(STR)   bytes (blob / bytea / binary)               bytes
invalid    NULL                                        NULL
=========  ==========================================  ===========================================

Corrections to 2.0.8 (docs/compat.md): SQLITE3 stored UINT32 >= 2^31 as negative numbers
and INT64 truncated to 32 bits, here they keep their value; a RAW key broke 2.0.8's SQL
statement and kept SQLite's previous binding, here it is written as bytes. Text is what a
C string is: it ends at the first NUL, and bytes that are not UTF-8 (kept by the decoders
with ``surrogateescape``) are written as ``\\xNN`` because the databases only take valid
UTF-8 text.

The row builder is generated per output as one tuple expression (no loop, no per-column
call for integers): at 100k rows/s a loop over the columns costs more than the database.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pyulogd.core.plugin import INTEGER_TYPES, KeyType

DIALECTS = ("sqlite", "sql")
_FB = int.from_bytes


def fix_string(text: str) -> str:
    """A key's text as a database takes it: cut at NUL, non-UTF-8 bytes as ``\\xNN``."""
    cut = text.find("\x00")
    if cut >= 0:
        text = text[:cut]
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        errors = "surrogateescape" if _only_escapes(text) else "backslashreplace"
        return text.encode("utf-8", errors).decode("utf-8", "backslashreplace")


def _only_escapes(text: str) -> bool:
    return all(not ("\ud800" <= c <= "\udfff") or "\udc80" <= c <= "\udcff" for c in text)


def ip_sqlite(v: bytes) -> int:
    """2.0.8's ``sqlite3_bind_int64(ui64)`` of the key cell (upper half zero for IPv4)."""
    if len(v) == 4:
        return _FB(v, "little")
    return _FB(v[:8], "little", signed=True)


def ip_sql(v: bytes) -> int:
    """2.0.8's ``%u`` of the 32-bit cell: the first 4 bytes read little-endian."""
    return _FB(v[:4], "little")


def u64_sqlite(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


_NS: dict[str, Any] = {"FS": fix_string, "IPL": ip_sqlite, "IPS": ip_sql, "U64": u64_sqlite}


def value_expr(ktype: KeyType, slot: int, dialect: str) -> str:
    """A Python expression for one column value, reading ``rec[slot]``."""
    if slot == 0:
        return "None"
    get = f"(v := rec[{slot}])"
    if ktype == KeyType.STRING:
        return f"(v if {get} is None or (v.isascii() and '\\x00' not in v) else FS(v))"
    if ktype == KeyType.BOOL and dialect == "sql":
        return f"(None if {get} is None else ('1' if v else '0'))"
    if ktype == KeyType.UINT64 and dialect == "sqlite":
        return f"(None if {get} is None else U64(v))"
    if ktype in INTEGER_TYPES:
        return f"rec[{slot}]"
    if ktype in (KeyType.IPADDR, KeyType.IP6ADDR):
        return f"(None if {get} is None else {'IPL' if dialect == 'sqlite' else 'IPS'}(v))"
    if ktype in (KeyType.RAW, KeyType.RAWSTR):
        return f"(None if {get} is None else bytes(v))"
    return "None"  # NONE: ulogd logs "unknown type" and writes NULL


def compile_builder(
    types: Sequence[KeyType], slots: Sequence[int], dialect: str
) -> Callable[[list[Any]], tuple[Any, ...]]:
    """``build(rec) -> tuple`` of the column values, in column order."""
    if dialect not in DIALECTS:
        raise ValueError(dialect)
    exprs = [value_expr(t, s, dialect) for t, s in zip(types, slots, strict=True)]
    src = "def build(rec):\n    return (" + ", ".join(exprs) + ",)\n"
    ns = dict(_NS)
    exec(compile(src, "<sql row builder>", "exec"), ns)  # noqa: S102 - our own text
    build: Callable[[list[Any]], tuple[Any, ...]] = ns["build"]
    return build


def row_size(row: tuple[Any, ...]) -> int:
    """Rough bytes a row takes in memory, for the queue's memory bound."""
    n = 56 + 8 * len(row)
    for v in row:
        if v is None:
            continue
        if isinstance(v, int):
            n += 28
        else:
            n += 49 + len(v)
    return n
