"""The network sender's decisions without a socket or a clock: back-off (with jitter), the
bounded queue, what a broken stream resends, the probe after a refused datagram."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyulogd.core.backoff import Backoff
from pyulogd.io.sendstate import FLUSH_AT, POLL, PROBE_WAIT, SLACK, SendQueue, SendState, Spill

T = 1000.0  # a monotonic time

# -- Backoff


def test_backoff_doubles_up_to_the_cap() -> None:
    b = Backoff(1.0, 60.0)
    assert b.due(T) and b.remaining(T) == 0.0  # never tried: due at once
    assert [b.failed() for _ in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert b.failures == 8


def test_backoff_counts_from_where_the_wait_began() -> None:
    b = Backoff(1.0, 60.0)
    b.begin(T)
    b.failed()
    assert not b.due(T + 0.999) and b.remaining(T + 0.25) == 0.75
    assert b.due(T + 1.0) and b.deadline() == T + 1.0
    b.begin(T + 1.0)
    b.failed()
    assert not b.due(T + 2.999) and b.due(T + 3.0)
    b.expire()  # an operator asks for an attempt now
    assert b.due(T + 1.5)


def test_backoff_is_due_at_its_own_deadline() -> None:
    """A timer set for deadline() must find the attempt due (1000.05 - 1000.0 < 0.05)."""
    b = Backoff(0.05, 1.0)
    b.begin(T)
    b.failed()
    assert b.deadline() == T + 0.05 and b.due(T + 0.05) and b.remaining(T + 0.05) == 0.0


def test_backoff_reset_and_broken_connection() -> None:
    b = Backoff(0.5, 8.0)
    for _ in range(4):
        b.failed()
    assert b.wait == 4.0
    assert b.reset() == 4 and b.reset() == 0  # how many failures there were: once
    assert b.wait == 0.5 and b.failures == 0
    b.broke(T)  # a working connection broke: the first wait, counted as a failure
    assert b.failures == 1 and not b.due(T + 0.4) and b.due(T + 0.5)
    assert b.failed() == 1.0  # the attempt after the break failed too: the wait grows


def test_backoff_jitter_shortens_never_lengthens() -> None:
    draws = iter([0.5, 0.0, 0.999, 0.25])
    b = Backoff(1.0, 4.0, jitter=0.2, rand=lambda: next(draws))
    assert b.wait == pytest.approx(0.9)  # the first wait too
    assert b.failed() == pytest.approx(1.0)  # rand 0.0: the full step
    assert b.failed() == pytest.approx(2 * (1 - 0.2 * 0.999))
    assert b.failed() == pytest.approx(4 * 0.95)


def test_backoff_with_jitter_stays_within_the_cap() -> None:
    """What the stream outputs will promise: back within ``cap`` seconds of the peer's return."""
    rng = random.Random(7)
    b = Backoff(0.1, 1.0, jitter=0.5, rand=rng.random)
    waits = [b.failed() for _ in range(200)]
    assert max(waits) <= 1.0 and min(waits[10:]) >= 0.5 and len(set(waits)) > 100


def test_backoff_without_jitter_draws_nothing() -> None:
    def rand() -> float:
        raise AssertionError("no jitter: no random draw")

    b = Backoff(1.0, 2.0, rand=rand)
    b.failed()
    b.reset()
    with pytest.raises(ValueError):
        Backoff(1.0, 2.0, jitter=1.5)


# -- SendQueue


def test_queue_bounds_live_and_dead() -> None:
    q = SendQueue(100, lines=False)
    assert q.limit(False) == 100 and q.limit(True) == SLACK  # a socket may always hold SLACK
    assert q.fits(100, False) and not q.fits(101, False) and q.fits(101, True)
    assert SendQueue(10 * SLACK, lines=False).limit(True) == 10 * SLACK
    assert SendQueue(-5, lines=False).queue_bytes == 0


def test_queue_trim_drops_the_newest() -> None:
    q = SendQueue(10, lines=False)
    for i in range(5):
        q.push(bytes([i]) * 4, 2)
    assert (q.bytes, q.records) == (20, 10)
    assert q.trim() == 6  # three items of two records go, the two oldest stay
    assert [item[0] for item in q.items] == [b"\0" * 4, b"\1" * 4] and q.bytes == 8
    assert q.trim() == 0
    assert q.clear() == 4 and not q and q.bytes == 0


def test_queue_push_front_bypasses_the_limit() -> None:
    q = SendQueue(0, lines=False)
    q.push(b"data", 1)
    q.push_front([(b"T1", 0), (b"T2", 0)])  # IPFIX templates open every connection
    assert [item[0] for item in q.items] == [b"T1", b"T2", b"data"] and q.bytes == 8


