"""JSON: byte-exact against ulogd2 2.0.8's golden file, jansson's object rules, time stamps,
and the file/udp/tcp/unix transports (including peers that are down or go away)."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyulogd.core.clock import FakeClock
from pyulogd.core.context import Context
from pyulogd.core.errors import ConfigError, PluginError
from pyulogd.core.plugin import DataType, Filter, Key, KeyType, Source
from pyulogd.io.loop import Loop
from pyulogd.io.rtnl import LinkCache
from pyulogd.io.sender import PROBE_WAIT
from pyulogd.io.streamsink import SenderSink
from pyulogd.plugins.filters.ifindex import IfindexFilter
from pyulogd.plugins.filters.ip2str import Ip2strFilter
from pyulogd.plugins.outputs.json import JsonOutput, jansson_string, utc_offset
from tests.clocked import fake_context, loop_until, wait_for_socket_error
from tests.helpers import (
    BaseKeys,
    NflogKeys,
    golden_lines,
    golden_packets,
    goldentool,
    make_stack,
    stop_stack,
    typed_options,
)

T = KeyType


def set_tz(tz: str) -> None:
    os.environ["TZ"] = tz
    time.tzset()


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    old = os.environ.get("TZ")
    set_tz("UTC")
    yield
    if old is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = old
    time.tzset()


# -- golden
def test_golden_file_byte_for_byte(tmp_path: Path) -> None:
    """Every NFLOG/BASE value of the 44 golden packets through IFINDEX, IP2STR and JSON."""
    ctx = Context(loop=Loop())
    cache = LinkCache(ctx, kernel=False)
    cache.update({2: "gbb0"})
    ctx.ifcache = cache
    path = tmp_path / "out.json"
    stack = make_stack(
        [NflogKeys, BaseKeys, IfindexFilter, Ip2strFilter, (JsonOutput, {"file": str(path), "sync": 1})], ctx
    )
    base = stack.instances[1]
    for nflog, values, _obj, _emu in golden_packets():
        base.values = values  # type: ignore[attr-defined]
        stack.source.emit_dict(nflog)  # type: ignore[attr-defined]
    stop_stack(stack)
    assert stack.errors == 0
    got = path.read_text(encoding="utf-8")
    want = golden_lines("pkt-json")
    assert got.splitlines() == want  # byte for byte, field order and time stamps included
    tool = goldentool()
    assert tool.mask_json(got) == tool.mask_json("\n".join(want))


# -- a small stack for the object rules
class Src(Source):
    name = "SRC"
    output_type = DataType.PACKET
    output_keys = (
        Key("oob.prefix", T.STRING),
        Key("oob.time.sec", T.UINT32),
        Key("oob.time.usec", T.UINT32),
        Key("raw.pktlen", T.UINT32),
    )

    def push(self, prefix: str | None = "p", sec: int | None = 1795764130, usec: int | None = 5,
             pktlen: int | None = 60) -> None:  # fmt: skip
        self.emit([None, prefix, sec, usec, pktlen])


def json_stack(tmp_path: Path, ctx: Context | None = None, source: type[Source] = Src, **opts: Any) -> Any:
    options = {"file": str(tmp_path / "out.json"), **opts}
    return make_stack([source, (JsonOutput, options)], ctx or Context(loop=Loop()))


def lines(stack: Any, tmp_path: Path) -> list[str]:
    stack.sink.flush()
    return (tmp_path / "out.json").read_text(encoding="utf-8").splitlines()


def test_declarations() -> None:
    assert JsonOutput.name == "JSON" and JsonOutput.so_name == "ulogd_output_JSON.so"
    assert JsonOutput.wildcard_inputs
    assert {o.name: o.default for o in JsonOutput.options} == {
        "file": "/var/log/ulogd.json", "sync": 0, "timestamp": 1, "eventv1": 0, "device": "Netfilter",
        "boolean_label": 0, "mode": "file", "host": "127.0.0.1", "port": 12345,
        "queue": 1 << 20, "reconnect_max": 1,  # pyulogd extras, as SYSLOG/GRAPHITE/IPFIX
        "spool_dir": "", "spool_max": 1 << 30,  # issue 12: spill while the peer is away
        "tls": 0, "tls_ca": "", "tls_cert": "", "tls_key": "", "tls_server_name": "", "tls_verify": 1,
        "chain_key": "",  # pyulogd extra: tamper evidence (io/chain.py)
        "split_by": "",  # pyulogd extra: one file per project
    }  # fmt: skip


def test_basic_object(tmp_path: Path) -> None:
    stack = json_stack(tmp_path)
    stack.source.push()
    stack.source.push(usec=None)
    stack.source.push(prefix=None, pktlen=70000)
    assert lines(stack, tmp_path) == [
        '{"timestamp": "2026-11-27T07:22:10.000005", "dvc": "Netfilter", "oob.prefix": "p", '
        '"oob.time.sec": 1795764130, "oob.time.usec": 5, "raw.pktlen": 60}',
        '{"timestamp": "2026-11-27T07:22:10", "dvc": "Netfilter", "oob.prefix": "p", '
        '"oob.time.sec": 1795764130, "raw.pktlen": 60}',
        '{"timestamp": "2026-11-27T07:22:10.000005", "dvc": "Netfilter", '
        '"oob.time.sec": 1795764130, "oob.time.usec": 5, "raw.pktlen": 70000}',
    ]


def test_time_of_writing_without_packet_time(tmp_path: Path) -> None:
    ctx = Context(loop=Loop(FakeClock(wall=1795764188.7)))
    stack = json_stack(tmp_path, ctx)
    stack.source.push(sec=None, usec=None)
    stack.source.push(sec=None, usec=42)  # 2.0.8 uses a valid usec even with the current second
    got = lines(stack, tmp_path)
    assert got[0].startswith('{"timestamp": "2026-11-27T07:23:08", "dvc"')
    assert got[1].startswith('{"timestamp": "2026-11-27T07:23:08.000042", "dvc"')


def test_no_time_keys_upstream(tmp_path: Path) -> None:
    class FlowSrc(Source):
        name = "FLOWSRC"
        output_keys = (Key("ct.event", T.UINT32),)

    ctx = Context(loop=Loop(FakeClock(wall=1795764188.0)))
    stack = json_stack(tmp_path, ctx, FlowSrc)
    stack.source.emit([None, 4])
    want = '{"timestamp": "2026-11-27T07:23:08", "dvc": "Netfilter", "ct.event": 4}'
    assert lines(stack, tmp_path) == [want]


@pytest.mark.parametrize(
    ("tz", "suffix"),
    [("UTC", ""), ("Europe/Paris", "+0100"), ("CET-1", "+0100"), ("NST3:30", "-0330"),
     ("IST-5:30", "+0530"), ("ABC0:30", "+0030")],  # fmt: skip
)
def test_local_time_and_offset(tmp_path: Path, tz: str, suffix: str) -> None:
    set_tz(tz)
    stack = json_stack(tmp_path)
    stack.source.push(sec=1795764130, usec=None)
    tm = time.localtime(1795764130)
    want = time.strftime("%Y-%m-%dT%H:%M:%S", tm) + suffix
    assert lines(stack, tmp_path)[0].startswith(f'{{"timestamp": "{want}", ')


def test_utc_offset_quirks() -> None:
    assert utc_offset(0) == ""
    assert utc_offset(3600) == "+0100"
    assert utc_offset(-12600) == "-0330"
    assert utc_offset(-1800) == "+0030"  # C's truncating division loses the sign, as in 2.0.8
    assert utc_offset(20700) == "+0545"


def test_eventv1_device_and_no_timestamp(tmp_path: Path) -> None:
    stack = json_stack(tmp_path, eventv1=1, device='fw "1"')
    stack.source.push()
    assert lines(stack, tmp_path)[0].startswith(
        '{"@version": 1, "@timestamp": "2026-11-27T07:22:10.000005", "dvc": "fw \\"1\\"", "oob.prefix"'
    )
    (tmp_path / "out.json").unlink()
    stack = json_stack(tmp_path, timestamp=0)
    stack.source.push()
    assert lines(stack, tmp_path)[0].startswith('{"dvc": "Netfilter", "oob.prefix": "p", ')
    (tmp_path / "out.json").unlink()
    stack = json_stack(tmp_path, timestamp=0, eventv1=1)
    stack.source.push()
    assert lines(stack, tmp_path)[0].startswith('{"@version": 1, "dvc": "Netfilter", "oob.prefix"')


def test_device_not_utf8_drops_dvc(tmp_path: Path) -> None:
    bad = b"\xff".decode("utf-8", "surrogateescape")
    stack = json_stack(tmp_path, timestamp=0, device=bad)
    stack.source.push(prefix=None, sec=None, usec=None, pktlen=1)
    stack.source.emit([None, None, None, None, None])
    assert lines(stack, tmp_path) == ['{"raw.pktlen": 1}', "{}"]


def test_strings(tmp_path: Path) -> None:
    stack = json_stack(tmp_path, timestamp=0)
    stack.source.push(prefix='a"b\\c/d\n\t\x1b\x7fé€', sec=None, usec=None, pktlen=None)
    stack.source.push(prefix=b"x\xffy".decode("utf-8", "surrogateescape"), sec=None, usec=None)
    out = lines(stack, tmp_path)
    # jansson: \" \\ \n \t named, other controls \u00XX in upper case, DEL and / and UTF-8 as is
    assert out[0] == '{"dvc": "Netfilter", "oob.prefix": "a\\"b\\\\c/d\\n\\t\\u001B\x7fé€"}'
    # not UTF-8: jansson refuses the string and the field is left out
    assert out[1] == '{"dvc": "Netfilter", "raw.pktlen": 60}'
    for text in ("plain", "gbb0", "", "ünï", "\\u0041"):
        assert json.loads(jansson_string(text) or "null") == text


class Typed(Source):
    name = "TYPED"
    output_keys = (
        Key("u8", T.UINT8), Key("b", T.BOOL), Key("u16", T.UINT16), Key("u32", T.UINT32),
        Key("u64", T.UINT64), Key("i8", T.INT8), Key("i32", T.INT32), Key("i64", T.INT64),
        Key("addr", T.IPADDR), Key("raw", T.RAW), Key("rawstr", T.RAWSTR), Key("none", T.NONE),
        Key("raw.label", T.UINT8),
    )  # fmt: skip


def test_types(tmp_path: Path) -> None:
    stack = json_stack(tmp_path, Context(loop=Loop()), Typed, timestamp=0)
    stack.source.emit([None, 255, True, 65535, 4294967295, 2**64 - 1, -5, -70000, 7, b"\x7f\0\0\1",
                       b"raw", "0x00", 1, 0])  # fmt: skip
    stack.source.emit([None, 0, False, 0, 65536, 2**63 - 1, 0, 0, 0, None, None, None, None, 3])
    assert lines(stack, tmp_path) == [
        '{"dvc": "Netfilter", "u8": 255, "b": 1, "u16": 65535, "u32": 4294967295, "u64": -1, '
        '"i8": -5, "i32": -70000, "raw.label": 0}',
        '{"dvc": "Netfilter", "u8": 0, "b": 0, "u16": 0, "u32": 65536, "u64": 9223372036854775807, '
        '"i8": 0, "i32": 0, "raw.label": 3}',
    ]


def test_boolean_label(tmp_path: Path) -> None:
    stack = json_stack(tmp_path, Context(loop=Loop()), Typed, timestamp=0, boolean_label=1)
    row = [None] * 13
    stack.source.emit([None, *row[:12], 1])
    stack.source.emit([None, *row[:12], 0])
    assert lines(stack, tmp_path) == [
        '{"dvc": "Netfilter", "action": "allowed"}',
        '{"dvc": "Netfilter", "action": "blocked"}',
    ]


class Aliased(Source):
    """Keys as NFLOG/BASE/IP2STR give them: several keys per JSON name."""

    name = "ALIASED"
    output_keys = (
        Key("oob.protocol", T.UINT16),
        Key("tcp.sport", T.UINT16, cim="src_port"),
        Key("ip.protocol", T.UINT8),
        Key("udp.sport", T.UINT16, cim="src_port"),
        Key("ip.saddr.str", T.STRING, cim="src_ip"),
        Key("orig.ip.saddr.str", T.STRING, cim="src_ip"),
    )


class Shadow(Filter):
    """Re-emits oob.protocol like BASE/HWHDR: everything downstream reads this one."""

    name = "SHADOW"
    output_keys = (Key("oob.protocol", T.UINT16),)
    value: int | None = None

    def interp(self, rec: list[Any]) -> int:
        rec[self.out_base] = self.value
        return 0


def test_duplicate_names_first_position_last_value(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    stack = make_stack([Aliased, Shadow, (JsonOutput, {"file": str(path), "timestamp": 0})])
    shadow = stack.instances[1]
    assert isinstance(shadow, Shadow)
    emit = stack.source.emit
    shadow.value = 2048
    emit([None, 1, 40001, 6, None, "10.0.0.1", None])  # TCP: src_port where tcp.sport is
    emit([None, 1, None, 17, 53, "10.0.0.1", "10.9.9.9"])  # UDP: after ip.protocol; orig wins
    shadow.value = None  # the nearest producer left it invalid: absent, though NFLOG's is valid
    emit([None, 1, 80, 6, 53, None, "10.9.9.9"])  # both ports: tcp's place, udp's value
    assert lines(stack, tmp_path) == [
        '{"dvc": "Netfilter", "oob.protocol": 2048, "src_port": 40001, "ip.protocol": 6, '
        '"src_ip": "10.0.0.1"}',
        '{"dvc": "Netfilter", "oob.protocol": 2048, "ip.protocol": 17, "src_port": 53, '
        '"src_ip": "10.9.9.9"}',
        '{"dvc": "Netfilter", "src_port": 53, "ip.protocol": 6, "src_ip": "10.9.9.9"}',
    ]


# -- configuration
@pytest.mark.parametrize("mode", ["xml", "TCPX", ""])
def test_unknown_mode_is_a_config_error(tmp_path: Path, mode: str) -> None:
    with pytest.raises(ConfigError, match="file, tcp, udp, unix"):
        json_stack(tmp_path, mode=mode)


def test_mode_is_case_insensitive() -> None:
    for mode in ("FILE", "Tcp", "uDP", "UNIX"):
        out = JsonOutput(Context(loop=Loop()), "j", typed_options(JsonOutput, {"mode": mode}))
        out.configure()
        assert out.mode == mode.lower()


def test_unix_path_checks(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="longer than"):
        json_stack(tmp_path, mode="unix", file="/" + "x" * 120)
    with pytest.raises(ConfigError, match="missing unix socket path"):
        json_stack(tmp_path, mode="unix", file="")


def test_unresolvable_host_is_a_plugin_error(tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="cannot resolve"):
        json_stack(tmp_path, mode="tcp", host="no-such-host.invalid", port="1")


# -- file mode
def test_file_sync_and_batching(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    stack = json_stack(tmp_path)
    stack.source.push()
    assert path.read_text() == ""  # until the batch ends
    stack.sink.flush()
    assert len(path.read_text().splitlines()) == 1
    stop_stack(stack)
    path.unlink()
    stack = json_stack(tmp_path, sync=1)
    stack.source.push()
    stack.sink.flush()
    assert len(path.read_text().splitlines()) == 1
    stop_stack(stack)


def test_file_sighup_reopens(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    stack = json_stack(tmp_path)
    stack.source.push(prefix="before")
    path.rename(tmp_path / "old.json")
    stack.sink.signal(signal.SIGHUP)
    stack.source.push(prefix="after")
    stop_stack(stack)
    assert '"before"' in (tmp_path / "old.json").read_text()
    assert '"after"' in path.read_text() and '"before"' not in path.read_text()


# -- sockets
def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def recv_lines(conn: socket.socket, count: int) -> list[str]:
    conn.settimeout(5)
    data = b""
    while data.count(b"\n") < count:
        chunk = conn.recv(65536)
        assert chunk, "peer closed"
        data += chunk
    return data.decode().splitlines()


def test_udp_one_datagram_per_record(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(5)
        port = server.getsockname()[1]
        stack = json_stack(tmp_path, mode="udp", port=str(port))
        stack.source.push(prefix="a")
        stack.source.push(prefix="b")
        stack.sink.flush()
        first, second = server.recv(65536), server.recv(65536)
        stop_stack(stack)
    assert first.endswith(b"}\n") and first.count(b"\n") == 1 and b'"a"' in first
    assert json.loads(second)["oob.prefix"] == "b"
    assert not (tmp_path / "out.json").exists()


def test_udp_without_listener_counts_and_goes_on(tmp_path: Path) -> None:
    ctx, _ = fake_context()
    stack = json_stack(tmp_path, ctx, mode="udp", port=str(free_port(socket.SOCK_DGRAM)), spool_max="0")
    stack.source.push()
    stack.sink.flush()  # sent; the port unreachable comes back as ECONNREFUSED on the next send
    wait_for_socket_error(sender(stack).sock)
    stack.source.push()
    stack.sink.flush()  # refused: the first one is counted lost, this one waits for the peer
    assert ctx.stats.get("json.json1.send_failures") == 1
    stack.source.push()
    stack.sink.flush()  # must not raise; queued (the next attempt is a second away)
    assert sender(stack).sender.backlog == 2
    stop_stack(stack)
    assert ctx.stats.get("json.json1.send_failures") == 3  # the queued ones are lost at exit


def test_tcp_lines_and_sync(tmp_path: Path) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        stack = json_stack(tmp_path, mode="TCP", port=str(server.getsockname()[1]), sync=1)
        conn, _ = server.accept()
        with conn:
            stack.source.push(prefix="one")  # sync: sent at once
            assert json.loads(recv_lines(conn, 1)[0])["oob.prefix"] == "one"
            for i in range(100):
                stack.source.push(prefix=f"n{i}")
            got = recv_lines(conn, 100)
            assert [json.loads(x)["oob.prefix"] for x in got] == [f"n{i}" for i in range(100)]
            stop_stack(stack)


def test_unix_stream(tmp_path: Path) -> None:
    path = str(tmp_path / "json.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen(1)
        stack = json_stack(tmp_path, mode="unix", file=path)
        conn, _ = server.accept()
        with conn:
            stack.source.push(prefix="u1")
            stack.source.push(prefix="u2")
            stack.sink.flush()
            assert [json.loads(x)["oob.prefix"] for x in recv_lines(conn, 2)] == ["u1", "u2"]
            stop_stack(stack)


def sender(stack: Any) -> SenderSink[str]:
    out = stack.sink.out
    assert isinstance(out, SenderSink)
    return out


def pump(ctx: Context, stack: Any, until: Any) -> None:
    """Run the loop (retry timers) and flush until ``until()``; the fake clock stands still."""
    loop_until(ctx, until, stack.sink.flush)


def test_tcp_peer_down_at_start_then_up(tmp_path: Path) -> None:
    ctx, clock = fake_context()
    port = free_port(socket.SOCK_STREAM)
    stack = json_stack(tmp_path, ctx, mode="tcp", port=str(port))  # must not raise
    pump(ctx, stack, lambda: sender(stack).sock is None)  # the refused connect is noticed
    for i in range(3):
        stack.source.push(prefix=f"down{i}")
        stack.sink.flush()  # must not raise or block
    assert sender(stack).sender.backlog == 3
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen(1)
        clock.advance(0.1)
        stack.source.push(prefix="early")
        stack.sink.flush()  # within the first wait (0.125 to 0.25 s): no reconnect yet, kept
        ctx.loop.run_once(0)
        assert sender(stack).sender.backlog == 4 and sender(stack).sock is None
        clock.advance(0.15)
        stack.source.push(prefix="late")
        pump(ctx, stack, lambda: not sender(stack).pending and not sender(stack).sender.queue)
        conn, _ = server.accept()
        with conn:
            got = [json.loads(x)["oob.prefix"] for x in recv_lines(conn, 5)]
            stop_stack(stack)
    assert got == ["down0", "down1", "down2", "early", "late"]  # every record, in order
    assert ctx.stats.get("json.json1.send_failures") == 0
    assert ctx.stats.get("json.json1.sent") == 5


def test_tcp_peer_goes_away_and_comes_back(tmp_path: Path) -> None:
    ctx, clock = fake_context()
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(2)
        stack = json_stack(tmp_path, ctx, mode="tcp", port=str(server.getsockname()[1]))
        conn, _ = server.accept()
        stack.source.push(prefix="a")
        stack.sink.flush()
        assert recv_lines(conn, 1)
        conn.close()
        pump(ctx, stack, lambda: sender(stack).sock is None)  # the loop sees the peer's close
        stack.source.push(prefix="during")
        stack.sink.flush()  # no raise, queued
        clock.advance(0.1)
        ctx.loop.run_once(0)
        stack.sink.flush()
        assert sender(stack).sender.backlog == 1 and sender(stack).sock is None  # the first wait after the break
        clock.advance(0.15)
        stack.source.push(prefix="b")
        pump(ctx, stack, lambda: not sender(stack).pending and not sender(stack).sender.queue)
        conn2, _ = server.accept()
        with conn2:
            got = [json.loads(x)["oob.prefix"] for x in recv_lines(conn2, 2)]
            stop_stack(stack)
    assert got == ["during", "b"]
    assert ctx.stats.get("json.json1.send_failures") == 0
    assert ctx.stats.get("json.json1.reconnects") == 1


def test_queue_overflow_counted_and_reported(tmp_path: Path) -> None:
    ctx, clock = fake_context()
    ctx.log.set_destination(str(tmp_path / "ulogd.log"))
    port = free_port(socket.SOCK_STREAM)
    stack = json_stack(tmp_path, ctx, mode="tcp", port=str(port), queue=2000, spool_max=0)  # memory only
    pump(ctx, stack, lambda: sender(stack).sock is None)  # the refused connect is noticed
    for i in range(50):
        stack.source.push(prefix=f"r{i:02d}")
        stack.sink.flush()
    kept = sender(stack).sender.backlog
    assert 0 < kept < 50
    assert ctx.stats.get("json.json1.queue_overflow") == 50 - kept
    assert ctx.stats.get("json.json1.send_failures") == 50 - kept
    assert "queue full" in (ctx.log.last_error or "")
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen(1)
        clock.advance(1)  # the back-off after the refused connect
        pump(ctx, stack, lambda: not sender(stack).sender.queue)
        conn, _ = server.accept()
        with conn:
            got = [json.loads(x)["oob.prefix"] for x in recv_lines(conn, kept)]
            stop_stack(stack)
    assert got == [f"r{i:02d}" for i in range(kept)]  # the oldest records are the ones kept
    log = (tmp_path / "ulogd.log").read_text()
    assert f"({50 - kept} records were lost)" in log  # the end of the burst is reported


def test_queue_zero_drops_while_down(tmp_path: Path) -> None:
    """``queue=0``: 2.0.8's behaviour, records are dropped (and counted) while the peer is down."""
    ctx, _ = fake_context()
    stack = json_stack(tmp_path, ctx, mode="tcp", port=str(free_port(socket.SOCK_STREAM)), queue=0,
                       spool_max=0)
    pump(ctx, stack, lambda: sender(stack).sock is None)  # the refused connect is noticed
    for _ in range(3):
        stack.source.push()
        stack.sink.flush()
    assert ctx.stats.get("json.json1.send_failures") == 3
    assert "not connected" in (ctx.log.last_error or "")
    assert ctx.stats.get("json.json1.queue_overflow") == 3
    stop_stack(stack)


