"""Typed config options: what an option's value looks like in ulogd.conf and what a plugin gets.

A plugin declares each option with a *kind* (``Int(0, 65535)``, ``Size()``,
``Duration()``, ``Bool()``, ``Choice("tcp", "udp")``, ``Port()``, ``Address()``, ``Path()``,
``Str()``). The config is read once: :func:`pyulogd.core.config.option_values` hands every
value to its kind's :meth:`OptionKind.parse`, which returns the typed value (``int`` bytes,
``float`` seconds, ``bool``, the canonical choice...) or raises ``ValueError`` with the reason,
reported with the file and line. Plugins use the values as they are: no ``int()``, no second
parse, no range check of their own, and the default is the one declared.

Every kind reads what ulogd2 reads for the option: integers keep ulogd's syntax (decimal,
``0x`` hex, leading-``0`` octal, :func:`parse_int`), booleans take ulogd's 0 and 1, a bare
number of a duration or a size keeps the unit the option always had (seconds, bytes). What
is new is only accepted beyond that: units (``64M``, ``250ms``, ``5m``), words for booleans,
and refused: values out of the option's range (a port above 65535), which ulogd2 took and
then misused or silently truncated.

``pyulogd -i`` shows a kind by :attr:`OptionKind.name` for pyulogd's own options and by
:attr:`OptionKind.ulogd_word` (``Integer`` or ``String``, the only words ulogd2 has) for
ulogd2's, so its text for those stays ulogd2's; docs/plugins.md shows :meth:`OptionKind.describe`.
"""

from __future__ import annotations

import ipaddress
import math
import re
import socket
from typing import Any, ClassVar, Generic, TypeVar

T = TypeVar("T")

# ulogd's integer options are C ints read with strtoul: what parse_int takes.
INT_MIN, UINT_MAX = -(2**31), 2**32 - 1
_OCTAL = re.compile(r"[+-]?0[0-7]+\Z")
# A number with an optional fraction, then a unit: sizes (K, KB, KiB ... T) and durations.
_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(?:([kmgt])(?:i?b)?|b)\Z", re.IGNORECASE)
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\Z", re.IGNORECASE)


def parse_int(text: str) -> int:
    """ulogd's integer syntax: decimal, 0x hex, leading-0 octal; the whole word must be a number."""
    t = text.strip()
    if _OCTAL.match(t):
        value = int(t, 8)
    else:
        value = int(t, 0)  # raises ValueError on garbage
    if not INT_MIN <= value <= UINT_MAX:
        raise ValueError(f"{text!r} is out of range")
    return value


def _bounds(value: float, lo: float | None, hi: float | None, show: Any) -> str | None:
    """The reason ``value`` is outside ``lo..hi`` (either may be open), or None."""
    if (lo is None or value >= lo) and (hi is None or value <= hi):
        return None
    if lo is not None and hi is not None:
        return f"must be between {show(lo)} and {show(hi)}"
    if lo is not None:
        return "must not be negative" if lo == 0 else f"must be at least {show(lo)}"
    return f"must be at most {show(hi)}"


def _range_text(lo: float | None, hi: float | None, show: Any) -> str:
    if lo is not None and hi is not None:
        return f" {show(lo)}..{show(hi)}"
    if lo is not None:
        return f" >= {show(lo)}"
    return f" <= {show(hi)}" if hi is not None else ""


class OptionKind(Generic[T]):
    """What an option's value is. Subclasses set ``name`` and ``ulogd_word``, and implement
    :meth:`convert` (syntax), and where they have bounds :meth:`problem`."""

    # The word ``pyulogd -i`` prints for a pyulogd option of this kind.
    name: ClassVar[str] = ""
    # The word ulogd2 prints for an option of this kind ("Integer" or "String"): what
    # ``pyulogd -i`` prints for ulogd2's own options, so that text stays ulogd2's.
    ulogd_word: str = "String"

    def convert(self, text: str) -> T:
        """The value ``text`` stands for, bounds not checked; ValueError when it is not one."""
        raise NotImplementedError

    def problem(self, value: T) -> str | None:
        """Why ``value`` is not acceptable (outside the bounds), or None."""
        return None

    def parse(self, text: str) -> T:
        """The typed value of a config word: :meth:`convert` then :meth:`problem`."""
        value = self.convert(text)
        why = self.problem(value)
        if why:
            raise ValueError(why)
        return value

    def show(self, value: T) -> str:
        """``value`` written as in ulogd.conf (``-i`` prints defaults with it)."""
        return str(value)

    def describe(self) -> str:
        """The kind for the plugin reference (docs/plugins.md)."""
        return self.name.lower()


