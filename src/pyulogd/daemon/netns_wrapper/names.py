"""Namespace names: which ones get a daemon, how they are shown in a log line, how they go
into the daemon's config (render) and into the wrapper's file names (file_stem).

ip accepts any name but "", ".", ".." and names with "/" (up to 255 bytes), including quotes,
line breaks and bytes that are not UTF-8.  The name becomes part of a config that a root
daemon reads, a file name in the run directory and log lines, so a daemon is started only
for names made of the characters Neutron uses (``<prefix>-<uuid>``); other names are passed
to ip and refused here, with the reason.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyulogd.daemon.netns_wrapper.settings import Settings

NAME_MAX = 255  # bytes: ip's own limit (a file name under /run/netns)
NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
_NAME_FIRST = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
# What may be substituted into the daemon's config: ulogd.conf has no escape for a quote or a
# line break inside a value, so escaping is refusing.  These characters cannot end a line
# (str.splitlines() also ends one at \r, \v, \f, \x1c-\x1e, \x85, \u2028, \u2029), a quoted
# word (") or an unquoted one (blanks, =), nor start a comment or a section where a value starts.
_VALUE_CHARS = NAME_CHARS | frozenset("/")


def name_problem(name: str) -> str | None:
    """Why the wrapper starts no daemon for namespace ``name``, or None if the name is safe.

    Safe: 1 to 255 bytes of ASCII letters, digits, ``_``, ``.`` and ``-``, beginning with a
    letter or digit, with no ``..`` (so no part of it, e.g. @NETNS_ID@, can be a ``..`` path
    component either).
    """
    if not name:
        return "empty name"
    bad = next((c for c in name if c not in NAME_CHARS), None)
    if bad is not None:
        return f"character {shown(bad)} (only letters, digits, '_', '.' and '-' are accepted)"
    if len(name) > NAME_MAX:  # ASCII from here on: characters are bytes
        return f"{len(name)} bytes long (at most {NAME_MAX})"
    if name[0] not in _NAME_FIRST:
        return "does not begin with a letter or digit"
    if ".." in name:
        return "contains '..'"
    return None


def check_config_value(value: str) -> str:
    """``value`` if it can go into a ulogd.conf value as it is; ValueError otherwise."""
    bad = next((c for c in value if c not in _VALUE_CHARS), None)
    if bad is not None:
        raise ValueError(f"{shown(value)} contains {shown(bad)}, which cannot be put into a config value safely "
                         "(only letters, digits, '_', '.', '-' and '/')")
    return value


def _raw(text: str) -> bytes:
    """The bytes behind a str from argv or the file system (undecodable bytes are surrogates)."""
    try:
        return os.fsencode(text)
    except UnicodeEncodeError:  # a str that did not come from bytes
        return text.encode("utf-8", "surrogatepass")


def shown(text: str, limit: int = 256) -> str:
    """``text`` quoted for a log line, with every byte outside printable ASCII escaped.

    Repr-style (``\\n``, ``\\r``, ``\\t``, ``\\xNN`` per byte, ``\\'``, ``\\\\``), so a log line never
    carries a raw control character or a byte that is not UTF-8; at most ``limit`` bytes of
    the text are shown.
    """
    raw = _raw(text)
    out = []
    for b in raw[:limit]:
        if b == 0x5C:
            out.append("\\\\")
        elif b == 0x27:
            out.append("\\'")
        elif 0x20 <= b < 0x7F:
            out.append(chr(b))
        elif b == 0x0A:
            out.append("\\n")
        elif b == 0x0D:
            out.append("\\r")
        elif b == 0x09:
            out.append("\\t")
        else:
            out.append(f"\\x{b:02x}")
    more = f"... ({len(raw)} bytes)" if len(raw) > limit else ""
    return "'" + "".join(out) + "'" + more


# Options naming a daemon's own state: two daemons must never share a value (a spool and the
# write-ahead log are locked by one daemon; records are told apart by node id). Their
# defaults are per daemon (named after the config file, ns-HASH.conf); a template that sets
# one must make it per namespace with a placeholder that differs between namespaces.
STATE_KEYS = ("spool_dir", "wal_dir", "node_id")
_PER_NAMESPACE = ("@NETNS@", "@NETNS_ID@", "@PIDFILE@")


def shared_state(template_text: str) -> list[str]:
    """The template's lines that would give every namespace's daemon the same state directory
    or node id (``STATE_KEYS`` set to a value without a per-namespace placeholder), as
    ``line N: text``; --wrapper-check reports them."""
    out = []
    for n, raw in enumerate(template_text.split("\n"), 1):
        line = raw.strip(" \t\r")
        key, sep, value = line.partition("=")
        if not sep or line[:1] in "#;" or key.strip().lower() not in STATE_KEYS:
            continue
        value = value.strip(" \t\"'")
        if value and not any(p in value for p in _PER_NAMESPACE):
            out.append(f"line {n}: {line}")
    return out


def file_stem(name: str) -> str:
    """The base name of the wrapper's files for namespace ``name``: ``ns-`` and 32 hex digits.

    A hash rather than the name: whatever the name, the file names are short (a 255-byte name
    plus ``.conf`` would not be a valid file name) and cannot contain anything but hex digits.
    """
    import hashlib

    return "ns-" + hashlib.sha256(_raw(name)).hexdigest()[:32]


def render(template_text: str, name: str, s: Settings) -> str:
    """The daemon's config: ``template_text`` with the placeholders substituted, in one pass.

    ValueError if ``name`` is not safe or a value cannot be put into a config (the rundir is
    checked when the settings are read; this checks again).
    """
    import re

    problem = name_problem(name)
    if problem is not None:
        raise ValueError(f"unsafe namespace name {shown(name)}: {problem}")
    prefix, _, ident = name.partition("-")
    values = {
        "NETNS": name,
        "NETNS_PREFIX": prefix if ident else "",
        "NETNS_ID": ident if ident else name,
        "RUNDIR": s.rundir,
        "PIDFILE": os.path.join(s.rundir, file_stem(name) + ".pid"),
    }
    for v in values.values():
        check_config_value(v)
    return re.sub(r"@(NETNS|NETNS_PREFIX|NETNS_ID|RUNDIR|PIDFILE)@", lambda m: values[m.group(1)], template_text)
