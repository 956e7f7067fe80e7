"""A small IPv4 neighbour cache for unicast `carppeer` advertisements.

The core leaves the destination MAC of a unicast advertisement to the driver (Transmit.next_hop).
The node learns peers' MACs from the ARP traffic its switches hand to the carp hooks and asks
with an ARP request of its own when a peer is unknown; until then the advertisement is not sent
(EHOSTDOWN, which §4.6 does not count as a send error towards a unicast peer).

The configured carppeers are pinned: a busy LAN's other ARP senders fill and turn over the
bounded part of the cache, never a pinned entry (a peer evicted there would go without
advertisements: a split brain without an attacker). A pinned peer not heard from for
`REFRESH_AFTER` is asked for again while its known MAC stays in use.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address

from carp import l2

MAX_ENTRIES = 1024  # unpinned entries, oldest evicted first
REQUEST_INTERVAL = 1.0  # seconds between two requests for the same address
REFRESH_AFTER = 60.0  # seconds without hearing a pinned peer before it is asked for again


@dataclass(slots=True)
class Pinned:
    mac: bytes | None  # None: not heard yet
    heard: float  # when its MAC was last learned (meaningless while mac is None)


class NeighbourCache:
    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._macs: dict[bytes, bytes] = {}  # IPv4 (4 raw bytes) -> MAC, insertion order
        self._pinned: dict[bytes, Pinned] = {}
        self._asked: dict[bytes, float] = {}  # address -> time of the last request for it

    def pin(self, peers: Iterable[IPv4Address]) -> None:
        """Keep exactly these addresses pinned (the configured carppeers); a MAC already known
        for a newly pinned address is kept, an unpinned one returns to the bounded part."""
        wanted = {ip.packed for ip in peers}
        for addr in [a for a in self._pinned if a not in wanted]:
            entry = self._pinned.pop(addr)
            self._asked.pop(addr, None)
            if entry.mac is not None:
                self._learn(addr, entry.mac)
        for addr in wanted:
            if addr not in self._pinned:
                mac = self._macs.pop(addr, None)
                self._pinned[addr] = Pinned(mac, float("-inf"))

    @property
    def pinned(self) -> frozenset[IPv4Address]:
        return frozenset(IPv4Address(a) for a in self._pinned)

    def __len__(self) -> int:
        return len(self._macs) + len(self._pinned)

    def snoop(self, now: float, frame: bytes) -> None:
        """Learn the sender of any ARP frame (cheap refusal for everything else)."""
        if frame[12:14] != b"\x08\x06":
            return
        arp = l2.parse_arp(frame)
        if arp is None or arp.spa == bytes(4) or arp.sha[0] & 1:
            return
        pinned = self._pinned.get(arp.spa)
        if pinned is not None:
            pinned.mac = arp.sha
            pinned.heard = now
            return
        self._learn(arp.spa, arp.sha)

    def _learn(self, addr: bytes, mac: bytes) -> None:
        if addr not in self._macs and len(self._macs) >= self.max_entries:
            self._macs.pop(next(iter(self._macs)))
        self._macs[addr] = mac

    def lookup(self, ip: IPv4Address) -> bytes | None:
        pinned = self._pinned.get(ip.packed)
        if pinned is not None:
            return pinned.mac
        return self._macs.get(ip.packed)

    def stale(self, now: float, ip: IPv4Address) -> bool:
        """A pinned peer whose MAC was learned more than REFRESH_AFTER ago (or never)."""
        pinned = self._pinned.get(ip.packed)
        return pinned is not None and now - pinned.heard >= REFRESH_AFTER

    def request(
        self, now: float, mac: bytes, src: IPv4Address | None, ip: IPv4Address
    ) -> bytes | None:
        """The ARP request to send for `ip`, at most one per REQUEST_INTERVAL per address
        (None: asked too recently, or no source address to ask from)."""
        if src is None:
            return None
        last = self._asked.get(ip.packed)
        if last is not None and now - last < REQUEST_INTERVAL:
            return None
        if len(self._asked) >= self.max_entries:
            self._asked.clear()  # bounded: an address asked for long ago may be asked again
        self._asked[ip.packed] = now
        return l2.arp_request(mac, src, ip)
