"""carp.checksum and carp.wire: the vectors of protocol.md §2.6, every receive verdict of §1.6."""

import struct
from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carp.checksum import inet_checksum
from carp.constants import ETH_P_IP, ETH_P_IPV6, MAC_CARP_GROUP4, MAC_CARP_GROUP6
from carp.wire import (
    CarpHeader,
    IpDrop,
    Verdict,
    build_frame,
    build_ipv4,
    build_ipv6,
    check_common,
    frame_is_carp,
    mac_for_ip_dst,
    parse_ip,
    receiver_of,
)

COUNTER = bytes.fromhex("0123456789abcdef")
MD1 = bytes.fromhex("4a56e25fb9b79c9940542d9b83e21d4eaf46ae9a")  # §2.6 #1
MD5 = bytes.fromhex("927cf9c34650c8bb3a94de113d997de6e05c7d97")  # §2.6 #5
HEADER1 = bytes.fromhex("21010007000150c80123456789abcdef4a56e25fb9b79c9940542d9b83e21d4eaf46ae9a")
FRAME1 = (
    bytes.fromhex("01005e00001200005e00010108004510003812344000ff70c754c0a80102e0000012") + HEADER1
)
FRAME5 = bytes.fromhex(
    "33330000001200005e00010186dd60000000002470fffe800000000000000000000000000001ff02000000000000"
    "0000000000000012210100070001736a0123456789abcdef927cf9c34650c8bb3a94de113d997de6e05c7d97"
)
CARP_MAC = bytes.fromhex("00005e000101")
SRC4 = IPv4Address("192.168.1.2")
GROUP4 = IPv4Address("224.0.0.18")
SRC6 = IPv6Address("fe80::1")


def header(**changes: object) -> CarpHeader:
    base = CarpHeader(vhid=1, advskew=0, advbase=1, demote=0, counter=COUNTER, md=MD1)
    return replace(base, **changes)  # type: ignore[arg-type]


def fix_ipv4_checksum(packet: bytes | bytearray) -> bytes:
    """The packet with its IPv4 header checksum recomputed (over IHL * 4 bytes)."""
    raw = bytearray(packet)
    hlen = (raw[0] & 0x0F) * 4
    raw[10:12] = b"\0\0"
    raw[10:12] = inet_checksum(bytes(raw[:hlen])).to_bytes(2, "big")
    return bytes(raw)


def ipv4(hdr: bytes = HEADER1, ttl: int = 255, dst: IPv4Address = GROUP4) -> bytes:
    packet = bytearray(build_ipv4(SRC4, dst, hdr, 0x1234))
    packet[8] = ttl
    return fix_ipv4_checksum(packet)


def with_total_length(packet: bytes | bytearray, total: int) -> bytes:
    """An IPv4 packet whose total length field says `total`, its header checksum fixed."""
    raw = bytearray(packet)
    raw[2:4] = total.to_bytes(2, "big")
    return fix_ipv4_checksum(raw)


# --- checksum ----------------------------------------------------------------------------------


def test_checksum_rfc1071_example() -> None:
    # RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (one's complement)
    assert inet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0xFFFF - 0xDDF2


def test_checksum_odd_length_pads_with_zero() -> None:
    assert inet_checksum(b"\x12\x34\x56") == inet_checksum(b"\x12\x34\x56\x00")


def test_checksum_over_data_with_its_checksum_is_zero() -> None:
    data = bytes(range(1, 37))
    cks = inet_checksum(data)
    assert inet_checksum(data + cks.to_bytes(2, "big")) == 0


def test_checksum_carry_folding() -> None:
    assert inet_checksum(b"\xff\xff\xff\xff\x00\x01") == 0xFFFE


# --- header ------------------------------------------------------------------------------------


def test_header_vector_1_with_checksum_0x50c8() -> None:
    packed = header().pack()
    assert packed == HEADER1
    assert int.from_bytes(packed[6:8], "big") == 0x50C8
    assert inet_checksum(packed) == 0


def test_header_unpack_round_trip() -> None:
    hdr = CarpHeader.unpack(HEADER1)
    assert hdr == header(cksum=0x50C8)
    assert (hdr.version, hdr.type, hdr.authlen) == (2, 1, 7)
    assert hdr.counter == COUNTER  # raw, no byte-order conversion


def test_header_version_is_high_nibble() -> None:
    packed = header(version=3, type=5).pack()
    assert packed[0] == 0x35
    assert CarpHeader.unpack(packed).version == 3
    assert CarpHeader.unpack(packed).type == 5


