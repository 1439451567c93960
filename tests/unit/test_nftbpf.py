"""NFTRACE's socket filter (pyulogd.codec.nftbpf) on bytes: run in the reference interpreter,
it keeps every event the tracker needs, drops the others, and the records made from what it
keeps are the records made from everything (captured events of Linux 6.18, and generated
packet paths with interleavings and batch cuts)."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pyulogd.codec import netlink as nl
from pyulogd.codec import nftbpf, nfttrack, nlbpf
from pyulogd.codec import nftrace as nt
from pyulogd.codec.nftruleset import Ruleset
from tests.builders.nftrace import ETH_LL, IP4_UDP, UDP_TH, change_msg, trace_msg

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "nftrace"
OWN = "pyulogd_trace"
PROG = nftbpf.compile_filter(OWN)


def kept(msg: bytes, prog: list[nlbpf.Insn] = PROG) -> bool:
    return nlbpf.run(prog, msg) != 0


def captured() -> list[bytes]:
    return [bytes.fromhex(line) for line in (VECTORS / "loopback.hex").read_text().splitlines()
            if line and not line.startswith("#")]  # fmt: skip


def captured_ruleset() -> Ruleset:
    rs = Ruleset.parse((VECTORS / "ruleset.json").read_text(), ("inet", "tmark"))
    rs.add_text((VECTORS / "ruleset.txt").read_text())
    rs.add_iptables("ip", (VECTORS / "iptables-nft-save.txt").read_text())
    return rs


def records(batches: list[list[bytes]], own: str, ruleset: Ruleset | None, timeout: float = 0.25,
            max_open: int = 4096, rule_records: bool = False, step: float = 0.001) -> list[dict[str, Any]]:  # fmt: skip
    """The tracker's records for the datagrams, read in these batches, ``step`` seconds apart;
    the open traces expired after each batch as the input's timer would."""
    tr = nfttrack.Tracker(own=("inet", own), timeout=timeout, max_open=max_open, rule_records=rule_records,
                          ruleset=ruleset)  # fmt: skip
    out = []
    now = 0.0
    for b in batches:
        batch = nt.TraceBatch()
        for d in b:
            nt.parse_buffer(d, batch)
        out += tr.add(batch.events, 1000.0 + now, now)
        now += step
        out += tr.expire(now)
    out += tr.flush()
    return [nfttrack.as_dict(r) for r in out]


def needed(msg: bytes, own: str = OWN) -> bool:
    """What the tracker reads an event for (the docstring of nftbpf, in Python)."""
    evs = nt.parse_buffer(msg).events
    if not evs:
        return True
    ev = evs[0]
    if ev.nh is not None:
        return True
    fam = nt.FAMILY_NAMES.get(ev.family) or str(ev.family)
    if (fam, ev.table) == ("inet", own):
        return False
    return nfttrack._step(fam, ev) is not None


# -- the captured events


def test_captured_events_give_the_same_records_filtered() -> None:
    msgs = captured()
    prog = nftbpf.compile_filter("tmark")
    kept_msgs = [m for m in msgs if kept(m, prog)]
    # 69 events of 14 packets: our table's 42 become 14 (the ones with the packet); of the
    # 27 others, a user chain's end goes too.
    assert len(msgs) == 69 and len(kept_msgs) == 40
    for m in msgs:
        assert kept(m, prog) == needed(m, "tmark")
    for size in (1, 3, 8, 64):
        for rule_records in (False, True):
            # the same reads, less what the kernel dropped
            batches = [msgs[i : i + size] for i in range(0, len(msgs), size)]
            whole = records(batches, "tmark", captured_ruleset(), rule_records=rule_records)
            cut = [[m for m in b if kept(m, prog)] for b in batches]
            assert records(cut, "tmark", captured_ruleset(), rule_records=rule_records) == whole
            assert len([r for r in whole if r["nft.final"]]) == 14


# -- one event at a time


def test_messages_other_than_trace_events_pass() -> None:
    for m in (change_msg(nt.NFT_MSG_NEWTABLE, OWN), change_msg(nt.NFT_MSG_DELRULE, OWN, "prerouting"),
              change_msg(nt.NFT_MSG_NEWGEN, None), nl.nlmsg(nl.NLMSG_ERROR, 0, 1, struct.pack("=i", -1) + bytes(16)),
              nl.nlmsg(nl.NLMSG_DONE, 0, 1, b"")):  # fmt: skip
        assert kept(m)


