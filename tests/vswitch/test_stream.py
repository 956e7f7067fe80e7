"""Stream ports: a Unix stream socket, one peer at a time, frames as a 4-byte length + frame."""

import asyncio
import os
import socket
import stat
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvloop

from tests.vswitch.test_dataplane import BCAST, eth, fake, until
from tests.vswitch.test_sockport import FakeIO, tcp_frame, verify_tcp, vnet
from vswitch import segment
from vswitch.dataplane import DataPlane
from vswitch.stream import MAX_FRAME, StreamPort

A = bytes.fromhex("020000000001")
B = bytes.fromhex("020000000002")


def framed(*frames: bytes) -> bytes:
    return b"".join(struct.pack("!I", len(f)) + f for f in frames)


@pytest.fixture
def port(tmp_path: Path) -> Iterator[tuple[StreamPort, FakeIO, list[bool]]]:
    dev = StreamPort("vm1", str(tmp_path / "vm1.sock"))
    io = FakeIO()
    dev.io = io
    links: list[bool] = []
    dev.on_link = links.append
    yield dev, io, links
    dev.close()


def connect(dev: StreamPort) -> socket.socket:
    peer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    peer.connect(dev.path)
    assert dev.read_batch(dev.fds[0]) == []  # the listener: accepts
    return peer


def test_a_peer_brings_the_link_up_and_frames_are_reassembled_across_reads(
    port: tuple[StreamPort, FakeIO, list[bool]],
) -> None:
    dev, io, links = port
    assert not dev.link_up and dev.fds == (dev.fds[0],)
    peer = connect(dev)
    assert dev.link_up and links == [True]
    pfd = dev.fds[1]
    assert io.watched == {pfd}
    frames = [eth(BCAST, A, b"one"), eth(B, A, b"two" * 100), eth(B, A, b"three")]
    data = framed(*frames)
    got: list[bytes] = []
    done = 0
    # in pieces that split the length prefix and the frames themselves
    for cut in (2, 3, 30, 200, len(data)):
        peer.sendall(data[done:cut])
        done = cut
        got += dev.read_batch(pfd)
        whole = [f for n, f in enumerate(frames) if len(framed(*frames[: n + 1])) <= cut]
        assert got == whole  # only whole frames ever come out
    assert got == [eth(BCAST, A, b"one"), eth(B, A, b"two" * 100), eth(B, A, b"three")]
    peer.close()


def test_frames_split_byte_by_byte_come_out_whole(
    port: tuple[StreamPort, FakeIO, list[bool]],
) -> None:
    dev, _, _ = port
    peer = connect(dev)
    pfd = dev.fds[1]
    frame = eth(B, A, bytes(range(100)))
    out: list[bytes] = []
    for byte in framed(frame, frame):
        peer.send(bytes([byte]))
        out += dev.read_batch(pfd)
    assert out == [frame, frame]
    peer.close()


def test_an_oversize_length_drops_the_peer_and_the_next_is_accepted(
    port: tuple[StreamPort, FakeIO, list[bool]],
) -> None:
    dev, io, links = port
    peer = connect(dev)
    pfd = dev.fds[1]
    peer.sendall(framed(eth(B, A)) + struct.pack("!I", MAX_FRAME + 1) + b"x" * 100)
    assert dev.read_batch(pfd) == [eth(B, A)]  # what came before is kept
    assert not dev.link_up and links == [True, False]
    assert dev.refused == {"oversize_length": 1} and dev.dev.rx_oversize == 1
    assert io.watched == set() and len(dev.fds) == 1
    peer.settimeout(5)
    assert peer.recv(10) == b""  # dropped
    second = connect(dev)
    assert dev.link_up and links == [True, False, True] and dev.peers == 2
    second.sendall(framed(eth(A, B)))
    assert dev.read_batch(dev.fds[1]) == [eth(A, B)]
    second.close()


def test_a_second_peer_is_refused_while_the_first_keeps_its_place(
    port: tuple[StreamPort, FakeIO, list[bool]],
) -> None:
    dev, _, links = port
    first = connect(dev)
    pfd = dev.fds[1]
    second = connect(dev)
    second.settimeout(5)
    assert second.recv(10) == b""
    assert dev.refused == {"busy": 1} and links == [True]
    first.sendall(framed(eth(B, A)))
    assert dev.read_batch(pfd) == [eth(B, A)]
    first.close()
    assert dev.read_batch(pfd) == [] and links == [True, False]  # hang-up: link down
    third = connect(dev)
    assert dev.link_up and dev.peers == 2
    third.close()


@pytest.mark.parametrize("left", [2, 4, 30])  # inside the length, after it, inside the frame
def test_a_peer_leaving_mid_frame_has_the_part_counted_and_the_next_starts_clean(
    port: tuple[StreamPort, FakeIO, list[bool]], left: int
) -> None:
    dev, _, links = port
    peer = connect(dev)
    pfd = dev.fds[1]
    peer.sendall(framed(eth(B, A)) + framed(eth(BCAST, A, b"cut" * 20))[:left])
    assert dev.read_batch(pfd) == [eth(B, A)]
    peer.close()
    assert dev.read_batch(pfd) == [] and links == [True, False]
    assert dev.refused == {"truncated": 1} and dev.dev.rx_malformed == 0  # not a frame read
    second = connect(dev)
    second.sendall(framed(eth(A, B)))
    assert dev.read_batch(dev.fds[1]) == [eth(A, B)]  # nothing of the first peer's is left
    second.close()
    dev.read_batch(dev.fds[1])
    assert dev.refused == {"truncated": 1}  # a peer that leaves between frames cuts nothing


