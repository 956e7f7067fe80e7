"""CARP on the wire: the 36-byte header, IPv4/IPv6/Ethernet builders, receive validation (§1).

Everything here is pure. `parse_ip` first runs the checks by which OpenBSD's ip_input/ip6_input
drop a packet before carp(4) sees it (`IpDrop`), then the IP-level checks of §1.6, in the
kernel's order, and never raises; the common part (vhid, version, HMAC) needs the receiver's
configuration, so the caller runs it, in the order fixed by `check_common`.
"""

import functools
import struct
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from ipaddress import IPv4Address, IPv6Address

from carp.checksum import inet_checksum
from carp.constants import (
    CARP_ADVERTISEMENT,
    CARP_AUTHLEN,
    CARP_DFLTTL,
    CARP_HEADER_LEN,
    CARP_VERSION,
    ETH_P_IP,
    ETH_P_IPV6,
    IN6ADDR_CARP_GROUP,
    INADDR_CARP_GROUP,
    IPPROTO_CARP,
)

# version/type, vhid, advskew, authlen, demote, advbase, cksum, counter, md (struct carp_header)
_HEADER = struct.Struct("!BBBBBBH8s20s")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")

IPAddress = IPv4Address | IPv6Address

IPV4_HEADER_LEN = 20
IPV6_HEADER_LEN = 40
IPTOS_LOWDELAY = 0x10
IP_DF = 0x4000
IP_MF = 0x2000
IP_OFFMASK = 0x1FFF
INADDR_BROADCAST = IPv4Address("255.255.255.255")
CARP_GROUP = IPv4Address(INADDR_CARP_GROUP)
CARP6_GROUP = IPv6Address(IN6ADDR_CARP_GROUP)
CARP_GROUPS: frozenset[IPAddress] = frozenset({CARP_GROUP, CARP6_GROUP})

# IPv6 extension headers walked to find protocol 112. Hop-by-hop, routing and destination
# options share one layout (next header, length in 8-octet units not counting the first 8); a
# fragment header is 8 bytes.
IPPROTO_HOPOPTS = 0
IPPROTO_ROUTING = 43
IPPROTO_FRAGMENT = 44
IPPROTO_DSTOPTS = 60
IPV6_EXTENSIONS = frozenset({IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_FRAGMENT, IPPROTO_DSTOPTS})
IPV6_FRAG_LEN = 8
IPV6_RTHDR_TYPE_0 = 0
IPV6_HDRNESTLIMIT = 10  # ip6_hdrnestlimit's default (in6_proto.c), counted by ip_deliver
IP6F_OFF_MASK = 0xFFF8
IP6OPT_PAD1 = 0
IP6OPT_PADN = 1
IP6OPT_ROUTER_ALERT = 5
IP6OPT_RTALERT_LEN = 4
ETHER_HDR_LEN = 14
_ETH_IPV4 = ETH_P_IP.to_bytes(2, "big")
_ETH_IPV6 = ETH_P_IPV6.to_bytes(2, "big")
_CARP = bytes((IPPROTO_CARP,))


@dataclass(frozen=True, slots=True)
class CarpHeader:
    """struct carp_header (§1.2). `counter` and `md` are raw bytes, copied as on the wire."""

    vhid: int
    advskew: int
    advbase: int
    demote: int
    counter: bytes
    md: bytes
    version: int = CARP_VERSION
    type: int = CARP_ADVERTISEMENT
    authlen: int = CARP_AUTHLEN
    cksum: int = 0

    def pack(self) -> bytes:
        """The 36 header bytes with the checksum computed over them (§1.5, carp_cksum)."""
        if len(self.counter) != 8 or len(self.md) != 20:
            raise ValueError("counter must be 8 bytes and md 20 bytes")
        # version is the high nibble of byte 0 on the wire whatever the host byte order (ip_carp.h)
        first = ((self.version & 0x0F) << 4) | (self.type & 0x0F)
        fields = (first, self.vhid, self.advskew, self.authlen, self.demote, self.advbase)
        raw = _HEADER.pack(*fields, 0, self.counter, self.md)
        cksum = inet_checksum(raw)
        return raw[:6] + cksum.to_bytes(2, "big") + raw[8:]

    @classmethod
    def unpack(cls, data: bytes) -> "CarpHeader":
        """Decode exactly 36 bytes; no field is checked (the checksum is kept as received)."""
        first, vhid, advskew, authlen, demote, advbase, cksum, counter, md = _HEADER.unpack(data)
        return cls(
            vhid=vhid,
            advskew=advskew,
            advbase=advbase,
            demote=demote,
            counter=counter,
            md=md,
            version=first >> 4,
            type=first & 0x0F,
            authlen=authlen,
            cksum=cksum,
        )


