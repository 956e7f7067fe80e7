"""Frames with a virtio-net header as plain Ethernet frames, for ports that carry no header.

A switch with offload (dataplane.py) hands every port frames in its wire format: a virtio-net
header, then a frame that may be a 64 KiB TCP segment (GSO) or carry a partial checksum. TAPs and
AF_PACKET sockets take that as it is; a socket port (stream, vde, vxlan: the peer is QEMU, a vde
client or another host) cannot. For those this module does in software what the kernel's GSO
would: complete the checksum, or cut a TCP (or UDP_L4) GSO frame into `gso_size` segments with
their own IP lengths, IPv4 IDs, TCP sequence numbers and flags, and checksums. Segmenting in
software keeps offload, and its 8-12x for TCP, on the TAP and raw ports of such a switch; the
segments cost Python time only on the way to the socket ports (docs/architecture.md).

A frame that cannot be made plain (an unknown GSO type, UFO, offsets outside the frame) raises
ValueError: the caller counts and drops it.
"""

import struct

from carp.checksum import inet_checksum
from vswitch.raw import complete_checksum

VNET = struct.Struct("=BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
NEEDS_CSUM = 0x01
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_UDP = 3  # UFO: IP fragmentation, which a switch cannot redo per port
GSO_TCPV6 = 4
GSO_UDP_L4 = 5
GSO_ECN = 0x80
ETH_P_IPV4 = 0x0800
ETH_P_IPV6 = 0x86DD
VLAN_TAGS = (0x8100, 0x88A8)
TCP_FIN = 0x01
TCP_PSH = 0x08
TCP_CWR = 0x80
IPPROTO_TCP = 6
IPPROTO_UDP = 17


def header(frame: bytes, hdr_len: int) -> tuple[int, int, int, int, int]:
    """(flags, gso_type, gso_size, csum_start, csum_offset) of a frame in wire format."""
    if len(frame) < hdr_len or hdr_len < VNET.size:
        raise ValueError("shorter than its virtio-net header")
    flags, gso_type, _, gso_size, csum_start, csum_offset = VNET.unpack_from(frame)
    return flags, gso_type, gso_size, csum_start, csum_offset


def plain(frame: bytes, hdr_len: int) -> list[bytes]:
    """The plain Ethernet frames that `frame` (with a virtio-net header of `hdr_len` bytes)
    stands for: one, or its segments. ValueError: it cannot be sent without the header."""
    flags, gso_type, gso_size, csum_start, csum_offset = header(frame, hdr_len)
    eth = frame[hdr_len:]
    kind = gso_type & ~GSO_ECN
    if kind == GSO_NONE:
        if flags & NEEDS_CSUM:
            done = complete_checksum(eth, csum_start, csum_offset)
            if done is None:
                raise ValueError("checksum offsets outside the frame")
            return [done]
        return [eth]
    if kind in (GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4) and gso_size > 0:
        return segments(eth, csum_start, gso_size, udp=kind == GSO_UDP_L4)
    raise ValueError(f"GSO type {gso_type} (size {gso_size}) cannot be segmented here")


def _l3(eth: bytes) -> tuple[int, int]:
    """(offset of the IP header, ethertype) past any VLAN tags."""
    offset = 12
    ethertype = int.from_bytes(eth[offset : offset + 2])
    while ethertype in VLAN_TAGS:
        offset += 4
        ethertype = int.from_bytes(eth[offset : offset + 2])
    return offset + 2, ethertype


def _pseudo_sum(src: bytes, dst: bytes, proto: int, length: int, v6: bool) -> int:
    """The folded one's complement sum of the pseudo-header, as CHECKSUM_PARTIAL leaves it in
    the checksum field for whoever completes it (complete_checksum)."""
    tail = struct.pack("!IxxxB", length, proto) if v6 else struct.pack("!BBH", 0, proto, length)
    return ~inet_checksum(src + dst + tail) & 0xFFFF


def segments(eth: bytes, l4: int, size: int, *, udp: bool = False) -> list[bytes]:
    """Cut a GSO frame (TCP, or UDP_L4 with `udp`) whose transport header starts at `l4` into
    frames of at most `size` payload bytes, each with its own headers and checksums."""
    l3, ethertype = _l3(eth)
    v6 = ethertype == ETH_P_IPV6
    if ethertype not in (ETH_P_IPV4, ETH_P_IPV6) or len(eth) < l3 + (40 if v6 else 20):
        raise ValueError(f"GSO frame of ethertype {ethertype:#06x}")
    ihl = 40 if v6 else (eth[l3] & 0x0F) * 4
    if not l3 + ihl <= l4 <= len(eth) - (8 if udp else 20):
        raise ValueError("transport header outside the frame")
    thl = 8 if udp else (eth[l4 + 12] >> 4) * 4
    if thl < 8 or l4 + thl > len(eth):
        raise ValueError("transport header outside the frame")
    if v6:
        src, dst = eth[l3 + 8 : l3 + 24], eth[l3 + 24 : l3 + 40]
    else:
        src, dst = eth[l3 + 12 : l3 + 16], eth[l3 + 16 : l3 + 20]
    proto = IPPROTO_UDP if udp else IPPROTO_TCP
    check_at = 6 if udp else 16
    head = eth[: l4 + thl]
    payload = eth[l4 + thl :]
    seq = 0 if udp else int.from_bytes(eth[l4 + 4 : l4 + 8])
    tcp_flags = 0 if udp else eth[l4 + 13]
    ident = 0 if v6 else int.from_bytes(eth[l3 + 4 : l3 + 6])
    count = max(1, -(-len(payload) // size))
    out: list[bytes] = []
    for i in range(count):
        chunk = payload[i * size : (i + 1) * size]
        seg = bytearray(head)
        seg += chunk
        l4_len = thl + len(chunk)
        if udp:
            struct.pack_into("!H", seg, l4 + 4, l4_len)
        else:
            struct.pack_into("!I", seg, l4 + 4, (seq + i * size) & 0xFFFFFFFF)
            flags = tcp_flags
            if i < count - 1:
                flags &= ~(TCP_FIN | TCP_PSH)  # only the last segment ends or pushes
            if i > 0:
                flags &= ~TCP_CWR  # only the first carries the congestion window reduction
            seg[l4 + 13] = flags
        if v6:
            struct.pack_into("!H", seg, l3 + 4, l4 - l3 - 40 + l4_len)
        else:
            struct.pack_into("!HH", seg, l3 + 2, l4 - l3 + l4_len, (ident + i) & 0xFFFF)
            struct.pack_into("!H", seg, l3 + 10, 0)
            struct.pack_into("!H", seg, l3 + 10, inet_checksum(bytes(seg[l3 : l3 + ihl])))
        struct.pack_into("!H", seg, l4 + check_at, _pseudo_sum(src, dst, proto, l4_len, v6))
        done = complete_checksum(bytes(seg), l4, check_at)
        assert done is not None  # the offsets were checked above
        out.append(done)
    return out
