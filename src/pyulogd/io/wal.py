"""The write-ahead log: every record read from the kernel (or any source) on disk before an
output can have made it durable, numbered for good, and replayed at start to each output
that had not committed it (issue 12).

What is logged. The decoded records (each source's values, slot 0 left out, trailer keys
in), in the one record serialization (``io/recordfmt.py``) with their sequence numbers, one
batch per source per loop round. Logging the raw datagrams instead would cost one copy less,
but replaying them needs every source to decode again exactly as it did (NFCT's flow table,
IPFIXIN's templates, NFLOG's sequence checks are state, not a function of the bytes and
``now``), and `bench/wal.py` found the encoding a small part of a record's cost.

When. A source appends each record it emits to its own list (:attr:`Source.wal_rows`, two
list appends per record: the only cost on the hot path); the daemon calls
:meth:`Journal.write_round` first thing after each round of ready sockets, before any output
flushes: one ``write()`` for the whole round (no fsync unless ``wal_fsync=round``), which
survives the death of the process. An output whose buffer fills within a round (64 KiB)
writes before the round's end: what it wrote is delivered, and the sequence numbers it
carries are never given out again (below), so that can duplicate nothing and lose nothing.
What a SIGKILL can still lose is what was read in the very round it struck, before that
round's write.

Sequence numbers. ``ctx.seq`` counts every emitted record; they are strictly increasing per
node across restarts, SIGKILL included: the state file holds a mark above every number
given out (reserved :data:`BLOCK` at a time, written before any number past the previous
mark is used), and a daemon starts above both that mark and the last number in the log.
A restart thus leaves a gap, never a repeat.

Cursors. Every output has a commit cursor: the highest sequence number below which every
record meant for it is durable (``Output.committed``: written by its flush for files,
committed or spooled for the SQL outputs). After every round the cursors and the outputs'
counters are written to the state file (one ``pwrite``, alternating between two CRC'd
slots so that a torn write leaves the previous one), and segments every cursor has passed
are deleted. At start each output gets again, in order and with their original numbers,
the records after its own cursor (``replayed``): delivery is at least once.

Layout of the directory (opened as in ``io/spool.py``: no link followed, locked)::

    LOCK                      flock: one daemon per directory
    state                     two slots of SLOT bytes: u32 length | u32 crc32 | u64 generation | JSON
    NNNNNNNNNNNNNNNNNNNN.wal  "PYULOGD-WAL 1\\n", then frames: u32 length | u32 crc32 | payload
                              payload: u16 length | source id (UTF-8) | a recordfmt batch with seqs

A torn or damaged frame ends its segment for the reader (counted in ``corrupt``); after a
restart appends always go to a new segment.
"""

from __future__ import annotations

import errno
import json
import os
import re
import struct
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pyulogd.core.errors import ConfigError
from pyulogd.core.options import Bool, Choice, Path, Size, Str
from pyulogd.core.plugin import Filter, Option, Sink, Source
from pyulogd.io.lockdir import lock_dir, open_file
from pyulogd.io.recordfmt import FormatError, decode_batch, encode_batch
from pyulogd.io.sink import SinkCounters

if TYPE_CHECKING:
    from pyulogd.core.context import Context, TimerHandle
    from pyulogd.core.stack import Stack

HEADER = b"PYULOGD-WAL 1\n"
_FRAME = struct.Struct("<II")
_SRC = struct.Struct("<H")
_SLOT_HEAD = struct.Struct("<IIQ")
_U32 = struct.Struct("<I")
_IOV_MAX = 1024  # pieces one writev() takes (Linux's IOV_MAX)
SLOT = 1 << 20  # bytes per state slot: JSON of every output's cursor and counters
_SEG = re.compile(r"^(\d{20})\.wal$")
_MAX_FRAME = 256 << 20
# Cursors and counters are saved at most this often (seconds): one pwrite per save. After a
# SIGKILL, what outputs committed since the last save is replayed again (duplicates only).
SAVE_EVERY = 0.05
# Sequence numbers reserved at a time (written to the state before any is given out).
BLOCK = 1 << 20
STATE_BASE = "/var/lib/pyulogd/wal"