def build_ipv4(src: IPv4Address, dst: IPv4Address, header: bytes, ident: int) -> bytes:
    """An IPv4 advertisement as carp_send_ad builds it (§1.3): IHL 5, TOS 0x10, DF, TTL 255."""
    total = IPV4_HEADER_LEN + len(header)
    fields = (0x45, IPTOS_LOWDELAY, total, ident & 0xFFFF, IP_DF, CARP_DFLTTL, IPPROTO_CARP)
    ip = _IPV4.pack(*fields, 0, src.packed, dst.packed)
    return ip[:10] + inet_checksum(ip).to_bytes(2, "big") + ip[12:] + header


def build_ipv6(src: IPv6Address, header: bytes) -> bytes:
    """An IPv6 advertisement (§1.4): to ff02::12, traffic class and flow label 0, hop limit 255."""
    dst = CARP6_GROUP.packed
    return _IPV6.pack(6 << 28, len(header), IPPROTO_CARP, CARP_DFLTTL, src.packed, dst) + header


def build_frame(dst_mac: bytes, src_mac: bytes, ethertype: int, payload: bytes) -> bytes:
    """An Ethernet II frame (no FCS, no padding: advertisements are longer than 60 bytes)."""
    return dst_mac + src_mac + ethertype.to_bytes(2, "big") + payload


def mac_for_ip_dst(dst: IPv4Address | IPv6Address) -> bytes | None:
    """The Ethernet group address of a multicast destination; None for unicast (resolve it).

    IPv4: 01:00:5e + the low 23 bits of the group (RFC 1112). IPv6: 33:33 + the low 32 bits
    (RFC 2464). So 224.0.0.18 gives 01:00:5e:00:00:12 and ff02::12 gives 33:33:00:00:00:12.
    """
    if not dst.is_multicast:
        return None
    if isinstance(dst, IPv4Address):
        return b"\x01\x00\x5e" + (int(dst) & 0x7FFFFF).to_bytes(3, "big")
    return b"\x33\x33" + dst.packed[12:]


class Verdict(StrEnum):
    """What carp(4) does with a received packet: accept, or the carpstats counter it bumps.

    IPDROP is the exception: ip_input/ip6_input drop the packet before carp(4) sees it, for the
    reason in `Parsed.ip_drop`; it is counted in `CarpStats.ip_drops`, not in carpstats.
    """

    ACCEPT = "accept"
    BADTTL = "badttl"
    BADLEN = "badlen"
    BADSUM = "badsum"
    BADVER = "badver"
    BADAUTH = "badauth"
    BADVHID = "badvhid"
    BADIF = "badif"
    HDROPS = "hdrops"  # an m_pullup failure (none here); also the verdict of a non-CARP packet
    IPDROP = "ipdrop"


class IpDrop(StrEnum):
    """Why the IP layer drops a protocol-112 packet before carp(4): the OpenBSD check it mirrors.

    The values are the counter names of `carp.stats.IpDropStats`.
    """

    TOOSMALL = "toosmall"  # ips_toosmall / ip6s_toosmall: shorter than the fixed IP header
    BADHLEN = "badhlen"  # ips_badhlen: IHL below 5 or beyond the data
    BADSRC = "badsrc"  # a source no host may send from (see ipv4_source_ok / ipv6_source_ok)
    BADSUM = "badsum"  # ips_badsum: the IPv4 header checksum
    BADLEN = "badlen"  # ips_badlen: IPv4 total length below the header length
    TOOSHORT = "tooshort"  # ips_tooshort / ip6s_tooshort: total/payload length beyond the data
    NOTOURS = "notours"  # ips_notmember / ips_cantforward: neither a joined group nor ours
    BADOPTIONS = "badoptions"  # ip6s_badoptions: an option or routing header ip6_input refuses
    TOOMANYHDR = "toomanyhdr"  # ip6s_toomanyhdr: more headers than ip6_hdrnestlimit
    FRAGMENT = "fragment"  # IPv4 MF or offset, an IPv6 fragment header: never reassembled here


