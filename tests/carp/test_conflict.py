"""Split-brain detection (design.md §6 `conflict`): a MASTER hearing a valid, less preferred
advertisement for its own vhid reports the second master, once per own interval per peer."""

import itertools

import pytest

from carp.actions import Action, Conflict, Reason, StateChanged
from carp.carpif import PEERS_KEPT
from carp.constants import State
from carp.host import CarpHost
from carp.params import Sysctls
from carp.timing import interval_us, master_down_us, seconds
from tests.carp.sim import Sim, advert, carpdev, ifparams, pair

DEV = carpdev("lan0", 1, "192.0.2.1")


def conflicts(actions: list[Action]) -> list[Conflict]:
    return [a for a in actions if isinstance(a, Conflict)]


def recorded(sim: Sim, node: str, after: float = -1.0) -> list[Conflict]:
    return [
        r.action
        for r in sim.records
        if r.node == node and isinstance(r.action, Conflict) and r.at > after
    ]


def master_host(advbase: int = 1, advskew: int = 0) -> CarpHost:
    counter = itertools.count(1)
    params = ifparams(nodes=f"1:{advskew}", advbase=advbase, passphrase=b"secret")
    host = CarpHost(Sysctls(log=7), [params], {"lan0": DEV}, lambda: next(counter).to_bytes(8))
    host.start(0.0)
    deadline = host.get_timer()
    assert deadline is not None
    host.handle_timer(deadline)
    assert host.carpifs["carp0"].leader.state is State.MASTER
    return host


def test_one_way_failure_reports_the_second_master_once_per_interval() -> None:
    """a (advskew 0) stops reaching b: b takes over, a still hears b's less preferred adverts."""
    sim = pair(skew_a=0, skew_b=100)
    sim.start()
    sim.run_until(10.0)
    assert sim.masters() == ["a"]
    assert recorded(sim, "a") == []  # a healthy pair has no conflict
    sim.set_loss("a", "b", 1.0)  # one way: b no longer hears a
    sim.run_until(30.0)
    assert sorted(sim.masters()) == ["a", "b"]
    found = recorded(sim, "a")
    assert found, "a never reported b"
    assert {(c.carpif, c.vhid, c.peer) for c in found} == {("carp0", 1, "192.0.2.2")}
    assert {(c.advbase, c.advskew, c.demote) for c in found} == {(1, 100, 0)}
    times = [c.at for c in found]
    own = seconds(interval_us(1, 0))
    assert all(later - earlier >= own for earlier, later in itertools.pairwise(times))
    # b advertises every 1.390625 s, a's interval is 1 s: one report per advertisement of b
    b_became = next(t for t, _, c in sim.changes("b", State.MASTER))
    expected = int((30.0 - b_became) / seconds(interval_us(1, 100))) + 1
    assert abs(len(found) - expected) <= 1
    assert recorded(sim, "b") == []  # b hears nothing from a


def test_conflict_ends_when_the_link_heals() -> None:
    sim = pair(skew_a=0, skew_b=100)
    sim.start()
    sim.run_until(10.0)
    sim.set_loss("a", "b", 1.0)
    sim.run_until(20.0)
    sim.set_loss("a", "b", 0.0)
    sim.run_until(22.0)  # b hears a's next advertisement and yields (row 2a)
    healed = sim.now
    sim.run_until(40.0)
    assert sim.masters() == ["a"]
    assert [c.reason for _, _, c in sim.changes("b", State.BACKUP, after=20.0)] == [
        Reason.PREEMPTED
    ]
    assert recorded(sim, "a", after=healed) == []


@pytest.mark.parametrize("b_first", [True, False])
def test_healed_partition_reports_on_the_winner_only(b_first: bool) -> None:
    """After the heal the first advertisement decides: if b's reaches a first, a reports b
    once; if a's reaches b first, b yields at once and a never hears a second master."""
    sim = pair(skew_a=0, skew_b=100)
    sim.start()
    sim.run_until(10.0)
    sim.partition({"a"}, {"b"})
    sim.run_until(19.0)
    assert sorted(sim.masters()) == ["a", "b"]
    assert recorded(sim, "a") == recorded(sim, "b") == []  # neither hears the other
    b_next = next_advert(sim, "b")
    a_next = next_advert(sim, "a")
    assert b_next < a_next
    sim.run_until((b_next + a_next) / 2 if not b_first else b_next - 0.01)
    sim.heal()
    sim.run_until(30.0)
    assert sim.masters() == ["a"]
    assert recorded(sim, "b") == []  # the loser yields on hearing a: no conflict there
    reports = [(c.peer, c.advskew, c.at) for c in recorded(sim, "a")]
    assert reports == ([("192.0.2.2", 100, b_next)] if b_first else [])


