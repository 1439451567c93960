"""PWSNIFF (spec 5.10): POP3/FTP USER and PASS arguments; 2.0.8 stopped every event (corrected)."""

from __future__ import annotations

import struct

import pytest

from pyulogd.plugins.filters.pwsniff import PwsniffFilter, tcp_payload
from tests.helpers import Capture, NflogKeys, make_stack


def tcp4(dport: int, data: bytes, options: bytes = b"", proto: int = 6, frag: int = 0x4000) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", 40000, dport, 1, 0, (5 + len(options) // 4) << 4, 0x18, 512, 0, 0) + options
    total = 20 + len(tcp) + len(data)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 1, frag, 64, proto, 0, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    return ip + tcp + data


def tcp6(dport: int, data: bytes) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", 40000, dport, 1, 0, 5 << 4, 0x18, 512, 0, 0)
    return struct.pack("!IHBB", 6 << 28, len(tcp) + len(data), 6, 64) + bytes(32) + tcp + data


def sniff(*packets: bytes | None) -> list[tuple[str | None, str | None]]:
    stack = make_stack([NflogKeys, PwsniffFilter, Capture])
    for p in packets:
        stack.source.emit_dict({"raw.pkt": p})  # type: ignore[attr-defined]
    cap: Capture = stack.instances[-1]  # type: ignore[assignment]
    assert stack.errors == 0
    return [(cap.value(r, "pwsniff.user"), cap.value(r, "pwsniff.pass")) for r in cap.records]


def test_pop3_and_ftp_credentials_pass() -> None:
    assert sniff(tcp4(110, b"USER alice\r\n")) == [("alice", None)]
    assert sniff(tcp4(21, b"pass s3cret\r\n")) == [(None, "s3cret")]
    assert sniff(tcp4(110, b"USER bob\r\nPASS pw\r\n")) == [("bob", "pw")]
    assert sniff(tcp6(21, b"USER carol\n")) == [("carol", None)]


def test_other_packets_to_those_ports_pass_without_keys() -> None:
    assert sniff(tcp4(110, b"STAT\r\n"), tcp4(21, b""), tcp4(21, b"USER \r\n")) == [(None, None)] * 3


def test_everything_else_stops() -> None:
    assert sniff(tcp4(80, b"USER x\r\n"), tcp4(110, b"USER x\r\n", proto=17), None, b"\x45",
                 tcp4(110, b"USER x\r\n", frag=0x0010)) == []  # fmt: skip


def test_tcp_options_are_not_payload() -> None:
    """2.0.8 searched from 20 bytes after the TCP header start, so options counted as text."""
    opts = b"USER" + b" " + b"x\r\n" + bytes(4)  # 12 bytes of 'options' that look like a command
    assert tcp_payload(tcp4(110, b"NOOP\r\n", options=opts)) == b"NOOP\r\n"
    assert sniff(tcp4(110, b"NOOP\r\n", options=opts)) == [(None, None)]


def test_value_ends_at_blank_and_last_one_wins() -> None:
    assert sniff(tcp4(110, b"USER a\r\nUSER b c\r\n")) == [("b", None)]
    assert sniff(tcp4(110, b"USER unterminated")) == [(None, None)]


@pytest.mark.parametrize("name", ["PWSNIFF"])
def test_info_matches_ulogd2(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    from pyulogd.daemon.cli import main

    assert main(["-i", name]) == 0
    assert capsys.readouterr().out == (
        "Name: PWSNIFF\nInput keys:\n\tKey: raw.pkt (Unknown type)\nOutput keys:\n"
        "\tKey: pwsniff.user (string)\n\tKey: pwsniff.pass (string)\n"
    )
