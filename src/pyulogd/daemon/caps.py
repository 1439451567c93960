"""Keep chosen capabilities across the ``-u`` switch from root to an unprivileged user.

Every nfnetlink request is checked against CAP_NET_ADMIN of the *sender* at the time it
is sent (``netlink_net_capable()``), not only when the socket was opened: after a plain
setuid() an NFACCT dump on an already open socket fails with EPERM (tested; ulogd2 then
logs nothing at all), and so does every later NFLOG/NFCT request (re-binds, dumps, resyncs)
and SO_RCVBUFFORCE. Sockets already bound keep delivering.

The standard way out, as used by ntpd, chronyd and others: ``prctl(PR_SET_KEEPCAPS)``
before setuid() keeps the permitted set through the uid change, and a ``capset()``
right after it makes the wanted capabilities effective and throws every other one away.
The stdlib has neither call, so both go through ctypes to libc. Capabilities are per
thread: call this from the thread that does the netlink work (pyulogd is single-threaded).
Nothing is made inheritable or ambient, so programs the daemon might start get none.

Use::

    with keep_capabilities(["CAP_NET_ADMIN"]):
        os.setgid(gid)
        os.initgroups(name, gid)
        os.setuid(uid)

On leaving the block without an exception a process that is no longer root holds exactly
the named capabilities (those of them it had before), effective and permitted, and
KEEPCAPS is off again; one that is still root keeps everything. OSError is raised if the
kernel refuses.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Iterable
from types import TracebackType

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

PR_SET_KEEPCAPS = 8
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]  # fmt: skip


_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    return _libc


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


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


def reasons(instances: Iterable[object]) -> dict[str, list[str]]:
    """What plugin instances need after start, and why: capability -> reasons, sorted.

    An instance decides (``needed_capabilities()``: NFLOG needs nothing in its own
    namespace, but CAP_SYS_ADMIN and CAP_NET_ADMIN when it follows namespaces); anything
    else (a class, a stand-in) is asked for its ``capabilities`` attribute."""
    found: dict[str, list[str]] = {}
    for inst in instances:
        ask = getattr(inst, "needed_capabilities", None)
        if ask is not None and not isinstance(inst, type):
            needed: dict[str, str] = ask()
        else:
            needed = {cap: f"{getattr(inst, 'name', '?')}" for cap in getattr(inst, "capabilities", ())}
        for cap, why in needed.items():
            if why not in found.setdefault(cap, []):
                found[cap].append(why)
    return dict(sorted(found.items()))


def wanted(instances: Iterable[object]) -> list[str]:
    """The capabilities that plugin instances need after start (see :func:`reasons`), sorted."""
    return list(reasons(instances))


def get_capabilities() -> tuple[int, int, int]:
    """(effective, permitted, inheritable) masks of the calling thread."""
    hdr = _Header(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_Data * 2)()
    _check(_lib().capget(ctypes.byref(hdr), data), "capget")
    lo, hi = data[0], data[1]
    return (lo.effective | hi.effective << 32, lo.permitted | hi.permitted << 32,
            lo.inheritable | hi.inheritable << 32)  # fmt: skip


def set_capabilities(effective: int, permitted: int, inheritable: int = 0) -> None:
    """capset() of the calling thread; a thread can only lower its permitted set."""
    hdr = _Header(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_Data * 2)()
    for i in (0, 1):
        shift = 32 * i
        data[i].effective = effective >> shift & 0xFFFFFFFF
        data[i].permitted = permitted >> shift & 0xFFFFFFFF
        data[i].inheritable = inheritable >> shift & 0xFFFFFFFF
    _check(_lib().capset(ctypes.byref(hdr), data), "capset")


def set_keepcaps(on: bool) -> None:
    _check(_lib().prctl(PR_SET_KEEPCAPS, 1 if on else 0, 0, 0, 0), "prctl(PR_SET_KEEPCAPS)")


class keep_capabilities:  # lower case: used like a function, as contextlib's helpers are
    """Context manager around a uid change; see the module docstring.

    ``kept`` (a list of names) tells afterwards what the process holds. With no names
    it does nothing at all, so a caller can always use it.
    """

    def __init__(self, names: Iterable[str]) -> None:
        self.mask = capability_mask(names)
        self.kept: list[str] = []
        self._armed = False

    def __enter__(self) -> keep_capabilities:
        if self.mask:
            set_keepcaps(True)
            self._armed = True
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        if not self._armed:
            return
        self._armed = False
        try:
            if exc_type is None:
                _effective, permitted, _inheritable = get_capabilities()
                if os.geteuid() == 0:
                    # Still root (``-u root``): setuid() took nothing away, neither do we.
                    self.kept = mask_names(permitted)
                else:
                    keep = self.mask & permitted
                    set_capabilities(keep, keep, 0)
                    self.kept = mask_names(keep)
        finally:
            # A later setuid() or execve() must not keep anything by accident.
            try:
                set_keepcaps(False)
            except OSError:
                if exc_type is None:
                    raise
