"""NFTRACE input: which rule accepted, dropped or rejected each traced packet, from nf_tables'
trace events, without touching anyone's rules (pyulogd only; ulogd2 has no such plugin).

At start the instance adds a table of its own (``trace_table``, family ``inet``) with one
base chain per hook of ``trace_hooks`` at ``trace_priority``, each holding one rule:
``<trace_rule> meta nftrace set 1``. The kernel then reports every rule a marked packet meets,
in every table, over nfnetlink (``NFNLGRP_NFTRACE``); :mod:`pyulogd.codec.nfttrack` groups
the events by trace id into one record per packet with its final verdict
(docs/nftrace.md says exactly when a trace counts as complete), and names the deciding
rule from a copy of the ruleset read through libnftables, kept current with the ruleset's
change notifications (``NFNLGRP_NFTABLES``) on the same socket. A kernel socket filter
(:mod:`pyulogd.codec.nftbpf`, ``kernel_filter``) drops before they are queued the events no
record needs (our table's after its first, ends of chains, rules that went on): about half. Our table is re-added when
someone flushes or deletes it, and deleted at exit.

The trace_rule is the only text handed to nft's parser: it comes from the root-owned config,
is checked to be one command at configure time, and is read back as JSON after it was added
and refused (the table removed, the start refused) unless it only matches packets (matches,
``limit``, ``counter``). Every later re-assertion uses that JSON, never the text again.
"""

from __future__ import annotations

import re
import socket
from typing import Any

from pyulogd.codec import netlink as nl
from pyulogd.codec import nftbpf, nfttrack, nlbpf
from pyulogd.codec import nftrace as codec
from pyulogd.codec.nftruleset import Ruleset
from pyulogd.core.context import Context
from pyulogd.core.errors import DecodeError, PluginError
from pyulogd.core.options import Bool, Choice, Duration, Int, Size, Str
from pyulogd.core.plugin import DataType, Option
from pyulogd.core.ratelimit import Burst
from pyulogd.io.netlink import NetlinkSocket
from pyulogd.io.nftables import Nft, NftError
from pyulogd.io.nlproblems import BatchProblems
from pyulogd.netns.source import NETNS_KEYS, NETNS_OPTIONS, NetnsSource

MAX_READS = 64
HOOKS = ("prerouting", "input", "forward", "output", "postrouting")
_TABLE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}\Z")
INT_MAX = 0x7FFFFFFF
# What a marking rule may hold besides our own nftrace statement: matches and statements
# that only decide whether the rule goes on (none changes the packet or gives a verdict).
ALLOWED_EXPRESSIONS = frozenset({"match", "limit", "counter"})
# A change notification starts a ruleset re-read this much later (a transaction of many rules
# is read once); a rule a record must name and that is missing is read at once.
REFRESH_DELAY = 0.1


def _check_rule(text: str) -> str | None:
    t = text.strip()
    if not t:
        return "must not be empty (a match such as 'ct state new', or 'meta nfproto ipv4')"
    if any(c in t for c in ";#") or any(ord(c) < 0x20 or ord(c) == 0x7F for c in t):
        return "must be one nft expression: no ';', '#' or control characters"
    if t.count('"') % 2:
        return "has an unbalanced '\"'"
    return None


def _check_hooks(text: str) -> str | None:
    hooks = [h.strip() for h in text.split(",") if h.strip()]
    if not hooks:
        return f"needs one or more of {', '.join(HOOKS)}"
    bad = [h for h in hooks if h not in HOOKS]
    if bad:
        return f"unknown hook '{bad[0]}' (valid: {', '.join(HOOKS)})"
    if len(set(hooks)) != len(hooks):
        return "names a hook twice"
    return None


def _check_table(text: str) -> str | None:
    if not _TABLE_NAME.match(text):
        return "must be a name of letters, digits and '_' (at most 64), starting with a letter"
    return None


