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
1 MiB by default), then in the on-disk spool (``spool_dir``, ``spool_max``), and are sent,
in order, after the reconnect (backoff 0.25 s doubling up to ``reconnect_max``, 1 s). Lines
that do not fit anywhere are counted (``spool_full``; with ``spool_max=0``
``graphite.<id>.queue_overflow``).
Each record's lines are queued as they come (``pyulogd.io.streamsink``, ``batch=False``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pyulogd.core.errors import ConfigError
from pyulogd.core.escape import escape_text
from pyulogd.core.options import Address, Port, Str
from pyulogd.core.plugin import DataType, Key, KeyType, Option
from pyulogd.io.output import Output
from pyulogd.io.sender import Endpoint, sender_options, spool_settings
from pyulogd.io.streamsink import StreamSink

if TYPE_CHECKING:
    from pyulogd.core.context import Context


class GraphiteOutput(Output[str]):
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
        self.prefix: str = config["prefix"]

    def configure(self) -> None:
        if not self.config["host"] or self.config["port"] is None:
            raise ConfigError("GRAPHITE needs host and port (the Carbon plaintext receiver)")
        super().configure()

    def make_sink(self) -> StreamSink[str]:
        c = self.config
        return StreamSink(self.ctx, "GRAPHITE", Endpoint(c["host"], c["port"]), f"graphite.{self.id}",
                          queue_bytes=c["queue"], backoff_max=c["reconnect_max"], batch=False,
                          spool=spool_settings(self.ctx, c, self.id),
                          resolve_failed="{label}: getaddrinfo: {reason}")  # fmt: skip

    def prepare(self) -> None:
        self._s_name, self._s_pkts, self._s_bytes, self._s_sec = self.in_slots

    def render(self, rec: list[Any]) -> str:
        """The two metric lines of one record, as 2.0.8's snprintf makes them."""
        name = escape_text(rec[self._s_name] or "")
        ts = rec[self._s_sec]
        if not ts:
            ts = int(self.ctx.clock.wall())
        pkts = rec[self._s_pkts] or 0
        nbytes = rec[self._s_bytes] or 0
        p = f"{self.prefix}.{name}"
        return f"{p}.pkts {pkts} {ts}\n{p}.bytes {nbytes} {ts}\n"
