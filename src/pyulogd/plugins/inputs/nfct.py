"""NFCT input: connection tracking events and table dumps (``ulogd_inpflow_NFCT.so``).

Modes, as ulogd2 2.0.8:

* **event mode with the flow table** (``hash_enable=1``, the default): the table is dumped at
  start into the flow table without output; NEW events are cached with their start time,
  UPDATE events refresh the cached entry, a DESTROY event emits one record (``ct.event`` 4)
  with ``flow.start`` from the table and ``flow.end``, and drops the entry.
* **event mode without the table** (``hash_enable=0``): NEW and DESTROY events are emitted as
  they come; UPDATE events are not (as in ulogd2) but counted (``nfct.<id>.updates_skipped``)
  instead of logging ``unsupported message type`` for each.
* **polling mode** (``pollinterval`` > 0, needs the table): every interval the table is dumped
  into the flow table; flows that are gone are emitted as DESTROY.
* **SIGUSR2**: dump and zero the kernel's counters; every entry is emitted as UPDATE
  (``ct.event`` 2) and, with the flow table, cached. Works without the table and with the
  input shared by several stacks (both crash ulogd2 2.0.8).

The flow table's rules are :class:`pyulogd.codec.nfct_flows.FlowTable`'s, a pure function of
the event and ``now`` (``apply``); this module is their shell: sockets, dumps, timers, counters.

Differences from 2.0.8 (see docs/compat.md):

* ENOBUFS on the event socket is counted (``nfct.<id>.enobufs``); with the flow table a resync
  follows after ``netlink_resync_timeout`` s: the table is dumped again, flows that vanished
  are emitted as DESTROY with ``flow.end`` (2.0.8 leaves it out), new ones are cached.
* Flows found by the initial dump may never send an event (``nf_conntrack_events=2``, the
  kernel's default, gives event state only to conntracks created while someone listens); while
  any is in the table it is compared with the kernel's every ``netlink_resync_timeout`` s and
  the ones gone are emitted (2.0.8 keeps them for ever).
* ``accept_src_filter``, ``accept_dst_filter``, ``accept_proto_filter`` run in the kernel as a
  socket filter on the event socket (as in 2.0.8; :mod:`pyulogd.codec.ctbpf`) and again in user
  space, to events and to dumps alike (2.0.8: events only). A flow whose address family has no
  network listed in an address filter is not accepted.
* New option ``accounting``: turn on ``nf_conntrack_acct`` and ``nf_conntrack_timestamp`` at
  start. Without it, a notice is logged once when a stack uses the packet/byte counters but
  accounting is off.
* ``hash_buckets`` is accepted and checked but has no effect (the table is a dict).
* ``network_namespace_path`` (as ulogd2 HEAD) and ``netns``/``netns_dir``/``netns_rescan``
  (follow namespaces as they come and go; each has its own flow table), with the keys
  ``oob.netns``, ``neutron.router_id`` and ``neutron.network_id`` after ulogd's
  (docs/netns.md). Sysctls (``accounting``) are those of the namespace.
"""

from __future__ import annotations

import errno
import os
import signal
from collections.abc import Callable, Iterator
from typing import Any

from pyulogd.codec import ctbpf
from pyulogd.codec import nfct as codec
from pyulogd.codec.nfct_filter import FlowFilter
from pyulogd.codec.nfct_flows import FlowTable, Key
from pyulogd.core import caps
from pyulogd.core.context import Context, TimerHandle
from pyulogd.core.errors import ConfigError, PluginError
from pyulogd.core.options import Bool, Duration, Int, Size, Str
from pyulogd.core.plugin import DataType, Option
from pyulogd.core.ratelimit import Burst
from pyulogd.io.netlink import NetlinkSocket
from pyulogd.io.netns import in_netns
from pyulogd.io.nlproblems import BatchProblems
from pyulogd.netns.source import NETNS_KEYS, NETNS_OPTIONS, NetnsSource

