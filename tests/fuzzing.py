"""Seeded fuzz inputs and the checks they must pass, for the decoders and the config reader.

One module for both runners: ``bench/fuzz/*.py`` (10^6 inputs each, ``--seed``) and the short
hypothesis versions in ``tests/unit/test_fuzz_*.py`` (hypothesis draws the seed). Everything is
deterministic for a seed and needs nothing but the standard library and pyulogd.

Inputs are real bytes (the golden ulogd2 buffers in ``tests/vectors``, ``tests/cases/_data``,
``bench/data`` and, when present, ``../shared/golden``; messages made with the codecs' own
builders to reach every attribute) mutated the ways that break decoders: bytes overwritten
with edge values, attribute lengths and types changed, cuts and extensions with the outer
lengths fixed up or not, messages spliced; plus random bytes and random attribute trees.

A check returns the outcome (``accepted``, ``rejected``: the decoder said DecodeError or
counted it malformed, ``other``: nothing to decode) and raises anything else: a decoder that
lets another exception out, a template that disagrees with the walker, XML that cannot
render a record its decoder accepted, a config that fails with anything but ConfigError.
"""

from __future__ import annotations

import os
import random
import struct
import zlib
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

from pyulogd.codec import netlink as nl
from pyulogd.codec import nfacct, nfct, nfct_describe, nflog, nftrace, nfttrack, unixsock
from pyulogd.codec.nftruleset import Ruleset
from pyulogd.core import registry
from pyulogd.core.clock import FakeClock
from pyulogd.core.config import parse_text
from pyulogd.core.context import Context
from pyulogd.core.errors import ConfigError, DecodeError
from pyulogd.core.keys import AUDIT_ACTIONS
from pyulogd.core.log import FATAL, Logger
from pyulogd.core.plugin import OptionType, Plugin
from pyulogd.core.stats import Stats
from pyulogd.daemon.service import Service
from pyulogd.io.loop import Loop
from pyulogd.plugins.outputs.xml import flow_xml, packet_xml, sum_xml
from tests.builders.netlink import done_msg, error_msg
from tests.builders.nfacct import counter_msg
from tests.builders.nfct import Tuple, build_ct
from tests.builders.nflog import build_packet

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT.parent / "shared" / "golden" / "ulogd2-2.0.8"
NOW = 1795764190.25
WHEN = "T"

# -- seeds


def _hex_chunks(path: Path) -> list[bytes]:
    """Blank-line separated hex blocks, ``#`` comments (tests/cases/_data)."""
    out: list[bytes] = []
    cur: list[str] = []
    for line in path.read_text().splitlines() + [""]:
        s = line.strip()
        if s.startswith("#") or s.startswith("@"):
            continue
        if s:
            cur.append(s)
        elif cur:
            out.append(bytes.fromhex("".join(cur)))
            cur.clear()
    return out


def _hex_lines(path: Path) -> list[bytes]:
    """One buffer per whitespace-separated word, ``#`` comment lines (tests/vectors/nfct, bench/data)."""
    return [bytes.fromhex(w) for line in path.read_text().splitlines() if not line.lstrip().startswith("#")
            for w in line.split()]  # fmt: skip


def _kinds(buf: bytes) -> set[int]:
    """The nfnetlink subsystems of a buffer's messages."""
    msgs, _ = nl.split(buf)
    return {nl.subsys(typ) for _off, _ln, typ, _f, _s, _p in msgs if typ >= nl.NLMSG_MIN_TYPE}


def _tcp(v6: bool = False, proto: int = 6) -> Tuple:
    if v6:
        a, b = bytes.fromhex("fd000201" + "00" * 11 + "01"), bytes.fromhex("00" * 10 + "ffff0a010203")
    else:
        a, b = bytes([10, 201, 0, 1]), bytes([10, 201, 0, 2])
    ports = proto in nfct.PORT_PROTOS or proto == 47
    return Tuple(a, b, proto, 40001 if ports else None, 7001 if ports else None)


def _nest(t: int, *parts: bytes) -> bytes:
    return nl.nla(t | nl.NLA_F_NESTED, b"".join(parts))


