"""NFLOG input: packets logged by nft ``log group N`` / iptables ``-j NFLOG`` (``ulogd_inppkt_NFLOG.so``).

Same options, keys and start sequence as ulogd2 2.0.8, with these differences:

* ``netlink_socket_buffer_size`` is applied whenever it is non-zero. ulogd2 ignores it unless it
  is below ``netlink_socket_buffer_maxsize`` (so with the default maxsize 0 it never applied it,
  and logged a misleading "Maximum buffer size (0) ... has been reached").
* Growth on ENOBUFS doubles the requested size up to ``netlink_socket_buffer_maxsize``, starting
  from the buffer the socket really has (ulogd2 started from 0 when no initial size was given).
* Each readable event reads up to 64 datagrams (ulogd2: one), and every ENOBUFS, malformed
  message, netlink error and sequence gap is counted in the daemon's statistics
  (``nflog.<id>.enobufs``, ``.malformed``, ``.netlink_errors``, ``.seq_gaps``, ...) and logged
  once per burst instead of once per process lifetime.
* New option ``copy_range`` (ulogd2 always asks for 0xffff bytes per packet).
* New option ``netlink_nlbufsiz`` (default 32000 bytes; 0 = the kernel's one-page default, as
  ulogd2): the kernel batches up to ``netlink_qthreshold`` (default 100) packets per datagram
  instead of the ~18 small packets one page holds, so the daemon wakes and reads far less often.
* ``network_namespace_path`` (as ulogd2 HEAD) and ``netns``/``netns_dir``/``netns_rescan``
  (follow namespaces as they come and go), with the keys ``oob.netns``,
  ``neutron.router_id`` and ``neutron.network_id`` after ulogd's (docs/netns.md).
"""

from __future__ import annotations

import socket
from typing import Any

from pyulogd.codec import nflog as codec
from pyulogd.core.context import Context
from pyulogd.core.errors import PluginError
from pyulogd.core.options import Bool, Int, Size
from pyulogd.core.plugin import DataType, Option
from pyulogd.core.ratelimit import Burst
from pyulogd.io.netlink import NetlinkSocket
from pyulogd.io.netns import in_netns
from pyulogd.io.nlproblems import BatchProblems
from pyulogd.netns.source import NETNS_KEYS, NETNS_OPTIONS, NetnsSource

AF_BRIDGE = 7
_SYSTEM_FAMILIES = (socket.AF_INET, socket.AF_INET6, AF_BRIDGE)
# Datagrams read per readable event; the loop comes back while more are waiting.
MAX_READS = 64
# A problem that repeats is logged at most once per this many seconds, with the count since.


# NFULA_CFG_NLBUFSIZ asked for by default: bigger kernel batches, fewer wake-ups and recv() calls per
# packet. The kernel allocates it atomically in the logging softirq; 32000 bytes plus the skb's shared
# info stay within an order-3 (32 KiB) allocation, the largest the page allocator treats as cheap,
# and hold the kernel's default threshold of 100 packets of up to ~300 bytes each.
DEFAULT_NLBUFSIZ = 32000
MAX_NLBUFSIZ = 131072  # the kernel refuses more


