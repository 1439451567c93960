"""RATELIMIT: token buckets per key, summaries of what was held back, exact accounting.

Driven by a FakeClock: arrivals advance the clock, the summary timer fires at
``loop.run_once(0)``; nothing sleeps.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyulogd.core.errors import ConfigError
from pyulogd.core.escape import unescape_text
from pyulogd.core.plugin import OK, DataType, Filter, Key, KeyType, Source
from pyulogd.core.ratelimit import TokenBucket
from pyulogd.plugins.filters.ratelimit import RateLimitFilter, iso_time, limit_key_text
from tests.clocked import fake_context
from tests.helpers import Capture, make_stack, stop_stack

KEYS = (
    Key("oob.time.sec", KeyType.UINT32),
    Key("oob.time.usec", KeyType.UINT32),
    Key("neutron.port_id", KeyType.STRING),
    Key("audit.action", KeyType.STRING),
    Key("neutron.project_id", KeyType.STRING),
    Key("ip.saddr", KeyType.IPADDR),
    Key("raw.mac", KeyType.RAW),
)


class Src(Source):
    """Declares the keys above; ``send`` emits one record with the given values."""

    name = "RLSRC"
    output_type = DataType.PACKET

    output_keys = KEYS

    def send(self, **values: Any) -> None:
        self.emit([None] + [values.get(k.name.replace(".", "_")) for k in self.output_keys])


class Tag(Filter):
    """A filter after RATELIMIT: summaries must pass through it too."""

    name = "RLTAG"
    input_type = output_type = DataType.PACKET
    output_keys = (Key("test.tag", KeyType.STRING),)

    def interp(self, rec: list[Any]) -> int:
        rec[self.out_base] = "seen"
        return OK


def build(opts: dict[str, Any], **ctxkw: Any) -> tuple[Any, Any, Src, Capture]:
    ctx, clock = fake_context(**ctxkw)
    stack = make_stack([Src, (RateLimitFilter, opts), Tag, Capture], ctx)
    src, cap = stack.instances[0], stack.instances[-1]
    assert isinstance(src, Src) and isinstance(cap, Capture)
    return ctx, clock, src, cap


def summaries(cap: Capture) -> list[dict[str, Any]]:
    out = []
    for rec in cap.records:
        n = cap.value(rec, "audit.suppressed")
        if n is not None:
            out.append({k: cap.value(rec, k) for k in (
                "audit.suppressed", "audit.first", "audit.last", "audit.limit_key", "neutron.port_id",
                "audit.action", "neutron.project_id", "test.tag", "ip.saddr")})
    return out


def passed(cap: Capture) -> list[list[Any]]:
    return [r for r in cap.records if cap.value(r, "audit.suppressed") is None]


def test_token_bucket_burst_then_rate() -> None:
    b = TokenBucket(3, now=0.0)
    assert [b.take(0.0, 10, 3) for _ in range(4)] == [True, True, True, False]
    assert not b.take(0.05, 10, 3)  # half a token
    assert b.take(0.1, 10, 3)  # one token after 1/rate seconds
    assert not b.take(0.1, 10, 3)
    # An idle bucket refills to the burst, no more.
    assert [b.take(100.0, 10, 3) for _ in range(4)] == [True, True, True, False]


def test_passes_burst_then_holds_back_and_summarises_when_the_window_ends() -> None:
    ctx, clock, src, cap = build({"rate": 2, "burst": 3, "key": "neutron.port_id,audit.action", "window": "5s"})
    t0 = clock.wall()
    for i in range(10):
        src.send(neutron_port_id="p1", audit_action="DROP", neutron_project_id="proj", oob_time_sec=int(t0),
                 oob_time_usec=i)
    assert len(passed(cap)) == 3
    assert summaries(cap) == []  # not before the window ends
    clock.advance(4.9)
    ctx.loop.run_once(0)
    assert summaries(cap) == []
    clock.advance(0.1)
    ctx.loop.run_once(0)
    [s] = summaries(cap)
    assert s["audit.suppressed"] == 7
    assert s["audit.first"] == iso_time(int(t0) + 3e-6)
    assert s["audit.last"] == iso_time(int(t0) + 9e-6)
    assert s["audit.limit_key"] == "p1,DROP"
    assert (s["neutron.port_id"], s["audit.action"], s["neutron.project_id"]) == ("p1", "DROP", "proj")
    assert s["test.tag"] == "seen"  # went through the plugins after RATELIMIT
    stats = ctx.stats
    assert stats.get("ratelimit.ratelimit1.received") == 10
    assert stats.get("ratelimit.ratelimit1.passed") == 3
    assert stats.get("ratelimit.ratelimit1.suppressed") == 7
    assert stats.get("ratelimit.ratelimit1.summaries") == 1
    assert stats.get("ratelimit.ratelimit1.key.p1,DROP.passed") == 3
    assert stats.get("ratelimit.ratelimit1.key.p1,DROP.suppressed") == 7
    # A quiet window sends nothing.
    clock.advance(5)
    ctx.loop.run_once(0)
    assert len(summaries(cap)) == 1


def test_keys_have_buckets_of_their_own() -> None:
    ctx, clock, src, cap = build({"rate": 1, "burst": 1, "key": "neutron.port_id", "window": "1s"})
    for port in ("a", "b", "a", "c", "b"):
        src.send(neutron_port_id=port)
    assert [cap.value(r, "neutron.port_id") for r in passed(cap)] == ["a", "b", "c"]
    clock.advance(1)
    ctx.loop.run_once(0)
    assert sorted((s["audit.limit_key"], s["audit.suppressed"]) for s in summaries(cap)) == [("a", 1), ("b", 1)]


def test_time_of_records_without_oob_time_is_the_clock() -> None:
    ctx, clock, src, cap = build({"rate": 1, "burst": 1, "window": "1s"})
    src.send()
    src.send()
    clock.advance(0.5)
    src.send()
    clock.advance(0.5)
    ctx.loop.run_once(0)
    [s] = summaries(cap)
    assert s["audit.suppressed"] == 2
    assert s["audit.first"] == iso_time(1_800_000_000.0)
    assert s["audit.last"] == iso_time(1_800_000_000.5)
    assert s["audit.limit_key"] == ""  # no key: one bucket, an empty key


def test_stop_summarises_the_open_window() -> None:
    ctx, clock, src, cap = build({"rate": 1, "burst": 1, "key": "audit.action", "window": "1h"})
    for _ in range(5):
        src.send(audit_action="DROP")
    assert summaries(cap) == []
    stack = src.stacks[0]
    stop_stack(stack)
    [s] = summaries(cap)
    assert s["audit.suppressed"] == 4
    assert s["audit.limit_key"] == "DROP"


def test_eviction_summarises_first_and_is_counted() -> None:
    ctx, clock, src, cap = build({"rate": 1, "burst": 1, "key": "neutron.port_id", "max_keys": 2, "window": "1h"})
    for port in ("a", "a", "a", "b", "c"):  # c evicts a, which held two records back
        src.send(neutron_port_id=port)
    [s] = summaries(cap)
    assert (s["audit.limit_key"], s["audit.suppressed"]) == ("a", 2)
    stats = ctx.stats
    assert stats.get("ratelimit.ratelimit1.keys_evicted") == 1
    assert stats.get("ratelimit.ratelimit1.evicted.passed") == 1
    assert stats.get("ratelimit.ratelimit1.evicted.suppressed") == 2
    assert stats.get("ratelimit.ratelimit1.key.a.passed") == 0  # dropped with the key
    assert stats.get("ratelimit.ratelimit1.key.c.passed") == 1
    # Seen again after eviction, a starts with a full bucket.
    src.send(neutron_port_id="a")
    assert [cap.value(r, "neutron.port_id") for r in passed(cap)] == ["a", "b", "c", "a"]


def test_limit_key_text_is_escaped_and_reversible() -> None:
    values = ("qr-1,2", "line\nbreak", None, b"\x0a\x00\x00\x01", b"\xfe\x80" + bytes(13) + b"\x01", b"\x01\x02\x03", 7)
    text = limit_key_text(values)
    assert "\n" not in text
    parts = [unescape_text(p) for p in text.split(",")]
    assert parts == ["qr-1,2", "line\nbreak", "", "10.0.0.1", "fe80::1", "010203", "7"]


def test_key_values_of_any_type() -> None:
    ctx, clock, src, cap = build({"rate": 1, "burst": 1, "key": "ip.saddr,raw.mac", "window": "1s"})
    mac = bytearray(b"\x02\x00\x00\x00\x00\x01")
    src.send(ip_saddr=b"\x0a\x00\x00\x01", raw_mac=memoryview(mac))
    mac[5] = 9  # the receive buffer is reused: the tracked key must not change with it
    src.send(ip_saddr=b"\x0a\x00\x00\x01", raw_mac=memoryview(mac))
    src.send(ip_saddr=b"\x0a\x00\x00\x01", raw_mac=memoryview(mac))
    clock.advance(1)
    ctx.loop.run_once(0)
    [s] = summaries(cap)
    assert s["audit.limit_key"] == "10.0.0.1,020000000009"
    assert s["audit.suppressed"] == 1


def test_neutron_preset() -> None:
    ctx, clock, src, cap = build({"preset": "neutron"})
    rl = src.stacks[0].instances[1]
    assert isinstance(rl, RateLimitFilter)
    assert (rl.rate, rl.burst, rl.key_names) == (100, 25, ["neutron.port_id", "audit.action"])
    for _ in range(30):
        src.send(neutron_port_id="p", audit_action="ACCEPT")
    assert len(passed(cap)) == 25
    clock.advance(0.0625)  # 6.25 tokens (a time binary fractions hold exactly)
    for _ in range(10):
        src.send(neutron_port_id="p", audit_action="ACCEPT")
    assert len(passed(cap)) == 31
    # Explicit options win over the preset.
    ctx2, _, src2, _ = build({"preset": "neutron", "rate": 7, "key": "neutron.port_id"})
    rl2 = src2.stacks[0].instances[1]
    assert isinstance(rl2, RateLimitFilter)
    assert (rl2.rate, rl2.burst, rl2.key_names) == (7, 25, ["neutron.port_id"])


class Bare(Source):
    """A source without any neutron.* or audit.* key."""

    name = "RLBARE"
    output_type = DataType.PACKET
    output_keys = (Key("oob.prefix", KeyType.STRING),)


def test_preset_keys_may_be_missing_upstream() -> None:
    ctx, clock = fake_context()
    stack = make_stack([Bare, (RateLimitFilter, {"preset": "neutron"}), Capture], ctx)
    src, cap = stack.instances[0], stack.instances[-1]
    assert isinstance(src, Bare) and isinstance(cap, Capture)
    for _ in range(30):
        src.emit([None, "x"])
    assert len(cap.records) == 25
    clock.advance(10)
    ctx.loop.run_once(0)
    assert cap.value(cap.records[-1], "audit.suppressed") == 5
    assert cap.value(cap.records[-1], "audit.limit_key") == ""  # the preset's keys are not in this stack
    assert ctx.stats.get("ratelimit.ratelimit1.key.-.suppressed") == 5


def test_config_errors() -> None:
    ctx, _ = fake_context()
    with pytest.raises(ConfigError, match="'rate' is required") as e:
        make_stack([Bare, RateLimitFilter, Capture], ctx)
    assert e.value.file == "<test>"
    with pytest.raises(ConfigError, match="cannot find key 'neutron.port_id'"):
        make_stack([Bare, (RateLimitFilter, {"rate": 5, "key": "neutron.port_id"}), Capture], ctx)
    with pytest.raises(ConfigError, match="not a key name"):
        make_stack([Bare, (RateLimitFilter, {"rate": 5, "key": "a b"}), Capture], ctx)
    with pytest.raises(ConfigError, match="rate"):
        make_stack([Bare, (RateLimitFilter, {"rate": 0}), Capture], ctx)
    with pytest.raises(ConfigError, match="unknown preset"):
        make_stack([Bare, (RateLimitFilter, {"preset": "ovn"}), Capture], ctx)


arrivals = st.lists(
    st.tuples(st.sampled_from([0.0, 0.0, 0.001, 0.01, 0.05, 0.3, 1.0, 2.5]), st.sampled_from(["a", "b", "c", "d"]),
              st.sampled_from(["ACCEPT", "DROP"])),
    min_size=1, max_size=300,
)


@settings(max_examples=150, deadline=None)
@given(arrivals, st.integers(1, 20), st.integers(1, 10), st.sampled_from([0.1, 0.5, 1.0, 3.0]), st.integers(1, 9))
def test_exact_accounting(events: list[tuple[float, str, str]], rate: int, burst: int, window: float,
                          max_keys: int) -> None:
    """Whatever the arrivals: per key and in total, records passed + the summaries' counts =
    records received; every summary counts at least one record and its first <= last; without
    evictions no key passes more than its bucket allows."""
    ctx, clock, src, cap = build({"rate": rate, "burst": burst, "key": "neutron.port_id,audit.action",
                                   "window": f"{window}s", "max_keys": max_keys})
    received: dict[str, int] = {}
    start = clock.monotonic()
    for delta, port, action in events:
        clock.advance(delta)
        ctx.loop.run_once(0)
        src.send(neutron_port_id=port, audit_action=action)
        k = f"{port},{action}"
        received[k] = received.get(k, 0) + 1
    elapsed = clock.monotonic() - start
    stop_stack(src.stacks[0])
    got: dict[str, int] = {}
    for rec in passed(cap):
        k = f"{cap.value(rec, 'neutron.port_id')},{cap.value(rec, 'audit.action')}"
        got[k] = got.get(k, 0) + 1
    for s in summaries(cap):
        assert s["audit.suppressed"] >= 1
        assert s["audit.first"] <= s["audit.last"]
        assert s["audit.limit_key"] == f"{s['neutron.port_id']},{s['audit.action']}"
        got[s["audit.limit_key"]] = got.get(s["audit.limit_key"], 0) + s["audit.suppressed"]
    assert got == received
    stats = ctx.stats
    n = sum(received.values())
    assert stats.get("ratelimit.ratelimit1.received") == n
    assert stats.get("ratelimit.ratelimit1.passed") + stats.get("ratelimit.ratelimit1.suppressed") == n
    assert stats.get("ratelimit.ratelimit1.passed") == len(passed(cap))
    per_key = sum(v for k, v in stats.counters.items() if k.startswith("ratelimit.ratelimit1.key."))
    evicted = stats.get("ratelimit.ratelimit1.evicted.passed") + stats.get("ratelimit.ratelimit1.evicted.suppressed")
    assert per_key + evicted == n
    if not stats.get("ratelimit.ratelimit1.keys_evicted"):
        for k, v in got.items():
            n_passed = sum(1 for r in passed(cap)
                           if f"{cap.value(r, 'neutron.port_id')},{cap.value(r, 'audit.action')}" == k)
            assert n_passed <= burst + rate * elapsed + 1e-6, (k, v)


def test_counters_have_metric_families() -> None:
    """Every counter RATELIMIT keeps maps to a family of its own (none to pyulogd_other_total),
    the per-key ones with the key as a label."""
    from pyulogd.daemon.metrics import map_counter, prefixes

    ctx, clock, src, cap = build({"rate": 1, "burst": 1, "key": "neutron.port_id", "max_keys": 1, "window": "1s"})
    for port in ("a", "a", "b"):
        src.send(neutron_port_id=port)
    names = set(ctx.stats.counters)
    assert {"ratelimit.ratelimit1.key.b.passed", "ratelimit.ratelimit1.evicted.suppressed"} <= names
    known = prefixes(src.stacks[0].instances)
    mapped = {n: map_counter(n, known) for n in names if n.startswith("ratelimit.")}
    assert all(fam != "pyulogd_other_total" for fam, _ in mapped.values()), mapped
    fam, labels = mapped["ratelimit.ratelimit1.key.b.passed"]
    assert fam == "pyulogd_ratelimit_key_records_total"
    assert dict(labels) == {"plugin": "RATELIMIT", "id": "ratelimit1", "key": "b", "outcome": "passed"}
    assert mapped["ratelimit.ratelimit1.suppressed"][0] == "pyulogd_ratelimit_records_total"
