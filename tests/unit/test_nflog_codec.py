"""codec.nflog: packets decoded from the exact buffers real ulogd2 read, checked against its output.

Golden data: ``../shared/golden/ulogd2-2.0.8`` (skipped when absent). ``tests/vectors/nflog``
holds two of those buffers with ulogd2's JSON fields for their records, so the main checks run
without it; regenerate with ``python tests/unit/test_nflog_codec.py --regen``.
"""

from __future__ import annotations

import glob
import json
import socket
import struct
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyulogd.codec import netlink as nl
from pyulogd.codec import nflog
from pyulogd.core.errors import DecodeError
from tests.builders.netlink import done_msg, error_msg
from tests.builders.nflog import build_packet

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "../shared/golden/ulogd2-2.0.8"
VECTORS = ROOT / "tests/vectors/nflog"
NOW = 1795764131.5
# ulogd2's JSON fields that come straight from NFLOG (RAW keys are not written by JSON).
FIELDS = ("raw.pktlen", "raw.pktcount", "oob.prefix", "oob.mark", "oob.ifindex_in", "oob.ifindex_out",
          "oob.hook", "raw.mac_len", "oob.family", "oob.protocol", "raw.type", "raw.mac.addrlen",
          "oob.uid", "oob.gid", "raw.label", "oob.seq.local", "oob.seq.global")  # fmt: skip
RAW_KEYS = ("raw.mac", "raw.pkt", "raw.mac.saddr", "ct")
PKT_CASES = ("pkt-gprint", "pkt-json", "pkt-logemu", "pkt-oprint", "pkt-pcap", "pkt-sqlite3", "pkt-xml")
VECTOR_FILES = (("pkt-json", "00001.hex", 0), ("pkt-json", "00006.hex", 41))  # (case, buffer, first record)


def _hex(path: Path) -> bytes:
    return bytes.fromhex(path.read_text().replace("\n", ""))


def have_golden() -> bool:
    return (GOLDEN / "pkt-json" / "out.json").is_file()


needs_golden = pytest.mark.skipif(not have_golden(), reason="../shared/golden not available")


def golden_buffers(case: str, sub: str = "raw-daemon") -> list[bytes]:
    return [_hex(Path(f)) for f in sorted(glob.glob(str(GOLDEN / case / sub / "*.hex")))]


def all_golden_buffers() -> list[bytes]:
    if not have_golden():
        return []
    return [b for case in PKT_CASES for sub in ("raw-daemon", "raw") for b in golden_buffers(case, sub)]


def vectors() -> list[tuple[bytes, dict[str, Any]]]:
    return [(_hex(p), json.loads(p.with_suffix(".json").read_text())) for p in sorted(VECTORS.glob("*.hex"))]


def sample_buffers() -> list[bytes]:
    return [b for b, _ in vectors()] + all_golden_buffers()


def packet_messages(buf: bytes) -> list[tuple[int, int]]:
    return [(off, ln) for off, ln, typ, *_ in nl.split(buf)[0] if typ == nflog.PACKET_TYPE]


def check_against_ulogd(values: list[Any], gold: dict[str, Any], where: str) -> None:
    """One decoded record against ulogd2's JSON record for the same packet."""
    got = nflog.as_dict(values)
    for f in FIELDS:
        assert got.get(f) == gold.get(f), f"{where}: {f}"
    if gold["oob.prefix"] != "gbOUT ":  # these have a kernel timestamp; gbOUT got ulogd's clock
        assert got["oob.time.sec"] == gold["oob.time.sec"], where
        assert got["oob.time.usec"] == gold["oob.time.usec"], where
    else:
        assert (got["oob.time.sec"], got["oob.time.usec"]) == nflog.split_now(NOW), where
    assert got["raw.pkt"][0] >> 4 == (4 if got["oob.family"] == 2 else 6)  # the IP header
    assert len(got["raw.pkt"]) == got["raw.pktlen"]
    if "raw.mac" in got:
        assert len(got["raw.mac"]) == got["raw.mac_len"] == 14
        assert got["raw.mac.saddr"] == got["raw.mac"][6:12] == bytes.fromhex("02000ac90001")


# -- against ulogd2's output


