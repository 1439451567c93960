"""The daemon's one clock: wall time for records, monotonic time for timers and back-off.

Everything in pyulogd that reads the time, sleeps or waits with a timeout asks the
:class:`Clock` it was handed (``ctx.clock``), never the :mod:`time` module: this module is
the only one that reads the system's clocks (``tests/unit/test_clock.py`` checks the
package for direct reads, with an allowlist and a reason for each exception). Codecs take
``now`` as an argument; the state machines behind the network senders and the SQL writer
(``io/sendstate.py``, ``db/policy.py``) are pure functions of ``now`` too. So a test swaps
in a :class:`FakeClock` and moves time forward itself: a one-second back-off costs no second
and cannot flake under load.

The two readings are kept apart on purpose. Records carry wall time (what an operator
compares with other logs; it may jump when NTP or an operator sets the clock). Timers,
back-off, batch and spool delays use monotonic time, which never jumps: a clock set back an
hour must not stall reconnects for an hour.

:class:`FakeClock` lives in the package rather than in ``tests/`` so that people testing
their own plugins, or embedding pyulogd, can drive it the same way.
"""

from __future__ import annotations

import math
import select
import threading
import time
import weakref
from typing import Protocol


class Clock(Protocol):
    """What the daemon may ask about time. Deadlines are monotonic times."""

    def wall(self) -> float:
        """Seconds since the epoch (``time.time()``): for timestamps in records."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back: for timers, back-off and delays."""
        ...

    def sleep(self, seconds: float) -> None:
        """Let ``seconds`` pass (the event loop's short pause between rounds)."""
        ...

    def wait(self, cond: threading.Condition, deadline: float | None) -> None:
        """With ``cond`` held: release it until notified or until :meth:`monotonic` reaches
        ``deadline`` (None: until notified). May return early; callers re-check their state."""
        ...

    def wait_readable(self, fd: int, deadline: float) -> bool:
        """Block until ``fd`` is readable (True) or :meth:`monotonic` reaches ``deadline``
        (False): a bounded wait for the kernel's answer to a request."""
        ...


class SystemClock:
    """The real clocks. Stateless: one per daemon, created where the context is."""

    # The builtins themselves, not wrappers: ``ctx.clock.wall()`` costs one attribute lookup
    # more than ``time.time()``, no Python frame.
    wall = staticmethod(time.time)
    monotonic = staticmethod(time.monotonic)
    sleep = staticmethod(time.sleep)

    def wait(self, cond: threading.Condition, deadline: float | None) -> None:
        if deadline is None:
            cond.wait()
            return
        left = deadline - time.monotonic()
        if left > 0:
            cond.wait(left)

    def wait_readable(self, fd: int, deadline: float) -> bool:
        return _readable(fd, max(0.0, deadline - time.monotonic()))


class FakeClock:
    """A clock that moves only when told (:meth:`advance`, :meth:`set`), for tests.

    Threads waiting through :meth:`wait` wake when the clock is advanced, and see their
    deadline passed if it was advanced far enough, so a test can drive the SQL writer's
    threads without sleeping. :meth:`sleep` and a :meth:`wait_readable` that finds nothing
    to read advance the clock: nothing else can happen in a thread while it is blocked, so
    jumping straight to the end of the wait is what the caller would have seen.

    Monotonic time starts at 1000, not 0, so that code using 0.0 as "never" is not fooled.
    """

    def __init__(self, wall: float = 1_800_000_000.0, monotonic: float = 1000.0) -> None:
        self._wall = float(wall)
        self._mono = float(monotonic)
        self._lock = threading.Lock()
        self._waiting: weakref.WeakSet[threading.Condition] = weakref.WeakSet()

    def wall(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass on both clocks and wake the threads waiting on it."""
        if seconds < 0:
            raise ValueError("a monotonic clock does not go back")
        with self._lock:
            self._mono += seconds
            self._wall += seconds
            conds = list(self._waiting)
        for cond in conds:
            with cond:
                cond.notify_all()

    def set(self, wall: float) -> None:
        """Set the wall clock (an operator or NTP stepping it); monotonic time does not move."""
        with self._lock:
            self._wall = float(wall)

    def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))

    def wait(self, cond: threading.Condition, deadline: float | None) -> None:
        # Registered before the deadline is checked, and the check made with ``cond`` held:
        # an advance() between the caller's reading of the time and this wait is not lost
        # (either the check sees the new time, or advance() notifies once we wait).
        with self._lock:
            self._waiting.add(cond)
            due = deadline is not None and self._mono >= deadline
        if not due:
            cond.wait()

    def wait_readable(self, fd: int, deadline: float) -> bool:
        if _readable(fd, 0.0):
            return True
        self.advance(max(0.0, deadline - self._mono))
        return False


def _readable(fd: int, timeout: float) -> bool:
    """poll(), not select(): a daemon following many namespaces has descriptors past 1024."""
    p = select.poll()
    p.register(fd, select.POLLIN)
    # Round up: poll() takes milliseconds, and a wait cut short would spin until the deadline.
    return bool(p.poll(math.ceil(timeout * 1000)))
