"""The injectable clock: FakeClock and SystemClock keep the Clock contract, the loop's timers
run on it, and nothing in the package reads the system clocks behind its back."""

from __future__ import annotations

import ast
import os
import threading
import time
from pathlib import Path

import pytest

from pyulogd.core.clock import Clock, FakeClock, SystemClock
from pyulogd.core.context import Context
from pyulogd.io.loop import Loop

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "pyulogd"

# -- FakeClock


def test_fake_clock_moves_only_when_told() -> None:
    c = FakeClock(wall=1_795_764_130.5, monotonic=50.0)
    assert (c.wall(), c.monotonic()) == (1_795_764_130.5, 50.0)
    assert (c.wall(), c.monotonic()) == (1_795_764_130.5, 50.0)  # reading does not move it
    c.advance(2.5)
    assert (c.wall(), c.monotonic()) == (1_795_764_133.0, 52.5)
    c.set(1_000.0)  # the wall clock is stepped back (NTP, an operator): monotonic time is not
    assert (c.wall(), c.monotonic()) == (1_000.0, 52.5)
    c.sleep(1.0)
    assert (c.wall(), c.monotonic()) == (1_001.0, 53.5)
    with pytest.raises(ValueError):
        c.advance(-1)


def test_fake_clock_wait_returns_at_once_when_the_deadline_passed() -> None:
    c = FakeClock()
    cond = threading.Condition()
    with cond:
        c.wait(cond, c.monotonic())  # due: no wait (a hang here would time the test out)
        c.wait(cond, c.monotonic() - 5)


def test_fake_clock_advance_wakes_a_waiting_thread() -> None:
    c = FakeClock()
    cond = threading.Condition()
    deadline = c.monotonic() + 10
    woke: list[float] = []
    waiting = threading.Event()

    def waiter() -> None:
        with cond:
            waiting.set()
            while c.monotonic() < deadline:
                c.wait(cond, deadline)
            woke.append(c.monotonic())

    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    assert waiting.wait(5)
    c.advance(4)  # wakes it; not due yet, it waits again
    t.join(0.05)
    assert t.is_alive() and woke == []
    c.advance(6)
    t.join(5)
    assert not t.is_alive() and woke == [deadline]


def test_fake_clock_advance_before_the_wait_is_not_lost() -> None:
    """The waiter read the time, then the clock moved past its deadline before it waited:
    the wait must see that (else it would sleep forever on a fake clock)."""
    c = FakeClock()
    cond = threading.Condition()
    deadline = c.monotonic() + 1
    c.advance(2)
    done = threading.Event()

    def waiter() -> None:
        with cond:
            c.wait(cond, deadline)
        done.set()

    threading.Thread(target=waiter, daemon=True).start()
    assert done.wait(5)


def test_fake_clock_wait_readable() -> None:
    c = FakeClock()
    r, w = os.pipe()
    try:
        t = c.monotonic()
        assert not c.wait_readable(r, t + 3)  # nothing comes: the wait's whole length passes
        assert c.monotonic() == t + 3
        os.write(w, b"x")
        assert c.wait_readable(r, t + 10) and c.monotonic() == t + 3  # ready: no time passes
    finally:
        os.close(r)
        os.close(w)


# -- SystemClock


def test_system_clock_reads_the_system_clocks() -> None:
    c: Clock = SystemClock()
    assert abs(c.wall() - time.time()) < 1
    a = c.monotonic()
    assert abs(a - time.monotonic()) < 1 and c.monotonic() >= a


def test_system_clock_waits_are_bounded_by_the_deadline() -> None:
    c = SystemClock()
    cond = threading.Condition()
    r, w = os.pipe()
    try:
        start = time.monotonic()
        with cond:
            c.wait(cond, c.monotonic() + 0.02)
        assert not c.wait_readable(r, c.monotonic() + 0.02)
        os.write(w, b"x")
        assert c.wait_readable(r, c.monotonic() + 5)
        assert 0.03 <= time.monotonic() - start < 2
        with cond:
            c.wait(cond, c.monotonic() - 1)  # passed: no wait
    finally:
        os.close(r)
        os.close(w)


# -- the context and the loop


