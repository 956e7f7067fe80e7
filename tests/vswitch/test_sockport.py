"""What the socket ports share: software segmentation for ports without a virtio-net header,
Unix socket paths and their access, pinned network namespaces, and a fake PortIO."""

import errno
import os
import socket
import stat
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carp.checksum import inet_checksum
from vswitch import netlink, segment
from vswitch.port import DevicePort
from vswitch.sockport import Access, bind_unix, clear_path, file_id, unlink_if

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")


class FakeIO:
    """A PortIO that records what a socket port asks of the data plane."""

    def __init__(self) -> None:
        self.watched: set[int] = set()
        self.writers: dict[int, Callable[[], None]] = {}
        self.timers: list[tuple[float, Callable[[], None], list[bool]]] = []
        self.children: dict[str, DevicePort] = {}
        self.removed: list[str] = []

    def watch(self, fd: int) -> None:
        self.watched.add(fd)

    def unwatch(self, fd: int) -> None:
        self.watched.discard(fd)

    def when_writable(self, fd: int, callback: Callable[[], None] | None) -> None:
        if callback is None:
            self.writers.pop(fd, None)
        else:
            self.writers[fd] = callback

    def call_later(self, delay: float, callback: Callable[[], None]) -> Callable[[], None]:
        cancelled = [False]
        self.timers.append((delay, callback, cancelled))
        return lambda: cancelled.__setitem__(0, True)

    def fire_timers(self) -> None:
        for _, callback, cancelled in self.timers:
            if not cancelled[0]:
                callback()
        self.timers.clear()

    def add_child(self, suffix: str, dev: DevicePort) -> None:
        self.children[suffix] = dev

    def remove_child(self, suffix: str) -> None:
        self.children.pop(suffix).close()
        self.removed.append(suffix)


# -- segmentation ----------------------------------------------------------------------------


def ones_fold(data: bytes) -> int:
    return ~inet_checksum(data) & 0xFFFF


def tcp_frame(payload: bytes, *, v6: bool = False, flags: int = 0x18, seq: int = 1000) -> bytes:
    """Ethernet + IP + TCP with the checksum field holding the pseudo-header sum (partial)."""
    tcp = struct.pack("!HHIIBBHHH", 40000, 80, seq, 7, 5 << 4, flags, 65535, 0, 0) + payload
    if v6:
        src = bytes.fromhex("20010db8" + "00" * 11 + "01")
        dst = bytes.fromhex("20010db8" + "00" * 11 + "02")
        ip = struct.pack("!IHBB", 6 << 28, len(tcp), 6, 64) + src + dst
        pseudo = src + dst + struct.pack("!IxxxB", len(tcp), 6)
        ethertype = b"\x86\xdd"
    else:
        src, dst = bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2])
        ip = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(tcp), 100, 0x4000, 64, 6, 0) + src + dst
        ip = ip[:10] + struct.pack("!H", inet_checksum(ip)) + ip[12:]
        pseudo = src + dst + struct.pack("!BBH", 0, 6, len(tcp))
        ethertype = b"\x08\x00"
    tcp = tcp[:16] + struct.pack("!H", ones_fold(pseudo)) + tcp[18:]
    return MAC_B + MAC_A + ethertype + ip + tcp


def vnet(flags: int, gso_type: int, gso_size: int, csum_start: int, csum_offset: int) -> bytes:
    return struct.pack("=BBHHHH", flags, gso_type, 0, gso_size, csum_start, csum_offset)


def verify_tcp(frame: bytes, v6: bool) -> tuple[int, int, bytes]:
    """Check a plain segment's lengths and checksums; (seq, flags, payload)."""
    l3 = 14
    if v6:
        plen = struct.unpack_from("!H", frame, l3 + 4)[0]
        assert plen == len(frame) - l3 - 40
        l4 = l3 + 40
        pseudo = frame[l3 + 8 : l3 + 40] + struct.pack("!IxxxB", plen, 6)
    else:
        total = struct.unpack_from("!H", frame, l3 + 2)[0]
        assert total == len(frame) - l3
        assert inet_checksum(frame[l3 : l3 + 20]) == 0
        l4 = l3 + 20
        pseudo = frame[l3 + 12 : l3 + 20] + struct.pack("!BBH", 0, 6, total - 20)
    assert inet_checksum(pseudo + frame[l4:]) == 0  # verifies as a receiver checks it
    (seq,) = struct.unpack_from("!I", frame, l4 + 4)
    return seq, frame[l4 + 13], frame[l4 + 20 :]


