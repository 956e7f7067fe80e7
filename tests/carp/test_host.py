"""carp/host.py: the §1.6 receive pipeline, carpstats, logs, sysctls, groups and demotion."""

import errno
import itertools
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address

import pytest

from carp.actions import Action, DemoteChanged, Log, Reason, StateChanged, Transmit, TxKind
from carp.checksum import inet_checksum
from carp.constants import LOG_ERR, LOG_INFO, LOG_NOTICE, LOG_WARNING, State
from carp.host import CarpHost
from carp.params import CarpDev, CarpIfParams, Sysctls
from carp.wire import parse_ip
from tests.carp.sim import Sim, advert, carpdev, ifparams

LAN0 = carpdev("lan0", 1, "192.0.2.1", "fe80::1")
LAN1 = carpdev("lan1", 1, "198.51.100.1")
LAN2 = carpdev("lan2", 1)


def make(
    carpifs: Sequence[CarpIfParams] | None = None,
    sysctls: Sysctls | None = None,
    devs: Sequence[CarpDev] = (LAN0, LAN1, LAN2),
) -> CarpHost:
    carpifs = carpifs if carpifs is not None else [ifparams(passphrase=b"secret")]
    counter = itertools.count(1)
    return CarpHost(
        sysctls or Sysctls(log=7),
        carpifs,
        {d.name: d for d in devs},
        lambda: next(counter).to_bytes(8, "big"),
    )


def started(**kw: object) -> CarpHost:
    host = make(**kw)  # type: ignore[arg-type]
    host.start(0.0)
    return host


def nonzero(host: CarpHost) -> dict[str, int]:
    return {k: v for k, v in host.stats.as_dict().items() if v}


def logs(actions: Sequence[Action]) -> list[tuple[int, str]]:
    return [(a.level, a.message) for a in actions if isinstance(a, Log)]


def states(actions: Sequence[Action]) -> list[tuple[State, State, Reason]]:
    return [(a.old, a.new, a.reason) for a in actions if isinstance(a, StateChanged)]


def with_checksum(packet: bytes, offset: int, value: int) -> bytes:
    """Rewrite one byte of the CARP header and fix its checksum."""
    raw = bytearray(packet)
    start = 20 if packet[0] >> 4 == 4 else 40
    raw[start + offset] = value
    raw[start + 6 : start + 8] = b"\x00\x00"
    raw[start + 6 : start + 8] = inet_checksum(bytes(raw[start : start + 36])).to_bytes(2, "big")
    return bytes(raw)


# -- construction


def test_constructor_checks() -> None:
    with pytest.raises(ValueError, match="duplicate carp interface"):
        make([ifparams(), ifparams(nodes="2:0")])
    with pytest.raises(ValueError, match="unknown carpdev"):
        make([ifparams(carpdev="nope")])
    with pytest.raises(ValueError, match="vhid 2 already used on lan0"):
        make([ifparams(nodes="1:0,2:0"), ifparams("carp1", nodes="2:0,3:0")])
    host = make([ifparams(), ifparams("carp1", carpdev="lan1", groups=("fw",))])  # ok elsewhere
    assert host.groups == {"carp": 0, "fw": 0}
    assert host.get_timer() is None  # nothing runs before start()


# -- receive pipeline, in order (§1.6)


def test_valid_advert_is_processed() -> None:
    host = started()
    actions = host.receive(1.0, "lan0", advert(advskew=0, demote=1))  # more demoted master
    assert states(actions) == [(State.BACKUP, State.MASTER, Reason.PEER_DEMOTED)]
    assert nonzero(host) == {"ipackets": 1, "preempt": 1}


def test_not_carp_is_not_counted() -> None:
    host = started()
    packet = bytearray(advert())
    packet[9] = 6  # TCP
    assert host.receive(1.0, "lan0", bytes(packet)) == []
    assert host.receive(1.0, "lan0", b"") == []
    assert nonzero(host) == {}


def test_allow_zero_counts_then_drops() -> None:
    host = started(sysctls=Sysctls(allow=False, log=7))
    assert host.receive(1.0, "lan0", advert(demote=9)) == []
    assert host.receive(1.0, "lan0", advert(src="fe80::9", v4=[])) == []
    assert nonzero(host) == {"ipackets": 1, "ipackets6": 1}
    assert host.carpifs["carp0"].leader.state is State.BACKUP


