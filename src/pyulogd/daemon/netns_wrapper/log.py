"""The wrapper's messages: stderr (where the caller should know) and syslog, always one line."""

from __future__ import annotations

import sys

from pyulogd.core.escape import escape_text

PROG = "pyulogd-netns-wrapper"


def log_safe(msg: str) -> str:
    """``msg`` as one line of printable text, by the daemon's one escaping rule
    (pyulogd.core.escape: control characters, ``\\`` and undecodable bytes escaped).

    Every message passes through here on its way to stderr and syslog, so that nothing taken
    from a caller (a name, ip's or the daemon's output) can forge or split a log line.
    """
    return escape_text(msg)


class Log:
    def __init__(self, use_syslog: bool) -> None:
        self.use_syslog = use_syslog
        self._opened = False

    def _syslog(self, prio: int, msg: str) -> None:
        if not self.use_syslog:
            return
        try:
            import syslog

            if not self._opened:
                syslog.openlog(PROG, syslog.LOG_PID, syslog.LOG_DAEMON)
                self._opened = True
            syslog.syslog(prio, log_safe(msg))
        except Exception:  # syslog is best effort
            pass

    def info(self, msg: str) -> None:
        """Success: syslog only, so that ip's output stays what ip printed."""
        self._syslog(6, msg)

    def notice(self, msg: str) -> None:
        """Worth an audit trail, but not the caller's business: syslog only."""
        self._syslog(5, msg)

    def warning(self, msg: str) -> None:
        self._stderr(msg)
        self._syslog(4, msg)

    def error(self, msg: str) -> None:
        self._stderr(msg)
        self._syslog(3, msg)

    @staticmethod
    def _stderr(msg: str) -> None:
        try:
            sys.stderr.write(f"{PROG}: {log_safe(msg)}\n")
            sys.stderr.flush()
        except OSError:
            pass