def _built_ct() -> list[bytes]:
    """Conntrack messages with every attribute the decoder or XML reads."""
    u32 = struct.Struct("!I").pack
    state = [_nest(nfct.CTA_PROTOINFO, _nest(k, nl.nla(1, bytes([3])), nl.nla(2, b"\x07"))) for k in (1, 2, 3)]
    extras = [
        [], state[:1], state[1:2], state[2:],
        [nl.nla(nfct.CTA_USE, u32(2)), nl.nla(nfct.CTA_SECMARK, u32(9))],
        [_nest(nfct.CTA_SECCTX, nl.nla(nfct.CTA_SECCTX_NAME, b"system_u:object_r:x:s0\0"))],
        [_nest(nfct.CTA_HELP, nl.nla(nfct.CTA_HELP_NAME, b"ftp\0")), nl.nla(nfct.CTA_LABELS, bytes(16))],
    ]  # fmt: skip
    out = []
    for i, extra in enumerate(extras):
        for proto in (6, 17, 132, 33, 47, 50):
            out.append(build_ct((nfct.NEW, nfct.UPDATE, nfct.DESTROY)[i % 3], _tcp(i % 2 == 1, proto),
                                     counters=(1, 60, 2, 120) if i % 2 else None, counters32=i == 3,
                                     timestamp=(10**18, 10**18 + 5 * 10**9) if i % 3 == 2 else None,
                                     event_time=10**18 if i == 4 else None, mark=i or None,
                                     zone=i if i > 3 else None, extra=extra))  # fmt: skip
    icmp = Tuple(bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), 1, icmp_type=8, icmp_code=0, icmp_id=7)
    icmp6 = Tuple(bytes(15) + b"\1", bytes(15) + b"\2", 58, icmp_type=128, icmp_code=0, icmp_id=7, zone=1)
    out += [build_ct(nfct.NEW, icmp), build_ct(nfct.DESTROY, icmp6, counters=(1, 2, 3, 4))]
    dump = b"".join(build_ct(nfct.UPDATE, _tcp(), flags=nl.NLM_F_MULTI, seq=5) for _ in range(2))
    out.append(dump + done_msg(5))
    out.append(error_msg(2, nfct.dump_request(9)) + error_msg(0, nfct.dump_request(9)))
    return out


def _built_nflog(ct: bytes) -> list[bytes]:
    pkt = bytes.fromhex("4500001c000100004011f9c80ac900010ac900029c4b1b5b00080000")
    mac = bytes.fromhex("02000ac90001")
    return [
        build_packet(prefix=b"ACCEPT ", indev=2, hwaddr=mac, hwheader=mac * 2 + b"\x08\x00",
                           timestamp=(1795764137, 5), payload=pkt, mark=1, uid=0, gid=0, seq=1, seq_global=2),
        build_packet(prefix=b"x", outdev=3, hook=3, payload=pkt, ct=ct),
        build_packet(family=10, hw_protocol=0x86DD, payload=bytes(40), hwaddr=bytes(range(1, 9))),
        build_packet(hw_protocol=None, payload=b""),
        build_packet(prefix=b"a" * 60, payload=pkt) + done_msg(),
    ]  # fmt: skip


def _built_nfacct() -> list[bytes]:
    return [
        counter_msg("http", 10, 1500, seq=7) + counter_msg("dns", 3, 210, seq=7, use=None)
        + done_msg(7),
        counter_msg("q", 2**64 - 1, 0, seq=7, flags=1, quota=10),
        error_msg(1, nfacct.dump_request(7, False)),
    ]  # fmt: skip


def _built_unixsock() -> list[bytes]:
    pkt = bytes.fromhex("4500001c000100004011f9c80ac900010ac900029c4b1b5b00080000")
    return [
        unixsock.encode(pkt, prefix="nuauth ", indev="eth0", outdev="eth1", time_sec=1795764137, user="alice",
                        user_id=1000, os_name="Linux", os_release="6.1", os_version="#1", app_name="ssh",
                        state=2, extra=((999, b"zz"),)),
        unixsock.encode(bytes([0x60]) + bytes(39)),
        unixsock.encode(b""),
    ]  # fmt: skip


