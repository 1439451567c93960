"""The collector's state machine: messages in, flow records out (sans-IO: the caller passes
the datagram or the stream's message, the exporter's address and ``now``).

Protocols: IPFIX (RFC 7011, version 10), NetFlow v9 (RFC 3954) and NetFlow v5 (Cisco's
fixed 48-byte records, what Open vSwitch's bridge ``netflow`` column and softflowd send).

State is kept per **session** (exporter address and source port: a restarted exporter
comes from a new port and must teach its templates again, RFC 7011 8.4) and per
**observation domain** in it (NetFlow v9: source ID; v5: engine type and id). Templates
are compiled once when they arrive (``template.py``). Limits, all per exporter address
(UDP source ports are cheap, so a limit per session would bound nothing):
``max_templates`` templates, ``hold_bytes`` of data held for a template not seen yet,
:data:`MAX_SESSIONS` sessions, :data:`MAX_DOMAINS` domains; and :data:`MAX_EXPORTERS`
addresses in all. Over UDP templates and idle sessions expire after ``template_timeout``.

A message is handled whole or not at all (RFC 7011 9.1): templates it defines, records it
carries, the time base of its options records and the sequence state are applied only once
every set of it has been read; any bad length, truncated template or field running past
its set drops it, counted under ``malformed`` and its cause. The exporter's other messages
go on.

**Data before its template** is held (a copy of the set, FIFO per exporter, the oldest
evicted when ``hold_bytes`` is full) and decoded when the template comes, or dropped after
``template_timeout``; each fate counted.

**Withdrawals** (template records with no fields) are applied over TCP and, as RFC 7011
8.4 requires of UDP collectors, ignored (and counted) over UDP.

**Sequence numbers** (statistics only, never a reason to drop data): RFC 7011 counts the
data records a domain sent before the message; NetFlow v9 counts export packets, v5 flows.
Two real exporters count otherwise (../shared/research/ipfix.md): Open vSwitch keeps one
counter for all the domains of an exporter, and softflowd counts its flow records
*including* the message's own (options records not counted). Checked strictly each would
show a gap in nearly every message. So each session starts with RFC counting and, when a
message misses the RFC expectation but meets exactly one of the two other ways, switches
to it for good (logged once): only a message missing its session's way counts as a gap
(``seq_gaps``, with the records that went missing in ``lost_records``, or
``seq_backwards`` for a jump back: a restart or reordering). ``quirks=False`` keeps RFC
counting (what strict collectors such as nfcapd and libfixbuf report). A message holding
data the collector could not decode (no template) leaves the next expectation unknown
rather than reporting a false gap.
"""

from __future__ import annotations

import struct
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from pyulogd.codec.ipfixin import keys as K
from pyulogd.codec.ipfixin.iana import PEN_V9_SCOPE
from pyulogd.codec.ipfixin.template import VARLEN, Compiled, Field, compile_template
from pyulogd.core.errors import DecodeError

IPFIX_HDR = struct.Struct("!HHIII")  # version, length, export time, sequence, domain
V9_HDR = struct.Struct("!HHIIII")  # version, count, sysUptime, unix secs, sequence, source id
V5_HDR = struct.Struct("!HHIIIIBBH")  # version, count, sysUptime, secs, nsecs, flow seq, engine type/id, sampling
SET_HDR = struct.Struct("!HH")
_IPFIX_HDR_SET = struct.Struct("!HHIIIHH").unpack_from  # the header and the first set's
_SET_HDR = SET_HDR.unpack_from
U32 = struct.Struct("!I")
V5_RECORD = 48
V5_MAX = 30  # records per v5 datagram (Cisco's limit; 24 + 30 * 48 = 1464 bytes)
MOD = 1 << 32
MAX_SESSIONS = 64  # per exporter address
MAX_DOMAINS = 1024  # per exporter address
MAX_EXPORTERS = 4096

# NetFlow v5's record as IANA elements (paddingOctets 210 for the pad bytes).
V5_FIELDS = tuple(Field(0, ie, n) for ie, n in (
    (8, 4), (12, 4), (15, 4), (10, 2), (14, 2), (2, 4), (1, 4), (22, 4), (21, 4), (7, 2), (11, 2),
    (210, 1), (6, 1), (4, 1), (5, 1), (16, 2), (17, 2), (9, 1), (13, 1), (210, 2)))  # fmt: skip

