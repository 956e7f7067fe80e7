"""What the data plane needs of a device port (a TAP in tap.py, an AF_PACKET socket in raw.py).

A device port reads and writes frames in its switch's wire format (with a virtio-net header of
`vnet_hdr` bytes when the switch uses offload) and follows its link state. Reads and writes never
raise for traffic-level errors: they are counted, and the loop goes on.
"""

import contextlib
import errno
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from vswitch.netlink import LinkState

READ_BATCH = 64  # frames drained per readiness event (tap-io.md: +15-30 %)
# ... or until this many bytes: 64 GSO frames of 64 KiB (4 MiB) read before the first is
# written starve the receivers and the senders' TCP small queues; through two TAPs 4 TCP
# streams carried 8.9 Gbit/s with 64-frame batches, 14-17 with smaller ones (bench/batching.py)
READ_BYTES = 256 * 1024
BUFFER_BYTES = 4 << 20  # socket buffers of ports and channels: room for bursts of GSO frames
SO_SNDBUFFORCE = 32  # socket(7): root may go beyond wmem_max / rmem_max
SO_RCVBUFFORCE = 33
MAX_QUEUES = 16  # queues of a TAP / sockets of a raw port's fanout group: [node] workers' bound
# a failed write loses one frame and leaves the port usable (tap-io.md); its drop reason by
# errno class, anything else (EMSGSIZE, EINVAL, EBADF...) is "tx_error"
TX_FULL_ERRORS = frozenset((errno.ENOBUFS, errno.EAGAIN))  # the device's queue is full
NO_LINK_ERRORS = frozenset((errno.EIO, errno.ENETDOWN, errno.ENXIO, errno.ENODEV))  # TAP down: EIO


def set_buffers(sock: socket.socket, size: int = BUFFER_BYTES) -> None:
    """Large send and receive buffers; as large as allowed without privileges otherwise."""
    for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except OSError:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, plain, size)


def tx_drop_reason(code: int) -> str:
    """The drop reason of a write that failed with errno `code`."""
    if code in TX_FULL_ERRORS:
        return "tx_full"
    if code in NO_LINK_ERRORS:
        return "no_link"
    return "tx_error"


@dataclass(slots=True)
class DeviceCounters:
    """Device-level events the forwarding counters do not show. The rx_* frame drops here
    happen before the switch sees the frame; `rx_dropped_bytes` are their Ethernet bytes."""

    rx_errors: int = 0  # failed reads
    rx_malformed: int = 0  # too short for a virtio-net header, or checksum offsets outside it
    rx_oversize: int = 0  # frames too large for a switch without offload
    rx_gso_dropped: int = 0  # GSO frames that a switch without offload cannot carry
    rx_dropped_bytes: int = 0
    rx_csum_completed: int = 0  # partial checksums completed in software
    # kept by the kernel, folded in by `DevicePort.poll_kernel`: frames it dropped before we
    # could read them (our receive queue was full), and all it offered us (read or dropped)
    rx_kernel: int = 0
    kernel_packets: int = 0
    tx_errors: dict[int, int] = field(default_factory=dict)  # errno -> count

    def as_dict(self) -> dict[str, object]:
        return {
            "rx_errors": self.rx_errors,
            "rx_malformed": self.rx_malformed,
            "rx_oversize": self.rx_oversize,
            "rx_gso_dropped": self.rx_gso_dropped,
            "rx_csum_completed": self.rx_csum_completed,
            "rx_kernel": self.rx_kernel,
            "kernel_packets": self.kernel_packets,
            "tx_errors": {errno.errorcode.get(k, str(k)): v for k, v in self.tx_errors.items()},
        }

    def tx_drops(self) -> dict[str, int]:
        """Failed writes by drop reason (`tx_drop_reason`), every reason present."""
        out = {"tx_full": 0, "no_link": 0, "tx_error": 0}
        for code, n in self.tx_errors.items():
            out[tx_drop_reason(code)] += n
        return out


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What a batch write took; a frame not written is in `DeviceCounters.tx_errors`."""

    packets: int
    bytes: int  # in the switch's wire format (virtio-net headers included)


class DevicePort:
    """Base of TapPort and RawPort: link state and the write loop shared by both."""

    kind = "device"
    follows_link = True  # the data plane follows `ifname` in `netns` through netlink
    # the kernel's counters of this port reset when read (or wrap soon): poll them periodically
    kernel_poll_periodic = False

    def __init__(self, ifname: str, netns: str | None, vnet_hdr: int) -> None:
        self.ifname = ifname
        self.netns = netns  # namespace whose link events describe this port
        self.vnet_hdr = vnet_hdr
        self.link_up = False
        self.on_link: Callable[[bool], None] | None = None
        self.dev = DeviceCounters()
        self.failed: OSError | None = None  # the device is gone (reads fail for good)
        self.closed = False
        # writes one frame in the switch's wire format, returns the bytes taken from it
        self._sender: Callable[[bytes], int] = self._not_open

    @property
    def fds(self) -> tuple[int, ...]:
        raise NotImplementedError

    def read_batch(self, fd: int, limit: int = READ_BATCH) -> list[bytes]:
        raise NotImplementedError

    def _not_open(self, frame: bytes) -> int:
        raise OSError(errno.EBADF, "port is not open")

    def link_from(self, state: LinkState) -> bool:
        """Whether `state` (of this port's interface) means the port can carry traffic."""
        raise NotImplementedError

    def poll_kernel(self) -> None:
        """Fold the kernel's counters for this port into `dev` (rx_kernel, kernel_packets).
        Never raises: they are a side channel. A device without such counters has nothing."""

    def write_batch(self, frames: Sequence[bytes]) -> WriteResult:
        send = self._sender
        nbytes = 0
        sent = 0
        for frame in frames:
            try:
                nbytes += send(frame)
                sent += 1
            except OSError as exc:
                code = exc.errno or 0
                self.dev.tx_errors[code] = self.dev.tx_errors.get(code, 0) + 1
        return WriteResult(sent, nbytes)

    def update_link(self, state: LinkState | None) -> None:
        """Apply a link event (None: the interface is gone); calls `on_link` on a change."""
        up = state is not None and not state.deleted and self.link_from(state)
        if up != self.link_up:
            self.link_up = up
            if self.on_link is not None:
                self.on_link(up)

    def close(self) -> None:
        raise NotImplementedError


def read_fd_batch(port: DevicePort, fd: int, size: int, limit: int) -> list[bytes]:
    """Up to `limit` reads of a non-blocking fd (a TAP queue), or READ_BYTES."""
    frames: list[bytes] = []
    append = frames.append
    read = os.read
    budget = READ_BYTES
    try:
        for _ in range(limit):
            data = read(fd, size)
            if not data:  # end of file: the other side is gone (a TAP never reads 0 bytes)
                port.failed = OSError(errno.ENODEV, "end of file")
                break
            append(data)
            budget -= len(data)
            if budget <= 0:
                break
    except BlockingIOError:
        pass
    except OSError as exc:
        port.dev.rx_errors += 1
        if exc.errno in (errno.EBADFD, errno.EBADF, errno.ENODEV):
            port.failed = exc
    return frames
