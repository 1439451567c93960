"""The NFCT input without a kernel: modes driven by feeding event buffers and canned dumps, with a
fake clock; SIGUSR2 without the flow table and with the input shared by two stacks."""

from __future__ import annotations

import io
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyulogd.codec import netlink as nl
from pyulogd.codec import nfct
from pyulogd.core.clock import FakeClock
from pyulogd.core.config import parse_text
from pyulogd.core.context import Context
from pyulogd.core.errors import ConfigError
from pyulogd.core.plugin import Sink
from pyulogd.daemon.service import Service
from pyulogd.io.loop import Loop
from pyulogd.io.netlink import lay_out
from pyulogd.plugins.inputs import nfct as plugin_mod
from pyulogd.plugins.inputs.nfct import NfctInput
from tests.builders.netlink import done_msg, error_msg
from tests.builders.nfct import Tuple, build_ct
from tests.helpers import typed_options

VECTORS = Path(__file__).resolve().parents[2] / "tests/vectors/nfct"
T0 = 1795764190.0
A, B, C = (socket.inet_aton(a) for a in ("10.0.0.1", "10.0.0.2", "10.0.0.3"))


def clock(ctx: Context) -> FakeClock:
    assert isinstance(ctx.clock, FakeClock)
    return ctx.clock


class Capture:
    """Stands in for a stack: keeps every record the source emits."""

    def __init__(self) -> None:
        self.tail: list[Any] = []
        self.recs: list[dict[str, Any]] = []

    def run(self, rec: list[Any]) -> None:
        self.recs.append(nfct.as_dict(rec))


def make(nstacks: int = 1, **options: Any) -> tuple[NfctInput, list[Capture], Context]:
    ctx = Context(loop=Loop(FakeClock(wall=T0)))
    ctx.log.stream = io.StringIO()
    ctx.log.path = "test"
    ctx.log.level = 1
    p = NfctInput(ctx, "ct1", typed_options(NfctInput, options))
    p.configure()
    caps = [Capture() for _ in range(nstacks)]
    p.stacks = caps
    return p, caps, ctx


def log_text(ctx: Context) -> str:
    assert isinstance(ctx.log.stream, io.StringIO)
    return ctx.log.stream.getvalue()


def buffers(case: str) -> list[bytes]:
    return [bytes.fromhex(x) for x in (VECTORS / f"{case}.buffers.hex").read_text().split()]


def tcp(sport: int, src: bytes = A) -> Tuple:
    return Tuple(src, B, 6, sport, 80)


def entry(
    t: Tuple, ct_id: int, counters: tuple[int, int, int, int] = (1, 60, 1, 60), start: int | None = None
) -> bytes:
    """A dump entry, as the kernel answers IPCTNL_MSG_CT_GET with NLM_F_DUMP."""
    return build_ct(
        nfct.UPDATE,
        t,
        ct_id=ct_id,
        counters=counters,
        flags=nl.NLM_F_MULTI,
        timestamp=None if start is None else (start, None),
        seq=1,
        pid=4242,
    )


def fake_dumps(p: NfctInput, *dumps: list[bytes], log: list[bool] | None = None) -> None:
    """Make p's dumps answer with these entries (one list per dump, in turn), then NLMSG_DONE."""
    queue = list(dumps)

    def dump_buffers(zero: bool) -> Iterator[bytes]:
        if log is not None:
            log.append(zero)
        entries = queue.pop(0)
        yield b"".join(entries) + done_msg(1)

    p.dump_buffers = dump_buffers  # type: ignore[method-assign]


# -- event mode without the table


def test_no_hash_emits_new_and_destroy_counts_updates() -> None:
    p, (cap,), ctx = make(hash_enable=0, event_mask=7)
    for b in buffers("flow-json"):
        p.feed(b)
    assert [r["ct.event"] for r in cap.recs] == [1] * 9 + [4] * 9
    assert ctx.stats.get("nfct.ct1.updates_skipped") == 17
    assert ctx.stats.get("nfct.ct1.events") == 35
    assert log_text(ctx).count("UPDATE events are not logged") == 1  # once, not per event
    for r in cap.recs:
        assert r["oob.protocol"] in (0x0800, 0x86DD)


