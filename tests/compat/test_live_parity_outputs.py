"""Side by side with real ulogd2 for the XML, OPRINT and GPRINT outputs.

Packets: the lab and ruleset of ``test_live_parity.py`` (every nft log statement logs to
group 11 for ulogd2 and group 12 for pyulogd); each daemon runs an OPRINT, a GPRINT
(timestamp=1) and an XML stack on its group. Flows: the NAT router of
``test_live_flow_parity.py``; both daemons read the same conntrack events (NFCT with
event_mask 0x7 and hash_enable=0) into XML, GPRINT and OPRINT.

Compared record by record (flows as sorted multisets): only what each daemon takes from its
own clock is masked (XML ``<when>``, GPRINT ``timestamp=``, ``oob.time.*``, ``flow.*`` of NEW
events), and ulogd2's output gets the corrections docs/compat.md lists applied one by one:
OPRINT's reversed IPv4 and garbled IPv6, GPRINT's IPv6, BASE's ``tcp.offset``, NFCT's
``oob.protocol`` and ICMPv6 keys, and the XML records of 4096 bytes or more that 2.0.8 drops.
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.compat.test_live_parity import TRAFFIC, asleep_in_poll, logged, ruleset
from tests.linux.lab import Lab, have_root_and_tools, sh, wait_for
from tests.linux.nat_lab import ETHERTYPE, NatLab, complete_lines, stop, wait_listening

ULOGD = "/usr/sbin/ulogd"
PLUGDIR = "/usr/lib/x86_64-linux-gnu/ulogd"

_skip = have_root_and_tools("conntrack", "ping") or (
    None if os.path.exists(ULOGD) else "needs ulogd2 (Debian package ulogd2)")
pytestmark = [pytest.mark.linux, pytest.mark.compat, pytest.mark.skipif(_skip is not None, reason=_skip or "")]

WHEN = re.compile(r"<when>.*?</when>")
CLOCK = {"timestamp", "oob.time.sec", "oob.time.usec"}
# Each daemon's own reading for NEW events (2.0.8: gettimeofday(); pyulogd: the kernel's event time).
FLOW_CLOCK = {"timestamp", "flow.start.sec", "flow.start.usec", "flow.end.sec", "flow.end.usec"}
TCP_CORRECTED = {"tcp.offset", "tcp.reserved"}
ADDRESSES = {"ip.saddr", "ip.daddr", "orig.ip.saddr", "orig.ip.daddr", "reply.ip.saddr", "reply.ip.daddr"}


def plugins(*names: str) -> str:
    return "".join(f'plugin="{PLUGDIR}/ulogd_{n}.so"\n' for n in names)


def packet_config(out: Path, group: int) -> str:
    pre = "log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR"
    return f"""[global]
logfile="{out}/daemon.log"
loglevel=3
{plugins("inppkt_NFLOG", "raw2packet_BASE", "filter_IFINDEX", "filter_IP2STR", "filter_PRINTPKT",
         "output_OPRINT", "output_GPRINT", "output_XML")}stack={pre},print1:PRINTPKT,op1:OPRINT
stack={pre},print2:PRINTPKT,gp1:GPRINT
stack={pre},xml1:XML

[log1]
group={group}

[op1]
file="{out}/oprint.txt"
sync=1

[gp1]
file="{out}/gprint.txt"
sync=1
timestamp=1

[xml1]
directory="{out}/xml/"
sync=1
"""


def flow_config(out: Path) -> str:
    return f"""[global]
logfile="{out}/daemon.log"
loglevel=3
{plugins("inpflow_NFCT", "filter_IP2STR", "output_OPRINT", "output_GPRINT", "output_XML")}stack=ct1:NFCT,xml1:XML
stack=ct1:NFCT,ip2str1:IP2STR,gp1:GPRINT
stack=ct1:NFCT,ip2str2:IP2STR,op1:OPRINT

[ct1]
event_mask=0x00000007
hash_enable=0

[xml1]
directory="{out}/xml"
sync=1

[gp1]
file="{out}/gprint.txt"
sync=1
timestamp=1

[op1]
file="{out}/oprint.txt"
sync=1
"""


# -- records


def oprint_records(path: Path) -> list[list[str]]:
    return [r.split("\n")[:-1] for r in path.read_text(errors="surrogateescape").split("===>PACKET BOUNDARY\n")[1:]]


def gprint_records(path: Path, packets: bool) -> list[list[str]]:
    text = path.read_text(errors="surrogateescape")
    # packet records end in PRINTPKT's print value, which ends in "\n": an empty line follows
    lines = text.split("\n\n")[:-1] if packets else text.splitlines()
    return [x.split(",") for x in lines]


def written(d: Path) -> tuple[int, int, int]:
    """Packet records so far in a daemon's OPRINT, GPRINT and XML outputs."""
    texts = [(d / f).read_text(errors="surrogateescape") if (d / f).exists() else "" for f in ("oprint.txt",
             "gprint.txt")]  # fmt: skip
    xml = sum(f.read_text(errors="surrogateescape").count("</log>\n") for f in (d / "xml").iterdir())
    return texts[0].count("===>PACKET BOUNDARY\n"), texts[1].count("\n\n"), xml


