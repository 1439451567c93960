"""Helpers for tests that drive the daemon's clock (``pyulogd.core.clock.FakeClock``).

Time the daemon waits on its own (back-off, probe windows, batch timeouts, flush timers)
is passed by advancing the fake clock; only real events (a peer accepting, an ICMP error
coming back, bytes arriving) are waited for, with a real deadline so a bug fails the test
instead of hanging it.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable
from typing import Any

from pyulogd.core.clock import FakeClock
from pyulogd.core.context import Context
from pyulogd.io.loop import Loop


def fake_context(**kw: Any) -> tuple[Context, FakeClock]:
    """A context on a FakeClock (``wall``/``monotonic`` as FakeClock takes them)."""
    clock = FakeClock(**{k: kw.pop(k) for k in ("wall", "monotonic") if k in kw})
    return Context(loop=Loop(clock), **kw), clock


def fake_clock(ctx: Context) -> FakeClock:
    assert isinstance(ctx.clock, FakeClock), "this test needs a context on a FakeClock"
    return ctx.clock


def loop_until(
    ctx: Context,
    until: Callable[[], object],
    flush: Callable[[], None] | None = None,
    timeout: float = 6.0,
    step: float = 0.0,
) -> None:
    """Run the loop's ready work and due timers (and ``flush``) until ``until()``, for at most
    ``timeout`` real seconds. The fake clock moves ``step`` seconds per round (default: not
    at all): a test gives the daemon every wait it expects with ``advance`` first, or a
    ``step`` where the daemon polls (a sender looking again at a peer whose buffer was full)."""
    end = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < end, "timed out"
        if step:
            fake_clock(ctx).advance(step)
        ctx.loop.run_once(0.01)
        if flush is not None:
            flush()


def wait_for_socket_error(sock: socket.socket | None, timeout: float = 5.0) -> None:
    """Until ``sock`` has an error pending: the ICMP port unreachable a UDP send to a closed
    port brings back (it shows as ECONNREFUSED on the next send)."""
    assert sock is not None
    p = select.poll()
    p.register(sock, select.POLLERR)
    assert p.poll(timeout * 1000), "no error came back"