def test_header_fields_at_their_offsets() -> None:
    packed = header(vhid=42, advskew=100, advbase=3, demote=7).pack()
    assert packed[1:6] == bytes((42, 100, 7, 7, 3))  # vhid, advskew, authlen, demote, advbase


def test_header_pack_rejects_bad_lengths() -> None:
    with pytest.raises(ValueError):
        header(counter=b"\x01").pack()
    with pytest.raises(ValueError):
        header(md=b"\x01" * 19).pack()


def test_header_unpack_needs_exactly_36_bytes() -> None:
    with pytest.raises(struct.error):
        CarpHeader.unpack(HEADER1[:35])


# --- builders ----------------------------------------------------------------------------------


def test_ipv4_frame_vector_1() -> None:
    ip = build_ipv4(SRC4, GROUP4, header().pack(), 0x1234)
    dst_mac = mac_for_ip_dst(GROUP4)
    assert dst_mac is not None
    assert build_frame(dst_mac, CARP_MAC, ETH_P_IP, ip) == FRAME1
    assert len(FRAME1) == 70


def test_ipv4_header_checksum_holds() -> None:
    ip = build_ipv4(SRC4, IPv4Address("198.51.100.7"), HEADER1, 0xABCDE)
    assert inet_checksum(ip[:20]) == 0
    assert ip[4:6] == b"\xbc\xde"  # ident truncated to 16 bits


def test_ipv6_frame_vector_5() -> None:
    hdr = CarpHeader(vhid=1, advskew=0, advbase=1, demote=0, counter=COUNTER, md=MD5).pack()
    ip = build_ipv6(SRC6, hdr)
    dst_mac = mac_for_ip_dst(IPv6Address("ff02::12"))
    assert dst_mac is not None
    assert build_frame(dst_mac, CARP_MAC, ETH_P_IPV6, ip) == FRAME5
    assert len(FRAME5) == 90


def test_mac_for_ip_dst() -> None:
    assert mac_for_ip_dst(GROUP4) == MAC_CARP_GROUP4
    assert mac_for_ip_dst(IPv6Address("ff02::12")) == MAC_CARP_GROUP6
    # only the low 23 bits of an IPv4 group go into the MAC
    assert mac_for_ip_dst(IPv4Address("239.129.2.3")) == bytes.fromhex("01005e010203")
    assert mac_for_ip_dst(IPv6Address("ff05::1:3")) == bytes.fromhex("333300010003")
    assert mac_for_ip_dst(IPv4Address("192.0.2.1")) is None
    assert mac_for_ip_dst(IPv6Address("2001:db8::1")) is None


# --- parse_ip: accept --------------------------------------------------------------------------


def test_parse_ipv4_accepts_vector_1() -> None:
    parsed = parse_ip(FRAME1[14:])
    assert parsed.verdict is Verdict.ACCEPT
    assert (parsed.af, parsed.src, parsed.dst, parsed.ttl) == (4, SRC4, GROUP4, 255)
    assert parsed.ismulti and parsed.carp and parsed.cksum_ok
    assert parsed.offset == 20
    assert parsed.header == CarpHeader.unpack(HEADER1)


def test_parse_ipv6_accepts_vector_5() -> None:
    parsed = parse_ip(FRAME5[14:])
    assert parsed.verdict is Verdict.ACCEPT
    assert (parsed.af, parsed.src, parsed.dst) == (6, SRC6, IPv6Address("ff02::12"))
    assert parsed.header is not None and parsed.header.md == MD5
    assert parsed.offset == 40


def test_parse_ipv4_unicast_peer_is_not_multi() -> None:
    parsed = parse_ip(ipv4(dst=IPv4Address("198.51.100.2")))
    assert parsed.verdict is Verdict.ACCEPT
    assert not parsed.ismulti


def test_parse_ipv4_trailing_bytes_beyond_36_allowed() -> None:
    packet = bytearray(ipv4(HEADER1 + b"\xaa" * 8))
    assert parse_ip(bytes(packet)).verdict is Verdict.ACCEPT


def test_parse_ipv4_ethernet_padding_after_ip_length_ignored() -> None:
    parsed = parse_ip(ipv4() + b"\x00" * 10)
    assert parsed.verdict is Verdict.ACCEPT


def test_parse_ipv4_with_options() -> None:
    base = ipv4()
    options = b"\x94\x04\x00\x00"  # router alert
    packet = bytearray(bytes([0x46]) + base[1:20] + options + base[20:])
    parsed = parse_ip(with_total_length(bytes(packet), len(packet)))
    assert parsed.verdict is Verdict.ACCEPT
    assert parsed.offset == 24


