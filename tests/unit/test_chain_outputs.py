"""Tamper evidence for the outputs issue 17 left out: OPRINT (records of several lines), NACCT,
XML (a processing instruction per line, the chain going on across SIGHUP's files) and PCAP
(seals in ``<file>.chain``, the capture unchanged): ``pyulogd-audit verify`` finds records
edited, deleted, reordered and inserted, and says where; without ``chain_key`` the files are
what they were (byte for byte the same as without the option)."""

from __future__ import annotations

import os
import signal
import struct
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyulogd.audit.verify import check, file_records, pcap_records
from pyulogd.core.clock import FakeClock
from pyulogd.core.context import Context
from pyulogd.core.errors import ConfigError
from pyulogd.io.chain import LineChain
from pyulogd.io.loop import Loop
from pyulogd.plugins.outputs.nacct import NacctOutput
from pyulogd.plugins.outputs.oprint import OprintOutput
from pyulogd.plugins.outputs.pcap import PcapOutput
from pyulogd.plugins.outputs.xml import XmlOutput
from tests.audit_helpers import CHAIN_KEY, chain_key_file, run
from tests.builders.nfct import Tuple, build_ct
from tests.helpers import BaseKeys, NflogKeys, golden_packets, make_stack, stop_stack
from tests.unit.test_nacct import TCP, FlowSource
from tests.unit.test_pcap import PKT4, PKT6, PktSource

NOW = 1795764137.25
Lines = list[str]


@pytest.fixture
def key(tmp_path: Path) -> Path:
    return chain_key_file(tmp_path)


def ctx() -> Context:
    return Context(loop=Loop(FakeClock(wall=NOW)), hostname="fw1")


def verify(key: Path, *files: Path) -> tuple[int, list[str]]:
    rc, out, err = run("verify", "--key", str(key), *[x for f in files for x in ("--file", str(f))])
    assert err == ""
    return rc, out.splitlines()


def errors(out: list[str]) -> list[str]:
    """The findings that are errors (notes such as "duplicate" left out), without the verdict."""
    return [line for line in out[:-1] if ": duplicate:" not in line and ": start:" not in line]


def tampered(key: Path, path: Path, text: str | bytes, *want: str) -> list[str]:
    """Write ``text`` to ``path``; verify must fail and report ``want`` (prefixes), in order."""
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    rc, out = verify(key, path)
    found = errors(out)
    assert rc == 1 and out[-1].endswith("TAMPERED"), out
    assert [f[: len(w)] for f, w in zip(found, want, strict=False)] == list(want) and len(found) == len(want), out
    return out


# -- OPRINT: a record is several lines


def oprint(path: Path, n: int, **opts: Any) -> None:
    stack = make_stack([NflogKeys, BaseKeys, (OprintOutput, {"file": str(path), **opts})], ctx())
    base = stack.instances[1]
    for i, (nflog, values, _obj, _emu) in enumerate(golden_packets()[:n]):
        base.values = values
        stack.source.emit_dict(nflog)
        if i % 3 == 2:
            stack.sink.flush()
    stop_stack(stack)


def records_of(text: str) -> Lines:
    """OPRINT's records, each its lines (with newlines) joined."""
    parts = text.split("===>PACKET BOUNDARY\n")
    return ["===>PACKET BOUNDARY\n" + p for p in parts[1:]]


def test_oprint_records_of_several_lines(tmp_path: Path, key: Path) -> None:
    plain, chained = tmp_path / "plain.log", tmp_path / "chained.log"
    oprint(plain, 8)
    oprint(chained, 8, chain_key=str(key))
    assert " chain=" not in plain.read_text()
    recs = records_of(chained.read_text())
    assert len(recs) == 8
    # the seal ends each record's last line and says how many lines it has
    unsealed = [r.rsplit(" chain=", 1)[0] + "\n" for r in recs]
    assert "".join(unsealed) == plain.read_text()
    assert all(f" chain={i}/{r.count(chr(10))}:" in r for i, r in enumerate(recs, 1))
    rc, out = verify(key, chained)
    assert rc == 0 and "8 records in 1 chain(s)" in out[-1]
    first = 1 + sum(r.count("\n") for r in recs[:3])  # where record 4 begins
    lines = chained.read_text().splitlines(keepends=True)
    middle = first + 3  # a name=value line inside record 4
    edit = lines[: middle - 1] + [lines[middle - 1].replace("=", "=9", 1)] + lines[middle:]
    tampered(key, chained, "".join(edit), f"{chained}:{first}: changed: seq 4")
    tampered(key, chained, "".join(recs[:2] + recs[3:]),
             f"{chained}:{1 + sum(r.count(chr(10)) for r in recs[:2])}: missing: seq 3 missing")
    swapped = recs[:4] + [recs[5], recs[4]] + recs[6:]
    tampered(key, chained, "".join(swapped),
             f"{chained}:{1 + sum(r.count(chr(10)) for r in swapped[:5])}: moved: seq 5 comes after seq 6")
    # a line slipped into a record: the record (as long as its seal says) changed, and the
    # line before it that it no longer reaches is unsealed; a whole record without a seal too
    inserted = lines[: middle - 1] + ["ip.saddr=6.6.6.6\n"] + lines[middle - 1 :]
    tampered(key, chained, "".join(inserted), f"{chained}:{first}: unsealed", f"{chained}:{first + 1}: changed: seq 4")
    forged = "===>PACKET BOUNDARY\noob.prefix=forged\n"
    tampered(key, chained, "".join(recs[:2]) + forged + "".join(recs[2:]),
             f"{chained}:{1 + sum(r.count(chr(10)) for r in recs[:2])}: unsealed",
             f"{chained}:{2 + sum(r.count(chr(10)) for r in recs[:2])}: unsealed")


