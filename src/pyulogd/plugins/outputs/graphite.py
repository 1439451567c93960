"""GRAPHITE: NFACCT counters to a Carbon plaintext receiver (ulogd2 ``ulogd_output_GRAPHITE.so``).

Per record (one nfacct counter) two lines, as 2.0.8 writes them::

    <prefix>.<sum.name>.pkts <sum.pkts> <ts>
    <prefix>.<sum.name>.bytes <sum.bytes> <ts>

``ts`` is ``oob.time.sec`` when it is valid and not zero (NFACCT ``timestamp=1``), else
the time of writing. Options ``host``, ``port`` (both required) and ``prefix``, as in 2.0.8.
The counter's name comes from outside and is escaped (pyulogd.core.escape): a newline in
it cannot start a metric line of its own (2.0.8 writes it raw).

2.0.8 connects once at start (a Carbon that is down fails the stack), sends with a
blocking socket, and on a failed send tries one reconnect and loses the data. Here the
TCP connection goes through pyulogd.io.sender: a Carbon that is down at start or restarts
later costs nothing but a log line; the lines wait in a bounded queue (``queue`` bytes,
1 MiB by default) and are sent, in order, after the reconnect (backoff 1 s doubling up to
``reconnect_max``). Lines that do not fit are counted in ``graphite.<id>.queue_overflow``.
"""

from __future__ import annotations

import signal
import socket
from typing import TYPE_CHECKING, Any

from pyulogd.core.errors import ConfigError, PluginError
from pyulogd.core.escape import escape_text
from pyulogd.core.options import Address, Port, Str
from pyulogd.core.plugin import OK, DataType, Key, KeyType, Option, Sink
from pyulogd.io.sender import FLUSH_AT, ReliableSender, resolve, sender_options

if TYPE_CHECKING:
    from pyulogd.core.context import Context


class GraphiteOutput(Sink):
    name = "GRAPHITE"
    so_name = "ulogd_output_GRAPHITE.so"
    description = "nfacct counters to a Graphite/Carbon plaintext receiver (tcp)"
    input_type = DataType.SUM
    options = (
        Option("host", Address(), "", help="Carbon host (required)"),
        Option("port", Port(services=True), None, help="Carbon plaintext port, usually 2003 (required)"),
        Option("prefix", Str(), "", help="metric path prefix: <prefix>.<counter>.pkts|bytes"),
        *sender_options(1 << 20),
    )
    input_keys = (
        Key("sum.name", KeyType.STRING),
        Key("sum.pkts", KeyType.UINT64),
        Key("sum.bytes", KeyType.UINT64),
        Key("oob.time.sec", KeyType.UINT32),
    )

    def __init__(self, ctx: Context, instance_id: str, config: dict[str, Any]) -> None:
        super().__init__(ctx, instance_id, config)
        self.out: ReliableSender | None = None
        self.prefix: str = config["prefix"]

    def configure(self) -> None:
        host, port = self.config["host"], self.config["port"]
        if not host or port is None:
            raise ConfigError("GRAPHITE needs host and port (the Carbon plaintext receiver)")
        self.out = ReliableSender(
            self.ctx, "GRAPHITE", f"{host}:{port}", [], f"graphite.{self.id}",
            queue_bytes=self.config["queue"], backoff_max=self.config["reconnect_max"], lines=True,
        )

    def start(self) -> None:
        out = self.out
        if out is None:
            raise PluginError(f"GRAPHITE instance '{self.id}' was not configured")
        try:
            out.targets = resolve(self.config["host"], self.config["port"], socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise PluginError(f"GRAPHITE: getaddrinfo: {e.strerror}") from e
        self._s_name, self._s_pkts, self._s_bytes, self._s_sec = self.in_slots
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

    def lines(self, rec: list[Any]) -> str:
        """The two metric lines of one record, as 2.0.8's snprintf makes them."""
        name = escape_text(rec[self._s_name] or "")
        ts = rec[self._s_sec]
        if not ts:
            ts = int(self.ctx.clock.wall())
        pkts = rec[self._s_pkts] or 0
        nbytes = rec[self._s_bytes] or 0
        p = f"{self.prefix}.{name}"
        return f"{p}.pkts {pkts} {ts}\n{p}.bytes {nbytes} {ts}\n"

    def interp(self, rec: list[Any]) -> int:
        out = self.out
        assert out is not None
        out.enqueue(self.lines(rec).encode("utf-8", "surrogateescape"), 1)
        if out.queued >= FLUSH_AT:
            out.flush()
        return OK
