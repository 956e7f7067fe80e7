"""Advertisement and master-down timing (carp-protocol.md §4.2, §4.4; design.md decision 2).

Everything is in integer microseconds, as the kernel's `timeout_add_usec`; `seconds()` converts a
duration for the float `now` of the sans-IO entry points.
"""

from carp.constants import CARP_BOWOUT

USEC = 1_000_000
SKEW_STEPS = 256  # advskew is in 1/256 s
MIN_INTERVAL_US = USEC // SKEW_STEPS  # 3906 us: advbase 0 with advskew 0 (§4.2)
MASTER_DOWN_MULTIPLIER = 3


def interval_us(advbase: int, advskew: int) -> int:
    """The advertisement interval `advbase + advskew/256` s, at least 1/256 s.

    §4.2, ip_carp.c carp_send_ad / carp_setrun (current code, rev 1.370).
    """
    us = advbase * USEC + (advskew * USEC) // SKEW_STEPS
    return us if us > 0 else MIN_INTERVAL_US


def master_down_us(advbase: int, advskew: int) -> int:
    """The BACKUP timeout `3 * interval` (current OpenBSD, §4.2 carp_setrun BACKUP case)."""
    return MASTER_DOWN_MULTIPLIER * interval_us(advbase, advskew)


def seconds(us: int) -> float:
    return us / USEC


def preference(advbase: int, advskew: int) -> int:
    """One number ordering (advbase, advskew) pairs as the kernel's timeval compare does (§4.4).

    Smaller means more frequent, which means preferred; advskew < 256 makes the pair compare
    lexicographically, which `advbase * 256 + advskew` reproduces (advskew 255 of a bow-out too).
    """
    return advbase * SKEW_STEPS + advskew


def is_slow_master(advbase: int, advskew: int, their_advbase: int, their_advskew: int) -> bool:
    """The "slow master" shortcut of §4.4 row 5 (ip_carp.c carp_proto_input_c).

    True when the master advertises so rarely that our old-form master-down time
    `(3*advbase, advskew)` would certainly expire first. The kernel kept the historical form here
    (advskew not tripled) and skips the test when our advbase is 0.
    """
    if advbase == 0:
        return False
    mine = preference(MASTER_DOWN_MULTIPLIER * advbase, advskew)
    return mine < preference(their_advbase, their_advskew)


def is_bowout(advbase: int, advskew: int) -> bool:
    """advbase 255 with advskew 255 only occurs in a bow-out advertisement (§4.7)."""
    return advbase == CARP_BOWOUT and advskew == CARP_BOWOUT
