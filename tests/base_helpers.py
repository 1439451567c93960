"""Helpers for the BASE filter tests: a wired instance without the stack engine, and the
golden packets of real ulogd2 2.0.8 (from ../shared, or the copy in tests/vectors/base)."""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pyulogd.core.context import Context
from pyulogd.core.plugin import KeyType
from pyulogd.io.loop import Loop
from pyulogd.plugins.filters.base import OUTPUT_KEYS, BaseFilter

TESTS = Path(__file__).resolve().parent
VECTORS = TESTS / "vectors" / "base"
GOLDEN_CASE = TESTS.parent.parent / "shared" / "golden" / "ulogd2-2.0.8" / "pkt-json"

# Record layout used here: slot 0 (never written), the four inputs, then BASE's outputs.
IN_PKT, IN_LEN, IN_FAM, IN_PROTO = 1, 2, 3, 4
OUT_BASE = 5
NSLOTS = OUT_BASE + len(OUTPUT_KEYS)

# Field names under which ulogd's JSON output shows BASE keys (IPADDR and RAW are skipped).
JSON_NAMES = frozenset((k.cim or k.name) for k in OUTPUT_KEYS if k.type not in (KeyType.IPADDR, KeyType.RAW))


def make_base(ctx: Context | None = None, instance_id: str = "base1") -> BaseFilter:
    f = BaseFilter(ctx or Context(loop=Loop()), instance_id, {})
    f.out_base = OUT_BASE
    f.in_slots = [IN_PKT, IN_LEN, IN_FAM, IN_PROTO]
    return f


def record(pkt: Any, family: int | None, protocol: int | None, pktlen: int | None = None) -> list[Any]:
    rec: list[Any] = [None] * NSLOTS
    rec[IN_PKT] = pkt
    rec[IN_LEN] = (len(pkt) if pkt is not None else None) if pktlen is None else pktlen
    rec[IN_FAM] = family
    rec[IN_PROTO] = protocol
    return rec


def outputs(rec: list[Any]) -> dict[str, Any]:
    """BASE's valid output keys of a record, by name."""
    return {k.name: rec[OUT_BASE + i] for i, k in enumerate(OUTPUT_KEYS) if rec[OUT_BASE + i] is not None}


def decode(
    pkt: Any, family: int | None, protocol: int | None, pktlen: int | None = None, f: BaseFilter | None = None
) -> dict[str, Any]:
    f = f or make_base()
    rec = record(pkt, family, protocol, pktlen)
    assert f.interp(rec) == 0
    assert len(rec) == NSLOTS  # a slice assignment of the wrong width would resize it
    return outputs(rec)


def json_view(values: dict[str, Any]) -> dict[str, Any]:
    """What ulogd's JSON output prints for these BASE keys (field name -> value)."""
    out: dict[str, Any] = {}
    for k in OUTPUT_KEYS:
        if k.name in values and k.type not in (KeyType.IPADDR, KeyType.RAW):
            out[k.cim or k.name] = values[k.name]
    return out


def ntop(addr: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(addr) == 4 else socket.AF_INET6, addr)


def _split(buf: bytes) -> Iterator[tuple[int, int, int]]:
    off = 0
    while off + 16 <= len(buf):
        ln, typ = struct.unpack_from("=IH", buf, off)
        if ln < 16 or off + ln > len(buf):
            break
        yield off, ln, typ
        off += (ln + 3) & ~3


def _attrs(buf: bytes, off: int, end: int) -> Iterator[tuple[int, bytes]]:
    while off + 4 <= end:
        ln, typ = struct.unpack_from("=HH", buf, off)
        if ln < 4 or off + ln > end:
            break
        yield typ & 0x3FFF, buf[off + 4 : off + ln]
        off += (ln + 3) & ~3


NFULNL_MSG_PACKET = (4 << 8) | 0  # NFNL_SUBSYS_ULOG, NFULNL_MSG_PACKET
NFULA_PACKET_HDR = 1
NFULA_PAYLOAD = 9


