"""IPFIXIN, the flow collector input: options and what they refuse, the UDP and TCP sockets
on loopback (ephemeral ports), the allowlist, bad input among good, the expiry timer on a
fake clock, stacks written for NFCT (IP2STR, PRINTFLOW, LOGEMU, JSON) taking its records, and
pyulogd's own IPFIX output received back key for key. The codec itself:
test_ipfixin_codec.py; real exporters (softflowd, ulogd2, Open vSwitch) and nfcapd:
tests/linux/test_ipfixin_live.py."""

from __future__ import annotations

import json
import socket
import struct
from pathlib import Path
from typing import Any

import pytest

from pyulogd.codec.ipfixin import keys as K
from pyulogd.core.config import parse_text
from pyulogd.core.context import Context
from pyulogd.core.errors import ConfigError
from pyulogd.daemon.service import Service
from pyulogd.plugins.filters.ip2str import Ip2strFilter
from pyulogd.plugins.filters.printflow import PrintflowFilter
from pyulogd.plugins.inputs.ipfixin import IpfixinInput
from pyulogd.plugins.outputs.ipfix import IpfixOutput
from pyulogd.plugins.outputs.json import JsonOutput
from pyulogd.plugins.outputs.logemu import LogemuOutput
from tests.clocked import fake_context, loop_until
from tests.helpers import Capture, make_stack, stop_stack
from tests.unit.test_ipfix import V4, V6, FlowSource
from tests.unit.test_ipfixin_codec import GOOD, MALFORMED, T4, ipfix, r4

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "ipfix"
T0 = 1_800_000_000.0


def collector(ctx: Context | None = None, **opts: Any) -> tuple[Any, IpfixinInput, Capture]:
    ctx = ctx or fake_context(wall=T0)[0]
    stack = make_stack([(IpfixinInput, {"port": 0, **opts}), Capture], ctx)
    src = stack.source
    assert isinstance(src, IpfixinInput) and isinstance(stack.sink, Capture)
    return stack, src, stack.sink


def values(cap: Capture, src: IpfixinInput) -> list[dict[str, Any]]:
    base = src.out_base
    return [{k: rec[base + i] for i, k in enumerate(K.KEYS) if rec[base + i] is not None} for rec in cap.records]


def sender(family: int = socket.AF_INET) -> socket.socket:
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1" if family == socket.AF_INET else "::1", 0))
    return s


# -- configuration


@pytest.mark.parametrize(("opts", "msg"), [
    ({"host": "0.0.0.0"}, "listening on 0.0.0.0, beyond loopback, needs exporters="),
    ({"host": "::"}, "beyond loopback, needs exporters="),
    ({"exporters": "10.0.0.0/33"}, "'10.0.0.0/33' is not an address or a network"),
    ({"exporters": "example.org"}, "'example.org' is not an address or a network"),
    ({"proto": "sctp"}, "unknown protocol 'sctp' \\(valid: udp, tcp\\)"),
    ({"template_timeout": "0"}, "must be greater than 0"),
    ({"max_templates": "0"}, "must be between 1 and 1048576"),
    ({"port": "65536"}, "must be between 0 and 65535"),
])  # fmt: skip
def test_config_errors(opts: dict[str, Any], msg: str) -> None:
    with pytest.raises(ConfigError, match=msg):
        make_stack([(IpfixinInput, opts), Capture], start=False)


def test_config_error_names_file_and_line(tmp_path: Path) -> None:
    conf = tmp_path / "ulogd.conf"
    text = ('[global]\nstack=f1:IPFIXIN,j1:JSON\n\n[f1]\nhost="0.0.0.0"\nexporters="10.0.0.0/8,bogus"\n'
            '[j1]\nfile="' + str(tmp_path / "x.json") + '"\n')  # fmt: skip
    svc = Service(str(conf), fake_context(wall=T0)[0])
    with pytest.raises(ConfigError) as ei:
        svc.load_config(parse_text(text, str(conf)))
    assert str(ei.value) == f"{conf}:6: option 'exporters' of 'f1': 'bogus' is not an address or a network " \
                            "(10.0.0.0/8, 192.0.2.7, fd00::/8)"  # fmt: skip
    text = text.replace(',bogus"', '"').replace('exporters="10.0.0.0/8"\n', "")
    with pytest.raises(ConfigError) as ei:
        Service(str(conf), fake_context(wall=T0)[0]).load_config(parse_text(text, str(conf)))
    assert str(ei.value).startswith(f"{conf}:2: IPFIXIN 'f1': listening on 0.0.0.0, beyond loopback, needs exporters=")


