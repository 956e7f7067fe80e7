"""carp/vhe.py: one carpnode's timers and cookie."""

import itertools

import pytest

from carp.constants import State
from carp.vhe import AF_INET, AF_INET6, Timer, Vhe

MAC = bytes.fromhex("00005e000101")


def vhe() -> Vhe:
    return Vhe(1, 0, True, MAC)


def test_starts_in_init_without_timers() -> None:
    v = vhe()
    assert v.state is State.INIT
    assert v.deadline() is None
    assert v.due(1e9) is None
    assert "vhid=1" in repr(v)


def test_backup_arms_only_the_given_families() -> None:
    v = vhe()
    assert v.enter_backup(10.0, 3.0, [AF_INET]) is State.INIT
    assert (v.state, v.ad, v.md, v.md6) == (State.BACKUP, None, 13.0, None)
    v.enter_backup(11.0, 3.0, [AF_INET, AF_INET6])
    assert (v.md, v.md6) == (14.0, 14.0)


def test_backup_without_family_is_refused() -> None:
    with pytest.raises(ValueError, match="master-down"):
        vhe().enter_backup(0.0, 3.0, [])


def test_advert_restarts_only_its_family() -> None:
    v = vhe()
    v.enter_backup(0.0, 3.0, [AF_INET, AF_INET6])
    v.restart_master_down(2.0, 3.0, AF_INET)
    assert (v.md, v.md6) == (5.0, 3.0)
    assert v.deadline() == 3.0
    assert v.due(2.9) is None
    assert v.due(3.0) is Timer.MD6  # IPv6 adverts stopped: md6 alone fires
    v.restart_master_down(3.0, 3.0, AF_INET6)
    assert v.due(5.0) is Timer.MD
    with pytest.raises(ValueError, match="family"):
        v.restart_master_down(0.0, 1.0, 17)


def test_master_has_only_the_ad_timer() -> None:
    v = vhe()
    v.enter_backup(0.0, 3.0, [AF_INET, AF_INET6])
    assert v.enter_master(3.0, 1.0) is State.BACKUP
    assert (v.state, v.ad, v.md, v.md6) == (State.MASTER, 4.0, None, None)
    assert v.due(4.0) is Timer.AD
    v.rearm_ad(4.0, 1.0)
    assert v.deadline() == 5.0
    assert v.enter_init() is State.MASTER
    assert (v.ad, v.md, v.md6, v.deadline()) == (None, None, None, None)


def test_cookie_drawn_once_and_never_zero() -> None:
    draws = iter([bytes(8), bytes(8), b"\x01" * 8, b"\x02" * 8])
    v = vhe()
    assert not v.is_own(bytes(8))  # no cookie yet: nothing is ours, not even a zero counter
    assert v.ensure_cookie(lambda: next(draws)) == b"\x01" * 8
    assert v.ensure_cookie(lambda: next(draws)) == b"\x01" * 8  # constant, never incremented
    assert v.is_own(b"\x01" * 8)
    assert not v.is_own(b"\x02" * 8)
    assert not v.is_own(bytes(8))


def test_cookie_of_wrong_length_is_refused() -> None:
    with pytest.raises(ValueError, match="bytes"):
        vhe().ensure_cookie(lambda: b"\x01" * 7)


def test_due_prefers_the_ad_timer() -> None:
    v = vhe()
    # impossible through the transitions, but `due` must still be deterministic
    v.ad, v.md, v.md6 = 1.0, 1.0, 1.0
    assert v.due(1.0) is Timer.AD


@pytest.mark.parametrize("first", [State.INIT, State.BACKUP, State.MASTER])
def test_transitions_keep_the_timer_invariant(first: State) -> None:
    v = vhe()
    steps = {
        State.INIT: lambda t: v.enter_init(),
        State.BACKUP: lambda t: v.enter_backup(t, 3.0, [AF_INET6]),
        State.MASTER: lambda t: v.enter_master(t, 1.0),
    }
    for t, state in enumerate(itertools.chain([first], State, reversed(State))):
        steps[state](float(t))
        assert v.state is state
        assert (v.ad is not None) == (state is State.MASTER)
        assert (v.md is not None or v.md6 is not None) == (state is State.BACKUP)