def test_ip_layer_drops_come_first_and_apart() -> None:
    """ip_input drops a broken header before carp_proto_input: no carpstats counter moves."""
    host = started(sysctls=Sysctls(allow=False, log=7))
    packet = bytearray(advert(demote=9))
    packet[0] = 0x44  # IHL 4
    assert host.receive(1.0, "lan0", bytes(packet)) == []
    packet = bytearray(advert(demote=9))
    packet[8] = 254  # TTL changed, header checksum not
    assert host.receive(1.0, "lan0", bytes(packet)) == []
    assert nonzero(host) == {}
    drops = {k: v for k, v in host.stats.ip_drops.as_dict().items() if v}
    assert drops == {"badhlen": 1, "badsum": 1}
    assert host.carpifs["carp0"].leader.state is State.BACKUP


def test_badif() -> None:
    host = started()
    unicast = advert(dst="198.51.100.1")  # lan1's own address
    actions = host.receive(1.0, "lan1", unicast)  # no carp interface on lan1
    assert logs(actions) == [(LOG_INFO, "carp: packet received on non-carp interface")]
    host.receive(1.0, "lan2", advert(src="fe80::9", v4=[]))
    assert nonzero(host) == {"ipackets": 1, "ipackets6": 1, "badif": 2}
    # multicast IPv4 reaches the parent anyway and fails later, on the vhid
    host.receive(1.0, "lan2", advert())
    assert host.stats.badvhid == 1


def test_ipv6_needs_an_up_carp_interface() -> None:
    host = started()
    host.set_admin(0.5, "carp0", False)
    host.receive(1.0, "lan0", advert(src="fe80::9", v4=[]))
    host.receive(1.0, "lan0", advert())  # IPv4 multicast: the parent passes it, vhid fails
    assert (host.stats.badif, host.stats.badvhid) == (1, 1)


def test_badttl_badlen_badsum() -> None:
    host = started()
    actions = host.receive(1.0, "lan0", advert(ttl=64))
    assert logs(actions) == [(LOG_NOTICE, "carp: received ttl 64 != 255 on lan0")]
    actions = host.receive(1.0, "lan0", advert(src="fe80::9", ttl=1))
    assert logs(actions) == [(LOG_NOTICE, "carp: received ttl 1 != 255 on lan0")]
    short = bytearray(advert()[:40])
    short[2:4] = (40).to_bytes(2, "big")  # what a sender of a short packet says
    short[10:12] = b"\0\0"
    short[10:12] = inet_checksum(bytes(short[:20])).to_bytes(2, "big")
    actions = host.receive(1.0, "lan0", bytes(short))
    assert logs(actions) == [(LOG_INFO, "carp: packet size 40 too small")]
    bad = bytearray(advert())
    bad[30] ^= 0xFF
    assert logs(host.receive(1.0, "lan0", bytes(bad))) == [
        (LOG_INFO, "carp: checksum failed on lan0")
    ]
    assert nonzero(host) == {
        "ipackets": 3,
        "ipackets6": 1,
        "badttl": 2,
        "badlen": 1,
        "badsum": 1,
    }


def test_badvhid() -> None:
    host = started()
    assert host.receive(1.0, "lan0", advert(vhid=9)) == []  # not logged
    host.set_admin(1.0, "carp0", False)
    host.receive(1.5, "lan0", advert())  # the interface is not running
    assert host.stats.badvhid == 2


def test_unicast_and_multicast_peers_do_not_mix() -> None:
    peer = IPv4Address("192.0.2.2")
    host = started(carpifs=[ifparams(carppeer=peer, passphrase=b"secret")])
    host.receive(1.0, "lan0", advert(demote=5))  # multicast advert: not for a unicast carp
    assert host.stats.badvhid == 1
    actions = host.receive(1.0, "lan0", advert(demote=5, dst="192.0.2.1"))
    assert states(actions) == [(State.BACKUP, State.MASTER, Reason.PEER_DEMOTED)]
    # and a multicast carp does not take unicast advertisements
    other = started()
    other.receive(1.0, "lan0", advert(dst="192.0.2.1"))
    assert other.stats.badvhid == 1


