"""How the daemon opens what it writes, while it is root: never through a link someone planted.

pyulogd starts as root and opens its pidfile, its log, its output files, the SQL spool and
database and the UNIXSOCK socket before ``-u`` drops to a user. Whoever can write a
directory on the way can plant a symbolic or hard link there and have root write (truncate,
append, chmod, chown) a file of their choice. Every such open goes through this module
(docs/security.md, "File opening rules"):

* **The directory.** The path is resolved here, component by component: every directory
  passed through (and every symbolic link followed) must be owned by root or by the
  daemon's own uid, and be writable by nobody else (group root excepted) unless it has the
  sticky bit (``/tmp``: others cannot rename what they do not own). The directory that
  holds the file is then opened (``O_DIRECTORY|O_NOFOLLOW``) and checked on the open
  descriptor: owned by root, the daemon's uid or the ``-u`` user, writable by no one else
  (no exception for sticky directories: anyone could plant the name there first). The
  file is then opened relative to that descriptor, so nothing can be swapped between the
  check and the open.
* **The file.** ``O_NOFOLLOW`` (a symbolic link is refused, never followed), ``O_NONBLOCK``
  while opening (a planted FIFO cannot hang the start), then ``fstat()`` on the descriptor:
  a regular file with one link (a planted hard link to another file is refused), or a
  character device (``/dev/null``: only root can make one). A new file is created with
  ``O_EXCL`` and the mode given.
* **The ``-u`` user.** A file the daemon creates is handed to that user with ``fchown()``
  on the descriptor (never by path); an existing file must be writable by the user (the
  daemon reopens it as the user on SIGHUP), else the start is refused naming the file.
  What only the user writes later (spool, SQLite) is opened *as* the user (:func:`as_user`),
  so the kernel itself refuses a link to a file the user may not write.

Only ``core`` may be imported here: ``core/log.py`` uses it.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import secrets
import socket
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

_OPEN_FLAGS = os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
_MAX_LINKS = 40  # symbolic links followed while resolving a directory (the kernel's limit)


@dataclass(frozen=True)
class RunAs:
    """The user ``-u`` switches to, with the groups it will have (initgroups)."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]

    @classmethod
    def lookup(cls, name: str, uid: int, gid: int) -> RunAs:
        return cls(name, uid, gid, tuple(os.getgrouplist(name, gid)))

    def __str__(self) -> str:
        return f"user {self.name} (uid {self.uid})"


class UnsafePath(OSError):
    """A path the daemon refuses to open as root: a link, not a regular file, or in a
    directory others can write. ``strerror`` says which, for the caller's message."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(errno.EPERM, f"refused: {why}", path)


class NotWritable(OSError):
    """A file or directory the ``-u`` user will have to write but cannot."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(errno.EACCES, why, path)


# -- who may own what


def _root_like() -> set[int]:
    """Owners whose directories are safe to walk through: root and the daemon itself."""
    return {0, os.geteuid()}


def _owner_name(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _writable_by_others(st: os.stat_result, allow_sticky: bool) -> str | None:
    """Why others than the owner (and group root) can add or rename names in a directory."""
    if allow_sticky and st.st_mode & stat.S_ISVTX:
        return None
    if st.st_mode & stat.S_IWOTH:
        return "writable by every user" + (" (even with the sticky bit)" if st.st_mode & stat.S_ISVTX else "")
    if st.st_mode & stat.S_IWGRP and st.st_gid != 0:
        try:
            return f"writable by group {grp.getgrgid(st.st_gid).gr_name} (gid {st.st_gid})"
        except KeyError:
            return f"writable by group {st.st_gid}"
    return None


def _check_passed(path: str, st: os.stat_result) -> None:
    """A directory the path goes through (not the one holding the file)."""
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePath(path, f"'{path}' is not a directory")
    if st.st_uid not in _root_like():
        raise UnsafePath(path, f"directory '{path}' is owned by {_owner_name(st.st_uid)}, who could replace "
                               "what is below it")
    why = _writable_by_others(st, allow_sticky=True)
    if why:
        raise UnsafePath(path, f"directory '{path}' is {why}")


def _check_holder(path: str, st: os.stat_result, run_as: RunAs | None) -> None:
    """The directory that holds the file: root's, the daemon's or the -u user's, nobody else's."""
    owners = _root_like() | ({run_as.uid} if run_as is not None else set())
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePath(path, f"'{path}' is not a directory")
    if st.st_uid not in owners:
        raise UnsafePath(path, f"directory '{path}' is owned by {_owner_name(st.st_uid)}, not by root"
                               + (f" or {run_as}" if run_as is not None else ""))
    why = _writable_by_others(st, allow_sticky=False)
    if why:
        raise UnsafePath(path, f"directory '{path}' is {why}: another user could plant links in it")


def resolve_dir(path: str) -> str:
    """``path`` (a directory) resolved component by component, each checked with the rules
    for directories passed through (the last one is not: see :func:`open_dir`)."""
    todo = [p for p in os.path.join(os.getcwd(), path).split("/") if p and p != "."]
    cur = "/"
    links = 0
    while todo:
        name = todo.pop(0)
        if name == "..":
            cur = os.path.dirname(cur)
            continue
        _check_passed(cur, os.stat(cur))
        nxt = os.path.join(cur, name)
        st = os.lstat(nxt)
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > _MAX_LINKS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
            if st.st_uid not in _root_like():
                raise UnsafePath(path, f"'{nxt}' is a symbolic link owned by {_owner_name(st.st_uid)}")
            target = os.readlink(nxt)
            if target.startswith("/"):
                cur = "/"
            todo[0:0] = [p for p in target.split("/") if p and p != "."]
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), nxt)
        cur = nxt
    return cur


