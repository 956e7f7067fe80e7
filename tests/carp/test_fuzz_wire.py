"""Property tests: parse_ip and the decoder never raise and always reach a verdict, any bytes."""

import io
import json
import struct
from ipaddress import IPv4Address, IPv6Address

import dpkt
from hypothesis import given, settings
from hypothesis import strategies as st

from carp.auth import HmacContexts, carp_key
from carp.checksum import inet_checksum
from carp.wire import CarpHeader, Parsed, Verdict, build_frame, build_ipv4, build_ipv6, parse_ip
from vswitch.decode import (
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_RAW,
    Auth,
    CaptureError,
    decode_frame,
    make_auth,
    open_capture,
)

FUZZ = settings(max_examples=300, deadline=None)
COUNTER = bytes.fromhex("0123456789abcdef")
VIPS = [IPv4Address("192.0.2.10"), IPv6Address("2001:db8::10")]
AUTH = make_auth("secret", VIPS)
MD = HmacContexts(carp_key("secret"), 1, VIPS[:1], VIPS[1:]).generate(COUNTER)
HEADER = CarpHeader(vhid=1, advskew=0, advbase=1, demote=0, counter=COUNTER, md=MD)
IPV4 = build_ipv4(IPv4Address("192.0.2.1"), IPv4Address("224.0.0.18"), HEADER.pack(), 1)
IPV6 = build_ipv6(IPv6Address("fe80::1"), HEADER.pack())
SEEDS = [
    IPV4,
    IPV6,
    # IPv6 with a hop-by-hop header before CARP
    IPV6[:4]
    + (44).to_bytes(2, "big")
    + bytes((0,))
    + IPV6[7:40]
    + bytes((112, 0))
    + bytes(6)
    + IPV6[40:],
]
LINKTYPES = [LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_RAW]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes] = SEEDS) -> bytes:
    """A valid packet with a few bytes flipped, cut, inserted or deleted."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete"]))
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[pos] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[pos : pos + draw(st.integers(1, 8))]
    return bytes(data)


def check_parsed(packet: bytes, parsed: Parsed) -> None:
    assert isinstance(parsed.verdict, Verdict)
    if not parsed.carp:
        assert parsed.verdict is Verdict.HDROPS
        assert parsed.header is None
    if parsed.header is not None:
        raw = packet[parsed.offset : parsed.offset + 36]
        assert CarpHeader.unpack(raw) == parsed.header
        assert parsed.cksum_ok == (inet_checksum(raw) == 0)
    if parsed.verdict is Verdict.ACCEPT:
        assert parsed.carp and parsed.cksum_ok and parsed.ttl == 255
        assert parsed.header is not None
        assert parsed.af in (4, 6)


def test_seeds_are_valid_advertisements() -> None:
    offsets = [parse_ip(seed).offset for seed in SEEDS]
    assert [parse_ip(seed).verdict for seed in SEEDS] == [Verdict.ACCEPT] * len(SEEDS)
    assert offsets == [20, 40, 48]
    reports = [decode_frame(seed, LINKTYPE_RAW, 0, 0.0, AUTH) for seed in SEEDS]
    assert [(r.kind, r.hmac, r.verdict) for r in reports if r] == [
        ("carp", "ok", Verdict.ACCEPT)
    ] * len(SEEDS)


@FUZZ
@given(st.binary(max_size=120))
def test_parse_ip_random_bytes(packet: bytes) -> None:
    check_parsed(packet, parse_ip(packet))


@FUZZ
@given(st.sampled_from([0x45, 0x46, 0x4F, 0x60]), st.binary(max_size=100))
def test_parse_ip_random_after_a_plausible_first_byte(first: int, rest: bytes) -> None:
    packet = bytes((first,)) + rest
    check_parsed(packet, parse_ip(packet))


@FUZZ
@given(mutated())
def test_parse_ip_mutated(packet: bytes) -> None:
    check_parsed(packet, parse_ip(packet))


@FUZZ
@given(
    vhid=st.integers(0, 255),
    advskew=st.integers(0, 255),
    advbase=st.integers(0, 255),
    demote=st.integers(0, 255),
    counter=st.binary(min_size=8, max_size=8),
    md=st.binary(min_size=20, max_size=20),
    version=st.integers(0, 15),
    kind=st.integers(0, 15),
    authlen=st.integers(0, 255),
)
def test_header_round_trip(
    vhid: int,
    advskew: int,
    advbase: int,
    demote: int,
    counter: bytes,
    md: bytes,
    version: int,
    kind: int,
    authlen: int,
) -> None:
    header = CarpHeader(vhid, advskew, advbase, demote, counter, md, version, kind, authlen)
    packed = header.pack()
    assert len(packed) == 36 and inet_checksum(packed) == 0
    back = CarpHeader.unpack(packed)
    assert back == CarpHeader(
        vhid, advskew, advbase, demote, counter, md, version, kind, authlen, back.cksum
    )
    parsed = parse_ip(build_ipv4(IPv4Address("198.51.100.1"), IPv4Address("224.0.0.18"), packed, 9))
    assert parsed.verdict is Verdict.ACCEPT and parsed.header == back


def reference_checksum(data: bytes) -> int:
    padded = data + b"\0" * (len(data) % 2)
    total = 0
    for (word,) in struct.iter_unpack("!H", padded):
        total += word
        total = (total & 0xFFFF) + (total >> 16)
    return 0xFFFF - total


@FUZZ
@given(st.binary(max_size=80))
def test_checksum_matches_a_reference(data: bytes) -> None:
    assert inet_checksum(data) == reference_checksum(data)
    if len(data) % 2 == 0:
        assert inet_checksum(data + inet_checksum(data).to_bytes(2, "big")) == 0


def check_report(frame: bytes, linktype: int, auth: Auth | None) -> None:
    report = decode_frame(frame, linktype, 3, 1.5, auth)
    if report is None:
        return
    assert isinstance(report.verdict, Verdict)
    assert report.kind in ("carp", "vrrp", "other")
    assert report.hmac in ("ok", "bad", "unchecked")
    row = json.loads(json.dumps(report.as_json()))
    assert row["index"] == 3 and row["verdict"] == report.verdict.value
    assert isinstance(report.human(), str)


@FUZZ
@given(st.sampled_from(LINKTYPES), st.binary(max_size=120), st.booleans())
def test_decoder_random_frames(linktype: int, frame: bytes, with_auth: bool) -> None:
    check_report(frame, linktype, AUTH if with_auth else None)


@FUZZ
@given(mutated(), st.sampled_from([0x0800, 0x86DD, 0x8100]), st.booleans())
def test_decoder_mutated_frames(packet: bytes, ethertype: int, with_auth: bool) -> None:
    frame = build_frame(bytes(6), bytes(6), ethertype, packet)
    check_report(frame, LINKTYPE_ETHERNET, AUTH if with_auth else None)
    check_report(packet, LINKTYPE_RAW, AUTH if with_auth else None)


def _pcap(frames: list[bytes]) -> bytes:
    stream = io.BytesIO()
    writer = dpkt.pcap.Writer(stream, linktype=LINKTYPE_ETHERNET)
    for frame in frames:
        writer.writepkt(frame, ts=1.0)
    return stream.getvalue()


@settings(max_examples=100, deadline=None)
@given(
    st.lists(mutated(), max_size=4),
    st.integers(0, 200),
    st.binary(max_size=20),
)
def test_capture_reader_survives_damaged_files(packets: list[bytes], cut: int, junk: bytes) -> None:
    frames = [build_frame(bytes(6), bytes(6), 0x0800, p) for p in packets]
    data = _pcap(frames)
    damaged = data[: max(0, len(data) - cut)] + junk
    try:
        capture = open_capture(io.BytesIO(damaged))
    except CaptureError:
        return
    for index, (_ts, frame) in enumerate(capture.frames):
        check_report(frame, capture.linktype, AUTH)
        assert index < len(frames) + 10
