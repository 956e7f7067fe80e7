"""balance.py: MACs (§6.3), source MAC (design 4), carp_lsdrop with ICMP rules (§6.5), ARP hash."""

import struct
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carp.auth import carp_key, inner_words
from carp.balance import (
    arp_choice,
    arp_hash,
    ip_fold,
    lsdrop_keep,
    source_mac,
    tap_mac,
    vhe_mac,
)
from carp.constants import Balancing

OWN = bytes.fromhex("020000000001")
VMAC = bytes.fromhex("00005e000105")


def ipv4(
    src: str, dst: str, proto: int, payload: bytes = b"", frag: int = 0, ihl: int = 5
) -> bytes:
    opts = bytes((ihl - 5) * 4)
    hdr = struct.pack(
        "!BBHHHBBH4s4s",
        0x40 | ihl,
        0,
        ihl * 4 + len(payload),
        1,
        frag,
        64,
        proto,
        0,
        IPv4Address(src).packed,
        IPv4Address(dst).packed,
    )
    return hdr + opts + payload


def ipv6(src: str, dst: str, nxt: int, payload: bytes = b"") -> bytes:
    hdr = struct.pack("!IHBB", 0x60000000, len(payload), nxt, 64)
    return hdr + IPv6Address(src).packed + IPv6Address(dst).packed + payload


def icmp(icmp_type: int, body: bytes = b"\x00" * 4) -> bytes:
    return bytes((icmp_type, 0, 0, 0)) + body


def fold_of(a: str, b: str) -> int:
    return ip_fold(ip_address(a).packed, ip_address(b).packed)


def mask_with(index: int) -> int:
    return 1 << index


# --- §6.3 MACs ---------------------------------------------------------------------------


@pytest.mark.parametrize("bal", list(Balancing))
def test_vhe_mac_is_vrrp_range_for_non_leaders(bal: Balancing) -> None:
    assert vhe_mac(5, bal, leader=False) == bytes.fromhex("00005e000105")


@pytest.mark.parametrize("bal", [b for b in Balancing if b != Balancing.IP])
def test_vhe_mac_leader_unicast_outside_ip_mode(bal: Balancing) -> None:
    assert vhe_mac(200, bal, leader=True) == bytes.fromhex("00005e0001c8")


def test_vhe_mac_ip_leader_sets_group_bit() -> None:
    assert vhe_mac(1, Balancing.IP, leader=True) == bytes.fromhex("01005e000101")


def test_vhe_mac_vhid_zero_is_all_zero() -> None:
    assert vhe_mac(0, Balancing.NONE, leader=True) == bytes(6)


def test_tap_mac_clears_group_bit_only() -> None:
    assert tap_mac(bytes.fromhex("01005e000107")) == bytes.fromhex("00005e000107")
    assert tap_mac(bytes.fromhex("00005e000107")) == bytes.fromhex("00005e000107")
    custom = bytes.fromhex("02aabbccddee")
    assert tap_mac(custom) == custom


# --- design decision 4: source MAC -------------------------------------------------------


@pytest.mark.parametrize(
    ("bal", "expected"),
    [
        (Balancing.NONE, VMAC),
        (Balancing.ARP, VMAC),
        (Balancing.IP_UNICAST, VMAC),
        (Balancing.IP, OWN),
        (Balancing.IP_STEALTH, OWN),
    ],
)
def test_source_mac_per_mode(bal: Balancing, expected: bytes) -> None:
    assert source_mac(bal, VMAC, OWN) == expected


# --- §6.5 fold and worked examples -------------------------------------------------------


def test_worked_example_ipv4_two_nodes() -> None:
    # §6.5: (192.0.2.1 -> 198.51.100.10, 2 nodes) -> index 1
    assert fold_of("192.0.2.1", "198.51.100.10") % 2 == 1
    pkt = ipv4("192.0.2.1", "198.51.100.10", 6, b"\x00" * 20)
    assert lsdrop_keep(pkt, 4, mask_with(1), 2)
    assert not lsdrop_keep(pkt, 4, mask_with(0), 2)