@cache
def seeds() -> dict[str, tuple[bytes, ...]]:
    """Seed inputs by decoder: ``nfct``, ``nflog``, ``nfacct``, ``unixsock``."""
    netlink: list[bytes] = []
    for p in sorted((ROOT / "tests/vectors/nfct").glob("*.buffers.hex")):
        netlink += _hex_lines(p)
    netlink += _hex_lines(ROOT / "bench/data/ct-events.hex")
    for p in sorted((ROOT / "tests/vectors/nflog").glob("*.hex")):
        netlink.append(bytes.fromhex(p.read_text().replace("\n", "")))
    for p in sorted((ROOT / "tests/cases/_data").glob("*.hex")):
        if "unixsock" not in p.name:
            netlink += _hex_chunks(p)
    if GOLDEN.is_dir():
        for p in sorted(GOLDEN.glob("*/raw*/*.hex")):
            try:
                netlink.append(bytes.fromhex(p.read_text().replace("\n", "")))
            except ValueError:
                continue
    ct = _built_ct()
    out: dict[str, list[bytes]] = {"nfct": ct[:], "nflog": _built_nflog(ct[3][20:]), "nfacct": _built_nfacct()}
    by_subsys = {nl.NFNL_SUBSYS_CTNETLINK: "nfct", nl.NFNL_SUBSYS_ULOG: "nflog", nl.NFNL_SUBSYS_ACCT: "nfacct"}
    for buf in dict.fromkeys(netlink):  # in order, once each
        for s in _kinds(buf):
            if s in by_subsys:
                out[by_subsys[s]].append(buf)
    out["unixsock"] = _built_unixsock() + _hex_chunks(ROOT / "tests/cases/_data/unixsock-stream.hex")
    out["nftrace"] = _hex_lines(ROOT / "tests/vectors/nftrace/loopback.hex")
    return {k: tuple(v) for k, v in out.items()}


# -- mutations

_EDGE = (0, 1, 2, 3, 4, 5, 7, 8, 0x0F, 0x10, 0x14, 0x3F, 0x40, 0x7F, 0x80, 0x81, 0xC0, 0xFE, 0xFF)
_EDGE16 = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 16, 20, 0x7FFF, 0x8000, 0xFFFC, 0xFFFF)


def _attr_headers(buf: bytes, start: int, end: int, depth: int = 0) -> list[int]:
    """Offsets of the attribute headers of a netlink message body, nests included (as far as
    they frame)."""
    out: list[int] = []
    a = start
    while a + 4 <= end:
        al = buf[a] | buf[a + 1] << 8
        if al < 4 or a + al > end:
            break
        out.append(a)
        if depth < 3 and al > 8:
            out += _attr_headers(buf, a + 4, a + al, depth + 1)
        a += (al + 3) & ~3
    return out


def _netlink_headers(buf: bytes) -> tuple[list[int], list[int]]:
    """(message offsets, attribute header offsets) of a buffer."""
    msgs, _ = nl.split(buf)
    attrs: list[int] = []
    for off, ln, *_rest in msgs:
        attrs += _attr_headers(buf, off + 20, off + ln)
    return [m[0] for m in msgs], attrs


def _fix_len(buf: bytearray, off: int = 0) -> None:
    if len(buf) - off >= 4:
        struct.pack_into("=I", buf, off, len(buf) - off)


def mutate_netlink(rng: random.Random, data: bytes, pool: tuple[bytes, ...]) -> bytes:
    """One to four mutations of a netlink buffer."""
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4))):
        op = rng.randrange(12)
        n = len(buf)
        if op <= 2 and n:  # overwrite bytes: anywhere, with edge or random values
            for _ in range(rng.randint(1, 4)):
                buf[rng.randrange(n)] = rng.choice(_EDGE) if rng.random() < 0.6 else rng.randrange(256)
        elif op <= 5:  # an attribute header: its length or type
            msgs, attrs = _netlink_headers(bytes(buf))
            if not attrs:
                continue
            a = rng.choice(attrs)
            if rng.random() < 0.7:
                al = buf[a] | buf[a + 1] << 8
                new = rng.choice((al + rng.randint(-8, 8), rng.choice(_EDGE16)))
                struct.pack_into("=H", buf, a, new & 0xFFFF)
            else:
                at = buf[a + 2] | buf[a + 3] << 8
                new = rng.choice((at ^ nl.NLA_F_NESTED, rng.randrange(32) | (at & 0xC000),
                                  rng.randrange(1 << 16)))  # fmt: skip
                struct.pack_into("=H", buf, a + 2, new)
        elif op == 6 and n:  # cut, the message length fixed up or not
            buf = buf[: rng.randrange(n)]
            if rng.random() < 0.5:
                _fix_len(buf)
        elif op == 7:  # grow: random bytes or a copy of some attribute bytes
            if rng.random() < 0.5:
                extra = rng.randbytes(rng.randint(1, 24))
            else:
                extra = bytes(buf[rng.randrange(n + 1) :][:24])
            pos = rng.randrange(len(buf) + 1)
            buf[pos:pos] = extra
            if rng.random() < 0.6:
                _fix_len(buf)
        elif op == 8 and n > 4:  # delete a span
            i = rng.randrange(n)
            del buf[i : i + rng.randint(1, 16)]
            if rng.random() < 0.6:
                _fix_len(buf)
        elif op == 9:  # splice another seed before or after
            other = rng.choice(pool)
            buf = buf + bytearray(other) if rng.random() < 0.5 else bytearray(other) + buf
        elif op == 10:  # a message header field: length, type, flags
            msgs, _ = _netlink_headers(bytes(buf))
            if not msgs:
                continue
            m = rng.choice(msgs)
            field = rng.choice((0, 4, 6))
            if field == 0:
                ln = rng.choice((0, 15, 16, 19, 20, len(buf) - m + rng.randint(-4, 4)))
                struct.pack_into("=I", buf, m, ln & 0xFFFFFFFF)
            elif field == 4:
                typ = rng.choice((1, 2, 3, 0x100, 0x102, 0x103, 0x400, 0x700, rng.randrange(1 << 16)))
                struct.pack_into("=H", buf, m + 4, typ)
            else:
                flags = rng.choice((0, 2, 0x10, 0x200, 0x400, 0x600, rng.randrange(1 << 16)))
                struct.pack_into("=H", buf, m + 6, flags)
        else:  # a random 4-byte-aligned word
            if n >= 4:
                i = rng.randrange(n - 3) & ~3
                buf[i : i + 4] = rng.randbytes(4)
    return bytes(buf)


