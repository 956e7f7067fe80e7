"""Frames into a node's ports from outside any node, and what the kernel counted for them.

An `Injector` is an AF_PACKET socket bound to one interface of a lab namespace (protocol 0: it
receives nothing) with PACKET_VNET_HDR on, so every frame goes out with a virtio-net header the
sender chooses. The kernel checks that header (virtio_net_hdr_to_skb) and refuses what it cannot
turn into a packet (EINVAL) before anything leaves; a refused send is counted by errno, never
raised. `link_counters` reads an interface's IFLA_STATS64 (rx/tx packets and drops), the
kernel's side of a port's accounting.

The socket ports have peers instead (vswitch/stream.py, vde.py, vxlan.py): a `StreamPeer`
connects as QEMU does, a `VdePeer` does the vde handshake as libvdeplug does, a `UdpSender`
sends datagrams from an underlay address. The Unix peers block while the node's socket is full
(nothing is lost there) and say how much of what they sent the node has not read yet (SIOCOUTQ),
so a bench knows when the node has caught up; `udp_socket` reads the kernel's receive queue
and drop count of the node's UDP socket. Used by bench/fuzz.py.
"""

import contextlib
import errno
import fcntl
import os
import select
import socket
import struct
import termios
import time
from collections import Counter
from collections.abc import Iterator

from vswitch import netlink
from vswitch.stream import LENGTH
from vswitch.stream import MAX_FRAME as STREAM_MAX_FRAME
from vswitch.vde import MAGIC, REQ_NEW_PORT0, REQUEST, SOCKADDR_UN, VERSION, sockaddr

SOL_PACKET = 263
PACKET_VNET_HDR = 15
SO_SNDBUFFORCE = 32
VNET_HDR_LEN = 10  # struct virtio_net_hdr, the size AF_PACKET takes
VLAN_TYPES = (b"\x81\x00", b"\x88\xa8")  # eth_type_vlan(): 802.1Q, 802.1ad
COUNTERS = ("rx_packets", "tx_packets", "rx_dropped", "tx_dropped", "rx_errors", "tx_errors")


class Injector:
    """Sends `header + frame` out of `ifname` in `netns`; `sent` and `refused` (errno -> count)
    say what became of each."""

    def __init__(self, netns: str | None, ifname: str, *, sndbuf: int = 4 << 20) -> None:
        with netlink.in_netns(netns):
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, sndbuf)
            sock.bind((ifname, 0))
        except BaseException:
            sock.close()
            raise
        self.ifname = ifname
        self._sock = sock
        self.sent = 0
        self.refused: Counter[str] = Counter()

    def send(self, header: bytes, frame: bytes) -> bool:
        """One frame with its virtio-net header (10 bytes); False if the kernel refused it."""
        try:
            self._sock.send(header + frame)
        except OSError as exc:
            _count(self.refused, exc)
            return False
        self.sent += 1
        return True

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "Injector":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def untag_discards(frame: bytes) -> bool:
    """Whether a receiving interface's kernel drops `frame` before any packet socket sees it:
    __netif_receive_skb_core untags VLAN frames first, and skb_vlan_untag frees one with fewer
    than 6 bytes after the Ethernet header (the tag and the inner type), counting it nowhere."""
    return len(frame) < 20 and frame[12:14] in VLAN_TYPES


def link_counters(netns: str | None, ifname: str) -> dict[str, int]:
    """The kernel's counters of `ifname` in `netns` (COUNTERS from IFLA_STATS64); LookupError
    if there is no such interface."""
    link = netlink.link(ifname, netns)
    if link is None:
        raise LookupError(f"no interface {ifname} in {netns or 'this namespace'}")
    stats = link.stats or {}
    return {key: stats.get(key, 0) for key in COUNTERS}


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    """Counter differences, key by key (keys of `after`)."""
    return {key: after[key] - before.get(key, 0) for key in after}


def _count(refused: Counter[str], exc: OSError) -> None:
    code = exc.errno or 0
    refused[errno.errorcode.get(code, str(code))] += 1


def os_timeouts(sock: socket.socket, seconds: float) -> None:
    """Bound blocking sends, receives and connects in the kernel (SO_SNDTIMEO, SO_RCVTIMEO:
    EAGAIN after `seconds`). Python's own timeout would make every MSG_DONTWAIT read wait for
    data first."""
    whole = int(seconds)
    timeval = struct.pack("ll", whole, int((seconds - whole) * 1e6))
    for option in (socket.SO_SNDTIMEO, socket.SO_RCVTIMEO):
        sock.setsockopt(socket.SOL_SOCKET, option, timeval)


def waiting(sock: socket.socket, size: int) -> Iterator[bytes]:
    """What `sock` holds now, read without waiting; ends when it is empty, closed or in error
    (a dropped connection: the next send says so)."""
    while True:
        try:
            data = sock.recv(size, socket.MSG_DONTWAIT)
        except OSError:  # BlockingIOError and InterruptedError among them
            return
        if not data and sock.type == socket.SOCK_STREAM:
            return
        yield data


def unread(sock: socket.socket) -> int:
    """Bytes sent on a Unix socket that its peer has not read yet (SIOCOUTQ: what is still
    charged to the sender)."""
    raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4)
    return int(struct.unpack("i", raw)[0])


def wait_closed(sock: socket.socket, deadline: float) -> bool:
    """Read and discard until the other end closes (EOF or a reset) or `deadline` (monotonic)
    passes; whether it closed."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        ready, _, _ = select.select([sock], [], [], min(left, 0.5))
        if not ready:
            continue
        try:
            if not sock.recv(1 << 16, socket.MSG_DONTWAIT):
                return True
        except BlockingIOError:
            continue
        except OSError:  # ECONNRESET: it closed with our bytes unread
            return True


def ctl_exchange(path: str, payload: bytes, deadline: float) -> bool:
    """Connect to the Unix stream socket `path`, send `payload` (nothing if empty), and wait for
    the other end to close the connection; whether it did by `deadline`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        os_timeouts(sock, max(0.1, deadline - time.monotonic()))
        sock.connect(path)
        if payload:
            sock.sendall(payload)
        return wait_closed(sock, deadline)


