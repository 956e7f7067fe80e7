"""Whole-protocol scenarios on the fake segment (tests/carp/sim.py), in virtual time."""

import math

import pytest

from carp.actions import Reason, TxKind
from carp.constants import Balancing, State
from carp.params import Sysctls
from carp.timing import interval_us, master_down_us, seconds
from carp.wire import parse_ip
from tests.carp.sim import Sim, carpdev, ifparams, pair

MD_B = seconds(master_down_us(1, 100))  # b's master-down time: 3 x 1.390625 s


def last_advert(sim: Sim, node: str, before: float, carpif: str = "carp0") -> float:
    times = [
        t for t, _, a in sim.transmits(TxKind.ADVERT, node) if t <= before and a.carpif == carpif
    ]
    assert times, f"{node} never advertised {carpif}"
    return times[-1]


def became_master(sim: Sim, node: str, after: float = -1.0, carpif: str = "carp0") -> list[float]:
    return [t for t, _, c in sim.changes(node, State.MASTER, after) if c.carpif == carpif]


# -- election


def test_cold_start_elects_the_most_frequent_advertiser() -> None:
    sim = pair(skew_a=0, skew_b=100)
    sim.start()
    sim.run_until(30.0)
    assert sim.masters() == ["a"]
    assert became_master(sim, "a") == [3.0]  # a full master-down interval after start
    assert became_master(sim, "b") == []
    assert [c.reason for _, _, c in sim.changes("a", State.MASTER)] == [Reason.MASTER_DOWN]
    assert sim.state("b") is State.BACKUP
    assert sim.host("b").stats.preempt == 0


def test_later_better_node_wins_the_first_round_if_it_times_out_first() -> None:
    sim = pair(skew_a=0, skew_b=100)
    sim.start("b")
    sim.run_until(1.0)
    sim.start("a")  # a times out at 4.0, b at 4.171875
    sim.run_until(20.0)
    assert sim.masters() == ["a"]
    assert became_master(sim, "b") == []


def test_equal_priorities_have_no_tie_break() -> None:
    """Two masters with identical (advbase, advskew, demote) both step down (§4.4 ties)."""
    sim = pair(skew_a=0, skew_b=0)
    sim.set_delay("a", "b", 0.1)  # both time out before hearing the other
    sim.start()
    sim.run_until(3.05)
    assert sorted(sim.masters()) == ["a", "b"]
    sim.run_until(3.15)
    assert sim.masters() == []  # each heard the other: both went BACKUP
    reasons = {c.reason for _, _, c in sim.changes(new=State.BACKUP, after=3.0)}
    assert reasons == {Reason.PREEMPTED}
    # perfectly symmetric, so it repeats; only timing jitter breaks it (here: none)
    sim.run_until(6.2)
    assert sim.masters() == []
    assert len(became_master(sim, "a")) == len(became_master(sim, "b")) == 2


def test_equal_priorities_settle_with_any_asymmetry() -> None:
    sim = pair(skew_a=0, skew_b=0)
    sim.start("a")
    sim.run_until(0.2)
    sim.start("b")
    sim.run_until(20.0)
    assert sim.masters() == ["a"]
    assert became_master(sim, "b") == []


# -- failover and preemption


def test_failover_exactly_at_master_down() -> None:
    sim = pair()
    sim.start()
    sim.run_until(10.5)
    sim.kill("a")
    last = last_advert(sim, "a", 10.5)
    assert last == pytest.approx(10.0)
    sim.run_until(30.0)
    (t,) = became_master(sim, "b")
    assert t == pytest.approx(last + MD_B, abs=1e-9)  # 3 x b's own interval after the last advert
    assert sim.masters() == ["b"]
    garps = sim.transmits(TxKind.GARP, "b")
    assert garps[0][0] == t  # announced at takeover
    assert garps[1][0] == pytest.approx(t + 2 * seconds(interval_us(1, 100)))  # and repeated


def test_failover_counts_link_delay() -> None:
    sim = pair()
    sim.set_delay("a", "b", 0.25)
    sim.start()
    sim.run_until(10.5)
    sim.kill("a")
    sim.run_until(30.0)
    (t,) = became_master(sim, "b")
    assert t == pytest.approx(last_advert(sim, "a", 10.5) + 0.25 + MD_B, abs=1e-9)