def random_attrs(rng: random.Random, depth: int = 0, budget: int = 12) -> bytes:
    """A random, mostly well-framed attribute tree (types the decoders know appear often)."""
    out = b""
    for _ in range(rng.randint(0, budget)):
        at = rng.choice((1, 2, 3, 4, 7, 8, 9, 10, 12, 18, 19, 20, 27, rng.randrange(64)))
        if depth < 3 and rng.random() < 0.35:
            payload = random_attrs(rng, depth + 1, budget // 2)
            at |= nl.NLA_F_NESTED
        else:
            payload = rng.randbytes(rng.choice((0, 1, 2, 3, 4, 8, 16, rng.randrange(40))))
        attr = bytearray(nl.nla(at, payload))
        if rng.random() < 0.05:  # a broken length now and then
            struct.pack_into("=H", attr, 0, rng.choice(_EDGE16))
        out += bytes(attr)
    return out


def random_netlink(rng: random.Random, subsys: int) -> bytes:
    """A netfilter message of ``subsys`` with a random body, or plain random bytes."""
    if rng.random() < 0.2:
        return rng.randbytes(rng.randrange(200))
    msgtype = rng.choice((0, 0, 1, 2, 3) if subsys != nftrace.NFNL_SUBSYS_NFTABLES else (17, 17, 6, 15))
    flags = rng.choice((0, 0x2, 0x200, 0x600, 0x10))
    family = rng.choice((2, 10, 0, 7))
    body = random_attrs(rng)
    return nl.nfnl_msg(subsys, msgtype, family, rng.randrange(1 << 16), [body], rng.randrange(16), flags)


_SUBSYS = {"nfct": nl.NFNL_SUBSYS_CTNETLINK, "nflog": nl.NFNL_SUBSYS_ULOG, "nfacct": nl.NFNL_SUBSYS_ACCT,
           "nftrace": nftrace.NFNL_SUBSYS_NFTABLES}


def netlink_inputs(kind: str, seed: int) -> Iterator[bytes]:
    """An endless, seeded stream of inputs for the ``kind`` decoder."""
    rng = random.Random(f"{kind}:{seed}")
    pool = seeds()[kind]
    subsys = _SUBSYS[kind]
    while True:
        r = rng.random()
        if r < 0.04:
            yield rng.choice(pool)
        elif r < 0.16:
            yield random_netlink(rng, subsys)
        else:
            yield mutate_netlink(rng, rng.choice(pool), pool)


def mutate_unixsock(rng: random.Random, data: bytes, pool: tuple[bytes, ...]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3))):
        op = rng.randrange(7)
        n = len(buf)
        if op <= 1 and n:
            for _ in range(rng.randint(1, 4)):
                buf[rng.randrange(n)] = rng.choice(_EDGE) if rng.random() < 0.6 else rng.randrange(256)
        elif op == 2 and n >= 12:  # total_size or payload_length
            off = rng.choice((4, 10))
            size = rng.choice((0, 1, 6, 7, 8, n - 4, n - 3, n + 4, 0xFFFF, rng.randrange(1 << 16)))
            struct.pack_into(">H", buf, off, size & 0xFFFF)
        elif op == 3 and n > 20:  # an option length
            i = rng.randrange(12, n - 8) & ~7
            struct.pack_into(">I", buf, i + 4, rng.choice((0, 1, 3, 4, 8, 0xFFFFFFFF, rng.randrange(64))))
        elif op == 4 and n:
            buf = buf[: rng.randrange(n)]
        elif op == 5:
            buf += rng.choice(pool) if rng.random() < 0.7 else rng.randbytes(rng.randrange(32))
        else:
            pos = rng.randrange(n + 1)
            buf[pos:pos] = rng.randbytes(rng.randint(1, 16))
    return bytes(buf)


