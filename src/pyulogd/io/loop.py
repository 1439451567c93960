"""The single event loop: file descriptors, timers and signals, like ulogd's select() loop.

Signals arrive through ``signal.set_wakeup_fd`` (a self-pipe), so handlers run in the
loop, never inside a signal frame. Timers run on the loop's :class:`~pyulogd.core.clock.Clock`
(the context's): with a ``FakeClock``, a test advances the clock and calls
``run_once(0)`` to fire what became due.
"""

from __future__ import annotations

import heapq
import itertools
import os
import selectors
import signal
from collections.abc import Callable
from typing import Any

from pyulogd.core.clock import Clock, SystemClock


class Timer:
    __slots__ = ("when", "callback", "cancelled", "interval")

    def __init__(self, when: float, callback: Callable[[], None], interval: float | None) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False
        self.interval = interval

    def cancel(self) -> None:
        self.cancelled = True


class Loop:
    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.selector = selectors.DefaultSelector()
        self._timers: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._signal_handlers: dict[int, Callable[[int], None]] = {}
        self._wakeup_r: int | None = None
        self._wakeup_w: int | None = None
        self.running = False
        # Called once after each round of ready file descriptors (outputs flush here).
        self.after_batch: list[Callable[[], None]] = []
        self._linger = 0.0

    # -- file descriptors
    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        self.selector.register(fd, selectors.EVENT_READ, callback)

    def remove_reader(self, fd: int) -> None:
        try:
            self.selector.unregister(fd)
        except (KeyError, ValueError):
            pass

    def add_writer(self, fd: int, callback: Callable[[], None]) -> None:
        """Call ``callback`` when ``fd`` can be written (a reply to a slow client, sent as the
        client takes it); ``fd`` must not be registered as a reader at the same time."""
        self.selector.register(fd, selectors.EVENT_WRITE, callback)

    def remove_writer(self, fd: int) -> None:
        self.remove_reader(fd)  # one registration per descriptor: the same unregister

    # -- timers
    def call_later(self, delay: float, callback: Callable[[], None], repeat: bool = False) -> Timer:
        t = Timer(self.clock.monotonic() + delay, callback, delay if repeat else None)
        heapq.heappush(self._timers, (t.when, next(self._seq), t))
        return t

    # -- signals
    def add_signal_handler(self, signum: int, callback: Callable[[int], None]) -> None:
        if self._wakeup_r is None:
            self._wakeup_r, self._wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            signal.set_wakeup_fd(self._wakeup_w, warn_on_full_buffer=False)
            self.add_reader(self._wakeup_r, self._read_signals)
        self._signal_handlers[signum] = callback
        # A Python-level handler is needed for the wakeup fd to be written; it does nothing.
        signal.signal(signum, _noop_handler)

    def _read_signals(self) -> None:
        assert self._wakeup_r is not None
        try:
            data = os.read(self._wakeup_r, 512)
        except BlockingIOError:
            return
        for signum in data:
            handler = self._signal_handlers.get(signum)
            if handler is not None:
                handler(signum)

    def linger(self, seconds: float) -> None:
        """Ask the loop to sleep this long after the current round, before it waits again.

        For inputs whose every event is a datagram of its own (conntrack): woken for each one,
        the daemon would pay a wake-up, a poll and a write per event. A short pause lets events
        gather in the socket buffer, to be read and written in one round (interrupt coalescing);
        the input keeps the pause well inside the time its buffer takes to fill."""
        if seconds > self._linger:
            self._linger = seconds

    # -- running
    def stop(self) -> None:
        self.running = False

    def run_once(self, max_wait: float | None = None) -> None:
        timeout = max_wait
        if self._timers:
            delay = max(0.0, self._timers[0][0] - self.clock.monotonic())
            timeout = delay if timeout is None else min(timeout, delay)
        events = self.selector.select(timeout)
        for key, _mask in events:
            key.data()
        fired = False
        now = self.clock.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, t = heapq.heappop(self._timers)
            if t.cancelled:
                continue
            if t.interval is not None:
                t.when = now + t.interval
                heapq.heappush(self._timers, (t.when, next(self._seq), t))
            fired = True
            t.callback()
        # Records produced by sockets or by timers (polls, resyncs) go out before the wait.
        if events or fired:
            for cb in self.after_batch:
                cb()
        if self._linger:
            pause, self._linger = self._linger, 0.0
            self.clock.sleep(pause)

    def run(self) -> None:
        self.running = True
        while self.running:
            self.run_once()

    def close(self) -> None:
        if self._wakeup_r is not None:
            signal.set_wakeup_fd(-1)
            os.close(self._wakeup_r)
            if self._wakeup_w is not None:
                os.close(self._wakeup_w)
            self._wakeup_r = self._wakeup_w = None
        self.selector.close()


def _noop_handler(signum: int, frame: Any) -> None:
    pass
