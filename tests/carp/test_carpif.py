"""carp/carpif.py: one carp interface driven through its CarpHost (the HostEnv it needs)."""

import errno
import itertools
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address

import pytest

from carp import l2
from carp.actions import (
    Action,
    CarrierChanged,
    DemoteChanged,
    Log,
    Reason,
    StateChanged,
    Transmit,
    TxKind,
)
from carp.auth import HmacContexts, carp_key
from carp.carpif import PEERS_KEPT, CarpInterface
from carp.constants import (
    ETH_P_ARP,
    ETH_P_IP,
    ETH_P_IPV6,
    LOG_DEBUG,
    LOG_WARNING,
    MAC_CARP_GROUP4,
    MAC_CARP_GROUP6,
    Balancing,
    State,
)
from carp.host import CarpHost
from carp.params import CarpDev, CarpIfParams, CarpNodeParams, Sysctls
from carp.vhe import AF_INET6
from carp.wire import CarpHeader, Verdict, parse_ip
from tests.carp.sim import advert, carpdev, ifparams

V4 = ("192.0.2.10/24",)
DUAL = ("192.0.2.10/24", "192.0.2.11/24", "2001:db8::10/64")
DEV = carpdev("lan0", 1, "192.0.2.1", "fe80::1")


def make(
    params: CarpIfParams | None = None,
    dev: CarpDev = DEV,
    sysctls: Sysctls | None = None,
) -> tuple[CarpHost, CarpInterface]:
    params = params or ifparams(addresses=V4, passphrase=b"secret")
    counter = itertools.count(1)
    host = CarpHost(
        sysctls or Sysctls(log=7),
        [params],
        {dev.name: dev},
        lambda: next(counter).to_bytes(8, "big"),
    )
    return host, host.carpifs[params.name]


def master(host: CarpHost, sc: CarpInterface, vhid: int | None = None) -> list[Action]:
    """Start and let the master-down timer(s) fire; return what the takeover produced."""
    host.start(0.0)
    deadline = host.get_timer()
    assert deadline is not None
    actions = host.handle_timer(deadline)
    vhe = sc.leader if vhid is None else sc.vhe(vhid)
    assert vhe is not None and vhe.state is State.MASTER
    return actions


def tx(actions: Sequence[Action], kind: TxKind | None = None) -> list[Transmit]:
    return [a for a in actions if isinstance(a, Transmit) and (kind is None or a.kind is kind)]


def logs(actions: Sequence[Action]) -> list[str]:
    return [a.message for a in actions if isinstance(a, Log)]


def header_of(frame: bytes) -> CarpHeader:
    parsed = parse_ip(frame[14:])
    assert parsed.verdict is Verdict.ACCEPT
    assert parsed.header is not None
    return parsed.header


# -- construction


def test_carpnodes_sorted_leader_lowest_and_macs() -> None:
    _, sc = make(ifparams(nodes="7:50,2:0,5:10", balancing=Balancing.IP))
    assert [v.vhid for v in sc.vhes] == [2, 5, 7]
    assert sc.leader.vhid == 2 and sc.leader.leader
    assert not any(v.leader for v in sc.vhes[1:])
    assert sc.leader.mac == bytes.fromhex("01005e000102")  # ip mode: the leader is multicast
    assert sc.vhes[1].mac == bytes.fromhex("00005e000105")
    assert sc.mac == sc.leader.mac
    assert sc.groups == ("carp",)


def test_lladdr_and_groups() -> None:
    custom = bytes.fromhex("02aabbccddee")
    _, sc = make(ifparams(lladdr=custom, groups=("fw", "carp", "fw")))
    assert sc.mac == custom
    assert sc.groups == ("carp", "fw")