def unixsock_inputs(seed: int) -> Iterator[bytes]:
    rng = random.Random(f"unixsock:{seed}")
    pool = seeds()["unixsock"]
    while True:
        r = rng.random()
        if r < 0.05:
            yield rng.choice(pool)
        elif r < 0.12:
            head = unixsock.HEADER.pack(unixsock.MARKER, rng.randrange(1 << 16), 0, rng.randrange(1 << 16))
            yield head + rng.randbytes(rng.randrange(64))
        else:
            yield mutate_unixsock(rng, rng.choice(pool), pool)


# -- checks: each returns "accepted", "rejected" or "other", and raises on a defect


class Defect(AssertionError):
    """An input broke a promise other than "only DecodeError/ConfigError"."""


def _batch_view(b: Any) -> tuple[Any, ...]:
    return (b.records, b.malformed, b.errors, b.acks, b.other)


class NfctChecker:
    """NFCT: templates and walker agree (or both refuse), ``decode`` raises only DecodeError,
    and XML renders whole every entry the decoder accepted (one definition of well-formed)."""

    def __init__(self) -> None:
        self.dec = nfct.Decoder()
        for s in seeds()["nfct"]:
            self.dec.parse_buffer(s, NOW)  # learn the real layouts

    def __call__(self, data: bytes) -> str:
        slow = nfct.parse_buffer(data, NOW)
        fast = self.dec.parse_buffer(data, NOW)
        if _batch_view(fast) + (fast.done, fast.interrupted) != _batch_view(slow) + (slow.done, slow.interrupted):
            raise Defect(f"templates and walker differ: {_batch_view(fast)} != {_batch_view(slow)}")
        one = self.dec.parse_one(data, NOW)
        if one is not None and [one] != slow.records:
            raise Defect("parse_one differs from the walker")
        try:
            single = nfct.decode(data, NOW)
        except DecodeError:
            single = None
        if single is not None:
            nfct_describe.describe(data)  # anything decode accepts, describe reads
        for rec in slow.records:
            problems: list[str] = []
            flow_xml(rec[nfct.I_CT], NOW, WHEN, problems)
            if problems:
                raise Defect(f"XML cannot render an entry NFCT accepted: {problems[0]}")
        if slow.malformed:
            return "rejected"
        return "accepted" if slow.records else "other"


class NflogChecker:
    """NFLOG: templates and the generic parser agree; XML renders whole the ``raw`` of every
    packet accepted and never fails on its (unchecked) ``ct``."""

    def __init__(self) -> None:
        self.dec = nflog.Decoder()
        for s in seeds()["nflog"]:
            self.dec.parse_buffer(s, NOW)

    def __call__(self, data: bytes) -> str:
        slow = nflog.parse_buffer(data, NOW)
        fast = self.dec.parse_buffer(data, NOW)
        if _batch_view(fast) != _batch_view(slow):
            raise Defect(f"templates and generic parser differ: {_batch_view(fast)} != {_batch_view(slow)}")
        try:
            nflog.decode_packet(data, NOW)
        except DecodeError:
            pass
        for rec in slow.records:
            problems: list[str] = []
            packet_xml(rec[nflog.IDX["raw"]], WHEN, problems)
            if problems:
                raise Defect(f"XML cannot render a packet NFLOG accepted: {problems[0]}")
            ct = rec[nflog.IDX["ct"]]
            if ct is not None:
                flow_xml(ct, NOW, WHEN, [])
        if slow.malformed:
            return "rejected"
        return "accepted" if slow.records else "other"


