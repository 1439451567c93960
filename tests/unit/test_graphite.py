"""GRAPHITE: 2.0.8's metric lines, and a Carbon that is down at start, restarts, or is too slow."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from pyulogd.core.clock import FakeClock
from pyulogd.core.context import Context
from pyulogd.core.errors import ConfigError
from pyulogd.core.plugin import DataType, Key, KeyType, Source
from pyulogd.io.loop import Loop
from pyulogd.io.sender import ReliableSender
from pyulogd.plugins.outputs.graphite import GraphiteOutput
from tests.clocked import fake_context, loop_until
from tests.helpers import make_stack, stop_stack


class SumSource(Source):
    name = "SUMSRC"
    output_type = DataType.SUM
    output_keys = (Key("sum.name", KeyType.STRING), Key("sum.pkts", KeyType.UINT64),
                   Key("sum.bytes", KeyType.UINT64), Key("oob.time.sec", KeyType.UINT32))

    def push(self, name: str, pkts: int, nbytes: int, sec: int | None = 1795770000) -> None:
        self.emit([None, name, pkts, nbytes, sec])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def stack_for(port: int, ctx: Context | None = None, **opts: Any) -> Any:
    return make_stack([SumSource, (GraphiteOutput, {"host": "127.0.0.1", "port": str(port), "prefix": "fw",
                                                    **opts})], ctx)


def out(stack: Any) -> ReliableSender:
    o = stack.sink.out.sender
    assert isinstance(o, ReliableSender)
    return o


def receive(conn: socket.socket, lines: int) -> list[str]:
    conn.settimeout(5)
    data = b""
    while data.count(b"\n") < lines:
        chunk = conn.recv(65536)
        assert chunk
        data += chunk
    return data.decode().splitlines()


def pump(ctx: Context, stack: Any, until: Any) -> None:
    loop_until(ctx, until, stack.sink.flush)


def test_config_needs_host_and_port() -> None:
    with pytest.raises(ConfigError, match="host and port"):
        make_stack([SumSource, (GraphiteOutput, {"host": "", "port": "2003"})], start=False)


def test_lines_as_ulogd2() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        ctx = Context(loop=Loop(FakeClock(wall=1795779999.7)))
        stack = stack_for(server.getsockname()[1], ctx)
        conn, _ = server.accept()
        with conn:
            stack.source.push("http_in", 12, 3456)
            stack.source.push("idle", 0, 0, sec=0)  # no timestamp=1 upstream: time of writing
            stack.sink.flush()
            assert receive(conn, 4) == [
                "fw.http_in.pkts 12 1795770000", "fw.http_in.bytes 3456 1795770000",
                "fw.idle.pkts 0 1795779999", "fw.idle.bytes 0 1795779999",
            ]
            stop_stack(stack)


def test_names_cannot_forge_a_metric() -> None:
    """An nfacct counter's name is an outside string: escaped (pyulogd.core.escape)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        stack = stack_for(server.getsockname()[1], Context(loop=Loop()))
        conn, _ = server.accept()
        with conn:
            stack.source.push("a\nfw.forged.pkts 999", 1, 2)
            stack.sink.flush()
            assert receive(conn, 2) == ["fw.a\\nfw.forged.pkts 999.pkts 1 1795770000",
                                        "fw.a\\nfw.forged.pkts 999.bytes 2 1795770000"]
            stop_stack(stack)


def test_carbon_down_at_start_then_up() -> None:
    port = free_port()
    ctx, clock = fake_context()
    stack = stack_for(port, ctx)  # 2.0.8: "Could not connect", the stack fails; here it waits
    pump(ctx, stack, lambda: out(stack).sock is None)  # the refused connect is noticed
    for i in range(3):
        stack.source.push(f"c{i}", i, i * 100)
        stack.sink.flush()
    assert out(stack).backlog == 3
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen(1)
        clock.advance(1)  # the back-off after the refused connect
        pump(ctx, stack, lambda: not out(stack).queue)
        conn, _ = server.accept()
        with conn:
            got = receive(conn, 6)
            stop_stack(stack)
    assert got[0] == "fw.c0.pkts 0 1795770000" and got[-1] == "fw.c2.bytes 200 1795770000"
    assert ctx.stats.get("graphite.graphite1.send_failures") == 0


def test_carbon_restart_mid_run() -> None:
    ctx, clock = fake_context()
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]
    server.listen(1)
    stack = stack_for(port, ctx)
    conn, _ = server.accept()
    stack.source.push("a", 1, 1)
    stack.sink.flush()
    assert receive(conn, 2)
    conn.close()
    server.close()  # carbon stops
    pump(ctx, stack, lambda: out(stack).sock is None)
    for i in range(5):
        stack.source.push(f"during{i}", i, i)
        stack.sink.flush()
    assert out(stack).backlog == 5
    with socket.socket() as server2:  # and starts again
        server2.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server2.bind(("127.0.0.1", port))
        server2.listen(1)
        clock.advance(0.1)
        ctx.loop.run_once(0)
        stack.sink.flush()
        assert out(stack).sock is None and out(stack).backlog == 5  # within the first wait after the break
        clock.advance(0.15)
        pump(ctx, stack, lambda: not out(stack).queue)
        conn2, _ = server2.accept()
        with conn2:
            got = receive(conn2, 10)
            stop_stack(stack)
    assert [g.split()[0] for g in got[::2]] == [f"fw.during{i}.pkts" for i in range(5)]
    assert ctx.stats.get("graphite.graphite1.send_failures") == 0
    assert ctx.stats.get("graphite.graphite1.reconnects") == 1


def test_overflow_counted() -> None:
    ctx, _ = fake_context()
    stack = stack_for(free_port(), ctx, queue=500, spool_max=0)  # memory only
    pump(ctx, stack, lambda: out(stack).sock is None)  # the refused connect is noticed
    for i in range(50):
        stack.source.push(f"counter{i:02d}", i, i)
    kept = out(stack).backlog
    assert 0 < kept < 50
    assert ctx.stats.get("graphite.graphite1.queue_overflow") == 50 - kept
    assert "queue full" in (ctx.log.last_error or "")
    stop_stack(stack)
    assert ctx.stats.get("graphite.graphite1.send_failures") == 50  # the kept ones are lost at exit
