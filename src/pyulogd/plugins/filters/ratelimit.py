"""RATELIMIT: a token bucket per key that never loses a record silently (pyulogd extra).

Neutron limits its packet logs to ``rate_limit`` per second with a burst of
``burst_limit`` (100 and 25, the minimums) and throws the rest away without a trace; an
iptables ``limit`` match does the same. RATELIMIT limits the same way, per key (``key=``:
upstream key names, e.g. the port and the verdict), and accounts for what it holds back:

* a record that finds a token in its key's bucket goes on; any other stops here (for this
  stack only) and is counted in its key's current window;
* every ``window`` seconds (a repeating timer on the daemon's clock), each key that held
  records back in the window sends one **summary record** down the same stack:
  ``audit.suppressed`` (how many), ``audit.first``/``audit.last`` (when the first and the
  last of them were logged: ISO 8601, UTC, microseconds; the packet's ``oob.time`` when the
  record has one, else the daemon's clock), ``audit.limit_key`` (the key's values, see
  below), and the values of the ``carry`` keys as the last record held back had them (the
  port, project, verdict... so that outputs and tenant routing place the summary where the
  records would have gone). A summary is also sent when a key is evicted (below) and at stop;
* so for every key, and in total: records passed + the summaries' ``audit.suppressed`` =
  records received, exactly (tests/unit/test_ratelimit.py holds random arrival patterns to it).

Bounded: at most ``max_keys`` keys are tracked; the least recently seen is evicted (its
open window summarised first), counted in ``ratelimit.<id>.keys_evicted``. A key seen again
after its eviction starts with a full bucket, so under heavy key churn more records pass than
the rate says; the accounting stays exact.

Counters (``ctx.stats``): ``ratelimit.<id>.received``, ``.passed``, ``.suppressed``,
``.summaries``, ``.keys_evicted``, and per tracked key ``ratelimit.<id>.key.<limit key>.passed``
and ``.suppressed`` (``key.-.`` for the one bucket of a limit without a key); an evicted key's
two counters are added to ``ratelimit.<id>.evicted.passed`` and ``.suppressed`` and dropped,
so the per-key counters stay as bounded as the table and still add up to the totals.

``audit.limit_key`` is the key's values in ``key=`` order, separated by ``,``: each written as
text (addresses as addresses, other bytes in hex, an invalid value empty) and escaped with
the daemon's one rule (core/escape.py), ``,`` inside a value written ``\\x2c``, so
``unescape_text`` gives each value back after splitting at ``,``.

``preset=neutron`` is Neutron's ``[network_log]`` defaults: ``rate=100``, ``burst=25``,
per ``neutron.port_id`` and ``audit.action`` (keys that may be missing upstream: one that is,
is left out of the key, so without the NEUTRON filter every record of one verdict, or every
record, shares a bucket). Options given explicitly win.
"""

from __future__ import annotations

import re
import socket
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from operator import itemgetter
from typing import TYPE_CHECKING, Any, ClassVar

from pyulogd.core.errors import ConfigError
from pyulogd.core.escape import escape_text
from pyulogd.core.options import Choice, Duration, Int, Str
from pyulogd.core.plugin import OK, STOP, DataType, Filter, Key, KeyType, Option, Run
from pyulogd.core.ratelimit import TokenBucket

if TYPE_CHECKING:
    from pyulogd.core.clock import Clock
    from pyulogd.core.context import Context, TimerHandle

# Neutron's [network_log] defaults (neutron/conf/services/logging.py): also the minimums.
PRESETS: dict[str, dict[str, Any]] = {
    "neutron": {"rate": 100, "burst": 25, "key": "neutron.port_id,audit.action"},
}

# What a summary carries besides the limit key, when the stack has it: where the records held
# back would have gone (namespace, router, network, port, project) and what they were.
DEFAULT_CARRY = (
    "oob.netns,neutron.router_id,neutron.network_id,neutron.port_id,neutron.project_id,"
    "neutron.device_role,neutron.direction,audit.action,audit.rule"
)

_KEY_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*\Z")


