"""Tamper evidence: every record chained to the one before it with a keyed hash (HMAC).

``Chain(key).link(record) -> tag``: ``tag_n = HMAC-SHA256(key, tag_{n-1} ‖ seq_n ‖ record_n)``
(``seq_n`` as 8 bytes, big-endian; the first record of a chain has ``seq`` 1 and an empty
``tag_0``), cut to 128 bits, written as 22 characters of URL-safe base64. Whoever edits,
deletes, inserts or reorders records without the key cannot make the tags agree again, and
``pyulogd-audit verify`` (audit/verify.py) says where they stop agreeing: a record whose tag
does not match its predecessor's was changed; a gap in ``seq`` is records deleted; a
``seq`` lower than one already seen is a record moved. Cutting records off the *end* leaves
no trace in what remains: the daemon logs the last ``seq`` and tag of each chain when it
stops and on SIGHUP (``chain ...: last seq N tag T``), to compare with.

Applied to whole lines (LOGEMU, GPRINT, JSON in file mode, ECS: :class:`LineChain`, sealed
by the file sink, ``io/filesink.py``, when a batch is written, so the fused stack paths are sealed too)
and to SQL rows (the AUDITDB output: ``seq`` and ``chain`` columns). A line carries its seal
at its end, where nothing the record contains can imitate it:

* text lines: ``<line> chain=<seq>:<tag>`` (LOGEMU, GPRINT, NACCT, OPRINT)
* JSON lines: ``{..., "pyulogd.chain": "<seq>:<tag>"}`` (ECS: ``,"pyulogd.chain":"..."``)
* XML lines: ``<flow>...</flow><?pyulogd-chain <seq>:<tag>?>`` (a processing instruction, so
  the file stays well-formed XML; the header and the closing tag are records too)

and the HMAC covers the line as it was before the seal (without its newline). A record of
several lines (OPRINT's ``===>PACKET BOUNDARY`` and its ``name=value`` lines, XML's header) is
sealed on its last line as ``<seq>/<lines>:<tag>``, the HMAC covering all its lines.

PCAP's records are binary: their seals go to a file beside it, ``<file>.chain``, one line per
record in the same order (``record chain=<seq>:<tag>``); verify (``pcap_records``) matches
them up again. The SQL outputs with ulogd's tables (PGSQL, MYSQL, SQLITE3, DBI) keep ``seq``
and tag in two columns the user adds to the table (:data:`CHAIN_COLUMNS`, db/output.py),
the tag covering the other values in their canonical form (:func:`canon_bytes`). At start an
output resumes the chain from the last sealed line of its file, so a restart continues
it; a file that has none (new, or rotated away) starts a new chain, which verify reports.

The key comes from a file only root can read (``chain_key``), checked as every file the
daemon opens as root (core/safefile.py): no link followed, directories above it safe, a
regular file owned by root (or the daemon's user) with no access for group or others,
at least 16 bytes (a trailing newline is not part of the key).
"""

from __future__ import annotations

import base64
import errno
import hashlib
import hmac
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pyulogd.core import safefile
from pyulogd.core.errors import ConfigError
from pyulogd.core.options import Path

if TYPE_CHECKING:
    from pyulogd.core.context import Context
    from pyulogd.core.plugin import Option

TAG_BYTES = 16
TAG_CHARS = 22  # base64 of 16 bytes, without padding
MIN_KEY = 16
MAX_KEY = 4096
_TAG = r"[A-Za-z0-9_-]{22}"
# "<seq>:<tag>", or "<seq>/<lines>:<tag>" for a record of several lines (OPRINT, XML's header)
SEAL_TEXT = re.compile(rf" chain=(\d+)(?:/(\d+))?:({_TAG})$")
SEAL_JSON = re.compile(rf'(,\s?)?"pyulogd\.chain":\s?"(\d+):({_TAG})"\}}$')
# XML: a processing instruction, valid wherever the line ends (inside the root element and
# after it); not a comment, since a tag may hold "--"
SEAL_XML = re.compile(rf"<\?pyulogd-chain (\d+)(?:/(\d+))?:({_TAG})\?>$")


# The two columns a ulogd table gets for chaining (PGSQL, MYSQL, SQLITE3, DBI), and the key
# names the column mapping reads them as (db/columns.py: "_" stands for ".").
CHAIN_COLUMNS = ("pyulogd_seq", "pyulogd_chain")
CHAIN_KEYS = ("pyulogd.seq", "pyulogd.chain")


