"""A directory of the daemon's own files, locked for one daemon: the spools and the write-ahead log.

Both keep their files under one directory that may belong to the ``-u`` user: everything is
opened relative to one descriptor of the directory, never through a symbolic link and only
as a regular file, so that whoever can write the directory cannot point the daemon's writes
at another file (docs/security.md); and an exclusive ``flock`` on its ``LOCK`` file keeps a
second daemon with the same configuration from writing the same files.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat


def open_file(dir_fd: int, dir_path: str, name: str, flags: int) -> int:
    """``name`` in the directory of ``dir_fd``, never through a link, only a regular file
    (``O_NONBLOCK`` while opening: a FIFO planted there must not block the daemon)."""
    fd = os.open(name, flags | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK, 0o600, dir_fd=dir_fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EPERM, f"{name} is not a regular file", os.path.join(dir_path, name))
    os.set_blocking(fd, True)
    return fd


def lock_dir(path: str, what: str, error: type[Exception]) -> tuple[int, int]:
    """Make ``path`` (mode 0700) if needed, open it and take its lock: (directory fd, lock fd).
    Raises ``error`` saying ``what`` it is (e.g. "spool directory") and why it cannot be used,
    with nothing left open."""
    dir_fd = lock_fd = -1
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        lock_fd = open_file(dir_fd, path, "LOCK", os.O_RDWR | os.O_CREAT)
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        for fd in (lock_fd, dir_fd):
            if fd >= 0:
                os.close(fd)
        if lock_fd >= 0 and e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise error(f"{what} {path!r} is used by another running daemon") from None
        raise error(f"cannot use {what} {path!r}: {e.strerror}") from e
    return dir_fd, lock_fd
