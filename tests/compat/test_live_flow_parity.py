"""Side by side with real ulogd2 for flows: the same conntrack events, read by both daemons at once.

ulogd2 2.0.8 and pyulogd run in the router namespace of tests/linux/nat_lab.py with the same
configuration: NFCT (event_mask 0x7, hash_enable=0) -> IP2STR -> JSON and -> PRINTFLOW -> LOGEMU,
and NFCT with the flow table (hash_enable=1) -> IP2STR -> JSON. Conntrack events are netlink
multicast, so every socket subscribed to the groups gets each event (unlike an NFLOG group, which
has one listener). TCP, UDP and ICMP over IPv4 and IPv6, through the router's floating-IP DNAT
and SNAT (so the reply tuples differ from the original ones), then ``conntrack -F``.

The outputs are compared as sorted multisets (JSON key order included) after masking what each
daemon takes from its own clock (``timestamp``, ``flow.start.*``, ``flow.end.*``, the LOGEMU time)
and after applying to ulogd2's output, one by one, the corrections docs/compat.md documents. Any
other difference fails. ``ct.id`` is not masked: both daemons see the same kernel events.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.linux.lab import have_root_and_tools, sh, wait_for
from tests.linux.nat_lab import ETHERTYPE, NatLab, complete_lines, iter_json, record_key, stop, wait_listening

ULOGD = "/usr/sbin/ulogd"
PLUGDIR = "/usr/lib/x86_64-linux-gnu/ulogd"

_skip = have_root_and_tools("conntrack", "ping") or (
    None if os.path.exists(ULOGD) else "needs ulogd2 (Debian package ulogd2)")
if _skip is None and not os.path.exists(f"{PLUGDIR}/ulogd_output_JSON.so"):
    _skip = "needs ulogd2-json"
pytestmark = [pytest.mark.linux, pytest.mark.compat, pytest.mark.skipif(_skip is not None, reason=_skip or "")]

LOGEMU_TIME = re.compile(r"^[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d ")
# What each daemon takes from its own clock: the time of writing, and the flow times (NEW
# events: 2.0.8 calls gettimeofday(), pyulogd takes the kernel's event time, docs/compat.md
# "NEW events' flow.start is the kernel's event time"; the others are the kernel's and equal,
# but masked with them so that the comparison does not depend on the kernel version).
JSON_TIME = ("timestamp", "flow.start.sec", "flow.start.usec", "flow.end.sec", "flow.end.usec")
OUTPUTS = ("events.json", "flows.log", "hash.json")


def config(out: Path) -> str:
    plugins = "".join(f'plugin="{PLUGDIR}/ulogd_{n}.so"\n' for n in (
        "inpflow_NFCT", "filter_IP2STR", "filter_PRINTFLOW", "output_LOGEMU", "output_JSON"))
    return f"""[global]
logfile="{out}/daemon.log"
loglevel=3
{plugins}stack=ct1:NFCT,ip2str1:IP2STR,json1:JSON
stack=ct1:NFCT,ip2str1:IP2STR,print1:PRINTFLOW,emu1:LOGEMU
stack=ct2:NFCT,ip2str2:IP2STR,json2:JSON

[ct1]
event_mask=0x00000007
hash_enable=0

[ct2]
event_mask=0x00000007

[json1]
file="{out}/events.json"
sync=1

[emu1]
file="{out}/flows.log"
sync=1

