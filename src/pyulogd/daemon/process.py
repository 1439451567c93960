"""Process chores: pidfile, daemonizing, dropping privileges."""

from __future__ import annotations

import fcntl
import os
import pwd
import sys
from collections.abc import Iterable
from typing import Any

from pyulogd.daemon import caps


class PidFileError(Exception):
    pass


class PidFile:
    """A pidfile held locked for the life of the process, as ulogd does.

    An existing file whose lock nobody holds is stale and replaced. The lock is a flock()
    (ulogd uses fcntl locks): it belongs to the open file, so the daemonized child inherits
    it across fork and there is no moment where a second daemon could take the file.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: int | None = None
        self.owner_pid: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            other = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise PidFileError(f"another pyulogd/ulogd already running with pid {other or '?'} ({self.path})") from None
        self.fd = fd
        self.write_pid()

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
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None


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
    the capabilities ``keep`` (docs/privileges.md); returns the names kept."""
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