def test_udp_peer_down_at_start_then_up(tmp_path: Path) -> None:
    ctx, clock = fake_context()
    port = free_port(socket.SOCK_DGRAM)
    stack = json_stack(tmp_path, ctx, mode="udp", port=str(port))
    stack.source.push(prefix="u0")
    stack.sink.flush()
    wait_for_socket_error(sender(stack).sock)  # the port unreachable for u0 is back
    for i in (1, 2):
        stack.source.push(prefix=f"u{i}")
        stack.sink.flush()
    # The datagram UDP reports as refused is lost (it was sent); the rest wait.
    assert ctx.stats.get("json.json1.send_failures") == 1 and sender(stack).sender.backlog == 2
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", port))
        server.settimeout(5)
        clock.advance(1)  # the back-off: then one probe datagram ...
        pump(ctx, stack, lambda: sender(stack).sender.backlog == 1)
        assert json.loads(server.recv(65536))["oob.prefix"] == "u1"
        clock.advance(PROBE_WAIT)  # ... and the rest if no refusal came back meanwhile
        pump(ctx, stack, lambda: not sender(stack).sender.queue)
        assert json.loads(server.recv(65536))["oob.prefix"] == "u2"
        stop_stack(stack)
    assert ctx.stats.get("json.json1.reconnects") == 1


