"""ECS output: every document checked against ECS 9.4.0's own field definitions, the Community
ID against the reference package on every protocol, and the mapping of each kind of record
(NFLOG packets, conntrack flows with NAT, NFACCT counters, verdicts, Neutron keys, rate-limit
summaries, loss records)."""

from __future__ import annotations

import json
import os
import random
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyulogd.audit.ecs import ECS_VERSION, compile_ecs
from pyulogd.codec import nfct as nfct_codec
from pyulogd.codec.communityid import ICMP4_PAIRS, ICMP6_PAIRS, community_id
from pyulogd.core.clock import FakeClock
from pyulogd.core.context import Context
from pyulogd.core.plugin import OK, DataType, Filter, Key, KeyType, Source
from pyulogd.io.loop import Loop
from pyulogd.io.rtnl import LinkCache
from pyulogd.plugins.filters.ifindex import IfindexFilter
from pyulogd.plugins.filters.ip2str import Ip2strFilter
from pyulogd.plugins.outputs.ecs import EcsOutput
from tests.ecs_schema import check_lines, fields, problems
from tests.helpers import BaseKeys, NflogKeys, golden_packets, make_stack, stop_stack

communityid = pytest.importorskip("communityid", reason="test extra: pip install communityid")

T = KeyType


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = old
    time.tzset()


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    d = tmp_path / "out"
    d.mkdir(mode=0o700)
    return d


def reference(proto: int, saddr: bytes, daddr: bytes, sport: int | None, dport: int | None) -> str:
    """The communityid package's value (the oracle)."""
    tpl = communityid.FlowTuple(proto, saddr, daddr, sport, dport)
    value: str = communityid.CommunityID().calc(tpl)
    return value


V4 = [socket.inet_pton(socket.AF_INET, a) for a in ("10.0.0.1", "10.0.0.2", "192.0.2.7", "198.51.100.167")]
V6 = [socket.inet_pton(socket.AF_INET6, a) for a in ("fd00::1", "fd00::2", "2001:db8::7", "::1")]


# -- Community ID
def test_community_id_known_value_both_directions() -> None:
    """Filebeat's documented example value, whichever side is the source."""
    a = socket.inet_pton(socket.AF_INET, "198.51.100.167")
    b = socket.inet_pton(socket.AF_INET, "172.16.54.114")
    assert community_id(6, a, b, 4099, 445) == "1:g+bRFDuqViJEc5vzlOapz2LPhFo="
    assert community_id(6, b, a, 445, 4099) == "1:g+bRFDuqViJEc5vzlOapz2LPhFo="


@pytest.mark.parametrize("proto", [6, 17, 132])
@pytest.mark.parametrize("addrs", [V4, V6], ids=["ipv4", "ipv6"])
def test_community_id_ports(proto: int, addrs: list[bytes]) -> None:
    for sa in addrs:
        for da in addrs:
            for sp, dp in ((1, 2), (2, 1), (443, 443), (0, 65535), (40000, 53)):
                assert community_id(proto, sa, da, sp, dp) == reference(proto, sa, da, sp, dp)
                assert community_id(proto, sa, da, sp, dp) == community_id(proto, da, sa, dp, sp)


@pytest.mark.parametrize(("proto", "addrs", "pairs"), [(1, V4, ICMP4_PAIRS), (58, V6, ICMP6_PAIRS)],
                         ids=["icmp", "icmpv6"])
def test_community_id_icmp_type_code_mapping(proto: int, addrs: list[bytes], pairs: dict[int, int]) -> None:
    """Every type 0..255 with a few codes: request/reply pairs hash alike in both directions,
    other types are one-way."""
    for mtype in range(256):
        for code in (0, 1, 3):
            sa, da = addrs[0], addrs[2]
            got = community_id(proto, sa, da, mtype, code)
            assert got == reference(proto, sa, da, mtype, code), (mtype, code)
            if mtype in pairs:  # the reply from the other side is the same flow
                assert got == community_id(proto, da, sa, pairs[mtype], code)


@pytest.mark.parametrize("proto", [0, 2, 4, 41, 47, 50, 51, 89, 103, 112, 255])
def test_community_id_protocols_without_ports(proto: int) -> None:
    for sa, da in ((V4[0], V4[1]), (V4[1], V4[0]), (V6[0], V6[3]), (V4[2], V4[2])):
        assert community_id(proto, sa, da) == reference(proto, sa, da, None, None)