@needs_golden
@pytest.mark.parametrize("templates", [False, True])
def test_golden_json_record_by_record(templates: bool) -> None:
    gold = [json.loads(line) for line in (GOLDEN / "pkt-json" / "out.json").read_text().splitlines()]
    dec = nflog.Decoder(templates=templates)
    for _ in range(2):  # the second round runs on learnt templates
        recs = []
        for buf in golden_buffers("pkt-json"):
            batch = dec.parse_buffer(buf, NOW)
            assert (batch.malformed, batch.errors, batch.other) == (0, [], 0)
            recs += batch.records
        assert len(recs) == len(gold) == 44
        for i, (values, g) in enumerate(zip(recs, gold, strict=True)):
            check_against_ulogd(values, g, f"record {i}")
    assert (dec._hits >= 44) == templates


@needs_golden
@pytest.mark.parametrize("case", PKT_CASES)
@pytest.mark.parametrize("sub", ["raw-daemon", "raw"])
def test_golden_every_case_against_the_dump_index(case: str, sub: str) -> None:
    dec = nflog.Decoder()
    n = 0
    for line in (GOLDEN / case / sub / "index.jsonl").read_text().splitlines():
        meta = json.loads(line)
        buf = _hex(GOLDEN / case / sub / meta["file"])
        want = [m for m in meta["msgs"] if m.get("kind") == "NFLOG"]
        for _ in range(2):
            batch = dec.parse_buffer(buf, NOW, label=7)
            assert batch.malformed == 0 and len(batch.records) == len(want)
            for values, m in zip(batch.records, want, strict=True):
                got = nflog.as_dict(values)
                assert got["oob.prefix"] == m["prefix"] and got["oob.hook"] == m["hook"]
                assert got["oob.protocol"] == m["hw_protocol"] and got["oob.family"] == m["family"]
                assert got.get("oob.ifindex_in") == m.get("ifindex_indev")
                assert got.get("oob.ifindex_out") == m.get("ifindex_outdev")
                assert got.get("oob.uid") == m.get("uid") and got["raw.pktlen"] == m["payload_len"]
                assert got["raw.label"] == 7 and got["raw.pktcount"] == 1
                if "timestamp" in m:
                    assert f"{got['oob.time.sec']}.{got['oob.time.usec']:06d}" == m["timestamp"]
                assert got["raw"] == buf[m["offset"] : m["offset"] + m["len"]]
        n += len(want)
    assert n == 44


# -- vectors (always run)


def test_vectors_against_ulogd() -> None:
    vs = vectors()
    assert len(vs) == len(VECTOR_FILES)
    for buf, exp in vs:
        for dec in (nflog.Decoder(templates=False), nflog.Decoder()):
            for _ in range(2):
                batch = dec.parse_buffer(buf, NOW)
                assert batch.malformed == 0
                assert [_jsonable(v, buf) for v in batch.records] == exp["records"]
                for i, (values, g) in enumerate(zip(batch.records, exp["ulogd"], strict=True)):
                    check_against_ulogd(values, g, f"{exp['source']} record {i}")


def _jsonable(values: list[Any], buf: bytes) -> dict[str, Any]:
    d = nflog.as_dict(values)
    for k in RAW_KEYS:
        if k in d:
            d[k] = d[k].hex()
    raw = d.pop("raw")
    d["raw"] = [buf.find(raw), len(raw)]
    return d


def regenerate_vectors() -> None:
    gold = [json.loads(line) for line in (GOLDEN / "pkt-json" / "out.json").read_text().splitlines()]
    VECTORS.mkdir(parents=True, exist_ok=True)
    for case, name, first in VECTOR_FILES:
        src = GOLDEN / case / "raw-daemon" / name
        buf = _hex(src)
        recs = nflog.parse_buffer(buf, NOW).records
        out = VECTORS / f"{case}-{name}"
        out.write_text(src.read_text())
        exp = {"source": f"golden/ulogd2-2.0.8/{case}/raw-daemon/{name}", "now": NOW,
               "records": [_jsonable(v, buf) for v in recs],
               "ulogd": [{k: g[k] for k in (*FIELDS, "oob.time.sec", "oob.time.usec") if k in g}
                         for g in gold[first : first + len(recs)]]}  # fmt: skip
        out.with_suffix(".json").write_text(json.dumps(exp, indent=1) + "\n")


