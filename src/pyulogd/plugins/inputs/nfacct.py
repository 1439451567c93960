"""NFACCT input: the kernel's extended accounting objects (``ulogd_inpflow_NFACCT.so``).

Counters are made with ``nfacct add NAME`` and fed by rules (iptables ``-m nfacct
--nfacct-name NAME``). Every ``pollinterval`` seconds, the first time one interval after
start, and on SIGUSR2, the input asks the kernel for every counter (reset to zero with
``zerocounter=1``, so each record is the delta since the last dump) and emits one record
per counter once the whole multipart answer is in. Same options and keys as ulogd2 2.0.8,
with these differences:

* The socket is never read blockingly: the answer is read by the loop as it arrives.
* A refused dump is logged (the first time, then at most once per 10 s: core/ratelimit.py) with
  the kernel's reason; 2.0.8 logs nothing. The usual one is EPERM: the request needs
  CAP_NET_ADMIN, which pyulogd keeps when ``-u`` drops root (docs/security.md), while
  2.0.8 silently writes nothing after ``-u``.
* Malformed answers are counted (``nfacct.<id>.malformed``) and skipped; a dump still
  running at the next poll is closed with the counters it had (``dumps_incomplete``).
* ``network_namespace_path`` (as ulogd2 HEAD) and ``netns``/``netns_dir``/``netns_rescan``
  (the counters of every matching namespace, as they come and go), with the keys
  ``oob.netns``, ``neutron.router_id`` and ``neutron.network_id`` after ulogd's
  (docs/netns.md).
"""

from __future__ import annotations

import errno
import os
import signal
from typing import Any

from pyulogd.codec import nfacct as codec
from pyulogd.core.context import Context, TimerHandle
from pyulogd.core.errors import ConfigError, PluginError
from pyulogd.core.options import Bool, Duration
from pyulogd.core.plugin import DataType, Key, KeyType, Option
from pyulogd.core.ratelimit import Burst
from pyulogd.io.netlink import NetlinkSocket
from pyulogd.io.netns import in_netns
from pyulogd.netns.source import NETNS_KEYS, NETNS_OPTIONS, NetnsSource

# Dump answers come in chunks of at most 32 KiB (the kernel's netlink dump size).
BUFSIZE = 65536
MAX_READS = 64
FINAL_DUMP_WAIT = 1.0  # the last dump of a deleted namespace's counters
# The capability every request on the socket needs (kept across -u, see daemon/caps.py).
CAPABILITIES = ("CAP_NET_ADMIN",)


OPTIONS = (
    Option("pollinterval", Duration(hi=0x7FFFFFFF, positive=True), 0,
           help="seconds between two dumps of the counters (required, > 0)"),
    Option("zerocounter", Bool(), 1, help="reset the counters at each dump, so records carry the packets and "
           "bytes since the previous dump; 0: running totals"),
    Option("timestamp", Bool(), 0, help="set oob.time.sec/usec to the time the dump was requested"),
)

T = KeyType
OUTPUT_KEYS = (
    Key("sum.name", T.STRING, help="name of the nfacct object"),
    Key("sum.pkts", T.UINT64, help="packets counted (since the previous dump with zerocounter=1)"),
    Key("sum.bytes", T.UINT64, help="bytes counted (since the previous dump with zerocounter=1)"),
    Key("sum", T.RAW, help="the kernel's netlink message for this object"),
    Key("oob.time.sec", T.UINT32, help="time the dump was requested, seconds (timestamp=1)"),
    Key("oob.time.usec", T.UINT32, help="microseconds of oob.time.sec (timestamp=1)"),
)

STAT_NAMES = (
    "records", "dumps", "dumps_incomplete", "dumps_refused", "malformed", "unexpected",
    "send_errors", "recv_errors", "enobufs",
)  # fmt: skip