def test_stream_head_merges_lines_and_counts_records() -> None:
    q = SendQueue(1 << 20, lines=True)
    q.push(b"a\nb\n", 2)
    q.push(b"c\n", 1)
    view = q.head_view(1 << 18)
    assert bytes(view) == b"a\nb\nc\n" and len(q.items) == 1 and q.records == 3
    assert q.took(3) is None and q.head_off == 3  # part of the head is out
    assert bytes(q.head_view(1 << 18)) == b"\nc\n"
    assert q.took(3) == 3 and not q and q.bytes == 0


def test_binary_items_keep_their_boundaries() -> None:
    q = SendQueue(1 << 20, lines=False)
    q.push(b"m1", 1)
    q.push(b"m2", 1)
    assert bytes(q.head_view(100)) == b"m1" and len(q.items) == 2
    assert bytes(q.head_view(1)) == b"m"  # at most max_send at a time


def test_big_line_heads_are_not_merged() -> None:
    q = SendQueue(1 << 22, lines=True)
    q.push(b"x" * (FLUSH_AT - 1) + b"\n", 1)
    q.push(b"y\n", 1)
    assert len(q.head_view(1 << 18)) == FLUSH_AT and len(q.items) == 2


def test_rewind_lines_resends_from_the_first_line_the_peer_lacks() -> None:
    q = SendQueue(1 << 20, lines=True)
    q.push(b"one\ntwo\nthree\n", 3)
    q.head_view(100)
    q.took(6)  # "one\ntw" went out before the connection broke
    assert q.rewind() == 1  # the peer has "one"
    assert q.items[0][:2] == [b"two\nthree\n", 2] and q.bytes == 10 and q.head_off == 0
    assert q.rewind() == 0  # nothing was sent of the new head


def test_rewind_binary_resends_the_whole_item() -> None:
    q = SendQueue(1 << 20, lines=False)
    q.push(b"ipfix-message", 5)
    q.head_view(100)
    q.took(4)
    assert q.rewind() == 0 and q.items[0][:2] == [b"ipfix-message", 5] and q.head_off == 0


# -- SendState


def state(**kw: float) -> SendState:
    return SendState(SendQueue(1000, lines=True), Backoff(kw.get("first", 1.0), kw.get("cap", 60.0)))


def test_reconnect_decisions() -> None:
    s = state()
    assert s.connect_due(T)
    s.attempt(T)
    assert s.attempt_failed() == (True, 1.0)  # the first failure of a run: log it as an error
    assert not s.connect_due(T + 0.5) and s.retry_in(T + 0.5, False) == 0.5
    assert s.retry_in(T + 0.5, True) == POLL  # a socket is connecting: look again soon
    s.attempt(T + 1.0)
    assert s.attempt_failed() == (False, 2.0)
    assert not s.connect_due(T + 2.9) and s.connect_due(T + 3.0)
    assert s.established()  # the peer is back after failures: a notice, a reconnect counted
    assert not s.established()


def test_broken_connection_waits_the_first_wait() -> None:
    s = state(first=0.5)
    s.attempt(T)
    assert not s.established()  # up at the first try: nothing to report
    s.broken(T + 30)
    assert not s.connect_due(T + 30.4) and s.connect_due(T + 30.5)
    assert s.established()  # back after the break: reported


def test_sighup_restart_forgets_the_failures() -> None:
    s = state()
    for _ in range(5):
        s.attempt_failed()
    s.restart()
    assert not s.established() and s.attempt_failed() == (True, 1.0)


def test_datagram_probe_after_a_refusal() -> None:
    s = state()
    s.attempt(T)
    s.attempt_failed()  # the refusal
    s.refused()
    assert not s.established()  # reconnected, but the peer is back only once a probe passes
    assert s.may_send(T) and s.datagram_sent(T) == (PROBE_WAIT, False)  # the probe: hold the rest
    assert not s.may_send(T + PROBE_WAIT / 2)
    assert s.may_send(T + PROBE_WAIT)
    assert s.datagram_sent(T + PROBE_WAIT) == (None, True)  # no refusal came: back
    assert s.datagram_sent(T + 1) == (None, False) and not s.probing


# -- what a broken stream sends again (issue 12: the peer went away without acknowledging)


def test_unsent_puts_back_what_the_peer_never_acknowledged() -> None:
    q = SendQueue(1 << 20, lines=True)
    for i in range(4):
        q.push(b"line%d\n" % i, 1)  # 6 bytes each
        q.head_view(6)  # not merged: one item at a time
        assert q.took(6) == 1
    assert q.taken == 4 and [h[0] for h in q.history] == [b"line0\n", b"line1\n", b"line2\n", b"line3\n"]
    q.push(b"line4\n", 1)
    q.took(3)  # "lin" of the head went out
    # 3 (the head's part) + 6 (line3) + 2 of line2 were never acknowledged
    assert q.unsent(11) == 2
    assert [item[0] for item in q.items] == [b"line2\n", b"line3\n", b"line4\n"] and q.head_off == 0
    assert q.taken == 2 and q.records == 3 and not q.history and q.bytes == 18
    assert q.rewind() == 0  # nothing of the head is with the peer