# -- templates never change a result


def test_templates_and_generic_parser_agree_on_every_message() -> None:
    bufs = sample_buffers()
    fast, generic = nflog.Decoder(), nflog.Decoder(templates=False)
    for buf in bufs + bufs:
        a, b = fast.parse_buffer(buf, NOW, 3), generic.parse_buffer(buf, NOW, 3)
        assert a.records == b.records and a.malformed == b.malformed
    assert fast._hits > len(bufs)


def test_template_declines_when_anything_checked_differs() -> None:
    base = dict(prefix=b"ACCEPT", indev=2, hwheader=bytes(range(14)), hwaddr=bytes(range(6)),
                payload=b"E" * 40, timestamp=(1700000000, 5))  # fmt: skip
    dec = nflog.Decoder()
    first = build_packet(**base)  # type: ignore[arg-type]
    dec.parse_buffer(first, NOW)
    assert dec._ntemplates == 1
    variants = [dict(base, indev=3), dict(base, prefix=b"ACCEPU"), dict(base, hook=2), dict(base, mark=5),
                dict(base, hwheader=bytes(16)), dict(base, hwaddr=bytes(4)), dict(base, payload=b"E" * 41),
                dict(base, timestamp=(0, 7)), dict(base, uid=0), dict(base, family=10)]  # fmt: skip
    for v in variants:
        msg = build_packet(**v)  # type: ignore[arg-type]
        got = dec.parse_buffer(msg, NOW).records
        assert got == nflog.parse_buffer(msg, NOW).records == [nflog.decode_packet(msg, NOW)]


def test_template_checks_values_it_treats_as_constants_outside_the_key() -> None:
    # Not the kernel's order: the packet header comes after a long prefix, past the lookup key.
    def msg(hook: int, proto: int, indev: int) -> bytes:
        attrs = [nl.nla(nflog.NFULA_PREFIX, b"a-rather-long-prefix-text\0"),
                 nl.nla(nflog.NFULA_PACKET_HDR, struct.pack("!HBx", proto, hook)),
                 nl.nla(nflog.NFULA_IFINDEX_INDEV, struct.pack("!I", indev)),
                 nl.nla(nflog.NFULA_PAYLOAD, b"p")]
        return nl.nfnl_msg(4, 0, 2, 0, attrs, flags=0)  # fmt: skip

    dec = nflog.Decoder()
    dec.parse_buffer(msg(1, 0x800, 2), NOW)
    assert dec._ntemplates == 1
    for m in (msg(1, 0x800, 2), msg(3, 0x800, 2), msg(1, 0x86DD, 2), msg(1, 0x800, 0), msg(1, 0x800, 9)):
        assert dec.parse_buffer(m, NOW).records == [nflog.decode_packet(m, NOW)]
    assert dec._hits >= 1


def _u32() -> st.SearchStrategy[bytes]:
    return st.one_of(st.just(0), st.integers(0, 0xFFFFFFFF)).map(lambda v: struct.pack("!I", v))


