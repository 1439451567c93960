"""SYSLOG: each record's ``print`` string to the system logger (ulogd2 ``ulogd_output_SYSLOG.so``).

ulogd2 calls ``openlog("ulogd", LOG_NDELAY|LOG_PID, LOG_DAEMON)`` and then
``syslog(facility|level, "%s", print)`` per record. pyulogd writes the same bytes glibc
puts on ``/dev/log``: ``<PRI>Mmm dd HH:MM:SS ulogd[PID]: <print>`` (local time of writing,
day space-padded, the print string with its trailing newline), one datagram per record.

Options as in 2.0.8: ``facility`` (``LOG_KERN``, or ``LOG_DAEMON``, ``LOG_LOCAL0`` ...
``LOG_LOCAL7``, ``LOG_USER``; exact spelling) and ``level`` (``LOG_NOTICE``, or
``LOG_EMERG`` ... ``LOG_DEBUG``); anything else is a configuration error. pyulogd extras:
``socket`` (the local socket, ``/dev/log``), or ``host`` with ``port`` and ``proto``
(``udp``, or ``tcp`` with RFC 6587 octet counting) for a remote syslog daemon, and
``queue``/``reconnect_max``.

Unlike glibc (which drops messages silently while the syslog daemon is away) records wait
in a bounded queue while the daemon restarts or is down, are sent when it is back, and what
does not fit is counted (``syslog.<id>.queue_overflow``); see pyulogd.io.sender.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from typing import TYPE_CHECKING, Any

from pyulogd.core.errors import PluginError
from pyulogd.core.options import Address, Choice, Path, Port
from pyulogd.core.plugin import OK, DataType, Key, KeyType, Option, Sink
from pyulogd.io.sender import FLUSH_AT, ReliableSender, Target, resolve, sender_options, unix_target

if TYPE_CHECKING:
    from pyulogd.core.context import Context

FACILITIES = {
    "LOG_DAEMON": 3 << 3,
    "LOG_KERN": 0,
    "LOG_LOCAL0": 16 << 3,
    "LOG_LOCAL1": 17 << 3,
    "LOG_LOCAL2": 18 << 3,
    "LOG_LOCAL3": 19 << 3,
    "LOG_LOCAL4": 20 << 3,
    "LOG_LOCAL5": 21 << 3,
    "LOG_LOCAL6": 22 << 3,
    "LOG_LOCAL7": 23 << 3,
    "LOG_USER": 1 << 3,
}
LEVELS = {
    "LOG_EMERG": 0,
    "LOG_ALERT": 1,
    "LOG_CRIT": 2,
    "LOG_ERR": 3,
    "LOG_WARNING": 4,
    "LOG_NOTICE": 5,
    "LOG_INFO": 6,
    "LOG_DEBUG": 7,
}
IDENT = "ulogd"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class SyslogOutput(Sink):
    name = "SYSLOG"
    so_name = "ulogd_output_SYSLOG.so"
    description = "The print string of each record to syslog, as ulogd's syslog() calls put it on /dev/log"
    input_type = DataType.PACKET | DataType.FLOW
    options = (
        Option("facility", Choice(*FACILITIES, fold_case=False, what="facility"), "LOG_KERN",
               help="LOG_KERN, LOG_DAEMON, LOG_USER, LOG_LOCAL0..7"),
        Option("level", Choice(*LEVELS, fold_case=False, what="level"), "LOG_NOTICE",
               help="LOG_EMERG, LOG_ALERT, LOG_CRIT, LOG_ERR, LOG_WARNING, LOG_NOTICE, LOG_INFO, LOG_DEBUG"),
        Option("socket", Path(), "/dev/log", extra=True, help="pyulogd extra: the local syslog socket "
               "(unix datagram)"),
        Option("host", Address(), "", extra=True, help="pyulogd extra: a remote syslog daemon instead of the "
               "local socket"),
        Option("port", Port(services=True), "514", extra=True, help="pyulogd extra: port of host"),
        Option("proto", Choice("udp", "tcp", what="proto"), "udp", extra=True,
               help="pyulogd extra: udp, or tcp (octet-counted frames)"),
        *sender_options(1 << 20),
    )
    input_keys = (Key("print", KeyType.STRING),)

    def __init__(self, ctx: Context, instance_id: str, config: dict[str, Any]) -> None:
        super().__init__(ctx, instance_id, config)
        self.pri = 0
        self.out: ReliableSender | None = None
        self._sec = -1
        self._head = b""
        self._tag = b""
        self._tcp = False

    def configure(self) -> None:
        facility, level = self.config["facility"], self.config["level"]
        self.pri = FACILITIES[facility] | LEVELS[level]
        if not FACILITIES[facility]:
            # glibc's syslog() reads facility 0 (LOG_KERN) as "the openlog() facility", and
            # ulogd opens the log with LOG_DAEMON: LOG_KERN|LOG_NOTICE goes out as <29>.
            self.pri |= FACILITIES["LOG_DAEMON"]
        host = self.config["host"]
        self._tcp = bool(host) and self.config["proto"] == "tcp"
        peer = f"{host}:{self.config['port']}" if host else self.config["socket"]
        self.out = ReliableSender(
            self.ctx, "SYSLOG", peer, [], f"syslog.{self.id}",
            queue_bytes=self.config["queue"], backoff_max=self.config["reconnect_max"],
        )

    def start(self) -> None:
        out = self.out
        if out is None:
            raise PluginError(f"SYSLOG instance '{self.id}' was not configured")
        host = self.config["host"]
        targets: list[Target]
        if host:
            kind = socket.SOCK_STREAM if self._tcp else socket.SOCK_DGRAM
            try:
                targets = resolve(host, self.config["port"], kind)
            except socket.gaierror as e:
                raise PluginError(f"SYSLOG: cannot resolve {out.peer}: {e.strerror}") from e
        else:
            targets = unix_target(self.config["socket"], socket.SOCK_DGRAM)
        out.targets = targets
        out.datagram = not self._tcp
        self._tag = f" {IDENT}[{os.getpid()}]: ".encode()
        self._s_print = self.in_slots[0]
        out.open()

    def stop(self) -> None:
        if self.out is not None:
            self.out.close()

    def flush(self) -> None:
        if self.out is not None:
            self.out.flush()

    def signal(self, signum: int) -> None:
        if signum == signal.SIGHUP and self.out is not None:
            self.out.reopen()

    def header(self, now: float) -> bytes:
        """``<PRI>Mmm dd HH:MM:SS ulogd[PID]: `` for the current second (glibc's ``%h %e %T``)."""
        sec = int(now)
        if sec != self._sec:
            tm = time.localtime(sec)
            stamp = f"{_MONTHS[tm.tm_mon - 1]} {tm.tm_mday:2d} {tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d}"
            self._head = f"<{self.pri}>{stamp}".encode() + self._tag
            self._sec = sec
        return self._head

    def interp(self, rec: list[Any]) -> int:
        text = rec[self._s_print]
        if text is None:
            return OK
        msg = self.header(self.ctx.clock.wall()) + text.encode("utf-8", "surrogateescape")
        if self._tcp:
            msg = b"%d %s" % (len(msg), msg)
        out = self.out
        assert out is not None
        out.enqueue(msg)
        if out.queued >= FLUSH_AT:
            out.flush()
        return OK
