"""vswitch/neigh.py and carp.l2.arp_request: resolving a unicast carppeer."""

from ipaddress import IPv4Address

import dpkt

from carp import l2
from vswitch.neigh import MAX_ENTRIES, NeighbourCache

MAC = bytes.fromhex("020000000001")
PEER_MAC = bytes.fromhex("020000000002")
ME = IPv4Address("198.51.100.2")
PEER = IPv4Address("198.51.100.7")


def test_request_is_a_broadcast_who_has() -> None:
    frame = l2.arp_request(MAC, ME, PEER)
    eth = dpkt.ethernet.Ethernet(frame)
    arp = eth.data
    assert eth.dst == b"\xff" * 6 and eth.src == MAC
    assert arp.op == dpkt.arp.ARP_OP_REQUEST
    assert (arp.sha, arp.spa, arp.tha, arp.tpa) == (MAC, ME.packed, bytes(6), PEER.packed)


def test_snoop_learns_senders_and_ignores_the_rest() -> None:
    cache = NeighbourCache()
    assert cache.lookup(PEER) is None
    assert cache.request(MAC, None, PEER) is None  # no address to ask from
    assert cache.request(MAC, ME, PEER) == l2.arp_request(MAC, ME, PEER)
    cache.snoop(bytes(60))  # not ARP
    cache.snoop(l2.arp_request(PEER_MAC, IPv4Address("0.0.0.0"), ME))  # probe: no sender IP
    assert cache.lookup(PEER) is None
    cache.snoop(l2.arp_request(PEER_MAC, PEER, ME))
    assert cache.lookup(PEER) == PEER_MAC


def test_the_cache_is_bounded() -> None:
    cache = NeighbourCache()
    first = IPv4Address("192.0.2.0")
    for i in range(MAX_ENTRIES + 1):
        cache.snoop(l2.arp_request(PEER_MAC, first + i, ME))
    assert cache.lookup(first) is None
    assert cache.lookup(first + MAX_ENTRIES) == PEER_MAC