def test_no_hash_times_fall_back_to_now() -> None:
    p, (cap,), ctx = make(hash_enable=0)
    p.feed(build_ct(nfct.NEW, tcp(1)))
    clock(ctx).advance(5)
    p.feed(build_ct(nfct.DESTROY, tcp(1)))
    new, destroy = cap.recs
    assert (new["flow.start.sec"], "flow.end.sec" in new) == (int(T0), False)
    assert (destroy["flow.end.sec"], "flow.start.sec" in destroy) == (int(T0) + 5, False)


# -- event mode with the table


def test_hash_emits_one_record_per_flow_with_start_from_new() -> None:
    p, (cap,), ctx = make(event_mask=7)
    bufs = buffers("flow-hash-json")
    news = {}
    for b in bufs:
        v = nfct.decode(b)
        if v[nfct.I_EVENT] == nfct.NEW:
            news[v[nfct.I_ID]] = (v[nfct.I_START_SEC], v[nfct.I_START_USEC])
        p.feed(b)
    assert len(cap.recs) == 9 and all(r["ct.event"] == 4 for r in cap.recs)
    for r in cap.recs:
        assert (r["flow.start.sec"], r["flow.start.usec"]) == news[r["ct.id"]]
        assert r["flow.end.sec"] > r["flow.start.sec"] - 1
    assert not p.flows
    assert ctx.stats.get("nfct.ct1.updates_skipped") == 0


def test_hash_start_is_the_cached_one_not_the_kernels() -> None:
    p, (cap,), ctx = make()
    p.feed(build_ct(nfct.NEW, tcp(1), ct_id=5))  # no kernel time: now
    clock(ctx).advance(3)
    p.feed(build_ct(nfct.UPDATE, tcp(1), ct_id=5))
    p.feed(
        build_ct(
       nfct.DESTROY,
       tcp(1),
       ct_id=5,
       counters=(4, 400, 3, 300),
       timestamp=(1_000_000_000_000_000_000, 1_000_000_010_000_000_000),
        )
    )
    (r,) = cap.recs
    assert (r["flow.start.sec"], r["flow.end.sec"], r["orig.raw.pktcount"]) == (int(T0), 1_000_000_010, 4)


def test_hash_uncached_destroy_gets_kernel_start_or_none() -> None:
    p, (cap,), ctx = make()
    p.feed(build_ct(nfct.DESTROY, tcp(1), timestamp=(1_500_000_000_000_000_000, 1_500_000_001_000_000_000)))
    p.feed(build_ct(nfct.DESTROY, tcp(2)))
    with_ts, without = cap.recs
    assert with_ts["flow.start.sec"] == 1_500_000_000 and with_ts["flow.end.sec"] == 1_500_000_001
    assert "flow.start.sec" not in without and without["flow.end.sec"] == int(T0)


def test_hash_update_of_unknown_flow_is_cached() -> None:
    p, (cap,), ctx = make()
    p.feed(build_ct(nfct.UPDATE, tcp(1), ct_id=9))
    assert len(p.flows) == 1 and not cap.recs
    clock(ctx).advance(1)
    p.feed(build_ct(nfct.DESTROY, tcp(1), ct_id=9))
    assert cap.recs[0]["flow.start.sec"] == int(T0)


def test_hash_max_entries() -> None:
    p, (cap,), ctx = make(hash_max_entries=2)
    for i in range(3):
        p.feed(build_ct(nfct.NEW, tcp(i), ct_id=i))
    assert len(p.flows) == 2 and ctx.stats.get("nfct.ct1.hash_full") == 1
    p.feed(build_ct(nfct.DESTROY, tcp(2), ct_id=2))
    assert "flow.start.sec" not in cap.recs[0]


