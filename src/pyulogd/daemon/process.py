"""Process chores: pidfile, daemonizing, dropping privileges."""

from __future__ import annotations

import errno
import fcntl
import os
import pwd
import stat
import sys
from collections.abc import Iterable
from typing import Any

from pyulogd.core import safefile
from pyulogd.daemon import caps


class PidFileError(Exception):
    pass


class PidFile:
    """A pidfile held locked for the life of the process, created as ulogd2 does.

    ulogd2 creates it with ``O_CREAT|O_EXCL``; a file already there whose lock nobody holds
    is stale: it is unlinked and created again, never opened for writing (a symbolic link
    planted in its place would make root truncate the link's target). The directory must
    be root's or the ``-u`` user's and writable by no one else (core/safefile.py). The lock
    is a flock() (ulogd uses fcntl locks): it belongs to the open file, so the daemonized
    child inherits it across fork and there is no moment where a second daemon could take
    the file. The file stays root's: the user need not write it, and a pid in a file the
    user could rewrite would let it aim root's scripts (``kill $(cat ...)``) elsewhere.
    """

    # Attempts at create-or-clear before giving up (another process keeps racing us).
    ATTEMPTS = 5

    def __init__(self, path: str, run_as: safefile.RunAs | None = None) -> None:
        self.path = path
        self.run_as = run_as
        self.fd: int | None = None
        self.owner_pid: int | None = None

    def acquire(self) -> None:
        head, name = os.path.split(self.path)
        try:
            dfd = safefile.open_dir(head or ".", self.run_as)
        except OSError as e:
            raise PidFileError(f"cannot use pidfile {self.path}: {e.strerror}") from None
        try:
            for _ in range(self.ATTEMPTS):
                try:
                    fd = safefile.create_excl(dfd, self.path, name, 0o644)
                except FileExistsError:
                    self._clear_stale(dfd, name)
                    continue
                except OSError as e:
                    raise PidFileError(f"cannot create pidfile {self.path}: {e.strerror}") from None
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    # Another starting daemon may have found our new file unlocked and
                    # replaced it: the file must still be the one at the name.
                    if _same_file(os.fstat(fd), dfd, name):
                        self.fd = fd
                        self.write_pid()
                        return
                except OSError:
                    pass
                os.close(fd)
            raise PidFileError(f"cannot create pidfile {self.path}: it keeps being replaced by another process")
        finally:
            os.close(dfd)

    def _clear_stale(self, dfd: int, name: str) -> None:
        """Remove what is at ``name`` unless a running daemon holds it (PidFileError)."""
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.ELOOP:
                raise PidFileError(f"cannot use pidfile {self.path}: {e.strerror}") from None
            _unlink(dfd, name)  # a symbolic link: removed, never followed
            return
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise PidFileError(f"cannot use pidfile {self.path}: it is a directory")
            if stat.S_ISREG(st.st_mode):
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except OSError:
                    other = os.pread(fd, 32, 0).decode(errors="replace").strip()
                    raise PidFileError(
                        f"another pyulogd/ulogd already running with pid {other or '?'} ({self.path})"
                    ) from None
            if _same_file(st, dfd, name):
                _unlink(dfd, name)
        finally:
            os.close(fd)

    def write_pid(self) -> None:
        """(Re)write our pid; the daemonized child calls it again with its own."""
        if self.fd is None:
            return
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)
        self.owner_pid = os.getpid()

    def release(self) -> None:
        if self.fd is None or self.owner_pid != os.getpid():
            return
        try:
            st = os.lstat(self.path)
            mine = os.fstat(self.fd)
            if (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino):
                os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None


def _same_file(st: os.stat_result, dfd: int, name: str) -> bool:
    try:
        now = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except OSError:
        return False
    return (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino)


def _unlink(dfd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dfd)
    except FileNotFoundError:
        pass


class Ready:
    """The daemon child's way to tell the waiting parent whether start-up worked."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def ok(self) -> None:
        self._send(b"OK\n")

    def fail(self, why: str) -> None:
        self._send(b"ERR " + why.encode(errors="replace") + b"\n")

    def _send(self, msg: bytes) -> None:
        if self.fd >= 0:
            try:
                os.write(self.fd, msg)
            finally:
                os.close(self.fd)
                self.fd = -1


def daemonize() -> Ready:
    """Fork into the background; the parent exits 0 only once the child reports it started.

    ulogd2's parent exits 0 as soon as it forks, even when the child then fails to start.
    """
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid > 0:
        os.close(w)
        data = b""
        while True:
            chunk = os.read(r, 4096)
            if not chunk:
                break
            data += chunk
        if data.startswith(b"OK"):
            os._exit(0)
        sys.stderr.write("pyulogd: " + (data[4:].decode(errors="replace").strip() or "daemon died during start") + "\n")
        os._exit(1)
    os.close(r)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    return Ready(w)


def drop_privileges(user: pwd.struct_passwd, keep: Iterable[str] = ()) -> list[str]:
    """setgid, initgroups, setuid to ``user`` (after every socket and file is open), keeping
    the capabilities ``keep`` permitted but not effective, raised only around the calls that
    need them (daemon/caps.py, core/caps.py, docs/security.md); returns the names kept."""
    with caps.keep_capabilities(keep) as kept:
        os.setgid(user.pw_gid)
        os.initgroups(user.pw_name, user.pw_gid)
        os.setuid(user.pw_uid)
    return kept.kept


def raise_priority(log: Any) -> None:
    """What ulogd does at start: nice(-1), then SCHED_RR at the highest priority, so that the
    reader keeps up with the kernel when the machine is busy (a socket that overflows loses
    events). Failure is a warning, as in ulogd; ``--no-realtime`` skips it."""
    try:
        os.nice(-1)
    except OSError as e:
        log.notice(f"cannot raise priority (nice -1): {e.strerror}")
    try:
        prio = os.sched_get_priority_max(os.SCHED_RR)
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(prio))
    except OSError as e:
        sys.stderr.write(f"WARNING: scheduler configuration failed: {e.strerror}\n")
        log.notice(f"scheduler configuration failed: {e.strerror}")