WAL_OPTIONS = (
    Option("wal", Bool(), False, extra=True,
           help="write every record to the write-ahead log before the outputs get it"),
    Option("wal_dir", Path(), "", extra=True,
           help=f"where the write-ahead log lives (default {STATE_BASE}/<config file name>)"),
    Option("wal_fsync", Choice("never", "round"), "never", extra=True,
           help="never: survives the death of the process; round: fdatasync after each round (machine crashes)"),
    Option("wal_segment_size", Size(4096), "16M", extra=True, help="bytes per segment file"),
    Option("wal_max", Size(4096), "1G", extra=True,
           help="bytes of log at most; beyond, the oldest segment goes even if an output still needs it"),
    Option("node_id", Str(), "", extra=True,
           help="this daemon's name in a fleet (default: machine id and config file name)"),
)
WAL_KEYS = tuple(o.name for o in WAL_OPTIONS)


@dataclass
class WalSettings:
    enabled: bool = False
    path: str = ""
    fsync: bool = False
    segment_size: int = 16 << 20
    max_bytes: int = 1 << 30
    node_id: str = ""

    @classmethod
    def from_config(cls, values: Mapping[str, Any], config_path: str) -> WalSettings:
        stem = config_stem(config_path)
        return cls(
            enabled=bool(values["wal"]),
            path=values["wal_dir"] or os.path.join(STATE_BASE, stem),
            fsync=values["wal_fsync"] == "round",
            segment_size=values["wal_segment_size"],
            max_bytes=values["wal_max"],
            node_id=values["node_id"] or default_node_id(stem),
        )


def config_stem(config_path: str) -> str:
    """The daemon's name on its host (``Context.state_name``): its config file's name without
    the extension. It names the daemon's state directories, so that daemons with config files
    of their own (the netns wrapper's ``ns-HASH.conf``) never share one."""
    return os.path.splitext(os.path.basename(config_path))[0] or "pyulogd"


def default_node_id(stem: str) -> str:
    """Stable per machine and daemon instance: the machine id (else the host name) and the
    config file's name, which the netns wrapper makes one per namespace."""
    ident = ""
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            with open(path, encoding="ascii") as f:
                ident = f.read().strip()[:12]
        except (OSError, UnicodeDecodeError):
            continue
        if ident:
            break
    if not ident:
        import socket

        ident = socket.gethostname().split(".", 1)[0]
    return f"{ident}.{stem}"


class WalError(Exception):
    """The directory cannot be used (permissions, another daemon holds it)."""


@dataclass
class WalFrame:
    """One source's records of one round: ``rows`` (values of ``names``) numbered ``seqs``,
    or, for a source that logs what it read (``reads``), each read as ``(now, first sequence
    number, records, bytes)``, its records made again at replay (``Source.wal_decode``)."""

    source: str
    names: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    seqs: list[int]
    seg: int
    reads: list[tuple[float, int, int, bytes]] | None = None

    @property
    def last(self) -> int:
        """The highest sequence number in the frame (0: none)."""
        if self.reads is not None:
            return max((first + n - 1 for _t, first, n, _b in self.reads), default=0)
        return self.seqs[-1] if self.seqs else 0


_KIND_RECORDS = b"R"
_KIND_READS = b"D"
_READ = struct.Struct("<dQII")


def encode_frame(source: str, names: Sequence[str], rows: Sequence[Sequence[Any]], seqs: Sequence[int]) -> bytes:
    """A frame of records (recordfmt, with their sequence numbers)."""
    sid = source.encode("utf-8", "surrogatepass")
    payload = b"".join((_KIND_RECORDS, _SRC.pack(len(sid)), sid, encode_batch(names, rows, seqs)))
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def encode_reads(source: str, reads: Sequence[tuple[float, int, int, bytes]]) -> bytes:
    """A frame of what a source read: per read ``now``, the first sequence number, how many
    records it made and its bytes."""
    return b"".join(reads_parts(source, reads))


