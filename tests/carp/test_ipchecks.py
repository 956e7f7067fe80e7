"""The IP layer before carp(4): what ip_input / ip6_input drop (carp.wire.IpDrop), IPv6
extension headers, and how CarpHost and the data path count and route those packets."""

from collections.abc import Callable, Sequence
from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address

import pytest

from carp.actions import Log, StateChanged
from carp.checksum import inet_checksum
from carp.constants import State
from carp.datapath import DataPath
from carp.host import CarpHost
from carp.params import Sysctls
from carp.stats import CarpStats, IpDropStats
from carp.wire import (
    CARP_GROUPS,
    IPPROTO_DSTOPTS,
    IPPROTO_FRAGMENT,
    IPPROTO_HOPOPTS,
    IPPROTO_ROUTING,
    IPV6_HDRNESTLIMIT,
    IpDrop,
    Parsed,
    Receiver,
    Verdict,
    build_frame,
    ipv4_source_ok,
    ipv6_options_ok,
    ipv6_source_ok,
    parse_ip,
)
from tests.carp.sim import advert, carpdev, ifparams

OWN4 = IPv4Address("192.0.2.1")
OWN6 = IPv6Address("fe80::1")
RECEIVER = Receiver(frozenset({OWN4, OWN6}))
UDP = 17

# option bytes (after next header / length) of 6, 14, ... bytes
PADN4 = bytes((1, 4, 0, 0, 0, 0))  # one PadN filling a minimal header
PAD1S = bytes(6)  # six Pad1
ROUTER_ALERT = bytes((5, 2, 0, 0, 1, 0))  # router alert (MLD), then PadN of 0


def fix4(packet: bytes | bytearray) -> bytes:
    """`packet` with its IPv4 header checksum recomputed."""
    raw = bytearray(packet)
    hlen = (raw[0] & 0x0F) * 4
    raw[10:12] = b"\0\0"
    raw[10:12] = inet_checksum(bytes(raw[:hlen])).to_bytes(2, "big")
    return bytes(raw)


def v4(src: str = "192.0.2.99", dst: str = "224.0.0.18", **fields: int) -> bytes:
    """A valid IPv4 advertisement (sim.advert), optionally with IP header fields rewritten and
    the header checksum fixed: total (length), frag (flags and offset), ihl."""
    raw = bytearray(advert(src=src, dst=dst))
    if "total" in fields:
        raw[2:4] = fields["total"].to_bytes(2, "big")
    if "frag" in fields:
        raw[6:8] = fields["frag"].to_bytes(2, "big")
    if "ihl" in fields:
        raw[0] = 0x40 | fields["ihl"]
    return fix4(raw)


def v6(src: str = "fe80::9", dst: str = "ff02::12") -> bytes:
    raw = bytearray(advert(src=src, v4=[]))
    raw[24:40] = IPv6Address(dst).packed
    return bytes(raw)


