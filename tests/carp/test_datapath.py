"""datapath.py: input (adverts, ARP/NS answers, delivery, IP filter) and output (source MAC)."""

import itertools
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carp import l2
from carp.actions import Action, Deliver, Log, Transmit, TxKind
from carp.auth import carp_key, inner_words
from carp.balance import arp_choice, arp_hash, ip_fold, vhe_mac
from carp.constants import Balancing, State
from carp.datapath import DataPath
from carp.host import CarpHost
from carp.params import CarpDev, CarpIfParams, CarpNodeParams, Sysctls

DEV = "lan0"
OWN = bytes.fromhex("020000000001")
CLIENT = bytes.fromhex("020000000099")
VIP4 = IPv4Address("192.0.2.10")
VIP6 = IPv6Address("2001:db8::10")
HOST4 = IPv4Address("192.0.2.2")
CLIENT4 = IPv4Address("192.0.2.99")
CLIENT6 = IPv6Address("2001:db8::99")
KEY = carp_key("secret")
BCAST = b"\xff" * 6


# --- fakes with the documented CarpHost / CarpInterface attributes -------------------------


@dataclass
class FakeVhe:
    vhid: int
    state: State
    mac: bytes


@dataclass
class FakeCif:
    name: str
    carpdev: str
    balancing: Balancing
    mac: bytes
    vhes: list[FakeVhe]
    v4: frozenset[IPv4Address]
    v6: frozenset[IPv6Address]
    is_running: bool = True
    key: bytes = KEY
    hmac_inner: tuple[int, int] = inner_words(KEY)
    lsmask: int = 0
    lscount: int = 0

    @property
    def leader(self) -> FakeVhe:
        return self.vhes[0]

    def set_masters(self, masters: Iterable[int]) -> None:
        """States and lsmask as carp_update_lsmask leaves them (lsmask untouched in none)."""
        chosen = set(masters)
        for i, v in enumerate(self.vhes):
            v.state = State.MASTER if i in chosen else State.BACKUP
        if self.balancing is not Balancing.NONE:
            self.lsmask = sum(1 << i for i in chosen)
            self.lscount = len(self.vhes)


@dataclass
class FakeHost:
    carpifs: dict[str, FakeCif]
    carpdevs: dict[str, CarpDev]
    received: list[tuple[float, str, bytes]] = field(default_factory=list)

    def receive(self, now: float, carpdev: str, ip_packet: bytes) -> list[Action]:
        self.received.append((now, carpdev, ip_packet))
        return [Log(7, "received")]


def make(
    balancing: Balancing = Balancing.NONE,
    vhids: tuple[int, ...] = (1,),
    masters: Iterable[int] = (0,),
    v4: Iterable[IPv4Address] = (VIP4,),
    v6: Iterable[IPv6Address] = (VIP6,),
    running: bool = True,
    lladdr: bytes | None = None,
    name: str = "carp0",
) -> tuple[DataPath, FakeHost, FakeCif]:
    vhes = [FakeVhe(v, State.BACKUP, vhe_mac(v, balancing, i == 0)) for i, v in enumerate(vhids)]
    cif = FakeCif(
        name, DEV, balancing, lladdr or vhes[0].mac, vhes, frozenset(v4), frozenset(v6), running
    )
    cif.set_masters(masters)
    host = FakeHost({name: cif}, {DEV: CarpDev(DEV, OWN, HOST4)})
    return DataPath(host), host, cif


# --- frame helpers -----------------------------------------------------------------------


def eth(dst: bytes, src: bytes, ethertype: int, payload: bytes) -> bytes:
    return dst + src + ethertype.to_bytes(2, "big") + payload


def ipv4(
    src: IPv4Address, dst: IPv4Address, proto: int = 17, payload: bytes = b"\x00" * 8
) -> bytes:
    hdr = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, proto, 0, src.packed, dst.packed
    )
    return hdr + payload


def ipv6(src: IPv6Address, dst: IPv6Address, nxt: int = 17, payload: bytes = b"\x00" * 8) -> bytes:
    return (
        struct.pack("!IHBB", 0x60000000, len(payload), nxt, 64) + src.packed + dst.packed + payload
    )


def arp_frame(
    op: int = 1,
    sha: bytes = CLIENT,
    spa: IPv4Address = CLIENT4,
    tpa: IPv4Address = VIP4,
    dst: bytes = BCAST,
    src: bytes | None = None,
) -> bytes:
    arp = dpkt.arp.ARP(op=op, sha=sha, spa=spa.packed, tha=bytes(6), tpa=tpa.packed)
    return bytes(dpkt.ethernet.Ethernet(dst=dst, src=src or sha, type=0x0806, data=arp))


def ns_frame(
    target: IPv6Address = VIP6,
    src: IPv6Address = CLIENT6,
    slla: bytes | None = CLIENT,
    dst_mac: bytes | None = None,
    bad_sum: bool = False,
) -> bytes:
    opts = b"\x01\x01" + slla if slla else b""
    icmp = dpkt.icmp6.ICMP6(type=135, code=0, data=b"\x00" * 4 + target.packed + opts)
    dst = IPv6Address(l2.solicited_node(target.packed))
    ip6 = dpkt.ip6.IP6(
        v=6, nxt=58, hlim=255, src=src.packed, dst=dst.packed, data=icmp, plen=len(bytes(icmp))
    )
    raw = bytes(ip6)
    if bad_sum:
        raw = raw[:42] + bytes((raw[42] ^ 0x55,)) + raw[43:]
    mac = dst_mac or b"\x33\x33" + dst.packed[12:]
    return eth(mac, slla or CLIENT, 0x86DD, raw)


