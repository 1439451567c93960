"""systemd's notify protocol (``sd_notify(3)``), spoken with the standard library.

Under ``Type=notify`` systemd passes ``NOTIFY_SOCKET`` (a path, or ``@name`` for an
abstract socket) and, with ``WatchdogSec=``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID``. The
daemon sends one datagram per message, newline-separated ``KEY=value`` lines:

* ``READY=1`` (with ``MAINPID=``) once every input is bound and every output open, so that
  units ordered after pyulogd, and an operator's ``systemctl start``, see a daemon that is
  already logging. With ``-d`` it comes from the child that runs, after the fork.
* ``STATUS=`` every :data:`STATUS_INTERVAL` seconds: records in, written, lost
  (``systemctl status`` shows it).
* ``WATCHDOG=1`` every half ``WATCHDOG_USEC``, from a timer of the daemon's own event loop:
  a loop that is stuck (a plugin spinning, a blocking call that never returns) stops
  pinging and systemd restarts the daemon. A thread would go on pinging for a dead loop.
  Only when ``WATCHDOG_PID`` is unset or ours (after ``-d`` it names the parent).
* ``STOPPING=1`` when the daemon starts shutting down.
* Never ``RELOADING=1``: SIGHUP keeps its ulogd meaning (reopen files after logrotate),
  which is not a reload of the configuration.

Sending never blocks and never raises: the socket is non-blocking, and a message systemd
cannot take is counted (``notify.send_errors``) and logged once per burst. No libsystemd.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyulogd.core.context import Context, TimerHandle

# Seconds between two STATUS= messages.
STATUS_INTERVAL = 5.0
# The fastest watchdog ping: a WatchdogSec= of a few milliseconds would otherwise make the
# loop spin on its timer.
MIN_PING_INTERVAL = 0.1
SEND_ERRORS = "notify.send_errors"


def parse_address(value: str) -> str | bytes | None:
    """The address ``NOTIFY_SOCKET`` names: a path, or an abstract name (``@name`` becomes
    ``b"\\0name"``); None for what we cannot send to (``vsock:``, a relative name)."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return b"\0" + os.fsencode(value[1:])
    return None


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between two ``WATCHDOG=1`` (half of ``WATCHDOG_USEC``, as sd_watchdog_enabled()
    advises), or None when no watchdog is asked of this process."""
    usec = environ.get("WATCHDOG_USEC", "")
    try:
        n = int(usec)
    except ValueError:
        return None
    if n <= 0:
        return None
    owner = environ.get("WATCHDOG_PID", "")
    if owner:
        try:
            if int(owner) != pid:
                return None
        except ValueError:
            return None
    return max(n / 2e6, MIN_PING_INTERVAL)


class Notifier:
    """Sends notify messages to ``address`` for the daemon of ``ctx``."""

    def __init__(self, ctx: Context, address: str | bytes, watchdog: float | None) -> None:
        self.ctx = ctx
        self.address = address
        self.watchdog = watchdog
        self.sock: socket.socket | None = socket.socket(
            socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
        )
        self._timers: list[TimerHandle] = []
        self._failing = False
        self.sent = 0  # messages systemd took

    @classmethod
    def from_environ(cls, ctx: Context, environ: Mapping[str, str], pid: int | None = None) -> Notifier | None:
        """A notifier if ``NOTIFY_SOCKET`` asks for one (read in the process that runs: after
        ``-d``, the child), else None."""
        value = environ.get("NOTIFY_SOCKET", "")
        if not value:
            return None
        address = parse_address(value)
        if address is None:
            ctx.log.error(f"NOTIFY_SOCKET={value!r}: not a socket path or @abstract name; not notifying systemd")
            return None
        pid = os.getpid() if pid is None else pid
        interval = watchdog_interval(environ, pid)
        if interval is None and environ.get("WATCHDOG_USEC"):
            ctx.log.notice(f"WATCHDOG_USEC is set for pid {environ.get('WATCHDOG_PID', '?')}, not for us "
                           f"({pid}): not sending WATCHDOG=1 (run under Type=notify without -d)")
        return cls(ctx, address, interval)

    def send(self, *lines: str) -> bool:
        """One datagram of ``KEY=value`` lines; False (counted, logged once per burst) if
        systemd did not take it."""
        sock = self.sock
        if sock is None:
            return False
        data = "\n".join(lines).encode("utf-8", "surrogateescape")
        try:
            sock.sendto(data, self.address)
        except OSError as e:
            self.ctx.stats.incr(SEND_ERRORS)
            if not self._failing:
                self._failing = True
                self.ctx.log.error(f"cannot notify systemd ({e.strerror or e}); counting in {SEND_ERRORS}")
            return False
        if self._failing:
            self._failing = False
            self.ctx.log.notice("notifying systemd works again")
        self.sent += 1
        return True

    def ready(self, status: str) -> bool:
        """Every input bound and output open: ``READY=1`` with our pid and the first status."""
        lines = ["READY=1", f"MAINPID={os.getpid()}", f"STATUS={_one_line(status)}"]
        if self.watchdog is not None:
            lines.append("WATCHDOG=1")
        return self.send(*lines)

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={_one_line(text)}")

    def ping(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.send("STOPPING=1", "STATUS=stopping")

    def start_timers(self, status: Callable[[], str], status_interval: float = STATUS_INTERVAL) -> None:
        """Ping the watchdog and refresh the status from the event loop's own timers: a loop
        that stops turning stops both (that is the point of the watchdog)."""
        loop = self.ctx.loop

        def ping() -> None:
            self.ping()

        def refresh() -> None:
            self.status(status())

        if self.watchdog is not None:
            self._timers.append(loop.call_later(self.watchdog, ping, repeat=True))
        self._timers.append(loop.call_later(status_interval, refresh, repeat=True))

    def close(self) -> None:
        for t in self._timers:
            t.cancel()
        self._timers.clear()
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _one_line(text: str) -> str:
    """A STATUS= value is the rest of its line: no newline may end it early."""
    return " ".join(text.split())
