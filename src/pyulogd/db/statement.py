"""What ``procedure`` asks for, and SQL identifiers from the config, checked and quoted.

ulogd2 pastes ``procedure`` and ``table`` into its statement text. Here they are parsed
into a :class:`Target`, and only two kinds of config text ever reach SQL: identifiers,
quoted with the dialect's rules, and routine names, checked against a strict identifier
pattern (left unquoted so that the database folds their case as it does in ulogd2's
``SELECT INSERT_CT(...)``). Values are never in the text: they are bound parameters.

``procedure`` forms (case-insensitive keywords, as in ulogd2 2.0.8's ``sql_createstmt``):

* ``INSERT``: insert into ``table`` (PGSQL: in ``schema``) with one column per key;
* ``INSERT INTO name`` (also ``INSERT IGNORE INTO``, ``INSERT OR IGNORE INTO``, ...):
  insert into that table or view;
* ``CALL name``: ``CALL name(<values>)`` (2.0.8 wrote ``CALL CALL name(``);
* anything else is a stored function: ``SELECT name(<values>)`` (e.g. ``INSERT_CT``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pyulogd.core.errors import ConfigError

_IDENT = r"[A-Za-z_][A-Za-z0-9_$]*"
_QUALIFIED = re.compile(rf"^{_IDENT}(?:\.{_IDENT})?$")
_INSERT = re.compile(
    rf"^INSERT(?P<mod>(?:\s+(?:OR\s+IGNORE|OR\s+REPLACE|IGNORE|LOW_PRIORITY|HIGH_PRIORITY|DELAYED))?)"
    rf"\s+INTO\s+(?P<rel>{_IDENT}(?:\.{_IDENT})?)$",
    re.I,
)
_CALL = re.compile(rf"^CALL\s+(?P<name>{_IDENT}(?:\.{_IDENT})?)$", re.I)


@dataclass(frozen=True)
class Target:
    kind: str  # "table" (procedure=INSERT), "insert" (INSERT INTO x), "call", "select"
    relation: tuple[str, ...] = ()  # for "insert"
    routine: str = ""  # for "call" and "select", already checked
    modifier: str = ""  # "IGNORE", "OR IGNORE", ...: a fixed word list

    @property
    def inserts(self) -> bool:
        return self.kind in ("table", "insert")


def parse_procedure(procedure: str) -> Target:
    text = " ".join(procedure.split())
    if text.upper() == "INSERT":
        return Target("table")
    m = _INSERT.match(text)
    if m is not None:
        return Target("insert", tuple(m["rel"].split(".")), modifier=" ".join(m["mod"].split()).upper())
    if text.upper().startswith("INSERT "):
        raise ConfigError(f"procedure '{procedure}': expected 'INSERT', or 'INSERT INTO <table or view>'")
    m = _CALL.match(text)
    if m is not None:
        return Target("call", routine=m["name"])
    if _QUALIFIED.match(text):
        return Target("select", routine=text)
    raise ConfigError(
        f"procedure '{procedure}' is neither INSERT, 'INSERT INTO <name>', 'CALL <name>' nor the name of a "
        "stored function (letters, digits, _ and $, optionally schema-qualified)"
    )


def split_name(name: str, what: str = "table") -> tuple[str, ...]:
    """``table`` or ``schema.table`` from the config (any characters but ``.`` in a part)."""
    parts = tuple(name.split("."))
    if not name or len(parts) > 2 or any(not p for p in parts):
        raise ConfigError(f"{what} name '{name}' is not 'name' or 'schema.name'")
    return parts


def quote_ident(name: str, dialect: str) -> str:
    """An identifier quoted for PostgreSQL/SQLite (``"x"``) or MySQL (`` `x` ``)."""
    if "\x00" in name:
        raise ConfigError(f"identifier {name!r} contains a NUL character")
    if dialect == "mysql":
        return "`" + name.replace("`", "``") + "`"
    return '"' + name.replace('"', '""') + '"'


def quote_path(parts: tuple[str, ...], dialect: str) -> str:
    return ".".join(quote_ident(p, dialect) for p in parts)
