"""UNIXSOCK (spec 4.5): wire format, several clients, errors that drop one client only, the client."""

from __future__ import annotations

import os
import socket
import stat
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from pyulogd.codec import unixsock as codec
from pyulogd.core.context import Context
from pyulogd.core.errors import ConfigError, DecodeError, PluginError
from pyulogd.core.stack import Stack
from pyulogd.ctl.unixsock import UnixsockClient, main, read_pcap, udp_packet
from pyulogd.io.loop import Loop
from pyulogd.plugins.filters.base import BaseFilter
from pyulogd.plugins.filters.ip2str import Ip2strFilter
from pyulogd.plugins.inputs.unixsock import UnixsockInput
from tests.helpers import Capture, make_stack, stop_stack

V4 = udp_packet("192.0.2.1", "192.0.2.2", 4000, 53, b"hello")
V6 = udp_packet("2001:db8::1", "2001:db8::2", 4000, 53, b"hello6")


def test_frame_layout_is_ulogd2s() -> None:
    """Byte for byte what spec 4.5 describes (verified against ulogd2 with a Python client)."""
    frame = codec.encode(b"\x45" + bytes(19), prefix="ab", time_sec=7)
    marker, total, version, plen = struct.unpack_from(">IHIH", frame)
    assert (marker, version, plen) == (0x41C90FD4, 0, 20)
    assert total == len(frame) - 4
    assert frame[12:32] == b"\x45" + bytes(19) and frame[32:36] == bytes(4)  # padded to 24
    assert frame[36:44] == struct.pack(">II", 1, 3) and frame[44:52] == b"ab\x00" + bytes(5)
    assert frame[52:60] == struct.pack(">II", 4, 4) and frame[60:64] == struct.pack("=I", 7)
    assert len(frame) == 68


def test_decode_every_option() -> None:
    frame = codec.encode(
        V4, prefix="pfx ", indev="eth0", outdev="eth1", time_sec=1700000000, user="alice", user_id=1000,
        os_name="Linux", os_release="6.1", os_version="#1 SMP", app_name="/usr/bin/curl", state=2,
    )  # fmt: skip
    v = codec.decode_frame(frame)
    d = dict(zip(codec.KEYS, v[1:], strict=True))
    assert d["raw.pkt"] == V4 and d["raw.pktlen"] == len(V4) and d["raw.pktcount"] == 1
    assert d["oob.family"] == 2 and d["oob.protocol"] is None
    assert (d["oob.prefix"], d["oob.in"], d["oob.out"], d["oob.time.sec"]) == ("pfx ", "eth0", "eth1", 1700000000)
    assert (d["nufw.user.name"], d["nufw.user.id"], d["nufw.os.name"]) == ("alice", 1000, "Linux")
    assert (d["nufw.os.rel"], d["nufw.os.vers"], d["nufw.app.name"], d["raw.label"]) == (
        "6.1", "#1 SMP", "/usr/bin/curl", 2)  # fmt: skip
    assert d["oob.time.usec"] is None and d["oob.mark"] is None and d["raw.mac"] is None
    assert codec.decode_frame(codec.encode(V6))[codec.I_FAMILY] == 10
    assert codec.decode_frame(codec.encode(b"\x10abc"))[codec.I_FAMILY] == 0


def test_unknown_options_and_malformed_frames() -> None:
    unknown: list[int] = []
    v = codec.decode_frame(codec.encode(V4, extra=((99, b"x"), (1, b"p\x00"))), unknown)
    assert unknown == [99] and v[codec.KEYS.index("oob.prefix") + 1] == "p"
    runs_past = bytearray(codec.encode(V4, prefix="x") + struct.pack(">II", 1, 100))
    struct.pack_into(">H", runs_past, 4, len(runs_past) - 4)
    with pytest.raises(DecodeError, match="beyond the end"):
        codec.decode_frame(bytes(runs_past))  # an option longer than what is left
    bad = bytearray(codec.encode(V4))
    struct.pack_into(">H", bad, 10, 999)  # payload_length beyond the frame
    with pytest.raises(DecodeError):
        codec.decode_frame(bytes(bad))
    with pytest.raises(DecodeError):
        codec.decode_frame(codec.encode(V4, extra=((4, b"\x01"),)))  # time needs 4 bytes