def test_wildcard_address_with_allowlist_starts() -> None:
    stack, src, _cap = collector(host="0.0.0.0", exporters="127.0.0.0/8")
    try:
        assert src.port > 0
    finally:
        stop_stack(stack)


# -- UDP


def test_udp_records_on_loopback() -> None:
    ctx, _clock = fake_context(wall=T0)
    stack, src, cap = collector(ctx)
    try:
        with sender() as s:
            s.sendto(ipfix(0, 3, T4, (256, r4("10.0.0.1", "10.0.0.2", 4000, 80))), ("127.0.0.1", src.port))
            for i in range(20):
                s.sendto(ipfix(1 + i, 3, (256, r4("10.0.0.1", "10.0.0.2", 5000 + i, 443))), ("127.0.0.1", src.port))
            port = s.getsockname()[1]
            loop_until(ctx, lambda: len(cap.records) == 21)
        got = values(cap, src)
        assert [r["orig.l4.sport"] for r in got] == [4000] + list(range(5000, 5020))
        assert {r["ipfix.exporter"] for r in got} == {f"127.0.0.1:{port}"}
        assert ctx.stats.get("ipfixin.ipfixin0.messages") == 21 and ctx.stats.get("ipfixin.ipfixin0.seq_gaps") == 0
    finally:
        stop_stack(stack)


def test_udp_ipv6_listener() -> None:
    ctx, _clock = fake_context(wall=T0)
    stack, src, cap = collector(ctx, host="::1")
    try:
        with sender(socket.AF_INET6) as s:
            s.sendto(GOOD, ("::1", src.port))
            loop_until(ctx, lambda: len(cap.records) == 1)
            assert values(cap, src)[0]["ipfix.exporter"] == f"[::1]:{s.getsockname()[1]}"
    finally:
        stop_stack(stack)


def test_bad_input_never_stops_the_collector() -> None:
    """Every malformed message and random junk among good ones: the good ones all come
    through, each bad one counted by its cause, nothing raised into the loop."""
    ctx, _clock = fake_context(wall=T0)
    stack, src, cap = collector(ctx)
    try:
        with sender() as s:
            junk = [*MALFORMED.values(), b"", b"\x00\x0a", bytes(range(256)), b"\x00\x09" + bytes(40),
                    b"\x00\x05\x00\x01" + bytes(20)]  # fmt: skip
            for i, bad in enumerate(junk):
                s.sendto(bad, ("127.0.0.1", src.port))
                s.sendto(ipfix(i, 1, T4, (256, r4("10.0.0.1", "10.0.0.2", i, 80))), ("127.0.0.1", src.port))
            loop_until(ctx, lambda: len(cap.records) == len(junk))
        assert [r["orig.l4.sport"] for r in values(cap, src)] == list(range(len(junk)))
        p = "ipfixin.ipfixin0."
        assert ctx.stats.get(p + "malformed") + ctx.stats.get(p + "bad_version") == len(junk)
        for cause in MALFORMED:
            assert ctx.stats.get(f"{p}malformed.{cause}") >= 1, cause
        assert ctx.stats.get(p + "decoder_errors") == 0
    finally:
        stop_stack(stack)


def test_allowlist_drops_and_counts_others() -> None:
    ctx, _clock = fake_context(wall=T0)
    stack, src, cap = collector(ctx, exporters="192.0.2.0/24, 10.1.2.3")
    try:
        with sender() as s:
            s.sendto(GOOD, ("127.0.0.1", src.port))
            loop_until(ctx, lambda: ctx.stats.get("ipfixin.ipfixin0.denied") == 1)
        assert cap.records == []
        src.feed(GOOD, "192.0.2.77", 4739)
        src.feed(GOOD, "10.1.2.4", 4739)
        src.feed(GOOD, "::ffff:10.1.2.3", 4739)  # IPv4-mapped: the IPv4 address counts
        assert [r["ipfix.exporter"] for r in values(cap, src)] == ["192.0.2.77:4739", "10.1.2.3:4739"]
        assert ctx.stats.get("ipfixin.ipfixin0.denied") == 2
    finally:
        stop_stack(stack)