def test_our_table_is_matched_exactly() -> None:
    end = {"handle": None, "verdict": nt.NFT_CONTINUE}
    assert not kept(trace_msg(1, OWN, "prerouting", **end))
    assert not kept(trace_msg(1, OWN, "prerouting", type=nt.NFT_TRACETYPE_POLICY, policy=nt.NF_ACCEPT))
    for table, family in ((OWN + "2", nt.NFPROTO_INET), (OWN[:-1], nt.NFPROTO_INET), (OWN, nt.NFPROTO_IPV4),
                          ("Pyulogd_trace", nt.NFPROTO_INET), ("x", nt.NFPROTO_INET)):  # fmt: skip
        assert kept(trace_msg(1, table, "c", family=family, type=nt.NFT_TRACETYPE_POLICY, policy=nt.NF_ACCEPT))
    # every length of name, to the byte (names are compared word by word, then byte by byte)
    for n in range(1, 20):
        name = "t" * n
        prog = nftbpf.compile_filter(name)
        pol = {"type": nt.NFT_TRACETYPE_POLICY, "policy": nt.NF_ACCEPT}
        assert not kept(trace_msg(1, name, "c", **pol), prog)
        assert kept(trace_msg(1, name + "t", "c", **pol), prog)
        assert kept(trace_msg(1, name[:-1] + "u", "c", **pol), prog)
        assert kept(trace_msg(1, name, "c", nh=IP4_UDP, th=UDP_TH, **pol), prog)


def test_unusual_events_are_left_to_user_space() -> None:
    # no verdict code, no table: user space decides (and counts what is malformed)
    assert kept(trace_msg(1, "filt", "in", handle=3))
    raw = trace_msg(1, "filt", "in", handle=3, verdict=nt.NFT_CONTINUE)
    no_table = raw.replace(struct.pack("=HH", 9, nt.NFTA_TRACE_TABLE), struct.pack("=HH", 9, 99))
    assert kept(no_table) and not kept(raw)


_KINDS = st.sampled_from(["own", "foreign", "own_other_family"])


@settings(max_examples=600, deadline=None)
@given(kind=_KINDS, type=st.sampled_from([nt.NFT_TRACETYPE_RULE, nt.NFT_TRACETYPE_RETURN, nt.NFT_TRACETYPE_POLICY,
                                          nt.NFT_TRACETYPE_UNSPEC]),  # fmt: skip
       handle=st.one_of(st.none(), st.integers(0, 2**64 - 1)),
       verdict=st.sampled_from([nt.NFT_CONTINUE, nt.NFT_BREAK, nt.NFT_JUMP, nt.NFT_GOTO, nt.NFT_RETURN, nt.NF_DROP,
                                nt.NF_ACCEPT, nt.NF_QUEUE | (3 << 16), nt.NF_STOLEN]),  # fmt: skip
       with_pkt=st.booleans(), tid=st.integers(0, 2**32 - 1))
def test_kept_exactly_when_needed(kind: str, type: int, handle: int | None, verdict: int, with_pkt: bool,
                                  tid: int) -> None:  # fmt: skip
    table = "filt" if kind == "foreign" else OWN
    family = nt.NFPROTO_IPV4 if kind == "own_other_family" else nt.NFPROTO_INET
    kw: dict[str, Any] = {"family": family, "type": type, "handle": handle}
    if type == nt.NFT_TRACETYPE_POLICY:
        kw["policy"] = verdict if verdict >= 0 else nt.NF_ACCEPT
    else:
        kw["verdict"] = verdict
        kw["target"] = "sub" if verdict in (nt.NFT_JUMP, nt.NFT_GOTO) else None
    if with_pkt:
        kw.update(iif=2, iiftype=1, ll=ETH_LL, nh=IP4_UDP, th=UDP_TH, mark=5)
    msg = trace_msg(tid, table, "c", **kw)
    assert kept(msg) == needed(msg)


# -- packet paths, interleaved and cut into reads