def test_worked_example_ipv6_three_nodes() -> None:
    # §6.5: (2001:db8::1 -> 2001:db8::10, 3 nodes) -> index 2
    assert fold_of("2001:db8::1", "2001:db8::10") % 3 == 2
    pkt = ipv6("2001:db8::1", "2001:db8::10", 17, b"\x00" * 8)
    assert lsdrop_keep(pkt, 6, mask_with(2), 3)
    assert not lsdrop_keep(pkt, 6, mask_with(0) | mask_with(1), 3)


def test_fold_is_xor_of_big_endian_words() -> None:
    src = bytes.fromhex("0102030405060708090a0b0c0d0e0f10")
    dst = bytes.fromhex("11121314aabbccdd0000000100000002")
    words = struct.unpack("!8I", src + dst)
    expected = 0
    for w in words:
        expected ^= w
    assert ip_fold(src, dst) == expected


@given(st.binary(min_size=4, max_size=4), st.binary(min_size=4, max_size=4))
def test_fold_symmetric_ipv4(a: bytes, b: bytes) -> None:
    assert ip_fold(a, b) == ip_fold(b, a)
    assert ip_fold(a, b) == struct.unpack("!I", a)[0] ^ struct.unpack("!I", b)[0]


@given(st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16))
def test_fold_symmetric_ipv6(a: bytes, b: bytes) -> None:
    assert ip_fold(a, b) == ip_fold(b, a)
    assert 0 <= ip_fold(a, b) <= 0xFFFFFFFF


@given(
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.integers(1, 32),
    st.integers(0, 0xFFFFFFFF),
)
def test_tcp_udp_keep_matches_rule(src: int, dst: int, lscount: int, lsmask: int) -> None:
    s, d = IPv4Address(src), IPv4Address(dst)
    pkt = ipv4(str(s), str(d), 17, b"\x00" * 8)
    if d.is_multicast or d == IPv4Address("255.255.255.255"):
        assert lsdrop_keep(pkt, 4, lsmask, lscount)
    else:
        assert lsdrop_keep(pkt, 4, lsmask, lscount) == bool(lsmask >> ((src ^ dst) % lscount) & 1)


def test_exactly_one_of_the_nodes_keeps_each_unicast_packet() -> None:
    # identical carpnodes lists on three hosts, each MASTER of one node
    pkts = [ipv4(f"192.0.2.{i}", f"203.0.113.{j}", 6) for i in range(1, 20) for j in (1, 77)]
    for pkt in pkts:
        keepers = [h for h in range(3) if lsdrop_keep(pkt, 4, mask_with(h), 3)]
        assert len(keepers) == 1


def test_lscount_zero_drops() -> None:
    assert not lsdrop_keep(ipv4("192.0.2.1", "192.0.2.2", 6), 4, 0xFFFFFFFF, 0)
    assert not lsdrop_keep(ipv6("2001:db8::1", "2001:db8::2", 6), 6, 0xFFFFFFFF, 0)


def test_broadcast_and_multicast_never_dropped() -> None:
    assert lsdrop_keep(ipv4("192.0.2.1", "255.255.255.255", 17), 4, 0, 2)
    assert lsdrop_keep(ipv4("192.0.2.1", "224.0.0.18", 112), 4, 0, 2)
    assert lsdrop_keep(ipv4("192.0.2.1", "239.1.2.3", 17), 4, 0, 0)
    assert lsdrop_keep(ipv6("fe80::1", "ff02::1", 58, icmp(128)), 6, 0, 2)
    assert lsdrop_keep(ipv6("2001:db8::1", "ff05::2", 17), 6, 0, 2)


