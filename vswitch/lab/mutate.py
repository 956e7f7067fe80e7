"""Mutated frames for fuzzing a node's ports (bench/fuzz.py): valid seeds, broken at random.

`corpus` builds valid frames a gateway node takes apart: ARP requests, replies and gratuitous
ARP for the virtual address, IPv4 and IPv6 CARP advertisements with a valid HMAC (the lab's
pass), neighbour solicitations (to the solicited-node group and to the carp MAC) and an echo
request to the carp MAC. `Mutator` draws from them with a seeded `random.Random`: random bytes
behind a seed's Ethernet addresses, truncations, bit flips, byte overwrites with boundary values,
over-long frames and 802.1Q / 802.1ad tags, and gives each frame a virtio-net header that is
mostly zero and otherwise random (flags, GSO type and size, checksum offsets). Same seed, same
frames.

For the socket ports it also wraps frames in VXLAN headers, some broken (`Mutator.vxlan`), and
makes garbage for a vde port's control socket (`Mutator.vde_request`); each comes with the
reason the port must refuse it for, known from how it was made (RFC 7348 5, vde's request_v3).
"""

import random
import socket
import struct
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from carp import l2
from carp.auth import HmacContexts, carp_key
from carp.checksum import inet_checksum
from carp.wire import CarpHeader, build_frame, build_ipv4, build_ipv6
from vswitch.vde import MAGIC, MIN_REQUEST, REQ_NEW_PORT0, REQUEST, SOCKADDR_UN, VERSION

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_ARP = 0x0806
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
CARP4_MAC = bytes.fromhex("01005e000012")
CARP6_MAC = bytes.fromhex("333300000012")
VNET_HDR = struct.Struct("=BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_off
ZERO_HDR = bytes(VNET_HDR.size)
KINDS = ("random", "truncate", "bitflip", "bytes", "overlong", "vlan")
# how often each kind is drawn: over-long frames cost the most to make and carry, bit flips of
# valid seeds reach deepest into the parsers
_DRAW = (
    ("random",) * 2
    + ("truncate",) * 2
    + ("bitflip",) * 3
    + ("bytes",) * 2
    + ("overlong", "vlan", "vlan")
)
BOUNDARY = (0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF)
VXLAN_I = 0x08  # the I flag: the VNI is valid (RFC 7348 5); every other bit is reserved
VXLAN_HLEN = 8
ETH_HLEN = 14
# VXLAN header faults: none, reserved bits set (ignored on receipt), no I flag, another VNI,
# a datagram too short for the header and an Ethernet header
VXLAN_FAULTS = ("none", "reserved", "flags", "vni", "short")
_VXLAN_DRAW = ("none",) * 12 + ("reserved", "reserved", "flags", "vni", "short")
# garbage on a vde port's ctl and the refusal each must get (vswitch/vde.py)
VDE_GARBAGE = ("short_request", "bad_magic", "bad_version", "bad_type", "bad_address", "foreign")


@dataclass(frozen=True)
class Seed:
    name: str
    frame: bytes


def carp_mac(vhid: int) -> bytes:
    """00:00:5e:00:01:VHID, the carp MAC of `balancing none` (carp(4))."""
    return bytes.fromhex("00005e0001") + bytes((vhid,))


def _advert_header(
    vhid: int, advbase: int, advskew: int, hmac: HmacContexts, counter: bytes
) -> bytes:
    return CarpHeader(vhid, advskew, advbase, 0, counter, hmac.generate(counter)).pack()


def _ns(eth_dst: bytes, eth_src: bytes, src: IPv6Address, dst: bytes, target: IPv6Address) -> bytes:
    """A neighbour solicitation for `target` with a source link-layer option (RFC 4861 4.3)."""
    icmp = bytes((135, 0, 0, 0, 0, 0, 0, 0)) + target.packed + bytes((1, 1)) + eth_src
    pseudo = src.packed + dst + struct.pack("!I3xB", len(icmp), 58)
    csum = inet_checksum(pseudo + icmp)
    icmp = icmp[:2] + csum.to_bytes(2, "big") + icmp[4:]
    ip6 = struct.pack("!IHBB", 0x60000000, len(icmp), 58, 255) + src.packed + dst
    return eth_dst + eth_src + ETH_P_IPV6.to_bytes(2, "big") + ip6 + icmp


def _echo(eth_dst: bytes, eth_src: bytes, src: IPv4Address, dst: IPv4Address) -> bytes:
    icmp = bytes((8, 0, 0, 0, 0x12, 0x34, 0, 1)) + bytes(range(32))
    icmp = icmp[:2] + inet_checksum(icmp).to_bytes(2, "big") + icmp[4:]
    total = 20 + len(icmp)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 1, 0, 64, 1, 0, src.packed, dst.packed)
    ip = ip[:10] + inet_checksum(ip).to_bytes(2, "big") + ip[12:]
    return eth_dst + eth_src + ETH_P_IP.to_bytes(2, "big") + ip + icmp


