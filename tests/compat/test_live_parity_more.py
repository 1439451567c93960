"""Side by side with real ulogd2 for PCAP, MARK, NACCT, IPFIX, UNIXSOCK, SYSLOG and GRAPHITE (issue 6, item 5).

Packets (PCAP, MARK): the lab and ruleset of ``test_live_parity.py`` (every nft log statement
logs to group 11 for ulogd2 and group 12 for pyulogd) plus a chain that sets packet marks
before logging (TCP 0x101, UDP 0x2, the rest 0). Each daemon runs NFLOG,BASE,PCAP and two
NFLOG,BASE,MARK,...,LOGEMU stacks (mark=1 mask=0xff: TCP only; mark=2: UDP only).

Flows (NACCT, IPFIX): the NAT router of ``test_live_flow_parity.py``; both daemons read the
same conntrack events (NFCT event_mask 0x7, hash_enable=0) into NACCT and into IPFIX over UDP
to a collector of its own on the router's loopback.

UNIXSOCK: the same frames, sent with the package's client (``python -m pyulogd.ctl.unixsock``)
to each daemon's socket; UNIXSOCK,BASE,IP2STR,PRINTPKT,LOGEMU and UNIXSOCK,JSON.

GRAPHITE: both daemons run NFACCT (zerocounter=0) -> GRAPHITE in the nfacct namespace of
``tests/linux/test_nfacct_live.py``, each to a TCP listener of its own standing in for carbon.

Only what each daemon takes from its own clock is masked, and the differences docs/compat.md
documents are applied one by one (each with a pointer to its section); any other difference
fails.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyulogd.codec import ipfix
from tests.compat.test_live_parity import TRAFFIC, asleep_in_poll, logged, ruleset
from tests.linux.lab import Lab, have_root_and_tools, lines, sh, wait_for
from tests.linux.nat_lab import NatLab, complete_lines, stop, wait_listening
from tests.linux.test_nfacct_live import WANT, _skip_reason, ns, traffic  # noqa: F401 - ns is a fixture

ULOGD = "/usr/sbin/ulogd"
PLUGDIR = "/usr/lib/x86_64-linux-gnu/ulogd"
NEEDED = ("inppkt_NFLOG", "raw2packet_BASE", "filter_IFINDEX", "filter_IP2STR", "filter_PRINTPKT",
          "filter_MARK", "output_LOGEMU", "output_JSON", "output_PCAP", "inpflow_NFCT", "output_NACCT",
          "output_IPFIX", "inppkt_UNIXSOCK")

_skip = have_root_and_tools("conntrack", "ping") or (
    None if os.path.exists(ULOGD) else "needs ulogd2 (Debian package ulogd2)")
if _skip is None:
    missing = [n for n in NEEDED if not os.path.exists(f"{PLUGDIR}/ulogd_{n}.so")]
    _skip = f"needs ulogd2 plugins {missing}" if missing else None
pytestmark = [pytest.mark.linux, pytest.mark.compat, pytest.mark.skipif(_skip is not None, reason=_skip or "")]

LOGEMU_TIME = re.compile(r"^[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d ")
JSON_CLOCK = {"timestamp", "oob.time.sec", "oob.time.usec"}
# docs/compat.md, BASE: `tcp.offset` and `tcp.reserved` are the real values (2.0.8: always 0).
JSON_CORRECTED = {"tcp.offset", "tcp.reserved"}
ENV = dict(os.environ, TZ="UTC")


def plugins(*names: str) -> str:
    return "".join(f'plugin="{PLUGDIR}/ulogd_{n}.so"\n' for n in names)


def start(popen: Any, d: Path) -> list[subprocess.Popen[bytes]]:
    """ulogd2 with ``d/ulogd2/ulogd.conf`` and pyulogd with ``d/pyulogd/ulogd.conf``."""
    return [
        popen([ULOGD, "-c", str(d / "ulogd2" / "ulogd.conf")], env=ENV, stdout=subprocess.DEVNULL,
              stderr=subprocess.DEVNULL),
        popen([sys.executable, "-m", "pyulogd", "-c", str(d / "pyulogd" / "ulogd.conf")], env=ENV,
              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE),
    ]


def check_stopped(daemons: list[subprocess.Popen[bytes]]) -> None:
    rcs = stop(*daemons)
    err = daemons[1].stderr.read().decode(errors="replace") if daemons[1].stderr else ""
    assert rcs == [0, 0], err


# ---------------------------------------------------------------- packets: PCAP and MARK


def packet_config(out: Path, group: int) -> str:
    return f"""[global]
