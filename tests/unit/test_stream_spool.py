"""Issue 12, item 2: the network outputs lose nothing while their peer is away.

The pure parts with numbers (the order between memory and spool, the frame acknowledged
once out, the reconnect promise on random failure histories), then the sender on a FakeClock
against real loopback peers: records beyond the memory queue go to the on-disk spool and come
back in order, a stop with the peer away keeps them for the next start, a full or unusable
spool drops and counts, and a peer that returns is reconnected within a second of the fake
clock."""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyulogd.core.backoff import Backoff
from pyulogd.core.context import Context
from pyulogd.io.sender import RECONNECT_FIRST, RECONNECT_JITTER, Endpoint, SpoolSettings
from pyulogd.io.sendstate import SendQueue, SendState, Spill
from pyulogd.io.streamsink import StreamSink
from tests.clocked import fake_context, loop_until
from tests.unit.test_sinks import free_port

T = 1000.0

# -- Spill, with numbers


def test_spill_keeps_one_order() -> None:
    q = SendQueue(10, lines=True)
    sp = Spill()
    assert sp.to_memory(q, 6, live=False)
    q.push(b"aaaaa\n", 1)
    assert not sp.to_memory(q, 6, live=False)  # does not fit: to the spool
    assert not sp.add(b"bbbbb\n", 1)
    assert not sp.to_memory(q, 1, live=False)  # it would fit, but older records are on their way to disk
    sp.add(b"c\n", 1)
    assert sp.take_pending() == [(b"bbbbb\n", 1), (b"c\n", 1)] and not sp.pending and sp.pending_bytes == 0
    sp.on_disk = True
    assert sp.active and not sp.wants_frame(q)  # the queue (older) goes first
    q.head_view(100)
    assert q.took(6) == 1 and q.taken == 1
    assert sp.wants_frame(q)
    q.push(b"bbbbb\n", 1)
    q.push(b"c\n", 1)
    sp.frame_queued(q)
    assert sp.mark == 3 and not sp.wants_frame(q)
    q.head_view(100)
    assert q.took(5) is None and not sp.frame_sent(q)  # part of the frame is out
    assert q.took(3) == 2 and sp.frame_sent(q) and not sp.frame_sent(q)  # once


def test_spill_frame_cut_by_a_broken_connection_is_not_acknowledged() -> None:
    q = SendQueue(100, lines=True)
    sp = Spill()
    sp.on_disk = True
    q.push(b"one\ntwo\n", 2)
    sp.frame_queued(q)
    q.head_view(100)
    q.took(5)  # "one\nt" went out, then the connection broke
    assert q.rewind() == 1 and not sp.frame_sent(q)  # the peer has one line; the frame stays on disk
    q.head_view(100)
    assert q.took(4) == 1 and sp.frame_sent(q)


def test_spill_pending_asks_for_a_write_at_flush_at() -> None:
    sp = Spill()
    assert not sp.add(b"x" * 1000, 1)
    assert sp.add(b"x" * 64 * 1024, 1)


@settings(max_examples=300, deadline=None)
@given(
    st.floats(0.05, 1.0),  # the cap (reconnect_max)
    st.floats(0.0, 600.0),  # when the peer comes back, after the outage began
    st.integers(0, 2**32),  # the jitter's random source
    st.floats(0.0, 0.05),  # how long a failed attempt takes
)
def test_reconnect_within_the_cap_of_the_peers_return(cap: float, back: float, seed: int, cost: float) -> None:
    """Any failure history, any jitter: the first attempt after the peer's return comes at
    most ``cap`` (plus the time one failed attempt takes) later."""
    rng = random.Random(seed)
    s = SendState(SendQueue(0, lines=True), Backoff(min(RECONNECT_FIRST, cap), cap, jitter=RECONNECT_JITTER,
                                                     rand=rng.random))  # fmt: skip
    now = T
    s.broken(now)  # the peer went away
    returns = T + back
    while True:
        now += s.retry_in(now, have_socket=False)
        assert s.connect_due(now)
        s.attempt(now)
        if now >= returns:
            break
        now += cost
        s.attempt_failed()
    assert now - returns <= cap + cost + 1e-9


def test_connect_timeout() -> None:
    s = SendState(SendQueue(0, lines=True), Backoff(0.25, 1.0), connect_timeout=10.0)
    s.attempt(T)
    assert not s.connect_expired(T + 9.99) and s.connect_expired(T + 10.0)


# -- the sender against loopback peers, on a fake clock


def listen(port: int = 0) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(4)
    s.settimeout(5)
    return s