def corpus(
    *,
    vip: IPv4Address,
    vip6: IPv6Address,
    vhid: int,
    passphrase: str,
    peer: IPv4Address,
    peer6: IPv6Address,
    peer_mac: bytes,
    advbase: int = 1,
    advskew: int = 0,
) -> list[Seed]:
    """Valid frames about the carp interface (`vip`, `vip6`, `vhid`, `passphrase`) as a peer
    at `peer` / `peer6` / `peer_mac` on the segment would send them; its advertisements say
    `advbase` and `advskew` (choose them between the nodes' own: unbroken, they then move
    no node's state)."""
    cmac = carp_mac(vhid)
    hmac = HmacContexts(carp_key(passphrase), vhid, [vip], [vip6])
    counter = bytes.fromhex("0123456789abcdef")
    head = _advert_header(vhid, advbase, advskew, hmac, counter)
    advert4 = build_ipv4(peer, IPv4Address("224.0.0.18"), head, 1)
    link_local = IPv6Address(bytes.fromhex("fe800000000000000200") + peer_mac)
    solicited = l2.solicited_node(vip6.packed)
    # the node resolving `peer` from the virtual address: what a peer answers
    asked = l2.ArpPacket(b"\xff" * 6, cmac, 1, cmac, vip.packed, bytes(6), peer.packed)
    seeds = [
        Seed("arp-request", l2.arp_request(peer_mac, peer, vip)),
        Seed("arp-gratuitous", l2.gratuitous_arp(cmac, vip)),
        Seed("arp-reply", l2.arp_reply(asked, peer_mac)),  # to the carp MAC
        Seed("carp4", build_frame(CARP4_MAC, cmac, ETH_P_IP, advert4)),
        Seed("carp6", build_frame(CARP6_MAC, cmac, ETH_P_IPV6, build_ipv6(link_local, head))),
        Seed("ns-group", _ns(b"\x33\x33" + solicited[12:], peer_mac, peer6, solicited, vip6)),
        Seed("ns-unicast", _ns(cmac, peer_mac, peer6, vip6.packed, vip6)),
        Seed("echo", _echo(cmac, peer_mac, peer, vip)),
    ]
    return seeds