# Counters (the caller's prefix in front): what every cause of loss or oddity is called.
COUNTERS = (
    "messages", "records", "options_records", "malformed", "bad_version", "templates", "options_templates",
    "templates_replaced", "templates_expired", "template_limit", "withdrawals", "withdrawals_ignored",
    "no_template", "held_decoded", "held_expired", "held_evicted", "held_malformed", "seq_gaps", "lost_records",
    "seq_backwards", "reserved_sets", "sessions_expired", "sessions_evicted", "exporter_limit", "domain_limit",
    "no_time_base",
)  # fmt: skip
# Causes of a dropped message, each counted as malformed.<cause>.
CAUSES = ("short", "bad_length", "bad_set_length", "bad_template", "field_overrun", "bad_count")


class _Slow(Exception):
    """A message the fast path (:meth:`Collector.feed_to`) leaves to the general one."""


class Malformed(DecodeError):
    """A message to drop whole; ``cause`` is one of :data:`CAUSES`."""

    def __init__(self, cause: str, text: str) -> None:
        super().__init__(text)
        self.cause = cause


class _Template:
    __slots__ = ("tid", "fields", "scope", "options", "compiled", "seen", "decode", "needs_boot")

    def __init__(self, tid: int, fields: tuple[Field, ...], scope: int, options: bool, compiled: Compiled,
                 seen: float) -> None:  # fmt: skip
        self.tid = tid
        self.fields = fields
        self.scope = scope
        self.options = options
        self.compiled = compiled
        self.seen = seen
        self.decode = compiled.decode  # (read per message by Collector.feed_to)
        self.needs_boot = compiled.needs_boot


class _Domain:
    __slots__ = ("odid", "templates", "boot", "expected", "prev_seq")

    def __init__(self, odid: int) -> None:
        self.odid = odid
        self.templates: dict[int, _Template] = {}
        self.boot: int | None = None  # systemInitTimeMilliseconds (IPFIX options record)
        self.expected: int | None = None  # next sequence number, RFC counting
        self.prev_seq: int | None = None


class Session:
    """One transport session: an exporter's address and source port."""

    __slots__ = ("addr", "port", "exporter", "domains", "expected", "mode", "seen", "owner")

    def __init__(self, addr: str, port: int, owner: _Exporter, now: float) -> None:
        self.addr = addr
        self.port = port
        self.exporter = f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"
        self.domains: dict[int, _Domain] = {}
        self.expected: int | None = None  # next sequence number, one counter for all domains
        self.mode = "rfc"  # how this exporter counts: rfc, shared (Open vSwitch), post (softflowd)
        self.seen = now
        self.owner = owner

    def templates(self) -> int:
        return sum(len(d.templates) for d in self.domains.values())


class _Held:
    __slots__ = ("session", "odid", "tid", "body", "etime", "arrived")

    def __init__(self, session: Session, odid: int, tid: int, body: bytes, etime: int, arrived: float) -> None:
        self.session = session
        self.odid = odid
        self.tid = tid
        self.body = body
        self.etime = etime
        self.arrived = arrived


class _Exporter:
    __slots__ = ("addr", "sessions", "ntemplates", "ndomains", "held", "held_bytes")

    def __init__(self, addr: str) -> None:
        self.addr = addr
        self.sessions: dict[int, Session] = {}
        self.ntemplates = 0
        self.ndomains = 0
        self.held: deque[_Held] = deque()
        self.held_bytes = 0


class _Message:
    """What one message changes, applied only when all of it could be read."""

    __slots__ = ("session", "dom", "etime", "pending", "withdrawn", "held", "records", "n_all", "n_flow",
                 "unknown", "boot", "boot_set", "counts", "seq", "unit")  # fmt: skip

    def __init__(self, session: Session, dom: _Domain, etime: int) -> None:
        self.session = session
        self.dom = dom
        self.etime = etime
        self.pending: dict[int, _Template] = {}
        self.withdrawn: list[int] = []  # template ids; 2 / 3: every data / options template
        self.held: list[tuple[int, bytes]] = []
        self.records: list[list[Any]] = []
        self.n_all = 0  # data records, options records included (RFC sequence)
        self.n_flow = 0  # flow records only (softflowd's sequence)
        self.unknown = False  # a data set could not be decoded: its record count is unknown
        self.boot = dom.boot
        self.boot_set = False
        self.counts: Counter[str] = Counter()
        self.seq = 0  # the header's sequence number
        self.unit = 0  # what a message adds to it: 0 its data records, 1 itself (NetFlow v9)

    def template(self, tid: int) -> _Template | None:
        """The template a data set of this message refers to: one the message defined, or
        one known before that the message did not withdraw."""
        t = self.pending.get(tid)
        if t is not None:
            return t
        if tid in self.withdrawn:
            return None
        t = self.dom.templates.get(tid)
        if t is not None and (3 if t.options else 2) in self.withdrawn:
            return None
        return t