def xml_lines(d: Path) -> list[str]:
    files = sorted(d.iterdir())
    assert len(files) == 1, files
    return files[0].read_text(errors="surrogateescape").splitlines()


def correct_2_0_8(items: list[str], oprint: bool, flow: bool, icmpv6: dict[Any, tuple[int, int]]) -> list[str]:
    """A ulogd2 2.0.8 record with docs/compat.md's corrections applied (needs pyulogd's addresses,
    which 2.0.8 garbles: they are taken from the ``*.str`` keys IP2STR wrote alongside)."""
    kv = dict(x.partition("=")[::2] for x in items if "=" in x)
    out = []
    for it in items:
        k, eq, v = it.partition("=")
        if eq and k in ADDRESSES and f"{k}.str" in kv:
            # OPRINT: every address byte-reversed; GPRINT: IPv6 as its first 4 bytes
            text = kv[f"{k}.str"]
            if oprint or ":" in text:
                first = ipaddress.ip_address(text).packed[:4]
                assert v == ".".join(map(str, reversed(first) if oprint else first)), (k, v, text)
                v = text
        elif eq and k == "oob.protocol" and flow:
            assert v == "0"  # NFCT: 2.0.8 always writes 0
            v = str(ETHERTYPE[int(kv["oob.family"])])
        out.append(f"{k}={v}" if eq else it)
    if flow and kv.get("orig.ip.protocol") == "58":
        # NFCT: icmpv6.code and icmpv6.type after icmp.type (absent here), before ct.mark
        itype, icode = icmpv6[int(kv["ct.id"])]
        i = next(n for n, x in enumerate(out) if x.startswith("ct.mark="))
        out[i:i] = [f"icmpv6.code={icode}", f"icmpv6.type={itype}"]
    return out


def mask(items: list[str], clock: set[str]) -> list[str]:
    return [f"{x.partition('=')[0]}=*" if x.partition("=")[0] in clock | TCP_CORRECTED else x for x in items]


# -- packets


@pytest.fixture()
def lab() -> Any:
    with Lab("pout") as lab:
        lab.nft(ruleset(lab))
        yield lab


def test_packets_same_output(lab: Lab, tmp_path: Path) -> None:
    ref, cand = tmp_path / "ulogd2", tmp_path / "pyulogd"
    for d, g in ((ref, 11), (cand, 12)):
        (d / "xml").mkdir(parents=True)
        (d / "ulogd.conf").write_text(packet_config(d, g))
    env = dict(os.environ, TZ="UTC")
    daemons = [
        lab.popen([ULOGD, "-c", str(ref / "ulogd.conf")], env=env, stdout=subprocess.DEVNULL,
                  stderr=subprocess.DEVNULL),
        lab.popen([sys.executable, "-m", "pyulogd", "-c", str(cand / "ulogd.conf")], env=env,
                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE),
    ]
    server = None
    try:
        wait_for(lambda: {11, 12} <= lab.nflog_groups(), 15, "both daemons to bind their NFLOG group")
        server = lab.popen([sys.executable, str(TRAFFIC), "server", "--max-seconds", "30"], stdout=subprocess.PIPE)
        assert server.stdout is not None
        server.stdout.readline()  # "server ready"
        addrs = ",".join((lab.cli4, lab.srv4, lab.cli6, lab.srv6))
        client = sh(sys.executable, str(TRAFFIC), "client", "--addrs", addrs, ns=lab.cli, check=False, timeout=60)
        assert client.returncode == 0, client.stderr
        # Every packet in every output of both daemons (XML: ulogd2 drops the two records of
        # 4096 bytes or more) before SIGTERM: nothing sleeps a fixed time.
        want = logged(lab)
        need = {ref: (want, want, want - 2), cand: (want, want, want)}
        wait_for(lambda: all(all(map(int.__ge__, written(d), need[d])) for d in (ref, cand)), 30,
                 f"{want} packets in the outputs of both daemons")  # fmt: skip
        wait_for(lambda: all(asleep_in_poll(p) for p in daemons), 10, "both daemons to wait for input")
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(10)
        for p in daemons:
            p.send_signal(signal.SIGTERM)
        rcs = [p.wait(15) for p in daemons]
    err = daemons[1].stderr.read().decode() if daemons[1].stderr else ""
    assert rcs == [0, 0], err

    # OPRINT and GPRINT: record by record
    ref_o, cand_o = oprint_records(ref / "oprint.txt"), oprint_records(cand / "oprint.txt")
    assert len(ref_o) >= 40, "the traffic mix logs about 44 packets"
    assert len(cand_o) == len(ref_o)
    for r, c in zip(ref_o, cand_o, strict=True):
        assert mask(c, CLOCK) == mask(correct_2_0_8(r, True, False, {}), CLOCK)
    ref_g, cand_g = gprint_records(ref / "gprint.txt", True), gprint_records(cand / "gprint.txt", True)
    assert len(cand_g) == len(ref_g) == len(ref_o)
    for r, c in zip(ref_g, cand_g, strict=True):
        assert mask(c, CLOCK) == mask(correct_2_0_8(r, False, False, {}), CLOCK)
    # the corrections were exercised
    assert any(x == "ip.saddr=" + lab.cli4 for r in cand_o for x in r)
    assert any(x == "ip.saddr=" + lab.cli6 for r in cand_g for x in r)

    # XML: byte for byte apart from the time of writing; 2.0.8 drops records of 4096 bytes or more
    ref_x, cand_x = xml_lines(ref / "xml"), xml_lines(cand / "xml")
    big = [x for x in cand_x if len(x) >= 4096]
    assert len(big) == 2, "the two reassembled 3000-byte datagrams"
    assert [WHEN.sub("", x) for x in cand_x if len(x) < 4096] == [WHEN.sub("", x) for x in ref_x]
    assert len(ref_x) == len(ref_o) - 2 + 3 and ref_x[1] == "<packet>" and ref_x[-1] == "</packet>"
    assert "error during propagate_results" in (ref / "daemon.log").read_text()