def test_same_tuple_new_id_is_a_new_flow() -> None:
    p, (cap,), ctx = make()
    p.feed(build_ct(nfct.NEW, tcp(1), ct_id=1))
    p.feed(build_ct(nfct.NEW, tcp(1), ct_id=2))
    assert len(p.flows) == 2


# -- resync, polling, SIGUSR2


def test_enobufs_counted_and_resync_scheduled_once() -> None:
    p, (cap,), ctx = make(netlink_resync_timeout=30)
    p._overrun()
    timer = p._resync_timer
    p._overrun()
    assert timer is not None and p._resync_timer is timer
    assert ctx.stats.get("nfct.ct1.enobufs") == 2
    assert "losing events" in log_text(ctx)
    timer.cancel()
    q, _, _ = make(hash_enable=0)
    q._overrun()
    assert q._resync_timer is None  # nothing to resync without the table


def test_resync_emits_vanished_flows() -> None:
    p, (cap,), ctx = make()
    for i in (1, 2, 3):
        p.feed(build_ct(nfct.NEW, tcp(i), ct_id=i))
    # Flow 2's DESTROY was lost; flow 4 started while events were lost.
    fake_dumps(p, [entry(tcp(1), 1), entry(tcp(3), 3, (7, 700, 5, 500)), entry(tcp(4), 4)])
    clock(ctx).advance(60)
    p.resync()
    (r,) = cap.recs
    assert (r["ct.event"], r["ct.id"], r["orig.l4.sport"]) == (4, 2, 2)
    assert (r["flow.start.sec"], r["flow.end.sec"]) == (int(T0), int(T0) + 60)
    assert set(k[0] for k in p.flows) == {1, 3, 4}
    assert ctx.stats.get("nfct.ct1.resyncs") == 1 and ctx.stats.get("nfct.ct1.purged") == 1
    # The counters of a flow seen in the dump are refreshed.
    p.feed(build_ct(nfct.DESTROY, tcp(3), ct_id=3))
    assert cap.recs[-1]["flow.start.sec"] == int(T0)


def test_interrupted_dump_confirms_with_get() -> None:
    p, (cap,), ctx = make()
    for i in (1, 2):
        p.feed(build_ct(nfct.NEW, tcp(i), ct_id=i))
    intr = build_ct(nfct.UPDATE, tcp(9), ct_id=9, flags=nl.NLM_F_MULTI | nl.NLM_F_DUMP_INTR)
    fake_dumps(p, [intr])
    asked: list[int] = []

    def exists(values: list[Any]) -> bool:
        ct_id: int = values[nfct.I_ID]
        asked.append(ct_id)
        return ct_id == 1

    p._exists = exists  # type: ignore[method-assign]
    p.resync()
    assert sorted(asked) == [1, 2]
    assert [r["ct.id"] for r in cap.recs] == [2]


def test_polling_mode() -> None:
    p, (cap,), ctx = make(pollinterval=10)
    fake_dumps(
        p,
        [entry(tcp(1), 1, start=1_700_000_000_000_000_000), entry(tcp(2), 2)],
        [entry(tcp(2), 2, (9, 900, 9, 900))],
        [],
    )
    p._poll()
    assert not cap.recs and len(p.flows) == 2
    clock(ctx).advance(10)
    p._poll()
    (r,) = cap.recs
    assert (r["ct.id"], r["ct.event"], r["flow.start.sec"], r["flow.end.sec"]) == (1, 4, 1_700_000_000, int(T0) + 10)
    clock(ctx).advance(10)
    p._poll()
    r = cap.recs[1]
    assert (r["ct.id"], r["flow.start.sec"], r["orig.raw.pktcount"]) == (2, int(T0), 9)  # last counters
    assert not p.flows


def test_polling_needs_the_table() -> None:
    with pytest.raises(ConfigError, match="requires the hashtable"):
        make(pollinterval=5, hash_enable=0)


