"""OPRINT: every upstream key in stack order, rendering by type, the corrected addresses, SIGHUP."""

from __future__ import annotations

import signal
import socket
from pathlib import Path
from typing import Any

import pytest

from pyulogd.core.context import Context
from pyulogd.core.errors import PluginError
from pyulogd.core.plugin import OK, DataType, Filter, Key, KeyType, Source
from pyulogd.plugins.outputs.oprint import OprintOutput
from tests.helpers import make_stack, stop_stack

T = KeyType


class TypedSource(Source):
    """One key of each type; ``push`` sends the given values (the rest invalid)."""

    name = "TYPED"
    output_type = DataType.RAW
    output_keys = (
        Key("s", T.STRING), Key("b", T.BOOL), Key("i8", T.INT8), Key("i32", T.INT32), Key("u8", T.UINT8),
        Key("u16", T.UINT16), Key("u32", T.UINT32), Key("u64", T.UINT64), Key("i64", T.INT64),
        Key("ip", T.IPADDR), Key("raw", T.RAW), Key("rawstr", T.RAWSTR), Key("none", T.NONE),
        Key("oob.protocol", T.UINT16),
    )  # fmt: skip

    def push(self, **values: Any) -> None:
        self.emit([None] + [values.get(k.name.replace(".", "_")) for k in self.output_keys])


class Shadow(Filter):
    """Re-emits ``oob.protocol`` (as BASE does) with ``self.value``."""

    name = "SHADOW"
    input_type = DataType.RAW
    output_type = DataType.PACKET
    output_keys = (Key("oob.protocol", T.UINT16), Key("ip.saddr", T.IPADDR))

    def __init__(self, ctx: Context, instance_id: str, config: dict[str, Any]) -> None:
        super().__init__(ctx, instance_id, config)
        self.value: int | None = 2048
        self.addr: Any = None

    def interp(self, rec: list[Any]) -> int:
        rec[self.out_base] = self.value
        rec[self.out_base + 1] = self.addr
        return OK


def stack(tmp_path: Path, **opts: Any) -> Any:
    return make_stack([TypedSource, Shadow, (OprintOutput, {"file": str(tmp_path / "o.txt"), **opts})])


def records(path: Path) -> list[list[str]]:
    return [r.splitlines() for r in path.read_text().split("===>PACKET BOUNDARY\n")[1:]]


def test_rendering_by_type(tmp_path: Path) -> None:
    s = stack(tmp_path)
    src = s.source
    assert isinstance(src, TypedSource)
    src.push(s="a b,c", b=1, i8=-5, i32=-70000, u8=255, u16=65535, u32=2**32 - 1, u64=2**64 - 1, i64=-1,
             ip=bytes([10, 201, 0, 1]), raw=b"\x01", rawstr="0x0a", none=0, oob_protocol=0)
    src.push()  # nothing valid upstream: the boundary and the shadowing filter's key
    stop_stack(s)
    assert records(tmp_path / "o.txt") == [
        ["s=a b,c", "b=1", "i8=-5", "i32=-70000", "u8=255", "u16=65535", f"u32={2**32 - 1}",
         f"u64={2**64 - 1}", "i64=default", "ip=10.201.0.1", "raw=default", "rawstr=default", "none=<none>",
         "oob.protocol=2048", "oob.protocol=2048"],
        ["oob.protocol=2048", "oob.protocol=2048"],
    ]  # fmt: skip


def test_strings_from_outside_cannot_forge_a_line(tmp_path: Path) -> None:
    s = stack(tmp_path)
    src = s.source
    assert isinstance(src, TypedSource)
    src.push(s="qtest-nl\nDec  7 00:00:00 fakehost FORGED: IN=eth0 SRC=6.6.6.6")
    src.push(s="eth0")
    stop_stack(s)
    assert records(tmp_path / "o.txt") == [
        ["s=qtest-nl\\nDec  7 00:00:00 fakehost FORGED: IN=eth0 SRC=6.6.6.6", "oob.protocol=2048",
         "oob.protocol=2048"],
        ["s=eth0", "oob.protocol=2048", "oob.protocol=2048"],
    ]


def test_duplicates_take_the_nearest_producer(tmp_path: Path) -> None:
    s = stack(tmp_path)
    shadow = s.instances[1]
    assert isinstance(shadow, Shadow)
    shadow.value = None  # the nearest producer left it invalid: both lines go
    src = s.source
    assert isinstance(src, TypedSource)
    src.push(oob_protocol=34525)
    stop_stack(s)
    assert records(tmp_path / "o.txt") == [[]]


@pytest.mark.parametrize("value,text", [
    (bytes([10, 201, 0, 1]), "10.201.0.1"),  # 2.0.8: 1.0.201.10
    (bytes([127, 0, 0, 1]), "127.0.0.1"),  # 2.0.8: 1.0.0.127
    (socket.inet_pton(socket.AF_INET6, "fd00:201::1"), "fd00:201::1"),  # 2.0.8: 1.2.0.253
    (socket.inet_pton(socket.AF_INET6, "::ffff:10.1.2.3"), "::ffff:10.1.2.3"),
    (socket.inet_pton(socket.AF_INET6, "::1"), "::1"),
    (0x0AC90001, "10.201.0.1"),  # an IP2HBIN-style host-order integer
])  # fmt: skip
def test_addresses_are_corrected(tmp_path: Path, value: Any, text: str) -> None:
    s = stack(tmp_path)
    shadow = s.instances[1]
    assert isinstance(shadow, Shadow)
    shadow.addr = value
    s.source.emit([None] + [None] * len(TypedSource.output_keys))
    stop_stack(s)
    assert f"ip.saddr={text}" in records(tmp_path / "o.txt")[0]


def test_appends_and_sighup_reopens(tmp_path: Path) -> None:
    path = tmp_path / "o.txt"
    path.write_text("old\n")
    s = stack(tmp_path, sync=1)
    src = s.source
    assert isinstance(src, TypedSource)
    src.push(s="one")
    s.sink.flush()
    path.rename(tmp_path / "o.txt.1")
    s.sink.signal(signal.SIGHUP)
    src.push(s="two")
    stop_stack(s)
    assert (tmp_path / "o.txt.1").read_text().startswith("old\n===>PACKET BOUNDARY\ns=one\n")
    assert path.read_text().startswith("===>PACKET BOUNDARY\ns=two\n")


def test_open_failure(tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="OPRINT"):
        make_stack([TypedSource, (OprintOutput, {"file": str(tmp_path / "no" / "o.txt")})])


def test_options() -> None:
    assert [(o.name, o.default) for o in OprintOutput.options] == [
        ("file", "/var/log/ulogd_oprint.log"), ("sync", 0), ("chain_key", "")]
    assert OprintOutput.wildcard_inputs and OprintOutput.input_keys == ()
