"""Raw ports: an AF_PACKET socket on an existing interface (an uplink, or a veth in a lab).

The socket is promiscuous (PACKET_MR_PROMISC), bound to one interface, non-blocking, and skips
frames with sll_pkttype PACKET_OUTGOING (what the kernel or another packet socket sent out of the
interface; forwarding them would loop). Where the kernel has PACKET_IGNORE_OUTGOING (4.20+) the
kernel skips them itself and a plain recv() suffices; otherwise recvfrom() and the address tell.

The socket always asks for a virtio-net header (PACKET_VNET_HDR): a switch with offload gets
frames as they are, GSO and partial checksums included. For a switch without offload the header
is used, then stripped: a partial checksum (locally generated traffic, e.g. from a veth peer) is
completed in software, and a GSO frame, which only a switch with offload can carry, is counted
and dropped (turn TSO/GSO off on a veth peer, or GRO on a NIC, when running without offload).

Link: up while the interface is administratively up and has carrier (IFF_UP and IFF_LOWER_UP).

Frames the kernel drops because the socket's receive queue is full never reach us: the socket's
PACKET_STATISTICS tell (tp_drops; tp_packets counts them too). Reading them resets them, so
`poll_kernel` accumulates them into the port's counters, often enough that none wraps.
"""

import contextlib
import ctypes
import socket
import struct
from array import array
from collections.abc import Callable
from typing import Protocol

from vswitch import netlink
from vswitch.netlink import LinkState
from vswitch.port import (
    BUFFER_BYTES,
    MAX_QUEUES,
    READ_BATCH,
    READ_BYTES,
    SO_RCVBUFFORCE,
    DeviceCounters,
    DevicePort,
    set_buffers,
)

SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_STATISTICS = 6
PACKET_MR_PROMISC = 1
PACKET_VNET_HDR = 15
PACKET_IGNORE_OUTGOING = 23
PACKET_OUTGOING = 4
PACKET_FANOUT = 18
PACKET_FANOUT_HASH = 0
PACKET_FANOUT_FLAG_UNIQUEID = 0x2000
ETH_P_ALL = 0x0003
VNET_HDR_LEN = 10  # struct virtio_net_hdr; AF_PACKET has no 12-byte variant on older kernels
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
MAX_FRAME = 65536 + 18

_VNET = struct.Struct("=BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
_ZERO_VNET = bytes(VNET_HDR_LEN)
_TP_STATS = struct.Struct("=II")  # struct tpacket_stats: tp_packets, tp_drops (TPACKET_V1/V2)


class SocketOptions(Protocol):
    def getsockopt(self, level: int, optname: int, buflen: int, /) -> bytes: ...


def read_packet_statistics(sock: SocketOptions, dev: DeviceCounters) -> None:
    """Add the socket's PACKET_STATISTICS since the last read (the kernel then zeroes them) to
    `dev`: tp_packets (frames queued or dropped) to kernel_packets, tp_drops to rx_kernel."""
    data = sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _TP_STATS.size)
    if len(data) >= _TP_STATS.size:
        packets, drops = _TP_STATS.unpack_from(data)
        dev.kernel_packets += packets
        dev.rx_kernel += drops


