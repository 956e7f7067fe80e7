"""ARP and NDP frames of the carp data path (§7, §6.6): builders and two small parsers.

Addresses inside the parsed records stay raw bytes (4 or 16) so the data path can look them up
in sets without converting. No VLAN tags: the switch hands over untagged Ethernet II frames.
"""

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from carp.checksum import inet_checksum
from carp.constants import ETH_P_ARP, ETH_P_IPV6, MAC_BROADCAST

ETH_ZLEN = 60  # minimum Ethernet frame without FCS; ARP is padded to it as a NIC would
ARPHRD_ETHER = 1
ARPOP_REQUEST = 1
ARPOP_REPLY = 2
IPPROTO_ICMPV6 = 58
ND_NEIGHBOR_SOLICIT = 135
ND_NEIGHBOR_ADVERT = 136
ND_OPT_SOURCE_LINKADDR = 1
ND_OPT_TARGET_LINKADDR = 2
ND_NA_FLAG_ROUTER = 0x80
ND_NA_FLAG_SOLICITED = 0x40
ND_NA_FLAG_OVERRIDE = 0x20
ND_HOPLIMIT = 255  # RFC 4861: NDP is sent and accepted only with hop limit 255
ALL_NODES = IPv6Address("ff02::1")
ALL_NODES_MAC = b"\x33\x33\x00\x00\x00\x01"

_ETH_ARP = ETH_P_ARP.to_bytes(2, "big")
_ETH_IPV6 = ETH_P_IPV6.to_bytes(2, "big")
_ARP_FIXED = struct.pack("!HHBB", ARPHRD_ETHER, 0x0800, 6, 4)  # Ethernet / IPv4 ARP
_UNSPECIFIED = bytes(16)
_SOLICITED_NODE_PREFIX = bytes.fromhex("ff02" + "00" * 9 + "01ff")  # ff02::1:ff00:0/104


@dataclass(frozen=True, slots=True)
class ArpPacket:
    """An Ethernet/IPv4 ARP packet; spa/tpa are 4 raw bytes."""

    eth_dst: bytes
    eth_src: bytes
    op: int
    sha: bytes
    spa: bytes
    tha: bytes
    tpa: bytes

    @property
    def gratuitous(self) -> bool:
        """An announcement (spa == tpa), never a question to answer."""
        return self.spa == self.tpa


@dataclass(frozen=True, slots=True)
class NeighborSolicit:
    """A valid NS (RFC 4861 7.1.1); addresses are 16 raw bytes, slla the 6-byte option or None."""

    eth_dst: bytes
    eth_src: bytes
    src: bytes
    dst: bytes
    target: bytes
    slla: bytes | None


def _pad(frame: bytes) -> bytes:
    return frame if len(frame) >= ETH_ZLEN else frame + bytes(ETH_ZLEN - len(frame))


def _arp(
    eth_dst: bytes, eth_src: bytes, op: int, sha: bytes, spa: bytes, tha: bytes, tpa: bytes
) -> bytes:
    body = _ARP_FIXED + op.to_bytes(2, "big") + sha + spa + tha + tpa
    return _pad(eth_dst + eth_src + _ETH_ARP + body)


def gratuitous_arp(mac: bytes, vip: IPv4Address, eth_src: bytes | None = None) -> bytes:
    """§7 carp_send_arp: broadcast request, op 1, sha = carp MAC, spa = tpa = VIP, tha zero.

    The Ethernet source is the carp MAC unless `eth_src` says otherwise.
    """
    ip = vip.packed
    return _arp(MAC_BROADCAST, eth_src or mac, ARPOP_REQUEST, mac, ip, bytes(6), ip)


def arp_request(sha: bytes, spa: IPv4Address, tpa: IPv4Address) -> bytes:
    """A plain broadcast who-has `tpa`, from `sha`/`spa` (the driver resolving a carppeer)."""
    return _arp(MAC_BROADCAST, sha, ARPOP_REQUEST, sha, spa.packed, bytes(6), tpa.packed)


def arp_reply(request: ArpPacket, sha: bytes, eth_src: bytes | None = None) -> bytes:
    """in_arpinput/arpreply: op 2 from `sha` for the requested address, back to the requester.

    tha/tpa are the request's sender; the Ethernet destination is the request's sha (as
    arpreply), the Ethernet source `eth_src` (default `sha`; the data path passes source_mac).
    """
    return _arp(
        request.sha, eth_src or sha, ARPOP_REPLY, sha, request.tpa, request.sha, request.spa
    )


def parse_arp(frame: bytes) -> ArpPacket | None:
    """An Ethernet/IPv4 ARP frame, or None for anything else or anything malformed."""
    if len(frame) < 42 or frame[12:14] != _ETH_ARP or frame[14:20] != _ARP_FIXED:
        return None
    op, sha, spa, tha, tpa = struct.unpack_from("!H6s4s6s4s", frame, 20)
    return ArpPacket(frame[0:6], frame[6:12], op, sha, spa, tha, tpa)


def solicited_node(address: bytes) -> bytes:
    """ff02::1:ffXX:XXXX of a 16-byte address (RFC 4291 2.7.1)."""
    return _SOLICITED_NODE_PREFIX + address[13:]


def _icmp6_checksum(src: bytes, dst: bytes, icmp: bytes) -> int:
    # RFC 8200 8.1 pseudo-header: src, dst, upper-layer length, 3 zero bytes, next header
    pseudo = src + dst + struct.pack("!I3xB", len(icmp), IPPROTO_ICMPV6)
    return inet_checksum(pseudo + icmp)


