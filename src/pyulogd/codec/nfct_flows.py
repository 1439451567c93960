"""NFCT's flow table (``hash_enable=1``): what to emit for each conntrack event, sans-IO.

The table maps a flow (:func:`pyulogd.codec.nfct.flow_key`: the kernel's id and the original
tuple) to ``[start sec, start usec, latest values]``. It reads no clock and touches no socket:
every method takes the event's values and ``now`` (wall seconds, the time of reception) and
says what to emit, so the NFCT input (plugins/inputs/nfct.py) is its I/O shell (sockets, dumps,
timers, counters) and the rules are tested with plain numbers (tests/unit/test_nfct_flows.py).

The rules, as ulogd2 2.0.8's:

* NEW caches the flow (replacing an entry of the same key), starting at the kernel's start
  time when the event carries one, else at ``now``; nothing is emitted;
* UPDATE refreshes the cached values (or caches the flow, as NEW, when it is not known yet);
* DESTROY drops the entry and is emitted with ``flow.start`` from it (without one when the
  flow was never cached, e.g. while the table was full);
* when the table holds ``max_entries`` flows, a new flow is not cached and :attr:`full`
  counts it (the shell reports it as ``nfct.<id>.hash_full``).

Dumps (the initial fill, resyncs, polling, SIGUSR2) go through :meth:`cache` and
:meth:`ended`; which flows a dump found missing is :meth:`gone`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pyulogd.codec.nfct import (
    DESTROY,
    I_END_SEC,
    I_END_USEC,
    I_EVENT,
    I_START_SEC,
    I_START_USEC,
    NEW,
    flow_key,
    split_now,
)

Key = tuple[Any, ...]
# A flow's entry: [start sec, start usec, latest values].
Entry = list[Any]


class FlowTable:
    """The live flows of one conntrack table (one namespace), with the rules above."""

    __slots__ = ("flows", "full", "max_entries")

    def __init__(self, max_entries: int) -> None:
        self.flows: dict[Key, Entry] = {}
        self.max_entries = max_entries
        self.full = 0  # flows not cached because the table was full (only grows)

    def __len__(self) -> int:
        return len(self.flows)

    def apply(self, values: list[Any], now: float) -> list[Any] | None:
        """One event in; the record to emit out (``values`` itself, completed), or None.

        The hot path of event mode: one call per event, no allocation but the key."""
        event = values[I_EVENT]
        key = flow_key(values)
        if event == DESTROY:
            ent = self.flows.pop(key, None)
            if ent is not None:
                values[I_START_SEC] = ent[0]
                values[I_START_USEC] = ent[1]
            return values
        self.cache(key, values, now, event == NEW)
        return None

    def cache(self, key: Key, values: list[Any], now: float, replace: bool = False) -> Entry | None:
        """Put a flow into the table, or refresh its values; returns its entry, None when full.

        A new entry starts at the kernel's start time if there is one, else ``now``; a NEW
        event's values always carry a start (the codec fills in the event time)."""
        flows = self.flows
        ent = flows.get(key)
        if ent is not None and not replace:
            ent[2] = values
            return ent
        if ent is None and len(flows) >= self.max_entries:
            self.full += 1
            return None
        sec = values[I_START_SEC]
        if sec is None:
            sec, usec = split_now(now)
        else:
            usec = values[I_START_USEC]
        ent = [sec, usec, values]
        flows[key] = ent
        return ent

    def dumped(self, values: list[Any], now: float) -> Key:
        """A table entry read by a dump (initial fill, resync, poll): cache it; returns its key."""
        key = flow_key(values)
        self.cache(key, values, now)
        return key

    def counted(self, values: list[Any], now: float) -> list[Any]:
        """An entry of a SIGUSR2 dump (counters read and zeroed): cache it and return it to
        emit, with the start of the cached flow when the table holds it."""
        ent = self.cache(flow_key(values), values, now)
        if ent is not None:
            values[I_START_SEC], values[I_START_USEC] = ent[0], ent[1]
        return values

    def gone(self, before: set[Key], seen: set[Key]) -> list[Key]:
        """The flows that were in the table ``before`` a dump, that the dump did not find
        (``seen``) and that are still in the table (no DESTROY event took them meanwhile)."""
        flows = self.flows
        return [k for k in before - seen if k in flows]

    def ended(self, keys: Iterable[Key], now: float) -> list[list[Any]]:
        """Take these flows out of the table; each as a DESTROY record ending at ``now``."""
        end_sec, end_usec = split_now(now)
        flows = self.flows
        out = []
        for key in keys:
            ent = flows.pop(key)
            values = list(ent[2])
            values[I_EVENT] = DESTROY
            values[I_START_SEC], values[I_START_USEC] = ent[0], ent[1]
            values[I_END_SEC], values[I_END_USEC] = end_sec, end_usec
            out.append(values)
        return out
