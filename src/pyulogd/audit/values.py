"""Small value conversions shared by the ECS document and the audit row, cached where a
flood repeats them (addresses, MAC headers, the second of a timestamp).

Key semantics that later issues define and these renderers already read (when a stack
has them): ``audit.action`` (``ACCEPT``, ``DROP``, ``REJECT``, ``OTHER``), ``audit.rule``,
the rate-limit summary keys ``audit.suppressed``/``audit.first``/``audit.last``/
``audit.limit_key``, and the provisional loss-record keys ``audit.loss.count``,
``audit.loss.reason``, ``audit.loss.first``, ``audit.loss.last`` (docs/audit.md). Times in
those keys may be integer or float seconds since the epoch; a string is taken as an
ISO 8601 time already.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from typing import Any

from pyulogd.core.escape import escape_text
from pyulogd.core.keys import AUDIT_ACTIONS

# IANA protocol keywords (lower case, as ECS's network.transport wants them).
TRANSPORTS = {
    1: "icmp", 2: "igmp", 4: "ipv4", 6: "tcp", 8: "egp", 17: "udp", 33: "dccp", 41: "ipv6", 47: "gre",
    50: "esp", 51: "ah", 58: "ipv6-icmp", 88: "eigrp", 89: "ospf", 103: "pim", 112: "vrrp", 115: "l2tp",
    132: "sctp", 136: "udplite", 137: "mpls-in-ip",
}  # fmt: skip
PROTO_NUMBERS = {name: num for num, name in TRANSPORTS.items()} | {"icmpv6": 58, "icmp6": 58}

# Verdict words of audit.action: the closed list NFTRACE defined (core/keys.py).
ACTIONS = AUDIT_ACTIONS
# conntrack event numbers (ct.event) -> the word pyulogd uses for them
CT_EVENTS = {1: "new", 2: "update", 4: "destroy"}


class AddressText:
    """Packed address (4 or 16 bytes) -> text, cached (a flood repeats its addresses)."""

    def __init__(self, size: int = 8192) -> None:
        self.known: dict[bytes, str] = {}
        self.size = size

    def __call__(self, packed: bytes) -> str:
        text = self.known.get(packed)
        if text is None:
            family = socket.AF_INET if len(packed) == 4 else socket.AF_INET6
            try:
                text = socket.inet_ntop(family, bytes(packed))
            except (ValueError, OSError):
                text = bytes(packed).hex()
            if len(self.known) >= self.size:
                self.known.clear()
            self.known[bytes(packed)] = text
        return text


class AddressBytes:
    """Address text (IP2STR's keys) -> packed bytes, cached; None when not an address."""

    def __init__(self, size: int = 8192) -> None:
        self.known: dict[str, bytes | None] = {}
        self.size = size

    def __call__(self, text: str) -> bytes | None:
        try:
            return self.known[text]
        except KeyError:
            pass
        packed: bytes | None = None
        for family in (socket.AF_INET, socket.AF_INET6):
            try:
                packed = socket.inet_pton(family, text)
                break
            except (OSError, ValueError):
                continue
        if len(self.known) >= self.size:
            self.known.clear()
        self.known[text] = packed
        return packed


class Utf8Text:
    """An outside string (prefix, interface, namespace, rule) as JSON can carry it.

    Strings are kept as they came; bytes that were not UTF-8 (``surrogateescape``) cannot
    be encoded by any JSON library, so such a string is written with the daemon's one
    escaping rule (``core/escape.py``). ASCII text, nearly all of it, is returned as is.
    """

    def __init__(self, size: int = 1024) -> None:
        self.known: dict[str, str] = {}
        self.size = size

    def __call__(self, text: str) -> str:
        if text.isascii():
            return text
        out = self.known.get(text)
        if out is None:
            try:
                text.encode("utf-8")
                out = text
            except UnicodeEncodeError:
                out = escape_text(text)
            if len(self.known) >= self.size:
                self.known.clear()
            self.known[text] = out
        return out


def ecs_mac(header: bytes, offset: int) -> str | None:
    """ECS's MAC format (``02-00-0A-4D-00-01``) of the 6 bytes at ``offset``, or None."""
    mac = bytes(header[offset:offset + 6])
    if len(mac) != 6:
        return None
    return mac.hex("-").upper()


_encode_basestring: Callable[[str], str] = json.encoder.encode_basestring


class JsonText:
    """Outside strings as JSON string literals (quotes included), cached: ``known.get(s) or
    miss(s)`` on the hot path. Bytes that were not UTF-8 are escaped as :class:`Utf8Text` does."""

    def __init__(self, size: int = 4096) -> None:
        self.known: dict[str, str] = {}
        self.size = size
        self._utf8 = Utf8Text()

    def literal(self, text: str) -> str:
        out = _encode_basestring(self._utf8(text))
        if not out.isascii():
            # valid JSON as they are, but line ends to some readers (and to str.splitlines)
            out = out.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").replace("\x85", "\\u0085")
        return out

    def miss(self, text: str) -> str:
        out = self.literal(text)
        if len(self.known) >= self.size:
            self.known.clear()
        self.known[text] = out
        return out


class MacMembers:
    """An Ethernet header (NFLOG's ``raw.mac``: destination, source, type) -> the
    ``,"mac":"..."`` members of source and destination, cached per header (``known.get(h) or
    miss(h)``); None when the header is too short."""

    def __init__(self, size: int = 1024) -> None:
        self.known: dict[Any, tuple[str, str]] = {}
        self.size = size

    def miss(self, header: Any) -> tuple[str, str] | None:
        key = bytes(header)
        if len(key) < 14:
            return None
        pair = (f',"mac":"{ecs_mac(key, 6)}"', f',"mac":"{ecs_mac(key, 0)}"')
        if len(self.known) >= self.size:
            self.known.clear()
        self.known[key] = pair
        return pair


class PrefixMembers:
    """An NFLOG prefix -> the ``,"prefix":...`` member of the custom namespace and the
    ``"name":...`` member of ``rule`` (the prefix without its trailing blanks, None when
    nothing is left), cached: ``known.get(p) or miss(p)``."""

    def __init__(self, text: JsonText, size: int = 1024) -> None:
        self.known: dict[str, tuple[str, str | None]] = {}
        self.size = size
        self.text = text

    def miss(self, prefix: str) -> tuple[str, str | None]:
        name = prefix.rstrip()
        pair = (',"prefix":' + self.text.literal(prefix), '"name":' + self.text.literal(name) if name else None)
        if len(self.known) >= self.size:
            self.known.clear()
        self.known[prefix] = pair
        return pair


def stamper() -> Callable[[int, int | None], str]:
    """``stamp(sec, usec)``: UTC ISO 8601 with microseconds, the second's text cached (one
    stamper per kind of time, or they evict each other)."""
    last = -1
    head = ""

    def stamp(sec: int, usec: int | None) -> str:
        nonlocal last, head
        if sec != last:
            last = sec
            head = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(sec))
        if usec is None or not 0 <= usec < 1000000:
            return head + "000000Z"
        return head + str(usec + 1000000)[1:] + "Z"

    return stamp