# -- NACCT


def sealed_lines(key: Path, plain: Path, chained: Path) -> Lines:
    """The lines of a chained file, checked: the unchained file's lines, each with a seal at
    its end, and they verify."""
    lines = chained.read_text().splitlines(keepends=True)
    assert [ln.rsplit(" chain=", 1)[0] + "\n" for ln in lines] == plain.read_text().splitlines(keepends=True)
    assert verify(key, chained)[0] == 0
    return lines


def nacct(path: Path, n: int, **opts: Any) -> None:
    stack = make_stack([FlowSource, (NacctOutput, {"file": str(path), **opts})], ctx())
    for i in range(n):
        stack.source.push(**{**TCP, "orig_l4_sport": 40000 + i, "flow_end_sec": 1795763288 + i})
    stop_stack(stack)


def test_nacct_lines(tmp_path: Path, key: Path) -> None:
    plain, chained = tmp_path / "plain.log", tmp_path / "chained.log"
    nacct(plain, 10)
    nacct(chained, 10, chain_key=str(key))
    lines = sealed_lines(key, plain, chained)
    tampered(key, chained, "".join(lines[:4] + [lines[4].replace("40004", "40044")] + lines[5:]),
             f"{chained}:5: changed: seq 5")
    tampered(key, chained, "".join(lines[:2] + lines[3:]), f"{chained}:3: missing: seq 3 missing")
    tampered(key, chained, "".join(lines[:6] + [lines[7], lines[6]] + lines[8:]),
             f"{chained}:8: moved: seq 7 comes after seq 8")
    # the first two swapped: seq 1 after seq 2 is a move, not a new chain (verify told them
    # apart by whether seq 2's tag goes on from it)
    tampered(key, chained, "".join([lines[1], lines[0]] + lines[2:]), f"{chained}:2: moved: seq 1 comes after seq 2")


# -- XML: well-formed files, the chain across SIGHUP's files


def flow(i: int) -> bytes:
    return build_ct(event=4, orig=Tuple(bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), 6, 1000 + i, 80),
                    ct_id=i)[20:]  # fmt: skip


def xml_run(directory: Path, clock: FakeClock, n: int, **opts: Any) -> None:
    from tests.unit.test_xml import FlowSource as CtSource

    stack = make_stack([CtSource, (XmlOutput, {"directory": f"{directory}/", **opts})],
                       Context(loop=Loop(clock), hostname="vm"))  # fmt: skip
    for i in range(n):
        stack.source.emit([None, i + 1, flow(i)])
        if i == n // 2:
            clock.advance(61)
            stack.sink.signal(signal.SIGHUP)  # a new file; the chain goes on in it
    stop_stack(stack)