class Mutator:
    """Mutated frames from `seeds`, reproducible from `rng`; `kinds` and `seeds_used` count
    what was made. `vnet_share` of the frames get a random virtio-net header."""

    def __init__(
        self,
        rng: random.Random,
        seeds: Sequence[Seed],
        *,
        vnet_share: float = 0.25,
        max_len: int = 9014,
    ) -> None:
        if not seeds:
            raise ValueError("no seed frames")
        self.rng = rng
        self.seeds = list(seeds)
        self.vnet_share = vnet_share
        self.max_len = max_len
        self.kinds: Counter[str] = Counter()
        self.seeds_used: Counter[str] = Counter()

    def next(self) -> tuple[bytes, bytes]:
        """(virtio-net header, Ethernet frame)."""
        frame = self.frame()
        return self.header(len(frame)), frame

    def frame(self) -> bytes:
        r = self.rng
        seed = r.choice(self.seeds)
        kind = r.choice(_DRAW)
        self.kinds[kind] += 1
        self.seeds_used[seed.name] += 1
        base = seed.frame
        if kind == "random":
            ethertype = r.choice((ETH_P_IP, ETH_P_IPV6, ETH_P_ARP, ETH_P_8021Q, r.getrandbits(16)))
            return base[:12] + ethertype.to_bytes(2, "big") + r.randbytes(r.randrange(0, 1500))
        if kind == "truncate":
            low = 0 if r.random() < 0.1 else min(14, len(base) - 1)
            return base[: r.randrange(low, len(base))]
        if kind == "bitflip":
            return self._flip(base, r.randrange(1, 9))
        if kind == "bytes":
            out = bytearray(base)
            for _ in range(r.randrange(1, 5)):
                out[r.randrange(len(out))] = (
                    r.choice(BOUNDARY) if r.random() < 0.7 else r.getrandbits(8)
                )
            return bytes(out)
        if kind == "overlong":
            size = r.randrange(1515, self.max_len + 1)
            return base + r.randbytes(size - len(base))
        # vlan: one 802.1Q tag, or 802.1ad outside 802.1Q; then maybe a few flipped bits
        tag = ETH_P_8021Q.to_bytes(2, "big") + r.getrandbits(16).to_bytes(2, "big")
        if r.random() < 0.25:
            tag = ETH_P_8021AD.to_bytes(2, "big") + r.getrandbits(16).to_bytes(2, "big") + tag
        tagged = base[:12] + tag + base[12:]
        return self._flip(tagged, r.randrange(1, 4)) if r.random() < 0.5 else tagged

    def _flip(self, frame: bytes, bits: int) -> bytes:
        out = bytearray(frame)
        for _ in range(bits):
            i = self.rng.randrange(len(out) * 8)
            out[i >> 3] ^= 1 << (i & 7)
        return bytes(out)

    def vxlan(self, vni: int, frame: bytes) -> tuple[bytes, str]:
        """`frame` in a VXLAN datagram for `vni`, its header broken now and then: (datagram,
        the reason the port refuses it for, "" if it must take it). A datagram too short for
        the header and an Ethernet header is "short" whatever else it has."""
        r = self.rng
        fault = r.choice(_VXLAN_DRAW)
        self.kinds[f"vxlan-{fault}"] += 1
        flags, reserved, low = VXLAN_I, bytes(3), 0
        if fault == "reserved":
            flags |= r.getrandbits(8)
            reserved, low = r.randbytes(3), r.getrandbits(8)
        elif fault == "flags":
            flags = r.getrandbits(8) & ~VXLAN_I
        wanted = vni
        if fault == "vni":
            wanted = (vni + r.randrange(1, 1 << 24)) % (1 << 24)
        data = bytes((flags,)) + reserved + ((wanted << 8) | low).to_bytes(4, "big") + frame
        if fault == "short":
            data = data[: r.randrange(VXLAN_HLEN + ETH_HLEN)]
        if len(data) < VXLAN_HLEN + ETH_HLEN:
            return data, "short"
        return data, {"flags": "bad_flags", "vni": "bad_vni"}.get(fault, "")

    def vde_request(self, path: str, kind: str | None = None) -> tuple[bytes, str]:
        """Garbage for a vde port's ctl in place of a request naming the datagram socket `path`:
        (bytes, the refusal reason). `kind` is one of VDE_GARBAGE, else drawn at random."""
        r = self.rng
        if kind is None:
            kind = r.choice(VDE_GARBAGE)
        elif kind not in VDE_GARBAGE:
            raise ValueError(f"kind must be one of {', '.join(VDE_GARBAGE)}")
        self.kinds[f"vde-{kind}"] += 1
        tail = b"fuzz.py"
        if kind == "short_request":  # random bytes, one send, shorter than a request
            return r.randbytes(r.randrange(1, MIN_REQUEST)), kind
        if kind == "bad_magic":  # random, one bit off, or written big-endian
            swapped = int.from_bytes(MAGIC.to_bytes(4, "big"), "little")
            magic = r.choice((r.getrandbits(32), MAGIC ^ 1 << r.randrange(32), swapped))
            body = REQUEST.pack(magic if magic != MAGIC else swapped, VERSION, REQ_NEW_PORT0)
            return body + r.randbytes(r.randrange(SOCKADDR_UN.size, 300)), kind
        address = SOCKADDR_UN.pack(socket.AF_UNIX, path.encode())
        if kind == "bad_version":
            version = r.choice((0, 1, 2, 4, r.getrandbits(32) | 8))
            return REQUEST.pack(MAGIC, version, REQ_NEW_PORT0) + address + tail, kind
        if kind == "bad_type":
            kind_field = r.randrange(2, 256) | (r.getrandbits(24) << 8)
            return REQUEST.pack(MAGIC, VERSION, kind_field) + address + tail, kind
        head = REQUEST.pack(MAGIC, VERSION, REQ_NEW_PORT0)
        if kind == "bad_address":  # another family, or a path that is not absolute
            if r.random() < 0.5:
                family = r.choice((0, socket.AF_INET, socket.AF_INET6, r.getrandbits(16) | 0x100))
                return head + SOCKADDR_UN.pack(family, path.encode()) + tail, kind
            return head + SOCKADDR_UN.pack(socket.AF_UNIX, path.lstrip("/").encode()) + tail, kind
        # a datagram socket that is not there: the node must not send into it
        missing = f"{path}-gone-{r.getrandbits(32):08x}"
        return head + SOCKADDR_UN.pack(socket.AF_UNIX, missing.encode()) + tail, "foreign_socket"

    def header(self, length: int) -> bytes:
        """Zero (no offload asked for) or random fields around plausible values."""
        r = self.rng
        if r.random() >= self.vnet_share:
            return ZERO_HDR
        return VNET_HDR.pack(
            r.choice((0, 1, 1, 2, 3, r.getrandbits(8))),  # NEEDS_CSUM, DATA_VALID
            r.choice((0, 0, 1, 3, 4, 5, 0x81, 0x84, r.getrandbits(8))),  # TCPV4 UDP TCPV6 ...
            r.randrange(0, length + 64),
            r.choice((0, 1, 8, 536, 1448, r.getrandbits(16))),
            r.randrange(0, length + 16),
            r.choice((6, 10, 16, r.getrandbits(16))),  # UDP, ?, TCP checksum offsets
        )
