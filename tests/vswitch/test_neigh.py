"""vswitch/neigh.py and carp.l2.arp_request: resolving a unicast carppeer."""

from ipaddress import IPv4Address, IPv4Network

import dpkt

from carp import l2
from vswitch.neigh import MAX_ENTRIES, REFRESH_AFTER, REQUEST_INTERVAL, NeighbourCache

MAC = bytes.fromhex("020000000001")
PEER_MAC = bytes.fromhex("020000000002")
OTHER_MAC = bytes.fromhex("020000000003")
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
    assert cache.request(0.0, MAC, None, PEER) is None  # no address to ask from
    assert cache.request(0.0, MAC, ME, PEER) == l2.arp_request(MAC, ME, PEER)
    cache.snoop(0.0, bytes(60))  # not ARP
    cache.snoop(0.0, l2.arp_request(PEER_MAC, IPv4Address("0.0.0.0"), ME))  # probe: no sender
    assert cache.lookup(PEER) is None
    cache.snoop(0.0, l2.arp_request(PEER_MAC, PEER, ME))
    assert cache.lookup(PEER) == PEER_MAC


def test_requests_for_one_address_are_spaced() -> None:
    cache = NeighbourCache()
    assert cache.request(10.0, MAC, ME, PEER) is not None
    assert cache.request(10.0 + REQUEST_INTERVAL / 2, MAC, ME, PEER) is None
    other = IPv4Address("198.51.100.8")
    assert cache.request(10.0 + REQUEST_INTERVAL / 2, MAC, ME, other) is not None
    assert cache.request(10.0 + REQUEST_INTERVAL, MAC, ME, PEER) is not None


def test_the_cache_is_bounded() -> None:
    assert NeighbourCache().max_entries == MAX_ENTRIES
    cache = NeighbourCache(max_entries=16)
    first = IPv4Address("192.0.2.1")
    for i in range(16 + 1):
        cache.snoop(0.0, l2.arp_request(PEER_MAC, first + i, ME))
    assert cache.lookup(first) is None  # the oldest went
    assert cache.lookup(first + 1) == cache.lookup(first + 16) == PEER_MAC
    assert len(cache) == 16


def documentation_senders() -> list[IPv4Address]:
    """Every host address of the three IPv4 documentation networks but ours and the peer's."""
    nets = [IPv4Network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")]
    return [ip for net in nets for ip in net.hosts() if ip not in (ME, PEER)]


def test_a_pinned_peer_survives_a_flood_of_other_senders() -> None:
    # the documentation networks hold fewer senders than MAX_ENTRIES: a smaller cache turns over
    cache = NeighbourCache(max_entries=64)
    cache.snoop(0.0, l2.arp_request(PEER_MAC, PEER, ME))  # known before it is pinned: kept
    cache.pin([PEER])
    assert cache.pinned == {PEER}
    senders = documentation_senders()
    for i in range(5000):
        cache.snoop(1.0, l2.arp_request(OTHER_MAC, senders[i % len(senders)], ME))
    assert cache.lookup(PEER) == PEER_MAC
    assert cache.lookup(senders[0]) is None  # the flood did turn the cache over
    assert len(cache) == 64 + 1
    # a new MAC for the peer replaces the old one (a replaced peer host)
    cache.snoop(2.0, l2.arp_request(OTHER_MAC, PEER, ME))
    assert cache.lookup(PEER) == OTHER_MAC


def test_a_peer_pinned_before_it_is_heard_is_learned_and_unpinning_keeps_it() -> None:
    cache = NeighbourCache(max_entries=2)
    cache.pin([PEER])
    assert cache.lookup(PEER) is None and cache.stale(0.0, PEER)
    cache.snoop(5.0, l2.arp_request(PEER_MAC, PEER, ME))
    assert cache.lookup(PEER) == PEER_MAC
    cache.pin([])
    assert cache.pinned == frozenset() and cache.lookup(PEER) == PEER_MAC  # now evictable
    for i in range(2):
        cache.snoop(6.0, l2.arp_request(OTHER_MAC, IPv4Address("192.0.2.1") + i, ME))
    assert cache.lookup(PEER) is None


def test_a_pinned_peer_goes_stale_until_heard_again() -> None:
    cache = NeighbourCache()
    cache.pin([PEER])
    cache.snoop(100.0, l2.arp_request(PEER_MAC, PEER, ME))
    assert not cache.stale(100.0 + REFRESH_AFTER / 2, PEER)
    assert cache.stale(100.0 + REFRESH_AFTER, PEER)
    assert cache.lookup(PEER) == PEER_MAC  # still used while it is asked for again
    cache.snoop(100.0 + REFRESH_AFTER, l2.arp_request(PEER_MAC, PEER, ME))
    assert not cache.stale(100.0 + REFRESH_AFTER + 1, PEER)
    assert not cache.stale(0.0, ME)  # not pinned: never stale, nothing to refresh
