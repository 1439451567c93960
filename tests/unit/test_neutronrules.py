"""What a namespace's ruleset says about its NFLOG records (codec/neutronrules.py), on listings
recorded from a namespace with FWaaS's log chains, the L3 agent's NAT, the iptables_hybrid
firewall's zones and native nft log rules (tests/vectors/neutron/record.py)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from pyulogd.codec import neutronrules
from pyulogd.codec.nftruleset import Rule, Ruleset

VEC = Path(__file__).resolve().parents[1] / "vectors" / "neutron"
QR, QR2 = "qr-1a2b3c4d-5e", "qr-2b3c4d5e-6f"


def index(with_text: bool = True) -> neutronrules.RuleIndex:
    doc = json.loads((VEC / "ruleset.json").read_text())
    if not with_text:
        return neutronrules.build(doc)
    rs = Ruleset.parse(doc)
    rs.add_text((VEC / "ruleset.txt").read_text())
    rs.add_iptables("ip", (VEC / "iptables-save.txt").read_text())
    rs.add_iptables("ip6", (VEC / "ip6tables-save.txt").read_text())
    return neutronrules.build(doc, rs)


def ip(text: str) -> bytes:
    return socket.inet_aton(text)


def test_fwaas_accepted_chain() -> None:
    idx = index()
    v = idx.verdict("12823226497704342389", "qg-9f8e7d6c-5b", QR)  # into the project network
    assert v is not None and v.action == "ACCEPT" and not v.ambiguous
    assert (v.device, v.out) == (QR, True)
    assert v.rule == ("ip filter neutron-l3-agent-accepted handle 14: -o qr-1a2b3c4d-5e -m limit --limit 100/sec "
                      "--limit-burst 25 -j NFLOG --nflog-prefix 12823226497704342389")
    v = idx.verdict("12823226497704342389", QR, "qg-9f8e7d6c-5b")  # out of it
    assert v is not None and (v.action, v.device, v.out) == ("ACCEPT", QR, False)
    assert "handle 13:" in v.rule
    v = idx.verdict("5557", QR2, "qg-9f8e7d6c-5b")
    assert v is not None and (v.action, v.device) == ("ACCEPT", QR2)


def test_fwaas_drop_prefix_is_in_dropped_and_rejected() -> None:
    """FWaaS logs DROP and REJECT with one prefix: NFLOG alone cannot tell them apart."""
    v = index().verdict("777001", "qg-9f8e7d6c-5b", QR)
    assert v is not None and v.action == "DROP" and v.ambiguous
    assert v.rule == ("ip filter neutron-l3-agent-dropped handle 18 | ip filter neutron-l3-agent-rejected handle 21: "
                      "-o qr-1a2b3c4d-5e -m limit --limit 100/sec --limit-burst 25 -j NFLOG --nflog-prefix 777001")
    # The rejected chain alone: its first deciding rule is conditional (-p tcp -j REJECT), so
    # the scan gives up and the chain's name tells.
    rules = index().by_prefix["777001"]
    assert {(r.chain, r.action) for r in rules} == {("neutron-l3-agent-dropped", "DROP"),
                                                   ("neutron-l3-agent-rejected", "REJECT")}


@pytest.mark.parametrize(("prefix", "action", "rule_end"), [
    ("pyu-deny ", "DROP", "handle 4: ip saddr 192.0.2.0/24 log prefix \"pyu-deny \" group 5 drop"),  # its own verdict
    # the unconditional accept after it
    ("pyu-web ", "ACCEPT", "handle 5: tcp dport 80 log prefix \"pyu-web \" group 5"),
    ("pyu-never ", "DROP", "handle 7: log prefix \"pyu-never \" group 5"),  # end of a base chain: its policy
    ("pyu-cond ", None, "handle 8: log prefix \"pyu-cond \" group 5"),  # a conditional accept follows: unknown
    ("pyu-tail ", "DROP", "handle 12: log prefix \"pyu-tail \" group 6"),  # policy drop
])  # fmt: skip
def test_native_log_rules(prefix: str, action: str | None, rule_end: str) -> None:
    v = index().verdict(prefix, "eth0", "eth1")
    assert v is not None and v.action == action and v.rule.endswith(rule_end) and v.device is None
    assert v.rule.startswith("inet audit ")


def test_without_rule_texts_the_rule_is_its_place() -> None:
    v = index(with_text=False).verdict("12823226497704342389", QR, "qg-9f8e7d6c-5b")
    assert v is not None and v.action == "ACCEPT" and v.rule == "ip filter neutron-l3-agent-accepted handle 13"


def test_unknown_prefix() -> None:
    assert index().verdict("999", QR, None) is None


def test_floating_ips_and_zones() -> None:
    idx = index()
    assert idx.snat == {ip("10.0.0.4"): ip("172.24.4.10")}  # the gateway's --random-fully SNAT has no -s
    assert idx.dnat == {ip("172.24.4.10"): ip("10.0.0.4")}
    assert idx.floating == {ip("172.24.4.10")}
    assert idx.zones == {4097: ("qvb3c4d5e6f-70", "tap3c4d5e6f-70"), 4098: ("qvb4d5e6f70-81", "qvb5e6f7081-92")}


def test_nft_syntax_nat_and_zone_texts() -> None:
    rs = Ruleset()
    rs.rules[("inet", "nat", 1)] = Rule("c", "ip saddr 10.1.0.5 counter snat ip to 198.51.100.7", False)
    rs.rules[("inet", "raw", 2)] = Rule("p", 'iifname "tap11112222-33" ct zone set 9', False)
    rs.rules[("ip6", "nat", 3)] = Rule("p", "ip6 daddr 2001:db8::7 dnat to fd00::7", False)
    idx = neutronrules.build({"nftables": []}, rs)
    assert idx.snat == {ip("10.1.0.5"): ip("198.51.100.7")}
    assert idx.dnat == {socket.inet_pton(socket.AF_INET6, "2001:db8::7"): socket.inet_pton(socket.AF_INET6, "fd00::7")}
    assert idx.zones == {9: ("tap11112222-33",)}


def test_malformed_listings_give_an_empty_index() -> None:
    for doc in ({}, {"nftables": "x"}, {"nftables": [1, {"rule": "x"}, {"rule": {"expr": "x"}},
                                                      {"rule": {"expr": [{"log": {"group": 1}}]}}]}):
        idx = neutronrules.build(doc)  # type: ignore[arg-type]
        assert not idx.snat and not idx.zones
        assert all(r.action is None for rules in idx.by_prefix.values() for r in rules)