def test_the_receive_lookup_follows_reconfiguration() -> None:
    """The per-carpdev lookup is built once; every change of the carp interfaces renews it."""
    host = started()
    host.receive(1.0, "lan0", advert(demote=5))  # builds the lookup: multicast carp0 has vhid 1
    peer = IPv4Address("192.0.2.2")
    host.update_carpif(2.0, "carp0", ifparams(carppeer=peer, passphrase=b"secret"))
    host.receive(3.0, "lan0", advert(demote=5))  # now a unicast carp: the group is not for it
    assert host.stats.badvhid == 1
    host.replace_carpif(4.0, "carp0", ifparams(nodes="7:0", passphrase=b"secret"))
    host.receive(5.0, "lan0", advert(demote=5))  # vhid 1 is gone
    assert host.stats.badvhid == 2
    actions = host.receive(6.0, "lan0", advert(vhid=7, demote=5))
    assert states(actions) == [(State.BACKUP, State.MASTER, Reason.PEER_DEMOTED)]


def test_lookup_walks_interfaces_on_the_carpdev() -> None:
    host = started(
        carpifs=[
            ifparams("carp1", nodes="5:0", addresses=("192.0.2.20/24",), passphrase=b"secret"),
            ifparams("carp0", nodes="1:0", passphrase=b"secret"),
        ]
    )
    actions = host.receive(1.0, "lan0", advert(vhid=5, v4=["192.0.2.20"], demote=3))
    assert [a.carpif for a in actions if isinstance(a, StateChanged)] == ["carp1"]
    assert host.carpifs["carp0"].leader.state is State.BACKUP


def test_badver() -> None:
    host = started()
    actions = host.receive(1.0, "lan0", with_checksum(advert(), 0, 0x31))
    assert logs(actions) == [(LOG_NOTICE, "carp0: invalid version 3 != 2")]
    assert nonzero(host) == {"ipackets": 1, "badver": 1}
    assert host.carpifs["carp0"].ierrors == 1
    # only the version nibble is checked: type 7 passes
    host.receive(1.0, "lan0", with_checksum(advert(demote=1), 0, 0x27))
    assert host.carpifs["carp0"].leader.state is State.MASTER


def test_badauth() -> None:
    host = started()
    actions = host.receive(1.0, "lan0", advert(passphrase=b"wrong", demote=9))
    assert logs(actions) == [(LOG_INFO, "carp0: incorrect hash")]
    actions = host.receive(1.0, "lan0", advert(v4=["192.0.2.11"], demote=9))  # other addresses
    assert nonzero(host) == {"ipackets": 2, "badauth": 2}
    assert host.carpifs["carp0"].leader.state is State.BACKUP


def test_own_advert_is_a_loop() -> None:
    host = started()
    sc = host.carpifs["carp0"]
    host.handle_timer(3.0)
    (ad,) = [a for a in host.handle_timer(4.0) if isinstance(a, Transmit)]
    actions = host.receive(4.0, "lan0", ad.frame[14:])
    assert logs(actions) == [(LOG_WARNING, "carp0: replay or network loop detected")]
    assert host.stats.badauth == 1 and sc.ierrors == 1
    assert sc.leader.state is State.MASTER


def test_zero_counter_is_accepted() -> None:
    """Our cookie is never zero, so a peer's zero counter is never taken for our own (§3)."""
    host = started()
    actions = host.receive(1.0, "lan0", advert(counter=bytes(8), demote=1))
    assert states(actions) == [(State.BACKUP, State.MASTER, Reason.PEER_DEMOTED)]


# -- logging (§8.3)


def test_log_threshold() -> None:
    host = started(sysctls=Sysctls(log=2))
    actions = host.handle_timer(3.0)
    assert logs(actions) == [(2, "carp0: state transition: BACKUP -> MASTER")]
    host.set_sysctl(3.0, "net.inet.carp.log", 7)
    actions = host.set_admin(3.5, "carp0", False)
    assert (LOG_WARNING, "carp0: state transition: MASTER -> INIT") in logs(actions)
    host.set_sysctl(4.0, "log", -1)  # a negative value silences everything
    assert logs(host.set_admin(4.0, "carp0", True)) == []


