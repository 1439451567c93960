"""IPFIX decoded by a real collector: nfcapd/nfdump 1.7.1 (Debian package nfdump) on a spare
loopback port. IPv4 flows (ulogd2's template 256) and IPv6 flows (pyulogd's template 257)
must come out with their addresses, ports, protocol and packet/byte counts, with no
sequence errors; a collector that starts late still gets every flow (queued, then sent
with the templates). nfdump 1.7.1 does not decode flowStart/EndSeconds (it shows 1970 for
every exporter using them, see ../shared/research/ipfix.md 3b), so times are not compared."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from pyulogd.core.context import Context
from pyulogd.io.loop import Loop
from pyulogd.plugins.outputs.ipfix import IpfixOutput
from tests.helpers import make_stack, stop_stack
from tests.unit.test_ipfix import V6, FlowSource

pytestmark = [pytest.mark.linux, pytest.mark.skipif(shutil.which("nfcapd") is None or shutil.which("nfdump") is None,
                                                    reason="needs nfcapd/nfdump (Debian package nfdump)")]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def nfcapd(d: Path, port: int) -> subprocess.Popen[bytes]:
    (d / "flows").mkdir(exist_ok=True)
    p = subprocess.Popen(["nfcapd", "-b", "127.0.0.1", "-p", str(port), "-w", str(d / "flows"), "-t", "60"],
                         stdout=(d / "nfcapd.log").open("wb"), stderr=subprocess.STDOUT)
    time.sleep(0.5)
    assert p.poll() is None
    return p


def stop_and_read(p: subprocess.Popen[bytes], d: Path) -> tuple[list[dict[str, Any]], str]:
    p.send_signal(signal.SIGTERM)
    p.wait(10)
    r = subprocess.run(["nfdump", "-R", str(d / "flows"), "-o", "json"], capture_output=True, text=True, timeout=30)
    try:
        flows = json.loads(r.stdout)
    except json.JSONDecodeError:
        flows = []  # nfdump 1.7.1 prints an empty list as "[\n]" with stray commas or nothing
    info = subprocess.run(["nfdump", "-R", str(d / "flows"), "-I"], capture_output=True, text=True, timeout=30)
    return flows, info.stdout


def send(stack: Any, n: int) -> None:
    for i in range(n):
        stack.source.flow(sport=40000 + i, pkts=(i, 1), nbytes=(100 * i, 50))
        stack.source.flow(addrs=V6, sport=50000 + i, proto=17, pkts=(2, 2), nbytes=(200, 200))


def summary(flows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return sorted((f.get("src4_addr") or f.get("src6_addr"), f.get("dst4_addr") or f.get("dst6_addr"),
                   f["src_port"], f["dst_port"], f["proto"], f["in_packets"], f["in_bytes"]) for f in flows)


def want(n: int) -> list[tuple[Any, ...]]:
    rows = [("10.201.0.1", "10.201.0.2", 40000 + i, 7001, 6, i + 1, 100 * i + 50) for i in range(n)]
    rows += [("fd00:201::1", "fd00:201::2", 50000 + i, 7001, 17, 4, 400) for i in range(n)]
    return sorted(rows)


def test_nfdump_decodes_ipv4_and_ipv6(tmp_path: Path) -> None:
    port = free_udp_port()
    collector = nfcapd(tmp_path, port)
    ctx = Context(loop=Loop())
    stack = make_stack([FlowSource, (IpfixOutput, {"oid": 7, "host": "127.0.0.1", "port": port, "proto": "udp"})],
                       ctx)  # fmt: skip
    send(stack, 30)  # several 512-byte messages
    stop_stack(stack)
    time.sleep(0.3)
    flows, info = stop_and_read(collector, tmp_path)
    assert summary(flows) == want(30)
    assert "Sequence failures: 0" in info


def test_collector_starts_late(tmp_path: Path) -> None:
    port = free_udp_port()
    ctx = Context(loop=Loop())
    stack = make_stack([FlowSource, (IpfixOutput, {"oid": 9, "host": "127.0.0.1", "port": port, "proto": "udp"})],
                       ctx)  # fmt: skip
    sink: Any = stack.sink
    stack.source.flow(sport=1)
    sink._finish_message()
    sink.flush()  # sent: UDP cannot know yet that nobody listens (the ICMP error comes back)
    time.sleep(0.1)
    stack.source.flow(sport=2)
    sink._finish_message()
    sink.flush()  # refused: the first message counts as lost, this one waits
    assert ctx.stats.get("ipfix.ipfix1.send_failures") == 1 and sink.out.sender.backlog == 1
    collector = nfcapd(tmp_path, port)
    end = time.monotonic() + 8
    while time.monotonic() < end and sink.out.sender.queue:
        ctx.loop.run_once(0.05)
        sink.flush()
    stop_stack(stack)
    time.sleep(0.3)
    flows, _ = stop_and_read(collector, tmp_path)
    # The waiting message reaches the collector after a template message (a new session).
    assert [f["src_port"] for f in flows] == [2]
