"""Tenant separation: which destination(s) a record goes to, by the project(s) it belongs to.

An output with ``split_by=neutron.project_id`` writes each record to the destination of its
project, never to another project's: ``file="/var/log/pyulogd/{project}.json"`` becomes one
file per project. A record belongs to the project of the port it was logged at
(``neutron.project_id``, from the NEUTRON filter); a flow between two projects also names the
other side's (``neutron.peer_project_id``) and goes to both. A record whose project is not
known goes to a destination of its own, ``unresolved``; so does one whose project id is not
one that can name a file: a project id is an outside string (it comes from the mapping
file), and only ``[0-9a-f-]`` (keystone's hex ids, UUIDs) is put into a file name.

This module only decides; the output owns the destinations (files here; tables or subjects
later), so the rule is the same for every output that splits.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

SPLIT_KEYS = {"neutron.project_id": ("neutron.project_id", "neutron.peer_project_id")}
PLACEHOLDER = "{project}"
UNRESOLVED = "unresolved"
_NAME = re.compile(r"[0-9a-f][0-9a-f-]{0,63}\Z")
_CACHE_MAX = 4096


def destination_name(value: Any) -> str:
    """The destination a project id stands for: the id itself when it may be part of a file
    name, :data:`UNRESOLVED` otherwise (and when there is none)."""
    if isinstance(value, str) and _NAME.match(value):
        return value
    return UNRESOLVED


def check_template(path: str) -> str | None:
    """Why ``path`` cannot be a per-project file name template (None: it can). The
    placeholder must be in the file name, once, so every destination is in one directory
    that is checked like any output's."""
    if path.count(PLACEHOLDER) != 1:
        return f"must contain {PLACEHOLDER} exactly once (e.g. /var/log/pyulogd/{PLACEHOLDER}.json)"
    if PLACEHOLDER in os.path.dirname(path):
        return f"{PLACEHOLDER} must be in the file name, not in a directory"
    rest = path.replace(PLACEHOLDER, "")
    if "{" in rest or "}" in rest:
        return f"has braces other than {PLACEHOLDER}"
    return None


def path_for(template: str, name: str) -> str:
    """The file of destination ``name`` (a :func:`destination_name` result)."""
    return template.replace(PLACEHOLDER, name)


class Splitter:
    """``destinations(rec)``: the destination names of a record, from the slots of the project
    key and the peer project key (slot 0: never valid). Results are cached by value."""

    def __init__(self, slots: Sequence[int]) -> None:
        self.own, self.peer = (tuple(slots) + (0, 0))[:2]
        self._one: dict[Any, tuple[str, ...]] = {}
        self._two: dict[tuple[Any, Any], tuple[str, ...]] = {}

    def destinations(self, rec: list[Any]) -> tuple[str, ...]:
        p = rec[self.own]
        q = rec[self.peer]
        if q is None or q == p:
            d = self._one.get(p)
            if d is None:
                if len(self._one) >= _CACHE_MAX:
                    self._one.clear()
                d = self._one[p] = (destination_name(p),)
            return d
        key = (p, q)
        d = self._two.get(key)
        if d is None:
            if len(self._two) >= _CACHE_MAX:
                self._two.clear()
            d = self._two[key] = tuple(dict.fromkeys((destination_name(p), destination_name(q))))
        return d
