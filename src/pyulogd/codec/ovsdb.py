"""OVSDB's management protocol (RFC 7047), sans-IO: the little the NEUTRON filter needs.

JSON-RPC 1.0 over a stream: messages are JSON objects written back to back, with no length
and no separator. :class:`Framer` cuts the stream into messages by counting brackets outside
strings (as ovsdb-server's own reader does), so a message split over several reads, or
several messages in one read, come out whole and in order.

What the filter asks for is one ``monitor`` of the ``Interface`` table's ``name`` and
``external_ids`` columns (:func:`monitor_request`): the reply holds every row, and the
server then sends an ``update`` notification whenever a row is inserted, changed or deleted.
Neutron's interface driver writes ``iface-id`` (the full port UUID), ``attached-mac`` and,
for VM ports, ``vm-uuid`` into ``external_ids`` of every device it plugs into OVS
(``qr-``, ``qg-``, ``sg-``, ``ha-``, ``fg-``, ``tap``, ``qvo``). The server's ``echo``
requests are answered (:func:`echo_reply`), or it would drop the connection.

:class:`InterfaceTable` keeps the rows and answers "which port is device NAME" in one dict
lookup; :meth:`InterfaceTable.apply` returns the names whose answer changed.
"""

from __future__ import annotations

import codecs
import json
import re
from dataclasses import dataclass
from typing import Any

from pyulogd.core.errors import DecodeError

DEFAULT_MAX_MESSAGE = 64 << 20  # the initial monitor reply of a big node is a few MiB
_OUTSIDE = re.compile(r'[{}\[\]"]')
_INSIDE = re.compile(r'["\\]')


class Framer:
    """Bytes of a JSON-RPC stream in, whole messages (decoded JSON objects) out."""

    def __init__(self, max_message: int = DEFAULT_MAX_MESSAGE) -> None:
        self.max_message = max_message
        self._dec = codecs.getincrementaldecoder("utf-8")()
        self._text = ""
        self._pos = 0  # where scanning goes on
        self._start = -1  # where the current message began (-1: between messages)
        self._depth = 0
        self._in_string = False

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """The messages ``data`` completes. DecodeError when the stream is not JSON-RPC: the
        connection must then be dropped (nothing after a broken message can be trusted)."""
        try:
            self._text += self._dec.decode(data)
        except UnicodeDecodeError as e:
            raise DecodeError(f"OVSDB stream is not UTF-8: {e.reason}") from None
        out: list[dict[str, Any]] = []
        text, pos = self._text, self._pos
        while True:
            if self._in_string:
                m = _INSIDE.search(text, pos)
                if m is None:
                    pos = len(text)
                    break
                if m.group() == "\\":
                    if m.end() >= len(text):
                        pos = m.start()  # the escaped character has not arrived yet
                        break
                    pos = m.end() + 1
                else:
                    self._in_string = False
                    pos = m.end()
                continue
            m = _OUTSIDE.search(text, pos)
            if m is None:
                if self._start < 0 and text[pos:].strip():
                    raise DecodeError("OVSDB stream: text outside a JSON object")
                pos = len(text)
                break
            c = m.group()
            if self._depth == 0:
                if text[pos:m.start()].strip() or c != "{":
                    raise DecodeError("OVSDB stream: a message is not a JSON object")
                self._start = m.start()
            pos = m.end()
            if c == '"':
                self._in_string = True
            elif c in "{[":
                self._depth += 1
            else:
                self._depth -= 1
                if self._depth < 0:
                    raise DecodeError("OVSDB stream: unbalanced brackets")
                if self._depth == 0:
                    try:
                        msg = json.loads(text[self._start:pos])
                    except ValueError as e:
                        raise DecodeError(f"OVSDB stream: bad JSON: {e}") from None
                    out.append(msg)
                    text, pos, self._start = text[pos:], 0, -1
        if self._start >= 0 and len(text) - self._start > self.max_message:
            raise DecodeError(f"OVSDB stream: a message longer than {self.max_message} bytes")
        if self._start < 0:
            text, pos = "", 0  # only white space was left
        elif self._start > 0:
            text, pos, self._start = text[self._start:], pos - self._start, 0
        self._text, self._pos = text, pos
        return out