def _key_names(text: str) -> str | None:
    for name in text.split(","):
        if not _KEY_NAME.match(name.strip()):
            return f"'{name.strip()}' is not a key name (comma-separated key names, e.g. neutron.port_id,audit.action)"
    return None


def split_names(text: str) -> list[str]:
    """The key names of a ``key=``/``carry=`` value, in order, without duplicates."""
    names: list[str] = []
    for name in text.split(","):
        name = name.strip()
        if name and name not in names:
            names.append(name)
    return names


def value_text(value: Any) -> str:
    """One key value as ``audit.limit_key`` writes it (before escaping)."""
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        if len(raw) == 4:
            return socket.inet_ntop(socket.AF_INET, raw)
        if len(raw) == 16:
            return socket.inet_ntop(socket.AF_INET6, raw)
        return raw.hex()
    return str(value)


def limit_key_text(values: tuple[Any, ...]) -> str:
    """``audit.limit_key`` of a key's values (see the module docstring)."""
    return ",".join(escape_text(value_text(v)).replace(",", "\\x2c") for v in values)


def iso_time(t: float) -> str:
    """``t`` (seconds since the epoch) as ISO 8601 in UTC with microseconds."""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class _Key(TokenBucket):
    """A key's bucket, its counters' names and its current window."""

    __slots__ = ("values", "text", "n_passed", "n_suppressed", "held", "first", "last", "carried")

    def __init__(self, values: tuple[Any, ...], text: str, burst: float, now: float, prefix: str) -> None:
        super().__init__(burst, now)
        self.values = values
        self.text = text
        name = text or "-"  # the one bucket of a limit without a key
        self.n_passed = f"{prefix}.key.{name}.passed"
        self.n_suppressed = f"{prefix}.key.{name}.suppressed"
        self.held = 0  # records held back in the current window
        self.first = 0.0
        self.last = 0.0
        self.carried: tuple[Any, ...] = ()