@dataclass(frozen=True, slots=True)
class Receiver:
    """The destinations the receiving carpdev's IP layer takes as its own (ip_input's
    in_ouraddr / in_hasmulti): its unicast addresses and the multicast groups joined on it (the
    CARP groups and any multicast carppeer, carp_join_multicast)."""

    local: frozenset[IPAddress] = frozenset()
    groups: frozenset[IPAddress] = CARP_GROUPS

    def ours(self, dst: IPAddress) -> bool:
        return dst in (self.groups if dst.is_multicast else self.local)


def receiver_of(addresses: Iterable[IPAddress]) -> Receiver:
    """The Receiver of a carpdev from its addresses: the unicast ones are its own, the multicast
    ones groups joined on it (a multicast carppeer); the CARP groups always count."""
    found = frozenset(addresses)
    groups = frozenset(a for a in found if a.is_multicast)
    return Receiver(found - groups, CARP_GROUPS | groups)


@dataclass(frozen=True, slots=True)
class Parsed:
    """The result of the IP-layer checks and of §1.6 IPv4 steps 5-7 / IPv6 steps 4-6.

    `carp` is False when the packet does not carry protocol 112 (or is not IPv4/IPv6 at all, or
    its IPv6 extension headers end before the upper protocol); the verdict is then HDROPS and
    the kernel would never have handed it to carp, so a caller must not count it anywhere.
    `ip_drop` is set (verdict IPDROP) when it shows protocol 112 but ip_input/ip6_input would
    drop it first: count it in `CarpStats.ip_drops`, not in carpstats.
    `header` is decoded whenever 36 bytes are present, even for a rejected packet (so a decoder
    can show the fields), except in a non-first fragment; a host acts on it only when `verdict`
    is ACCEPT.
    `ismulti` is IN_MULTICAST(dst) for IPv4 and always True for IPv6, as carp6_proto_input_if
    calls carp_proto_input_c(ismulti=1) (it only matters for IPv4 carppeer matching).
    """

    verdict: Verdict
    af: int  # 4 or 6; 0 when the version nibble is neither
    src: IPAddress | None
    dst: IPAddress | None
    ttl: int
    ismulti: bool
    header: CarpHeader | None
    carp: bool = True
    cksum_ok: bool = False
    offset: int = 0  # where the CARP header starts in the packet
    ip_drop: IpDrop | None = None


def _not_carp(af: int, src: IPAddress | None = None) -> Parsed:
    return Parsed(Verdict.HDROPS, af, src, None, 0, False, None, carp=False)


def _too_small(af: int) -> Parsed:
    return Parsed(Verdict.IPDROP, af, None, None, 0, af == 6, None, ip_drop=IpDrop.TOOSMALL)


# -- the IP-layer rules, each naming the OpenBSD check it mirrors


# The same few peers advertise many times a second: an address and the verdicts on it are
# computed once per address (pure functions, bounded caches), not per advertisement.
_ADDRESS_CACHE = 1024


@functools.lru_cache(maxsize=_ADDRESS_CACHE)
def _v4(raw: bytes) -> IPv4Address:
    return IPv4Address(raw)


@functools.lru_cache(maxsize=_ADDRESS_CACHE)
def _v6(raw: bytes) -> IPv6Address:
    return IPv6Address(raw)


@functools.lru_cache(maxsize=_ADDRESS_CACHE)
def address_text(addr: IPv4Address | IPv6Address) -> str:
    """str(addr), remembered: an advertisement's source names its peer in the core's records."""
    return str(addr)


@functools.lru_cache(maxsize=_ADDRESS_CACHE)
def ipv4_source_ok(src: IPv4Address) -> bool:
    """RFC 1122 3.2.1.3: a host discards a multicast, broadcast or unspecified source. OpenBSD's
    ipv4_check itself only refuses 127/8 off a loopback interface (ips_badaddr); we refuse both,
    as no carp(4) sender uses such a source (carp_send_ad takes a configured address)."""
    return not (
        src.is_multicast or src.is_loopback or src.is_unspecified or src == INADDR_BROADCAST
    )


@functools.lru_cache(maxsize=_ADDRESS_CACHE)
def ipv6_source_ok(src: IPv6Address) -> bool:
    """ipv6_check (ip6s_badscope): no multicast, loopback, IPv4-mapped or IPv4-compatible source
    and no scope id embedded in a link-local one. The unspecified address passes, as there."""
    value = int(src)
    v4_compatible = value >> 32 == 0 and value > 1  # IN6_IS_ADDR_V4COMPAT
    scoped = src.is_link_local and src.packed[2:4] != b"\0\0"  # IN6_IS_SCOPE_EMBED
    return not (src.is_multicast or src.is_loopback or src.ipv4_mapped or v4_compatible or scoped)


