"""The NATS output's publisher with an injected JetStream client (no server): which records
count as committed, and when.

The client here answers each publish only when the test says so (an ack, or a failure), so the
test holds the publisher at the moment that matters (a message sent, its ack not back) and
looks at the commit cursors then. The daemon's clock is a FakeClock that does not move: the
publisher's back-off never runs out, so a failed message stays in the spool while the test
looks. The test waits on what the publisher thread does (a publish arriving, a counter
moving) with a deadline, never for a time.
"""

from __future__ import annotations

import asyncio
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pyulogd.io.natspub import Client
from pyulogd.io.recordfmt import decode_batch
from pyulogd.plugins.outputs.nats import JetStreamPublisher, NatsOutput
from tests.clocked import fake_context
from tests.helpers import NflogKeys, make_stack, stop_stack

pytest.importorskip("nats")


class GateClient:
    """A JetStream stand-in whose publishes wait for the test's answer."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.calls: list[tuple[list[int], asyncio.Future[bool], asyncio.AbstractEventLoop]] = []

    async def connect(self) -> None:
        pass

    def connected(self) -> bool:
        return True

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str], timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        with self.cond:
            self.calls.append((decode_batch(payload).seqs or [], fut, loop))
            self.cond.notify_all()
        return await fut

    async def close(self) -> None:
        with self.cond:
            for _seqs, fut, _loop in self.calls:
                if not fut.done():
                    fut.cancel()

    def wait_calls(self, n: int, timeout: float = 10.0) -> list[int]:
        """The records of the ``n``-th publish, once it came."""
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.calls) >= n, timeout), f"no publish #{n}"
            return self.calls[n - 1][0]

    def answer(self, n: int, error: BaseException | None = None) -> None:
        """The ack of the ``n``-th publish (or its failure)."""
        _seqs, fut, loop = self.calls[n - 1]
        if error is None:
            loop.call_soon_threadsafe(fut.set_result, False)
        else:
            loop.call_soon_threadsafe(fut.set_exception, error)


class GatedNats(NatsOutput):
    """The NATS output with the test's client instead of nats-py."""

    client: GateClient

    def make_client(self) -> Client:
        return self.client