def test_parse_ipv6_walks_extension_headers() -> None:
    ip = bytearray(FRAME5[14:])
    hop_by_hop = bytes((60, 0)) + b"\x01\x04\x00\x00\x00\x00"  # -> dest opts, PadN
    dest_opts = bytes((112, 1)) + b"\x01\x0c" + b"\x00" * 12  # 16 bytes -> CARP
    packet = bytearray(ip[:40]) + hop_by_hop + dest_opts + ip[40:]
    packet[6] = 0
    packet[4:6] = (len(packet) - 40).to_bytes(2, "big")
    parsed = parse_ip(bytes(packet))
    assert parsed.verdict is Verdict.ACCEPT
    assert parsed.offset == 40 + 8 + 16
    assert parsed.header is not None and parsed.header.md == MD5


# --- parse_ip: each rejection ------------------------------------------------------------------


@pytest.mark.parametrize("ttl", [0, 1, 64, 254])
def test_parse_badttl(ttl: int) -> None:
    parsed = parse_ip(ipv4(ttl=ttl))
    assert parsed.verdict is Verdict.BADTTL
    assert parsed.ttl == ttl


def test_parse_badttl_ipv6_hop_limit() -> None:
    packet = bytearray(FRAME5[14:])
    packet[7] = 1
    assert parse_ip(bytes(packet)).verdict is Verdict.BADTTL


def test_parse_badttl_comes_before_badlen() -> None:
    short = with_total_length(ipv4(ttl=64)[:40], 40)
    assert parse_ip(short).verdict is Verdict.BADTTL


def test_parse_badlen_short_packet() -> None:
    packet = with_total_length(ipv4()[:55], 55)
    parsed = parse_ip(packet)
    assert parsed.verdict is Verdict.BADLEN
    assert parsed.header is None


def test_parse_badlen_ip_length_too_small() -> None:
    # 36 bytes follow the header, but the IP length says 35: ip_input trims the rest first
    assert parse_ip(with_total_length(ipv4(), 20 + 35)).verdict is Verdict.BADLEN


def test_parse_badlen_ipv6() -> None:
    packet = bytearray(FRAME5[14:])
    packet[4:6] = (35).to_bytes(2, "big")
    assert parse_ip(bytes(packet)).verdict is Verdict.BADLEN
    cut = bytearray(FRAME5[14:-1])
    cut[4:6] = (35).to_bytes(2, "big")
    assert parse_ip(bytes(cut)).verdict is Verdict.BADLEN


def test_parse_badlen_comes_before_badsum() -> None:
    corrupt = bytearray(ipv4())
    corrupt[30] ^= 0xFF
    assert parse_ip(with_total_length(corrupt[:50], 50)).verdict is Verdict.BADLEN


@pytest.mark.parametrize("position", [0, 1, 5, 7, 8, 20, 35])
def test_parse_badsum(position: int) -> None:
    packet = bytearray(ipv4())
    packet[20 + position] ^= 0x40
    parsed = parse_ip(bytes(packet))
    assert parsed.verdict is Verdict.BADSUM
    assert not parsed.cksum_ok
    assert parsed.header is not None  # still decoded, for a decoder to show


def test_parse_badsum_ipv6() -> None:
    packet = bytearray(FRAME5[14:])
    packet[-1] ^= 1
    assert parse_ip(bytes(packet)).verdict is Verdict.BADSUM


def test_parse_checksum_has_no_pseudo_header() -> None:
    # the same CARP header is valid whatever the addresses around it (§1.5)
    packet = build_ipv4(IPv4Address("203.0.113.9"), IPv4Address("198.51.100.1"), HEADER1, 7)
    assert parse_ip(packet).verdict is Verdict.ACCEPT


@pytest.mark.parametrize("length", [10, 19])
def test_parse_truncated_ipv4_header_is_an_ip_drop(length: int) -> None:
    parsed = parse_ip(ipv4()[:length])
    assert (parsed.verdict, parsed.ip_drop) == (Verdict.IPDROP, IpDrop.TOOSMALL)
    assert parsed.carp


@pytest.mark.parametrize("length", [1, 9])
def test_parse_truncated_before_protocol_is_not_carp(length: int) -> None:
    assert not parse_ip(ipv4()[:length]).carp
    assert not parse_ip(FRAME5[14 : 14 + length - 3]).carp


