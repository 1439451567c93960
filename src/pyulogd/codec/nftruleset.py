"""The ruleset as NFTRACE needs it, sans-IO: which chains hook where, and each rule's text.

Built from what libnftables (or the ``nft`` command) prints, never from our own reading of
rule expressions: the JSON listing (``list ruleset``, with handles) gives the tables, chains
(hook, priority, policy) and rules in order with their expressions; the text listing
(stateless, with handles) gives each rule as nft writes it; for the tables iptables-nft
manages, ``iptables-nft-save`` / ``ip6tables-nft-save`` give the rules as iptables writes them
(nft prints the matches it cannot translate only as ``xt match physdev``), matched to the
nft rules by position in their chain, which both list in the same order.

A REJECT is a drop in the trace; the rule's own expression tells it apart (an nft ``reject``
statement, or the xt ``REJECT`` target of iptables-nft).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pyulogd.core.errors import DecodeError

# Hooks in the order a packet meets them (rank); input and forward exclude each other, so
# they share a rank, and so do prerouting and output (one starts received, the other local
# packets).
HOOK_RANK = {"ingress": -1, "prerouting": 0, "output": 0, "input": 1, "forward": 1, "postrouting": 2}
HOOK_NEXT: dict[str, tuple[str, ...]] = {
    "ingress": ("prerouting", "input", "forward", "postrouting"),
    "prerouting": ("input", "forward", "postrouting"),
    "output": ("postrouting",),
    "forward": ("postrouting",),
    "input": (),
    "postrouting": (),
}
# netfilter's hook numbers for the inet families (oob.hook, as NFLOG's).
HOOK_NUMBERS = {"prerouting": 0, "input": 1, "forward": 2, "output": 3, "postrouting": 4}
# Families whose base chains see a packet of this nfproto (NFTA_TRACE_NFPROTO).
SEEN_BY = {2: ("ip", "inet"), 10: ("ip6", "inet")}
# iptables-nft's tables: their rules are shown as iptables-nft-save prints them.
IPTABLES_TABLES = frozenset({"filter", "nat", "mangle", "raw", "security"})
IPTABLES_FAMILIES = {"ip": "iptables-nft-save", "ip6": "ip6tables-nft-save"}


@dataclass(slots=True)
class Chain:
    family: str
    table: str
    name: str
    hook: str | None = None  # None: a regular (user) chain
    prio: int | None = None
    policy: str | None = None
    ours: bool = False
    handles: list[int] = field(default_factory=list)  # its rules, in order


@dataclass(slots=True)
class Rule:
    chain: str
    text: str | None  # None: neither listing had it
    reject: bool


ChainKey = tuple[str, str, str]  # family, table, chain
RuleKey = tuple[str, str, int]  # family, table, handle


class Ruleset:
    """Chains and rules of one network namespace at one moment. Lookups only; rebuild on change."""

    def __init__(self, own: tuple[str, str] | None = None) -> None:
        self.own = own  # (family, table) of our marking table: left out of everything
        self.chains: dict[ChainKey, Chain] = {}
        self.rules: dict[RuleKey, Rule] = {}
        self.has_xt = False  # some rule uses an xt (iptables) extension

    @classmethod
    def parse(cls, listing: str | dict[str, Any], own: tuple[str, str] | None = None) -> Ruleset:
        """From the JSON listing (text or already decoded). Raises :class:`DecodeError`."""
        rs = cls(own)
        try:
            doc = json.loads(listing) if isinstance(listing, str) else listing
            items = doc["nftables"]
        except (ValueError, TypeError, KeyError) as e:
            raise DecodeError(f"not an nft JSON listing: {e}") from None
        if not isinstance(items, list):
            raise DecodeError("not an nft JSON listing: 'nftables' is no list")
        for item in items:
            if not isinstance(item, dict):
                continue
            try:
                if "chain" in item:
                    c = item["chain"]
                    key = (str(c["family"]), str(c["table"]), str(c["name"]))
                    hook = c.get("hook")
                    rs.chains[key] = Chain(*key, hook=None if hook is None else str(hook),
                                           prio=_int(c.get("prio")), policy=c.get("policy"),
                                           ours=(key[0], key[1]) == own)
                elif "rule" in item:
                    r = item["rule"]
                    fam, table, chain, handle = str(r["family"]), str(r["table"]), str(r["chain"]), int(r["handle"])
                    exprs = r.get("expr") or []
                    reject = any(isinstance(x, dict) and ("reject" in x or _xt(x) == ("target", "REJECT"))
                                 for x in exprs)  # fmt: skip
                    if any(isinstance(x, dict) and "xt" in x for x in exprs):
                        rs.has_xt = True
                    rs.rules[(fam, table, handle)] = Rule(chain, None, reject)
                    ch = rs.chains.get((fam, table, chain))
                    if ch is not None:
                        ch.handles.append(handle)
            except (KeyError, TypeError, ValueError) as e:
                raise DecodeError(f"nft JSON listing: bad {next(iter(item), '?')} object: {e}") from None
        return rs

    # -- rule text

    def add_text(self, listing: str) -> None:
        """Rule texts from nft's text listing (``-a -s list ruleset``): each rule line ends
        with ``# handle N``; the table it belongs to is the last ``table FAMILY NAME {`` line."""
        table: tuple[str, str] | None = None
        in_chain = False
        for line in listing.splitlines():
            s = line.strip()
            if s.startswith("table ") and "{" in s:
                parts = s.split(" ", 2)
                if len(parts) == 3:
                    table = (parts[1], _unquote(parts[2].split(" {", 1)[0]))
                in_chain = False
            elif s.startswith("chain ") and "{" in s:
                in_chain = True
            elif s == "}":
                in_chain = False
            elif in_chain and table is not None and " # handle " in s:
                text, _, h = s.rpartition(" # handle ")
                if h.isdigit():
                    rule = self.rules.get((table[0], table[1], int(h)))
                    if rule is not None and rule.text is None:
                        rule.text = text.strip()

    def iptables_families(self) -> list[str]:
        """The families (``ip``, ``ip6``) with a table iptables-nft may manage: ask their
        ``*-nft-save`` for the rules' iptables text."""
        return sorted({f for f, t, _ in self.chains if f in IPTABLES_FAMILIES and t in IPTABLES_TABLES})

    def add_iptables(self, family: str, save: str) -> None:
        """Rule texts from ``iptables-nft-save`` (``family`` ``ip``) or ``ip6tables-nft-save``
        (``ip6``): the n-th ``-A CHAIN`` line of a table is the n-th rule of that chain in nft's
        listing. A chain whose counts differ (the ruleset changed between the two listings,
        or a table iptables-nft calls incompatible) keeps nft's text."""
        table = None
        lines: dict[tuple[str, str], list[str]] = {}
        for line in save.splitlines():
            if line.startswith("*"):
                table = line[1:].strip()
            elif line.startswith("-A ") and table is not None:
                chain, _, rest = line[3:].partition(" ")
                lines.setdefault((table, chain), []).append(rest.strip())
            elif line.startswith("COMMIT"):
                table = None
        for (table, chain), texts in lines.items():
            ch = self.chains.get((family, table, chain))
            if ch is None or len(ch.handles) != len(texts):
                continue
            for h, text in zip(ch.handles, texts, strict=True):
                rule = self.rules[(family, table, h)]
                rule.text = text
                if " -j REJECT" in f" {text}":
                    rule.reject = True

    # -- lookups

    def rule(self, family: str, table: str, handle: int) -> Rule | None:
        return self.rules.get((family, table, handle))

    def chain(self, family: str, table: str, chain: str) -> Chain | None:
        return self.chains.get((family, table, chain))

    def own_chain_ok(self, chains: dict[str, tuple[str, int]]) -> bool:
        """Whether our table has exactly these base chains (name -> (hook, prio)), each with one rule."""
        if self.own is None:
            return False
        found = {k[2]: c for k, c in self.chains.items() if (k[0], k[1]) == self.own}
        if set(found) != set(chains):
            return False
        return all(c.hook == chains[n][0] and c.prio == chains[n][1] and len(c.handles) == 1
                   for n, c in found.items())  # fmt: skip

    def position(self, family: str, table: str, chain: str) -> tuple[int, int] | None:
        """(hook rank, priority) of a base chain: where a packet meets it; None when unknown."""
        c = self.chains.get((family, table, chain))
        if c is None or c.hook is None or c.hook not in HOOK_RANK:
            return None
        return HOOK_RANK[c.hook], c.prio or 0

    def hook_number(self, family: str, table: str, chain: str) -> int | None:
        c = self.chains.get((family, table, chain))
        return None if c is None or c.hook is None else HOOK_NUMBERS.get(c.hook)

    def more_after(self, family: str, table: str, chain: str, nfproto: int | None) -> bool:
        """Whether a packet accepted by base chain ``chain`` may still meet another base chain
        (of someone else) at the same hook with a later priority or at a later hook. True
        whenever it cannot be told (unknown chain, a family other than IPv4/IPv6): the caller
        then waits for more events instead."""
        c = self.chains.get((family, table, chain))
        fams = SEEN_BY.get(nfproto or 0)
        if c is None or c.hook is None or c.hook not in HOOK_NEXT or fams is None or family not in fams:
            return True
        prio = c.prio or 0
        later = HOOK_NEXT[c.hook]
        for o in self.chains.values():
            if o.ours or o.hook is None or o.family not in fams or o is c:
                continue
            if o.hook in later:
                return True
            if o.hook == c.hook and (o.prio or 0) >= prio:
                return True
        return False


def _int(v: Any) -> int | None:
    try:
        return None if v is None else int(v)
    except (TypeError, ValueError):
        return None


def _xt(x: dict[str, Any]) -> tuple[str, str] | None:
    v = x.get("xt")
    if isinstance(v, dict):
        return str(v.get("type")), str(v.get("name"))
    return None


def _unquote(s: str) -> str:
    s = s.strip()
    if len(s) >= 2 and s[0] == s[-1] == '"':
        return s[1:-1]
    return s
