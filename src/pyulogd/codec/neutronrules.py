"""What a namespace's ruleset tells about its log records, sans-IO: which chain holds the
NFLOG rule of a prefix and what that chain does to the packet, which conntrack zone stands
for which device, which floating IP stands for which fixed one.

Built from the same listings NFTRACE reads (``nft -j list ruleset``, with rule texts from the
text listing and, for iptables-nft's tables, ``iptables-nft-save``: :class:`~pyulogd.codec.
nftruleset.Ruleset`).

**Verdict of an NFLOG rule.** FWaaS logs with ``-j NFLOG --nflog-prefix <random number>``
rules at the top of ``neutron-l3-agent-accepted``, ``-dropped`` and ``-rejected``; the
number is drawn per port and event by each agent process and known to no API, so the chain
is what tells what happened to the packet. In general: the log rule's own verdict when it
has one (``log group 5 drop``); otherwise the first rule after it in its chain that decides
unconditionally (no match, no limit: ``-j ACCEPT``); a rule that decides only under a
condition, a jump, a return or the end of a regular chain leave the verdict unknown; the
end of a base chain gives its policy. Rules in between that only log or count are passed
over. When nothing decides, Neutron's three chain names still tell (``*-accepted``,
``*-dropped``, ``*-rejected``).

A prefix may be in several rules: FWaaS puts the same one in a ``-i <dev>`` and a ``-o
<dev>`` rule (both directions of a port), and its DROP prefix in both ``-dropped`` and
``-rejected``. :meth:`RuleIndex.verdict` keeps the rules whose interface matches the record's
and, when they still disagree, gives the verdict only if they all discard the packet
(DROP and REJECT: ``DROP``, marked ambiguous) and none otherwise; the rule then names every
place (``ip filter neutron-l3-agent-dropped handle 18 | ip filter neutron-l3-agent-rejected
handle 21: <the text they share>``).

Pure functions of the listings; nothing reads the kernel here.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field
from typing import Any

from pyulogd.codec.nftruleset import Ruleset
from pyulogd.core.keys import ACCEPT, DROP, OTHER, REJECT

_VERDICTS = {"accept": ACCEPT, "drop": DROP, "reject": REJECT, "queue": OTHER}
_UNKNOWN_VERDICTS = frozenset({"jump", "goto", "return", "continue"})
_CONDITIONS = frozenset({"match", "limit", "quota", "ct count", "set"})
_CHAIN_NAMES = (("-accepted", ACCEPT), ("-dropped", DROP), ("-rejected", REJECT))
_ADDR = r"([0-9a-fA-F.:]+)"
_NAT_RULES = (
    # iptables-nft-save text, then nft's own syntax
    (re.compile(rf"(?:^|\s)-s {_ADDR}(?:/(?:32|128))?\s.*-j SNAT --to-source {_ADDR}(?:\s|$)"), "snat"),
    (re.compile(rf"(?:^|\s)-d {_ADDR}(?:/(?:32|128))?\s.*-j DNAT --to-destination {_ADDR}(?:\s|$)"), "dnat"),
    (re.compile(rf"\bip6? saddr {_ADDR}\s.*\bsnat (?:ip6? )?to {_ADDR}(?:\s|$)"), "snat"),
    (re.compile(rf"\bip6? daddr {_ADDR}\s.*\bdnat (?:ip6? )?to {_ADDR}(?:\s|$)"), "dnat"),
)
_ZONE_RULES = (
    re.compile(r"--physdev-in (\S+)\s.*-j CT --zone (\d+)"),
    re.compile(r"(?:^|\s)-i (\S+)\s.*-j CT --zone (\d+)"),
    re.compile(r"\biifname \"?([^\s\"]+)\"?\s.*\bct zone set (\d+)"),
)


@dataclass(frozen=True, slots=True)
class LogRule:
    """An NFLOG (``log group``) rule and what becomes of the packets it logs."""

    family: str
    table: str
    chain: str
    handle: int
    prefix: str
    group: int | None
    action: str | None  # ACCEPT, DROP, REJECT, OTHER; None: cannot be told
    iif: str | None  # the input interface the rule matches, if it names one
    oif: str | None
    text: str  # audit.rule: "<family> <table> <chain> handle <n>: <rule text>"


@dataclass(frozen=True, slots=True)
class Verdict:
    action: str | None
    rule: str
    device: str | None  # the interface the deciding rule names (FWaaS: the port it logs for)
    out: bool  # that interface is the output one
    ambiguous: bool


@dataclass
class RuleIndex:
    """One namespace's log rules by prefix, conntrack zones by number, NAT of single addresses."""

    by_prefix: dict[str, list[LogRule]] = field(default_factory=dict)
    zones: dict[int, tuple[str, ...]] = field(default_factory=dict)
    snat: dict[bytes, bytes] = field(default_factory=dict)  # fixed -> floating (float-snat)
    dnat: dict[bytes, bytes] = field(default_factory=dict)  # floating -> fixed

    @property
    def floating(self) -> set[bytes]:
        return set(self.snat.values()) | set(self.dnat)

    def verdict(self, prefix: str, in_dev: str | None, out_dev: str | None) -> Verdict | None:
        rules = self.by_prefix.get(prefix)
        if not rules:
            return None
        fit = [r for r in rules if (r.iif is None or r.iif == in_dev) and (r.oif is None or r.oif == out_dev)]
        cands = fit or rules
        actions = {r.action for r in cands}
        first = cands[0]
        device, out = (first.iif, False) if first.iif is not None else (first.oif, True)
        if len(actions) == 1:
            return Verdict(first.action, first.text, device, out, False)
        # Rules alike but for their place (FWaaS's in -dropped and -rejected) are named once:
        # "<place> | <place>: <text>"; different ones each with its text.
        places = [r.text.partition(": ")[0] for r in cands]
        bodies = {r.text.partition(": ")[2] for r in cands}
        if len(bodies) == 1:
            body = bodies.pop()
            text = " | ".join(dict.fromkeys(places)) + (f": {body}" if body else "")
        else:
            text = " | ".join(dict.fromkeys(r.text for r in cands))
        action = DROP if actions == {DROP, REJECT} else None
        return Verdict(action, text, device, out, True)