logfile="{out}/daemon.log"
loglevel=3
{plugins("inppkt_NFLOG", "raw2packet_BASE", "filter_IFINDEX", "filter_IP2STR", "filter_PRINTPKT",
         "filter_MARK", "output_LOGEMU", "output_PCAP")}stack=log1:NFLOG,base1:BASE,pcap1:PCAP
stack=log1:NFLOG,base1:BASE,mark1:MARK,ifi1:IFINDEX,ip2str1:IP2STR,print1:PRINTPKT,emu1:LOGEMU
stack=log1:NFLOG,base1:BASE,mark2:MARK,ifi1:IFINDEX,ip2str1:IP2STR,print2:PRINTPKT,emu2:LOGEMU

[log1]
group={group}

[pcap1]
file="{out}/out.pcap"
sync=1

[mark1]
mark=1
mask=0xff

[mark2]
mark=2

[emu1]
file="{out}/mark1.log"
sync=1

[emu2]
file="{out}/mark2.log"
sync=1
"""


def mark_ruleset(lab: Lab) -> str:
    """Marks set before the parity table's chains log (priority -500 < -450 and 0)."""
    rules = "meta l4proto tcp meta mark set 0x101\n    meta l4proto udp meta mark set 0x2"
    return f"""
table inet marks {{
  chain pre {{
    type filter hook prerouting priority -500; policy accept;
    {rules}
  }}
  chain out {{
    type filter hook output priority -500; policy accept;
    {rules}
  }}
}}
"""


@pytest.fixture(scope="module")
def packet_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One run of both daemons over the traffic mix; the tests compare its outputs."""
    d = tmp_path_factory.mktemp("pkt")
    for name, g in (("ulogd2", 11), ("pyulogd", 12)):
        (d / name).mkdir()
        (d / name / "ulogd.conf").write_text(packet_config(d / name, g))
    with Lab("pmore") as lab:
        lab.nft(ruleset(lab))
        lab.nft(mark_ruleset(lab))
        daemons = start(lab.popen, d)
        server = None
        try:
            wait_for(lambda: {11, 12} <= lab.nflog_groups(), 15, "both daemons to bind their NFLOG group")
            server = lab.popen([sys.executable, str(TRAFFIC), "server", "--max-seconds", "30"],
                               stdout=subprocess.PIPE)
            assert server.stdout is not None
            server.stdout.readline()  # "server ready"
            addrs = ",".join((lab.cli4, lab.srv4, lab.cli6, lab.srv6))
            client = sh(sys.executable, str(TRAFFIC), "client", "--addrs", addrs, ns=lab.cli, check=False,
                        timeout=60)
            assert client.returncode == 0, client.stderr
            # Every packet through the first stack (PCAP) of both daemons, then both daemons
            # back in their loops, done with the later stacks: nothing sleeps a fixed time.
            want = logged(lab)
            wait_for(lambda: all(pcap_count(d / x / "out.pcap") >= want for x in ("ulogd2", "pyulogd")), 30,
                     f"{want} pcap records from both daemons")  # fmt: skip
            wait_for(lambda: all(asleep_in_poll(p) for p in daemons), 10, "both daemons to wait for input")
        finally:
            if server is not None:
                server.send_signal(signal.SIGTERM)
                server.wait(10)
            check_stopped(daemons)
        (d / "addrs").write_text(json.dumps([lab.cli4, lab.srv4, lab.cli6, lab.srv6]))
    yield d


def pcap_count(path: Path) -> int:
    """Whole records in a pcap file being written (0 before its header)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0
    n, off = 0, 24
    while off + 16 <= len(data):
        caplen = struct.unpack_from("<I", data, off + 8)[0]
        if off + 16 + caplen > len(data):
            break
        n, off = n + 1, off + 16 + caplen
    return n


def pcap_records(path: Path) -> tuple[bytes, list[tuple[int, int, bytes]]]:
    """The file header and every record's (caplen, len, bytes); the record times are left out."""
    data = path.read_bytes()
    header, off, out = data[:24], 24, []
    while off + 16 <= len(data):
        _, _, incl, orig = struct.unpack_from("<IIII", data, off)
        out.append((incl, orig, data[off + 16 : off + 16 + incl]))
        off += 16 + incl
    assert off == len(data), f"{path}: trailing bytes"
    return header, out