def test_sigusr2_without_table_and_shared_by_two_stacks() -> None:
    p, caps, ctx = make(nstacks=2, hash_enable=0)
    zero: list[bool] = []
    fake_dumps(p, [entry(tcp(1), 1, (2, 100, 1, 50)), entry(tcp(2), 2)], log=zero)
    p.signal(signal.SIGUSR2)
    assert zero == [True]  # IPCTNL_MSG_CT_GET_CTRZERO
    for cap in caps:
        assert [(r["ct.event"], r["ct.id"]) for r in cap.recs] == [(2, 1), (2, 2)]
        assert cap.recs[0]["orig.raw.pktlen"] == 100 and "flow.start.sec" not in cap.recs[0]
    assert not p.flows


def test_sigusr2_with_table_caches_and_sets_start() -> None:
    p, (cap,), ctx = make()
    p.feed(build_ct(nfct.NEW, tcp(1), ct_id=1))
    clock(ctx).advance(100)
    fake_dumps(p, [entry(tcp(1), 1), entry(tcp(2), 2)])
    p.signal(signal.SIGUSR2)
    assert [r["flow.start.sec"] for r in cap.recs] == [int(T0), int(T0) + 100]
    assert len(p.flows) == 2


def test_failed_dump_is_counted_not_raised() -> None:
    p, (cap,), ctx = make(hash_enable=0)

    def broken(zero: bool) -> Iterator[bytes]:
        raise PermissionError(1, "Operation not permitted")
        yield b""  # pragma: no cover

    p.dump_buffers = broken  # type: ignore[method-assign]
    p.signal(signal.SIGUSR2)
    p.signal(signal.SIGUSR2)
    assert ctx.stats.get("nfct.ct1.dump_errors") == 2
    assert log_text(ctx).count("Operation not permitted") == 1
    fake_dumps(p, [error_msg(1, nfct.dump_request(1))])
    p.signal(signal.SIGUSR2)
    assert ctx.stats.get("nfct.ct1.dump_errors") == 3


def test_sigusr2_through_the_service_with_a_shared_id(tmp_path: Path) -> None:
    """Two stacks share ct1 (2.0.8 delivers the signal to a never-started duplicate and crashes)."""
    conf = f"""[global]
logfile="{tmp_path}/ulogd.log"
stack=ct1:NFCT,ip2str1:IP2STR,json1:JSON
stack=ct1:NFCT,ip2str2:IP2STR,json2:JSON

[ct1]
hash_enable=0

[json1]
file="{tmp_path}/a.json"
sync=1

[json2]
file="{tmp_path}/b.json"
sync=1
"""
    svc = Service(str(tmp_path / "ulogd.conf"), Context(loop=Loop(FakeClock(wall=T0))))
    svc.load_config(parse_text(conf, str(tmp_path / "ulogd.conf")))
    src = svc.stacks[0].source
    assert isinstance(src, NfctInput) and svc.stacks[1].source is src
    for stack in svc.stacks:
        for inst in stack.instances[1:]:
            inst.start()
            svc.started.append(inst)
            if isinstance(inst, Sink):
                svc.sinks.append(inst)
    svc.started.insert(0, src)
    fake_dumps(src, [entry(tcp(1), 1), entry(tcp(2, C), 2)])
    svc._deliver(signal.SIGUSR2)
    svc.flush()
    svc.stop()
    for name in ("a.json", "b.json"):
        lines = (tmp_path / name).read_text().splitlines()
        assert len(lines) == 2 and all('"ct.event": 2' in x for x in lines)


# -- filters, accounting, problems


def test_filters_apply_to_events() -> None:
    p, (cap,), ctx = make(hash_enable=0, accept_src_filter="10.0.0.1/32", accept_proto_filter="tcp")
    p.feed(build_ct(nfct.NEW, tcp(1)))
    p.feed(build_ct(nfct.NEW, tcp(2, C)))
    p.feed(build_ct(nfct.NEW, Tuple(A, B, 17, 1, 2)))
    assert len(cap.recs) == 1 and ctx.stats.get("nfct.ct1.filtered") == 2
    assert "accepting only flows" in log_text(ctx)


