"""Database rows against what the JSON output printed for the same events, field by field."""

from __future__ import annotations

import ipaddress
from typing import Any

from pyulogd.core import registry
from pyulogd.core.plugin import KeyType
from pyulogd.db.columns import key_name

# Key types the JSON output prints (others, e.g. IPADDR and RAW, it leaves out).
_PRINTED = {KeyType.STRING, KeyType.BOOL, KeyType.UINT8, KeyType.UINT16, KeyType.UINT32, KeyType.UINT64,
            KeyType.INT8, KeyType.INT16, KeyType.INT32}


_STR_FIELD = {k.name: k.cim or k.name for k in registry.get("IP2STR").output_keys}


def key_info(plugins: list[str]) -> dict[str, tuple[KeyType, str]]:
    """key name -> (type, JSON field name) over the plugins of a stack (nearest last)."""
    out: dict[str, tuple[KeyType, str]] = {}
    for name in plugins:
        for k in registry.get(name).output_keys:
            out[k.name] = (k.type, k.cim or k.name)
    return out


def normal(v: Any) -> Any:
    if isinstance(v, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return str(v)
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, bytes | bytearray | memoryview):
        return bytes(v)
    if hasattr(v, "__int__") and not isinstance(v, int | str):
        return int(v)
    return v


def check_rows(
    db_rows: list[dict[str, Any]],
    recs: list[dict[str, Any]],
    plugins: list[str],
    skip: tuple[str, ...] = (),
) -> int:
    """Assert every comparable column equals the JSON record's field; returns fields compared."""
    info = key_info(plugins)
    fields: dict[str, int] = {}
    for _t, field in info.values():
        fields[field] = fields.get(field, 0) + 1
    assert len(db_rows) == len(recs)
    compared = 0
    for n, (row, rec) in enumerate(zip(db_rows, recs, strict=True)):
        for col, value in row.items():
            key = key_name(col)
            if key not in info or col in skip:
                continue
            ktype, field = info[key]
            v = normal(value)
            if key.endswith(".bin"):
                # IP2BIN's 16 bytes against the text IP2STR gave JSON for the same address
                text = rec.get(_STR_FIELD[key[:-4] + ".str"])
                addr = ipaddress.ip_address(text) if text else None
                mapped = None
                if addr is not None:
                    mapped = addr.packed if addr.version == 6 else b"\0" * 10 + b"\xff\xff" + addr.packed
                assert v == mapped, (n, col)
                compared += 1
                continue
            if ktype not in _PRINTED:
                continue
            if fields[field] == 1:
                assert v == rec.get(field), (n, col, v, rec.get(field))
                compared += 1
            elif v is not None:
                assert v == rec.get(field), (n, col, v, rec.get(field))
                compared += 1
    return compared
