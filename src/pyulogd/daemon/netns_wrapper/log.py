"""The wrapper's messages: stderr (where the caller should know) and syslog, always one line."""

from __future__ import annotations

import sys

PROG = "pyulogd-netns-wrapper"


def log_safe(msg: str) -> str:
    """``msg`` as one line of printable text: control characters and undecodable bytes escaped.

    Every message passes through here on its way to stderr and syslog, so that nothing taken
    from a caller (a name, ip's or the daemon's output) can forge or split a log line.
    """
    if msg.isprintable():
        return msg
    out = []
    for c in msg:
        o = ord(c)
        if c.isprintable():
            out.append(c)
        elif c in "\n\r\t":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[c])
        elif 0xDC80 <= o <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
            out.append(f"\\x{o - 0xDC00:02x}")
        elif o < 0x100:
            out.append(f"\\x{o:02x}")
        else:
            out.append(f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}")
    return "".join(out)


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