@pytest.mark.parametrize(
    "opt,value",
    [
        ("accept_src_filter", "10.0.0.1"),
        ("accept_dst_filter", "x/8"),
        ("accept_proto_filter", "tcp,nonesuch"),
        ("accounting", 2),
    ],
)
def test_bad_options(opt: str, value: Any) -> None:
    with pytest.raises(ConfigError):
        make(**{opt: value})


def test_counters_notice_once_when_accounting_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    written: list[tuple[str, str]] = []
    monkeypatch.setattr(plugin_mod, "_read_sysctl", lambda name: "0")
    monkeypatch.setattr(plugin_mod, "_write_sysctl", lambda name, v: written.append((name, v)))
    p, (cap,), ctx = make()
    p._accounting()  # Capture binds no counters: nothing to say
    assert "nf_conntrack_acct is 0" not in log_text(ctx)

    class Reader:
        in_slots = [nfct.IDX["orig.raw.pktcount"]]

    class Stack:
        instances = [p, Reader()]

    p.stacks = [Stack()]
    p._accounting()
    assert log_text(ctx).count("nf_conntrack_acct is 0") == 1
    q, _, _ = make(accounting=1)
    q._accounting()
    assert written == [("nf_conntrack_acct", "1"), ("nf_conntrack_timestamp", "1")]


def test_malformed_and_errors_counted() -> None:
    p, (cap,), ctx = make(hash_enable=0)
    good = build_ct(nfct.NEW, tcp(1))
    bad = good[:40] + b"\xff" * (len(good) - 40)
    p.feed(bad)
    p.feed(bad + good)
    p.feed(error_msg(105, good))
    assert len(cap.recs) == 1  # the bad message is skipped, the good one after it is not
    assert ctx.stats.get("nfct.ct1.malformed") == 2
    assert ctx.stats.get("nfct.ct1.netlink_errors") == 1
    assert log_text(ctx).count("malformed") == 1  # rate-limited
    p.feed(good[:-8])  # cut: the framing breaks
    assert ctx.stats.get("nfct.ct1.malformed") == 3 and len(cap.recs) == 1


def test_event_mask_bits_beyond_7_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[int] = []
    batched: list[bool] = []

    class FakeSock:
        def __init__(self, groups: int = 0, bufsize: int = 0, recvmmsg: bool = True, clock: Any = None) -> None:
            opened.append(groups)
            batched.append(recvmmsg)

        def rcvbuf(self) -> int:
            return 4096

        def set_rcvbuf(self, size: int) -> int:
            asked.append(size)
            return 2 * size

        def fileno(self) -> int:
            return -1

    asked: list[int] = []
    monkeypatch.setattr(plugin_mod, "NetlinkSocket", FakeSock)
    p, _, ctx = make(hash_enable=0, event_mask=0xF)
    monkeypatch.setattr(ctx.loop, "add_reader", lambda fd, cb: None)
    p._open_event_socket()
    assert opened == [7] and "bits beyond" in log_text(ctx)
    assert asked == [plugin_mod.DEFAULT_RCVBUF]  # netlink_socket_buffer_size=0: pyulogd's default
    p, _, ctx = make(hash_enable=0, netlink_socket_buffer_maxsize=300000)
    monkeypatch.setattr(ctx.loop, "add_reader", lambda fd, cb: None)
    p._open_event_socket()
    assert asked[-1] == 300000  # not beyond the maximum asked for
    assert batched == [True, True]
    p, _, ctx = make(hash_enable=0)
    ctx.recvmmsg = False  # [global] recvmmsg=0, --no-recvmmsg
    monkeypatch.setattr(ctx.loop, "add_reader", lambda fd, cb: None)
    p._open_event_socket()
    assert batched == [True, True, False]


