"""The on-disk spool: records an output could not deliver yet, in order, across restarts.

Any output can keep records here while its destination is away: today the SQL outputs
(``db/writer.py``), whose rows wait here while the database is unavailable. A frame is one
batch of records in the daemon's one record serialization (``io/recordfmt.py``: key names,
rows, optional sequence numbers), so what is spooled can be read back by any output and by
tools, independently of the Python version that wrote it.

A directory of segment files ``NNNNNNNNNNNNNNNNNNNN.seg`` written in order. A segment is
a header and frames; a frame is ``<u32 length><u32 crc32>`` and a record batch. Frames are
appended whole with one ``write()``, so a SIGKILL leaves at most a torn last frame, which the
reader detects (length or CRC) and skips. After a restart appends always go to a new
segment, never after a possibly torn tail. A full disk writes what fits and then fails: the
part of the frame it wrote is cut off again (``core/append.py``), and a segment whose header
does not fit is removed, so an append that raised OSError left the spool as it was and the
next one, once there is room, is read back.

What has been delivered is recorded in ``ack`` (segment number and offset, one ``pwrite``
after each delivered frame); fully delivered segments are deleted. Delivery is at least
once: a kill between a delivery and its ack delivers that frame again.

Limits and losses are counted here: a frame that would pass ``max_bytes`` is refused
(:meth:`Spool.append` returns None and its records are added to ``refused``; the caller
counts them under its own name too), a damaged frame is skipped and counted in ``corrupt``
(frames: how many records a damaged frame held cannot be known). Segments of format 1 (the
``marshal`` frames of earlier development builds) are not read: they count as damaged.

Two threads may use it (``db/writer.py``): the spiller appends, the writer reads the head
and acknowledges; a lock keeps each operation whole. Reading the head while frames are
appended at the tail is safe: appends never touch what is before them.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import struct
import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pyulogd.core.append import AppendError, append
from pyulogd.io.lockdir import lock_dir, open_file
from pyulogd.io.recordfmt import FormatError, decode_batch, encode_batch

# Where outputs spool by default: SPOOL_BASE/<daemon>/<instance id> (default_dir).
SPOOL_BASE = "/var/spool/pyulogd"


def default_dir(state_name: str, instance_id: str) -> str:
    """An output's spool directory when ``spool_dir`` is empty: one per daemon and instance.
    ``state_name`` is the daemon's (``Context.state_name``, its config file's name): two
    daemons on one host, the netns wrapper's one per namespace, would otherwise share the
    directory of an instance id their configs have in common, and a spool holds one daemon
    (locked): the second could not spill. Without a name (outside a daemon),
    ``SPOOL_BASE/<instance id>``."""
    return os.path.join(SPOOL_BASE, state_name, instance_id)

_HEADER = b"PYULOGD-SPOOL 2\n"
_FRAME = struct.Struct("<II")
_ACK = struct.Struct("<QQ")
_SEG = re.compile(r"^(\d{20})\.seg$")
_MAX_FRAME = 256 << 20
_SEGMENT_SIZE = 32 << 20

Rows = list[tuple[Any, ...]]


class SpoolError(Exception):
    """The spool directory cannot be used (permissions, another daemon holds it)."""


@dataclass
class Frame:
    names: tuple[str, ...]
    rows: Rows
    seg: int
    end: int  # offset after the frame: the ack once its rows are written
    seqs: list[int] | None = None  # the records' sequence numbers, if they have them


class Spool:
    def __init__(self, path: str, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.lock = threading.Lock()
        self._dir_fd = -1
        self._lock_fd = -1
        self._ack_fd = -1
        self._segments: list[int] = []  # numbers, oldest first
        self._sizes: dict[int, int] = {}
        self._tail_fd = -1  # segment appended to, always the last of _segments when open
        self._read_seg = 1
        self._read_off = len(_HEADER)
        self._read_fd = -1
        self.bytes = 0  # unconsumed bytes on disk (approximate: whole segments)
        self.corrupt = 0  # frames skipped as torn or damaged
        self.refused = 0  # records not taken because the spool was full
        # The last segment there was at open: frames in later ones were written by this run,
        # so their sequence numbers are this run's (a commit cursor may trust them).
        self.before = 0

    # -- life
    def open(self) -> None:
        """Lock the directory and read where the last run stopped.

        Everything below is opened relative to one descriptor of the directory, and no
        file through a symbolic link: the directory is the -u user's, and whoever can write
        it must not be able to point the spool's writes at another file. (The daemon opens
        it as that user, docs/security.md; ``make_dir`` in core/safefile.py created it.)
        """
        self._dir_fd, self._lock_fd = lock_dir(self.path, "spool directory", SpoolError)
        try:
            self._ack_fd = self._open("ack", os.O_RDWR | os.O_CREAT)
        except OSError as e:
            self.close()
            raise SpoolError(f"cannot use spool directory {self.path!r}: {e.strerror}") from e
        data = os.pread(self._ack_fd, _ACK.size, 0)
        ack_seg, ack_off = _ACK.unpack(data) if len(data) == _ACK.size else (0, 0)
        for name in sorted(os.listdir(self._dir_fd)):
            m = _SEG.match(name)
            if m is None:
                continue
            num = int(m[1])
            if num < ack_seg:
                os.unlink(name, dir_fd=self._dir_fd)
                continue
            st = os.stat(name, dir_fd=self._dir_fd, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                continue  # not ours: a link or anything else is never read or written
            size = st.st_size
            self._segments.append(num)
            self._sizes[num] = size
            self.bytes += size
        self.before = max(self._segments, default=0)
        # Segment numbers only grow, also across restarts: the ack names the next one to read.
        self._read_seg, self._read_off = max(ack_seg, 1), len(_HEADER)
        if self._segments:
            self._read_seg = self._segments[0]
            if self._read_seg == ack_seg and ack_off:
                self._read_off = ack_off

    def _open(self, name: str, flags: int) -> int:
        """``name`` in the spool directory, never through a link, only a regular file."""
        return open_file(self._dir_fd, self.path, name, flags)

    def close(self) -> None:
        for fd in (self._tail_fd, self._read_fd, self._ack_fd, self._lock_fd, self._dir_fd):
            if fd >= 0:
                os.close(fd)
        self._tail_fd = self._read_fd = self._ack_fd = self._lock_fd = self._dir_fd = -1

    @property
    def empty(self) -> bool:
        return not self._segments

    # -- writing
    def append(
        self, names: Sequence[str], rows: Sequence[Sequence[Any]], seqs: Sequence[int] | None = None
    ) -> tuple[int, int] | None:
        """Add a frame of ``rows`` (values of ``names``) at the end; its (segment, end offset),
        or None when the spool is full. OSError when the disk refuses the write."""
        payload = encode_batch(names, rows, seqs)
        frame = _FRAME.pack(len(payload), zlib.crc32(payload)) + payload
        with self.lock:
            if self.bytes + len(frame) > self.max_bytes:
                self.refused += len(rows)
                return None
            if self._tail_fd < 0 or self._sizes[self._segments[-1]] >= _SEGMENT_SIZE:
                self._new_segment()
            seg = self._segments[-1]
            try:
                append(self._tail_fd, frame)
            except AppendError as e:
                # A full disk writes what fits, then fails: cut the part of the frame that
                # reached the file, or the next frame would follow a torn one (the reader
                # stops at it: what was counted as spooled after it would be lost). If the
                # file cannot be cut, the next append starts a new segment.
                _, torn = e.settle(self._tail_fd, frame, (len(frame),))
                if torn:
                    self._close_tail()
                raise
            self._sizes[seg] += len(frame)
            self.bytes += len(frame)
            return seg, self._sizes[seg]

    def _new_segment(self) -> None:
        """Start the next segment. Raises OSError and changes nothing (but the closed tail)
        if the file cannot be made whole: a segment is listed only once its header is on disk."""
        self._close_tail()
        num = self._segments[-1] + 1 if self._segments else self._read_seg
        name = f"{num:020d}.seg"
        fd = self._open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND)
        try:
            append(fd, _HEADER)
        except OSError:
            os.close(fd)
            try:
                os.unlink(name, dir_fd=self._dir_fd)
            except OSError:
                pass  # a headerless file is skipped as damaged when read (it is never listed now)
            raise
        self._tail_fd = fd
        if not self._segments:
            self._read_seg, self._read_off = num, len(_HEADER)
        self._segments.append(num)
        self._sizes[num] = len(_HEADER)
        self.bytes += len(_HEADER)

    # -- reading
    def peek(self) -> Frame | None:
        """The oldest frame not yet acknowledged, or None when the spool is empty."""
        with self.lock:
            while self._segments:
                seg = self._read_seg
                frame = self._read_frame(seg)
                if frame is not None:
                    return frame
                # Every frame of this segment is written (or the rest is damaged): done with it.
                # If it is the one being appended to, the next append starts a new segment.
                self._drop_segment(seg)
            return None

    def _read_frame(self, seg: int) -> Frame | None:
        if self._read_fd < 0:
            try:
                self._read_fd = self._open(f"{seg:020d}.seg", os.O_RDONLY)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.EPERM):  # a link or not a file: not a segment of ours
                    self.corrupt += 1
                elif e.errno != errno.ENOENT:
                    raise
                return None
            if os.pread(self._read_fd, len(_HEADER), 0) != _HEADER:
                self.corrupt += 1
                return None
        off = self._read_off
        head = os.pread(self._read_fd, _FRAME.size, off)
        if len(head) < _FRAME.size:
            if head:
                self.corrupt += 1
            return None
        length, crc = _FRAME.unpack(head)
        payload = os.pread(self._read_fd, length, off + _FRAME.size) if length <= _MAX_FRAME else b""
        if len(payload) != length or zlib.crc32(payload) != crc:
            self.corrupt += 1
            self._read_off = self._sizes.get(seg, off)  # skip the rest of this segment
            return None
        try:
            batch = decode_batch(payload)
        except FormatError:  # the CRC matched: written so by a bug or another version
            self.corrupt += 1
            self._read_off = off + _FRAME.size + length
            return self._read_frame(seg)
        return Frame(batch.names, batch.rows, seg, off + _FRAME.size + length, batch.seqs)

    def ack(self, frame: Frame) -> None:
        """The frame's rows are in the database."""
        with self.lock:
            if frame.seg != self._read_seg:
                return
            self._read_off = frame.end
            os.pwrite(self._ack_fd, _ACK.pack(frame.seg, frame.end), 0)
            if frame.end >= self._sizes.get(frame.seg, 0):
                self._drop_segment(frame.seg)

    def _close_tail(self) -> None:
        if self._tail_fd >= 0:
            fd, self._tail_fd = self._tail_fd, -1
            os.close(fd)

    def _drop_segment(self, seg: int) -> None:
        if self._read_fd >= 0:
            os.close(self._read_fd)
            self._read_fd = -1
        if self._segments and seg == self._segments[-1]:
            self._close_tail()
        try:
            os.unlink(f"{seg:020d}.seg", dir_fd=self._dir_fd)
        except FileNotFoundError:
            pass
        if seg in self._segments:
            self._segments.remove(seg)
        self.bytes -= self._sizes.pop(seg, 0)
        if self._segments:
            self._read_seg, self._read_off = self._segments[0], len(_HEADER)
        else:
            self.bytes = 0
            self._read_seg, self._read_off = seg + 1, len(_HEADER)
        os.pwrite(self._ack_fd, _ACK.pack(self._read_seg, 0), 0)

