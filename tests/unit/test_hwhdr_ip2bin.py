"""HWHDR (spec 5.6) and IP2BIN (spec 5.4): the filters the SQL schemas of ulogd2 need."""

from __future__ import annotations

from pyulogd.plugins.filters.hwhdr import HwhdrFilter
from pyulogd.plugins.filters.ip2bin import Ip2binFilter
from tests.helpers import BaseKeys, Capture, NflogKeys, make_stack

ETH = bytes.fromhex("020000c90002" "020000c90001" "0800")


def hwhdr(values: dict[str, object]) -> dict[str, object]:
    stack = make_stack([NflogKeys, HwhdrFilter, Capture])
    stack.source.emit_dict(values)
    cap = stack.instances[-1]
    rec = cap.records[-1]
    names = ("raw.type", "oob.protocol", "mac.saddr.str", "mac.daddr.str", "mac.str")
    return {n: cap.value(rec, n) for n in names}


def test_ethernet_header() -> None:
    out = hwhdr({"raw.mac": ETH, "raw.mac_len": 14, "raw.type": 1, "oob.protocol": 0x0800,
                 "raw.mac.saddr": ETH[6:12], "raw.mac.addrlen": 6})
    assert out == {"raw.type": 1, "oob.protocol": 0x0800, "mac.saddr.str": "02:00:00:c9:00:01",
                   "mac.daddr.str": "02:00:00:c9:00:02", "mac.str": "02:00:00:c9:00:02:02:00:00:c9:00:01:08:00"}


def test_loopback_header() -> None:
    """ulogd2 2.0.8 on lo [verified in spec 5.6]: type 772, whole header, source only."""
    lo = bytes(12) + b"\x08\x00"
    out = hwhdr({"raw.mac": lo, "raw.mac_len": 14, "raw.type": 772, "oob.protocol": 0x0800,
                 "raw.mac.saddr": bytes(6), "raw.mac.addrlen": 6})
    assert out == {"raw.type": 772, "oob.protocol": 0x0800, "mac.saddr.str": "00:00:00:00:00:00",
                   "mac.daddr.str": None, "mac.str": "00:00:00:00:00:00:00:00:00:00:00:00:08:00"}


def test_no_header_output_path() -> None:
    out = hwhdr({"oob.protocol": 0x86DD})
    assert out == {"raw.type": None, "oob.protocol": 0x86DD, "mac.saddr.str": None, "mac.daddr.str": None,
                   "mac.str": None}


def test_ip2bin() -> None:
    stack = make_stack([NflogKeys, BaseKeys, Ip2binFilter, Capture])
    base = stack.instances[1]
    cap = stack.instances[-1]
    base.values = {"ip.saddr": bytes([127, 0, 0, 1]), "ip.daddr": bytes(15) + b"\x01"}  # type: ignore[attr-defined]
    stack.source.emit_dict({"oob.family": 2, "oob.protocol": 0x0800})
    rec = cap.records[-1]
    assert cap.value(rec, "ip.saddr.bin") == bytes.fromhex("00000000000000000000ffff7f000001")
    assert cap.value(rec, "ip.daddr.bin") == bytes(15) + b"\x01"
