"""SYSLOG: each record's ``print`` string to the system logger (ulogd2 ``ulogd_output_SYSLOG.so``).

ulogd2 calls ``openlog("ulogd", LOG_NDELAY|LOG_PID, LOG_DAEMON)`` and then
``syslog(facility|level, "%s", print)`` per record. pyulogd writes the same bytes glibc
puts on ``/dev/log``: ``<PRI>Mmm dd HH:MM:SS ulogd[PID]: <print>`` (local time of writing,
day space-padded, the print string with its trailing newline), one datagram per record.

Options as in 2.0.8: ``facility`` (``LOG_KERN``, or ``LOG_DAEMON``, ``LOG_LOCAL0`` ...
``LOG_LOCAL7``, ``LOG_USER``; exact spelling) and ``level`` (``LOG_NOTICE``, or
``LOG_EMERG`` ... ``LOG_DEBUG``); anything else is a configuration error. pyulogd extras:
``socket`` (the local socket, ``/dev/log``), or ``host`` with ``port`` and ``proto``
(``udp``, or ``tcp`` with RFC 6587 octet counting; with ``tls=1`` and the ``tls_*`` options,
RFC 5425: the same frames over TLS) for a remote syslog daemon, and
``queue``/``reconnect_max``/``spool_dir``/``spool_max``.

Unlike glibc (which drops messages silently while the syslog daemon is away) records wait
in a bounded queue, then in the on-disk spool, while the daemon restarts or is down, are sent
when it is back, and what does not fit is counted (``spool_full``; with ``spool_max=0``
``syslog.<id>.queue_overflow``); see pyulogd.io.sender. Over udp or ``/dev/log`` a receiver
that is gone is seen only from an error on a later send (docs/security.md). Each record
is queued as it comes (``pyulogd.io.dgramsink``; over tcp ``pyulogd.io.streamsink``, each frame
resent whole after a broken connection).
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from pyulogd.core.loss import audit_text
from pyulogd.core.options import Address, Choice, Path, Port
from pyulogd.core.plugin import DataType, Key, KeyType, Option
from pyulogd.io.dgramsink import DgramSink
from pyulogd.io.output import Output
from pyulogd.io.sender import Endpoint, sender_options, spool_settings
from pyulogd.io.streamsink import SenderSink, StreamSink
from pyulogd.io.tls import TlsSettings, tls_options, tls_settings

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


class SyslogOutput(Output[bytes]):
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
               help="pyulogd extra: udp, or tcp (octet-counted frames; with tls=1, RFC 5425)"),
        *sender_options(1 << 20),
        *tls_options(),
    )
    input_keys = (Key("print", KeyType.STRING),)

    def __init__(self, ctx: Context, instance_id: str, config: dict[str, Any]) -> None:
        super().__init__(ctx, instance_id, config)
        self.pri = 0
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
        self._tcp = bool(self.config["host"]) and self.config["proto"] == "tcp"
        self._tls: TlsSettings | None = tls_settings(self.config, self.config["host"], stream=self._tcp)
        super().configure()

    def make_sink(self) -> SenderSink[bytes]:
        c = self.config
        where = Endpoint(c["host"], c["port"]) if c["host"] else Endpoint(path=c["socket"])
        kind = StreamSink if self._tcp else DgramSink
        return kind(self.ctx, "SYSLOG", where, f"syslog.{self.id}", queue_bytes=c["queue"],
                    backoff_max=c["reconnect_max"], batch=False, lines=False,
                    spool=spool_settings(self.ctx, c, self.id), tls=self._tls)  # fmt: skip

    def prepare(self) -> None:
        self._tag = f" {IDENT}[{os.getpid()}]: ".encode()
        self._s_print = self.in_slots[0]

    def header(self, now: float) -> bytes:
        """``<PRI>Mmm dd HH:MM:SS ulogd[PID]: `` for the current second (glibc's ``%h %e %T``)."""
        sec = int(now)
        if sec != self._sec:
            tm = time.localtime(sec)
            stamp = f"{_MONTHS[tm.tm_mon - 1]} {tm.tm_mday:2d} {tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d}"
            self._head = f"<{self.pri}>{stamp}".encode() + self._tag
            self._sec = sec
        return self._head

    def render_audit(self, rec: list[Any]) -> bytes | None:
        """The syslog message of every record, its text the audit keys as key=value (docs/loss.md)."""
        msg: bytes = self.header(self.ctx.clock.wall()) + audit_text(rec, self.audit_base).encode()
        if self._tcp:
            msg = b"%d %s" % (len(msg), msg)
        return msg

    def render(self, rec: list[Any]) -> bytes | None:
        text = rec[self._s_print]
        if text is None:
            return None
        msg: bytes = self.header(self.ctx.clock.wall()) + text.encode("utf-8", "surrogateescape")
        if self._tcp:
            msg = b"%d %s" % (len(msg), msg)
        return msg