def complete_checksum(frame: bytes, csum_start: int, csum_offset: int) -> bytes | None:
    """Fill in a partial checksum as skb_checksum_help does: the field holds the pseudo-header
    sum; the one's complement sum from `csum_start` to the end, complemented, replaces it.
    None when the offsets do not fit the frame."""
    field = csum_start + csum_offset
    if csum_start < 14 or field + 2 > len(frame):
        return None
    data = frame[csum_start:]
    if len(data) & 1:
        data += b"\0"
    # summing native-order 16-bit words gives the byte-swapped sum on little-endian hosts;
    # written back in native order it is right (RFC 1071, byte-order independence)
    total = sum(array("H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    csum = (~total & 0xFFFF) or 0xFFFF  # CSUM_MANGLED_0
    return frame[:field] + array("H", (csum,)).tobytes() + frame[field + 2 :]


def plain_frames(frames: list[bytes], max_plain: int, dev: DeviceCounters) -> list[bytes]:
    """Frames read with a virtio-net header, for a switch without offload: header stripped,
    partial checksums completed, GSO and oversize frames counted and dropped."""
    out = []
    unpack = _VNET.unpack_from
    for frame in frames:
        if len(frame) < VNET_HDR_LEN:
            dev.rx_malformed += 1
            continue
        flags, gso_type, _, _, csum_start, csum_offset = unpack(frame)
        if gso_type:
            dev.rx_gso_dropped += 1
            dev.rx_dropped_bytes += len(frame) - VNET_HDR_LEN
            continue
        eth = frame[VNET_HDR_LEN:]
        if len(eth) > max_plain:
            dev.rx_oversize += 1
            dev.rx_dropped_bytes += len(eth)
            continue
        if flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
            done = complete_checksum(eth, csum_start, csum_offset)
            if done is None:
                dev.rx_malformed += 1
                dev.rx_dropped_bytes += len(eth)
                continue
            dev.rx_csum_completed += 1
            eth = done
        out.append(eth)
    return out


def read_socket_batch(
    sock: socket.socket,
    dev: DeviceCounters,
    limit: int,
    skips_outgoing: bool,
    vnet_hdr: int,
    max_plain: int,
) -> list[bytes]:
    """Up to `limit` frames (or READ_BYTES) of a raw port's socket, in the switch's format."""
    frames: list[bytes] = []
    append = frames.append
    size = MAX_FRAME + VNET_HDR_LEN
    budget = READ_BYTES  # GSO frames: a batch of bytes, not of 64 frames (port.py)
    try:
        if skips_outgoing:
            recv = sock.recv
            for _ in range(limit):
                data = recv(size)
                append(data)
                budget -= len(data)
                if budget <= 0:
                    break
        else:
            recvfrom = sock.recvfrom
            for _ in range(limit):
                data, addr = recvfrom(size)
                if addr[2] != PACKET_OUTGOING:
                    append(data)
                    budget -= len(data)
                    if budget <= 0:
                        break
    except BlockingIOError:
        pass
    except OSError:
        # e.g. ENETDOWN once when the interface goes away; the link monitor tells the rest
        dev.rx_errors += 1
    if not vnet_hdr and frames:
        return plain_frames(frames, max_plain, dev)
    return frames


# Classic BPF: IPv4 protocol 112, or IPv6 with next header 112 or an extension header (hop-by-hop,
# routing, fragment, destination options: wire.IPV6_EXTENSIONS) that may lead to it;
# frame_is_carp tells the rest.
_BPF_LDH, _BPF_LDB, _BPF_JEQ, _BPF_RET = 0x28, 0x30, 0x15, 0x06
_CARP_FILTER = (
    (_BPF_LDH, 0, 0, 12),  # 0: ethertype
    (_BPF_JEQ, 0, 2, 0x0800),  # 1: IPv4 -> 2, else -> 4
    (_BPF_LDB, 0, 0, 23),  # 2: protocol
    (_BPF_JEQ, 7, 8, 112),  # 3: -> 11 accept, else -> 12 drop
    (_BPF_JEQ, 0, 7, 0x86DD),  # 4: IPv6 -> 5, else -> 12
    (_BPF_LDB, 0, 0, 20),  # 5: next header
    (_BPF_JEQ, 4, 0, 112),  # 6: -> 11
    (_BPF_JEQ, 3, 0, 0),  # 7: hop-by-hop -> 11
    (_BPF_JEQ, 2, 0, 43),  # 8: routing -> 11
    (_BPF_JEQ, 1, 0, 44),  # 9: fragment -> 11 (parse_ip counts it as an IP-layer drop)
    (_BPF_JEQ, 0, 1, 60),  # 10: destination options -> 11, else -> 12
    (_BPF_RET, 0, 0, 0x40000),  # 11: accept
    (_BPF_RET, 0, 0, 0),  # 12: drop
)
SO_ATTACH_FILTER = 26


def carp_socket(ifname: str, netns: str | None) -> socket.socket:
    """A non-blocking AF_PACKET socket on `ifname` that receives only CARP advertisements (by a
    socket filter, so nothing else wakes its reader), not what this host sends. With forwarding
    workers the node process reads a raw port's advertisements through it itself: they reach
    the protocol as soon as it runs, not when a worker busy with traffic gets to them."""
    index = netlink.link_index(ifname, netns)
    if index is None:
        raise LookupError(f"no interface {ifname} in netns {netns or '(own)'}")
    with netlink.in_netns(netns):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        with contextlib.suppress(OSError):
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        with contextlib.suppress(OSError):  # room for a burst while the node is busy
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, BUFFER_BYTES)
        code = b"".join(struct.pack("HBBI", *insn) for insn in _CARP_FILTER)
        buf = ctypes.create_string_buffer(code)
        prog = struct.pack("HL", len(_CARP_FILTER), ctypes.addressof(buf))
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, prog)
        mreq = struct.pack("iHH8s", index, PACKET_MR_PROMISC, 0, b"")
        sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        sock.bind((ifname, ETH_P_ALL))  # after the filter: nothing else is ever queued
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def sender(sock: socket.socket, vnet_hdr: int) -> Callable[[bytes], int]:
    """How a raw port's socket writes a frame in its switch's format: as it is with offload,
    else behind a zero virtio-net header (the socket always expects one: no offload asked)."""
    if vnet_hdr:
        return sock.send

    def send_plain(frame: bytes) -> int:
        return sock.send(_ZERO_VNET + frame) - VNET_HDR_LEN

    return send_plain