def test_unsent_within_the_head_leaves_the_rest_to_rewind() -> None:
    q = SendQueue(1 << 20, lines=True)
    q.push(b"aaa\nbbb\nccc\n", 3)
    q.head_view(100)
    q.took(10)  # "aaa\nbbb\ncc" out, of which the peer acknowledged 6 bytes
    assert q.unsent(4) == 0 and q.head_off == 6
    assert q.rewind() == 1 and q.items[0][:2] == [b"bbb\nccc\n", 2]  # from the first line not wholly acknowledged


def test_unsent_binary_items_go_again_whole_and_templates_are_not_repeated() -> None:
    q = SendQueue(1 << 20, lines=False)
    q.push_front([(b"TEMPLATE", 0)])
    q.push(b"message-one", 3)
    q.push(b"message-two", 2)
    for n in (8, 11, 11):
        q.head_view(100)
        q.took(n)
    assert q.unsent(5) == 2 and [item[0] for item in q.items] == [b"message-two"]
    assert q.unsent(0) == 0


def test_history_is_bounded() -> None:
    q = SendQueue(1 << 20, lines=True)
    q.history_cap = 100
    for _ in range(50):
        q.push(b"x" * 9 + b"\n", 1)
        q.head_view(10)
        q.took(10)
    assert 100 <= q.history_bytes < 110 and len(q.history) == 10
    assert q.unsent(10_000) == 10  # at most what could still be in a socket's send queue


# -- the whole stream discipline on random histories (memory, spool, breaks, resends)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["add", "flush", "send", "ack", "break", "connect"]),
                          st.integers(1, 40)), max_size=120),
       st.integers(0, 60))  # fmt: skip
def test_random_outages_deliver_every_record_in_order(actions: list[tuple[str, int]], queue_bytes: int) -> None:
    """A model of the sender around SendQueue and Spill: records are added, spilled to a
    spool (a list of frames), sent in pieces the peer's TCP takes (``send``) and acknowledges
    (``ack``: only then does the peer application have them), connections break with what was
    not acknowledged put back (``unsent``) and come back. At the end every record reached the
    peer application whole, and the first arrival of each record is in the order they came."""
    q = SendQueue(queue_bytes, lines=True)
    sp = Spill()
    frames: list[list[tuple[bytes, int]]] = []
    connected = False
    unacked = b""  # sent on this connection, not acknowledged yet
    peer: list[bytes] = []  # what each connection delivered to the peer application
    current = b""
    n = 0

    def drain() -> None:
        if sp.frame_sent(q):
            frames.pop(0)
            sp.on_disk = bool(frames)
        if connected and sp.wants_frame(q):
            for data, records in frames[0]:
                q.push(data, records)
            sp.frame_queued(q)

    def send(budget: int) -> None:
        nonlocal unacked
        while connected and budget > 0:
            drain()
            if not q:
                return
            view = q.head_view(budget)
            budget -= len(view)
            unacked += bytes(view)
            q.took(len(view))
        drain()

    for what, k in [*actions, ("connect", 0), ("flush", 0), ("send", 10**6), ("ack", 10**6), ("send", 10**6),
                    ("ack", 10**6)]:  # fmt: skip
        if what == "add":
            for _ in range(k % 4 + 1):
                line = b"%d\n" % n
                n += 1
                if sp.to_memory(q, len(line), connected):
                    q.push(line, 1)
                else:
                    sp.add(line, 1)
        elif what == "flush":
            if sp.pending:
                frames.append(sp.take_pending())
                sp.on_disk = True
            send(10**6)
        elif what == "send":
            send(k)
        elif what == "ack":
            current += unacked[:k]
            unacked = unacked[k:]
        elif what == "break" and connected:
            q.unsent(len(unacked))
            q.rewind()
            q.forget_history()
            peer.append(current)
            current, unacked, connected = b"", b"", False
        elif what == "connect":
            connected = True
        if what in ("connect", "ack"):
            send(10**6)
    while connected and (q or sp.active or unacked):  # the last rounds: everything goes
        if sp.pending:
            frames.append(sp.take_pending())
            sp.on_disk = True
        send(10**6)
        current += unacked
        unacked = b""
    peer.append(current)
    seen: list[int] = []
    for data in peer:
        for line in data.split(b"\n")[:-1]:  # a connection may end with a part of a line
            seen.append(int(line))
    first = list(dict.fromkeys(seen))
    assert first == list(range(n))