def test_unix_peer_down_at_start_then_up(tmp_path: Path) -> None:
    ctx, clock = fake_context()
    path = str(tmp_path / "json.sock")
    stack = json_stack(tmp_path, ctx, mode="unix", file=path)  # no socket yet: not fatal
    for i in range(3):
        stack.source.push(prefix=f"x{i}")
        stack.sink.flush()
    assert sender(stack).sender.backlog == 3
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen(1)
        server.settimeout(5)
        clock.advance(0.1)
        ctx.loop.run_once(0)
        assert sender(stack).sock is None
        clock.advance(0.15)
        ctx.loop.run_once(0)  # the retry timer reconnects (0.25 s at most) and sends the queue
        conn, _ = server.accept()
        with conn:
            got = [json.loads(x)["oob.prefix"] for x in recv_lines(conn, 3)]
            stop_stack(stack)
    assert got == ["x0", "x1", "x2"]
    assert ctx.stats.get("json.json1.send_failures") == 0


def test_sighup_reconnects_socket(tmp_path: Path) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(2)
        stack = json_stack(tmp_path, mode="tcp", port=str(server.getsockname()[1]))
        first, _ = server.accept()
        stack.sink.signal(signal.SIGHUP)
        second, _ = server.accept()
        with first, second:
            stack.source.push(prefix="x")
            stack.sink.flush()
            assert json.loads(recv_lines(second, 1)[0])["oob.prefix"] == "x"
            first.settimeout(2)
            assert first.recv(10) == b""  # the old connection was closed
            stop_stack(stack)


def test_slow_peer_does_not_block(tmp_path: Path) -> None:
    ctx = Context(loop=Loop())
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        stack = json_stack(tmp_path, ctx, mode="tcp", port=str(server.getsockname()[1]), spool_max=0)
        conn, _ = server.accept()
        with conn:
            start = time.monotonic()
            n = 0
            for _ in range(200):  # never read: the socket buffers fill up
                for _ in range(100):
                    stack.source.push(prefix=f"{n:06d}" + "z" * 200)
                    n += 1
                stack.sink.flush()
            assert time.monotonic() - start < 20
            assert ctx.stats.get("json.json1.send_failures") > 0
            # whatever arrived is whole lines, in order, possibly with a gap
            sender(stack).sender.disconnect()
            conn.settimeout(5)
            data = b""
            while chunk := conn.recv(1 << 20):
                data += chunk
            complete = data.split(b"\n")[:-1]  # a line begun when the link went down stays cut
            assert len(complete) > 100
            numbers = [int(json.loads(text)["oob.prefix"][:6]) for text in complete]
            assert numbers == sorted(set(numbers))  # in order, whole, possibly with gaps
            assert numbers[0] == 0
            stop_stack(stack)
