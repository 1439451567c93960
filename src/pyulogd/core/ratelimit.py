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


class TokenBucket:
    """A token bucket (iptables' ``limit`` match, Neutron's ``rate_limit``/``burst_limit``):
    up to ``burst`` events at once, then ``rate`` per second on average.

    The bucket starts full. Rate and burst belong to whoever holds many buckets (the RATELIMIT
    filter keeps one per key, thousands of them), so they are passed in rather than stored;
    like :class:`Burst` it is a pure function of the ``now`` it is given (monotonic seconds),
    tested with plain numbers.
    """

    __slots__ = ("stamp", "tokens")

    def __init__(self, burst: float, now: float) -> None:
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float, rate: float, burst: float) -> bool:
        """One event at ``now``: True when a token was there (the event passes), else False."""
        tokens = self.tokens + (now - self.stamp) * rate
        if tokens > burst:
            tokens = burst
        self.stamp = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return True
        self.tokens = tokens
        return False
