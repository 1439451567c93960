"""The NFCT input against the real kernel: the daemon runs in the server namespace of a throw-away
lab (``ip netns exec``), TCP, UDP and ICMP flows over IPv4 and IPv6 come from the client
namespace, ``conntrack -F`` ends them, the JSON outputs are read back. Needs root, nft and the
conntrack tool; the namespaces are deleted afterwards."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.linux.lab import Lab, have_root_and_tools, sh, wait_for

_skip = have_root_and_tools("conntrack")
pytestmark = [pytest.mark.linux, pytest.mark.skipif(_skip is not None, reason=_skip or "")]

RULES = """table inet t {
  chain input {
    type filter hook input priority 0; policy accept;
    ct state new accept
  }
}
"""
SERVER = """
import socket, threading
def tcp():
    s = socket.socket(socket.AF_INET6); s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("::", 7001)); s.listen()
    while True:
        c, _ = s.accept(); c.sendall(c.recv(100)); c.close()
def udp():
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0); s.bind(("::", 7003))
    while True:
        d, a = s.recvfrom(100); s.sendto(d, a)
threading.Thread(target=tcp, daemon=True).start()
udp()
"""
CLIENT = """
import socket, sys
for host, port in ((sys.argv[1], 41001), (sys.argv[2], 41005)):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam); s.bind(("", port)); s.connect((host, 7001))
    s.sendall(b"hello flow\\n"); assert s.recv(100); s.close()
    u = socket.socket(fam, socket.SOCK_DGRAM); u.bind(("", port + 2)); u.settimeout(3)
    u.sendto(b"ok", (host, 7003)); assert u.recvfrom(100)[0] == b"ok"