def test_xml_files_stay_xml_and_the_chain_crosses_files(tmp_path: Path, key: Path) -> None:
    plain, chained = tmp_path / "plain", tmp_path / "chained"
    plain.mkdir()
    chained.mkdir()
    xml_run(plain, FakeClock(wall=NOW), 6)
    xml_run(chained, FakeClock(wall=NOW), 6, chain_key=str(key))
    files = sorted(chained.iterdir())
    assert len(files) == 2
    for f in files:
        root = ET.parse(f).getroot()  # well-formed: the seals are processing instructions
        assert root.tag == "conntrack" and len(root) >= 2
        assert "<?pyulogd-chain " in f.read_text()
    for p, c in zip(sorted(plain.iterdir()), files, strict=True):
        import re

        assert re.sub(r"<\?pyulogd-chain [^?]*\?>", "", c.read_text()) == p.read_text()
    rc, out = verify(key, *files)
    # header (2 lines, one record), 4 flows, closing tag; header, 2 flows, closing tag
    assert rc == 0 and "10 records in 1 chain(s)" in out[-1], out
    lines = files[0].read_text().splitlines(keepends=True)
    assert lines[1].startswith("<conntrack><?pyulogd-chain 1/2:")
    tampered(key, files[0], "".join(lines[:3] + [lines[3].replace(">1001<", ">1009<")] + lines[4:]),
             f"{files[0]}:4: changed: seq 3")
    tampered(key, files[0], "".join(lines[:2] + lines[3:]), f"{files[0]}:3: missing: seq 2 missing")
    tampered(key, files[0], "".join(lines[:2] + [lines[3], lines[2]] + lines[4:]),
             f"{files[0]}:4: moved: seq 2 comes after seq 3")


def test_xml_chain_needs_a_file(tmp_path: Path, key: Path) -> None:
    with pytest.raises(ConfigError, match="chain_key"):
        make_stack([NflogKeys, (XmlOutput, {"stdout": 1, "chain_key": str(key)})], ctx())


# -- PCAP: the capture unchanged, its seals beside it


def pcap(path: Path, n: int, **opts: Any) -> None:
    stack = make_stack([PktSource, (PcapOutput, {"file": str(path), **opts})], ctx())
    src = stack.source
    assert isinstance(src, PktSource)
    for i in range(n):
        if i % 2:
            src.push(PKT6[:-1] + bytes([i]), family=10, sec=1795764153 + i, payloadlen=8)
        else:
            src.push(PKT4[:-1] + bytes([i]), sec=1795764153 + i, totlen=28)
        if i % 4 == 3:
            stack.sink.flush()
    stop_stack(stack)


def split_capture(data: bytes) -> tuple[bytes, list[bytes]]:
    head, recs, off = data[:24], [], 24
    while off < len(data):
        caplen = int.from_bytes(data[off + 8 : off + 12], "little")
        recs.append(data[off : off + 16 + caplen])
        off += 16 + caplen
    return head, recs


def test_pcap_capture_unchanged_and_seals_beside_it(tmp_path: Path, key: Path) -> None:
    plain, chained = tmp_path / "plain.pcap", tmp_path / "chained.pcap"
    pcap(plain, 12)
    pcap(chained, 12, chain_key=str(key))
    assert chained.read_bytes() == plain.read_bytes()  # tcpdump reads the same capture
    assert not Path(f"{plain}.chain").exists()
    seals = Path(f"{chained}.chain").read_text().splitlines()
    assert len(seals) == 12 and seals[0].startswith("record chain=1:")
    rc, out = verify(key, chained)
    assert rc == 0 and "12 records in 1 chain(s)" in out[-1], out
    head, recs = split_capture(chained.read_bytes())

    def write(f: Callable[[list[bytes]], list[bytes]]) -> bytes:
        return head + b"".join(f(list(recs)))

    edited = bytearray(recs[4])
    edited[-1] ^= 0xFF
    tampered(key, chained, write(lambda r: r[:4] + [bytes(edited)] + r[5:]), f"{chained} record:5: changed: seq 5")
    tampered(key, chained, write(lambda r: r[:6] + r[8:]), f"{chained} record:7: missing: seq 7..8 (2 records)")
    tampered(key, chained, write(lambda r: r[:2] + [r[3], r[2]] + r[4:]),
             f"{chained} record:4: moved: seq 3 comes after seq 4")
    tampered(key, chained, write(lambda r: r[:10]), f"{chained} record:11: missing: seq 11..12")
    forged = bytearray(recs[5])
    forged[-2] ^= 0xFF
    tampered(key, chained, write(lambda r: r[:1] + [bytes(forged)] + r[1:]), f"{chained} record:2: unsealed")
    chained.write_bytes(write(lambda r: r[:1] + [r[5]] + r[1:]))  # a copy: noted, as a line delivered twice
    rc, out = verify(key, chained)
    assert any(": duplicate: seq 6" in line for line in out), out