def na_frame(target: IPv6Address, src: IPv6Address, mac: bytes = OWN) -> bytes:
    na = bytes((136, 0, 0, 0, 0x60, 0, 0, 0)) + target.packed + b"\x02\x01" + mac
    return eth(CLIENT, mac, 0x86DD, ipv6(src, CLIENT6, 58, na))


def transmits(actions: list[Action]) -> list[Transmit]:
    out = [a for a in actions if isinstance(a, Transmit)]
    assert len(out) == len(actions)
    return out


def only_reply(actions: list[Action]) -> Transmit:
    (tx,) = transmits(actions)
    return tx


def unicast_to(mac: bytes, packet: bytes, af: int = 4) -> bytes:
    return eth(mac, CLIENT, 0x0800 if af == 4 else 0x86DD, packet)


CARP_MAC = vhe_mac(1, Balancing.NONE, True)
IP_MAC = vhe_mac(1, Balancing.IP, True)


# --- (a) protocol 112 --------------------------------------------------------------------


def test_ipv4_carp_goes_to_host_without_ethernet_header() -> None:
    dp, host, _ = make()
    packet = ipv4(HOST4, IPv4Address("224.0.0.18"), 112, b"\x21" + b"\x00" * 35)
    actions = dp.input(3.5, DEV, "up0", eth(bytes.fromhex("01005e000012"), CLIENT, 0x0800, packet))
    assert host.received == [(3.5, DEV, packet)]
    assert actions == [Log(7, "received")]


def test_ipv6_carp_goes_to_host() -> None:
    dp, host, _ = make()
    packet = ipv6(IPv6Address("fe80::1"), IPv6Address("ff02::12"), 112, b"\x21" + b"\x00" * 35)
    dp.input(1.0, DEV, "up0", eth(bytes.fromhex("333300000012"), CLIENT, 0x86DD, packet))
    assert host.received == [(1.0, DEV, packet)]


def test_ipv6_carp_behind_extension_headers_goes_to_host() -> None:
    dp, host, _ = make()
    hop_by_hop = bytes((112, 0, 1, 4, 0, 0, 0, 0))  # PadN, then CARP
    payload = hop_by_hop + b"\x21" + b"\x00" * 35
    packet = ipv6(IPv6Address("fe80::1"), IPv6Address("ff02::12"), 0, payload)
    dp.input(1.0, DEV, "up0", eth(bytes.fromhex("333300000012"), CLIENT, 0x86DD, packet))
    assert host.received == [(1.0, DEV, packet)]


def test_mld_behind_hop_by_hop_does_not_reach_host() -> None:
    # every MLD report has a hop-by-hop header: its chain leads to ICMPv6, not to 112
    dp, host, _ = make()
    frame = eth(bytes.fromhex("333300000016"), CLIENT, 0x86DD, mld_report())
    assert dp.input(0.0, DEV, "p", frame) == []
    assert host.received == []


def test_carp_on_a_carpdev_without_carp_interfaces_still_reaches_host() -> None:
    # the host counts it (badif), as carp_proto_input does
    dp, host, _ = make()
    packet = ipv4(HOST4, IPv4Address("224.0.0.18"), 112, b"\x00" * 36)
    dp.input(0.0, "lan9", "p", eth(bytes.fromhex("01005e000012"), CLIENT, 0x0800, packet))
    assert host.received == [(0.0, "lan9", packet)]


def test_non_carp_multicast_is_ignored() -> None:
    # (e) the switch floods it to the host port; nothing for the carp interface
    dp, host, _ = make()
    packet = ipv4(CLIENT4, IPv4Address("224.0.0.251"), 17)
    assert dp.input(0.0, DEV, "p", eth(bytes.fromhex("01005e0000fb"), CLIENT, 0x0800, packet)) == []
    assert dp.input(0.0, DEV, "p", eth(BCAST, CLIENT, 0x0800, ipv4(CLIENT4, VIP4))) == []
    assert host.received == []


# --- (b) ARP -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bal", "sha", "eth_src"),
    [
        (Balancing.NONE, CARP_MAC, CARP_MAC),
        (Balancing.IP, IP_MAC, OWN),
        (Balancing.IP_UNICAST, CARP_MAC, CARP_MAC),
        (Balancing.IP_STEALTH, CARP_MAC, OWN),
    ],
)
def test_arp_reply_from_leader_master(bal: Balancing, sha: bytes, eth_src: bytes) -> None:
    dp, _, _ = make(bal, (1, 2), masters=(0,))
    tx = only_reply(dp.input(0.0, DEV, "vm1", arp_frame()))
    assert (tx.carpdev, tx.kind, tx.carpif, tx.vhid, tx.port) == (
        DEV,
        TxKind.ARP_REPLY,
        "carp0",
        1,
        "vm1",
    )
    reply = dpkt.ethernet.Ethernet(tx.frame)
    assert reply.dst == CLIENT and reply.src == eth_src
    arp = reply.data
    assert arp.op == 2 and arp.sha == sha and arp.spa == VIP4.packed
    assert arp.tha == CLIENT and arp.tpa == CLIENT4.packed
    assert dp.stats.arp_replies == 1