def with_extensions(packet: bytes, *headers: tuple[int, bytes]) -> bytes:
    """Insert extension headers before the upper-layer header of an IPv6 packet. Each is (kind,
    its bytes after next header and length); a fragment header's body is its 6 last bytes."""
    fixed = bytearray(packet[:40])
    payload = packet[40:]
    kinds = [kind for kind, _ in headers] + [fixed[6]]
    chain = b""
    for (kind, body), nxt in zip(headers, kinds[1:], strict=True):
        if kind == IPPROTO_FRAGMENT:
            chain += bytes((nxt, 0)) + body
        else:
            assert (len(body) + 2) % 8 == 0
            chain += bytes((nxt, (len(body) + 2) // 8 - 1)) + body
    fixed[6] = kinds[0]
    fixed[4:6] = (len(chain) + len(payload)).to_bytes(2, "big")
    return bytes(fixed) + chain + payload


def fragment(offset: int = 0, more: bool = True) -> tuple[int, bytes]:
    return IPPROTO_FRAGMENT, (offset << 3 | more).to_bytes(2, "big") + b"\x12\x34\x56\x78"


def routing(kind: int = 2, segments_left: int = 0) -> tuple[int, bytes]:
    return IPPROTO_ROUTING, bytes((kind, segments_left)) + bytes(4)


def dropped(packet: bytes, receiver: Receiver | None = RECEIVER) -> IpDrop | None:
    parsed = parse_ip(packet, receiver)
    assert parsed.carp  # every packet here shows protocol 112
    assert (parsed.verdict is Verdict.IPDROP) == (parsed.ip_drop is not None)
    return parsed.ip_drop


def accepted(packet: bytes, receiver: Receiver | None = RECEIVER) -> Parsed:
    parsed = parse_ip(packet, receiver)
    assert (parsed.verdict, parsed.ip_drop) == (Verdict.ACCEPT, None)
    return parsed


# --- IPv4 ------------------------------------------------------------------------------------


def test_valid_ipv4_passes_every_rule() -> None:
    parsed = accepted(v4())
    assert parsed.header is not None and parsed.offset == 20


def test_ipv4_header_checksum() -> None:
    raw = bytearray(v4())
    raw[10] ^= 0x01
    assert dropped(bytes(raw)) is IpDrop.BADSUM
    raw = bytearray(v4())
    raw[1] = 0xB8  # TOS changed, checksum not: ip_input checks the whole header
    assert dropped(bytes(raw)) is IpDrop.BADSUM
    assert dropped(fix4(raw)) is None
    # the CARP header is still decoded, for a decoder to show
    assert parse_ip(bytes(raw)).header is not None


@pytest.mark.parametrize("ihl", [0, 4])
def test_ipv4_header_length_below_20(ihl: int) -> None:
    assert dropped(v4(ihl=ihl)) is IpDrop.BADHLEN


def test_ipv4_header_length_beyond_the_data() -> None:
    assert dropped(fix4(v4(ihl=15)[:50])) is IpDrop.BADHLEN


def test_ipv4_total_length_below_header_length() -> None:
    assert dropped(v4(total=19)) is IpDrop.BADLEN
    assert dropped(v4(total=20)) is None  # not an IP-layer matter: carp counts badlen
    assert parse_ip(v4(total=20)).verdict is Verdict.BADLEN


def test_ipv4_total_length_beyond_the_data() -> None:
    packet = v4()
    assert dropped(packet[:-1]) is IpDrop.TOOSHORT
    assert dropped(v4(total=len(packet) + 1)) is IpDrop.TOOSHORT


def test_ipv4_ethernet_padding_is_trimmed() -> None:
    packet = v4()
    parsed = accepted(packet + bytes(10))
    assert parsed.header == parse_ip(packet).header
    # padding that breaks nothing even when the CARP header is short of the total length
    assert parse_ip(v4(total=50) + bytes(20)).verdict is Verdict.BADLEN


@pytest.mark.parametrize(
    ("frag", "header_shown"),
    [(0x2000, True), (0x6000, True), (0x0001, False), (0x2003, False), (0x1FFF, False)],
)
def test_ipv4_fragments(frag: int, header_shown: bool) -> None:
    packet = v4(frag=frag)
    assert dropped(packet) is IpDrop.FRAGMENT
    assert dropped(packet, None) is IpDrop.FRAGMENT  # needs no configuration
    # a later fragment does not start with the CARP header: none is decoded
    assert (parse_ip(packet).header is not None) == header_shown


def test_ipv4_dont_fragment_alone_is_no_fragment() -> None:
    assert dropped(v4(frag=0x4000)) is None


@pytest.mark.parametrize(
    "src", ["224.0.0.5", "239.1.2.3", "255.255.255.255", "0.0.0.0", "127.0.0.1"]
)
def test_ipv4_bad_source(src: str) -> None:
    assert not ipv4_source_ok(IPv4Address(src))
    assert dropped(v4(src=src)) is IpDrop.BADSRC


@pytest.mark.parametrize("src", ["192.0.2.99", "198.51.100.7", "203.0.113.255"])
def test_ipv4_good_source(src: str) -> None:
    assert ipv4_source_ok(IPv4Address(src))
    accepted(v4(src=src))


def test_ipv4_destination() -> None:
    assert dropped(v4(dst="224.0.0.18")) is None
    assert dropped(v4(dst=str(OWN4))) is None  # a unicast carppeer naming us
    for other in ("192.0.2.50", "255.255.255.255", "224.0.0.1", "239.1.1.1", "127.0.0.1"):
        assert dropped(v4(dst=other)) is IpDrop.NOTOURS, other
    # a multicast carppeer's group is joined (carp_join_multicast)
    joined = Receiver(frozenset({OWN4}), CARP_GROUPS | {IPv4Address("239.1.1.1")})
    assert dropped(v4(dst="239.1.1.1"), joined) is None
    # without a receiver the destination is not judged
    assert dropped(v4(dst="192.0.2.50"), None) is None


def test_ipv4_cut_before_the_header_ends() -> None:
    assert dropped(v4()[:12]) is IpDrop.TOOSMALL
    assert not parse_ip(v4()[:9]).carp  # the protocol byte is not there


def test_ipv4_rule_order() -> None:
    # ipv4_check: header length, then the 127/8-style source, then the checksum, the lengths
    raw = bytearray(v4(src="224.0.0.5", dst="192.0.2.50"))
    raw[10] ^= 1
    assert dropped(bytes(raw)) is IpDrop.BADSRC
    assert dropped(v4(dst="192.0.2.50")[:-1]) is IpDrop.TOOSHORT
    assert dropped(v4(dst="192.0.2.50", frag=0x2000)) is IpDrop.NOTOURS


def test_not_protocol_112_is_never_an_ip_drop() -> None:
    raw = bytearray(v4(src="224.0.0.5"))
    raw[9] = UDP
    parsed = parse_ip(fix4(raw), RECEIVER)
    assert not parsed.carp and parsed.ip_drop is None


# --- IPv6 ------------------------------------------------------------------------------------


def test_valid_ipv6_passes_every_rule() -> None:
    parsed = accepted(v6())
    assert parsed.offset == 40


def test_ipv6_behind_hop_by_hop_and_destination_options() -> None:
    packet = with_extensions(v6(), (IPPROTO_HOPOPTS, ROUTER_ALERT), (IPPROTO_DSTOPTS, PADN4))
    parsed = accepted(packet)
    assert parsed.offset == 40 + 8 + 8
    assert parsed.header == parse_ip(v6()).header


@pytest.mark.parametrize(
    "headers",
    [
        [(IPPROTO_HOPOPTS, PAD1S)],
        [(IPPROTO_DSTOPTS, PADN4 + bytes(8))],
        [(IPPROTO_DSTOPTS, bytes((0x3E, 4, 1, 2, 3, 4)))],  # unknown, action "skip"
        [routing(kind=2, segments_left=0)],  # final destination: the header is ignored
        [(IPPROTO_HOPOPTS, PAD1S), routing(), (IPPROTO_DSTOPTS, PADN4)],
        [(IPPROTO_DSTOPTS, PADN4)] * (IPV6_HDRNESTLIMIT - 1),
    ],
)
def test_ipv6_extension_chains_accepted(headers: list[tuple[int, bytes]]) -> None:
    accepted(with_extensions(v6(), *headers))


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ([fragment()], IpDrop.FRAGMENT),
        ([fragment(offset=0, more=False)], IpDrop.FRAGMENT),  # atomic: a fragment header still
        ([(IPPROTO_HOPOPTS, PAD1S), fragment(offset=3)], IpDrop.FRAGMENT),
        ([(IPPROTO_DSTOPTS, PADN4), (IPPROTO_HOPOPTS, PAD1S)], IpDrop.BADOPTIONS),
        ([(IPPROTO_HOPOPTS, bytes((5, 4, 0, 0, 0, 0)))], IpDrop.BADOPTIONS),  # alert length
        ([(IPPROTO_DSTOPTS, bytes((0x7E, 4, 0, 0, 0, 0)))], IpDrop.BADOPTIONS),  # discard
        ([(IPPROTO_DSTOPTS, bytes((0xBE, 4, 0, 0, 0, 0)))], IpDrop.BADOPTIONS),  # ICMP
        ([(IPPROTO_HOPOPTS, bytes((0xC2, 4, 0, 1, 0, 0)))], IpDrop.BADOPTIONS),  # jumbo
        ([(IPPROTO_DSTOPTS, bytes((1, 5, 0, 0, 0, 0)))], IpDrop.BADOPTIONS),  # runs past
        ([routing(kind=0)], IpDrop.BADOPTIONS),  # RH0 (ip6_check_rh0hdr)
        ([routing(segments_left=1)], IpDrop.BADOPTIONS),  # to be forwarded
        ([routing(), routing()], IpDrop.BADOPTIONS),  # two routing headers
        ([(IPPROTO_DSTOPTS, PADN4)] * IPV6_HDRNESTLIMIT, IpDrop.TOOMANYHDR),
        ([(IPPROTO_DSTOPTS, PADN4)] * (IPV6_HDRNESTLIMIT - 1) + [fragment()], IpDrop.FRAGMENT),
        ([(IPPROTO_DSTOPTS, PADN4)] * IPV6_HDRNESTLIMIT + [fragment()], IpDrop.TOOMANYHDR),
    ],
)
def test_ipv6_extension_chains_dropped(headers: list[tuple[int, bytes]], reason: IpDrop) -> None:
    packet = with_extensions(v6(), *headers)
    assert dropped(packet) is reason
    assert dropped(packet, None) is reason