def reads_parts(source: str, reads: Sequence[tuple[float, int, int, bytes]]) -> list[bytes]:
    """:func:`encode_reads` as the pieces ``os.writev`` takes: the bytes read are not copied."""
    sid = source.encode("utf-8", "surrogatepass")
    pack = _READ.pack
    parts = [b"", _KIND_READS + _SRC.pack(len(sid)) + sid + _U32.pack(len(reads))]
    crc = zlib.crc32(parts[1])
    size = len(parts[1])
    crc32 = zlib.crc32
    for now, first, n, data in reads:
        head = pack(now, first, n, len(data))
        crc = crc32(data, crc32(head, crc))
        size += len(head) + len(data)
        parts.append(head)
        parts.append(data)
    parts[0] = _FRAME.pack(size, crc)
    return parts


def _decode_reads(body: memoryview) -> list[tuple[float, int, int, bytes]]:
    if len(body) < _U32.size:
        raise FormatError("cut short")
    (count,) = _U32.unpack_from(body, 0)
    off = _U32.size
    out: list[tuple[float, int, int, bytes]] = []
    for _ in range(count):
        if off + _READ.size > len(body):
            raise FormatError("cut short")
        now, first, n, size = _READ.unpack_from(body, off)
        off += _READ.size
        if off + size > len(body):
            raise FormatError("cut short")
        out.append((now, first, n, bytes(body[off : off + size])))
        off += size
    if off != len(body):
        raise FormatError("trailing bytes")
    return out


def decode_frames(data: bytes, seg: int = 0) -> tuple[list[WalFrame], int]:
    """The frames of one segment's bytes (after its header), and how many frames were
    damaged: a torn or damaged frame ends the segment (nothing after it can be trusted to
    start where it seems to)."""
    frames: list[WalFrame] = []
    off, end = 0, len(data)
    while off < end:
        if end - off < _FRAME.size:
            return frames, 1
        length, crc = _FRAME.unpack_from(data, off)
        body = data[off + _FRAME.size : off + _FRAME.size + length]
        if length > _MAX_FRAME or len(body) != length or zlib.crc32(body) != crc or length < 1 + _SRC.size:
            return frames, 1
        kind = body[:1]
        (n,) = _SRC.unpack_from(body, 1)
        at = 1 + _SRC.size + n
        try:
            source = body[1 + _SRC.size : at].decode("utf-8", "surrogatepass")
            if kind == _KIND_READS:
                frames.append(WalFrame(source, (), [], [], seg, _decode_reads(memoryview(body)[at:])))
            elif kind == _KIND_RECORDS:
                batch = decode_batch(memoryview(body)[at:])
                if batch.seqs is None:
                    return frames, 1
                frames.append(WalFrame(source, batch.names, batch.rows, batch.seqs, seg))
            else:
                return frames, 1
        except (UnicodeDecodeError, FormatError):
            return frames, 1
        off += _FRAME.size + length
    return frames, 0


