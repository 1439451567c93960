"""The daemon's own log, in ulogd's format: ``<ctime> <L> <file>:<line> <message>``.

Levels are ulogd's: 1 DEBUG, 3 INFO, 5 NOTICE, 7 ERROR, 8 FATAL.
"""

from __future__ import annotations

import os
import sys
import syslog
import time
from typing import TextIO

from pyulogd.core import safefile

DEBUG, INFO, NOTICE, ERROR, FATAL = 1, 3, 5, 7, 8
_SYSLOG_LEVEL = {DEBUG: syslog.LOG_DEBUG, INFO: syslog.LOG_INFO, NOTICE: syslog.LOG_NOTICE,
                 ERROR: syslog.LOG_ERR, FATAL: syslog.LOG_CRIT}


class Logger:
    def __init__(self) -> None:
        self.level = NOTICE
        self.level_forced = False  # -l given: the config's loglevel= is ignored
        self.verbose = False
        self.path: str | None = None  # None: syslog (ulogd's default until logfile= is read)
        self.stream: TextIO | None = None
        self._syslog_open = False
        self.last_error: str | None = None
        self.run_as: safefile.RunAs | None = None  # -u: the user who reopens the file on SIGHUP

    def set_destination(self, path: str) -> None:
        """``logfile=`` value: a path, ``stdout`` or ``syslog``."""
        self.close()
        if path == "syslog":
            self.path = None
        elif path == "stdout":
            self.path = "stdout"
            self.stream = sys.stdout
        else:
            self.path = path
            self.stream = _open_log(path, self.run_as)

    def reopen(self) -> None:
        if self.path not in (None, "stdout") and self.path is not None:
            old = self.stream
            self.stream = _open_log(self.path, self.run_as)
            if old is not None:
                old.close()

    def close(self) -> None:
        if self.stream is not None and self.stream is not sys.stdout:
            self.stream.close()
        self.stream = None

    def log(self, level: int, msg: str) -> None:
        if level >= FATAL or level >= ERROR:
            self.last_error = msg
        if level < self.level:
            return
        if self.stream is None:
            if not self._syslog_open:
                syslog.openlog("pyulogd", syslog.LOG_PID, syslog.LOG_DAEMON)
                self._syslog_open = True
            syslog.syslog(_SYSLOG_LEVEL.get(level, syslog.LOG_NOTICE), msg)
            return
        frame = sys._getframe(2)
        where = f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"
        line = f"{time.strftime('%a %b %e %H:%M:%S %Y')} <{level}> {where} {msg}\n"
        self.stream.write(line)
        self.stream.flush()
        if self.verbose and self.stream is not sys.stdout:
            sys.stderr.write(line)

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


def _open_log(path: str, run_as: safefile.RunAs | None = None) -> TextIO:
    """The log file, opened by core/safefile.py's rules: root never follows a link planted
    in its directory, and with -u the file is one the user can reopen."""
    fd = safefile.open_append(path, run_as)
    return os.fdopen(fd, "a", encoding="utf-8", errors="backslashreplace")
