"""IPFIX: ulogd2 2.0.8's messages (template 256, 33-byte records, MTU packing, send_template),
the IPv6 template 257, RFC sequence numbers, and a collector that is down or restarts."""

from __future__ import annotations

import socket
import struct
from typing import Any

import pytest

from pyulogd.codec import ipfix as codec
from pyulogd.core.clock import FakeClock
from pyulogd.core.context import Context
from pyulogd.core.errors import ConfigError
from pyulogd.core.plugin import DataType, Key, Source
from pyulogd.io.loop import Loop
from pyulogd.io.sender import ReliableSender
from pyulogd.plugins.outputs.ipfix import INPUT_KEYS, IpfixOutput
from tests.clocked import fake_context, loop_until
from tests.helpers import make_stack, stop_stack

V4 = (socket.inet_aton("10.201.0.1"), socket.inet_aton("10.201.0.2"))
V6 = (socket.inet_pton(socket.AF_INET6, "fd00:201::1"), socket.inet_pton(socket.AF_INET6, "fd00:201::2"))


class FlowSource(Source):
    name = "FLOWSRC"
    output_type = DataType.FLOW
    output_keys = tuple(Key(k.name, k.type) for k in INPUT_KEYS)

    def flow(self, addrs: tuple[bytes, bytes] = V4, sport: int | None = 40001, proto: int = 6, mark: int = 0,
             pkts: tuple[int, int] = (5, 4), nbytes: tuple[int, int] = (300, 200)) -> None:  # fmt: skip
        self.emit([None, addrs[0], addrs[1], pkts[0], nbytes[0], pkts[1], nbytes[1], 1795770000, 1, 1795770009, 2,
                   sport, None if sport is None else 7001, proto, mark])  # fmt: skip


def udp_server() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(5)
    return s


def stack_for(port: int, ctx: Context | None = None, **opts: Any) -> Any:
    conf = {"oid": 7, "host": "127.0.0.1", "port": port, "proto": "udp", **opts}
    return make_stack([FlowSource, (IpfixOutput, conf)], ctx or Context(loop=Loop(FakeClock(wall=1795770100.0))))


def out(stack: Any) -> ReliableSender:
    o = stack.sink.out.sender
    assert isinstance(o, ReliableSender)
    return o


@pytest.mark.parametrize(("opts", "msg"), [
    ({"oid": 0}, "invalid Observation ID"),
    ({"host": ""}, "no destination host specified"),
    ({"proto": "sctp"}, "unknown protocol 'sctp' \\(valid: tcp, udp\\)"),
    ({"mtu": 100}, "'mtu'.* must be between 125 and 65535"),
    ({"port": 99999}, "'port'.* must be between 1 and 65535"),
])  # fmt: skip
def test_config_errors(opts: dict[str, Any], msg: str) -> None:
    conf = {"oid": 7, "host": "127.0.0.1", **opts}
    with pytest.raises(ConfigError, match=msg):
        make_stack([FlowSource, (IpfixOutput, conf)], start=False)


def test_template_256_bytes_as_ulogd2() -> None:
    # set 2, length 48, template 256 with 10 fields: 8/4 12/4 86/4 85/4 150/4 151/4 7/2 11/2 4/1 95/4
    assert codec.template_set(256).hex() == (
        "00020030" "0100000a" "00080004" "000c0004" "00560004" "00550004" "00960004" "00970004"
        "00070002" "000b0002" "00040001" "005f0004")  # fmt: skip
    assert codec.RECORD[256].size == 33 and codec.RECORD[257].size == 57


def test_first_message_bytes() -> None:
    with udp_server() as server:
        stack = stack_for(server.getsockname()[1])
        stack.source.flow(mark=0x2A)
        stack.source.flow(sport=None, proto=1)  # ICMP: ports 0
        stop_stack(stack)  # sends the partial message
        data = server.recv(65535)
    hdr = struct.unpack_from("!HHIII", data)
    assert hdr == (10, 16 + 48 + 4 + 2 * 33, 1795770100, 0, 7)
    assert data[16:64] == codec.template_set(256)
    assert data[64:68] == struct.pack("!HH", 256, 4 + 66)
    rec1 = V4[0] + V4[1] + struct.pack("!IIIIHHBI", 9, 500, 1795770000, 1795770009, 40001, 7001, 6, 0x2A)
    assert data[68:101] == rec1
    assert data[101:134] == V4[0] + V4[1] + struct.pack("!IIIIHHBI", 9, 500, 1795770000, 1795770009, 0, 0, 1, 0)


