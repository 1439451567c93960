"""What a broker message of records is, sans-IO: subjects, message ids, batching.

The NATS output (``plugins/outputs/nats.py``) publishes batches of records to a JetStream
stream and the NATSIN input reads them back; both agree on what is here, and nothing here
does I/O or reads a clock (the caller passes ``now``), so it is tested with plain values.

* **Body**: one batch of the daemon's one record serialization (``io/recordfmt.py``): the
  key names, the rows, and the node's sequence number of every record. The on-disk spool
  keeps exactly these batches (one frame per message), so a message drained after an outage
  is the message that would have been sent.
* **Headers**: ``Nats-Msg-Id`` (JetStream's de-duplication within the stream's duplicate
  window) is derived from the node id and the records' own sequence numbers
  (``<node>:<first>:<last>:<count>:<crc32 of the body>``), never from a batch counter: a batch
  that is spooled and published again carries the same records and so the same id, and the
  server drops the second copy. ``Pyulogd-Node`` names the node, so that the collector can give every record
  ``(node id, sequence)``, the key the central database de-duplicates on past the window.
* **Subjects**: a template such as ``audit.{host}.{project}``. ``{host}`` and ``{node}`` are
  the same for every record of a daemon; ``{netns}``, ``{project}``, ``{router}`` and
  ``{network}`` come from each record's keys. A value becomes one subject token through
  :func:`escape_token`: host names hold dots, which separate tokens, and ``*``/``>`` are
  wildcards, so anything outside ``[A-Za-z0-9_-]`` is written ``%XX`` (UTF-8 bytes, hex), and
  an empty or missing value is ``%``, which no escaped value can be.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

HDR_MSG_ID = "Nats-Msg-Id"
HDR_NODE = "Pyulogd-Node"

# Template token -> the key whose value it takes per record (None: the same for every record).
TOKENS: dict[str, str | None] = {
    "host": None,
    "node": None,
    "netns": "oob.netns",
    "project": "neutron.project_id",
    "router": "neutron.router_id",
    "network": "neutron.network_id",
}

_SAFE = re.compile(r"[A-Za-z0-9_\-]+")
_FIELD = re.compile(r"\{([^{}]*)\}")
# What NATS refuses in a subject (besides an empty token): white space and controls.
_BAD_LITERAL = re.compile(r"[\s\x00-\x1f\x7f*>]")


def escape_token(value: Any) -> str:
    """``value`` as one subject token: ``[A-Za-z0-9_-]`` kept, every other byte ``%XX``;
    None or empty is ``%``. Injective, so two different values never share a subject."""
    if value is None:
        return "%"
    text = value if isinstance(value, str) else str(value)
    if not text:
        return "%"
    if _SAFE.fullmatch(text):
        return text
    out = []
    for ch in text:
        if _SAFE.fullmatch(ch):
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8", "surrogateescape"))
    return "".join(out)


def unescape_token(token: str) -> str:
    """The value :func:`escape_token` made ``token`` from ("" for ``%``)."""
    if token == "%":
        return ""
    raw = bytearray()
    i = 0
    while i < len(token):
        if token[i] == "%":
            raw.append(int(token[i + 1 : i + 3], 16))
            i += 3
        else:
            raw.extend(token[i].encode())
            i += 1
    return raw.decode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class SubjectTemplate:
    """A parsed subject template: literal tokens and fields, checked once at configure."""

    text: str
    parts: tuple[tuple[str, str], ...]  # ("lit", text) or ("field", token name), in order

    @classmethod
    def parse(cls, text: str) -> SubjectTemplate:
        """ValueError with the reason for a template NATS would refuse or we cannot fill."""
        if not text:
            raise ValueError("the subject template is empty")
        parts: list[tuple[str, str]] = []
        pos = 0
        for m in _FIELD.finditer(text):
            if m.start() > pos:
                parts.append(("lit", text[pos : m.start()]))
            name = m[1]
            if name not in TOKENS:
                raise ValueError(f"unknown field {{{name}}} (known: {', '.join('{' + t + '}' for t in TOKENS)})")
            parts.append(("field", name))
            pos = m.end()
        if pos < len(text):
            parts.append(("lit", text[pos:]))
        for kind, lit in parts:
            if kind == "lit" and ("{" in lit or "}" in lit or _BAD_LITERAL.search(lit)):
                raise ValueError(f"'{lit}' cannot be part of a subject")
        # Every dot-separated token must be non-empty: a field always fills its token.
        probe = "".join(p if k == "lit" else "x" for k, p in parts)
        if any(t == "" for t in probe.split(".")):
            raise ValueError("a subject token is empty (two dots in a row, or a dot at an end)")
        return cls(text, tuple(parts))

    def record_keys(self) -> tuple[str, ...]:
        """The keys whose values the subject depends on, per record (may be empty)."""
        out: list[str] = []
        for kind, name in self.parts:
            key = TOKENS.get(name) if kind == "field" else None
            if key is not None and key not in out:
                out.append(key)
        return tuple(out)

    def bind(self, host: str, node: str) -> BoundSubject:
        """The template with the daemon's own fields filled: what remains is per record."""
        pieces: list[str | str] = []
        fields: list[str] = []
        buf = ""
        for kind, value in self.parts:
            if kind == "lit":
                buf += value
            elif value == "host":
                buf += escape_token(host)
            elif value == "node":
                buf += escape_token(node)
            else:
                pieces.append(buf)
                buf = ""
                fields.append(TOKENS[value] or "")
        pieces.append(buf)
        return BoundSubject(tuple(pieces), tuple(fields))

    def wildcard(self) -> str:
        """The subjects this template can produce, as a NATS filter (every field ``*``)."""
        return "".join(p if k == "lit" else "*" for k, p in self.parts)


