"""inotify(7) through ctypes (the standard library has no binding): a non-blocking,
close-on-exec descriptor the loop watches, and the events read from it."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
from typing import NamedTuple

IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of NUL-padded name
_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    return _libc


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


class Event(NamedTuple):
    wd: int
    mask: int
    name: str


def parse(data: bytes) -> list[Event]:
    """The events in one read(); a truncated tail (cannot happen with whole reads) is dropped."""
    out: list[Event] = []
    off, n = 0, len(data)
    while off + _EVENT.size <= n:
        wd, mask, _cookie, ln = _EVENT.unpack_from(data, off)
        off += _EVENT.size
        raw = data[off : off + ln]
        off += ln
        out.append(Event(wd, mask, os.fsdecode(raw.split(b"\0", 1)[0])))
    return out


class Inotify:
    def __init__(self) -> None:
        self.fd = _check(_lib().inotify_init1(IN_NONBLOCK | IN_CLOEXEC), "inotify_init1")

    def fileno(self) -> int:
        return self.fd

    def add_watch(self, path: str, mask: int) -> int:
        return _check(_lib().inotify_add_watch(self.fd, os.fsencode(path), ctypes.c_uint32(mask)),
                      f"inotify_add_watch {path}")  # fmt: skip

    def rm_watch(self, wd: int) -> None:
        _lib().inotify_rm_watch(self.fd, wd)  # fails only if the watch is gone already

    def read(self) -> list[Event]:
        """Every event waiting (empty when none)."""
        events: list[Event] = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return events
            if not data:
                return events
            events.extend(parse(data))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
