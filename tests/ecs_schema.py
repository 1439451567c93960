"""Check documents against ECS's own field definitions (tests/data/ecs/ecs_flat.yml, ECS 9.4.0).

Not our list: the fields, their types and the allowed values of the categorization fields
come from the file Elastic generates for the release (source and licence next to it). A
document passes when every leaf field exists in ECS (or sits in the custom namespace
``pyulogd.*``), its value has the field's type, arrays appear only where ECS normalizes
the field to an array, ``event.kind``/``category``/``type``/``outcome`` use ECS's allowed
values, each ``event.type`` is one ECS expects for the document's categories, and the
required ``@timestamp`` is there.
"""

from __future__ import annotations

import functools
import ipaddress
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

FLAT = Path(__file__).resolve().parent / "data" / "ecs" / "ecs_flat.yml"
CUSTOM = "pyulogd"
_INTS = {"long": (-(2**63), 2**63 - 1), "integer": (-(2**31), 2**31 - 1), "short": (-(2**15), 2**15 - 1),
         "byte": (-128, 127)}  # fmt: skip
_TEXT = {"keyword", "constant_keyword", "wildcard", "match_only_text", "text"}
_FLOAT = {"float", "double", "scaled_float", "half_float"}


@functools.cache
def fields() -> dict[str, dict[str, Any]]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(FLAT, encoding="utf-8") as f:
        data: dict[str, dict[str, Any]] = yaml.load(f, Loader=loader)
    return data


def flatten(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Leaf fields by dotted name (dotted keys, as Elasticsearch expands them, included)."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            assert name not in out, f"{name} given twice"
            out[name] = value
    return out


def _problem(name: str, value: Any, spec: dict[str, Any]) -> str | None:
    kind = spec["type"]
    arrays = "array" in (spec.get("normalize") or [])
    values = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not arrays:
        return f"{name}: an array, but ECS does not normalize this field to one"
    if not values:
        return f"{name}: an empty array"
    for v in values:
        if kind in _TEXT:
            if not isinstance(v, str):
                return f"{name}: {v!r} is not a string ({kind})"
        elif kind in _INTS:
            lo, hi = _INTS[kind]
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                return f"{name}: {v!r} is not a {kind}"
        elif kind in _FLOAT:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                return f"{name}: {v!r} is not a number ({kind})"
        elif kind == "boolean":
            if not isinstance(v, bool):
                return f"{name}: {v!r} is not a boolean"
        elif kind == "ip":
            try:
                ipaddress.ip_address(v)
            except (ValueError, TypeError):
                return f"{name}: {v!r} is not an IP address"
        elif kind == "date":
            if not isinstance(v, str):
                return f"{name}: {v!r} is not a date string"
            try:
                datetime.fromisoformat(v.replace("Z", "+00:00"))
            except ValueError:
                return f"{name}: {v!r} is not an ISO 8601 date"
        else:
            return f"{name}: type {kind} is not checked by this test, do not use it"
        allowed = spec.get("allowed_values")
        if allowed and v not in {a["name"] for a in allowed}:
            return f"{name}: {v!r} is not one of ECS's allowed values"
    return None


def problems(doc: dict[str, Any]) -> list[str]:
    """Everything wrong with one document (empty: it is a valid ECS document)."""
    spec = fields()
    flat = flatten(doc)
    out = []
    if "@timestamp" not in flat:
        out.append("@timestamp is required")
    for name, value in flat.items():
        if name == CUSTOM or name.startswith(CUSTOM + "."):
            continue
        s = spec.get(name)
        if s is None:
            out.append(f"{name}: not an ECS field (and not under {CUSTOM}.*)")
            continue
        why = _problem(name, value, s)
        if why:
            out.append(why)
    cats = flat.get("event.category") or []
    types = flat.get("event.type") or []
    if cats and types:
        expected: set[str] = set()
        for a in spec["event.category"]["allowed_values"]:
            if a["name"] in cats:
                expected.update(a.get("expected_event_types") or [])
        for t in types:
            if t not in expected:
                out.append(f"event.type {t!r} is not expected for event.category {cats}")
    assert CUSTOM not in {n.split(".")[0] for n in spec}, "the custom namespace must not be an ECS field set"
    return out


def check_lines(text: str) -> list[dict[str, Any]]:
    """Parse JSON lines and assert every document is valid ECS; the documents."""
    docs = []
    for n, line in enumerate(text.splitlines(), 1):
        doc = json.loads(line)
        bad = problems(doc)
        assert not bad, f"line {n}: " + "; ".join(bad) + f"\n{line}"
        docs.append(doc)
    return docs
