"""codec.nfct: conntrack events decoded from the exact buffers real ulogd2 read, checked against
what it wrote; builders, requests, filters; bad input never escapes as anything but DecodeError.

``tests/vectors/nfct`` holds the golden flow-json and flow-hash-json buffers and outputs (see its
README), so everything here runs without ``../shared``; the raw/ mirrors are used when there.
"""

from __future__ import annotations

import glob
import json
import socket
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyulogd.codec import netlink as nl
from pyulogd.codec import nfct
from pyulogd.codec.nfct_describe import describe
from pyulogd.codec.nfct_filter import FlowFilter
from pyulogd.core.errors import DecodeError
from tests.builders.netlink import done_msg, error_msg
from tests.builders.nfct import Tuple, build_ct, get_request, tuple_attr

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests/vectors/nfct"
GOLDEN = ROOT / "../shared/golden/ulogd2-2.0.8"
NOW = 1795764190.25
# ulogd2's JSON fields that come straight from NFCT (JSON never writes IPADDR or RAW keys).
FIELDS = ("orig.ip.protocol", "orig.l4.sport", "orig.l4.dport", "orig.raw.pktlen", "orig.raw.pktcount",
          "reply.ip.protocol", "reply.l4.sport", "reply.l4.dport", "reply.raw.pktlen", "reply.raw.pktcount",
          "icmp.code", "icmp.type", "ct.mark", "ct.id", "ct.event", "oob.family")  # fmt: skip
V4A, V4B = socket.inet_aton("10.0.0.1"), socket.inet_aton("10.0.0.2")
V6A, V6B = socket.inet_pton(socket.AF_INET6, "fd00::1"), socket.inet_pton(socket.AF_INET6, "fd00::2")


def buffers(case: str = "flow-json") -> list[bytes]:
    return [bytes.fromhex(x) for x in (VECTORS / f"{case}.buffers.hex").read_text().split()]


def golden_json(case: str = "flow-json") -> list[dict[str, Any]]:
    return [json.loads(x) for x in (VECTORS / f"{case}.out.json").read_text().splitlines()]


def all_buffers() -> list[bytes]:
    out = buffers("flow-json") + buffers("flow-hash-json")
    for case in ("flow-logemu", "flow-xml", "flow-sqlite3"):
        for f in sorted(glob.glob(str(GOLDEN / case / "raw*" / "*.hex"))):
            out.append(bytes.fromhex(Path(f).read_text().replace("\n", "")))
    return out


def ntop(addr: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(addr) == 4 else socket.AF_INET6, addr)


def decode_all(bufs: list[bytes], templates: bool = True) -> list[list[Any]]:
    dec = nfct.Decoder(templates=templates)
    out = []
    for b in bufs:
        batch = dec.parse_buffer(b, NOW)
        assert batch.malformed == 0 and not batch.errors
        out.extend(batch.records)
    return out


# -- against ulogd2's own output


def test_vectors_against_ulogd_2_0_8() -> None:
    recs = decode_all(buffers())
    assert len(recs) == 35
    assert [r[nfct.I_EVENT] for r in recs].count(nfct.UPDATE) == 17
    emitted = [r for r in recs if r[nfct.I_EVENT] != nfct.UPDATE]  # hash_enable=0 writes NEW, DESTROY
    ref = golden_json()
    assert len(emitted) == len(ref) == 18
    for values, want in zip(emitted, ref, strict=True):
        got = nfct.as_dict(values)
        for k in FIELDS:
            assert got.get(k) == want.get(k), k
        assert ntop(got["orig.ip.saddr"]) == want["src_ip"]
        assert ntop(got["orig.ip.daddr"]) == want["dest_ip"]
        assert ntop(got["reply.ip.saddr"]) == want["reply.ip.saddr.str"]
        assert ntop(got["reply.ip.daddr"]) == want["reply.ip.daddr.str"]
        # Corrected: the L3 protocol as ethertype (2.0.8: always 0).
        assert want["oob.protocol"] == 0
        assert got["oob.protocol"] == {2: 0x0800, 10: 0x86DD}[got["oob.family"]]
        if got["ct.event"] == nfct.DESTROY:
            # Kernel timestamps (nf_conntrack_timestamp=1): exactly what ulogd2 printed.
            for k in ("flow.start.sec", "flow.start.usec", "flow.end.sec", "flow.end.usec"):
                assert got[k] == want[k], k
        else:
            # NEW: ulogd2 stamps gettimeofday() when it reads the event; pyulogd the kernel's
            # CTA_TIMESTAMP_EVENT, which is earlier by the delivery delay.
            ours = got["flow.start.sec"] + got["flow.start.usec"] / 1e6
            theirs = want["flow.start.sec"] + want["flow.start.usec"] / 1e6
            assert 0 <= theirs - ours < 0.01
            assert "flow.end.sec" not in got and "flow.end.sec" not in want


