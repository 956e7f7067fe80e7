"""The benches' helpers that need no namespace: fuzz seeds and mutations (vswitch/lab/mutate.py),
the untag rule of the injector (vswitch/lab/inject.py), /proc sampling (vswitch/lab/procstat.py).
"""

import os
import random
from ipaddress import IPv4Address, IPv6Address

from carp import l2
from carp.auth import HmacContexts, carp_key
from carp.wire import CarpHeader, Verdict, parse_ip
from vswitch.lab.inject import untag_discards
from vswitch.lab.mutate import KINDS, VNET_HDR, ZERO_HDR, Mutator, Seed, corpus
from vswitch.lab.procstat import ProcSampler, fd_count, rss_kib

VIP, VIP6 = IPv4Address("192.0.2.1"), IPv6Address("2001:db8::1")
PEER_MAC = bytes.fromhex("020000000050")


def seeds() -> dict[str, bytes]:
    found = corpus(
        vip=VIP,
        vip6=VIP6,
        vhid=3,
        passphrase="secret",
        peer=IPv4Address("192.0.2.50"),
        peer6=IPv6Address("2001:db8::50"),
        peer_mac=PEER_MAC,
        advbase=0,
        advskew=40,
    )
    return {seed.name: seed.frame for seed in found}


def test_seed_adverts_pass_every_check_of_the_receiver() -> None:
    hmac = HmacContexts(carp_key("secret"), 3, [VIP], [VIP6])
    for name, ethertype in (("carp4", b"\x08\x00"), ("carp6", b"\x86\xdd")):
        frame = seeds()[name]
        assert frame[12:14] == ethertype
        parsed = parse_ip(frame[14:])
        assert parsed.verdict == Verdict.ACCEPT, name
        header = parsed.header
        assert isinstance(header, CarpHeader)
        assert (header.vhid, header.advbase, header.advskew) == (3, 0, 40)
        assert hmac.verify(header.counter, header.md)


def test_seed_arp_and_ns_parse_as_what_they_claim() -> None:
    s = seeds()
    request = l2.parse_arp(s["arp-request"])
    assert request is not None and (request.op, request.tpa) == (1, VIP.packed)
    gratuitous = l2.parse_arp(s["arp-gratuitous"])
    assert gratuitous is not None and gratuitous.gratuitous
    reply = l2.parse_arp(s["arp-reply"])
    assert reply is not None and (reply.op, reply.sha, reply.eth_dst[:5]) == (
        2,
        PEER_MAC,
        bytes.fromhex("00005e0001"),
    )
    for name in ("ns-group", "ns-unicast"):
        ns = l2.parse_ns(s[name])
        assert ns is not None and ns.target == VIP6.packed and ns.slla == PEER_MAC, name


def test_mutations_are_reproducible_and_bounded() -> None:
    made = [Mutator(random.Random(7), _corpus(), max_len=3000) for _ in range(2)]
    first = [made[0].next() for _ in range(3000)]
    assert first == [made[1].next() for _ in range(3000)]
    assert set(made[0].kinds) == set(KINDS)
    assert all(len(header) == VNET_HDR.size for header, _ in first)
    assert max(len(frame) for _, frame in first) <= 3000 + 8  # an over-long frame, tagged
    zero = sum(1 for header, _ in first if header == ZERO_HDR)
    assert 0.6 < zero / len(first) < 0.9  # a quarter asks for offload, at random
    seed_frames = set(seeds().values())
    assert sum(1 for _, frame in first if frame not in seed_frames) > 2500  # most are broken


def _corpus() -> list[Seed]:
    return corpus(
        vip=VIP,
        vip6=VIP6,
        vhid=1,
        passphrase="secret",
        peer=IPv4Address("192.0.2.50"),
        peer6=IPv6Address("2001:db8::50"),
        peer_mac=PEER_MAC,
    )


def test_untag_discards_only_vlan_frames_too_short_to_untag() -> None:
    head = bytes(12)
    assert untag_discards(head + b"\x81\x00" + bytes(5))
    assert untag_discards(head + b"\x88\xa8")
    assert not untag_discards(head + b"\x81\x00" + bytes(6))  # tag and inner type: untagged
    assert not untag_discards(head + b"\x08\x00")


def test_proc_sampling_of_this_process_and_of_none() -> None:
    assert (rss_kib(os.getpid()) or 0) > 0
    assert (fd_count(os.getpid()) or 0) > 0
    assert rss_kib(2**22 + 1) is None and fd_count(2**22 + 1) is None  # above pid_max
    with ProcSampler({"me": os.getpid()}, 0.01) as sampler:
        first = sampler.series("me")
    assert len(first) >= 1 and first[0].rss_kib is not None and first[0].fds is not None
