"""The one record serialization (io/recordfmt.py): what is encoded decodes to the same values,
for every key type and the other value types; damaged or foreign bytes are refused with
FormatError, never IndexError or struct.error."""

from __future__ import annotations

import ipaddress
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyulogd.core.keys import KeyType
from pyulogd.io import recordfmt as fmt
from pyulogd.io.recordfmt import FormatError, decode_batch, decode_record, encode_batch, encode_record

T = KeyType

# What a record holds for each key type (core/plugin.py: "Value representation by key type").
_BYTES = st.binary(max_size=40)
_TEXT = st.text(max_size=20) | _BYTES.map(lambda b: b.decode("utf-8", "surrogateescape"))


def _int(bits: int, signed: bool) -> st.SearchStrategy[int]:
    if signed:
        return st.integers(-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    return st.integers(0, (1 << bits) - 1)


BY_TYPE: dict[KeyType, st.SearchStrategy[Any]] = {
    T.NONE: st.none(),
    T.INT8: _int(8, True),
    T.INT16: _int(16, True),
    T.INT32: _int(32, True),
    T.INT64: _int(64, True),
    T.UINT8: _int(8, False),
    T.UINT16: _int(16, False),
    T.UINT32: _int(32, False),
    T.UINT64: _int(64, False),
    T.BOOL: st.integers(0, 1) | st.booleans(),
    T.IPADDR: st.binary(min_size=4, max_size=4) | st.binary(min_size=16, max_size=16),
    T.IP6ADDR: st.binary(min_size=16, max_size=16),
    T.STRING: _TEXT,
    T.RAW: _BYTES,
    T.RAWSTR: _BYTES,
    # IPFIXIN's ipfix.extra: IE names to numbers, text, booleans, bytes and lists of them.
    T.MAP: st.dictionaries(
        _TEXT,
        st.integers(-(1 << 63), (1 << 64) - 1) | _TEXT | st.booleans() | _BYTES
        | st.lists(st.integers(0, 1 << 32) | _TEXT, max_size=4),
        max_size=6,
    ),
}
# Beyond key values: what other records (issue 12's metadata, broker batches) may carry.
OTHER = (
    st.integers()  # any size
    | st.floats(allow_nan=False)
    | st.text()  # lone surrogates included
    | st.ip_addresses()
    | _BYTES.map(bytearray)
)


def test_every_key_type_has_a_strategy() -> None:
    assert set(BY_TYPE) == set(KeyType)


@st.composite
def batches(draw: Any) -> tuple[tuple[str, ...], list[tuple[Any, ...]], list[int] | None]:
    types = draw(st.lists(st.sampled_from(list(KeyType)), max_size=8))
    names = tuple(draw(st.lists(st.text(max_size=12), min_size=len(types), max_size=len(types))))
    mixed = draw(st.booleans())  # some columns of one type, others of anything
    columns = []
    for t in types:
        value = BY_TYPE[t] | OTHER if mixed else BY_TYPE[t]
        columns.append(value | st.none())
    rows = draw(st.lists(st.tuples(*columns), max_size=12))
    seqs = draw(st.none() | st.lists(_int(64, False), min_size=len(rows), max_size=len(rows)))
    return names, rows, seqs


def _same(a: Any, b: Any) -> bool:
    """Equal, and of the type it was given as (bytearray and memoryview read back as bytes)."""
    if isinstance(a, bytearray | memoryview):
        return type(b) is bytes and bytes(a) == b
    return type(a) is type(b) and a == b


@settings(max_examples=300)
@given(batches())
def test_decodes_what_it_encodes(batch: tuple[tuple[str, ...], list[tuple[Any, ...]], list[int] | None]) -> None:
    names, rows, seqs = batch
    got = decode_batch(encode_batch(names, rows, seqs))
    assert got.names == names
    assert got.seqs == seqs
    assert len(got.rows) == len(rows)
    for want, row in zip(rows, got.rows, strict=True):
        assert all(_same(a, b) for a, b in zip(want, row, strict=True)), (want, row)


@given(st.dictionaries(st.text(max_size=10), OTHER | st.none() | st.booleans(), max_size=6),
       st.none() | _int(64, False))  # fmt: skip
def test_one_record_as_a_mapping(record: dict[str, Any], seq: int | None) -> None:
    got, got_seq = decode_record(encode_record(record, seq))
    assert list(got) == list(record) and got_seq == seq
    assert all(_same(record[k], got[k]) for k in record)


def test_surrogateescape_text_comes_back_exactly() -> None:
    prefix = b"pr\xe9fix \xff\xc3".decode("utf-8", "surrogateescape")
    got, _ = decode_record(encode_record({"oob.prefix": prefix}))
    assert got["oob.prefix"] == prefix
    assert got["oob.prefix"].encode("utf-8", "surrogateescape") == b"pr\xe9fix \xff\xc3"


def test_columns_of_one_type_are_packed() -> None:
    """A column of integers (with None among them) costs 8 bytes a record, not a tag each."""
    rows = [(i, None if i % 3 else "s", b"x") for i in range(100)]
    plain = encode_batch(("n", "s", "b"), rows)
    assert len(plain) < 12 + 9 + 3 * 2 + 100 * (8 + 1) + (1 + 101 + 400 + 34) + (2 + 400 + 100)
    tagged = encode_batch(("n",), [(True,)] * 100)  # bools keep their type: a tag each
    assert decode_batch(tagged).rows == [(True,)] * 100


def test_maps_and_lists_nest_as_deep_as_a_reader_follows() -> None:
    value = {"ipfix.tunnelKey": "00ff" * 100, "flags": [1, True, None, {"x": b"\x00", "y": [2.5]}], "": {}}
    got, _ = decode_record(encode_record({"ipfix.extra": value, "t": (1, 2)}))
    assert got == {"ipfix.extra": value, "t": [1, 2]}  # a tuple reads back as a list
    deep: Any = 0
    for _ in range(fmt.MAX_DEPTH):
        deep = [deep]
    assert decode_record(encode_record({"a": deep}))[0]["a"] == deep
    with pytest.raises(ValueError, match="nested"):  # never written if it could not be read back
        encode_record({"a": [deep]})
    # written by hand one level deeper than a writer may: refused, not a RecursionError
    one = b"l\x01\x00\x00\x00"
    too_deep = encode_record({"a": deep}).replace(one, one + one, 1)
    with pytest.raises(FormatError, match="nested"):
        decode_batch(too_deep)


def test_uint64_above_the_signed_range() -> None:
    rows = [(2**64 - 1,), (2**63,), (None,)]
    assert decode_batch(encode_batch(("raw.pktlen",), rows)).rows == rows


def test_header_layout_and_version() -> None:
    data = encode_batch(("a",), [(1,)], [7])
    assert data[:4] == b"PR\x01\x01"
    assert struct.unpack_from("<II", data, 4) == (1, 1)
    newer = data[:2] + bytes([fmt.VERSION + 1]) + data[3:]
    with pytest.raises(FormatError, match="version 2"):
        decode_batch(newer)
    with pytest.raises(FormatError, match="flags"):
        decode_batch(data[:3] + b"\x80" + data[4:])
    with pytest.raises(FormatError, match="not a record batch"):
        decode_batch(b"XX" + data[2:])


def test_empty_batches() -> None:
    assert decode_batch(encode_batch((), [])).rows == []
    assert decode_batch(encode_batch(("a", "b"), [])).names == ("a", "b")
    assert decode_batch(encode_batch((), [(), ()], [1, 2])).rows == [(), ()]


def test_what_cannot_be_encoded() -> None:
    with pytest.raises(ValueError, match="2 values"):
        encode_batch(("a", "b"), [(1, 2), (3,)])
    with pytest.raises(ValueError, match="sequence numbers"):
        encode_batch(("a",), [(1,)], [1, 2])
    with pytest.raises(TypeError, match="object"):
        encode_batch(("a",), [(object(),)])
    with pytest.raises(TypeError, match="scope"):
        encode_record({"a": ipaddress.IPv6Address("fe80::1%eth0")})


SAMPLE = encode_batch(
    ("i", "s", "b", "mixed", "none", "map"),
    [(1, "a", b"x", 2**70, None, {"k": [1, "x", {"n": None}]}),
     (None, "\udcff", None, ipaddress.ip_address("10.0.0.1"), None, None)],
    [1, 2],
)


def test_every_truncation_is_refused() -> None:
    decode_batch(SAMPLE)
    for n in range(len(SAMPLE)):
        with pytest.raises(FormatError):
            decode_batch(SAMPLE[:n])
    with pytest.raises(FormatError, match="after the batch"):
        decode_batch(SAMPLE + b"\x00")


@given(st.binary(max_size=200))
def test_random_bytes_never_raise_anything_else(data: bytes) -> None:
    for blob in (data, SAMPLE[:12] + data, SAMPLE[: len(SAMPLE) // 2] + data):
        try:
            decode_batch(blob)
        except FormatError:
            pass


@given(st.integers(0, len(SAMPLE) - 1), st.integers(0, 255))
def test_a_damaged_byte_decodes_or_is_refused(pos: int, value: int) -> None:
    data = bytearray(SAMPLE)
    data[pos] = value
    try:
        decode_batch(bytes(data))
    except FormatError:
        pass


def test_counts_cannot_exhaust_memory() -> None:
    huge = struct.pack("<2sBBII", b"PR", 1, 0, 0, fmt.MAX_RECORDS + 1)
    with pytest.raises(FormatError, match="counts"):
        decode_batch(huge)
    many_keys = struct.pack("<2sBBII", b"PR", 1, 0, 1 << 30, 1)
    with pytest.raises(FormatError, match="counts"):
        decode_batch(many_keys)
