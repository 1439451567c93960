"""Capped exponential back-off with optional jitter, as a pure function of ``now``.

Shared by the network senders (``io/sendstate.py``) and the SQL writer (``db/policy.py``).
It reads no clock and draws no randomness of its own: the caller passes ``now`` and, for
jitter, a random source, so a test states exactly when the next attempt is due.

The wait after the first failure of a run is ``first``; each further failure doubles it, up
to ``cap``. With ``jitter`` (a fraction in [0, 1]) each wait is shortened by a random part of
up to that fraction: never longer than the un-jittered wait (so the cap stays a promise, e.g.
"back within ``cap`` seconds of the peer's return"), and peers restarted together are not
hit by every daemon in the same instant.
"""

from __future__ import annotations

import random
from collections.abc import Callable

# 2**32 times ``first`` is beyond any useful cap; the limit only keeps the float finite.
_MAX_DOUBLINGS = 32


class Backoff:
    """When the next attempt is due. ``since`` is where the current wait began (the latest
    attempt, or the moment a connection broke); ``wait`` how long it lasts."""

    def __init__(
        self,
        first: float,
        cap: float,
        *,
        jitter: float = 0.0,
        rand: Callable[[], float] | None = None,
    ) -> None:
        if not 0.0 <= jitter <= 1.0:
            raise ValueError("jitter is a fraction between 0 and 1")
        self.first = first
        self.cap = cap
        self.jitter = jitter
        # A generator of its own (not the random module's shared one): no global state.
        self.rand = rand if rand is not None else random.Random().random
        self.failures = 0  # failed attempts in a row
        self.since = float("-inf")  # never attempted: due at once
        self.wait = self._jittered(first)

    def _jittered(self, step: float) -> float:
        return step * (1.0 - self.jitter * self.rand()) if self.jitter else step

    def step(self) -> float:
        """The un-jittered wait after the failures so far (``first`` before any)."""
        n = max(self.failures - 1, 0)
        return min(self.cap, self.first * 2.0 ** min(n, _MAX_DOUBLINGS))

    # -- what happened
    def begin(self, now: float) -> None:
        """The wait (re)starts at ``now``: an attempt begins, or a working connection broke."""
        self.since = now

    def failed(self) -> float:
        """One more failed attempt: the wait grows; returns it."""
        self.failures += 1
        self.wait = self._jittered(self.step())
        return self.wait

    def broke(self, now: float) -> None:
        """A working connection broke at ``now``: the next attempt after the first wait."""
        self.since = now
        self.failures = max(self.failures, 1)

    def reset(self) -> int:
        """Success (or a fresh start): back to the first wait. Returns the failures there were."""
        failures, self.failures = self.failures, 0
        self.wait = self._jittered(self.first)
        return failures

    def expire(self) -> None:
        """Make the next attempt due at once (an operator asked for it)."""
        self.since = float("-inf")

    # -- questions
    def due(self, now: float) -> bool:
        # Compared with the deadline itself (not ``now - since >= wait``): a timer set for
        # deadline() finds the attempt due, whatever the rounding.
        return now >= self.since + self.wait

    def remaining(self, now: float) -> float:
        """Seconds until the next attempt is due (0: now)."""
        return max(0.0, self.since + self.wait - now)

    def deadline(self) -> float:
        """The monotonic time the next attempt is due."""
        return self.since + self.wait
