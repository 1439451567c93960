"""Real ulogd2's IPFIX output (Debian's ``ulogd_output_IPFIX.so``) received by IPFIXIN: what went
out comes back, key for key (issue 16, item 6).

The NAT router of ``test_live_flow_parity.py``: ulogd2 runs NFCT -> IPFIX over UDP to pyulogd's
IPFIXIN on the router's loopback; the same pyulogd daemon also runs NFCT -> IP2STR -> JSON on
the same conntrack events, which is what ulogd2 exported. For every IPv4 flow the collected
record must carry what ulogd2's template 256 holds: the original tuple, the packets and bytes
of both directions added (ulogd2's ``packetTotalCount``/``octetTotalCount``), the start and
end second, and ``ct.mark`` as ``applicationId``. ulogd2 2.0.8 counts each message's own
records in its sequence number (docs/compat.md, IPFIX): IPFIXIN recognises that way of
counting and reports no gap. IPv6 flows are left out: 2.0.8 writes them into the IPv4
template (garbage, docs/compat.md), which IPFIXIN decodes as what it is, IPv4 records.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.compat.test_live_parity_more import ENV, NOTRACK_LO, PLUGDIR, ULOGD, plugins
from tests.linux.flowpeers import Pyulogd, stop_proc
from tests.linux.lab import have_root_and_tools, sh, wait_for
from tests.linux.nat_lab import NatLab, wait_listening

_skip = have_root_and_tools("conntrack", "ping") or (
    None if os.path.exists(f"{PLUGDIR}/ulogd_output_IPFIX.so") else "needs ulogd2 (Debian package ulogd2)")
pytestmark = [pytest.mark.linux, pytest.mark.compat, pytest.mark.skipif(_skip is not None, reason=_skip or "")]


def ulogd2_config(out: Path, port: int) -> str:
    return f"""[global]
logfile="{out}/ulogd2.log"
loglevel=3
{plugins("inpflow_NFCT", "output_IPFIX")}stack=ct1:NFCT,ipfix1:IPFIX

[ct1]
event_mask=0x00000007

[ipfix1]
oid=7
host="127.0.0.1"
port={port}
proto=udp
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[dict[str, Any]], list[dict[str, Any]], str]]:
    d = tmp_path_factory.mktemp("ipfixin-ulogd2")
    with NatLab("fixin") as lab:
        sh("sysctl", "-qw", "net.netfilter.nf_conntrack_acct=1", "net.netfilter.nf_conntrack_timestamp=1",
           ns=lab.router)
        sh("nft", "-f", "-", ns=lab.router, input=NOTRACK_LO)  # the export itself is no flow of the lab
        sh("nft", "-f", "-", ns=lab.router, input="table inet marks {\n chain f {\n  type filter hook forward "
           "priority 0;\n  meta l4proto udp ct mark set 0x2a\n }\n}\n")  # fmt: skip
        lab.start_servers()
        nfct_out = d / "nfct.json"
        py = Pyulogd(d / "py", netns=lab.router, extra_global="stack=ct1:NFCT,ip2str9:IP2STR,json9:JSON",
                     extra_sections=f'[ct1]\nevent_mask=0x00000007\n\n[json9]\nfile="{nfct_out}"\n')  # fmt: skip
        ulogd2 = None
        try:
            (d / "ulogd2.conf").write_text(ulogd2_config(d, py.port))
            ulogd2 = lab.popen(lab.router, [ULOGD, "-c", str(d / "ulogd2.conf")], env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
            wait_listening(ulogd2, 1, "ulogd2")
            wait_listening(py.proc, 1, "pyulogd")
            lab.traffic()
            lab.flush()  # every flow ends: NFCT (hash_enable=1) emits it, ulogd2 exports it
            n = len([f for f in lab.flows() if f.family == 2])

            def done() -> bool:
                got = [r for r in py.records() if r.get("oob.family") == 2]
                return len(got) >= n and len([x for x in nfct_out.read_text().splitlines() if x]) >= len(lab.flows())

            wait_for(done, 20, "ulogd2's export of every IPv4 flow (ulogd2 sends a partial message once a second)")
        finally:
            if ulogd2 is not None:
                assert stop_proc(ulogd2) == 0
            py.stop()
        nfct = [json.loads(x) for x in nfct_out.read_text().splitlines() if x]
        yield nfct, py.records(), py.counters()


def test_every_ipv4_flow_comes_back_key_for_key(run: tuple[list[dict[str, Any]], list[dict[str, Any]], str]) -> None:
    nfct, collected, _log = run
    sent = [f for f in nfct if f["oob.family"] == 2]
    assert len(sent) == 6 and len(collected) == len(nfct) == 12

    def tuple_of(r: dict[str, Any]) -> tuple[Any, ...]:
        return r["src_ip"], r["dest_ip"], r["orig.ip.protocol"], r.get("orig.l4.sport", 0), r.get("orig.l4.dport", 0)

    by = {tuple_of(r): r for r in collected}
    for f in sent:
        r = by.pop(tuple_of(f))  # ulogd2 writes 0 for the ports of a flow without ports
        assert r["orig.raw.pktcount"] == f["orig.raw.pktcount"] + f["reply.raw.pktcount"]
        assert r["orig.raw.pktlen"] == f["orig.raw.pktlen"] + f["reply.raw.pktlen"]
        assert (r["flow.start.sec"], r["flow.start.usec"]) == (f["flow.start.sec"], 0)
        assert (r["flow.end.sec"], r["flow.end.usec"]) == (f["flow.end.sec"], 0)
        mark = 0x2A if f["orig.ip.protocol"] == 17 else 0
        assert r["ipfix.extra"] == {"applicationId": f"{mark:08x}"}
        assert (r["ipfix.version"], r["ipfix.odid"], r["ipfix.template_id"]) == (10, 7, 256)
    # The IPv6 flows, in 2.0.8's IPv4 template: the first 4 bytes of each address (fd78:...).
    assert len(by) == 6 and all(src.startswith("253.120.") for src, *_rest in by)


def test_ulogd2s_sequence_numbers_are_no_gap(run: tuple[list[dict[str, Any]], list[dict[str, Any]], str]) -> None:
    _nfct, _collected, log = run
    assert "seq_gaps" not in log and "malformed" not in log, log