class StreamPeer:
    """The peer of a node's stream port, connected as QEMU connects: each frame preceded by its
    length (4 bytes, big-endian). What the node sends is read between sends (`drain`) and
    parsed: `received` frames, `bad_lengths` above the stream port's maximum (its framing lost).
    A send blocks while the node's socket is full and raises OSError when the node dropped us."""

    def __init__(self, path: str, *, timeout: float = 10.0) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            os_timeouts(sock, timeout)
            sock.connect(path)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._in = bytearray()
        self.received = 0
        self.bad_lengths = 0

    @staticmethod
    def framed(frames: list[bytes]) -> bytes:
        return b"".join(LENGTH.pack(len(f)) + f for f in frames)

    def send(self, data: bytes) -> None:
        self._sock.sendall(data)

    def unread(self) -> int:
        return unread(self._sock)

    def drain(self) -> None:
        """Take what the node sent so far (it never waits on us)."""
        for data in waiting(self._sock, 1 << 18):
            self._parse(data)

    def _parse(self, data: bytes) -> None:
        buf = self._in
        buf += data
        pos = 0
        while len(buf) - pos >= 4:
            (length,) = LENGTH.unpack_from(buf, pos)
            if length > STREAM_MAX_FRAME:
                self.bad_lengths += 1
                buf.clear()
                return
            if len(buf) - pos - 4 < length:
                break
            self.received += 1
            pos += 4 + length
        del buf[:pos]

    def caught_up(self, deadline: float) -> bool:
        """Whether the node has read everything sent, by `deadline` (draining meanwhile)."""
        while self.unread():
            if time.monotonic() > deadline:
                return False
            self.drain()
            select.select([self._sock], [], [], 0.002)
        return True

    def hang_up(self, deadline: float) -> bool:
        """Stop sending (EOF to the node) and wait for the node to close its end."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_WR)
        return self.wait_closed(deadline)

    def wait_closed(self, deadline: float) -> bool:
        self.drain()
        return wait_closed(self._sock, deadline)

    def close(self) -> None:
        self._sock.close()


class VdePeer:
    """A client of a node's vde port, as libvdeplug connects: request_v3 on DIR/ctl naming a
    datagram socket of its own in DIR, then one frame a datagram to the socket the node answers
    with. Closing the control connection ends it (the node removes its port)."""

    def __init__(self, directory: str, tag: str, *, timeout: float = 10.0) -> None:
        self.path = os.path.join(directory, f".fuzz-{os.getpid()}-{tag}")
        self.ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.data = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            for sock in (self.ctl, self.data):
                os_timeouts(sock, timeout)
            self.data.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 1 << 20)  # over-long ones
            self.data.bind(self.path)
            self.ctl.connect(os.path.join(directory, "ctl"))
            self.ctl.sendall(
                REQUEST.pack(MAGIC, VERSION, REQ_NEW_PORT0) + sockaddr(self.path) + b"fuzz.py"
            )
            reply = b""
            while len(reply) < SOCKADDR_UN.size:
                more = self.ctl.recv(SOCKADDR_UN.size - len(reply))
                if not more:
                    raise ConnectionError(f"vde {directory}: the node refused the request")
                reply += more
            family, raw = SOCKADDR_UN.unpack(reply)
            if family != socket.AF_UNIX:
                raise ConnectionError(f"vde {directory}: the answer is not a Unix address")
            self.data.connect(raw.split(b"\0", 1)[0])
        except BaseException:
            self.close()
            raise
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # as libvdeplug does once connected
        self.received = 0

    def send(self, frame: bytes) -> None:
        """One datagram; blocks while the node's socket queue is full."""
        self.data.send(frame)

    def unread(self) -> int:
        return unread(self.data)

    def drain(self) -> None:
        for _ in waiting(self.data, 1 << 17):
            self.received += 1

    def caught_up(self, deadline: float) -> bool:
        while self.unread():
            if time.monotonic() > deadline:
                return False
            self.drain()
            time.sleep(0.002)
        return True

    def close(self) -> None:
        self.ctl.close()
        self.data.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


class UdpSender:
    """Datagrams from `source`, an address in `netns`, to `dest`; `sent` and `refused` (errno ->
    count) say what became of each."""

    def __init__(self, netns: str | None, source: str, dest: tuple[str, int]) -> None:
        with netlink.in_netns(netns):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 4 << 20)
            sock.bind((source, 0))
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self.dest = dest
        self.sent = 0
        self.refused: Counter[str] = Counter()

    def send(self, data: bytes) -> bool:
        try:
            self._sock.sendto(data, self.dest)
        except OSError as exc:
            _count(self.refused, exc)
            return False
        self.sent += 1
        return True

    def close(self) -> None:
        self._sock.close()


def udp_socket(pid: int, address: str, port: int) -> tuple[int, int] | None:
    """(bytes waiting in the receive queue, datagrams dropped) of the IPv4 UDP socket bound at
    `address`:`port` in the network namespace of process `pid` (/proc/PID/net/udp); None if
    there is none."""
    local = f"{int.from_bytes(socket.inet_aton(address), 'little'):08X}:{port:04X}"
    try:
        with open(f"/proc/{pid}/net/udp") as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if fields[1] == local:
            return int(fields[4].split(":")[1], 16), int(fields[-1])
    return None