[json2]
file="{out}/hash.json"
sync=1
"""


def kernel_icmpv6(lab: NatLab) -> dict[Any, tuple[int, int]]:
    """The (type, code) of each ICMPv6 conntrack in the router, by ct.id and by original (src, dst)."""
    out: dict[Any, tuple[int, int]] = {}
    listing = sh("conntrack", "-L", "-f", "ipv6", "-p", "icmpv6", "-o", "id", ns=lab.router).stdout
    for line in listing.splitlines():
        m = re.search(r"src=(\S+) dst=(\S+) type=(\d+) code=(\d+) .* id=(\d+)$", line)
        assert m, line
        tc = (int(m[3]), int(m[4]))
        out[int(m[5])] = out[(m[1], m[2])] = tc
    return out


def correct_2_0_8_record(r: dict[str, Any], icmpv6: dict[Any, tuple[int, int]]) -> dict[str, Any]:
    """A ulogd2 2.0.8 JSON flow record with docs/compat.md's NFCT corrections applied, nothing else."""
    # docs/compat.md, NFCT "Values": `oob.protocol` is the layer 3 protocol as an ethertype
    # (2048 / 34525); 2.0.8 always writes 0.
    assert r["oob.protocol"] == 0, r
    r = dict(r, **{"oob.protocol": ETHERTYPE[r["oob.family"]]})
    if r["orig.ip.protocol"] != 58:
        return r
    # docs/compat.md, NFCT "ICMPv6 keys": icmpv6.code and icmpv6.type follow icmp.type (absent for
    # ICMPv6 flows, so just before ct.mark), from the original tuple; 2.0.8 has no ICMPv6 keys.
    # The values are the kernel's, from `conntrack -L` before the flush.
    assert not {"icmpv6.type", "icmpv6.code", "icmp.type", "icmp.code"} & set(r), r
    itype, icode = icmpv6[r["ct.id"]]
    out: dict[str, Any] = {}
    for k, v in r.items():
        if k == "ct.mark":
            out["icmpv6.code"], out["icmpv6.type"] = icode, itype
        out[k] = v
    return out


def correct_2_0_8_line(line: str, icmpv6: dict[Any, tuple[int, int]]) -> str:
    """A ulogd2 2.0.8 PRINTFLOW line with docs/compat.md's PRINTFLOW corrections applied, nothing else."""
    # docs/compat.md, PRINTFLOW "ICMP type and code the right way round": 2.0.8 prints TYPE= from
    # icmp.code and CODE= from icmp.type (in the ORIG and the REPLY part).
    line = re.sub(r"PROTO=ICMP TYPE=(\d+) CODE=(\d+) ", r"PROTO=ICMP TYPE=\2 CODE=\1 ", line)
    # docs/compat.md, PRINTFLOW "ICMPv6 flows are named and get their type and code": 2.0.8 prints
    # `PROTO=58 ` where pyulogd prints `PROTO=ICMPv6 TYPE=%u CODE=%u ` (ORIG's values, repeated
    # in the REPLY part as for ICMP).
    m = re.search(r"ORIG: SRC=(\S+) DST=(\S+) PROTO=58 ", line)
    if m:
        itype, icode = icmpv6[(m[1], m[2])]
        line = line.replace("PROTO=58 ", f"PROTO=ICMPv6 TYPE={itype} CODE={icode} ")
    return line


def usec(r: dict[str, Any], what: str) -> int | None:
    return r[f"{what}.sec"] * 10**6 + r[f"{what}.usec"] if f"{what}.sec" in r else None


def check_times(ref: list[dict[str, Any]], cand: list[dict[str, Any]], table: bool) -> None:
    """Beyond the masked comparison: the times that are the kernel's in both daemons are equal.

    ``flow.end`` of a DESTROY is CTA_TIMESTAMP_STOP in both, and so is ``flow.start`` of a DESTROY
    without the table (CTA_TIMESTAMP_START). ``flow.start`` of a NEW event, or of the table's
    DESTROY record (the NEW event's time), is each daemon's own reading (2.0.8: gettimeofday();
    pyulogd: the kernel's event time where the kernel sends it): the two are close.
    """
    by_event = {(r["ct.id"], r["ct.event"]): r for r in ref}
    for c in cand:
        r = by_event[(c["ct.id"], c["ct.event"])]
        assert usec(c, "flow.end") == usec(r, "flow.end"), (r, c)
        start_r, start_c = usec(r, "flow.start"), usec(c, "flow.start")
        assert start_r is not None and start_c is not None, (r, c)
        if c["ct.event"] == 4 and not table:
            assert start_c == start_r, (r, c)
        else:
            assert abs(start_c - start_r) < 10**6, (r, c)


def mask_json(r: dict[str, Any]) -> str:
    return json.dumps({k: "*" if k in JSON_TIME else v for k, v in r.items()})  # key order kept


def mask_line(line: str) -> str:
    return LOGEMU_TIME.sub("TIME ", line)