def test_icmpv6_keys_added_icmp_keys_kept() -> None:
    recs = [nfct.as_dict(r) for r in decode_all(buffers())]
    v6 = [r for r in recs if r["orig.ip.protocol"] == 58]
    v4 = [r for r in recs if r["orig.ip.protocol"] == 1]
    assert v6 and v4
    for r in v6:
        assert (r["icmpv6.type"], r["icmpv6.code"]) == (128, 0)  # echo request
        assert "icmp.type" not in r
    for r in v4:
        assert (r["icmp.type"], r["icmp.code"]) == (8, 0)
        assert "icmpv6.type" not in r
    for r in recs:
        if r["orig.ip.protocol"] in (6, 17):
            assert "icmp.type" not in r and "icmpv6.type" not in r and "orig.l4.sport" in r


def test_update_events_have_no_times_and_the_ct_attributes() -> None:
    bufs = buffers()
    for b, r in zip(bufs, decode_all(bufs), strict=True):
        if r[nfct.I_EVENT] == nfct.UPDATE:
            d = nfct.as_dict(r)
            assert "flow.start.sec" not in d and "flow.end.sec" not in d
        assert r[nfct.I_CT] == b[20 : struct.unpack_from("=I", b)[0]]
        assert isinstance(r[nfct.I_CT], bytes)


def test_hash_case_buffers() -> None:
    recs = decode_all(buffers("flow-hash-json"))
    destroy = {r[nfct.I_ID]: r for r in recs if r[nfct.I_EVENT] == nfct.DESTROY}
    ref = golden_json("flow-hash-json")
    assert sorted(destroy) == sorted(j["ct.id"] for j in ref)
    for j in ref:
        got = nfct.as_dict(destroy[j["ct.id"]])
        for k in FIELDS:
            if k != "ct.event":
                assert got.get(k) == j.get(k), k
        assert (got["flow.end.sec"], got["flow.end.usec"]) == (j["flow.end.sec"], j["flow.end.usec"])


def test_templates_give_what_the_walker_gives() -> None:
    bufs = all_buffers()
    dec = nfct.Decoder()
    first = [dec.parse_buffer(b, NOW).records for b in bufs]
    again = [dec.parse_buffer(b, NOW).records for b in bufs]  # now every layout has a template
    walked = [nfct.parse_buffer(b, NOW).records for b in bufs]
    assert first == again == walked
    assert dec._hits >= len(bufs)
    for b, recs in zip(bufs, walked, strict=True):
        assert recs == [nfct.decode(b, NOW)]
        assert dec.parse_one(b, NOW) == recs[0]  # the single-message fast path


def test_parse_one_declines_what_it_cannot_do_alone() -> None:
    dec = nfct.Decoder()
    msg = build_ct(nfct.NEW, _tcp())
    assert dec.parse_one(msg, NOW) is None  # layout not learnt yet
    dec.parse_buffer(msg, NOW)
    assert dec.parse_one(msg, NOW) == nfct.decode(msg, NOW)
    assert dec.parse_one(msg + msg, NOW) is None  # two messages
    assert dec.parse_one(msg[:-4], NOW) is None  # cut
    assert dec.parse_one(done_msg(), NOW) is None
    assert dec.parse_one(b"", NOW) is None


# -- times


def _tcp(v6: bool = False) -> Tuple:
    return Tuple(V6A if v6 else V4A, V6B if v6 else V4B, 6, 40000, 80)