def open_dir(path: str, run_as: RunAs | None) -> int:
    """An ``O_DIRECTORY`` descriptor of ``path`` once every rule holds (caller closes it).

    Files are then opened relative to it (``dir_fd``): what was checked is what is used.
    """
    real = resolve_dir(path)
    fd = os.open(real, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        _check_holder(real, os.fstat(fd), run_as)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _split(path: str) -> tuple[str, str]:
    head, name = os.path.split(path)
    if name in ("", ".", ".."):
        raise OSError(errno.EISDIR, "not a file name", path)
    return head or ".", name


def _check_file(path: str, fd: int) -> os.stat_result:
    return _check_stat(path, os.fstat(fd))


def _check_stat(path: str, st: os.stat_result) -> os.stat_result:
    if stat.S_ISCHR(st.st_mode):
        return st  # /dev/null, a console: only root can make device files (CAP_MKNOD)
    if not stat.S_ISREG(st.st_mode):
        raise UnsafePath(path, f"'{path}' is not a regular file")
    if st.st_nlink != 1:
        raise UnsafePath(path, f"'{path}' has {st.st_nlink} hard links (one may point at another file)")
    return st


def _open_in(dfd: int, path: str, name: str, flags: int, mode: int) -> tuple[int, bool]:
    """Open ``name`` in ``dfd`` (no link followed), creating it with O_EXCL if missing;
    (fd, created)."""
    for _ in range(3):
        try:
            return os.open(name, flags | _OPEN_FLAGS, dir_fd=dfd), False
        except FileNotFoundError:
            pass
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise UnsafePath(path, f"'{path}' is a symbolic link") from None
            raise
        try:
            return os.open(name, flags | _OPEN_FLAGS | os.O_CREAT | os.O_EXCL, mode, dir_fd=dfd), True
        except FileExistsError:
            continue  # appeared meanwhile: open what is there now, by the same rules
    raise UnsafePath(path, f"'{path}' keeps appearing and disappearing")


def open_append(path: str, run_as: RunAs | None = None, mode: int = 0o666) -> int:
    """A descriptor appending to the regular file ``path`` (created with ``mode``, less the
    umask, if missing), opened by the rules above.

    With ``run_as`` while still root: a new file is given to that user (``fchown``), and the
    file must then be writable by that user through its path (it reopens the file on SIGHUP),
    else :class:`NotWritable`.
    """
    head, name = _split(path)
    dfd = open_dir(head, run_as)
    try:
        fd, created = _open_in(dfd, path, name, os.O_WRONLY | os.O_APPEND, mode)
    finally:
        os.close(dfd)
    try:
        _check_file(path, fd)
        os.set_blocking(fd, True)
        if run_as is not None and os.geteuid() == 0 and run_as.uid != 0:
            if created:
                os.fchown(fd, run_as.uid, run_as.gid)
            if not writable_by(path, run_as):
                raise NotWritable(path, f"not writable by {run_as}, who reopens it on SIGHUP after -u (the "
                                        f"file must be the user's or writable by it, and every directory above "
                                        f"it open to it)")
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_append(path: str, run_as: RunAs | None = None) -> None:
    """Raise what :func:`open_append` would raise for ``path``, without opening or creating
    the file (``--check-config``): the directory rules, then a symbolic link, something that
    is not a regular file or a file with several links where the file would be."""
    head, name = _split(path)
    dfd = open_dir(head, run_as)
    try:
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return
    finally:
        os.close(dfd)
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePath(path, f"'{path}' is a symbolic link")
    _check_stat(path, st)


def create_excl(dfd: int, path: str, name: str, mode: int) -> int:
    """Create ``name`` in the checked directory ``dfd``: O_CREAT|O_EXCL|O_NOFOLLOW, read-write."""
    try:
        return os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode, dir_fd=dfd)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafePath(path, f"'{path}' is a symbolic link") from None
        raise