@pytest.fixture()
def lab() -> Any:
    with NatLab("fpar") as lab:
        # Counters and timestamps on, for both daemons alike (ulogd2 has no `accounting` option).
        sh("sysctl", "-qw", "net.netfilter.nf_conntrack_acct=1", "net.netfilter.nf_conntrack_timestamp=1",
           ns=lab.router)
        lab.start_servers()
        yield lab


@pytest.mark.parametrize("flags", [[], ["--no-fusion", "--no-recvmmsg"]], ids=["default", "no-speed-ups"])
def test_same_conntrack_events_same_output(lab: NatLab, tmp_path: Path, flags: list[str]) -> None:
    """Also without the fused flow stack and recvmmsg (--no-fusion, --no-recvmmsg)."""
    ref, cand = tmp_path / "ulogd2", tmp_path / "pyulogd"
    for d in (ref, cand):
        d.mkdir()
        (d / "ulogd.conf").write_text(config(d))
    env = dict(os.environ, TZ="UTC")
    n = len(lab.flows())
    daemons: list[subprocess.Popen[bytes]] = []
    try:
        daemons.append(lab.popen(lab.router, [ULOGD, "-c", str(ref / "ulogd.conf")], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        daemons.append(lab.popen(lab.router, [sys.executable, "-m", "pyulogd", "-c", str(cand / "ulogd.conf"), *flags],
                                 env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        # Each has one event socket for ct1 (shared by two stacks) and one for ct2.
        wait_listening(daemons[0], 2, "ulogd2")
        wait_listening(daemons[1], 2, "pyulogd")
        lab.traffic()
        assert lab.ct_count() == n, sh("conntrack", "-L", ns=lab.router).stdout
        icmpv6 = kernel_icmpv6(lab)
        lab.flush()

        def done(d: Path) -> bool:
            return (sum('"ct.event": 4' in x for x in iter_json(d / "events.json")) >= n
                    and len(list(iter_json(d / "hash.json"))) >= n
                    and sum("[DESTROY]" in x for x in complete_lines(d / "flows.log")) >= n)

        wait_for(lambda: done(ref) and done(cand), 10, "a DESTROY record of every flow from both daemons")
    finally:
        rcs = stop(*daemons)
    err = daemons[1].stderr.read().decode(errors="replace") if daemons[1].stderr else ""
    assert rcs == [0, 0], err
    fused = "stack 'ct1:NFCT,ip2str1:IP2STR,print1:PRINTFLOW,emu1:LOGEMU' fused (pyulogd.plugins.fused.flow_line)"
    assert (fused in (cand / "daemon.log").read_text()) == (not flags)

    for d in (ref, cand):
        for name in OUTPUTS:
            assert (d / name).read_text().endswith("\n"), f"{d.name}/{name}: last line incomplete"
    flows = {f.key for f in lab.flows()}
    for name in ("events.json", "hash.json"):
        ref_recs = [json.loads(x) for x in iter_json(ref / name)]
        cand_recs = [json.loads(x) for x in iter_json(cand / name)]
        assert len(cand_recs) == len(ref_recs) == (2 * n if name == "events.json" else n), name
        assert {record_key(r) for r in ref_recs} == flows, name  # what was compared is what was made
        assert sorted(mask_json(r) for r in cand_recs) == sorted(
            mask_json(correct_2_0_8_record(r, icmpv6)) for r in ref_recs), name
        # Same serialisation as jansson.
        assert all(x.startswith('{"timestamp": "') and '", "dvc": "Netfilter", ' in x
                   for x in iter_json(cand / name))
        check_times(ref_recs, cand_recs, table=name == "hash.json")
    ref_lines, cand_lines = complete_lines(ref / "flows.log"), complete_lines(cand / "flows.log")
    assert len(cand_lines) == len(ref_lines) == 2 * n
    assert sorted(mask_line(x) for x in cand_lines) == sorted(
        mask_line(correct_2_0_8_line(x, icmpv6)) for x in ref_lines)
    # The corrections were exercised: the ulogd2 side had ICMP, ICMPv6 and oob.protocol 0.
    ref_text = "\n".join(ref_lines)
    assert "PROTO=ICMP TYPE=0 CODE=8 " in ref_text and "PROTO=58 " in ref_text
    assert "PROTO=ICMPv6 TYPE=128 CODE=0 " in "\n".join(cand_lines)