SOL_NETLINK = 270
NETLINK_BROADCAST_SEND_ERROR = 4
NETLINK_NO_ENOBUFS = 5
MAX_READS = 64  # datagrams per readable event; the loop comes back while more are waiting
READ_MANY = 256  # the same, on the hot path (read_many)
# Pacing (see _pace): the kernel charges an event datagram about 1280 bytes of receive
# buffer (truesize; measured, IPv4 and IPv6 alike fit its 1 KiB slab), 1536 to be safe.
EVENT_TRUESIZE = 1536
PACE_MIN_RATE = 2000.0  # events/s below which wake-ups cost too little to be worth a pause
PACE_MAX = 0.001  # seconds: the longest pause (output latency)
PACE_SHARE = 0.2  # of the buffer that may fill during a pause
PACE_MIN_CAPACITY = 512  # events; a smaller buffer could not take a burst during a pause
I_EVENT, UPDATE = codec.I_EVENT, codec.UPDATE
DUMP_TIMEOUT = 10.0  # seconds without any answer before a dump is given up
SYSCTL = "/proc/sys/net/netfilter/"
ACCT_SYSCTLS = ("nf_conntrack_acct", "nf_conntrack_timestamp")
EVENT_BUFSIZE = 1 << 16
# The event socket's receive buffer when netlink_socket_buffer_size is 0; the kernel doubles
# it: about 1,600 events, 20 ms of a 40k connections/s flood.
DEFAULT_RCVBUF = 1 << 20
DUMP_BUFSIZE = 1 << 17  # the kernel packs dump entries into datagrams of up to 32 KiB


# SO_RCVBUF(FORCE) takes a C int.
INT_MAX = 0x7FFFFFFF
OPTIONS = (
    Option("pollinterval", Duration(), 0, help="0: event mode; N > 0: dump the table every N seconds and emit "
           "flows that are gone (polling mode, needs hash_enable=1)"),
    Option("hash_enable", Bool(), 1, help="keep a table of live flows and emit one record per flow at its "
           "end, with start and end time; 0: emit NEW and DESTROY events as they come"),
    Option("hash_buckets", Int(1), 8192, help="accepted for compatibility; no effect"),
    Option("hash_max_entries", Int(1), 32768, help="most flows kept in the table; when full, new flows are "
           "not cached (counted in nfct.<id>.hash_full) and end without flow.start"),
    Option("event_mask", Int(0, 0xFFFFFFFF), 5, help="conntrack events to listen to: 1 NEW, 2 UPDATE, "
           "4 DESTROY (OR them)"),
    Option("netlink_socket_buffer_size", Size(0, INT_MAX), 0, help="initial receive buffer of the event "
           "socket, bytes; 0: 1 MiB (pyulogd's default; ulogd2 keeps the kernel's, 208 KiB)"),
    Option("netlink_socket_buffer_maxsize", Size(0, INT_MAX), 0, help="on ENOBUFS (lost events) double the "
           "receive buffer up to this many bytes; 0: never grow"),
    Option("netlink_resync_timeout", Duration(), 60, help="seconds after lost events before the flow table "
           "is resynchronised with the kernel's (hash_enable=1)"),
    Option("reliable", Bool(), 0, help="1: reliable event delivery (NETLINK_BROADCAST_SEND_ERROR and "
           "NETLINK_NO_ENOBUFS): the kernel rather delays conntrack than loses events"),
    Option("accept_src_filter", Str(), "", help="comma list of networks (addr/prefixlen): only flows whose "
           "original source is in one of them"),
    Option("accept_dst_filter", Str(), "", help="comma list of networks (addr/prefixlen): only flows whose "
           "original destination is in one of them"),
    Option("accept_proto_filter", Str(), "", help="comma list of protocols (tcp,udp,sctp,icmp,... or "
           "numbers): only flows of these layer-4 protocols"),
    Option("accounting", Bool(), 0, extra=True, help="pyulogd extra: 1 turns on "
           "net.netfilter.nf_conntrack_acct (packet/byte counters) and nf_conntrack_timestamp (kernel "
           "start/end times) at start"),
)

# Counters in ctx.stats, as nfct.<instance id>.<name>.
STAT_NAMES = (
    "events", "malformed", "enobufs", "netlink_errors", "unexpected", "truncated", "recv_errors",
    "updates_skipped", "filtered", "hash_full", "resyncs", "purged", "dump_errors",
)  # fmt: skip
_COUNTER_SLOTS = frozenset(codec.IDX[k] for k in ("orig.raw.pktlen", "orig.raw.pktcount",
                                                  "reply.raw.pktlen", "reply.raw.pktcount"))