def encode(msg: dict[str, Any]) -> bytes:
    return json.dumps(msg, separators=(",", ":")).encode("utf-8")


def monitor_request(req_id: Any, monitor_id: Any, tables: dict[str, list[str]],
                    db: str = "Open_vSwitch") -> bytes:  # fmt: skip
    """``monitor`` of the given columns of each table: initial rows, inserts, changes, deletes."""
    requests = {t: {"columns": cols} for t, cols in tables.items()}
    return encode({"method": "monitor", "params": [db, monitor_id, requests], "id": req_id})


def echo_reply(msg: dict[str, Any]) -> bytes:
    """The answer to the server's ``echo`` request: its params, its id."""
    return encode({"result": msg.get("params", []), "error": None, "id": msg.get("id")})


def ovs_map(value: Any) -> dict[str, str]:
    """An OVSDB map column (``["map", [[k, v], ...]]``) as a dict of its string pairs."""
    if isinstance(value, list) and len(value) == 2 and value[0] == "map" and isinstance(value[1], list):
        out = {}
        for pair in value[1]:
            if isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str) and isinstance(pair[1], str):
                out[pair[0]] = pair[1]
        return out
    return {}


@dataclass(frozen=True, slots=True)
class Iface:
    """What Neutron wrote on one OVS interface."""

    iface_id: str | None  # the port's full UUID
    mac: str | None  # attached-mac
    vm_uuid: str | None  # the instance (VM ports)


class InterfaceTable:
    """The ``Interface`` rows (name, external_ids) of one monitor, by name."""

    COLUMNS = ("name", "external_ids")

    def __init__(self) -> None:
        self.rows: dict[str, tuple[str, Iface]] = {}  # row uuid -> (name, what it says)
        self.by_name: dict[str, Iface] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def replace(self, result: Any) -> set[str]:
        """The monitor's reply: every row there is (what was known before is forgotten).
        Returns the names whose entry changed."""
        before = dict(self.by_name)
        self.rows.clear()
        self.by_name.clear()
        self._apply(result)
        names = set(before) | set(self.by_name)
        return {n for n in names if before.get(n) != self.by_name.get(n)}

    def apply(self, updates: Any) -> set[str]:
        """An ``update`` notification's table updates; returns the names whose entry changed."""
        return self._apply(updates)

    def _apply(self, updates: Any) -> set[str]:
        if not isinstance(updates, dict):
            raise DecodeError("OVSDB: table updates are not an object")
        rows = updates.get("Interface", {})
        if not isinstance(rows, dict):
            raise DecodeError("OVSDB: Interface updates are not an object")
        changed: set[str] = set()
        for uuid, change in rows.items():
            if not isinstance(change, dict):
                raise DecodeError("OVSDB: a row update is not an object")
            old = self.rows.pop(uuid, None)
            if old is not None:
                changed.add(old[0])
                if self.by_name.get(old[0]) is old[1]:
                    del self.by_name[old[0]]
            new = change.get("new")
            if new is None:
                continue  # deleted
            if not isinstance(new, dict):
                raise DecodeError("OVSDB: a row is not an object")
            name = new.get("name", old[0] if old else None)
            if not isinstance(name, str):
                continue
            ext = ovs_map(new["external_ids"]) if "external_ids" in new else None
            if ext is None:
                info = old[1] if old else Iface(None, None, None)
            else:
                info = Iface(ext.get("iface-id"), ext.get("attached-mac"), ext.get("vm-uuid"))
            self.rows[uuid] = (name, info)
            self.by_name[name] = info
            changed.add(name)
        return changed