def until(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"not within {timeout}s: {what}"
        threading.Event().wait(0.002)


@pytest.fixture()
def node(tmp_path: Path) -> Iterator[tuple[Any, NflogKeys, GatedNats, GateClient]]:
    ctx, _clock = fake_context()
    client = GateClient()
    GatedNats.client = client
    stack = make_stack([NflogKeys, (GatedNats, {
        "servers": "nats://127.0.0.1:1", "stream": "T", "spool_dir": str(tmp_path / "spool"),
        "batch_size": 3, "reconnect": "10", "reconnect_max": "10", "stop_timeout": "0"})], ctx)
    src, out = stack.instances
    assert isinstance(src, NflogKeys) and isinstance(out, GatedNats)
    out.running()
    try:
        yield ctx, src, out, client
    finally:
        stop_stack(stack)


def emit(ctx: Any, src: NflogKeys, out: NatsOutput, n: int) -> int:
    for i in range(n):
        src.emit_dict({"oob.prefix": f"p{i}", "raw.pktlen": i})
    out.flush()
    return int(ctx.seq)


def test_committed_only_once_jetstream_acked(node: tuple[Any, NflogKeys, GatedNats, GateClient]) -> None:
    ctx, src, out, client = node
    seq = emit(ctx, src, out, 3)
    assert client.wait_calls(1) == [1, 2, 3]
    # Sent, no ack yet: in the publisher's memory only, which a crash loses. The write-ahead
    # log must keep them (before the fix, handing over was a commit: 3).
    assert out.committed(seq) == 0
    assert out.commit_mark() == 0
    client.answer(1)
    until(lambda: out.counters.written == 3, "the ack")
    assert out.committed(seq) == 3
    assert out.commit_mark() == 3
    # Records not yet flushed to the publisher are not committed either.
    src.emit_dict({"oob.prefix": "late"})
    assert out.committed(ctx.seq) == 3


def test_spooled_records_are_committed_for_the_log_not_for_a_relay(
    node: tuple[Any, NflogKeys, GatedNats, GateClient],
) -> None:
    ctx, src, out, client = node
    seq = emit(ctx, src, out, 3)
    client.wait_calls(1)
    client.answer(1, TimeoutError("no ack"))
    # The failed message goes to the spool at once (the broker is away), and stays there: the
    # clock does not move, so the back-off never lets it be published again.
    until(lambda: ctx.stats.get("nats.nats1.spooled") == 3, "the message spooled")
    assert out.committed(seq) == 3  # on disk: durable here, as the SQL outputs' spool
    assert out.commit_mark() == 0  # but not at the destination: a collector must not ack it
    # New records behind the spooled ones: in memory, so the cursor stops below them.
    seq2 = emit(ctx, src, out, 2)
    assert out.committed(seq2) == seq
    assert len(client.calls) == 1


# -- the JetStream client's checks of acks against the stream (nats-py replaced by a script)


class ScriptedJS:
    """nats-py's JetStream context as far as JetStreamPublisher uses it: ``publish`` answers
    from a script (an exception, or (sequence, duplicate)); ``get_msg`` from what is "stored"."""

    def __init__(self, answers: list[Any], stored: dict[int, str]) -> None:
        self.answers = answers
        self.stored = stored  # stream sequence -> the Nats-Msg-Id of the message there
        self.published: list[str] = []
        self.looked: list[int] = []

    async def publish(self, subject: str, payload: bytes, timeout: float, stream: str,
                      headers: dict[str, str]) -> Any:
        self.published.append(headers["Nats-Msg-Id"])
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        seq, duplicate = answer
        return types.SimpleNamespace(seq=seq, duplicate=duplicate)

    async def get_msg(self, stream: str, seq: int) -> Any:
        self.looked.append(seq)
        if seq not in self.stored:
            raise LookupError("no message")
        return types.SimpleNamespace(headers={"Nats-Msg-Id": self.stored[seq]})


def scripted(answers: list[Any], stored: dict[int, str]) -> tuple[JetStreamPublisher, ScriptedJS, list[str]]:
    notes: list[str] = []
    client = JetStreamPublisher({}, None, "S", notes.append)
    js = ScriptedJS(answers, stored)
    client.js = js
    return client, js, notes


def publish(client: JetStreamPublisher, msg_id: str) -> bool:
    return asyncio.run(client.publish("s", b"body", {"Nats-Msg-Id": msg_id}, 1.0))


def test_after_a_failed_publish_an_ack_for_a_sequence_another_message_holds_is_published_again() -> None:
    """What nats-server 2.9 did in the five-node test once the cluster was back: it acked node0's
    message as stream sequence 427, which held another node's message from before the outage
    (committed late), and dropped node0's. Acks after a failure are checked, and such a
    message goes out again under an id of its own."""
    client, js, notes = scripted([TimeoutError("no ack"), (427, False), (430, False)],
                                 {427: "node1:3613:3613:1:x", 430: "node0:4133:4133:1:y:again"})
    with pytest.raises(TimeoutError):
        publish(client, "node0:4133:4133:1:y")
    assert publish(client, "node0:4133:4133:1:y") is False
    assert js.published == ["node0:4133:4133:1:y", "node0:4133:4133:1:y", "node0:4133:4133:1:y:again"]
    assert js.looked == [427, 428, 426, 429, 425, 430]  # both acks checked (the first's neighbours too)
    assert client.republished == 1 and "does not hold it" in notes[0]


def test_acks_are_taken_as_they_are_until_a_publish_fails() -> None:
    client, js, _notes = scripted([(1, False), (2, False)], {})
    assert publish(client, "n:1:1:1:a") is False
    assert publish(client, "n:2:2:1:b") is False
    assert js.looked == [] and js.published == ["n:1:1:1:a", "n:2:2:1:b"]


def test_a_duplicate_the_stream_holds_is_a_duplicate_and_one_it_does_not_is_published_again() -> None:
    client, js, _notes = scripted([(7, True), (8, True), (9, False)], {7: "n:1:1:1:a", 9: "n:2:2:1:b:again"})
    assert publish(client, "n:1:1:1:a") is True
    assert publish(client, "n:2:2:1:b") is False  # "duplicate" of sequence 8, which is not there
    assert js.published == ["n:1:1:1:a", "n:2:2:1:b", "n:2:2:1:b:again"]


def test_a_message_the_stream_never_holds_fails_the_publish_after_some_tries() -> None:
    client, js, _notes = scripted([TimeoutError(), (1, False), (2, False), (3, False), (4, False)], {})
    with pytest.raises(TimeoutError):
        publish(client, "n:1:1:1:a")
    with pytest.raises(RuntimeError):
        publish(client, "n:1:1:1:a")  # retried later by the publisher, as any failed publish
    assert js.published[1:] == ["n:1:1:1:a", "n:1:1:1:a:again", "n:1:1:1:a:again2", "n:1:1:1:a:again3"]


def test_an_ack_one_off_the_sequence_that_holds_the_message_is_taken() -> None:
    """The same server state acked stored messages with a sequence one off (+1 or -1): the
    message is there, next to the acked sequence, and is not published again."""
    client, js, _notes = scripted([TimeoutError(), (10, False), (20, False)], {11: "n:1:1:1:a", 19: "n:2:2:1:b"})
    with pytest.raises(TimeoutError):
        publish(client, "n:1:1:1:a")
    assert publish(client, "n:1:1:1:a") is False
    assert publish(client, "n:2:2:1:b") is False
    assert js.published == ["n:1:1:1:a", "n:1:1:1:a", "n:2:2:1:b"] and client.republished == 0