class WalFile:
    """The directory: segments appended with one ``write()`` per round, the state slots."""

    def __init__(self, path: str, segment_size: int, max_bytes: int, fsync: bool) -> None:
        self.path = path
        self.segment_size = segment_size
        self.max_bytes = max_bytes
        self.fsync = fsync
        self._dir_fd = self._lock_fd = self._state_fd = self._tail_fd = -1
        self.segments: dict[int, int] = {}  # number -> size, oldest first
        self.last_seq: dict[int, int] = {}  # number -> highest sequence number in it
        self.corrupt = 0
        self.discarded = 0  # records in segments dropped for wal_max while an output needed them
        self._gen = 0
        self.bytes = 0

    def open(self) -> dict[str, Any]:
        """Lock the directory; return the state the last run saved. The segments it left are
        :attr:`old` (read one at a time by :meth:`old_frames`, so a log of any size replays in
        the memory of one segment)."""
        self._dir_fd, self._lock_fd = lock_dir(self.path, "write-ahead log directory", WalError)
        try:
            self._state_fd = self._open("state", os.O_RDWR | os.O_CREAT)
            state = self._load_state()
            self._scan()
        except OSError as e:
            self.close()
            raise WalError(f"cannot read write-ahead log {self.path!r}: {e.strerror}") from e
        return state

    def _open(self, name: str, flags: int) -> int:
        return open_file(self._dir_fd, self.path, name, flags)

    def _scan(self) -> None:
        """Every segment the last run left: its size and highest sequence number."""
        self.old: list[int] = []
        for name in sorted(os.listdir(self._dir_fd)):
            m = _SEG.match(name)
            if m is None:
                continue
            num = int(m[1])
            got = self._read(num, name)
            if got is None:
                continue
            self.old.append(num)
            self.last_seq[num] = max((f.last for f in got), default=0)

    def _read(self, num: int, name: str | None = None, count: bool = True) -> list[WalFrame] | None:
        try:
            fd = self._open(name or f"{num:020d}.wal", os.O_RDONLY)
        except OSError:
            if count:
                self.corrupt += 1
            return None
        try:
            size = os.fstat(fd).st_size
            data = os.pread(fd, size, 0)
        finally:
            os.close(fd)
        if count:
            self.segments[num] = size
            self.bytes += size
        if not data.startswith(HEADER):
            if count:
                self.corrupt += 1
            return []
        got, bad = decode_frames(data[len(HEADER) :], num)
        if count:
            self.corrupt += bad
        return got

    def old_frames(self) -> Iterator[WalFrame]:
        """The frames of the segments the last run left, oldest first, a segment at a time."""
        for num in self.old:
            yield from self._read(num, count=False) or []

    def _load_state(self) -> dict[str, Any]:
        best: tuple[int, dict[str, Any]] = (0, {})
        for slot in (0, 1):
            head = os.pread(self._state_fd, _SLOT_HEAD.size, slot * SLOT)
            if len(head) < _SLOT_HEAD.size:
                continue
            length, crc, gen = _SLOT_HEAD.unpack(head)
            if length > SLOT - _SLOT_HEAD.size:
                continue
            body = os.pread(self._state_fd, length, slot * SLOT + _SLOT_HEAD.size)
            if len(body) != length or zlib.crc32(body) != crc:
                continue
            try:
                state = json.loads(body)
            except ValueError:
                continue
            if gen > best[0] and isinstance(state, dict):
                best = (gen, state)
        self._gen = best[0]
        return best[1]

    def save_state(self, state: Mapping[str, Any]) -> None:
        body = json.dumps(state, separators=(",", ":")).encode()
        if len(body) > SLOT - _SLOT_HEAD.size:
            raise OSError(errno.EFBIG, "write-ahead log state too big")
        self._gen += 1
        os.pwrite(self._state_fd, _SLOT_HEAD.pack(len(body), zlib.crc32(body), self._gen) + body,
                  (self._gen % 2) * SLOT)
        if self.fsync:
            os.fdatasync(self._state_fd)

    def append(self, data: bytes | list[bytes], last_seq: int) -> None:
        """One round's frames, with one ``write()`` (``writev``, given pieces); OSError when
        the disk refuses it."""
        if self._tail_fd < 0 or self.segments[max(self.segments)] >= self.segment_size:
            self._new_segment()
        num = max(self.segments)
        try:
            if isinstance(data, list):
                size = sum(map(len, data))
                done = os.writev(self._tail_fd, data)
                data = b"" if done == size else b"".join(data)[done:]  # a short write: the rest
            else:
                size = len(data)
            view = memoryview(data)
            while view:
                view = view[os.write(self._tail_fd, view) :]
        except OSError:
            # A full disk took part of the frames: cut it off again, or every later frame of
            # the segment would sit behind a torn one that ends the reader.
            try:
                os.ftruncate(self._tail_fd, self.segments[num])
            except OSError:
                self._tail_fd_close()  # the next append starts a new segment
            raise
        if self.fsync:
            os.fdatasync(self._tail_fd)
        self.segments[num] += size
        self.bytes += size
        self.last_seq[num] = last_seq

    def _tail_fd_close(self) -> None:
        if self._tail_fd >= 0:
            os.close(self._tail_fd)
            self._tail_fd = -1

    def _new_segment(self) -> None:
        if self._tail_fd >= 0:
            os.close(self._tail_fd)
            self._tail_fd = -1
        num = max(self.segments, default=0) + 1
        fd = self._open(f"{num:020d}.wal", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND)
        os.write(fd, HEADER)
        self._tail_fd = fd
        self.segments[num] = len(HEADER)
        self.last_seq[num] = 0
        self.bytes += len(HEADER)

    def trim(self, cursor: int) -> None:
        """Delete the segments whose every record is at or below ``cursor`` (never the one
        being appended to), and the oldest beyond ``max_bytes`` whatever they hold."""
        tail = max(self.segments) if self._tail_fd >= 0 else None
        for num in sorted(self.segments):
            if num == tail:
                break
            if self.last_seq.get(num, 0) <= cursor:
                self._unlink(num)
            elif self.bytes > self.max_bytes:
                self.discarded += 1
                self._unlink(num)
            else:
                break

    def _unlink(self, num: int) -> None:
        try:
            os.unlink(f"{num:020d}.wal", dir_fd=self._dir_fd)
        except FileNotFoundError:
            pass
        self.bytes -= self.segments.pop(num, 0)
        self.last_seq.pop(num, None)

    def close(self) -> None:
        for fd in (self._tail_fd, self._state_fd, self._lock_fd, self._dir_fd):
            if fd >= 0:
                os.close(fd)
        self._tail_fd = self._state_fd = self._lock_fd = self._dir_fd = -1


