"""Table columns to ulogd key names, as ulogd's SQL outputs map them (spec 6.11, 6.12).

A column named ``ip_saddr_str`` stands for the key ``ip.saddr.str``: every ``_`` becomes a
``.``. Keys that have ``_`` in their own name (``oob.ifindex_in``, ``raw.mac_len``) can
never be reached that way in ulogd; here a column that matches no key exactly is matched
to the one key whose name, with ``.`` written as ``_``, equals the column name (a
compatible extension: every table that works with ulogd maps the same way).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pyulogd.core.errors import ConfigError


def key_name(column: str) -> str:
    return column.replace("_", ".")


def match_key(column: str, available: Iterable[str]) -> str | None:
    """The key a column stands for, or None."""
    names = available if isinstance(available, (set, frozenset, dict)) else set(available)
    exact = key_name(column)
    if exact in names:
        return exact
    loose = [k for k in names if k.replace(".", "_") == column]
    return loose[0] if len(loose) == 1 else None


def skip_first(columns: Sequence[str], rule: str) -> list[str]:
    """Drop the id column as each ulogd plugin does: ``always`` (MYSQL, DBI), ``underscore``
    (PGSQL: only a first column whose name starts with ``_``) or ``never`` (SQLITE3)."""
    cols = list(columns)
    if cols and (rule == "always" or (rule == "underscore" and cols[0].startswith("_"))):
        return cols[1:]
    return cols


def map_columns(columns: Sequence[str], available: Sequence[str], table: str, plugin: str) -> list[str]:
    """The key name of every column; ConfigError naming the first column that has no key."""
    names = set(available)
    keys: list[str] = []
    for col in columns:
        key = match_key(col, names)
        if key is None:
            raise ConfigError(
                f"{plugin}: column '{col}' of table '{table}' needs the key '{key_name(col)}', which "
                f"no plugin before it in the stack produces (keys available: {', '.join(sorted(names))})"
            )
        keys.append(key)
    if not keys:
        raise ConfigError(f"{plugin}: table '{table}' has no columns to write")
    return keys