def test_unfinished_dump_drops_the_dump_socket() -> None:
    """What is left of a dump that was given up must not be read as the next dump's answer."""
    p, (cap,), ctx = make(hash_enable=0)

    class Sock:
        closed = False

        def close(self) -> None:
            self.closed = True

    sock = Sock()
    p.dsock = sock  # type: ignore[assignment]

    def stalled(zero: bool) -> Iterator[bytes]:
        yield entry(tcp(1), 1)
        raise TimeoutError(110, "no answer from ctnetlink")

    p.dump_buffers = stalled  # type: ignore[method-assign]
    p.signal(signal.SIGUSR2)
    assert sock.closed and p.dsock is None
    assert len(cap.recs) == 1 and ctx.stats.get("nfct.ct1.dump_errors") == 1


def test_flows_of_the_initial_dump_are_swept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugin_mod, "_read_sysctl", lambda name: "2")
    p, (cap,), ctx = make(netlink_resync_timeout=5)
    fake_dumps(
        p,
        [entry(tcp(1), 1, start=1_600_000_000_000_000_000), entry(tcp(2), 2)],
        [entry(tcp(1), 1), entry(tcp(3), 3)],
        [entry(tcp(3), 3)],
    )
    p._initial_dump()
    assert len(p.flows) == 2 and not cap.recs and p._sweep_timer is not None
    p._sweep()  # flow 2 ended without an event
    assert [r["ct.id"] for r in cap.recs] == [2] and p._sweep_timer is not None
    p._sweep()  # flow 1 too: no flow of the initial dump is left, the sweeping stops
    assert [r["ct.id"] for r in cap.recs] == [2, 1] and p._sweep_timer is None
    assert cap.recs[1]["flow.start.sec"] == 1_600_000_000
    monkeypatch.setattr(plugin_mod, "_read_sysctl", lambda name: "1")
    q, _, _ = make()
    fake_dumps(q, [entry(tcp(1), 1)])
    q._initial_dump()
    assert len(q.flows) == 1 and q._sweep_timer is None  # nf_conntrack_events=1: events will come


def test_enobufs_grows_the_buffer_up_to_maxsize() -> None:
    p, _, ctx = make(hash_enable=0, netlink_socket_buffer_maxsize=10000)

    class Sock:
        asked: list[int] = []

        def set_rcvbuf(self, size: int) -> int:
            self.asked.append(size)
            return size * 2

    p.evsock = Sock()  # type: ignore[assignment]
    p._rcvbuf_asked = 3000
    for _ in range(4):
        p._overrun()
    assert Sock.asked == [6000, 10000]
    text = log_text(ctx)
    assert "increasing buffer size to 12000" in text and "Maximum buffer size" in text
    p.evsock = None


# -- the hot path: datagrams read back to back (NetlinkSocket.read_many) and pacing


spans_of = lay_out  # datagrams laid out as read_many() leaves them


@pytest.mark.parametrize(("hash_enable", "entries"), [(0, 32768), (1, 32768), (1, 2)])
@pytest.mark.parametrize("case", ["flow-json", "flow-hash-json"])
def test_spans_give_what_feed_gives(case: str, hash_enable: int, entries: int) -> None:
    """Every captured golden buffer, warm templates or not, through both paths (a flow table
    that fills up included: hash_full counted alike)."""
    bufs = buffers(case) + [b"\x00" * 7, build_ct(nfct.NEW, tcp(9))[:40]]  # junk and a truncation
    one, (cap1,), ctx1 = make(hash_enable=hash_enable, event_mask=7, hash_max_entries=entries)
    for b in bufs:
        one.feed(b)
    many, (cap2,), ctx2 = make(hash_enable=hash_enable, event_mask=7, hash_max_entries=entries)
    view, spans = spans_of(bufs)
    for i in range(0, len(spans), 5):
        many._feed_spans(view, spans[i : i + 5])
    view, spans = spans_of(bufs)  # a second time: the templates are warm now
    one_more = list(cap1.recs)
    for b in bufs:
        one.feed(b)
    many._feed_spans(view, spans)
    assert cap2.recs == cap1.recs and len(cap1.recs) > len(one_more)
    assert ctx2.stats.snapshot() == ctx1.stats.snapshot()
    assert ctx2.stats.get("nfct.ct1.malformed") >= 1
    assert (ctx1.stats.get("nfct.ct1.hash_full") > 0) == (entries == 2)