# -- flows


@pytest.fixture()
def nat() -> Any:
    with NatLab("fout") as lab:
        sh("sysctl", "-qw", "net.netfilter.nf_conntrack_acct=1", "net.netfilter.nf_conntrack_timestamp=1",
           ns=lab.router)
        lab.start_servers()
        yield lab


def kernel_icmpv6(lab: NatLab) -> dict[Any, tuple[int, int]]:
    out: dict[Any, tuple[int, int]] = {}
    listing = sh("conntrack", "-L", "-f", "ipv6", "-p", "icmpv6", "-o", "id", ns=lab.router).stdout
    for line in listing.splitlines():
        m = re.search(r"type=(\d+) code=(\d+) .* id=(\d+)$", line)
        assert m, line
        out[int(m[3])] = (int(m[1]), int(m[2]))
    return out


def test_flows_same_output(nat: NatLab, tmp_path: Path) -> None:
    ref, cand = tmp_path / "ulogd2", tmp_path / "pyulogd"
    for d in (ref, cand):
        (d / "xml").mkdir(parents=True)
        (d / "ulogd.conf").write_text(flow_config(d))
    env = dict(os.environ, TZ="UTC")
    n = len(nat.flows())
    daemons: list[subprocess.Popen[bytes]] = []
    try:
        daemons.append(nat.popen(nat.router, [ULOGD, "-c", str(ref / "ulogd.conf")], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        daemons.append(nat.popen(nat.router, [sys.executable, "-m", "pyulogd", "-c", str(cand / "ulogd.conf")],
                                 env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        wait_listening(daemons[0], 1, "ulogd2")
        wait_listening(daemons[1], 1, "pyulogd")
        nat.traffic()
        assert nat.ct_count() == n
        icmpv6 = kernel_icmpv6(nat)
        nat.flush()

        def done(d: Path) -> bool:
            return sum("ct.event=4" in x for x in complete_lines(d / "gprint.txt")) >= n

        wait_for(lambda: done(ref) and done(cand), 10, "a DESTROY record of every flow from both daemons")
    finally:
        rcs = stop(*daemons)
    err = daemons[1].stderr.read().decode(errors="replace") if daemons[1].stderr else ""
    assert rcs == [0, 0], err

    ref_x, cand_x = xml_lines(ref / "xml"), xml_lines(cand / "xml")
    assert len(cand_x) == len(ref_x) == 2 * n + 3
    assert sorted(WHEN.sub("", x) for x in cand_x) == sorted(WHEN.sub("", x) for x in ref_x)
    assert ref_x[1] == "<conntrack>" and cand_x[-1] == "</conntrack>"
    for name, oprint in (("gprint.txt", False), ("oprint.txt", True)):
        ref_r = oprint_records(ref / name) if oprint else gprint_records(ref / name, False)
        cand_r = oprint_records(cand / name) if oprint else gprint_records(cand / name, False)
        assert len(cand_r) == len(ref_r) == 2 * n, name
        assert sorted(mask(c, FLOW_CLOCK) for c in cand_r) == sorted(
            mask(correct_2_0_8(r, oprint, True, icmpv6), FLOW_CLOCK) for r in ref_r), name
