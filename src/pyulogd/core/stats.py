"""Counters of everything the daemon drops, skips or fails, by cause. Nothing is lost silently."""

from __future__ import annotations

from collections import Counter


class Stats:
    """Named counters, e.g. ``nflog.log1.enobufs`` or ``nflog.log1.malformed``."""

    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()

    def incr(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def get(self, name: str) -> int:
        return self.counters.get(name, 0)

    def snapshot(self) -> dict[str, int]:
        return dict(sorted(self.counters.items()))