"""


def conf(out: Path, stacks: str, sections: str) -> str:
    return f'[global]\nlogfile="{out}/daemon.log"\nloglevel=1\n{stacks}\n\n{sections}'


def json_out(name: str, out: Path) -> str:
    return f'[{name}]\nfile="{out}/{name}.json"\nsync=1\n'


def records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@pytest.fixture()
def lab() -> Iterator[Lab]:
    with Lab("nfct") as lab:
        lab.nft(RULES)
        server = lab.popen([sys.executable, "-c", SERVER])
        try:
            yield lab
        finally:
            server.kill()
            server.wait()


class Daemon:
    def __init__(self, lab: Lab, out: Path, text: str, instances: int) -> None:
        (out / "u.conf").write_text(text)
        self.log = out / "daemon.log"
        self.proc = lab.popen([sys.executable, "-m", "pyulogd", "-c", str(out / "u.conf")],
                              stderr=subprocess.PIPE)
        try:
            wait_for(lambda: self.log_text().count("NFCT plugin working") == instances, 15, "NFCT started")
        except AssertionError:
            self.stop()
            raise

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(10)
        assert self.proc.stderr is not None
        err = self.proc.stderr.read().decode(errors="replace")
        assert rc == 0, err
        return self.log_text()


def traffic(lab: Lab) -> None:
    sh(sys.executable, "-c", CLIENT, lab.srv4, lab.srv6, ns=lab.cli)
    sh("ping", "-c1", "-W2", lab.srv4, ns=lab.cli)
    sh("ping", "-6", "-c1", "-W2", lab.srv6, ns=lab.cli)


def flow_of(r: dict[str, Any]) -> tuple[Any, ...]:
    return (r["oob.family"], r["orig.ip.protocol"], r.get("orig.l4.sport"), r.get("orig.l4.dport"))


def expected(lab: Lab) -> set[tuple[Any, ...]]:
    return {(2, 6, 41001, 7001), (2, 17, 41003, 7003), (10, 6, 41005, 7001), (10, 17, 41007, 7003),
            (2, 1, None, None), (10, 58, None, None)}


def test_events_hash_and_no_hash_with_accounting(lab: Lab, tmp_path: Path) -> None:
    stacks = "\n".join([
        "stack=ct1:NFCT,ip2str1:IP2STR,nohash:JSON",
        "stack=ct2:NFCT,ip2str2:IP2STR,hash:JSON",
        "stack=ct3:NFCT,ip2str3:IP2STR,udp:JSON",
    ])  # fmt: skip
    sections = "\n".join([
        "[ct1]\nhash_enable=0\nevent_mask=7\naccounting=1\n",
        "[ct2]\nevent_mask=7\n",
        f"[ct3]\nhash_enable=0\naccept_proto_filter=udp\naccept_src_filter={lab.cli4}/32,{lab.cli6}/128\n",
        json_out("nohash", tmp_path), json_out("hash", tmp_path), json_out("udp", tmp_path),
    ])  # fmt: skip
    d = Daemon(lab, tmp_path, conf(tmp_path, stacks, sections), 3)
    try:
        assert sh("sysctl", "-n", "net.netfilter.nf_conntrack_acct", ns=lab.srv).stdout.strip() == "1"
        assert sh("sysctl", "-n", "net.netfilter.nf_conntrack_timestamp", ns=lab.srv).stdout.strip() == "1"
        traffic(lab)
        time.sleep(0.3)
        sh("conntrack", "-F", ns=lab.srv)
        want = expected(lab)
        wait_for(lambda: {flow_of(r) for r in records(tmp_path / "hash.json")} >= want, 10, "DESTROY records")
        wait_for(lambda: len([r for r in records(tmp_path / "nohash.json") if r["ct.event"] == 4]) >= 6, 10,
                 "no-hash DESTROY records")
    finally:
        log = d.stop()
    nohash = records(tmp_path / "nohash.json")
    for ev in (1, 4):
        assert {flow_of(r) for r in nohash if r["ct.event"] == ev} == want
    assert not [r for r in nohash if r["ct.event"] == 2]
    for r in nohash + records(tmp_path / "hash.json"):
        fam4 = r["oob.family"] == 2
        assert r["oob.protocol"] == (0x0800 if fam4 else 0x86DD)
        assert (r["src_ip"], r["dest_ip"]) == ((lab.cli4, lab.srv4) if fam4 else (lab.cli6, lab.srv6))
        assert (r["reply.ip.saddr.str"], r["reply.ip.daddr.str"]) == (r["dest_ip"], r["src_ip"])
        if r["orig.ip.protocol"] == 1:
            assert (r["icmp.type"], r["icmp.code"]) == (8, 0)
        if r["orig.ip.protocol"] == 58:
            assert (r["icmpv6.type"], r["icmpv6.code"]) == (128, 0)
        if r["ct.event"] == 4:
            # accounting=1 turned nf_conntrack_acct on before the flows started.
            for k in ("orig.raw.pktcount", "orig.raw.pktlen", "reply.raw.pktcount", "reply.raw.pktlen"):
                assert r[k] > 0, (k, r)
            assert r["flow.end.sec"] * 10**6 + r["flow.end.usec"] >= r["flow.start.sec"] * 10**6 + r["flow.start.usec"]
    hashed = records(tmp_path / "hash.json")
    assert len(hashed) == 6 and all(r["ct.event"] == 4 and "flow.start.sec" in r for r in hashed)
    tcp = next(r for r in hashed if flow_of(r) == (2, 6, 41001, 7001))
    assert tcp["orig.raw.pktcount"] >= 5  # SYN, ACK, data, FIN, ACK
    udp = records(tmp_path / "udp.json")
    assert {flow_of(r) for r in udp} == {(2, 17, 41003, 7003), (10, 17, 41007, 7003)} and len(udp) == 4
    # The filters run in the kernel (a socket filter, as ulogd2's): the TCP and ICMP events
    # never reached user space, so none had to be filtered there.
    assert "NFCT 'ct3': accept filters attached to the event socket" in log
    assert "nfct.ct3.filtered=" not in log and "nfct.ct3.events=4" in log and "Traceback" not in log


def test_sigusr2_dumps_and_zeroes_with_a_shared_input(lab: Lab, tmp_path: Path) -> None:
    stacks = "stack=ct1:NFCT,ip2str1:IP2STR,a:JSON\nstack=ct1:NFCT,ip2str2:IP2STR,b:JSON"
    sections = ("[ct1]\nhash_enable=0\naccounting=1\nreliable=1\n\n" + json_out("a", tmp_path) + "\n"
                + json_out("b", tmp_path))
    d = Daemon(lab, tmp_path, conf(tmp_path, stacks, sections), 1)
    try:
        assert "NFCT reliable logging has been enabled." in d.log_text()
        traffic(lab)
        time.sleep(0.3)
        d.proc.send_signal(signal.SIGUSR2)
        for name in ("a", "b"):
            wait_for(lambda n=name: len([r for r in records(tmp_path / f"{n}.json") if r["ct.event"] == 2]) >= 6,  # type: ignore[misc]
                     10, f"UPDATE records in {name}.json")
        assert d.proc.poll() is None  # 2.0.8 crashes here (hash_enable=0, shared id)
        listing = sh("conntrack", "-L", ns=lab.srv).stdout
    finally:
        d.stop()
    for name in ("a", "b"):
        upd = [r for r in records(tmp_path / f"{name}.json") if r["ct.event"] == 2]
        assert {flow_of(r) for r in upd} == expected(lab)
        assert all(r["orig.raw.pktcount"] > 0 for r in upd)
    # The kernel's counters were reset by the dump.
    tcp = next(x for x in listing.splitlines() if "sport=41001" in x)
    assert "packets=0 bytes=0" in tcp


def insert_udp(lab: Lab, n: int, base: int = 20000) -> None:
    for i in range(n):
        sh("conntrack", "-I", "-p", "udp", "-s", "10.99.0.1", "-d", "10.99.0.2", "--sport", str(base + i),
           "--dport", "53", "-t", "300", ns=lab.srv)


def enobufs(log: str) -> int:
    return int(log.split("nfct.ct1.enobufs=")[1].split(",")[0].split()[0]) if "nfct.ct1.enobufs=" in log else 0


def test_flows_from_before_the_start_are_reported(lab: Lab, tmp_path: Path) -> None:
    """Flows found by the initial dump send no events (nf_conntrack_events=2 allocates event
    state only while someone listens); the sweep finds when they are gone."""
    sh("sysctl", "-qw", "net.netfilter.nf_conntrack_timestamp=1", ns=lab.srv)
    n = 5
    insert_udp(lab, n)
    stacks = "stack=ct1:NFCT,ip2str1:IP2STR,hash:JSON"
    sections = "[ct1]\nevent_mask=7\nnetlink_resync_timeout=1\n\n" + json_out("hash", tmp_path)
    started = time.time()
    d = Daemon(lab, tmp_path, conf(tmp_path, stacks, sections), 1)
    try:
        assert f"{n} flows in the table at start" in d.log_text()
        time.sleep(1.5)
        assert records(tmp_path / "hash.json") == []  # still there: nothing to report
        sh("conntrack", "-D", "-p", "udp", "--dport", "53", ns=lab.srv)
        wait_for(lambda: len(records(tmp_path / "hash.json")) >= n, 10, "swept flows")
    finally:
        log = d.stop()
    recs = records(tmp_path / "hash.json")
    assert len(recs) == n and {r["orig.l4.sport"] for r in recs} == set(range(20000, 20000 + n))
    for r in recs:
        assert r["ct.event"] == 4 and "flow.end.sec" in r
        assert r["flow.start.sec"] <= started  # the kernel's start time, read by the initial dump
    # Reported either by their DESTROY events or, when the kernel gave these flows no event
    # extension (nf_conntrack_events=2 and no listener when they were created), by the sweep;
    # which of the two is up to the kernel, flow by flow, so a mix is fine: once each.
    def counter(name: str) -> int:
        m = re.search(rf"nfct\.ct1\.{name}=(\d+)", log)
        return int(m.group(1)) if m else 0

    assert counter("purged") + counter("events") == n, log


def test_lost_events_are_counted_and_resynced(lab: Lab, tmp_path: Path) -> None:
    """DESTROYs lost to a full socket buffer are found by the resync and reported once each."""
    n = 40
    stacks = "stack=ct1:NFCT,ip2str1:IP2STR,hash:JSON"
    sections = ("[ct1]\nevent_mask=7\nnetlink_socket_buffer_size=1024\nnetlink_resync_timeout=1\n\n"
                + json_out("hash", tmp_path))
    d = Daemon(lab, tmp_path, conf(tmp_path, stacks, sections), 1)
    try:
        insert_udp(lab, n)  # NEW events, read as they come
        # Let the NEW events (and a resync, should the tiny buffer overflow already) settle:
        # flows the daemon never learnt of cannot be reported when their DESTROY is lost.
        time.sleep(2.5)
        d.proc.send_signal(signal.SIGSTOP)
        try:
            sh("conntrack", "-D", "-p", "udp", "--dport", "53", ns=lab.srv)  # 40 DESTROYs, buffer ~2 KiB
        finally:
            d.proc.send_signal(signal.SIGCONT)
        wait_for(lambda: len(records(tmp_path / "hash.json")) >= n, 30, "every flow reported")
        time.sleep(0.5)
    finally:
        log = d.stop()
    recs = records(tmp_path / "hash.json")
    assert len(recs) == n and len({r["ct.id"] for r in recs}) == n
    assert {r["orig.l4.sport"] for r in recs} == set(range(20000, 20000 + n))
    assert all(r["ct.event"] == 4 and "flow.start.sec" in r and "flow.end.sec" in r for r in recs)
    assert enobufs(log) >= 1 and "nfct.ct1.resyncs=" in log and "nfct.ct1.purged=" in log


PROBE = """
import subprocess, sys
from pyulogd.core.context import Context
from pyulogd.io.loop import Loop
from pyulogd.plugins.inputs.nfct import NfctInput
cfg = {o.name: o.default for o in NfctInput.options}
p = NfctInput(Context(loop=Loop()), "ct1", cfg)
p.configure()
got = []
assert p.run_dump(False, got.append)
icmp = [v for v in got if v[3] == 1]
udp = [v for v in got if v[3] == 17]
print(len(got), p._exists(udp[0]), p._exists(icmp[0]))
subprocess.run(["conntrack", "-D", "-p", "udp"], check=True, capture_output=True)
subprocess.run(["conntrack", "-D", "-p", "icmp"], check=True, capture_output=True)
print(p._exists(udp[0]), p._exists(icmp[0]))
p.stop()
"""


def test_dump_and_get_by_tuple(lab: Lab) -> None:
    """run_dump reads the whole table; a GET built from a dumped entry's own tuple finds it (ICMP
    too: the ICMP id is only in the raw tuple) and gets ENOENT once it is gone."""
    insert_udp(lab, 3)
    sh("conntrack", "-I", "-p", "icmp", "-s", "10.99.0.1", "-d", "10.99.0.2", "--icmp-type", "8", "--icmp-code",
       "0", "--icmp-id", "77", "-t", "300", ns=lab.srv)
    out = sh(sys.executable, "-c", PROBE, ns=lab.srv).stdout.split("\n")
    assert out[0] == "4 True True" and out[1] == "False False"
