"""Offline parity for flows: the ctnetlink buffers real ulogd2 2.0.8 read, fed through pyulogd's
NFCT input and the case's own stack, give its output.

As ``test_golden_offline.py`` does for packets (its helpers are reused): each case's
``ulogd.conf`` with the outputs redirected, the buffers of ``raw-daemon/`` in order, outputs
compared after goldentool's masking as sorted multisets (``conntrack -F`` orders DESTROYs by
hash bucket). The corrections of docs/compat.md (``oob.protocol``, the ICMPv6 keys) and
of docs/compat.md (PRINTFLOW's ICMP words) are undone before comparing and pinned apart.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.compat.test_golden_offline import SET, goldentool, replay, utc  # noqa: F401 - utc is a fixture

pytestmark = pytest.mark.skipif(not (SET / "flow-json").is_dir(), reason="../shared/golden is not there")

ETHERTYPE = {2: 0x0800, 10: 0x86DD}
EXACT_TIMES = ("flow.start.sec", "flow.start.usec", "flow.end.sec", "flow.end.usec")


def rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def as_2_0_8(rec: dict[str, Any]) -> dict[str, Any]:
    """A pyulogd flow record with its documented corrections undone."""
    out = dict(rec)
    out.pop("icmpv6.type", None)
    out.pop("icmpv6.code", None)
    out["oob.protocol"] = 0
    return out


def masked_json(recs: list[dict[str, Any]]) -> list[str]:
    return sorted(goldentool().mask_json("\n".join(json.dumps(r) for r in recs)))


def check_corrections(recs: list[dict[str, Any]]) -> None:
    for r in recs:
        assert r["oob.protocol"] == ETHERTYPE[r["oob.family"]]
        if r["orig.ip.protocol"] == 58:
            assert (r["icmpv6.type"], r["icmpv6.code"]) == (128, 0)  # echo request
        else:
            assert "icmpv6.type" not in r and "icmpv6.code" not in r


def test_flow_json(tmp_path: Path, utc: None) -> None:  # noqa: F811
    svc = replay("flow-json", tmp_path)
    ref = rows(SET / "flow-json" / "out.json")
    cand = rows(tmp_path / "out.json")
    assert len(cand) == len(ref) == 18
    assert masked_json([as_2_0_8(r) for r in cand]) == masked_json(ref)
    check_corrections(cand)
    # Unmasked: same records in the same order (one socket, no hash table); field order as
    # 2.0.8's; ct.id exact; DESTROY times exact (kernel timestamps). NEW times: 2.0.8 calls
    # gettimeofday() when it reads the event, pyulogd takes the kernel's event time.
    for c, r in zip(cand, ref, strict=True):
        c2 = as_2_0_8(c)
        assert list(c2) == list(r)
        for k in r:
            if k == "timestamp" or (k.startswith("flow.start") and r["ct.event"] == 1):
                continue
            assert c2[k] == r[k], k
        if r["ct.event"] == 1:
            late = (r["flow.start.sec"] - c["flow.start.sec"]) * 10**6 + r["flow.start.usec"] - c["flow.start.usec"]
            assert 0 <= late < 10_000
    assert svc.ctx.stats.get("nfct.ct1.updates_skipped") == 17
    assert svc.ctx.stats.get("nfct.ct1.malformed") == 0


def test_flow_hash_json(tmp_path: Path, utc: None) -> None:  # noqa: F811
    """The flow table is built from the NEW events in the buffers; one record per flow at DESTROY."""
    replay("flow-hash-json", tmp_path)
    ref = rows(SET / "flow-hash-json" / "out.json")
    cand = rows(tmp_path / "out.json")
    assert len(cand) == len(ref) == 9
    assert masked_json([as_2_0_8(r) for r in cand]) == masked_json(ref)
    check_corrections(cand)
    by_id = {r["ct.id"]: r for r in ref}
    for c in cand:
        r = by_id[c["ct.id"]]
        assert [c[k] for k in EXACT_TIMES[2:]] == [r[k] for k in EXACT_TIMES[2:]]  # kernel stop time
        # flow.start is the NEW event's time from the table: the kernel's event time here,
        # gettimeofday() at reading in 2.0.8, a little later.
        late = (r["flow.start.sec"] - c["flow.start.sec"]) * 10**6 + r["flow.start.usec"] - c["flow.start.usec"]
        assert 0 <= late < 10_000


def as_2_0_8_line(line: str) -> str:
    """A pyulogd PRINTFLOW line with docs/compat.md's corrections undone."""
    line = re.sub(r"PROTO=ICMP TYPE=(\d+) CODE=(\d+)", r"PROTO=ICMP TYPE=\2 CODE=\1", line)
    return re.sub(r"PROTO=ICMPv6 (TYPE=\d+ )?(CODE=\d+ )?", "PROTO=58 ", line)


def test_flow_logemu(tmp_path: Path, utc: None) -> None:  # noqa: F811
    pytest.importorskip("pyulogd.plugins.filters.printflow")
    replay("flow-logemu", tmp_path)
    gt = goldentool()
    ref = gt.mask_logemu((SET / "flow-logemu" / "logemu.log").read_text())
    text = (tmp_path / "logemu.log").read_text()
    cand = gt.mask_logemu("\n".join(as_2_0_8_line(x) for x in text.splitlines()))
    assert len(cand) == len(ref) == 18
    assert sorted(cand) == sorted(ref)
    assert "PROTO=ICMPv6 TYPE=128 CODE=0 " in text and "PROTO=ICMP TYPE=8 CODE=0 " in text