def test_sysctls_at_runtime() -> None:
    host = started()
    assert host.set_sysctl(0.0, "preempt", 1) == []
    assert host.sysctls.preempt is True and host.preempt()
    host.set_sysctl(0.0, "net.inet.carp.allow", 0)
    assert host.sysctls.allow is False
    with pytest.raises(ValueError, match="unknown sysctl"):
        host.set_sysctl(0.0, "net.inet.carp.stats", 1)
    host.set_sysctl(0.0, "allow", 1)
    host.set_sysctl(0.0, "preempt", 0)
    host.receive(1.0, "lan0", advert(advskew=100))  # worse master: restart only
    assert host.carpifs["carp0"].leader.state is State.BACKUP
    host.set_sysctl(1.0, "preempt", 1)
    actions = host.receive(1.5, "lan0", advert(advskew=100))
    assert states(actions) == [(State.BACKUP, State.MASTER, Reason.PREEMPT)]


# -- groups and demotion (§5)


def two_interfaces(**kw: object) -> CarpHost:
    return started(
        carpifs=[
            ifparams(passphrase=b"secret", groups=("fw",)),
            ifparams("carp1", carpdev="lan1", addresses=("198.51.100.10/24",), nodes="2:0"),
        ],
        **kw,
    )


def test_demote_count_sums_groups_or_falls_back_to_own() -> None:
    host = two_interfaces()
    assert host.demote_count("carp0") == 0
    host.group_demote(0.0, "fw", 3)
    assert (host.demote_count("carp0"), host.demote_count("carp1")) == (3, 0)
    host.group_demote(0.0, "carp", 200)
    assert host.demote_count("carp0") == 203
    host.group_demote(0.0, "fw", 55)
    assert host.demote_count("carp0") == 255  # capped
    host.group_demote(0.0, "fw", -58)
    host.group_demote(0.0, "carp", -200)
    sc = host.carpifs["carp0"]
    sc.demote_cnt = 4  # only visible while every group counter is 0
    assert host.demote_count("carp0") == 4


def test_admin_demote_range() -> None:
    host = two_interfaces()
    with pytest.raises(ValueError, match=r"-1, not in 0\.\.255"):
        host.group_demote(0.0, "carp", -1)
    host.group_demote(0.0, "carp", 255)
    with pytest.raises(ValueError, match="256"):
        host.group_demote(0.0, "carp", 1)
    with pytest.raises(ValueError, match="no interface group"):
        host.group_demote(0.0, "nope", 1)
    actions = host.group_demote(0.0, "carp", -5, "manual")
    assert DemoteChanged("carp", -5, 250, "manual") in actions
    assert (LOG_ERR, "carp: group carp demoted by -5 to 250 (manual)") in logs(actions)


def test_positive_admin_demote_advertises_masters_at_once() -> None:
    host = two_interfaces()
    host.handle_timer(3.0)  # both MASTER
    actions = host.group_demote(3.2, "fw", 10)
    ads = [a for a in actions if isinstance(a, Transmit) and a.kind is TxKind.ADVERT]
    assert [a.carpif for a in ads] == ["carp0"]  # only members of fw
    header = parse_ip(ads[0].frame[14:]).header
    assert header is not None and header.demote == 10
    assert host.carpifs["carp0"].leader.ad == pytest.approx(4.2)  # re-armed
    none = host.group_demote(3.3, "fw", -10)
    assert not [a for a in none if isinstance(a, Transmit)]


def test_first_demotion_of_a_group_advertises_every_master() -> None:
    """carp1's carpdev goes down: group carp 0 -> 1, so carp0 advertises demote 1 at once."""
    host = two_interfaces()
    host.handle_timer(3.0)
    actions = host.set_carpdev_link(3.5, "lan1", False)
    ads = [a for a in actions if isinstance(a, Transmit)]
    assert [(a.carpif, a.kind) for a in ads] == [("carp0", TxKind.ADVERT)]
    header = parse_ip(ads[0].frame[14:]).header
    assert header is not None and header.demote == 1
    assert DemoteChanged("carp", 1, 1, "carpdev", "carp1") in actions
    assert (LOG_ERR, "carp1: carp1 demoted group carp by 1 to 1 (carpdev)") in logs(actions)
    # 1 -> 2 sends nothing extra
    host.group_demote(3.6, "carp", 0)
    actions = host.adjust_demote(3.7, "carp1", 1, "test")
    assert not [a for a in actions if isinstance(a, Transmit)]
    assert host.groups["carp"] == 2


def test_internal_demotion_floors_at_zero() -> None:
    host = two_interfaces()
    actions = host.adjust_demote(0.0, "carp1", -3, "test")
    assert host.groups["carp"] == 0 and host.carpifs["carp1"].demote_cnt == 0
    assert DemoteChanged("carp", -3, 0, "test", "carp1") in actions


