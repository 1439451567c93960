"""NFCT's flow table (codec/nfct_flows.py) with plain numbers: events in, records out, no
socket and no clock; and, on random event sequences, against the rules as the NFCT input
implemented them before the table was a class of its own (``OldTable`` below, copied from
plugins/inputs/nfct.py at 21d7713: ``_event_hash`` and ``_cache``)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pyulogd.codec import nfct
from pyulogd.codec.nfct_flows import FlowTable

NEW, UPDATE, DESTROY = nfct.NEW, nfct.UPDATE, nfct.DESTROY
IDX = nfct.IDX
NSLOTS = len(nfct.KEYS) + 1


def ev(event: int, ct_id: int, sport: int = 1000, start: tuple[int, int] | None = None,
       pkts: int = 0) -> list[Any]:
    """The values of one conntrack event as the codec leaves them (only what the table reads)."""
    v: list[Any] = [None] * NSLOTS
    v[IDX["orig.ip.saddr"]] = "10.0.0.1"
    v[IDX["orig.ip.daddr"]] = "10.0.0.2"
    v[IDX["orig.ip.protocol"]] = 6
    v[IDX["orig.l4.sport"]] = sport
    v[IDX["orig.l4.dport"]] = 80
    v[IDX["oob.family"]] = 2
    v[IDX["ct.id"]] = ct_id
    v[IDX["ct.event"]] = event
    v[IDX["orig.raw.pktcount"]] = pkts
    if start is not None:
        v[IDX["flow.start.sec"]], v[IDX["flow.start.usec"]] = start
    return v


def start_of(v: list[Any]) -> tuple[Any, Any]:
    return v[IDX["flow.start.sec"]], v[IDX["flow.start.usec"]]


def test_new_then_destroy_emits_one_record_with_the_start() -> None:
    t = FlowTable(10)
    assert t.apply(ev(NEW, 1, start=(100, 5)), 100.5) is None
    assert len(t) == 1
    out = t.apply(ev(DESTROY, 1), 130.0)
    assert out is not None and start_of(out) == (100, 5) and out[IDX["ct.event"]] == DESTROY
    assert len(t) == 0


def test_new_without_kernel_start_starts_now() -> None:
    t = FlowTable(10)
    t.apply(ev(NEW, 1), 200.25)
    out = t.apply(ev(DESTROY, 1), 201.0)
    assert out is not None and start_of(out) == (200, 250000)


def test_update_refreshes_values_and_keeps_the_start() -> None:
    t = FlowTable(10)
    t.apply(ev(NEW, 1, start=(100, 0)), 100.0)
    upd = ev(UPDATE, 1, start=(999, 9), pkts=7)
    assert t.apply(upd, 150.0) is None
    (ent,) = t.flows.values()
    assert ent[:2] == [100, 0] and ent[2] is upd


def test_update_of_an_unknown_flow_caches_it() -> None:
    t = FlowTable(10)
    assert t.apply(ev(UPDATE, 3), 300.0) is None
    out = t.apply(ev(DESTROY, 3), 310.0)
    assert out is not None and start_of(out) == (300, 0)


def test_new_replaces_an_entry_of_the_same_key() -> None:
    t = FlowTable(10)
    t.apply(ev(NEW, 1, start=(100, 0)), 100.0)
    t.apply(ev(NEW, 1, start=(105, 0)), 105.0)
    out = t.apply(ev(DESTROY, 1), 110.0)
    assert out is not None and start_of(out) == (105, 0)


def test_destroy_of_an_unknown_flow_is_emitted_without_start() -> None:
    t = FlowTable(10)
    out = t.apply(ev(DESTROY, 9), 10.0)
    assert out is not None and start_of(out) == (None, None)


def test_same_tuple_other_id_is_another_flow() -> None:
    t = FlowTable(10)
    t.apply(ev(NEW, 1, start=(1, 0)), 1.0)
    t.apply(ev(NEW, 2, start=(2, 0)), 2.0)
    assert len(t) == 2


def test_full_table_counts_and_does_not_cache() -> None:
    t = FlowTable(2)
    for i in range(3):
        t.apply(ev(NEW, i, sport=i, start=(i, 0)), float(i))
    assert len(t) == 2 and t.full == 1
    t.apply(ev(UPDATE, 0, sport=0), 5.0)  # known: refreshed, not counted
    assert t.full == 1
    out = t.apply(ev(DESTROY, 2, sport=2), 6.0)
    assert out is not None and start_of(out) == (None, None)


def test_dump_gone_and_ended() -> None:
    t = FlowTable(10)
    for i in range(3):
        t.apply(ev(NEW, i, sport=i, start=(i, 0)), float(i))
    before = set(t.flows)
    seen = {t.dumped(ev(UPDATE, 0, sport=0, pkts=5), 50.0)}
    t.apply(ev(DESTROY, 1, sport=1), 51.0)  # ended by its own event while the dump ran
    gone = t.gone(before, seen)
    assert [k[0] for k in gone] == [2]
    (rec,) = t.ended(gone, 60.5)
    assert rec[IDX["ct.event"]] == DESTROY and start_of(rec) == (2, 0)
    assert (rec[IDX["flow.end.sec"]], rec[IDX["flow.end.usec"]]) == (60, 500000)
    assert len(t) == 1


def test_ended_copies_the_cached_values() -> None:
    t = FlowTable(10)
    v = ev(NEW, 1, start=(1, 0))
    t.apply(v, 1.0)
    (rec,) = t.ended(list(t.flows), 2.0)
    assert rec is not v and v[IDX["ct.event"]] == NEW


def test_counted_fills_the_start_of_a_cached_flow() -> None:
    t = FlowTable(1)
    t.apply(ev(NEW, 1, start=(7, 1)), 7.0)
    assert start_of(t.counted(ev(UPDATE, 1, pkts=3), 9.0)) == (7, 1)
    assert start_of(t.counted(ev(UPDATE, 2, sport=2), 9.0)) == (None, None)  # full: as it came
    assert t.full == 1


# -- against the rules as they were written inside the plugin


class OldTable:
    """plugins/inputs/nfct.py's ``_event_hash`` and ``_cache`` before the move (stats as a
    counter, ``emit`` as a list)."""

    def __init__(self, max_entries: int) -> None:
        self.flows: dict[tuple[Any, ...], list[Any]] = {}
        self.max_entries = max_entries
        self.hash_full = 0
        self.emitted: list[list[Any]] = []

    def event(self, values: list[Any], now: float) -> None:
        event = values[nfct.I_EVENT]
        key = nfct.flow_key(values)
        if event == nfct.DESTROY:
            ent = self.flows.pop(key, None)
            if ent is not None:
                values[nfct.I_START_SEC] = ent[0]
                values[nfct.I_START_USEC] = ent[1]
            self.emitted.append(values)
        elif event == nfct.NEW:
            self._cache(key, values, now, replace=True)
        else:
            self._cache(key, values, now)

    def _cache(self, key: tuple[Any, ...], values: list[Any], now: float, replace: bool = False) -> None:
        flows = self.flows
        ent = flows.get(key)
        if ent is not None and not replace:
            ent[2] = values
            return
        if ent is None and len(flows) >= self.max_entries:
            self.hash_full += 1
            return
        sec = values[nfct.I_START_SEC]
        if sec is None:
            sec, usec = nfct.split_now(now)
        else:
            usec = values[nfct.I_START_USEC]
        flows[key] = [sec, usec, values]


events = st.lists(
    st.tuples(
        st.sampled_from([NEW, UPDATE, DESTROY]),
        st.integers(0, 5),  # id
        st.integers(0, 2),  # sport: same id, other tuple
        st.one_of(st.none(), st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 999_999))),
        st.floats(0, 4e9, allow_nan=False),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(events, st.integers(1, 6))
def test_apply_matches_the_old_rules(seq: list[Any], max_entries: int) -> None:
    new, old = FlowTable(max_entries), OldTable(max_entries)
    emitted: list[list[Any]] = []
    for event, ct_id, sport, start, now in seq:
        out = new.apply(ev(event, ct_id, sport + 1000, start), now)
        if out is not None:
            emitted.append(out)
        old.event(ev(event, ct_id, sport + 1000, start), now)
    assert emitted == old.emitted
    assert new.full == old.hash_full
    assert {k: e[:2] for k, e in new.flows.items()} == {k: e[:2] for k, e in old.flows.items()}
    assert {k: e[2] for k, e in new.flows.items()} == {k: e[2] for k, e in old.flows.items()}
