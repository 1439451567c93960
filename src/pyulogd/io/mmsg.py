"""``recvmmsg(2)`` through ctypes: many datagrams with one system call.

Python's socket module has no ``recvmmsg``. For conntrack events, where every event is a
datagram of its own, one ``recv_into`` per event costs about as much as decoding it; one
``recvmmsg`` per batch leaves only the kernel's copy per event. :class:`Receiver` owns
the message headers and one buffer of fixed-size slots, made once; a call fills them and
says where each datagram is. Where ctypes or the libc function is missing, :func:`receiver`
returns None and the caller reads one datagram at a time.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import socket
import sys
from typing import Any


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(_Iovec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint)]


_LEN_AT = _Mmsghdr.msg_len.offset
_FLAGS_AT = _Mmsghdr.msg_hdr.offset + _Msghdr.msg_flags.offset
_STRIDE = ctypes.sizeof(_Mmsghdr)
MSG_DONTWAIT = 0x40
MSG_TRUNC = int(socket.MSG_TRUNC)  # a plain int: IntFlag arithmetic is 100 times slower
_recvmmsg: Any = None


def _libc_recvmmsg() -> Any:
    global _recvmmsg
    if _recvmmsg is None:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.recvmmsg
        fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
        fn.restype = ctypes.c_int
        _recvmmsg = fn
    return _recvmmsg


_NAMELEN_AT = _Mmsghdr.msg_hdr.offset + _Msghdr.msg_namelen.offset
NAME_SIZE = 28  # sizeof(struct sockaddr_in6), which holds a sockaddr_in too


class Receiver:
    """``slots`` datagrams of at most ``slot_size`` bytes per :meth:`recv` call; with
    ``names``, each datagram's source address too (:meth:`recv_from`, for UDP)."""

    def __init__(self, slots: int, slot_size: int, names: bool = False) -> None:
        self.slots = slots
        self.slot_size = slot_size
        # Anonymous memory: pages no datagram was written into take no RAM (a ctypes array
        # is zeroed, so all of it would be resident).
        self._mem = mmap.mmap(-1, slots * slot_size)
        self._data = (ctypes.c_char * (slots * slot_size)).from_buffer(self._mem)
        self._iov = (_Iovec * slots)()
        self._hdrs = (_Mmsghdr * slots)()
        base = ctypes.addressof(self._data)
        self._names = (ctypes.c_char * (slots * NAME_SIZE if names else 1))()
        for i in range(slots):
            self._iov[i].iov_base = base + i * slot_size
            self._iov[i].iov_len = slot_size
            self._hdrs[i].msg_hdr.msg_iov = ctypes.pointer(self._iov[i])
            self._hdrs[i].msg_hdr.msg_iovlen = 1
            if names:
                self._hdrs[i].msg_hdr.msg_name = ctypes.addressof(self._names) + i * NAME_SIZE
                self._hdrs[i].msg_hdr.msg_namelen = NAME_SIZE
        self.view = memoryview(self._data).cast("B")
        # The source addresses, NAME_SIZE bytes per slot (struct sockaddr_in or _in6).
        self.names = memoryview(self._names).cast("B")
        # Every header's msg_len and msg_flags, as strided views over the header array.
        words = memoryview(self._hdrs).cast("B").cast("I")
        self._lens = words[_LEN_AT // 4 :: _STRIDE // 4]
        self._flags = memoryview(self._hdrs).cast("B").cast("i")[_FLAGS_AT // 4 :: _STRIDE // 4]
        # msg_namelen is value-result: the kernel leaves the address's size there, so it is
        # set back before each call (one strided copy).
        self._namelens = words[_NAMELEN_AT // 4 :: _STRIDE // 4]
        self._namelen_full = memoryview(self._namelens.tobytes()).cast("I") if names else None
        self._offsets = range(0, slots * slot_size, slot_size)
        self._hdr_ptr = ctypes.addressof(self._hdrs)
        self._call = _libc_recvmmsg()

    def recv(self, fd: int, limit: int) -> tuple[list[tuple[int, int]], int]:
        """Datagrams waiting on ``fd``, up to ``limit`` (at most ``slots``): their ``(offset,
        length)`` in :attr:`view`, and how many were truncated to ``slot_size``. An empty list
        when nothing is waiting. Errors (ENOBUFS among them) raise ``OSError``; datagrams read
        before an error are returned, and the kernel reports the error at the next call."""
        n = self._call(fd, self._hdr_ptr, min(limit, self.slots), MSG_DONTWAIT, None)
        if n < 0:
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EWOULDBLOCK):
                return [], 0
            raise OSError(err, os.strerror(err))
        lens = self._lens[:n].tolist()
        truncated = sum(1 for f in self._flags[:n].tolist() if f & MSG_TRUNC)
        if truncated:
            lens = [min(ln, self.slot_size) for ln in lens]
        return list(zip(self._offsets[:n], lens, strict=True)), truncated

    def recv_from(self, fd: int, limit: int) -> int:
        """As :meth:`recv`, for a receiver made with ``names``: how many datagrams were read;
        datagram ``i`` is at ``view[i * slot_size:]``, :meth:`lengths` long, from the address
        at ``names[i * NAME_SIZE:]`` (``sockaddr_in`` or ``sockaddr_in6``). 0 when nothing is
        waiting; errors raise ``OSError``."""
        full = self._namelen_full
        assert full is not None, "a receiver made without names"
        self._namelens[:] = full
        n = self._call(fd, self._hdr_ptr, min(limit, self.slots), MSG_DONTWAIT, None)
        if n < 0:
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EWOULDBLOCK):
                return 0
            raise OSError(err, os.strerror(err))
        return int(n)

    def lengths(self, n: int) -> list[int]:
        """The lengths of the ``n`` datagrams the last call read; -1 for one truncated to
        ``slot_size``."""
        lens: list[int] = self._lens[:n].tolist()
        if any(f & MSG_TRUNC for f in self._flags[:n].tolist()):
            flags = self._flags[:n].tolist()
            lens = [-1 if f & MSG_TRUNC else ln for ln, f in zip(lens, flags, strict=True)]
        return lens


def receiver(slots: int, slot_size: int, names: bool = False) -> Receiver | None:
    """A :class:`Receiver`, or None where recvmmsg cannot be called (no ctypes, no libc
    function, not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return Receiver(slots, slot_size, names)
    except (AttributeError, OSError, TypeError, ValueError):
        return None


# One receiver for the whole process (the loop is single-threaded and a caller is done with
# the spans before it reads again): 128 slots of 8 KiB, 1 MiB, however many sockets read.
SHARED_SLOTS, SHARED_SLOT_SIZE = 128, 8192
_shared: Receiver | None = None
_shared_failed = False


def shared() -> Receiver | None:
    """The process's receiver (None where recvmmsg is not available)."""
    global _shared, _shared_failed
    if _shared is None and not _shared_failed:
        _shared = receiver(SHARED_SLOTS, SHARED_SLOT_SIZE)
        _shared_failed = _shared is None
    return _shared


# One receiver with source addresses for UDP inputs (IPFIXIN), shared as the one above: 64
# slots of 64 KiB (no UDP datagram is truncated), 4 MiB of address space of which only the
# pages datagrams are written into become resident.
UDP_SLOTS, UDP_SLOT_SIZE = 64, 65536
_udp: Receiver | None = None
_udp_failed = False


def shared_udp() -> Receiver | None:
    """The process's receiver for datagrams with their source (None without recvmmsg)."""
    global _udp, _udp_failed
    if _udp is None and not _udp_failed:
        _udp = receiver(UDP_SLOTS, UDP_SLOT_SIZE, names=True)
        _udp_failed = _udp is None
    return _udp