def test_times_from_kernel_event_time_or_now() -> None:
    t = _tcp()
    # NEW without any kernel time: now.
    d = nfct.as_dict(nfct.decode(build_ct(nfct.NEW, t), NOW))
    assert (d["flow.start.sec"], d["flow.start.usec"]) == (1795764190, 250000)
    assert "flow.end.sec" not in d
    # NEW with the event time: that.
    d = nfct.as_dict(nfct.decode(build_ct(nfct.NEW, t, event_time=1_700_000_000_123_456_789), NOW))
    assert (d["flow.start.sec"], d["flow.start.usec"]) == (1700000000, 123456)
    # DESTROY with start/stop: both, the event time is not used.
    msg = build_ct(nfct.DESTROY, t, timestamp=(1_700_000_001_000_001_000, 1_700_000_002_999_999_999),
                   event_time=1_700_000_009_000_000_000)
    d = nfct.as_dict(nfct.decode(msg, NOW))
    assert (d["flow.start.sec"], d["flow.start.usec"], d["flow.end.sec"], d["flow.end.usec"]) == (
        1700000001, 1, 1700000002, 999999)
    # DESTROY without timestamps: end = now, no start.
    d = nfct.as_dict(nfct.decode(build_ct(nfct.DESTROY, t), NOW))
    assert "flow.start.sec" not in d and d["flow.end.sec"] == 1795764190
    # UPDATE: only kernel times.
    d = nfct.as_dict(nfct.decode(build_ct(nfct.UPDATE, t), NOW))
    assert "flow.start.sec" not in d and "flow.end.sec" not in d
    # Zero seconds count as absent, as in ulogd2.
    d = nfct.as_dict(nfct.decode(build_ct(nfct.DESTROY, t, timestamp=(5, None)), 0.0))
    assert "flow.start.sec" not in d and "flow.end.sec" not in d


# -- builders and field rules


@pytest.mark.parametrize("proto,ports", [(6, True), (17, True), (136, True), (132, True), (33, True),
                                         (47, False), (50, False)])
def test_ports_only_for_port_protocols(proto: int, ports: bool) -> None:
    t = Tuple(V4A, V4B, proto, 1234, 5678)
    d = nfct.as_dict(nfct.decode(build_ct(nfct.NEW, t), NOW))
    assert d["orig.ip.protocol"] == d["reply.ip.protocol"] == proto
    assert ("orig.l4.sport" in d) is ports and ("reply.l4.dport" in d) is ports
    if ports:
        assert (d["orig.l4.sport"], d["orig.l4.dport"], d["reply.l4.sport"], d["reply.l4.dport"]) == (
            1234, 5678, 5678, 1234)


def test_nat_tuples_counters_mark_id() -> None:
    floating, fixed, client, router = (socket.inet_aton(a) for a in ("203.0.113.5", "10.0.0.5",
                                                                     "198.51.100.7", "203.0.113.1"))
    orig = Tuple(client, floating, 6, 50000, 443)
    reply = Tuple(fixed, router, 6, 8443, 61000)
    msg = build_ct(nfct.DESTROY, orig, reply, ct_id=0xDEADBEEF, mark=0x2A,
                   counters=(3, 180, 2, 2**40))
    d = nfct.as_dict(nfct.decode(msg, NOW))
    assert (d["orig.ip.saddr"], d["orig.ip.daddr"], d["reply.ip.saddr"], d["reply.ip.daddr"]) == (
        client, floating, fixed, router)
    assert (d["reply.l4.sport"], d["reply.l4.dport"]) == (8443, 61000)
    assert (d["orig.raw.pktcount"], d["orig.raw.pktlen"], d["reply.raw.pktcount"], d["reply.raw.pktlen"]) == (
        3, 180, 2, 2**40)
    assert (d["ct.mark"], d["ct.id"], d["ct.event"]) == (0x2A, 0xDEADBEEF, 4)
    # 32-bit counters (old kernels) read as well.
    d = nfct.as_dict(nfct.decode(build_ct(nfct.DESTROY, orig, counters=(1, 2, 3, 4), counters32=True)))
    assert (d["orig.raw.pktcount"], d["orig.raw.pktlen"], d["reply.raw.pktcount"], d["reply.raw.pktlen"]) == (
        1, 2, 3, 4)
    # Without accounting or a mark: zeros, as ulogd2 (always valid).
    d = nfct.as_dict(nfct.decode(build_ct(nfct.NEW, orig)))
    assert d["orig.raw.pktlen"] == d["reply.raw.pktcount"] == d["ct.mark"] == 0


