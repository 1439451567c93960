"""The daemon's own log, in ulogd's format: ``<ctime> <L> <file>:<line> <message>``.

Levels are ulogd's: 1 DEBUG, 3 INFO, 5 NOTICE, 7 ERROR, 8 FATAL.

Two rules make the log safe to write whatever happens:

* Every message is escaped here (pyulogd.core.escape), whoever wrote it: messages carry
  namespace names, prefixes and config values, and a newline in one must not forge a log
  line, nor a byte that is not UTF-8 make syslog() raise. No caller can forget it.
* Writing the log never stops the daemon. When the log file cannot be written (ENOSPC,
  EIO, EBADF...) the line goes to standard error instead (which may fail too: then it is
  dropped), is counted (``log.lines_lost``), and once the file takes lines again a notice
  says how many were lost. A line the filesystem only half took is cut off again, so the
  next line does not start in the middle of it. SIGHUP's reopen that fails keeps the old file.
"""

from __future__ import annotations

import os
import sys
import syslog
import time
from typing import TYPE_CHECKING, TextIO

from pyulogd.core import safefile
from pyulogd.core.append import AppendError, append
from pyulogd.core.escape import escape_text

if TYPE_CHECKING:
    from pyulogd.core.stats import Stats

DEBUG, INFO, NOTICE, ERROR, FATAL = 1, 3, 5, 7, 8
_SYSLOG_LEVEL = {DEBUG: syslog.LOG_DEBUG, INFO: syslog.LOG_INFO, NOTICE: syslog.LOG_NOTICE,
                 ERROR: syslog.LOG_ERR, FATAL: syslog.LOG_CRIT}
LOST = "log.lines_lost"


def _open_log(path: str, run_as: safefile.RunAs | None = None) -> int:
    """The log file, for appending: the one place this module opens a file, by
    core/safefile.py's rules (root never follows a link planted in its directory; with -u
    the file is one the user can reopen on SIGHUP)."""
    return safefile.open_append(path, run_as)


def _stamp() -> str:
    return time.strftime("%a %b %e %H:%M:%S %Y")