def row_bytes(values: Iterable[Any]) -> bytes:
    """The bytes a row's tag covers: each value typed and length-prefixed, so that no two
    different rows serialize alike (None, integers, text, bytes)."""
    out = bytearray()
    for v in values:
        if v is None:
            out += b"N"
        elif isinstance(v, bool):
            out += b"i1" if v else b"i0"
        elif isinstance(v, int):
            t = str(v).encode()
            out += b"i" + str(len(t)).encode() + b":" + t
        elif isinstance(v, str):
            t = v.encode("utf-8", "surrogateescape")
            out += b"s" + str(len(t)).encode() + b":" + t
        else:
            t = bytes(v)
            out += b"b" + str(len(t)).encode() + b":" + t
    return bytes(out)


def canon_bytes(values: Iterable[Any]) -> bytes:
    """The bytes a row of a ulogd table is chained by: as :func:`row_bytes`, but every value
    but NULL and bytes as its text, so that it reads back the same whatever the column made
    of it (ulogd's SQL outputs write a BOOL as '1' into a boolean or an integer column; a
    server gives back True, 1 or an address object)."""
    out: list[Any] = []
    for v in values:
        if v is None or isinstance(v, (bytes, bytearray, memoryview)):
            out.append(v)
        elif isinstance(v, bool):
            out.append("1" if v else "0")
        else:
            out.append(str(v))
    return row_bytes(out)


def tag_text(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest[:TAG_BYTES]).decode("ascii").rstrip("=")


def tag_bytes(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "==")


class Chain:
    """The running state of one chain: the last ``seq`` and tag."""

    def __init__(self, key: bytes, seq: int = 0, prev: str = "") -> None:
        if len(key) < MIN_KEY:
            raise ValueError(f"a chain key has at least {MIN_KEY} bytes")
        self._mac = hmac.new(key, digestmod=hashlib.sha256)
        self.seq = seq
        self.prev = prev  # the tag of record ``seq`` ("" before the first)

    def expected(self, prev: str, seq: int, record: bytes) -> str:
        """The tag record ``seq`` must carry after a record tagged ``prev`` (pure)."""
        mac = self._mac.copy()
        mac.update(tag_bytes(prev) if prev else b"")
        mac.update(seq.to_bytes(8, "big"))
        mac.update(record)
        return tag_text(mac.digest())

    def link(self, record: bytes) -> str:
        """The tag of the next record, which becomes ``seq`` (``self.seq`` afterwards)."""
        seq = self.seq + 1
        tag = self.expected(self.prev, seq, record)
        self.seq = seq
        self.prev = tag
        return tag


