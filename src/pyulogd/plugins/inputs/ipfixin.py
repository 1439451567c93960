"""IPFIXIN: a flow collector. IPFIX, NetFlow v9 and NetFlow v5 exports (Open vSwitch,
softflowd, routers, ulogd2's own IPFIX output) become records with NFCT's keys, so any stack
written for conntrack flows (IP2STR, PRINTFLOW -> LOGEMU, JSON, the SQL outputs) takes them
unchanged; docs/flows.md has the key table and the Open vSwitch recipes.

Not a ulogd2 plugin (ulogd2's ``IPFIX`` is the *exporter*, ``plugins/outputs/ipfix.py``):
there is no ``plugin=`` line for it. Options are named as the exporter names them where
they mean the same (``host``, ``port``, ``proto``).

* **UDP** (default) or **TCP** (IPFIX only; template withdrawals are applied, and a
  connection's templates end with it). Over UDP withdrawals are ignored (RFC 7011 8.4) and
  templates expire after ``template_timeout``.
* **Who may send**: UDP source addresses are trivially spoofed, so ``exporters`` (a comma
  list of addresses or networks) is required unless ``host`` is a loopback address;
  datagrams and connections from elsewhere are dropped and counted (``denied``).
* **Bad input never stops the collector**: a malformed message is dropped whole and counted
  by cause (``malformed.<cause>``, logged at most once per 10 s per kind of problem), the
  exporter's other messages go on; memory per exporter is bounded (``max_templates``,
  ``hold_buffer``; pyulogd.codec.ipfixin.collector).
* ``network_namespace_path`` listens inside that namespace; ``netns=`` listens in every
  matching namespace, one socket each (docs/netns.md).

Counters (``ipfixin.<id>.``): the collector's (``messages``, ``records``, ``malformed`` and
``malformed.<cause>``, ``no_template``, ``held_*``, ``seq_gaps``, ``lost_records``, ...;
``COUNTERS`` in the codec) and the socket's (``denied``, ``recv_errors``, ``tcp_clients``,
``tcp_bad_stream``, ``decoder_errors``, ``truncated``: a UDP datagram longer than the 64 KiB a
slot of ``recvmmsg`` holds; ``socket_drops``: datagrams the kernel dropped because the receive
buffer was full, read from the socket's own counter, ``SO_MEMINFO``, at most every second while
datagrams come, and at stop).
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import sys
from typing import Any

from pyulogd.codec.ipfixin import keys as codec_keys
from pyulogd.codec.ipfixin.collector import Collector
from pyulogd.core.context import Context, TimerHandle
from pyulogd.core.errors import ConfigError, PluginError
from pyulogd.core.options import Address, Bool, Choice, Duration, Int, OptionKind, Port, Size
from pyulogd.core.plugin import DataType, Option
from pyulogd.core.ratelimit import Burst
from pyulogd.io import mmsg
from pyulogd.io.mmsg import NAME_SIZE
from pyulogd.io.netlink import force_rcvbuf
from pyulogd.io.netns import in_netns
from pyulogd.netns.source import NETNS_KEYS, NETNS_OPTIONS, NetnsSource

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_READS = 256  # datagrams per readable event; the loop comes back while more are waiting
# Pacing (see _pace, as NFCT's): when datagrams come fast, the loop pauses up to PACE_MAX before
# polling again, so that one wake-up reads a batch (Open vSwitch sends one record per datagram).
PACE_MIN_RATE = 2000.0  # datagrams/s below which wake-ups cost too little to matter
PACE_MAX = 0.001  # seconds: the longest pause (latency)
PACE_SHARE = 0.2  # of the receive buffer that may fill during a pause
DATAGRAM_TRUESIZE = 2304  # what the kernel charges a ~300-byte datagram of the buffer (skb + data)
MAX_DATAGRAM = 65535
MAX_CLIENTS = 256  # TCP exporters at once
INT_MAX = 0x7FFFFFFF
STAT_NAMES = ("denied", "recv_errors", "tcp_clients", "tcp_bad_stream", "decoder_errors", "truncated", "socket_drops")
SO_MEMINFO = 55  # Linux: the socket's memory counters, SK_MEMINFO_DROPS among them
SK_MEMINFO_DROPS = 8
DROPS_EVERY = 1.0  # seconds between two readings of the socket's drop counter while datagrams come


class Networks(OptionKind[tuple[Network, ...]]):
    """A comma list of IPv4/IPv6 addresses and networks (``10.0.0.0/8, 192.0.2.7, fd00::/8``),
    or empty (nobody)."""

    name = "Networks"

    def convert(self, text: str) -> tuple[Network, ...]:
        nets = []
        for word in (w.strip() for w in text.split(",")):
            if not word:
                continue
            try:
                nets.append(ipaddress.ip_network(word, strict=False))
            except ValueError:
                raise ValueError(f"'{word}' is not an address or a network (10.0.0.0/8, 192.0.2.7, fd00::/8)") from None
        return tuple(nets)

    def show(self, value: tuple[Network, ...]) -> str:
        return ",".join(str(n) for n in value)

    def describe(self) -> str:
        return "comma list of addresses and networks"


# Not ulogd2 options (the plugin is pyulogd's own): ``-i`` shows their kinds.
OPTIONS = tuple(Option(name, kind, default, extra=True, help=text) for name, kind, default, text in (
    ("host", Address(), "127.0.0.1", "address to listen on (IPv4 or IPv6; 0.0.0.0 or :: for every address of "
     "the host, which needs exporters=)"),
    ("port", Port(zero=True), 4739, "port to listen on (IANA's IPFIX port; nfcapd's default is 9995); 0: any "
     "free port, logged"),
    ("proto", Choice("udp", "tcp", fold_case=False, what="protocol"), "udp",
     "udp (IPFIX, NetFlow v9 and v5) or tcp (IPFIX)"),
    ("exporters", Networks(), "", "addresses/networks allowed to send (comma list); others are dropped and "
     "counted (ipfixin.<id>.denied). Required unless host is a loopback address: UDP sources are easily spoofed"),
    ("template_timeout", Duration(positive=True), 1800, "seconds a template lives without being sent again "
     "(UDP), and the longest data waits for its template"),
    ("max_templates", Int(1, 1 << 20), 4096, "most templates kept per exporter address (Open vSwitch sends 88 "
     "per observation domain); more are refused and counted"),
    ("hold_buffer", Size(0, 1 << 30), "256K", "bytes of data sets kept per exporter address while their "
     "template has not come yet (0: drop them at once); the oldest go first"),
    ("socket_buffer_size", Size(0, INT_MAX), "16M", "receive buffer of the socket, bytes: it absorbs bursts "
     "(16M: ~7,000 Open vSwitch datagrams, 70 ms at 100k/s; only what is queued takes memory). UDP drops at "
     "the socket are the most common loss, counted as ipfixin.<id>.socket_drops: raise it for busy exporters; "
     "past net.core.rmem_max only as root (SO_RCVBUFFORCE); 0: the kernel's default"),
    ("emit_options", Bool(), 0, "1: options records (exporter statistics, sampling, time base) become records "
     "too, with ipfix.options=1"),
    ("strict_sequence", Bool(), 0, "1: count sequence gaps strictly as RFC 7011 (per domain, records before "
     "the message) instead of recognising Open vSwitch's and softflowd's ways"),
    ("extra", Bool(), 1, "0: leave ipfix.extra (every element no other key takes) out of the records, by "
     "choice: no map is built or written; through JSON an Open vSwitch record then costs about 40 % less "
     "(bench/results/ipfix.md, run E)"),
))  # fmt: skip


def is_loopback(host: str) -> bool | None:
    """Whether every address ``host`` stands for is a loopback one; None: it does not resolve."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except OSError:
        return None
    return all(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]).is_loopback for info in infos)


