"""The NFLOG input plugin: against the real kernel in a throw-away network namespace, and with a
fake socket for what a kernel will not do on request (malformed messages, netlink errors).

Kernel tests (marker ``linux``) need root and ``nft``; all traffic stays on the loopback of a
namespace the test creates (``pyu-<pid>-nflog``) and deletes afterwards. The test thread enters
it with setns(2) only while opening sockets: a socket keeps the namespace it was created in.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pyulogd.codec import netlink as nl
from pyulogd.codec import nflog
from pyulogd.core.clock import FakeClock
from pyulogd.core.context import Context
from pyulogd.core.errors import PluginError
from pyulogd.core.plugin import TYPE_WORDS
from pyulogd.io.loop import Loop
from pyulogd.io.netlink import ENOBUFS, NetlinkSocket
from pyulogd.plugins.inputs import nflog as plugin_mod
from pyulogd.plugins.inputs.nflog import NflogInput
from tests.builders.netlink import done_msg, error_msg
from tests.builders.nflog import build_packet
from tests.helpers import typed_options

CLONE_NEWNET = 0x40000000
NS = f"pyu-{os.getpid()}-nflog"
can_run_kernel_tests = os.geteuid() == 0 and all(shutil.which(tool) for tool in ("nft", "ip"))
linux = [pytest.mark.linux, pytest.mark.skipif(not can_run_kernel_tests, reason="needs root, ip and nft")]


# -- helpers


class Capture:
    """Stands in for a stack: keeps every record the source emits."""

    def __init__(self) -> None:
        self.tail: list[Any] = []
        self.recs: list[dict[str, Any]] = []

    def run(self, rec: list[Any]) -> None:
        self.recs.append(nflog.as_dict(rec))


def make(group: int = 0, ctx: Context | None = None, **options: Any) -> tuple[NflogInput, Capture, Context]:
    ctx = ctx or Context(loop=Loop())
    ctx.log.stream = io.StringIO()
    ctx.log.path = "test"
    ctx.log.level = 1
    p = NflogInput(ctx, "log1", typed_options(NflogInput, {"group": group, **options}))
    p.configure()
    cap = Capture()
    p.stacks = [cap]
    return p, cap, ctx


def log_text(ctx: Context) -> str:
    assert isinstance(ctx.log.stream, io.StringIO)
    return ctx.log.stream.getvalue()


def _setns(fd: int) -> None:
    if hasattr(os, "setns"):  # Python 3.12+
        os.setns(fd, CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            _setns(target)
            try:
                yield
            finally:
                _setns(own)
        finally:
            os.close(target)
    finally:
        os.close(own)


def sh(*args: str, stdin: str | None = None) -> None:
    subprocess.run(args, input=stdin, text=True, check=True, capture_output=True)


RULES = """
table inet pyutest {
  chain out {
    type filter hook output priority 0; policy accept;
    udp dport 9999 log prefix "pyuUDP " group %(g)d
    udp dport 9998 log group %(g2)d
    udp dport 9997 meta mark set 0x2a log prefix "pyuFLOOD " group %(g3)d
  }
  chain in {
    type filter hook input priority 0; policy accept;
    icmp type echo-request log prefix "pyuICMP " group %(g)d
  }
}
"""
G, G2, G3 = 33, 34, 35


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
    if not can_run_kernel_tests:
        pytest.skip("needs root, ip and nft")
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    sh("ip", "netns", "add", NS)
    try:
        sh("ip", "-n", NS, "link", "set", "lo", "up")
        sh("ip", "netns", "exec", NS, "nft", "-f", "-", stdin=RULES % {"g": G, "g2": G2, "g3": G3})
        yield NS
    finally:
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)


def wait_for(ctx: Context, cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while not cond() and time.monotonic() < end:
        ctx.loop.run_once(0.1)
    return cond()


@contextlib.contextmanager
def started(p: NflogInput, ns: str) -> Iterator[None]:
    with in_netns(ns):
        p.start()
    try:
        yield
    finally:
        p.stop()


# -- the real kernel


@pytest.mark.linux
@pytest.mark.skipif(not can_run_kernel_tests, reason="needs root, ip and nft")
def test_udp_icmp_and_ipv6_events(netns: str) -> None:
    p, cap, ctx = make(G, netlink_qthreshold=1, seq_local=1, numeric_label=0x105)
    with started(p, netns):
        with in_netns(netns):
            udp4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        with udp4, udp6, icmp:
            for i in range(3):
                udp4.sendto(b"hello-%d" % i, ("127.0.0.1", 9999))
            udp6.sendto(b"v6!", ("::1", 9999))
            echo = struct.pack("!BBHHH", 8, 0, 0, 0x6201, 1) + b"ping-data"
            csum = _checksum(echo)
            icmp.sendto(echo[:2] + struct.pack("!H", csum) + echo[4:], ("127.0.0.1", 0))
            assert wait_for(ctx, lambda: len(cap.recs) >= 5), log_text(ctx)
    recs = cap.recs
    udp = [r for r in recs if r.get("oob.prefix") == "pyuUDP "]
    assert [r["raw.pktlen"] for r in udp] == [20 + 8 + 7] * 3 + [40 + 8 + 3]
    for r in udp:
        assert r["oob.hook"] == 3 and r["oob.ifindex_out"] == 1 and "oob.ifindex_in" not in r
        assert r["raw.label"] == 5 and r["oob.uid"] == 0 and r["oob.mark"] == 0
        assert r["raw.pkt"].endswith(b"hello-" if r["oob.family"] == 2 else b"v6!") or r["oob.family"] == 2
    assert [r["oob.family"] for r in udp] == [2, 2, 2, 10]
    assert [r["oob.protocol"] for r in udp] == [0x800] * 3 + [0x86DD]
    assert [r["raw.pkt"][-7:] for r in udp[:3]] == [b"hello-0", b"hello-1", b"hello-2"]
    (ping,) = [r for r in recs if r.get("oob.prefix") == "pyuICMP "]
    assert ping["oob.hook"] == 1 and ping["oob.ifindex_in"] == 1 and ping["raw.pktlen"] == 20 + 8 + 9
    if "raw.mac" in ping:
        assert ping["raw.type"] == 772 and ping["raw.mac_len"] == len(ping["raw.mac"])  # loopback
    assert ping["oob.time.sec"] > 1_600_000_000
    seqs = [r["oob.seq.local"] for r in recs]
    assert seqs == list(range(len(recs)))
    assert ctx.stats.get("nflog.log1.packets") == len(recs)
    assert ctx.stats.get("nflog.log1.seq_gaps") == 0 and ctx.stats.get("nflog.log1.malformed") == 0
    assert "NFLOG netlink queue threshold has been set to 1" in log_text(ctx)


def _checksum(data: bytes) -> int:
    s: int = sum(struct.unpack(f"!{len(data) // 2}H", data[: len(data) // 2 * 2]))
    if len(data) % 2:
        s += data[-1] << 8
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


@pytest.mark.linux
@pytest.mark.skipif(not can_run_kernel_tests, reason="needs root, ip and nft")
def test_rule_without_prefix_and_group_conflict_and_rebind(netns: str) -> None:
    p, cap, ctx = make(G2, copy_range=16)
    with started(p, netns):
        other, _, _ = make(G2)
        with in_netns(netns), pytest.raises(PluginError, match=f"unable to bind to log group {G2}: "):
            other.start()
        assert other.sock is None
        other.stop()  # safe after a failed start
        with in_netns(netns), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"x" * 100, ("127.0.0.1", 9998))
        assert wait_for(ctx, lambda: len(cap.recs) >= 1), log_text(ctx)
    (r,) = cap.recs
    assert r["oob.prefix"] == ""  # nft 'log group N' without prefix: an empty, valid prefix
    assert r["raw.pktlen"] == 16  # copy_range
    # stop() released the group: binding again works
    again, _, _ = make(G2)
    with started(again, netns):
        pass


@pytest.mark.linux
@pytest.mark.skipif(not can_run_kernel_tests, reason="needs root, ip and nft")
def test_enobufs_grows_the_buffer_and_seq_gaps_count_the_loss(netns: str) -> None:
    p, cap, ctx = make(G3, netlink_qthreshold=1, seq_local=1, netlink_socket_buffer_size=4096,
                       netlink_socket_buffer_maxsize=1 << 22)  # fmt: skip
    sent = 400
    with started(p, netns):
        assert p.sock is not None
        first = p.sock.rcvbuf()
        with in_netns(netns), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(sent):  # nobody reads meanwhile: the small buffer overflows
                s.sendto(b"y" * 1000, ("127.0.0.1", 9997))
        wait_for(ctx, lambda: False, timeout=1.0)
        assert p.sock.rcvbuf() > first
        with in_netns(netns), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"z", ("127.0.0.1", 9997))  # after the loss: the gap shows on this one
        assert wait_for(ctx, lambda: bool(cap.recs) and cap.recs[-1]["raw.pktlen"] == 29)
    lost = ctx.stats.get("nflog.log1.seq_lost")
    assert ctx.stats.get("nflog.log1.enobufs") >= 1
    assert ctx.stats.get("nflog.log1.seq_gaps") >= 1 and lost > 0
    assert len(cap.recs) + lost == sent + 1
    assert all(r["oob.mark"] == 0x2A for r in cap.recs)
    assert "We are losing events, increasing buffer size to" in log_text(ctx)


@pytest.mark.linux
@pytest.mark.skipif(not can_run_kernel_tests, reason="needs root, ip and nft")
def test_group_zero_becomes_the_system_logger(netns: str) -> None:
    p, _, ctx = make(0)
    with started(p, netns):
        with in_netns(netns):
            with open("/proc/sys/net/netfilter/nf_log/2") as f:
                assert f.read().strip() == "nfnetlink_log"
    assert "forcing unbind of existing log handler for protocol 2" in log_text(ctx)


@pytest.mark.linux
@pytest.mark.skipif(not can_run_kernel_tests, reason="needs root, ip and nft")
def test_events_that_arrive_while_waiting_for_an_ack_are_kept_in_order(netns: str) -> None:
    p, cap, ctx = make(G, netlink_qthreshold=1)
    with started(p, netns):
        assert p.sock is not None
        with in_netns(netns), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"first", ("127.0.0.1", 9999))
            p.sock.request(nflog.set_timeout(G, 50, p.sock.next_seq()))  # the event is queued before the ack
            assert len(p.sock.pending) == 1
            s.sendto(b"second", ("127.0.0.1", 9999))
        assert wait_for(ctx, lambda: len(cap.recs) >= 2)
    assert [r["raw.pkt"][28:] for r in cap.recs] == [b"first", b"second"]


# -- the socket layer with a fake kernel (an AF_UNIX datagram pair)


def fake_kernel(bufsize: int = 4096) -> tuple[NetlinkSocket, socket.socket]:
    ns = NetlinkSocket(bufsize=bufsize)
    ns.sock.close()
    ns.sock, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ns.sock.setblocking(False)
    return ns, peer


def test_request_keeps_events_and_raises_the_kernels_errno() -> None:
    ns, peer = fake_kernel()
    with peer:
        event = build_packet(prefix=b"ev")
        msg = nflog.group_bind(7, ns.next_seq())
        peer.send(event)
        peer.send(error_msg(0, nflog.group_bind(7, 999)))  # an ack for someone else's request
        peer.send(error_msg(1, msg, pid=ns.portid))
        with pytest.raises(PermissionError):
            ns.request(msg)
        assert peer.recv(100) == msg
        assert len(ns.pending) == 2
        msg2 = nflog.group_unbind(7, ns.next_seq())
        peer.send(error_msg(0, msg2))
        ns.request(msg2)
        got: list[bytes] = []
        assert ns.drain(got.append, lambda: None) == 2 and got[0] == event
        assert ns.recv() is None
    ns.close()


def test_request_times_out_and_reads_are_bounded_and_truncation_counted() -> None:
    ns, peer = fake_kernel(bufsize=64)
    with peer:
        with pytest.raises(TimeoutError):
            ns.request(nflog.group_bind(1, ns.next_seq()), timeout=0.05)
        for _ in range(5):
            peer.send(b"\0" * 32)
        got: list[bytes] = []
        assert ns.drain(got.append, lambda: None, limit=3) == 3
        assert ns.drain(got.append, lambda: None, limit=3) == 2 and len(got) == 5
        peer.send(b"\1" * 100)
        data = ns.recv()
        assert data == b"\1" * 64 and ns.truncated == 1
    ns.close()
    assert ns.closed and ENOBUFS == 105


def test_real_netlink_socket_basics() -> None:
    ns = NetlinkSocket()
    try:
        assert ns.portid > 0 and ns.fileno() >= 0
        assert ns.recv() is None
        granted = ns.set_rcvbuf(65536)
        assert granted >= 65536 and ns.rcvbuf() == granted
        assert [ns.next_seq(), ns.next_seq()] == [1, 2]
    finally:
        ns.close()


# -- the plugin with a fake socket (no kernel, no root)


class FakeSock:
    def __init__(self, datagrams: list[bytes | int]) -> None:
        self.datagrams = datagrams
        self.enobufs = 0
        self.truncated = 0
        self.asked: list[int] = []
        self.pending: list[bytes] = []
        self.closed = False

    def fileno(self) -> int:
        return 99

    def drain(self, on_data: Callable[[bytes], None], on_overrun: Callable[[], None], limit: int = 64) -> int:
        n = 0
        while self.datagrams and n < limit:
            d = self.datagrams.pop(0)
            if isinstance(d, int):
                self.enobufs += 1
                on_overrun()
            else:
                on_data(d)
            n += 1
        return n

    def set_rcvbuf(self, size: int) -> int:
        self.asked.append(size)
        return size * 2

    def rcvbuf(self) -> int:
        return (self.asked[-1] if self.asked else 106496) * 2

    def request(self, msg: bytes, timeout: float = 5.0) -> None:
        pass

    def next_seq(self) -> int:
        return 1

    def close(self) -> None:
        self.closed = True


def fake_clock(ctx: Context) -> FakeClock:
    assert isinstance(ctx.clock, FakeClock)
    return ctx.clock


def with_fake(datagrams: list[bytes | int], **options: Any) -> tuple[NflogInput, Capture, Context, FakeSock]:
    p, cap, ctx = make(11, Context(loop=Loop(FakeClock(wall=1000.0))), **options)
    fake = FakeSock(datagrams)
    p.sock = fake  # type: ignore[assignment]
    p._bound = True
    p._rcvbuf_asked = options.get("netlink_socket_buffer_size") or 106496
    return p, cap, ctx, fake


def test_malformed_messages_are_counted_skipped_and_logged_once_per_burst() -> None:
    good = build_packet(prefix=b"ok")
    bad = nl.nfnl_msg(4, 0, 2, 0, [nl.nla(nflog.NFULA_MARK, b"\1")], flags=0)
    bufs: list[bytes | int] = [good + bad + good + done_msg()] * 5
    p, cap, ctx, _ = with_fake(bufs)
    p._readable()
    assert len(cap.recs) == 10 and all(r["oob.prefix"] == "ok" for r in cap.recs)
    assert ctx.stats.get("nflog.log1.malformed") == 5 and ctx.stats.get("nflog.log1.packets") == 10
    assert log_text(ctx).count("malformed") == 1
    fake_clock(ctx).advance(11)
    p.sock.datagrams.append(bad)  # type: ignore[union-attr]
    p._readable()
    assert log_text(ctx).count("malformed") == 2 and "skipped 5 malformed" in log_text(ctx)


def test_netlink_errors_and_unexpected_messages_are_counted() -> None:
    req = nflog.group_bind(11, seq=3)
    stranger = nl.nlmsg(0x101, 0, 0, b"\0" * 4)
    p, cap, ctx, _ = with_fake([error_msg(105, req) + stranger + build_packet()])
    p._readable()
    assert len(cap.recs) == 1
    assert ctx.stats.get("nflog.log1.netlink_errors") == 1 and ctx.stats.get("nflog.log1.unexpected") == 1
    assert os.strerror(105) in log_text(ctx)


def test_sequence_gaps() -> None:
    seqs = [0, 1, 2, 5, 6, 3, 4, 0xFFFFFFFE, 0]
    bufs: list[bytes | int] = [build_packet(seq=s, seq_global=(100 + s) & 0xFFFFFFFF) for s in seqs]
    p, cap, ctx, _ = with_fake(bufs, seq_local=1, seq_global=1)
    p._readable()
    assert len(cap.recs) == 9
    # 2 -> 5 loses 2; 6 -> 3 and 4 -> 0xFFFFFFFE go backwards (a restart, not a loss);
    # 0xFFFFFFFE -> 0 wraps and loses 0xFFFFFFFF.
    assert ctx.stats.get("nflog.log1.seq_gaps") == 2
    assert ctx.stats.get("nflog.log1.seq_lost") == 3
    assert ctx.stats.get("nflog.log1.seq_global_gaps") == 2  # 102 -> 105, 98 -> 107
    assert log_text(ctx).count("event(s) missing") == 1


def causes(ctx: Context) -> dict[str, int]:
    """The losses the input reported into the trail's ledger, by cause."""
    out: dict[str, int] = {}
    for loss in ctx.losses.take():
        for cause, n in loss.causes.items():
            out[cause] = out.get(cause, 0) + n
    return out