def golden_from_shared(case: Path = GOLDEN_CASE) -> list[dict[str, Any]]:
    """The packets ulogd read (raw-daemon/*.hex) paired with the lines of its out.json."""
    packets: list[dict[str, Any]] = []
    for hexfile in sorted((case / "raw-daemon").glob("*.hex")):
        buf = bytes.fromhex("".join(hexfile.read_text().split()))
        for off, ln, typ in _split(buf):
            if typ != NFULNL_MSG_PACKET:
                continue
            family = buf[off + 16]
            attrs = dict(_attrs(buf, off + 20, off + ln))
            (hw_protocol,) = struct.unpack_from("!H", attrs[NFULA_PACKET_HDR])
            packets.append({"family": family, "protocol": hw_protocol, "payload": attrs[NFULA_PAYLOAD]})
    lines = (case / "out.json").read_text().splitlines()
    assert len(lines) == len(packets), (len(lines), len(packets))
    for p, line in zip(packets, lines, strict=True):
        p["json"] = json.loads(line)
    return packets


def golden_from_vectors(folder: Path = VECTORS) -> list[dict[str, Any]]:
    """The same packets, from the copy kept in the repository (see regen.py there)."""
    packets: list[dict[str, Any]] = []
    for line in (folder / "golden-pkt-json.jsonl").read_text().splitlines():
        v = json.loads(line)
        v["payload"] = bytes.fromhex("".join((folder / v.pop("hex")).read_text().split()))
        packets.append(v)
    return packets


# Packet builders for hand-made vectors (checksums are arbitrary: BASE does not verify them).
SRC4 = bytes((10, 201, 0, 1))
DST4 = bytes((10, 201, 0, 2))
SRC6 = bytes.fromhex("fd000201000000000000000000000001")
DST6 = bytes.fromhex("fd000201000000000000000000000002")


def ip4(proto: int, payload: bytes = b"", *, options: bytes = b"", frag: int = 0x4000, ident: int = 0x1234,
        tos: int = 0, ttl: int = 64, csum: int = 0xBEEF, totlen: int | None = None) -> bytes:  # fmt: skip
    ihl = 5 + len(options) // 4
    tot = 4 * ihl + len(payload) if totlen is None else totlen
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, tos, tot, ident, frag, ttl, proto, csum, SRC4, DST4)
    return hdr + options + payload


def ip6(nxt: int, payload: bytes = b"", *, tclass: int = 0, flow: int = 0, hlim: int = 64) -> bytes:
    vtf = 6 << 28 | tclass << 20 | flow
    return struct.pack("!IHBB16s16s", vtf, len(payload), nxt, hlim, SRC6, DST6) + payload


def tcp(sport: int = 40001, dport: int = 7001, *, seq: int = 1, ack: int = 0, doff: int = 5, b12low: int = 0,
        flags: int = 0x02, window: int = 64240, csum: int = 0x15C3, urgp: int = 0) -> bytes:  # fmt: skip
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, doff << 4 | b12low, flags, window, csum, urgp)
    return hdr + b"\x01" * (4 * doff - 20 if doff > 5 else 0)


def udp(sport: int = 40003, dport: int = 7003, data: bytes = b"ok", csum: int = 0x1234) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(data), csum) + data


def ext(nxt: int, body_len: int = 6) -> bytes:
    """A hop-by-hop/routing/destination options header: (n+1)*8 bytes in all."""
    total = 2 + body_len
    assert total % 8 == 0
    return bytes((nxt, total // 8 - 1)) + b"\x01" + bytes((body_len - 2,)) + b"\x00" * (body_len - 2)


def frag6(nxt: int, offset_bytes: int, more: bool = False, ident: int = 0x81746E09) -> bytes:
    return bytes((nxt, 0)) + struct.pack("!HI", offset_bytes | int(more), ident)


def ah(nxt: int, spi: int, seq: int = 1, icv: bytes = b"\x00" * 12) -> bytes:
    body = struct.pack("!II", spi, seq) + icv
    length = (len(body) + 4) // 4 - 2
    return bytes((nxt, length)) + b"\x00\x00" + body


def esp(spi: int, seq: int = 1, data: bytes = b"\xaa" * 16) -> bytes:
    return struct.pack("!II", spi, seq) + data


# Aliases for tests that also import the pyulogd.packet modules of the same names.
mk_tcp = tcp
mk_udp = udp