def test_mtu_packing_once_and_rfc_sequence() -> None:
    with udp_server() as server:
        stack = stack_for(server.getsockname()[1])
        for _ in range(13 + 14 + 1):
            stack.source.flow()
        stop_stack(stack)
        known: dict[int, list[tuple[int, int]]] = {}
        msgs = [codec.decode(server.recv(65535), known)[0] for _ in range(3)]
    # 512 bytes: 13 records with the template, then 14 per message (ulogd2's packing)
    assert [len(m.records) for m in msgs] == [13, 14, 1]
    assert [bool(m.templates) for m in msgs] == [True, False, False]  # send_template=once
    assert [m.sequence for m in msgs] == [0, 13, 27]  # RFC 7011 (2.0.8: 13, 27, 28)


def test_send_template_never_and_always() -> None:
    for mode, want in (("never", [False, False]), ("always", [True, True])):
        with udp_server() as server:
            stack = stack_for(server.getsockname()[1], send_template=mode)
            for _ in range(20):
                stack.source.flow()
            stop_stack(stack)
            msgs = [codec.decode(server.recv(65535), {256: []})[0] for _ in range(2)]
        assert [bool(m.templates) for m in msgs] == want


def test_ipv6_template_257() -> None:
    with udp_server() as server:
        stack = stack_for(server.getsockname()[1])
        stack.source.flow()
        stack.source.flow(addrs=V6, sport=40005)
        stack.source.flow()
        stop_stack(stack)
        (msg,) = codec.decode(server.recv(65535))
    assert [t for t, _ in msg.templates] == [256, 257]
    assert [(tid, r["saddr"], r["sport"]) for tid, r in msg.records] == [
        (256, V4[0], 40001), (257, V6[0], 40005), (256, V4[0], 40001)]
    assert dict(msg.templates)[257][:2] == [(27, 16), (28, 16)]


def test_flush_every_second() -> None:
    with udp_server() as server:
        ctx, clock = fake_context(wall=1795770100.0)
        stack = stack_for(server.getsockname()[1], ctx)
        stack.source.flow()
        clock.advance(0.9375)
        ctx.loop.run_once(0)
        server.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.recv(65535)  # the partial message waits for the timer
        clock.advance(0.0625)
        ctx.loop.run_once(0)
        server.settimeout(5)
        got = server.recv(65535)
        assert len(codec.decode(got)[0].records) == 1
        stop_stack(stack)


def test_tcp_collector_down_at_start_then_restart() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx, clock = fake_context(wall=1795770100.0)
    stack = stack_for(port, ctx, proto="tcp")  # 2.0.8: connect fails, stack fails
    for _ in range(20):
        stack.source.flow()
    stack.sink._finish_message()  # type: ignore[attr-defined]

    def pump(until: Any) -> None:
        loop_until(ctx, until, stack.sink.flush)

    def read_all(conn: socket.socket, records: int) -> list[codec.Message]:
        conn.settimeout(5)
        data, msgs = b"", []
        while sum(len(m.records) for m in msgs) < records:
            data += conn.recv(65536)
            try:
                msgs = codec.decode(data)
            except ValueError:
                continue  # a message cut in two reads
        return msgs

    assert out(stack).backlog == 20
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen(1)
        clock.advance(1)  # the back-off after the refused connect
        pump(lambda: not out(stack).queue)
        conn, _ = server.accept()
        msgs = read_all(conn, 20)
        assert msgs[0].templates and sum(len(m.records) for m in msgs) == 20
        conn.close()
    pump(lambda: out(stack).sock is None)
    for _ in range(3):
        stack.source.flow(addrs=V6)
    stack.sink._finish_message()  # type: ignore[attr-defined]
    with socket.socket() as server:  # the collector restarts: a new session, templates first
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen(1)
        clock.advance(1)  # a second after the collector went away
        pump(lambda: not out(stack).queue)
        conn, _ = server.accept()
        msgs2 = read_all(conn, 3)
        conn.close()
    stop_stack(stack)
    assert {t for t, _ in msgs2[0].templates} >= {256}
    assert any(t == 257 for m in msgs2 for t, _ in m.templates)
    assert msgs2[-1].sequence == 20  # the sequence goes on across the sessions
    assert ctx.stats.get("ipfix.ipfix1.send_failures") == 0


def test_the_message_being_built_holds_the_commit_cursor() -> None:
    """The write-ahead log's cursor (io/wal.py): flows waiting in the IPFIX message being built
    (up to a second) are in memory only, so the cursor stays before them until the message is
    sent."""
    with udp_server() as server:
        ctx, clock = fake_context(wall=1795770100.0)
        stack = stack_for(server.getsockname()[1], ctx)
        sink = stack.sink
        assert sink.committed(ctx.seq) == ctx.seq == 0
        stack.source.flow()  # record 1: in the message being built
        sink.flush()
        assert ctx.seq == 1 and sink.committed(1) == 0
        stack.source.flow()  # record 2: the same message
        sink.flush()
        assert sink.committed(2) == 0
        clock.advance(1.0)  # the message's timer: it goes to the sender, and out
        ctx.loop.run_once(0)
        sink.flush()
        assert len(codec.decode(server.recv(65535))[0].records) == 2
        assert sink.committed(2) == 2
        stop_stack(stack)