def test_event_kinds_and_dump_entries() -> None:
    t = _tcp(v6=True)
    assert nfct.decode(build_ct(nfct.NEW, t))[nfct.I_EVENT] == nfct.NEW
    assert nfct.decode(build_ct(nfct.UPDATE, t))[nfct.I_EVENT] == nfct.UPDATE
    assert nfct.decode(build_ct(nfct.DESTROY, t))[nfct.I_EVENT] == nfct.DESTROY
    entry = build_ct(nfct.UPDATE, t, flags=nl.NLM_F_MULTI, seq=7, pid=99)
    v = nfct.decode(entry)
    assert v[nfct.I_EVENT] == nfct.UPDATE and v[nfct.I_FAMILY] == 10 and len(v[1]) == 16
    dump = entry + build_ct(nfct.UPDATE, _tcp(), flags=nl.NLM_F_MULTI | nl.NLM_F_DUMP_INTR) \
        + done_msg(7)
    batch = nfct.parse_buffer(dump, NOW)
    assert len(batch.records) == 2 and batch.done and batch.interrupted and not batch.malformed
    err = error_msg(1, nfct.dump_request(3))
    batch = nfct.parse_buffer(err + error_msg(0, nfct.dump_request(4)), NOW)
    assert batch.errors == [1] and batch.acks == 1 and not batch.records
    other = nl.nfnl_msg(nl.NFNL_SUBSYS_CTNETLINK_EXP, 0, 2, 0)
    assert nfct.parse_buffer(other, NOW).other == 1


def test_zone_and_repeated_attributes() -> None:
    t = Tuple(V4A, V4B, 17, 1, 2, zone=5)
    msg = build_ct(nfct.NEW, t, zone=5, status=0x18e, timeout=120)
    info = describe(msg)
    assert (info["zone"], info["orig_zone"], info["status"], info["timeout"]) == (5, 5, 0x18E, 120)
    # A repeated attribute counts once, the last one (as the kernel's nla_parse keeps it).
    twice = build_ct(nfct.NEW, t, ct_id=1, extra=[nl.nla(nfct.CTA_ID, struct.pack("!I", 2))])
    assert nfct.decode(twice)[nfct.I_ID] == 2
    other = tuple_attr(nfct.CTA_TUPLE_ORIG, Tuple(V4B, V4A, 1, icmp_type=3, icmp_code=3, icmp_id=9))
    d = nfct.as_dict(nfct.decode(build_ct(nfct.NEW, t, extra=[other])))
    assert d["orig.ip.protocol"] == 1 and "orig.l4.sport" not in d and (d["icmp.type"], d["icmp.code"]) == (3, 3)
    assert d["orig.ip.saddr"] == V4B


def test_describe_golden_tcp() -> None:
    b = buffers()[26]  # a TCP DESTROY
    info = describe(b)
    assert info["event"] == nfct.DESTROY and info["tcp_state"] == 7 and info["start"] < info["stop"]
    icmp = describe(buffers()[0])
    assert icmp["icmp_id"] == 0x6201 and icmp["status"] == 8


def test_requests() -> None:
    req = nfct.dump_request(5)
    msgs, problem = nl.split(req)
    assert problem is None and len(msgs) == 1
    _off, _ln, typ, flags, seq, _pid = msgs[0]
    assert (typ, flags, seq) == (0x101, nl.NLM_F_REQUEST | nl.NLM_F_DUMP, 5)
    assert nl.nfgen(req, 0, len(req))[0] == socket.AF_UNSPEC
    typ = nl.split(nfct.dump_request(6, zero=True))[0][0][2]
    assert typ == 0x103
    get = get_request(9, Tuple(V4A, V4B, 6, 1, 2), ct_id=77, zone=3)
    (off, ln, typ, flags, seq, _), = nl.split(get)[0]
    assert typ == 0x101 and flags == nl.NLM_F_REQUEST | nl.NLM_F_ACK and seq == 9
    at = nl.attr_table(get, off + 20, off + ln)
    assert set(at) == {nfct.CTA_TUPLE_ORIG, nfct.CTA_ZONE, nfct.CTA_ID}


def test_get_request_for_a_decoded_entry_repeats_its_tuple() -> None:
    b = buffers()[0]  # ICMP: the tuple has the ICMP id, which is no output key
    v = nfct.decode(b)
    req = nfct.get_request_for(4, v)
    (off, ln, typ, flags, seq, _), = nl.split(req)[0]
    assert typ == 0x101 and seq == 4 and req[16] == 2
    at = nl.attr_table(req, off + 20, off + ln)
    p, q = at[nfct.CTA_TUPLE_ORIG]
    bo = nl.attr_table(b, 20, len(b))[nfct.CTA_TUPLE_ORIG]
    assert req[p:q] == b[bo[0] : bo[1]]
    assert struct.unpack("!I", req[at[nfct.CTA_ID][0] : at[nfct.CTA_ID][1]])[0] == v[nfct.I_ID]


def test_flow_key_separates_flows() -> None:
    a = nfct.decode(build_ct(nfct.NEW, _tcp(), ct_id=1))
    b = nfct.decode(build_ct(nfct.DESTROY, _tcp(), ct_id=1, counters=(1, 2, 3, 4)))
    c = nfct.decode(build_ct(nfct.NEW, _tcp(), ct_id=2))
    assert nfct.flow_key(a) == nfct.flow_key(b) != nfct.flow_key(c)


