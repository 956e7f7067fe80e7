"""CARP on the wire: the 36-byte header, IPv4/IPv6/Ethernet builders, receive validation (§1).

Everything here is pure. `parse_ip` runs the IP-level checks of §1.6 in the kernel's order and
never raises; the common part (vhid, version, HMAC) needs the receiver's configuration, so the
caller runs it, in the order fixed by `check_common`.
"""

import struct
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Address, IPv6Address

from carp.checksum import inet_checksum
from carp.constants import (
    CARP_ADVERTISEMENT,
    CARP_AUTHLEN,
    CARP_DFLTTL,
    CARP_HEADER_LEN,
    CARP_VERSION,
    IN6ADDR_CARP_GROUP,
    IPPROTO_CARP,
)

# version/type, vhid, advskew, authlen, demote, advbase, cksum, counter, md (struct carp_header)
_HEADER = struct.Struct("!BBBBBBH8s20s")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")

IPV4_HEADER_LEN = 20
IPV6_HEADER_LEN = 40
IPTOS_LOWDELAY = 0x10
IP_DF = 0x4000
CARP6_GROUP = IPv6Address(IN6ADDR_CARP_GROUP)

# IPv6 extension headers walked to find protocol 112: hop-by-hop, routing, destination options.
# All three share the layout (next header, length in 8-octet units not counting the first 8).
IPV6_WALKED_EXTENSIONS = frozenset({0, 43, 60})


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
    """What carp(4) does with a received packet: accept, or the carpstats counter it bumps."""

    ACCEPT = "accept"
    BADTTL = "badttl"
    BADLEN = "badlen"
    BADSUM = "badsum"
    BADVER = "badver"
    BADAUTH = "badauth"
    BADVHID = "badvhid"
    BADIF = "badif"
    HDROPS = "hdrops"


@dataclass(frozen=True, slots=True)
class Parsed:
    """The result of the IP-level checks (§1.6, IPv4 steps 5-7, IPv6 steps 4-6).

    `carp` is False when the packet does not carry protocol 112 (or is not IPv4/IPv6 at all, or
    its IPv6 extension headers are truncated); the verdict is then HDROPS and the kernel would
    never have handed it to carp, so a caller must not count it in carpstats.
    `header` is decoded whenever 36 bytes are present, even for a rejected packet (so a decoder
    can show the fields); a host acts on it only when `verdict` is ACCEPT.
    `ismulti` is IN_MULTICAST(dst) for IPv4 and always True for IPv6, as carp6_proto_input_if
    calls carp_proto_input_c(ismulti=1) (it only matters for IPv4 carppeer matching).
    """

    verdict: Verdict
    af: int  # 4 or 6; 0 when the version nibble is neither
    src: IPv4Address | IPv6Address | None
    dst: IPv4Address | IPv6Address | None
    ttl: int
    ismulti: bool
    header: CarpHeader | None
    carp: bool = True
    cksum_ok: bool = False
    offset: int = 0  # where the CARP header starts in the packet


def _not_carp(af: int, src: IPv4Address | IPv6Address | None = None) -> Parsed:
    return Parsed(Verdict.HDROPS, af, src, None, 0, False, None, carp=False)


def _finish(
    af: int,
    src: IPv4Address | IPv6Address,
    dst: IPv4Address | IPv6Address,
    ttl: int,
    ismulti: bool,
    packet: bytes,
    offset: int,
    end: int,
) -> Parsed:
    """The checks shared by both families once the CARP header offset is known, in §1.6 order."""
    raw = packet[offset : offset + CARP_HEADER_LEN] if offset + CARP_HEADER_LEN <= end else b""
    header = CarpHeader.unpack(raw) if raw else None
    cksum_ok = bool(raw) and inet_checksum(raw) == 0
    if ttl != CARP_DFLTTL:  # §1.6 IPv4 step 5 / IPv6 step 4: also for unicast peers
        verdict = Verdict.BADTTL
    elif header is None:  # §1.6 IPv4 step 6 / IPv6 step 5: IP header + 36 > length
        verdict = Verdict.BADLEN
    elif not cksum_ok:  # §1.6 IPv4 step 7 / IPv6 step 6: in_cksum over the 36 bytes must be 0
        verdict = Verdict.BADSUM
    else:
        verdict = Verdict.ACCEPT
    return Parsed(verdict, af, src, dst, ttl, ismulti, header, True, cksum_ok, offset)


def _parse_ipv4(packet: bytes) -> Parsed:
    if len(packet) < IPV4_HEADER_LEN:
        # a cut header is hdrops only when it still shows protocol 112
        if len(packet) > 9 and packet[9] == IPPROTO_CARP:
            return Parsed(Verdict.HDROPS, 4, None, None, 0, False, None)
        return _not_carp(4)
    first, _tos, total, _id, _frag, ttl, proto, _sum, src_b, dst_b = _IPV4.unpack_from(packet)
    src, dst = IPv4Address(src_b), IPv4Address(dst_b)
    hlen = (first & 0x0F) * 4
    if proto != IPPROTO_CARP:
        return _not_carp(4, src)
    ismulti = dst.is_multicast
    # ip_input drops a header it cannot pull up (bad IHL, ip_len below it): hdrops for carp
    if hlen < IPV4_HEADER_LEN or hlen > len(packet) or total < hlen:
        return Parsed(Verdict.HDROPS, 4, src, dst, ttl, ismulti, None)
    # ip_input trims the packet to ip_len (Ethernet padding); a short packet is then too short
    end = min(total, len(packet))
    return _finish(4, src, dst, ttl, ismulti, packet, hlen, end)


def _parse_ipv6(packet: bytes) -> Parsed:
    if len(packet) < IPV6_HEADER_LEN:
        if len(packet) > 6 and packet[6] == IPPROTO_CARP:
            return Parsed(Verdict.HDROPS, 6, None, None, 0, True, None)
        return _not_carp(6)
    _vtf, plen, nxt, hlim, src_b, dst_b = _IPV6.unpack_from(packet)
    src, dst = IPv6Address(src_b), IPv6Address(dst_b)
    end = min(IPV6_HEADER_LEN + plen, len(packet))
    offset = IPV6_HEADER_LEN
    while nxt in IPV6_WALKED_EXTENSIONS:
        if offset + 2 > end:
            return _not_carp(6, src)
        nxt, ext_len = packet[offset], (packet[offset + 1] + 1) * 8
        offset += ext_len
    if nxt != IPPROTO_CARP or offset > end:
        return _not_carp(6, src)
    return _finish(6, src, dst, hlim, True, packet, offset, end)


def parse_ip(packet: bytes) -> Parsed:
    """Run the IP-level receive checks of §1.6 on an IPv4 or IPv6 packet; never raises.

    Order (carp_proto_input_if / carp6_proto_input_if): hdrops when the IPv4 header cannot be
    pulled up (truncated, bad IHL) or an IPv6 header is shorter than 40 bytes; badttl when the
    TTL / hop limit is not 255; badlen when fewer than 36 bytes follow the IP header(s) within
    the IP length; badsum when in_cksum over the 36 bytes is not 0; then the header is unpacked.
    """
    if not packet:
        return _not_carp(0)
    version = packet[0] >> 4
    if version == 4:
        return _parse_ipv4(packet)
    if version == 6:
        return _parse_ipv6(packet)
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
