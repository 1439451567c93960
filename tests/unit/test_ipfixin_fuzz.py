"""Hypothesis on IPFIXIN's codec: random bytes and mutated real messages never raise, every
message has exactly one outcome (decoded, dropped as malformed, unknown version, refused by
a limit), records are well-typed value lists, memory per exporter stays within its bounds;
and random templates (any order, reduced-size integers, variable-length fields, several
records per set, padding) decode to what was encoded. The long run (10^6 inputs) is
bench/fuzz/fuzz_ipfixin.py."""

from __future__ import annotations

import socket
import struct
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyulogd.codec.ipfixin import keys as K
from pyulogd.codec.ipfixin.collector import Collector
from pyulogd.core.keys import KeyType

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "ipfix"
MESSAGES = [bytes.fromhex(line.split()[3]) for p in sorted(VECTORS.glob("**/*.hexlog"))
            for line in p.read_text().splitlines()]  # fmt: skip
OUTCOMES = ("messages", "malformed", "bad_version", "exporter_limit", "domain_limit")
TYPES = {k.name: k.type for k in K.OUTPUT_KEYS}
INT_TYPES = {KeyType.UINT8: 8, KeyType.UINT16: 16, KeyType.UINT32: 32, KeyType.UINT64: 64, KeyType.BOOL: 1}


def check_record(rec: list[Any]) -> None:
    assert len(rec) == K.NVALUES and rec[0] is None
    for name, i in K.IDX.items():
        v = rec[i]
        if v is None:
            continue
        t = TYPES[name]
        if t in INT_TYPES:
            assert isinstance(v, int) and 0 <= v < (1 << INT_TYPES[t]), (name, v)
        elif t == KeyType.IPADDR:
            assert isinstance(v, bytes) and len(v) in (4, 16), (name, v)
        elif t == KeyType.STRING:
            assert isinstance(v, str), (name, v)
        elif t == KeyType.MAP:
            assert isinstance(v, dict) and all(isinstance(k, str) for k in v), (name, v)


def feed_all(c: Collector, items: list[tuple[bytes, str, int]]) -> None:
    for n, (data, addr, port) in enumerate(items):
        before = sum(c.counts[o] for o in OUTCOMES)
        for rec in c.feed(data, addr, port, float(n)):
            check_record(rec)
        assert sum(c.counts[o] for o in OUTCOMES) == before + 1, data.hex()
    for exp in c.exporters.values():
        assert 0 <= exp.ntemplates <= c.max_templates
        assert exp.ntemplates == sum(s.templates() for s in exp.sessions.values())
        assert 0 <= exp.held_bytes <= c.hold_bytes and exp.held_bytes == sum(len(h.body) for h in exp.held)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=10))
def test_random_bytes(datas: list[bytes]) -> None:
    c = Collector()
    feed_all(c, [(d, "192.0.2.1", 1) for d in datas])
    # The same behind each version's header, so the parsers get past it.
    for version in (10, 9, 5):
        c = Collector(udp=version != 10 or len(datas) % 2 == 0)
        feed_all(c, [(struct.pack("!H", version) + d, "192.0.2.1", 1) for d in datas])


def mutate(data: bytes, ops: list[tuple[int, int, int]]) -> bytes:
    b = bytearray(data)
    for kind, pos, val in ops:
        if not b:
            break
        p = pos % len(b)
        if kind == 0:
            b[p] ^= 1 << (val % 8)
        elif kind == 1:
            b[p] = val & 0xFF
        elif kind == 2:
            del b[p : p + 1 + val % 8]
        elif kind == 3:
            b[p:p] = bytes([val & 0xFF]) * (1 + val % 5)
        elif kind == 4:
            del b[p:]
        else:  # a 16-bit length or count field set to something else
            b[p : p + 2] = struct.pack("!H", val & 0xFFFF)
    return bytes(b)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(MESSAGES) - 1),
                          st.lists(st.tuples(st.integers(0, 5), st.integers(0, 1 << 16), st.integers(0, 1 << 16)),
                                   max_size=4)), max_size=30),
       st.integers(1, 8), st.integers(0, 400), st.booleans())  # fmt: skip
def test_mutated_real_messages(picks: list[tuple[int, list[Any]]], max_templates: int, hold: int, udp: bool) -> None:
    c = Collector(max_templates=max_templates, hold_bytes=hold, udp=udp, emit_options=True)
    items = [(mutate(MESSAGES[i], ops), "192.0.2.1", 1 + i % 3) for i, ops in picks]
    feed_all(c, items)
    c.expire(1e9)
    feed_all(c, items[:3])