@pytest.mark.parametrize("preempt", [True, False])
def test_returning_master_preempts_only_with_preempt(preempt: bool) -> None:
    sim = pair(preempt=preempt)
    sim.start()
    sim.run_until(5.5)
    sim.kill("a")
    sim.run_until(15.0)
    assert sim.masters() == ["b"]
    sim.reboot("a")
    sim.run_until(40.0)
    if preempt:
        assert sim.masters() == ["a"]
        (t,) = became_master(sim, "a", after=15.0)
        # on the first advert of b it hears: within one of b's intervals, before master-down
        assert 15.0 < t <= 15.0 + seconds(interval_us(1, 100))
        assert [c.reason for _, _, c in sim.changes("a", State.MASTER, 15.0)] == [Reason.PREEMPT]
        assert [c.reason for _, _, c in sim.changes("b", State.BACKUP, 15.0)] == [Reason.PREEMPTED]
    else:
        assert sim.masters() == ["b"]
        assert became_master(sim, "a", after=15.0) == []


def test_bowout_gives_an_immediate_takeover() -> None:
    sim = pair()  # preempt off: the slow-master rule takes over
    sim.start()
    sim.run_until(7.3)
    sim.act("a", lambda h, now: h.set_admin(now, "carp0", False))
    assert sim.transmits(TxKind.BOWOUT, "a")[0][0] == 7.3
    assert sim.masters() == ["b"]
    ((t, _, change),) = sim.changes("b", State.MASTER)
    assert (t, change.reason) == (7.3, Reason.BOWOUT_HEARD)
    assert sim.state("a") is State.INIT
    sim.run_until(20.0)
    assert sim.masters() == ["b"]


def test_shutdown_bows_out_of_every_interface() -> None:
    sim = pair(preempt=True)
    sim.start()
    sim.run_until(4.5)
    sim.act("a", lambda h, now: h.shutdown(now))
    assert sim.masters() == ["b"]


# -- group failover through demotion (§5.3)


def firewalls(preempt: bool = False) -> Sim:
    """carp(4)'s two-firewall example: carp0 on lan0 and carp1 on lan1 on both nodes."""
    sim = Sim()
    for index, (name, skew) in enumerate((("a", 0), ("b", 100)), start=1):
        carpifs = [
            ifparams("carp0", "lan0", ("192.0.2.10/24",), f"1:{skew}", passphrase=b"x"),
            ifparams("carp1", "lan1", ("198.51.100.10/24",), f"2:{skew}", passphrase=b"y"),
        ]
        devs = [
            carpdev("lan0", index, f"192.0.2.{index}"),
            carpdev("lan1", index, f"198.51.100.{index}"),
        ]
        sim.add(name, carpifs, devs, Sysctls(preempt=preempt, log=7))
        sim.connect("seg0", name, "lan0")
        sim.connect("seg1", name, "lan1")
    sim.start()
    sim.run_until(10.5)
    assert sim.masters("carp0") == sim.masters("carp1") == ["a"]
    return sim


@pytest.mark.parametrize("preempt", [False, True])
def test_group_failover_moves_every_interface(preempt: bool) -> None:
    sim = firewalls(preempt)
    sim.act("a", lambda h, now: h.set_carpdev_link(now, "lan1", False))
    # carp1 went INIT; group carp 0 -> 1 made carp0 advertise demote 1 at once
    assert sim.state("a", "carp1") is State.INIT
    assert sim.masters("carp0") == ["b"]
    ((t0, _, c0),) = sim.changes("b", State.MASTER)
    # with preempt, a also advertises advskew 240 (design.md decision 5): row 3 matches first
    reason = Reason.PREEMPT if preempt else Reason.PEER_DEMOTED
    assert (t0, c0.carpif, c0.reason) == (10.5, "carp0", reason)
    ((_, _, demoted),) = [r for r in sim.transmits(TxKind.ADVERT, "a") if r[0] == 10.5]
    header = parse_ip(demoted.frame[14:]).header
    assert header is not None
    assert (header.demote, header.advskew) == (1, 240 if preempt else 0)
    sim.run_until(30.0)
    assert sim.masters("carp0") == sim.masters("carp1") == ["b"]
    (t1,) = became_master(sim, "b", carpif="carp1")
    assert t1 == pytest.approx(last_advert(sim, "a", 10.5, "carp1") + MD_B, abs=1e-9)
    assert sim.host("a").groups["carp"] == 1
    # the link comes back: demotion is undone; fail-back needs preempt (§5.3)
    sim.act("a", lambda h, now: h.set_carpdev_link(now, "lan1", True))
    assert sim.host("a").groups["carp"] == 0
    sim.run_until(60.0)
    expected = ["a"] if preempt else ["b"]
    assert sim.masters("carp0") == sim.masters("carp1") == expected


