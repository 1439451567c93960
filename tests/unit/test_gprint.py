"""GPRINT: one key=value line per event, types, timestamp, the corrected IPv6 addresses, SIGHUP."""

from __future__ import annotations

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
from pyulogd.core.errors import PluginError
from pyulogd.core.plugin import DataType, Key, Source
from pyulogd.core.plugin import KeyType as T
from pyulogd.io.loop import Loop
from pyulogd.plugins.outputs.gprint import GprintOutput
from tests.helpers import make_stack, stop_stack
from tests.unit.test_oprint import Shadow, TypedSource

NOW = 1795764137.9  # 2026-11-27 07:22:17 UTC


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = old
    time.tzset()


def stack(tmp_path: Path, **opts: Any) -> Any:
    ctx = Context(loop=Loop(FakeClock(wall=NOW)), hostname="vm")
    return make_stack([TypedSource, Shadow, (GprintOutput, {"file": str(tmp_path / "g.txt"), **opts})], ctx)


def test_rendering_by_type(tmp_path: Path) -> None:
    s = stack(tmp_path)
    src = s.source
    assert isinstance(src, TypedSource)
    src.push(s="a b,c", b=0, i8=-5, i32=-70000, u8=255, u16=65535, u32=2**32 - 1, u64=2**64 - 1, i64=-1,
             ip=bytes([10, 201, 0, 1]), raw=b"\x01", rawstr="0x0a", none=0, oob_protocol=0)
    stop_stack(s)
    # INT64, RAW, RAWSTR and NONE are left out; the final comma goes
    assert (tmp_path / "g.txt").read_text() == (
        f"s=a b,c,b=0,i8=-5,i32=-70000,u8=255,u16=65535,u32={2**32 - 1},u64={2**64 - 1},ip=10.201.0.1,"
        "oob.protocol=2048,oob.protocol=2048\n"
    )


class PrintSource(Source):
    """A string from outside and PRINTPKT's line (``print``)."""

    name = "PRINTSRC"
    output_type = DataType.PACKET
    output_keys = (Key("oob.prefix", T.STRING), Key("print", T.STRING))

    def push(self, prefix: str | None, line: str | None) -> None:
        self.emit([None, prefix, line])


def print_stack(tmp_path: Path, **opts: Any) -> Any:
    ctx = Context(loop=Loop(FakeClock(wall=NOW)), hostname="vm")
    return make_stack([PrintSource, (GprintOutput, {"file": str(tmp_path / "g.txt"), **opts})], ctx)


def test_timestamp_and_print_value(tmp_path: Path) -> None:
    s = print_stack(tmp_path, timestamp=1)
    s.source.push(None, "OUT-ICMP  IN= MARK=0x0 \n")  # PRINTPKT's line: an empty line follows
    s.source.push(None, None)
    stop_stack(s)
    assert (tmp_path / "g.txt").read_text() == (
        "timestamp=2026/11/27-07:22:17,print=OUT-ICMP  IN= MARK=0x0 \n\n"
        "timestamp=2026/11/27-07:22:17\n"
    )


def test_strings_from_outside_cannot_forge_a_line(tmp_path: Path) -> None:
    s = print_stack(tmp_path)
    forged = "qtest-nl\nDec  7 00:00:00 fakehost FORGED: IN=eth0 SRC=6.6.6.6"
    s.source.push(forged, None)
    s.source.push("a\\b\udcff", None)
    s.source.push("gbACCEPT ", None)
    stop_stack(s)
    assert (tmp_path / "g.txt").read_bytes().decode("utf-8").split("\n") == [
        "oob.prefix=qtest-nl\\nDec  7 00:00:00 fakehost FORGED: IN=eth0 SRC=6.6.6.6",
        "oob.prefix=a\\\\b\\xff",
        "oob.prefix=gbACCEPT ",  # as 2.0.8
        "",
    ]


def test_empty_record(tmp_path: Path) -> None:
    s = stack(tmp_path)
    shadow = s.instances[1]
    assert isinstance(shadow, Shadow)
    shadow.value = None
    s.source.emit([None] + [None] * len(TypedSource.output_keys))
    stop_stack(s)
    assert (tmp_path / "g.txt").read_text() == "\n"


@pytest.mark.parametrize("value,text", [
    (bytes([10, 201, 0, 1]), "10.201.0.1"),
    (socket.inet_pton(socket.AF_INET6, "fd00:201::1"), "fd00:201::1"),  # 2.0.8: 253.0.2.1
    (socket.inet_pton(socket.AF_INET6, "::1"), "::1"),  # 2.0.8: 0.0.0.0
])  # fmt: skip
def test_addresses(tmp_path: Path, value: bytes, text: str) -> None:
    s = stack(tmp_path)
    shadow = s.instances[1]
    assert isinstance(shadow, Shadow)
    shadow.addr = value
    s.source.emit([None] + [None] * len(TypedSource.output_keys))
    stop_stack(s)
    assert (tmp_path / "g.txt").read_text() == f"oob.protocol=2048,oob.protocol=2048,ip.saddr={text}\n"


def test_long_records_are_whole(tmp_path: Path) -> None:
    """2.0.8 writes into a 4096-byte buffer (and past it); the whole line is written here."""
    s = stack(tmp_path)
    src = s.source
    assert isinstance(src, TypedSource)
    src.push(s="x" * 10000)
    stop_stack(s)
    assert (tmp_path / "g.txt").read_text() == "s=" + "x" * 10000 + ",oob.protocol=2048,oob.protocol=2048\n"


def test_sighup_reopens(tmp_path: Path) -> None:
    path = tmp_path / "g.txt"
    s = stack(tmp_path)
    src = s.source
    assert isinstance(src, TypedSource)
    src.push(u8=1)
    s.sink.flush()
    path.rename(tmp_path / "g.txt.1")
    s.sink.signal(signal.SIGHUP)
    src.push(u8=2)
    stop_stack(s)
    assert (tmp_path / "g.txt.1").read_text().startswith("u8=1,")
    assert path.read_text().startswith("u8=2,")


def test_open_failure(tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="GPRINT"):
        make_stack([TypedSource, (GprintOutput, {"file": str(tmp_path / "no" / "g.txt")})])


def test_options() -> None:
    assert [(o.name, o.default) for o in GprintOutput.options] == [
        ("file", "/var/log/ulogd_gprint.log"), ("sync", 0), ("timestamp", 0), ("chain_key", "")]  # tamper evidence
    assert GprintOutput.wildcard_inputs