def recv_lines(conn: socket.socket, n: int) -> list[bytes]:
    conn.settimeout(5)
    data = b""
    while data.count(b"\n") < n:
        chunk = conn.recv(1 << 16)
        assert chunk, f"the peer got {data.count(10)} of {n} lines"
        data += chunk
    return data.splitlines()


def sink_for(ctx: Context, port: int, spool: Path | None, queue: int = 200, max_bytes: int = 1 << 20,
             **kw: Any) -> StreamSink[str]:  # fmt: skip
    settings = SpoolSettings(str(spool), max_bytes) if spool is not None else None
    sink: StreamSink[str] = StreamSink(ctx, "T", Endpoint("127.0.0.1", port), "t.t1", queue_bytes=queue,
                                       backoff_max=1.0, batch=False, spool=settings, **kw)  # fmt: skip
    return sink


def down(ctx: Context, sink: StreamSink[str]) -> None:
    loop_until(ctx, lambda: sink.sock is None)  # the refused connect is noticed


def come_back(ctx: Context, clock: Any, sink: StreamSink[str], done: Any) -> float:
    """Advance the fake clock in 50 ms steps until ``done()``; the fake seconds it took."""
    waited = 0.0
    for _ in range(100):
        if done():
            return waited
        clock.advance(0.05)
        waited += 0.05
        ctx.loop.run_once(0.01)
        sink.flush()
    raise AssertionError("never reconnected")


def test_spill_while_away_and_drain_in_order(tmp_path: Path) -> None:
    ctx, clock = fake_context()
    ctx.log.set_destination(str(tmp_path / "log"))
    port = free_port(socket.SOCK_STREAM)
    sink = sink_for(ctx, port, tmp_path / "spool")
    sink.open()
    down(ctx, sink)
    lines = [f"record {i:04d}\n" for i in range(500)]
    for line in lines:
        sink.add(line)
    sink.flush()
    s = sink.sender
    assert s.backlog == 16 and ctx.stats.get("t.t1.spooled") == 484  # 200 bytes in memory (16 lines), the rest on disk
    assert s.spooled_bytes > 484 * 12 and sink.counters.lost == 0
    with listen(port) as server:
        waited = come_back(ctx, clock, sink, lambda: s.connected)
        assert waited <= 1.0  # back within the cap of the peer's return
        conn, _ = server.accept()
        with conn:
            loop_until(ctx, lambda: not s.spill.active and not s.queue, sink.flush)
            sink.add("after\n")  # the spool is empty again: straight to the queue
            assert s.backlog == 1
            sink.flush()
            got = recv_lines(conn, 501)
            sink.close()
    assert got == [line.rstrip("\n").encode() for line in lines] + [b"after"]  # all, once, in order
    assert sink.counters.snapshot() == {"received": 501, "written": 501}
    assert ctx.stats.get("t.t1.sent") == 501 and ctx.stats.get("t.t1.send_failures") == 0
    assert not [n for n in os.listdir(tmp_path / "spool") if n.endswith(".seg")]  # acknowledged, deleted
    assert "spooling to" in (tmp_path / "log").read_text()


def test_records_arriving_during_the_drain_go_behind_the_spool(tmp_path: Path) -> None:
    ctx, clock = fake_context()
    port = free_port(socket.SOCK_STREAM)
    sink = sink_for(ctx, port, tmp_path / "spool", queue=0)
    sink.open()
    down(ctx, sink)
    for i in range(50):
        sink.add(f"old {i}\n")
    sink.flush()
    with listen(port) as server:
        come_back(ctx, clock, sink, lambda: sink.sender.connected)
        conn, _ = server.accept()
        with conn:
            for i in range(50):
                sink.add(f"new {i}\n")  # while the spool drains
                ctx.loop.run_once(0)
            loop_until(ctx, lambda: not sink.sender.spill.active and not sink.sender.queue, sink.flush)
            got = recv_lines(conn, 100)
            sink.close()
    assert got == [f"old {i}".encode() for i in range(50)] + [f"new {i}".encode() for i in range(50)]


def test_spool_full_drops_and_counts(tmp_path: Path) -> None:
    ctx, _ = fake_context()
    ctx.log.set_destination(str(tmp_path / "log"))
    sink = sink_for(ctx, free_port(socket.SOCK_STREAM), tmp_path / "spool", queue=0, max_bytes=2000)
    sink.open()
    down(ctx, sink)
    for i in range(300):
        sink.add(f"r{i:03d}\n")
        if i % 10 == 9:
            sink.flush()  # one frame per round
    spooled, full = ctx.stats.get("t.t1.spooled"), sink.counters.dropped.get("spool_full", 0)
    assert spooled > 0 and full > 0 and spooled + full == 300
    assert ctx.stats.get("t.t1.send_failures") == full
    assert "the spool is full" in (tmp_path / "log").read_text()
    sink.close()


