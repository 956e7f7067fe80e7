"""carp/election.py: every row of the §4.4 table, and the absence of a tie-break."""

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carp.actions import Reason
from carp.constants import State
from carp.election import TABLE, Advert, Decision, decide, is_tie


def adv(
    mine: tuple[int, int] = (1, 0),
    theirs: tuple[int, int] = (1, 0),
    d_local: int = 0,
    d_peer: int = 0,
    preempt: bool = False,
) -> Advert:
    return Advert(mine[0], mine[1], d_local, theirs[0], theirs[1], d_peer, preempt)


def test_init_ignores_everything() -> None:
    grid = itertools.product([(0, 0), (1, 0), (255, 255)], [0, 3], [0, 3], [False, True])
    for theirs, dl, dp, pre in grid:
        out = decide(State.INIT, adv(theirs=theirs, d_local=dl, d_peer=dp, preempt=pre))
        assert out.decision is Decision.IGNORE
        assert out.row == "1"


@pytest.mark.parametrize(
    ("mine", "theirs", "d_local", "d_peer", "decision", "reason"),
    [
        ((1, 100), (1, 0), 0, 0, Decision.BECOME_BACKUP, Reason.PREEMPTED),  # better peer
        ((1, 0), (1, 0), 0, 0, Decision.BECOME_BACKUP, Reason.PREEMPTED),  # tie: step down
        ((1, 0), (1, 100), 0, 0, Decision.STAY_MASTER, None),  # worse peer
        ((1, 0), (1, 100), 1, 0, Decision.BECOME_BACKUP, Reason.DEMOTED),  # we are demoted
        ((1, 100), (1, 0), 0, 1, Decision.STAY_MASTER, None),  # better but demoted peer
        ((1, 0), (255, 255), 0, 0, Decision.STAY_MASTER, None),  # a bow-out does not move us
        ((1, 0), (0, 0), 2, 2, Decision.BECOME_BACKUP, Reason.PREEMPTED),
    ],
)
def test_master_rows(
    mine: tuple[int, int],
    theirs: tuple[int, int],
    d_local: int,
    d_peer: int,
    decision: Decision,
    reason: Reason | None,
) -> None:
    for preempt in (False, True):  # preempt plays no part in MASTER
        out = decide(State.MASTER, adv(mine, theirs, d_local, d_peer, preempt))
        assert (out.decision, out.reason) == (decision, reason)


@pytest.mark.parametrize(
    ("mine", "theirs", "d_local", "d_peer", "preempt", "decision", "reason", "row"),
    [
        ((1, 0), (1, 100), 0, 0, True, Decision.BECOME_MASTER, Reason.PREEMPT, "3"),
        ((1, 0), (1, 100), 0, 0, False, Decision.RESTART_MASTER_DOWN, None, "6"),
        ((1, 0), (1, 100), 1, 0, True, Decision.RESTART_MASTER_DOWN, None, "6"),  # we're demoted
        ((1, 0), (1, 100), 0, 2, True, Decision.BECOME_MASTER, Reason.PREEMPT, "3"),
        ((1, 100), (1, 0), 0, 1, False, Decision.BECOME_MASTER, Reason.PEER_DEMOTED, "4"),
        ((1, 100), (1, 0), 3, 4, True, Decision.BECOME_MASTER, Reason.PEER_DEMOTED, "4"),
        ((1, 0), (3, 1), 0, 0, False, Decision.BECOME_MASTER, Reason.SLOW_MASTER, "5"),
        ((1, 0), (3, 1), 1, 0, False, Decision.BECOME_MASTER, Reason.SLOW_MASTER, "5"),
        ((1, 0), (255, 255), 0, 0, True, Decision.BECOME_MASTER, Reason.BOWOUT_HEARD, "3"),
        ((1, 0), (255, 255), 0, 0, False, Decision.BECOME_MASTER, Reason.BOWOUT_HEARD, "5"),
        ((1, 0), (255, 255), 1, 0, True, Decision.BECOME_MASTER, Reason.BOWOUT_HEARD, "5"),
        ((86, 0), (255, 255), 0, 0, False, Decision.RESTART_MASTER_DOWN, None, "6"),
        ((0, 0), (255, 255), 0, 0, False, Decision.RESTART_MASTER_DOWN, None, "6"),
        ((1, 0), (1, 0), 0, 0, True, Decision.RESTART_MASTER_DOWN, None, "6"),  # equal: no preempt
    ],
)
def test_backup_rows(
    mine: tuple[int, int],
    theirs: tuple[int, int],
    d_local: int,
    d_peer: int,
    preempt: bool,
    decision: Decision,
    reason: Reason | None,
    row: str,
) -> None:
    out = decide(State.BACKUP, adv(mine, theirs, d_local, d_peer, preempt))
    assert (out.decision, out.reason, out.row) == (decision, reason, row)


def test_table_ends_every_state_with_a_catch_all() -> None:
    for state in State:
        rows = [r for r in TABLE if r.state is state]
        assert rows, state
        assert rows[-1].condition(adv()) is True


pairs = st.tuples(st.integers(0, 255), st.integers(0, 254))
demotes = st.integers(0, 255)


@given(pairs, pairs, demotes, demotes, st.booleans())
def test_two_masters_never_both_stay(
    a: tuple[int, int], b: tuple[int, int], da: int, db: int, preempt: bool
) -> None:
    """Hearing each other, at least one of two masters steps down; both do only on a tie."""
    out_a = decide(State.MASTER, adv(a, b, da, db, preempt))
    out_b = decide(State.MASTER, adv(b, a, db, da, preempt))
    down = [o.decision is Decision.BECOME_BACKUP for o in (out_a, out_b)]
    assert any(down)
    assert all(down) == is_tie(adv(a, b, da, db))


def test_tie_is_symmetric_and_exact() -> None:
    assert is_tie(adv((1, 5), (1, 5), 2, 2))
    assert not is_tie(adv((1, 5), (1, 6), 2, 2))
    assert not is_tie(adv((1, 5), (1, 5), 2, 3))