def test_custom_lladdr_enters_the_leader_hmac_only() -> None:
    """§2.2 step 3: the MAC is hashed for the leader iff it is neither its vMAC nor carpdev's."""
    custom = bytes.fromhex("02aabbccddee")
    key = carp_key(b"secret")
    v4 = [IPv4Address("192.0.2.10")]
    counter = b"\x01" * 8
    _, sc = make(ifparams(nodes="1:0,2:0", lladdr=custom, passphrase=b"secret"))
    with_mac = HmacContexts(key, 1, v4, [], custom).generate(counter)
    assert sc.hmac[1].generate(counter) == with_mac
    assert sc.hmac[2].generate(counter) == HmacContexts(key, 2, v4, []).generate(counter)
    for same in (bytes.fromhex("00005e000101"), DEV.mac):
        _, plain = make(ifparams(lladdr=same, passphrase=b"secret"))
        assert plain.hmac[1].generate(counter) == HmacContexts(key, 1, v4, []).generate(counter)


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        ((), "carpnodes required"),
        (tuple(CarpNodeParams(i) for i in range(1, 34)), "carpnodes required"),
        ((CarpNodeParams(1, 0), CarpNodeParams(1, 5)), "duplicate vhid"),
    ],
)
def test_bad_carpnodes_are_refused(nodes: tuple[CarpNodeParams, ...], message: str) -> None:
    params = ifparams()
    bad = CarpIfParams(params.name, params.carpdev, params.addresses, nodes)
    with pytest.raises(ValueError, match=message):
        make(bad)


def test_thirty_two_carpnodes_are_fine() -> None:
    _, sc = make(ifparams(nodes=",".join(f"{i}:0" for i in range(1, 33))))
    assert len(sc.vhes) == 32


# -- start, master-down, takeover


def test_start_goes_backup_with_a_timer_per_family() -> None:
    host, sc = make(ifparams(addresses=DUAL))
    actions = host.start(10.0)
    assert [a for a in actions if isinstance(a, StateChanged)] == [
        StateChanged("carp0", 1, State.INIT, State.BACKUP, Reason.START)
    ]
    assert "carp0: state transition: INIT -> BACKUP" in logs(actions)
    assert (sc.leader.md, sc.leader.md6, sc.leader.ad) == (13.0, 13.0, None)
    assert not sc.carrier
    assert not tx(actions)


def test_takeover_sends_advert_garp_and_na() -> None:
    host, sc = make(ifparams(addresses=DUAL, passphrase=b"secret"))
    actions = master(host, sc)
    kinds = [type(a).__name__ if not isinstance(a, Transmit) else a.kind for a in actions]
    assert kinds[:3] == ["StateChanged", "Log", "CarrierChanged"]  # link up before any frame
    assert [t.kind for t in tx(actions)] == [
        TxKind.ADVERT,
        TxKind.ADVERT,
        TxKind.GARP,
        TxKind.GARP,
        TxKind.UNSOL_NA,
    ]
    assert CarrierChanged("carp0", True) in actions
    assert sc.carrier
    ad4, ad6 = tx(actions, TxKind.ADVERT)
    assert (ad4.af, ad6.af, ad4.vhid, ad4.carpif, ad4.carpdev) == (4, 6, 1, "carp0", "lan0")
    assert ad4.frame[:6] == MAC_CARP_GROUP4
    assert ad4.frame[6:12] == sc.mac == bytes.fromhex("00005e000101")
    assert int.from_bytes(ad4.frame[12:14], "big") == ETH_P_IP
    assert ad6.frame[:6] == MAC_CARP_GROUP6
    assert int.from_bytes(ad6.frame[12:14], "big") == ETH_P_IPV6
    p4, p6 = parse_ip(ad4.frame[14:]), parse_ip(ad6.frame[14:])
    assert (p4.src, p4.dst) == (IPv4Address("192.0.2.1"), IPv4Address("224.0.0.18"))
    assert p6.src == IPv6Address("fe80::1")
    h = header_of(ad4.frame)
    assert h == header_of(ad6.frame)  # both families carry the same header
    assert (h.vhid, h.advbase, h.advskew, h.demote) == (1, 1, 0, 0)
    assert h.counter == sc.leader.cookie
    ctx = HmacContexts(carp_key(b"secret"), 1, sc.v4, sc.v6)
    assert ctx.verify(h.counter, h.md)
    garp = tx(actions, TxKind.GARP)
    assert [g.frame for g in garp] == [
        l2.gratuitous_arp(sc.mac, IPv4Address("192.0.2.10")),
        l2.gratuitous_arp(sc.mac, IPv4Address("192.0.2.11")),
    ]
    assert int.from_bytes(garp[0].frame[12:14], "big") == ETH_P_ARP
    na = tx(actions, TxKind.UNSOL_NA)
    assert na[0].frame == l2.unsolicited_na(sc.mac, IPv6Address("2001:db8::10"), True)
    assert host.stats.preempt == 1
    assert sc.leader.ad == pytest.approx(3.0 + 1.0)
    assert sc.leader.reason is Reason.MASTER_DOWN and sc.leader.transitions == 2