Count = Callable[[str, int], None]
Event = Callable[[str, str], None]
Gap = Callable[[str, int, int, int], None]


class Collector:
    """Template and sequence state of every exporter a listening socket hears.

    ``count(name, n)`` receives every counter increment (:data:`COUNTERS`, and
    ``malformed.<cause>``); ``event(kind, text)`` what is worth a log line (kinds:
    ``malformed``, ``sequence``, ``limit``, ``no_template``, ``withdrawal``, ``time``);
    ``gap(exporter, domain, expected, got)`` each sequence gap. Without them, counters
    go to :attr:`counts`.
    """

    def __init__(self, *, udp: bool = True, template_timeout: float = 1800.0, max_templates: int = 4096,
                 hold_bytes: int = 256 * 1024, emit_options: bool = False, extra: bool = True, quirks: bool = True,
                 count: Count | None = None, event: Event | None = None, gap: Gap | None = None) -> None:  # fmt: skip
        self.udp = udp
        self.template_timeout = template_timeout
        self.max_templates = max_templates
        self.hold_bytes = hold_bytes
        self.emit_options = emit_options
        self.extra = extra
        self.quirks = quirks
        self._counts: Counter[str] = Counter()
        self.count: Count = count if count is not None else self._count
        # What the fast path counts (messages and records of plain data messages), handed to
        # ``count`` by :meth:`sync`: two additions instead of two calls per message.
        self._nmessages = 0
        self._nrecords = 0
        self.event: Event = event if event is not None else (lambda kind, text: None)
        self.gap: Gap = gap if gap is not None else (lambda exporter, odid, expected, got: None)
        self.exporters: dict[str, _Exporter] = {}

    def _count(self, name: str, n: int) -> None:
        self._counts[name] += n

    def sync(self) -> None:
        """Hand the fast path's counts to ``count`` (the caller does it after each batch)."""
        if self._nmessages:
            self.count("messages", self._nmessages)
            self._nmessages = 0
        if self._nrecords:
            self.count("records", self._nrecords)
            self._nrecords = 0

    @property
    def counts(self) -> Counter[str]:
        """The counters, when no ``count`` was given (synced first)."""
        self.sync()
        return self._counts

    # -- sessions
    def session(self, addr: str, port: int, now: float) -> Session | None:
        """The session of ``addr``:``port`` (made if new), or None when the limits refuse it."""
        exp = self.exporters.get(addr)
        if exp is None:
            if len(self.exporters) >= MAX_EXPORTERS:
                self.count("exporter_limit", 1)
                self.event("limit", f"{addr}: already {MAX_EXPORTERS} exporters, message dropped")
                return None
            exp = self.exporters[addr] = _Exporter(addr)
        sess = exp.sessions.get(port)
        if sess is None:
            if len(exp.sessions) >= MAX_SESSIONS:
                oldest = min(exp.sessions.values(), key=lambda s: s.seen)
                self._drop_session(oldest)
                self.count("sessions_evicted", 1)
                self.event("limit", f"{oldest.exporter}: dropped (the least recently heard of {MAX_SESSIONS} "
                                    f"sessions of {addr})")  # fmt: skip
            sess = exp.sessions[port] = Session(addr, port, exp, now)
        sess.seen = now
        return sess

    def close_session(self, addr: str, port: int) -> None:
        """The transport session ended (a TCP connection closed): forget its templates."""
        exp = self.exporters.get(addr)
        if exp is not None and port in exp.sessions:
            self._drop_session(exp.sessions[port])

    def _drop_session(self, sess: Session) -> None:
        exp = sess.owner
        exp.ntemplates -= sess.templates()
        exp.ndomains -= len(sess.domains)
        del exp.sessions[sess.port]
        if any(h.session is sess for h in exp.held):
            kept = deque(h for h in exp.held if h.session is not sess)
            self.count("held_expired", len(exp.held) - len(kept))
            exp.held = kept
            exp.held_bytes = sum(len(h.body) for h in kept)
        if not exp.sessions:
            del self.exporters[exp.addr]

    def _domain(self, sess: Session, odid: int) -> _Domain:
        dom = sess.domains.get(odid)
        if dom is None:
            if sess.owner.ndomains >= MAX_DOMAINS:
                self.count("domain_limit", 1)
                raise _Refused(f"{sess.exporter}: already {MAX_DOMAINS} observation domains")
            dom = sess.domains[odid] = _Domain(odid)
            sess.owner.ndomains += 1
        return dom

    # -- messages
    def feed(self, data: bytes, addr: str, port: int, now: float) -> list[list[Any]]:
        """One message (a UDP datagram, or one message cut from a TCP stream) from
        ``addr``:``port``: the flow records it carries (and held ones it made decodable),
        value lists in ``keys.KEYS`` order after slot 0. Never raises on bad input."""
        out: list[list[Any]] = []
        self.feed_to(out, data, addr, port, now)
        return out

    def feed_to(self, out: list[list[Any]], data: bytes, addr: str, port: int, now: float) -> None:
        """:meth:`feed`, appending the records to ``out`` (a reader's batch).

        The fast path, here: the common message (data sets of known flow templates of a known
        IPFIX session and domain; Open vSwitch sends one record per message, so what a message
        costs besides its records matters) is decoded without the bookkeeping of
        :meth:`_ipfix`, its records straight into ``out``. Anything else (options, an unknown
        template, no time base, a bad length, a field past its set) takes the general path,
        which reports it, with what the fast path had added to ``out`` taken back."""
        exp = self.exporters.get(addr)
        if exp is not None:
            sess = exp.sessions.get(port)
            if sess is not None and len(data) >= 20:
                ver, length, etime, seq, odid, sid, slen = _IPFIX_HDR_SET(data)
                dom = sess.domains.get(odid) if ver == 10 else None
                if dom is not None and 20 <= length <= len(data):
                    start = len(out)
                    templates = dom.templates
                    boot = dom.boot
                    # The first set on its own: most messages have one.
                    end = 16 + slen
                    t = templates.get(sid)
                    if not (t is None or t.options or slen < 4 or end > length or (boot is None and t.needs_boot)):
                        exporter = sess.exporter
                        try:
                            t.decode(data, 20, end, exporter, odid, etime, boot, out)
                            off = end
                            while off < length:
                                if length - off < 4:
                                    raise _Slow
                                sid, slen = _SET_HDR(data, off)
                                end = off + slen
                                t = templates.get(sid)
                                if t is None or t.options or slen < 4 or end > length or \
                                        (boot is None and t.needs_boot):  # fmt: skip
                                    raise _Slow
                                t.decode(data, off + 4, end, exporter, odid, etime, boot, out)
                                off = end
                        except (_Slow, DecodeError, struct.error, IndexError, ValueError, OverflowError):
                            del out[start:]  # reported by the general path
                        else:
                            n = len(out) - start
                            mode = sess.mode
                            if mode == "rfc":
                                want = dom.expected
                            elif mode == "shared":
                                want = sess.expected
                            else:
                                want = None if dom.prev_seq is None else (dom.prev_seq + n) % MOD
                            if want == seq:
                                dom.expected = sess.expected = (seq + n) % MOD
                                dom.prev_seq = seq
                            else:
                                self._sequence(sess, dom, seq, n, n, False, 0)
                            self._nmessages += 1
                            self._nrecords += n
                            sess.seen = now
                            return
        recs = self._general(data, addr, port, now)
        if recs:
            out += recs

    def _general(self, data: bytes, addr: str, port: int, now: float) -> list[list[Any]]:
        """:meth:`feed` for every message (no fast path)."""
        count = self.count
        if len(data) < 2:
            count("malformed", 1)
            count("malformed.short", 1)
            self.event("malformed", f"{addr}:{port}: a message of {len(data)} bytes")
            return []
        version = data[0] << 8 | data[1]
        if version not in (10, 9, 5):
            count("bad_version", 1)
            self.event("malformed", f"{addr}:{port}: version {version} is not IPFIX (10) or NetFlow (9, 5)")
            return []
        sess = self.session(addr, port, now)
        if sess is None:
            return []
        try:
            if version == 10:
                msg = self._ipfix(sess, data, now)
            elif version == 9:
                msg = self._v9(sess, data, now)
            else:
                msg = self._v5(sess, data, now)
        except Malformed as e:
            count("malformed", 1)
            count("malformed." + e.cause, 1)
            self.event("malformed", f"{sess.exporter}: message of {len(data)} bytes dropped: {e}")
            return []
        except _Refused as e:
            self.event("limit", f"{e}; message dropped")
            return []
        except (DecodeError, struct.error, IndexError, ValueError, OverflowError) as e:
            # A field running past its set (compiled decoders raise DecodeError) or a value
            # no decoder should have met: the message is dropped either way.
            count("malformed", 1)
            count("malformed.field_overrun", 1)
            self.event("malformed", f"{sess.exporter}: message of {len(data)} bytes dropped: {e}")
            return []
        count("messages", 1)
        return self._commit(msg, version, now)

    def _commit(self, msg: _Message, version: int, now: float) -> list[list[Any]]:
        sess, dom, count = msg.session, msg.dom, self.count
        exp = sess.owner
        self._sequence(sess, dom, msg.seq, msg.n_all, msg.n_flow, msg.unknown, msg.unit)
        for name, n in msg.counts.items():
            if n:
                count(name, n)
        if msg.boot_set:
            dom.boot = msg.boot
        for tid in msg.withdrawn:
            self._withdraw(sess, dom, tid)
        out: list[list[Any]] = []
        released = False
        for tid, t in msg.pending.items():
            old = dom.templates.get(tid)
            if old is None:
                exp.ntemplates += 1
            elif old.fields != t.fields or old.options != t.options:
                count("templates_replaced", 1)
            t.seen = now
            dom.templates[tid] = t
            released = True
        if released and exp.held:
            out = self._release(sess, dom, msg.pending)
        for tid, body in msg.held:
            self._hold(sess, dom.odid, tid, body, msg, now)
        if msg.records:
            out = out + msg.records if out else msg.records
        if msg.n_flow:
            count("records", msg.n_flow)
        return out

    def _refresh_limit(self, sess: Session, dom: _Domain, msg: _Message, tid: int) -> bool:
        """Whether a new template may be learned (``max_templates`` per exporter address)."""
        if tid in dom.templates or tid in msg.pending:
            return True
        new = sum(1 for t in msg.pending if t not in dom.templates)
        if sess.owner.ntemplates + new < self.max_templates:
            return True
        msg.counts["template_limit"] += 1
        self.event("limit", f"{sess.exporter}: already {self.max_templates} templates for {sess.owner.addr}, "
                            f"template {tid} of domain {dom.odid} not learned")  # fmt: skip
        return False

    # -- IPFIX
    def _ipfix(self, sess: Session, data: bytes, now: float) -> _Message:
        if len(data) < IPFIX_HDR.size:
            raise Malformed("short", f"{len(data)} bytes, shorter than the IPFIX header")
        _ver, length, etime, seq, odid = IPFIX_HDR.unpack_from(data)
        if length < IPFIX_HDR.size or length > len(data):
            raise Malformed("bad_length", f"header length {length}, datagram {len(data)} bytes")
        dom = self._domain(sess, odid)
        msg = _Message(sess, dom, etime)
        exporter = sess.exporter
        off = IPFIX_HDR.size
        while off < length:
            if length - off < 4:
                raise Malformed("bad_set_length", f"{length - off} bytes after the last set")
            sid, slen = SET_HDR.unpack_from(data, off)
            end = off + slen
            if slen < 4 or end > length:
                raise Malformed("bad_set_length", f"set {sid} at offset {off}: length {slen}")
            if sid == 2 or sid == 3:
                self._ipfix_templates(sess, dom, msg, sid, data, off + 4, end)
            elif sid >= 256:
                t = msg.template(sid)
                if t is None:
                    msg.held.append((sid, data[off + 4 : end]))
                    msg.unknown = True
                else:
                    recs = t.compiled.decode(data, off + 4, end, exporter, odid, etime, msg.boot)
                    if msg.boot is None and t.compiled.needs_boot and recs:
                        # sysUpTime times and no systemInitTimeMilliseconds (yet): no time
                        msg.counts["no_time_base"] += len(recs)
                        self.event("time", f"{exporter}: flow times relative to the exporter's uptime in domain "
                                           f"{odid}, and no options record gave its boot time (yet)")  # fmt: skip
                    self._records(msg, t, recs)
            else:
                msg.counts["reserved_sets"] += 1
            off = end
        msg.counts["no_template"] += len(msg.held)
        msg.seq = seq
        return msg

    def _records(self, msg: _Message, t: _Template, recs: list[list[Any]]) -> None:
        if not t.options:
            msg.records.extend(recs)
            msg.n_all += len(recs)
            msg.n_flow += len(recs)
            return
        msg.n_all += len(recs)
        msg.counts["options_records"] += len(recs)
        for rec in recs:
            extra = rec[K.I_EXTRA]
            if extra is not None and "systemInitTimeMilliseconds" in extra:
                value = extra["systemInitTimeMilliseconds"]
                if isinstance(value, int):
                    msg.boot = value
                    msg.boot_set = True
        if self.emit_options:
            msg.records.extend(recs)

    def _ipfix_templates(self, sess: Session, dom: _Domain, msg: _Message, sid: int, data: bytes, p: int,
                         end: int) -> None:  # fmt: skip
        options = sid == 3
        while end - p >= 4:
            tid, nfields = SET_HDR.unpack_from(data, p)
            if nfields == 0:
                if tid == 0 and not any(data[p:end]):
                    return  # zero padding at the end of the set
                self._withdrawal(sess, dom, msg, sid, tid)
                p += 4
                continue
            if tid < 256:
                raise Malformed("bad_template", f"template id {tid} (below 256)")
            scope = 0
            p += 4
            if options:
                if end - p < 2:
                    raise Malformed("bad_template", f"options template {tid}: no scope field count")
                scope = data[p] << 8 | data[p + 1]
                p += 2
                if scope == 0 or scope > nfields:
                    raise Malformed("bad_template", f"options template {tid}: scope field count {scope} of "
                                                    f"{nfields} fields")  # fmt: skip
            fields = []
            for _ in range(nfields):
                if end - p < 4:
                    raise Malformed("bad_template", f"template {tid}: field specifiers run past the set")
                ie, flen = SET_HDR.unpack_from(data, p)
                p += 4
                pen = 0
                if ie & 0x8000:
                    if end - p < 4:
                        raise Malformed("bad_template", f"template {tid}: enterprise number runs past the set")
                    pen = U32.unpack_from(data, p)[0]
                    p += 4
                    ie &= 0x7FFF
                fields.append(Field(pen, ie, flen))
            self._learn(sess, dom, msg, 10, tid, tuple(fields), scope, options)

    def _learn(self, sess: Session, dom: _Domain, msg: _Message, version: int, tid: int, fields: tuple[Field, ...],
               scope: int, options: bool) -> None:  # fmt: skip
        if not self._refresh_limit(sess, dom, msg, tid):
            return
        try:
            compiled = compile_template(version, tid, fields, options=options, extra=self.extra or options,
                                        icmp_in_port=version != 10)  # fmt: skip
        except DecodeError as e:
            raise Malformed("bad_template", str(e)) from None
        msg.pending[tid] = _Template(tid, fields, scope, options, compiled, 0.0)
        if tid in msg.withdrawn:
            msg.withdrawn.remove(tid)
        msg.counts["options_templates" if options else "templates"] += 1

    def _withdrawal(self, sess: Session, dom: _Domain, msg: _Message, sid: int, tid: int) -> None:
        if tid != sid and tid < 256:
            raise Malformed("bad_template", f"withdrawal of template id {tid}")
        msg.counts["withdrawals"] += 1
        if self.udp:
            msg.counts["withdrawals_ignored"] += 1
            self.event("withdrawal", f"{sess.exporter}: template withdrawal over UDP ignored (RFC 7011 8.4)")
            return
        if tid == sid:  # every template (set 2) or options template (set 3) of the domain
            options = sid == 3
            for t in [t for t, tmpl in msg.pending.items() if tmpl.options == options]:
                del msg.pending[t]
        else:
            msg.pending.pop(tid, None)
        msg.withdrawn.append(tid)

    def _withdraw(self, sess: Session, dom: _Domain, tid: int) -> None:
        if tid in (2, 3):
            gone = [t for t, tmpl in dom.templates.items() if tmpl.options == (tid == 3)]
        else:
            gone = [tid] if tid in dom.templates else []
        for t in gone:
            del dom.templates[t]
        sess.owner.ntemplates -= len(gone)

    # -- NetFlow v9
    def _v9(self, sess: Session, data: bytes, now: float) -> _Message:
        if len(data) < V9_HDR.size:
            raise Malformed("short", f"{len(data)} bytes, shorter than the NetFlow v9 header")
        _ver, _count, uptime, secs, seq, odid = V9_HDR.unpack_from(data)
        dom = self._domain(sess, odid)
        msg = _Message(sess, dom, secs)
        boot = secs * 1000 - uptime  # the header's uptime and time make the time base
        exporter = sess.exporter
        length = len(data)
        off = V9_HDR.size
        while length - off >= 4:
            sid, slen = SET_HDR.unpack_from(data, off)
            end = off + slen
            if slen < 4 or end > length:
                raise Malformed("bad_set_length", f"flowset {sid} at offset {off}: length {slen}")
            if sid == 0 or sid == 1:
                self._v9_templates(sess, dom, msg, sid, data, off + 4, end)
            elif sid >= 256:
                t = msg.template(sid)
                if t is None:
                    msg.held.append((sid, data[off + 4 : end]))
                    msg.unknown = True
                else:
                    self._records(msg, t, t.compiled.decode(data, off + 4, end, exporter, odid, secs, boot))
            else:
                msg.counts["reserved_sets"] += 1
            off = end
        msg.counts["no_template"] += len(msg.held)
        msg.boot, msg.boot_set = boot, True
        msg.seq, msg.unit = seq, 1
        return msg

    def _v9_templates(self, sess: Session, dom: _Domain, msg: _Message, sid: int, data: bytes, p: int,
                      end: int) -> None:  # fmt: skip
        while end - p >= 4:
            if not any(data[p:end]):
                return  # padding
            if sid == 0:
                tid, nfields = SET_HDR.unpack_from(data, p)
                p += 4
                if tid < 256 or nfields == 0:
                    raise Malformed("bad_template", f"template {tid} with {nfields} fields")
                nscope = 0
            else:
                if end - p < 6:
                    raise Malformed("bad_template", "options template header runs past the flowset")
                tid, scope_len, opt_len = struct.unpack_from("!HHH", data, p)
                p += 6
                if tid < 256 or scope_len % 4 or opt_len % 4 or not scope_len + opt_len:
                    raise Malformed("bad_template", f"options template {tid}: scope length {scope_len}, "
                                                    f"option length {opt_len}")  # fmt: skip
                nscope, nfields = scope_len // 4, (scope_len + opt_len) // 4
            if end - p < 4 * nfields:
                raise Malformed("bad_template", f"template {tid}: field specifiers run past the flowset")
            fields = []
            for i in range(nfields):
                ie, flen = SET_HDR.unpack_from(data, p)
                p += 4
                if flen == VARLEN:
                    raise Malformed("bad_template", f"template {tid}: NetFlow v9 has no variable-length fields")
                fields.append(Field(PEN_V9_SCOPE if i < nscope else 0, ie, flen))
            self._learn(sess, dom, msg, 9, tid, tuple(fields), nscope, sid == 1)

    # -- NetFlow v5
    def _v5(self, sess: Session, data: bytes, now: float) -> _Message:
        if len(data) < V5_HDR.size:
            raise Malformed("short", f"{len(data)} bytes, shorter than the NetFlow v5 header")
        _ver, n, uptime, secs, nsecs, seq, etype, eid, sampling = V5_HDR.unpack_from(data)
        if n > V5_MAX or len(data) != V5_HDR.size + n * V5_RECORD:
            raise Malformed("bad_count", f"{n} records in a datagram of {len(data)} bytes")
        odid = etype << 8 | eid
        dom = self._domain(sess, odid)
        msg = _Message(sess, dom, secs)
        t = compile_template(5, 0, V5_FIELDS, extra=self.extra, icmp_in_port=True)
        boot = secs * 1000 + nsecs // 1000000 - uptime
        recs = t.decode(data, V5_HDR.size, len(data), sess.exporter, odid, secs, boot)
        if sampling and self.extra:
            for rec in recs:
                extra = rec[K.I_EXTRA]
                extra["samplingInterval"] = sampling & 0x3FFF
                extra["samplingAlgorithm"] = sampling >> 14
        msg.records = recs
        msg.n_all = msg.n_flow = len(recs)
        msg.seq = seq
        return msg

    # -- sequence numbers
    def _sequence(self, sess: Session, dom: _Domain, seq: int, n_all: int, n_flow: int, unknown: bool,
                  unit: int) -> None:  # fmt: skip
        """Check ``seq`` against how the session counts (see the module docstring) and set the
        next expectations; called once the message has been read whole. ``n_all``: its data
        records, options ones included; ``n_flow``: its flow records; ``unknown``: it held data
        that could not be decoded; ``unit``: what a message adds, 0 for its records (IPFIX,
        v5), 1 for itself (NetFlow v9 counts packets)."""
        step = unit or n_all

        def expected(mode: str) -> int | None:
            if mode == "rfc":
                return dom.expected
            if mode == "shared":
                return sess.expected
            if dom.prev_seq is None or unknown or unit:
                return None  # softflowd's way counts this message's flow records (IPFIX only)
            return (dom.prev_seq + n_flow) % MOD

        want = expected(sess.mode)
        if want is not None and want != seq and self.quirks:
            for mode in ("shared", "post", "rfc"):
                alt = expected(mode) if mode != sess.mode else None
                if alt is not None and alt == seq and (mode != "shared" or sess.expected != dom.expected):
                    self.event("sequence", f"{sess.exporter}: sequence numbers counted "
                                           f"{_MODES[mode]}; following that from now on")  # fmt: skip
                    sess.mode = mode
                    want = None
                    break
        if want is not None and want != seq:
            gap = (seq - want) % MOD
            self.count("seq_gaps", 1)
            if gap < MOD // 2:
                self.count("lost_records", gap)
            else:
                self.count("seq_backwards", 1)
            self.gap(sess.exporter, dom.odid, want, seq)
        nxt = None if unknown and not unit else (seq + step) % MOD
        dom.expected = nxt
        sess.expected = nxt
        dom.prev_seq = seq

    # -- held data
    def _hold(self, sess: Session, odid: int, tid: int, body: bytes, msg: _Message, now: float) -> None:
        exp = sess.owner
        size = len(body)
        self.event("no_template", f"{sess.exporter}: data set of template {tid} in domain {odid} before its "
                                  "template: held")  # fmt: skip
        if size > self.hold_bytes:
            self.count("held_evicted", 1)
            return
        while exp.held_bytes + size > self.hold_bytes and exp.held:
            old = exp.held.popleft()
            exp.held_bytes -= len(old.body)
            self.count("held_evicted", 1)
        exp.held.append(_Held(sess, odid, tid, body, msg.etime, now))
        exp.held_bytes += size

    def _release(self, sess: Session, dom: _Domain, learned: dict[int, _Template]) -> list[list[Any]]:
        """Decode the held sets the templates just learned make readable, oldest first."""
        exp = sess.owner
        out: list[list[Any]] = []
        keep: deque[_Held] = deque()
        for h in exp.held:
            t = learned.get(h.tid) if h.session is sess and h.odid == dom.odid else None
            if t is None:
                keep.append(h)
                continue
            exp.held_bytes -= len(h.body)
            try:
                recs = t.compiled.decode(h.body, 0, len(h.body), sess.exporter, dom.odid, h.etime, dom.boot)
            except (DecodeError, struct.error, IndexError, ValueError, OverflowError) as e:
                # (its message was counted when it came; the set alone is lost)
                self.count("held_malformed", 1)
                self.event("malformed", f"{sess.exporter}: held data set of template {h.tid} dropped: {e}")
                continue
            self.count("held_decoded", 1)
            if t.options:
                self.count("options_records", len(recs))
                if not self.emit_options:
                    continue
            else:
                self.count("records", len(recs))
            out.extend(recs)
        exp.held = keep
        return out

    # -- time
    def expire(self, now: float) -> None:
        """Forget what is older than ``template_timeout``: held data, and over UDP templates
        not refreshed and sessions not heard from (TCP sessions end with their connection)."""
        limit = now - self.template_timeout
        for exp in list(self.exporters.values()):
            while exp.held and exp.held[0].arrived < limit:
                old = exp.held.popleft()
                exp.held_bytes -= len(old.body)
                self.count("held_expired", 1)
            if not self.udp:
                continue
            for sess in list(exp.sessions.values()):
                if sess.seen < limit:
                    self.count("templates_expired", sess.templates())
                    self._drop_session(sess)
                    self.count("sessions_expired", 1)
                    continue
                for dom in sess.domains.values():
                    gone = [tid for tid, t in dom.templates.items() if t.seen < limit]
                    for tid in gone:
                        del dom.templates[tid]
                    exp.ntemplates -= len(gone)
                    if gone:
                        self.count("templates_expired", len(gone))


class _Refused(Exception):
    """A limit refuses the message (counted where raised)."""


_MODES = {"rfc": "as RFC 7011 says (per domain, records before the message)",
          "shared": "with one counter for all observation domains (Open vSwitch)",
          "post": "after the message, flow records only (softflowd)"}  # fmt: skip
