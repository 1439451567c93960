"""IPFIX (RFC 7011) messages as ulogd2 2.0.8's exporter builds them, plus an IPv6 template.

ulogd2's template 256 (``output/ipfix/ipfix.c``): sourceIPv4Address(8),
destinationIPv4Address(12), packetTotalCount(86), octetTotalCount(85),
flowStartSeconds(150), flowEndSeconds(151) (all 4 bytes), sourceTransportPort(7),
destinationTransportPort(11) (2 bytes), protocolIdentifier(4) (1 byte),
applicationId(95) (4 bytes): a 33-byte record, no padding. pyulogd adds template 257,
the same with sourceIPv6Address(27) and destinationIPv6Address(28) (16 bytes each): a
57-byte record. A template set (set ID 2) holds one template record; a data set has the
template's ID. :func:`decode` reads such messages back (tests, tools).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

VERSION = 10
HEADER = struct.Struct("!HHIII")  # version, length, export time, sequence, observation domain
SET_HEADER = struct.Struct("!HH")
TEMPLATE_SET_ID = 2
TEMPLATE_V4 = 256
TEMPLATE_V6 = 257

_COMMON = ((86, 4), (85, 4), (150, 4), (151, 4), (7, 2), (11, 2), (4, 1), (95, 4))
FIELDS: dict[int, tuple[tuple[int, int], ...]] = {
    TEMPLATE_V4: ((8, 4), (12, 4)) + _COMMON,
    TEMPLATE_V6: ((27, 16), (28, 16)) + _COMMON,
}
RECORD: dict[int, struct.Struct] = {
    TEMPLATE_V4: struct.Struct("!4s4sIIIIHHBI"),
    TEMPLATE_V6: struct.Struct("!16s16sIIIIHHBI"),
}
NAMES = ("saddr", "daddr", "packets", "octets", "start", "end", "sport", "dport", "proto", "app_id")


def template_set(tid: int) -> bytes:
    """A template set announcing template ``tid`` (48 bytes: 4 + 4 + 10 fields x 4)."""
    fields = FIELDS[tid]
    body = struct.pack("!HH", tid, len(fields)) + b"".join(struct.pack("!HH", i, n) for i, n in fields)
    return SET_HEADER.pack(TEMPLATE_SET_ID, SET_HEADER.size + len(body)) + body


def message(sets: list[bytes], export_time: int, sequence: int, domain: int) -> bytes:
    body = b"".join(sets)
    return HEADER.pack(VERSION, HEADER.size + len(body), export_time & 0xFFFFFFFF, sequence & 0xFFFFFFFF,
                       domain) + body


def data_set(tid: int, records: list[bytes]) -> bytes:
    body = b"".join(records)
    return SET_HEADER.pack(tid, SET_HEADER.size + len(body)) + body


@dataclass
class Message:
    export_time: int
    sequence: int
    domain: int
    templates: list[tuple[int, list[tuple[int, int]]]] = field(default_factory=list)
    records: list[tuple[int, dict[str, Any]]] = field(default_factory=list)


def decode(data: bytes, known: dict[int, list[tuple[int, int]]] | None = None) -> list[Message]:
    """Messages back to back (a TCP stream or concatenated datagrams) -> templates and records.

    Data sets are decoded with templates seen earlier (``known`` persists across calls);
    only templates 256/257's layouts are understood for records."""
    known = {} if known is None else known
    out: list[Message] = []
    off = 0
    while off + HEADER.size <= len(data):
        version, length, t, seq, dom = HEADER.unpack_from(data, off)
        if version != VERSION or length < HEADER.size or off + length > len(data):
            raise ValueError(f"bad IPFIX message at {off}")
        msg = Message(t, seq, dom)
        pos, end = off + HEADER.size, off + length
        while pos + 4 <= end:
            sid, slen = SET_HEADER.unpack_from(data, pos)
            if slen < 4 or pos + slen > end:
                raise ValueError("bad set length")
            body = data[pos + 4 : pos + slen]
            if sid == TEMPLATE_SET_ID:
                p = 0
                while p + 4 <= len(body):
                    tid, count = struct.unpack_from("!HH", body, p)
                    p += 4
                    fields = [struct.unpack_from("!HH", body, p + 4 * i) for i in range(count)]
                    p += 4 * count
                    known[tid] = fields
                    msg.templates.append((tid, fields))
            elif sid in known and sid in RECORD:
                rec = RECORD[sid]
                for p in range(0, len(body) - rec.size + 1, rec.size):
                    msg.records.append((sid, dict(zip(NAMES, rec.unpack_from(body, p), strict=True))))
            pos += slen
        out.append(msg)
        off = end
    return out