TSHARK_FIELDS = ("frame.len", "frame.cap_len", "ip.src", "ip.dst", "ip.id", "ip.flags", "ip.frag_offset",
                 "ipv6.src", "ipv6.dst", "tcp.srcport", "tcp.dstport", "tcp.flags", "tcp.seq_raw",
                 "udp.srcport", "udp.dstport", "icmp.type", "icmpv6.type", "_ws.col.Protocol", "_ws.col.Info")


def tshark(path: Path) -> list[str]:
    args = ["tshark", "-n", "-r", str(path), "-T", "fields"]
    for f in TSHARK_FIELDS:
        args += ["-e", f]
    r = subprocess.run(args, capture_output=True, text=True, timeout=30, check=True)
    return r.stdout.splitlines()


def test_pcap_same_file(packet_run: Path) -> None:
    """docs/compat.md, PCAP: byte-compatible; only the record times are each daemon's (masked)."""
    ref, cand = packet_run / "ulogd2" / "out.pcap", packet_run / "pyulogd" / "out.pcap"
    ref_h, ref_r = pcap_records(ref)
    cand_h, cand_r = pcap_records(cand)
    assert cand_h == ref_h  # magic, version, thiszone (TZ=UTC), snaplen, LINKTYPE_RAW
    assert len(ref_r) >= 40, "the traffic mix logs about 44 packets"
    assert cand_r == ref_r
    if shutil.which("tshark") is None:
        pytest.skip("records compared; tshark (Debian package tshark) not installed for the text view")
    ref_t, cand_t = tshark(ref), tshark(cand)
    assert len(ref_t) == len(ref_r)
    assert cand_t == ref_t


def test_mark_same_selection(packet_run: Path) -> None:
    """docs/compat.md, MARK: as 2.0.8 (mark & mask compared as 32-bit numbers)."""
    for name, what in (("mark1.log", "PROTO=TCP "), ("mark2.log", "PROTO=UDP ")):
        ref = [LOGEMU_TIME.sub("TIME ", x) for x in lines(packet_run / "ulogd2" / name)]
        cand = [LOGEMU_TIME.sub("TIME ", x) for x in lines(packet_run / "pyulogd" / name)]
        assert cand == ref, name
        assert len(ref) >= 4, name
        assert all(what in x for x in ref), name  # only the marked packets passed
    # Both selections together are a proper subset: ICMP (mark 0) was stopped.
    total = len(pcap_records(packet_run / "ulogd2" / "out.pcap")[1])
    both = len(lines(packet_run / "ulogd2" / "mark1.log")) + len(lines(packet_run / "ulogd2" / "mark2.log"))
    assert both < total


# ---------------------------------------------------------------- flows: NACCT and IPFIX


COLLECTOR = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", int(sys.argv[1])))
print("ready", flush=True)
with open(sys.argv[2], "a") as f:
    while (data := s.recv(65535)) != b"END":  # END: sent once the daemons are gone
        f.write(data.hex() + "\\n")
        f.flush()
"""
# Sent to a collector after the daemons stopped: the socket's queue is read in order, so the
# collector has written every datagram of the daemons when it exits.
COLLECTOR_END = "import socket, sys; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'END', " \
    "('127.0.0.1', int(sys.argv[1])))"


NOTRACK_LO = """table inet notrack_lo {
  chain pre { type filter hook prerouting priority raw; policy accept; iifname "lo" notrack; }
  chain out { type filter hook output priority raw; policy accept; oifname "lo" notrack; }
}
"""


def spool(out: Path, inst: str) -> str:
    """pyulogd's network outputs keep what their peer did not take at stop in a spool, sent to
    the peer at the next start (issue 12): in the test's directory, never the default
    /var/spool/pyulogd/<id> another run would find. (ulogd2 does not get the line.)"""
    return f'spool_dir="{out}/spool-{inst}"\n' if out.name == "pyulogd" else ""


def flow_config(out: Path, port: int) -> str:
    return f"""[global]