def build(doc: dict[str, Any], ruleset: Ruleset | None = None) -> RuleIndex:
    """The index of one namespace's JSON listing (``doc``) and its rule texts (``ruleset``)."""
    chains: dict[tuple[str, str, str], dict[str, Any]] = {}
    rules: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    items = doc.get("nftables", []) if isinstance(doc, dict) else []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        if isinstance(item.get("chain"), dict):
            c = item["chain"]
            chains[(str(c.get("family")), str(c.get("table")), str(c.get("name")))] = c
        elif isinstance(item.get("rule"), dict):
            r = item["rule"]
            rules.setdefault((str(r.get("family")), str(r.get("table")), str(r.get("chain"))), []).append(r)
    idx = RuleIndex()
    for key, chain_rules in rules.items():
        for i, r in enumerate(chain_rules):
            exprs = r.get("expr")
            if not isinstance(exprs, list):
                continue
            log = _log_of(exprs)
            if log is not None:
                _add_log(idx, key, chains.get(key), chain_rules, i, exprs, log, r, ruleset)
    if ruleset is not None:
        for (fam, table, _h), rule in ruleset.rules.items():
            text = rule.text or ""
            if table == "nat" or " snat " in text or " dnat " in text:
                _add_nat(idx, fam, text)
            if "zone" in text:
                _add_zone(idx, text)
    return idx


def _log_of(exprs: list[Any]) -> dict[str, Any] | None:
    for x in exprs:
        if isinstance(x, dict) and isinstance(x.get("log"), dict) and "group" in x["log"]:
            return dict(x["log"])
    return None