@pytest.mark.parametrize("ihl", [0, 4, 15])
def test_parse_bad_ihl_is_an_ip_drop(ihl: int) -> None:
    packet = bytearray(ipv4())
    packet[0] = 0x40 | ihl
    parsed = parse_ip(bytes(packet))
    assert (parsed.verdict, parsed.ip_drop) == (Verdict.IPDROP, IpDrop.BADHLEN)
    assert parsed.header is None


def test_parse_ip_length_below_header_is_an_ip_drop() -> None:
    parsed = parse_ip(with_total_length(ipv4(), 12))
    assert (parsed.verdict, parsed.ip_drop) == (Verdict.IPDROP, IpDrop.BADLEN)
    assert parsed.header is None


def test_parse_not_carp_other_protocol() -> None:
    packet = bytearray(ipv4())
    packet[9] = 17
    parsed = parse_ip(bytes(packet))
    assert not parsed.carp
    assert parsed.verdict is Verdict.HDROPS
    assert parsed.header is None


@pytest.mark.parametrize("first", [0x00, 0x21, 0x55, 0xF0])
def test_parse_not_ip(first: int) -> None:
    packet = bytes([first]) + ipv4()[1:]
    parsed = parse_ip(packet)
    assert not parsed.carp
    assert parsed.af == 0


def test_parse_empty() -> None:
    assert not parse_ip(b"").carp


def test_parse_ipv6_extension_leading_elsewhere_is_not_carp() -> None:
    ip = bytearray(FRAME5[14:])
    packet = bytearray(ip[:40]) + bytes((17, 0)) + b"\x00" * 6 + ip[40:]
    packet[6] = 0
    packet[4:6] = (len(packet) - 40).to_bytes(2, "big")
    assert not parse_ip(bytes(packet)).carp


def test_parse_ipv6_fragment_header_is_a_fragment() -> None:
    ip = bytearray(FRAME5[14:])
    packet = bytearray(ip[:40]) + bytes((112, 0)) + b"\x00" * 6 + ip[40:]
    packet[6] = 44
    packet[4:6] = (len(packet) - 40).to_bytes(2, "big")
    parsed = parse_ip(bytes(packet))
    assert parsed.carp
    assert (parsed.verdict, parsed.ip_drop) == (Verdict.IPDROP, IpDrop.FRAGMENT)


def test_parse_ipv6_truncated_extension_is_not_carp() -> None:
    ip = bytearray(FRAME5[14:])
    packet = bytearray(ip[:40]) + bytes((112, 200))  # claims 1608 bytes
    packet[6] = 0
    packet[4:6] = (2).to_bytes(2, "big")
    assert not parse_ip(bytes(packet)).carp
    assert not parse_ip(bytes(packet[:41])).carp


def test_parse_ipv6_short_fixed_header() -> None:
    parsed = parse_ip(FRAME5[14:53])
    assert (parsed.verdict, parsed.ip_drop) == (Verdict.IPDROP, IpDrop.TOOSMALL)
    assert parsed.af == 6 and parsed.carp


# --- frame_is_carp: the cheap test before parse_ip ----------------------------------------------

ETH6 = FRAME5[:14]
HOP_TO_DEST = bytes((60, 0)) + b"\x01\x04\x00\x00\x00\x00"  # hop-by-hop (PadN) -> dest opts
DEST_TO_CARP = bytes((112, 1)) + b"\x01\x0c" + bytes(12)  # 16 bytes of PadN -> CARP
EXTENSIONS = (0, 43, 44, 60)  # hop-by-hop, routing, fragment, destination options


def behind(chain: bytes, first: int) -> bytes:
    """Vector 5's IPv6 advertisement behind the extension headers `chain` (the first of type
    `first`), its payload length covering them."""
    packet = bytearray(FRAME5[14:54]) + chain + FRAME5[54:]
    packet[6] = first
    packet[4:6] = (len(packet) - 40).to_bytes(2, "big")
    return bytes(packet)


def test_frame_is_carp_in_both_families() -> None:
    assert frame_is_carp(FRAME1) and frame_is_carp(FRAME5)
    assert frame_is_carp(bytes(10) + FRAME1, offset=10)  # behind a virtio-net header
    assert frame_is_carp(bytes(12) + FRAME5, 12)
    assert frame_is_carp(ETH6 + behind(HOP_TO_DEST + DEST_TO_CARP, 0))
    assert frame_is_carp(ETH6 + behind(bytes((112, 0)) + bytes(6), 44))  # a fragment of one