def test_advskew_240_while_preempt_and_a_carpdev_is_down() -> None:
    host = two_interfaces(sysctls=Sysctls(preempt=True, log=7))
    host.handle_timer(3.0)
    assert host.advertised_advskew(0) == 0
    host.set_carpdev_link(3.5, "lan1", False)
    assert host.any_carpdev_down()
    assert (host.advertised_advskew(0), host.advertised_advskew(250)) == (240, 250)
    ads = [a for a in host.handle_timer(4.5) if isinstance(a, Transmit)]
    header = parse_ip(ads[0].frame[14:]).header
    assert header is not None and (header.advskew, header.demote) == (240, 1)
    sc = host.carpifs["carp0"]
    assert sc.leader.ad == pytest.approx(5.5)  # the interval keeps the configured advskew
    host.set_sysctl(5.0, "preempt", 0)
    assert host.advertised_advskew(0) == 0  # without preempt nothing changes
    host.set_sysctl(5.0, "preempt", 1)
    host.set_carpdev_link(5.0, "lan1", True)
    assert host.advertised_advskew(0) == 0


def test_a_down_switch_without_carp_interfaces_does_not_count() -> None:
    host = two_interfaces(sysctls=Sysctls(preempt=True))
    host.set_carpdev_link(1.0, "lan2", False)
    assert not host.any_carpdev_down()
    with pytest.raises(ValueError, match="unknown carpdev"):
        host.set_carpdev_link(1.0, "lan9", False)


# -- other entry points


def test_unknown_interface_is_refused() -> None:
    host = started()
    with pytest.raises(ValueError, match="no carp interface"):
        host.force_state(0.0, "carp9", State.MASTER)
    with pytest.raises(ValueError, match="no carp interface"):
        host.set_admin(0.0, "carp9", True)


def test_transmit_result_ignores_other_frames() -> None:
    host = started()
    garp = Transmit("lan0", b"", TxKind.GARP, "carp0", 1, 4)
    assert host.transmit_result(0.0, garp, 5) == []
    stray = Transmit("lan0", b"", TxKind.ADVERT, "carp9", 1, 4)
    assert host.transmit_result(0.0, stray, None) == []
    assert nonzero(host) == {}


def test_shutdown_bows_out_of_everything() -> None:
    host = two_interfaces()
    host.handle_timer(3.0)
    actions = host.shutdown(3.5)
    bows = [a for a in actions if isinstance(a, Transmit)]
    assert [(b.carpif, b.kind) for b in bows] == [
        ("carp0", TxKind.BOWOUT),
        ("carp1", TxKind.BOWOUT),
    ]
    assert all(v.state is State.INIT for sc in host.carpifs.values() for v in sc.vhes)
    assert host.get_timer() is None


def test_get_timer_is_the_earliest_deadline() -> None:
    host = two_interfaces()
    assert host.get_timer() == 3.0
    host.receive(1.0, "lan0", advert())
    assert host.carpifs["carp0"].leader.md == 4.0
    assert host.get_timer() == 3.0  # carp1 first
    host.handle_timer(3.0)
    assert host.get_timer() == 4.0


# -- the cached timers (CarpHost._retime): the earliest deadline of many interfaces ------------


def _brute_timer(host: CarpHost) -> float | None:
    deadlines = [d for sc in host.carpifs.values() if (d := sc.deadline()) is not None]
    return min(deadlines) if deadlines else None


class _WalkingHost(CarpHost):
    """The host as it was before the heap: every interface walked for each timer call."""

    def get_timer(self) -> float | None:
        return _brute_timer(self)

    def handle_timer(self, now: float) -> list[Action]:
        return self._entry(now, lambda sc: sc.handle_timer(now))