@settings(max_examples=300, deadline=None)
@given(
    proto=st.sampled_from([1, 6, 17, 58, 132, 47, 50]),
    v6=st.booleans(),
    sa=st.binary(min_size=16, max_size=16),
    da=st.binary(min_size=16, max_size=16),
    sp=st.integers(0, 65535),
    dp=st.integers(0, 65535),
)
def test_community_id_random_flows(proto: int, v6: bool, sa: bytes, da: bytes, sp: int, dp: int) -> None:
    if not v6:
        sa, da = sa[:4], da[:4]
    if proto in (1, 58):
        sp, dp = sp & 0xFF, dp & 0xFF
    ports = (sp, dp) if proto in (1, 6, 17, 58, 132) else (None, None)
    assert community_id(proto, sa, da, *ports) == reference(proto, sa, da, *ports)


# -- the ECS file itself
def test_ecs_definitions_are_the_pinned_release() -> None:
    spec = fields()
    assert ECS_VERSION == "9.4.0"
    assert spec["network.community_id"]["type"] == "keyword"
    assert "pipeline_error" in {a["name"] for a in spec["event.kind"]["allowed_values"]}
    here = Path(__file__).resolve().parents[1] / "data" / "ecs"
    assert "Apache License" in (here / "LICENSE.txt").read_text()
    assert "9.4.0" in (here / "SOURCE.md").read_text()


def test_the_checker_refuses_what_ecs_refuses() -> None:
    """A test that cannot fail is a defect: the checker catches each kind of mistake."""
    good = {"@timestamp": "2026-01-01T00:00:00.000000Z", "event": {"kind": "event", "category": ["network"],
                                                                    "type": ["connection", "denied"]}}
    assert problems(good) == []
    bad = [
        ({"event": {"kind": "event"}}, "@timestamp is required"),
        ({**good, "source": {"ipaddr": "1.2.3.4"}}, "not an ECS field"),
        ({**good, "source": {"ip": "1.2.3"}}, "not an IP address"),
        ({**good, "source": {"port": "80"}}, "not a long"),
        ({**good, "network": {"iana_number": 6}}, "not a string"),
        ({**good, "event": {"kind": "flow"}}, "allowed values"),
        ({**good, "event": {"category": ["network"], "type": ["creation"]}}, "not expected"),
        ({**good, "event": {"outcome": ["success"]}}, "does not normalize"),
        ({**good, "event": {"created": "yesterday"}}, "ISO 8601"),
    ]
    for doc, why in bad:
        found = problems(doc)
        assert any(why in p for p in found), (doc, found)


# -- NFLOG packets
def nflog_stack(out: Path, ip2str: bool = True, ctx: Context | None = None, **opts: Any) -> Any:
    ctx = ctx or Context(loop=Loop(FakeClock(wall=1800000000.25)), hostname="fw1")
    cache = LinkCache(ctx, kernel=False)
    cache.update({2: "gbb0"})
    ctx.ifcache = cache
    chain = [NflogKeys, BaseKeys, IfindexFilter] + ([Ip2strFilter] if ip2str else [])
    return make_stack([*chain, (EcsOutput, {"file": str(out), **opts})], ctx)


def run_golden(out: Path, ip2str: bool = True) -> list[dict[str, Any]]:
    stack = nflog_stack(out, ip2str)
    base = stack.instances[1]
    for nflog, values, _obj, _emu in golden_packets():
        base.values = values
        stack.source.emit_dict(nflog)
    stop_stack(stack)
    assert stack.errors == 0
    return check_lines(out.read_text())