OPTIONS = (
    Option("trace_rule", Str(), "ct state new", check=_check_rule,
           help="nft expression selecting the packets to trace (our table marks them with meta nftrace set 1); "
           "e.g. 'ct state new' (one record per new connection), 'ct state new ip daddr 10.0.0.0/8', "
           "'ct state new limit rate 100/second'"),
    Option("trace_hooks", Str(), "prerouting,output", check=_check_hooks,
           help="hooks where our table marks packets (comma list of prerouting, input, forward, output, "
           "postrouting); only what comes after the mark at the same hook and at later hooks is traced"),
    Option("trace_priority", Int(-INT_MAX, INT_MAX), -190,
           help="priority of our marking chains; -190 is after conntrack (-200, so 'ct state' works) and "
           "before mangle (-150), nat (-100) and filter (0)"),
    Option("trace_table", Str(), "pyulogd_trace", check=_check_table,
           help="name of our inet table (added at start, removed at exit, re-added if flushed); one instance "
           "per table name and namespace"),
    Option("trace_timeout", Duration(0.001, 60.0), "250ms",
           help="an accepted packet's record is made when no base chain can follow, else after this long "
           "without an event of its trace"),
    Option("max_traces", Int(1, 1 << 20), 4096,
           help="traces open at once; beyond it the one idle the longest is completed early (counted as evicted)"),
    Option("rule_records", Bool(), 0,
           help="also one record per verdict-giving rule on the packet's way (nft.final=0): jumps, returns, "
           "earlier base chains' accepts"),
    Option("iptables_text", Bool(), 1,
           help="show the rules of iptables-nft's tables as iptables-nft-save prints them (nft prints some "
           "matches only as 'xt match ...')"),
    Option("nft_api", Choice("auto", "libnftables", "nft"), "auto",
           help="how the ruleset is read and our table written: libnftables (python3-nftables), the nft "
           "command, or auto (the library where it loads)"),
    Option("kernel_filter", Bool(), 1,
           help="a socket filter drops, in the kernel, the trace events no record needs (our table's after its "
           "first, rules that matched and went on, ends of chains): the same records for about half the events"),
    Option("bufsize", Size(4096, 1 << 30), 150000, help="size of the receive buffer for one datagram, in bytes"),
    Option("netlink_socket_buffer_size", Size(0, INT_MAX), 0,
           help="initial socket receive buffer (SO_RCVBUFFORCE), in bytes; 0: the system default"),
    Option("netlink_socket_buffer_maxsize", Size(0, INT_MAX), 0,
           help="on ENOBUFS (lost trace events) double the socket receive buffer up to this many bytes; 0: never grow"),
)  # fmt: skip

STAT_NAMES = (
    "malformed", "enobufs", "netlink_errors", "unexpected", "truncated", "recv_errors", "ruleset_reads",
    "ruleset_errors", "table_reasserted",
) + nfttrack.STAT_NAMES  # fmt: skip
_BURSTS = ("enobufs", "recv", "truncated", "ruleset", "reassert")


