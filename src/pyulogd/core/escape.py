"""One escaping rule for every outside string written to a line-oriented output or log.

Names and texts that come from outside the daemon (NFLOG prefixes, interface and network
namespace names, nfacct names, packet data, config values echoed in messages) are written
to text lines: LOGEMU, GPRINT, OPRINT, XML, GRAPHITE, the ``print`` line of PRINTPKT (and so
SYSLOG), the daemon's own log. A newline in a namespace name must not start a forged line,
an escape sequence must not reach the terminal of whoever reads the log, and the output
must stay valid UTF-8. So, one character at a time:

==============================================  ===========================================
character                                       written as
==============================================  ===========================================
``\\``                                          ``\\\\`` (so that the escaping is unambiguous)
newline, carriage return, tab                   ``\\n``, ``\\r``, ``\\t``
other C0 controls (U+0000-U+001F), DEL          ``\\xHH`` (two lower-case hex digits)
a byte that is not UTF-8 (carried as            ``\\xHH``: the byte itself, 80-ff
``surrogateescape``, U+DC80-U+DCFF)
C1 controls (U+0080-U+009F), the line and       ``\\uHHHH``: the code point (NEL, U+2028 and
paragraph separators (U+2028, U+2029), the      U+2029 end lines for some readers; the bidi
bidi controls (U+061C, U+200E, U+200F,          controls reorder what a reader sees)
U+202A-U+202E, U+2066-U+2069), the byte order
mark (U+FEFF), any other lone surrogate
everything else                                 itself
==============================================  ===========================================

``\\xHH`` always stands for one byte (a C0 control, DEL, or a byte that was not UTF-8),
``\\uHHHH`` for one code point, so :func:`unescape_text` gives back exactly the original
string, undecodable bytes included. Other Unicode format characters (zero-width joiners,
soft hyphens) and unassigned code points are written as they are: they do not end a line
and a UTF-8 reader shows them as one character each.

Text made only of printable characters without ``\\`` (every ordinary prefix such as
``gbACCEPT ``, every usual interface name) is returned unchanged, so such lines stay
byte-identical to ulogd2's. The test for that is ``str.isprintable()`` (C speed), and
callers on the per-packet path also keep a small cache of the strings they have seen.
"""

from __future__ import annotations

import re

# What needs escaping. str.isprintable() is False for all of these except the backslash,
# and for a few more (e.g. U+00A0), which the slow path then writes unchanged.
_NEEDS = re.compile(
    "[\\\\\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ufeff\ud800-\udfff]"
)
_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _one(ch: str) -> str:
    named = _NAMED.get(ch)
    if named is not None:
        return named
    cp = ord(ch)
    if cp < 0x80:
        return f"\\x{cp:02x}"
    if 0xDC80 <= cp <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{cp - 0xDC00:02x}"
    return f"\\u{cp:04x}"


_TABLE: dict[str, str] = {chr(cp): _one(chr(cp)) for cp in (*range(0x20), *range(0x7F, 0xA0), 0x5C)}


def _replace(m: re.Match[str]) -> str:
    ch = m.group()
    return _TABLE.get(ch) or _one(ch)


def escape_text(text: str) -> str:
    """``text`` with every control character, every ``\\`` and every undecodable byte escaped
    (see the module docstring); the result is printable, one line, and valid UTF-8."""
    if text.isprintable() and "\\" not in text:
        return text
    return _NEEDS.sub(_replace, text)


def escape_bytes(data: bytes) -> str:
    """Bytes from outside (a prefix, a name) as escaped text: UTF-8 where they are UTF-8,
    ``\\xHH`` for every other byte."""
    return escape_text(data.decode("utf-8", "surrogateescape"))


def needs_escape(text: str) -> bool:
    """True when :func:`escape_text` would change ``text``."""
    return not (text.isprintable() and "\\" not in text) and _NEEDS.search(text) is not None


_UNESCAPE = re.compile(r"\\(?:x([0-9a-f]{2})|u([0-9a-f]{4})|(.)|\Z)", re.DOTALL)
_SIMPLE = {"\\": "\\", "n": "\n", "r": "\r", "t": "\t"}


def _unescape_one(m: re.Match[str]) -> str:
    byte, point, simple = m.groups()
    if byte is not None:
        b = int(byte, 16)
        return chr(b) if b < 0x80 else chr(0xDC00 + b)
    if point is not None:
        return chr(int(point, 16))
    out = _SIMPLE.get(simple) if simple is not None else None
    if out is None:
        raise ValueError(f"not an escape: \\{simple or ''} at {m.start()}")
    return out


def unescape_text(text: str) -> str:
    """The inverse of :func:`escape_text`: ``unescape_text(escape_text(s)) == s`` for every
    string, bytes that were not UTF-8 coming back as ``surrogateescape`` characters.
    Raises ValueError on a backslash that starts no escape (text that was not escaped)."""
    if "\\" not in text:
        return text
    return _UNESCAPE.sub(_unescape_one, text)


class EscapeCache:
    """Escaped texts of the strings seen lately, for the per-packet path: prefixes,
    interface and namespace names repeat, so a dict lookup replaces the scan."""

    __slots__ = ("known", "size")

    def __init__(self, size: int = 1024) -> None:
        self.known: dict[str, str] = {}
        self.size = size

    def miss(self, text: str) -> str:
        """Escape ``text`` and remember it (the cache is emptied when it is full)."""
        out = escape_text(text)
        known = self.known
        if len(known) >= self.size:
            known.clear()
        known[text] = out
        return out

    def __call__(self, text: str) -> str:
        out = self.known.get(text)
        return out if out is not None else self.miss(text)
