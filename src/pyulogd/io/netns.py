"""Network namespaces: open one, and create sockets inside it.

A socket belongs for its whole life to the network namespace its creating thread was in
at ``socket()`` time; switching back afterwards does not move it. So a socket for another
namespace is made by ``setns(CLONE_NEWNET)`` on the calling thread, ``socket()``, and
``setns()`` back to the namespace the daemon started in (:func:`in_netns`). The daemon's
own namespace is pinned by a file descriptor opened once, at the first switch
(:func:`home_fd`), so "back" is always the same namespace.

If switching back fails, the thread would go on creating sockets, reading sysctls and
asking rtnetlink in the wrong namespace: :class:`WrongNamespace` (a ``SystemExit``, so no
``except Exception`` swallows it) ends the daemon. ulogd2's HEAD logs and goes on.

Python 3.11 has no ``os.setns`` (3.12 has), so the call goes through ctypes to libc.

``setns()`` needs CAP_SYS_ADMIN: after ``-u`` it is raised for each of the two calls only
(:func:`pyulogd.core.caps.raised`), not for what the block does in between.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import os
from collections.abc import Iterator

from pyulogd.core import caps

CLONE_NEWNET = 0x40000000
NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3), Linux 4.11+

_libc: ctypes.CDLL | None = None
_home: int | None = None
_nsfs_dev: int | None = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    return _libc


class WrongNamespace(SystemExit):
    """Switching back to the daemon's own namespace failed: the daemon must stop."""


class NotANamespace(OSError):
    """The path exists but is not (yet) a network namespace file."""


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    """setns(2) on the calling thread, with CAP_SYS_ADMIN raised for it; OSError with the
    kernel's errno on failure."""
    with caps.raised("CAP_SYS_ADMIN"):
        r = _lib().setns(fd, nstype)
        err = ctypes.get_errno()
    if r != 0:
        raise OSError(err, f"setns: {os.strerror(err)}")


def home_fd() -> int:
    """An fd of the namespace the daemon started in, opened on first use and kept for good.

    Called at start (as root, before ``-u``) by everything that will switch namespaces,
    so that the fd exists before the first switch and the descriptor count stays flat.
    """
    global _home
    if _home is None:
        _home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    return _home


def nsfs_dev() -> int:
    """st_dev of the kernel's nsfs: every namespace file (a /proc link or a bind mount of
    one, as ``ip netns add`` makes) has it; the plain file ``ip netns add`` creates
    before it mounts the namespace onto it does not."""
    global _nsfs_dev
    if _nsfs_dev is None:
        _nsfs_dev = os.stat("/proc/self/ns/net").st_dev
    return _nsfs_dev


def is_netns_file(path: str) -> tuple[int, int] | None:
    """(st_dev, st_ino) of ``path`` if it is a namespace file now, else None (missing, or
    not mounted yet). The inode number identifies the namespace itself."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if st.st_dev != nsfs_dev():
        return None
    return st.st_dev, st.st_ino


class NetnsHandle:
    """An open network namespace: ``name`` (what records are tagged with), ``path``, and an
    fd that pins exactly this namespace, so sockets made later (resyncs, dumps, rtnetlink)
    land in it even if the name is reused meanwhile. ``close()`` releases the pin."""

    __slots__ = ("name", "path", "fd", "ino")

    def __init__(self, name: str, path: str, fd: int, ino: int) -> None:
        self.name = name
        self.path = path
        self.fd = fd
        self.ino = ino

    @classmethod
    def open(cls, path: str, name: str | None = None) -> NetnsHandle:
        """Open ``path``; NotANamespace if it is not a network namespace (yet), OSError else."""
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if st.st_dev != nsfs_dev():
                raise NotANamespace(errno.EINVAL, f"{path} is not a namespace file (not mounted yet?)")
            try:
                kind = fcntl.ioctl(fd, NS_GET_NSTYPE)
            except OSError:
                kind = CLONE_NEWNET  # kernel before 4.11: setns() will check the type
            if kind != CLONE_NEWNET:
                raise NotANamespace(errno.EINVAL, f"{path} is a namespace, but not a network namespace")
        except BaseException:
            os.close(fd)
            raise
        return cls(name if name is not None else os.path.basename(path.rstrip("/")), path, fd, st.st_ino)

    @property
    def closed(self) -> bool:
        return self.fd < 0

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __repr__(self) -> str:
        return f"NetnsHandle({self.name!r}, ino={self.ino}, fd={self.fd})"


@contextlib.contextmanager
def in_netns(ns: NetnsHandle | None) -> Iterator[None]:
    """Run the block with the calling thread in ``ns`` (None: stay where we are).

    Only the socket()/open() calls that must be made inside belong in the block: the
    thread is back home as soon as it ends, also on an exception.
    """
    if ns is None:
        yield
        return
    if ns.fd < 0:
        raise OSError(errno.EBADF, f"network namespace {ns.name} is no longer open")
    home = home_fd()
    setns(ns.fd)  # on failure we never left home: a plain OSError
    try:
        yield
    finally:
        try:
            setns(home)
        except OSError as e:
            raise WrongNamespace(
                f"cannot switch back to the daemon's own network namespace after entering {ns.name}: "
                f"{e.strerror or e}; stopping rather than running in the wrong namespace"
            ) from e