def test_advert_source_falls_back_to_the_first_virtual_address() -> None:
    host, sc = make(ifparams(addresses=DUAL), dev=CarpDev("lan0", DEV.mac))
    ad4, ad6 = tx(master(host, sc), TxKind.ADVERT)
    assert parse_ip(ad4.frame[14:]).src == IPv4Address("192.0.2.10")
    assert parse_ip(ad6.frame[14:]).src == IPv6Address("2001:db8::10")


def test_ipv6_only_interface_sends_only_ipv6() -> None:
    host, sc = make(ifparams(addresses=("2001:db8::10/64",)))
    host.start(0.0)
    assert (sc.leader.md, sc.leader.md6) == (None, 3.0)
    actions = host.handle_timer(3.0)
    assert [t.af for t in tx(actions, TxKind.ADVERT)] == [AF_INET6]
    assert not tx(actions, TxKind.GARP)
    assert len(tx(actions, TxKind.UNSOL_NA)) == 1


@pytest.mark.parametrize(
    ("balancing", "expect_own_mac"),
    [
        (Balancing.NONE, False),
        (Balancing.ARP, False),
        (Balancing.IP_UNICAST, False),
        (Balancing.IP, True),
        (Balancing.IP_STEALTH, True),
    ],
)
def test_source_mac_per_balancing(balancing: Balancing, expect_own_mac: bool) -> None:
    host, sc = make(ifparams(nodes="1:0,2:0", balancing=balancing))
    host.start(0.0)
    actions = host.handle_timer(3.0)
    ads = tx(actions, TxKind.ADVERT)
    assert [a.vhid for a in ads] == [1, 2]
    for ad in ads:
        vhe = sc.vhe(ad.vhid)
        assert vhe is not None
        if expect_own_mac:
            expected = DEV.mac
        elif balancing is Balancing.ARP:
            expected = vhe.mac  # arp mode: each carpnode from its own MAC (§6.8)
        else:
            expected = sc.mac
        assert ad.frame[6:12] == expected
    # only mode none announces (§7)
    assert bool(tx(actions, TxKind.GARP)) is (balancing is Balancing.NONE)
    assert not tx(actions, TxKind.UNSOL_NA)  # no IPv6 address here
    if balancing is Balancing.IP_STEALTH:
        assert all(a.frame[6:12] not in {v.mac for v in sc.vhes} for a in ads)


def test_unicast_carppeer_leaves_the_mac_to_the_driver() -> None:
    peer = IPv4Address("192.0.2.2")
    host, sc = make(ifparams(carppeer=peer))
    assert not sc.peer_is_multicast
    (ad,) = tx(master(host, sc), TxKind.ADVERT)
    assert ad.next_hop == peer
    assert ad.frame[:6] == bytes(6)
    assert parse_ip(ad.frame[14:]).dst == peer


def test_multicast_carppeer_maps_to_its_group_mac() -> None:
    host, sc = make(ifparams(carppeer=IPv4Address("224.0.1.99")))
    (ad,) = tx(master(host, sc), TxKind.ADVERT)
    assert ad.next_hop is None
    assert ad.frame[:6] == bytes.fromhex("01005e000163")


def test_ip_id_is_a_counter_seeded_from_the_cookie_source() -> None:
    host, sc = make()
    master(host, sc)
    ids = []
    for t in (4.0, 5.0, 6.0):
        (ad,) = tx(host.handle_timer(t), TxKind.ADVERT)
        ids.append(int.from_bytes(ad.frame[18:20], "big"))
    assert ids[1] == (ids[0] + 1) & 0xFFFF and ids[2] == (ids[1] + 1) & 0xFFFF


def test_periodic_advert_rearms_at_the_interval() -> None:
    host, sc = make(ifparams(nodes="1:128", advbase=0))
    master(host, sc)
    start = sc.leader.ad
    assert start is not None
    actions = host.handle_timer(start)
    assert len(tx(actions, TxKind.ADVERT)) == 1
    assert sc.leader.ad == pytest.approx(start + 0.5)
    assert host.handle_timer(start + 0.25) == []  # nothing due


