"""Key values as text, for the wildcard text outputs OPRINT and GPRINT.

Both walk every upstream key in stack order (spec 2.8): one entry per wildcard key, so a
name produced twice appears twice, each time with the value of its nearest producer, whose
declaration (type) decides the rendering (spec 3).

Addresses (``IPADDR``) are written the way 2.0.9 does and 2.0.8 should have: IPv4 as a
dotted quad in the right order, IPv6 as ``inet_ntop`` writes it. A value given as an integer
(host byte order, as IP2HBIN produces) is written most significant byte first.

Strings come from outside (prefixes, interface and namespace names, PWSNIFF's user and
password) and are escaped (pyulogd.core.escape), so that none can start a line of its own;
ordinary ones are written as 2.0.8 writes them.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any

from pyulogd.core.escape import escape_text
from pyulogd.core.plugin import Key, KeyType

_V4 = tuple(str(i) for i in range(256))


def address(value: Any) -> str:
    """An ``IPADDR`` value as text: ``10.201.0.1``, ``fd00:201::1``."""
    if isinstance(value, int):
        value = (value & 0xFFFFFFFF).to_bytes(4, "big")
    n = len(value)
    if n == 4:
        return f"{_V4[value[0]]}.{_V4[value[1]]}.{_V4[value[2]]}.{_V4[value[3]]}"
    if n == 16:
        return socket.inet_ntop(socket.AF_INET6, bytes(value))
    return bytes(value).hex()  # no address of another length exists; shown rather than dropped


def producers(keys: Sequence[Key], slots: Sequence[int]) -> list[tuple[Key, int]]:
    """``(producer's key, slot)`` for each bound wildcard key, in wildcard order.

    Keys of one name all resolve to their nearest producer, whose declaration is the last one
    among the wildcard keys resolving to that slot (wildcard keys are in stack order).
    """
    source: dict[int, Key] = {}
    for key, slot in zip(keys, slots, strict=True):
        if slot:
            source[slot] = key
    return [(source[slot], slot) for slot in slots if slot]


# How each key type is written: str, int (%d and %u print the same for valid values), addr.
KINDS: dict[KeyType, str] = {
    KeyType.STRING: "str",
    KeyType.BOOL: "int",
    KeyType.INT8: "int",
    KeyType.INT16: "int",
    KeyType.INT32: "int",
    KeyType.UINT8: "int",
    KeyType.UINT16: "int",
    KeyType.UINT32: "int",
    KeyType.UINT64: "int",
    KeyType.IPADDR: "addr",
}


# PRINTPKT's and PRINTFLOW's ``print``: a line of their own making, its outside parts escaped
# already and its final newline kept (GPRINT then writes an empty line after it, as 2.0.8).
LINE_KEYS = frozenset({"print"})


def kind_of(key: Key) -> str | None:
    """How a producer's key is written: ``str`` (escaped), ``line`` (as it is), ``int``,
    ``addr``; None for types without a text."""
    kind = KINDS.get(key.type)
    if kind == "str" and key.name in LINE_KEYS:
        return "line"
    return kind


def fields(entries: list[tuple[int, str, str]], rec: list[Any]) -> list[str]:
    """``name=value`` of each valid entry (``(slot, "name=", kind)``; a kind ``=text`` is that
    fixed text), in order."""
    out: list[str] = []
    append = out.append
    for slot, prefix, kind in entries:
        v = rec[slot]
        if v is None:
            continue
        if kind == "int":
            append(f"{prefix}{int(v)}")
        elif kind == "str":
            append(f"{prefix}{escape_text(v)}")
        elif kind == "line":
            append(f"{prefix}{v}")
        elif kind == "addr":
            append(f"{prefix}{address(v)}")
        else:
            append(f"{prefix}{kind[1:]}")
    return out
