"""Live capture of a switch's ports as pcapng (`vswitch capture`), pure: frames in, bytes out.

One Interface Description Block per switch port (if_name = the port's name, if_description
names the switch), and one Enhanced Packet Block per frame with its direction in the epb_flags
option (inbound: received on the port; outbound: sent out of it), so Wireshark shows the port
and the direction of every frame. Timestamps are wall-clock seconds passed in by the caller, at
microsecond resolution (pcapng's default if_tsresol).

The forwarding path only calls `record`, which keeps a reference to the frame: encoding waits
for `take`, called when the reader's socket can take more. What waits is bounded (`limit`
bytes): a slow reader loses capture frames, counted in `lost` (per port in `lost_by_port`),
and never slows forwarding. Interface blocks are never dropped: a packet block that names an
interface must follow its description.
"""

import struct
from collections import deque
from collections.abc import Iterable

from vswitch.impair import Direction

BT_SHB = 0x0A0D0D0A
BT_IDB = 0x00000001
BT_EPB = 0x00000006
BYTE_ORDER_MAGIC = 0x1A2B3C4D
LINKTYPE_ETHERNET = 1
OPT_ENDOFOPT = 0
OPT_SHB_USERAPPL = 4
OPT_IF_NAME = 2
OPT_IF_DESCRIPTION = 3
OPT_EPB_FLAGS = 2
EPB_INBOUND = 0b01  # epb_flags bits 0-1: the direction
EPB_OUTBOUND = 0b10
DEFAULT_SNAPLEN = 262_144  # tcpdump's; a GSO frame of the offload path fits
DEFAULT_LIMIT = 8 << 20  # bytes of frames waiting for the reader
BLOCK_OVERHEAD = 44  # EPB header, flags option, end of options and trailer: for `limit`
APPLICATION = "vswitch-carp"

_FLAGS = {Direction.IN: EPB_INBOUND, Direction.OUT: EPB_OUTBOUND}
_EPB_HEAD = struct.Struct("<IIIIIII")  # type, length, interface, ts high, ts low, caplen, len
_EPB_TAIL = struct.Struct("<HHIHHI")  # epb_flags option, end of options, length again


def _pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % 4)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + _pad(value)


def _block(kind: int, body: bytes) -> bytes:
    length = 12 + len(body)
    return struct.pack("<II", kind, length) + body + struct.pack("<I", length)


def section_header() -> bytes:
    """A Section Header Block, little-endian, section length unknown (a live stream)."""
    options = _option(OPT_SHB_USERAPPL, APPLICATION.encode()) + _option(OPT_ENDOFOPT, b"")
    body = struct.pack("<IHHq", BYTE_ORDER_MAGIC, 1, 0, -1) + options
    return _block(BT_SHB, body)


def interface_description(name: str, snaplen: int, description: str | None = None) -> bytes:
    options = _option(OPT_IF_NAME, name.encode())
    if description:
        options += _option(OPT_IF_DESCRIPTION, description.encode())
    options += _option(OPT_ENDOFOPT, b"")
    return _block(BT_IDB, struct.pack("<HHI", LINKTYPE_ETHERNET, 0, snaplen) + options)


def enhanced_packet(interface: int, ts: float, flags: int, data: bytes, length: int) -> bytes:
    micros = round(ts * 1_000_000)
    padded = _pad(data)
    total = _EPB_HEAD.size + len(padded) + _EPB_TAIL.size
    head = _EPB_HEAD.pack(
        BT_EPB, total, interface, micros >> 32, micros & 0xFFFFFFFF, len(data), length
    )
    return head + padded + _EPB_TAIL.pack(OPT_EPB_FLAGS, 4, flags, OPT_ENDOFOPT, 0, total)


class CaptureWriter:
    """A pcapng stream for one capture of one switch: `record` frames, `take` the bytes."""

    def __init__(
        self,
        ports: Iterable[str] = (),
        *,
        switch: str | None = None,
        snaplen: int = DEFAULT_SNAPLEN,
        limit: int = DEFAULT_LIMIT,
        offset: int = 0,
    ) -> None:
        if not 0 < snaplen <= DEFAULT_SNAPLEN:
            raise ValueError(f"snaplen must be 1..{DEFAULT_SNAPLEN}, not {snaplen}")
        self.switch = switch
        self.snaplen = snaplen
        self.limit = limit
        self.offset = offset  # a virtio-net header to leave out of the capture
        self.interfaces: dict[str, int] = {}  # port -> interface id
        self.captured = 0
        self.lost = 0
        self.lost_by_port: dict[str, int] = {}
        self.pending = 0  # bytes of frames waiting (with BLOCK_OVERHEAD each)
        # encoded blocks (bytes) and frames waiting to be encoded, in stream order
        self._queue: deque[bytes | tuple[int, float, int, bytes]] = deque([section_header()])
        for port in ports:
            self.add_port(port)

    def add_port(self, port: str) -> int:
        """The interface id of `port`, described in the stream the first time it is named."""
        known = self.interfaces.get(port)
        if known is not None:
            return known
        number = self.interfaces[port] = len(self.interfaces)
        description = f"port {port} of switch {self.switch}" if self.switch else None
        self._queue.append(interface_description(port, self.snaplen, description))
        return number

    def record(self, ts: float, port: str, direction: Direction, frame: bytes) -> bool:
        """Queue one frame seen on `port`; False (counted in `lost`) when the reader lags."""
        cost = len(frame) - self.offset + BLOCK_OVERHEAD
        if self.pending + cost > self.limit:
            self.lost += 1
            self.lost_by_port[port] = self.lost_by_port.get(port, 0) + 1
            return False
        interface = self.add_port(port)
        self._queue.append((interface, ts, _FLAGS[direction], frame))
        self.pending += cost
        self.captured += 1
        return True

    def take(self, max_bytes: int | None = None) -> bytes:
        """Encoded blocks, in order: at least one if any wait, more while under `max_bytes`."""
        out: list[bytes] = []
        size = 0
        queue = self._queue
        while queue and (max_bytes is None or not out or size < max_bytes):
            item = queue.popleft()
            if isinstance(item, bytes):
                out.append(item)
                size += len(item)
                continue
            interface, ts, flags, frame = item
            data = frame[self.offset :] if self.offset else frame
            self.pending -= len(data) + BLOCK_OVERHEAD
            block = enhanced_packet(interface, ts, flags, data[: self.snaplen], len(data))
            out.append(block)
            size += len(block)
        return b"".join(out)

    @property
    def waiting(self) -> bool:
        return bool(self._queue)