def _path(tid: int, chains: list[tuple[str, list[str], str]]) -> list[bytes]:
    """The events of one packet: our chain (marking rule with the packet, end of rules,
    policy), then base chains of someone else, each a list of rule outcomes then an end."""
    pkt = {"iif": 2, "iiftype": 1, "ll": ETH_LL, "nh": IP4_UDP, "th": UDP_TH, "mark": 0}
    ev = [trace_msg(tid, OWN, "prerouting", handle=2, verdict=nt.NFT_CONTINUE, **pkt),
          trace_msg(tid, OWN, "prerouting", verdict=nt.NFT_CONTINUE),
          trace_msg(tid, OWN, "prerouting", type=nt.NFT_TRACETYPE_POLICY, policy=nt.NF_ACCEPT)]  # fmt: skip
    for n, (chain, rules, end) in enumerate(chains):
        first = True
        h = 10 * n
        for r in rules:
            h += 1
            kw: dict[str, Any] = dict(pkt) if first else {}
            first = False
            if r == "continue":
                ev.append(trace_msg(tid, "filt", chain, handle=h, verdict=nt.NFT_CONTINUE, **kw))
            elif r == "jump":
                ev.append(trace_msg(tid, "filt", chain, handle=h, verdict=nt.NFT_JUMP, target="sub", **kw))
                ev.append(trace_msg(tid, "filt", "sub", handle=h + 100, verdict=nt.NFT_CONTINUE))
                ev.append(trace_msg(tid, "filt", "sub", type=nt.NFT_TRACETYPE_RETURN, verdict=nt.NFT_CONTINUE))
        kw = dict(pkt) if first else {}
        if end == "policy":
            ev.append(trace_msg(tid, "filt", chain, verdict=nt.NFT_CONTINUE, **kw))
            ev.append(trace_msg(tid, "filt", chain, type=nt.NFT_TRACETYPE_POLICY, policy=nt.NF_ACCEPT))
        else:
            code = nt.NF_ACCEPT if end == "accept" else nt.NF_DROP
            ev.append(trace_msg(tid, "filt", chain, handle=h + 50, verdict=code, **kw))
            if code == nt.NF_DROP:
                break
    return ev


_CHAIN = st.tuples(st.sampled_from(["in", "fwd", "out"]), st.lists(st.sampled_from(["continue", "jump"]), max_size=3),
                   st.sampled_from(["policy", "accept", "drop"]))  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(paths=st.lists(st.lists(_CHAIN, max_size=3), min_size=1, max_size=8), seed=st.randoms(use_true_random=False),
       cuts=st.lists(st.integers(1, 9), min_size=1, max_size=30), rule_records=st.booleans())
def test_generated_paths_give_the_same_records_filtered(paths: list[list[tuple[str, list[str], str]]], seed: Any,
                                                        cuts: list[int], rule_records: bool) -> None:  # fmt: skip
    # Packets of distinct ids; their events interleaved as two CPUs would (each packet's in order).
    streams = [_path(1000 + i, p) for i, p in enumerate(paths)]
    merged: list[bytes] = []
    pos = [0] * len(streams)
    while any(pos[i] < len(s) for i, s in enumerate(streams)):
        live = [i for i, s in enumerate(streams) if pos[i] < len(s)]
        i = seed.choice(live[:2])  # at most two packets in flight at once
        merged.append(streams[i][pos[i]])
        pos[i] += 1
    batches, i, k = [], 0, 0
    while i < len(merged):
        n = cuts[k % len(cuts)]
        batches.append(merged[i : i + n])
        i, k = i + n, k + 1
    filtered = [[m for m in b if kept(m)] for b in batches]
    assert sum(map(len, filtered)) < len(merged)
    # (No evictions: with more than max_traces packets open, which one is the idlest depends on
    # the events seen, and both paths then make partial records, each its own.)
    whole = records(batches, OWN, None, rule_records=rule_records)
    cut = records(filtered, OWN, None, rule_records=rule_records)
    # The same records, each packet's in the same order; packets that complete at the same
    # moment (a timeout, the stop) may come out in another order: the one whose last event
    # came last goes last, and a dropped event may have been its last.
    def by_packet(recs: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
        out: dict[int, list[dict[str, Any]]] = {}
        for r in recs:
            out.setdefault(r["nft.trace_id"], []).append(r)
        return out

    assert by_packet(cut) == by_packet(whole)
    assert len(cut) == len(whole)


def test_the_program_packs_for_the_kernel() -> None:
    assert len(nlbpf.pack(PROG)) == 8 * len(PROG) and len(PROG) < 100