class NfacctInput(NetnsSource):
    name = "NFACCT"
    so_name = "ulogd_inpflow_NFACCT.so"
    output_type = DataType.SUM
    options = OPTIONS + NETNS_OPTIONS
    output_keys = OUTPUT_KEYS + NETNS_KEYS
    description = "nfacct accounting objects, polled ('nfacct add NAME', iptables -m nfacct)"
    capabilities = CAPABILITIES
    capability_reason = "dumps the nfacct counters every pollinterval seconds (netlink requests)"

    def __init__(self, ctx: Context, instance_id: str, config: dict[str, Any]) -> None:
        super().__init__(ctx, instance_id, config)
        self.sock: NetlinkSocket | None = None
        self.interval: float = config["pollinterval"]
        self.zero: bool = config["zerocounter"]
        self.timestamp: bool = config["timestamp"]
        self._timer: TimerHandle | None = None
        # The dump in progress: its sequence number, when it was sent (monotonic clock;
        # wall clock for the oob.time keys) and the counters received so far.
        self._seq: int | None = None
        self._sent_mono = 0.0
        self._time: tuple[int, int] | None = None
        self._counters: list[codec.Counter] = []
        self._again = False  # a poll came while a dump ran: dump again when it ends
        p = f"nfacct.{instance_id}."
        self.stat = {n: p + n for n in STAT_NAMES}
        self._limits = {n: Burst() for n in ("refused", "malformed", "io")}

    # -- life cycle

    def configure(self) -> None:
        super().configure()
        # The kind refuses a given value of 0 or less; this is for the option left out.
        if self.interval <= 0:
            raise ConfigError(f"NFACCT instance '{self.id}': option 'pollinterval' must be set to a number of "
                              "seconds greater than 0 (ulogd2: 'You have to set pollint')")  # fmt: skip

    def start_input(self) -> None:
        try:
            with in_netns(self.netns_handle):  # the socket stays in the namespace it is made in
                self.sock = NetlinkSocket(bufsize=BUFSIZE, clock=self.ctx.clock)
        except OSError as e:
            raise PluginError(f"unable to open nfnetlink socket: {e.strerror or e}") from None
        loop = self.ctx.loop
        loop.add_reader(self.sock.fileno(), self._readable)
        self._timer = loop.call_later(self.interval, self.poll, repeat=True)

    def stop_input(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        sock = self.sock
        if sock is not None:
            self.ctx.loop.remove_reader(sock.fileno())
            sock.close()
            self.sock = None
        self._seq = None
        self._counters = []

    def signal_input(self, signum: int) -> None:
        if signum == signal.SIGUSR2 and self._seq is None:
            self.request()

    def netns_released(self) -> None:
        """The namespace was deleted: dump its counters one last time, or what they counted
        since the last poll would be lost with it (waits up to ``FINAL_DUMP_WAIT`` s)."""
        if self.sock is None:
            return
        if self._seq is None:
            self.request()
        deadline = self.ctx.clock.monotonic() + FINAL_DUMP_WAIT
        while self._seq is not None and self.sock is not None:
            if self.ctx.clock.monotonic() >= deadline:
                self.ctx.stats.incr(self.stat["dumps_incomplete"])
                self._again = False
                self._finish()
                return
            self.ctx.clock.wait_readable(self.sock.fileno(), deadline)
            self._readable()

    # -- polling

    def poll(self) -> None:
        """The timer's work: dump now, or right after the dump that is still running."""
        if self._seq is not None:
            if self.ctx.clock.monotonic() - self._sent_mono < self.interval / 2:
                # A SIGUSR2 dump sent just before: the kernel would answer EBUSY.
                self._again = True
                return
            # The previous poll's dump is still running: the rest of its answer is not
            # coming (the kernel never leaves a dump half done on its own). Keep what arrived.
            self.ctx.stats.incr(self.stat["dumps_incomplete"])
            self._again = False
            self._finish()
        self.request()

    def request(self) -> None:
        """Send one dump request; the answer is read by the loop."""
        sock = self.sock
        if sock is None:
            return
        seq = sock.next_seq()
        now = self.ctx.clock.wall()
        try:
            sock.send(codec.dump_request(seq, self.zero, sock.portid))
        except OSError as e:
            self.ctx.stats.incr(self.stat["send_errors"])
            self._report("io", f"NFACCT '{self.id}': sending the dump request failed: {_why(e)}")
            return
        self._seq = seq
        self._sent_mono = self.ctx.clock.monotonic()
        self._time = divmod(round(now * 1_000_000), 1_000_000) if self.timestamp else None
        self._counters = []
        self._again = False
        self.ctx.stats.incr(self.stat["dumps"])

    # -- answers

    def _readable(self) -> None:
        sock = self.sock
        if sock is None:
            return
        try:
            sock.drain(self.feed, self._overrun, MAX_READS)
        except OSError as e:
            self.ctx.stats.incr(self.stat["recv_errors"])
            self._report("io", f"NFACCT '{self.id}': receive failed: {_why(e)}")

    def feed(self, buf: bytes) -> None:
        """Handle one datagram as read from the socket (tests and replay tools call this too)."""
        batch = codec.parse_buffer(buf, self._seq)
        stats = self.ctx.stats
        if batch.counters:
            self._counters.extend(batch.counters)
        if batch.malformed:
            stats.incr(self.stat["malformed"], batch.malformed)
            n = self._limits["malformed"].due(self.ctx.clock.wall(), batch.malformed)
            if n:
                self.ctx.log.notice(f"NFACCT '{self.id}': skipped {n} malformed netlink message(s) "
                                    f"({stats.get(self.stat['malformed'])} in total), e.g.: {batch.problem}")
        if batch.stray:
            stats.incr(self.stat["unexpected"], batch.stray)
        if batch.error is not None:
            stats.incr(self.stat["dumps_refused"])
            hint = ""
            if batch.error == errno.EPERM:
                hint = (" (dumping nfacct counters needs CAP_NET_ADMIN; with -u pyulogd keeps it, "
                        "unless it could not: see docs/security.md)")  # fmt: skip
            self._report("refused", f"NFACCT '{self.id}': the kernel refused the dump: "
                                    f"{os.strerror(batch.error)}{hint}")  # fmt: skip
            self._finish()
        elif batch.done:
            self._finish()

    def _finish(self) -> None:
        """The dump ended (or is given up): emit its counters, in the kernel's order."""
        counters, self._counters = self._counters, []
        self._seq = None
        sec, usec = self._time if self._time is not None else (None, None)
        emit = self.emit
        for c in counters:
            emit([None, c.name, c.pkts, c.nbytes, c.raw, sec, usec])
        if counters:
            self.ctx.stats.incr(self.stat["records"], len(counters))
        if self._again:
            self.request()

    def _overrun(self) -> None:
        # Only unicast answers arrive here, so this should not happen; count it if it does.
        self.ctx.stats.incr(self.stat["enobufs"])
        self._report("io", f"NFACCT '{self.id}': the kernel dropped answers (ENOBUFS)")

    def _report(self, kind: str, msg: str) -> None:
        n = self._limits[kind].due(self.ctx.clock.wall())
        if n:
            self.ctx.log.error(msg if n == 1 else f"{msg} ({n} times since the last report)")


def _why(e: OSError) -> str:
    return e.strerror or str(e)
