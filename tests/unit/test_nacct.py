"""NACCT: 2.0.8's line format (spec 6.7 verified lines), ICMP columns, invalid values, SIGHUP."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from pyulogd.core.plugin import DataType, Key, Source
from pyulogd.plugins.outputs.nacct import INPUT_KEYS, NacctOutput
from tests.helpers import make_stack, stop_stack


class FlowSource(Source):
    name = "FLOWSRC"
    output_type = DataType.FLOW
    output_keys = tuple(Key(k.name, k.type) for k in INPUT_KEYS)

    def push(self, **values: Any) -> None:
        self.emit([None] + [values.get(k.name.replace(".", "_")) for k in self.output_keys])


def run(tmp_path: Path, *flows: dict[str, Any]) -> list[str]:
    path = tmp_path / "nacct.log"
    stack = make_stack([FlowSource, (NacctOutput, {"file": str(path)})])
    for f in flows:
        stack.source.push(**f)
    stop_stack(stack)
    return path.read_text().split("\n")[:-1]


TCP = dict(flow_end_sec=1795763288, orig_ip_protocol=6, orig_ip_saddr_str="127.0.0.1", orig_l4_sport=53310,
           orig_ip_daddr_str="127.0.0.1", orig_l4_dport=7777, reply_raw_pktcount=0, reply_raw_pktlen=0)


def test_declarations() -> None:
    assert NacctOutput.so_name == "ulogd_output_NACCT.so"
    assert {o.name: o.default for o in NacctOutput.options} == {
        "file": "/var/log/ulogd_nacct.log", "sync": 0, "chain_key": ""}
    assert not any(k.optional for k in NacctOutput.input_keys)  # all required, as in 2.0.8


def test_lines_as_ulogd2(tmp_path: Path) -> None:
    icmp = dict(TCP, orig_ip_protocol=1, orig_l4_sport=None, orig_l4_dport=None, icmp_type=8, icmp_code=0)
    counted = dict(TCP, reply_raw_pktcount=5, reply_raw_pktlen=2**40)
    assert run(tmp_path, TCP, icmp, counted) == [
        "1795763288\t6\t127.0.0.1\t53310\t127.0.0.1\t7777\t0\t0",  # spec 6.7 [verified]
        "1795763288\t1\t127.0.0.1\t8\t127.0.0.1\t0\t0\t0",  # spec 6.7 [verified]: type, code
        f"1795763288\t6\t127.0.0.1\t53310\t127.0.0.1\t7777\t5\t{2**40}",  # packets then bytes, 64 bit
    ]


def test_invalid_values_print_as_zero_or_empty(tmp_path: Path) -> None:
    assert run(tmp_path, {}) == ["0\t0\t\t0\t\t0\t0\t0"]


def test_long_line_cut_at_255(tmp_path: Path) -> None:
    (line,) = run(tmp_path, dict(TCP, orig_ip_saddr_str="x" * 300))
    assert len(line) == 255


def test_sighup_reopens(tmp_path: Path) -> None:
    path = tmp_path / "nacct.log"
    stack = make_stack([FlowSource, (NacctOutput, {"file": str(path)})])
    stack.source.push(**TCP)
    stack.sink.flush()
    path.rename(tmp_path / "old.log")
    stack.sink.signal(signal.SIGHUP)
    stack.source.push(**dict(TCP, orig_l4_sport=1))
    stop_stack(stack)
    assert (tmp_path / "old.log").read_text().count("\n") == 1
    assert path.read_text().split("\t")[3] == "1"
