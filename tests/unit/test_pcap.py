"""PCAP: 2.0.8's global header (host order, thiszone, LINKTYPE_RAW), record header rules,
append without a second header, SIGHUP reopen, errors; plus readability with dpkt/tshark."""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyulogd.core.clock import FakeClock
from pyulogd.core.context import Context
from pyulogd.core.errors import PluginError
from pyulogd.core.plugin import DataType, Key, KeyType, Source
from pyulogd.io.loop import Loop
from pyulogd.plugins.outputs.pcap import PcapOutput, global_header
from tests.helpers import make_stack, stop_stack

T = KeyType
# A 28-byte IPv4/UDP packet 10.0.0.1:1000 -> 10.0.0.2:2000 and a 48-byte IPv6/UDP one.
PKT4 = bytes.fromhex("4500001c000140004011" + "0000" + "0a000001" "0a000002" "03e807d00008" "0000")
PKT6 = bytes.fromhex("60000000000811" "40" + "fd00" + "00" * 13 + "01" + "fd00" + "00" * 13 + "02"
                     + "03e807d000080000")  # fmt: skip


def set_tz(tz: str | None) -> None:
    if tz is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = tz
    time.tzset()


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    old = os.environ.get("TZ")
    set_tz("UTC")
    yield
    set_tz(old)


class PktSource(Source):
    name = "PKTSRC"
    output_type = DataType.PACKET
    output_keys = (
        Key("raw.pkt", T.RAW), Key("raw.pktlen", T.UINT32), Key("ip.totlen", T.UINT16),
        Key("oob.time.sec", T.UINT32), Key("oob.time.usec", T.UINT32), Key("oob.family", T.UINT8),
        Key("ip6.payloadlen", T.UINT16),
    )  # fmt: skip

    def push(self, pkt: bytes | None, family: int = 2, sec: int | None = 1795764153, usec: int | None = 598668,
             totlen: int | None = None, payloadlen: int | None = None) -> None:  # fmt: skip
        n = None if pkt is None else len(pkt)
        self.emit([None, pkt, n, totlen, sec, usec, family, payloadlen])


def pcap_stack(path: Path, ctx: Context | None = None, **opts: Any) -> Any:
    return make_stack([PktSource, (PcapOutput, {"file": str(path), **opts})], ctx)


def read(path: Path) -> tuple[tuple[int, ...], list[tuple[int, int, int, int, bytes]]]:
    data = path.read_bytes()
    head = struct.unpack_from("<IHHiIII", data)
    recs, off = [], 24
    while off < len(data):
        s, u, c, n = struct.unpack_from("<IIII", data, off)
        recs.append((s, u, c, n, data[off + 16 : off + 16 + c]))
        off += 16 + c
    return head, recs


def test_declarations() -> None:
    assert PcapOutput.so_name == "ulogd_output_PCAP.so"
    assert [k.name for k in PcapOutput.input_keys] == [
        "raw.pkt", "raw.pktlen", "ip.totlen", "oob.time.sec", "oob.time.usec", "oob.family", "ip6.payloadlen"]
    assert {o.name: o.default for o in PcapOutput.options} == {
        "file": "/var/log/ulogd.pcap", "sync": 0, "chain_key": ""}


@pytest.mark.parametrize(("tz", "hexzone"), [("UTC", "00000000"), ("Europe/Paris", "f0f1ffff"),
                                             ("America/New_York", "50460000")])
def test_global_header_as_ulogd2(tz: str, hexzone: str) -> None:
    set_tz(tz)
    # spec 6.8 [verified]: d4c3b2a1 0200 0400 <thiszone> 00000000 00000100 65000000
    assert global_header().hex() == f"d4c3b2a102000400{hexzone}000000000000010065000000"


def test_records(tmp_path: Path) -> None:
    path = tmp_path / "out.pcap"
    ctx = Context(loop=Loop(FakeClock(wall=1795764200.25)))
    stack = pcap_stack(path, ctx)
    stack.source.push(PKT4, totlen=28)
    stack.source.push(PKT6, family=10, payloadlen=8, sec=1795764154, usec=611736)
    stack.source.push(PKT4, totlen=28, sec=None)  # no kernel time: now
    stack.source.push(PKT4[:20], family=7)  # other family: len = caplen
    stack.source.push(None)  # no packet: nothing written
    stop_stack(stack)
    head, recs = read(path)
    assert head == (0xA1B2C3D4, 2, 4, 0, 0, 65536, 101)
    assert recs == [
        (1795764153, 598668, 28, 28, PKT4),
        (1795764154, 611736, 48, 48, PKT6),
        (1795764200, 250000, 28, 28, PKT4),
        (1795764153, 598668, 20, 20, PKT4[:20]),
    ]


