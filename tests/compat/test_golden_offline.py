"""Offline parity: the netlink buffers real ulogd2 2.0.8 read, fed through pyulogd, give its output.

The golden sets live in ../shared/golden (made with goldentool.py, see its README). Each
case has the config ulogd2 ran, the exact buffers it read from its netlink socket
(raw-daemon/) and its output. Here the same buffers go through the same stack; outputs are
compared after goldentool's own masking, plus the corrections listed in docs/compat.md.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from pyulogd.core.config import parse_text
from pyulogd.core.context import Context
from pyulogd.core.plugin import Source
from pyulogd.daemon.service import Service
from pyulogd.io.loop import Loop
from pyulogd.io.rtnl import LinkCache

GOLDEN = Path(__file__).resolve().parents[2].parent / "shared" / "golden"
SET = GOLDEN / "ulogd2-2.0.8"
pytestmark = pytest.mark.skipif(not SET.is_dir(), reason="../shared/golden is not there")

# Differences from 2.0.8 that are corrections (docs/compat.md), by output format.
JSON_CORRECTED = ("tcp.offset", "tcp.reserved")


def goldentool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("goldentool", GOLDEN / "goldentool.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def raw_buffers(case: str) -> list[bytes]:
    d = SET / case / "raw-daemon"
    index = [json.loads(x) for x in (d / "index.jsonl").read_text().splitlines() if x.strip()]
    return [bytes.fromhex((d / rec["file"]).read_text().replace("\n", "")) for rec in index]


@pytest.fixture()
def utc() -> Iterator[None]:
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


def replay(case: str, out: Path) -> Service:
    """Run the case's own ulogd.conf, outputs redirected to ``out``, on its captured buffers."""
    text = (SET / case / "ulogd.conf").read_text()
    text = re.sub(r'^logfile=".*"$', f'logfile="{out}/ulogd.log"', text, flags=re.M)
    text = re.sub(r'^(file|directory|db)="[^"]*/([^/"]+)"$', lambda m: f'{m[1]}="{out}/{m[2]}"', text, flags=re.M)
    ctx = Context(loop=Loop(), hostname="vm")
    cache = LinkCache(ctx, kernel=False)
    cache.names.update({1: "lo", 2: "gbb0"})  # the golden lab's gbB (README: ifindex 2 = gbb0)
    ctx.ifcache = cache  # type: ignore[attr-defined]
    svc = Service(str(out / "ulogd.conf"), ctx)
    svc.load_config(parse_text(text, str(out / "ulogd.conf")))
    for stack in svc.stacks:
        for inst in stack.instances[1:]:
            inst.start()
            svc.started.append(inst)
            if hasattr(inst, "flush"):
                svc.sinks.append(inst)  # type: ignore[arg-type]
    src = svc.stacks[0].source
    assert isinstance(src, Source)
    for buf in raw_buffers(case):
        src._handle(buf)  # type: ignore[attr-defined]
        svc.flush()
    svc.stop()
    return svc


def masked(fmt: str, path: Path) -> Any:
    return goldentool().masked(fmt, str(path))


def test_pkt_logemu(tmp_path: Path, utc: None) -> None:
    svc = replay("pkt-logemu", tmp_path)
    ref = masked("logemu", SET / "pkt-logemu" / "logemu.log")
    cand = masked("logemu", tmp_path / "logemu.log")
    assert len(ref) == 44
    assert cand == ref
    # Unmasked, every line with a kernel timestamp is byte-identical, time and host included.
    ref_lines = (SET / "pkt-logemu" / "logemu.log").read_text().splitlines()
    cand_lines = (tmp_path / "logemu.log").read_text().splitlines()
    same = [c == r for c, r in zip(cand_lines, ref_lines, strict=True) if "gbOUT" not in r]
    assert all(same) and len(same) > 20
    assert svc.ctx.stats.get("nflog.log1.malformed") == 0


def test_pkt_json(tmp_path: Path, utc: None) -> None:
    replay("pkt-json", tmp_path)
    ref_text = (SET / "pkt-json" / "out.json").read_text().splitlines()
    cand_text = (tmp_path / "out.json").read_text().splitlines()
    assert len(cand_text) == len(ref_text) == 44

    def without_corrections(rows: list[str]) -> list[str]:
        out = []
        for row in rows:
            d = json.loads(row)
            for k in JSON_CORRECTED:
                if k in d:
                    d[k] = "*"
            out.append(json.dumps(d, sort_keys=True))
        return out

    gt = goldentool()
    ref = without_corrections(gt.mask_json("\n".join(ref_text)))
    cand = without_corrections(gt.mask_json("\n".join(cand_text)))
    assert cand == ref
    # Field order and serialisation (jansson's separators) are identical too; records with a
    # kernel timestamp are byte-identical apart from the corrected TCP fields.
    for c, r in zip(cand_text, ref_text, strict=True):
        assert list(json.loads(c)) == list(json.loads(r))
        if '"gbOUT ' not in r:
            cd, rd = json.loads(c), json.loads(r)
            for k in JSON_CORRECTED:
                cd.pop(k, None)
                rd.pop(k, None)
            assert cd == rd
            if "tcp.offset" not in r:
                assert c == r


def test_tcp_offset_is_corrected(tmp_path: Path, utc: None) -> None:
    """ulogd2 2.0.8 prints tcp.offset 0 for every packet; pyulogd the real data offset."""
    replay("pkt-json", tmp_path)
    rows = [json.loads(x) for x in (tmp_path / "out.json").read_text().splitlines()]
    tcp = [r for r in rows if "tcp.offset" in r]
    assert tcp and all(r["tcp.offset"] in (5, 8, 10) for r in tcp)
    syn = [r for r in tcp if r["tcp.syn"] and not r["tcp.ack"] and r["tcp.rst"] == 0]
    assert syn and all(r["tcp.offset"] == 10 for r in syn)  # SYN with MSS, SACK, TS, WS options