def test_stream_cuts_frames_at_any_boundary() -> None:
    frames = [codec.encode(V4, prefix=str(i)) for i in range(5)]
    data = b"".join(frames)
    for step in (1, 3, 7, 64, len(data)):
        s = codec.Stream()
        got: list[bytes | int] = []
        for i in range(0, len(data), step):
            got += s.feed(data[i : i + step])
        assert got == frames and s.pending == 0


def test_stream_skips_a_frame_too_big_and_stays_in_step() -> None:
    big = codec.encode(bytes([0x45]) + bytes(500))
    small = codec.encode(V4)
    s = codec.Stream(max_frame=200)
    data = small + big + small
    got = s.feed(data[:100]) + s.feed(data[100:300]) + s.feed(data[300:])
    assert got == [small, len(big), small]


def test_stream_stops_at_a_wrong_marker() -> None:
    s = codec.Stream()
    assert s.feed(codec.encode(V4) + b"\xde\xad\xbe\xef\x00\x10") == [codec.encode(V4)]
    assert s.bad_marker == 0xDEADBEEF and s.feed(codec.encode(V4)) == []


# -- the input plugin on a real socket


def run(ctx: Context, rounds: int = 20) -> None:
    for _ in range(rounds):
        ctx.loop.run_once(0.01)


@pytest.fixture()
def ctx(tmp_path: Path) -> Context:
    c = Context(loop=Loop())
    c.log.set_destination(str(tmp_path / "ulogd.log"))
    return c


def unixsock(ctx: Context, path: Path, **opts: object) -> tuple[Stack, Capture]:
    stack = make_stack([(UnixsockInput, {"socket_path": str(path), **opts}), BaseFilter, Ip2strFilter, Capture], ctx)
    return stack, stack.instances[-1]  # type: ignore[return-value]


def test_several_clients_at_once_and_keys(ctx: Context, tmp_path: Path) -> None:
    path = tmp_path / "u.sock"
    stack, cap = unixsock(ctx, path)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        a, b = UnixsockClient(str(path)), UnixsockClient(str(path))
        frame = codec.encode(V4, prefix="A ", indev="eth0")
        a.send_raw(frame[:10])  # a half frame from a ...
        b.send(V6, prefix="B ", user="bob", state=1)  # ... does not hold b back
        run(ctx)
        a.send_raw(frame[10:])
        run(ctx)
        a.close()
        b.close()
        run(ctx)
        got = {cap.value(r, "oob.prefix"): r for r in cap.records}
        assert set(got) == {"A ", "B "}
        ra, rb = got["A "], got["B "]
        assert cap.value(ra, "ip.saddr.str") == "192.0.2.1" and cap.value(ra, "udp.dport") == 53
        assert cap.value(ra, "oob.in") == "eth0" and cap.value(ra, "oob.family") == 2
        assert cap.value(rb, "ip.daddr.str") == "2001:db8::2" and cap.value(rb, "nufw.user.name") == "bob"
        assert cap.value(rb, "raw.label") == 1
        src = stack.source
        assert ctx.stats.get(f"unixsock.{src.id}.packets") == 2 and ctx.stats.get(f"unixsock.{src.id}.clients") == 2
        assert src.clients == {}  # type: ignore[attr-defined]
    finally:
        stop_stack(stack)
    assert not path.exists()