@pytest.mark.parametrize("bal", [Balancing.NONE, Balancing.IP, Balancing.IP_STEALTH])
def test_arp_request_ignored_unless_leader_master(bal: Balancing) -> None:
    # only the leader's state counts, even if another carpnode is MASTER here
    dp, _, _ = make(bal, (1, 2), masters=(1,))
    assert dp.input(0.0, DEV, "vm1", arp_frame()) == []


def test_gratuitous_arp_for_vip_ignored_by_master() -> None:
    dp, _, _ = make()
    garp = arp_frame(sha=bytes.fromhex("00005e000101"), spa=VIP4, tpa=VIP4)
    assert dp.input(0.0, DEV, "up0", garp) == []


def test_arp_request_for_other_address_ignored() -> None:
    dp, _, _ = make()
    assert dp.input(0.0, DEV, "vm1", arp_frame(tpa=HOST4)) == []


def test_arp_request_with_group_sha_ignored() -> None:
    dp, _, _ = make()
    assert dp.input(0.0, DEV, "vm1", arp_frame(sha=BCAST)) == []


def test_arp_request_not_running_ignored() -> None:
    dp, _, _ = make(running=False)
    assert dp.input(0.0, DEV, "vm1", arp_frame()) == []


def test_unicast_arp_request_to_carp_mac_answered() -> None:
    # Linux revalidates its neighbour entry with a unicast request to the cached MAC
    dp, _, _ = make()
    tx = only_reply(dp.input(0.0, DEV, "vm1", arp_frame(dst=CARP_MAC)))
    assert dpkt.ethernet.Ethernet(tx.frame).data.sha == CARP_MAC


def test_arp_probe_answered() -> None:
    # RFC 5227 probe (spa 0.0.0.0): the reply tells the prober the address is taken
    dp, _, _ = make()
    tx = only_reply(dp.input(0.0, DEV, "vm1", arp_frame(spa=IPv4Address("0.0.0.0"))))
    assert dpkt.ethernet.Ethernet(tx.frame).data.tpa == bytes(4)


def test_malformed_arp_for_vip_counted() -> None:
    dp, _, _ = make()
    frame = bytearray(arp_frame())
    frame[14:16] = b"\x00\x06"  # hardware type IEEE 802
    assert dp.input(0.0, DEV, "vm1", bytes(frame)) == []
    assert dp.stats.malformed == 1