# -- filters


def test_filter_parse_errors() -> None:
    assert FlowFilter.parse("", "", "") is None
    for src, proto in (("10.0.0.1", ""), ("10.0.0.0/33", ""), ("nonsense/8", ""), ("", "tcp,bogus")):
        with pytest.raises(ValueError):
            FlowFilter.parse(src, "", proto)


def test_filter_semantics() -> None:
    f = FlowFilter.parse("10.0.0.0/24, fd00::/64", "10.0.0.2/32", "tcp,17")
    assert f is not None and "2 IPv4" not in repr(f) and "protocols 6,17" in repr(f)

    def flow(s: bytes, d: bytes, proto: int = 6) -> list[Any]:
        values: list[Any] = nfct.decode(build_ct(nfct.NEW, Tuple(s, d, proto, 1, 2)))
        return values

    assert f(flow(V4A, V4B))
    assert not f(flow(V4A, V4B, 132))  # protocol
    assert not f(flow(V4B, V4A))  # destination 10.0.0.1 not in 10.0.0.2/32
    assert not f(flow(socket.inet_aton("10.0.1.1"), V4B))  # source
    # IPv6 source listed, IPv6 destination not: a family with no network listed is refused.
    assert not f(flow(V6A, V6B))
    g = FlowFilter.parse("fd00::/64", "", "")
    assert g is not None and g(flow(V6A, V6B)) and not g(flow(V4A, V4B))
    h = FlowFilter.parse("", "", "icmp")
    assert h is not None and h(nfct.decode(build_ct(nfct.NEW, Tuple(V4A, V4B, 1, icmp_type=8,
                                                                     icmp_code=0, icmp_id=1))))


# -- bad input


def test_every_truncation_of_every_golden_buffer() -> None:
    dec = nfct.Decoder()
    for b in all_buffers():
        full = len(nfct.parse_buffer(b, NOW).records)
        for cut in range(len(b)):
            part = b[:cut]
            batch = dec.parse_buffer(part, NOW)  # never raises
            assert len(batch.records) < full or full == 0
            # The same cut with nlmsg_len fixed up: the attribute walk meets the cut.
            if cut >= 16:
                fixed = struct.pack("=I", cut) + part[4:]
                batch = dec.parse_buffer(fixed, NOW)
                assert len(batch.records) + batch.malformed == 1
                try:
                    nfct.decode(fixed, NOW)
                except DecodeError:
                    pass


def test_no_original_tuple_is_malformed() -> None:
    msg = nl.nfnl_msg(nl.NFNL_SUBSYS_CTNETLINK, 0, 2, 0, [nl.nla(nfct.CTA_ID, b"\0\0\0\1")], 0, 0x600)
    with pytest.raises(DecodeError):
        nfct.decode(msg)
    batch = nfct.Decoder().parse_buffer(msg + build_ct(nfct.NEW, _tcp()), NOW)
    assert batch.malformed == 1 and len(batch.records) == 1 and batch.problem


def test_short_fixed_size_attribute_is_malformed() -> None:
    short_id = nl.nla(nfct.CTA_ID, b"\0\1")
    msg = build_ct(nfct.NEW, _tcp(), extra=[short_id])
    with pytest.raises(DecodeError):
        nfct.decode(msg)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_random_bytes_never_raise(data: bytes) -> None:
    batch = nfct.Decoder().parse_buffer(data, NOW)
    assert batch.malformed <= 1 + len(data) // 16
    try:
        nfct.decode(data, NOW)
    except DecodeError:
        pass


_SAMPLES = buffers()


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(range(len(_SAMPLES))), st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)),
                                                      min_size=1, max_size=6))
def test_mutated_messages_same_with_and_without_templates(i: int, flips: list[tuple[int, int]]) -> None:
    dec = nfct.Decoder()
    for sample in _SAMPLES:
        dec.parse_buffer(sample, NOW)  # learn every golden layout
    msg = bytearray(_SAMPLES[i])
    for pos, val in flips:
        if 4 <= pos < len(msg):  # keep nlmsg_len; everything else may change
            msg[pos] = val
    data = bytes(msg)
    a, b = dec.parse_buffer(data, NOW), nfct.parse_buffer(data, NOW)
    assert (a.records, a.malformed, a.errors, a.other) == (b.records, b.malformed, b.errors, b.other)
    one = dec.parse_one(data, NOW)
    assert one is None or [one] == b.records