def test_golden_packets_are_valid_ecs(out_dir: Path) -> None:
    """The 44 golden packets (ICMP, TCP, UDP, SCTP, IPv6, fragments, ARP) each give a valid
    document; the flow fields agree with the packet and the Community ID with the reference."""
    docs = run_golden(out_dir / "ecs.json")
    packets = golden_packets()
    assert len(docs) == len(packets) == 44
    seen_kernel = seen_received = 0
    for doc, (nflog, values, obj, _emu) in zip(docs, packets, strict=True):
        assert doc["ecs"] == {"version": ECS_VERSION}
        assert doc["event"]["kind"] == "event" and doc["event"]["dataset"] == "pyulogd.nflog"
        assert doc["observer"]["hostname"] == "fw1"
        if nflog.get("oob.time.sec") is not None:
            seen_kernel += 1
            assert doc["pyulogd"]["timestamp_source"] == "kernel"
            usec = nflog.get("oob.time.usec") or 0
            want = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(nflog["oob.time.sec"])) + f".{usec:06d}Z"
            assert doc["@timestamp"] == want
            assert doc["event"]["created"] == "2027-01-15T08:00:00.250000Z"
        else:
            seen_received += 1
            assert doc["pyulogd"]["timestamp_source"] == "received"
            assert doc["@timestamp"] == "2027-01-15T08:00:00.250000Z" and "created" not in doc["event"]
        if "src_ip" not in obj:  # ARP and the like
            assert "source" not in doc
            continue
        assert doc["source"]["ip"] == obj["src_ip"] and doc["destination"]["ip"] == obj["dest_ip"]
        proto = values["ip.protocol"] if values.get("ip.protocol") is not None else values["ip6.nexthdr"]
        assert doc["network"]["iana_number"] == str(proto)
        assert doc["network"]["type"] == ("ipv6" if nflog["oob.family"] == 10 else "ipv4")
        sa, da = values["ip.saddr"], values["ip.daddr"]
        if proto in (1, 58) and "icmp" in doc["pyulogd"]:
            ports: tuple[Any, Any] = (doc["pyulogd"]["icmp"]["type"], doc["pyulogd"]["icmp"]["code"])
        elif "port" in doc["source"]:
            ports = (doc["source"]["port"], doc["destination"]["port"])
            assert ports == (obj["src_port"], obj["dest_port"])
        else:
            ports = (None, None)  # a fragment without its transport header
        if proto in (1, 6, 17, 58, 132) and ports == (None, None):
            assert doc["network"]["community_id"] == community_id(proto, sa, da)
        else:
            assert doc["network"]["community_id"] == reference(proto, sa, da, *ports)
        if obj.get("oob.prefix"):
            assert doc["rule"]["name"] == obj["oob.prefix"].rstrip()
        if proto == 6 and "port" in doc["source"]:
            flags = {f for f in ("SYN", "ACK", "FIN", "RST", "PSH", "URG") if values.get(f"tcp.{f.lower()}")}
            assert set(doc["pyulogd"]["tcp"]["flags"]) == flags
    assert seen_kernel == 44 and seen_received == 0  # every golden packet has a kernel time


def test_ip2str_changes_nothing(out_dir: Path) -> None:
    """Addresses are formatted by ECS itself when IP2STR is not in the stack."""
    with_str = run_golden(out_dir / "a.json", ip2str=True)
    without = run_golden(out_dir / "b.json", ip2str=False)
    assert with_str == without


def test_macs_in_ecs_format(out_dir: Path) -> None:
    docs = run_golden(out_dir / "ecs.json")
    macs = {(d["source"].get("mac"), d["destination"].get("mac")) for d in docs if "source" in d}
    assert ("02-00-0A-C9-00-01", "02-00-0A-C9-00-02") in macs


def test_reception_time_is_read_once_per_batch(out_dir: Path) -> None:
    """Records handed over in one loop round share their reception time; the next round reads
    the clock again (the output's flush ends a batch)."""
    ctx = Context(loop=Loop(FakeClock(wall=1800000000.0)), hostname="fw1")
    stack = nflog_stack(out_dir / "e.json", ctx=ctx)
    base = stack.instances[1]
    base.values = {"ip.saddr": V4[0], "ip.daddr": V4[1], "ip.protocol": 17, "udp.sport": 1, "udp.dport": 2}
    pkt = {"oob.family": 2, "oob.protocol": 0x800, "raw.pktlen": 40}
    stack.source.emit_dict(pkt)
    ctx.clock.advance(0.5)  # type: ignore[attr-defined]
    stack.source.emit_dict(pkt)
    stack.sink.flush()
    ctx.clock.advance(0.25)  # type: ignore[attr-defined]
    stack.source.emit_dict(pkt)
    stop_stack(stack)
    stamps = [d["@timestamp"] for d in check_lines((out_dir / "e.json").read_text())]
    assert stamps == ["2027-01-15T08:00:00.000000Z", "2027-01-15T08:00:00.000000Z", "2027-01-15T08:00:00.750000Z"]


