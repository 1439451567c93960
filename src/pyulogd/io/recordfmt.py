"""One serialization of records for everything that keeps or ships them.

The on-disk spool (``io/spool.py``) writes its frames in this format, and so will the
write-ahead file and broker batches: a record leaves the process in one shape, so a spooled
record can be replayed to any output and a reader needs one decoder. Stdlib only
(``struct``): the daemon has no required dependency, and ``marshal`` (what the SQL spool used)
is neither stable across Python versions nor safe on damaged input.

A *record* maps key names to values: ``None``, ``bool``, ``int`` (any size), ``float``,
``str`` (any Python string: written as UTF-8 with ``surrogatepass``, so text decoded with
``surrogateescape`` from bytes that are not UTF-8 comes back exactly), ``bytes`` (also from
``bytearray``/``memoryview``, read back as ``bytes``), ``ipaddress`` addresses (without a
scope), and maps and lists of these (a MAP key's value: IPFIXIN's ``ipfix.extra``; tuples read
back as lists), nested at most :data:`MAX_DEPTH` deep. A *batch* is records that share their
key names, which is what outputs produce (one row per record, the same columns), and carries
an optional sequence number per record (issue 12: the daemon will number records so a
consumer can see gaps and duplicates).

Layout, little-endian::

    header   "PR" | version u8 | flags u8 | keys u32 | records u32
    names    keys x (u16 length | UTF-8)
    seqs     records x u64                      (flags & SEQ)
    columns  keys x (kind u8 | body)

A batch is stored column by column: a column whose values are all integers (or strings, or
bytes) with a few ``None`` among them packs with one ``struct`` call (lengths, then the joined
data), so encoding costs a few C calls per column instead of Python code per value. Columns
of mixed types fall back to a tag per value. Column bodies:

=========  ============================================================================
NONE       nothing: every value is None
I64 / U64  nulls, then records x i64 / u64 (a None reads as 0 and is marked in nulls)
STR/BYTES  nulls, then records x u32 lengths, then the data joined
ANY        records x (tag u8 | value): ``N`` None, ``T``/``F`` bool, ``q`` i64,
           ``Q`` u64, ``I`` big int (u32 length, signed little-endian), ``d`` float,
           ``s`` str / ``b`` bytes (u32 length, data), ``4``/``6`` an address (4/16 bytes),
           ``m`` a map (u32 count, then key and value, each tagged), ``l`` a list (u32
           count, tagged values): MAP keys such as IPFIXIN's ``ipfix.extra``
=========  ============================================================================

``nulls`` is one byte, 0 when the column has no None, else 1 followed by one byte per record
(1: None). A reader refuses (:class:`FormatError`) another version, an unknown kind or tag,
and any length that does not add up, never with IndexError or struct.error: a spool may hold
a torn or damaged frame, and the reader counts it and goes on.
"""

from __future__ import annotations

import ipaddress
import itertools
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAGIC = b"PR"
VERSION = 1
# flags
SEQ = 0x01
# Records in one batch at most (a reader refuses more, so damaged counts cannot exhaust memory).
MAX_RECORDS = 1 << 24

_HEADER = struct.Struct("<2sBBII")
_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")
_U64 = struct.Struct("<Q")
_F64 = struct.Struct("<d")

# column kinds
K_NONE, K_I64, K_U64, K_STR, K_BYTES, K_ANY = range(6)

_NoneType = type(None)
_INTS = frozenset({int, _NoneType})
_STRS = frozenset({str, _NoneType})
_BYTES = frozenset({bytes, bytearray, memoryview, _NoneType})


class FormatError(ValueError):
    """Bytes that are not a batch of this format (another version, damaged, cut short)."""


@dataclass
class Batch:
    """Records sharing ``names``: ``rows[i][j]`` is the value of ``names[j]`` in record ``i``;
    ``seqs[i]`` its sequence number, or ``seqs`` is None when the batch has none."""

    names: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    seqs: list[int] | None = None

    def records(self) -> Iterator[dict[str, Any]]:
        names = self.names
        for row in self.rows:
            yield dict(zip(names, row, strict=True))