def read_dir(path: str) -> Iterator[WalFrame]:
    """Every frame in the segments of ``path``, oldest first (tools and tests; no lock)."""
    for name in sorted(os.listdir(path)):
        m = _SEG.match(name)
        if m is None:
            continue
        with open(os.path.join(path, name), "rb") as f:
            data = f.read()
        if data.startswith(HEADER):
            yield from decode_frames(data[len(HEADER) :], int(m[1]))[0]


@dataclass
class _Logged:
    source: Source
    names: tuple[str, ...]
    width: int  # 1 + len(names): the slice of a record that is logged


@dataclass
class Journal:
    """The daemon's side of the log: sources' records out, outputs' cursors in."""

    ctx: Context
    settings: WalSettings
    file: WalFile | None = None
    logged: list[_Logged] = field(default_factory=list)
    outputs: list[Sink] = field(default_factory=list)
    cursors: dict[str, int] = field(default_factory=dict)
    reserved: int = 0
    failed_writes: int = 0  # rounds the disk refused (records then not in the log)
    records: int = 0  # records written to the log by this run
    unknown: int = 0  # logged records whose source is not in this config
    _state: dict[str, Any] = field(default_factory=dict)
    _saved_seq: int = -1
    _retry_reserve: int = 0
    _dirty: bool = False
    _committers: list[tuple[str, Any]] = field(default_factory=list)
    # Per output: the filters before it that hold records back (Filter.held_since).
    _holders: dict[str, list[Filter]] = field(default_factory=dict)
    _burst: int = 0
    _next_save: float = float("-inf")
    _timer: TimerHandle | None = None

    def open(self) -> None:
        s = self.settings
        self.file = WalFile(s.path, s.segment_size, s.max_bytes, s.fsync)
        try:
            self._state = self.file.open()
        except WalError as e:
            raise ConfigError(str(e)) from None
        last = max(self.file.last_seq.values(), default=0)
        start = max(last, int(self._state.get("reserved", 0)))
        self.ctx.seq = start
        self.cursors = {k: int(v) for k, v in self._state.get("cursors", {}).items()}
        self._reserve(at_start=True)

    def _reserve(self, at_start: bool = False) -> None:
        """Move the mark a block ahead, saved before any number past the old one is used. At
        start a mark that cannot be saved refuses the start; later the daemon goes on (a full
        disk must not stop the logging), says so, and numbers stay unique unless it is
        killed before a save works again."""
        old, self.reserved = self.reserved, self.ctx.seq + BLOCK
        if not self._save(force=at_start):
            self.reserved = old  # what the file says
            self.ctx.stats.incr("wal.reserve_failed")
    def register_sources(self, sources: Sequence[Source]) -> None:
        """Log what these sources emit from now on, and what the sources they make at run time
        emit (:meth:`adopt`)."""
        for src in sources:
            self.adopt(src)
            src.wal_adopt = self.adopt
            src.wal_let_go = self.let_go

    def adopt(self, src: Source) -> None:
        """Log what ``src`` emits from now on: what it read, for a source that can decode it
        again (``wal_decode``), else its records. Numbered in the one sequence of the daemon
        and logged under ``src.id``, as a source of the configuration is: a netns= input's
        child for a namespace (``log1.qrouter-...``) is replayed at start through
        ``wal_source_for`` of the input that made it."""
        names = tuple(k.name for k in src.output_keys)
        if type(src).wal_decode is not Source.wal_decode:
            src.wal_raw = []
        else:
            src.wal_rows = []
            src.wal_seqs = []
        src.wal_write = self.write_round
        self.logged.append(_Logged(src, names, 1 + len(names)))

    def let_go(self, src: Source) -> None:
        """``src`` stopped (its namespace went away): what it emitted is written now, before it
        leaves the log's list (the outputs have those records and flush them after this round)."""
        if src.wal_rows or src.wal_raw:
            self.write_round()
        self.logged = [lg for lg in self.logged if lg.source is not src]
        src.wal_rows = src.wal_raw = None
        src.wal_write = None

    def register_outputs(self, outputs: Sequence[Sink]) -> None:
        """Keep these outputs' cursors; restore the counters the last run saved.

        An output the last run did not have starts at the current sequence number: the logged
        records were never meant for it. One the configuration no longer has is forgotten (its
        cursor would hold every segment back for good)."""
        saved = self._state.get("counters", {})
        old = self.cursors
        self.cursors = {}
        for out in outputs:
            self.outputs.append(out)
            committed = getattr(out, "committed", None)
            self._committers.append((out.id, committed if callable(committed) else None))
            c = _counters(out)
            if c is not None and out.id in saved:
                c.restore(saved[out.id])
            self.cursors[out.id] = old.get(out.id, self.ctx.seq)

    def register_stacks(self, stacks: Sequence[Stack]) -> None:
        """Note the filters that hold records back (``Filter.held_since``, RATELIMIT's window)
        before each stack's output: that output's cursor stays below the oldest record they
        hold, whose account (a summary) has not reached it yet."""
        for stack in stacks:
            held = [inst for inst in stack.instances
                    if isinstance(inst, Filter) and type(inst).held_since is not Filter.held_since]  # fmt: skip
            if held:
                self._holders.setdefault(stack.sink.id, []).extend(held)

    # -- each round
    def write_round(self) -> None:
        """Every record emitted since the last round, one ``write()``; before outputs flush."""
        parts: list[bytes] = []
        last = 0
        n = 0
        for lg in self.logged:
            raw = lg.source.wal_raw
            if raw:
                parts.extend(reads_parts(lg.source.id, raw))
                n += sum(r[2] for r in raw)
                last = max(last, raw[-1][1] + raw[-1][2] - 1)
                raw.clear()
                continue
            rows = lg.source.wal_rows
            if not rows:
                continue
            seqs = lg.source.wal_seqs
            w = lg.width
            try:
                parts.append(encode_frame(lg.source.id, lg.names, [r[1:w] for r in rows], seqs))
            except (TypeError, ValueError) as e:
                self._failed(len(rows), f"a record cannot be logged: {e}")
            n += len(rows)
            last = max(last, seqs[-1])
            rows.clear()
            seqs.clear()
        if parts and self.file is not None:
            try:
                self.file.append(parts if len(parts) <= _IOV_MAX else b"".join(parts), last)
                self.records += n
            except OSError as e:
                self._failed(n, e.strerror or str(e))
            else:
                if self._burst:
                    self.ctx.log.notice(f"write-ahead log: writing works again ({self._burst} failed round(s))")
                    self._burst = 0
        if self.ctx.seq >= self.reserved - BLOCK // 2 and self.ctx.seq >= self._retry_reserve:
            self._reserve()
            if self.ctx.seq >= self.reserved - BLOCK // 2:  # not saved: not before 1000 more
                self._retry_reserve = self.ctx.seq + 1000

    def _failed(self, n: int, why: str) -> None:
        self.failed_writes += 1
        self.ctx.stats.incr("wal.records_unlogged", n)
        if not self._burst:
            self.ctx.log.error(f"write-ahead log: cannot write {n} record(s): {why}")
        self._burst += 1

    def after_flush(self) -> None:
        """Every output has flushed: move the cursors; save them with the counters (at most
        every :data:`SAVE_EVERY` seconds) and trim the segments the saved cursors passed."""
        seq = self.ctx.seq
        cursors = self.cursors
        changed = False
        holders = self._holders
        for oid, committed in self._committers:
            cur = seq if committed is None else committed(seq)
            if oid in holders:
                for f in holders[oid]:
                    first = f.held_since()
                    if first and first <= cur:
                        cur = first - 1
            if cursors[oid] != cur:
                cursors[oid] = cur
                changed = True
        if not changed and seq == self._saved_seq:
            return
        self._saved_seq = seq
        self._dirty = True
        self._maybe_save()

    def _maybe_save(self) -> None:
        if not self._dirty:
            return
        cursors = self.cursors
        seq = self.ctx.seq
        now = self.ctx.clock.monotonic()
        if now < self._next_save:
            if self._timer is None:  # nothing may come to save it later: a timer does
                self._timer = self.ctx.loop.call_later(self._next_save - now, self._deferred)
            return
        self._next_save = now + SAVE_EVERY
        if self._save():
            self._dirty = False
            if self.file is not None:
                # Only what the saved cursors passed: after a crash, those are what is read.
                self.file.trim(min(cursors.values(), default=seq))

    def _deferred(self) -> None:
        self._timer = None
        self.after_flush()
        self._maybe_save()

    def _save(self, force: bool = False) -> bool:
        if self.file is None:
            return False
        state = {
            "node_id": self.settings.node_id,
            "reserved": self.reserved,
            "seq": self.ctx.seq,
            "cursors": self.cursors,
            "counters": {o.id: c.state() for o in self.outputs if (c := _counters(o)) is not None},
        }
        try:
            self.file.save_state(state)
        except OSError as e:
            if force:
                raise ConfigError(f"write-ahead log: cannot save its state: {e.strerror}") from None
            self._failed(0, f"saving the cursors: {e.strerror}")
            return False
        return True

    # -- start
    def replay(self) -> dict[str, int]:
        """Hand each output the logged records after its cursor, with their own numbers;
        returns how many each output got (also counted in its ``replayed``)."""
        by_id: dict[str, _Logged | None] = {lg.source.id: lg for lg in self.logged}
        got: dict[str, int] = {}
        ctx = self.ctx
        start = ctx.seq
        saved = {lg.source.id: (lg.source.wal_rows, lg.source.wal_raw) for lg in self.logged}
        # An output that holds records after its flush (the SQL writer, the network senders)
        # marks each with its last ``committed``: start them at their own cursor, so that what
        # they hold from here on (the records replayed now come after it) keeps the cursor
        # there, not at 0 (which would replay the whole log again after the next crash).
        for oid, committed in self._committers:
            if committed is not None:
                committed(self.cursors[oid])
        for each in self.logged:
            each.source.wal_rows = each.source.wal_raw = None  # replayed records are in the log already
        try:
            for frame in self.file.old_frames() if self.file is not None else ():
                if frame.source not in by_id:
                    by_id[frame.source] = self._maker_of(frame.source)
                found = by_id[frame.source]
                if found is None:
                    self.unknown += len(frame.rows) if frame.reads is None else sum(r[2] for r in frame.reads)
                    continue
                src = found.source
                if frame.reads is not None:
                    self._replay_reads(src, frame.reads, got)
                    continue
                if found.names != frame.names:
                    self.unknown += len(frame.rows)
                    continue
                for i, stack in enumerate(src.stacks):
                    self._replay_stack(src, i, stack, frame.seqs, [[None, *row] for row in frame.rows], got, True)
        finally:
            ctx.seq = start
            for each in self.logged:
                each.source.wal_rows, each.source.wal_raw = saved[each.source.id]
        for out in self.outputs:
            c = _counters(out)
            if c is not None and got.get(out.id):
                c.replayed += got[out.id]
        if self.unknown:
            ctx.log.notice(f"write-ahead log: {self.unknown} record(s) of sources not in this configuration skipped")
            ctx.stats.incr("wal.replay_unknown", self.unknown)
        for oid, n in got.items():
            ctx.log.notice(f"write-ahead log: replayed {n} record(s) to '{oid}' (after sequence {self.cursors[oid]})")
        return got

    def _maker_of(self, source_id: str) -> _Logged | None:
        """A source made at run time by a source of the configuration (a namespace's input),
        not running now: the one its maker gives to replay what it logged, or None."""
        for lg in list(self.logged):
            src = lg.source.wal_source_for(source_id)
            if src is not None:
                names = tuple(k.name for k in src.output_keys)
                return _Logged(src, names, 1 + len(names))
        return None

    def _replay_reads(self, src: Source, reads: list[tuple[float, int, int, bytes]], got: dict[str, int]) -> None:
        for now, first, n, data in reads:
            try:
                recs = src.wal_decode(data, now)
            except Exception:  # a decoder must not fail on what it decoded before; be sure
                recs = None
            if recs is None or len(recs) != n:
                self.unknown += n
                continue
            seqs = list(range(first, first + n))
            for i, stack in enumerate(src.stacks):
                # Each stack gets its own lists (the stacks append their slots to them).
                self._replay_stack(src, i, stack, seqs, recs if i == len(src.stacks) - 1 else
                                   [list(r) for r in recs], got, False)

    def _replay_stack(self, src: Source, i: int, stack: Any, seqs: list[int], recs: list[list[Any]],
                      got: dict[str, int], with_trailer: bool) -> None:
        """The records after the cursor of ``stack``'s output through ``stack``, numbered."""
        sink = stack.sink
        cursor = self.cursors.get(sink.id, 0)
        if with_trailer:  # the trailer keys' values were logged with the record
            rest = stack.tail[src.trailer_keys :]
        else:
            rest = stack.tail if src.tails is None else src.tails[i]
        run = stack.run
        ctx = self.ctx
        n = 0
        for seq, rec in zip(seqs, recs, strict=True):
            if seq <= cursor:
                continue
            ctx.seq = seq
            rec = rec + rest if with_trailer else rec
            if not with_trailer:
                rec.extend(rest)
            run(rec)
            n += 1
        if n:
            got[sink.id] = got.get(sink.id, 0) + n

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.file is not None:
            self.write_round()
            self._next_save = float("-inf")
            self.after_flush()
            self._maybe_save()
            self.file.close()
            self.file = None

    def snapshot(self) -> dict[str, int]:
        out = {"wal.records": self.records, "wal.failed_writes": self.failed_writes, "wal.seq": self.ctx.seq}
        if self.file is not None:
            out.update({"wal.bytes": self.file.bytes, "wal.segments": len(self.file.segments),
                        "wal.corrupt": self.file.corrupt, "wal.discarded_segments": self.file.discarded})
        for oid, cur in self.cursors.items():
            out[f"wal.cursor.{oid}"] = cur
        return out


def _counters(out: Sink) -> SinkCounters | None:
    c = getattr(out, "counters", None)
    return c if isinstance(c, SinkCounters) else None


def read_state(path: str) -> dict[str, Any]:
    """The state the daemon last saved in ``path`` (tools and tests; no lock)."""
    w = WalFile(path, 1 << 20, 1 << 30, False)
    fd = os.open(os.path.join(path, "state"), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        w._state_fd = fd
        return w._load_state()
    finally:
        os.close(fd)