def test_hostile_strings_stay_json(out_dir: Path) -> None:
    """Quotes, controls, line separators and bytes that are not UTF-8 in a prefix and an
    interface name: one valid line each, the text kept (undecodable bytes escaped)."""
    ctx = Context(loop=Loop(FakeClock(wall=1800000000.0)), hostname='h"\n')
    cache = LinkCache(ctx, kernel=False)
    cache.update({2: 'if"\u2028\x1b'})
    ctx.ifcache = cache
    out = out_dir / "h.json"
    stack = make_stack([NflogKeys, BaseKeys, IfindexFilter, (EcsOutput, {"file": str(out)})], ctx)
    base = stack.instances[1]
    base.values = {"ip.saddr": V4[0], "ip.daddr": V4[1], "ip.protocol": 6, "tcp.sport": 1, "tcp.dport": 2}
    prefixes = ['"}\n{"x":1', "bad\udcff\udc80 ", "\\u0000 \x00 ", "ünïcode ✓ "]
    for p in prefixes:
        stack.source.emit_dict({"oob.family": 2, "oob.protocol": 0x800, "oob.prefix": p, "oob.ifindex_in": 2})
    stop_stack(stack)
    docs = check_lines(out.read_text())
    assert len(docs) == len(prefixes)
    assert [d["pyulogd"]["prefix"] for d in docs] == [prefixes[0], "bad\\xff\\x80 ", prefixes[2], prefixes[3]]
    assert docs[0]["observer"]["ingress"]["interface"]["name"] == 'if"\u2028\x1b'
    assert docs[0]["observer"]["hostname"] == 'h"\n'


# -- conntrack flows
class CtSource(Source):
    """Declares NFCT's keys (the codec's table); emits one flow from a dict."""

    name = "CTKEYS"
    output_type = DataType.FLOW
    output_keys = nfct_codec.OUTPUT_KEYS
    trailer_keys = 3

    def emit_dict(self, values: dict[str, Any]) -> None:
        self.emit([None] + [values.get(k.name) for k in self.output_keys[: -self.trailer_keys]])


EXTRA_KEYS = (
    Key("audit.action", T.STRING), Key("audit.rule", T.STRING), Key("nft.family", T.STRING),
    Key("nft.table", T.STRING), Key("nft.chain", T.STRING), Key("nft.handle", T.UINT64), Key("nft.rule", T.STRING),
    Key("nft.verdict", T.STRING), Key("nft.policy", T.BOOL), Key("nft.trace_id", T.UINT32),
    Key("neutron.router_id", T.STRING), Key("neutron.network_id", T.STRING), Key("neutron.port_id", T.STRING),
    Key("neutron.project_id", T.STRING), Key("neutron.device_role", T.STRING),
    Key("neutron.direction", T.STRING), Key("neutron.ha_state", T.STRING),
    Key("audit.suppressed", T.UINT64), Key("audit.first", T.UINT64), Key("audit.last", T.UINT64),
    Key("audit.limit_key", T.STRING), Key("audit.loss.count", T.UINT64), Key("audit.loss.reason", T.STRING),
    Key("audit.loss.first", T.UINT64), Key("audit.loss.last", T.UINT64),
)  # fmt: skip


class AuditKeys(Filter):
    """Stands for the plugins of issues 12, 14 and 15: writes ``self.values`` into their keys."""

    name = "AUDITKEYS"
    input_type = DataType.PACKET | DataType.FLOW
    output_type = DataType.PACKET | DataType.FLOW
    output_keys = EXTRA_KEYS

    def __init__(self, ctx: Context, instance_id: str, config: dict[str, Any]) -> None:
        super().__init__(ctx, instance_id, config)
        self.values: dict[str, Any] = {}

    def interp(self, rec: list[Any]) -> int:
        for i, key in enumerate(self.output_keys):
            rec[self.out_base + i] = self.values.get(key.name)
        return OK


def ip(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)