class _Conn:
    __slots__ = ("sock", "fd", "addr", "port", "buf")

    def __init__(self, sock: socket.socket, addr: str, port: int) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.addr = addr
        self.port = port
        self.buf = bytearray()


class IpfixinInput(NetnsSource):
    name = "IPFIXIN"
    output_type = DataType.FLOW
    description = (
        "Flow collector: IPFIX (Open vSwitch, softflowd, ulogd2's IPFIX output), NetFlow v9 and v5 exports as "
        "records with NFCT's keys (docs/flows.md)."
    )
    options = OPTIONS + NETNS_OPTIONS
    output_keys = codec_keys.OUTPUT_KEYS + NETNS_KEYS

    def __init__(self, ctx: Context, instance_id: str, config: dict[str, Any]) -> None:
        super().__init__(ctx, instance_id, config)
        self.collector: Collector | None = None
        self.sock: socket.socket | None = None
        self.conns: dict[int, _Conn] = {}
        self.networks: tuple[Network, ...] = config["exporters"]
        self._allowed: dict[str, str | None] = {}  # source address -> its exporter address, None: denied
        self._sources: dict[bytes, tuple[str | None, int]] = {}  # raw source address -> (exporter, port)
        self._timer: TimerHandle | None = None
        self._bursts: dict[str, Burst] = {}
        self._last_read = 0.0
        self._capacity = 0  # datagrams the receive buffer holds
        self._drops = 0  # the socket's drop counter when last read
        self._drops_due = 0.0  # when to read it again (monotonic)
        self.stat = {n: self._stat + n for n in STAT_NAMES}

    # -- configuration
    def configure(self) -> None:
        super().configure()
        c = self.config
        if not self.networks:
            loop = self._loopback()
            if loop is None:
                raise ConfigError(f"IPFIXIN '{self.id}': host '{c['host']}' does not resolve")
            if not loop:
                raise ConfigError(
                    f"IPFIXIN '{self.id}': listening on {c['host']}, beyond loopback, needs exporters= (the "
                    "addresses or networks allowed to send): UDP source addresses are easily spoofed"
                )

    def _loopback(self) -> bool | None:
        return is_loopback(self.config["host"] or "127.0.0.1")

    def _collector(self) -> Collector:
        c = self.config
        stats = self.ctx.stats
        prefix = self._stat

        def count(name: str, n: int) -> None:
            stats.incr(prefix + name, n)

        return Collector(udp=c["proto"] == "udp", template_timeout=c["template_timeout"],
                         max_templates=c["max_templates"], hold_bytes=c["hold_buffer"],
                         emit_options=c["emit_options"], extra=c["extra"] and self._extra_used(),
                         quirks=not c["strict_sequence"], count=count, event=self._event)  # fmt: skip

    def _extra_used(self) -> bool:
        """Whether any stack reads ``ipfix.extra`` (JSON does): building the map is most of the
        decoding cost of an Open vSwitch record, and nobody may want it."""
        owner = self.parent if self.parent is not None else self
        slot = owner.out_base + codec_keys.KEYS.index("ipfix.extra")
        return not owner.stacks or any(slot in inst.in_slots for st in owner.stacks for inst in st.instances[1:])

    # -- life cycle
    def start_input(self) -> None:
        c = self.config
        self.collector = self._collector()
        host = c["host"] or "127.0.0.1"
        kind = socket.SOCK_DGRAM if c["proto"] == "udp" else socket.SOCK_STREAM
        try:
            infos = socket.getaddrinfo(host, c["port"], type=kind, flags=socket.AI_PASSIVE)
        except OSError as e:
            raise PluginError(f"IPFIXIN '{self.id}': cannot resolve {host}: {e.strerror or e}") from None
        family, _t, _p, _n, addr = infos[0]
        with in_netns(self.netns_handle):  # the socket stays in the namespace it is made in
            sock = socket.socket(family, kind | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if c["socket_buffer_size"]:
                force_rcvbuf(sock, c["socket_buffer_size"])
            got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            self._capacity = got // DATAGRAM_TRUESIZE
            if kind == socket.SOCK_DGRAM and c["socket_buffer_size"] and got < c["socket_buffer_size"]:
                self.ctx.log.notice(f"IPFIXIN '{self.id}': receive buffer of {got} bytes, not the "
                                    f"{c['socket_buffer_size']} asked (net.core.rmem_max without CAP_NET_ADMIN)")
            sock.bind(addr)
            if kind == socket.SOCK_STREAM:
                sock.listen(64)
        except OSError as e:
            sock.close()
            raise PluginError(f"IPFIXIN '{self.id}': cannot listen on {c['proto']} {host} port {c['port']}: "
                              f"{e.strerror or e}") from None  # fmt: skip
        self.sock = sock
        self.ctx.loop.add_reader(sock.fileno(), self._read if kind == socket.SOCK_DGRAM else self._accept)
        every = min(max(c["template_timeout"] / 10, 1.0), 60.0)
        self._timer = self.ctx.loop.call_later(every, self._expire, repeat=True)
        allowed = ", ".join(str(n) for n in self.networks) or "loopback only"
        self.ctx.log.info(f"IPFIXIN '{self.id}': listening on {c['proto']} {host} port {sock.getsockname()[1]} "
                          f"(exporters: {allowed})")  # fmt: skip

    def stop_input(self) -> None:
        if self.collector is not None:
            self.collector.sync()
        self._count_drops(0.0)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for conn in list(self.conns.values()):
            self._close(conn)
        if self.sock is not None:
            self.ctx.loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None

    @property
    def port(self) -> int:
        """The port listened on (what ``port=0`` got)."""
        assert self.sock is not None
        port: int = self.sock.getsockname()[1]
        return port

    # -- input
    def _exporter(self, addr: str) -> str | None:
        """The exporter address of a source address (an IPv4-mapped IPv6 one is its IPv4
        address), or None when the allowlist refuses it."""
        found = self._allowed.get(addr, "")
        if found != "":
            return found
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        ok = ip.is_loopback if not self.networks else any(ip in net for net in self.networks)
        if len(self._allowed) > 4096:
            self._allowed.clear()
        result = self._allowed[addr] = str(ip) if ok else None
        if result is None:
            self._log("denied", f"IPFIXIN '{self.id}': dropped a message from {addr}, which exporters= does not "
                                "allow")  # fmt: skip
        return result

    def _read(self) -> None:
        rx = mmsg.shared_udp() if self.ctx.recvmmsg else None
        if rx is not None:
            self._read_mmsg(rx)
            return
        sock, collector = self.sock, self.collector
        if sock is None or collector is None:
            return
        out: list[list[Any]] = []
        now = self.ctx.clock.monotonic()
        n = 0
        for n in range(MAX_READS):  # noqa: B007 - n is read after the loop
            try:
                data, src = sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                self.ctx.stats.incr(self.stat["recv_errors"])
                self._log("recv", f"IPFIXIN '{self.id}': receive error: {e.strerror or e}")
                break
            exporter = self._exporter(src[0])
            if exporter is None:
                self.ctx.stats.incr(self.stat["denied"])
                continue
            out.extend(self._decode(data, exporter, src[1], now))
        collector.sync()
        if now >= self._drops_due:
            self._count_drops(now)
        if out:
            self.emit_all(out)
        self._pace(n, now)

    def _read_mmsg(self, rx: mmsg.Receiver) -> None:
        """:meth:`_read` with ``recvmmsg``: up to 64 datagrams per system call, each copied
        out of the process's receive buffer and decoded at once; the exporter and port of a
        source address are looked up by its raw bytes (one dict lookup per datagram)."""
        sock, collector = self.sock, self.collector
        if sock is None or collector is None:
            return
        fd = sock.fileno()
        feed = collector.feed_to
        sources = self._sources
        keylen = 8 if sock.family == socket.AF_INET else 24  # family, port, (flow info,) address
        view, names, size = rx.view, rx.names, rx.slot_size
        out: list[list[Any]] = []
        now = self.ctx.clock.monotonic()
        total = 0
        while total < MAX_READS:
            try:
                n = rx.recv_from(fd, MAX_READS - total)
            except OSError as e:
                self.ctx.stats.incr(self.stat["recv_errors"])
                self._log("recv", f"IPFIXIN '{self.id}': receive error: {e.strerror or e}")
                break
            if not n:
                break
            total += n
            raw = names[: n * NAME_SIZE].tobytes()
            spans = zip(range(0, n * NAME_SIZE, NAME_SIZE), range(0, n * size, size), rx.lengths(n), strict=True)
            for i, at, length in spans:
                key = raw[i : i + keylen]
                src = sources.get(key)
                if src is None:
                    src = self._source(key)
                exporter, port = src
                if exporter is None:
                    self.ctx.stats.incr(self.stat["denied"])
                    continue
                if length < 0:
                    self.ctx.stats.incr(self.stat["truncated"])
                    self._log("truncated", f"IPFIXIN '{self.id}': a datagram from {exporter} port {port} was "
                                           f"longer than {size} bytes: dropped")  # fmt: skip
                    continue
                data = view[at : at + length].tobytes()
                before = len(out)
                try:
                    feed(out, data, exporter, port, now)
                except Exception as e:  # as in _decode: a bug of ours, counted, the others go on
                    del out[before:]
                    self.ctx.stats.incr(self.stat["decoder_errors"])
                    self._log("bug", f"IPFIXIN '{self.id}': could not decode a message of {length} bytes from "
                                     f"{exporter} port {port} ({type(e).__name__}: {e}); dropped")  # fmt: skip
            if n < rx.slots:
                break  # the socket is empty
        collector.sync()
        if now >= self._drops_due:
            self._count_drops(now)
        if out:
            self.emit_all(out)
        self._pace(total, now)

    def _count_drops(self, now: float) -> None:
        """Add what the kernel dropped at the UDP socket since the last reading (its
        ``SK_MEMINFO_DROPS``, a 32-bit count) to ``socket_drops``; read again ``DROPS_EVERY``
        after ``now``. Where the kernel has no ``SO_MEMINFO``, never again."""
        self._drops_due = now + DROPS_EVERY
        sock = self.sock
        if sock is None or sock.type != socket.SOCK_DGRAM:
            return
        try:
            info = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 4 * (SK_MEMINFO_DROPS + 1))
        except OSError:
            self._drops_due = float("inf")
            return
        if len(info) < 4 * (SK_MEMINFO_DROPS + 1):
            self._drops_due = float("inf")
            return
        drops = int.from_bytes(info[4 * SK_MEMINFO_DROPS : 4 * SK_MEMINFO_DROPS + 4], sys.byteorder)
        new = (drops - self._drops) & 0xFFFFFFFF
        self._drops = drops
        if new:
            self.ctx.stats.incr(self.stat["socket_drops"], new)
            self._log("drops", f"IPFIXIN '{self.id}': the kernel dropped {new} datagrams at the socket (receive "
                               "buffer full: raise socket_buffer_size, or the exporters send faster than this "
                               "stack handles)")  # fmt: skip

    def _source(self, key: bytes) -> tuple[str | None, int]:
        """(exporter or None when denied, port) of a raw source address (the leading bytes of
        a ``sockaddr_in``/``sockaddr_in6``), remembered for the next datagram."""
        port = key[2] << 8 | key[3]
        if len(key) == 8:
            addr = socket.inet_ntop(socket.AF_INET, key[4:8])
        else:
            addr = socket.inet_ntop(socket.AF_INET6, key[8:24])
        if len(self._sources) > 4096:
            self._sources.clear()
        src = self._sources[key] = (self._exporter(addr), port)
        return src

    def _pace(self, n: int, began: float) -> None:
        """After reading ``n`` datagrams in a round that began at ``began``: let the loop pause
        before it waits again, if they come fast enough for a batch to be worth it; reading,
        handling and pausing stay within the time a fifth of the buffer takes to fill."""
        dt = began - self._last_read
        self._last_read = began
        if n >= MAX_READS - 1 or dt <= 0 or self._capacity < 512:
            return  # more are waiting: straight back; or no room for a burst
        rate = n / dt
        if rate >= PACE_MIN_RATE:
            pause = min(PACE_MAX, PACE_SHARE * self._capacity / rate) - (self.ctx.clock.monotonic() - began)
            if pause > 0.0001:
                self.ctx.loop.linger(pause)

    def _decode(self, data: bytes, addr: str, port: int, now: float) -> list[list[Any]]:
        collector = self.collector
        assert collector is not None
        try:
            return collector.feed(data, addr, port, now)
        except Exception as e:  # the codec catches what bad input causes; anything else is a bug of ours
            self.ctx.stats.incr(self.stat["decoder_errors"])
            self._log("bug", f"IPFIXIN '{self.id}': could not decode a message of {len(data)} bytes from "
                             f"{addr} port {port} ({type(e).__name__}: {e}); dropped")  # fmt: skip
            return []

    def feed(self, data: bytes, addr: str = "127.0.0.1", port: int = 40000) -> None:
        """One message as if ``addr``:``port`` had sent it (captured exports, tests): decoded
        and emitted, past the same allowlist."""
        if self.collector is None:
            self.collector = self._collector()
        exporter = self._exporter(addr)
        if exporter is None:
            self.ctx.stats.incr(self.stat["denied"])
            return
        recs = self._decode(data, exporter, port, self.ctx.clock.monotonic())
        self.collector.sync()
        if recs:
            self.emit_all(recs)

    # -- TCP
    def _accept(self) -> None:
        sock = self.sock
        if sock is None:
            return
        while True:
            try:
                conn, src = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self._log("accept", f"IPFIXIN '{self.id}': error while accepting an exporter: {e.strerror or e}")
                return
            exporter = self._exporter(src[0])
            if exporter is None:
                self.ctx.stats.incr(self.stat["denied"])
                conn.close()
                continue
            if len(self.conns) >= MAX_CLIENTS:
                self._log("limit", f"IPFIXIN '{self.id}': {MAX_CLIENTS} exporters connected already, refusing "
                                   f"{exporter} port {src[1]}")  # fmt: skip
                conn.close()
                continue
            conn.setblocking(False)
            c = _Conn(conn, exporter, src[1])
            self.conns[c.fd] = c
            self.ctx.stats.incr(self.stat["tcp_clients"])
            self.ctx.loop.add_reader(c.fd, functools.partial(self._read_stream, c))

    def _read_stream(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self.ctx.stats.incr(self.stat["recv_errors"])
            self._log("recv", f"IPFIXIN '{self.id}': read error from {conn.addr} port {conn.port}: "
                              f"{e.strerror or e}")  # fmt: skip
            self._close(conn)
            return
        if not data:
            self._close(conn, cut=True)
            return
        buf = conn.buf
        buf += data
        out: list[list[Any]] = []
        now = self.ctx.clock.monotonic()
        off = 0
        while len(buf) - off >= 4:
            version, length = buf[off] << 8 | buf[off + 1], buf[off + 2] << 8 | buf[off + 3]
            if version != 10 or length < 16:
                # A stream has no other way to find the next message: the connection ends.
                self.ctx.stats.incr(self.stat["tcp_bad_stream"])
                self._log("stream", f"IPFIXIN '{self.id}': {conn.addr} port {conn.port} sent a message of "
                                    f"version {version}, length {length} over TCP: closing the connection")
                self._close(conn)
                break
            if len(buf) - off < length:
                break
            out.extend(self._decode(bytes(buf[off : off + length]), conn.addr, conn.port, now))
            off += length
        if off and conn.fd in self.conns:
            del buf[:off]
        if self.collector is not None:
            self.collector.sync()
        if out:
            self.emit_all(out)

    def _close(self, conn: _Conn, cut: bool = False) -> None:
        """End a connection (and its session's templates); ``cut``: the peer closed in the
        middle of a message, which is counted as a short one."""
        if self.conns.pop(conn.fd, None) is not None:
            self.ctx.loop.remove_reader(conn.fd)
        conn.sock.close()
        if self.collector is not None:
            self.collector.close_session(conn.addr, conn.port)
        if cut and conn.buf:
            self.ctx.stats.incr(self._stat + "malformed")
            self.ctx.stats.incr(self._stat + "malformed.short")
        conn.buf.clear()

    # -- housekeeping
    def _expire(self) -> None:
        self._count_drops(self.ctx.clock.monotonic())
        if self.collector is not None:
            self.collector.expire(self.ctx.clock.monotonic())

    def _event(self, kind: str, text: str) -> None:
        self._log(kind, f"IPFIXIN '{self.id}': {text}")

    def _log(self, kind: str, text: str) -> None:
        """One line per kind of problem at most every 10 s, saying how many there were."""
        burst = self._bursts.get(kind)
        if burst is None:
            burst = self._bursts[kind] = Burst()
        n = burst.due(self.ctx.clock.monotonic())
        if not n:
            return
        more = f" ({n - 1} more since the last report)" if n > 1 else ""
        log = self.ctx.log.info if kind in ("sequence", "no_template", "withdrawal") else self.ctx.log.notice
        log(text + more)  # the logger escapes what came from outside