def test_subnet_broadcast_only_when_given() -> None:
    pkt = ipv4("192.0.2.1", "192.0.2.255", 17)
    bcast = {IPv4Address("192.0.2.255").packed}
    assert lsdrop_keep(pkt, 4, 0, 2, bcast)
    assert not lsdrop_keep(pkt, 4, 0, 2)


# --- §6.5 ICMP rules ---------------------------------------------------------------------


def icmp_error(icmp_type: int, orig_src: str, orig_dst: str) -> bytes:
    inner = ipv4(orig_src, orig_dst, 17, b"\x00" * 8)
    return bytes((icmp_type, 0, 0, 0)) + b"\x00" * 4 + inner


@pytest.mark.parametrize("icmp_type", [3, 4, 5, 11, 12])
def test_icmp_errors_use_inner_destination(icmp_type: int) -> None:
    # a router 198.51.100.1 reports that VIP 192.0.2.10's packet to 203.0.113.5 was not delivered
    pkt = ipv4("198.51.100.2", "192.0.2.10", 1, icmp_error(icmp_type, "192.0.2.10", "203.0.113.5"))
    flow = fold_of("203.0.113.5", "192.0.2.10") % 2
    outer = fold_of("198.51.100.2", "192.0.2.10") % 2
    assert flow != outer  # the test distinguishes the two pairs
    assert lsdrop_keep(pkt, 4, mask_with(flow), 2)
    assert not lsdrop_keep(pkt, 4, mask_with(outer), 2)


def test_short_icmp_error_is_dropped() -> None:
    good = icmp_error(3, "192.0.2.10", "203.0.113.5")
    pkt = ipv4("198.51.100.1", "192.0.2.10", 1, good[:30])
    assert not lsdrop_keep(pkt, 4, 0xFFFFFFFF, 2)
    bad_hl = bytearray(good)
    bad_hl[8] = 0x44  # inner ip_hl 4 < 5
    assert not lsdrop_keep(ipv4("198.51.100.1", "192.0.2.10", 1, bytes(bad_hl)), 4, 3, 2)


@pytest.mark.parametrize("icmp_type", [8, 13, 17])
def test_icmp_requests_use_src_dst(icmp_type: int) -> None:
    pkt = ipv4("203.0.113.7", "192.0.2.10", 1, icmp(icmp_type, b"\x00" * 16))
    idx = fold_of("203.0.113.7", "192.0.2.10") % 2
    assert lsdrop_keep(pkt, 4, mask_with(idx), 2)
    assert not lsdrop_keep(pkt, 4, mask_with(1 - idx), 2)


@pytest.mark.parametrize("icmp_type", [0, 9, 10, 14, 18, 42])
def test_other_icmp_never_filtered(icmp_type: int) -> None:
    pkt = ipv4("203.0.113.7", "192.0.2.10", 1, icmp(icmp_type))
    assert lsdrop_keep(pkt, 4, 0, 2)


def test_icmp_with_ip_options_finds_type() -> None:
    pkt = ipv4("203.0.113.7", "192.0.2.10", 1, icmp(8), ihl=6)
    idx = fold_of("203.0.113.7", "192.0.2.10") % 2
    assert lsdrop_keep(pkt, 4, mask_with(idx), 2)
    assert not lsdrop_keep(pkt, 4, mask_with(1 - idx), 2)


def test_icmp_non_first_fragment_passes() -> None:
    pkt = ipv4("203.0.113.7", "192.0.2.10", 1, b"\x08" + b"\x00" * 15, frag=0x0010)
    assert lsdrop_keep(pkt, 4, 0, 2)


def test_non_icmp_fragments_are_filtered() -> None:
    pkt = ipv4("203.0.113.7", "192.0.2.10", 17, b"\x00" * 16, frag=0x2010)
    idx = fold_of("203.0.113.7", "192.0.2.10") % 2
    assert lsdrop_keep(pkt, 4, mask_with(idx), 2)
    assert not lsdrop_keep(pkt, 4, mask_with(1 - idx), 2)


