"""Files and directories root may rely on: owned by root, writable by nobody else, all the way up.

The wrapper reads its settings and template and writes its run directory as root on behalf of
a less trusted caller, so a file that anybody else could have written or swapped is refused.
"""

from __future__ import annotations

import os
import stat

MAX_SETTINGS_BYTES = 1 << 20


class Untrusted(Exception):
    """A file or directory that root would read or write, but that someone else could change."""


def owner_problem(st: os.stat_result, *, sticky_ok: bool = False) -> str | None:
    """Why a file or directory with this ``stat`` cannot be trusted by root, or None."""
    if st.st_uid not in (0, os.geteuid()):
        return f"owned by uid {st.st_uid}, not root"
    if st.st_mode & 0o022 and not (sticky_ok and stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX):
        return f"writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def check_ancestors(real: str) -> None:
    """Every directory above the resolved path ``real`` is root's and writable by nobody else.

    Otherwise someone could rename a checked file away and put their own in its place.  A
    sticky directory (``/tmp``) is accepted: others may add entries there, but cannot rename
    or remove root's.
    """
    chain: list[str] = []
    d = os.path.dirname(real)
    while True:
        chain.append(d)
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    for d in reversed(chain):
        st = os.stat(d)
        problem = owner_problem(st, sticky_ok=True)
        if problem:
            raise Untrusted(f"{d}: {problem}")


def read_trusted(path: str, limit: int = MAX_SETTINGS_BYTES) -> str:
    """The text of a root-owned file that only root can change (settings file, template).

    FileNotFoundError if it (or a directory above it) does not exist; Untrusted if anybody
    but root could have written it; UnicodeDecodeError if it is not UTF-8.
    """
    real = os.path.realpath(path)
    check_ancestors(real)
    fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Untrusted(f"{path}: not a regular file")
        problem = owner_problem(st)
        if problem:
            raise Untrusted(f"{path}: {problem}")
        data = os.read(fd, limit + 1)
        if len(data) > limit:
            raise Untrusted(f"{path}: larger than {limit} bytes")
    finally:
        os.close(fd)
    return data.decode("utf-8")
