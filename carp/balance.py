"""Balancing rules of carp(4): MACs (§6.3), source MAC (design decision 4), the IP filter
carp_lsdrop (§6.5) and the historical ARP-balancing hash (§6.8).

Everything here runs per packet: plain byte slices and ints, no parsing library.
"""

from collections.abc import Set

from carp.constants import Balancing

VRRP_MAC_PREFIX = b"\x00\x00\x5e\x00\x01"  # IANA VRRP range 00:00:5e:00:01:<vhid> (§6.3)
_M32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9  # lookup2's initial `a` (carp_hash)

_IPPROTO_ICMP = 1
_IPPROTO_ICMPV6 = 58
# icmp_input_if: errors and redirects are filtered on (inner original dst, outer dst)
_ICMP_ERRORS = frozenset((3, 4, 5, 11, 12))  # unreach, source quench, redirect, timxceed, paramprob
# icmp_input_if `reflect:` filters echo, timestamp and mask requests on (src, dst)
_ICMP_REFLECT = frozenset((8, 13, 17))
_ICMP6_ECHO_REQUEST = 128  # icmp6_input: the only ICMPv6 type carp_lsdrop filters
_ICMP_ADVLENMIN = 8 + 20 + 8  # icmp_input_if: shorter errors are dropped (icmpstat badlen)
_BCAST4 = b"\xff\xff\xff\xff"


def vhe_mac(vhid: int, balancing: Balancing, leader: bool) -> bytes:
    """A carpnode's virtual MAC (§6.3, ip_carp.c carp_set_vhe_enaddr).

    00:00:5e:00:01:<vhid>; the leader in `ip` mode sets the group bit (01:00:5e:00:01:<vhid>),
    so switches flood frames to it. vhid 0 gives all zeros, as in the kernel.
    """
    if vhid == 0:
        return bytes(6)
    first = b"\x01" if leader and balancing == Balancing.IP else b"\x00"
    return first + VRRP_MAC_PREFIX[1:] + bytes((vhid,))


def tap_mac(carp_mac: bytes) -> bytes:
    """The MAC the kernel TAP of a carp interface holds: the carp MAC without the group bit.

    A TAP cannot hold the `ip`-mode multicast MAC, so it gets 00:00:5e:00:01:<leader vhid>;
    any unicast carp MAC (every other mode, or a custom lladdr) is used as it is.
    """
    if carp_mac[0] & 0x01:
        return bytes((carp_mac[0] & 0xFE,)) + carp_mac[1:]
    return carp_mac


def source_mac(balancing: Balancing, vmac: bytes, own_mac: bytes) -> bytes:
    """The Ethernet source of a frame sent from a virtual address (design.md decision 4).

    none, arp, ip-unicast: the virtual MAC (switches learn it on the serving node's port).
    ip, ip-stealth: the node's own MAC on the segment (carp(4): ip-stealth never sources the
    virtual MAC, so switches keep flooding it; ip must not source its multicast MAC).
    """
    if balancing in (Balancing.IP, Balancing.IP_STEALTH):
        return own_mac
    return vmac


def ip_fold(src: bytes, dst: bytes) -> int:
    """§6.5 step 4: XOR of every 32-bit big-endian word of src and dst (4 or 16 bytes each)."""
    x = int.from_bytes(src, "big") ^ int.from_bytes(dst, "big")
    x = (x ^ (x >> 64)) & 0xFFFFFFFFFFFFFFFF
    return (x ^ (x >> 32)) & _M32


def _lsdrop_index_keep(fold: int, lsmask: int, lscount: int) -> bool:
    # §6.5 step 5, ip_carp.c carp_lsdrop: keep iff bit (fold % lscount) of lsmask; lscount 0 drops
    if lscount <= 0:
        return False
    return bool((lsmask >> (fold % lscount)) & 1)


def lsdrop_keep(
    ip_packet: bytes,
    af: int,
    lsmask: int,
    lscount: int,
    broadcasts: Set[bytes] = frozenset(),
) -> bool:
    """carp_lsdrop with its call sites (§6.5, S9): True keeps the packet on this host.

    `ip_packet` starts at the IP header; `af` is 4 or 6. Multicast and broadcast destinations
    are always kept (step 3); the kernel tests the link-layer flags, here the IP destination
    stands in for them: 224.0.0.0/4, 255.255.255.255 and `broadcasts` (4-byte subnet
    broadcasts, which only the caller knows), ff00::/8. A packet too short for the fields a
    rule needs is dropped, as the kernel's input path drops it.
    """
    if af == 4:
        return _keep4(ip_packet, lsmask, lscount, broadcasts)
    if af == 6:
        return _keep6(ip_packet, lsmask, lscount)
    return False