# -- delayed ARP (§7)


def test_gratuitous_arp_repeats_on_the_second_advert_only() -> None:
    host, sc = make()
    assert len(tx(master(host, sc), TxKind.GARP)) == 1
    assert sc.delayed_arp == 2
    first = host.handle_timer(4.0)
    assert tx(first, TxKind.ADVERT) and not tx(first, TxKind.GARP)
    second = host.handle_timer(5.0)
    assert [t.kind for t in tx(second)] == [TxKind.ADVERT, TxKind.GARP]
    assert sc.delayed_arp == -1
    assert not tx(host.handle_timer(6.0), TxKind.GARP)


def test_going_backup_cancels_the_delayed_arp() -> None:
    host, sc = make()
    master(host, sc)
    host.force_state(3.5, "carp0", State.BACKUP)
    assert sc.delayed_arp == -1
    # master again after master-down: a fresh countdown, no stale resend in between
    actions = host.handle_timer(6.5)
    assert len(tx(actions, TxKind.GARP)) == 1
    assert not tx(host.handle_timer(7.5), TxKind.GARP)


def test_ipv6_adverts_do_not_count_down() -> None:
    host, sc = make(ifparams(addresses=("2001:db8::10/64",)))
    master(host, sc)
    assert sc.delayed_arp == 2  # set on takeover, but only IPv4 adverts count it down
    host.handle_timer(4.0)
    host.handle_timer(5.0)
    assert sc.delayed_arp == 2


# -- lsmask, carrier (§6.1, §4.11)


def test_lsmask_follows_states_and_carrier_is_any_master() -> None:
    host, sc = make(ifparams(nodes="1:0,2:50,3:100", balancing=Balancing.IP))
    host.start(0.0)
    assert (sc.lsmask, sc.lscount) == (0, 3)
    actions = host.handle_timer(3.0)  # vhid 1 fires first (advskew 0)
    assert sc.lsmask == 0b001
    assert "carp0: carp_update_lsmask: 1" in logs(actions)
    assert "carp0: state transition (vhid 1): BACKUP -> MASTER" in logs(actions)
    assert CarrierChanged("carp0", True) in actions
    deadline = host.get_timer()
    assert deadline is not None
    host.handle_timer(sc.vhes[1].md or 0.0)
    assert sc.lsmask == 0b011
    # a better peer for vhid 1: it steps down, carrier stays up (vhid 2 still MASTER)
    actions = host.receive(5.0, "lan0", advert(vhid=1, advskew=0, advbase=0, passphrase=b""))
    assert sc.vhes[0].state is State.BACKUP
    assert sc.lsmask == 0b010
    assert not [a for a in actions if isinstance(a, CarrierChanged)]
    host.force_state(5.0, "carp0", State.BACKUP)  # leader is BACKUP: a no-op (§4.10)
    host.set_admin(5.0, "carp0", False)
    assert (sc.lsmask, sc.carrier) == (0, False)


def test_lsmask_untouched_without_balancing() -> None:
    host, sc = make(ifparams(nodes="1:0,2:0"))
    actions = master(host, sc)
    assert (sc.lsmask, sc.lscount) == (0, 0)
    assert not [m for m in logs(actions) if "lsmask" in m]
    assert all(a.level != LOG_DEBUG for a in actions if isinstance(a, Log))


# -- admin up/down, forced state, carpdev link


def test_admin_down_bows_out_then_init() -> None:
    host, sc = make(ifparams(addresses=DUAL, nodes="1:0,2:200"))
    host.start(0.0)
    host.handle_timer(3.0)  # vhid 1 MASTER, vhid 2 still BACKUP
    assert [v.state for v in sc.vhes] == [State.MASTER, State.BACKUP]
    actions = host.set_admin(3.5, "carp0", False)
    bow = tx(actions, TxKind.BOWOUT)
    assert [(b.vhid, b.af) for b in bow] == [(1, 4), (1, 6)]  # MASTER carpnodes only
    h = header_of(bow[0].frame)
    assert (h.advbase, h.advskew) == (255, 255)
    assert not tx(actions, TxKind.ADVERT)
    assert all(v.state is State.INIT and v.deadline() is None for v in sc.vhes)
    assert CarrierChanged("carp0", False) in actions
    assert not sc.is_running
    assert host.set_admin(4.0, "carp0", False) == []
    up = host.set_admin(5.0, "carp0", True)
    assert [a.new for a in up if isinstance(a, StateChanged)] == [State.BACKUP, State.BACKUP]
    assert all(a.reason is Reason.START for a in up if isinstance(a, StateChanged))


