"""The ulogd.conf grammar (ulogd2 ``conffile.c``), read once into sections of (key, value, line).

Lexical rules kept from ulogd2: a line is a comment only if its first character is ``#``;
a section header is a line whose first word starts with ``[`` (here it must be ``[name]``,
blanks allowed inside the brackets, a ``#`` comment after them); inside a section the first
word is the key and the second the value, separated by blanks and/or ``=``; a word that
starts with ``"`` runs to the next ``"``; anything after the second word is ignored.
Differences, on purpose: no 255-byte line limit, the last line need not end in a newline,
(as in ulogd2 2.0.9) unknown keys and bad integers are errors, reported with file and
line, and so is a file that is not text (control characters, NUL, bytes that are not
UTF-8 outside comment lines).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pyulogd.core.errors import ConfigError
from pyulogd.core.escape import escape_text
from pyulogd.core.options import parse_int as parse_int  # ulogd's integers; re-exported
from pyulogd.core.plugin import Option

_DELIMS = " \t\r\n="
# A section header: one word between brackets, blanks allowed around it, then at most a comment.
# ulogd2 only looks at the first word and so also takes '[global' or '[a b]' (as 'a'); those
# are typos, refused here rather than read as something the writer did not mean.
_EMPTY_HEADER = re.compile(r"\[[ \t]*\]?(?:[ \t]*#.*)?\Z")
_HEADER = re.compile(r"\[[ \t]*([^\s\[\]]+)[ \t]*\](?:[ \t]*#.*)?\Z")


@dataclass
class Entry:
    key: str
    value: str | None  # None: the key had no value (malformed directive)
    line: int


@dataclass
class Section:
    name: str
    line: int
    entries: list[Entry] = field(default_factory=list)


@dataclass
class ConfigFile:
    path: str
    sections: dict[str, Section] = field(default_factory=dict)
    # Sections that appear more than once: the first wins, as in ulogd; kept for warnings.
    duplicates: list[Section] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def section(self, name: str) -> Section | None:
        return self.sections.get(name)


def _words(line: str, delims: str) -> list[str | None]:
    """Split a line into at most two words with ulogd's quoting rule.

    An unterminated quoted word becomes ``None`` (ulogd treats it as a missing value).
    """
    words: list[str | None] = []
    i, n = 0, len(line)
    while i < n and len(words) < 2:
        while i < n and line[i] in delims:
            i += 1
        if i >= n:
            break
        if line[i] == '"':
            j = line.find('"', i + 1)
            if j < 0:
                words.append(None)
                break
            words.append(line[i + 1 : j])
            i = j + 1
        else:
            j = i
            while j < n and line[j] not in delims:
                j += 1
            words.append(line[i:j])
            i = j
    return words


# Not text: control characters (except TAB, and CR right before the newline), a byte order
# mark, and (outside comment lines, which nothing reads) bytes that are not UTF-8.
_JUNK_CLASS = "\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\ufeff"
_JUNK = re.compile(f"[{_JUNK_CLASS}\udc80-\udcff]")
_JUNK_IN_COMMENT = re.compile(f"[{_JUNK_CLASS}]")


def _check_text(text: str, path: str) -> None:
    """Refuse a config that is not text, naming file, line and the character (escaped)."""
    for lineno, raw in enumerate(text.split("\n"), start=1):
        line = raw[:-1] if raw.endswith("\r") else raw
        bad = (_JUNK_IN_COMMENT if line[:1] == "#" else _JUNK).search(line)
        if bad is not None:
            raise ConfigError(
                f"not text: {escape_text(bad.group())} at column {bad.start() + 1} (a config file is UTF-8 "
                "text without control characters)",
                path,
                lineno,
            )


def parse_text(text: str, path: str = "<config>") -> ConfigFile:
    _check_text(text, path)
    cfg = ConfigFile(path)
    current: Section | None = None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if not raw or raw[0] == "#":
            continue
        stripped = raw.strip()
        if not stripped:
            continue
        if stripped[0] == "[":
            m = _HEADER.match(stripped)
            if m is None:
                if _EMPTY_HEADER.match(stripped):
                    raise ConfigError("empty section name", path, lineno)
                raise ConfigError(f"malformed section header '{stripped}': write '[name]' (one word "
                                  "between the brackets, nothing after them but a # comment)", path, lineno)
            name = m.group(1)
            current = Section(name, lineno)
            if name in cfg.sections:
                cfg.duplicates.append(current)
            else:
                cfg.sections[name] = current
            continue
        words = _words(raw, _DELIMS)
        if not words or words[0] is None:
            continue
        if current is None:
            # ulogd2 never reads such a line (it only searches for sections), so neither do
            # we; a notice says so instead of refusing a config ulogd2 runs.
            cfg.warnings.append(f"{path}:{lineno}: ignoring '{words[0]}' outside of any [section]")
            continue
        value = words[1] if len(words) > 1 else None
        current.entries.append(Entry(words[0], value, lineno))
    return cfg


def parse_file(path: str) -> ConfigFile:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read config file: {e.strerror}", path) from e
    return parse_text(text, path)


def option_values(
    options: tuple[Option, ...],
    section: Section | None,
    cfg: ConfigFile,
    instance_id: str,
    plugin_name: str,
    warn: Any = None,
) -> dict[str, Any]:
    """Validate a plugin's section against its declared options; return name -> typed value
    (each option's kind parses its value, see core/options.py; defaults for the rest)."""
    by_name = {o.name: o for o in options}
    values: dict[str, Any] = {o.name: o.default for o in options}
    seen: dict[str, int] = {}
    if section is not None:
        for e in section.entries:
            opt = by_name.get(e.key)
            if opt is None:
                valid = ", ".join(sorted(by_name)) or "none"
                raise ConfigError(
                    f"unknown option '{e.key}' for {plugin_name} instance '{instance_id}' "
                    f"(valid options: {valid})",
                    cfg.path,
                    e.line,
                )
            if e.key in seen:
                raise ConfigError(
                    f"option '{e.key}' occurred more than once (first on line {seen[e.key]})",
                    cfg.path,
                    e.line,
                )
            seen[e.key] = e.line
            if e.value is None:
                if warn is not None:
                    warn(f"{cfg.path}:{e.line}: ignoring malformed config directive '{e.key}' (no value)")
                continue
            try:
                v = opt.parse(e.value)
            except ValueError as err:
                raise ConfigError(f"option '{e.key}' of '{instance_id}': {err}", cfg.path, e.line) from None
            values[e.key] = v
    for opt in options:
        if opt.required and opt.name not in seen:
            where = section.line if section is not None else None
            raise ConfigError(
                f"{plugin_name} instance '{instance_id}' needs option '{opt.name}'"
                + ("" if section is not None else f" (no [{instance_id}] section)"),
                cfg.path,
                where,
            )
    return values