logfile="{out}/daemon.log"
loglevel=3
{plugins("inpflow_NFCT", "filter_IP2STR", "output_NACCT", "output_IPFIX")}stack=ct1:NFCT,ip2str1:IP2STR,nacct1:NACCT
stack=ct1:NFCT,ipfix1:IPFIX

[ct1]
event_mask=0x00000007
hash_enable=0

[nacct1]
file="{out}/nacct.log"
sync=1

[ipfix1]
oid=7
host="127.0.0.1"
port={port}
proto=udp
{spool(out, "ipfix1")}"""


@pytest.fixture(scope="module")
def flow_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[Any]]]:
    d = tmp_path_factory.mktemp("flow")
    with NatLab("fmore") as lab:
        sh("sysctl", "-qw", "net.netfilter.nf_conntrack_acct=1", "net.netfilter.nf_conntrack_timestamp=1",
           ns=lab.router)
        # The IPFIX datagrams to the collectors on lo are not flows of the lab.
        sh("nft", "-f", "-", ns=lab.router, input=NOTRACK_LO)
        lab.start_servers()
        collectors = []
        for name, port in (("ulogd2", 4739), ("pyulogd", 4740)):
            (d / name).mkdir()
            (d / name / "ulogd.conf").write_text(flow_config(d / name, port))
            c = lab.popen(lab.router, [sys.executable, "-c", COLLECTOR, str(port), str(d / name / "ipfix.hex")],
                          stdout=subprocess.PIPE)
            assert c.stdout is not None and c.stdout.readline().strip() == b"ready"
            collectors.append(c)
        flows = lab.flows()
        n = len(flows)
        daemons = start(lambda args, **kw: lab.popen(lab.router, args, **kw), d)
        try:
            wait_listening(daemons[0], 1, "ulogd2")
            wait_listening(daemons[1], 1, "pyulogd")
            lab.traffic()
            assert lab.ct_count() == n
            lab.flush()
            wait_for(lambda: all(len(complete_lines(d / x / "nacct.log")) >= 2 * n for x in ("ulogd2", "pyulogd")),
                     10, "NACCT lines of every event from both daemons")
            # IPFIX partial messages go out on a timer (pyulogd: every second; ulogd2 on its
            # own schedule): wait until each collector has a record of every IPv4 flow, rather
            # than a fixed time that a loaded machine can overrun.
            # (If they never agree, the test below shows the difference.)
            deadline = time.monotonic() + 15
            while not _ipfix_agree(d, flows) and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            check_stopped(daemons)
            for c, port in zip(collectors, (4739, 4740), strict=True):
                sh(sys.executable, "-c", COLLECTOR_END, str(port), ns=lab.router)
                try:
                    c.wait(5)
                except subprocess.TimeoutExpired:
                    c.kill()
                    c.wait(5)
        yield d, flows


NACCT_LINE = re.compile(r"^(\d+)\t(\d+)\t([^\t]*)\t(\d+)\t([^\t]*)\t(\d+)\t(\d+)\t(\d+)$")


def test_nacct_same_lines(flow_run: tuple[Path, list[Any]]) -> None:
    """docs/compat.md, NACCT: 2.0.8's line; only the end time (field 1, each daemon's clock for
    NEW events) is masked. Compared as sorted multisets."""
    d, flows = flow_run
    ref, cand = complete_lines(d / "ulogd2" / "nacct.log"), complete_lines(d / "pyulogd" / "nacct.log")
    assert len(ref) == len(cand) == 2 * len(flows)
    for x in ref + cand:
        assert NACCT_LINE.match(x), repr(x)

    def masked(x: str) -> str:
        return "*" + x[x.index("\t"):]

    assert sorted(map(masked, cand)) == sorted(map(masked, ref))
    # What was compared is what was made: every flow's original addresses, and real counters.
    seen = {(x.split("\t")[2], x.split("\t")[4]) for x in ref}
    assert {(f.osrc, f.odst) for f in flows} <= seen
    assert any(x.split("\t")[6] != "0" for x in ref)


def ipfix_records(path: Path) -> tuple[list[ipfix.Message], list[tuple[int, dict[str, Any]]]]:
    known: dict[int, list[tuple[int, int]]] = {}
    msgs = [m for line in lines(path) for m in ipfix.decode(bytes.fromhex(line), known)]
    return msgs, [r for m in msgs for r in m.records]


def comparable(recs: list[tuple[int, dict[str, Any]]], v4: set[str]) -> list[tuple[Any, ...]]:
    """The template-256 records of the lab's IPv4 flows, as comparable tuples."""
    out = []
    for tid, r in recs:
        if tid != 256:
            continue
        # docs/compat.md, IPFIX: "IPv6 flows are exported with template 257 ... 2.0.8 sends
        # garbage" in template 256: compare only records with the lab's IPv4 addresses.
        src, dst = (".".join(map(str, r[k])) for k in ("saddr", "daddr"))
        if src not in v4 and dst not in v4:
            continue
        sport, dport = r["sport"], r["dport"]
        if r["proto"] == 1:
            # docs/compat.md, IPFIX: "Ports of flows without ports are 0 (2.0.8: uninitialised
            # memory)".
            sport = dport = 0
        out.append((src, dst, r["packets"], r["octets"], sport, dport, r["proto"], r["app_id"]))
    return sorted(out)