def test_admin_demotion_hands_over_and_back() -> None:
    """`ifconfig -g carp carpdemote 50` for a maintenance hand-off, then `-carpdemote 50`."""
    sim = firewalls(preempt=True)
    sim.act("a", lambda h, now: h.group_demote(now, "carp", 50))
    assert sim.masters("carp0") == sim.masters("carp1") == ["b"]  # both at once
    sim.run_until(30.0)
    assert sim.masters("carp0") == sim.masters("carp1") == ["b"]
    sim.act("a", lambda h, now: h.group_demote(now, "carp", -50))
    sim.run_until(40.0)
    assert sim.masters("carp0") == sim.masters("carp1") == ["a"]


# -- split brain (design.md decision 6)


def split(sim: Sim) -> None:
    sim.start()
    sim.run_until(5.5)
    sim.partition({"a"}, {"b"})
    sim.run_until(15.0)
    assert sorted(sim.masters()) == ["a", "b"]
    (t,) = became_master(sim, "b")
    assert t == pytest.approx(5.0 + MD_B, abs=1e-9)
    assert sim.transmits(TxKind.GARP, "b")  # b announced itself on its side


def next_ad(sim: Sim, node: str) -> float:
    deadline = sim.host(node).carpifs["carp0"].leader.ad
    assert deadline is not None
    return deadline


def until_next_advert_is_from(sim: Sim, first: str, other: str) -> tuple[float, float]:
    """Run (partitioned) until `first` advertises next; return both next advert times."""
    for _ in range(10):
        if next_ad(sim, first) < next_ad(sim, other):
            return next_ad(sim, first), next_ad(sim, other)
        sim.run_until(next_ad(sim, other))
    raise AssertionError("the advert order never changed")


def test_split_brain_heals_and_the_winner_reannounces() -> None:
    sim = pair()
    split(sim)
    b_next, a_next = until_next_advert_is_from(sim, "b", "a")
    heal = sim.now
    sim.heal()
    sim.run_until(heal + 5.0)
    assert sim.masters() == ["a"]
    (t_backup,) = [t for t, _, _ in sim.changes("b", State.BACKUP, heal)]
    assert t_backup == a_next  # b yields on a's next regular advertisement
    # a heard the less preferred master b first and re-announced its addresses
    assert [t for t, _, _ in sim.transmits(TxKind.GARP, "a", heal)] == [b_next]
    assert sim.transmits(TxKind.GARP, "b", heal) == []


def test_split_brain_heal_when_the_loser_hears_first() -> None:
    sim = pair()
    split(sim)
    a_next, _ = until_next_advert_is_from(sim, "a", "b")
    heal = sim.now
    sim.heal()
    sim.run_until(heal + 5.0)
    assert sim.masters() == ["a"]
    ((t, _, change),) = sim.changes("b", State.BACKUP, heal)
    assert (t, change.reason) == (a_next, Reason.PREEMPTED)
    # the loser yielded silently, so a heard nobody and did not re-announce; its adverts,
    # sent from the virtual MAC, re-teach the switches
    assert sim.transmits(TxKind.GARP, "a", heal) == []
    vmac = sim.host("a").carpifs["carp0"].mac
    ads = [a for _, _, a in sim.transmits(TxKind.ADVERT, "a", heal)]
    assert ads and all(a.frame[6:12] == vmac for a in ads)


