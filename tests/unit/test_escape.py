"""The escaping rule for outside strings (pyulogd.core.escape): the table, the round trip,
ordinary text unchanged, and the fast path agreeing with the full rule."""

from __future__ import annotations

import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyulogd.core.escape import EscapeCache, escape_bytes, escape_text, needs_escape, unescape_text

FORGED = "qtest-nl\nDec  7 00:00:00 fakehost FORGED: IN=eth0 SRC=6.6.6.6"


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("gbACCEPT ", "gbACCEPT "),
        ("", ""),
        ("café ünïcødé 日本 🙂", "café ünïcødé 日本 🙂"),
        ("a\\b", "a\\\\b"),
        ("\\x41", "\\\\x41"),  # text that looks like an escape stays distinguishable
        ("nl\n", "nl\\n"),
        ("cr\r", "cr\\r"),
        ("tab\t", "tab\\t"),
        ("\x00\x01\x1b[31m\x7f", "\\x00\\x01\\x1b[31m\\x7f"),
        ("\x0b\x0c\x1c\x1d\x1e", "\\x0b\\x0c\\x1c\\x1d\\x1e"),
        ("\x85\x9b", "\\u0085\\u009b"),  # C1 controls (NEL ends a line for some readers; CSI)
        ("\u2028\u2029", "\\u2028\\u2029"),
        ("\u202e\u2066\u061c\u200f", "\\u202e\\u2066\\u061c\\u200f"),  # bidi controls
        ("\ufeff", "\\ufeff"),
        ("\u00a0\u200d\u00ad", "\u00a0\u200d\u00ad"),  # not printable, but neither controls nor line ends
        (b"caf\xe9 \xff\xfe".decode("utf-8", "surrogateescape"), "caf\\xe9 \\xff\\xfe"),
        ("\ud800", "\\ud800"),  # a lone surrogate that is no undecodable byte
        (FORGED, "qtest-nl\\nDec  7 00:00:00 fakehost FORGED: IN=eth0 SRC=6.6.6.6"),
    ],
)
def test_table(raw: str, escaped: str) -> None:
    assert escape_text(raw) == escaped
    assert unescape_text(escaped) == raw
    assert needs_escape(raw) == (raw != escaped)


def test_clean_ascii_is_returned_as_it_is() -> None:
    for text in ("gbACCEPT ", "qrouter-6c1f0e3a-7e57-4000-8000-000000000001", "eth0", "IN=gbb0 OUT= "):
        assert escape_text(text) is text


def test_bytes() -> None:
    assert escape_bytes(b"x\n\xff\xc3\xa9") == "x\\n\\xffé"
    assert escape_bytes(bytes(range(256))).encode("ascii", "strict")  # bytes 80-ff as \xHH: all ASCII


@pytest.mark.parametrize("bad", ["\\", "a\\q", "\\x4", "\\u12", "\\xZZ", "\\X41"])
def test_unescape_refuses_what_escape_never_writes(bad: str) -> None:
    with pytest.raises(ValueError):
        unescape_text(bad)


@given(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=sys.maxunicode)))
def test_round_trip_any_string(text: str) -> None:
    out = escape_text(text)
    assert unescape_text(out) == text
    assert "\n" not in out and "\r" not in out
    assert not needs_escape(out.replace("\\", ""))  # nothing left to escape but the escapes' own \\
    out.encode("utf-8")  # no surrogate left: valid UTF-8


@given(st.binary())
def test_round_trip_any_bytes(data: bytes) -> None:
    out = escape_bytes(data)
    assert unescape_text(out).encode("utf-8", "surrogateescape") == data
    out.encode("utf-8")


@given(st.text(), st.text())
def test_escaping_a_concatenation_is_concatenating_the_escapes(a: str, b: str) -> None:
    """What lets PRINTPKT escape "prefix IN=x OUT=y " in one go."""
    assert escape_text(a + b) == escape_text(a) + escape_text(b)


def test_fast_path_agrees_with_the_rule() -> None:
    """str.isprintable() is True for no character the rule escapes but the backslash."""
    for cp in range(sys.maxunicode + 1):
        ch = chr(cp)
        if ch.isprintable() and ch != "\\":
            assert escape_text(ch) == ch, hex(cp)


def test_cache() -> None:
    cache = EscapeCache(size=2)
    assert cache("a\nb") == "a\\nb"
    assert cache("a\nb") == "a\\nb"
    assert cache("") == ""
    assert cache("x") == "x"  # the cache was full: emptied, then this one kept
    assert cache.known == {"x": "x"}
