"""l2.py: ARP / NDP builders checked against dpkt as an independent parser, and the parsers."""

import struct
from ipaddress import IPv4Address, IPv6Address

import dpkt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from carp.l2 import (
    ALL_NODES_MAC,
    ArpPacket,
    NeighborSolicit,
    arp_reply,
    gratuitous_arp,
    na_reply,
    parse_arp,
    parse_ns,
    rewrite_slla,
    solicited_node,
    unsolicited_na,
)

CARP_MAC = bytes.fromhex("00005e000101")
OWN = bytes.fromhex("020000000002")
CLIENT = bytes.fromhex("020000000099")
VIP4 = IPv4Address("192.0.2.10")
VIP6 = IPv6Address("2001:db8::10")
CLIENT6 = IPv6Address("2001:db8::99")


def dpkt_checksum_ok(ip6: dpkt.ip6.IP6) -> bool:
    """Recompute the ICMPv6 checksum with dpkt's own pseudo-header code."""
    icmp = ip6.data
    sent = icmp.sum
    icmp.sum = 0
    copy = dpkt.ip6.IP6(bytes(ip6))
    return bool(copy.data.sum == sent)


def make_ns(
    src: IPv6Address,
    dst: IPv6Address,
    target: IPv6Address,
    slla: bytes | None = CLIENT,
    hlim: int = 255,
    code: int = 0,
    eth_dst: bytes | None = None,
    options: bytes | None = None,
    bad_sum: bool = False,
) -> bytes:
    """An NS built with dpkt (checksum by dpkt), independent of carp.l2."""
    opts = options if options is not None else (b"\x01\x01" + slla if slla else b"")
    icmp = dpkt.icmp6.ICMP6(type=135, code=code, data=b"\x00" * 4 + target.packed + opts)
    ip6 = dpkt.ip6.IP6(
        v=6, nxt=58, hlim=hlim, src=src.packed, dst=dst.packed, data=icmp, plen=len(bytes(icmp))
    )
    raw = bytes(ip6)
    if bad_sum:
        raw = raw[:42] + bytes((raw[42] ^ 0xFF,)) + raw[43:]
    if eth_dst is None:
        eth_dst = b"\x33\x33" + solicited_node(target.packed)[12:]
    return eth_dst + CLIENT + b"\x86\xdd" + raw


# --- ARP ---------------------------------------------------------------------------------


def test_gratuitous_arp_fields() -> None:
    frame = gratuitous_arp(CARP_MAC, VIP4)
    eth = dpkt.ethernet.Ethernet(frame)
    assert len(frame) == 60
    assert eth.dst == b"\xff" * 6 and eth.src == CARP_MAC and eth.type == 0x0806
    arp = eth.data
    assert (arp.hrd, arp.pro, arp.hln, arp.pln, arp.op) == (1, 0x0800, 6, 4, 1)
    assert arp.sha == CARP_MAC and arp.tha == bytes(6)
    assert arp.spa == arp.tpa == VIP4.packed


def test_gratuitous_arp_eth_source_override() -> None:
    frame = gratuitous_arp(CARP_MAC, VIP4, eth_src=OWN)
    assert frame[6:12] == OWN
    parsed = parse_arp(frame)
    assert parsed is not None and parsed.sha == CARP_MAC and parsed.gratuitous


def request_frame(spa: str = "192.0.2.99", tpa: str = "192.0.2.10", sha: bytes = CLIENT) -> bytes:
    arp = dpkt.arp.ARP(
        op=1, sha=sha, spa=IPv4Address(spa).packed, tha=bytes(6), tpa=IPv4Address(tpa).packed
    )
    eth = dpkt.ethernet.Ethernet(dst=b"\xff" * 6, src=sha, type=0x0806, data=arp)
    return bytes(eth)


def test_parse_arp_request() -> None:
    parsed = parse_arp(request_frame())
    assert parsed == ArpPacket(
        b"\xff" * 6, CLIENT, 1, CLIENT, IPv4Address("192.0.2.99").packed, bytes(6), VIP4.packed
    )
    assert not parsed.gratuitous


def test_arp_reply_answers_the_request() -> None:
    req = parse_arp(request_frame())
    assert req is not None
    frame = arp_reply(req, CARP_MAC, eth_src=OWN)
    eth = dpkt.ethernet.Ethernet(frame)
    assert eth.dst == CLIENT and eth.src == OWN
    arp = eth.data
    assert arp.op == 2
    assert arp.sha == CARP_MAC and arp.spa == VIP4.packed
    assert arp.tha == CLIENT and arp.tpa == IPv4Address("192.0.2.99").packed
    assert parse_arp(frame) is not None


