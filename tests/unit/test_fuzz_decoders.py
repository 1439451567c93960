"""A short run of bench/fuzz/fuzz_decoders.py: the same generators and checks (tests/fuzzing.py),
hypothesis drawing the seeds. The long run (10^6 inputs per decoder) is in bench/fuzz/README.md."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyulogd.codec import netlink as nl
from pyulogd.codec import nfct
from tests import fuzzing
from tests.builders.nfct import Tuple, build_ct
from tests.builders.nflog import build_packet

CHECKS = fuzzing.decoder_checks()
KINDS = sorted(CHECKS)


@pytest.mark.parametrize("kind", KINDS)
def test_the_inputs_reach_both_verdicts(kind: str) -> None:
    """A fuzzer whose inputs all fail the first length check tests nothing: the mutations must
    keep enough structure that the decoders accept a good share and refuse another."""
    inputs, check = CHECKS[kind]
    counts = Counter(check(x) for x in itertools.islice(inputs(7), 400))
    assert counts["accepted"] >= 40 and counts["rejected"] >= 40, counts


def _each(kind: str) -> tuple[Callable[[int], Iterator[bytes]], Callable[[bytes], str]]:
    return CHECKS[kind]


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_seeded_inputs(kind: str, seed: int) -> None:
    inputs, check = _each(kind)
    for data in itertools.islice(inputs(seed), 8):
        assert check(data) in ("accepted", "rejected", "other"), data.hex()


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=300))
def test_any_bytes(kind: str, data: bytes) -> None:
    assert _each(kind)[1](data) in ("accepted", "rejected", "other")


def test_an_entry_nfct_accepts_renders_whole_and_nflogs_ct_never_fails() -> None:
    """Issue 10, item 8, as the fuzz checks see it: NFCT refuses an entry with a malformed
    protocol state (so XML never meets one), NFLOG passes it on in ``ct`` and XML copes."""
    bad_state = nl.nla(nfct.CTA_PROTOINFO | nl.NLA_F_NESTED,
                       nl.nla(1 | nl.NLA_F_NESTED, b"\x28\x00\x01\x00\x03\x00\x00\x00"))  # fmt: skip
    msg = build_ct(nfct.NEW, Tuple(bytes(4), bytes(4), 6, 1, 2), extra=[bad_state])
    assert CHECKS["nfct"][1](msg) == "rejected"
    assert CHECKS["nflog"][1](build_packet(prefix=b"x", payload=b"", ct=msg[20:])) == "accepted"