def next_advert(sim: Sim, node: str) -> float:
    deadline = sim.host(node).carpifs["carp0"].leader.ad
    assert deadline is not None
    return deadline


def test_once_per_own_interval_per_peer() -> None:
    host = master_host(advbase=2)  # own interval 2 s
    worse = advert(advskew=10, advbase=2, src="192.0.2.7")
    first = conflicts(host.receive(7.0, "lan0", worse))
    assert first == [Conflict("carp0", 1, "192.0.2.7", 2, 10, 0, 7.0)]
    assert conflicts(host.receive(8.9, "lan0", worse)) == []  # within 2 s of the last
    other = advert(advskew=20, advbase=3, demote=0, src="192.0.2.8", counter=b"\x01" * 8)
    assert [c.peer for c in conflicts(host.receive(8.9, "lan0", other))] == ["192.0.2.8"]
    assert [c.at for c in conflicts(host.receive(9.0, "lan0", worse))] == [9.0]


def test_a_more_demoted_peer_is_a_conflict_too() -> None:
    host = master_host()
    better_but_demoted = advert(advskew=0, advbase=0, demote=3)
    (conflict,) = conflicts(host.receive(3.5, "lan0", better_but_demoted))
    assert (conflict.advbase, conflict.advskew, conflict.demote) == (0, 0, 3)
    assert host.carpifs["carp0"].leader.state is State.MASTER


def test_a_preferred_peer_is_no_conflict_we_yield() -> None:
    host = master_host(advskew=50)
    actions = host.receive(3.5, "lan0", advert(advskew=10))
    assert conflicts(actions) == []
    assert [(a.new, a.reason) for a in actions if isinstance(a, StateChanged)] == [
        (State.BACKUP, Reason.PREEMPTED)
    ]


def test_a_bow_out_is_no_conflict() -> None:
    host = master_host()
    assert conflicts(host.receive(3.5, "lan0", advert(advskew=255, advbase=255))) == []


def test_leaving_master_ends_the_conflict() -> None:
    host = master_host()
    sc = host.carpifs["carp0"]
    worse = advert(advskew=10)
    assert len(conflicts(host.receive(3.1, "lan0", worse))) == 1
    assert sc.leader.conflicts
    host.force_state(3.2, "carp0", State.BACKUP)
    assert sc.leader.conflicts == {}
    host.force_state(3.3, "carp0", State.MASTER)
    # a new conflict, reported at once although less than an interval passed
    assert [c.at for c in conflicts(host.receive(3.4, "lan0", worse))] == [3.4]


def test_invalid_adverts_are_no_conflict() -> None:
    host = master_host()
    assert conflicts(host.receive(3.5, "lan0", advert(advskew=10, passphrase=b"other"))) == []
    assert conflicts(host.receive(3.5, "lan0", advert(advskew=10, ttl=64))) == []


def test_peers_remembered_are_bounded() -> None:
    host = master_host()
    leader = host.carpifs["carp0"].leader
    for n in range(PEERS_KEPT + 5):
        host.receive(3.5, "lan0", advert(advskew=10, src=f"192.0.2.{100 + n}"))
    assert len(leader.conflicts) == PEERS_KEPT
    assert f"192.0.2.{100 + PEERS_KEPT + 4}" in leader.conflicts
    assert "192.0.2.100" not in leader.conflicts


def test_backup_never_reports() -> None:
    counter = itertools.count(1)
    params = ifparams(passphrase=b"secret")
    host = CarpHost(Sysctls(), [params], {"lan0": DEV}, lambda: next(counter).to_bytes(8))
    host.start(0.0)
    assert host.get_timer() == seconds(master_down_us(1, 0))
    assert conflicts(host.receive(1.0, "lan0", advert(advskew=10))) == []
