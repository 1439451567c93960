"""Issue 12: the network outputs' commit cursor for the write-ahead log (io/wal.py).

A record a network output holds in memory (the sender's queue, a batch on its way to the
spool) is not durable: the cursor (``committed(seq)``) stays at the mark of the oldest such
record, so a SIGKILL meanwhile loses nothing the log cannot replay. Records the socket took,
records in the spool and records dropped (counted) do not hold it back.

First the queue's marks with plain numbers (and, by hypothesis, the head-only lookup against
the minimum over every item), then the sender on a FakeClock against a real loopback peer."""

from __future__ import annotations

import socket
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from pyulogd.io.sendstate import DURABLE, SendQueue, Spill
from tests.clocked import fake_context, loop_until
from tests.unit.test_sinks import free_port
from tests.unit.test_stream_spool import come_back, down, listen, recv_lines, sink_for

# -- the queue's marks, with numbers


def test_the_oldest_mark_is_the_first_items_that_holds_anything_back() -> None:
    q = SendQueue(1000, lines=True)
    assert q.oldest_mark() == DURABLE  # empty: nothing held back
    q.push(b"a\n", 1, 5)
    q.push(b"b\n", 1, 5)
    q.push(b"c\n", 1, 7)
    q.push_front([(b"template", 0)])  # a template holds nothing back
    assert q.oldest_mark() == 5
    q.head_view(1)  # (a small send: the head is the template)
    assert q.took(8) == 0 and q.oldest_mark() == 5
    q.head_view(100)  # the three small line items are joined into one send
    assert q.took(6) == 3 and q.oldest_mark() == DURABLE  # the socket took them all


def test_records_read_back_from_the_spool_hold_nothing_back() -> None:
    q = SendQueue(1000, lines=True)
    q.push(b"from the spool\n", 1)  # as the sender queues a frame: on disk until acknowledged
    assert q.oldest_mark() == DURABLE


def test_a_merged_head_keeps_the_oldest_mark() -> None:
    q = SendQueue(1 << 20, lines=True)
    q.push(b"a\n", 1, 3)
    q.push(b"b\n", 1, 4)
    q.head_view(1 << 16)  # small line items are joined into one send
    assert len(q.items) == 1 and q.items[0][2] == 3 and q.oldest_mark() == 3


def test_records_the_peer_never_acknowledged_come_back_with_their_mark() -> None:
    q = SendQueue(1000, lines=True)
    q.push(b"aaa\n", 1, 2)
    q.push(b"bbb\n", 1, 3)
    for _ in range(2):
        n = len(q.head_view(4))
        q.took(n)
    assert q.oldest_mark() == DURABLE
    assert q.unsent(4) == 1 and q.oldest_mark() == 3  # "bbb" goes again: in memory only, again


def test_the_spills_pending_items_have_the_mark_of_the_first() -> None:
    sp = Spill()
    assert sp.pending_mark == DURABLE
    sp.add(b"x\n", 1, 8)
    sp.add(b"y\n", 1, 9)
    assert sp.pending_mark == 8
    sp.take_pending()  # written to the spool
    assert sp.pending_mark == DURABLE


# one operation on the queue: (kind, argument)
_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.integers(1, 40)),
        st.tuples(st.just("spooled"), st.integers(1, 40)),
        st.tuples(st.just("template"), st.integers(1, 40)),
        st.tuples(st.just("send"), st.integers(1, 200)),
        st.tuples(st.just("break"), st.integers(0, 200)),
        st.tuples(st.just("round"), st.integers(0, 3)),
        st.tuples(st.just("trim"), st.integers(0, 300)),
    ),
    max_size=60,
)


@settings(max_examples=400, deadline=None)
@given(_OPS, st.booleans())
def test_the_head_lookup_is_the_minimum_over_every_item(ops: list[tuple[str, int]], lines: bool) -> None:
    """Whatever the queue went through (sends cut anywhere, merges, broken connections that put
    back what the peer never acknowledged, templates in front, items from the spool, trims),
    ``oldest_mark`` (the first item that holds anything back) is the minimum over every item."""
    q = SendQueue(10_000, lines=lines)
    mark = 0  # the sink's last committed(seq): never decreases
    spooled_ok = True  # frames are read back only when no memory item waits (Spill.wants_frame)
    for kind, n in ops:
        if kind == "push":
            q.push(b"r" * (n - 1) + b"\n", 1, mark)
            spooled_ok = False
        elif kind == "spooled" and spooled_ok and not q:
            q.push(b"s" * (n - 1) + b"\n", 1)
        elif kind == "template":
            q.push_front([(b"t" * n, 0)])
        elif kind == "send" and q:
            view = q.head_view(n)
            q.took(len(view))
        elif kind == "break":
            q.unsent(n)
            q.rewind()
        elif kind == "round":
            mark += n
        elif kind == "trim":
            q.queue_bytes = n
            q.trim()
            q.queue_bytes = 10_000
        if not any(item[2] != DURABLE for item in q.items):
            spooled_ok = True
        held = [item[2] for item in q.items if item[2] != DURABLE]
        assert q.oldest_mark() == (min(held) if held else DURABLE)