def ipv4_drop(
    packet: bytes, receiver: Receiver | None, src: IPv4Address, dst: IPv4Address
) -> IpDrop | None:
    """ipv4_check, ip_input_if and ip_fragcheck in their order; None: carp_proto_input gets it.

    Trailing bytes beyond the total length (Ethernet padding) are normal: ip_input trims them.
    The destination is not judged without a `receiver`.
    """
    hlen = (packet[0] & 0x0F) * 4
    total = int.from_bytes(packet[2:4], "big")
    if hlen < IPV4_HEADER_LEN or hlen > len(packet):
        return IpDrop.BADHLEN
    if not ipv4_source_ok(src):
        return IpDrop.BADSRC
    if inet_checksum(packet[:hlen]) != 0:
        return IpDrop.BADSUM
    if total < hlen:
        return IpDrop.BADLEN
    if total > len(packet):
        return IpDrop.TOOSHORT
    if receiver is not None and not receiver.ours(dst):
        return IpDrop.NOTOURS
    if int.from_bytes(packet[6:8], "big") & (IP_MF | IP_OFFMASK):
        return IpDrop.FRAGMENT  # ip_fragcheck would queue it for reassembly: carp never does
    return None


def ipv6_options_ok(options: bytes, hop_by_hop: bool) -> bool:
    """The options of a hop-by-hop (ip6_process_hopopts) or destination options (dest6_input)
    header: each must fit; Pad1 and PadN pass; a hop-by-hop router alert must be 4 bytes; any
    other option passes only when its two high bits say "skip" (ip6_unknown_opt). That refuses a
    jumbo payload too, which a frame never carries (its payload length would have to be 0)."""
    at = 0
    while at < len(options):
        kind = options[at]
        if kind == IP6OPT_PAD1:
            at += 1
            continue
        if at + 2 > len(options) or at + 2 + options[at + 1] > len(options):
            return False  # ip6s_toosmall
        size = 2 + options[at + 1]
        if hop_by_hop and kind == IP6OPT_ROUTER_ALERT:
            if size != IP6OPT_RTALERT_LEN:
                return False
        elif kind != IP6OPT_PADN and kind >> 6:
            return False
        at += size
    return True


def ipv6_extension_drop(kind: int, header: bytes, first: bool, routing: int) -> IpDrop | None:
    """One extension header as ip6_input handles it; `routing` counts earlier routing headers.

    Hop-by-hop only right after the IPv6 header (RFC 8200 4.1: ip6_hbhchcheck looks there
    only, and no later handler takes it). Routing: a second one or type 0 (ip6_check_rh0hdr),
    or segments left (route6_input would forward it). A fragment header: never reassembled here.
    """
    if kind == IPPROTO_FRAGMENT:
        return IpDrop.FRAGMENT
    if kind == IPPROTO_ROUTING:
        bad = routing > 0 or header[2] == IPV6_RTHDR_TYPE_0 or header[3] != 0
        return IpDrop.BADOPTIONS if bad else None
    if kind == IPPROTO_HOPOPTS and not first:
        return IpDrop.BADOPTIONS
    return None if ipv6_options_ok(header[2:], kind == IPPROTO_HOPOPTS) else IpDrop.BADOPTIONS


def _extension_len(packet: bytes, at: int, kind: int) -> int:
    # hop-by-hop, routing and destination options: (length + 1) * 8; a fragment header: 8
    return IPV6_FRAG_LEN if kind == IPPROTO_FRAGMENT else (packet[at + 1] + 1) * 8


def ipv6_upper_protocol(packet: bytes, at: int, nxt: int, end: int) -> int | None:
    """The protocol behind the IPv6 extension headers starting at `at` (a fragment header's
    next header), None when the chain ends before `end` does. Only the chain is followed, no
    header is judged; each header is at least 8 bytes, so `end` bounds the walk."""
    while nxt in IPV6_EXTENSIONS:
        if at + 8 > end:
            return None
        size = _extension_len(packet, at, nxt)
        if at + size > end:
            return None
        if nxt == IPPROTO_FRAGMENT:
            return packet[at]
        nxt = packet[at]
        at += size
    return nxt


