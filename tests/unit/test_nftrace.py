"""NFTRACE without a kernel: the trace decoder (captured and built messages, malformed input,
hypothesis), the ruleset view (a captured nft/iptables-nft-save listing), grouping into
verdicts with plain numbers for the time, and the plugin fed datagrams on a fake clock.

The real-kernel tests (against ``nft monitor trace``, Neutron's chains) are in
tests/linux/test_nftrace_live.py.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyulogd.codec import netlink as nl
from pyulogd.codec import nftrace as nt
from pyulogd.codec import nfttrack
from pyulogd.codec.nftruleset import Ruleset
from pyulogd.core.clock import FakeClock
from pyulogd.core.config import parse_text
from pyulogd.core.context import Context
from pyulogd.core.errors import ConfigError, DecodeError
from pyulogd.core.keys import AUDIT_ACTIONS
from pyulogd.daemon.service import Service
from pyulogd.io.loop import Loop
from pyulogd.plugins.inputs.nftrace import NftraceInput, _check_expr
from tests.builders.nftrace import ETH_LL, IP4_TCP, IP4_UDP, TCP_TH, UDP_TH, change_msg, trace_msg
from tests.helpers import typed_options

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "nftrace"
ACCEPT, DROP = nt.NF_ACCEPT, nt.NF_DROP


def captured() -> list[bytes]:
    return [bytes.fromhex(line) for line in (VECTORS / "loopback.hex").read_text().splitlines()
            if line and not line.startswith("#")]  # fmt: skip


def ruleset(own: tuple[str, str] | None = ("inet", "tmark")) -> Ruleset:
    rs = Ruleset.parse((VECTORS / "ruleset.json").read_text(), own)
    rs.add_text((VECTORS / "ruleset.txt").read_text())
    rs.add_iptables("ip", (VECTORS / "iptables-nft-save.txt").read_text())
    return rs


# -- the decoder


def test_captured_events_decode() -> None:
    events = [ev for d in captured() for ev in nt.parse_buffer(d).events]
    assert len(events) == 69
    first = events[0].as_dict()
    assert first["table"] == "tmark" and first["chain"] == "out" and first["family"] == nt.NFPROTO_INET
    assert first["nfproto"] == nt.NFPROTO_IPV4 and first["handle"] == 4 and first["verdict"] == nt.NFT_CONTINUE
    assert first["oif"] == 1 and first["oiftype"] == 772 and len(first["nh"]) == 20 and len(first["th"]) == 13
    drop = next(ev for ev in events if ev.table == "filt" and ev.verdict == DROP)
    assert (drop.chain, drop.handle) == ("in", 4)
    jump = next(ev for ev in events if ev.verdict == nt.NFT_JUMP)
    assert (jump.handle, jump.target) == (6, "sub")
    policy = next(ev for ev in events if ev.type == nt.NFT_TRACETYPE_POLICY)
    assert policy.policy == ACCEPT and policy.handle is None


def test_built_event_round_trip() -> None:
    msg = trace_msg(0xDEADBEEF, "t", "c", handle=2**40 + 3, verdict=nt.NFT_GOTO, target="x", iif=3, iiftype=1,
                    oif=4, oiftype=1, mark=0x2A, ll=ETH_LL, nh=IP4_UDP, th=UDP_TH)  # fmt: skip
    [ev] = nt.parse_buffer(msg).events
    assert ev.as_dict() == {
        "id": 0xDEADBEEF, "family": 1, "nfproto": 2, "table": "t", "chain": "c", "handle": 2**40 + 3,
        "type": nt.NFT_TRACETYPE_RULE, "verdict": nt.NFT_GOTO, "target": "x", "iif": 3, "iiftype": 1,
        "oif": 4, "oiftype": 1, "mark": 0x2A, "ll": ETH_LL, "nh": IP4_UDP, "th": UDP_TH,
    }  # fmt: skip


def test_names_that_are_not_utf8_are_kept() -> None:
    [ev] = nt.parse_buffer(trace_msg(1, "t\udcff", "c\udc80")).events
    assert ev.table.encode("utf-8", "surrogateescape") == b"t\xff"


@pytest.mark.parametrize("cut", ["id", "table", "chain"])
def test_event_without_id_table_or_chain_is_malformed(cut: str) -> None:
    attr = {"id": nt.NFTA_TRACE_ID, "table": nt.NFTA_TRACE_TABLE, "chain": nt.NFTA_TRACE_CHAIN}[cut]
    msg = trace_msg(7, "t", "c")
    off, ln = 20, struct.unpack_from("=I", msg)[0]
    keep = b"".join(msg[p - 4 : (q + 3) & ~3] for at, p, q in nl.attrs(msg, off, ln) if at != attr)
    bad = nl.nfnl_msg(nt.NFNL_SUBSYS_NFTABLES, nt.NFT_MSG_TRACE, 1, 0, [keep], flags=0)
    with pytest.raises(DecodeError, match=cut):
        nt.parse_trace(bad, 0, len(bad))
    batch = nt.parse_buffer(bad + trace_msg(8, "t", "c"))
    assert batch.malformed == 1 and [ev.id for ev in batch.events] == [8]


def test_short_attributes_and_broken_framing_are_counted() -> None:
    good = trace_msg(1, "t", "c")
    short_id = nl.nfnl_msg(nt.NFNL_SUBSYS_NFTABLES, nt.NFT_MSG_TRACE, 1, 0,
                           [nl.nla(nt.NFTA_TRACE_ID, b"\1\2")], flags=0)  # fmt: skip
    batch = nt.parse_buffer(short_id + good)
    assert batch.malformed == 1 and "NFTA_TRACE_ID" in (batch.problem or "") and len(batch.events) == 1
    broken = good + struct.pack("=IHHII", 9999, 0, 0, 0, 0)
    batch = nt.parse_buffer(broken)
    assert batch.malformed == 1 and len(batch.events) == 1


def test_ruleset_changes_and_errors() -> None:
    buf = (change_msg(nt.NFT_MSG_DELTABLE, "mine") + change_msg(nt.NFT_MSG_NEWRULE, "filt", "in")
           + change_msg(nt.NFT_MSG_NEWGEN, None)
           + nl.nlmsg(nl.NLMSG_ERROR, 0, 1, struct.pack("=i", -1) + bytes(16)))  # fmt: skip
    batch = nt.parse_buffer(buf)
    assert [(c.msg, c.table, c.chain) for c in batch.changes] == [
        (nt.NFT_MSG_DELTABLE, "mine", None), (nt.NFT_MSG_NEWRULE, "filt", "in"), (nt.NFT_MSG_NEWGEN, None, None)]
    assert batch.errors == [1] and not batch.malformed


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_any_bytes_never_raise(data: bytes) -> None:
    batch = nt.parse_buffer(data)
    assert batch.malformed >= 0
    try:
        nt.parse_trace(data, 0, len(data))
    except DecodeError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(trace_msg(1, "t", "c", handle=5, verdict=0, nh=IP4_UDP, th=UDP_TH)) - 1),
       st.integers(0, 255), st.integers(1, 40))
def test_mutated_messages_decode_or_count(pos: int, byte: int, cut: int) -> None:
    """A real message with one byte changed or its tail cut: decoded or counted, nothing else."""
    msg = bytearray(trace_msg(1, "t", "c", handle=5, verdict=0, nh=IP4_UDP, th=UDP_TH))
    msg[pos] = byte
    for data in (bytes(msg), bytes(msg[:-cut])):
        batch = nt.parse_buffer(data)
        for ev in batch.events:  # whatever decoded is whole: named, with a 32-bit id
            assert isinstance(ev.table, str) and isinstance(ev.chain, str) and 0 <= ev.id < 2**32
        if len(data) < 16:
            assert not batch.events and not batch.changes


def _outcome(data: bytes, fast: bool) -> object:
    try:
        return nt.parse_trace(data, 0, len(data), fast).as_dict()
    except DecodeError as e:
        return str(e)


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 200), st.integers(0, 255), st.integers(0, 40), st.integers(0, 68))
def test_fast_prefix_equals_the_attribute_loop(pos: int, byte: int, cut: int, which: int) -> None:
    """The first three attributes read with one call (NFPROTO, TYPE, ID: every message the
    kernel sends) give what the attribute loop gives, on captured messages and on copies
    with a byte changed or the tail cut."""
    msg = bytearray(captured()[which])
    assert _outcome(bytes(msg), True) == _outcome(bytes(msg), False)
    if pos < len(msg):
        msg[pos] = byte
    for data in (bytes(msg), bytes(msg[: len(msg) - cut])):
        assert _outcome(data, True) == _outcome(data, False)


def test_verdict_names() -> None:
    assert nt.verdict_name(ACCEPT) == "accept" and nt.verdict_name(DROP) == "drop"
    assert nt.verdict_name((3 << 16) | nt.NF_QUEUE) == "queue 3"
    assert nt.verdict_name(nt.NFT_JUMP, "sub") == "jump sub" and nt.verdict_name(nt.NFT_RETURN) == "return"
    assert [nt.is_final(c) for c in (ACCEPT, DROP, nt.NF_QUEUE, nt.NFT_JUMP, None)] == [False, True, True, False,
                                                                                      False]


def test_packet_bytes_join_only_where_the_headers_meet() -> None:
    assert nt.packet_bytes(IP4_UDP, UDP_TH) == IP4_UDP + UDP_TH[:8]  # no payload
    assert nt.packet_bytes(IP4_TCP, TCP_TH) == IP4_TCP + TCP_TH
    opts = bytes([0x46]) + IP4_UDP[1:] + b"\1\1\1\0"  # IHL 6: 24 bytes, all copied
    assert nt.packet_bytes(opts, UDP_TH) == opts + UDP_TH[:8]
    cut = bytes([0x4F]) + IP4_UDP[1:] + bytes(20)  # IHL 15: 60 bytes, 40 copied
    assert nt.packet_bytes(cut, UDP_TH) == cut
    ip6 = bytes.fromhex("6000000000081140") + bytes(32)
    assert len(ip6) == 40 and nt.packet_bytes(ip6, UDP_TH) == ip6 + UDP_TH[:8]
    ip6_hbh = ip6[:6] + b"\0" + ip6[7:]  # next header: hop-by-hop options
    assert nt.packet_bytes(ip6_hbh, UDP_TH) == ip6_hbh
    assert nt.packet_bytes(None, UDP_TH) is None and nt.packet_bytes(IP4_UDP, None) == IP4_UDP
    assert nt.ethertype(nt.NFPROTO_IPV6, None, None) == 0x86DD and nt.ethertype(7, ETH_LL, None) == 0x0800


# -- the ruleset


def test_ruleset_from_a_captured_listing() -> None:
    rs = ruleset()
    assert rs.rule("inet", "filt", 5) is not None and rs.rule("inet", "filt", 5).reject  # type: ignore[union-attr]
    assert rs.rule("inet", "filt", 8).reject and not rs.rule("inet", "filt", 4).reject  # type: ignore[union-attr]
    assert rs.rule("inet", "filt", 6).text == "tcp dport 9997 jump sub"  # type: ignore[union-attr]
    # iptables-nft's table: iptables' own words, positionally; REJECT is an xt target there
    fwd = rs.chain("ip", "filter", "FORWARD")
    assert fwd is not None and fwd.hook == "forward" and fwd.handles == [4, 5, 6]
    assert rs.rule("ip", "filter", 4).text == "-m physdev --physdev-in tapabc --physdev-is-bridged -j ACCEPT"  # type: ignore[union-attr]
    assert rs.rule("ip", "filter", 5).reject  # type: ignore[union-attr]
    assert rs.rule("ip", "filter", 2).text == (  # type: ignore[union-attr]
        '-m comment --comment "Default drop rule for unmatched traffic." -j DROP')
    assert rs.has_xt and rs.iptables_families() == ["ip"]
    assert rs.chain("inet", "tmark", "pre").ours  # type: ignore[union-attr]
    assert rs.hook_number("inet", "filt", "in") == 1 and rs.position("inet", "filt", "out") == (0, 0)


def test_iptables_text_needs_matching_counts() -> None:
    rs = Ruleset.parse((VECTORS / "ruleset.json").read_text())
    rs.add_text((VECTORS / "ruleset.txt").read_text())
    rs.add_iptables("ip", "*filter\n-A FORWARD -j ACCEPT\nCOMMIT\n")  # one line for three rules
    assert rs.rule("ip", "filter", 4).text == "xt match physdev counter accept"  # type: ignore[union-attr]


def test_what_may_follow_an_accept() -> None:
    rs = ruleset()
    # inet filt in (input, 0) is the last input chain: nothing follows an IPv4 packet accepted there
    assert not rs.more_after("inet", "filt", "in", nt.NFPROTO_IPV4)
    # output is followed by postrouting, which has no chain here... but ip filter has none either
    assert not rs.more_after("inet", "filt", "out", nt.NFPROTO_IPV4)
    # our own prerouting chain is left out; input and forward chains may still come
    assert rs.more_after("inet", "tmark", "pre", nt.NFPROTO_IPV4)
    assert rs.more_after("inet", "nosuch", "in", nt.NFPROTO_IPV4)  # unknown: wait
    assert rs.more_after("inet", "filt", "in", nt.NFPROTO_BRIDGE)  # not told for bridged packets


def test_bad_listings_raise_decode_error() -> None:
    for bad in ("not json", "[]", '{"nftables": 3}', '{"nftables": [{"rule": {"family": "ip"}}]}'):
        with pytest.raises(DecodeError):
            Ruleset.parse(bad)


def test_marking_rule_check() -> None:
    ours = {"mangle": {"key": {"meta": {"key": "nftrace"}}, "value": 1}}
    match = {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "new"}}
    assert _check_expr([match, {"limit": {"rate": 5}}, ours]) is None
    assert "drop" in (_check_expr([match, {"drop": None}, ours]) or "")
    assert _check_expr([match, ours, {"accept": None}]) is not None
    assert _check_expr([{"mangle": {"key": {"meta": {"key": "mark"}}, "value": 1}}, ours]) is not None


# -- grouping into verdicts


def events(*msgs: bytes) -> list[nt.TraceEvent]:
    return [ev for m in msgs for ev in nt.parse_buffer(m).events]


def pkt_ev(tid: int, table: str, chain: str, **kw: Any) -> bytes:
    return trace_msg(tid, table, chain, iif=2, iiftype=1, ll=ETH_LL, nh=IP4_TCP, th=TCP_TH, mark=7, **kw)


def test_captured_loopback_traffic_gives_one_record_per_packet() -> None:
    tr = nfttrack.Tracker(own=("inet", "tmark"), ruleset=ruleset())
    recs = []
    for i, d in enumerate(captured()):
        recs += tr.add(nt.parse_buffer(d).events, 1000.0 + i, float(i))
    recs += tr.flush()
    got = [nfttrack.as_dict(r) for r in recs]
    by_action: dict[str, list[str]] = {}
    for r in got:
        by_action.setdefault(r["audit.action"], []).append(r.get("audit.rule", ""))
        assert r["audit.action"] in AUDIT_ACTIONS and r["nft.final"] == 1
    assert by_action["DROP"] == ["inet filt in handle 4: udp dport 9999 drop"]
    assert by_action["REJECT"] == ["inet filt in handle 5: udp dport 9998 reject",
                                   "inet filt sub handle 8: tcp dport 9997 counter reject with tcp reset"]
    assert set(by_action["ACCEPT"]) == {"inet filt in policy accept", "inet filt out policy accept"}
    assert len(got) == 14 and tr.stats["own_events"] == 42 and not tr.open
    rej = next(r for r in got if r.get("nft.handle") == 8)
    assert rej["nft.trail"] == "filt in handle 6 jump sub, filt sub handle 8 drop"
    assert rej["oob.hook"] == 1 and rej["oob.prefix"] == "REJECT inet filt sub:"
    assert rej["raw.pkt"][:1] == b"\x45" and rej["raw.pktlen"] == 40 and rej["oob.protocol"] == 0x0800


def test_drop_is_at_once_accept_waits_for_the_timeout_without_a_ruleset() -> None:
    tr = nfttrack.Tracker(own=("inet", "mine"), timeout=0.5)
    assert tr.add(events(pkt_ev(1, "mine", "pre", handle=1, verdict=nt.NFT_CONTINUE),
                         trace_msg(1, "f", "in", type=nt.NFT_TRACETYPE_POLICY, policy=ACCEPT)), 100.0, 10.0) == []
    [rec] = tr.add(events(pkt_ev(2, "f", "in", handle=3, verdict=DROP)), 100.1, 10.1)
    d = nfttrack.as_dict(rec)
    assert d["audit.action"] == "DROP" and d["audit.rule"] == "inet f in handle 3" and "nft.rule" not in d
    assert d["oob.ifindex_in"] == 2 and d["oob.mark"] == 7 and d["raw.mac.saddr"] == ETH_LL[6:12]
    assert d["raw.type"] == 1 and d["raw.mac"] == ETH_LL and d["oob.family"] == 2 and d["nft.trace_id"] == 2
    assert tr.next_deadline() == 10.5 and tr.expire(10.49) == []
    [rec] = tr.expire(10.5)
    d = nfttrack.as_dict(rec)
    assert d["audit.action"] == "ACCEPT" and d["audit.rule"] == "inet f in policy accept" and d["nft.policy"] == 1
    assert d["oob.time.sec"] == 100 and tr.stats["timed_out"] == 1 and not tr.open


def test_every_event_pushes_the_deadline() -> None:
    tr = nfttrack.Tracker(timeout=1.0)
    tr.add(events(pkt_ev(1, "f", "pre", handle=1, verdict=ACCEPT)), 0.0, 0.0)
    tr.add(events(pkt_ev(1, "f", "fwd", handle=2, verdict=ACCEPT)), 0.0, 0.9)
    assert tr.expire(1.5) == [] and len(tr.expire(1.9)) == 1


def test_accept_in_the_last_chain_completes_at_once() -> None:
    rs = ruleset(own=("inet", "mine"))
    tr = nfttrack.Tracker(own=("inet", "mine"), ruleset=rs)
    [rec] = tr.add(events(pkt_ev(5, "filt", "in", handle=7, verdict=ACCEPT)), 0.0, 0.0)
    assert nfttrack.as_dict(rec)["audit.rule"] == "inet filt in handle 7: icmp type echo-request accept"


def test_reject_needs_the_rule() -> None:
    tr = nfttrack.Tracker(ruleset=ruleset())
    [rec] = tr.add(events(pkt_ev(5, "filter", "FORWARD", family=nt.NFPROTO_IPV4, handle=5, verdict=DROP)), 0, 0)
    d = nfttrack.as_dict(rec)
    assert d["audit.action"] == "REJECT" and d["nft.family"] == "ip"
    assert d["audit.rule"].startswith("ip filter FORWARD handle 5: -p udp -m udp --dport 9 -m limit")


def test_a_reused_id_starts_a_new_packet() -> None:
    tr = nfttrack.Tracker(timeout=5.0)
    tr.add(events(pkt_ev(9, "f", "in", handle=1, verdict=ACCEPT)), 0.0, 0.0)
    [first] = tr.add(events(pkt_ev(9, "f", "in", handle=2, verdict=nt.NFT_JUMP, target="x")), 1.0, 1.0)
    assert nfttrack.as_dict(first)["nft.handle"] == 1 and tr.stats["reused_ids"] == 1
    [second] = tr.add(events(trace_msg(9, "f", "x", handle=3, verdict=DROP)), 1.0, 1.0)
    assert nfttrack.as_dict(second)["nft.trail"] == "f in handle 2 jump x, f x handle 3 drop"


def test_bounded_state_evicts_the_idlest() -> None:
    tr = nfttrack.Tracker(max_open=2, timeout=9.0)
    out = []
    for i in range(5):
        out += tr.add(events(pkt_ev(i, "f", "in", handle=1, verdict=ACCEPT)), float(i), float(i))
    assert len(tr) == 2 and tr.stats["evicted"] == 3
    assert [nfttrack.as_dict(r)["nft.trace_id"] for r in out] == [0, 1, 2]
    assert sorted(nfttrack.as_dict(r)["nft.trace_id"] for r in tr.flush()) == [3, 4]


def test_rule_records_and_unjudged_and_incomplete() -> None:
    tr = nfttrack.Tracker(own=("inet", "mine"), rule_records=True)
    recs = tr.add(events(pkt_ev(1, "f", "in", handle=2, verdict=nt.NFT_JUMP, target="s"),
                         trace_msg(1, "f", "s", handle=3, verdict=nt.NFT_RETURN),
                         trace_msg(1, "f", "in", handle=4, verdict=DROP)), 0.0, 0.0)  # fmt: skip
    got = [nfttrack.as_dict(r) for r in recs]
    assert [(g["nft.final"], g["audit.action"], g["nft.verdict"]) for g in got] == [
        (0, "OTHER", "jump s"), (0, "OTHER", "return"), (0, "DROP", "drop"), (1, "DROP", "drop")]
    assert tr.stats["rule_records"] == 3
    tr.add(events(pkt_ev(2, "mine", "pre", handle=1, verdict=nt.NFT_CONTINUE)), 0.0, 0.0)
    tr.add(events(pkt_ev(3, "f", "in", handle=2, verdict=nt.NFT_JUMP, target="s")), 0.0, 0.0)
    left = {nfttrack.as_dict(r)["nft.trace_id"]: nfttrack.as_dict(r) for r in tr.flush()}
    assert left[2]["audit.action"] == "ACCEPT" and "audit.rule" not in left[2]  # no one judged it
    assert left[3]["audit.action"] == "OTHER" and tr.stats["unjudged"] == 1 and tr.stats["incomplete"] == 1


def test_a_missing_rule_is_read_again_once() -> None:
    calls = []
    rs = ruleset()

    def refresh() -> Ruleset | None:
        calls.append(1)
        return rs

    tr = nfttrack.Tracker(ruleset=Ruleset(), refresh=refresh)
    [rec] = tr.add(events(pkt_ev(1, "filt", "in", handle=4, verdict=DROP),
                          pkt_ev(2, "filt", "in", handle=99, verdict=DROP)), 0.0, 0.0)[:1]  # fmt: skip
    assert nfttrack.as_dict(rec)["nft.rule"] == "udp dport 9999 drop"
    assert calls == [1] and tr.stats["rules_unknown"] == 1 and tr.ruleset is rs


# -- the plugin, fed datagrams (no kernel)


class Capture:
    def __init__(self) -> None:
        self.tail: list[Any] = [None, None, None]
        self.recs: list[dict[str, Any]] = []

    def run(self, rec: list[Any]) -> None:
        self.recs.append(nfttrack.as_dict(rec))


def make(**options: Any) -> tuple[NftraceInput, Capture, Context, FakeClock]:
    clock = FakeClock(wall=1_800_000_000.0)
    ctx = Context(loop=Loop(clock))
    ctx.log.stream = io.StringIO()
    ctx.log.path = "test"
    p = NftraceInput(ctx, "tr1", typed_options(NftraceInput, options))
    p.configure()
    cap = Capture()
    p.stacks = [cap]
    return p, cap, ctx, clock


def test_plugin_feed_timer_and_counters() -> None:
    p, cap, ctx, clock = make(trace_timeout="100ms", trace_table="mine")
    try:
        p.feed(pkt_ev(1, "mine", "prerouting", handle=1, verdict=nt.NFT_CONTINUE)
               + trace_msg(1, "f", "in", type=nt.NFT_TRACETYPE_POLICY, policy=ACCEPT))  # fmt: skip
        p.feed(pkt_ev(2, "f", "in", handle=3, verdict=DROP) + b"\x07\x00\x00\x00")  # stray bytes
        assert [r["audit.action"] for r in cap.recs] == ["DROP"]
        ctx.loop.run_once(0)
        assert len(cap.recs) == 1  # the accept waits for its timeout
        clock.advance(0.1)
        ctx.loop.run_once(0)
        assert [r["audit.action"] for r in cap.recs] == ["DROP", "ACCEPT"]
        assert cap.recs[1]["oob.time.sec"] == 1_800_000_000
        st_ = ctx.stats
        assert st_.get("nftrace.tr1.packets") == 2 and st_.get("nftrace.tr1.timed_out") == 1
        assert st_.get("nftrace.tr1.malformed") == 1 and st_.get("nftrace.tr1.own_events") == 1
    finally:
        p.stop()


def test_plugin_stop_flushes_open_traces() -> None:
    p, cap, _ctx, _clock = make()
    p.feed(pkt_ev(1, "f", "in", handle=1, verdict=ACCEPT))
    assert cap.recs == []
    p.stop()
    assert [r["audit.action"] for r in cap.recs] == ["ACCEPT"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 12), min_size=1, max_size=20))
def test_batches_give_what_datagrams_one_by_one_give(sizes: list[int]) -> None:
    """The reader hands the datagrams of one read to ``feed_many``: the records and counters
    are those of the same datagrams fed one at a time (the captured traffic, with a bad
    datagram among it, cut into random batches)."""
    msgs = captured()
    msgs.insert(7, b"\x07\x00\x00\x00")  # stray bytes: counted as malformed either way

    def run(batches: list[list[bytes]]) -> tuple[list[dict[str, Any]], dict[str, int]]:
        p, cap, ctx, clock = make(trace_table="tmark")
        p.tracker.ruleset = ruleset()
        try:
            for b in batches:
                p.feed_many(b)
            clock.advance(1.0)
            ctx.loop.run_once(0)
        finally:
            p.stop()
        return cap.recs, {k: v for k, v in ctx.stats.snapshot().items() if k.startswith("nftrace.")}

    batches, i = [], 0
    for n in sizes * 10:
        if i >= len(msgs):
            break
        batches.append(msgs[i : i + n])
        i += n
    batches.append(msgs[i:])
    one = run([[m] for m in msgs])
    assert run(batches) == one and len(one[0]) == 14


CONF = """[global]
stack=t1:NFTRACE,j1:JSON
[t1]
{option}
[j1]
file="/dev/null"
"""


@pytest.mark.parametrize("option, why", [
    ("trace_rule=\"ct state new; flush ruleset\"", "one nft expression"),
    ("trace_rule=\"\"", "must not be empty"),
    ("trace_hooks=\"prerouting,nowhere\"", "unknown hook 'nowhere'"),
    ("trace_hooks=\"input,input\"", "names a hook twice"),
    ("trace_table=\"x y\"", "letters, digits"),
    ("trace_timeout=0", "must be between"),
    ("max_traces=0", ""),
])  # fmt: skip
def test_bad_options_are_refused_with_file_and_line(option: str, why: str, tmp_path: Path) -> None:
    path = tmp_path / "ulogd.conf"
    path.write_text(CONF.format(option=option))
    ctx = Context(loop=Loop(FakeClock()))
    ctx.log.stream = io.StringIO()
    svc = Service(str(path), ctx)
    with pytest.raises(ConfigError) as e:
        svc.load_config(parse_text(path.read_text(), str(path)))
    assert f"{path}:4" in str(e.value) and why in str(e.value)