class Logger:
    def __init__(self, stats: Stats | None = None) -> None:
        self.level = NOTICE
        self.level_forced = False  # -l given: the config's loglevel= is ignored
        self.verbose = False
        self.path: str | None = None  # None: syslog (ulogd's default until logfile= is read)
        self.fd = -1  # the log file (logfile=PATH)
        self.stream: TextIO | None = None  # logfile=stdout, or a stream a test hands in
        # Where lines go while the log cannot be written; None: sys.stderr at that moment.
        self.fallback: TextIO | None = None
        self.stats = stats  # Context() shares its counters with its logger
        self.lines_lost = 0
        self.last_error: str | None = None
        self.run_as: safefile.RunAs | None = None  # -u: the user who reopens the file on SIGHUP
        self._syslog_open = False
        self._failing: str | None = None  # why the log cannot be written, while it cannot
        self._lost_since = 0  # lines lost since the log last worked
        self._torn = False  # a half line could not be cut off: start the next write on a new line

    def set_destination(self, path: str) -> None:
        """``logfile=`` value: a path, ``stdout`` or ``syslog``. Raises OSError (at start,
        where a log file that cannot be opened is a configuration error)."""
        self.close()
        if path == "syslog":
            self.path = None
        elif path == "stdout":
            self.path = "stdout"
            self.stream = sys.stdout
        else:
            self.fd = _open_log(path, self.run_as)
            self.path = path

    def reopen(self) -> None:
        """SIGHUP (log rotation): a fresh file of the same name; if it cannot be opened
        (ENOSPC, EACCES...) the old one stays in use. Never raises."""
        if self.fd < 0 or self.path is None:
            return
        try:
            fd = _open_log(self.path, self.run_as)
        except OSError as e:
            self.error(f"can't reopen the log file '{self.path}': {e.strerror}; going on with the old one")
            return
        old, self.fd = self.fd, fd
        self._torn = False  # a half line in the old file stays there
        try:
            os.close(old)
        except OSError:
            pass

    def close(self) -> None:
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1
        if self.stream is not None and self.stream is not sys.stdout:
            try:
                self.stream.close()
            except (OSError, ValueError):
                pass
        self.stream = None

    def log(self, level: int, msg: str) -> None:
        if level < self.level and level < ERROR:
            return
        msg = escape_text(msg)
        if level >= ERROR:
            self.last_error = msg
        if level < self.level:
            return
        if self.fd < 0 and self.stream is None:
            self._syslog(level, msg)
            return
        frame = sys._getframe(2)
        line = f"{_stamp()} <{level}> {os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno} {msg}\n"
        if not self._write(line):
            return  # the line went to standard error (or nowhere)
        if self.verbose and self.stream is not sys.stdout:
            self._to_stderr(line)

    def _write(self, line: str) -> bool:
        """Write one line to the log file or stream; True if it got there."""
        text = line
        if self._failing is not None:
            # The first line that gets through says how many did not.
            where = f"log.py:{sys._getframe().f_lineno}"
            text = (f"{_stamp()} <{NOTICE}> {where} the daemon log works again; {self._lost_since} "
                    f"line(s) could not be written to it ({self._failing})\n") + line
        try:
            if self.fd >= 0:
                data = text.encode("utf-8", "surrogateescape")
                head = 1 if self._torn else 0  # a half line stayed: end it first
                if head:
                    data = b"\n" + data
                try:
                    append(self.fd, data)
                except AppendError as e:
                    kept, torn = e.settle(self.fd, data)  # whole lines stay, a half one goes
                    self._torn = torn or (bool(head) and not kept)
                    if self._failing is not None and kept > head:
                        self._lost_since = 0  # the notice got through, this line did not
                    raise
                self._torn = False
            elif self.stream is not None:
                self.stream.write(text)
                self.stream.flush()
        except (OSError, ValueError) as e:  # ValueError: a closed stream
            self._lost(line, (e.strerror if isinstance(e, OSError) else None) or str(e))
            return False
        self._failing = None
        self._lost_since = 0
        return True

    def _syslog(self, level: int, msg: str) -> None:
        try:
            if not self._syslog_open:
                syslog.openlog("pyulogd", syslog.LOG_PID, syslog.LOG_DAEMON)
                self._syslog_open = True
            syslog.syslog(_SYSLOG_LEVEL.get(level, syslog.LOG_NOTICE), msg)
        except (OSError, ValueError) as e:  # glibc reports nothing; Python's wrapper might
            self._lost(f"{_stamp()} <{level}> {msg}\n", str(e))

    def _lost(self, line: str, reason: str) -> None:
        """Count a line the log did not take, and put it on standard error instead."""
        self.lines_lost += 1
        self._lost_since += 1
        if self.stats is not None:
            self.stats.incr(LOST)
        first = self._failing is None
        self._failing = reason
        if first:
            dest = self.path or "syslog"
            line = (f"pyulogd: can't write the daemon log ({dest}): {escape_text(reason)}; "
                    f"log lines go to standard error until it works again\n") + line
        self._to_stderr(line)

    def _to_stderr(self, line: str) -> None:
        out = self.fallback or sys.stderr
        try:
            out.write(line)
            out.flush()
        except (OSError, ValueError, AttributeError):  # AttributeError: no sys.stderr at all
            pass

    def debug(self, msg: str) -> None:
        self.log(DEBUG, msg)

    def info(self, msg: str) -> None:
        self.log(INFO, msg)

    def notice(self, msg: str) -> None:
        self.log(NOTICE, msg)

    def error(self, msg: str) -> None:
        self.log(ERROR, msg)

    def fatal(self, msg: str) -> None:
        self.log(FATAL, msg)