def frame_is_carp(frame: bytes, offset: int = 0) -> bool:
    """Does the Ethernet frame at `offset` (after a virtio-net header, if any) carry IP protocol
    112? IPv4 with protocol 112; IPv6 with next header 112, or behind extension headers whose
    chain leads to it (as `parse_ip` finds it). The cheap test before the full checks of
    `parse_ip`: the data path hands such a frame to the host, `partition carp` drops it. A frame
    it takes may still be refused by parse_ip (e.g. an IPv6 version nibble that is not 6)."""
    ip = offset + ETHER_HDR_LEN
    ethertype = frame[offset + 12 : ip]
    if ethertype == _ETH_IPV4:
        return frame[ip + 9 : ip + 10] == _CARP and frame[ip] >> 4 == 4
    if ethertype != _ETH_IPV6:
        return False
    nxt = frame[ip + 6 : ip + 7]
    if nxt == _CARP:
        return True
    if not nxt or nxt[0] not in IPV6_EXTENSIONS:
        return False
    if len(frame) < ip + IPV6_HEADER_LEN or frame[ip] >> 4 != 6:
        return False  # parse_ip would not look behind this header
    end = min(ip + IPV6_HEADER_LEN + int.from_bytes(frame[ip + 4 : ip + 6], "big"), len(frame))
    return ipv6_upper_protocol(frame, ip + IPV6_HEADER_LEN, nxt[0], end) == IPPROTO_CARP


@dataclass(frozen=True, slots=True)
class _Chain:
    proto: int | None  # the upper protocol; None: the chain ends before it
    offset: int
    drop: IpDrop | None = None
    first_fragment: bool = True


def _ipv6_chain(packet: bytes, nxt: int, end: int) -> _Chain:
    """Walk the extension headers to the upper protocol (or a fragment header's next header),
    keeping the first drop in chain order. Each header is at least 8 bytes, so `end` bounds it."""
    offset, nested, routing = IPV6_HEADER_LEN, 0, 0
    drop: IpDrop | None = None
    while nxt in IPV6_EXTENSIONS:
        if offset + 8 > end:
            return _Chain(None, offset)
        size = _extension_len(packet, offset, nxt)
        if offset + size > end:
            return _Chain(None, offset)
        if nxt != IPPROTO_HOPOPTS:  # hop-by-hop is handled before ip_deliver's nest count
            nested += 1
            if nested > IPV6_HDRNESTLIMIT:
                drop = drop or IpDrop.TOOMANYHDR
        header = packet[offset : offset + size]
        drop = drop or ipv6_extension_drop(nxt, header, offset == IPV6_HEADER_LEN, routing)
        if nxt == IPPROTO_ROUTING:
            routing += 1
        offset += size
        if nxt == IPPROTO_FRAGMENT:
            first = int.from_bytes(header[2:4], "big") & IP6F_OFF_MASK == 0
            return _Chain(header[0], offset, drop, first)
        nxt = header[0]
    if nested + 1 > IPV6_HDRNESTLIMIT:  # the dispatch to carp counts too
        drop = drop or IpDrop.TOOMANYHDR
    return _Chain(nxt, offset, drop)


def ipv6_drop(
    packet: bytes,
    receiver: Receiver | None,
    src: IPv6Address,
    dst: IPv6Address,
    chain_drop: IpDrop | None,
) -> IpDrop | None:
    """ipv6_check, ip6_input_if, ip6_hbhchcheck, then the extension header chain's first drop
    (`chain_drop`, RH0 scan included); None: carp6_proto_input gets it. The destination is not
    judged without a `receiver`."""
    if not ipv6_source_ok(src):
        return IpDrop.BADSRC
    if receiver is not None and not receiver.ours(dst):
        return IpDrop.NOTOURS
    if IPV6_HEADER_LEN + int.from_bytes(packet[4:6], "big") > len(packet):
        return IpDrop.TOOSHORT
    return chain_drop


# -- the parsers


def _finish(
    af: int,
    src: IPAddress,
    dst: IPAddress,
    ttl: int,
    ismulti: bool,
    packet: bytes,
    offset: int,
    end: int,
    drop: IpDrop | None,
) -> Parsed:
    """The checks shared by both families once the CARP header offset is known, in §1.6 order."""
    raw = packet[offset : offset + CARP_HEADER_LEN] if offset + CARP_HEADER_LEN <= end else b""
    header = CarpHeader.unpack(raw) if raw else None
    cksum_ok = bool(raw) and inet_checksum(raw) == 0
    if drop is not None:  # the IP layer drops it first
        verdict = Verdict.IPDROP
    elif ttl != CARP_DFLTTL:  # §1.6 IPv4 step 5 / IPv6 step 4: also for unicast peers
        verdict = Verdict.BADTTL
    elif header is None:  # §1.6 IPv4 step 6 / IPv6 step 5: IP header + 36 > length
        verdict = Verdict.BADLEN
    elif not cksum_ok:  # §1.6 IPv4 step 7 / IPv6 step 6: in_cksum over the 36 bytes must be 0
        verdict = Verdict.BADSUM
    else:
        verdict = Verdict.ACCEPT
    return Parsed(verdict, af, src, dst, ttl, ismulti, header, True, cksum_ok, offset, drop)