# -- the sender on a FakeClock against a loopback peer


def test_a_queue_held_while_the_peer_is_away_keeps_the_cursor_back(tmp_path: Path) -> None:
    ctx, clock = fake_context()
    port = free_port(socket.SOCK_STREAM)
    sink = sink_for(ctx, port, None, queue=10_000)  # no spool: everything waits in memory
    sink.open()
    down(ctx, sink)
    assert sink.committed(0) == 0
    for i in range(1, 6):  # round 1: records 1..5
        sink.add(f"r{i}\n")
    sink.flush()
    assert sink.committed(5) == 0  # all five are in memory only
    for i in range(6, 11):  # round 2: records 6..10
        sink.add(f"r{i}\n")
    sink.flush()
    assert sink.committed(10) == 0  # the oldest (1..5) still waits
    with listen(port) as server:
        come_back(ctx, clock, sink, lambda: sink.sender.connected)
        conn, _ = server.accept()
        with conn:
            loop_until(ctx, lambda: not sink.sender.queue, sink.flush)
            assert recv_lines(conn, 10) == [f"r{i}".encode() for i in range(1, 11)]
            assert sink.committed(10) == 10  # the kernel took them
            sink.add("r11\n")
            sink.flush()
            loop_until(ctx, lambda: not sink.sender.queue, sink.flush)
            assert sink.committed(11) == 11
            sink.close()


def test_the_cursor_stops_at_the_oldest_round_still_in_memory(tmp_path: Path) -> None:
    ctx, clock = fake_context()
    port = free_port(socket.SOCK_STREAM)
    with listen(port) as server:
        sink = sink_for(ctx, port, None, queue=10_000)
        sink.open()
        conn, _ = server.accept()
        with conn:
            loop_until(ctx, sink.sender.poll)  # the connect completes
            sink.add("r1\n")
            sink.flush()
            loop_until(ctx, lambda: not sink.sender.queue, sink.flush)
            assert sink.committed(1) == 1
            recv_lines(conn, 1)
    down(ctx, sink)  # the peer is gone: nothing goes from here on
    sink.add("r2\n")
    sink.flush()
    assert sink.committed(2) == 1  # record 2 came after the cursor's last mark (1)
    sink.add("r3\n")
    sink.flush()
    assert sink.committed(3) == 1
    sink.close()


def test_spilling_advances_the_cursor(tmp_path: Path) -> None:
    ctx, _ = fake_context()
    sink = sink_for(ctx, free_port(socket.SOCK_STREAM), tmp_path / "spool", queue=0)
    sink.open()
    down(ctx, sink)
    for i in range(1, 21):
        sink.add(f"r{i}\n")
    sink.flush()  # the round's records go to the spool as one frame
    assert sink.counters.spooled == 20
    assert sink.committed(20) == 20  # in the spool: durable here
    sink.close()


def test_records_beyond_a_full_memory_queue_spill_and_only_memory_holds_the_cursor(tmp_path: Path) -> None:
    ctx, _ = fake_context()
    sink = sink_for(ctx, free_port(socket.SOCK_STREAM), tmp_path / "spool", queue=12)
    sink.open()
    down(ctx, sink)
    for i in range(1, 4):  # 3 bytes each: all three fit in memory
        sink.add(f"r{i}\n")
    sink.flush()
    assert sink.committed(3) == 0
    for i in range(4, 40):  # 4 bytes each, beyond the queue: the spool
        sink.add(f"r{i:02d}\n")
    sink.flush()
    assert sink.counters.spooled == 36
    assert sink.committed(39) == 0  # 1..3 are still in memory only
    sink.close()  # (they go to the spool at stop)
    assert sink.counters.spooled == 39


def test_records_dropped_and_counted_do_not_hold_the_cursor(tmp_path: Path) -> None:
    ctx, _ = fake_context()
    sink = sink_for(ctx, free_port(socket.SOCK_STREAM), None, queue=0)  # no queue, no spool
    sink.open()
    down(ctx, sink)
    for i in range(1, 6):
        sink.add(f"r{i}\n")
    sink.flush()
    assert sink.counters.dropped == {"queue_full": 5}
    assert sink.committed(5) == 5
    sink.close()