def test_admin_down_from_init_sends_nothing() -> None:
    host, sc = make()
    actions = host.set_admin(0.0, "carp0", False)  # never started: leader INIT
    assert actions == []
    assert host.start(1.0) == []  # not UP: stays INIT
    assert sc.leader.state is State.INIT


def test_interface_configured_down_starts_in_init() -> None:
    host, sc = make(ifparams(admin_up=False))
    assert host.start(0.0) == []
    assert host.get_timer() is None
    host.set_admin(1.0, "carp0", True)
    assert sc.leader.state is State.BACKUP


def test_force_master_and_backup() -> None:
    host, sc = make(ifparams(nodes="1:0,2:0", balancing=Balancing.IP))
    assert host.force_state(0.0, "carp0", State.MASTER) == []  # leader INIT: ignored
    host.start(0.0)
    actions = host.force_state(1.0, "carp0", State.MASTER)
    changes = [a for a in actions if isinstance(a, StateChanged)]
    assert [(c.vhid, c.new, c.reason) for c in changes] == [
        (1, State.MASTER, Reason.FORCED),
        (2, State.MASTER, Reason.FORCED),
    ]
    assert len(tx(actions, TxKind.ADVERT)) == 2
    assert host.force_state(1.5, "carp0", State.MASTER) == []  # already MASTER
    assert host.force_state(1.5, "carp0", State.INIT) == []  # no INIT case
    actions = host.force_state(2.0, "carp0", State.BACKUP)
    assert not tx(actions)  # no bow-out
    assert all(v.state is State.BACKUP and v.md == 5.0 for v in sc.vhes)
    # nothing stops us from coming back after master-down if nobody advertises
    host.handle_timer(5.0)
    assert all(v.state is State.MASTER for v in sc.vhes)


def test_force_master_moves_only_backup_carpnodes() -> None:
    host, sc = make(ifparams(nodes="1:0,2:200"))
    host.start(0.0)
    host.handle_timer(3.0)
    host.force_state(3.5, "carp0", State.BACKUP)
    host.handle_timer(6.5)  # leader MASTER again
    assert [v.state for v in sc.vhes] == [State.MASTER, State.BACKUP]
    assert host.force_state(7.0, "carp0", State.MASTER) == []  # leader already MASTER


def test_carpdev_link_down_and_up() -> None:
    host, sc = make()
    master(host, sc)
    down = host.set_carpdev_link(4.0, "lan0", False)
    assert sc.leader.state is State.INIT and sc.suppressed and not sc.is_running
    assert DemoteChanged("carp", 1, 1, "carpdev", "carp0") in down
    assert "carp0: carp0 demoted group carp by 1 to 1 (carpdev)" in logs(down)
    assert "carp0: state transition: MASTER -> INIT" in logs(down)
    assert [a.reason for a in down if isinstance(a, StateChanged)] == [Reason.LINK_DOWN]
    assert host.demote_count("carp0") == 1
    again = host.set_carpdev_link(4.5, "lan0", False)
    assert not [a for a in again if isinstance(a, DemoteChanged)]  # already suppressed
    up = host.set_carpdev_link(5.0, "lan0", True)
    assert sc.leader.state is State.BACKUP and not sc.suppressed
    assert DemoteChanged("carp", -1, 0, "carpdev", "carp0") in up
    assert [a.reason for a in up if isinstance(a, StateChanged)] == [Reason.LINK_UP]
    assert host.set_carpdev_link(5.5, "lan0", True) == []


def test_carpdev_link_while_admin_down() -> None:
    host, sc = make()
    host.start(0.0)
    host.set_admin(1.0, "carp0", False)
    host.set_carpdev_link(2.0, "lan0", False)
    assert host.groups["carp"] == 1
    host.set_carpdev_link(3.0, "lan0", True)
    assert host.groups["carp"] == 0
    assert sc.leader.state is State.INIT  # still down


# -- send errors (§4.6)