def test_pcap_restart_and_sighup_continue_the_chain(tmp_path: Path, key: Path) -> None:
    path = tmp_path / "c.pcap"
    pcap(path, 3, chain_key=str(key))
    pcap(path, 3, chain_key=str(key))  # a restart resumes from the last seal
    stack = make_stack([PktSource, (PcapOutput, {"file": str(path), "chain_key": str(key)})], ctx())
    src = stack.source
    assert isinstance(src, PktSource)
    src.push(PKT4, totlen=28)
    stack.sink.flush()
    os.rename(path, tmp_path / "c.pcap.1")  # as logrotate names them
    os.rename(f"{path}.chain", tmp_path / "c.pcap.chain.1")
    stack.sink.signal(signal.SIGHUP)  # rotation: new capture, new seal file, the chain goes on
    src.push(PKT4, totlen=28)
    stop_stack(stack)
    rc, out = verify(key, tmp_path / "c.pcap.1", path)
    assert rc == 0 and "8 records in 1 chain(s)" in out[-1], out


# -- NEUTRONLOG


def test_neutronlog_lines(tmp_path: Path, key: Path) -> None:
    from tests.unit.test_neutronlog import build, send_packet

    plain_dir, chained_dir = tmp_path / "p", tmp_path / "c"
    plain_dir.mkdir()
    chained_dir.mkdir()
    outs = []
    for d, opts in ((plain_dir, {}), (chained_dir, {"chain_key": str(key)})):
        src, nl, out, _ctx = build(d, **opts)
        for i in range(6):
            send_packet(src, oob_time_sec=1_800_000_000 + i)
        nl.stop()
        outs.append(out)
    plain, chained = outs
    lines = sealed_lines(key, plain, chained)
    tampered(key, chained, "".join(lines[:1] + [lines[1].replace("ACCEPT", "DROP")] + lines[2:]),
             f"{chained}:2: changed: seq 2")
    tampered(key, chained, "".join(lines[:3] + lines[4:]), f"{chained}:4: missing: seq 4 missing")


# -- every kind of edit, by hypothesis: found, never an exception

T = TypeVar("T", str, bytes)


def edit(data: st.DataObject, records: list[T], change: Callable[[T], T], forged: T) -> tuple[list[T], str, int]:
    """``records`` with one edit drawn (deleted, swapped, changed, inserted, cut off, none);
    the edited list, the edit and where."""
    out = list(records)
    n = len(out)
    op = data.draw(st.sampled_from(["none", "delete", "swap", "change", "insert", "truncate"]))
    i = data.draw(st.integers(0, n - 1))
    if op == "delete":
        del out[i]
    elif op == "swap" and n > 1:
        j = data.draw(st.integers(0, n - 1).filter(lambda j: j != i))
        out[i], out[j] = out[j], out[i]
    elif op == "change":
        out[i] = change(out[i])
    elif op == "insert":
        out.insert(i, forged)
    elif op == "truncate":
        out = out[:i]
    return out, op, i


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_pcap_pairing_finds_every_edit(data: st.DataObject) -> None:
    """A capture's records against their seals: every edit is found, a cut end included."""
    n = data.draw(st.integers(1, 12))
    recs = [struct.pack("=IIII", 1800000000 + i, 0, 4, 4) + bytes([i, i % 3, 0, 1]) for i in range(n)]
    seals = LineChain(CHAIN_KEY, "text", "t").seal_bytes(recs)
    forged = struct.pack("=IIII", 1, 2, 4, 4) + b"evil"
    edited, op, i = edit(data, recs, lambda r: r[:-1] + bytes([r[-1] ^ 0x80]), forged)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.pcap"
        path.write_bytes(b"\xd4\xc3\xb2\xa1" + bytes(20) + b"".join(edited))
        Path(f"{path}.chain").write_text("".join(seals))
        report = check(pcap_records(str(path), CHAIN_KEY), CHAIN_KEY)
    assert report.ok == (edited == recs), (op, i, [f.line() for f in report.findings])


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_line_chain_finds_every_edit(data: st.DataObject) -> None:
    """The same edits on sealed lines (records of one or several lines): found, except what
    a chain of lines cannot see (the first records deleted, read as a chain beginning later,
    and the last ones cut off: the daemon's logged last seal is the check for those)."""
    n = data.draw(st.integers(1, 10))
    multi = data.draw(st.booleans())
    recs = [f"===>PACKET BOUNDARY\nk={i}\nv={i % 3}\n" if multi else f"line {i} v={i % 3}\n" for i in range(n)]
    sealed = LineChain(CHAIN_KEY, "text", "t").seal_all(recs)
    edited, op, i = edit(data, sealed, lambda r: r.replace("v=", "v=9", 1),
                         "===>PACKET BOUNDARY\nk=evil\n" if multi else "line evil\n")
    unseen = (op == "delete" and i in (0, n - 1)) or op == "truncate"
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "f.log"
        path.write_text("".join(edited))
        report = check(file_records([str(path)]), CHAIN_KEY)
    assert report.ok == (edited == sealed or unseen), (op, i, multi, [f.line() for f in report.findings])
