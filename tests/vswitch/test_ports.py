"""Port helpers that need no privileges: checksum completion, virtio-net header handling, the
netlink link-event parser, batched reads and writes with their error accounting."""

import errno
import os
import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vswitch.netlink import (
    IFF_LOWER_UP,
    IFF_UP,
    IFLA_IFNAME,
    NLMSG_OVERRUN,
    RTM_DELLINK,
    RTM_NEWLINK,
    LinkMonitor,
    LinkState,
)
from vswitch.port import DeviceCounters, DevicePort, read_fd_batch
from vswitch.raw import VNET_HDR_LEN, complete_checksum, plain_frames


def ones_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def udp_frame(payload: bytes, partial: bool) -> bytes:
    """An Ethernet/IPv4/UDP frame with a correct checksum, or with the pseudo-header sum in the
    checksum field as the kernel leaves it for CHECKSUM_PARTIAL."""
    src, dst = bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2])
    length = 8 + len(payload)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + length, 1, 0, 64, 17, 0, src, dst)
    pseudo = src + dst + struct.pack("!BBH", 0, 17, length)
    udp = struct.pack("!HHHH", 4000, 5000, length, 0) + payload
    full = (~ones_sum(pseudo + udp) & 0xFFFF) or 0xFFFF
    field = ones_sum(pseudo) if partial else full
    udp = udp[:6] + struct.pack("!H", field) + udp[8:]
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + udp


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_complete_checksum_matches_a_full_checksum(payload: bytes) -> None:
    partial = udp_frame(payload, partial=True)
    done = complete_checksum(partial, 14 + 20, 6)
    assert done == udp_frame(payload, partial=False)
    udp = done[34:]
    pseudo = done[26:34] + struct.pack("!BBH", 0, 17, len(udp))
    assert ones_sum(pseudo + udp) == 0xFFFF  # verifies as a receiver checks it


def test_complete_checksum_rejects_offsets_outside_the_frame() -> None:
    frame = udp_frame(b"x", partial=True)
    assert complete_checksum(frame, 10, 6) is None
    assert complete_checksum(frame, len(frame) - 1, 0) is None


def vnet(flags: int = 0, gso_type: int = 0, csum_start: int = 0, csum_offset: int = 0) -> bytes:
    return struct.pack("=BBHHHH", flags, gso_type, 0, 0, csum_start, csum_offset)


def test_plain_frames_strip_complete_and_drop() -> None:
    dev = DeviceCounters()
    plain = udp_frame(b"hello", partial=False)
    frames = [
        vnet() + plain,
        vnet(1, 0, 34, 6) + udp_frame(b"hello", partial=True),  # NEEDS_CSUM
        vnet(0, 1) + plain,  # GSO TCPv4
        vnet() + plain + bytes(1500),  # larger than MTU + 18
        b"short",
        vnet(1, 0, 2000, 6) + plain,  # checksum offsets beyond the frame
    ]
    out = plain_frames(frames, 1518, dev)
    assert out == [plain, plain]
    assert dev.rx_csum_completed == 1
    assert dev.rx_gso_dropped == 1
    assert dev.rx_oversize == 1
    assert dev.rx_errors == 2
    assert len(vnet()) == VNET_HDR_LEN


# -- netlink link events ---------------------------------------------------------------------


def link_msg(mtype: int, index: int, flags: int, name: str) -> bytes:
    raw = name.encode() + b"\0"
    attr = struct.pack("=HH", 4 + len(raw), IFLA_IFNAME) + raw
    attr += b"\0" * (-len(attr) % 4)
    lo = struct.pack("=HH", 8, 4) + struct.pack("=I", 65536)  # IFLA_MTU before the name
    body = struct.pack("=BxHiII", 0, 1, index, flags, 0xFFFFFFFF) + lo + attr
    return struct.pack("=IHHII", 16 + len(body), mtype, 0, 0, 0) + body


@pytest.fixture
def monitor() -> LinkMonitor:
    return LinkMonitor()


def test_link_events_are_parsed(monitor: LinkMonitor) -> None:
    data = (
        link_msg(RTM_NEWLINK, 7, IFF_UP | IFF_LOWER_UP, "veth0")
        + link_msg(RTM_NEWLINK, 8, IFF_UP, "tap1")
        + link_msg(RTM_DELLINK, 9, 0, "gone")
    )
    assert monitor.parse(data) == [
        LinkState("veth0", 7, True, True),
        LinkState("tap1", 8, True, False),
        LinkState("gone", 9, False, False, deleted=True),
    ]
    monitor.close()