def test_frame_is_carp_refuses_what_does_not_carry_112() -> None:
    other = bytearray(FRAME1)
    other[23] = 17
    v6_in_v4 = bytearray(FRAME1)
    v6_in_v4[14] = 0x65
    arp = FRAME1[:12] + b"\x08\x06" + FRAME1[14:]
    mld = ETH6 + behind(bytes((58, 0, 5, 2, 0, 0, 0, 0)), 0)  # hop-by-hop -> ICMPv6
    not_v6 = bytearray(ETH6 + behind(HOP_TO_DEST + DEST_TO_CARP, 0))
    not_v6[14] = 0x40  # parse_ip never looks behind the header of a packet that is not IPv6
    cut = ETH6 + behind(bytes((112, 200)) + bytes(6), 0)  # claims 1608 bytes
    short = bytearray(ETH6 + behind(HOP_TO_DEST + DEST_TO_CARP, 0))
    short[18:20] = (20).to_bytes(2, "big")  # the payload length ends inside the second header
    frames = (bytes(other), bytes(v6_in_v4), arp, mld, bytes(not_v6), cut, bytes(short))
    for frame in frames:
        assert not frame_is_carp(frame)
    for runt in (b"", FRAME1[:13], FRAME1[:23], ETH6, FRAME5[:20]):
        assert not frame_is_carp(runt)
    assert not frame_is_carp(FRAME1, offset=10)


@settings(max_examples=400)
@given(
    kinds=st.lists(st.sampled_from(EXTENSIONS), max_size=5),
    sizes=st.lists(st.integers(0, 3), min_size=5, max_size=5),
    upper=st.sampled_from((112, 112, 112, 17, 58, *EXTENSIONS)),  # mostly chains to CARP
    plen=st.one_of(st.none(), st.integers(0, 240)),  # None: the true payload length
    cut=st.integers(0, 40),
)
def test_frame_is_carp_agrees_with_parse_ip(
    kinds: list[int], sizes: list[int], upper: int, plen: int | None, cut: int
) -> None:
    """Over chains of every extension header kind, payload lengths that lie and cut packets:
    the cheap walk finds protocol 112 exactly when parse_ip does."""
    chain = b""
    for kind, following, size in zip(kinds, [*kinds[1:], upper], sizes, strict=False):
        units = 0 if kind == 44 else size
        chain += bytes((following, units)) + bytes(units * 8 + 6)
    packet = bytearray(behind(chain, kinds[0] if kinds else upper))
    if plen is not None:
        packet[4:6] = plen.to_bytes(2, "big")
    packet = packet[: max(0, len(packet) - cut)]
    assert frame_is_carp(ETH6 + bytes(packet)) == parse_ip(bytes(packet)).carp


# --- receiver_of --------------------------------------------------------------------------------


def test_receiver_of_splits_own_addresses_from_joined_groups() -> None:
    peer = IPv4Address("239.1.1.1")
    receiver = receiver_of([SRC4, IPv6Address("2001:db8::1"), peer])
    assert receiver.local == {SRC4, IPv6Address("2001:db8::1")}
    assert receiver.groups == {GROUP4, IPv6Address("ff02::12"), peer}
    assert receiver.ours(peer) and receiver.ours(GROUP4) and receiver.ours(SRC4)
    assert not receiver.ours(IPv4Address("239.1.1.2")) and not receiver.ours(SRC6)
    assert receiver_of([]).groups == {GROUP4, IPv6Address("ff02::12")}


# --- the common part ---------------------------------------------------------------------------


def test_check_common_order() -> None:
    bad_version = header(version=1)
    assert check_common(bad_version, False, vhid_found=False) is Verdict.BADVHID
    assert check_common(bad_version, False) is Verdict.BADVER
    assert check_common(header(), False) is Verdict.BADAUTH
    assert check_common(header(), True) is Verdict.ACCEPT
    assert check_common(header(), None) is Verdict.ACCEPT  # unchecked


def test_check_common_ignores_type_and_authlen() -> None:
    assert check_common(header(type=9, authlen=0), True) is Verdict.ACCEPT


def test_badver_from_a_crafted_packet() -> None:
    packet = ipv4(header(version=3).pack())
    parsed = parse_ip(packet)
    assert parsed.verdict is Verdict.ACCEPT  # the IP-level checks pass
    assert parsed.header is not None
    assert check_common(parsed.header, True) is Verdict.BADVER


def test_verdict_values_are_carpstats_names() -> None:
    from carp.stats import CarpStats, IpDropStats

    names = set(CarpStats.names())
    assert {v.value for v in Verdict} - {"accept", "ipdrop"} <= names
    assert {v.value for v in IpDrop} == set(IpDropStats.names())