def now_stamper() -> Callable[[float], str]:
    """``stamp(t)`` of a float time (the reception time), as :func:`stamper`."""
    stamp = stamper()

    def now(t: float) -> str:
        sec = int(t)
        return stamp(sec, int(t * 1000000) - sec * 1000000)

    return now


class MacPair:
    """An Ethernet header (NFLOG's ``raw.mac``: destination, source, type) -> (src, dst)
    MAC texts in ECS's format, cached per header."""

    def __init__(self, size: int = 1024) -> None:
        self.known: dict[bytes, tuple[str | None, str | None]] = {}
        self.size = size

    def __call__(self, header: Any) -> tuple[str | None, str | None]:
        key = bytes(header)
        pair = self.known.get(key)
        if pair is None:
            pair = (ecs_mac(key, 6), ecs_mac(key, 0)) if len(key) >= 14 else (None, None)
            if len(self.known) >= self.size:
                self.known.clear()
            self.known[key] = pair
        return pair


class IsoTime:
    """UTC ISO 8601 with microseconds (``2026-11-27T09:14:05.123456Z``), the second cached."""

    def __init__(self) -> None:
        self._sec = -1
        self._head = ""

    def __call__(self, sec: int, usec: int | None) -> str:
        if sec != self._sec:
            self._head = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
            self._sec = sec
        if usec is None or not 0 <= usec < 1000000:
            usec = 0
        return f"{self._head}.{usec:06d}Z"

    def of(self, t: float) -> str:
        sec = int(t)
        return self(sec, int(round((t - sec) * 1e6)) % 1000000)

    def any(self, v: Any) -> str | None:
        """A time from a key of unknown representation (see the module docstring)."""
        if isinstance(v, str):
            return v or None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return None
        return self.of(float(v))


def epoch_us(v: Any) -> int | None:
    """Microseconds since the epoch of a time key (seconds, float seconds, ISO text)."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v * 1_000_000
    if isinstance(v, float):
        return int(round(v * 1e6))
    if isinstance(v, str) and v:
        from datetime import datetime

        try:
            dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            return None
        return int(round(dt.timestamp() * 1e6))
    return None
