"""Appending whole records to a file that may fill up.

On a full filesystem ``write()`` first writes what fits (a short write) and then fails with
ENOSPC, so a batch can leave half a line or half a pcap record at the end of the file: the
next record that fits would be glued to it (a text line that reads as another, truncated
record; a pcap file nothing can read past that point). :func:`append` writes a batch and,
when it fails, cuts the file back to the end of the last whole record it wrote.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterable


class AppendError(OSError):
    """A failed append: ``kept`` records were written whole; ``torn`` is True when part of
    a record stayed in the file because it could not be cut back."""

    def __init__(self, cause: OSError, kept: int, torn: bool) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause))
        self.kept = kept
        self.torn = torn


def append(fd: int, data: bytes, ends: Callable[[], Iterable[int]] | None = None) -> None:
    """Write all of ``data`` to ``fd`` (opened with O_APPEND).

    ``ends``: gives the offset in ``data`` just after each record, ascending (called only
    when the write fails); None means records are lines (each ends with ``\\n``). Raises
    :class:`AppendError` when the write fails.
    """
    view = memoryview(data)
    done = 0
    try:
        while done < len(data):
            n = os.write(fd, view[done:])
            if n <= 0:  # not seen with regular files; never loop on it
                raise OSError(errno.EIO, "write() wrote nothing")
            done += n
    except OSError as e:
        if ends is None:
            whole = data.rfind(b"\n", 0, done) + 1
            kept = data.count(b"\n", 0, whole)
        else:
            whole, kept = 0, 0
            for end in ends():
                if end > done:
                    break
                whole, kept = end, kept + 1
        torn = done > whole and not _cut(fd, done - whole)
        raise AppendError(e, kept, torn) from e


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
