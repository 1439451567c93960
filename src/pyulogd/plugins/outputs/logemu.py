"""LOGEMU: syslog-style text file (ulogd2 ``ulogd_output_LOGEMU.so``).

Each record is ``"%.15s %s %s"``: ``Mmm dd HH:MM:SS`` (``ctime()`` columns 5-19, local
time, packet time from ``oob.time.sec`` when valid, else now), the short host name, and
the ``print`` string from PRINTPKT/PRINTFLOW (which ends in ``\\n``).

Writing: lines are collected and written with one ``os.write`` on an ``O_APPEND`` file
descriptor per batch (the loop calls ``flush()`` after each round of ready sockets, before
it waits for the next event), or as soon as 64 KiB are pending. That already gives what
``sync=1`` promises in ulogd2 (every record is in the file before the daemon waits for
more), so ``sync=1`` does not add a ``write()`` per record: at high rates that syscall
costs more than the rest of the record. Every write holds whole lines, so several stacks
appending to one file never interleave inside a line.
:class:`LineFile` is shared with the JSON output's file mode.

``netns_prefix=1`` (pyulogd extra) writes the record's network namespace (``oob.netns``,
from an input with ``netns=`` or ``network_namespace_path=``) as ``[<name>] `` between the
host name and the print string: ``Nov 27 09:14:05 host [qrouter-<id>] IN=qr-1 OUT=...``.
Records without a namespace, and every record with the default 0, keep ulogd2's format.
The name is escaped as every outside string is (pyulogd.core.escape), and so is the host
name: the ``print`` string comes escaped from PRINTPKT, so no name can start a line.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pyulogd.core.errors import PluginError
from pyulogd.core.escape import EscapeCache, escape_text
from pyulogd.core.plugin import OK, DataType, Key, KeyType, Option, OptionType, Sink
from pyulogd.io.append import AppendError, append

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
        self._lost_burst = 0  # lines lost in the current burst of failures
        self._torn = False  # a half line stayed at the end of the file

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
        """SIGHUP (log rotation): new lines go to a freshly opened file of the same name."""
        self.flush()
        try:
            fd = os.open(self.path, _OPEN_FLAGS, 0o666)
        except OSError as e:
            self.ctx.log.error(f"{self.label}: can't reopen {self.path!r}: {e.strerror}; keeping old file")
            return
        old, self.fd = self.fd, fd
        self._torn = False
        if old >= 0:
            _close(old)

    def close(self) -> None:
        self.flush()
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


class LogemuOutput(LineFileSink):
    name = "LOGEMU"
    so_name = "ulogd_output_LOGEMU.so"
    description = "Syslog-style text file, like the kernel's LOG target"
    reopen_label = "syslogemu"
    input_type = DataType.PACKET | DataType.FLOW
    options = (
        Option("file", OptionType.STRING, "/var/log/ulogd_syslogemu.log", help="file to append to"),
        Option("sync", OptionType.INT, 0, help="accepted; lines are written before the daemon waits"),
        Option("netns_prefix", OptionType.INT, 0, help="pyulogd extra: 1 puts '[<namespace>] ' before the "
               "print string of records from another network namespace (oob.netns)"),
    )
    input_keys = (
        Key("print", KeyType.STRING),
        Key("oob.time.sec", KeyType.UINT32, optional=True),
        Key("oob.netns", KeyType.STRING, optional=True),
    )

    def __init__(self, ctx: Context, instance_id: str, config: dict[str, Any]) -> None:
        super().__init__(ctx, instance_id, config)
        self.out = LineFile(
            ctx, str(config["file"]), bool(config["sync"]), f"logemu.{instance_id}", "LOGEMU"
        )
        self._sec = -1
        self._head = ""
        # Namespace names are outside strings: escaped (pyulogd.core.escape), cached by name.
        self.ns_text = EscapeCache(256)

    def start(self) -> None:
        self._s_print, self._s_sec, s_netns = self.in_slots
        # Slot 0 always reads None: without the option the namespace is never looked at.
        self._s_netns = s_netns if self.config.get("netns_prefix") else 0
        self.out.open()

    def new_second(self, sec: int) -> None:
        """The line head for a new second: ``Mmm dd hh:mm:ss hostname ``."""
        # ctime() is English whatever the locale, as in C; cached for the second.
        self._head = f"{time.ctime(sec)[4:19]} {escape_text(self.ctx.hostname)} "
        self._sec = sec

    def interp(self, rec: list[Any]) -> int:
        text = rec[self._s_print]
        if text is None:
            return OK
        sec = rec[self._s_sec]
        if sec is None:
            sec = int(self.ctx.now())
        if sec != self._sec:
            self.new_second(sec)
        out = self.out
        ns = rec[self._s_netns]
        line = self._head + text if ns is None else f"{self._head}[{self.ns_text(ns)}] {text}"
        out.pending.append(line)
        out.size += len(line)
        if out.size >= out.limit:
            out.flush()
        return OK
