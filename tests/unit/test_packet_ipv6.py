"""pyulogd.packet.ipv6: the fixed header and ulogd2 2.0.8's extension header walk."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from base_helpers import DST6, SRC6, ah, esp, ext, frag6, ip6, tcp, udp  # noqa: E402
from pyulogd.packet import ipv6  # noqa: E402


def test_fixed_header() -> None:
    pkt = ip6(6, tcp(), tclass=0xB8, flow=0xABCDE, hlim=7)
    assert ipv6.decode(pkt, len(pkt)) == (SRC6, DST6, 20, 0xB8, 0xABCDE, 7)
    assert ipv6.decode(pkt, 39) is None and ipv6.decode(pkt, 40) is not None


def test_no_extension_header() -> None:
    pkt = ip6(17, udp())
    assert ipv6.walk(pkt, len(pkt)) == ((17, None, None), 17, 40, 10, None, False)
    pkt = ip6(59)  # no next header
    assert ipv6.walk(pkt, len(pkt)) == ((59, None, None), 59, 40, 0, None, False)


def test_options_routing_chain() -> None:
    pkt = ip6(0, ext(43) + ext(60, 14) + ext(6) + tcp())
    assert ipv6.walk(pkt, len(pkt)) == ((6, None, None), 6, 40 + 8 + 16 + 8, 20, None, False)


def test_first_fragment_is_parsed_on() -> None:
    pkt = ip6(44, frag6(17, 0, more=True, ident=0x1234) + udp())
    assert ipv6.walk(pkt, len(pkt)) == ((17, 0, 0x1234), 17, 48, 10, None, False)


def test_later_fragment_stops_at_its_next_header() -> None:
    pkt = ip6(44, frag6(17, 1448, ident=7) + b"\x00" * 16)
    assert ipv6.walk(pkt, len(pkt)) == ((17, 1448, 7), None, 48, 16, None, False)
    # An extension header after a later fragment header also ends the walk, as its nexthdr.
    pkt = ip6(44, frag6(60, 8, ident=7) + ext(17))
    assert ipv6.walk(pkt, len(pkt))[:2] == ((60, 8, 7), None)


def test_fragment_offset_is_in_bytes_and_ignores_flags() -> None:
    pkt = ip6(44, frag6(6, 0xFFF8, more=True, ident=1) + tcp())
    assert ipv6.walk(pkt, len(pkt))[0] == (6, 0xFFF8, 1)


def test_ah_is_skipped_and_spi_reported() -> None:
    pkt = ip6(51, ah(6, 0xFEEDF00D) + tcp())
    assert ipv6.walk(pkt, len(pkt)) == ((6, None, None), 6, 40 + 24, 20, 0xFEEDF00D, False)


def test_esp_stops_the_walk() -> None:
    pkt = ip6(0, ext(50) + esp(0xAB))
    assert ipv6.walk(pkt, len(pkt)) == ((50, None, None), None, 48, 24, 0xAB, False)


@pytest.mark.parametrize(
    "first,payload,cut",
    [
        (0, ext(6) + tcp(), 1),  # not even next header + length
        (0, ext(6) + tcp(), 7),  # options header longer than what is left
        (44, frag6(6, 0) + tcp(), 7),  # fragment header needs 8 bytes
        (51, ah(6, 1) + tcp(), 23),  # AH's declared length
        (50, esp(1), 7),  # ESP's SPI + sequence
    ],
)
def test_cut_short(first: int, payload: bytes, cut: int) -> None:
    pkt = ip6(first, payload)
    keys, proto, _off, _rem, _spi, cut_short = ipv6.walk(pkt, 40 + cut)
    assert keys[0] is None and proto is None and cut_short
    keys, proto, _off, _rem, _spi, cut_short = ipv6.walk(pkt, len(pkt))
    assert keys[0] is not None and not cut_short


def _chain(chain: list[int], tail: bytes) -> bytes:
    body, nxt = tail, 17
    for h in reversed(chain):
        body = {44: lambda n: frag6(n, 0, ident=99), 51: lambda n: ah(n, 0x5151)}.get(h, ext)(nxt) + body
        nxt = h
    return ip6(nxt, body)


@settings(max_examples=200, deadline=None)
@given(chain=st.lists(st.sampled_from([0, 43, 60, 44, 51]), max_size=6))
def test_extension_chains_against_dpkt(chain: list[int]) -> None:
    dpkt = pytest.importorskip("dpkt")
    assume(44 not in chain[:-1])  # dpkt 1.9.8 crashes on a fragment header that is not the last
    pkt = _chain(chain, udp(41000, 53))
    d: Any = dpkt.ip6.IP6(pkt)
    keys, proto, off, rem, spi, cut = ipv6.walk(pkt, len(pkt))
    assert not cut and proto == d.p == 17 and keys[0] == 17
    assert pkt[off : off + 4] == bytes(d.data)[:4] and rem == len(bytes(d.data))
    if 44 in chain:
        assert keys[1:] == (0, 99)
    if 51 in chain:
        assert spi == d.extension_hdrs[51].spi == 0x5151


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=80), nxt=st.sampled_from(sorted(ipv6.EXTENSION_HEADERS) + [6, 17, 58]))
def test_walk_never_raises(data: bytes, nxt: int) -> None:
    pkt = ip6(nxt, data)
    for cut in range(40, len(pkt) + 1):
        keys, proto, off, rem, _spi, _cut = ipv6.walk(pkt, cut)
        assert off + rem == cut or proto is None