def _parse_ipv4(packet: bytes, receiver: Receiver | None) -> Parsed:
    if len(packet) < IPV4_HEADER_LEN:
        # a cut header counts only when it still shows protocol 112
        if len(packet) > 9 and packet[9] == IPPROTO_CARP:
            return _too_small(4)
        return _not_carp(4)
    first, _tos, total, _id, frag, ttl, proto, _sum, src_b, dst_b = _IPV4.unpack_from(packet)
    src, dst = _v4(src_b), _v4(dst_b)
    if proto != IPPROTO_CARP:
        return _not_carp(4, src)
    hlen = (first & 0x0F) * 4
    drop = ipv4_drop(packet, receiver, src, dst)
    end = min(total, len(packet))  # ip_input trims the packet to ip_len (Ethernet padding)
    parsed = _finish(4, src, dst, ttl, dst.is_multicast, packet, hlen, end, drop)
    if hlen < IPV4_HEADER_LEN or hlen > end or frag & IP_OFFMASK:
        return replace(parsed, header=None, cksum_ok=False)  # no CARP header where it would be
    return parsed


def _parse_ipv6(packet: bytes, receiver: Receiver | None) -> Parsed:
    if len(packet) < IPV6_HEADER_LEN:
        if len(packet) > 6 and packet[6] == IPPROTO_CARP:
            return _too_small(6)
        return _not_carp(6)
    _vtf, plen, nxt, hlim, src_b, dst_b = _IPV6.unpack_from(packet)
    src, dst = _v6(src_b), _v6(dst_b)
    end = min(IPV6_HEADER_LEN + plen, len(packet))
    chain = _ipv6_chain(packet, nxt, end)
    if chain.proto != IPPROTO_CARP:
        return _not_carp(6, src)
    drop = ipv6_drop(packet, receiver, src, dst, chain.drop)
    parsed = _finish(6, src, dst, hlim, True, packet, chain.offset, end, drop)
    return parsed if chain.first_fragment else replace(parsed, header=None, cksum_ok=False)


def parse_ip(packet: bytes, receiver: Receiver | None = None) -> Parsed:
    """Run the IP-layer checks, then those of §1.6, on an IPv4 or IPv6 packet; never raises.

    First what ip_input/ip6_input drop before carp sees the packet (`ipv4_drop`, `ipv6_drop`:
    verdict IPDROP with the reason in `ip_drop`); the destination only against `receiver`, when
    given. Then, in carp_proto_input_if / carp6_proto_input_if order: badttl when the TTL / hop
    limit is not 255; badlen when fewer than 36 bytes follow the IP header(s) within the IP
    length; badsum when in_cksum over the 36 bytes is not 0; then the header is unpacked.
    IPv6 advertisements behind hop-by-hop, routing or destination options headers are found.
    """
    if not packet:
        return _not_carp(0)
    version = packet[0] >> 4
    if version == 4:
        return _parse_ipv4(packet, receiver)
    if version == 6:
        return _parse_ipv6(packet, receiver)
    return _not_carp(0)


def check_common(header: CarpHeader, hmac_ok: bool | None, vhid_found: bool = True) -> Verdict:
    """The common part of §1.6 (carp_proto_input_c) in the kernel's order, for one packet.

    Step 2: no vhe with this vhid on the carpdev, or its carp interface not UP|RUNNING ->
    badvhid (the caller knows; pass `vhid_found`). Step 3: version != 2 -> badver (the type
    nibble is not checked). Step 4: HMAC fails (both contexts, section 2.3) -> badauth.
    `hmac_ok=None` means unchecked (no key/addresses known, as in `vswitch decode` without
    --vip); the verdict is then the best one reachable. Step 5 (own replay cookie seen again)
    needs the vhe's cookie and stays with the caller.
    """
    if not vhid_found:
        return Verdict.BADVHID
    if header.version != CARP_VERSION:
        return Verdict.BADVER
    if hmac_ok is False:
        return Verdict.BADAUTH
    return Verdict.ACCEPT