class NfctInput(NetnsSource):
    name = "NFCT"
    so_name = "ulogd_inpflow_NFCT.so"
    output_type = DataType.FLOW
    options = OPTIONS + NETNS_OPTIONS
    output_keys = codec.OUTPUT_KEYS + NETNS_KEYS
    description = "connection tracking events and table dumps (flows, with NAT tuples)"
    # Kept after -u (permitted only, raised per request: core/caps.py): without it every dump
    # after start fails with EPERM.
    capabilities = ("CAP_NET_ADMIN",)
    capability_reason = ("dumps the conntrack table after start (SIGUSR2, resync after lost events, "
                         "pollinterval, flow checks) and grows its receive buffer (SO_RCVBUFFORCE)")

    def __init__(self, ctx: Context, instance_id: str, config: dict[str, Any]) -> None:
        super().__init__(ctx, instance_id, config)
        self.evsock: NetlinkSocket | None = None  # event groups (event mode)
        self.dsock: NetlinkSocket | None = None  # dumps and gets
        self.decoder = codec.Decoder()
        self.use_hash: bool = config["hash_enable"]
        # The flow table (hash_enable=1): the rules, sans-IO (codec/nfct_flows.py); this class
        # is their shell (sockets, dumps, timers, counters).
        self.table = FlowTable(config["hash_max_entries"])
        self.flows = self.table.flows  # the same dict, for reading (tests, logs)
        self._full = 0  # table.full already counted in stats
        self.accept: FlowFilter | None = None
        self._resync_timer: TimerHandle | None = None
        self._poll_timer: TimerHandle | None = None
        self._sweep_timer: TimerHandle | None = None
        # Flows of the initial dump that the kernel may never send events for (see _initial_dump).
        self._silent: set[Key] = set()
        self._rcvbuf_asked = 0
        self._capacity = 0.0  # events the receive buffer holds (for _pace)
        self._last_read = 0.0
        self._at_max = False
        self._truncated = 0
        self._told_updates = False
        self._told_acct = False
        p = f"nfct.{instance_id}."
        self.stat = {n: p + n for n in STAT_NAMES}
        self._burst = {n: Burst() for n in ("enobufs", "recv", "dump")}
        self._problems = BatchProblems(ctx, f"NFCT '{instance_id}'", p, "ctnetlink")

    # -- life cycle

    def configure(self) -> None:
        super().configure()
        c = self.config
        if c["pollinterval"] and not self.use_hash:
            raise ConfigError("NFCT polling mode requires the hashtable (pollinterval needs hash_enable=1)")
        try:
            self.accept = FlowFilter.parse(
                c["accept_src_filter"], c["accept_dst_filter"], c["accept_proto_filter"])
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if self.accept is not None and self.parent is None:  # once, not once per namespace
            self.ctx.log.notice(f"NFCT '{self.id}': accepting only flows matching {self.accept}")

    def start_input(self) -> None:
        c, log = self.config, self.ctx.log
        try:
            if c["pollinterval"]:
                self._open_dump_socket()
                self._poll_timer = self.ctx.loop.call_later(c["pollinterval"], self._poll, repeat=True)
                mode = "polling mode"
            else:
                self._open_event_socket()
                if self.use_hash:
                    self._open_dump_socket()
                mode = "event mode" if self.use_hash else "event no hash mode"
            self._accounting()
            if self.evsock is not None and self.use_hash:
                self._initial_dump()
        except BaseException:
            self._close()
            raise
        (log.notice if self.parent is None else log.debug)(f"NFCT plugin working in {mode}")

    def _open_event_socket(self) -> None:
        c, log = self.config, self.ctx.log
        mask = c["event_mask"]
        groups = mask & (codec.NF_NETLINK_CONNTRACK_NEW | codec.NF_NETLINK_CONNTRACK_UPDATE
                         | codec.NF_NETLINK_CONNTRACK_DESTROY)
        if groups != mask:
            log.notice(f"NFCT '{self.id}': event_mask {mask:#x} has bits beyond NEW|UPDATE|DESTROY (0x7); "
                       "they are ignored")
        if not groups:
            log.notice(f"NFCT '{self.id}': event_mask selects no events; only SIGUSR2 dumps will log")
        try:
            with in_netns(self.netns_handle):  # the socket stays in the namespace it is made in
                self.evsock = NetlinkSocket(groups=groups, bufsize=EVENT_BUFSIZE, recvmmsg=self.ctx.recvmmsg,
                                            clock=self.ctx.clock)
        except OSError as e:
            raise PluginError(f"error opening ctnetlink: {e.strerror or e}") from None
        sock = self.evsock
        size, maxsize = c["netlink_socket_buffer_size"], c["netlink_socket_buffer_maxsize"]
        if size:
            granted = sock.set_rcvbuf(size)
            self._rcvbuf_asked = size
            (log.notice if self.parent is None else log.debug)(f"NFCT netlink buffer size has been set to {granted}")
        else:
            # Not the kernel's default (208 KiB: some 160 events, a few ms of a flood; 2.0.8
            # keeps it and loses events at the first burst), see docs/compat.md.
            ask = min(DEFAULT_RCVBUF, maxsize) if maxsize else DEFAULT_RCVBUF
            granted = sock.set_rcvbuf(ask)
            self._rcvbuf_asked = ask
            log.debug(f"NFCT '{self.id}': netlink buffer size {granted} (pyulogd's default)")
        if maxsize and self._rcvbuf_asked >= maxsize:
            self._at_max = True
        self._capacity = granted / EVENT_TRUESIZE
        if c["reliable"]:
            try:
                sock.sock.setsockopt(SOL_NETLINK, NETLINK_BROADCAST_SEND_ERROR, 1)
                sock.sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
            except OSError as e:
                raise PluginError(f"cannot enable reliable event delivery: {e.strerror or e}") from None
            (log.notice if self.parent is None else log.debug)("NFCT reliable logging has been enabled.")
        if self.accept is not None:
            self._attach_filter(sock)
        self.ctx.loop.add_reader(sock.fileno(), self._readable)

    def _attach_filter(self, sock: NetlinkSocket) -> None:
        """The accept filters as a kernel socket filter, as ulogd2 does: events of other flows
        are dropped before they take room in the buffer. User space filters again (and alone,
        when the kernel refuses the program)."""
        assert self.accept is not None
        log = self.ctx.log
        try:
            prog = ctbpf.compile_filter(self.accept)
            sock.attach_filter(ctbpf.pack(prog))
        except (ctbpf.TooLarge, OSError) as e:
            log.notice(f"NFCT '{self.id}': accept filters applied in user space only "
                       f"(no kernel socket filter: {_why(e)})")  # fmt: skip
            return
        (log.info if self.parent is None else log.debug)(
            f"NFCT '{self.id}': accept filters attached to the event socket ({len(prog)} BPF instructions)")

    def _open_dump_socket(self) -> NetlinkSocket:
        if self.dsock is None:
            try:
                with in_netns(self.netns_handle):  # also for the resyncs and polls later on
                    self.dsock = NetlinkSocket(bufsize=DUMP_BUFSIZE, clock=self.ctx.clock)
            except OSError as e:
                raise PluginError(f"error opening ctnetlink: {e.strerror or e}") from None
        return self.dsock

    def stop_input(self) -> None:
        for t in (self._resync_timer, self._poll_timer, self._sweep_timer):
            if t is not None:
                t.cancel()
        self._resync_timer = self._poll_timer = self._sweep_timer = None
        self._close()

    def _close(self) -> None:
        if self.evsock is not None:
            self.ctx.loop.remove_reader(self.evsock.fileno())
            self.evsock.close()
            self.evsock = None
        if self.dsock is not None:
            self.dsock.close()
            self.dsock = None

    def signal_input(self, signum: int) -> None:
        if signum == signal.SIGUSR2:
            self.dump_and_zero()

    # Sysctls under /proc/sys/net are those of the reading thread's namespace.
    def _read_sysctl(self, name: str) -> str:
        with in_netns(self.netns_handle):
            return _read_sysctl(name)

    def _write_sysctl(self, name: str, value: str) -> None:
        # A namespace attached after -u: writing its net sysctls needs CAP_NET_ADMIN there.
        with in_netns(self.netns_handle), caps.raised("CAP_NET_ADMIN"):
            _write_sysctl(name, value)

    # -- accounting (nf_conntrack_acct, nf_conntrack_timestamp)

    def _accounting(self) -> None:
        log = self.ctx.log
        if self.config["accounting"]:
            for name in ACCT_SYSCTLS:
                try:
                    self._write_sysctl(name, "1")
                except OSError as e:
                    log.error(f"NFCT '{self.id}': cannot turn on net.netfilter.{name}: {e.strerror or e}")
        if not self._counters_used():
            return
        try:
            acct = self._read_sysctl("nf_conntrack_acct")
        except OSError:
            return  # no conntrack in this namespace yet: nothing reliable to say
        # Said once per configured instance, not once per namespace it follows.
        owner = self.parent if isinstance(self.parent, NfctInput) else self
        if acct == "0" and not owner._told_acct:
            owner._told_acct = True
            log.notice(f"NFCT '{self.id}': net.netfilter.nf_conntrack_acct is 0, so the packet and byte "
                       "counters (orig/reply.raw.pktcount, .pktlen) stay 0; set accounting=1 in "
                       f"[{owner.id}] or run 'sysctl -w net.netfilter.nf_conntrack_acct=1'")

    def _counters_used(self) -> bool:
        """Whether any stack reads one of the packet/byte counter keys."""
        for stack in self.stacks:
            for inst in getattr(stack, "instances", [])[1:]:
                if _COUNTER_SLOTS.intersection(inst.in_slots):
                    return True
        return False

    # -- events

    def _readable(self) -> None:
        sock = self.evsock
        if sock is None:
            return
        if sock.pending:  # answers that came while a request waited: the old way, in order
            self._drain(sock)
            return
        began = self.ctx.clock.monotonic()
        try:
            buf, spans, overruns = sock.read_many(READ_MANY)
        except OSError as e:
            self._recv_failed(e)
            return
        if spans:
            self._feed_spans(buf, spans)
        for _ in range(overruns):
            self._overrun()
        if sock.truncated != self._truncated:
            self.ctx.stats.incr(self.stat["truncated"], sock.truncated - self._truncated)
            self._truncated = sock.truncated
        if spans:
            self._pace(len(spans), began, sock.more)

    def _pace(self, n: int, began: float, more: bool = False) -> None:
        """After reading ``n`` datagrams (the round began at ``began``): let the loop pause
        before it waits again, so that the next round finds a batch rather than one event,
        if events come fast enough for that to matter. Reading, handling and pausing stay
        within the time a fifth of the receive buffer takes to fill at the current rate."""
        t = self.ctx.clock.monotonic()
        dt = began - self._last_read
        self._last_read = began
        if more or n >= READ_MANY or dt <= 0 or self._capacity < PACE_MIN_CAPACITY:
            return  # more are waiting: straight back; or no room for a burst
        rate = n / dt
        if rate >= PACE_MIN_RATE:
            pause = min(PACE_MAX, PACE_SHARE * self._capacity / rate) - (t - began)
            if pause > 0.0001:
                self.ctx.loop.linger(pause)

    def _drain(self, sock: NetlinkSocket) -> int:
        try:
            return sock.drain(self.feed, self._overrun, MAX_READS)
        except OSError as e:
            self._recv_failed(e)
            return 0

    def _recv_failed(self, e: OSError) -> None:
        self.ctx.stats.incr(self.stat["recv_errors"])
        n = self._burst["recv"].due(self.ctx.clock.wall())
        if n:
            self.ctx.log.error(f"NFCT '{self.id}': receive failed: {e.strerror or e} ({n} since last report)")

    def _feed_spans(self, buf: memoryview, spans: list[tuple[int, int]]) -> None:
        """The datagrams of one :meth:`NetlinkSocket.read_many`: the hot path. An event of a
        known layout is decoded in place and handed on here; anything else goes to
        :meth:`feed`, in order."""
        now = self.ctx.clock.wall()
        decoder = self.decoder
        parse_at = decoder.parse_at
        key, templates = decoder.lookup()
        accept = self.accept
        apply = self.table.apply if self.use_hash else None
        stacks = self.stacks
        run = None
        # The inlined emit below, without the write-ahead log (which emit feeds) only.
        if apply is None and len(stacks) == 1 and self.wal_rows is None:
            run = stacks[0].run
            tail = stacks[0].tail if self.tails is None else self.tails[0]
        emit = self.emit
        ctx = self.ctx
        events = filtered = updates = hits = 0
        for off, n in spans:
            fs = templates.get(key(buf, off)) if n >= 20 else None
            values = fs[0](buf, off, n, now) if fs is not None else None
            if values is None:
                # another template of the same key, else the walker (feed)
                values = parse_at(buf, off, n, now) if fs is not None and len(fs) > 1 else None
                if values is None:
                    self.feed(bytes(buf[off : off + n]), now)
                    continue
            else:
                hits += 1
            events += 1
            if accept is not None and not accept(values):
                filtered += 1
            elif apply is not None:
                values = apply(values, now)
                if values is not None:
                    emit(values)
            elif values[I_EVENT] == UPDATE:
                updates += 1
            elif run is not None:
                ctx.seq += 1  # what Source.emit does: every event gets the next sequence number
                values.extend(tail)
                run(values)
            else:
                emit(values)
        decoder.count_hits(hits)
        stats = self.ctx.stats
        if events:
            stats.incr(self.stat["events"], events)
        if filtered:
            stats.incr(self.stat["filtered"], filtered)
        if updates:
            self._updates_skipped(updates)
        if self.table.full != self._full:
            self._count_full()

    def feed(self, buf: bytes, now: float | None = None) -> None:
        """Handle one datagram from the event socket (replay tools and tests call this too)."""
        if now is None:
            now = self.ctx.clock.wall()
        one = self.decoder.parse_one(buf, now)
        if one is not None:
            recs = [one]
            batch = None
        else:
            batch = self.decoder.parse_buffer(buf, now)
            recs = batch.records
        if recs:
            self.ctx.stats.incr(self.stat["events"], len(recs))
            apply = self.table.apply if self.use_hash else self._event_nohash
            accept = self.accept
            emit = self.emit
            for values in recs:
                if accept is not None and not accept(values):
                    self.ctx.stats.incr(self.stat["filtered"])
                    continue
                out = apply(values, now)
                if out is not None:
                    emit(out)
            if self.table.full != self._full:
                self._count_full()
        if batch is not None and (batch.malformed or batch.errors or batch.other):
            self._problems.report(batch, now)

    _handle = feed  # the name the offline golden tests use

    def _event_nohash(self, values: list[Any], now: float) -> list[Any] | None:
        """hash_enable=0: every event is emitted as it comes, but UPDATE (as in ulogd2)."""
        if values[I_EVENT] == UPDATE:
            self._updates_skipped(1)
            return None
        return values

    def _count_full(self) -> None:
        """Flows the full table could not take, into ``nfct.<id>.hash_full``."""
        full = self.table.full
        self.ctx.stats.incr(self.stat["hash_full"], full - self._full)
        self._full = full

    def _updates_skipped(self, n: int) -> None:
        self.ctx.stats.incr(self.stat["updates_skipped"], n)
        if not self._told_updates:
            self._told_updates = True
            self.ctx.log.notice(f"NFCT '{self.id}': UPDATE events are not logged without hash_enable "
                                f"(as in ulogd2); they are counted in {self.stat['updates_skipped']}")

    def _overrun(self) -> None:
        """ENOBUFS: the kernel dropped events because the socket's receive buffer was full."""
        stats, log = self.ctx.stats, self.ctx.log
        stats.incr(self.stat["enobufs"])
        total = stats.get(self.stat["enobufs"])
        # Events lost, how many the kernel does not say: at least one (core/loss.py).
        self.ctx.losses.report(self, 1, "enobufs", self.ctx.clock.wall())
        sock = self.evsock
        maxsize = self.config["netlink_socket_buffer_maxsize"]
        if sock is not None and maxsize and not self._at_max:
            ask = min(self._rcvbuf_asked * 2, maxsize)
            granted = sock.set_rcvbuf(ask)
            self._capacity = granted / EVENT_TRUESIZE
            self._rcvbuf_asked = ask
            self._at_max = ask >= maxsize
            log.notice(f"We are losing events, increasing buffer size to {granted} ({total} ENOBUFS so far)")
        else:
            n = self._burst["enobufs"].due(self.ctx.clock.wall())
            if n:
                hint = ("Maximum buffer size in NFCT has been reached. Please, consider rising "
                        "`netlink_socket_buffer_size` and `netlink_socket_buffer_maxsize` clauses."
                        if maxsize else "Please, consider using the clauses `netlink_socket_buffer_size' "
                        "and `netlink_socket_buffer_maxsize'")
                log.notice(f"We are losing events ({n} ENOBUFS since last report, {total} in total). {hint}")
        if self.use_hash and self._resync_timer is None:
            self._resync_timer = self.ctx.loop.call_later(self.config["netlink_resync_timeout"], self.resync)

    # -- dumps: initial fill, resync, polling, SIGUSR2

    def _initial_dump(self) -> None:
        """Fill the flow table with what exists at start (no output).

        With ``net.netfilter.nf_conntrack_events=2`` (the kernel's default: events only for
        conntracks created while someone listens), the flows found here never send an event,
        not even DESTROY. So while any of them is still in the table, the table is swept
        against the kernel's every ``netlink_resync_timeout`` seconds and those that are gone
        are reported (ulogd2 keeps them forever).
        """
        now = self.ctx.clock.wall()
        dumped = self.table.dumped
        try:
            self.run_dump(False, lambda values: dumped(values, now))
        except (OSError, TimeoutError) as e:
            self.ctx.stats.incr(self.stat["dump_errors"])
            self.ctx.log.error(f"NFCT '{self.id}': initial dump of the conntrack table failed: {_why(e)}")
        self._count_full()
        self.ctx.log.info(f"NFCT '{self.id}': {len(self.flows)} flows in the table at start")
        try:
            always = self._read_sysctl("nf_conntrack_events") == "1"
        except OSError:
            always = False
        if self.flows and not always:
            self._silent = set(self.flows)
            every = max(1, self.config["netlink_resync_timeout"])
            self._sweep_timer = self.ctx.loop.call_later(every, self._sweep, repeat=True)

    def _sweep(self) -> None:
        self._sync("sweep")
        self._silent.intersection_update(self.flows)
        if not self._silent and self._sweep_timer is not None:
            self._sweep_timer.cancel()
            self._sweep_timer = None

    def resync(self) -> None:
        """After lost events: dump the table again, emit flows that vanished meanwhile."""
        self._resync_timer = None
        self.ctx.stats.incr(self.stat["resyncs"])
        self._sync("resync")

    def _poll(self) -> None:
        self._sync("poll")

    def _sync(self, why: str) -> None:
        table = self.table
        before = set(table.flows)
        seen: set[Key] = set()
        now = self.ctx.clock.wall()
        dumped, add = table.dumped, seen.add
        try:
            consistent = self.run_dump(False, lambda values: add(dumped(values, now)))
        except (OSError, TimeoutError) as e:
            self._dump_failed(why, e)
            return
        finally:
            self._count_full()
        # Events that came while the dump ran (DESTROYs among them) go first, so that a flow
        # that ended meanwhile is reported once, by its own event.
        self._drain_events()
        gone = table.gone(before, seen)
        if not consistent:
            gone = [k for k in gone if not self._exists(self.flows[k][2])]
        self._emit_ended(gone)
        self.ctx.log.debug(f"NFCT '{self.id}': {why}: {len(seen)} flows in the kernel, {len(gone)} gone, "
                           f"{len(self.flows)} in the table")

    def _emit_ended(self, keys: list[Key]) -> None:
        """Take these flows out of the table and emit each as DESTROY, ending now."""
        for values in self.table.ended(keys, self.ctx.clock.wall()):
            self.emit(values)
        if keys:
            self.ctx.stats.incr(self.stat["purged"], len(keys))

    def netns_released(self) -> None:
        """The namespace was deleted. Its conntracks die with it once we let go, and no
        event will say so: read the events still queued, then report every flow left in
        the table as ended now."""
        self._drain_events()
        if self.use_hash and self.flows:
            self._emit_ended(list(self.flows))

    def dump_and_zero(self) -> None:
        """SIGUSR2: dump the table resetting its counters; emit each entry as UPDATE."""
        now = self.ctx.clock.wall()
        emit = self.emit
        counted = self.table.counted if self.use_hash else None

        def on(values: list[Any]) -> None:
            emit(values if counted is None else counted(values, now))

        try:
            self.run_dump(True, on)
        except (OSError, TimeoutError) as e:
            self._dump_failed("dump and reset counters", e)
        finally:
            self._count_full()

    def _dump_failed(self, what: str, e: BaseException) -> None:
        self.ctx.stats.incr(self.stat["dump_errors"])
        n = self._burst["dump"].due(self.ctx.clock.wall())
        if n:
            self.ctx.log.error(f"NFCT '{self.id}': cannot {what}: {_why(e)} ({n} since last report)")

    def _drain_events(self) -> None:
        # Bounded: under a flood the rest waits for the loop (at worst a flow that ended
        # during the dump is then reported twice, once by the sync and once by its event).
        for _ in range(64):
            sock = self.evsock
            if sock is None or sock.drain(self.feed, self._overrun, MAX_READS) < MAX_READS:
                return

    def run_dump(self, zero: bool, on_entry: Callable[[list[Any]], object]) -> bool:
        """Dump the table (and zero the counters with ``zero``), calling ``on_entry`` with each
        accepted entry. Returns whether the dump is known complete and consistent. Raises
        OSError (a netlink error from the kernel) or TimeoutError."""
        consistent = True
        accept = self.accept
        finished = False
        try:
            for buf in self.dump_buffers(zero):
                batch = self.decoder.parse_buffer(buf, self.ctx.clock.wall())
                consistent = consistent and not batch.interrupted and not batch.malformed
                for values in batch.records:
                    if accept is not None and not accept(values):
                        self.ctx.stats.incr(self.stat["filtered"])
                        continue
                    on_entry(values)
                if batch.malformed or batch.other:
                    self._problems.report(batch, self.ctx.clock.wall())
                if batch.errors:
                    finished = True
                    raise OSError(batch.errors[0], os.strerror(batch.errors[0]))
                if batch.done:
                    finished = True
                    return consistent
            return False
        finally:
            if not finished and self.dsock is not None:
                # The rest of this dump must not be read as the answer to the next request.
                self.dsock.close()
                self.dsock = None

    def dump_buffers(self, zero: bool) -> Iterator[bytes]:
        """The datagrams answering one dump request, up to the one with NLMSG_DONE or an error."""
        sock = self._open_dump_socket()
        sock.send(codec.dump_request(sock.next_seq(), zero=zero))
        clock = self.ctx.clock
        deadline = clock.monotonic() + DUMP_TIMEOUT
        while True:
            r = sock.recv()
            if r is None:
                if clock.monotonic() >= deadline:
                    raise TimeoutError(errno.ETIMEDOUT, "no answer from ctnetlink")
                clock.wait_readable(sock.fileno(), deadline)
                continue
            if isinstance(r, int):
                raise OSError(r, "dump answers lost (ENOBUFS)")
            deadline = clock.monotonic() + DUMP_TIMEOUT
            yield r

    def _exists(self, values: list[Any]) -> bool:
        """Whether the kernel still has this entry (same original tuple, same id)."""
        sock = self._open_dump_socket()
        try:
            sock.request(codec.get_request_for(sock.next_seq(), values))
        except OSError as e:
            if e.errno == errno.ENOENT:
                return False
            return True  # cannot tell: keep the flow rather than report an end that did not happen
        finally:
            sock.pending.clear()
        return True


def _why(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


def _write_sysctl(name: str, value: str) -> None:
    with open(SYSCTL + name, "w") as f:
        f.write(value)


def _read_sysctl(name: str) -> str:
    with open(SYSCTL + name) as f:
        return f.read().strip()