# -- encoding


def encode_batch(names: Sequence[str], rows: Sequence[Sequence[Any]], seqs: Sequence[int] | None = None) -> bytes:
    """The bytes of a batch; ValueError when a row's length is not ``len(names)`` or ``seqs``
    does not give one number per row, TypeError for a value of a type the format lacks."""
    nkeys, nrows = len(names), len(rows)
    if nrows and set(map(len, rows)) != {nkeys}:
        raise ValueError(f"every row must have {nkeys} values")
    if nrows > MAX_RECORDS:
        raise ValueError(f"more than {MAX_RECORDS} records in one batch")
    if seqs is not None and len(seqs) != nrows:
        raise ValueError(f"{len(seqs)} sequence numbers for {nrows} rows")
    out = [_HEADER.pack(MAGIC, VERSION, SEQ if seqs is not None else 0, nkeys, nrows)]
    for name in names:
        raw = name.encode("utf-8", "surrogatepass")
        if len(raw) > 0xFFFF:
            raise ValueError("a key name longer than 65535 bytes")
        out.append(_U16.pack(len(raw)))
        out.append(raw)
    if seqs is not None:
        out.append(struct.pack(f"<{nrows}Q", *seqs))
    if nrows:
        for col in zip(*rows, strict=True):
            _encode_column(col, out)
    else:
        out.append(bytes(nkeys))  # K_NONE for each column
    return b"".join(out)


def encode_record(record: Mapping[str, Any], seq: int | None = None) -> bytes:
    """One record as a batch of one."""
    return encode_batch(tuple(record), [tuple(record.values())], None if seq is None else [seq])


def _nulls(col: Sequence[Any], n: int) -> bytes:
    if None not in col:
        return b"\x00"
    return b"\x01" + bytes([v is None for v in col])


def _encode_column(col: Sequence[Any], out: list[bytes]) -> None:
    n = len(col)
    kinds = set(map(type, col))
    if kinds == {_NoneType}:
        out.append(b"\x00")
        return
    if kinds <= _INTS:
        values = [0 if v is None else v for v in col] if _NoneType in kinds else col
        for kind, fmt in ((K_I64, "q"), (K_U64, "Q")):
            try:
                packed = struct.pack(f"<{n}{fmt}", *values)
            except struct.error:
                continue
            out.append(_U8.pack(kind))
            out.append(_nulls(col, n))
            out.append(packed)
            return
    elif kinds <= _STRS or kinds <= _BYTES:
        if kinds <= _STRS:
            kind = K_STR
            data = [b"" if v is None else v.encode("utf-8", "surrogatepass") for v in col]
        else:
            kind = K_BYTES
            data = [b"" if v is None else bytes(v) for v in col]
        out.append(_U8.pack(kind))
        out.append(_nulls(col, n))
        out.append(struct.pack(f"<{n}I", *map(len, data)))
        out.append(b"".join(data))
        return
    out.append(_U8.pack(K_ANY))
    for v in col:
        _encode_any(v, out)