def test_ipv6_later_fragment_shows_no_header() -> None:
    assert parse_ip(with_extensions(v6(), fragment())).header is not None
    assert parse_ip(with_extensions(v6(), fragment(offset=5))).header is None


def test_ipv6_chain_to_another_protocol_is_not_carp() -> None:
    raw = bytearray(with_extensions(v6(), (IPPROTO_HOPOPTS, ROUTER_ALERT), fragment()))
    raw[48] = UDP  # the fragment header's next header
    assert not parse_ip(bytes(raw), RECEIVER).carp


@pytest.mark.parametrize("keep", [41, 47, 55])
def test_ipv6_cut_chain_is_not_attributed(keep: int) -> None:
    packet = with_extensions(v6(), (IPPROTO_HOPOPTS, PAD1S), (IPPROTO_DSTOPTS, PADN4))
    assert not parse_ip(packet[:keep], RECEIVER).carp


def test_ipv6_payload_length() -> None:
    packet = v6()
    assert dropped(packet[:-1]) is IpDrop.TOOSHORT
    parsed = accepted(packet + bytes(8))  # trailing bytes: ip6_hbhchcheck trims them
    assert parsed.header == parse_ip(packet).header


@pytest.mark.parametrize(
    "src", ["ff02::1", "ff05::2", "::1", "::ffff:192.0.2.1", "::192.0.2.1", "fe80:3::1"]
)
def test_ipv6_bad_source(src: str) -> None:
    assert not ipv6_source_ok(IPv6Address(src))
    assert dropped(v6(src=src)) is IpDrop.BADSRC


