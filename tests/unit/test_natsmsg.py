"""io/natsmsg.py on plain values: subject tokens, templates, message ids, cutting messages;
and NATSIN's decoding of message bodies (``feed``) on bytes, without a broker."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyulogd.core.context import Context
from pyulogd.io.loop import Loop
from pyulogd.io.natsmsg import Chunk, SubjectTemplate, cut, due_at, escape_token, msg_id, unescape_token
from pyulogd.io.recordfmt import encode_batch
from pyulogd.io.spool import Spool
from pyulogd.plugins.inputs.natsin import NatsInput
from tests.helpers import Capture, make_stack

_SUBJECT_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-%")


@given(st.text())
def test_escape_token_is_one_valid_token_and_injective(text: str) -> None:
    tok = escape_token(text)
    assert tok and set(tok) <= _SUBJECT_OK  # no dot, no wildcard, no space: one token
    assert unescape_token(tok) == text


@given(st.text(), st.text())
def test_escape_token_never_merges_two_values(a: str, b: str) -> None:
    if a != b:
        assert escape_token(a) != escape_token(b)


def test_escape_token_examples() -> None:
    assert escape_token("node-1") == "node-1"
    assert escape_token("host.example.org") == "host%2Eexample%2Eorg"
    assert escape_token("a>b*c d") == "a%3Eb%2Ac%20d"
    assert escape_token(None) == escape_token("") == "%"
    assert escape_token("qrouter-\xe9") == "qrouter-%C3%A9"
    assert escape_token("bad\udcff") == "bad%FF"  # an undecodable byte kept (surrogateescape)


def test_template_fields_and_binding() -> None:
    t = SubjectTemplate.parse("audit.{host}.{project}")
    assert t.record_keys() == ("neutron.project_id",)
    assert t.wildcard() == "audit.*.*"
    b = t.bind("net.node.1", "n1")
    assert b.static is None
    assert b.make(["p-1"]) == "audit.net%2Enode%2E1.p-1"
    assert b.make([None]) == "audit.net%2Enode%2E1.%"
    s = SubjectTemplate.parse("pyulogd.{node}").bind("h", "n.1")
    assert s.static == "pyulogd.n%2E1" and s.make([]) == "pyulogd.n%2E1"


@pytest.mark.parametrize("text, why", [
    ("", "empty"), ("a..b", "empty"), ("a.{nope}", "unknown field"), ("a b.{host}", "cannot be part"),
    ("a.*", "cannot be part"), (".{host}", "empty"), ("a.>", "cannot be part"),
])  # fmt: skip
def test_template_refused(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        SubjectTemplate.parse(text)


def test_msg_id_comes_from_the_records_not_the_batch() -> None:
    body = encode_batch(("k",), [(1,), (2,), (3,)], [5, 6, 9])
    assert msg_id("n1", [5, 6, 9], body).startswith("n1:5:9:3:")
    assert msg_id("n1", [5, 6, 9], body) == msg_id("n1", [5, 6, 9], bytes(body))  # the same records: the same id
    assert msg_id("n1", [5, 9], body) != msg_id("n1", [5, 6, 9], body)
    assert msg_id("n2", [5, 6, 9], body) != msg_id("n1", [5, 6, 9], body)
    # Numbers reused by other records (a node restarted without a persistent sequence): not a copy.
    other = encode_batch(("k",), [(7,), (8,), (9,)], [5, 6, 9])
    assert msg_id("n1", [5, 6, 9], other) != msg_id("n1", [5, 6, 9], body)


def _chunk(subject: str, seqs: list[int], t: float = 0.0) -> Chunk:
    return Chunk(subject, ("k",), [(s,) for s in seqs], list(seqs), t)


def test_cut_keeps_order_per_subject_and_the_batch_bound() -> None:
    chunks = [_chunk("a", [1, 2, 3]), _chunk("b", [4]), _chunk("a", [5, 6])]
    m, n = cut(chunks, 4)
    assert (m.subject, m.seqs, n) == ("a", [1, 2, 3, 5], 4)
    assert [(c.subject, c.seqs) for c in chunks] == [("b", [4]), ("a", [6])]
    m, n = cut(chunks, 4)
    assert (m.subject, m.seqs) == ("b", [4])
    m, n = cut(chunks, 4)
    assert (m.subject, m.seqs, chunks) == ("a", [6], [])


@given(st.lists(st.tuples(st.sampled_from("ab"), st.integers(1, 5)), min_size=1, max_size=20), st.integers(1, 7))
def test_cut_loses_and_reorders_nothing(spec: list[tuple[str, int]], size: int) -> None:
    seq = 0
    chunks = []
    for subject, n in spec:
        chunks.append(_chunk(subject, list(range(seq + 1, seq + n + 1))))
        seq += n
    want = {s: [q for c in chunks if c.subject == s for q in c.seqs] for s in "ab"}
    got: dict[str, list[int]] = {"a": [], "b": []}
    while chunks:
        m, n = cut(chunks, size)
        assert 0 < n <= size and len(m.rows) == n == len(m.seqs)
        got[m.subject] += m.seqs
    assert got == want


def test_due_at() -> None:
    assert due_at(None, 0, 10, 0.5, False) is None
    assert due_at(3.0, 2, 10, 0.5, False) == 3.5
    assert due_at(3.0, 10, 10, 0.5, False) == float("-inf")
    assert due_at(3.0, 1, 10, 0.5, True) == float("-inf")


# -- NATSIN on bytes


def _natsin(keys_from: str = "NFLOG,BASE") -> tuple[NatsInput, Capture]:
    ctx = Context(loop=Loop())
    stack = make_stack([(NatsInput, {"keys_from": keys_from}), Capture], ctx, start=False)
    src, cap = stack.instances
    assert isinstance(src, NatsInput) and isinstance(cap, Capture)
    return src, cap


def test_natsin_feed_gives_the_original_keys_node_and_sequence() -> None:
    src, cap = _natsin()
    body = encode_batch(("oob.prefix", "ip.saddr", "raw.pktlen"),
                        [("DROP ", b"\x0a\x00\x00\x01", 60), ("ACC ", None, 40)], [17, 18])
    assert src.feed(body, "node-1")
    assert [{k: cap.value(r, k) for k in ("oob.prefix", "ip.saddr", "raw.pktlen", "pyulogd.node_id",
                                          "pyulogd.node_seq")} for r in cap.records] == [
        {"oob.prefix": "DROP ", "ip.saddr": b"\x0a\x00\x00\x01", "raw.pktlen": 60, "pyulogd.node_id": "node-1",
         "pyulogd.node_seq": 17},
        {"oob.prefix": "ACC ", "ip.saddr": None, "raw.pktlen": 40, "pyulogd.node_id": "node-1", "pyulogd.node_seq": 18},
    ]  # fmt: skip
    assert src.ctx.seq == 2  # the collector numbers what it emits, like any input


def test_natsin_unknown_keys_are_dropped_and_counted_bad_bodies_refused() -> None:
    src, cap = _natsin()
    assert src.feed(encode_batch(("oob.prefix", "no.such.key"), [("x", 1)], [1]), "n")
    assert cap.value(cap.records[0], "oob.prefix") == "x"
    assert src.ctx.stats.get("natsin.natsin0.unknown_keys") == 1
    assert not src.feed(b"PR\x09garbage", "n")
    assert not src.feed(b"", "n")
    assert src.ctx.stats.get("natsin.natsin0.corrupt") == 2
    assert len(cap.records) == 1


def test_natsin_declares_every_plugins_keys_by_default() -> None:
    src, _cap = _natsin(keys_from="")
    names = {k.name for k in src.output_keys}
    assert {"oob.prefix", "ip.saddr", "orig.ip.saddr", "ct.id", "neutron.project_id", "oob.netns",
            "pyulogd.node_id", "pyulogd.node_seq"} <= names
    assert len(names) == len(src.output_keys)


def test_the_nats_case_spool_holds_whole_messages_with_consecutive_sequence_numbers(tmp_path: Path) -> None:
    """What tests/cases/NATS spooled (its broker refused): one frame per message of at most
    batch_size=3 records, numbered 1, 2, 3, ... in order; ids from those numbers."""
    case = Path(__file__).resolve().parents[1] / "cases" / "NATS" / "expected"
    for f in case.iterdir():
        shutil.copyfile(f, tmp_path / f.name)
    spool = Spool(str(tmp_path), 1 << 30)
    spool.open()
    seqs: list[int] = []
    ids = []
    try:
        while (frame := spool.peek()) is not None:
            assert frame.seqs is not None and 0 < len(frame.seqs) <= 3 and len(frame.rows) == len(frame.seqs)
            seqs += frame.seqs
            ids.append(msg_id("case-node", frame.seqs, encode_batch(frame.names, frame.rows, frame.seqs)))
            spool.ack(frame)
    finally:
        spool.close()
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) > 20
    assert ids[0].startswith("case-node:1:3:3:") and len(set(ids)) == len(ids)
