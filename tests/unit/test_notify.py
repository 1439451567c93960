"""systemd notify (daemon/notify.py) against a datagram socket the test listens on, with the
loop on a FakeClock: when READY, STATUS and WATCHDOG go out, and that only a turning loop pings."""

from __future__ import annotations

import io
import os
import secrets
import socket
from collections.abc import Iterator

import pytest

from pyulogd.core.clock import FakeClock
from pyulogd.core.context import Context
from pyulogd.daemon.notify import MIN_PING_INTERVAL, STATUS_INTERVAL, Notifier, parse_address, watchdog_interval
from pyulogd.io.loop import Loop


class Systemd:
    """The listening end of NOTIFY_SOCKET, on an abstract address of its own."""

    def __init__(self) -> None:
        self.name = f"@pyulogd-test-notify-{secrets.token_hex(6)}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(b"\0" + self.name[1:].encode())
        self.sock.setblocking(False)

    def messages(self) -> list[dict[str, str]]:
        """Every datagram received so far, as KEY=value dicts."""
        out = []
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return out
            out.append(dict(line.split("=", 1) for line in data.decode().split("\n")))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture()
def systemd() -> Iterator[Systemd]:
    s = Systemd()
    yield s
    s.close()


def context() -> tuple[Context, FakeClock, io.StringIO]:
    clock = FakeClock()
    ctx = Context(loop=Loop(clock))
    log = io.StringIO()
    ctx.log.stream = log
    return ctx, clock, log


def test_addresses() -> None:
    assert parse_address("/run/systemd/notify") == "/run/systemd/notify"
    assert parse_address("@abstract") == b"\0abstract"
    for bad in ("", "@", "relative/path", "vsock:2:1234"):
        assert parse_address(bad) is None


def test_watchdog_interval_is_half_of_watchdog_usec_and_only_for_us() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}, 42) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, 42) == 15.0
    # After -d, systemd's WATCHDOG_PID names the parent, not the child that runs.
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "41"}, 42) is None
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "x"}, 42) is None
    assert watchdog_interval({}, 42) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}, 42) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}, 42) is None
    assert watchdog_interval({"WATCHDOG_USEC": "1000"}, 42) == MIN_PING_INTERVAL


def test_no_notify_socket_no_notifier() -> None:
    ctx, _, _ = context()
    assert Notifier.from_environ(ctx, {}) is None
    assert Notifier.from_environ(ctx, {"NOTIFY_SOCKET": "vsock:1:2"}) is None


def test_ready_then_watchdog_and_status_from_the_loop_timers(systemd: Systemd) -> None:
    ctx, clock, _ = context()
    env = {"NOTIFY_SOCKET": systemd.name, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    n = Notifier.from_environ(ctx, env)
    assert n is not None and n.watchdog == 1.0
    assert n.ready("0 records in, 0 lost")
    statuses = iter(f"{i} records in, 0 lost" for i in range(1, 100))
    n.start_timers(lambda: next(statuses))
    [ready] = systemd.messages()
    assert ready == {"READY": "1", "MAINPID": str(os.getpid()), "STATUS": "0 records in, 0 lost", "WATCHDOG": "1"}

    ctx.loop.run_once(0)
    assert systemd.messages() == []  # nothing is due yet
    clock.advance(1.0)
    ctx.loop.run_once(0)
    assert systemd.messages() == [{"WATCHDOG": "1"}]
    pings = statuses_seen = 0
    for _ in range(int(STATUS_INTERVAL)):
        clock.advance(1.0)
        ctx.loop.run_once(0)
        for m in systemd.messages():
            pings += m.get("WATCHDOG") == "1"
            statuses_seen += "STATUS" in m
    assert pings == int(STATUS_INTERVAL) and statuses_seen == 1
    n.close()


def test_a_loop_that_does_not_turn_does_not_ping(systemd: Systemd) -> None:
    """The pings are the loop's timers: time passing while the loop is stuck sends nothing,
    so systemd's watchdog fires. A thread would have gone on pinging."""
    ctx, clock, _ = context()
    n = Notifier.from_environ(ctx, {"NOTIFY_SOCKET": systemd.name, "WATCHDOG_USEC": "1000000"})
    assert n is not None
    n.start_timers(lambda: "x")
    clock.advance(60.0)  # a minute stuck in a plugin: run_once is never called
    assert systemd.messages() == []
    ctx.loop.run_once(0)  # the loop turns again: the overdue timers fire once each
    got = systemd.messages()
    assert {"WATCHDOG": "1"} in got and {"STATUS": "x"} in got and len(got) == 2
    n.close()


def test_no_watchdog_for_another_pid(systemd: Systemd) -> None:
    ctx, clock, log = context()
    env = {"NOTIFY_SOCKET": systemd.name, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    n = Notifier.from_environ(ctx, env)
    assert n is not None and n.watchdog is None
    assert "not sending WATCHDOG=1" in log.getvalue()
    n.ready("up")
    n.start_timers(lambda: "up")
    [ready] = systemd.messages()
    assert "WATCHDOG" not in ready
    clock.advance(STATUS_INTERVAL)
    ctx.loop.run_once(0)
    assert systemd.messages() == [{"STATUS": "up"}]
    n.close()


def test_stopping_and_no_reloading(systemd: Systemd) -> None:
    ctx, _, _ = context()
    n = Notifier.from_environ(ctx, {"NOTIFY_SOCKET": systemd.name})
    assert n is not None
    n.ready("up")
    n.stopping()
    msgs = systemd.messages()
    assert msgs[-1] == {"STOPPING": "1", "STATUS": "stopping"}
    assert not any("RELOADING" in m for m in msgs)
    n.close()
    assert not n.ping()  # closed: nothing sent, nothing raised


def test_status_is_one_line(systemd: Systemd) -> None:
    ctx, _, _ = context()
    n = Notifier(ctx, b"\0" + systemd.name[1:].encode(), None)
    n.status("a\nREADY=1\r\nb")
    assert systemd.messages() == [{"STATUS": "a READY=1 b"}]
    n.close()


def test_a_socket_nobody_listens_on_is_counted_not_raised(tmp_path: object) -> None:
    ctx, _, log = context()
    n = Notifier(ctx, f"/nonexistent-{secrets.token_hex(4)}/notify", 1.0)
    assert not n.ready("up")
    assert not n.ping()
    assert ctx.stats.get("notify.send_errors") == 2
    assert log.getvalue().count("cannot notify systemd") == 1  # once per burst
    n.close()