def clients(n: int) -> list[bytes]:
    return [bytes((2, 0, 0, 0, i // 256, i % 256)) for i in range(n)]


def test_arp_mode_answers_iff_master_of_hashed_node() -> None:
    vhids = (3, 7)
    a, _, cif_a = make(Balancing.ARP, vhids, masters=(0,))
    b, _, _ = make(Balancing.ARP, vhids, masters=(1,))
    seen = set()
    for mac in clients(40):
        index = arp_choice(0b11, 2, arp_hash(cif_a.hmac_inner, KEY, mac))[1]
        seen.add(index)
        answers = [dp.input(0.0, DEV, "p", arp_frame(sha=mac)) for dp in (a, b)]
        # exactly one host answers each requester: the MASTER of the hashed carpnode
        assert [bool(x) for x in answers] == [index == 0, index == 1]
        tx = only_reply(answers[index])
        frame = dpkt.ethernet.Ethernet(tx.frame)
        expected = vhe_mac(vhids[index], Balancing.ARP, index == 0)
        assert frame.data.sha == expected and frame.src == expected
        assert tx.vhid == vhids[index]
    assert seen == {0, 1}


def test_arp_mode_backup_of_everything_answers_nothing() -> None:
    dp, _, _ = make(Balancing.ARP, (1, 2), masters=())
    assert all(dp.input(0.0, DEV, "p", arp_frame(sha=m)) == [] for m in clients(10))


# --- (c) NS ------------------------------------------------------------------------------


def na_of(tx: Transmit) -> tuple[dpkt.ethernet.Ethernet, bytes]:
    frame = dpkt.ethernet.Ethernet(tx.frame)
    assert frame.data.nxt == 58 and frame.data.hlim == 255
    return frame, bytes(frame.data.data)


@pytest.mark.parametrize(
    ("bal", "tll", "eth_src"),
    [
        (Balancing.NONE, CARP_MAC, CARP_MAC),
        (Balancing.IP, IP_MAC, OWN),
        (Balancing.IP_UNICAST, CARP_MAC, CARP_MAC),
        (Balancing.IP_STEALTH, CARP_MAC, OWN),
    ],
)
def test_na_reply_from_leader_master(bal: Balancing, tll: bytes, eth_src: bytes) -> None:
    dp, _, _ = make(bal, (1, 2), masters=(0,))
    tx = only_reply(dp.input(0.0, DEV, "vm1", ns_frame()))
    assert (tx.kind, tx.carpif, tx.vhid, tx.port) == (TxKind.NA_REPLY, "carp0", 1, "vm1")
    frame, icmp = na_of(tx)
    assert frame.src == eth_src and frame.dst == CLIENT
    assert frame.data.dst == CLIENT6.packed
    assert icmp[0] == 136 and icmp[4] & 0x60 == 0x60  # Solicited | Override
    assert icmp[8:24] == VIP6.packed and icmp[24:32] == b"\x02\x01" + tll
    assert dp.stats.na_replies == 1


def test_ns_ignored_by_backup() -> None:
    dp, _, _ = make(masters=())
    assert dp.input(0.0, DEV, "vm1", ns_frame()) == []


def test_ns_for_other_target_ignored() -> None:
    dp, _, _ = make()
    assert dp.input(0.0, DEV, "vm1", ns_frame(target=IPv6Address("2001:db8::2"))) == []


def test_dad_ns_answered_to_all_nodes() -> None:
    dp, _, _ = make()
    tx = only_reply(dp.input(0.0, DEV, "vm1", ns_frame(src=IPv6Address("::"), slla=None)))
    frame, icmp = na_of(tx)
    assert frame.dst == l2.ALL_NODES_MAC and icmp[4] & 0x40 == 0


def test_malformed_ns_for_vip_counted() -> None:
    dp, _, _ = make()
    assert dp.input(0.0, DEV, "vm1", ns_frame(bad_sum=True)) == []
    assert dp.stats.malformed == 1


def test_arp_mode_ns_hashes_slla() -> None:
    vhids = (1, 2)
    a, _, cif = make(Balancing.ARP, vhids, masters=(0,))
    b, _, _ = make(Balancing.ARP, vhids, masters=(1,))
    for mac in clients(20):
        index = arp_choice(0b11, 2, arp_hash(cif.hmac_inner, KEY, mac))[1]
        answers = [dp.input(0.0, DEV, "p", ns_frame(slla=mac)) for dp in (a, b)]
        assert [bool(x) for x in answers] == [index == 0, index == 1]
        _, icmp = na_of(only_reply(answers[index]))
        assert icmp[26:32] == vhe_mac(vhids[index], Balancing.ARP, index == 0)


def test_arp_mode_ns_without_slla_unanswered() -> None:
    dp, _, _ = make(Balancing.ARP, (1, 2), masters=(0, 1))
    assert dp.input(0.0, DEV, "p", ns_frame(slla=None, dst_mac=CARP_MAC)) == []


# --- (d) delivery to the carp TAP --------------------------------------------------------


def test_none_master_delivers_with_tap_mac() -> None:
    dp, _, _ = make()
    frame = unicast_to(CARP_MAC, ipv4(CLIENT4, VIP4, 6, b"\x00" * 20))
    assert dp.input(0.0, DEV, "vm1", frame) == [Deliver("carp0", frame)]
    assert dp.stats.delivered == 1


def test_none_backup_delivers_nothing() -> None:
    dp, _, _ = make(masters=())
    frame = unicast_to(CARP_MAC, ipv4(CLIENT4, VIP4, 6))
    assert dp.input(0.0, DEV, "vm1", frame) == []
    assert dp.stats.not_accepted == 1


def test_stats_are_a_plain_dict_of_every_counter() -> None:
    dp, _, _ = make()
    frame = unicast_to(CARP_MAC, ipv4(CLIENT4, VIP4, 6, b"\x00" * 20))
    dp.input(0.0, DEV, "vm1", frame)
    dp.input(0.0, DEV, "vm1", frame)
    stats = dp.stats.as_dict()
    assert list(stats) == [f.name for f in fields(dp.stats)]
    assert stats["delivered"] == 2
    assert sum(stats.values()) == 2  # nothing else happened
    stats["delivered"] = 0
    assert dp.stats.delivered == 2  # a copy: status readers cannot change the counters


def test_not_running_delivers_nothing() -> None:
    dp, _, _ = make(Balancing.IP, (1, 2), masters=(0, 1), running=False)
    assert dp.input(0.0, DEV, "vm1", unicast_to(IP_MAC, ipv4(CLIENT4, VIP4))) == []


def test_arp_reply_to_carp_mac_reaches_kernel() -> None:
    # the kernel resolves its own next hops from the carp TAP
    dp, _, _ = make()
    frame = arp_frame(op=2, dst=CARP_MAC)
    assert dp.input(0.0, DEV, "vm1", frame) == [Deliver("carp0", frame)]


def flows(n: int) -> list[IPv4Address]:
    return [IPv4Address(f"203.0.113.{i}") for i in range(1, n + 1)]


def test_ip_mode_rewrites_multicast_mac_and_splits_flows() -> None:
    a, _, _ = make(Balancing.IP, (1, 2), masters=(0,))
    b, _, _ = make(Balancing.IP, (1, 2), masters=(1,))
    tap = vhe_mac(1, Balancing.NONE, True)
    counts = [0, 0]
    for src in flows(30):
        frame = unicast_to(IP_MAC, ipv4(src, VIP4, 6, b"\x00" * 20))
        results = [dp.input(0.0, DEV, "up0", frame) for dp in (a, b)]
        index = ip_fold(src.packed, VIP4.packed) % 2
        assert [bool(r) for r in results] == [index == 0, index == 1]
        (deliver,) = results[index]
        assert deliver == Deliver("carp0", tap + frame[6:])
        counts[index] += 1
    assert min(counts) > 0
    assert a.stats.lsdropped + b.stats.lsdropped == 30


@pytest.mark.parametrize("bal", [Balancing.IP_UNICAST, Balancing.IP_STEALTH])
def test_ip_modes_accept_while_leader_backup(bal: Balancing) -> None:
    dp, _, cif = make(bal, (1, 2), masters=(1,))
    for src in flows(12):
        frame = unicast_to(cif.mac, ipv4(src, VIP4))
        keep = ip_fold(src.packed, VIP4.packed) % 2 == 1
        assert dp.input(0.0, DEV, "up0", frame) == ([Deliver("carp0", frame)] if keep else [])


def test_ip_mode_icmp_rules_apply() -> None:
    dp, _, _ = make(Balancing.IP, (1, 2), masters=())  # master of nothing
    reply = unicast_to(IP_MAC, ipv4(CLIENT4, VIP4, 1, b"\x00" * 8))  # echo reply: never filtered
    assert len(dp.input(0.0, DEV, "up0", reply)) == 1
    request = unicast_to(IP_MAC, ipv4(CLIENT4, VIP4, 1, b"\x08" + b"\x00" * 7))
    assert dp.input(0.0, DEV, "up0", request) == []


def test_ip_mode_ipv6_filter() -> None:
    dp, _, _ = make(Balancing.IP, (1, 2), masters=(0,))
    index = ip_fold(CLIENT6.packed, VIP6.packed) % 2
    frame = unicast_to(IP_MAC, ipv6(CLIENT6, VIP6, 6), af=6)
    assert bool(dp.input(0.0, DEV, "up0", frame)) == (index == 0)


def test_ip_mode_truncated_ip_counted() -> None:
    dp, _, _ = make(Balancing.IP, (1, 2), masters=(0, 1))
    assert dp.input(0.0, DEV, "up0", unicast_to(IP_MAC, b"\x45\x00")) == []
    assert dp.stats.malformed == 1


def test_ip_mode_non_ip_not_filtered() -> None:
    dp, _, _ = make(Balancing.IP, (1, 2), masters=())
    frame = arp_frame(op=2, dst=IP_MAC)
    assert dp.input(0.0, DEV, "up0", frame) == [
        Deliver("carp0", vhe_mac(1, Balancing.NONE, True) + frame[6:])
    ]


def test_arp_mode_accepts_each_master_vhe_mac() -> None:
    dp, _, cif = make(Balancing.ARP, (1, 2, 3), masters=(1,))
    tap = cif.vhes[0].mac
    for index, v in enumerate(cif.vhes):
        frame = unicast_to(v.mac, ipv4(CLIENT4, VIP4))
        expected = [Deliver("carp0", tap + frame[6:])] if index == 1 else []
        assert dp.input(0.0, DEV, "up0", frame) == expected


def test_non_leader_mac_not_accepted_outside_arp_mode() -> None:
    dp, _, cif = make(Balancing.NONE, (1, 2), masters=(0, 1))
    assert cif.vhes[1].mac not in dp.macs
    assert dp.input(0.0, DEV, "up0", unicast_to(cif.vhes[1].mac, ipv4(CLIENT4, VIP4))) == []


# --- output ------------------------------------------------------------------------------


def from_host(src: IPv4Address = VIP4, dst_mac: bytes = CLIENT) -> bytes:
    return eth(dst_mac, OWN, 0x0800, ipv4(src, CLIENT4, 6, b"\x00" * 20))


def test_output_common_case_untouched() -> None:
    dp, _, _ = make()
    frame = from_host(HOST4)
    assert dp.output(DEV, frame, False) is frame


def test_output_unknown_carpdev_untouched() -> None:
    dp, _, _ = make()
    frame = from_host()
    assert dp.output("lan9", frame, False) is frame


@pytest.mark.parametrize(
    ("bal", "src"),
    [
        (Balancing.NONE, CARP_MAC),
        (Balancing.IP_UNICAST, CARP_MAC),
        (Balancing.IP, OWN),
        (Balancing.IP_STEALTH, OWN),
    ],
)
@pytest.mark.parametrize("from_carp", [False, True])
def test_output_source_mac_per_mode(bal: Balancing, src: bytes, from_carp: bool) -> None:
    dp, _, _ = make(bal, (1, 2), masters=(0,))
    frame = from_host()
    if from_carp:
        frame = frame[:6] + dp.tap_macs["carp0"] + frame[12:]
    out = dp.output(DEV, frame, from_carp)
    assert out == frame[:6] + src + frame[12:]


def test_output_ipv6_from_vip_rewritten() -> None:
    dp, _, _ = make()
    frame = eth(CLIENT, OWN, 0x86DD, ipv6(VIP6, CLIENT6, 6))
    assert dp.output(DEV, frame, False) == frame[:6] + CARP_MAC + frame[12:]


def test_output_none_backup_refused() -> None:
    dp, _, _ = make(masters=())
    assert dp.output(DEV, from_host(), False) is None
    assert dp.stats.unreach == 1


@pytest.mark.parametrize("bal", [Balancing.IP, Balancing.IP_UNICAST, Balancing.IP_STEALTH])
def test_output_ip_modes_send_while_backup(bal: Balancing) -> None:
    dp, _, _ = make(bal, (1, 2), masters=())
    assert dp.output(DEV, from_host(), False) is not None


def test_output_from_carp_with_other_source_ip_rewritten() -> None:
    dp, _, _ = make(Balancing.IP, (1, 2), masters=(0,))
    frame = eth(CLIENT, dp.tap_macs["carp0"], 0x0800, ipv4(HOST4, CLIENT4))
    assert dp.output(DEV, frame, True) == frame[:6] + OWN + frame[12:]
    assert dp.output(DEV, frame, False) is frame  # from the host port: not a virtual address


def test_output_arp_mode_source_follows_destination_hash() -> None:
    vhids = (1, 2)
    dp, _, cif = make(Balancing.ARP, vhids, masters=(0, 1))
    for mac in clients(16):
        index = arp_choice(0b11, 2, arp_hash(cif.hmac_inner, KEY, mac))[1]
        out = dp.output(DEV, from_host(dst_mac=mac), False)
        assert out is not None and out[6:12] == cif.vhes[index].mac


def test_output_arp_mode_falls_back_to_a_master_mac() -> None:
    dp, _, cif = make(Balancing.ARP, (1, 2), masters=(1,))
    for mac in clients(16):
        out = dp.output(DEV, from_host(dst_mac=mac), False)
        assert out is not None and out[6:12] == cif.vhes[1].mac


def test_output_arp_mode_refused_without_master() -> None:
    dp, _, _ = make(Balancing.ARP, (1, 2), masters=())
    assert dp.output(DEV, from_host(), False) is None


@pytest.mark.parametrize("from_carp", [False, True])
def test_output_drops_kernel_arp_reply_for_vip(from_carp: bool) -> None:
    dp, _, _ = make()
    reply = arp_frame(op=2, sha=OWN, spa=VIP4, tpa=CLIENT4, dst=CLIENT)
    assert dp.output(DEV, reply, from_carp) is None
    assert dp.stats.kernel_answers == 1


def test_output_drops_kernel_gratuitous_arp_for_vip() -> None:
    dp, _, _ = make()
    assert dp.output(DEV, arp_frame(sha=CARP_MAC, spa=VIP4, tpa=VIP4), True) is None


def test_output_keeps_kernel_arp_for_host_address() -> None:
    dp, _, _ = make()
    reply = arp_frame(op=2, sha=OWN, spa=HOST4, tpa=CLIENT4, dst=CLIENT)
    assert dp.output(DEV, reply, False) is reply


@pytest.mark.parametrize(
    ("bal", "sha", "src"),
    [
        (Balancing.NONE, CARP_MAC, CARP_MAC),
        (Balancing.IP, IP_MAC, OWN),
        (Balancing.IP_STEALTH, CARP_MAC, OWN),
    ],
)
def test_output_kernel_arp_request_from_vip(bal: Balancing, sha: bytes, src: bytes) -> None:
    dp, _, _ = make(bal, (1, 2), masters=(0,))
    request = arp_frame(sha=OWN, spa=VIP4, tpa=CLIENT4)
    out = dp.output(DEV, request, False)
    assert out is not None
    frame = dpkt.ethernet.Ethernet(out)
    assert frame.src == src and frame.data.sha == sha and frame.data.tpa == CLIENT4.packed


def test_output_kernel_arp_request_from_vip_refused_by_backup() -> None:
    dp, _, _ = make(masters=())
    assert dp.output(DEV, arp_frame(sha=OWN, spa=VIP4, tpa=CLIENT4), False) is None


@pytest.mark.parametrize("from_carp", [False, True])
def test_output_drops_kernel_na_for_vip(from_carp: bool) -> None:
    dp, _, _ = make()
    assert dp.output(DEV, na_frame(VIP6, VIP6), from_carp) is None


def test_output_keeps_na_for_other_target() -> None:
    dp, _, _ = make()
    frame = na_frame(IPv6Address("2001:db8::2"), IPv6Address("2001:db8::2"))
    assert dp.output(DEV, frame, False) is frame


def mld_report() -> bytes:
    hbh = b"\x3a\x00\x05\x02\x00\x00\x01\x00"
    return ipv6(IPv6Address("fe80::1"), IPv6Address("ff02::16"), 0, hbh + b"\x8f" + b"\x00" * 7)


@pytest.mark.parametrize(
    "packet",
    [
        mld_report(),
        ipv6(IPv6Address("fe80::1"), IPv6Address("ff02::2"), 58, b"\x85" + b"\x00" * 7),  # RS
        ipv6(IPv6Address("::"), IPv6Address("ff02::1:ff00:10"), 58, b"\x87" + b"\x00" * 23),
    ],
)
def test_output_drops_carp_tap_noise(packet: bytes) -> None:
    dp, _, _ = make()
    frame = eth(b"\x33\x33\x00\x00\x00\x16", dp.tap_macs["carp0"], 0x86DD, packet)
    assert dp.output(DEV, frame, True) is None
    assert dp.stats.noise == 1
    host_frame = frame[:6] + OWN + frame[12:]
    assert dp.output(DEV, host_frame, False) is host_frame  # the host port's own MLD passes


# --- refresh and tables ------------------------------------------------------------------


def test_refresh_picks_up_state_changes() -> None:
    dp, _, cif = make(masters=())
    frame = unicast_to(CARP_MAC, ipv4(CLIENT4, VIP4))
    assert dp.input(0.0, DEV, "p", frame) == []
    cif.set_masters([0])
    assert dp.input(0.0, DEV, "p", frame) == []  # tables are a snapshot until refresh()
    dp.refresh()
    assert dp.input(0.0, DEV, "p", frame) == [Deliver("carp0", frame)]


def test_macs_tables() -> None:
    dp, _, _ = make(Balancing.IP, (4, 5))
    assert dp.macs == {vhe_mac(4, Balancing.IP, True), vhe_mac(4, Balancing.NONE, True)}
    assert dp.carpdev_macs == {DEV: dp.macs}
    assert dp.tap_macs == {"carp0": bytes.fromhex("00005e000104")}
    arp, _, arp_cif = make(Balancing.ARP, (4, 5))
    assert arp.macs == {v.mac for v in arp_cif.vhes}


def test_custom_lladdr_is_carp_and_tap_mac() -> None:
    custom = bytes.fromhex("02aabbccddee")
    dp, _, _ = make(lladdr=custom)
    assert dp.macs == {custom} and dp.tap_macs["carp0"] == custom
    tx = only_reply(dp.input(0.0, DEV, "vm1", arp_frame()))
    assert dpkt.ethernet.Ethernet(tx.frame).data.sha == custom


def test_two_carp_interfaces_on_one_carpdev() -> None:
    dp, host, cif0 = make(name="carp0")
    vip1 = IPv4Address("192.0.2.20")
    other = FakeCif(
        "carp1",
        DEV,
        Balancing.NONE,
        vhe_mac(9, Balancing.NONE, True),
        [FakeVhe(9, State.MASTER, vhe_mac(9, Balancing.NONE, True))],
        frozenset({vip1}),
        frozenset(),
    )
    host.carpifs["carp1"] = other
    cif0.set_masters([])
    dp.refresh()
    assert dp.input(0.0, DEV, "p", arp_frame()) == []  # carp0 is BACKUP
    tx = only_reply(dp.input(0.0, DEV, "p", arp_frame(tpa=vip1)))
    assert tx.carpif == "carp1" and tx.vhid == 9
    out = dp.output(DEV, eth(CLIENT, other.mac, 0x0800, ipv4(HOST4, CLIENT4)), True)
    assert out is not None  # carp1's TAP may send
    assert dp.output(DEV, eth(CLIENT, CARP_MAC, 0x0800, ipv4(HOST4, CLIENT4)), True) is None


# --- robustness and the ip-stealth invariant ----------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(list(Balancing)),
    st.binary(max_size=90),
    st.sampled_from([b"\x08\x00", b"\x86\xdd", b"\x08\x06", b"\x88\xcc"]),
    st.booleans(),
)
def test_never_raises(bal: Balancing, body: bytes, ethertype: bytes, from_carp: bool) -> None:
    dp, _, cif = make(bal, (1, 2), masters=(0,))
    for dst in (cif.mac, BCAST, CLIENT):
        frame = dst + CLIENT + ethertype + body
        dp.input(0.0, DEV, "p", frame)
        dp.output(DEV, frame, from_carp)
    dp.input(0.0, DEV, "p", b"\x00" * 5)
    dp.output(DEV, b"\x00" * 5, from_carp)


def stealth_frames(tap: bytes) -> list[tuple[bytes, bool]]:
    """Frames the kernel might send, from the host port and the carp TAP."""
    out: list[tuple[bytes, bool]] = []
    for src_mac, from_carp in ((OWN, False), (tap, True)):
        out += [
            (eth(CLIENT, src_mac, 0x0800, ipv4(VIP4, CLIENT4, 6)), from_carp),
            (eth(CLIENT, src_mac, 0x0800, ipv4(HOST4, CLIENT4, 1)), from_carp),
            (eth(CLIENT, src_mac, 0x86DD, ipv6(VIP6, CLIENT6, 17)), from_carp),
            (
                eth(
                    CLIENT,
                    src_mac,
                    0x86DD,
                    ipv6(IPv6Address("fe80::5"), CLIENT6, 58, b"\x87" + bytes(23)),
                ),
                from_carp,
            ),
            (arp_frame(sha=src_mac, spa=VIP4, tpa=CLIENT4), from_carp),
            (ns_frame(target=CLIENT6, src=VIP6, slla=src_mac), from_carp),
            (arp_frame(sha=src_mac, spa=HOST4, tpa=CLIENT4), from_carp),
        ]
    return out


@pytest.mark.parametrize("masters", [(), (0,), (1,), (0, 1)])
def test_ip_stealth_never_sources_a_virtual_mac(masters: tuple[int, ...]) -> None:
    dp, _, cif = make(Balancing.IP_STEALTH, (1, 2), masters=masters)
    virtual = {v.mac for v in cif.vhes} | {cif.mac, dp.tap_macs["carp0"]}
    produced: list[bytes] = []
    for frame, from_carp in stealth_frames(dp.tap_macs["carp0"]):
        out = dp.output(DEV, frame, from_carp)
        if out is not None:
            produced.append(out)
    for mac in clients(8):
        for request in (arp_frame(sha=mac), ns_frame(slla=mac)):
            produced += [a.frame for a in transmits(dp.input(0.0, DEV, "p", request))]
    assert produced  # the invariant is checked on real output
    assert all(f[6:12] not in virtual for f in produced)


# --- with the real CarpHost --------------------------------------------------------------


class Pair:
    """Two real CarpHosts on one segment, their adverts carried through DataPath.input()."""

    def __init__(self, balancing: Balancing, nodes_a: str, nodes_b: str) -> None:
        self.hosts: dict[str, CarpHost] = {}
        self.dps: dict[str, DataPath] = {}
        draws = itertools.count(1)
        for name, nodes, mac, ip in (
            ("a", nodes_a, bytes.fromhex("02000000000a"), "192.0.2.2"),
            ("b", nodes_b, bytes.fromhex("02000000000b"), "192.0.2.3"),
        ):
            spec = tuple(
                CarpNodeParams(int(v), int(s)) for v, s in (n.split(":") for n in nodes.split(","))
            )
            params = CarpIfParams(
                "carp0",
                DEV,
                (IPv4Interface("192.0.2.10/24"), IPv6Interface("2001:db8::10/64")),
                spec,
                passphrase=b"secret",
                balancing=balancing,
            )
            dev = CarpDev(DEV, mac, IPv4Address(ip))
            host = CarpHost(
                Sysctls(preempt=True), [params], {DEV: dev}, lambda: next(draws).to_bytes(8, "big")
            )
            self.hosts[name] = host
            self.dps[name] = DataPath(host)
        for name, host in self.hosts.items():
            self.carry(name, host.start(0.0), 0.0)

    def carry(self, sender: str, actions: list[Action], now: float) -> None:
        pending = [(sender, a) for a in actions]
        while pending:
            name, action = pending.pop(0)
            if isinstance(action, Transmit) and action.kind is TxKind.ADVERT:
                for other, dp in self.dps.items():
                    if other != name:
                        pending += [(other, a) for a in dp.input(now, DEV, "up0", action.frame)]
        for dp in self.dps.values():
            dp.refresh()

    def run_until(self, until: float) -> None:
        for _ in range(10_000):
            due = [(t, n) for n, h in self.hosts.items() if (t := h.get_timer()) is not None]
            if not due or min(due)[0] > until:
                return
            now, name = min(due)
            self.carry(name, self.hosts[name].handle_timer(now), now)
        raise AssertionError("timers did not settle")

    def states(self) -> dict[str, list[State]]:
        return {n: [v.state for v in h.carpifs["carp0"].vhes] for n, h in self.hosts.items()}


def test_real_hosts_elect_and_only_the_master_answers() -> None:
    pair = Pair(Balancing.NONE, "1:0", "1:100")
    pair.run_until(10.0)
    assert pair.states() == {"a": [State.MASTER], "b": [State.BACKUP]}
    assert pair.hosts["b"].stats.ipackets > 0  # adverts reached host b through input()
    answers = {n: dp.input(10.0, DEV, "vm1", arp_frame()) for n, dp in pair.dps.items()}
    assert answers["b"] == []
    tx = only_reply(answers["a"])
    assert dpkt.ethernet.Ethernet(tx.frame).data.sha == CARP_MAC
    frame = unicast_to(CARP_MAC, ipv4(CLIENT4, VIP4))
    assert pair.dps["a"].input(10.0, DEV, "vm1", frame) == [Deliver("carp0", frame)]
    assert pair.dps["b"].input(10.0, DEV, "vm1", frame) == []
    assert pair.dps["b"].output(DEV, from_host(), False) is None


def test_real_hosts_ip_balancing_split_flows() -> None:
    pair = Pair(Balancing.IP, "1:0,2:100", "1:100,2:0")
    pair.run_until(10.0)
    assert pair.states() == {"a": [State.MASTER, State.BACKUP], "b": [State.BACKUP, State.MASTER]}
    for src in flows(20):
        frame = unicast_to(IP_MAC, ipv4(src, VIP4, 6, b"\x00" * 20))
        keepers = [n for n, dp in pair.dps.items() if dp.input(10.0, DEV, "up0", frame)]
        assert keepers == (["a"] if ip_fold(src.packed, VIP4.packed) % 2 == 0 else ["b"])
    # only a (leader MASTER) answers ARP, from its own MAC with the multicast MAC inside
    answers = {n: dp.input(10.0, DEV, "vm1", arp_frame()) for n, dp in pair.dps.items()}
    assert answers["b"] == []
    reply = dpkt.ethernet.Ethernet(only_reply(answers["a"]).frame)
    assert reply.src == bytes.fromhex("02000000000a") and reply.data.sha == IP_MAC


def test_real_hosts_arp_balancing_one_answer_per_client() -> None:
    pair = Pair(Balancing.ARP, "1:0,2:100", "1:100,2:0")
    pair.run_until(10.0)
    assert pair.states() == {"a": [State.MASTER, State.BACKUP], "b": [State.BACKUP, State.MASTER]}
    answered_by = set()
    for mac in clients(24):
        answers = {n: dp.input(10.0, DEV, "p", arp_frame(sha=mac)) for n, dp in pair.dps.items()}
        (who,) = [n for n, a in answers.items() if a]
        answered_by.add(who)
        sha = dpkt.ethernet.Ethernet(only_reply(answers[who]).frame).data.sha
        assert sha == vhe_mac(1 if who == "a" else 2, Balancing.ARP, who == "a")
    assert answered_by == {"a", "b"}


@pytest.mark.parametrize(
    ("bal", "slla", "src"),
    [
        (Balancing.NONE, CARP_MAC, CARP_MAC),
        (Balancing.IP, IP_MAC, OWN),
        (Balancing.IP_STEALTH, CARP_MAC, OWN),
    ],
)
def test_output_kernel_ns_from_vip_advertises_carp_mac(
    bal: Balancing, slla: bytes, src: bytes
) -> None:
    dp, _, _ = make(bal, (1, 2), masters=(0,))
    ns = ns_frame(target=CLIENT6, src=VIP6, slla=OWN)
    out = dp.output(DEV, ns, False)
    assert out is not None and out[6:12] == src
    parsed = l2.parse_ns(out)
    assert parsed is not None and parsed.slla == slla and parsed.target == CLIENT6.packed


def test_output_arp_mode_source_follows_state_changes() -> None:
    dp, _, cif = make(Balancing.ARP, (1, 2), masters=(0, 1))
    mac = next(
        m for m in clients(64) if arp_choice(0b11, 2, arp_hash(cif.hmac_inner, KEY, m))[1] == 1
    )
    frame = from_host(dst_mac=mac)
    outs = [dp.output(DEV, frame, False) for _ in range(2)]  # the second from the cache
    assert [o[6:12] if o else None for o in outs] == [cif.vhes[1].mac] * 2
    cif.set_masters([0])
    dp.refresh()
    out = dp.output(DEV, frame, False)
    assert out is not None and out[6:12] == cif.vhes[0].mac