@pytest.mark.parametrize("src", ["fe80::9", "2001:db8::7", "::"])
def test_ipv6_good_source(src: str) -> None:
    assert ipv6_source_ok(IPv6Address(src))
    accepted(v6(src=src))


def test_ipv6_destination() -> None:
    assert dropped(v6(dst="ff02::12")) is None
    assert dropped(v6(dst=str(OWN6))) is None  # the IP layer takes it; carp says badif
    for other in ("ff02::1", "ff02:1::12", "ff01::12", "fe80::2", "::", "2001:db8::1"):
        assert dropped(v6(dst=other)) is IpDrop.NOTOURS, other
    assert dropped(v6(dst="ff02::1"), None) is None


def test_ipv6_cut_before_the_header_ends() -> None:
    assert dropped(v6()[:39]) is IpDrop.TOOSMALL
    assert not parse_ip(v6()[:6]).carp


def test_options_rule_directly() -> None:
    assert ipv6_options_ok(b"", hop_by_hop=True)
    assert ipv6_options_ok(ROUTER_ALERT, hop_by_hop=True)
    assert ipv6_options_ok(bytes((5, 0)), hop_by_hop=False)  # no router alert in dest opts
    assert not ipv6_options_ok(bytes((5, 0)), hop_by_hop=True)
    assert not ipv6_options_ok(bytes((1,)), hop_by_hop=False)  # PadN without its length


# --- counters --------------------------------------------------------------------------------


def test_ip_drop_counters_are_apart_from_carpstats() -> None:
    stats = CarpStats()
    assert len(stats.as_dict()) == 16 and "ip_drops" not in stats.as_dict()
    stats.ip_drops.count(IpDrop.FRAGMENT)
    stats.ip_drops.count(IpDrop.FRAGMENT)
    assert stats.ip_drops.as_dict() == {**dict.fromkeys(IpDropStats.names(), 0), "fragment": 2}
    assert set(stats.as_dict().values()) == {0}


# --- CarpHost.receive ------------------------------------------------------------------------