def test_len_is_the_ip_length_not_the_captured_one(tmp_path: Path) -> None:
    path = tmp_path / "out.pcap"
    stack = pcap_stack(path)
    stack.source.push(PKT4, totlen=1500)  # e.g. a copy range shorter than the packet
    stack.source.push(PKT6, family=10, payloadlen=1400)
    stop_stack(stack)
    _, recs = read(path)
    assert [(c, n) for _, _, c, n, _ in recs] == [(28, 1500), (48, 1440)]


def test_append_without_second_header_and_empty_file_gets_one(tmp_path: Path) -> None:
    path = tmp_path / "out.pcap"
    path.touch()  # exists but empty: header written
    for _ in range(2):
        stack = pcap_stack(path)
        stack.source.push(PKT4, totlen=28)
        stop_stack(stack)
    _, recs = read(path)
    assert len(recs) == 2 and path.stat().st_size == 24 + 2 * (16 + 28)


def test_batching_one_write_per_flush(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "out.pcap"
    stack = pcap_stack(path, sync=1)
    calls: list[int] = []
    real = os.write

    def write(fd: int, data: Any) -> int:
        calls.append(len(data))
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)
    for _ in range(10):
        stack.source.push(PKT4, totlen=28)
    assert calls == []
    stack.sink.flush()
    assert calls == [10 * 44]
    stop_stack(stack)


def test_sighup_reopens(tmp_path: Path) -> None:
    path = tmp_path / "out.pcap"
    stack = pcap_stack(path)
    stack.source.push(PKT4, totlen=28)
    stack.sink.flush()
    path.rename(tmp_path / "old.pcap")
    stack.sink.signal(signal.SIGHUP)
    stack.source.push(PKT6, family=10, payloadlen=8)
    stop_stack(stack)
    assert len(read(tmp_path / "old.pcap")[1]) == 1
    head, recs = read(path)
    assert head[0] == 0xA1B2C3D4 and [r[4] for r in recs] == [PKT6]


def test_unopenable_file_is_a_plugin_error(tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="can't open pcap file"):
        pcap_stack(tmp_path / "no" / "dir.pcap")


def test_write_error_counted(tmp_path: Path) -> None:
    ctx = Context(loop=Loop())
    stack = pcap_stack(tmp_path / "out.pcap", ctx)
    sink = stack.sink.out
    os.close(sink.fd)
    r, w = os.pipe()
    os.close(w)
    sink.fd = r  # a read-only fd: EBADF on write
    stack.source.push(PKT4, totlen=28)
    stack.sink.flush()
    stop_stack(stack)
    assert ctx.stats.get("pcap.pcap1.records_lost") == 1
    assert "Error during write" in (ctx.log.last_error or "")


@pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark")
def test_tshark_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "out.pcap"
    stack = pcap_stack(path)
    stack.source.push(PKT4, totlen=28)
    stack.source.push(PKT6, family=10, payloadlen=8)
    stop_stack(stack)
    out = subprocess.run(["tshark", "-n", "-t", "e", "-r", str(path)], capture_output=True, text=True,
                         check=True, timeout=60).stdout.splitlines()
    assert "10.0.0.1 → 10.0.0.2     UDP 28 1000 → 2000 Len=0" in out[0]
    assert "fd00::1 → fd00::2" in out[1] and "UDP 48 1000 → 2000 Len=0" in out[1]


def test_a_full_disk_leaves_whole_records(tmp_path: Path) -> None:
    """A batch the filesystem takes only part of: the half record is cut off, so the file
    stays readable to the end, the rest is counted, and the next batch that fits is written.
    (RLIMIT_FSIZE gives the real short write in a child process.)"""
    from tests.unit.test_append import limited

    path = tmp_path / "full.pcap"

    def work() -> Any:
        ctx = Context(loop=Loop())
        ctx.log.stream = open(os.devnull, "w")  # noqa: SIM115 - the log is not under test
        ctx.log.path = "test"
        stack = pcap_stack(path, ctx)
        for _ in range(3):
            stack.source.push(PKT4, totlen=28)  # 16 + 28 bytes each
        stack.sink.flush()
        first = ctx.stats.snapshot()
        os.ftruncate(stack.sink.out.fd, 24)  # room again
        stack.source.push(PKT4, totlen=28)
        stack.sink.flush()
        stop_stack(stack)
        return [first, ctx.stats.snapshot()]

    first, after = limited(24 + 44 + 30, work)
    assert first == {"pcap.pcap1.records_lost": 2, "pcap.pcap1.write_errors": 1}
    assert after == first
    head, recs = read(path)
    assert head[0] == 0xA1B2C3D4 and len(recs) == 1 and recs[0][4] == PKT4


def test_a_header_that_does_not_fit_is_not_left_half_written(tmp_path: Path) -> None:
    from tests.unit.test_append import limited

    path = tmp_path / "h.pcap"

    def work() -> Any:
        try:
            pcap_stack(path)
        except PluginError as e:
            return str(e)
        return "started"

    assert limited(10, work) == f"PCAP: can't open pcap file {path}: File too large"
    assert path.read_bytes() == b""  # so the next start writes a whole header
