"""Logging a repeating problem without flooding the log: the first occurrence, then at most
one line per interval, each reporting how many happened since the previous line."""

from __future__ import annotations

LOG_INTERVAL = 10.0  # seconds between two lines about the same problem


class Burst:
    __slots__ = ("interval", "last", "since")

    def __init__(self, interval: float = LOG_INTERVAL) -> None:
        self.interval = interval
        self.last = float("-inf")
        self.since = 0

    def due(self, now: float, n: int = 1) -> int:
        """Count ``n`` occurrences; returns how many to report now (0: stay quiet)."""
        self.since += n
        if now - self.last < self.interval:
            return 0
        self.last = now
        count, self.since = self.since, 0
        return count