class Str(OptionKind[str]):
    """Any text, as written."""

    name = "String"

    def convert(self, text: str) -> str:
        return text


class Int(OptionKind[int]):
    """An integer in ulogd's syntax, within ``lo..hi`` (by default: what ulogd reads, a C int
    or unsigned int). ``octal`` shows the bounds in octal (file modes)."""

    name = "Integer"
    ulogd_word = "Integer"

    def __init__(self, lo: int | None = INT_MIN, hi: int | None = UINT_MAX, *, octal: bool = False) -> None:
        self.lo, self.hi, self.octal = lo, hi, octal

    def _num(self, v: float) -> str:
        return f"0{int(v):o}" if self.octal and v else str(int(v))

    def convert(self, text: str) -> int:
        try:
            return parse_int(text)
        except ValueError:
            raise ValueError(f"needs an integer, not '{text}'") from None

    def _open(self) -> tuple[int | None, int | None]:
        """The bounds worth saying: ulogd's own range is what parse_int() already enforces."""
        return (None if self.lo == INT_MIN else self.lo), (None if self.hi == UINT_MAX else self.hi)

    def problem(self, value: int) -> str | None:
        why = _bounds(value, *self._open(), self._num)
        return f"{why} (a file mode: write it in octal, e.g. 0660)" if why and self.octal else why

    def describe(self) -> str:
        return "integer" + _range_text(*self._open(), self._num) + (" (octal: 0660)" if self.octal else "")


class Bool(OptionKind[bool]):
    """ulogd's 0 and 1 (any integer syntax of them), or yes/no, true/false, on/off."""

    name = "Boolean"
    ulogd_word = "Integer"
    _WORDS: ClassVar[dict[str, bool]] = {
        "yes": True, "no": False, "true": True, "false": False, "on": True, "off": False,
    }  # fmt: skip

    def convert(self, text: str) -> bool:
        word = self._WORDS.get(text.strip().lower())
        if word is not None:
            return word
        try:
            number = parse_int(text)
        except ValueError:
            number = -1
        if number in (0, 1):
            return bool(number)
        raise ValueError(f"needs 0 or 1 (or yes/no, true/false, on/off), not '{text}'")

    def show(self, value: bool) -> str:
        return "1" if value else "0"

    def describe(self) -> str:
        return "boolean (0 or 1)"


class Size(OptionKind[int]):
    """A number of bytes: a bare integer in ulogd's syntax, or a number with K, M, G or T
    (powers of 1024; ``KiB``, ``kb`` and ``1.5G`` are read too), within ``lo..hi``."""

    name = "Size"
    ulogd_word = "Integer"
    _POWERS: ClassVar[dict[str, int]] = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}

    def __init__(self, lo: int = 0, hi: int | None = None) -> None:
        self.lo, self.hi = lo, hi

    def convert(self, text: str) -> int:
        t = text.strip()
        try:
            return parse_int(t)
        except ValueError:
            pass
        m = _SIZE.match(t)
        if m is None:
            raise ValueError(f"needs a size in bytes (e.g. 150000, 64K, 512M, 1G), not '{text}'")
        return int(float(m[1]) * 1024 ** self._POWERS[(m[2] or "").lower()])

    def problem(self, value: int) -> str | None:
        return _bounds(value, self.lo, self.hi, str)

    def describe(self) -> str:
        return "size" + _range_text(self.lo or None, self.hi, str) + " (bytes; K, M, G: x1024)"


class Duration(OptionKind[float]):
    """A time, in seconds for the plugin (a ``float``). A bare number is in ``unit`` (what
    the option always meant; ulogd's integer syntax, or a decimal fraction); a number may
    also carry its own unit: ``ms``, ``s``, ``m``, ``h``. ``positive`` refuses 0."""

    name = "Duration"
    ulogd_word = "Integer"
    _UNITS: ClassVar[dict[str, float]] = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

    def __init__(self, lo: float = 0.0, hi: float | None = None, *, unit: str = "s", positive: bool = False) -> None:
        self.lo, self.hi, self.unit, self.positive = lo, hi, unit, positive
        self.scale = self._UNITS[unit]

    def convert(self, text: str) -> float:
        t = text.strip()
        try:
            return parse_int(t) * self.scale
        except ValueError:
            pass
        m = _DURATION.match(t)
        if m is None:
            raise ValueError(f"needs a duration (e.g. 5 for {self._word()}, 250ms, 30s, 5m, 1h), not '{text}'")
        return float(m[1]) * (self._UNITS[m[2].lower()] if m[2] else self.scale)

    def _word(self) -> str:
        return {"ms": "milliseconds", "s": "seconds", "m": "minutes", "h": "hours"}[self.unit]

    def problem(self, value: float) -> str | None:
        if self.positive and value <= 0:
            return "must be greater than 0"
        return _bounds(value, self.lo, self.hi, self.show)

    def show(self, value: float) -> str:
        n = value / self.scale
        if n == math.floor(n):
            return str(int(n))
        ms = value * 1000
        return f"{ms:g}ms" if ms == math.floor(ms) else f"{n:g}"

    def describe(self) -> str:
        bounds = _range_text(self.lo or None, self.hi, self.show)
        if self.positive and not self.lo:
            bounds = " > 0" + bounds.replace(" <=", ", <=")
        return f"duration{bounds} (bare number: {self._word()}; or ms, s, m, h)"


