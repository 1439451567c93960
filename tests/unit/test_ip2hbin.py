"""IP2HBIN (spec 5.5), and the reply.ip.daddr correction shared with IP2BIN (spec 5.4)."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from pyulogd.core.context import Context
from pyulogd.core.plugin import DataType, Key, KeyType, Source
from pyulogd.db.render import ip_sql, ip_sqlite
from pyulogd.io.loop import Loop
from pyulogd.plugins.filters.ip2bin import Ip2binFilter
from pyulogd.plugins.filters.ip2hbin import Ip2hbinFilter
from tests.helpers import Capture, make_stack

ADDRS = ("ip.saddr", "ip.daddr", "orig.ip.saddr", "orig.ip.daddr", "reply.ip.saddr", "reply.ip.daddr")


class Flow(Source):
    name = "FLOWKEYS"
    output_type = DataType.FLOW
    output_keys = (
        Key("oob.family", KeyType.UINT8),
        Key("oob.protocol", KeyType.UINT16),
        *(Key(a, KeyType.IPADDR) for a in ADDRS),
    )

    def send(self, family: int | None, protocol: int | None = None, **addrs: bytes) -> None:
        self.emit([None, family, protocol, *(addrs.get(a.replace(".", "_")) for a in ADDRS)])


def run(filt: type, family: int | None, protocol: int | None = None, ctx: Context | None = None,
        **addrs: bytes) -> tuple[Capture, Any]:  # fmt: skip
    stack = make_stack([Flow, filt, Capture], ctx)
    stack.source.send(family, protocol, **addrs)  # type: ignore[attr-defined]
    return stack.instances[-1], stack  # type: ignore[return-value]


LO = bytes([127, 0, 0, 1])
A = bytes([10, 201, 0, 1])
V6 = bytes.fromhex("20010db8000000000000000000000001")


@pytest.mark.skipif(sys.byteorder != "little", reason="the cell image below is little-endian")
def test_ipv4_host_order_and_sql_integer() -> None:
    cap, stack = run(Ip2hbinFilter, 2, None, ip_saddr=LO, ip_daddr=A)
    rec = cap.records[0]
    hs, hd = cap.value(rec, "ip.hsaddr"), cap.value(rec, "ip.hdaddr")
    assert hs == bytes([1, 0, 0, 127])
    # What ulogd2's SQL outputs store for IP2HBIN columns: the conventional integer.
    assert ip_sql(hs) == 2130706433 and ip_sqlite(hs) == 2130706433
    assert ip_sql(hd) == int.from_bytes(A, "big")
    assert stack.errors == 0


def test_every_address_including_reply_daddr() -> None:
    """2.0.8 never set reply.ip.hdaddr (its loop stopped one short): corrected."""
    addrs = {a.replace(".", "_"): bytes([10, 0, 0, i + 1]) for i, a in enumerate(ADDRS)}
    cap, _ = run(Ip2hbinFilter, 2, None, **addrs)
    rec = cap.records[0]
    outs = ("ip.hsaddr", "ip.hdaddr", "orig.ip.hsaddr", "orig.ip.hdaddr", "reply.ip.hsaddr", "reply.ip.hdaddr")
    assert [ip_sql(cap.value(rec, o)) for o in outs] == [0x0A000001 + i for i in range(6)]


def test_ipv6_kept_as_16_bytes() -> None:
    cap, _ = run(Ip2hbinFilter, 10, None, orig_ip_saddr=V6)
    assert cap.value(cap.records[0], "orig.ip.hsaddr") == V6
    assert cap.value(cap.records[0], "ip.hsaddr") is None


def test_bridge_and_unknown_families() -> None:
    cap, stack = run(Ip2hbinFilter, 7, 0x0800, ip_saddr=LO)
    assert len(cap.records) == 1 and stack.errors == 0
    ctx = Context(loop=Loop())
    for fam, proto in ((7, None), (7, 0x88CC), (3, None), (None, None)):
        cap, stack = run(Ip2hbinFilter, fam, proto, ctx, ip_saddr=LO)
        assert cap.records == [] and stack.errors == 1  # ERR: the stack stops for this event
    assert sum(v for k, v in ctx.stats.snapshot().items() if k.endswith(".bad_family")) == 4


def test_ip2bin_reply_daddr_and_mapping() -> None:
    """IP2BIN: ::ffff:a.b.c.d for IPv4, the 16 bytes for IPv6; reply.ip.daddr.bin is produced
    (2.0.8 never did)."""
    cap, _ = run(Ip2binFilter, 2, None, reply_ip_daddr=LO, orig_ip_saddr=A)
    rec = cap.records[0]
    assert cap.value(rec, "reply.ip.daddr.bin").hex() == "00000000000000000000ffff7f000001"
    assert cap.value(rec, "orig.ip.saddr.bin") == bytes(10) + b"\xff\xff" + A
    cap, _ = run(Ip2binFilter, 10, None, ip_daddr=V6)
    assert cap.value(cap.records[0], "ip.daddr.bin") == V6


def test_info_matches_ulogd2(capsys: pytest.CaptureFixture[str]) -> None:
    from pyulogd.daemon.cli import main

    assert main(["-i", "IP2HBIN"]) == 0
    out = capsys.readouterr().out
    assert "\tKey: reply.ip.daddr (IP addr, optional)\nOutput keys:\n\tKey: ip.hsaddr (IP addr)\n" in out
    assert main(["-i", "IP2BIN"]) == 0
    assert "\tKey: reply.ip.daddr.bin (Unknown type)\n" in capsys.readouterr().out