def test_unusable_spool_directory_drops_and_counts(tmp_path: Path) -> None:
    ctx, _ = fake_context()
    ctx.log.set_destination(str(tmp_path / "log"))
    (tmp_path / "file").write_text("")
    sink = sink_for(ctx, free_port(socket.SOCK_STREAM), tmp_path / "file" / "spool", queue=0)
    sink.open()
    down(ctx, sink)
    for i in range(5):
        sink.add(f"r{i}\n")
    sink.flush()
    assert sink.counters.dropped == {"spool_failed": 5}
    assert "cannot use spool directory" in (tmp_path / "log").read_text()
    sink.close()


def test_stop_with_the_peer_away_keeps_records_for_the_next_start(tmp_path: Path) -> None:
    ctx, _ = fake_context()
    port = free_port(socket.SOCK_STREAM)
    sink = sink_for(ctx, port, tmp_path / "spool", queue=100)
    sink.open()
    down(ctx, sink)
    for i in range(30):
        sink.add(f"kept {i:02d}\n")
    sink.close()
    assert sink.counters.lost == 0 and ctx.stats.get("t.t1.spooled") == 30  # memory too, at stop
    ctx2, _ = fake_context()
    with listen(port) as server:
        sink2 = sink_for(ctx2, port, tmp_path / "spool", queue=100)
        sink2.open()  # the spool holds records from before: opened now, they go first
        conn, _ = server.accept()
        with conn:
            sink2.add("new\n")
            loop_until(ctx2, lambda: not sink2.sender.spill.active and not sink2.sender.queue, sink2.flush)
            got = recv_lines(conn, 31)
            sink2.close()
    # what was in memory at stop went to the spool's end: the order across this restart is
    # memory's records after the ones already on disk
    assert sorted(got[:30]) == [f"kept {i:02d}".encode() for i in range(30)] and got[30] == b"new"
    assert len(set(got)) == 31


def test_binary_items_through_the_spool(tmp_path: Path) -> None:
    """SYSLOG's octet-counted frames and IPFIX messages are items with boundaries: spooled
    and sent back whole."""
    ctx, clock = fake_context()
    port = free_port(socket.SOCK_STREAM)
    sink: StreamSink[bytes] = StreamSink(ctx, "T", Endpoint("127.0.0.1", port), "t.t1", queue_bytes=0,
                                         backoff_max=1.0, batch=False, lines=False,
                                         spool=SpoolSettings(str(tmp_path / "spool"), 1 << 20))  # fmt: skip
    sink.open()
    down(ctx, sink)
    msgs = [b"%d <29>msg %d" % (len(b"<29>msg %d" % i), i) for i in range(100)]
    for m in msgs:
        sink.add(m)
    sink.flush()
    with listen(port) as server:
        come_back(ctx, clock, sink, lambda: sink.sender.connected)
        conn, _ = server.accept()
        with conn:
            loop_until(ctx, lambda: not sink.sender.spill.active and not sink.sender.queue, sink.flush)
            sink.close()
            data = b""
            while chunk := conn.recv(1 << 16):
                data += chunk
    assert data == b"".join(msgs)
    assert sink.counters.snapshot() == {"received": 100, "written": 100}


def test_no_spool_keeps_the_memory_only_behaviour(tmp_path: Path) -> None:
    ctx, _ = fake_context()
    ctx.log.set_destination(str(tmp_path / "log"))
    sink = sink_for(ctx, free_port(socket.SOCK_STREAM), None, queue=20)
    sink.open()
    down(ctx, sink)
    for i in range(10):
        sink.add(f"r{i}\n")
    assert sink.counters.dropped == {"queue_full": 4}
    sink.close()
    assert sink.counters.dropped == {"queue_full": 4, "unsent_at_exit": 6}


@pytest.mark.parametrize("opts", [{}, {"spool_max": "0"}])
def test_output_options_choose_the_spool(tmp_path: Path, opts: dict[str, str]) -> None:
    from pyulogd.plugins.outputs.json import JsonOutput
    from tests.helpers import make_stack, stop_stack
    from tests.unit.test_json import Src

    ctx, _ = fake_context()
    stack = make_stack([Src, (JsonOutput, {"mode": "tcp", "port": str(free_port(socket.SOCK_STREAM)),
                                           "spool_dir": str(tmp_path / "sp"), **opts})], ctx)  # fmt: skip
    s = stack.sink.out.sender
    if opts:
        assert s.spool_settings is None
    else:
        assert s.spool_settings == SpoolSettings(str(tmp_path / "sp"), 1 << 30)
    stop_stack(stack)