LAN0 = carpdev("lan0", 1, str(OWN4), str(OWN6))


def host(
    carppeer: IPv4Address | None = None, addresses: Sequence[str] = ("192.0.2.10/24",)
) -> CarpHost:
    params = ifparams(addresses=addresses, passphrase=b"secret", carppeer=carppeer)
    counter = iter(range(1, 1000))
    h = CarpHost(Sysctls(log=7), [params], {"lan0": LAN0}, lambda: next(counter).to_bytes(8, "big"))
    h.start(0.0)
    return h


def ipv6_advert(**kw: object) -> bytes:
    return advert(src="fe80::9", v4=["192.0.2.10"], **kw)  # type: ignore[arg-type]


def broken(make: Callable[[], bytes], offset: int, value: int) -> Callable[[], bytes]:
    def build() -> bytes:
        raw = bytearray(make())
        raw[offset] = value
        return bytes(raw)

    return build


# packets a peer with demote 1 might send (it would win) that the IP layer drops
DROPS: Sequence[tuple[str, Callable[[], bytes], IpDrop]] = [
    ("checksum", broken(lambda: advert(demote=1), 10, 0), IpDrop.BADSUM),
    ("ihl", lambda: fix4(broken(lambda: advert(demote=1), 0, 0x44)()), IpDrop.BADHLEN),
    ("cut", lambda: advert(demote=1)[:50], IpDrop.TOOSHORT),
    ("tiny", lambda: advert(demote=1)[:15], IpDrop.TOOSMALL),
    ("fragment", lambda: fix4(broken(lambda: advert(demote=1), 6, 0x20)()), IpDrop.FRAGMENT),
    ("source", lambda: advert(demote=1, src="224.0.0.5"), IpDrop.BADSRC),
    ("destination", lambda: advert(demote=1, dst="192.0.2.50"), IpDrop.NOTOURS),
    ("group", lambda: advert(demote=1, dst="239.1.1.1"), IpDrop.NOTOURS),
    ("v6 source", lambda: advert(demote=1, src="ff02::9", v4=["192.0.2.10"]), IpDrop.BADSRC),
    ("v6 cut", lambda: ipv6_advert(demote=1)[:-4], IpDrop.TOOSHORT),
    (
        "v6 fragment",
        lambda: with_extensions(ipv6_advert(demote=1), fragment(more=False)),
        IpDrop.FRAGMENT,
    ),
    (
        "v6 rh0",
        lambda: with_extensions(ipv6_advert(demote=1), routing(kind=0)),
        IpDrop.BADOPTIONS,
    ),
]


@pytest.mark.parametrize(("name", "make", "reason"), DROPS, ids=[d[0] for d in DROPS])
def test_receive_counts_each_ip_drop_and_changes_nothing(
    name: str, make: Callable[[], bytes], reason: IpDrop
) -> None:
    h = host()
    timer = h.get_timer()
    assert h.receive(1.0, "lan0", make()) == []
    assert set(h.stats.as_dict().values()) == {0}  # not even ipackets: carp never saw it
    assert {k: v for k, v in h.stats.ip_drops.as_dict().items() if v} == {reason.value: 1}
    assert h.carpifs["carp0"].leader.state is State.BACKUP
    assert h.get_timer() == timer


def test_ip_drops_are_counted_whatever_allow_says() -> None:
    h = host()
    h.set_sysctl(0.5, "allow", 0)
    h.receive(1.0, "lan0", advert(dst="192.0.2.50"))
    h.receive(1.0, "lan0", advert())
    assert h.stats.ip_drops.notours == 1 and h.stats.ipackets == 1


def test_receive_takes_ipv6_behind_extension_headers() -> None:
    h = host(addresses=("192.0.2.10/24", "2001:db8::10/64"))
    ad = advert(src="fe80::9", v4=["192.0.2.10"], v6=["2001:db8::10"], demote=1)
    packet = with_extensions(ad, (IPPROTO_HOPOPTS, ROUTER_ALERT), (IPPROTO_DSTOPTS, PADN4))
    actions = h.receive(1.0, "lan0", packet)
    assert [a.new for a in actions if isinstance(a, StateChanged)] == [State.MASTER]
    assert h.stats.ipackets6 == 1


