"""Whole-line text files, shared by the file outputs (LOGEMU, JSON's file mode, XML, GPRINT,
OPRINT, NACCT); moved out of LOGEMU's module so that no plugin module imports another.

Lines are collected and written with one ``os.write`` on an ``O_APPEND`` file descriptor per
batch (the loop calls ``flush()`` after each round of ready sockets, before it waits for the
next event), or as soon as 64 KiB are pending. Every write holds whole lines, so several
stacks appending to one file never interleave inside a line. ``sync`` (ulogd2's per-record
flush) changes nothing: every record is already in the file before the daemon waits for
more (see plugins/outputs/logemu.py).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import TYPE_CHECKING

from pyulogd.core import safefile
from pyulogd.core.append import AppendError, append
from pyulogd.core.errors import PluginError
from pyulogd.core.plugin import Sink

if TYPE_CHECKING:
    from pyulogd.core.context import Context
    from pyulogd.io.chain import LineChain

# Pending text that forces a write before the batch ends.
FLUSH_AT = 64 * 1024


class LineFile:
    """An append-only text file written in whole-line batches."""

    def __init__(self, ctx: Context, path: str, sync: bool, stat_prefix: str, label: str) -> None:
        self.ctx = ctx
        self.path = path
        self.fd = -1
        # Interp code appends here directly; it is cleared in place, never replaced.
        self.pending: list[str] = []
        self.size = 0
        # sync is accepted for compatibility; see the module docstring for why it changes nothing.
        self.sync = sync
        self.limit = FLUSH_AT
        self.label = label
        self._errors_name = stat_prefix + ".write_errors"
        self._lost_name = stat_prefix + ".lines_lost"
        self._failing = False
        self._lost_burst = 0  # lines lost in the current burst of failures
        self._torn = False  # a half line stayed at the end of the file
        # Tamper evidence (io/chain.py, option chain_key): lines are sealed as they are written.
        self.chain: LineChain | None = None

    def open(self) -> None:
        try:
            self.fd = safefile.open_append(self.path, self.ctx.run_as)
        except OSError as e:
            raise PluginError(f"{self.label}: can't open log file {self.path!r}: {e.strerror}") from e
        if self.chain is not None and not self.chain.resume(self.path):
            self.ctx.log.notice(f"{self.chain.label}: no sealed line in {self.path!r}: a new chain starts there")

    def add(self, line: str) -> None:
        self.pending.append(line)
        self.size += len(line)
        if self.size >= self.limit:
            self.flush()

    def flush(self) -> None:
        pending = self.pending
        if not pending:
            return
        if self.chain is not None:
            pending[:] = self.chain.seal_all(pending)
        # Outside strings were escaped by whoever made the line (pyulogd.core.escape), so this
        # is plain UTF-8; surrogateescape only keeps a bug elsewhere from raising here.
        data = "".join(pending).encode("utf-8", "surrogateescape")
        lines = len(pending)
        if self.fd < 0:
            pending.clear()
            self.size = 0
            self._lost(lines, "file is not open")
            return
        # After a half line that could not be cut off, start on a line of our own.
        if self._torn:
            data = b"\n" + data
        try:
            append(self.fd, data)
        except AppendError as e:
            # Whole lines written stay written, a half one is cut off; the rest is lost.
            head = 1 if self._torn else 0
            kept, torn = e.settle(self.fd, data, _ends(pending, head))
            self._torn = torn or (bool(head) and not kept)
            pending.clear()
            self.size = 0
            self._lost(lines - max(0, kept - head), e.strerror)
            return
        pending.clear()
        self.size = 0
        self._torn = False
        if self._failing:
            self._failing = False
            self.ctx.log.notice(f"{self.label}: writing to {self.path!r} works again "
                                f"({self._lost_burst} line(s) lost)")

    def _lost(self, lines: int, reason: str | None) -> None:
        self.ctx.stats.incr(self._errors_name)
        self.ctx.stats.incr(self._lost_name, lines)
        if not self._failing:  # once per burst of failures
            self._failing = True
            self._lost_burst = 0
            self.ctx.log.error(f"{self.label}: can't write to {self.path!r}: {reason}; dropping lines")
        self._lost_burst += lines

    def reopen(self) -> None:
        """SIGHUP (log rotation): new lines go to a freshly opened file of the same name,
        opened by the same rules (after -u, as the user: docs/security.md)."""
        self.flush()
        if self.chain is not None:
            self.ctx.log.notice(self.chain.anchor())
        try:
            fd = safefile.open_append(self.path, self.ctx.run_as)
        except OSError as e:
            self.ctx.log.error(f"{self.label}: can't reopen {self.path!r}: {e.strerror}; keeping old file")
            return
        old, self.fd = self.fd, fd
        self._torn = False
        if old >= 0:
            _close(old)

    def close(self) -> None:
        self.flush()
        if self.chain is not None and self.chain.chain.seq:
            self.ctx.log.notice(self.chain.anchor())
        if self.fd >= 0:
            _close(self.fd)
            self.fd = -1


def _ends(items: list[str], start: int) -> Iterator[int]:
    """Where each item ends in the bytes written (after ``start`` bytes of our own)."""
    pos = start
    if start:
        yield start
    for item in items:
        pos += len(item.encode("utf-8", "surrogateescape"))
        yield pos


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:  # EIO of a last delayed write: nothing to do about it any more
        pass


class LineFileSink(Sink):
    """An output writing whole lines to one file: LOGEMU, GPRINT, OPRINT. SIGHUP reopens it."""

    out: LineFile
    # How ulogd2 names the plugin in its "reopening logfile" notice.
    reopen_label = ""

    def stop(self) -> None:
        self.out.close()

    def flush(self) -> None:
        self.out.flush()

    def signal(self, signum: int) -> None:
        if signum == signal.SIGHUP:
            self.ctx.log.notice(f"{self.reopen_label}: reopening logfile")
            self.out.reopen()