def test_loopback_listener_without_allowlist_takes_loopback_only() -> None:
    ctx, _clock = fake_context(wall=T0)
    stack, src, cap = collector(ctx)
    try:
        src.feed(GOOD, "10.9.9.9", 1)
        src.feed(GOOD, "127.0.0.2", 1)
        assert len(cap.records) == 1 and ctx.stats.get("ipfixin.ipfixin0.denied") == 1
    finally:
        stop_stack(stack)


def test_held_data_expires_on_the_timer() -> None:
    ctx, clock = fake_context(wall=T0)
    stack, src, cap = collector(ctx, template_timeout="30")
    try:
        src.feed(ipfix(0, 1, (256, r4("10.0.0.1", "10.0.0.2", 7, 8))))
        clock.advance(29.0)
        ctx.loop.run_once(0)
        src.feed(ipfix(1, 1, T4))  # in time: the held set decodes
        assert len(cap.records) == 1 and ctx.stats.get("ipfixin.ipfixin0.held_decoded") == 1
        src.feed(ipfix(1, 2, (256, r4("10.0.0.1", "10.0.0.2", 7, 8))))
        for _ in range(4):
            clock.advance(10.0)
            ctx.loop.run_once(0)
        assert ctx.stats.get("ipfixin.ipfixin0.held_expired") == 1
        # The template of domain 1 was last sent 40 s ago: expired too.
        assert ctx.stats.get("ipfixin.ipfixin0.templates_expired") == 1
    finally:
        stop_stack(stack)


def test_extra_map_is_built_only_when_a_stack_reads_it(tmp_path: Path) -> None:
    ctx, _clock = fake_context(wall=T0)
    stack = make_stack([(IpfixinInput, {"port": 0}), Ip2strFilter, PrintflowFilter,
                        (LogemuOutput, {"file": str(tmp_path / "f.log")})], ctx)  # fmt: skip
    try:
        src = stack.source
        assert isinstance(src, IpfixinInput) and src.collector is not None and src.collector.extra is False
    finally:
        stop_stack(stack)
    stack2, src2, _cap = collector()
    try:
        assert src2.collector is not None and src2.collector.extra is True
    finally:
        stop_stack(stack2)


def test_extra_0_leaves_the_map_out_of_json_and_nothing_else(tmp_path: Path) -> None:
    """extra=0: JSON reads ipfix.extra, yet no map is built and the lines lack only that key."""
    ctx, _clock = fake_context(wall=T0)
    texts = {}
    for extra in (1, 0):
        out = tmp_path / f"extra{extra}.json"
        stack = make_stack([(IpfixinInput, {"port": 0, "extra": str(extra)}), Ip2strFilter,
                            (JsonOutput, {"file": str(out)})], ctx)  # fmt: skip
        src = stack.source
        try:
            assert isinstance(src, IpfixinInput) and src.collector is not None
            assert src.collector.extra is bool(extra)
            for line in (VECTORS / "softflowd-replay" / "biflow_ms" / "biflow_ms.hexlog").read_text().splitlines():
                src.feed(bytes.fromhex(line.split()[3]))
        finally:
            stop_stack(stack)
        texts[extra] = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(texts[1]) == len(texts[0]) == 13
    assert all("ipfix.extra" in obj for obj in texts[1])
    assert [{k: v for k, v in obj.items() if k not in ("ipfix.extra", "timestamp")} for obj in texts[1]] == [
        {k: v for k, v in obj.items() if k != "timestamp"} for obj in texts[0]
    ]


# -- the stacks written for NFCT