# SO_RCVBUF(FORCE) takes a C int.
INT_MAX = 0x7FFFFFFF
OPTIONS = (
    Option("bufsize", Size(64, 1 << 30), 150000, help="size of the receive buffer for one datagram, in bytes"),
    Option("group", Int(0, 0xFFFF), 0, help="NFLOG group to bind (nft 'log group N', iptables '--nflog-group N')"),
    Option("unbind", Bool(), 1, help="in system logging mode (group 0 or bind=1): force-unbind any existing "
           "nf_log handler for IPv4, IPv6 and bridge before binding"),
    Option("bind", Bool(), 0, help="also become the system nf_log handler for IPv4, IPv6 and bridge "
           "although group is not 0 (only needed by kernels before 2.6.29)"),
    Option("seq_local", Bool(), 0, help="ask the kernel for per-group sequence numbers (oob.seq.local); "
           "gaps are counted as lost events"),
    Option("seq_global", Bool(), 0, help="ask the kernel for global sequence numbers (oob.seq.global)"),
    Option("numeric_label", Int(), 0, help="number copied into raw.label for every packet (0-255)"),
    Option("netlink_socket_buffer_size", Size(0, INT_MAX), 0, help="initial socket receive buffer "
           "(SO_RCVBUFFORCE), in bytes; pyulogd applies it even when netlink_socket_buffer_maxsize is 0"),
    Option("netlink_socket_buffer_maxsize", Size(0, INT_MAX), 0, help="on ENOBUFS (lost events) double the "
           "socket receive buffer up to this many bytes; 0: never grow"),
    Option("netlink_qthreshold", Int(0, 0xFFFFFFFF), 0, help="kernel batches up to this many packets per "
           "datagram (NFULA_CFG_QTHRESH); 0: kernel default"),
    Option("netlink_qtimeout", Int(0, 0xFFFFFFFF), 0, help="kernel flushes a batch after this many 1/100 s "
           "(NFULA_CFG_TIMEOUT); 0: kernel default (1 s)"),
    Option("attach_conntrack", Bool(), 0, help="ask the kernel to attach the conntrack entry (key ct)"),
    Option("copy_range", Size(0, 0xFFFF), 0xFFFF, extra=True, help="pyulogd extra: bytes of each packet to "
           "copy (ulogd2 always uses 65535; rules can still cut with nft 'snaplen' / iptables '--nflog-size')"),
    Option("netlink_nlbufsiz", Size(0, MAX_NLBUFSIZ), DEFAULT_NLBUFSIZ, extra=True, help="pyulogd extra: size "
           "of the kernel's batch buffer (NFULA_CFG_NLBUFSIZ), in bytes: the kernel sends up to "
           "netlink_qthreshold packets (default 100) per datagram as long as they fit; 0: kernel default "
           "(one page, about 18 small packets)"),
)



# Counters in ctx.stats, as nflog.<instance id>.<name>.
STAT_NAMES = (
    "packets", "malformed", "enobufs", "netlink_errors", "unexpected", "truncated",
    "seq_gaps", "seq_lost", "seq_global_gaps", "recv_errors",
)  # fmt: skip
_BURSTS = ("enobufs", "seq", "recv", "truncated")