def test_malformed_link_events_are_counted(monitor: LinkMonitor) -> None:
    good = link_msg(RTM_NEWLINK, 7, IFF_UP, "veth0")
    assert monitor.parse(good[:-3]) == []  # length beyond the data
    no_name = struct.pack("=IHHII", 32, RTM_NEWLINK, 0, 0, 0) + struct.pack(
        "=BxHiII", 0, 1, 3, 0, 0
    )
    assert monitor.parse(no_name) == []
    bad_attr = struct.pack("=IHHII", 36, RTM_NEWLINK, 0, 0, 0)
    bad_attr += struct.pack("=BxHiII", 0, 1, 3, 0, 0) + struct.pack("=HH", 40, 3)
    assert monitor.parse(bad_attr) == []
    assert monitor.malformed == 3
    overrun = struct.pack("=IHHII", 16, NLMSG_OVERRUN, 0, 0, 0)
    assert monitor.parse(overrun + good) == [LinkState("veth0", 7, True, False)]
    assert monitor.overrun
    assert monitor.read() == []  # nothing pending on the real socket
    monitor.close()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_link_event_parser_never_raises(data: bytes) -> None:
    mon = LinkMonitor.__new__(LinkMonitor)
    mon.malformed = 0
    mon.overrun = False
    prefix = struct.pack("=IHHII", 16 + len(data), RTM_NEWLINK, 0, 0, 0)
    for events in (mon.parse(data), mon.parse(prefix + data)):
        assert all(isinstance(e, LinkState) for e in events)


# -- reads and writes ------------------------------------------------------------------------


class FakePort(DevicePort):
    """A device over one end of a SOCK_SEQPACKET pair (message boundaries like a TAP)."""

    kind = "fake"
    follows_link = False

    def __init__(self, sock: socket.socket, vnet_hdr: int = 0) -> None:
        super().__init__("fake0", None, vnet_hdr)
        self.sock = sock
        sock.setblocking(False)
        self._sender = sock.send
        self.link_up = True

    @property
    def fds(self) -> tuple[int, ...]:
        return (self.sock.fileno(),)

    def read_batch(self, fd: int, limit: int = 64) -> list[bytes]:
        return read_fd_batch(self, fd, 2048, limit)

    def link_from(self, state: LinkState) -> bool:
        return state.admin_up

    def close(self) -> None:
        self.closed = True
        self.sock.close()


def test_batched_reads_stop_at_the_limit_and_when_empty() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    port = FakePort(a)
    for i in range(5):
        b.send(bytes([i]) * 20)
    assert port.read_batch(port.fds[0], limit=3) == [bytes([i]) * 20 for i in range(3)]
    assert port.read_batch(port.fds[0]) == [bytes([i]) * 20 for i in (3, 4)]
    assert port.read_batch(port.fds[0]) == []
    assert port.failed is None
    b.close()
    assert port.read_batch(port.fds[0]) == []
    assert port.failed is not None and port.failed.errno == errno.ENODEV
    port.close()


def test_read_errors_are_counted() -> None:
    r, w = os.pipe()
    port = FakePort(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
    os.close(r)
    assert read_fd_batch(port, r, 100, 4) == []
    assert port.dev.rx_errors == 1 and port.failed is not None
    os.close(w)
    port.close()


def test_write_errors_are_counted_and_never_stop_the_batch() -> None:
    port = FakePort(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
    results = iter([OSError(errno.EIO, "down"), 5, OSError(errno.ENOBUFS, "full"), 7])

    def sender(frame: bytes) -> int:
        r = next(results)
        if isinstance(r, OSError):
            raise r
        return r

    port._sender = sender
    result = port.write_batch([b"a", b"b", b"c", b"d"])
    assert (result.packets, result.bytes, result.dropped) == (2, 12, 2)
    assert port.dev.tx_errors == {errno.EIO: 1, errno.ENOBUFS: 1}
    assert port.dev.as_dict()["tx_errors"] == {"EIO": 1, "ENOBUFS": 1}
    port.close()
    with pytest.raises(NotImplementedError):
        DevicePort("x", None, 0).fds  # noqa: B018


def test_link_updates_call_back_on_change_only() -> None:
    port = FakePort(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
    seen: list[bool] = []
    port.on_link = seen.append
    port.update_link(LinkState("fake0", 1, True, False))
    port.update_link(LinkState("fake0", 1, False, False))
    port.update_link(LinkState("fake0", 1, False, True))
    port.update_link(LinkState("fake0", 1, True, True))
    port.update_link(LinkState("fake0", 1, True, True, deleted=True))
    port.update_link(None)
    assert seen == [False, True, False]
    port.close()
