"""Appending whole records to a file that may fill up.

On a full filesystem ``write()`` first writes what fits (a short write) and then fails with
ENOSPC, so a batch can leave half a line or half a pcap record at the end of the file: the
next record that fits would be glued to it (a text line that reads as another, truncated
record; a pcap file nothing can read past that point). :func:`append` writes a batch; when
it fails, :meth:`AppendError.settle` cuts the file back to the end of the last whole record
it wrote. The common case costs one ``write()`` and nothing more.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable


class AppendError(OSError):
    """A failed append of which ``done`` bytes reached the file."""

    def __init__(self, cause: OSError, done: int) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause))
        self.done = done

    def settle(self, fd: int, data: bytes, ends: Iterable[int] | None = None) -> tuple[int, bool]:
        """Cut off what was written of a record that did not fit; returns how many records
        were written whole, and whether part of one stayed because the file cannot be cut
        (a pipe, say). ``ends``: the offset in ``data`` just after each record, ascending;
        None means records are lines (each ends with ``\\n``)."""
        done = self.done
        if ends is None:
            whole = data.rfind(b"\n", 0, done) + 1
            kept = data.count(b"\n", 0, whole)
        else:
            whole, kept = 0, 0
            for end in ends:
                if end > done:
                    break
                whole, kept = end, kept + 1
        return kept, done > whole and not _cut(fd, done - whole)


def append(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (opened with O_APPEND); raises :class:`AppendError`."""
    done = 0
    try:
        done = os.write(fd, data)
        if done == len(data):
            return
        view = memoryview(data)
        while done < len(data):
            n = os.write(fd, view[done:])
            if n <= 0:  # not seen with regular files; never loop on it
                raise OSError(errno.EIO, "write() wrote nothing")
            done += n
    except OSError as e:
        raise AppendError(e, done) from e


def _cut(fd: int, extra: int) -> bool:
    """Remove the last ``extra`` bytes of the file (the part of a record a failed write
    left); False if that is not possible."""
    try:
        size = os.fstat(fd).st_size
        if size < extra:
            return False
        os.ftruncate(fd, size - extra)
    except OSError:
        return False
    return True