def check_nfacct(data: bytes) -> str:
    """NFACCT: ``parse_buffer`` never raises, ``parse_counter`` only DecodeError, XML renders
    whole every counter accepted."""
    seq = struct.unpack_from("=I", data, 8)[0] if len(data) >= 16 else None
    batch = nfacct.parse_buffer(data, seq)
    for c in batch.counters:
        problems: list[str] = []
        sum_xml(c.raw, WHEN, problems)
        if problems:
            raise Defect(f"XML cannot render a counter NFACCT accepted: {problems[0]}")
    msgs, _ = nl.split(data)
    for off, ln, *_rest in msgs:
        try:
            nfacct.parse_counter(data, off, ln)
        except DecodeError:
            pass
    if batch.malformed:
        return "rejected"
    return "accepted" if batch.counters else "other"


class NftraceChecker:
    """NFTRACE: ``parse_buffer`` never raises and every event it returns is whole (named, a
    32-bit id); ``parse_trace`` raises only DecodeError; the events go through a Tracker (small
    state, the captured ruleset) whose records hold one value per key and an action of the
    closed list."""

    def __init__(self) -> None:
        vec = ROOT / "tests/vectors/nftrace"
        rs = Ruleset.parse((vec / "ruleset.json").read_text(), ("inet", "tmark"))
        rs.add_text((vec / "ruleset.txt").read_text())
        self.tracker = nfttrack.Tracker(own=("inet", "tmark"), max_open=8, ruleset=rs)
        self.n = 0

    def __call__(self, data: bytes) -> str:
        batch = nftrace.parse_buffer(data)
        for ev in batch.events:
            if not (isinstance(ev.table, str) and isinstance(ev.chain, str) and 0 <= ev.id < 2**32):
                raise Defect(f"NFTRACE returned an event that is not whole: {ev!r}")
        msgs, _ = nl.split(data)
        for off, ln, *_rest in msgs:
            try:
                nftrace.parse_trace(data, off, off + ln)
            except DecodeError:
                pass
        self.n += 1
        recs = self.tracker.add(batch.events, float(self.n), float(self.n))
        if self.n % 64 == 0:
            recs += self.tracker.flush()
        for r in recs:
            if len(r) != len(nfttrack.KEYS) + 1 or r[1] not in AUDIT_ACTIONS:
                raise Defect(f"NFTRACE made a record that is not whole: {r!r}")
        if batch.malformed:
            return "rejected"
        return "accepted" if batch.events else "other"


def check_unixsock(data: bytes, cuts: list[int]) -> str:
    """UNIXSOCK: the stream gives the same frames whatever the reads' sizes (``cuts``: where
    the reads end), never raises, and ``decode_frame`` raises only DecodeError."""
    whole = unixsock.Stream()
    frames = whole.feed(data)
    parts = unixsock.Stream()
    got: list[bytes | int] = []
    prev = 0
    for c in sorted(cuts) + [len(data)]:
        got += parts.feed(data[prev:c])
        prev = max(prev, c)
    if got != frames or parts.bad_marker != whole.bad_marker:
        raise Defect(f"frames depend on how the stream was read: {len(got)} != {len(frames)}")
    outcome = "other"
    for f in frames:
        if isinstance(f, int):
            outcome = "rejected"
            continue
        try:
            unixsock.decode_frame(f, [])
        except DecodeError:
            return "rejected"
        outcome = "accepted"
    if whole.bad_marker is not None:
        return "rejected"
    return outcome


# -- configs


@cache
def config_seeds() -> tuple[str, ...]:
    """Real configs: ours, the golden cases', the test cases', Debian's (when installed)."""
    paths = [ROOT / "examples/ulogd.conf", *sorted((ROOT / "tests/cases").glob("*/**/ulogd.conf"))]
    if GOLDEN.is_dir():
        paths += sorted(GOLDEN.glob("*/ulogd.conf"))
    paths += [Path("/etc/ulogd.conf"), Path("/usr/share/doc/ulogd2/examples/ulogd.conf")]
    out = []
    for p in paths:
        try:
            out.append(p.read_bytes().decode("utf-8", "surrogateescape"))
        except OSError:
            continue
    return tuple(dict.fromkeys(out))


_INPUTS = ("NFLOG", "NFCT", "NFACCT", "UNIXSOCK")
_FILTERS = ("BASE", "IFINDEX", "IP2STR", "IP2BIN", "IP2HBIN", "HWHDR", "MARK", "PRINTPKT", "PRINTFLOW", "PWSNIFF")
_OUTPUTS = ("LOGEMU", "JSON", "XML", "GPRINT", "OPRINT", "SYSLOG", "PCAP", "NACCT", "GRAPHITE", "IPFIX",
            "SQLITE3", "PGSQL", "MYSQL", "DBI")  # fmt: skip
