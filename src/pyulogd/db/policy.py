"""When the SQL writer writes, retries and spools: pure functions of ``now``.

:class:`~pyulogd.db.writer.Writer` runs two threads around a database and a spool; which of
them does what, and when, is decided here from numbers alone (monotonic seconds, row and
byte counts), so the rules are tested without threads or waiting
(``tests/unit/test_sql.py``), and the threads only read ``ctx.clock`` and wait on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pyulogd.core.backoff import Backoff

# While the database is down, the writer looks at its queue at least this often.
IDLE_CHECK = 1.0
# The spiller's longest sleep while nothing is due (a safety net: it is notified of changes).
SPILL_CHECK = 1.0
# ... and while records wait in memory with the database down.
SPILL_CHECK_DOWN = 0.5
# How long the writer waits for a spill in progress before it looks again (it is notified).
MOVING_CHECK = 0.05

NEVER = float("inf")
AT_ONCE = float("-inf")


@dataclass
class WriterSettings:
    batch_size: int = 10000
    batch_timeout: float = 1.0
    mem_max: int = 64 << 20
    reconnect: float = 2.0
    reconnect_max: float = 60.0
    spool_delay: float = 1.0


class WriterPolicy:
    """Batches, reconnects and spilling of one SQL output. Only the reconnect back-off has
    state; everything else is a function of its arguments."""

    def __init__(
        self, cfg: WriterSettings, *, jitter: float = 0.0, rand: Callable[[], float] | None = None
    ) -> None:
        self.cfg = cfg
        # The wait after the n-th failure in a row: reconnect * 2**(n-1), at most reconnect_max.
        self.backoff = Backoff(cfg.reconnect, cfg.reconnect_max, jitter=jitter, rand=rand)

    # -- reconnects
    def connect_due(self, now: float) -> bool:
        return self.backoff.due(now)

    def failed(self, now: float) -> float:
        """A connection attempt or a write failed at ``now``; returns the wait before the next."""
        wait = self.backoff.failed()
        self.backoff.begin(now)
        return wait

    def connected(self) -> None:
        self.backoff.reset()

    def reconnect_now(self) -> None:
        """SIGHUP: the next attempt is due at once."""
        self.backoff.expire()

    def idle_until(self, now: float, stop_deadline: float | None) -> float:
        """The database is down: when the writer looks again (the next attempt, or sooner to
        notice new work; when stopping, no later than the stop deadline)."""
        until = min(self.backoff.deadline(), now + IDLE_CHECK)
        return until if stop_deadline is None else min(until, stop_deadline)

    # -- batches from memory
    def batch_due(self, oldest: float, rows: int, stopping: bool) -> float:
        """When a batch of the rows in memory is due: at once when there are ``batch_size`` of
        them or the output stops, else when the oldest (queued at ``oldest``) has waited
        ``batch_timeout``."""
        if rows >= self.cfg.batch_size or stopping:
            return AT_ONCE
        return oldest + self.cfg.batch_timeout

    # -- spilling to disk
    def spill_keep(
        self, now: float, oldest: float | None, mem_bytes: int, connected: bool, flush_all: bool
    ) -> int | None:
        """How many bytes of records may stay in memory (the oldest go to the spool), or None:
        no spilling now. Everything goes at exit; half of the bound when memory passes it;
        everything when the database is down and the oldest (``oldest``, None: memory is
        empty) waited ``spool_delay``, so that a SIGKILL during an outage loses nothing."""
        cfg = self.cfg
        if flush_all:
            return 0
        if mem_bytes > cfg.mem_max:
            return cfg.mem_max // 2
        # The same sum as spill_check_at's deadline: at that instant the spill is due, or the
        # spiller would wake and find nothing to do until a rounding error passed.
        if oldest is not None and not connected and now >= oldest + cfg.spool_delay:
            return 0
        return None

    def spill_check_at(self, now: float, oldest: float | None, connected: bool) -> float:
        """When the spiller looks again if nothing notifies it: as soon as the oldest record
        in memory is due for the spool while the database is down, else a safety poll."""
        if oldest is not None and not connected:
            return min(oldest + self.cfg.spool_delay, now + SPILL_CHECK_DOWN)
        return now + SPILL_CHECK