def test_bad_marker_drops_that_client_only(ctx: Context, tmp_path: Path) -> None:
    path = tmp_path / "u.sock"
    stack, cap = unixsock(ctx, path)
    try:
        good, bad = UnixsockClient(str(path)), UnixsockClient(str(path))
        bad.send_raw(b"GET / HTTP/1.0\r\n\r\n")
        run(ctx)
        good.send(V4, prefix="still here")
        run(ctx)
        assert [cap.value(r, "oob.prefix") for r in cap.records] == ["still here"]
        assert bad.sock.recv(10) == b""  # closed by the daemon
        log = (tmp_path / "ulogd.log").read_text()
        assert "invalid packet marked received (read 47455420, expected 41c90fd4), closing socket." in log
        good.close()
        bad.close()
    finally:
        stop_stack(stack)


def test_read_error_does_not_exit(ctx: Context, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """2.0.8 called exit(-1) on a read error; here that client is dropped and the rest goes on."""
    path = tmp_path / "u.sock"
    stack, cap = unixsock(ctx, path)
    src: UnixsockInput = stack.source  # type: ignore[assignment]
    try:
        victim = UnixsockClient(str(path))
        victim.send(V4, prefix="x")
        run(ctx, 3)
        (client,) = src.clients.values()

        class Broken:
            def __init__(self, real: socket.socket) -> None:
                self.real = real

            def recv(self, n: int) -> bytes:
                raise ConnectionResetError(104, "Connection reset by peer")

            def close(self) -> None:
                self.real.close()

        assert client.sock is not None
        client.sock = Broken(client.sock)  # type: ignore[assignment]
        victim.send(V4, prefix="y")
        run(ctx, 3)
        assert src.clients == {} and ctx.stats.get(f"unixsock.{src.id}.read_errors") == 1
        other = UnixsockClient(str(path))
        other.send(V4, prefix="z")
        run(ctx)
        assert [cap.value(r, "oob.prefix") for r in cap.records] == ["x", "z"]
        assert "read error on client 1 (Connection reset by peer), closing that client" in (
            tmp_path / "ulogd.log").read_text()  # fmt: skip
        victim.close()
        other.close()
    finally:
        stop_stack(stack)


def test_shared_input_id_feeds_every_stack(ctx: Context, tmp_path: Path) -> None:
    """2.0.8: only the first stack built with a shared UNIXSOCK id got data (spec 2.6)."""
    path = tmp_path / "u.sock"
    stack1, cap1 = unixsock(ctx, path)
    src = stack1.source
    stack2 = make_stack([src, Capture], ctx, start=False)
    cap2: Capture = stack2.instances[-1]  # type: ignore[assignment]
    try:
        with UnixsockClient(str(path)) as c:
            c.send(V4, prefix="both")
            run(ctx)
        assert len(cap1.records) == 1 and len(cap2.records) == 1
    finally:
        stop_stack(stack1)


def test_frame_larger_than_bufsize_is_skipped(ctx: Context, tmp_path: Path) -> None:
    path = tmp_path / "u.sock"
    stack, cap = unixsock(ctx, path, bufsize=200)
    try:
        with UnixsockClient(str(path)) as c:
            c.send(V4, prefix="1")
            c.send(bytes([0x45]) + bytes(400), prefix="big")
            c.send(V4, prefix="2")
            run(ctx)
        assert [cap.value(r, "oob.prefix") for r in cap.records] == ["1", "2"]
        assert ctx.stats.get(f"unixsock.{stack.source.id}.too_big") == 1
    finally:
        stop_stack(stack)


def test_stale_socket_replaced_live_one_refused(ctx: Context, tmp_path: Path) -> None:
    path = tmp_path / "u.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: a crashed daemon's socket
    stack, _cap = unixsock(ctx, path)
    try:
        with pytest.raises(PluginError, match="another program listens on it"):
            make_stack([(UnixsockInput, {"socket_path": str(path)}), Capture], ctx)
    finally:
        stop_stack(stack)
    plain = tmp_path / "file"
    plain.write_text("x")
    with pytest.raises(PluginError, match="is not a socket"):
        make_stack([(UnixsockInput, {"socket_path": str(plain)}), Capture], ctx)
    with pytest.raises(PluginError, match="Invalid owner"):
        make_stack([(UnixsockInput, {"socket_path": str(tmp_path / "o.sock"), "owner": "no-such-user-x"}), Capture],
                   ctx)  # fmt: skip
    with pytest.raises(ConfigError, match="longer than"):
        make_stack([(UnixsockInput, {"socket_path": "/" + "x" * 200}), Capture], ctx)


def test_perms_option(ctx: Context, tmp_path: Path) -> None:
    path = tmp_path / "u.sock"
    stack, _cap = unixsock(ctx, path, perms=0o660)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    finally:
        stop_stack(stack)


def test_feed_replays_captured_bytes(ctx: Context, tmp_path: Path) -> None:
    stack, cap = unixsock(ctx, tmp_path / "u.sock")
    try:
        data = codec.encode(V4, prefix="a") + codec.encode(V6, prefix="b")
        src: UnixsockInput = stack.source  # type: ignore[assignment]
        src.feed(data[:7])
        src.feed(data[7:])
        assert [cap.value(r, "oob.prefix") for r in cap.records] == ["a", "b"]
    finally:
        stop_stack(stack)


# -- the client program


def write_pcap(path: Path, packets: list[bytes], linktype: int = 1) -> None:
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)
    for i, p in enumerate(packets):
        frame = (bytes(12) + (b"\x08\x00" if p[0] >> 4 == 4 else b"\x86\xdd") + p) if linktype == 1 else p
        out += struct.pack("<IIII", 1700000000 + i, 0, len(frame), len(frame)) + frame
    path.write_bytes(out)