_CHAIN = {"NFLOG": ("BASE", "IFINDEX", "IP2STR", "PRINTPKT"), "NFCT": ("IP2STR", "PRINTFLOW"),
          "NFACCT": (), "UNIXSOCK": ("BASE", "IP2STR", "PRINTPKT")}  # fmt: skip
_INTS = ("0", "1", "-1", "7", "0x10", "010", "08", "65535", "65536", "999999", "0xffffffff", "4294967296",
         "-2147483649", "99999999999999999999", "", "1e3", "0x", "+5", " 3", "yes")  # fmt: skip
_STRS = ("", "x", "/tmp/pyulogd-fuzz/none", "tcp", "udp", "unix", "file", "LOG_KERN", "LOG_DAEMON", "LOG_NOTICE",
         "localhost", "127.0.0.1", "::1", "10.0.0.0/8", "tcp,udp", "icmp", "bogus", "qrouter-*", "*", "ns\x00x",
         "a" * 300, "\udcff\udcfe", "é", "../../etc/passwd", "5 s", "1G", "-3", "1.5", "0", "[x]", "a:b,c")  # fmt: skip
_LOGFILES = ("stdout", "syslog", "/tmp/pyulogd-fuzz/no/such/dir/l", "a\x00b", "\udcff")
_SO_NAMES = ("output_JSON", "inppkt_NFLOG", "output_FOO", "filter_BASE")
_CHARS = "[]=\",:# \t\n\r\x00\x0b\x1b\\'abcXYZ019_-./*é\udcff"


def _section(rng: random.Random, inst: str, plugin: str) -> list[str]:
    try:
        cls: type[Plugin] = registry.get(plugin)
    except ConfigError:
        return []
    lines = [rng.choice((f"[{inst}]", f"[ {inst} ]", f"[{inst}] # c"))]
    for opt in cls.options:
        if rng.random() < 0.35:
            pool = _INTS if opt.type is OptionType.INT else _STRS
            value = rng.choice(pool) if rng.random() < 0.7 else str(opt.default)
            sep = rng.choice(("=", " = ", " ", "=="))
            quoted = f'"{value}"' if (" " in value or rng.random() < 0.2) else value
            lines.append(f"{opt.name}{sep}{quoted}")
    if rng.random() < 0.1:
        lines.append(rng.choice(("bogus=1", "file=", 'x="open', "  # indented")))
    return lines


def random_config(rng: random.Random) -> str:
    """A config from the grammar: stacks of known plugins (mostly well-typed), their sections
    with options of every type set to edge values."""
    lines = ["[global]"]
    if rng.random() < 0.3:
        lines.append(f"logfile={rng.choice(_LOGFILES)}")
    if rng.random() < 0.3:
        lines.append(f"loglevel={rng.choice(_INTS)}")
    if rng.random() < 0.2:
        lines.append(f'plugin="/usr/lib/x86_64-linux-gnu/ulogd/ulogd_{rng.choice(_SO_NAMES)}.so"')
    sections: list[str] = []
    ids = ("a1", "b1", "c1", "log1", "ct1", "x")
    for _ in range(rng.randint(1, 3)):
        src = rng.choice(_INPUTS)
        chain = list(_CHAIN[src]) if rng.random() < 0.6 else rng.sample(_FILTERS, rng.randint(0, 3))
        plugins = [src, *chain, rng.choice(_OUTPUTS)]
        elems = []
        for p in plugins:
            inst = rng.choice(ids) if rng.random() < 0.15 else f"{p.lower()}{rng.randint(1, 2)}"
            elems.append(f"{inst}:{p}")
            sections += _section(rng, inst, p)
        if rng.random() < 0.1:
            elems.insert(rng.randrange(len(elems) + 1), rng.choice(("", "nocolon", ":NFLOG", "y" * 40 + ":BASE")))
        lines.append(f"stack={','.join(elems)}")
    return "\n".join(lines + sections) + "\n"