def _icmp6_frame(eth_dst: bytes, eth_src: bytes, src: bytes, dst: bytes, icmp: bytes) -> bytes:
    csum = _icmp6_checksum(src, dst, icmp)
    icmp = icmp[:2] + csum.to_bytes(2, "big") + icmp[4:]
    ip6 = struct.pack("!IHBB", 0x60000000, len(icmp), IPPROTO_ICMPV6, ND_HOPLIMIT) + src + dst
    return eth_dst + eth_src + _ETH_IPV6 + ip6 + icmp


def _na(flags: int, target: bytes, mac: bytes) -> bytes:
    # type 136, code 0, checksum (filled later), flags + reserved, target, option 2 (len 1 = 8)
    return (
        bytes((ND_NEIGHBOR_ADVERT, 0, 0, 0, flags, 0, 0, 0))
        + target
        + bytes((ND_OPT_TARGET_LINKADDR, 1))
        + mac
    )


def unsolicited_na(
    mac: bytes,
    target: IPv6Address,
    router: bool = False,
    eth_src: bytes | None = None,
    src: IPv6Address | None = None,
) -> bytes:
    """§7 carp_if_linkstate: NA to ff02::1 with Override (Router if forwarding), tll = `mac`.

    The IPv6 source defaults to the target itself (an address of the carp interface, as Linux
    sends its NAs); the Ethernet source defaults to `mac`.
    """
    flags = ND_NA_FLAG_OVERRIDE | (ND_NA_FLAG_ROUTER if router else 0)
    t = target.packed
    s = src.packed if src is not None else t
    return _icmp6_frame(ALL_NODES_MAC, eth_src or mac, s, ALL_NODES.packed, _na(flags, t, mac))


def na_reply(
    ns: NeighborSolicit, mac: bytes, router: bool = False, eth_src: bytes | None = None
) -> bytes:
    """nd6_ns_input -> nd6_na_output: the answer to `ns` for its target, tll = `mac`.

    Solicited + Override to the soliciting address (Ethernet: its source link-layer option,
    else the frame's source); a DAD probe (source ::) gets Override only, to ff02::1, as
    RFC 4861 7.2.4 demands. The IPv6 source is the target.
    """
    flags = ND_NA_FLAG_OVERRIDE | (ND_NA_FLAG_ROUTER if router else 0)
    if ns.src == _UNSPECIFIED:
        dst, eth_dst = ALL_NODES.packed, ALL_NODES_MAC
    else:
        flags |= ND_NA_FLAG_SOLICITED
        dst, eth_dst = ns.src, ns.slla or ns.eth_src
    return _icmp6_frame(eth_dst, eth_src or mac, ns.target, dst, _na(flags, ns.target, mac))


def parse_ns(frame: bytes) -> NeighborSolicit | None:
    """A neighbour solicitation that passes RFC 4861 7.1.1 (nd6_ns_input), else None.

    Checked: ICMPv6 directly after the IPv6 header, hop limit 255, code 0, length >= 24, a valid
    checksum, a unicast target, well-formed options, and for source :: a solicited-node
    destination and no source link-layer option.
    """
    if len(frame) < 78 or frame[12:14] != _ETH_IPV6 or frame[14] >> 4 != 6:
        return None
    plen, nxt, hlim = struct.unpack_from("!HBB", frame, 18)
    if nxt != IPPROTO_ICMPV6 or hlim != ND_HOPLIMIT or plen < 24 or 54 + plen > len(frame):
        return None
    icmp = frame[54 : 54 + plen]
    if icmp[0] != ND_NEIGHBOR_SOLICIT or icmp[1] != 0:
        return None
    src, dst = frame[22:38], frame[38:54]
    if _icmp6_checksum(src, dst, icmp) != 0:
        return None
    target = icmp[8:24]
    if target[0] == 0xFF:
        return None
    ok, slla = _source_linkaddr(icmp, 24)
    if not ok:
        return None
    if src == _UNSPECIFIED and (dst != solicited_node(target) or slla is not None):
        return None
    return NeighborSolicit(frame[0:6], frame[6:12], src, dst, target, slla)


def rewrite_slla(frame: bytes, mac: bytes) -> bytes:
    """An NS frame (ICMPv6 right after the IPv6 header) with its source link-layer option set
    to `mac` and the checksum recomputed; any other frame, or one without the option, as is.

    The kernel's NS from a virtual address advertises the carp MAC, as ARP's sender does.
    """
    if len(frame) < 78 or frame[20] != IPPROTO_ICMPV6 or frame[54] != ND_NEIGHBOR_SOLICIT:
        return frame
    end = min(len(frame), 54 + int.from_bytes(frame[18:20], "big"))
    icmp = bytearray(frame[54:end])
    offset = 24
    while offset + 8 <= len(icmp) and icmp[offset + 1]:
        if icmp[offset] == ND_OPT_SOURCE_LINKADDR and icmp[offset + 1] == 1:
            icmp[offset + 2 : offset + 8] = mac
            icmp[2:4] = b"\x00\x00"
            csum = _icmp6_checksum(frame[22:38], frame[38:54], bytes(icmp))
            icmp[2:4] = csum.to_bytes(2, "big")
            return frame[:54] + bytes(icmp) + frame[end:]
        offset += icmp[offset + 1] * 8
    return frame


def _source_linkaddr(icmp: bytes, offset: int) -> tuple[bool, bytes | None]:
    """(options well-formed, the 6-byte source link-layer option or None)."""
    slla: bytes | None = None
    while offset < len(icmp):
        if offset + 2 > len(icmp):
            return False, None
        length = icmp[offset + 1] * 8
        if length == 0 or offset + length > len(icmp):
            return False, None
        if icmp[offset] == ND_OPT_SOURCE_LINKADDR and length >= 8:
            slla = icmp[offset + 2 : offset + 8]
        offset += length
    return True, slla