def test_arp_reply_defaults_eth_source_to_sha() -> None:
    req = parse_arp(request_frame())
    assert req is not None
    assert arp_reply(req, CARP_MAC)[6:12] == CARP_MAC


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        request_frame()[:41],
        request_frame()[:12] + b"\x08\x00" + request_frame()[14:],  # not ARP
        request_frame()[:14] + b"\x00\x06" + request_frame()[16:],  # htype IEEE 802
        request_frame()[:16] + b"\x86\xdd" + request_frame()[18:],  # ptype IPv6
        request_frame()[:18] + b"\x08" + request_frame()[19:],  # hlen 8
    ],
)
def test_parse_arp_rejects(frame: bytes) -> None:
    assert parse_arp(frame) is None


@given(st.binary(max_size=64))
def test_parse_arp_never_raises(data: bytes) -> None:
    parse_arp(b"\xff" * 12 + b"\x08\x06" + data)


# --- NDP ---------------------------------------------------------------------------------


def na_fields(frame: bytes) -> tuple[dpkt.ethernet.Ethernet, dpkt.ip6.IP6, bytes]:
    eth = dpkt.ethernet.Ethernet(frame)
    ip6 = eth.data
    assert isinstance(ip6, dpkt.ip6.IP6)
    assert ip6.nxt == 58 and ip6.hlim == 255 and ip6.plen == 32
    assert dpkt_checksum_ok(ip6)
    icmp = bytes(ip6.data)
    assert icmp[0] == 136 and icmp[1] == 0
    return eth, ip6, icmp


@pytest.mark.parametrize(("router", "flags"), [(False, 0x20), (True, 0xA0)])
def test_unsolicited_na(router: bool, flags: int) -> None:
    frame = unsolicited_na(CARP_MAC, VIP6, router=router)
    eth, ip6, icmp = na_fields(frame)
    assert eth.dst == ALL_NODES_MAC and eth.src == CARP_MAC
    assert ip6.dst == IPv6Address("ff02::1").packed and ip6.src == VIP6.packed
    assert icmp[4] == flags
    assert icmp[8:24] == VIP6.packed
    assert icmp[24:32] == b"\x02\x01" + CARP_MAC


def test_unsolicited_na_source_overrides() -> None:
    ll = IPv6Address("fe80::200:5eff:fe00:101")
    frame = unsolicited_na(CARP_MAC, VIP6, eth_src=OWN, src=ll)
    eth, ip6, _ = na_fields(frame)
    assert eth.src == OWN and ip6.src == ll.packed


def test_parse_ns_with_slla() -> None:
    frame = make_ns(CLIENT6, IPv6Address("ff02::1:ff00:10"), VIP6)
    ns = parse_ns(frame)
    assert ns == NeighborSolicit(
        frame[0:6],
        CLIENT,
        CLIENT6.packed,
        IPv6Address("ff02::1:ff00:10").packed,
        VIP6.packed,
        CLIENT,
    )


def test_parse_ns_unicast_without_slla() -> None:
    ns = parse_ns(make_ns(CLIENT6, VIP6, VIP6, slla=None, eth_dst=CARP_MAC))
    assert ns is not None and ns.slla is None and ns.dst == VIP6.packed


def test_parse_ns_dad_probe() -> None:
    ns = parse_ns(make_ns(IPv6Address("::"), IPv6Address("ff02::1:ff00:10"), VIP6, slla=None))
    assert ns is not None and ns.src == bytes(16)


def test_parse_ns_skips_other_options() -> None:
    nonce = b"\x0e\x01" + b"\x11" * 6
    ns = parse_ns(make_ns(CLIENT6, VIP6, VIP6, options=nonce + b"\x01\x01" + CLIENT))
    assert ns is not None and ns.slla == CLIENT


@pytest.mark.parametrize(
    "frame",
    [
        make_ns(CLIENT6, VIP6, VIP6, hlim=64),
        make_ns(CLIENT6, VIP6, VIP6, code=1),
        make_ns(CLIENT6, VIP6, VIP6, bad_sum=True),
        make_ns(CLIENT6, VIP6, IPv6Address("ff02::1")),  # multicast target
        make_ns(CLIENT6, VIP6, VIP6, options=b"\x01\x00" + CLIENT),  # option length 0
        make_ns(CLIENT6, VIP6, VIP6, options=b"\x01\x02" + CLIENT),  # option past the end
        make_ns(IPv6Address("::"), IPv6Address("ff02::1:ff00:10"), VIP6),  # DAD with slla
        make_ns(IPv6Address("::"), VIP6, VIP6, slla=None),  # DAD not to solicited-node
        make_ns(CLIENT6, VIP6, VIP6)[:70],
        unsolicited_na(CARP_MAC, VIP6),  # an NA, not an NS
    ],
)
def test_parse_ns_rejects(frame: bytes) -> None:
    assert parse_ns(frame) is None