def test_nfct_stacks_take_exported_flows(tmp_path: Path) -> None:
    ctx, _clock = fake_context(wall=T0)
    log = tmp_path / "flows.log"
    out = tmp_path / "flows.json"
    s1 = make_stack([(IpfixinInput, {"port": 0}), Ip2strFilter, PrintflowFilter, (LogemuOutput, {"file": str(log)})],
                    ctx)  # fmt: skip
    src = s1.source
    s2 = make_stack([src, Ip2strFilter, (JsonOutput, {"file": str(out)})], ctx)
    try:
        for line in (VECTORS / "softflowd-replay" / "biflow_ms" / "biflow_ms.hexlog").read_text().splitlines():
            assert isinstance(src, IpfixinInput)
            src.feed(bytes.fromhex(line.split()[3]))
    finally:
        for inst in s2.instances[1:] + s1.instances[1:]:
            inst.stop()
        src.stop()
    lines = log.read_text().splitlines()
    assert len(lines) == 13
    assert ("[DESTROY] ORIG: SRC=10.77.0.1 DST=10.77.0.2 PROTO=TCP SPT=37810 DPT=5001 PKTS=6 BYTES=420 , "
            "REPLY: SRC=10.77.0.2 DST=10.77.0.1 PROTO=TCP SPT=5001 DPT=37810 PKTS=4 BYTES=416") in log.read_text()
    objs = [json.loads(x) for x in out.read_text().splitlines()]
    tcp = next(o for o in objs if o.get("orig.l4.sport") == 37810)
    assert tcp["src_ip"] == "10.77.0.1" and tcp["dest_ip"] == "10.77.0.2" and tcp["reply.raw.pktlen"] == 416
    assert tcp["ipfix.extra"] == {"ipVersion": 4, "ipClassOfService": 0, "reverseTcpControlBits": 27,
                                  "reverseIpClassOfService": 0}  # fmt: skip


# -- round trip through pyulogd's own IPFIX output


def flows(stack: Any) -> list[dict[str, Any]]:
    sent = [dict(addrs=V4, sport=40000 + i, pkts=(i, 1), nbytes=(100 * i, 50), mark=i) for i in range(40)]
    sent += [dict(addrs=V6, sport=50000 + i, proto=17, pkts=(2, 2), nbytes=(200, 200)) for i in range(10)]
    sent += [dict(addrs=V4, sport=None, proto=1, pkts=(1, 1), nbytes=(84, 84))]
    for f in sent:
        stack.source.flow(**f)
    return sent


def expected_back(f: dict[str, Any]) -> dict[str, Any]:
    """What ulogd2's template carries of a flow (FlowSource's times: 1795770000.000001 and
    1795770009.000002): both directions' packets and bytes added, whole seconds, ports 0 for a
    flow without ports, ct.mark as applicationId."""
    saddr, daddr = f["addrs"]
    return {
        "orig.ip.saddr": saddr, "orig.ip.daddr": daddr, "orig.ip.protocol": f.get("proto", 6),
        "orig.l4.sport": f["sport"] or 0, "orig.l4.dport": 7001 if f["sport"] else 0,
        "orig.raw.pktcount": sum(f["pkts"]), "orig.raw.pktlen": sum(f["nbytes"]),
        "flow.start.sec": 1795770000, "flow.start.usec": 0, "flow.end.sec": 1795770009, "flow.end.usec": 0,
        "oob.family": 2 if len(saddr) == 4 else 10, "oob.protocol": 2048 if len(saddr) == 4 else 34525,
        "ipfix.version": 10, "ipfix.odid": 7, "ipfix.template_id": 256 if len(saddr) == 4 else 257,
        "ipfix.extra": {"applicationId": struct.pack("!I", f.get("mark", 0)).hex()},
    }  # fmt: skip