class NftraceInput(NetnsSource):
    name = "NFTRACE"
    output_type = DataType.RAW
    options = OPTIONS + NETNS_OPTIONS
    output_keys = nfttrack.OUTPUT_KEYS + NETNS_KEYS
    description = ("which rule accepted, dropped or rejected each traced packet (nf_tables trace events of "
                   "packets our own table marks; iptables-nft rules included), without changing anyone's rules")
    capabilities = ("CAP_NET_ADMIN",)
    capability_reason = "reads the ruleset and re-adds its marking table after start"

    def __init__(self, ctx: Context, instance_id: str, config: dict[str, Any]) -> None:
        super().__init__(ctx, instance_id, config)
        self.sock: NetlinkSocket | None = None
        self.nft: Nft | None = None
        self.table: str = config["trace_table"]
        self.own = ("inet", self.table)
        self.hooks = [h.strip() for h in config["trace_hooks"].split(",") if h.strip()]
        self.tracker = nfttrack.Tracker(own=self.own, timeout=config["trace_timeout"],
                                        max_open=config["max_traces"], rule_records=bool(config["rule_records"]),
                                        refresh=self._refresh_if_dirty)  # fmt: skip
        self._rule_expr: list[dict[str, Any]] | None = None  # the checked JSON of our marking rule
        self._installed = False
        self._dirty = False
        self._refresh_timer: Any = None
        self._expire_timer: Any = None
        self._rcvbuf_asked = 0
        self._at_max = False
        self._truncated = 0
        self._pushed = dict.fromkeys(nfttrack.STAT_NAMES, 0)
        p = f"nftrace.{instance_id}."
        self.stat = {n: p + n for n in STAT_NAMES}
        self._burst = {n: Burst() for n in _BURSTS}
        self._problems = BatchProblems(ctx, f"NFTRACE '{instance_id}'", p)

    def chains(self) -> dict[str, tuple[str, int]]:
        """Our marking chains: name -> (hook, priority); the chain is named after its hook."""
        return {h: (h, self.config["trace_priority"]) for h in self.hooks}

    # -- life cycle

    def start_input(self) -> None:
        c = self.config
        log = self.ctx.log
        try:
            self.sock = NetlinkSocket(
                groups=(1 << (codec.NFNLGRP_NFTRACE - 1)) | (1 << (codec.NFNLGRP_NFTABLES - 1)),
                bufsize=c["bufsize"], netns=self.netns_handle, clock=self.ctx.clock,
                recvmmsg=self.ctx.recvmmsg)  # fmt: skip
        except OSError as e:
            raise PluginError(f"NFTRACE '{self.id}': cannot subscribe to nf_tables trace events: "
                              f"{_why(e)}{_hint(e)}") from None  # fmt: skip
        try:
            if c["kernel_filter"]:
                self._attach_filter()
            self._probe()
            try:
                self.nft = Nft(self.netns_handle, c["nft_api"])
            except NftError as e:
                raise PluginError(f"NFTRACE '{self.id}': {e}") from None
            size, maxsize = c["netlink_socket_buffer_size"], c["netlink_socket_buffer_maxsize"]
            self._rcvbuf_asked = size if size else self.sock.rcvbuf() // 2
            if size:
                self.sock.set_rcvbuf(size)
            self._at_max = bool(maxsize) and self._rcvbuf_asked >= maxsize
            self._install()
            self._refresh()
        except BaseException:
            self._uninstall()
            self._close()
            raise
        say = log.notice if self.parent is None else log.debug
        say(f"NFTRACE '{self.id}': tracing '{c['trace_rule']}' at {', '.join(self.hooks)} (table inet "
            f"{self.table}, priority {c['trace_priority']}); ruleset read through {self.nft.how}")
        self.ctx.loop.add_reader(self.sock.fileno(), self._readable)
        if self.sock.pending:
            self.ctx.loop.call_later(0, self._readable)

    def _attach_filter(self) -> None:
        """The kernel drops the trace events no record needs (:mod:`pyulogd.codec.nftbpf`);
        without it (a kernel that refuses the program) every event is read, as before."""
        assert self.sock is not None
        try:
            self.sock.attach_filter(nlbpf.pack(nftbpf.compile_filter(self.table)))
        except OSError as e:
            self.ctx.log.notice(f"NFTRACE '{self.id}': no kernel filter ({_why(e)}): every trace event is read")

    def _probe(self) -> None:
        """Ask nf_tables for its ruleset generation: the clearest way to learn, before
        anything else, that the kernel has nf_tables and that we may use it."""
        assert self.sock is not None
        sock = self.sock
        msg = nl.nfnl_msg(codec.NFNL_SUBSYS_NFTABLES, codec.NFT_MSG_GETGEN, socket.AF_UNSPEC, 0, (), sock.next_seq())
        try:
            sock.request(msg)
        except OSError as e:
            raise PluginError(f"NFTRACE '{self.id}': nf_tables does not answer: {_why(e)}{_hint(e)}") from None

    def stop_input(self) -> None:
        for t in (self._refresh_timer, self._expire_timer):
            if t is not None:
                t.cancel()
        self._refresh_timer = self._expire_timer = None
        if self.sock is not None:
            self.ctx.loop.remove_reader(self.sock.fileno())
            try:  # events still queued belong to packets already traced
                self.sock.drain(self.feed, self._overrun, MAX_READS)
            except OSError:
                pass
        self._emit(self.tracker.flush())
        self._uninstall()
        self._close()

    def _close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.nft = None

    # -- our marking table

    def _table_commands(self, expr: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
        """JSON commands that (re)create our table from scratch in one transaction."""
        t = {"family": "inet", "name": self.table}
        cmds: list[dict[str, Any]] = [{"add": {"table": t}}, {"delete": {"table": t}}, {"add": {"table": t}}]
        for name, (hook, prio) in self.chains().items():
            cmds.append({"add": {"chain": {"family": "inet", "table": self.table, "name": name, "type": "filter",
                                           "hook": hook, "prio": prio, "policy": "accept"}}})  # fmt: skip
            if expr is not None:
                cmds.append({"add": {"rule": {"family": "inet", "table": self.table, "chain": name, "expr": expr}}})
        return cmds

    def _install(self) -> None:
        assert self.nft is not None
        nft = self.nft
        first = self.hooks[0]
        try:
            nft.apply(self._table_commands(None))
            self._installed = True
            nft.add_rule_text("inet", self.table, first, f"{self.config['trace_rule'].strip()} meta nftrace set 1")
            doc = nft.list_json(f"table inet {self.table}")
        except NftError as e:
            raise PluginError(f"NFTRACE '{self.id}': cannot add table inet {self.table}: {e}") from None
        rules = [i["rule"] for i in doc.get("nftables", []) if isinstance(i, dict) and "rule" in i]
        if len(rules) != 1:
            raise PluginError(f"NFTRACE '{self.id}': trace_rule became {len(rules)} rules, expected one")
        expr = rules[0].get("expr") or []
        problem = _check_expr(expr)
        if problem:
            raise PluginError(f"NFTRACE '{self.id}': trace_rule '{self.config['trace_rule']}' {problem}")
        self._rule_expr = expr
        try:
            nft.apply(self._table_commands(expr))
        except NftError as e:
            raise PluginError(f"NFTRACE '{self.id}': cannot add table inet {self.table}: {e}") from None

    def _reassert(self) -> None:
        if self.nft is None or self._rule_expr is None:
            return
        self.ctx.stats.incr(self.stat["table_reasserted"])
        try:
            self.nft.apply(self._table_commands(self._rule_expr))
        except NftError as e:
            n = self._burst["reassert"].due(self.ctx.clock.wall())
            if n:
                self.ctx.log.error(f"NFTRACE '{self.id}': cannot re-add table inet {self.table}: {e} "
                                   f"({n} since last report)")  # fmt: skip
            return
        self.ctx.log.notice(f"NFTRACE '{self.id}': table inet {self.table} was changed or removed by someone; "
                            "added it again")  # fmt: skip

    def _uninstall(self) -> None:
        if not self._installed or self.nft is None:
            return
        self._installed = False
        try:
            self.nft.apply([{"delete": {"table": {"family": "inet", "name": self.table}}}])
        except NftError as e:  # gone already (flushed, or the namespace is being deleted)
            self.ctx.log.debug(f"NFTRACE '{self.id}': removing table inet {self.table}: {e}")

    # -- the ruleset

    def _refresh_if_dirty(self) -> Ruleset | None:
        return self._refresh() if self._dirty else None

    def _refresh(self) -> Ruleset | None:
        """Read the ruleset again (JSON, text, and iptables-nft-save where it manages tables);
        re-add our table if it is not as we left it."""
        if self._refresh_timer is not None:
            self._refresh_timer.cancel()
            self._refresh_timer = None
        if self.nft is None:
            return None
        self._dirty = False
        stats = self.ctx.stats
        stats.incr(self.stat["ruleset_reads"])
        try:
            rs = Ruleset.parse(self.nft.list_json(), self.own)
            rs.add_text(self.nft.list_text())
            if self.config["iptables_text"]:
                for fam in rs.iptables_families():
                    save = self.nft.iptables_save(fam)
                    if save:
                        rs.add_iptables(fam, save)
        except (NftError, DecodeError) as e:
            stats.incr(self.stat["ruleset_errors"])
            n = self._burst["ruleset"].due(self.ctx.clock.wall())
            if n:
                self.ctx.log.error(f"NFTRACE '{self.id}': cannot read the ruleset: {e} ({n} since last report); "
                                   "rule texts may be missing")  # fmt: skip
            return None
        self.tracker.ruleset = rs
        if self._installed and self._rule_expr is not None and not rs.own_chain_ok(self.chains()):
            self._reassert()
            self._dirty = True  # our own change: read again when next needed
        return rs

    def _changed(self, changes: list[codec.RulesetChange]) -> None:
        self._dirty = True
        ours = any(ch.table == self.table and ch.family == codec.NFPROTO_INET
                   and ch.msg in (codec.NFT_MSG_DELTABLE, codec.NFT_MSG_DELCHAIN, codec.NFT_MSG_DELRULE)
                   for ch in changes)  # fmt: skip
        if self._refresh_timer is None and self.nft is not None:
            self._refresh_timer = self.ctx.loop.call_later(0 if ours else REFRESH_DELAY, self._refresh_now)

    def _refresh_now(self) -> None:
        self._refresh_timer = None
        self._refresh()

    # -- events

    def _readable(self) -> None:
        sock = self.sock
        if sock is None:
            return
        try:
            if sock.pending:  # datagrams that came during a request: read as they were kept
                sock.drain(self.feed, self._overrun, MAX_READS)
            else:
                # Every datagram waiting (one trace event each) with one recvmmsg, handled as
                # one batch: one clock reading, one call of the tracker, one timer check. (The
                # shared receiver's 8 KiB slots hold any nf_tables message: the kernel builds
                # trace events and ruleset notifications in NLMSG_GOODSIZE, at most 8 KiB.)
                view, spans, overruns = sock.read_many(MAX_READS)
                for _ in range(overruns):
                    self._overrun()
                if spans:
                    self.feed_many([view[o : o + n].tobytes() for o, n in spans])
        except OSError as e:
            self.ctx.stats.incr(self.stat["recv_errors"])
            n = self._burst["recv"].due(self.ctx.clock.wall())
            if n:
                self.ctx.log.error(f"NFTRACE '{self.id}': receive failed: {_why(e)} ({n} since last report)")
        if sock.truncated != self._truncated:
            n = sock.truncated - self._truncated
            self._truncated = sock.truncated
            self.ctx.stats.incr(self.stat["truncated"], n)
            k = self._burst["truncated"].due(self.ctx.clock.wall(), n)
            if k:
                self.ctx.log.notice(f"NFTRACE '{self.id}': {k} datagram(s) longer than bufsize="
                                    f"{self.config['bufsize']} were cut; raise bufsize")  # fmt: skip

    def feed(self, buf: bytes) -> None:
        """Handle one datagram as read from the socket (tests and the case runner call this too)."""
        self.feed_many([buf])

    def feed_many(self, bufs: list[bytes]) -> None:
        """Handle the datagrams of one read, in order, as one batch (their events share the
        time of reception)."""
        clock = self.ctx.clock
        wall = clock.wall()
        batch = codec.TraceBatch()
        for buf in bufs:
            codec.parse_buffer(buf, batch)
        if batch.changes:
            self._changed(batch.changes)
        if batch.events:
            self._emit(self.tracker.add(batch.events, wall, clock.monotonic()))
        if batch.malformed or batch.errors or batch.other:
            self._problems.report(batch, wall)
        self._arm()

    def _emit(self, records: list[list[Any]]) -> None:
        if records:
            self.emit_all(records)
        stats = self.ctx.stats
        for name, v in self.tracker.stats.items():
            d = v - self._pushed[name]
            if d:
                stats.incr(self.stat[name], d)
                self._pushed[name] = v

    def _arm(self) -> None:
        """One timer, at the earliest deadline of an open trace (the one idle the longest)."""
        if self._expire_timer is not None or not self.tracker.open:
            return
        deadline = self.tracker.next_deadline()
        assert deadline is not None
        self._expire_timer = self.ctx.loop.call_later(max(0.0, deadline - self.ctx.clock.monotonic()), self._expire)

    def _expire(self) -> None:
        self._expire_timer = None
        self._emit(self.tracker.expire(self.ctx.clock.monotonic()))
        self._arm()

    def _overrun(self) -> None:
        """ENOBUFS: the kernel dropped trace events (the socket's receive buffer was full)."""
        sock = self.sock
        assert sock is not None
        stats, log = self.ctx.stats, self.ctx.log
        stats.incr(self.stat["enobufs"])
        total = stats.get(self.stat["enobufs"])
        maxsize = self.config["netlink_socket_buffer_maxsize"]
        if maxsize and not self._at_max:
            ask = min(self._rcvbuf_asked * 2, maxsize)
            granted = sock.set_rcvbuf(ask)
            self._rcvbuf_asked = ask
            self._at_max = ask >= maxsize
            log.notice(f"NFTRACE '{self.id}': losing trace events, receive buffer raised to {granted} "
                       f"({total} ENOBUFS so far)")  # fmt: skip
            return
        n = self._burst["enobufs"].due(self.ctx.clock.wall())
        if n:
            log.notice(f"NFTRACE '{self.id}': losing trace events ({n} ENOBUFS since last report, {total} in "
                       "total); raise netlink_socket_buffer_size / netlink_socket_buffer_maxsize, or trace less "
                       "(trace_rule)")  # fmt: skip


def _check_expr(expr: list[Any]) -> str | None:
    """Why a marking rule's JSON expressions are not what we may install (None: they are):
    matches, limits and counters, then our ``meta nftrace set 1``."""
    if not expr or expr[-1] != {"mangle": {"key": {"meta": {"key": "nftrace"}}, "value": 1}}:
        return "did not end in our 'meta nftrace set 1' (a verdict or statement after it?)"
    for x in expr[:-1]:
        kind = next(iter(x), "?") if isinstance(x, dict) else "?"
        if kind not in ALLOWED_EXPRESSIONS:
            return f"may only match packets, but holds a '{kind}' statement"
    return None


def _why(e: OSError) -> str:
    return e.strerror or str(e)


def _hint(e: OSError) -> str:
    if e.errno in (1, 13):  # EPERM, EACCES
        return " (needs CAP_NET_ADMIN: run as root)"
    if e.errno in (93, 95, 2, 97):  # EPROTONOSUPPORT, EOPNOTSUPP, ENOENT, EAFNOSUPPORT
        return " (the kernel has no nf_tables)"
    return ""
