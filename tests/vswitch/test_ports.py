"""Port helpers that need no privileges: checksum completion, virtio-net header handling, the
netlink link-event parser, batched reads and writes with their error accounting."""

import contextlib
import errno
import os
import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vswitch import port as port_module
from vswitch import tap
from vswitch.netlink import IFF_LOWER_UP, NLMSG_OVERRUN, LinkMonitor, LinkState
from vswitch.port import DeviceCounters, DevicePort, read_fd_batch, tx_drop_reason
from vswitch.raw import (
    PACKET_STATISTICS,
    SOL_PACKET,
    VNET_HDR_LEN,
    RawPort,
    complete_checksum,
    plain_frames,
    read_packet_statistics,
)
from vswitch.rtnl import IFF_UP, IFLA_IFNAME, RTM_DELLINK, RTM_NEWLINK


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
    assert dev.rx_malformed == 2 and dev.rx_errors == 0  # frames, not failed reads
    # every dropped frame's Ethernet bytes, so that rx_bytes covers all frames read
    assert dev.rx_dropped_bytes == len(plain) + len(plain) + 1500 + len(plain)
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


def test_batched_reads_stop_at_the_byte_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    # GSO frames: a batch ends after READ_BYTES, not after 64 frames of 64 KiB
    monkeypatch.setattr(port_module, "READ_BYTES", 2000)
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    port = FakePort(a)
    for i in range(5):
        b.send(bytes([i]) * 900)
    assert port.read_batch(port.fds[0]) == [bytes([i]) * 900 for i in range(3)]
    assert port.read_batch(port.fds[0]) == [bytes([i]) * 900 for i in (3, 4)]
    port.close()
    b.close()


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
    assert (result.packets, result.bytes) == (2, 12)
    assert port.dev.tx_errors == {errno.EIO: 1, errno.ENOBUFS: 1}
    assert port.dev.as_dict()["tx_errors"] == {"EIO": 1, "ENOBUFS": 1}
    assert port.dev.tx_drops() == {"tx_full": 1, "no_link": 1, "tx_error": 0}
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


def test_failed_writes_are_classed_by_errno() -> None:
    port = FakePort(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
    codes = [errno.EAGAIN, errno.ENOBUFS, errno.EIO, errno.ENETDOWN, errno.EMSGSIZE, errno.EBADF]

    def sender(frame: bytes) -> int:
        raise OSError(codes[frame[0]], "failed")

    port._sender = sender
    assert port.write_batch([bytes([i]) for i in range(len(codes))]).packets == 0
    assert port.dev.tx_drops() == {"tx_full": 2, "no_link": 2, "tx_error": 2}
    reasons = [tx_drop_reason(c) for c in codes]
    assert reasons == ["tx_full", "tx_full", "no_link", "no_link", "tx_error", "tx_error"]
    port.close()


def test_a_full_socket_buffer_on_write_is_tx_full() -> None:
    mine, far = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    mine.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    port = FakePort(mine)
    n = 200
    result = port.write_batch([bytes(100)] * n)  # nobody reads `far` meanwhile
    far.setblocking(False)
    got = 0
    with contextlib.suppress(BlockingIOError):
        while far.recv(200):
            got += 1
    assert 0 < result.packets == got < n
    assert port.dev.tx_drops() == {"tx_full": n - got, "no_link": 0, "tx_error": 0}
    port.close()
    far.close()


# -- the kernel's counters -------------------------------------------------------------------


class FakeStatsSocket:
    """getsockopt(PACKET_STATISTICS) as the kernel answers it: the counts since the last read."""

    def __init__(self, answers: list[bytes | OSError]) -> None:
        self.answers = answers
        self.calls: list[tuple[int, int, int]] = []

    def getsockopt(self, level: int, optname: int, buflen: int, /) -> bytes:
        self.calls.append((level, optname, buflen))
        answer = self.answers.pop(0)
        if isinstance(answer, OSError):
            raise answer
        return answer


def test_packet_statistics_are_accumulated_across_reads() -> None:
    sock = FakeStatsSocket([struct.pack("=II", 300, 100), struct.pack("=II", 7, 0), b"\x01"])
    dev = DeviceCounters()
    for _ in range(3):
        read_packet_statistics(sock, dev)
    assert sock.calls == [(SOL_PACKET, PACKET_STATISTICS, 8)] * 3
    # tp_packets already includes tp_drops; a short answer adds nothing
    assert (dev.kernel_packets, dev.rx_kernel) == (307, 100)


def test_raw_port_polls_its_socket_and_survives_a_failure() -> None:
    port = RawPort.__new__(RawPort)  # the socket is a fake: no AF_PACKET, no privileges
    DevicePort.__init__(port, "eth9", None, 0)
    sock = FakeStatsSocket([struct.pack("=II", 5, 2), OSError(errno.EBADF, "closed")])
    # a second socket of its fanout group (workers): its figures add up, its failure alone
    other = FakeStatsSocket([struct.pack("=II", 7, 1), struct.pack("=II", 1, 0)])
    port._socks = {3: sock, 4: other}  # type: ignore[dict-item]
    port.poll_kernel()
    port.poll_kernel()
    assert (port.dev.kernel_packets, port.dev.rx_kernel) == (13, 3)
    port.closed = True
    port.poll_kernel()  # closed: not asked
    assert len(sock.calls) == 2 and len(other.calls) == 2


def tap_without_device(ifname: str, netns: str | None = None) -> tap.TapPort:
    port = tap.TapPort.__new__(tap.TapPort)  # counters only: no /dev/net/tun, no privileges
    DevicePort.__init__(port, ifname, netns, 0)
    return port


def test_tap_kernel_counters_come_from_the_interface_tx_counters() -> None:
    a, b = tap_without_device("tap1"), tap_without_device("tap2")
    tap.apply_link_stats([a, b], {"tap1": {"tx_packets": 90, "tx_dropped": 10, "rx_dropped": 3}})
    assert (a.dev.kernel_packets, a.dev.rx_kernel) == (100, 10)
    assert (b.dev.kernel_packets, b.dev.rx_kernel) == (0, 0)  # not in the dump: unchanged
    tap.apply_link_stats([a], {"tap1": {"tx_packets": 95, "tx_dropped": 10}})
    assert a.dev.kernel_packets == 105  # cumulative in the kernel: set, not added


def test_tap_kernel_counters_are_read_over_netlink_and_failures_ignored() -> None:
    lo = tap_without_device("lo")
    lo.dev.kernel_packets = lo.dev.rx_kernel = -1
    tap.poll_kernel(None, [lo])  # this namespace's loopback stands in for a TAP
    assert lo.dev.kernel_packets >= lo.dev.rx_kernel >= 0
    gone = tap_without_device("tap1", netns="vswitch-test-no-such-netns")
    tap.poll_kernel(gone.netns, [gone])
    assert (gone.dev.kernel_packets, gone.dev.rx_kernel) == (0, 0)