def _ipfix_agree(d: Path, flows: list[Any]) -> bool:
    """Both collectors hold the same IPv4 flow records, and all of them: each IPv4 flow's NEW
    and DESTROY record (a daemon stopped earlier would lose what its timer had not sent)."""
    v4 = {f.osrc for f in flows if f.family == 2} | {f.odst for f in flows if f.family == 2}
    try:
        ref, cand = (comparable(ipfix_records(d / x / "ipfix.hex")[1], v4) for x in ("ulogd2", "pyulogd"))
    except Exception:  # a file is being written: look again later
        return False
    return ref == cand and len(ref) >= 2 * sum(1 for f in flows if f.family == 2)


def test_ipfix_same_ipv4_records(flow_run: tuple[Path, list[Any]]) -> None:
    """IPv4 flow records equal, times masked; pyulogd's IPv6 template 257 is documented extra."""
    d, flows = flow_run
    ref_msgs, ref_recs = ipfix_records(d / "ulogd2" / "ipfix.hex")
    cand_msgs, cand_recs = ipfix_records(d / "pyulogd" / "ipfix.hex")
    assert ref_msgs and cand_msgs
    assert all(m.domain == 7 for m in ref_msgs + cand_msgs)
    assert (256, list(ipfix.FIELDS[256])) in [t for m in ref_msgs for t in m.templates]
    assert ref_msgs[0].templates and cand_msgs[0].templates
    assert [t for t in cand_msgs[0].templates if t[0] == 256] == [t for t in ref_msgs[0].templates if t[0] == 256]
    v4 = {f.osrc for f in flows if f.family == 2} | {f.odst for f in flows if f.family == 2}

    ref_c, cand_c = comparable(ref_recs, v4), comparable(cand_recs, v4)
    nv4 = len([f for f in flows if f.family == 2])
    assert len(ref_c) >= nv4, ref_c
    # pyulogd sends every IPv4 flow's NEW and DESTROY record. ulogd2 2.0.8 on a loaded machine
    # sometimes never sends its last records (seen in full-suite runs: 1-3 DESTROY records
    # missing after 15 s); what it did send must be exactly what pyulogd sent for those flows.
    assert len(cand_c) == 2 * nv4, cand_c
    if len(ref_c) == 2 * nv4:
        assert cand_c == ref_c
    else:
        assert not Counter(ref_c) - Counter(cand_c), (ref_c, cand_c)
    # docs/compat.md, IPFIX: IPv6 flows with template 257 (pyulogd extra).
    assert any(tid == 257 for tid, _ in cand_recs)


# ---------------------------------------------------------------- UNIXSOCK


def unixsock_config(out: Path) -> str:
    return f"""[global]
logfile="{out}/daemon.log"
loglevel=3
{plugins("inppkt_UNIXSOCK", "raw2packet_BASE", "filter_IP2STR", "filter_PRINTPKT", "output_LOGEMU",
         "output_JSON")}stack=us1:UNIXSOCK,base1:BASE,ip2str1:IP2STR,print1:PRINTPKT,emu1:LOGEMU
stack=us2:UNIXSOCK,base2:BASE,ip2str2:IP2STR,json1:JSON

[us1]
socket_path="{out}/us1.sock"

[us2]
socket_path="{out}/us2.sock"

[emu1]
file="{out}/out.log"
sync=1

[json1]
file="{out}/out.json"
sync=1
"""


