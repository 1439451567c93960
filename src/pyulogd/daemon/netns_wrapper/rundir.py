"""The run directory: checked once, then used only through its descriptor; the files of each
namespace (named by a hash of the name), the per-name lock and the daemons' pidfiles."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from types import TracebackType

from pyulogd.daemon.netns_wrapper.names import NAME_MAX, file_stem, name_problem
from pyulogd.daemon.netns_wrapper.trust import Untrusted, check_ancestors, owner_problem


def _make_dirs(path: str) -> None:
    """``mkdir -p`` with mode 0755 for every directory made (os.makedirs gives parents 0777 & ~umask)."""
    missing = []
    p = os.path.abspath(path)
    while not os.path.lexists(p):
        missing.append(p)
        p = os.path.dirname(p)
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o755)
        except FileExistsError:
            pass


class RunDir:
    """The run directory, opened once and checked: root's, writable by nobody else, and so are
    the directories above it.

    Every file operation goes through the directory's descriptor with O_NOFOLLOW, new files
    are written to a fresh name (O_EXCL) and renamed into place, so even a directory that
    changed after the check could not make root follow a planted link.
    """

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self.fd = fd

    @classmethod
    def existing(cls, path: str) -> RunDir | None:
        """The checked run directory; None if it does not exist (then no daemon of ours runs).

        Untrusted if it (or a directory above it) could be changed by anybody but root.
        """
        try:
            return cls._open(path)
        except FileNotFoundError:
            return None

    @classmethod
    def create(cls, path: str) -> RunDir:
        """The checked run directory, made (mode 0755, parents too) if it does not exist."""
        _make_dirs(path)
        return cls._open(path)

    @classmethod
    def _open(cls, path: str) -> RunDir:
        real = os.path.realpath(path)
        check_ancestors(real)
        fd = os.open(real, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        problem = owner_problem(os.fstat(fd))
        if problem:
            os.close(fd)
            raise Untrusted(f"run directory {path}: {problem}")
        return cls(path, fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def path_of(self, fname: str) -> str:
        return os.path.join(self.path, fname)

    def read(self, fname: str, limit: int = 4096) -> bytes | None:
        """The start of a regular file of ours; None if there is none (or it is anything else)."""
        try:
            fd = os.open(fname, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=self.fd)
        except OSError:
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            return os.read(fd, limit)
        except OSError:
            return None
        finally:
            os.close(fd)

    def write(self, fname: str, data: bytes, mode: int = 0o644) -> None:
        """Replace ``fname`` with ``data``, atomically: a new file (O_EXCL) renamed over it."""
        tmp = f".{fname}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=self.fd)
        try:
            try:
                os.fchmod(fd, mode)  # whatever the umask
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            os.replace(tmp, fname, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except BaseException:
            self.unlink(tmp)
            raise

    def unlink(self, fname: str) -> None:
        try:
            os.unlink(fname, dir_fd=self.fd)
        except FileNotFoundError:
            pass

    def exists(self, fname: str) -> bool:
        try:
            os.stat(fname, dir_fd=self.fd, follow_symlinks=False)
        except OSError:
            return False
        return True

    def listdir(self) -> list[str]:
        return os.listdir(self.fd)


class NsFiles:
    """The wrapper's files for one namespace, all named by ``file_stem(name)``:
    ``STEM.conf`` (rendered config), ``STEM.pid`` (the daemon's pidfile), ``STEM.name`` (the
    name, for --wrapper-status and ``ip -all netns delete``) and ``.STEM.lock``."""

    def __init__(self, stem: str, name: str | None) -> None:
        self.stem = stem
        self.name = name  # None: the .name file is missing or does not belong to the stem
        self.conf = f"{stem}.conf"
        self.pid = f"{stem}.pid"
        self.meta = f"{stem}.name"
        self.lock = f".{stem}.lock"

    @classmethod
    def of(cls, name: str) -> NsFiles:
        return cls(file_stem(name), name)

    @classmethod
    def legacy(cls, name: str) -> NsFiles:
        """The files of a daemon started by a version that named them ``NAME.conf``/``NAME.pid``
        (and locked ``.NAME.lock``): still stopped on delete, so an upgrade leaves none behind."""
        return cls(name, name)

    @property
    def label(self) -> str:
        return self.name if self.name is not None else f"(unknown name, files {self.stem}.*)"


def is_stem(stem: str) -> bool:
    return len(stem) == 35 and stem.startswith("ns-") and all(c in "0123456789abcdef" for c in stem[3:])


def managed(rd: RunDir) -> list[NsFiles]:
    """Every namespace that has files of ours in the run directory, with its name when known
    (and those of an earlier version, whose files were named after a safe name)."""
    try:
        entries = rd.listdir()
    except OSError:
        return []
    stems = {e.rsplit(".", 1)[0] for e in entries if e.endswith((".pid", ".conf", ".name"))}
    out = []
    for stem in sorted(stems):
        if is_stem(stem):
            text = (rd.read(f"{stem}.name", NAME_MAX + 2) or b"").decode("ascii", "replace").removesuffix("\n")
            known = name_problem(text) is None and file_stem(text) == stem
            out.append(NsFiles(stem, text if known else None))
        elif name_problem(stem) is None and (rd.exists(f"{stem}.pid") or rd.exists(f"{stem}.conf")):
            out.append(NsFiles.legacy(stem))
    return out


def files_of(name: str) -> list[NsFiles]:
    """Where a daemon for ``name`` (a safe name) may have its files: ours, then an earlier version's."""
    return [NsFiles.of(name), NsFiles.legacy(name)]


class name_lock:  # noqa: N801 - used like a function: `with name_lock(rd, files):`
    """Serialise the wrapper's work on one namespace name (parallel rootwrap calls)."""

    def __init__(self, rd: RunDir, f: NsFiles) -> None:
        self.rd = rd
        self.fname = f.lock
        self.fd = -1

    def __enter__(self) -> None:
        dfd = self.rd.fd
        while True:
            fd = os.open(self.fname, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(self.fname, dir_fd=dfd, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                return
            os.close(fd)  # removed by a holder that finished: lock the new file

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        try:
            os.unlink(self.fname, dir_fd=self.rd.fd)  # still holding the lock: a waiter sees the inode change
        except OSError:
            pass
        os.close(self.fd)


def read_pid(rd: RunDir, fname: str) -> int | None:
    text = (rd.read(fname, 64) or b"").decode("ascii", "replace").strip()
    return int(text) if text.isdigit() and int(text) > 1 else None


def pidfile_locked(rd: RunDir, fname: str) -> bool:
    """A live daemon holds a lock on its pidfile (pyulogd: flock; ulogd2: fcntl)."""
    try:
        fd = os.open(fname, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=rd.fd)
    except OSError:
        return False
    try:
        for lock in (fcntl.flock, fcntl.lockf):
            try:
                lock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    return True
                continue
            lock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
