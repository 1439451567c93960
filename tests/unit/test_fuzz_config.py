"""A short run of bench/fuzz/fuzz_config.py: the same generators and check (tests/fuzzing.py),
hypothesis drawing the seeds: only ConfigError, naming the file, may come out of reading a
config and building its stacks."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import fuzzing


@pytest.fixture(scope="module")
def check() -> Iterator[fuzzing.ConfigChecker]:
    c = fuzzing.ConfigChecker()
    yield c
    c.close()


def test_the_inputs_reach_both_verdicts(check: fuzzing.ConfigChecker) -> None:
    """Configs that all fail on their first line test nothing past the parser."""
    counts = Counter(check(t) for t in itertools.islice(fuzzing.config_inputs(7), 300))
    assert counts["accepted"] >= 20 and counts["rejected"] >= 100, counts


def test_the_seeds_build(check: fuzzing.ConfigChecker) -> None:
    accepted = [check(t) for t in fuzzing.config_seeds()].count("accepted")
    assert accepted >= len(fuzzing.config_seeds()) // 2


def test_a_nul_in_the_logfile_is_a_config_error(check: fuzzing.ConfigChecker) -> None:
    """What the first runs found: a ValueError from open(). The config reader now refuses the
    NUL itself (a control character, tests/unit/test_config.py)."""
    assert check('[global]\nlogfile="a\x00b"\nstack=l1:NFLOG,e1:LOGEMU\n') == "rejected"


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1))
def test_seeded_configs(check: fuzzing.ConfigChecker, seed: int) -> None:
    for text in itertools.islice(fuzzing.config_inputs(seed), 4):
        assert check(text) in ("accepted", "rejected")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet=st.sampled_from('[]=",:# \t\nabgloc1_-.\x00\udcff'), max_size=120))
def test_any_text(check: fuzzing.ConfigChecker, text: str) -> None:
    assert check("[global]\n" + text) in ("accepted", "rejected")