# A valid value for every attribute type a template may hold; lengths fixed except prefix and L2 header.
VALUES: dict[int, st.SearchStrategy[bytes]] = {
    nflog.NFULA_PACKET_HDR: st.tuples(st.integers(0, 0xFFFF), st.integers(0, 255)).map(
        lambda t: struct.pack("!HBx", *t)),
    nflog.NFULA_TIMESTAMP: st.tuples(st.integers(0, 2), st.integers(0, 2**64 - 1)).map(
        lambda t: struct.pack("!QQ", *t)),
    nflog.NFULA_HWTYPE: st.integers(0, 3).map(lambda v: struct.pack("!H", v)),
    nflog.NFULA_HWLEN: st.integers(0, 3).map(lambda v: struct.pack("!H", v)),
    nflog.NFULA_HWADDR: st.tuples(st.integers(0, 10), st.binary(min_size=8, max_size=8)).map(
        lambda t: struct.pack("!H2x", t[0]) + t[1]),
    nflog.NFULA_HWHEADER: st.binary(max_size=16),
    nflog.NFULA_PREFIX: st.binary(max_size=24),
    **{t: _u32() for t in (nflog.NFULA_MARK, nflog.NFULA_UID, nflog.NFULA_GID, nflog.NFULA_SEQ,
                           nflog.NFULA_SEQ_GLOBAL, nflog.NFULA_IFINDEX_INDEV, nflog.NFULA_IFINDEX_OUTDEV,
                           nflog.NFULA_IFINDEX_PHYSINDEV, nflog.NFULA_IFINDEX_PHYSOUTDEV)},
}  # fmt: skip


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_templates_agree_with_the_generic_parser_on_any_layout(data: st.DataObject) -> None:
    """Any order and subset of attributes; later messages share the layout but not the values."""
    types = data.draw(st.lists(st.sampled_from(sorted(VALUES)), unique=True, min_size=2, max_size=10))
    family = data.draw(st.sampled_from([2, 10]))

    def message(values: list[bytes], payload: bytes) -> bytes:
        attrs = [nl.nla(t, v) for t, v in zip(types, values, strict=True)]
        return nl.nfnl_msg(4, 0, family, 11, [*attrs, nl.nla(nflog.NFULA_PAYLOAD, payload)], flags=0)

    def another(t: int, v: bytes) -> bytes:
        if data.draw(st.integers(0, 3)):  # mostly the same, so that templates get used
            return v
        if t in (nflog.NFULA_PREFIX, nflog.NFULA_HWHEADER):  # same length, or the layout changes
            return data.draw(st.binary(min_size=len(v), max_size=len(v)))
        return data.draw(VALUES[t])

    first = [data.draw(VALUES[t]) for t in types]
    dec = nflog.Decoder()
    dec.parse_buffer(message(first, data.draw(st.binary(max_size=40))), NOW)
    for _ in range(3):
        values = [another(t, v) for t, v in zip(types, first, strict=True)]
        msg = message(values, data.draw(st.binary(max_size=40)))
        assert dec.parse_buffer(msg, NOW, 9).records == [nflog.decode_packet(msg, NOW, 9)]


# -- truncation and fuzzing


def test_every_truncation_of_every_buffer() -> None:
    bufs = sample_buffers()[:8]
    for buf in bufs:
        full = nflog.parse_buffer(buf, NOW).records
        msgs = nl.split(buf)[0]
        dec = nflog.Decoder()
        dec.parse_buffer(buf, NOW)  # learnt templates must decline cut messages too
        for cut in range(len(buf) + 1):
            part = buf[:cut]
            intact = sum(1 for off, ln, typ, *_ in msgs if typ == nflog.PACKET_TYPE and off + ln <= cut)
            for d in (dec, nflog.Decoder(templates=False)):
                batch = d.parse_buffer(part, NOW)
                assert batch.records == full[:intact]
                rest = part[max([off + ln for off, ln, *_ in msgs if off + ln <= cut], default=0) :]
                assert batch.malformed == (0 if len(rest) < 4 and not any(rest) else 1)


# Keys a cut can change without an error: the cut lands in a variable-length attribute (or drops
# the timestamp, mark or hardware length, which then take their defaults).
CUT_MAY_CHANGE = {"raw", "raw.pkt", "raw.pktlen", "raw.mac", "oob.prefix", "oob.time.sec", "oob.time.usec",
                  "oob.mark", "raw.mac_len", "raw.type"}  # fmt: skip


def test_every_truncation_inside_each_message() -> None:
    """A message cut short but with a consistent nlmsg_len: only DecodeError, or fewer keys."""
    for buf in sample_buffers()[:3]:
        for off, ln in packet_messages(buf):
            whole = nflog.decode_packet(buf[off : off + ln], NOW)
            for cut in range(ln):
                msg = struct.pack("=I", cut) + buf[off + 4 : off + cut]
                try:
                    values = nflog.decode_packet(msg, NOW)
                except DecodeError:
                    continue
                got, want = nflog.as_dict(values), nflog.as_dict(whole)
                assert set(got) - {"raw"} <= set(want), cut  # nothing invented
                for k in got.keys() - CUT_MAY_CHANGE:
                    assert got[k] == want[k], (cut, k)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_random_bytes(data: bytes) -> None:
    nflog.Decoder().parse_buffer(data, NOW)  # never raises
    for off, ln in packet_messages(data):
        try:
            nflog.parse_packet(data, off, off + ln, 1, 2)
        except DecodeError:
            pass
    # and as the body of a well-framed packet message
    msg = nl.nlmsg(nflog.PACKET_TYPE, 0, 0, data)
    try:
        nflog.decode_packet(msg)
    except DecodeError:
        pass


