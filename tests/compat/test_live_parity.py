"""Side by side with real ulogd2: the same kernel packets, each daemon on its own NFLOG group.

Every nft log statement of the lab logs to group 11 (ulogd2) and group 12 (pyulogd). Both
daemons run LOGEMU and JSON stacks; their outputs must be identical line by line except for
what each daemon takes from its own clock and the differences listed in docs/compat.md.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.linux.lab import Lab, have_root_and_tools, lines, sh, wait_for

ULOGD = "/usr/sbin/ulogd"
PLUGDIR = "/usr/lib/x86_64-linux-gnu/ulogd"
TRAFFIC = Path(__file__).parents[1] / "linux" / "traffic.py"
TCP_PORT, TCP_DROP, UDP_PORT, UDP_DROP = 7001, 7002, 7003, 7004

_skip = have_root_and_tools() or (None if os.path.exists(ULOGD) else "needs ulogd2 (Debian package ulogd2)")
if _skip is None and not os.path.exists(f"{PLUGDIR}/ulogd_output_JSON.so"):
    _skip = "needs ulogd2-json"
pytestmark = [pytest.mark.linux, pytest.mark.compat, pytest.mark.skipif(_skip is not None, reason=_skip or "")]


def ruleset(lab: Lab) -> str:
    def log(prefix: str) -> str:
        return f'counter log prefix "{prefix}" group 11 log prefix "{prefix}" group 12'

    nd = "nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert, mld2-listener-report"
    return f"""
table inet parity {{
  chain pre {{
    type filter hook prerouting priority -450; policy accept;
    iifname "{lab.srv_if}" ip frag-off & 0x3fff != 0 {log("pFRAG ")}
    iifname "{lab.srv_if}" exthdr frag exists {log("pFRAG ")}
  }}
  chain input {{
    type filter hook input priority 0; policy accept;
    iifname "lo" accept
    icmpv6 type {{ {nd}, mld-listener-report }} accept
    ct state invalid {log("pDROP ")} drop
    ct state established,related {log("pEST ")} accept
    tcp dport {TCP_DROP} {log("pDROP ")} drop
    udp dport {UDP_DROP} {log("pDROP ")} drop
    meta l4proto {{ icmp, ipv6-icmp, tcp, udp }} ct state new {log("pACCEPT ")} accept
    {log("pDROP ")} drop
  }}
  chain output {{
    type filter hook output priority 0; policy accept;
    oifname "{lab.srv_if}" meta l4proto != ipv6-icmp {log("pOUT ")}
    oifname "{lab.srv_if}" icmpv6 type != {{ {nd}, mld-listener-report }} {log("pOUT ")}
  }}
}}
"""


def logged(lab: Lab) -> int:
    """Packets the parity table logged so far (to each group): its log rules' counters."""
    doc = json.loads(sh("nft", "-j", "list", "table", "inet", "parity", ns=lab.srv).stdout)
    total = 0
    for item in doc["nftables"]:
        exprs = item.get("rule", {}).get("expr", [])
        if any("log" in e for e in exprs):
            total += sum(e["counter"]["packets"] for e in exprs if "counter" in e)
    return total


def asleep_in_poll(proc: subprocess.Popen[bytes]) -> bool:
    """The daemon waits for input (its event loop in poll/select/epoll): it has done everything
    with what it read. ulogd2 2.0.8 cleans up inside its SIGTERM handler, and crashes when the
    signal comes in the middle of a record, so a test signals it only once this holds."""
    try:
        state = Path(f"/proc/{proc.pid}/stat").read_text().rpartition(")")[2].split()[0]
        wchan = Path(f"/proc/{proc.pid}/wchan").read_text()
    except OSError:
        return False
    return state == "S" and wchan.startswith(("poll_schedule_timeout", "do_select", "do_epoll_wait", "ep_poll"))


def wait_logged(lab: Lab, files: list[Path], timeout: float = 30) -> int:
    """Wait until each file has a line per packet logged (NFLOG batches wait up to 1 s in
    the kernel, then each daemon writes them): nothing sleeps a fixed time."""
    want = logged(lab)
    wait_for(lambda: all(len(lines(f)) >= want for f in files), timeout, f"{want} lines in each of {files}")
    return want


