"""NEUTRONLOG: Neutron's network-log lines, pkt= as os-ken prints the same packet."""

from __future__ import annotations

import re
import signal
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from pyulogd.core.plugin import DataType, Key, KeyType, Source
from pyulogd.plugins.outputs.neutronlog import NeutronLogOutput
from tests.clocked import fake_context
from tests.helpers import make_stack, stop_stack

packet = pytest.importorskip("os_ken.lib.packet.packet")

# The regex the research quotes for the Open vSwitch driver's record (what parsers use).
OVS_LINE = re.compile(r"action=(ACCEPT|DROP) project_id=(\S+) log_resource_ids=\[([^\]]*)\] vm_port=(\S+) pkt=(.*)")
FWAAS_LINE = re.compile(r"action=(ACCEPT|DROP), project_id=(\S+), log_resource_ids=\[([^\]]*)\], port=(\S+), pkt=(.*)")
OSLO = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) (\d+) INFO (\S+) \[-\] (.*)")

MAC = bytes.fromhex("fa163e000001fa163e0000020800")
PORT = "e0259ade-86de-482e-a717-f58258f7173f"
PROJECT = "736672c700cd43e1bd321aeaf940365c"


def icmp_echo(data: bytes = b"payload!") -> bytes:
    icmp = struct.pack("!BBHHH", 8, 0, 0x1234, 7, 1) + data
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 36638, 0x4000, 63, 1, 62071,
                       bytes([172, 24, 4, 10]), bytes([10, 0, 0, 4])) + icmp


class Src(Source):
    name = "NLSRC"
    output_type = DataType.PACKET
    output_keys = (
        Key("audit.action", KeyType.STRING),
        Key("neutron.project_id", KeyType.STRING),
        Key("neutron.port_id", KeyType.STRING),
        Key("raw.mac", KeyType.RAW),
        Key("raw.type", KeyType.UINT16),
        Key("raw.pkt", KeyType.RAW),
        Key("oob.protocol", KeyType.UINT16),
        Key("oob.time.sec", KeyType.UINT32),
        Key("oob.time.usec", KeyType.UINT32),
        Key("audit.suppressed", KeyType.UINT64),
        Key("audit.first", KeyType.STRING),
        Key("audit.last", KeyType.STRING),
        Key("audit.limit_key", KeyType.STRING),
    )

    def send(self, **v: Any) -> None:
        self.emit([None] + [v.get(k.name.replace(".", "_")) for k in self.output_keys])


def build(tmp_path: Path, **opts: Any) -> tuple[Src, NeutronLogOutput, Path, Any]:
    out = tmp_path / "neutron.log"
    ctx, _ = fake_context()
    stack = make_stack([Src, (NeutronLogOutput, {"file": str(out), **opts})], ctx)
    src, nl = stack.instances
    assert isinstance(src, Src) and isinstance(nl, NeutronLogOutput)
    return src, nl, out, ctx


def lines(nl: NeutronLogOutput, out: Path) -> list[str]:
    nl.flush()
    return out.read_text().splitlines()


def send_packet(src: Src, **extra: Any) -> None:
    v: dict[str, Any] = {"audit_action": "ACCEPT", "neutron_project_id": PROJECT, "neutron_port_id": PORT,
                         "raw_mac": MAC, "raw_type": 1, "raw_pkt": icmp_echo(), "oob_protocol": 0x0800,
                         "oob_time_sec": 1_800_000_000, "oob_time_usec": 123_456}
    v.update(extra)
    src.send(**v)


def test_ovs_driver_line(tmp_path: Path) -> None:
    src, nl, out, _ = build(tmp_path, header="none", redact_payload=0, log_resource_ids="4522efdf-8d44,42332d89-1")
    send_packet(src)
    [line] = lines(nl, out)
    m = OVS_LINE.fullmatch(line)
    assert m, line
    assert m.groups()[:4] == ("ACCEPT", PROJECT, "'4522efdf-8d44', '42332d89-1'", PORT)
    assert m.group(5) == str(packet.Packet(bytearray(MAC + icmp_echo())))
    assert "data=echo(data=bytearray(b'payload!'),id=7,seq=1)" in line