def ct_flow(event: int, orig: tuple[str, str, int, int], reply: tuple[str, str, int, int], proto: int = 6,
            **kw: Any) -> dict[str, Any]:
    v = {"ct.event": event, "ct.id": 77, "oob.family": 10 if ":" in orig[0] else 2, "orig.ip.protocol": proto,
         "reply.ip.protocol": proto, "orig.ip.saddr": ip(orig[0]), "orig.ip.daddr": ip(orig[1]),
         "orig.l4.sport": orig[2], "orig.l4.dport": orig[3], "reply.ip.saddr": ip(reply[0]),
         "reply.ip.daddr": ip(reply[1]), "reply.l4.sport": reply[2], "reply.l4.dport": reply[3]}  # fmt: skip
    v.update(kw)
    return v


def ct_docs(out: Path, flows: list[dict[str, Any]], extra: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    ctx = Context(loop=Loop(FakeClock(wall=1800000000.0)), hostname="net1")
    stack = make_stack([CtSource, AuditKeys, (EcsOutput, {"file": str(out)})], ctx)
    audit = stack.instances[1]
    for n, flow in enumerate(flows):
        audit.values = (extra or [{}] * len(flows))[n]
        stack.source.emit_dict(flow)
    stop_stack(stack)
    assert stack.errors == 0
    return check_lines(out.read_text())


def test_conntrack_flows_with_nat(out_dir: Path) -> None:
    """DNAT to a floating IP's fixed address and SNAT of a client: both sides of NAT, the
    counters of both directions, start, end and duration, and one Community ID for the flow."""
    dnat = ct_flow(4, ("198.51.100.9", "203.0.113.5", 40000, 22), ("10.0.0.5", "198.51.100.9", 22, 40000),
                   **{"flow.start.sec": 1800000000, "flow.start.usec": 250000, "flow.end.sec": 1800000003,
                      "flow.end.usec": 500000, "orig.raw.pktcount": 10, "orig.raw.pktlen": 1000,
                      "reply.raw.pktcount": 8, "reply.raw.pktlen": 5000})
    snat = ct_flow(1, ("10.0.0.7", "192.0.2.1", 33000, 443), ("192.0.2.1", "203.0.113.1", 443, 61000),
                   **{"flow.start.sec": 1800000001, "flow.start.usec": 0})
    plain = ct_flow(1, ("fd00::1", "fd00::2", 5353, 53), ("fd00::2", "fd00::1", 53, 5353), proto=17)
    d1, d2, d3 = ct_docs(out_dir / "ct.json", [dnat, snat, plain])
    assert d1["event"]["type"] == ["connection", "end"] and d1["event"]["action"] == "connection-ended"
    assert d1["event"]["dataset"] == "pyulogd.nfct"
    assert d1["@timestamp"] == "2027-01-15T08:00:03.500000Z" and d1["pyulogd"]["timestamp_source"] == "conntrack"
    assert d1["event"]["start"] == "2027-01-15T08:00:00.250000Z"
    assert d1["event"]["duration"] == 3_250_000_000
    assert d1["destination"] == {"ip": "203.0.113.5", "port": 22, "nat": {"ip": "10.0.0.5", "port": 22},
                                 "bytes": 5000, "packets": 8}
    assert d1["source"] == {"ip": "198.51.100.9", "port": 40000, "bytes": 1000, "packets": 10}
    assert d1["network"]["bytes"] == 6000 and d1["network"]["packets"] == 18
    assert set(d1["related"]["ip"]) == {"198.51.100.9", "203.0.113.5", "10.0.0.5"}
    assert d1["network"]["community_id"] == reference(6, ip("198.51.100.9"), ip("203.0.113.5"), 40000, 22)
    assert d1["pyulogd"]["ct"] == {"event": "destroy", "id": 77}
    assert d2["event"]["type"] == ["connection", "start"]
    assert d2["source"]["nat"] == {"ip": "203.0.113.1", "port": 61000} and "nat" not in d2["destination"]
    assert d2["@timestamp"] == "2027-01-15T08:00:01.000000Z"
    assert d3["network"]["type"] == "ipv6" and d3["network"]["transport"] == "udp"
    assert "nat" not in d3["source"] and "nat" not in d3["destination"]
    assert d3["pyulogd"]["timestamp_source"] == "received" and d3["@timestamp"] == "2027-01-15T08:00:00.000000Z"


@pytest.mark.parametrize(
    ("action", "ecs_action", "verdict", "outcome"),
    [("ACCEPT", "accept", "allowed", "success"), ("DROP", "drop", "denied", "success"),
     ("REJECT", "reject", "denied", "success"), ("OTHER", "other", None, "unknown"),
     ("QUEUE?", "queue?", None, "unknown")],
)  # fmt: skip
def test_verdicts(out_dir: Path, action: str, ecs_action: str, verdict: str | None, outcome: str) -> None:
    flow = ct_flow(1, ("10.0.0.1", "10.0.0.2", 1, 2), ("10.0.0.2", "10.0.0.1", 2, 1))
    (doc,) = ct_docs(out_dir / "v.json", [flow], [{"audit.action": action, "audit.rule": "inet filter in: drop"}])
    assert doc["event"]["action"] == ecs_action and doc["event"]["outcome"] == outcome
    assert doc["event"]["type"] == ["connection", "start"] + ([verdict] if verdict else [])
    assert doc["rule"]["name"] == "inet filter in: drop"


def test_nftrace_and_neutron_keys(out_dir: Path) -> None:
    flow = ct_flow(1, ("10.0.0.1", "10.0.0.2", 1, 2), ("10.0.0.2", "10.0.0.1", 2, 1))
    values = {"audit.action": "DROP", "nft.family": "inet", "nft.table": "filter", "nft.chain": "input",
              "nft.handle": 12, "nft.rule": "tcp dport 22 drop", "nft.verdict": "drop", "nft.policy": 0,
              "nft.trace_id": 99, "neutron.router_id": "r-1",
              "neutron.network_id": "n-1", "neutron.port_id": "p-1", "neutron.project_id": "proj-1",
              "neutron.device_role": "router_interface", "neutron.direction": "egress", "neutron.ha_state": "master"}
    (doc,) = ct_docs(out_dir / "n.json", [flow], [values])
    assert doc["rule"] == {"id": "12", "ruleset": "inet filter input"}
    assert doc["pyulogd"]["nft"] == {"family": "inet", "table": "filter", "chain": "input", "handle": 12,
                                     "rule": "tcp dport 22 drop", "verdict": "drop", "policy": False, "trace_id": 99}
    assert doc["cloud"] == {"provider": "openstack", "account": {"id": "proj-1"}, "project": {"id": "proj-1"}}
    assert doc["network"]["direction"] == "egress"
    assert doc["pyulogd"]["neutron"] == {"router_id": "r-1", "network_id": "n-1", "port_id": "p-1",
                                         "project_id": "proj-1", "device_role": "router_interface",
                                         "direction": "egress", "ha_state": "master"}


def test_rate_limit_summary_and_loss_records(out_dir: Path) -> None:
    flow = ct_flow(1, ("10.0.0.1", "10.0.0.2", 1, 2), ("10.0.0.2", "10.0.0.1", 2, 1))
    summary = {"audit.action": "DROP", "audit.suppressed": 412, "audit.first": 1800000000,
               "audit.last": 1800000009, "audit.limit_key": "port=p-1 action=DROP"}
    loss = {"audit.loss.count": 5, "audit.loss.reason": "enobufs", "audit.loss.first": 1800000010,
            "audit.loss.last": 1800000011}
    s, lo = ct_docs(out_dir / "s.json", [flow, flow], [summary, loss])
    assert s["event"]["action"] == "rate-limited" and s["event"]["type"] == ["info", "denied"]
    assert s["pyulogd"]["audit"] == {"suppressed": 412, "action": "drop", "limit_key": "port=p-1 action=DROP"}
    assert s["event"]["start"] == "2027-01-15T08:00:00.000000Z" and s["event"]["end"] == "2027-01-15T08:00:09.000000Z"
    assert lo["event"]["kind"] == "pipeline_error" and lo["event"]["outcome"] == "failure"
    assert lo["pyulogd"]["loss"] == {"count": 5, "reason": "enobufs"}
    assert lo["event"]["start"] == "2027-01-15T08:00:10.000000Z"


class AcctSource(Source):
    name = "ACCTKEYS"
    output_type = DataType.SUM
    output_keys = (Key("sum.name", T.STRING), Key("sum.pkts", T.UINT64), Key("sum.bytes", T.UINT64),
                   Key("oob.time.sec", T.UINT32), Key("oob.time.usec", T.UINT32))


def test_nfacct_counters_are_metrics(out_dir: Path) -> None:
    ctx = Context(loop=Loop(FakeClock(wall=1800000000.0)), hostname="fw1")
    out = out_dir / "a.json"
    stack = make_stack([AcctSource, (EcsOutput, {"file": str(out)})], ctx)
    stack.source.emit([None, "http", 10, 12345, 1800000000, 5])
    stop_stack(stack)
    (doc,) = check_lines(out.read_text())
    assert doc["event"]["kind"] == "metric" and doc["event"]["dataset"] == "pyulogd.nfacct"
    assert doc["network"] == {"packets": 10, "bytes": 12345}
    assert doc["pyulogd"]["nfacct"] == {"name": "http"}
    assert doc["pyulogd"]["timestamp_source"] == "received"  # NFACCT stamps its polls itself


def test_random_records_are_valid_ecs(out_dir: Path) -> None:
    """Many random flows and packets, valid ECS each, Community ID matching the reference."""
    rnd = random.Random(17)
    flows, extras = [], []
    for _ in range(300):
        proto = rnd.choice([1, 6, 17, 58, 132, 47])
        v6 = proto == 58 or (proto != 1 and rnd.random() < 0.4)
        a = [bytes(rnd.getrandbits(8) for _ in range(16 if v6 else 4)) for _ in range(2)]
        texts = [socket.inet_ntop(socket.AF_INET6 if v6 else socket.AF_INET, x) for x in a]
        sp, dp = (rnd.randrange(256), rnd.randrange(4)) if proto in (1, 58) else (rnd.randrange(65536),) * 2
        flow = ct_flow(rnd.choice([1, 2, 4]), (texts[0], texts[1], sp, dp), (texts[1], texts[0], dp, sp), proto)
        if proto in (1, 58):
            flow.update({"orig.l4.sport": None, "orig.l4.dport": None, "reply.l4.sport": None,
                         "reply.l4.dport": None, f"{'icmpv6' if proto == 58 else 'icmp'}.type": sp,
                         f"{'icmpv6' if proto == 58 else 'icmp'}.code": dp})
        elif proto == 47:
            flow.update({"orig.l4.sport": None, "orig.l4.dport": None})
        flows.append(flow)
        extras.append({"audit.action": rnd.choice(["ACCEPT", "DROP", "REJECT", "OTHER", None])})
    docs = ct_docs(out_dir / "r.json", flows, extras)
    for flow, doc in zip(flows, docs, strict=True):
        proto = flow["orig.ip.protocol"]
        if proto in (1, 58):
            kind = "icmpv6" if proto == 58 else "icmp"
            ports: tuple[Any, Any] = (flow[f"{kind}.type"], flow[f"{kind}.code"])
        elif proto == 47:
            ports = (None, None)
        else:
            ports = (flow["orig.l4.sport"], flow["orig.l4.dport"])
        want = reference(proto, flow["orig.ip.saddr"], flow["orig.ip.daddr"], *ports)
        assert doc["network"]["community_id"] == want


# -- one line per record, however the stack is built
def test_compiled_renderer_matches_for_every_slot_layout() -> None:
    """The template keeps or drops each block by the keys a stack has: a record with only
    some of them valid renders the same whether the absent keys are unbound or bound to None."""
    names = ["oob.time.sec", "oob.time.usec", "oob.family", "ip.saddr", "ip.daddr", "ip.protocol",
             "udp.sport", "udp.dport", "oob.prefix", "raw.pktlen", "ct.event", "orig.ip.saddr", "audit.action"]
    full = {n: i + 1 for i, n in enumerate(names)}
    rec = [None] * (len(names) + 1)
    values = {"oob.time.sec": 1800000000, "oob.family": 2, "ip.saddr": V4[0], "ip.daddr": V4[1],
              "ip.protocol": 17, "udp.sport": 5, "udp.dport": 6, "oob.prefix": "x "}
    for n, v in values.items():
        rec[full[n]] = v
    want = compile_ecs(full, "h", dataset="d")(rec, "2026-01-01T00:00:00.000000Z")
    partial = {n: full[n] for n in values}
    assert compile_ecs(partial, "h", dataset="d")(rec, "2026-01-01T00:00:00.000000Z") == want
    assert json.loads(want)["source"] == {"ip": "10.0.0.1", "port": 5}


# -- the fast renderer (text pieces cached per flow, observer and packet length) against the plain one
_ADDRS = [bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), bytes([192, 0, 2, 7]), bytes(16), bytes(range(16)),
          socket.inet_pton(socket.AF_INET6, "fd00::1")]  # fmt: skip