@dataclass(frozen=True)
class BoundSubject:
    """``pieces[0] + v0 + pieces[1] + v1 ...`` for the escaped values of ``fields``."""

    pieces: tuple[str, ...]
    fields: tuple[str, ...]

    @property
    def static(self) -> str | None:
        """The subject when it depends on no record, else None."""
        return self.pieces[0] if not self.fields else None

    def make(self, values: Sequence[Any]) -> str:
        out = [self.pieces[0]]
        for v, piece in zip(values, self.pieces[1:], strict=True):
            out.append(escape_token(v))
            out.append(piece)
        return "".join(out)


def msg_id(node: str, seqs: Sequence[int], body: bytes = b"") -> str:
    """The message's ``Nats-Msg-Id``: node id, the first and last record sequence numbers, how
    many records (so a batch cut differently is never mistaken for this one), and the CRC-32 of
    the body. A message published again (a retry, a spooled frame drained later, by this process
    or the next) is the same bytes and gets the same id; the checksum only tells apart records
    that reuse numbers, which a node without a persistent sequence (the write-ahead log of issue
    12) does after a restart: JetStream would otherwise drop its new records as copies."""
    if not seqs:
        return f"{node}:empty:{zlib.crc32(body):08x}"
    return f"{node}:{seqs[0]}:{seqs[-1]}:{len(seqs)}:{zlib.crc32(body):08x}"


@dataclass
class Chunk:
    """Records handed over together (one flush of the daemon, one subject)."""

    subject: str
    names: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    seqs: list[int]
    t: float  # monotonic time it was handed over


@dataclass
class Cut:
    """A message made of the head of the queue."""

    subject: str
    names: tuple[str, ...]
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)


def due_at(oldest: float | None, queued: int, batch_size: int, linger: float, stopping: bool) -> float | None:
    """When the head of the queue should become a message: at once when a batch is full or
    the daemon stops, ``linger`` after the oldest record came otherwise; None when empty."""
    if oldest is None:
        return None
    if stopping or queued >= batch_size:
        return float("-inf")
    return oldest + linger


def cut(chunks: list[Chunk], batch_size: int) -> tuple[Cut, int]:
    """The next message from the head of ``chunks``: records of the first chunk's subject and
    names, in order, at most ``batch_size``. Takes whole chunks and the front of a chunk
    (what is taken is removed from ``chunks``; chunks of other subjects stay, in order).
    Returns the message and how many records it took."""
    head = chunks[0]
    msg = Cut(head.subject, head.names)
    i = 0
    while i < len(chunks) and len(msg.rows) < batch_size:
        c = chunks[i]
        if c.subject != msg.subject or c.names != msg.names:
            i += 1
            continue
        room = batch_size - len(msg.rows)
        if len(c.rows) <= room:
            msg.rows.extend(c.rows)
            msg.seqs.extend(c.seqs)
            del chunks[i]
        else:
            msg.rows.extend(c.rows[:room])
            msg.seqs.extend(c.seqs[:room])
            c.rows, c.seqs = c.rows[room:], c.seqs[room:]
    return msg, len(msg.rows)