def test_overrun_read_before_queued_records_is_explained_only_by_what_follows_the_drain() -> None:
    # The kernel reports ENOBUFS at the first read after a drop, before the records still
    # queued. A gap among those records may explain it, or the drop may also have hit packets
    # after the last of them (the fault matrix's kernel overrun: 20000 -> 20008 read, 20009
    # dropped at the tail, no later packet). Only the first record after the drain tells.
    def pkts(*seqs: int) -> list[bytes | int]:
        return [build_packet(seq=s) for s in seqs]

    # 1. Gap among the queued records, then the queue drained, then the next record in
    #    sequence: the gap explained the overrun, nothing more in the trail.
    p, _, ctx, fake = with_fake([*pkts(0, 1), -1, *pkts(5, 6)], seq_local=1)
    p._readable()
    fake.datagrams += pkts(7)
    p._readable()
    assert causes(ctx) == {"seq_gap": 3}
    p.stop()
    assert causes(ctx) == {}

    # 2. The same, but the daemon stops before any record follows the drain: the drop may
    #    have hit the last packets too, so the overrun goes into the trail as a lower bound.
    p, _, ctx, fake = with_fake([*pkts(0, 1), -1, *pkts(5, 6)], seq_local=1)
    p._readable()
    p.stop()
    assert causes(ctx) == {"seq_gap": 3, "enobufs": 1}

    # 3. After the drain, a gap: the drop is there, counted exactly, no overrun record.
    p, _, ctx, fake = with_fake([*pkts(0, 1), -1, *pkts(5, 6)], seq_local=1)
    p._readable()
    fake.datagrams += pkts(9)
    p._readable()
    p.stop()
    assert causes(ctx) == {"seq_gap": 5}

    # 4. No gap anywhere: the kernel dropped without numbering (SIGSTOP, kernel 6.18).
    p, _, ctx, fake = with_fake([*pkts(0, 1), -1, *pkts(2, 3)], seq_local=1)
    p._readable()
    fake.datagrams += pkts(4)
    p._readable()
    assert causes(ctx) == {"enobufs": 1}