_TRAINED: list[nflog.Decoder] = []


def _trained() -> nflog.Decoder:
    if not _TRAINED:
        dec = nflog.Decoder()
        for buf in sample_buffers():
            dec.parse_buffer(buf, NOW)
        _TRAINED.append(dec)
    return _TRAINED[0]


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_mutations(data: st.DataObject) -> None:
    bufs = sample_buffers()
    buf = bytearray(data.draw(st.sampled_from(bufs)))
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(buf) - 1))
        kind = data.draw(st.sampled_from(["byte", "u16", "cut", "insert"]))
        if kind == "byte":
            buf[i] = data.draw(st.integers(0, 255))
        elif kind == "u16":
            buf[i : i + 2] = struct.pack("=H", data.draw(st.integers(0, 0xFFFF)))
        elif kind == "cut":
            del buf[i : i + data.draw(st.integers(1, 64))]
        else:
            buf[i:i] = data.draw(st.binary(min_size=1, max_size=8))
    mutated = bytes(buf)
    a = _trained().parse_buffer(mutated, NOW)  # never raises
    b = nflog.parse_buffer(mutated, NOW)
    assert a.records == b.records and a.malformed == b.malformed
    for off, ln in packet_messages(mutated):
        try:
            nflog.parse_packet(mutated, off, off + ln, 1, 2)
        except DecodeError:
            pass


# -- semantics on built messages


packets = st.fixed_dictionaries(
    {},
    optional={
        "family": st.sampled_from([2, 10, 7, 3]),
        "group": st.integers(0, 0xFFFF),
        "hw_protocol": st.integers(0, 0xFFFF),
        "hook": st.integers(0, 4),
        "mark": st.integers(0, 0xFFFFFFFF),
        "timestamp": st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)),
        "indev": st.integers(0, 0xFFFFFFFF),
        "outdev": st.integers(0, 0xFFFFFFFF),
        "hwaddr": st.binary(min_size=0, max_size=8),
        "hwheader": st.binary(min_size=1, max_size=40),
        "payload": st.binary(max_size=200),
        "prefix": st.binary(max_size=60).map(lambda b: b.replace(b"\0", b"")),
        "uid": st.integers(0, 0xFFFFFFFF),
        "gid": st.integers(0, 0xFFFFFFFF),
        "seq": st.integers(0, 0xFFFFFFFF),
        "seq_global": st.integers(0, 0xFFFFFFFF),
        "ct": st.binary(max_size=40),
    },
)


@settings(max_examples=300)
@given(packets, st.integers(0, 255))
def test_build_and_decode(fields: dict[str, Any], label: int) -> None:
    msg = build_packet(**fields)
    dec = nflog.Decoder()
    batches = [dec.parse_buffer(msg + done_msg(), NOW, label) for _ in range(2)]
    assert batches[0].records == batches[1].records == [nflog.decode_packet(msg, NOW, label)]
    got = nflog.as_dict(batches[0].records[0])
    want: dict[str, Any] = {"raw.pktcount": 1, "raw.label": label, "oob.family": fields.get("family", 2),
                            "oob.mark": fields.get("mark", 0), "raw": msg}  # fmt: skip
    if fields.get("hw_protocol", 0x800) is not None:
        want["oob.protocol"] = fields.get("hw_protocol", 0x800)
        want["oob.hook"] = fields.get("hook", 1)
    ts = fields.get("timestamp")
    want["oob.time.sec"], want["oob.time.usec"] = (
        (ts[0] & 0xFFFFFFFF, ts[1] & 0xFFFFFFFF) if ts and ts[0] else nflog.split_now(NOW)
    )
    for k, name in (("indev", "oob.ifindex_in"), ("outdev", "oob.ifindex_out")):
        if fields.get(k):
            want[name] = fields[k]
    for k, name in (("uid", "oob.uid"), ("gid", "oob.gid"), ("seq", "oob.seq.local"),
                    ("seq_global", "oob.seq.global"), ("ct", "ct")):  # fmt: skip
        if k in fields:
            want[name] = fields[k]
    if "payload" in fields:
        want["raw.pkt"], want["raw.pktlen"] = fields["payload"], len(fields["payload"])
    if "prefix" in fields:
        want["oob.prefix"] = fields["prefix"].decode("utf-8", "surrogateescape")
    if "hwaddr" in fields:
        want["raw.mac.addrlen"] = len(fields["hwaddr"])
        want["raw.mac.saddr"] = fields["hwaddr"]
    if "hwheader" in fields:
        want.update({"raw.mac": fields["hwheader"], "raw.mac_len": len(fields["hwheader"]), "raw.type": 1})
    assert got == want