def mutate_config(rng: random.Random, text: str) -> str:
    lines = text.split("\n")
    for _ in range(rng.choice((1, 1, 2, 3))):
        op = rng.randrange(8)
        i = rng.randrange(len(lines)) if lines else 0
        if op == 0 and lines:
            del lines[i]
        elif op == 1 and lines:
            lines.insert(i, lines[rng.randrange(len(lines))])
        elif op == 2 and lines:  # a character in a line
            s = lines[i]
            j = rng.randrange(len(s) + 1)
            c = rng.choice(_CHARS)
            lines[i] = s[:j] + c + s[j + rng.choice((0, 1)) :]
        elif op == 3 and lines and "=" in lines[i]:  # a value
            key = lines[i].split("=", 1)[0]
            lines[i] = f"{key}={rng.choice(_INTS + _STRS)}"
        elif op == 4:  # a header variant
            lines.insert(i, rng.choice(("[global", "[a b]", "[]", "[global]]", "[[x]]", "[ct1] junk", "[log1]", "[")))
        elif op == 5 and lines and lines[i].startswith("stack="):  # a stack element
            elems = lines[i][6:].split(",")
            k = rng.randrange(len(elems))
            elems[k] = rng.choice(("", elems[0], "z:NOPE", "q:" + rng.choice(_OUTPUTS + _FILTERS), elems[k][::-1]))
            lines[i] = "stack=" + ",".join(elems)
        elif op == 6 and lines:
            lines[i] = lines[i][: rng.randrange(len(lines[i]) + 1)]
        else:
            lines.insert(i, "".join(rng.choice(_CHARS) for _ in range(rng.randrange(12))))
    return "\n".join(lines)


def config_inputs(seed: int) -> Iterator[str]:
    rng = random.Random(f"config:{seed}")
    pool = config_seeds()
    while True:
        r = rng.random()
        if r < 0.3:
            yield random_config(rng)
        elif r < 0.4:
            yield mutate_config(rng, random_config(rng))
        elif r < 0.43:
            yield rng.randbytes(rng.randrange(200)).decode("utf-8", "surrogateescape")
        else:
            yield mutate_config(rng, rng.choice(pool))


class _QuietLog(Logger):
    """Writes nothing anywhere; ``logfile=`` fails as opening the file would, creating nothing
    (the fuzzer runs as root: it must not create files named by random text)."""

    def __init__(self) -> None:
        super().__init__()
        self.level = FATAL + 1
        self.level_forced = True

    def set_destination(self, path: str) -> None:
        if path in ("stdout", "syslog"):
            return
        try:
            os.stat(path)  # ValueError for a NUL or an unencodable name, as open() would
        except OSError:
            pass


def _no_db(cls: type[Plugin]) -> type[Plugin]:
    """A SQL output whose configure() does not open the database (a file or a server);
    its options are still checked by the stack build."""

    def configure(self: Any) -> None:
        return None

    return type(cls.__name__, (cls,), {"configure": configure})


class ConfigChecker:
    """The config text through ``parse_text`` and every stack's build (instances, option checks,
    configure, key resolution); only ConfigError may come out. Nothing is started: no socket,
    no file, no database (SQL outputs' configure() is left out)."""

    def __init__(self) -> None:
        self.loop = Loop(FakeClock(wall=NOW))
        self._restore: list[str] = []
        for name in ("SQLITE3", "PGSQL", "MYSQL", "DBI", "AUDITDB"):
            registry.register(_no_db(registry.get(name)))
            self._restore.append(name)

    def close(self) -> None:
        for name in self._restore:
            registry.unregister(name)
        self.loop.selector.close()

    def __call__(self, text: str) -> str:
        ctx = Context(loop=self.loop, log=_QuietLog(), stats=Stats(), hostname="fuzz")
        try:
            cfg = parse_text(text, "fuzz.conf")
            Service("fuzz.conf", ctx).load_config(cfg)
        except ConfigError as e:
            if e.file != "fuzz.conf":
                raise Defect(f"ConfigError without the file: {e}") from e
            return "rejected"
        return "accepted"


# -- the runners' common part

Check = Callable[[bytes], str]


def decoder_checks() -> dict[str, tuple[Callable[[int], Iterator[bytes]], Check]]:
    """name -> (inputs for a seed, check)."""
    nfct_check, nflog_check = NfctChecker(), NflogChecker()

    def unix(data: bytes) -> str:
        # Read sizes from the bytes themselves, so the hex of an input reproduces it.
        cut = random.Random(zlib.crc32(data))
        return check_unixsock(data, [cut.randrange(len(data) + 1) for _ in range(cut.randrange(4))])

    return {
        "nflog": (lambda s: netlink_inputs("nflog", s), nflog_check),
        "nfct": (lambda s: netlink_inputs("nfct", s), nfct_check),
        "nfacct": (lambda s: netlink_inputs("nfacct", s), check_nfacct),
        "unixsock": (unixsock_inputs, unix),
        "nftrace": (lambda s: netlink_inputs("nftrace", s), NftraceChecker()),
    }