_STRINGS = ["eth0", "", "gbb0", 'we"ird\\', "é", "x y ", "r-1"]


def _value(name: str) -> Any:
    """A strategy for a plausible value of an ECS input key (None included: unset)."""
    if name.endswith(("saddr", "daddr")) and "mac" not in name:
        return st.sampled_from(_ADDRS)
    if name.endswith(("saddr.str", "daddr.str")):
        return st.just("STR")  # filled from the address bytes below, as IP2STR would
    if name.endswith(("protocol", "nexthdr")):
        return st.sampled_from([1, 6, 17, 58, 132, 47, None])
    if name.endswith(("sport", "dport", ".type", ".code", "window", "hook")) and name != "raw.type":
        return st.sampled_from([0, 3, 8, 53, 255, 40000, 65535, None])
    if name == "raw.type":
        return st.sampled_from([1, 772, None])
    if name == "raw.mac":
        return st.sampled_from([bytes(range(14)), bytes(14), b"\x01\x02", None])
    if name == "oob.family":
        return st.sampled_from([2, 10, 7, None])
    if name == "audit.action":
        return st.sampled_from(["ACCEPT", "DROP", "REJECT", "OTHER", "queue", None])
    if name.startswith("tcp."):
        return st.sampled_from([0, 1, None])
    texts = ("oob.in", "oob.out", "oob.prefix", "oob.netns", "audit.rule", "sum.name", "audit.loss.reason")
    named = ("nft.table", "nft.chain", "nft.rule", "nft.verdict", "nft.family", "neutron.")
    if name in texts or name.startswith(named):
        return st.sampled_from([*_STRINGS, None])
    if name == "ct.event":
        return st.sampled_from([1, 2, 4, 8, None])
    return st.sampled_from([0, 1, 92, 1500, 1_800_000_000, None])


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_fast_renderer_writes_what_the_plain_one_writes(data: Any) -> None:
    from pyulogd.audit.ecs import KEYS

    # A stack's keys (an NFLOG, NFCT or NFTRACE stack's, or any), some dropped, some added.
    profile = data.draw(st.sampled_from([
        ("oob.", "raw.", "ip.", "ip6.", "tcp.", "udp.", "icmp.", "icmpv6.", "sctp."),
        ("orig.", "reply.", "ct.", "flow.", "oob.family", "oob.netns"),
        ("audit.", "nft.", "raw.", "oob.", "ip.", "udp.", "tcp."),
        ("neutron.", "audit.", "oob.", "ip.", "tcp.", "udp."),
        (),
    ]))  # fmt: skip
    keys = [k for k in KEYS if k.startswith(profile)] if profile else []
    dropped = set(data.draw(st.lists(st.sampled_from(KEYS), max_size=6)))
    added = data.draw(st.lists(st.sampled_from(KEYS), min_size=0 if keys else 1, max_size=12))
    bound = list(dict.fromkeys([k for k in keys if k not in dropped] + added)) or [KEYS[0]]
    slots = {k: i + 1 for i, k in enumerate(bound)}
    fast = compile_ecs(slots, "fw1", dataset="d")
    plain = compile_ecs(slots, "fw1", dataset="d", fast=False)
    for _ in range(data.draw(st.integers(1, 6))):
        rec: list[Any] = [None] * (len(bound) + 1)
        for k in bound:
            rec[slots[k]] = data.draw(_value(k))
        for k in bound:  # address texts as IP2STR writes them, from the bytes when there are some
            if k.endswith(".str"):
                raw = rec[slots[k[:-4]]] if slots.get(k[:-4]) else data.draw(st.sampled_from(_ADDRS))
                rec[slots[k]] = None if raw is None else socket.inet_ntop(
                    socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)  # fmt: skip
        outs = []
        for render in (fast, plain):
            try:
                outs.append(render(rec, "2027-01-15T08:00:00.250000Z"))
            except Exception as e:  # the same records must fail the same way
                outs.append(type(e).__name__)
        assert outs[0] == outs[1], (bound, rec)