@pytest.mark.parametrize("v6", [False, True])
@settings(max_examples=60, deadline=None)
@given(payload=st.binary(min_size=1, max_size=5000), mss=st.integers(100, 1460))
def test_gso_tcp_frames_are_cut_into_valid_segments(v6: bool, payload: bytes, mss: int) -> None:
    frame = tcp_frame(payload, v6=v6, flags=0x18 | 0x01 | 0x80)  # PSH FIN CWR
    l4 = 14 + (40 if v6 else 20)
    hdr = vnet(segment.NEEDS_CSUM, segment.GSO_TCPV6 if v6 else segment.GSO_TCPV4, mss, l4, 16)
    out = segment.plain(hdr + frame, 10)
    assert len(out) == -(-len(payload) // mss)
    joined = b""
    for i, piece in enumerate(out):
        seq, flags, data = verify_tcp(piece, v6)
        assert seq == 1000 + i * mss
        assert len(data) <= mss
        last = i == len(out) - 1
        assert bool(flags & 0x01) == last and bool(flags & 0x08) == last  # FIN, PSH: last only
        assert bool(flags & 0x80) == (i == 0)  # CWR: first only
        if not v6:
            assert struct.unpack_from("!H", piece, 18)[0] == (100 + i) & 0xFFFF  # IP ID
        joined += data
    assert joined == payload


def test_partial_checksums_are_completed_and_plain_frames_pass() -> None:
    frame = tcp_frame(b"hello")
    out = segment.plain(vnet(segment.NEEDS_CSUM, 0, 0, 34, 16) + frame, 10)
    assert len(out) == 1 and verify_tcp(out[0], False)[2] == b"hello"
    assert segment.plain(bytes(10) + frame, 10) == [frame]
    assert segment.plain(bytes(12) + frame, 12) == [frame]


@pytest.mark.parametrize(
    "header",
    [
        vnet(1, segment.GSO_UDP, 1400, 34, 6),  # UFO: fragments, not segments
        vnet(1, segment.GSO_TCPV4, 0, 34, 16),  # no segment size
        vnet(1, segment.GSO_TCPV4, 500, 60000, 16),  # transport header beyond the frame
        vnet(1, 0, 0, 60000, 16),  # checksum beyond the frame
        b"short",
    ],
)
def test_frames_that_cannot_be_made_plain_raise(header: bytes) -> None:
    with pytest.raises(ValueError):
        segment.plain(header + tcp_frame(b"x" * 3000), 10)


def test_udp_l4_gso_gives_datagrams_with_their_own_lengths() -> None:
    payload = bytes(range(256)) * 10
    src, dst = bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2])
    udp = struct.pack("!HHHH", 5000, 6000, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0) + src + dst
    frame = MAC_B + MAC_A + b"\x08\x00" + ip + udp
    out = segment.plain(vnet(1, segment.GSO_UDP_L4, 1000, 34, 6) + frame, 10)
    assert [len(p) - 42 for p in out] == [1000, 1000, 560]
    for piece in out:
        length = struct.unpack_from("!H", piece, 38)[0]
        assert length == len(piece) - 34
        pseudo = piece[26:34] + struct.pack("!BBH", 0, 17, length)
        assert inet_checksum(pseudo + piece[34:]) == 0
    assert b"".join(p[42:] for p in out) == payload


# -- Unix socket paths -------------------------------------------------------------------------


def test_a_path_that_is_not_a_socket_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "vm.sock"
    path.write_text("not a socket")
    with pytest.raises(OSError, match=r"vm\.sock exists and is not a socket") as info:
        bind_unix(str(path), socket.SOCK_STREAM, Access(None, None, None), "stream")
    assert info.value.errno == errno.EEXIST
    assert path.read_text() == "not a socket"  # left alone


def test_a_stale_socket_is_replaced_and_a_live_one_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "vm.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # the file stays, nobody listens
    sock = bind_unix(path, socket.SOCK_STREAM, Access(None, None, None), "stream")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with pytest.raises(OSError, match="another process listens there"):
        clear_path(path, "stream")
    ident = file_id(path)
    sock.close()
    unlink_if(path, ident)
    assert not os.path.exists(path)


def test_access_mode_owner_and_group(tmp_path: Path) -> None:
    uid, gid = str(os.getuid()), str(os.getgid())
    path = str(tmp_path / "s")
    sock = bind_unix(path, socket.SOCK_DGRAM, Access(uid, gid, None), "vde")
    st = os.stat(path)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (int(uid), int(gid), 0o660)
    sock.close()
    assert Access(None, None, 0o640).dir_mode() == 0o770
    with pytest.raises(ValueError, match="owner 'no-such-user-here': no such user"):
        Access("no-such-user-here", None, None)
    with pytest.raises(ValueError, match="group 'no-such-group-here': no such group"):
        Access(None, "no-such-group-here", None)


# -- network namespaces by path or pid -----------------------------------------------------------


def test_netns_specs_name_their_files() -> None:
    assert netlink.netns_path("blue") == "/var/run/netns/blue"
    assert netlink.netns_path("pid:4242") == "/proc/4242/ns/net"
    assert netlink.netns_path("/var/run/docker/netns/abc") == "/var/run/docker/netns/abc"


def test_a_pinned_namespace_is_the_one_named() -> None:
    fd, path = netlink.pin_netns(f"pid:{os.getpid()}")
    try:
        assert os.stat(path).st_ino == os.stat("/proc/self/ns/net").st_ino
    finally:
        os.close(fd)
    with pytest.raises(OSError, match="is not a network namespace"):
        netlink.pin_netns("/proc/self/ns/uts")
    with pytest.raises(OSError, match=r"network namespace pid:4194304 \(/proc/4194304/ns/net\)"):
        netlink.pin_netns("pid:4194304")