def test_receive_unicast_carppeer_to_our_address() -> None:
    h = host(carppeer=IPv4Address("192.0.2.2"))
    actions = h.receive(1.0, "lan0", advert(dst=str(OWN4), demote=1))
    assert [a.new for a in actions if isinstance(a, StateChanged)] == [State.MASTER]
    assert h.receive(2.0, "lan0", advert(dst="192.0.2.3", demote=1)) == []
    assert h.stats.ip_drops.notours == 1


def test_receive_multicast_carppeer_group_is_joined() -> None:
    h = host(carppeer=IPv4Address("239.1.1.1"))
    actions = h.receive(1.0, "lan0", advert(dst="239.1.1.1", demote=1))
    assert [a.new for a in actions if isinstance(a, StateChanged)] == [State.MASTER]
    h.receive(2.0, "lan0", advert(dst="239.1.1.2"))
    assert h.stats.ip_drops.notours == 1


def test_receive_on_an_unknown_carpdev_owns_no_unicast_address() -> None:
    h = host()
    h.receive(1.0, "lan9", advert(dst=str(OWN4)))
    h.receive(1.0, "lan9", advert())  # the group reaches carp, which finds no vhid there
    assert (h.stats.ip_drops.notours, h.stats.ipackets, h.stats.badvhid) == (1, 1, 1)


def test_receive_ipv6_unicast_to_the_parent_is_badif() -> None:
    """IPv6 has no carppeer: a unicast advertisement reaches the parent, not a carp interface."""
    h = host()
    actions = h.receive(1.0, "lan0", v6(dst=str(OWN6)))
    assert [a.message for a in actions if isinstance(a, Log)] == [
        "carp: packet received on non-carp interface"
    ]
    assert (h.stats.ipackets6, h.stats.badif) == (1, 1)
    h.receive(1.0, "lan0", v6())
    assert h.stats.badif == 1  # the group still reaches carp0


# --- the data path hands IPv6 behind extension headers to the host ---------------------------


def frame6(packet: bytes) -> bytes:
    return build_frame(bytes.fromhex("333300000012"), bytes.fromhex("020000000999"), 0x86DD, packet)


def test_datapath_routes_ipv6_extension_chains_to_the_host() -> None:
    h = host()
    dp = DataPath(h)
    dp.input(1.0, "lan0", "p1", frame6(with_extensions(v6(), (IPPROTO_HOPOPTS, ROUTER_ALERT))))
    dp.input(1.0, "lan0", "p1", frame6(with_extensions(v6(), fragment())))
    assert h.stats.ipackets6 == 1 and h.stats.ip_drops.fragment == 1
    # MLD behind a hop-by-hop header is not CARP: the host never sees it
    mld = bytearray(with_extensions(v6(), (IPPROTO_HOPOPTS, ROUTER_ALERT)))
    mld[40] = 58
    assert dp.input(1.0, "lan0", "p1", frame6(bytes(mld))) == []
    assert h.stats.ipackets6 == 1 and sum(h.stats.ip_drops.as_dict().values()) == 1


def test_datapath_still_delivers_other_ipv6_behind_a_hop_by_hop_header() -> None:
    h = host()
    h.handle_timer(3.0)  # MASTER: frames for the carp MAC go to its TAP
    dp = DataPath(h)
    packet = bytearray(with_extensions(v6(dst="2001:db8::10"), (IPPROTO_HOPOPTS, PAD1S)))
    packet[40] = 58  # ICMPv6 behind the hop-by-hop header
    frame = build_frame(
        h.carpifs["carp0"].mac, bytes.fromhex("020000000999"), 0x86DD, bytes(packet)
    )
    actions = dp.input(3.5, "lan0", "p1", frame)
    assert [type(a).__name__ for a in actions] == ["Deliver"]
    assert h.stats.ipackets6 == 0


def test_receive_unicast_carppeer_to_any_address_of_the_host_port() -> None:
    h = host(carppeer=IPv4Address("192.0.2.2"))
    dev = h.carpdevs["lan0"]
    h.carpdevs["lan0"] = replace(dev, local=frozenset({IPv4Address("198.51.100.7")}))
    actions = h.receive(1.0, "lan0", advert(dst="198.51.100.7", demote=1))
    assert [a.new for a in actions if isinstance(a, StateChanged)] == [State.MASTER]
    assert h.stats.ip_drops.notours == 0
