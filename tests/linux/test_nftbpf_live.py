"""NFTRACE's socket filter in the real kernel: two sockets subscribed to the trace events of one
namespace, one with the program attached; the kernel keeps exactly the events the reference
interpreter (pyulogd.codec.nlbpf.run) keeps, and drops some (our table's after its first, the
ends of chains, rules that went on). The records made from each are compared in
tests/unit/test_nftbpf.py and, end to end, by the nft monitor trace tests (the filter is on
by default there)."""

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