def test_fwaas_driver_line(tmp_path: Path) -> None:
    src, nl, out, _ = build(tmp_path, header="none", format="fwaas", redact_payload=0)
    send_packet(src, audit_action="DROP")
    [line] = lines(nl, out)
    m = FWAAS_LINE.fullmatch(line)
    assert m, line
    assert m.groups()[:4] == ("DROP", PROJECT, "", PORT)
    assert m.group(5).startswith("ethernet(dst='fa:16:3e:00:00:01',ethertype=2048,src='fa:16:3e:00:00:02')ipv4(")
    assert m.group(5).endswith("icmp(code=0,csum=4660,data=echo(data=b'payload!',id=7,seq=1),type=8)")


def test_payload_redacted_by_default(tmp_path: Path) -> None:
    src, nl, out, _ = build(tmp_path, header="none")
    send_packet(src)
    [line] = lines(nl, out)
    assert "payload" not in line and "data=echo(data=<redacted 8 bytes>,id=7,seq=1)" in line


def test_oslo_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        src, nl, out, _ = build(tmp_path)
        send_packet(src)
        [line] = lines(nl, out)
    finally:
        monkeypatch.undo()
        time.tzset()
    m = OSLO.fullmatch(line)
    assert m, line
    assert m.group(1) == "2027-01-15 08:00:00.123"
    assert m.group(3) == "neutron.services.logapi.drivers.openvswitch.ovs_firewall_log"
    assert OVS_LINE.fullmatch(m.group(4))


def test_actions(tmp_path: Path) -> None:
    src, nl, out, ctx = build(tmp_path, header="none")
    send_packet(src, audit_action="REJECT")
    send_packet(src, audit_action=None)
    assert [line.split()[0] for line in lines(nl, out)] == ["action=DROP"]
    assert ctx.stats.get("neutronlog.neutronlog1.no_action") == 1
    (tmp_path / "second").mkdir()
    src2, nl2, out2, _ = build(tmp_path / "second", header="none", reject_as_drop=0, default_action="DROP")
    send_packet(src2, audit_action="REJECT")
    send_packet(src2, audit_action=None)
    assert [line.split()[0] for line in lines(nl2, out2)] == ["action=REJECT", "action=DROP"]


def test_unresolved_and_hostile_values(tmp_path: Path) -> None:
    src, nl, out, _ = build(tmp_path, header="none")
    send_packet(src, neutron_project_id=None, neutron_port_id="qr-1\nforged action=ACCEPT")
    [line] = lines(nl, out)
    assert "project_id=None" in line and "vm_port=qr-1\\nforged" in line


def test_packet_without_link_layer_and_without_packet(tmp_path: Path) -> None:
    src, nl, out, _ = build(tmp_path, header="none", redact_payload=0)
    send_packet(src, raw_mac=None)
    send_packet(src, raw_pkt=None)
    send_packet(src, raw_mac=None, oob_protocol=0x88B5, raw_pkt=b"\x01\x02")
    first, second, third = lines(nl, out)
    assert first.split(" pkt=")[1] == str(packet.Packet(bytearray(MAC + icmp_echo()))).split(", ", 1)[1]
    assert second.endswith(" pkt=")
    assert third.endswith(" pkt=bytearray(b'\\x01\\x02')")


def test_summary_line(tmp_path: Path) -> None:
    src, nl, out, _ = build(tmp_path, header="none")
    src.send(audit_action="DROP", neutron_project_id=PROJECT, neutron_port_id=PORT, audit_suppressed=1234,
             audit_first="2027-01-15T08:00:00.000001Z", audit_last="2027-01-15T08:00:09.999999Z",
             audit_limit_key=f"{PORT},DROP")
    [line] = lines(nl, out)
    assert line == (f"action=DROP project_id={PROJECT} log_resource_ids=[] vm_port={PORT} suppressed=1234 "
                    f"first=2027-01-15T08:00:00.000001Z last=2027-01-15T08:00:09.999999Z limit_key={PORT},DROP")
    assert not OVS_LINE.fullmatch(line)  # a parser of packet lines does not take it for one
    src.send(audit_suppressed=3, audit_first="a", audit_last="b", audit_limit_key="")  # no verdict: still written
    assert lines(nl, out)[-1] == ("action=None project_id=None log_resource_ids=[] vm_port=None suppressed=3 "
                                  "first=a last=b limit_key=")


def test_sighup_reopens(tmp_path: Path) -> None:
    src, nl, out, _ = build(tmp_path, header="none")
    send_packet(src)
    nl.flush()
    out.rename(tmp_path / "old.log")
    nl.signal(signal.SIGHUP)
    send_packet(src)
    assert len(lines(nl, out)) == 1
    assert len((tmp_path / "old.log").read_text().splitlines()) == 1
    stop_stack(src.stacks[0])