def _encode_any(v: Any, out: list[bytes], depth: int = 0) -> None:
    if v is None:
        out.append(b"N")
    elif v is True:
        out.append(b"T")
    elif v is False:
        out.append(b"F")
    elif isinstance(v, int):
        if -(1 << 63) <= v < 1 << 63:
            out.append(b"q" + _I64.pack(v))
        elif 0 <= v < 1 << 64:
            out.append(b"Q" + _U64.pack(v))
        else:
            raw = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
            out.append(b"I" + _U32.pack(len(raw)) + raw)
    elif isinstance(v, float):
        out.append(b"d" + _F64.pack(v))
    elif isinstance(v, str):
        raw = v.encode("utf-8", "surrogatepass")
        out.append(b"s" + _U32.pack(len(raw)) + raw)
    elif isinstance(v, bytes | bytearray | memoryview):
        raw = bytes(v)
        out.append(b"b" + _U32.pack(len(raw)) + raw)
    elif isinstance(v, dict | list | tuple) and depth >= MAX_DEPTH:
        # what a reader would refuse is not written (a spooled frame nobody can read back)
        raise ValueError(f"maps and lists nested more than {MAX_DEPTH} deep")
    elif isinstance(v, dict):  # a MAP key (IPFIXIN's ipfix.extra): names to values
        out.append(b"m" + _U32.pack(len(v)))
        for k, x in v.items():
            _encode_any(str(k), out, depth + 1)
            _encode_any(x, out, depth + 1)
    elif isinstance(v, list | tuple):  # a list inside a MAP value, read back as a list
        out.append(b"l" + _U32.pack(len(v)))
        for x in v:
            _encode_any(x, out, depth + 1)
    elif isinstance(v, ipaddress.IPv4Address):
        out.append(b"4" + v.packed)
    elif isinstance(v, ipaddress.IPv6Address):
        if v.scope_id:
            raise TypeError("an IPv6 address with a scope cannot be serialized")
        out.append(b"6" + v.packed)
    else:
        raise TypeError(f"a value of type {type(v).__name__} cannot be serialized")


# -- decoding


def decode_batch(data: bytes | bytearray | memoryview) -> Batch:
    """The batch ``data`` holds, all of it; :class:`FormatError` for anything else."""
    buf = bytes(data)
    try:
        return _decode(buf)
    except FormatError:
        raise
    except (struct.error, IndexError, UnicodeDecodeError, ValueError, OverflowError) as e:
        raise FormatError(f"damaged batch: {e}") from None


def decode_record(data: bytes | bytearray | memoryview) -> tuple[dict[str, Any], int | None]:
    """The record of a batch of one, and its sequence number (None: it has none)."""
    batch = decode_batch(data)
    if len(batch.rows) != 1:
        raise FormatError(f"a batch of {len(batch.rows)} records where one was expected")
    return next(batch.records()), None if batch.seqs is None else batch.seqs[0]


def _decode(buf: bytes) -> Batch:
    if len(buf) < _HEADER.size:
        raise FormatError("shorter than a header")
    magic, version, flags, nkeys, nrows = _HEADER.unpack_from(buf, 0)
    if magic != MAGIC:
        raise FormatError("not a record batch")
    if version != VERSION:
        raise FormatError(f"record format version {version}, this reader knows {VERSION}")
    if flags & ~SEQ:
        raise FormatError(f"unknown flags {flags:#x}")
    # A key takes 3 bytes at least (name length, column kind); records may take none (a column
    # of None is one byte), so their number has a bound of its own.
    if 3 * nkeys > len(buf) or nrows > MAX_RECORDS:
        raise FormatError("counts larger than the data")
    off = _HEADER.size
    names = []
    for _ in range(nkeys):
        (n,) = _U16.unpack_from(buf, off)
        off += 2
        names.append(_take(buf, off, n).decode("utf-8", "surrogatepass"))
        off += n
    seqs: list[int] | None = None
    if flags & SEQ:
        seqs = list(struct.unpack_from(f"<{nrows}Q", buf, off))
        off += 8 * nrows
    columns = []
    for _ in range(nkeys):
        col, off = _decode_column(buf, off, nrows)
        columns.append(col)
    if off != len(buf):
        raise FormatError(f"{len(buf) - off} bytes after the batch")
    rows: list[tuple[Any, ...]] = list(zip(*columns, strict=True)) if nkeys else [()] * nrows
    return Batch(tuple(names), rows, seqs)


def _take(buf: bytes, off: int, n: int) -> bytes:
    if off + n > len(buf):
        raise FormatError("cut short")
    return buf[off : off + n]


def _decode_nulls(buf: bytes, off: int, n: int) -> tuple[bytes | None, int]:
    flag = buf[off]
    if flag == 0:
        return None, off + 1
    if flag != 1:
        raise FormatError(f"bad null map flag {flag}")
    return _take(buf, off + 1, n), off + 1 + n


