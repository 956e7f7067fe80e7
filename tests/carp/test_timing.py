"""carp/timing.py: §4.2 timers and the §4.4 slow-master test."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carp.timing import (
    MIN_INTERVAL_US,
    interval_us,
    is_bowout,
    is_slow_master,
    master_down_us,
    preference,
    seconds,
)

advbases = st.integers(0, 255)
advskews = st.integers(0, 255)


@pytest.mark.parametrize(
    ("advbase", "advskew", "expected"),
    [
        (1, 0, 1_000_000),
        (1, 100, 1_390_625),  # the §4.2 example
        (0, 1, 3906),
        (0, 128, 500_000),
        (0, 0, 3906),  # minimum 1/256 s
        (255, 254, 255_992_187),
    ],
)
def test_interval(advbase: int, advskew: int, expected: int) -> None:
    assert interval_us(advbase, advskew) == expected


def test_master_down_is_three_intervals() -> None:
    assert master_down_us(1, 100) == 4_171_875  # §4.2 example: 4.171875 s
    assert master_down_us(0, 0) == 3 * MIN_INTERVAL_US


@given(advbases, advskews)
def test_master_down_always_three_times_interval(advbase: int, advskew: int) -> None:
    assert master_down_us(advbase, advskew) == 3 * interval_us(advbase, advskew)
    assert interval_us(advbase, advskew) >= MIN_INTERVAL_US


def test_seconds() -> None:
    assert seconds(1_390_625) == pytest.approx(1.390625)


@given(advbases, advskews, advbases, advskews)
def test_preference_is_lexicographic(b1: int, s1: int, b2: int, s2: int) -> None:
    assert (preference(b1, s1) < preference(b2, s2)) == ((b1, s1) < (b2, s2))


@pytest.mark.parametrize(
    ("mine", "theirs", "slow"),
    [
        ((1, 0), (3, 1), True),  # (3, 0) < (3, 1)
        ((1, 0), (3, 0), False),  # equal is not slower
        ((1, 100), (3, 99), False),  # old form: advskew not tripled
        ((1, 100), (3, 101), True),
        ((1, 0), (255, 255), True),  # a bow-out is always slow for advbase < 85
        ((85, 254), (255, 255), True),  # (255, 254) < (255, 255): advbase <= 85, not < 85
        ((86, 0), (255, 255), False),
        ((0, 0), (255, 255), False),  # not evaluated when our advbase is 0
    ],
)
def test_slow_master(mine: tuple[int, int], theirs: tuple[int, int], slow: bool) -> None:
    assert is_slow_master(*mine, *theirs) is slow


def test_is_bowout() -> None:
    assert is_bowout(255, 255)
    assert not is_bowout(255, 254)
    assert not is_bowout(1, 255)