def test_enobufs_doubles_up_to_maxsize_then_logs_at_most_every_interval() -> None:
    sizes = {"netlink_socket_buffer_size": 1000, "netlink_socket_buffer_maxsize": 5000}
    p, cap, ctx, fake = with_fake([-1] * 6, **sizes)
    p._readable()
    assert fake.asked == [2000, 4000, 5000]
    assert ctx.stats.get("nflog.log1.enobufs") == 6
    text = log_text(ctx)
    assert text.count("increasing buffer size to") == 3 and "to 10000 (3 ENOBUFS so far)" in text
    assert text.count("Maximum buffer size (10000) in NFLOG has been reached") == 1  # then quiet
    fake.datagrams += [-1, -1]
    fake_clock(ctx).advance(11)
    p._readable()
    text = log_text(ctx)
    assert text.count("has been reached") == 2 and "(3 ENOBUFS since last report, 7 in total)" in text


def test_enobufs_without_maxsize_never_grows() -> None:
    p, _, ctx, fake = with_fake([-1, -1])
    p._readable()
    assert fake.asked == [] and ctx.stats.get("nflog.log1.enobufs") == 2
    assert log_text(ctx).count("We are losing events (1 ENOBUFS since last report, 1 in total). Please") == 1


def test_stop_without_start_and_twice() -> None:
    p, _, _ = make(5)
    p.stop()
    p2, _, _, fake = with_fake([])
    p2.stop()
    p2.stop()
    assert fake.closed and p2.sock is None