def test_parse_ns_rejects_extension_header() -> None:
    frame = bytearray(make_ns(CLIENT6, VIP6, VIP6))
    frame[20] = 0  # hop-by-hop instead of ICMPv6
    assert parse_ns(bytes(frame)) is None


def test_parse_ns_accepts_trailing_padding() -> None:
    frame = make_ns(CLIENT6, VIP6, VIP6) + b"\x00" * 4
    assert parse_ns(frame) is not None


@given(st.binary(max_size=100))
def test_parse_ns_never_raises(data: bytes) -> None:
    head = make_ns(CLIENT6, VIP6, VIP6)[:54]
    parse_ns(head + data)
    parse_ns(data)


def test_na_reply_solicited_to_slla() -> None:
    ns = parse_ns(make_ns(CLIENT6, IPv6Address("ff02::1:ff00:10"), VIP6))
    assert ns is not None
    eth, ip6, icmp = na_fields(na_reply(ns, CARP_MAC, eth_src=OWN))
    assert eth.dst == CLIENT and eth.src == OWN
    assert ip6.src == VIP6.packed and ip6.dst == CLIENT6.packed
    assert icmp[4] == 0x60  # Solicited | Override
    assert icmp[8:24] == VIP6.packed and icmp[24:32] == b"\x02\x01" + CARP_MAC


def test_na_reply_without_slla_goes_to_frame_source() -> None:
    other = bytes.fromhex("0200000000aa")
    ns = NeighborSolicit(CARP_MAC, other, CLIENT6.packed, VIP6.packed, VIP6.packed, None)
    eth, _, icmp = na_fields(na_reply(ns, CARP_MAC, router=True))
    assert eth.dst == other and eth.src == CARP_MAC
    assert icmp[4] == 0xE0  # Router | Solicited | Override


def test_na_reply_to_dad_probe_goes_to_all_nodes() -> None:
    ns = parse_ns(make_ns(IPv6Address("::"), IPv6Address("ff02::1:ff00:10"), VIP6, slla=None))
    assert ns is not None
    eth, ip6, icmp = na_fields(na_reply(ns, CARP_MAC))
    assert eth.dst == ALL_NODES_MAC and ip6.dst == IPv6Address("ff02::1").packed
    assert icmp[4] == 0x20  # no Solicited flag towards a multicast destination


def test_solicited_node() -> None:
    addr = IPv6Address("2001:db8::1234:5678").packed
    assert solicited_node(addr) == IPv6Address("ff02::1:ff34:5678").packed


def test_struct_layout_of_na_matches_rfc() -> None:
    frame = unsolicited_na(CARP_MAC, VIP6)
    version_flow, plen, nxt, hlim = struct.unpack_from("!IHBB", frame, 14)
    assert version_flow >> 28 == 6 and (plen, nxt, hlim) == (32, 58, 255)
    assert len(frame) == 14 + 40 + 32


def test_rewrite_slla_sets_option_and_checksum() -> None:
    frame = make_ns(CLIENT6, VIP6, VIP6, slla=OWN)
    out = rewrite_slla(frame, CARP_MAC)
    ns = parse_ns(out)  # parse_ns verifies the checksum
    assert ns is not None and ns.slla == CARP_MAC and ns.target == VIP6.packed
    assert len(out) == len(frame) and out[:54] == frame[:54]
    assert dpkt_checksum_ok(dpkt.ethernet.Ethernet(out).data)


def test_rewrite_slla_after_other_option() -> None:
    nonce = b"\x0e\x01" + b"\x11" * 6
    frame = make_ns(CLIENT6, VIP6, VIP6, options=nonce + b"\x01\x01" + OWN)
    ns = parse_ns(rewrite_slla(frame, CARP_MAC))
    assert ns is not None and ns.slla == CARP_MAC


def test_rewrite_slla_leaves_other_frames() -> None:
    without = make_ns(CLIENT6, VIP6, VIP6, slla=None)
    assert rewrite_slla(without, CARP_MAC) is without
    na = unsolicited_na(OWN, VIP6)
    assert rewrite_slla(na, CARP_MAC) is na
    assert rewrite_slla(b"\x00" * 20, CARP_MAC) == b"\x00" * 20