def config(out: Path, group: int) -> str:
    plugins = "".join(
        f'plugin="{PLUGDIR}/ulogd_{n}.so"\n'
        for n in ("inppkt_NFLOG", "raw2packet_BASE", "filter_IFINDEX", "filter_IP2STR", "filter_PRINTPKT",
                  "output_LOGEMU", "output_JSON")
    )
    return f"""[global]
logfile="{out}/daemon.log"
loglevel=3
{plugins}stack=log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,print1:PRINTPKT,emu1:LOGEMU
stack=log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,json1:JSON

[log1]
group={group}

[emu1]
file="{out}/logemu.log"
sync=1

[json1]
file="{out}/out.json"
sync=1
"""


LOGEMU_TIME = re.compile(r"^[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d ")
# Fields each daemon fills from its own clock when the kernel gave no timestamp, or that
# the kernel stamps per log statement (TCP over veth): see ../shared/golden/README.md.
JSON_TIME = {"timestamp", "oob.time.sec", "oob.time.usec"}
# Documented corrections of 2.0.8 values (docs/compat.md).
JSON_CORRECTED = {"tcp.offset", "tcp.reserved"}


def mask_logemu(line: str) -> str:
    return LOGEMU_TIME.sub("TIME ", line)


def mask_json(line: str) -> dict[str, object]:
    d = json.loads(line)
    for k in JSON_TIME | JSON_CORRECTED:
        if k in d:
            d[k] = "*"
    return d


@pytest.fixture()
def lab() -> Lab:
    with Lab("par") as lab:
        lab.nft(ruleset(lab))
        yield lab  # type: ignore[misc]


def test_same_packets_same_output(lab: Lab, tmp_path: Path) -> None:
    ref, cand = tmp_path / "ulogd2", tmp_path / "pyulogd"
    for d, g in ((ref, 11), (cand, 12)):
        d.mkdir()
        (d / "ulogd.conf").write_text(config(d, g))
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
        server = lab.popen([sys.executable, str(TRAFFIC), "server", "--max-seconds", "30"],
                           stdout=subprocess.PIPE)
        assert server.stdout is not None
        server.stdout.readline()  # "server ready"
        addrs = ",".join((lab.cli4, lab.srv4, lab.cli6, lab.srv6))
        client = sh(sys.executable, str(TRAFFIC), "client", "--addrs", addrs, ns=lab.cli, check=False,
                    timeout=60)
        assert client.returncode == 0, client.stderr
        want = wait_logged(lab, [d / f for d in (ref, cand) for f in ("logemu.log", "out.json")])
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

    ref_log, cand_log = lines(ref / "logemu.log"), lines(cand / "logemu.log")
    assert len(ref_log) == want >= 40, "the traffic mix logs about 44 packets"
    cand_m, ref_m = [mask_logemu(x) for x in cand_log], [mask_logemu(x) for x in ref_log]
    if cand_m != ref_m:
        # Two packets logged at once on two CPUs can reach the two groups in opposite orders
        # (each log statement queues to its group as it runs): the same lines, each daemon in
        # the order its group got them. Anything else is a difference.
        assert sorted(cand_m) == sorted(ref_m), [x for x in cand_m if x not in ref_m][:3]
    # Lines are byte-identical apart from the time: same host name, same trailing space.
    assert all(x.endswith(" ") for x in cand_log)

    ref_json, cand_json = lines(ref / "out.json"), lines(cand / "out.json")
    assert len(cand_json) == len(ref_json) == len(ref_log)
    if [mask_json(c) for c in cand_json] != [mask_json(r) for r in ref_json]:  # the same reordering, if any

        def canon(line: str) -> str:
            return json.dumps(mask_json(line), sort_keys=True)

        ref_json, cand_json = sorted(ref_json, key=canon), sorted(cand_json, key=canon)
    for r, c in zip(ref_json, cand_json, strict=True):
        assert mask_json(c) == mask_json(r)
        assert list(json.loads(c)) == list(json.loads(r)), "same fields in the same order"
        # Same serialisation as jansson: ", " and ": " separators.
        assert c.startswith('{"timestamp": "') and '", "dvc": "Netfilter", ' in c
    # The corrected tcp.offset is the real data offset (ulogd2 2.0.8 always prints 0).
    offsets = {json.loads(c)["tcp.offset"] for c in cand_json if "tcp.offset" in json.loads(c)}
    assert offsets and 0 not in offsets and offsets <= {5, 6, 7, 8, 10, 11, 15}