def test_spans_with_filters_and_two_stacks() -> None:
    bufs = [
        build_ct(ev, tcp(sport, src), ct_id=sport)
        for sport, src in ((1, A), (2, C), (3, A))
        for ev in (nfct.NEW, nfct.UPDATE, nfct.DESTROY)
    ]
    p, (c1, c2), ctx = make(nstacks=2, hash_enable=0, event_mask=7, accept_src_filter="10.0.0.1/32")
    p._feed_spans(*spans_of(bufs + bufs))  # the second round hits the templates
    assert [(r["orig.l4.sport"], r["ct.event"]) for r in c1.recs] == [(1, 1), (1, 4), (3, 1), (3, 4)] * 2
    assert c2.recs == c1.recs
    assert ctx.stats.get("nfct.ct1.filtered") == 6 and ctx.stats.get("nfct.ct1.updates_skipped") == 4


class DgramSock:
    """A NetlinkSocket reading a datagram socketpair (no kernel netlink needed)."""

    def __init__(self, bufsize: int = 512) -> None:
        from pyulogd.io.netlink import NetlinkSocket

        self.peer, mine = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        mine.setblocking(False)
        self.ns = NetlinkSocket.__new__(NetlinkSocket)
        self.ns.sock, self.ns.bufsize, self.ns._many, self.ns.more = mine, bufsize, None, False
        self.ns._buf = bytearray(bufsize)
        self.ns._view = memoryview(self.ns._buf)
        self.ns.enobufs = self.ns.truncated = 0

    def close(self) -> None:
        self.peer.close()
        self.ns.sock.close()