def test_read_pcap(tmp_path: Path) -> None:
    write_pcap(tmp_path / "e.pcap", [V4, V6])
    assert list(read_pcap(str(tmp_path / "e.pcap"))) == [(1700000000, V4), (1700000001, V6)]
    write_pcap(tmp_path / "r.pcap", [V6], linktype=101)
    assert list(read_pcap(str(tmp_path / "r.pcap"))) == [(1700000000, V6)]


def test_udp_packet_checksums() -> None:
    from pyulogd.ctl.unixsock import _checksum

    assert _checksum(V4[:20]) == 0  # IPv4 header checksum verifies
    assert V6[0] >> 4 == 6 and V6[6] == 17 and len(V6) == 40 + 8 + 6


def test_client_main_against_the_input(ctx: Context, tmp_path: Path) -> None:
    path = tmp_path / "u.sock"
    stack, cap = unixsock(ctx, path)
    try:
        write_pcap(tmp_path / "e.pcap", [V4])
        # the client is blocking: run the daemon side's loop from its sending thread's gaps
        import threading

        done = threading.Event()
        rc: list[int] = []

        def client() -> None:
            rc.append(main(["-s", str(path), "--prefix", "P ", "--user", "u", "--pcap", str(tmp_path / "e.pcap"),
                            "--udp", "198.51.100.1", "198.51.100.2", "-n", "2"]))  # fmt: skip
            done.set()

        t = threading.Thread(target=client)
        t.start()
        while not done.is_set():
            ctx.loop.run_once(0.01)
        t.join()
        run(ctx)
        assert rc == [0]
        assert len(cap.records) == 4
        assert [cap.value(r, "oob.time.sec") for r in cap.records] == [1700000000, None, 1700000000, None]
        assert cap.value(cap.records[1], "ip.saddr.str") == "198.51.100.1"
        assert {cap.value(r, "nufw.user.name") for r in cap.records} == {"u"}
    finally:
        stop_stack(stack)


def test_client_module_runs(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "pyulogd.ctl.unixsock", "-s", str(tmp_path / "none.sock"),
                        "--udp", "192.0.2.1", "192.0.2.2"], capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 1 and "none.sock" in r.stderr