def read_key(path: str) -> bytes:
    """The key in ``path``, read by the rules in the module docstring; OSError (with the
    reason as ``strerror``) otherwise."""
    head, name = os.path.split(path)
    if not name:
        raise OSError(errno.EISDIR, "not a file name", path)
    dfd = safefile.open_dir(head or ".", None)
    try:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise safefile.UnsafePath(path, f"'{path}' is a symbolic link") from None
            raise
    finally:
        os.close(dfd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise safefile.UnsafePath(path, f"'{path}' is not a regular file")
        if st.st_uid not in (0, os.geteuid()):
            raise safefile.UnsafePath(path, f"'{path}' is owned by uid {st.st_uid}, not by root")
        if st.st_mode & 0o077:
            raise safefile.UnsafePath(path, f"'{path}' is readable or writable by others "
                                            f"(mode {stat.S_IMODE(st.st_mode):04o}; chmod 600 it)")
        data = os.read(fd, MAX_KEY + 2)
    finally:
        os.close(fd)
    key = data[:-1] if data.endswith(b"\n") else data
    if len(key) < MIN_KEY or len(key) > MAX_KEY:
        raise OSError(errno.EINVAL, f"the key must be {MIN_KEY} to {MAX_KEY} bytes long, not {len(key)}", path)
    return key


def chain_options() -> tuple[Option, ...]:
    """The option every output that can chain declares."""
    from pyulogd.core.plugin import Option

    return (
        Option("chain_key", Path(), "", extra=True,
               help="tamper evidence: HMAC-chain every record with the key in this root-only file "
                    "(pyulogd-audit verify checks it)"),
    )


def load_key(config: dict[str, Any], label: str) -> bytes | None:
    """The key of ``chain_key``, None when the option is not set; ConfigError naming the file."""
    path = config.get("chain_key") or ""
    if not path:
        return None
    try:
        return read_key(path)
    except OSError as e:
        raise ConfigError(f"{label}: chain_key '{path}': {e.strerror or e}") from None


@dataclass
class _Style:
    name: str

    def seal(self, line: str, text: str) -> str:
        if self.name == "text":
            return f"{line[:-1]} chain={text}\n"
        if self.name == "xml":
            return f"{line[:-1]}<?pyulogd-chain {text}?>\n"
        sep = ", " if self.name == "json" else ","
        body = line[:-2]
        if body == "{":
            return f'{{"pyulogd.chain":{" " if sep == ", " else ""}"{text}"}}\n'
        q = '": "' if sep == ", " else '":"'
        return f'{body}{sep}"pyulogd.chain{q}{text}"}}\n'


STYLES = ("text", "json", "compact", "xml")


class LineChain:
    """A :class:`Chain` over whole lines: seals each line of a batch, resumes from a file."""

    def __init__(self, key: bytes, style: str, label: str) -> None:
        if style not in STYLES:
            raise ValueError(style)
        self.chain = Chain(key)
        self.style = _Style(style)
        self.label = label

    def seal_all(self, lines: list[str]) -> list[str]:
        """Each line (ending in a newline) with its seal, in order."""
        link = self.chain.link
        seal = self.style.seal
        out = []
        for line in lines:
            if not line.endswith("\n"):
                line += "\n"
            tag = link(line[:-1].encode("utf-8", "surrogateescape"))
            n = line.count("\n")
            out.append(seal(line, f"{self.chain.seq}:{tag}" if n == 1 else f"{self.chain.seq}/{n}:{tag}"))
        return out

    def seal_bytes(self, records: list[bytes]) -> list[str]:
        """The seal lines of binary records (PCAP), for the file beside the records."""
        link = self.chain.link
        out = []
        for rec in records:
            tag = link(rec)
            out.append(f"record chain={self.chain.seq}:{tag}\n")
        return out

    def resume(self, path: str) -> bool:
        """Continue the chain of the last sealed line of ``path`` (opened by the safe-file
        rules, read only); False when there is none (the chain goes on, or starts anew)."""
        found = last_seal(path)
        if found is None:
            return False
        self.chain.seq, self.chain.prev = found
        return True

    def anchor(self) -> str:
        return f"chain {self.label}: last seq {self.chain.seq} tag {self.chain.prev or '-'}"


def unseal(line: str) -> tuple[str, int, str] | None:
    """(the line as it was hashed, seq, tag) of a sealed line (no newline), or None."""
    found = unseal_lines(line)
    return None if found is None else found[:3]


def unseal_lines(line: str) -> tuple[str, int, str, int] | None:
    """(the line as it was hashed, seq, tag, lines of the record) of a sealed line (no
    newline), or None. ``lines`` > 1: the record's earlier lines come before this one."""
    m = SEAL_JSON.search(line)
    if m is not None:
        return line[: m.start()] + "}", int(m.group(2)), m.group(3), 1
    m = SEAL_TEXT.search(line) or SEAL_XML.search(line)
    if m is not None:
        return line[: m.start()], int(m.group(1)), m.group(3), int(m.group(2) or 1)
    return None


def last_seal(path: str, window: int = 65536) -> tuple[int, str] | None:
    """(seq, tag) of the last sealed line of a file, None if it has none or cannot be read."""
    head, name = os.path.split(path)
    try:
        dfd = safefile.open_dir(head or ".", None)
    except OSError:
        return None
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
    except OSError:
        return None
    finally:
        os.close(dfd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
            return None
        start = max(0, st.st_size - window)
        data = os.pread(fd, st.st_size - start, start)
    except OSError:
        return None
    finally:
        os.close(fd)
    for raw in reversed(data.split(b"\n")):
        if not raw:
            continue
        found = unseal(raw.decode("utf-8", "surrogateescape"))
        return None if found is None else (found[1], found[2])
    return None


def line_chain(ctx: Context, config: dict[str, Any], style: str, label: str) -> LineChain | None:
    """The chain of a line output from its ``chain_key`` option, or None (option not set)."""
    key = load_key(config, label)
    return None if key is None else LineChain(key, style, label)