def test_declarations_match_ulogd_2_0_8() -> None:
    # What `ulogd -i ulogd_inppkt_NFLOG.so` (2.0.8) prints, plus pyulogd's copy_range and netlink_nlbufsiz.
    opts = [(o.name, o.default) for o in NflogInput.options]
    assert opts == [("bufsize", 150000), ("group", 0), ("unbind", 1), ("bind", 0), ("seq_local", 0),
                    ("seq_global", 0), ("numeric_label", 0), ("netlink_socket_buffer_size", 0),
                    ("netlink_socket_buffer_maxsize", 0), ("netlink_qthreshold", 0), ("netlink_qtimeout", 0),
                    ("attach_conntrack", 0), ("copy_range", 0xFFFF), ("netlink_nlbufsiz", 32000),
                    # ulogd2 HEAD, then pyulogd's namespace following
                    ("network_namespace_path", ""), ("netns", ""), ("netns_dir", "/run/netns"),
                    ("netns_rescan", 5)]  # fmt: skip
    keys = [f"{k.name} ({TYPE_WORDS[k.type]})" for k in NflogInput.output_keys]
    assert keys == [
        "raw.mac (raw data)", "raw.pkt (raw data)", "raw.pktlen (unsigned int 32)",
        "raw.pktcount (unsigned int 32)",
        "oob.prefix (string)", "oob.time.sec (unsigned int 32)", "oob.time.usec (unsigned int 32)",
        "oob.mark (unsigned int 32)", "oob.ifindex_in (unsigned int 32)", "oob.ifindex_out (unsigned int 32)",
        "oob.hook (unsigned int 8)", "raw.mac_len (unsigned int 16)", "oob.seq.local (unsigned int 32)",
        "oob.seq.global (unsigned int 32)", "oob.family (unsigned int 8)", "oob.protocol (unsigned int 16)",
        "oob.uid (unsigned int 32)", "oob.gid (unsigned int 32)", "raw.label (unsigned int 8)",
        "raw.type (unsigned int 16)", "raw.mac.saddr (raw data)", "raw.mac.addrlen (unsigned int 16)",
        "raw (raw data)", "ct (raw data)",
        # pyulogd: the network namespace, after ulogd's keys
        "oob.netns (string)", "neutron.router_id (string)", "neutron.network_id (string)",
    ]  # fmt: skip
    assert all(k.help for k in NflogInput.output_keys) and all(o.help for o in NflogInput.options)
    assert NflogInput.name == "NFLOG" and NflogInput.so_name == "ulogd_inppkt_NFLOG.so"
    group = next(o for o in NflogInput.options if o.name == "group")
    assert group.parse("65535") == 65535
    with pytest.raises(ValueError, match="between 0 and 65535"):
        group.parse("70000")
    assert plugin_mod.MAX_READS == 64