def _add_log(idx: RuleIndex, key: tuple[str, str, str], chain: dict[str, Any] | None,
             chain_rules: list[dict[str, Any]], i: int, exprs: list[Any], log: dict[str, Any],
             r: dict[str, Any], ruleset: Ruleset | None) -> None:  # fmt: skip
    prefix = log.get("prefix")
    if not isinstance(prefix, str):
        prefix = ""
    try:
        handle = int(r.get("handle", 0))
    except (TypeError, ValueError):
        handle = 0
    group = log.get("group")
    action = _own_verdict(exprs)
    if action is _NONE:
        action = _following(chain, chain_rules[i + 1:])
    if action is None:
        for suffix, a in _CHAIN_NAMES:
            if key[2].endswith(suffix):
                action = a
    text = None
    if ruleset is not None:
        known = ruleset.rule(key[0], key[1], handle)
        text = known.text if known is not None else None
    where = f"{key[0]} {key[1]} {key[2]} handle {handle}"
    idx.by_prefix.setdefault(prefix, []).append(LogRule(
        key[0], key[1], key[2], handle, prefix, group if isinstance(group, int) else None,
        action if isinstance(action, str) else None, _ifname(exprs, "iifname"), _ifname(exprs, "oifname"),
        f"{where}: {text}" if text else where))  # fmt: skip


_NONE = object()  # the rule itself gives no verdict


def _verdict_of(x: Any) -> object:
    """ACCEPT/DROP/REJECT/OTHER of one expression, None for one that leaves the verdict unknown
    (jump, goto, return), _NONE for one that is no verdict at all."""
    if not isinstance(x, dict) or len(x) != 1:
        return _NONE
    (k, v), = x.items()
    if k in _VERDICTS:
        return _VERDICTS[k]
    if k in _UNKNOWN_VERDICTS:
        return None
    if k == "xt" and isinstance(v, dict) and v.get("type") == "target":
        name = v.get("name")
        if name == "REJECT":
            return REJECT
        if name in ("ACCEPT", "DROP"):
            return ACCEPT if name == "ACCEPT" else DROP
    return _NONE


def _own_verdict(exprs: list[Any]) -> object:
    for x in exprs:
        v = _verdict_of(x)
        if v is not _NONE:
            return v
    return _NONE


def _conditional(exprs: list[Any]) -> bool:
    for x in exprs:
        if isinstance(x, dict) and (set(x) & _CONDITIONS
                                    or (isinstance(x.get("xt"), dict) and x["xt"].get("type") == "match")):  # fmt: skip
            return True
    return False


def _following(chain: dict[str, Any] | None, rest: list[dict[str, Any]]) -> str | None:
    for r in rest:
        exprs = r.get("expr")
        if not isinstance(exprs, list):
            return None
        v = _own_verdict(exprs)
        if v is _NONE:
            continue  # logs or counts only
        if v is None or _conditional(exprs):
            return None
        return v if isinstance(v, str) else None
    if chain is not None and chain.get("hook") is not None:
        return _VERDICTS.get(str(chain.get("policy", "accept")))
    return None


def _ifname(exprs: list[Any], key: str) -> str | None:
    for x in exprs:
        m = x.get("match") if isinstance(x, dict) else None
        if isinstance(m, dict) and m.get("op") == "==" and isinstance(m.get("left"), dict) \
                and m["left"].get("meta", {}).get("key") == key and isinstance(m.get("right"), str):  # fmt: skip
            return str(m["right"])
    return None


def _pack(text: str) -> bytes | None:
    for fam in (socket.AF_INET, socket.AF_INET6):
        try:
            return socket.inet_pton(fam, text)
        except OSError:
            pass
    return None


def _add_nat(idx: RuleIndex, family: str, text: str) -> None:
    for rx, kind in _NAT_RULES:
        m = rx.search(text)
        if m is None:
            continue
        a, b = _pack(m[1]), _pack(m[2].split(":")[0] if family == "ip" else m[2])
        if a is None or b is None or len(a) != len(b):
            continue
        if kind == "snat":
            idx.snat[a] = b
        else:
            idx.dnat[a] = b


def _add_zone(idx: RuleIndex, text: str) -> None:
    for rx in _ZONE_RULES:
        m = rx.search(text)
        if m is not None:
            zone = int(m[2])
            devs = idx.zones.get(zone, ())
            if m[1] not in devs:
                idx.zones[zone] = devs + (m[1],)
            return
