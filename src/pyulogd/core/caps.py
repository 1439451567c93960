"""Capabilities of the calling thread, held only while an operation needs them.

After ``-u`` the daemon keeps the capabilities its inputs need after start (CAP_NET_ADMIN for
netlink requests the kernel checks per message, CAP_SYS_ADMIN for ``setns()``) in its
*permitted* set only; its *effective* set is empty. The code that needs one raises it for
the moment of the system call and drops it right after::

    with caps.raised("CAP_NET_ADMIN"):
        sock.send(request)

so that the daemon spends its time (decoding packets, formatting, writing files) with no
capability at all: a confused code path (a planted link, a request the daemon did not mean
to send) finds nothing to abuse. The raising is done by the few functions that make those
system calls (``io/netns.py``: ``setns()``; ``io/netlink.py``: socket creation, bind,
requests, ``SO_RCVBUFFORCE``), so plugins cannot forget it.

Why socket creation is raised too: nfnetlink checks CAP_NET_ADMIN of the sender at each
request *and* of the credentials the socket was opened with (``__netlink_ns_capable()``:
``file_ns_capable(sk->sk_socket->file)`` and ``ns_capable()``). A socket opened with an empty
effective set can never send a request the kernel checks, whatever is raised later.

Capabilities are per thread: :class:`Privileges` acts only in the thread that lowered
them (the daemon's one loop thread, which does every netlink operation). In any other
thread :meth:`Privileges.raised` does nothing, so the kernel refuses what such a thread
should not do. Threads created later (the SQL writers) inherit the lowered sets: empty
effective set, and no code of theirs raises anything. (A thread started *inside* a raised
block would inherit the raised set: none is; tests/linux/test_least_privilege.py checks
every thread of a running daemon.) This keeps capabilities out of the way of mistakes; it is
no wall against code running inside the process, which could raise them itself.

If dropping a raised capability ever fails, :class:`StillPrivileged` (a ``SystemExit``, so
no ``except Exception`` swallows it) ends the daemon rather than let it run privileged.

The calls go to libc through ctypes (the standard library has neither ``capset`` nor
``prctl``); :class:`Kernel` is the seam tests replace with a recording fake.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from collections.abc import Iterable
from types import TracebackType
from typing import Protocol

# linux/capability.h
CAPS: dict[str, int] = {
    "CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3,
    "CAP_FSETID": 4, "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8,
    "CAP_LINUX_IMMUTABLE": 9, "CAP_NET_BIND_SERVICE": 10, "CAP_NET_BROADCAST": 11,
    "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_IPC_LOCK": 14, "CAP_IPC_OWNER": 15,
    "CAP_SYS_MODULE": 16, "CAP_SYS_RAWIO": 17, "CAP_SYS_CHROOT": 18, "CAP_SYS_PTRACE": 19,
    "CAP_SYS_PACCT": 20, "CAP_SYS_ADMIN": 21, "CAP_SYS_BOOT": 22, "CAP_SYS_NICE": 23,
    "CAP_SYS_RESOURCE": 24, "CAP_SYS_TIME": 25, "CAP_SYS_TTY_CONFIG": 26, "CAP_MKNOD": 27,
    "CAP_LEASE": 28, "CAP_AUDIT_WRITE": 29, "CAP_AUDIT_CONTROL": 30, "CAP_SETFCAP": 31,
    "CAP_MAC_OVERRIDE": 32, "CAP_MAC_ADMIN": 33, "CAP_SYSLOG": 34, "CAP_WAKE_ALARM": 35,
    "CAP_BLOCK_SUSPEND": 36, "CAP_AUDIT_READ": 37, "CAP_PERFMON": 38, "CAP_BPF": 39,
    "CAP_CHECKPOINT_RESTORE": 40,
}  # fmt: skip
NAMES = {v: k for k, v in CAPS.items()}

# linux/prctl.h
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_KEEPCAPS = 8
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def capability_mask(names: Iterable[str]) -> int:
    """Bit mask of capability names (``CAP_NET_ADMIN`` or ``net_admin``); ValueError if unknown."""
    mask = 0
    for name in names:
        key = name.upper()
        if not key.startswith("CAP_"):
            key = "CAP_" + key
        bit = CAPS.get(key)
        if bit is None:
            raise ValueError(f"unknown capability '{name}'")
        mask |= 1 << bit
    return mask


def mask_names(mask: int) -> list[str]:
    return [NAMES.get(b, f"CAP_{b}") for b in range(64) if mask >> b & 1]


class StillPrivileged(SystemExit):
    """Dropping a raised capability failed: the daemon must stop rather than run with it."""


class Kernel(Protocol):
    """The system calls this module makes, for the calling thread (a fake in tests)."""

    def get(self) -> tuple[int, int, int]:
        """(effective, permitted, inheritable)."""
        ...

    def set(self, effective: int, permitted: int, inheritable: int) -> None:
        """capset(); OSError if the kernel refuses."""
        ...

    def prctl(self, option: int, arg: int = 0, arg2: int = 0) -> int:
        """prctl(); OSError if the kernel refuses, else its result."""
        ...

    def last_cap(self) -> int:
        """The highest capability number the kernel knows."""
        ...


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]  # fmt: skip


class Libc:
    """:class:`Kernel` through libc."""

    def __init__(self) -> None:
        self._libc: ctypes.CDLL | None = None

    def _lib(self) -> ctypes.CDLL:
        if self._libc is None:
            self._libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        return self._libc

    def get(self) -> tuple[int, int, int]:
        hdr = _Header(_LINUX_CAPABILITY_VERSION_3, 0)
        data = (_Data * 2)()
        _check(self._lib().capget(ctypes.byref(hdr), data), "capget")
        lo, hi = data[0], data[1]
        return (lo.effective | hi.effective << 32, lo.permitted | hi.permitted << 32,
                lo.inheritable | hi.inheritable << 32)  # fmt: skip

    def set(self, effective: int, permitted: int, inheritable: int) -> None:
        hdr = _Header(_LINUX_CAPABILITY_VERSION_3, 0)
        data = (_Data * 2)()
        for i in (0, 1):
            shift = 32 * i
            data[i].effective = effective >> shift & 0xFFFFFFFF
            data[i].permitted = permitted >> shift & 0xFFFFFFFF
            data[i].inheritable = inheritable >> shift & 0xFFFFFFFF
        _check(self._lib().capset(ctypes.byref(hdr), data), "capset")

    def prctl(self, option: int, arg: int = 0, arg2: int = 0) -> int:
        r: int = self._lib().prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(arg2), ctypes.c_ulong(0),
                                   ctypes.c_ulong(0))  # fmt: skip
        if r < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"prctl({option}): {os.strerror(err)}")
        return r

    def last_cap(self) -> int:
        try:
            with open("/proc/sys/kernel/cap_last_cap") as f:
                return int(f.read())
        except (OSError, ValueError):
            return max(NAMES)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


class Privileges:
    """The capabilities one thread holds permitted but not effective, raised on demand.

    Until :meth:`lower` is called nothing is lowered and :meth:`raised` does nothing (a
    daemon that stays root, as without ``-u``, has everything effective anyway).
    ``raises`` counts the times a capability was actually made effective (tests, and the
    reason the counter exists: proving the raising happens where it should).
    """

    def __init__(self, kernel: Kernel | None = None) -> None:
        self.kernel: Kernel = kernel if kernel is not None else Libc()
        self.held = 0  # the permitted set of the lowered thread
        self.effective = 0  # what is effective in that thread now (0 but inside raised())
        self.thread: int | None = None  # the thread that lowered, the only one raised() acts in
        self.raises = 0

    @property
    def lowered(self) -> bool:
        return self.thread is not None

    def lower(self, keep: int) -> int:
        """Make the calling thread's effective and inheritable sets empty and its permitted set
        ``keep`` (what of it the thread has); ambient capabilities go with the inheritable
        set. Returns the mask kept. From now on :meth:`raised` works in this thread only."""
        _eff, permitted, _inh = self.kernel.get()
        kept = keep & permitted
        self.kernel.set(0, kept, 0)
        self.held, self.effective, self.thread = kept, 0, threading.get_ident()
        return kept

    def raised(self, *names: str) -> Raised:
        """Context manager: the named capabilities effective inside the block (those held),
        exactly what was effective before again after it, also on an exception."""
        return Raised(self, capability_mask(names))


class Raised:
    """One use of :meth:`Privileges.raised` (nests: an inner block leaves the outer's set)."""

    __slots__ = ("privs", "mask", "before")

    def __init__(self, privs: Privileges, mask: int) -> None:
        self.privs = privs
        self.mask = mask
        self.before: int | None = None

    def __enter__(self) -> Raised:
        p = self.privs
        if p.thread is None or p.thread != threading.get_ident():
            return self
        before = p.effective
        now = before | (self.mask & p.held)
        if now != before:
            p.kernel.set(now, p.held, 0)  # OSError: nothing changed, the caller's call fails
            p.effective = now
            p.raises += 1
            self.before = before
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        before = self.before
        if before is None:
            return
        self.before = None
        p = self.privs
        try:
            p.kernel.set(before, p.held, 0)
        except OSError as e:
            raise StillPrivileged(f"cannot drop {', '.join(mask_names(p.effective & ~before))} after use: "
                                  f"{e.strerror or e}; stopping rather than running with it") from e
        p.effective = before


_privileges = Privileges()


def privileges() -> Privileges:
    """The process's :class:`Privileges` (the daemon lowers it after ``-u``)."""
    return _privileges


def use(privs: Privileges) -> Privileges:
    """Make ``privs`` the process's (tests, with a fake :class:`Kernel`); returns the one it replaces."""
    global _privileges
    old, _privileges = _privileges, privs
    return old


def raised(*names: str) -> Raised:
    """``with raised("CAP_NET_ADMIN"):`` on the process's :class:`Privileges`."""
    return Raised(_privileges, capability_mask(names))