@pytest.fixture(params=["recvmmsg", "recv_into"])
def reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways read_many reads: recvmmsg with 4 slots of 512 bytes, or one recv_into per
    datagram into a 4 * 512-byte buffer."""
    from pyulogd.io import mmsg

    rx = mmsg.receiver(4, 512) if request.param == "recvmmsg" else None
    if request.param == "recvmmsg" and rx is None:
        pytest.skip("no recvmmsg here")
    monkeypatch.setattr(mmsg, "shared", lambda: rx)
    return str(request.param)


def test_read_many_reads_in_order_up_to_the_limit_and_counts_truncation(reader: str) -> None:
    s = DgramSock(bufsize=512)
    try:
        sent = [bytes([i]) * (20 + 37 * i) for i in range(12)] + [b"x" * 600, b"z" * 3]
        for d in sent:
            s.peer.send(d)
        buf, spans, overruns = s.ns.read_many(3)
        assert overruns == 0 and [bytes(buf[o : o + n]) for o, n in spans] == sent[:3] and s.ns.more
        got = []
        while True:  # 4 slots or 4 * 512 bytes: several rounds
            buf, spans, _ = s.ns.read_many(100)
            if not spans:
                break
            got += [bytes(buf[o : o + n]) for o, n in spans]
        assert got[:-2] == sent[3:-2] and got[-2:] == [b"x" * 512, b"z" * 3] and s.ns.truncated == 1
        assert not s.ns.more
    finally:
        s.close()


def test_read_many_never_overruns_its_buffer(reader: str) -> None:
    s = DgramSock(bufsize=512)
    try:
        for _ in range(40):
            s.peer.send(b"y" * 500)
        rounds = []
        while True:
            buf, spans, _ = s.ns.read_many(100)
            if not spans:
                break
            rounds.append(len(spans))
            assert max(o + n for o, n in spans) <= 4 * 512 and all(
                bytes(buf[o : o + n]) == b"y" * 500 for o, n in spans
            )
        assert sum(rounds) == 40 and max(rounds) < 40
    finally:
        s.close()


def test_read_many_without_recvmmsg_when_told(monkeypatch: pytest.MonkeyPatch) -> None:
    """A socket made with recvmmsg=False reads one datagram per call, whatever the process has."""
    from pyulogd.io import mmsg

    def no(*_: Any) -> None:
        raise AssertionError("recvmmsg asked for")

    monkeypatch.setattr(mmsg, "shared", no)
    s = DgramSock(bufsize=512)
    s.ns.recvmmsg = False
    try:
        for i in range(3):
            s.peer.send(bytes([i]) * 10)
        buf, spans, overruns = s.ns.read_many(100)
        assert overruns == 0 and [bytes(buf[o : o + n]) for o, n in spans] == [bytes([i]) * 10 for i in range(3)]
    finally:
        s.close()


def test_pacing_asks_for_a_pause_only_when_events_come_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each call is a round that began at ``began``; the fake clock is the moment _pace runs."""
    p, _, ctx = make(hash_enable=0)
    clk = clock(ctx)
    asked: list[float] = []
    monkeypatch.setattr(ctx.loop, "linger", asked.append)
    p._capacity = 1365.0  # pyulogd's default buffer

    def round_(n: int, began: float, now: float) -> None:
        clk.advance(now - clk.monotonic())
        p._pace(n, began)

    t = clk.monotonic()
    round_(1, t, t)  # the first round after a quiet spell: no pause
    assert asked == []
    round_(1, t + 0.0001, t + 0.0001)  # 1 event in 100 µs: 10k/s
    assert asked and 0.0009 < asked[-1] <= plugin_mod.PACE_MAX
    round_(plugin_mod.READ_MANY, t + 0.0002, t + 0.0002)  # a full round: more are waiting, no pause
    assert len(asked) == 1
    round_(200, t + 0.0007, t + 0.0008)  # 400k/s, 100 µs of work: the pause keeps 4/5 of the buffer free
    assert len(asked) == 2 and asked[-1] < 0.2 * 1365 / 400000 - 0.0001 + 1e-9
    p._capacity = 166.0  # the kernel's default: no room for a burst during a pause
    round_(10, t + 0.0008, t + 0.0009)
    assert len(asked) == 2


def test_loop_linger_sleeps_once_after_the_round() -> None:
    from pyulogd.io import loop as loop_mod

    clk = FakeClock()
    lp = loop_mod.Loop(clk)
    t = clk.monotonic()
    try:
        lp.linger(0.0005)
        lp.linger(0.0002)  # the longest request wins
        lp.run_once(0)
        assert clk.monotonic() - t == pytest.approx(0.0005)  # FakeClock.sleep() advances the clock
        lp.run_once(0)
        assert clk.monotonic() - t == pytest.approx(0.0005)  # once
    finally:
        lp.close()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=300), st.sampled_from(buffers("flow-json"))), min_size=1, max_size=20),
       st.data())  # fmt: skip
def test_spans_never_raise_and_keep_the_good_events(bufs: list[bytes], data: st.DataObject) -> None:
    """Junk, truncations and bit flips among real event datagrams: counted, skipped, the
    real ones still handed on (bad input never escapes the hot path)."""
    mangled = []
    for b in bufs:
        if b and data.draw(st.booleans()):
            cut = data.draw(st.integers(0, len(b)))
            b = b[:cut] if data.draw(st.booleans()) else b[:cut] + bytes([b[cut % len(b)] ^ 0xFF]) + b[cut + 1 :]
        mangled.append(b)
    one, (cap1,), _ = make(hash_enable=0, event_mask=7)
    many, (cap2,), _ = make(hash_enable=0, event_mask=7)
    for b in mangled:
        one.feed(b)
    many._feed_spans(*spans_of(mangled))
    many._feed_spans(*spans_of(mangled))  # again, with whatever templates were learnt
    assert cap2.recs[: len(cap1.recs)] == cap1.recs