def _decode_column(buf: bytes, off: int, n: int) -> tuple[list[Any], int]:
    kind = buf[off]
    off += 1
    if kind == K_NONE:
        return [None] * n, off
    if kind in (K_I64, K_U64):
        nulls, off = _decode_nulls(buf, off, n)
        values: list[Any] = list(struct.unpack_from(f"<{n}{'q' if kind == K_I64 else 'Q'}", buf, off))
        off += 8 * n
        if nulls is not None:
            values = [None if z else v for z, v in zip(nulls, values, strict=True)]
        return values, off
    if kind in (K_STR, K_BYTES):
        nulls, off = _decode_nulls(buf, off, n)
        lengths = struct.unpack_from(f"<{n}I", buf, off)
        off += 4 * n
        ends = list(itertools.accumulate(lengths, initial=off))
        end = ends[-1]
        if end > len(buf):
            raise FormatError("cut short")
        if kind == K_STR:
            values = [buf[a:b].decode("utf-8", "surrogatepass") for a, b in itertools.pairwise(ends)]
        else:
            values = [buf[a:b] for a, b in itertools.pairwise(ends)]
        if nulls is not None:
            values = [None if z else v for z, v in zip(nulls, values, strict=True)]
        return values, end
    if kind == K_ANY:
        values = []
        append = values.append
        for _ in range(n):
            v, off = _decode_any(buf, off)
            append(v)
        return values, off
    raise FormatError(f"unknown column kind {kind}")


def _fixed(size: int, make: Callable[[bytes], Any]) -> Callable[[bytes, int], tuple[Any, int]]:
    def read(buf: bytes, off: int) -> tuple[Any, int]:
        return make(_take(buf, off, size)), off + size

    return read


def _sized(make: Callable[[bytes], Any]) -> Callable[[bytes, int], tuple[Any, int]]:
    def read(buf: bytes, off: int) -> tuple[Any, int]:
        (n,) = _U32.unpack_from(buf, off)
        return make(_take(buf, off + 4, n)), off + 4 + n

    return read


_TAGS: dict[int, Callable[[bytes, int], tuple[Any, int]]] = {
    ord("N"): lambda buf, off: (None, off),
    ord("T"): lambda buf, off: (True, off),
    ord("F"): lambda buf, off: (False, off),
    ord("q"): _fixed(8, lambda b: _I64.unpack(b)[0]),
    ord("Q"): _fixed(8, lambda b: _U64.unpack(b)[0]),
    ord("d"): _fixed(8, lambda b: _F64.unpack(b)[0]),
    ord("I"): _sized(lambda b: int.from_bytes(b, "little", signed=True)),
    ord("s"): _sized(lambda b: b.decode("utf-8", "surrogatepass")),
    ord("b"): _sized(bytes),
    ord("4"): _fixed(4, ipaddress.IPv4Address),
    ord("6"): _fixed(16, ipaddress.IPv6Address),
}


# Nesting of maps and lists a reader follows at most (damaged input cannot recurse deeper).
MAX_DEPTH = 8


def _decode_any(buf: bytes, off: int, depth: int = 0) -> tuple[Any, int]:
    if off >= len(buf):
        raise FormatError("a value is cut short")
    tag = buf[off]
    if tag in (0x6D, 0x6C):  # "m" map, "l" list
        if depth >= MAX_DEPTH:
            raise FormatError("maps and lists nested too deep")
        n = _U32.unpack(_take(buf, off + 1, 4))[0]
        off += 5
        if n > len(buf) - off:  # every entry takes a byte at least
            raise FormatError("a map or list longer than its frame")
        if tag == 0x6C:
            items = []
            for _ in range(n):
                x, off = _decode_any(buf, off, depth + 1)
                items.append(x)
            return items, off
        out: dict[str, Any] = {}
        for _ in range(n):
            k, off = _decode_any(buf, off, depth + 1)
            if not isinstance(k, str):
                raise FormatError("a map key that is not text")
            out[k], off = _decode_any(buf, off, depth + 1)
        return out, off
    read = _TAGS.get(tag)
    if read is None:
        raise FormatError(f"unknown value tag {tag:#x}")
    return read(buf, off + 1)