def make_dir(path: str, run_as: RunAs | None, mode: int = 0o700) -> None:
    """Make sure the directory ``path`` exists, for the -u user to write in.

    Missing: created with ``mode`` (parents as root's 0755) and handed to ``run_as`` with
    ``fchown`` on its descriptor. Existing: the directory rules apply, and with ``run_as`` it
    must be writable by that user (else :class:`NotWritable`, naming it).
    """
    path = os.path.join(os.getcwd(), path)
    head, name = _split(path.rstrip("/") or "/")
    if not os.path.isdir(head):
        os.makedirs(head, 0o755, exist_ok=True)
    pfd = open_dir(head, run_as)
    try:
        created = False
        try:
            os.mkdir(name, mode, dir_fd=pfd)
            created = True
        except FileExistsError:
            pass
        try:
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnsafePath(path, f"'{path}' is not a directory (or is a symbolic link)") from None
            raise
    finally:
        os.close(pfd)
    try:
        st = os.fstat(fd)
        if created and run_as is not None and os.geteuid() == 0:
            if st.st_uid != os.geteuid():  # someone swapped in their own directory
                raise UnsafePath(path, f"'{path}' was replaced while it was created")
            os.fchown(fd, run_as.uid, run_as.gid)
            st = os.fstat(fd)
        _check_holder(path, st, run_as)
    finally:
        os.close(fd)
    if run_as is not None and os.geteuid() == 0 and not writable_by(path, run_as, os.W_OK | os.X_OK):
        raise NotWritable(path, f"directory not writable by {run_as}, who writes in it after -u")


# -- acting as the -u user


@contextmanager
def as_user(run_as: RunAs | None) -> Iterator[None]:
    """Run the block with the effective uid, gid and groups of ``run_as`` (while root).

    Files created in the block belong to the user, and the kernel checks every access as
    the user: a link to a file the user may not write fails instead of being followed with
    root's rights. The real uid stays 0, so root comes back afterwards; effective ids are
    process-wide, so this is only for the single-threaded start (threads that write as the
    user are started after the drop). Without ``run_as``, or when not root: nothing changes.
    """
    if run_as is None or os.geteuid() != 0 or run_as.uid == 0:
        yield
        return
    groups, egid = os.getgroups(), os.getegid()
    os.setgroups(list(run_as.groups))
    os.setegid(run_as.gid)
    os.seteuid(run_as.uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(egid)
        os.setgroups(groups)


def writable_by(path: str, run_as: RunAs | None, how: int = os.W_OK) -> bool:
    """Whether ``run_as`` (None: this process) may access ``path`` ``how``: the kernel's own
    check (``faccessat(AT_EACCESS)`` under :func:`as_user`), so ACLs, read-only mounts and
    search permission on every directory above count."""
    with as_user(run_as):
        return os.access(path, how, effective_ids=True)


def require_writable(path: str, run_as: RunAs | None, what: str, how: int = os.W_OK) -> None:
    """:class:`NotWritable` unless ``run_as`` may write ``path`` (``what`` says who needs it)."""
    if run_as is None or os.geteuid() != 0:
        return
    if not writable_by(path, run_as, how):
        raise NotWritable(path, f"'{path}' is not writable by {run_as}, who {what} after -u")


# -- UNIX sockets


def bind_unix(
    sock: socket.socket, path: str, run_as: RunAs | None, mode: int, uid: int = -1, gid: int = -1,
    backlog: int = 64,
) -> tuple[int, int]:
    """Bind ``sock`` to ``path`` with ``mode`` (and owner ``uid``/``gid``) from the start, and
    return the socket file's (st_dev, st_ino).

    The socket is bound in a fresh directory of our own (0700, in the checked directory of
    ``path``), where nobody else can swap a name, given its mode by the umask at bind() and
    its owner by ``chown`` relative to that directory, listening (a stream socket, with
    ``backlog``) before it is renamed to ``path``, so a client that finds the name is never
    refused. Nothing is
    ever chmod'ed or chown'ed through a name another user could replace (ulogd2 does both on
    the path after bind(): a link swapped in makes root change the link's target).
    """
    head, name = _split(path)
    dfd = open_dir(head, run_as)
    tmp = f".{name}.{secrets.token_hex(6)}"
    tfd = -1
    try:
        os.mkdir(tmp, 0o700, dir_fd=dfd)
        try:
            tfd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
            st = os.fstat(tfd)
            if st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) & 0o077:
                raise UnsafePath(path, f"the directory made to bind '{path}' was replaced")
            old = os.umask(0o777 & ~mode)
            try:
                # The kernel resolves the name through our descriptor: no path to race.
                sock.bind(f"/proc/self/fd/{tfd}/s")
            finally:
                os.umask(old)
            if uid != -1 or gid != -1:
                os.chown("s", uid, gid, dir_fd=tfd, follow_symlinks=False)
            st = os.stat("s", dir_fd=tfd, follow_symlinks=False)
            if sock.type == socket.SOCK_STREAM:
                sock.listen(backlog)
            os.rename("s", name, src_dir_fd=tfd, dst_dir_fd=dfd)
            return st.st_dev, st.st_ino
        finally:
            if tfd >= 0:
                try:
                    os.unlink("s", dir_fd=tfd)
                except OSError:
                    pass
                os.close(tfd)
            try:
                os.rmdir(tmp, dir_fd=dfd)
            except OSError:
                pass
    finally:
        os.close(dfd)