@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_round_trip_with_pyulogds_ipfix_output(proto: str) -> None:
    ctx, _clock = fake_context(wall=1795770100.0)
    rx, src, cap = collector(ctx, proto=proto)
    tx = make_stack([FlowSource, (IpfixOutput, {"oid": 7, "host": "127.0.0.1", "port": src.port, "proto": proto})],
                    ctx)  # fmt: skip
    try:
        sent = flows(tx)
        sink: Any = tx.sink
        sink._tick()  # the output's one-second timer: finish and send the partial message
        loop_until(ctx, lambda: len(cap.records) == len(sent), flush=sink.flush)
        got = values(cap, src)
        for f, r in zip(sent, got, strict=True):
            exporter = r.pop("ipfix.exporter")
            assert exporter.startswith("127.0.0.1:")
            assert r.pop("ipfix.export_time") == 1795770100
            assert r == expected_back(f)
        p = "ipfixin.ipfixin0."
        assert ctx.stats.get(p + "seq_gaps") == 0 and ctx.stats.get(p + "malformed") == 0
        if proto == "tcp":
            assert ctx.stats.get(p + "tcp_clients") == 1
    finally:
        stop_stack(tx)
        stop_stack(rx)


def test_tcp_stream_split_anywhere_and_bad_stream_closed() -> None:
    ctx, _clock = fake_context(wall=T0)
    stack, src, cap = collector(ctx, proto="tcp")
    try:
        stream = GOOD + ipfix(1, 1, (256, r4("10.0.0.3", "10.0.0.4", 5, 6)))
        with socket.create_connection(("127.0.0.1", src.port)) as c:
            for i in range(0, len(stream), 7):  # 7-byte pieces: messages cut anywhere
                c.sendall(stream[i : i + 7])
                ctx.loop.run_once(0.01)
            loop_until(ctx, lambda: len(cap.records) == 2)
            c.sendall(b"\x00\x09\x00\x10" + bytes(12))  # NetFlow v9 is not spoken over TCP: closed
            loop_until(ctx, lambda: ctx.stats.get("ipfixin.ipfixin0.tcp_bad_stream") == 1)
            c.settimeout(5)
            assert c.recv(10) == b""
        assert [r["orig.l4.sport"] for r in values(cap, src)] == [1, 5]
        assert src.conns == {}
    finally:
        stop_stack(stack)


def test_tcp_session_templates_end_with_the_connection() -> None:
    ctx, _clock = fake_context(wall=T0)
    stack, src, cap = collector(ctx, proto="tcp")
    try:
        with socket.create_connection(("127.0.0.1", src.port)) as c:
            c.sendall(GOOD)
            loop_until(ctx, lambda: len(cap.records) == 1)
        loop_until(ctx, lambda: src.conns == {})
        assert src.collector is not None and src.collector.exporters == {}
    finally:
        stop_stack(stack)


def test_json_writes_a_map_as_a_nested_object() -> None:
    from pyulogd.plugins.outputs.json import json_map

    value = {"a": 1, "b": "x\"y", "c": [True, None, 2.5], "d": {"e": float("nan")}, "f": b"\x01\x02",
             "g": "bad \udcff byte"}  # fmt: skip
    text = json_map(value)
    assert text == ('{"a": 1, "b": "x\\"y", "c": [true, null, 2.5], "d": {"e": null}, "f": "0102", '
                    '"g": "bad \\\\xff byte"}')  # fmt: skip
    assert json.loads(text)["g"] == "bad \\xff byte"  # undecodable bytes escaped as everywhere (core/escape.py)


def test_drops_at_a_full_socket_buffer_are_counted() -> None:
    """Datagrams the kernel drops because the receive buffer is full (the most common loss of
    a UDP collector) are counted, from the socket's own counter: sent = decoded + dropped."""
    ctx, _clock = fake_context(wall=T0)
    stack, src, cap = collector(ctx, socket_buffer_size=4096)  # the kernel's minimum: a few datagrams
    try:
        sent = 200
        with sender() as s:
            for i in range(sent):  # the loop does not run meanwhile: most must be dropped
                s.sendto(ipfix(i, 1, T4, (256, r4("10.0.0.1", "10.0.0.2", i, 80))), ("127.0.0.1", src.port))
        p = "ipfixin.ipfixin0."
        loop_until(ctx, lambda: len(cap.records) + ctx.stats.get(p + "socket_drops") == sent)
        assert 0 < len(cap.records) < sent and ctx.stats.get(p + "socket_drops") > 0
        assert ctx.stats.get(p + "messages") == len(cap.records)
    finally:
        stop_stack(stack)
