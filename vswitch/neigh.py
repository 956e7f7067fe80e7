"""A small IPv4 neighbour cache for unicast `carppeer` advertisements.

The core leaves the destination MAC of a unicast advertisement to the driver (Transmit.next_hop).
The node learns peers' MACs from the ARP traffic its switches hand to the carp hooks and asks
with an ARP request of its own when a peer is unknown; until then the advertisement is not sent
(EHOSTDOWN, which §4.6 does not count as a send error towards a unicast peer).
"""

from ipaddress import IPv4Address

from carp import l2

MAX_ENTRIES = 1024
REQUEST_INTERVAL = 1.0  # seconds between two requests for the same address


class NeighbourCache:
    def __init__(self) -> None:
        self._macs: dict[bytes, bytes] = {}  # IPv4 (4 raw bytes) -> MAC

    def snoop(self, frame: bytes) -> None:
        """Learn the sender of any ARP frame (cheap refusal for everything else)."""
        if frame[12:14] != b"\x08\x06":
            return
        arp = l2.parse_arp(frame)
        if arp is None or arp.spa == bytes(4) or arp.sha[0] & 1:
            return
        if arp.spa not in self._macs and len(self._macs) >= MAX_ENTRIES:
            self._macs.pop(next(iter(self._macs)))
        self._macs[arp.spa] = arp.sha

    def lookup(self, ip: IPv4Address) -> bytes | None:
        return self._macs.get(ip.packed)

    def request(self, mac: bytes, src: IPv4Address | None, ip: IPv4Address) -> bytes | None:
        """The ARP request to send for `ip` (None without a source address to ask from)."""
        if src is None:
            return None
        return l2.arp_request(mac, src, ip)
