"""From trace events to verdicts, sans-IO: one record per traced packet (and, as an option,
one per verdict-giving rule on its way), each a value list in the order of :data:`OUTPUT_KEYS`.

What "the packet's final verdict" is (docs/nftrace.md has the same, for users):

* Events are grouped by trace id. Our own marking table's events are left out of every
  verdict (they still carry the packet's headers).
* A verdict other than accept (drop, queue, stolen: ``nftrace.is_final``) ends the packet:
  its record is made at once. A drop whose rule holds a reject statement is ``REJECT``.
* An accept (a rule's, or a base chain's policy) ends only that base chain: the packet may
  meet other base chains at the same hook (later priorities, other tables) and at the next
  hooks, under the same trace id. The record is made at once when the ruleset says no base
  chain of anyone else can follow (:meth:`~pyulogd.codec.nftruleset.Ruleset.more_after`:
  the last chain of input or postrouting, say); otherwise when no event came for the trace
  in ``timeout`` seconds, or when an event shows a new packet reusing the id (the first
  event of a base chain that comes before, or is, the one the trace was last in). The final
  verdict is then the last accept.
* A trace that met no rule of anyone else (only our table's chains were traced) is an
  ``ACCEPT`` without rule: no ruleset judged the packet. One that met rules but no final
  verdict (events lost) is ``OTHER``.
* At most ``max_open`` traces are open; when a new one would pass that, the one idle the
  longest is completed early (its record made with what it has) and counted as evicted.

Everything depends on ``now`` (monotonic seconds, for the timeout) and ``wall`` (the record's
timestamp: when its first event was received), passed in; nothing reads a clock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyulogd.codec import nftrace as nt
from pyulogd.codec.nftruleset import Rule, Ruleset
from pyulogd.core.keys import ACCEPT, DROP, OTHER, REJECT, Key, KeyType

T = KeyType
OUTPUT_KEYS: tuple[Key, ...] = (
    Key("audit.action", T.STRING, help="the verdict: ACCEPT, DROP, REJECT or OTHER (queue, stolen, ...)"),
    Key("audit.rule", T.STRING,
        help="the deciding rule: '<family> <table> <chain> handle <n>: <rule text>', or "
        "'<family> <table> <chain> policy <verdict>'; invalid when no rule judged the packet"),
    Key("nft.family", T.STRING, help="family of the deciding rule's table (inet, ip, ip6, bridge, ...)"),
    Key("nft.table", T.STRING, help="table of the deciding rule"),
    Key("nft.chain", T.STRING, help="chain of the deciding rule"),
    Key("nft.handle", T.UINT64, help="handle of the deciding rule (invalid for a chain policy)"),
    Key("nft.rule", T.STRING, help="text of the deciding rule, as nft (or iptables-nft-save) prints it"),
    Key("nft.verdict", T.STRING, help="the verdict as nft writes it (accept, drop, queue 3, jump CHAIN, ...)"),
    Key("nft.policy", T.BOOL, help="1 when the verdict is the chain's policy"),
    Key("nft.trace_id", T.UINT32, help="the kernel's trace id of the packet"),
    Key("nft.trail", T.STRING,
        help="every verdict-giving rule the packet met, in order: '<table> <chain> handle <n> <verdict>' "
        "separated by ', ' (jumps, returns and the accepts of earlier base chains included)"),
    Key("nft.final", T.BOOL, help="1 for the packet's record, 0 for a record of one rule on its way (rule_records=1)"),
    Key("raw.mac", T.RAW, help="link-layer header (at most 20 bytes, received packets only)"),
    Key("raw.pkt", T.RAW, help="network header (at most 40 bytes) and, where it follows directly, transport "
        "header (at most 20 bytes); no payload"),
    Key("raw.pktlen", T.UINT32, help="length of raw.pkt"),
    Key("raw.pktcount", T.UINT32, help="number of packets (always 1)"),
    Key("oob.prefix", T.STRING, help="'<ACTION> <family> <table> <chain>:' (PRINTPKT lines say the verdict)"),
    Key("oob.time.sec", T.UINT32, help="time the packet's first trace event was received, seconds"),
    Key("oob.time.usec", T.UINT32, help="microseconds of oob.time.sec"),
    Key("oob.mark", T.UINT32, help="packet mark when the verdict was given (0 when none)"),
    Key("oob.ifindex_in", T.UINT32, help="index of the input interface"),
    Key("oob.ifindex_out", T.UINT32, help="index of the output interface"),
    Key("oob.hook", T.UINT8, help="hook of the deciding base chain (0 prerouting, 1 input, 2 forward, 3 output, "
        "4 postrouting)"),
    Key("raw.mac_len", T.UINT16, help="length of raw.mac"),
    Key("oob.family", T.UINT8, help="protocol family of the packet (2 IPv4, 10 IPv6, 7 bridge)"),
    Key("oob.protocol", T.UINT16, help="layer 3 protocol (ethertype: 2048 IPv4, 34525 IPv6)"),
    Key("raw.type", T.UINT16, help="hardware type of the input interface (ARPHRD_*: 1 Ethernet, 772 loopback)"),
    Key("raw.mac.saddr", T.RAW, help="hardware source address (from an Ethernet header)"),
    Key("raw.mac.addrlen", T.UINT16, help="length of raw.mac.saddr"),
)
KEYS: tuple[str, ...] = tuple(k.name for k in OUTPUT_KEYS)
IDX: dict[str, int] = {name: i + 1 for i, name in enumerate(KEYS)}

ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772

# One verdict-giving event, as kept: (family, table, chain, handle, code, target, by policy).
Step = tuple[str, str, str, int | None, int | None, str | None, bool]


class Trace:
    """The open state of one traced packet."""

    __slots__ = ("id", "wall", "deadline", "base", "pos", "pkt", "steps", "final", "foreign")

    def __init__(self, tid: int, wall: float, deadline: float) -> None:
        self.id = tid
        self.wall = wall
        self.deadline = deadline
        self.base: tuple[str, str, str] | None = None  # the base chain being evaluated
        self.pos: tuple[int, int] | None = None  # its (hook rank, priority), when known
        self.pkt: nt.TraceEvent | None = None  # the last event that carried the packet
        self.steps: list[Step] = []
        self.final: Step | None = None  # the last accept, drop, ... of someone else
        self.foreign = False  # an event of a table other than ours was seen


STAT_NAMES = ("events", "own_events", "packets", "rule_records", "evicted", "timed_out", "reused_ids",
              "unjudged", "incomplete", "rules_unknown")  # fmt: skip


class Tracker:
    """Open traces by id; :meth:`add` takes events and returns the records that are complete.

    ``ruleset`` (None: unknown) tells base-chain positions, hooks and rule texts;
    ``refresh`` is called, at most once per :meth:`add`/:meth:`expire`, when a rule to name
    is missing from it (the ruleset changed since it was read), and returns the new one.
    """

    def __init__(
        self,
        own: tuple[str, str] | None = None,
        timeout: float = 0.25,
        max_open: int = 4096,
        rule_records: bool = False,
        ruleset: Ruleset | None = None,
        refresh: Callable[[], Ruleset | None] | None = None,
    ) -> None:
        self.own = own
        self.timeout = timeout
        self.max_open = max(1, max_open)
        self.rule_records = rule_records
        self.ruleset = ruleset
        self.refresh = refresh
        self._refreshed = False
        # Open traces, least recently active first (an event moves its trace to the end).
        self.open: dict[int, Trace] = {}
        self.stats = dict.fromkeys(STAT_NAMES, 0)

    def __len__(self) -> int:
        return len(self.open)

    def next_deadline(self) -> float | None:
        for t in self.open.values():
            return t.deadline
        return None

    # -- events in

    def add(self, events: list[nt.TraceEvent], wall: float, now: float) -> list[list[Any]]:
        """Take the events of one ``recv()`` buffer, in order. Returns the records completed."""
        out: list[list[Any]] = []
        self._refreshed = False
        opened = self.open
        own = self.own
        rs = self.ruleset
        stats = self.stats
        deadline = now + self.timeout
        stats["events"] += len(events)
        families = nt.FAMILY_NAMES
        own_fam, own_table = own if own is not None else (None, None)
        for ev in events:
            fam = families.get(ev.family) or str(ev.family)
            tr = opened.pop(ev.id, None)
            if ev.nh is not None:  # first event of a base chain's evaluation
                pos = None if rs is None else rs.position(fam, ev.table, ev.chain)
                base = (fam, ev.table, ev.chain)
                if tr is not None and tr.base is not None and (
                    tr.base == base or (pos is not None and tr.pos is not None and pos < tr.pos)
                ):
                    # A base chain the packet already passed, or one before it: another packet
                    # that got the same id (its skb reused the freed one's address).
                    stats["reused_ids"] += 1
                    self._complete(tr, out)
                    tr = None
                if tr is None:
                    tr = Trace(ev.id, wall, deadline)
                tr.base = base
                tr.pos = pos
                tr.pkt = ev
            elif tr is None:
                tr = Trace(ev.id, wall, deadline)
            tr.deadline = deadline
            if ev.table == own_table and fam == own_fam:
                stats["own_events"] += 1
                opened[ev.id] = tr
                continue
            tr.foreign = True
            step = _step(fam, ev)
            if step is None:
                opened[ev.id] = tr
                continue
            tr.steps.append(step)
            code = step[4]
            if code is not None and code >= 0:
                tr.final = step
                if nt.is_final(code) or (
                    tr.base is not None and rs is not None
                    and not rs.more_after(*tr.base, tr.pkt.nfproto if tr.pkt is not None else ev.nfproto)
                ):  # fmt: skip
                    self._complete(tr, out)
                    continue
            opened[ev.id] = tr
        while len(opened) > self.max_open:
            tid = next(iter(opened))
            stats["evicted"] += 1
            self._complete(opened.pop(tid), out)
        return out

    def expire(self, now: float) -> list[list[Any]]:
        """Complete the traces idle for ``timeout`` seconds by ``now``."""
        out: list[list[Any]] = []
        self._refreshed = False
        opened = self.open
        while opened:
            tid = next(iter(opened))
            tr = opened[tid]
            if tr.deadline > now:
                break
            del opened[tid]
            self.stats["timed_out"] += 1
            self._complete(tr, out)
        return out

    def flush(self) -> list[list[Any]]:
        """Complete every open trace (at stop: nothing is kept back)."""
        out: list[list[Any]] = []
        self._refreshed = False
        opened = self.open
        while opened:
            tid = next(iter(opened))
            self._complete(opened.pop(tid), out)
        return out

    # -- records out

    def _lookup(self, fam: str, table: str, handle: int) -> Rule | None:
        rs = self.ruleset
        rule = None if rs is None else rs.rule(fam, table, handle)
        if rule is None and self.refresh is not None and not self._refreshed:
            self._refreshed = True
            new = self.refresh()
            if new is not None:
                self.ruleset = rs = new
                rule = rs.rule(fam, table, handle)
        if rule is None:
            self.stats["rules_unknown"] += 1
        return rule

    def _complete(self, tr: Trace, out: list[list[Any]]) -> None:
        stats = self.stats
        stats["packets"] += 1
        final = tr.final
        if final is None:
            stats["unjudged" if not tr.steps else "incomplete"] += 1
        rules: dict[tuple[str, str, int], Rule | None] = {}

        def rule_of(step: Step) -> Rule | None:
            h = step[3]
            if h is None:
                return None
            k = (step[0], step[1], h)
            if k not in rules:
                rules[k] = self._lookup(*k)
            return rules[k]

        trail = ", ".join(_trail_item(s) for s in tr.steps) if tr.steps else None
        if self.rule_records:
            for s in tr.steps:
                out.append(self._values(tr, s, rule_of(s), trail, False))
                stats["rule_records"] += 1
        if final is None and tr.steps:
            final = tr.steps[-1]
        out.append(self._values(tr, final, None if final is None else rule_of(final), trail, True, tr.final is None))

    def _values(self, tr: Trace, step: Step | None, rule: Rule | None, trail: str | None, last: bool,
                incomplete: bool = False) -> list[Any]:
        pkt = tr.pkt
        sec, usec = divmod(int(tr.wall * 1_000_000), 1_000_000)
        if step is None:
            action = ACCEPT
            fam = table = chain = text = verdict = arule = prefix = None
            handle = policy = hook = None
        else:
            fam, table, chain, handle, code, target, by_policy = step
            verdict = nt.verdict_name(code, target)
            if incomplete:
                action = OTHER
            elif code is None or code < 0:
                action = OTHER
            elif code & 0xFF == nt.NF_ACCEPT:
                action = ACCEPT
            elif code & 0xFF == nt.NF_DROP:
                action = REJECT if rule is not None and rule.reject else DROP
            else:
                action = OTHER
            text = None if rule is None else rule.text
            policy = 1 if by_policy else 0
            if by_policy:
                arule = f"{fam} {table} {chain} policy {verdict}"
            elif text is not None:
                arule = f"{fam} {table} {chain} handle {handle}: {text}"
            else:
                arule = f"{fam} {table} {chain} handle {handle}"
            prefix = f"{action} {fam} {table} {chain}:"
            hook = None
            if tr.base is not None and self.ruleset is not None:
                hook = self.ruleset.hook_number(*tr.base)
        if prefix is None:
            prefix = f"{action}:"
        if pkt is None:
            mac = data = pktlen = mark = ifin = ifout = maclen = ofam = proto = rtype = saddr = addrlen = None
        else:
            mac = pkt.ll
            data = nt.packet_bytes(pkt.nh, pkt.th)
            pktlen = None if data is None else len(data)
            mark = pkt.mark or 0
            ifin = pkt.iif or None
            ifout = pkt.oif or None
            maclen = None if mac is None else len(mac)
            ofam = pkt.nfproto if pkt.nfproto is not None else pkt.family
            proto = nt.ethertype(pkt.nfproto, mac, pkt.nh)
            rtype = pkt.iiftype if mac is not None else None
            saddr = addrlen = None
            if mac is not None and len(mac) >= 14 and rtype in (ARPHRD_ETHER, ARPHRD_LOOPBACK):
                saddr, addrlen = mac[6:12], 6
        return [
            None, action, arule, fam, table, chain, handle, text, verdict, policy, tr.id, trail, 1 if last else 0,
            mac, data, pktlen, 1, prefix, sec, usec, mark, ifin, ifout, hook, maclen, ofam, proto, rtype, saddr,
            addrlen,
        ]  # fmt: skip


def _step(fam: str, ev: nt.TraceEvent) -> Step | None:
    """The verdict an event gives, or None for one that gives none (a rule that only matched
    and went on, the end-of-rules marker, a user chain's implicit return)."""
    if ev.type == nt.NFT_TRACETYPE_POLICY:
        return (fam, ev.table, ev.chain, None, ev.policy, None, True)
    if ev.type != nt.NFT_TRACETYPE_RULE or ev.handle is None:
        return None
    code = ev.verdict
    if code is None or code in (nt.NFT_CONTINUE, nt.NFT_BREAK):
        return None
    return (fam, ev.table, ev.chain, ev.handle, code, ev.target, False)


def _trail_item(s: Step) -> str:
    fam, table, chain, handle, code, target, by_policy = s
    v = nt.verdict_name(code, target)
    return f"{table} {chain} policy {v}" if by_policy else f"{table} {chain} handle {handle} {v}"


def as_dict(values: list[Any]) -> dict[str, Any]:
    """Key name -> value for the valid keys of a value list (tests, debugging)."""
    return {name: values[i + 1] for i, name in enumerate(KEYS) if values[i + 1] is not None}
