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

    def fold(self, src_prefix: str, dst_prefix: str) -> None:
        """Add every counter named ``src_prefix + X`` to ``dst_prefix + X`` and drop it
        (X without dots, so ``a.b.`` does not take the counters of ``a.b.c.``)."""
        counters = self.counters
        n = len(src_prefix)
        for name in [k for k in counters if k.startswith(src_prefix) and "." not in k[n:]]:
            counters[dst_prefix + name[n:]] += counters.pop(name)

    def snapshot(self) -> dict[str, int]:
        return dict(sorted(self.counters.items()))