class RateLimitFilter(Filter):
    name = "RATELIMIT"
    description = (
        "Token bucket per key (rate and burst, Neutron's 100/s and 25 as `preset=neutron`): records "
        "over the limit stop here, and for every window in which a key held records back one summary "
        "record goes down the stack (audit.suppressed, audit.first, audit.last, audit.limit_key): "
        "records passed plus the summaries' counts equal the records received."
    )
    input_type = DataType.PACKET | DataType.FLOW
    output_type = DataType.PACKET | DataType.FLOW
    options = (
        Option("preset", Choice("none", "neutron", what="preset"), "none", extra=True,
               help="neutron: rate=100, burst=25, key=neutron.port_id,audit.action (Neutron's [network_log] "
               "defaults) unless given"),
        Option("rate", Int(1, 10_000_000), None, extra=True, help="records per second per key (required "
               "without a preset)"),
        Option("burst", Int(1, 10_000_000), None, extra=True, help="records at once per key (default: rate)"),
        Option("key", Str(), None, extra=True, check=_key_names,
               help="comma-separated upstream key names: one bucket per combination of their values "
               "(empty: one bucket)"),
        Option("carry", Str(), DEFAULT_CARRY, extra=True, check=lambda t: _key_names(t) if t else None,
               help="keys a summary copies from the last record held back, where the stack has them"),
        Option("window", Duration(0.001, 86400.0, positive=True), "10s", extra=True,
               help="how often keys that held records back send their summary"),
        Option("max_keys", Int(1, 10_000_000), 4096, extra=True,
               help="keys tracked at most; the least recently seen is evicted (counted)"),
    )
    output_keys = (
        Key("audit.suppressed", KeyType.UINT64, help="records held back by the rate limit in this window "
            "(summary records only)"),
        Key("audit.first", KeyType.STRING, help="time of the first record held back (ISO 8601, UTC)"),
        Key("audit.last", KeyType.STRING, help="time of the last record held back (ISO 8601, UTC)"),
        Key("audit.limit_key", KeyType.STRING, help="the limit key's values, comma-separated, escaped"),
    )
    # The times of records, when they have them (the key list grows at configure()).
    _TIME_KEYS = (
        Key("oob.time.sec", KeyType.UINT32, optional=True),
        Key("oob.time.usec", KeyType.UINT32, optional=True),
    )
    input_keys: ClassVar[tuple[Key, ...]] = _TIME_KEYS

    def __init__(self, ctx: Context, instance_id: str, config: dict[str, Any]) -> None:
        super().__init__(ctx, instance_id, config)
        self.rate = 0
        self.burst = 0
        self.key_names: list[str] = []
        self.carry_names: list[str] = []
        self.window = float(config["window"])
        self.max_keys = int(config["max_keys"])
        self._prefix = f"ratelimit.{instance_id}"
        self._n_received = self._prefix + ".received"
        self._n_passed = self._prefix + ".passed"
        self._n_suppressed = self._prefix + ".suppressed"
        self.keys: OrderedDict[Any, _Key] = OrderedDict()
        self._open: dict[Any, _Key] = {}  # keys with records held back in the current window
        self._downstream: Run | None = None
        self._timer: TimerHandle | None = None
        # The sequence number (ctx.seq) of the first record held back in the current window,
        # 0: none (held_since). Not lowered when an evicted key's summary goes early: the
        # window's first is a bound that costs nothing per record.
        self._held_seq = 0

    def configure(self) -> None:
        cfg = self.config
        preset = PRESETS.get(cfg["preset"], {})
        rate = cfg["rate"] if cfg["rate"] is not None else preset.get("rate")
        if rate is None:
            raise ConfigError(f"RATELIMIT '{self.id}': 'rate' is required (or preset=neutron)")
        burst = cfg["burst"] if cfg["burst"] is not None else preset.get("burst", rate)
        self.rate, self.burst = int(rate), int(burst)
        # The preset's keys may be missing upstream (no NEUTRON filter); keys the user names
        # must exist, so a typo is refused at start instead of putting everything in one bucket.
        key_text = cfg["key"] if cfg["key"] is not None else preset.get("key", "")
        self.key_names = split_names(key_text)
        self.carry_names = [n for n in split_names(cfg["carry"]) if n not in self.key_names]
        key_optional = cfg["key"] is None
        # Per instance: which keys this instance reads depends on its options; wire() binds
        # ``inst.input_keys`` after configure().
        keys: tuple[Key, ...] = (
            *self._TIME_KEYS,
            *(Key(n, optional=key_optional) for n in self.key_names),
            *(Key(n, optional=True) for n in self.carry_names),
        )
        self.input_keys = keys  # type: ignore[misc]

    def start(self) -> None:
        slots = self.in_slots
        self._s_sec, self._s_usec = slots[0], slots[1]
        nkey = len(self.key_names)
        # A preset's key that nothing upstream produces (slot 0) is always invalid: left out.
        bound = [(n, s) for n, s in zip(self.key_names, slots[2:2 + nkey], strict=True) if s]
        self.key_names = [n for n, _ in bound]
        self._key_slots = [s for _, s in bound]
        # Carried keys that are not in the stack stay out of the summary (slot 0 is never written).
        self._carry_slots = [s for s in (*self._key_slots, *slots[2 + nkey:]) if s]
        if self.stack is None:
            raise ConfigError(f"RATELIMIT '{self.id}' is not in a wired stack")
        raw = {s for s, n in zip(self._key_slots, self.key_names, strict=True) if self._upstream_type(n) == KeyType.RAW}
        self._get_key = _key_getter(self._key_slots, raw)
        self._get_carry = _tuple_getter(self._carry_slots)
        self._downstream = self.stack.downstream(self)
        self._nslots = self.stack.nslots
        self._clock: Clock = self.ctx.clock
        self._timer = self.ctx.loop.call_later(self.window, self.end_window, repeat=True)

    def _upstream_type(self, name: str) -> KeyType:
        """The type of the nearest upstream key called ``name`` (NONE when there is none)."""
        assert self.stack is not None
        for up in reversed(self.stack.instances[: self.stack.instances.index(self)]):
            for key in up.output_keys:
                if key.name == name:
                    return key.type
        return KeyType.NONE

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._downstream is not None:
            self.end_window()

    def interp(self, rec: list[Any]) -> int:
        key = self._get_key(rec)
        state = self.keys.get(key)
        counters = self.ctx.stats.counters
        now = self._clock.monotonic()
        if state is None:
            state = self._track(key, now)
        else:
            self.keys.move_to_end(key)
        counters[self._n_received] += 1
        if state.take(now, self.rate, self.burst):
            counters[self._n_passed] += 1
            counters[state.n_passed] += 1
            return OK
        counters[self._n_suppressed] += 1
        counters[state.n_suppressed] += 1
        sec = rec[self._s_sec]
        t = self._clock.wall() if sec is None else sec + (rec[self._s_usec] or 0) / 1e6
        if not state.held:
            state.first = t
            self._open[key] = state
            if not self._held_seq:
                self._held_seq = self.ctx.seq
        state.held += 1
        state.last = t
        state.carried = self._get_carry(rec)
        return STOP

    def _track(self, key: Any, now: float) -> _Key:
        nkey = len(self._key_slots)
        values: tuple[Any, ...] = () if nkey == 0 else (key,) if nkey == 1 else key
        state = _Key(values, limit_key_text(values), self.burst, now, self._prefix)
        self.keys[key] = state
        if len(self.keys) > self.max_keys:
            old_key, old = self.keys.popitem(last=False)
            self._evict(old_key, old)
        return state

    def _evict(self, key: Any, state: _Key) -> None:
        stats = self.ctx.stats
        stats.incr(self._prefix + ".keys_evicted")
        if state.held:
            del self._open[key]
            self._summarise(state)
        counters = stats.counters
        for name, total in ((state.n_passed, ".evicted.passed"), (state.n_suppressed, ".evicted.suppressed")):
            n = counters.pop(name, 0)
            if n:
                counters[self._prefix + total] += n

    def end_window(self) -> None:
        """The window ends: one summary per key that held records back in it."""
        open_keys, self._open = self._open, {}
        for state in open_keys.values():
            self._summarise(state)
        self._held_seq = 0

    def held_since(self) -> int:
        """The first record held back in this window: until its summary went on, the outputs
        after this filter do not count it as committed (with the write-ahead log on, a crash
        replays it, and it is passed or summarised again, instead of lost with the window)."""
        return self._held_seq

    def _summarise(self, state: _Key) -> None:
        rec: list[Any] = [None] * self._nslots
        for slot, value in zip(self._carry_slots, state.carried, strict=True):
            rec[slot] = value
        base = self.out_base
        rec[base] = state.held
        rec[base + 1] = iso_time(state.first)
        rec[base + 2] = iso_time(state.last)
        rec[base + 3] = state.text
        state.held = 0
        state.carried = ()
        self.ctx.stats.incr(self._prefix + ".summaries")
        assert self._downstream is not None
        self._downstream(rec)


def _key_getter(slots: list[int], raw: set[int]) -> Callable[[list[Any]], Any]:
    """``rec -> key``: the value at the one slot, a tuple of the values at several, None for
    none. Raw values (``bytes`` or a view into a receive buffer that the next packet
    overwrites) are copied to ``bytes``, so a key never changes under the table."""
    if raw:
        conv = [(s, s in raw) for s in slots]
        if len(conv) == 1:
            s0 = slots[0]
            return lambda rec: None if rec[s0] is None else bytes(rec[s0])
        return lambda rec: tuple(bytes(rec[s]) if r and rec[s] is not None else rec[s] for s, r in conv)
    if not slots:
        return lambda rec: None
    return itemgetter(*slots)


def _tuple_getter(slots: list[int]) -> Callable[[list[Any]], tuple[Any, ...]]:
    """``rec -> tuple of the values at slots`` (always a tuple)."""
    if not slots:
        return lambda rec: ()
    if len(slots) == 1:
        s0 = slots[0]
        return lambda rec: (rec[s0],)
    get = itemgetter(*slots)
    return lambda rec: tuple(get(rec))