def test_context_clock_is_the_loops() -> None:
    clock = FakeClock()
    loop = Loop(clock)
    ctx = Context(loop=loop)
    fired: list[float] = []
    try:
        assert ctx.clock is clock  # one clock: the timers' and everything else's
        ctx.loop.call_later(5, lambda: fired.append(clock.monotonic()))
        ctx.loop.call_later(2, lambda: fired.append(-clock.monotonic()), repeat=True)
        loop.run_once(0)
        assert fired == []
        clock.advance(2)
        loop.run_once(0)
        clock.advance(2)
        loop.run_once(0)
        clock.advance(1)
        loop.run_once(0)
        t0 = clock.monotonic() - 5
        assert fired == [-(t0 + 2), -(t0 + 4), t0 + 5]
    finally:
        loop.close()
    real = Loop()
    try:
        assert isinstance(Context(loop=real).clock, SystemClock)  # the daemon's
    finally:
        real.close()


# -- nothing reads the system clocks but core/clock.py

# Reading the time: always a clock read.
_READS = {"time", "time_ns", "monotonic", "monotonic_ns", "perf_counter", "perf_counter_ns", "process_time",
          "process_time_ns", "thread_time", "thread_time_ns", "clock_gettime", "clock_gettime_ns", "sleep"}
# The current time when called without the time to convert.
_NOW_WITHOUT_ARGS = {"localtime": 0, "gmtime": 0, "ctime": 0, "asctime": 0, "strftime": 1}
_DATETIME_NOW = {"now", "utcnow", "today"}

# Where the package may still read the system clocks itself, and why.
ALLOWED: dict[tuple[str, str], str] = {
    ("core/log.py", "time.strftime"): "the logger runs before the context (and its clock) exists: config "
                                      "errors are logged while the context is being built",
    ("daemon/netns_wrapper/daemons.py", "time.monotonic"): "a program of its own (the per-namespace launcher), "
                                                   "not the daemon: no context; waits for processes to exit",
    ("daemon/netns_wrapper/daemons.py", "time.sleep"): "the same launcher's wait for a process to exit",
}


def clock_reads(source: str) -> list[tuple[int, str]]:
    """(line, what) for every direct read of the time (or sleep, or timed wait) in ``source``."""
    tree = ast.parse(source)
    time_names = {"time"}  # names the time module is bound to
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "time" and a.asname:
                    time_names.add(a.asname)
        elif isinstance(node, ast.ImportFrom) and node.module == "time":
            for a in node.names:
                if a.name in _READS or a.name in _NOW_WITHOUT_ARGS:
                    found.append((node.lineno, f"from time import {a.name}"))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        f = node.func
        nargs = len(node.args) + len(node.keywords)
        if isinstance(f.value, ast.Name) and f.value.id in time_names:
            if f.attr in _READS or (f.attr in _NOW_WITHOUT_ARGS and nargs <= _NOW_WITHOUT_ARGS[f.attr]):
                found.append((node.lineno, f"time.{f.attr}"))
        elif f.attr in _DATETIME_NOW and ast.unparse(f.value).split(".")[-1] in ("datetime", "date"):
            found.append((node.lineno, f"datetime.{f.attr}"))
        elif f.attr == "wait" and nargs and "clock" not in ast.unparse(f.value):
            found.append((node.lineno, "timed wait"))  # cond/event.wait(timeout): ask the clock
    return found


def test_the_checker_finds_what_it_must() -> None:
    src = (
        "import time\nimport time as t\nfrom time import monotonic\nimport datetime\n"
        "time.time()\nt.monotonic()\ntime.strftime('%H')\ntime.strftime('%H', tm)\ntime.localtime()\n"
        "time.localtime(sec)\ndatetime.datetime.now()\ncond.wait(1.0)\ncond.wait()\nctx.clock.wait(c, d)\n"
        "time.sleep(1)\n"
    )
    assert clock_reads(src) == [
        (3, "from time import monotonic"), (5, "time.time"), (6, "time.monotonic"), (7, "time.strftime"),
        (9, "time.localtime"), (11, "datetime.now"), (12, "timed wait"), (15, "time.sleep"),
    ]  # fmt: skip


def test_only_core_clock_reads_the_system_clocks() -> None:
    seen: set[tuple[str, str]] = set()
    bad: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel == "core/clock.py":
            continue
        for line, what in clock_reads(path.read_text(encoding="utf-8")):
            if (rel, what) in ALLOWED:
                seen.add((rel, what))
            else:
                bad.append(f"{rel}:{line}: {what}")
    assert not bad, "read the time through ctx.clock (core/clock.py), or allowlist with a reason:\n" + "\n".join(bad)
    assert seen == set(ALLOWED), f"allowlist entries no longer needed: {set(ALLOWED) - seen}"