def _results(
    host: CarpHost, ad: Transmit, errors: Sequence[int | None], now: float = 10.0
) -> list[Action]:
    actions: list[Action] = []
    for error in errors:
        actions += host.transmit_result(now, ad, error)
    return actions


def test_send_errors_demote_after_three_per_vhe_and_recover() -> None:
    host, sc = make()
    (ad,) = tx(master(host, sc), TxKind.ADVERT)
    actions = _results(host, ad, [errno.EIO, errno.EIO])
    assert "carp0: ip_output failed: 5" in logs(actions)
    assert host.groups["carp"] == 0
    actions = _results(host, ad, [errno.EIO])
    assert DemoteChanged("carp", 1, 1, "> snderrors", "carp0") in actions
    assert sc.oerrors == 3
    actions = _results(host, ad, [errno.EIO] * 3)  # still failing: only one +1
    assert host.groups["carp"] == 1
    actions = _results(host, ad, [None, None, errno.EIO, None, None])
    assert host.groups["carp"] == 1  # an error in between restarts the successes
    actions = _results(host, ad, [None])
    assert DemoteChanged("carp", -1, 0, "< snderrors", "carp0") in actions
    assert (sc.sendad_errors, sc.sendad_success) == (0, 0)
    assert host.stats.opackets == 5


def test_success_below_the_threshold_resets_the_error_count() -> None:
    host, sc = make()
    (ad,) = tx(master(host, sc), TxKind.ADVERT)
    _results(host, ad, [errno.EIO, errno.EIO, None, errno.EIO, errno.EIO])
    assert host.groups["carp"] == 0
    assert sc.sendad_errors == 2


def test_send_error_threshold_scales_with_carpnodes() -> None:
    host, sc = make(ifparams(nodes="1:0,2:0"))
    (ad, _) = tx(master(host, sc), TxKind.ADVERT)
    _results(host, ad, [errno.EIO] * 5)
    assert host.groups["carp"] == 0
    actions = _results(host, ad, [errno.EIO])
    assert DemoteChanged("carp", 1, 1, "> snderrors", "carp0") in actions


def test_ipv6_send_errors_have_their_reason() -> None:
    host, sc = make(ifparams(addresses=("2001:db8::10/64",)))
    (ad,) = tx(master(host, sc), TxKind.ADVERT)
    actions = _results(host, ad, [errno.ENETDOWN] * 3)
    assert "carp0: ip6_output failed: 100" in logs(actions)
    assert DemoteChanged("carp", 1, 1, "> snd6errors", "carp0") in actions
    actions = _results(host, ad, [None] * 3)
    assert DemoteChanged("carp", -1, 0, "< snd6errors", "carp0") in actions
    assert host.stats.opackets6 == 3


def test_enobufs_counts_onomem_without_a_log() -> None:
    host, sc = make()
    (ad,) = tx(master(host, sc), TxKind.ADVERT)
    actions = _results(host, ad, [errno.ENOBUFS])
    assert host.stats.onomem == 1
    assert not logs(actions)
    assert sc.sendad_errors == 1


def test_ehostdown_to_a_unicast_peer_does_not_count() -> None:
    host, sc = make(ifparams(carppeer=IPv4Address("192.0.2.2")))
    (ad,) = tx(master(host, sc), TxKind.ADVERT)
    assert _results(host, ad, [errno.EHOSTDOWN] * 5) == []
    assert (sc.sendad_errors, sc.oerrors, host.groups["carp"]) == (0, 0, 0)
    host2, sc2 = make()
    (ad2,) = tx(master(host2, sc2), TxKind.ADVERT)
    _results(host2, ad2, [errno.EHOSTDOWN])  # to the multicast group it does count
    assert sc2.sendad_errors == 1


# -- receive side bits kept on the interface


def test_peers_heard_are_kept_for_status() -> None:
    host, sc = make(ifparams(passphrase=b""))
    host.start(0.0)
    host.receive(1.0, "lan0", advert(advskew=7, demote=2, passphrase=b""))
    heard = sc.leader.peers["192.0.2.99"]
    assert (heard.advbase, heard.advskew, heard.demote, heard.at) == (1, 7, 2, 1.0)
    for i in range(PEERS_KEPT + 3):
        host.receive(2.0 + i, "lan0", advert(src=f"192.0.2.{100 + i}", passphrase=b""))
    assert len(sc.leader.peers) == PEERS_KEPT
    assert "192.0.2.99" not in sc.leader.peers
    assert list(sc.leader.peers)[-1] == f"192.0.2.{100 + PEERS_KEPT + 2}"