def _keep4(p: bytes, lsmask: int, lscount: int, broadcasts: Set[bytes]) -> bool:
    if len(p) < 20 or p[0] >> 4 != 4:
        return False
    dst = p[16:20]
    # step 3: broadcast/multicast never dropped
    if dst[0] & 0xF0 == 0xE0 or dst == _BCAST4 or dst in broadcasts:
        return True
    if p[9] != _IPPROTO_ICMP:
        # ip_input_if: drop = 1 for everything but ICMP, on (src, dst)
        return _lsdrop_index_keep(ip_fold(p[12:16], dst), lsmask, lscount)
    # ip_input_if passes ICMP with drop = 0; icmp_input_if decides after reassembly, so a
    # non-first fragment passes and the first fragment (which holds the type) decides.
    if (p[6] & 0x1F) | p[7]:
        return True
    hl = (p[0] & 0x0F) * 4
    if hl < 20 or len(p) < hl + 1:
        return False
    icmp_type = p[hl]
    if icmp_type in _ICMP_ERRORS:
        # icmp_input_if: (inner original destination, outer destination); short ones dropped
        if len(p) < hl + _ICMP_ADVLENMIN or (p[hl + 8] & 0x0F) < 5:
            return False
        inner_dst = p[hl + 24 : hl + 28]
        return _lsdrop_index_keep(ip_fold(inner_dst, dst), lsmask, lscount)
    if icmp_type in _ICMP_REFLECT:
        return _lsdrop_index_keep(ip_fold(p[12:16], dst), lsmask, lscount)
    return True  # other ICMP types are never filtered


def _keep6(p: bytes, lsmask: int, lscount: int) -> bool:
    if len(p) < 40 or p[0] >> 4 != 6:
        return False
    dst = p[24:40]
    if dst[0] == 0xFF:  # step 3: multicast never dropped (NDP, MLD, adverts)
        return True
    # ip6_input_if looks at the first next header only: drop = 0 for ICMPv6, else 1
    if p[6] != _IPPROTO_ICMPV6:
        return _lsdrop_index_keep(ip_fold(p[8:24], dst), lsmask, lscount)
    if len(p) < 41:
        return False
    if p[40] == _ICMP6_ECHO_REQUEST:  # icmp6_input: only Echo Request, on (src, dst)
        return _lsdrop_index_keep(ip_fold(p[8:24], dst), lsmask, lscount)
    return True  # NS, NA, RS, RA, MLD, errors: never filtered, so NDP works on every node


def _mix(a: int, b: int, c: int) -> int:
    # Bob Jenkins' lookup2 mix (bridge_hash / carp_hash), unsigned 32-bit; returns c
    a = (a - b - c) & _M32
    a ^= c >> 13
    b = (b - c - a) & _M32
    b ^= (a << 8) & _M32
    c = (c - a - b) & _M32
    c ^= b >> 13
    a = (a - b - c) & _M32
    a ^= c >> 12
    b = (b - c - a) & _M32
    b ^= (a << 16) & _M32
    c = (c - a - b) & _M32
    c ^= b >> 5
    a = (a - b - c) & _M32
    a ^= c >> 3
    b = (b - c - a) & _M32
    b ^= (a << 10) & _M32
    c = (c - a - b) & _M32
    c ^= b >> 15
    return c


def arp_hash(inner: tuple[int, int], key: bytes, sha: bytes) -> int:
    """carp_hash of ip_carp.c rev 1.263-1.270 (§6.8): lookup2 over the sender hardware address.

    `inner` is (hk0, hk1) from auth.inner_words(key); `key` the 20-byte carp key (its first 4
    bytes enter `c`); `sha` the 6-byte ARP sender hardware address (or NDP source link-layer
    option). The kernel adds the bytes little-endian-wise, which the from_bytes calls mirror.
    """
    hk0, hk1 = inner
    a = (_GOLDEN + int.from_bytes(sha[0:4], "little")) & _M32
    b = (hk0 + int.from_bytes(sha[4:6], "little")) & _M32
    c = (hk1 + int.from_bytes(key[0:4].ljust(4, b"\x00"), "little")) & _M32
    return _mix(a, b, c)


def arp_choice(lsmask: int, lscount: int, hash_: int) -> tuple[bool, int]:
    """carp_iamatch in `arp` mode (§6.8): (answer, index) with index = hash % lscount.

    Answer iff this host is MASTER of the carpnode at that sorted index (bit set in lsmask);
    with no carpnodes nothing is answered.
    """
    if lscount <= 0:
        return False, 0
    index = hash_ % lscount
    return bool((lsmask >> index) & 1), index