def _csum(b: bytes) -> int:
    b += b"\0" * (len(b) % 2)
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    s = (s & 0xFFFF) + (s >> 16)
    return ~(s + (s >> 16)) & 0xFFFF


def _ip4(proto: int, payload: bytes, ident: int) -> bytes:
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0x4000, 64, proto, 0,
                    bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    return h[:10] + struct.pack("!H", _csum(h)) + h[12:] + payload


def frames() -> list[str]:
    """A TCP SYN with options and an ICMP echo request over IPv4, and a UDP datagram over IPv6."""
    opts = bytes.fromhex("020405b40402080a0000000100000000")
    syn = struct.pack("!HHIIBBHHH", 50000, 443, 1, 0, (5 + len(opts) // 4) << 4, 0x02, 64240, 0, 0) + opts
    echo = struct.pack("!BBHHH", 8, 0, 0, 0x1234, 1) + b"abcdefghijklmnopqrstuvwabcdefghi"
    echo = echo[:2] + struct.pack("!H", _csum(echo)) + echo[4:]
    data = b"hello!!"
    udp = struct.pack("!HHHH", 12345, 12345, 8 + len(data), 0xABCD) + data
    ip6 = struct.pack("!IHBB16s16s", 6 << 28, len(udp), 17, 64, bytes.fromhex("fd00" + "00" * 13 + "01"),
                      bytes.fromhex("fd00" + "00" * 13 + "02")) + udp
    return [_ip4(6, syn, 0xA1B2).hex(), _ip4(1, echo, 0x1C46).hex(), ip6.hex()]


SENDS = (
    [*(a for h in frames() for a in ("--hex", h)), "--prefix", "usock ", "--in", "eth0", "--time", "1700000000"],
    ["--udp", "10.1.2.3", "10.3.2.1", "--sport", "5353", "--dport", "53", "--out", "eth1",
     "--user", "alice", "--user-id", "1000", "--state", "1", "-n", "2"],
)


def test_unixsock_same_output(tmp_path: Path) -> None:
    """docs/compat.md, UNIXSOCK: same wire format and keys as 2.0.8."""
    for name in ("ulogd2", "pyulogd"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "ulogd.conf").write_text(unixsock_config(tmp_path / name))
    daemons = start(subprocess.Popen, tmp_path)
    try:
        socks = [tmp_path / x / f"us{i}.sock" for x in ("ulogd2", "pyulogd") for i in (1, 2)]
        wait_for(lambda: all(p.exists() for p in socks), 10, "the UNIXSOCK sockets of both daemons")
        time.sleep(0.3)
        # Two inputs, one per stack: 2.0.8 feeds only the first stack built from a shared input id
        # (docs/compat.md, UNIXSOCK "Shared input ids feed every stack").
        for sock, args in itertools.product(socks, SENDS):
            subprocess.run([sys.executable, "-m", "pyulogd.ctl.unixsock", "-s", str(sock), *args], check=True,
                           capture_output=True, timeout=10)
        n = len(frames()) + 2
        wait_for(lambda: all(len(lines(tmp_path / x / "out.json")) >= n and len(lines(tmp_path / x / "out.log")) >= n
                             for x in ("ulogd2", "pyulogd")), 10, "every frame in both outputs")
    finally:
        check_stopped(daemons)
    ref_log = [LOGEMU_TIME.sub("TIME ", x) for x in lines(tmp_path / "ulogd2" / "out.log")]
    cand_log = [LOGEMU_TIME.sub("TIME ", x) for x in lines(tmp_path / "pyulogd" / "out.log")]
    assert len(ref_log) == n
    assert cand_log == ref_log

    def masked(line: str) -> dict[str, Any]:
        r = json.loads(line)
        return {k: "*" if k in JSON_CLOCK | JSON_CORRECTED else v for k, v in r.items()}

    ref_j, cand_j = lines(tmp_path / "ulogd2" / "out.json"), lines(tmp_path / "pyulogd" / "out.json")
    assert len(ref_j) == n
    for r, c in zip(ref_j, cand_j, strict=True):
        assert list(json.loads(c)) == list(json.loads(r))
        assert masked(c) == masked(r)


# ---------------------------------------------------------------- SYSLOG


def syslog_config(out: Path) -> str:
    return f"""[global]
logfile="{out}/daemon.log"
loglevel=3
{plugins("inppkt_UNIXSOCK", "raw2packet_BASE", "filter_IP2STR", "filter_PRINTPKT", "output_SYSLOG")}\
stack=us1:UNIXSOCK,base1:BASE,ip2str1:IP2STR,print1:PRINTPKT,sys1:SYSLOG
stack=us2:UNIXSOCK,base2:BASE,ip2str2:IP2STR,print2:PRINTPKT,sys2:SYSLOG

[us1]
socket_path="{out}/us1.sock"

[us2]
socket_path="{out}/us2.sock"

[sys1]
{spool(out, "sys1")}
[sys2]
facility=LOG_LOCAL3
level=LOG_WARNING
{spool(out, "sys2")}"""


SYSLOG_HEAD = re.compile(r"^<(\d+)>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d ulogd\[(\d+)\]: ")


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare")
def test_syslog_same_datagrams(tmp_path: Path) -> None:
    """docs/compat.md, SYSLOG: the bytes glibc's syslog() puts on /dev/log for 2.0.8's calls.

    Each daemon runs in a private mount namespace whose /dev/log is a datagram socket of the
    test's; the time and the PID in the header are masked."""
    import socket

    logs = {}
    daemons = []
    try:
        for name in ("ulogd2", "pyulogd"):
            d = tmp_path / name
            d.mkdir()
            (d / "ulogd.conf").write_text(syslog_config(d))
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            s.bind(str(d / "devlog"))
            s.settimeout(0.1)
            logs[name] = s
            cmd = ([ULOGD] if name == "ulogd2" else [sys.executable, "-m", "pyulogd"]) + ["-c", str(d / "ulogd.conf")]
            script = f"mount -t tmpfs none /dev && ln -s {d / 'devlog'} /dev/log && exec \"$@\""
            daemons.append(subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh",
                                             *cmd], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        socks = [tmp_path / x / f"us{i}.sock" for x in ("ulogd2", "pyulogd") for i in (1, 2)]
        wait_for(lambda: all(p.exists() for p in socks), 10, "the UNIXSOCK sockets of both daemons")
        time.sleep(0.3)
        for sock, args in itertools.product(socks, SENDS):
            subprocess.run([sys.executable, "-m", "pyulogd.ctl.unixsock", "-s", str(sock), *args], check=True,
                           capture_output=True, timeout=10)
        n = 2 * (len(frames()) + 2)
        got: dict[str, list[str]] = {name: [] for name in logs}

        def received() -> bool:
            for name, s in logs.items():
                try:
                    while True:
                        got[name].append(s.recv(65536).decode(errors="surrogateescape"))
                except (TimeoutError, BlockingIOError):
                    pass
            return all(len(v) >= n for v in got.values())

        wait_for(received, 10, "every record on both /dev/log sockets")
    finally:
        check_stopped(daemons)
        for s in logs.values():
            s.close()
    masked = {}
    for name, daemon in zip(("ulogd2", "pyulogd"), daemons, strict=True):
        out = []
        for x in got[name]:
            m = SYSLOG_HEAD.match(x)
            assert m and int(m[2]) == daemon.pid, repr(x)
            out.append(f"<{m[1]}>TIME ulogd[PID]: " + x[m.end():])
        masked[name] = sorted(out)  # the two stacks' inputs are served in any order
    assert len(masked["ulogd2"]) == n
    # ulogd2: [sys1] has 2.0.8's default LOG_KERN|LOG_NOTICE (5); glibc's syslog() replaces
    # facility 0 (kern) by openlog()'s LOG_DAEMON, so 29 goes out. [sys2]: local3.warning = 156.
    assert {x.partition(">")[0] for x in masked["ulogd2"]} == {"<29", "<156"}
    assert masked["pyulogd"] == masked["ulogd2"]


# ---------------------------------------------------------------- GRAPHITE


CARBON = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(4)
print("ready", flush=True)
with open(sys.argv[2], "ab") as f:
    while True:
        c, _ = s.accept()
        while data := c.recv(65536):
            f.write(data)
            f.flush()
        c.close()
"""


def graphite_config(out: Path, port: int) -> str:
    # zerocounter=0: both daemons read the same kernel counters; with 2.0.8's default (1) each
    # dump would reset them and the two daemons would split the deltas between them by chance.
    return f"""[global]
logfile="{out}/daemon.log"
loglevel=3
{plugins("inpflow_NFACCT", "output_GRAPHITE")}stack=acct1:NFACCT,g1:GRAPHITE

[acct1]
pollinterval=1
zerocounter=0
timestamp=1

[g1]
host="127.0.0.1"
port="{port}"
prefix="fw.acct"
{spool(out, "g1")}"""


GRAPHITE_LINE = re.compile(r"^fw\.acct\.(\w+)\.(pkts|bytes) (\d+) (\d+)$")


def graphite_dumps(path: Path) -> list[list[str]]:
    """The complete dumps received (one line per counter and kind), each line's time masked."""
    data = path.read_text(errors="surrogateescape") if path.exists() else ""
    got = data.split("\n")[:-1]  # a last line without its newline is still on its way
    n = 2 * len(WANT)
    dumps = []
    for i in range(0, len(got) - len(got) % n, n):
        dump = []
        for x in got[i : i + n]:
            m = GRAPHITE_LINE.match(x)
            assert m, repr(x)
            assert abs(int(m[4]) - time.time()) < 120, repr(x)  # oob.time.sec of the dump
            dump.append(x[: m.start(4)] + "TIME")
        dumps.append(dump)
    return dumps


def graphite_totals(dump: list[str]) -> dict[str, tuple[int, int]]:
    vals = {(m[1], m[2]): int(m[3]) for m in (GRAPHITE_LINE.match(x.replace("TIME", "0")) for x in dump) if m}
    assert len(vals) == len(dump), dump
    return {name: (vals[(name, "pkts")], vals[(name, "bytes")]) for name, _ in vals}


@pytest.mark.skipif(_skip_reason() is not None or not all(
    os.path.exists(f"{PLUGDIR}/ulogd_{n}.so") for n in ("inpflow_NFACCT", "output_GRAPHITE")),
    reason="needs nfacct, iptables and ulogd2's NFACCT and GRAPHITE plugins")
def test_graphite_same_metrics(ns: str, tmp_path: Path) -> None:  # noqa: F811
    """docs/compat.md, GRAPHITE: 2.0.8's two lines per counter, `ts` from `oob.time.sec`.

    The same nfacct counters, fed by real packets, are polled every second by both daemons
    (zerocounter=0: the totals); only the time at the end of each line is masked. The first
    dump (traffic sent before the daemons started) and the last one (after a second round)
    must be the same in both streams, and every dump has the same metrics in the same order."""
    def in_ns(args: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(["ip", "netns", "exec", ns, *args], **kw)

    traffic(ns)  # the first dump already has something to show
    listeners = []
    for name, port in (("ulogd2", 2003), ("pyulogd", 2004)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "ulogd.conf").write_text(graphite_config(tmp_path / name, port))
        c = in_ns([sys.executable, "-c", CARBON, str(port), str(tmp_path / name / "carbon.txt")],
                  stdout=subprocess.PIPE)
        assert c.stdout is not None and c.stdout.readline().strip() == b"ready"
        listeners.append(c)
    out = [tmp_path / x / "carbon.txt" for x in ("ulogd2", "pyulogd")]
    daemons = start(in_ns, tmp_path)
    try:
        wait_for(lambda: all(len(graphite_dumps(p)) >= 2 for p in out), 15, "two dumps from both daemons")
        traffic(ns)
        settled = [len(graphite_dumps(p)) + 3 for p in out]  # the traffic is over: 3 more polls
        wait_for(lambda: all(len(graphite_dumps(p)) >= k for p, k in zip(out, settled, strict=True)), 15,
                 "three dumps after the traffic from both daemons")
    finally:
        check_stopped(daemons)
        time.sleep(0.3)
        for c in listeners:
            c.send_signal(signal.SIGTERM)
            c.wait(5)
    ref, cand = graphite_dumps(out[0]), graphite_dumps(out[1])
    # What was compared is what the kernel counted.
    assert graphite_totals(ref[0]) == WANT
    assert graphite_totals(ref[-1]) == {n: (2 * p, 2 * b) for n, (p, b) in WANT.items()}
    assert cand[0] == ref[0]
    assert cand[-1] == ref[-1]
    # The dumps in between differ only by when a poll fell during the traffic.
    for d in ref + cand:
        assert [x.rsplit(" ", 2)[0] for x in d] == [x.rsplit(" ", 2)[0] for x in ref[0]]