def join_fanout(sock: socket.socket, group: int) -> int:
    """Put `sock` into PACKET_FANOUT group `group` (by flow hash); group 0: a new group with a
    unique id (PACKET_FANOUT_FLAG_UNIQUEID, Linux 4.2), returned for the other sockets."""
    mode = PACKET_FANOUT_HASH | (0 if group else PACKET_FANOUT_FLAG_UNIQUEID)
    sock.setsockopt(SOL_PACKET, PACKET_FANOUT, group | mode << 16)
    if group:
        return group
    (value,) = struct.unpack("=I", sock.getsockopt(SOL_PACKET, PACKET_FANOUT, 4))
    return int(value) & 0xFFFF


def vnet_hdr_supported() -> bool:
    """Whether AF_PACKET accepts PACKET_VNET_HDR here (an unbound socket: sees no traffic)."""
    try:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0) as sock:
            sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    except OSError:
        return False
    return True


class RawPort(DevicePort):
    kind = "raw"
    kernel_poll_periodic = True  # PACKET_STATISTICS reset on read; tp_packets is 32 bits

    def __init__(
        self,
        ifname: str,
        *,
        vnet_hdr: int = 0,
        netns: str | None = None,
        mtu: int = 1500,
        promisc: bool = True,
        ignore_outgoing: bool = True,
        queues: int = 1,
    ) -> None:
        """`ignore_outgoing=False` forces the recvfrom() filter where the kernel could skip.
        `queues` > 1: that many sockets in one PACKET_FANOUT group (by flow hash), one per
        forwarding worker (vswitch/worker.py); the first also sends for the node."""
        if vnet_hdr not in (0, VNET_HDR_LEN):
            raise ValueError(f"a raw port's vnet_hdr is 0 or {VNET_HDR_LEN}, not {vnet_hdr}")
        if not 1 <= queues <= MAX_QUEUES:
            raise ValueError(f"queues must be 1..{MAX_QUEUES}, not {queues}")
        super().__init__(ifname, netns, vnet_hdr)
        self.mtu = mtu
        self.max_plain = mtu + 18  # largest frame a switch without offload passes on
        state = netlink.link_state(ifname, netns)
        if state is None:
            raise LookupError(f"raw port: no interface {ifname} in netns {netns or '(own)'}")
        self.kernel_skips_outgoing = False
        self._socks: dict[int, socket.socket] = {}
        try:
            fanout = 0
            for i in range(queues):
                sock = self._open(ifname, netns, state.index, promisc, ignore_outgoing, i == 0)
                self._socks[sock.fileno()] = sock
                if queues > 1:
                    fanout = join_fanout(sock, fanout)
        except BaseException:
            for sock in self._socks.values():
                sock.close()
            raise
        self._sock = next(iter(self._socks.values()))
        self._fds = tuple(self._socks)
        self._sender = sender(self._sock, vnet_hdr)
        self.link_up = self.link_from(state)

    def _open(
        self,
        ifname: str,
        netns: str | None,
        index: int,
        promisc: bool,
        ignore_outgoing: bool,
        first: bool,
    ) -> socket.socket:
        # protocol 0 until bound: the socket sees nothing from other interfaces meanwhile
        with netlink.in_netns(netns):
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
            if ignore_outgoing and (first or self.kernel_skips_outgoing):
                try:
                    sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
                    self.kernel_skips_outgoing = True
                except OSError:
                    pass
            set_buffers(sock)
            if promisc:
                mreq = struct.pack("iHH8s", index, PACKET_MR_PROMISC, 0, b"")
                sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
            sock.bind((ifname, ETH_P_ALL))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    @property
    def fds(self) -> tuple[int, ...]:
        return self._fds

    def fileno(self) -> int:
        return self._fds[0]

    def read_batch(self, fd: int, limit: int = READ_BATCH) -> list[bytes]:
        return read_socket_batch(
            self._socks[fd],
            self.dev,
            limit,
            self.kernel_skips_outgoing,
            self.vnet_hdr,
            self.max_plain,
        )

    def link_from(self, state: LinkState) -> bool:
        return state.admin_up and state.lower_up

    def poll_kernel(self) -> None:
        if self.closed:
            return
        # counters are a side channel; the read path reports a broken socket
        for sock in self._socks.values():
            with contextlib.suppress(OSError):
                read_packet_statistics(sock, self.dev)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._sender = self._not_open
        for sock in self._socks.values():
            sock.close()