def test_writes_carry_the_length_and_wait_for_a_slow_peer(
    port: tuple[StreamPort, FakeIO, list[bool]],
) -> None:
    dev, io, _ = port
    peer = connect(dev)
    pfd = dev.fds[1]
    result = dev.write_batch([eth(A, B, b"x"), eth(BCAST, B, b"yy")])
    assert result.packets == 2 and not dev.dev.tx_errors
    peer.settimeout(5)
    assert peer.recv(1000) == framed(eth(A, B, b"x"), eth(BCAST, B, b"yy"))
    # the peer does not read: what its socket cannot take waits, in order
    big = [eth(A, B, bytes([i % 256]) * 1400) for i in range(6000)]
    for i in range(0, len(big), 64):
        dev.write_batch(big[i : i + 64])
    assert pfd in io.writers
    received = bytearray()
    expected = framed(*big)
    peer.setblocking(False)
    while len(received) < len(expected):
        try:
            received += peer.recv(1 << 20)
        except BlockingIOError:
            assert pfd in io.writers
            io.writers[pfd]()  # the loop would call it once the socket is writable
    assert bytes(received) == expected
    assert pfd not in io.writers
    peer.close()


def test_writes_without_a_peer_are_no_link_drops(
    port: tuple[StreamPort, FakeIO, list[bool]],
) -> None:
    dev, _, _ = port
    result = dev.write_batch([eth(A, B)])
    assert result.packets == 0
    assert dev.dev.tx_drops() == {"tx_full": 0, "no_link": 1, "tx_error": 0}


def test_offloaded_frames_reach_the_peer_as_plain_segments(tmp_path: Path) -> None:
    dev = StreamPort("vm1", str(tmp_path / "s"), vnet_hdr=10)
    dev.io = FakeIO()
    peer = connect(dev)
    payload = bytes(range(256)) * 20
    gso = vnet(segment.NEEDS_CSUM, segment.GSO_TCPV4, 1448, 34, 16) + tcp_frame(payload)
    dev.write_batch([gso])
    peer.settimeout(5)
    data = b""
    while len(data) < len(payload) + 4 * 54:
        data += peer.recv(1 << 16)
    pieces = []
    while data:
        (n,) = struct.unpack_from("!I", data)
        pieces.append(data[4 : 4 + n])
        data = data[4 + n :]
    assert [len(p) - 54 for p in pieces] == [1448, 1448, 1448, 776]
    assert b"".join(verify_tcp(p, False)[2] for p in pieces) == payload
    # what the peer sends gets a zero virtio-net header (no offload asked)
    peer.sendall(framed(eth(B, A)))
    assert dev.read_batch(dev.fds[1]) == [bytes(10) + eth(B, A)]
    peer.close()
    dev.close()


def test_close_removes_the_socket_and_mode_is_applied(tmp_path: Path) -> None:
    path = tmp_path / "vm.sock"
    dev = StreamPort("vm1", str(path), mode=0o660, group=str(os.getgid()))
    assert stat.S_IMODE(path.stat().st_mode) == 0o660
    dev.close()
    assert not path.exists()
    dev.close()


def test_a_stream_port_on_a_switch(tmp_path: Path) -> None:
    """End to end on the data plane: link events, switching both ways, a new peer."""

    async def scenario() -> None:
        with DataPlane() as dp:
            dp.add_switch("lan0", offload=False)
            events: list[tuple[str, str, bool]] = []
            dp.on_link = lambda sw, port, up: events.append((sw, port, up))
            dev = StreamPort("vm1", str(tmp_path / "vm1.sock"))
            dp.add_port("lan0", "vm1", dev)
            _, far = fake(dp, "lan0", "p1")
            loop = asyncio.get_running_loop()
            reader, writer = await asyncio.open_unix_connection(dev.path)
            await until(lambda: events == [("lan0", "vm1", True)])
            writer.write(framed(eth(BCAST, A, b"hello")))
            await until(lambda: far.drain() == [eth(BCAST, A, b"hello")])
            far.sock.send(eth(A, B, b"back"))
            got = await asyncio.wait_for(reader.readexactly(4 + len(eth(A, B, b"back"))), 5)
            assert got == framed(eth(A, B, b"back"))
            writer.close()
            await until(lambda: events[-1] == ("lan0", "vm1", False))
            counts = dp.counters()["lan0"]["ports"]["vm1"]
            assert (counts["rx_packets"], counts["tx_packets"], counts["link"]) == (1, 1, False)
            assert counts["refused"] == {}
            assert dp.switch_status()[0]["ports"][0]["type"] == "stream"
            await loop.sock_connect(sock := socket.socket(socket.AF_UNIX), dev.path)
            await until(lambda: events[-1] == ("lan0", "vm1", True))
            sock.close()
            dp.remove_port("lan0", "vm1")
            assert not os.path.exists(dev.path)

    uvloop.run(scenario())
