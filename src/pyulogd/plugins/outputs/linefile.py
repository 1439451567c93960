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
from typing import TYPE_CHECKING

from pyulogd.core.errors import PluginError
from pyulogd.core.plugin import Sink

if TYPE_CHECKING:
    from pyulogd.core.context import Context

# Pending text that forces a write before the batch ends.
FLUSH_AT = 64 * 1024
_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC


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

    def open(self) -> None:
        try:
            self.fd = os.open(self.path, _OPEN_FLAGS, 0o666)
        except OSError as e:
            raise PluginError(f"{self.label}: can't open log file {self.path!r}: {e.strerror}") from e

    def add(self, line: str) -> None:
        self.pending.append(line)
        self.size += len(line)
        if self.size >= self.limit:
            self.flush()

    def flush(self) -> None:
        pending = self.pending
        if not pending:
            return
        # Prefix bytes that were not UTF-8 go out exactly as the kernel gave them.
        data = "".join(pending).encode("utf-8", "surrogateescape")
        lines = len(pending)
        pending.clear()
        self.size = 0
        if self.fd < 0:
            self._lost(lines, "file is not open")
            return
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError as e:
            # Lines already written stay written; the rest of this batch is lost.
            self._lost(lines if len(view) == len(data) else data[-len(view) :].count(b"\n"), e.strerror)
            return
        if self._failing:
            self._failing = False
            self.ctx.log.notice(f"{self.label}: writing to {self.path!r} works again")

    def _lost(self, lines: int, reason: str | None) -> None:
        self.ctx.stats.incr(self._errors_name)
        self.ctx.stats.incr(self._lost_name, lines)
        if not self._failing:  # once per burst of failures
            self._failing = True
            self.ctx.log.error(f"{self.label}: can't write to {self.path!r}: {reason}; dropping lines")

    def reopen(self) -> None:
        """SIGHUP (log rotation): new lines go to a freshly opened file of the same name."""
        self.flush()
        try:
            fd = os.open(self.path, _OPEN_FLAGS, 0o666)
        except OSError as e:
            self.ctx.log.error(f"{self.label}: can't reopen {self.path!r}: {e.strerror}; keeping old file")
            return
        old, self.fd = self.fd, fd
        if old >= 0:
            os.close(old)

    def close(self) -> None:
        self.flush()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1



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