class NflogInput(NetnsSource):
    name = "NFLOG"
    so_name = "ulogd_inppkt_NFLOG.so"
    output_type = DataType.RAW
    options = OPTIONS + NETNS_OPTIONS
    output_keys = codec.OUTPUT_KEYS + NETNS_KEYS
    description = "packets from the kernel's nfnetlink_log (nft 'log group N', iptables -j NFLOG)"

    def __init__(self, ctx: Context, instance_id: str, config: dict[str, Any]) -> None:
        super().__init__(ctx, instance_id, config)
        self.sock: NetlinkSocket | None = None
        self.decoder = codec.Decoder()
        self.group: int = config["group"]
        self.label: int = config["numeric_label"] & 0xFF  # as ulogd's u_int8_t: 0x105 is 5
        self._bound = False
        self._pf_bound = False
        self._rcvbuf_asked = 0  # the receive buffer size last asked for (the kernel grants twice that)
        self._at_max = False
        self._next_seq: list[int | None] = [None, None]  # local, global
        self._check_seq: bool = config["seq_local"] or config["seq_global"]
        self._truncated = 0
        # ENOBUFS not yet explained by a gap in oob.seq.local (see _overrun): when the first
        # happened, how many, whether the socket's queue was found empty since (what is read
        # after that was logged after the drop), and whether a gap was found in what was
        # queued before it was read (it may explain the drop, or the drop came after the last
        # of those records: only the first record logged after the drain tells which).
        self._overrun_at: float | None = None
        self._overruns = 0
        self._overrun_drained = False
        self._overrun_gap = False
        p = f"nflog.{instance_id}."
        self.stat = {n: p + n for n in STAT_NAMES}
        self._burst = {n: Burst() for n in _BURSTS}
        self._problems = BatchProblems(ctx, f"NFLOG '{instance_id}'", p)

    def needed_capabilities(self) -> dict[str, str]:
        """CAP_NET_ADMIN also in its own namespace when the buffer may grow after lost events:
        SO_RCVBUFFORCE, the only way past net.core.rmem_max, needs it (without it the growth
        stops silently at rmem_max)."""
        needed = super().needed_capabilities()
        if self.config["netlink_socket_buffer_maxsize"]:
            why = (f"{self.name} '{self.id}' grows its receive buffer after lost events "
                   "(netlink_socket_buffer_maxsize: SO_RCVBUFFORCE)")
            needed["CAP_NET_ADMIN"] = f"{needed['CAP_NET_ADMIN']}; {why}" if "CAP_NET_ADMIN" in needed else why
        return needed

    # -- life cycle

    def start_input(self) -> None:
        c = self.config
        log = self.ctx.log
        log.debug("opening nfnetlink socket")
        try:
            with in_netns(self.netns_handle):  # the socket stays in the namespace it is made in
                self.sock = NetlinkSocket(bufsize=c["bufsize"], clock=self.ctx.clock)
        except OSError as e:
            raise PluginError(f"unable to open nfnetlink socket: {e.strerror or e}") from None
        try:
            self._configure_kernel()
        except BaseException:
            if self._pf_bound and self.group == 0:  # as ulogd: undo the system logging binding
                for pf in _SYSTEM_FAMILIES:
                    try:
                        self.sock.request(codec.pf_unbind(pf, self.sock.next_seq()), timeout=1.0)
                    except OSError:
                        pass
            self._close()
            raise
        if self.sock.enobufs:  # lost while waiting for acks
            self.ctx.stats.incr(self.stat["enobufs"], self.sock.enobufs)
        self.ctx.loop.add_reader(self.sock.fileno(), self._readable)
        if self.sock.pending:
            # Packets that came in while we waited for acks; stacks start after us, so later.
            self.ctx.loop.call_later(0, self._readable)

    def _configure_kernel(self) -> None:
        assert self.sock is not None
        c, log, sock, group = self.config, self.ctx.log, self.sock, self.group
        # Settings echoed once for the configured instance, not for every namespace it follows.
        say = log.notice if self.parent is None else log.debug
        if group == 0 or c["bind"]:
            # "System logging": nfnetlink_log becomes the nf_log backend of these families.
            for pf in _SYSTEM_FAMILIES:
                if c["unbind"]:
                    log.notice(f"forcing unbind of existing log handler for protocol {pf}")
                    try:
                        sock.request(codec.pf_unbind(pf, sock.next_seq()))
                    except OSError as e:
                        raise PluginError(f"unable to force-unbind existing log handler for protocol {pf}: "
                                          f"{_why(e)}") from None
                log.debug(f"binding to protocol family {pf}")
                try:
                    sock.request(codec.pf_bind(pf, sock.next_seq()))
                except OSError as e:
                    raise PluginError(f"unable to bind to protocol family {pf}: {_why(e)}") from None
                self._pf_bound = True
        log.debug(f"binding to log group {group}")
        try:
            sock.request(codec.group_bind(group, sock.next_seq()))
        except OSError as e:
            raise PluginError(f"unable to bind to log group {group}: {_why(e)}") from None
        self._bound = True
        try:
            sock.request(codec.set_mode(group, codec.NFULNL_COPY_PACKET, c["copy_range"], sock.next_seq()))
        except OSError as e:
            log.error(f"unable to set copy mode for log group {group}: {_why(e)}")

        size, maxsize = c["netlink_socket_buffer_size"], c["netlink_socket_buffer_maxsize"]
        if size:
            granted = sock.set_rcvbuf(size)
            self._rcvbuf_asked = size
            say(f"NFLOG netlink buffer size has been set to {granted}")
        else:
            self._rcvbuf_asked = sock.rcvbuf() // 2
        if maxsize and self._rcvbuf_asked >= maxsize:
            self._at_max = True

        nlbufsiz = c["netlink_nlbufsiz"]
        if nlbufsiz:
            # Not fatal: the kernel keeps its default (it refuses less than one page, silently).
            try:
                sock.request(codec.set_nlbufsiz(group, nlbufsiz, sock.next_seq()))
                log.debug(f"NFLOG netlink batch buffer has been set to {nlbufsiz}")
            except OSError as e:
                log.notice(f"NFLOG netlink batch buffer can't be set to {nlbufsiz}: {_why(e)}")
        for opt, build, what in (("netlink_qthreshold", codec.set_qthresh, "threshold"),
                                 ("netlink_qtimeout", codec.set_timeout, "timeout")):
            v = c[opt]
            if v:
                try:
                    sock.request(build(group, v, sock.next_seq()))
                    say(f"NFLOG netlink queue {what} has been set to {v}")
                except OSError:
                    log.notice(f"NFLOG netlink queue {what} can't be set to {v}")

        flags = 0
        if c["seq_local"]:
            flags |= codec.NFULNL_CFG_F_SEQ
        if c["seq_global"]:
            flags |= codec.NFULNL_CFG_F_SEQ_GLOBAL
        if c["attach_conntrack"]:
            flags |= codec.NFULNL_CFG_F_CONNTRACK
        if flags:
            try:
                sock.request(codec.set_flags(group, flags, sock.next_seq()))
            except OSError as e:
                log.error(f"unable to set flags 0x{flags:x}: {_why(e)}")

    def stop_input(self) -> None:
        sock = self.sock
        if sock is None:
            self._report_overrun()
            return
        self.ctx.loop.remove_reader(sock.fileno())
        if self._bound:
            try:
                sock.request(codec.group_unbind(self.group, sock.next_seq()), timeout=1.0)
            except OSError as e:
                self.ctx.log.debug(f"unbinding log group {self.group}: {_why(e)}")
            # The unbind makes the kernel flush the batch it still held (netlink_qthreshold /
            # netlink_qtimeout): read it and anything else queued, or a namespace released
            # right after its last packets would lose them.
            try:
                for _ in range(16):
                    self.hold()
                    try:
                        if sock.drain(self.feed, self._overrun, MAX_READS) < MAX_READS:
                            break
                    finally:
                        self.release()
            except OSError as e:
                self.ctx.log.debug(f"reading the last packets of log group {self.group}: {_why(e)}")
        # After the last packets were read: an overrun still unexplained now (no record came
        # after it to show a gap, or to show that a gap read before covered it all) goes into
        # the trail as a lower bound (a drop of the very last packets leaves no gap to see).
        self._report_overrun()
        self._close()

    def _close(self) -> None:
        if self.sock is not None:
            # Closing also releases the group in the kernel; the nf_log family binding stays, as in ulogd.
            self.sock.close()
            self.sock = None
        self._bound = False

    # -- events

    def _readable(self) -> None:
        sock = self.sock
        if sock is None:
            return
        # With the write-ahead log on, what one drain reads is logged (one write) before it
        # goes down the stacks.
        self.hold()
        try:
            if sock.drain(self.feed, self._overrun, MAX_READS) < MAX_READS and self._overrun_at is not None:
                self._overrun_drained = True  # what comes next was logged after the drop
        except OSError as e:
            self.ctx.stats.incr(self.stat["recv_errors"])
            n = self._burst["recv"].due(self.ctx.clock.wall())
            if n:
                self.ctx.log.error(f"NFLOG '{self.id}': receive failed: {_why(e)} ({n} since last report)")
        finally:
            self.release()
        if sock.truncated != self._truncated:
            self._report_truncated(sock.truncated - self._truncated)
            self._truncated = sock.truncated

    def feed(self, buf: bytes) -> None:
        """Handle one datagram as read from the socket (replay tools and tests call this too)."""
        now = self.ctx.clock.wall()
        batch = self.decoder.parse_buffer(buf, now, self.label)
        recs = batch.records
        if self._check_seq and recs:
            self._check_sequence(recs, now)
        stats = self.ctx.stats
        if recs:
            raw = self.wal_raw
            if raw is not None:
                raw.append((now, self.ctx.seq + 1, len(recs), buf))
            self.emit_all(recs)
            stats.incr(self.stat["packets"], len(recs))
        if batch.malformed or batch.errors or batch.other:
            self._problems.report(batch, now)

    _handle = feed  # the name the offline golden test uses

    def wal_decode(self, data: bytes, now: float) -> list[list[Any]] | None:
        """The write-ahead log keeps the datagrams NFLOG read: its records are a function of
        the bytes and ``now`` (the decoder's), so replay decodes them again."""
        return self.decoder.parse_buffer(data, now, self.label).records

    def _overrun(self) -> None:
        """ENOBUFS: the kernel dropped events because the socket's receive buffer was full."""
        sock = self.sock
        assert sock is not None
        stats, log = self.ctx.stats, self.ctx.log
        stats.incr(self.stat["enobufs"])
        total = stats.get(self.stat["enobufs"])
        # The loss record (core/loss.py). Without sequence numbers the overrun is all there is
        # to report, a lower bound (at least one record). With them the gap it leaves is
        # reported, exactly, instead; but the kernel does not always number what it drops (a
        # reader stopped for a while, SIGSTOP: the numbers go on without a gap, kernel 6.18),
        # so an overrun that the first records logged after it (read once the queue was found
        # empty) do not explain with a gap is reported on its own, as a lower bound.
        now = self.ctx.clock.wall()
        if not self.config["seq_local"]:
            self.ctx.losses.report(self, 1, "enobufs", now)
        else:
            if self._overrun_at is None:
                self._overrun_at = now
            self._overruns += 1
            self._overrun_drained = False
            # A gap in records read before this overrun was reported is from drops it does not
            # report (they happened before an earlier read): only gaps read from now on count.
            self._overrun_gap = False
        maxsize = self.config["netlink_socket_buffer_maxsize"]
        if maxsize and not self._at_max:
            ask = min(self._rcvbuf_asked * 2, maxsize)
            granted = sock.set_rcvbuf(ask)
            self._rcvbuf_asked = ask
            if ask >= maxsize:
                self._at_max = True
            log.notice(f"We are losing events, increasing buffer size to {granted} ({total} ENOBUFS so far)")
            return
        n = self._burst["enobufs"].due(self.ctx.clock.wall())
        if not n:
            return
        if maxsize:
            log.notice(f"We are losing events ({n} ENOBUFS since last report, {total} in total). Maximum "
                       f"buffer size ({sock.rcvbuf()}) in NFLOG has been reached. Please, consider rising "
                       "`netlink_socket_buffer_size` and `netlink_socket_buffer_maxsize` clauses.")
        else:
            log.notice(f"We are losing events ({n} ENOBUFS since last report, {total} in total). Please, "
                       "consider using the clauses `netlink_socket_buffer_size' and "
                       "`netlink_socket_buffer_maxsize'")

    def _report_overrun(self) -> None:
        """ENOBUFS that no sequence gap explained: at least one record lost each, unnumbered."""
        at, n = self._overrun_at, self._overruns
        self._overrun_at, self._overruns = None, 0
        self._overrun_gap = False
        if at is not None:
            self.ctx.losses.report(self, n, "enobufs", at)

    def _check_sequence(self, recs: list[list[Any]], now: float) -> None:
        """Count gaps in the kernel's sequence numbers: each is a run of lost events.

        The local sequence is per group. The global one is shared by every group of the
        namespace, so its gaps are only losses when this is the only group in use; they are
        counted apart (``seq_global_gaps``) and not logged.
        """
        lost = gaps = ggaps = 0
        nxt = self._next_seq
        for i, idx in ((0, codec.I_SEQ_LOCAL), (1, codec.I_SEQ_GLOBAL)):
            expect = nxt[i]
            for values in recs:
                s = values[idx]
                if s is None:
                    continue
                if expect is not None and s != expect:
                    gap = (s - expect) & 0xFFFFFFFF
                    if gap < 0x80000000:  # backwards means the kernel restarted the count
                        if i == 0:
                            gaps += 1
                            lost += gap
                        else:
                            ggaps += 1
                expect = (s + 1) & 0xFFFFFFFF
            nxt[i] = expect
        stats = self.ctx.stats
        if ggaps:
            stats.incr(self.stat["seq_global_gaps"], ggaps)
        if gaps:
            stats.incr(self.stat["seq_gaps"], gaps)
            stats.incr(self.stat["seq_lost"], lost)
            self.ctx.losses.report(self, lost, "seq_gap", now)  # the loss record (core/loss.py)
            if self._overrun_drained:
                # Logged after the queue was found empty: the gap is where the drop was, and
                # explains the overruns exactly.
                self._overrun_at = None
                self._overruns = 0
                self._overrun_gap = False
            elif self._overrun_at is not None:
                # Among records queued when the overrun was read: the drop is between them, or
                # also after the last of them (a burst that filled the queue again): the first
                # record logged after the drain says which.
                self._overrun_gap = True
            n = self._burst["seq"].due(now, lost)
            if n:
                self.ctx.log.notice(f"NFLOG '{self.id}': {n} event(s) missing (gaps in oob.seq.local), "
                                    f"{stats.get(self.stat['seq_lost'])} in total")
        elif self._overrun_at is not None and self._overrun_drained:
            if self._overrun_gap:  # no drop after the queued records: their gap explained it
                self._overrun_at = None
                self._overruns = 0
                self._overrun_gap = False
            else:
                self._report_overrun()  # records logged after the drop, and no gap: unnumbered

    def _report_truncated(self, n: int) -> None:
        self.ctx.stats.incr(self.stat["truncated"], n)
        k = self._burst["truncated"].due(self.ctx.clock.wall(), n)
        if k:
            self.ctx.log.notice(f"NFLOG '{self.id}': {k} datagram(s) longer than bufsize="
                                f"{self.config['bufsize']} were cut; raise bufsize")


def _why(e: OSError) -> str:
    return e.strerror or str(e)
