"""An unprivileged user for the file-opening tests: directories it owns, links it plants.

The tests run as root (the daemon's situation) and act as ``nobody`` in forked children,
so every link is planted by a user who really cannot write the file it points at.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import tempfile
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pyulogd.core.safefile import RunAs


def nobody() -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        return None


def why_skip() -> str | None:
    if os.geteuid() != 0:
        return "needs root (the daemon's situation)"
    if nobody() is None:
        return "needs user nobody"
    return None


def run_as_nobody() -> RunAs:
    pw = pwd.getpwnam("nobody")
    return RunAs.lookup(pw.pw_name, pw.pw_uid, pw.pw_gid)


def as_nobody(fn: Callable[[], object]) -> None:
    """Run ``fn`` in a child process that has become ``nobody``; fail if it fails."""
    pw = pwd.getpwnam("nobody")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.setgroups([])
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
            fn()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child acting as nobody failed"


def nobody_can(path: Path | str, mode: int) -> bool:
    """Whether ``nobody`` can reach ``path`` with ``mode`` (``os.R_OK``, ``os.X_OK``): asked in a
    child that has become nobody, so every directory on the way counts (a checkout under a
    root-only directory, as CI's, is out of its reach)."""
    pw = pwd.getpwnam("nobody")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.setgroups([])
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
            code = 0 if os.access(path, mode) else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def plant_link(target: Path, link: Path) -> None:
    """``ln -s target link`` as nobody."""
    as_nobody(lambda: os.symlink(target, link))
    assert link.is_symlink()


@contextmanager
def reachable_tmp() -> Iterator[Path]:
    """A root 0755 directory under /tmp that nobody can reach (pytest's tmp_path is below a
    root 0700 directory), removed afterwards whatever happened."""
    d = Path(tempfile.mkdtemp(prefix="pyu-sf-", dir="/tmp"))
    try:
        os.chmod(d, 0o755)
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def users_dir(parent: Path, name: str = "users") -> Path:
    """A directory owned by nobody (0755): the one where nobody plants links."""
    d = parent / name
    d.mkdir()
    pw = pwd.getpwnam("nobody")
    os.chown(d, pw.pw_uid, pw.pw_gid)
    os.chmod(d, 0o755)
    return d


def make_victim(parent: Path, name: str = "victim") -> Path:
    """A root-only file (0600) that must never change."""
    v = parent / name
    v.write_text("root's secret\n")
    os.chmod(v, 0o600)
    return v


def snapshot(path: Path) -> tuple[bytes, int, int, int]:
    st = os.lstat(path)
    return path.read_bytes(), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