def test_icmpv6_only_echo_request_filtered() -> None:
    src, dst = "2001:db8::99", "2001:db8::10"
    idx = fold_of(src, dst) % 2
    echo = ipv6(src, dst, 58, icmp(128))
    assert lsdrop_keep(echo, 6, mask_with(idx), 2)
    assert not lsdrop_keep(echo, 6, mask_with(1 - idx), 2)
    for t in (1, 2, 3, 4, 129, 130, 131, 132, 133, 134, 135, 136, 137, 143):
        assert lsdrop_keep(ipv6(src, dst, 58, icmp(t)), 6, 0, 2), t


def test_ipv6_first_next_header_decides() -> None:
    # ip6_input_if only looks at ip6_nxt: ICMPv6 behind a hop-by-hop header is filtered
    src, dst = "2001:db8::99", "2001:db8::10"
    idx = fold_of(src, dst) % 2
    pkt = ipv6(src, dst, 0, b"\x3a\x00\x05\x02\x00\x00\x01\x00" + icmp(136))
    assert not lsdrop_keep(pkt, 6, mask_with(1 - idx), 2)
    assert lsdrop_keep(pkt, 6, mask_with(idx), 2)


@pytest.mark.parametrize(
    ("pkt", "af"),
    [
        (b"", 4),
        (b"\x45" + b"\x00" * 10, 4),
        (ipv6("2001:db8::1", "2001:db8::2", 6), 4),  # wrong version for af
        (ipv4("192.0.2.1", "192.0.2.2", 6), 6),
        (ipv6("2001:db8::1", "2001:db8::2", 58), 6),  # ICMPv6 without a type byte
        (ipv4("192.0.2.1", "192.0.2.2", 1), 4),  # ICMP without a type byte
        (ipv4("192.0.2.1", "192.0.2.2", 6), 5),  # unknown af
    ],
)
def test_malformed_dropped(pkt: bytes, af: int) -> None:
    assert not lsdrop_keep(pkt, af, 0xFFFFFFFF, 1)


@given(st.binary(max_size=80), st.sampled_from([4, 6]), st.integers(0, 2**32 - 1))
def test_never_raises(data: bytes, af: int, lsmask: int) -> None:
    assert lsdrop_keep(data, af, lsmask, 3) in (True, False)


# --- §6.8 ARP hash -----------------------------------------------------------------------


def test_arp_hash_check_value() -> None:
    key = carp_key("mekmitasdigoat").ljust(20, b"\x00")
    mac = bytes.fromhex("001122334455")
    assert arp_hash(inner_words(key), key, mac) == 0x90793861


def test_arp_hash_depends_on_mac_and_key() -> None:
    key = carp_key("mekmitasdigoat").ljust(20, b"\x00")
    inner = inner_words(key)
    a = arp_hash(inner, key, bytes.fromhex("001122334455"))
    assert arp_hash(inner, key, bytes.fromhex("001122334456")) != a
    other = carp_key("secret").ljust(20, b"\x00")
    assert arp_hash(inner_words(other), other, bytes.fromhex("001122334455")) != a


@given(st.binary(min_size=6, max_size=6))
def test_arp_hash_is_u32(mac: bytes) -> None:
    key = bytes(20)
    assert 0 <= arp_hash(inner_words(key), key, mac) <= 0xFFFFFFFF


def test_arp_choice() -> None:
    assert arp_choice(0b10, 2, 7) == (True, 1)
    assert arp_choice(0b01, 2, 7) == (False, 1)
    assert arp_choice(0b100, 3, 11) == (True, 2)
    assert arp_choice(0xFFFFFFFF, 0, 5) == (False, 0)


def test_arp_choice_spreads_over_nodes() -> None:
    key = carp_key("secret").ljust(20, b"\x00")
    inner = inner_words(key)
    idx = {
        arp_choice(0b11, 2, arp_hash(inner, key, bytes((2, 0, 0, 0, 0, i))))[1] for i in range(32)
    }
    assert idx == {0, 1}