def _busy_run(host_class: type[CarpHost]) -> list[tuple[float, str, Action]]:
    """Two nodes with 12 carp interfaces of different advbase/advskew through losses, a
    partition, a reboot, forced states, admin changes, group demotion, send errors, a reload
    of one interface and the removal of another: every action either node took, in order.
    After every step each host's get_timer() is the earliest deadline of all its interfaces."""

    class HostSim(Sim):
        def _new_host(
            self, sysctls: Sysctls, carpifs: tuple[CarpIfParams, ...], devs: dict[str, CarpDev]
        ) -> CarpHost:
            return host_class(sysctls, carpifs, devs, lambda: self.rng.randbytes(8))

    sim = HostSim(seed=7)
    vhids = range(1, 13)

    def params(index: int, v: int, skew_bias: int = 0) -> CarpIfParams:
        return ifparams(
            f"carp{v}",
            addresses=(f"192.0.2.{100 + v}/24",),
            nodes=f"{v}:{(v * 7 + index * 50 + skew_bias) % 200}",
            advbase=v % 3,
            passphrase=b"secret",
        )

    for index, name in enumerate(("a", "b")):
        dev = carpdev("lan0", index + 1, f"192.0.2.{index + 1}", f"fe80::{index + 1}")
        sim.add(name, [params(index, v) for v in vhids], [dev], Sysctls(preempt=True, log=7))
        sim.connect("seg0", name, "lan0")
    sim.start("a", "b")
    failing = {"on": False}
    sim.nodes["a"].send_error = lambda tx: errno.ENOBUFS if failing["on"] else None
    steps: list[Callable[[], object]] = [
        lambda: sim.set_loss("a", "b", 0.3),
        lambda: sim.act("a", lambda h, now: h.force_state(now, "carp3", State.MASTER)),
        lambda: sim.partition({"a"}, {"b"}),
        lambda: sim.heal(),
        lambda: sim.act("b", lambda h, now: h.set_admin(now, "carp5", False)),
        lambda: sim.act("b", lambda h, now: h.set_admin(now, "carp5", True)),
        lambda: sim.set_loss("a", "b", 0.0),
        lambda: failing.update(on=True),
        lambda: failing.update(on=False),
        lambda: sim.reboot("a"),
        lambda: sim.act("a", lambda h, now: h.group_demote(now, "carp", 1)),
        lambda: sim.act("a", lambda h, now: h.group_demote(now, "carp", -1)),
        lambda: sim.act("b", lambda h, now: h.set_carpdev_link(now, "lan0", False)),
        lambda: sim.act("b", lambda h, now: h.set_carpdev_link(now, "lan0", True)),
        lambda: sim.act("b", lambda h, now: h.update_carpif(now, "carp8", params(1, 8, 90))),
        lambda: sim.act("b", lambda h, now: h.replace_carpif(now, "carp9", None)),
        lambda: sim.act("b", lambda h, now: h.set_sysctl(now, "preempt", 0)),
    ]
    for step in steps:
        step()
        for _ in range(12):
            sim.run_for(0.37)
            for name in ("a", "b"):
                host = sim.host(name)
                assert host.get_timer() == _brute_timer(host)
    sim.run_for(15)
    for v in vhids:
        if v != 9:  # carp9 is gone from b: a is its master alone
            assert len(sim.masters(f"carp{v}")) == 1, v
    return [(r.at, r.node, r.action) for r in sim.records]


def test_cached_timers_act_exactly_as_walking_every_interface() -> None:
    """The heap of deadlines (CarpHost._retime) changes what a timer event costs, nothing
    else: the same run with a host that walks every interface gives the same actions, at the
    same times, in the same order (cookies and losses come from the same seeded generator)."""
    cached = _busy_run(CarpHost)
    walking = _busy_run(_WalkingHost)
    assert len(cached) > 1000
    assert cached == walking


def test_a_timer_that_raises_loses_no_other_interface() -> None:
    # due interfaces after the one that raised stay due: the driver's retry fires them
    params = [
        ifparams(f"carp{v}", addresses=(f"192.0.2.{100 + v}/24",), nodes=f"{v}:0") for v in (1, 2)
    ]
    dev = carpdev("lan0", 1, "192.0.2.1", "fe80::1")
    counter = itertools.count(1)
    host = CarpHost(Sysctls(), params, {"lan0": dev}, lambda: next(counter).to_bytes(8, "big"))
    host.start(0.0)
    deadline = host.get_timer()
    assert deadline is not None
    broken = host.carpifs["carp1"]
    real = broken.handle_timer

    def boom(now: float) -> list[Action]:
        raise RuntimeError("a bug")

    broken.handle_timer = boom  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        host.handle_timer(deadline)
    broken.handle_timer = real  # type: ignore[method-assign]
    assert host.get_timer() == deadline  # both still due
    host.handle_timer(deadline)
    assert {sc.name: sc.vhes[0].state for sc in host.carpifs.values()} == {
        "carp1": State.MASTER,
        "carp2": State.MASTER,
    }
