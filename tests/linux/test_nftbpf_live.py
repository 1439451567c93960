"""NFTRACE's socket filter in the real kernel: two sockets subscribed to the trace events of one
namespace, one with the program attached; the kernel keeps exactly the events the reference
interpreter (pyulogd.codec.nlbpf.run) keeps, and drops some (our table's after its first, the
ends of chains, rules that went on). End to end, the input makes the same records with the
filter and without (and tests/linux/test_nftrace_live.py compares them with nft monitor trace,
the filter on by default there)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from pyulogd.codec import nftbpf, nlbpf
from pyulogd.codec import nftrace as nt
from pyulogd.io.netlink import NetlinkSocket
from pyulogd.io.netns import NetnsHandle

can_run = os.geteuid() == 0 and bool(shutil.which("ip")) and bool(shutil.which("nft"))
pytestmark = [pytest.mark.linux, pytest.mark.skipif(not can_run, reason="needs root, ip, nft")]
OWN = "ntbpf_trace"
RULESET = f"""table inet {OWN} {{
  chain output {{ type filter hook output priority -190; policy accept; udp dport 7000-7009 meta nftrace set 1; }}
}}
table inet filt {{
  chain sub {{ counter; udp dport 7001 return; }}
  chain out {{ type filter hook output priority 0; policy accept;
    counter; jump sub; udp dport 7002 drop; udp dport 7003 accept; }}
  chain in {{ type filter hook input priority 0; policy accept; udp dport 7004 drop; }}
}}
table ip {OWN} {{
  chain in {{ type filter hook input priority 10; policy accept; counter; }}
}}
"""


def sh(*args: str, ns: str | None = None, input: str | None = None) -> str:
    cmd = list(args) if ns is None else ["ip", "netns", "exec", ns, *args]
    p = subprocess.run(cmd, input=input, text=True, capture_output=True, timeout=30)
    if p.returncode:
        raise AssertionError(f"{' '.join(cmd)}: {p.stderr.strip()}")
    return p.stdout


@contextlib.contextmanager
def namespace() -> Iterator[str]:
    ns = f"nt-bpf-{secrets.token_hex(3)}"
    try:
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "set", "lo", "up", ns=ns)
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def read_all(sock: NetlinkSocket, want: int, deadline: float) -> list[bytes]:
    """Trace events until ``want`` have come or the deadline passes (the kernel sends them
    while the packets are sent; nothing more comes after)."""
    out: list[bytes] = []
    while time.monotonic() < deadline:
        r = sock.recv()
        if r is None:
            if len(out) >= want:
                break
            time.sleep(0.01)
            continue
        assert not isinstance(r, int), "ENOBUFS in a test of a few events"
        out += [m for m in _split(r) if int.from_bytes(m[4:6], "little") == nt.TRACE_TYPE]
    return out


def _split(buf: bytes) -> list[bytes]:
    out, off = [], 0
    while off + 16 <= len(buf):
        ln = int.from_bytes(buf[off : off + 4], "little")
        if ln < 16:
            break
        out.append(buf[off : off + ln])
        off += (ln + 3) & ~3
    return out


def test_the_kernel_keeps_what_the_reference_interpreter_keeps() -> None:
    prog = nftbpf.compile_filter(OWN)
    with namespace() as ns:
        sh("nft", "-f", "-", ns=ns, input=RULESET)
        handle = NetnsHandle.open(f"/run/netns/{ns}", ns)
        group = 1 << (nt.NFNLGRP_NFTRACE - 1)
        plain = NetlinkSocket(groups=group, netns=handle, recvmmsg=False)
        filtered = NetlinkSocket(groups=group, netns=handle, recvmmsg=False)
        try:
            plain.set_rcvbuf(4 << 20)
            filtered.set_rcvbuf(4 << 20)
            filtered.attach_filter(nlbpf.pack(prog))
            sender = ("import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                      "for p in range(7000, 7006):\n"
                      "    try:\n        s.sendto(b'x', ('127.0.0.1', p))\n"
                      "    except PermissionError:\n        pass\n")  # fmt: skip  (7002 is dropped on the way out)
            sh("python3", "-c", sender, ns=ns)
            end = time.monotonic() + 10
            everything = read_all(plain, 1, end)
            expected = [m for m in everything if nlbpf.run(prog, m)]
            got = read_all(filtered, len(expected), end)
        finally:
            plain.close()
            filtered.close()
            handle.close()
    assert got == expected
    tables = {ev.table for m in everything for ev in nt.parse_buffer(m).events}
    assert {OWN, "filt"} <= tables
    # some of every kind went: our table's later events, a user chain's end, rules that went on
    dropped = [ev for m in everything if not nlbpf.run(prog, m) for ev in nt.parse_buffer(m).events]
    assert any(ev.table == OWN and ev.family == nt.NFPROTO_INET for ev in dropped)
    assert any(ev.chain == "sub" and ev.handle is None for ev in dropped)  # the end of a user chain
    assert any(ev.table == "filt" and ev.verdict == nt.NFT_CONTINUE and ev.handle is not None for ev in dropped)
    # the ip table of the same name is someone else's: its policy is kept
    assert any(ev.table == OWN and ev.family == nt.NFPROTO_IPV4 for m in got for ev in nt.parse_buffer(m).events)
    assert len(got) < len(everything)


# The fields of a record that do not change from one probe to the next (the packet's bytes,
# trace id and time do).
_SAME = ("audit.action", "audit.rule", "nft.family", "nft.table", "nft.chain", "nft.handle", "nft.rule",
         "nft.verdict", "nft.policy", "nft.trail", "nft.final", "oob.hook", "oob.family", "oob.protocol",
         "oob.mark", "raw.pktlen", "raw.mac_len", "raw.type", "oob.prefix")  # fmt: skip


def test_the_input_makes_the_same_records_with_and_without_the_filter() -> None:
    """End to end, NFTRACE with kernel_filter=1 and =0 on the same probes (drops, a reject, a
    jump into a user chain, policies, a rule that only counts; rule_records on): the same
    records, from half the events."""
    from tests.linux.test_nftrace_live import NATIVE, dport, probe, pump, tracing

    tag = f"nt-bpf-{secrets.token_hex(3)}"
    cli, srv = f"{tag}-c", f"{tag}-s"
    try:
        for ns in (cli, srv):
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "set", "lo", "up", ns=ns)
        sh("ip", "link", "add", "c0", "netns", cli, "type", "veth", "peer", "name", "s0", "netns", srv)
        for ns, dev, cidr in ((cli, "c0", "10.98.0.1/24"), (srv, "s0", "10.98.0.2/24")):
            sh("ip", "addr", "add", cidr, "dev", dev, ns=ns)
            sh("ip", "link", "set", dev, "up", ns=ns)
        sh("nft", "-f", "-", ns=srv, input=NATIVE)
        ports = [("tcp", p) for p in (8001, 8002, 8003, 8004, 8005)] + [("udp", 9003)]
        want = {port for _, port in ports}
        got: dict[int, dict[int | None, list[tuple[object, ...]]]] = {}
        events: dict[int, int] = {}
        for flt in (1, 0):
            with tracing(srv, trace_rule="ct state new", rule_records=1, kernel_filter=flt) as (p, cap, ctx):
                for proto, port in ports:
                    probe(cli, "10.98.0.2", proto, port)
                assert pump(ctx, lambda: want <= {dport(r) for r in cap.recs if r["nft.final"]}), cap.recs
                pump(ctx, lambda: False, 0.3)  # nothing more comes
                by_port: dict[int | None, list[tuple[object, ...]]] = {}
                for r in cap.recs:
                    by_port.setdefault(dport(r), []).append(tuple(r.get(k) for k in _SAME))
                got[flt] = by_port
                events[flt] = ctx.stats.get("nftrace.tr.events")
    finally:
        for ns in (cli, srv):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    for port in (8001, 8002, 8003, 8004, 8005, 9003):
        assert got[1][port] == got[0][port], port
    assert got[1] == got[0]
    assert 0 < events[1] < events[0]
