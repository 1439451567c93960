"""codec.netlink: framing, attributes, errors and builders, on the real captured buffers and fuzzed."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyulogd.codec import netlink as nl
from pyulogd.core.errors import DecodeError
from tests.builders.netlink import done_msg, error_msg

GOLDEN = Path(__file__).resolve().parents[2] / "../shared/golden/ulogd2-2.0.8"
VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "nflog"


def _hex(path: Path) -> bytes:
    return bytes.fromhex(path.read_text().replace("\n", ""))


def golden_dirs() -> list[Path]:
    if not GOLDEN.is_dir():
        return []
    return sorted(p for p in GOLDEN.glob("*/raw*") if (p / "index.jsonl").is_file())


def golden_buffers() -> list[tuple[str, bytes, dict[str, object]]]:
    out = []
    for d in golden_dirs():
        for line in (d / "index.jsonl").read_text().splitlines():
            meta = json.loads(line)
            out.append((f"{d.parent.name}/{d.name}/{meta['file']}", _hex(d / meta["file"]), meta))
    return out


needs_golden = pytest.mark.skipif(not golden_dirs(), reason="../shared/golden not available")


def vector_buffers() -> list[bytes]:
    return [_hex(p) for p in sorted(VECTORS.glob("*.hex"))]


@needs_golden
def test_split_matches_the_dumper_index() -> None:
    bufs = golden_buffers()
    assert len(bufs) > 100
    for name, buf, meta in bufs:
        msgs, problem = nl.split(buf)
        assert problem is None, name
        want = [(m["offset"], m["len"], m["type"], m["flags"], m["seq"], m["pid"]) for m in meta["msgs"]]  # type: ignore[attr-defined]
        assert msgs == want, name
        for off, ln, typ, *_ in msgs:
            if typ >= nl.NLMSG_MIN_TYPE:
                family, version, res_id = nl.nfgen(buf, off, ln)
                assert version == 0 and family in (2, 10), name
                if meta["source"] == "nflog":
                    assert res_id in (11, 99), name


@needs_golden
def test_attrs_match_the_dumper_index() -> None:
    names = {1: "PACKET_HDR", 3: "TIMESTAMP", 4: "IFINDEX_INDEV", 5: "IFINDEX_OUTDEV", 8: "HWADDR",
             9: "PAYLOAD", 10: "PREFIX", 11: "UID", 14: "GID", 15: "HWTYPE", 16: "HWHEADER",
             17: "HWLEN"}  # fmt: skip
    seen = 0
    for name, buf, meta in golden_buffers():
        if meta["source"] != "nflog":
            continue
        for off, ln, typ, *_ in nl.split(buf)[0]:
            m = next(x for x in meta["msgs"] if x["offset"] == off)  # type: ignore[attr-defined]
            if typ != 0x400:
                continue
            got = [names.get(t, str(t)) for t, _, _ in nl.attrs(buf, off + 20, off + ln)]
            assert got == m["attrs"], name
            table = nl.attr_table(buf, off + 20, off + ln)
            p, q = table[9]
            assert q - p == m["payload_len"]
            seen += 1
    assert seen > 300


def test_split_every_truncation_keeps_the_intact_messages() -> None:
    bufs = [b for _, b, _ in golden_buffers()[:40]] or vector_buffers()
    assert bufs
    for buf in bufs:
        full, problem = nl.split(buf)
        assert problem is None
        for cut in range(len(buf)):
            msgs, problem = nl.split(buf[:cut])
            intact = [m for m in full if m[0] + m[1] <= cut]
            assert msgs == intact
            rest = buf[intact[-1][0] + intact[-1][1] if intact else 0 : cut]
            assert (problem is None) == (len(rest) < 4 and not any(rest))  # up to 3 zero bytes: padding
            with pytest.raises(DecodeError) if problem else _nothing():
                assert list(nl.messages(buf[:cut])) == intact


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: object) -> None:
        return None


def test_one_bad_message_length_stops_the_split_after_the_good_ones() -> None:
    good = nl.nlmsg(0x400, 0, 1, b"\0" * 8)
    bad = struct.pack("=IHHII", 8, 0x400, 0, 2, 0) + b"\0" * 8  # nlmsg_len < header
    msgs, problem = nl.split(good + bad + good)
    assert len(msgs) == 1 and problem is not None and "nlmsg_len 8" in problem
    msgs, problem = nl.split(good + struct.pack("=IHHII", 999, 0x400, 0, 2, 0))
    assert len(msgs) == 1 and problem is not None and "past the buffer" in problem


def test_trailing_padding_is_not_an_error_but_junk_is() -> None:
    m = nl.nlmsg(0x400, 0, 1, b"abc")  # 19 bytes + 1 pad
    assert len(m) == 20 and nl.split(m) == ([(0, 19, 0x400, 0, 1, 0)], None)
    assert nl.split(m + b"\0\0\0")[1] is None
    assert nl.split(m + b"\0\1")[1] is not None
    assert nl.split(m + b"\0" * 4)[1] is not None


def test_attrs_errors_and_flags() -> None:
    body = nl.nla(1, b"ab") + nl.nla(2 | nl.NLA_F_NESTED, b"xyzw") + nl.nla(3, b"")
    got = [(t, body[p:q]) for t, p, q in nl.attrs(body, 0, len(body))]
    assert got == [(1, b"ab"), (2, b"xyzw"), (3, b"")]
    assert list(nl.attrs(body + b"\0\0\0", 0, len(body) + 3))[-1][0] == 3  # <4 trailing bytes ignored
    with pytest.raises(DecodeError):
        list(nl.attrs(struct.pack("=HH", 3, 1), 0, 4))  # length below the header
    with pytest.raises(DecodeError):
        list(nl.attrs(struct.pack("=HH", 12, 1) + b"abcd", 0, 8))  # past the end
    assert nl.attr_table(nl.nla(5, b"a") + nl.nla(5, b"b"), 0, 16)[5] == (12, 13)  # last one wins


def test_error_messages() -> None:
    req = nl.nfnl_msg(nl.NFNL_SUBSYS_ULOG, 1, 0, 11, [nl.nla(1, b"\1")], seq=77)
    ack = error_msg(0, req)
    assert nl.parse_error(ack, 0, len(ack)) == (0, 77)
    err = error_msg(1, req)  # EPERM
    (off, ln, typ, _flags, seq, _pid), = nl.split(err)[0]
    assert typ == nl.NLMSG_ERROR and seq == 77 and nl.parse_error(err, off, ln) == (1, 77)
    short = nl.nlmsg(nl.NLMSG_ERROR, 0, 5, struct.pack("=i", -2))
    assert nl.parse_error(short, 0, 20) == (2, None)
    with pytest.raises(DecodeError):
        nl.parse_error(nl.nlmsg(nl.NLMSG_ERROR, 0, 5), 0, 16)
    with pytest.raises(DecodeError):
        nl.parse_error(nl.nlmsg(nl.NLMSG_ERROR, 0, 5, struct.pack("=i", 3)), 0, 20)
    done = done_msg()
    assert nl.split(done)[0] == [(0, 20, nl.NLMSG_DONE, nl.NLM_F_MULTI, 0, 0)]
    with pytest.raises(DecodeError):
        nl.nfgen(nl.nlmsg(0x400, 0, 0), 0, 16)


def test_builders() -> None:
    assert nl.nla(1, b"abcde") == b"\x09\x00\x01\x00abcde\0\0\0"
    msg = nl.nfnl_msg(4, 1, 10, 0x1234, [nl.nla(1, b"\3")], seq=9, flags=5, pid=3)
    assert msg[:16] == struct.pack("=IHHII", 28, 0x401, 5, 9, 3) and len(msg) == 28
    assert msg[16:20] == b"\x0a\x00\x12\x34"
    with pytest.raises(ValueError):
        nl.nla(1, b"x" * 70000)
    assert nl.align(5) == 8 and nl.subsys(0x401) == 4 and nl.msg_type(4, 1) == 0x401


attr_lists = st.lists(st.tuples(st.integers(0, nl.NLA_TYPE_MASK), st.binary(max_size=40)), max_size=12)


@given(attr_lists, st.integers(0, 0xFFFFFFFF), st.integers(0, 255), st.integers(0, 0xFFFF))
def test_round_trip(attrs: list[tuple[int, bytes]], seq: int, family: int, res_id: int) -> None:
    msg = nl.nfnl_msg(1, 2, family, res_id, [nl.nla(t, p) for t, p in attrs], seq=seq)
    (off, ln, typ, flags, mseq, pid), = nl.split(msg)[0]
    assert (typ, flags, mseq, pid) == (0x102, nl.NLM_F_REQUEST | nl.NLM_F_ACK, seq, 0)
    assert nl.nfgen(msg, off, ln) == (family, 0, res_id)
    assert [(t, msg[p:q]) for t, p, q in nl.attrs(msg, 20, ln)] == attrs


@settings(max_examples=400)
@given(st.binary(max_size=300))
def test_random_bytes_only_decode_errors(data: bytes) -> None:
    msgs, _ = nl.split(data)  # never raises
    try:
        list(nl.messages(data))
    except DecodeError:
        pass
    for off, ln, *_ in msgs:
        for fn, args in ((nl.attrs, (data, off + 16, off + ln)), (nl.parse_error, (data, off, ln)),
                         (nl.nfgen, (data, off, ln))):  # fmt: skip
            try:
                r = fn(*args)
                if fn is nl.attrs:
                    list(r)
            except DecodeError:
                pass