def test_semantics_of_odd_packets() -> None:
    # No prefix attribute: key invalid; empty prefix: ""; bytes that are not UTF-8 survive.
    assert "oob.prefix" not in nflog.as_dict(nflog.decode_packet(build_packet()))
    assert nflog.as_dict(nflog.decode_packet(build_packet(prefix=b"")))["oob.prefix"] == ""
    p = nflog.as_dict(nflog.decode_packet(build_packet(prefix=b"caf\xe9 ")))["oob.prefix"]
    assert p.encode("utf-8", "surrogateescape") == b"caf\xe9 "
    # A prefix without its NUL is taken whole.
    msg = nl.nfnl_msg(4, 0, 2, 0, [nl.nla(nflog.NFULA_PREFIX, b"abc")], flags=0)
    assert nflog.as_dict(nflog.decode_packet(msg))["oob.prefix"] == "abc"
    # An empty payload is still a payload (ulogd: payload_len >= 0).
    got = nflog.as_dict(nflog.decode_packet(build_packet(payload=b"")))
    assert got["raw.pkt"] == b"" and got["raw.pktlen"] == 0
    # HWLEN 0: no L2 header keys even if HWHEADER is there.
    msg = nl.nfnl_msg(4, 0, 2, 0, [nl.nla(nflog.NFULA_HWLEN, b"\0\0"), nl.nla(nflog.NFULA_HWHEADER, b"xx")],
                      flags=0)
    assert not {"raw.mac", "raw.mac_len", "raw.type"} & set(nflog.as_dict(nflog.decode_packet(msg)))
    # A repeated attribute: the last one wins (as libnfnetlink's table); unknown types are skipped.
    marks = [nl.nla(nflog.NFULA_MARK, b"\0\0\0\1"), nl.nla(99, b"zz"),
             nl.nla(nflog.NFULA_MARK | nl.NLA_F_NET_BYTEORDER, b"\0\0\0\2")]  # fmt: skip
    msg = nl.nfnl_msg(4, 0, 2, 0, marks, flags=0)
    assert nflog.as_dict(nflog.decode_packet(msg))["oob.mark"] == 2
    # Hardware address longer than the 8-byte field is cut to it.
    msg = nl.nfnl_msg(4, 0, 2, 0, [nl.nla(nflog.NFULA_HWADDR, b"\0\x14\0\0" + bytes(range(8)))], flags=0)
    got = nflog.as_dict(nflog.decode_packet(msg))
    assert got["raw.mac.addrlen"] == 20 and got["raw.mac.saddr"] == bytes(range(8))


SHORT = [(nflog.NFULA_PACKET_HDR, 2), (nflog.NFULA_MARK, 3), (nflog.NFULA_TIMESTAMP, 15),
         (nflog.NFULA_UID, 2), (nflog.NFULA_IFINDEX_INDEV, 0), (nflog.NFULA_HWLEN, 1),
         (nflog.NFULA_HWADDR, 11)]


@pytest.mark.parametrize("attr,size", SHORT)
def test_short_fixed_size_attributes_are_decode_errors(attr: int, size: int) -> None:
    msg = nl.nfnl_msg(4, 0, 2, 0, [nl.nla(attr, b"\1" * size)], flags=0)
    with pytest.raises(DecodeError):
        nflog.decode_packet(msg)
    batch = nflog.parse_buffer(msg + build_packet(), NOW)
    assert batch.malformed == 1 and len(batch.records) == 1 and batch.problem