def test_one_way_loss_is_a_split_brain_until_it_stops() -> None:
    sim = pair()
    sim.start()
    sim.run_until(5.5)
    sim.set_loss("a", "b", 1.0)
    sim.run_until(20.0)
    assert sorted(sim.masters()) == ["a", "b"]  # b hears nothing; a ignores a worse master
    sim.set_loss("a", "b", 0.0)
    sim.run_until(22.0)
    assert sim.masters() == ["a"]


def test_lossy_link_is_deterministic_per_seed() -> None:
    def run(seed: int) -> list[tuple[float, str, State]]:
        sim = pair(seed=seed)
        sim.set_loss("a", "b", 0.5)
        sim.start()
        sim.run_until(120.0)
        return [(t, n, c.new) for t, n, c in sim.changes()]

    first = run(7)
    assert first == run(7)
    assert len([c for c in first if c[1] == "b" and c[2] is State.MASTER]) >= 1


# -- dual stack: only one family's adverts stop (§4.2)


def test_dual_stack_backup_takes_over_when_only_ipv6_stops() -> None:
    sim = pair(addresses=("192.0.2.10/24", "2001:db8::10/64"))
    sim.start()
    sim.run_until(8.5)
    sim.drop = lambda src, dst, tx: tx.af == 6
    sim.run_until(20.0)
    t = became_master(sim, "b")[0]
    assert t == pytest.approx(8.0 + MD_B, abs=1e-9)  # md6 fired although IPv4 kept arriving
    # a (more preferred) still reaches b over IPv4 and b yields on a's next advert; without
    # IPv6 adverts it then times out again: the family that stops decides, as in the kernel
    ((t_back, _, change), *_) = sim.changes("b", State.BACKUP, t)
    assert (t_back, change.reason) == (math.floor(t) + 1.0, Reason.PREEMPTED)
    assert became_master(sim, "b")[1] == pytest.approx(t_back + MD_B, abs=1e-9)


# -- load balancing: carpnodes (§6.1)


def test_carpnodes_give_each_node_one_master() -> None:
    sim = pair(balancing=Balancing.IP, nodes_a="1:0,2:100", nodes_b="1:100,2:0")
    sim.start()
    sim.run_until(20.0)
    assert sim.masters("carp0", 1) == ["a"]
    assert sim.masters("carp0", 2) == ["b"]
    a, b = sim.host("a").carpifs["carp0"], sim.host("b").carpifs["carp0"]
    assert (a.lsmask, a.lscount, b.lsmask, b.lscount) == (0b01, 2, 0b10, 2)
    assert a.carrier and b.carrier
    assert not sim.transmits(TxKind.GARP)  # no announcements in ip mode
    sim.kill("b")
    sim.run_until(40.0)
    assert a.lsmask == 0b11  # a serves both halves


# -- sub-second failover


def test_advbase_zero_sub_second_failover() -> None:
    sim = pair(skew_a=0, skew_b=10, advbase=0)
    sim.start()
    sim.run_until(1.0)
    assert sim.masters() == ["a"]
    sim.kill("a")
    last = last_advert(sim, "a", 1.0)
    sim.run_until(2.0)
    (t,) = became_master(sim, "b")
    assert t - last == pytest.approx(seconds(master_down_us(0, 10)), abs=1e-9)  # 3 x 39062 us
    assert t - last < 0.2


# -- unicast carppeer


def test_unicast_carppeers_elect_and_fail_over() -> None:
    sim = Sim()
    for index, (name, skew, peer) in enumerate((("a", 0, 2), ("b", 100, 1)), start=1):
        params = ifparams(nodes=f"1:{skew}", carppeer=carpdev("lan0", 0, f"192.0.2.{peer}").ipv4)
        sim.add(name, [params], [carpdev("lan0", index, f"192.0.2.{index}")])
        sim.connect("seg0", name, "lan0")
    sim.start()
    sim.run_until(10.5)
    assert sim.masters() == ["a"]
    assert all(tx.next_hop is not None for _, _, tx in sim.transmits(TxKind.ADVERT))
    sim.kill("a")
    sim.run_until(20.0)
    assert sim.masters() == ["b"]