class Choice(OptionKind[str]):
    """One of ``values``; the plugin gets the spelling declared here. ``fold_case`` accepts
    any case; ``what`` names the thing in the error ("unknown mode 'x'")."""

    name = "Choice"

    def __init__(self, *values: str, fold_case: bool = True, what: str = "value") -> None:
        self.values, self.fold_case, self.what = values, fold_case, what
        self._by = {(v.lower() if fold_case else v): v for v in values}

    def convert(self, text: str) -> str:
        found = self._by.get(text.lower() if self.fold_case else text)
        if found is None:
            raise ValueError(f"unknown {self.what} '{text}' (valid: {', '.join(self.values)})")
        return found

    def describe(self) -> str:
        return "one of " + ", ".join(self.values) + ("" if self.fold_case else " (exact case)")


class Port(OptionKind[int]):
    """A TCP/UDP port, 1..65535 (0 too with ``zero``: "the default"); with ``services``, a
    service name of /etc/services too (``syslog``), looked up once, at config time."""

    name = "Port"

    def __init__(self, *, zero: bool = False, services: bool = False) -> None:
        self.zero, self.services = zero, services
        # ulogd2 reads a port that takes service names as a string.
        self.ulogd_word = "String" if services else "Integer"

    def convert(self, text: str) -> int:
        try:
            return parse_int(text)
        except ValueError:
            pass
        if self.services and text.strip():
            for proto in ("tcp", "udp"):  # what getaddrinfo() finds for a stream or a datagram socket
                try:
                    return socket.getservbyname(text.strip(), proto)
                except OSError:
                    pass
            raise ValueError(f"unknown service '{text}' (a port number or a name of /etc/services)")
        raise ValueError(f"needs a port number, not '{text}'")

    def problem(self, value: int) -> str | None:
        return _bounds(value, 0 if self.zero else 1, 65535, str)

    def describe(self) -> str:
        return f"port {0 if self.zero else 1}..65535" + (" or service name" if self.services else "")


# A label of a host name: letters, digits, '-' (not first or last) and '_' (seen in the wild).
_LABEL = re.compile(r"(?!-)[\w-]{1,63}(?<!-)\Z")


class Address(OptionKind[str]):
    """A host name or an IP address (an IPv6 one may be in brackets: ``[::1]``), or empty
    (not set); with ``paths``, an absolute path too (a database's local socket)."""

    name = "Address"

    def __init__(self, *, paths: bool = False) -> None:
        self.paths = paths

    def convert(self, text: str) -> str:
        t = text.strip()
        if not t or (self.paths and t.startswith("/") and "\0" not in t):
            return t
        if t.startswith("[") and t.endswith("]"):
            try:
                ipaddress.IPv6Address(t[1:-1])
            except ValueError:
                raise ValueError(f"'{text}' is not an IPv6 address in brackets") from None
            return t[1:-1]  # what getaddrinfo() takes
        try:
            ipaddress.ip_address(t)
            return t
        except ValueError:
            pass
        name = t[:-1] if t.endswith(".") else t
        if len(name) > 253 or not all(_LABEL.match(label) for label in name.split(".")):
            extra = " or an absolute socket path" if self.paths else ""
            raise ValueError(f"'{text}' is not a host name or an IP address{extra}")
        return t

    def describe(self) -> str:
        return "host name or IP address" + (" (or a socket path)" if self.paths else "")


class Path(OptionKind[str]):
    """A file or directory name, as written (relative names are relative to the daemon's
    working directory). A NUL byte, which no file name can hold, is refused here rather
    than when the file is opened."""

    name = "Path"

    def convert(self, text: str) -> str:
        if "\0" in text:
            raise ValueError("a path cannot contain a NUL byte")
        return text