def test_buffer_with_errors_acks_and_strangers() -> None:
    req = nflog.group_bind(5, seq=3)
    buf = (build_packet(prefix=b"a") + error_msg(1, req) + error_msg(0, req)
           + nl.nlmsg(nl.NLMSG_NOOP, 0, 0) + nl.nlmsg(0x101, 0, 0, b"\0" * 4) + done_msg())  # fmt: skip
    batch = nflog.parse_buffer(buf, NOW)
    assert (len(batch.records), batch.errors, batch.acks, batch.other, batch.malformed) == (1, [1], 1, 1, 0)
    bad_err = nl.nlmsg(nl.NLMSG_ERROR, 0, 0, b"\1")
    assert nflog.parse_buffer(bad_err + build_packet(), NOW).malformed == 1
    with pytest.raises(DecodeError):
        nflog.decode_packet(done_msg())
    with pytest.raises(DecodeError):
        nflog.decode_packet(b"\0" * 8)
    with pytest.raises(DecodeError):
        nflog.decode_packet(build_packet()[:-4])


def test_time_split() -> None:
    assert nflog.split_now(1795764131.999999) == (1795764131, 999999)
    assert nflog.split_now(1795764131.0) == (1795764131, 0)


def test_template_cache_is_bounded_and_compiling_is_budgeted() -> None:
    dec = nflog.Decoder(max_templates=8)
    for i in range(300):
        dec.parse_buffer(build_packet(prefix=b"r%03d" % i, indev=2, payload=b"x"), NOW)
    assert dec._ntemplates <= 8
    assert dec._compiles <= nflog._FREE_COMPILES + dec._hits // nflog._HITS_PER_COMPILE


# -- config requests


def test_config_builders_round_trip() -> None:
    p = nflog.parse_config
    assert p(nflog.pf_bind(socket.AF_INET6, 4)) == {"family": 10, "group": 0, "seq": 4, "flags": 5, "cmd": 3}
    assert p(nflog.pf_unbind(7))["cmd"] == nflog.NFULNL_CFG_CMD_PF_UNBIND
    assert p(nflog.group_bind(11, 9)) == {"family": 0, "group": 11, "seq": 9, "flags": 5, "cmd": 1}
    assert p(nflog.group_unbind(0xFFFF))["cmd"] == 2 and p(nflog.group_unbind(0xFFFF))["group"] == 0xFFFF
    assert p(nflog.set_mode(3, nflog.NFULNL_COPY_PACKET, 1500)) | {} == {
        "family": 0, "group": 3, "seq": 0, "flags": 5, "copy_range": 1500, "mode": 2}  # fmt: skip
    assert p(nflog.set_nlbufsiz(3, 65536))["nlbufsiz"] == 65536
    assert p(nflog.set_qthresh(3, 1))["qthresh"] == 1
    assert p(nflog.set_timeout(3, 100))["timeout"] == 100
    flags = nflog.NFULNL_CFG_F_SEQ | nflog.NFULNL_CFG_F_SEQ_GLOBAL | nflog.NFULNL_CFG_F_CONNTRACK
    assert p(nflog.set_flags(3, flags))["cfg_flags"] == 7
    # the exact bytes libnetfilter_log sends for nflog_bind_group(h, 11)
    want = "1c000000" "0104" "0500" "01000000" "00000000" "0000000b" "0500" "0100" "01000000"
    assert nflog.group_bind(11, 1).hex() == want
    with pytest.raises(DecodeError):
        p(build_packet())
    with pytest.raises(DecodeError):
        p(nflog.config_msg(1, [nl.nla(9, b"")]))


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFF))
def test_config_round_trip(group: int, value: int, seq: int, flags: int) -> None:
    assert nflog.parse_config(nflog.set_qthresh(group, value, seq))["qthresh"] == value
    assert nflog.parse_config(nflog.set_timeout(group, value, seq))["seq"] == seq
    assert nflog.parse_config(nflog.set_flags(group, flags, seq))["cfg_flags"] == flags
    assert nflog.parse_config(nflog.set_mode(group, 1, value & 0xFFFF, seq))["copy_range"] == value & 0xFFFF


if __name__ == "__main__" and "--regen" in sys.argv:
    regenerate_vectors()