def test_advert_restarts_only_its_family() -> None:
    host, sc = make(ifparams(addresses=DUAL, passphrase=b""))
    host.start(0.0)
    v6 = ["2001:db8::10"]
    host.receive(2.0, "lan0", advert(v4=["192.0.2.10", "192.0.2.11"], v6=v6, passphrase=b""))
    assert (sc.leader.md, sc.leader.md6) == (5.0, 3.0)
    packet6 = advert(v4=["192.0.2.10", "192.0.2.11"], v6=v6, src="fe80::99", passphrase=b"")
    host.receive(2.5, "lan0", packet6)
    assert (sc.leader.md, sc.leader.md6) == (5.0, 5.5)


def test_loop_and_error_logs_bump_ierrors() -> None:
    _, sc = make()
    assert sc.bad_version(3).message == "carp0: invalid version 3 != 2"
    assert sc.bad_auth().message == "carp0: incorrect hash"
    loop = sc.loop_detected()
    assert (loop.level, loop.message) == (LOG_WARNING, "carp0: replay or network loop detected")
    assert sc.ierrors == 3


def test_start_twice_changes_nothing() -> None:
    host, sc = make()
    host.start(0.0)
    assert host.start(1.0) == []
    assert sc.leader.md == 3.0


def test_force_master_skips_carpnodes_already_master() -> None:
    host, sc = make(ifparams(nodes="1:200,2:0", balancing=Balancing.IP))
    host.start(0.0)
    host.handle_timer(3.0)  # vhid 2 (advskew 0) first; the leader waits 3 x 1.78 s
    assert [v.state for v in sc.vhes] == [State.BACKUP, State.MASTER]
    actions = host.force_state(4.0, "carp0", State.MASTER)
    assert [(a.vhid, a.new) for a in actions if isinstance(a, StateChanged)] == [(1, State.MASTER)]
    assert [t.vhid for t in tx(actions, TxKind.ADVERT)] == [1]


def test_advert_ignored_in_init() -> None:
    host, sc = make(ifparams(passphrase=b""))
    assert host.receive(0.0, "lan0", advert(demote=5, passphrase=b"")) == []  # before start
    assert sc.leader.state is State.INIT and sc.leader.deadline() is None


def test_master_hearing_a_worse_master_reannounces_once_per_interval() -> None:
    """design.md decision 6: the winner of a healed split brain re-announces its addresses."""
    host, sc = make(ifparams(addresses=DUAL, passphrase=b""))
    master(host, sc)
    ad = sc.leader.ad
    worse = advert(advskew=10, v4=["192.0.2.10", "192.0.2.11"], v6=["2001:db8::10"], passphrase=b"")
    actions = host.receive(3.5, "lan0", worse)
    assert [t.kind for t in tx(actions)] == [TxKind.GARP, TxKind.GARP, TxKind.UNSOL_NA]
    assert not [a for a in actions if isinstance(a, StateChanged)]
    assert sc.leader.state is State.MASTER and sc.leader.ad == ad  # no reply advertisement
    assert host.receive(3.7, "lan0", worse) == []  # once until our next advertisement
    host.handle_timer(4.0)
    assert len(tx(host.receive(4.2, "lan0", worse), TxKind.GARP)) == 2


@pytest.mark.parametrize("balancing", [Balancing.IP, Balancing.ARP])
def test_no_reannounce_with_balancing(balancing: Balancing) -> None:
    host, sc = make(ifparams(nodes="1:0,2:0", balancing=balancing, passphrase=b""))
    master(host, sc)
    for vhid in (1, 2):
        assert tx(host.receive(3.5, "lan0", advert(vhid=vhid, advskew=10, passphrase=b""))) == []


def test_no_reannounce_for_a_non_leader() -> None:
    host, sc = make(ifparams(nodes="1:0,2:0", passphrase=b""))
    master(host, sc)
    assert tx(host.receive(3.5, "lan0", advert(vhid=2, advskew=10, passphrase=b""))) == []