# -- random templates decode to what they encode

POOL = [  # (pen, ie, key or extra name, kind)
    (0, 8, "orig.ip.saddr", "a4"), (0, 12, "orig.ip.daddr", "a4"), (0, 7, "orig.l4.sport", "u16"),
    (0, 11, "orig.l4.dport", "u16"), (0, 4, "orig.ip.protocol", "u8"), (0, 2, "orig.raw.pktcount", "u64"),
    (0, 1, "orig.raw.pktlen", "u64"), (0, 5, "ipClassOfService", "u8"), (0, 31, "flowLabelIPv6", "u32"),
    (0, 15, "ipNextHopIPv4Address", "a4s"), (0, 83, "interfaceDescription", "str"),
    (9999, 7, "9999.7", "hex"), (0, 94, "applicationDescription", "str"),
]  # fmt: skip


@st.composite
def templates(draw: Any) -> tuple[list[tuple[int, int, int, str, str]], list[list[Any]]]:
    picked = draw(st.lists(st.sampled_from(POOL), min_size=1, max_size=len(POOL), unique=True))
    fields = []
    for pen, ie, name, kind in picked:
        if kind in ("u8", "u16", "u32", "u64"):
            top = {"u8": 1, "u16": 2, "u32": 4, "u64": 8}[kind]
            length = draw(st.sampled_from([n for n in (1, 2, 3, 4, 5, 8) if n <= top]))  # reduced sizes
        elif kind in ("a4", "a4s"):
            length = 4
        else:
            length = draw(st.sampled_from([65535, 3, 10]))
        fields.append((pen, ie, length, name, kind))
    records = []
    for _ in range(draw(st.integers(1, 6))):
        rec = []
        for _pen, _ie, length, _name, kind in fields:
            if kind.startswith("u"):
                rec.append(draw(st.integers(0, (1 << (8 * min(length, 8))) - 1)))
            elif kind.startswith("a4"):
                rec.append(draw(st.binary(min_size=4, max_size=4)))
            elif kind == "str":
                n = length if length != 65535 else draw(st.integers(0, 300))
                rec.append(draw(st.text(st.characters(min_codepoint=1, max_codepoint=0x7E), min_size=n, max_size=n)))
            else:
                n = length if length != 65535 else draw(st.integers(0, 20))
                rec.append(draw(st.binary(min_size=n, max_size=n)))
        records.append(rec)
    return fields, records


def encode(length: int, kind: str, value: Any) -> bytes:
    if kind.startswith("u"):
        return int(value).to_bytes(length, "big")
    raw = value.encode() if isinstance(value, str) else bytes(value)
    if length != 65535:
        return raw
    return (bytes([len(raw)]) if len(raw) < 255 else b"\xff" + struct.pack("!H", len(raw))) + raw


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(templates(), st.integers(0, 3))
def test_random_templates_round_trip(tmpl: tuple[list[Any], list[list[Any]]], pad: int) -> None:
    fields, records = tmpl
    spec = b"".join(struct.pack("!HHI", ie | 0x8000, n, pen) if pen else struct.pack("!HH", ie, n)
                    for pen, ie, n, _name, _kind in fields)  # fmt: skip
    body = b"".join(encode(n, kind, v) for rec in records
                    for (_p, _i, n, _name, kind), v in zip(fields, rec, strict=True))  # fmt: skip
    min_len = sum(1 if n == 65535 else n for _p, _i, n, _name, _k in fields)
    body += bytes(min(pad, min_len - 1))
    sets = [(2, struct.pack("!HH", 300, len(fields)) + spec), (300, body)]
    msg_body = b"".join(struct.pack("!HH", sid, len(b) + 4) + b for sid, b in sets)
    msg = struct.pack("!HHIII", 10, 16 + len(msg_body), 1_800_000_000, 0, 1) + msg_body
    got = Collector().feed(msg, "192.0.2.1", 1, 0.0)
    assert len(got) == len(records)
    for rec, values in zip(got, records, strict=True):
        check_record(rec)
        extra = rec[K.I_EXTRA]
        for (_pen, _ie, _n, name, kind), v in zip(fields, values, strict=True):
            want: Any = v
            if kind == "a4s":
                want = socket.inet_ntoa(v)
            elif kind == "hex":
                want = v.hex()
            if name in K.IDX:
                assert rec[K.IDX[name]] == want, name
            else:
                assert extra[name] == want, name
