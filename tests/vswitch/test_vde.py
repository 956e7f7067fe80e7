"""vde ports: the vde_switch protocol with a client written here, as libvdeplug does it."""

import asyncio
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvloop

from tests.vswitch.test_dataplane import BCAST, eth, fake, until
from tests.vswitch.test_sockport import FakeIO
from vswitch.dataplane import DataPlane
from vswitch.vde import (
    MAGIC,
    MAX_FRAME,
    REQUEST_TIMEOUT,
    VdeClient,
    VdePort,
    parse_request,
    sockaddr,
)

A = bytes.fromhex("020000000001")
B = bytes.fromhex("020000000002")
C = bytes.fromhex("020000000003")


def request(
    path: str,
    *,
    magic: int = MAGIC,
    version: int = 3,
    kind: int = 0,
    description: bytes = b"test client",
) -> bytes:
    """struct request_v3 as libvdeplug sends it: without the unused tail of the description."""
    return struct.pack("=III", magic, version, kind) + sockaddr(path) + description


class Client:
    """A vde client: a ctl connection and a datagram socket in the switch directory."""

    count = 0

    def __init__(self, directory: str) -> None:
        Client.count += 1
        self.ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.ctl.connect(os.path.join(directory, "ctl"))
        self.path = os.path.join(directory, f".{os.getpid():05d}-{Client.count:05d}")
        self.data = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.data.bind(self.path)
        self.data.settimeout(5)
        self.ctl.settimeout(5)

    def handshake(self, raw: bytes | None = None) -> str:
        self.ctl.sendall(request(self.path) if raw is None else raw)
        reply = self.ctl.recv(110)
        assert len(reply) == 110, reply
        family, path = struct.unpack("=H108s", reply)
        assert family == socket.AF_UNIX
        switch_end = path.split(b"\0", 1)[0].decode()
        self.data.connect(switch_end)
        os.unlink(self.path)  # as libvdeplug does once connected
        return switch_end

    def close(self) -> None:
        self.ctl.close()
        self.data.close()


@pytest.fixture
def vde(tmp_path: Path) -> Iterator[tuple[VdePort, FakeIO]]:
    port = VdePort("lan", str(tmp_path / "lan.vde"))
    io = FakeIO()
    port.io = io
    yield port, io
    port.close()


def serve(port: VdePort) -> None:
    """Let the port handle whatever its fds have (the data plane would on readiness)."""
    for fd in port.fds:
        port.read_batch(fd)


def test_the_handshake_makes_a_port_per_client(vde: tuple[VdePort, FakeIO]) -> None:
    port, io = vde
    assert not port.link_up
    client = Client(port.path)
    serve(port)  # accept
    client.ctl.sendall(request(client.path))
    serve(port)  # the request
    reply = client.ctl.recv(110)
    switch_end = struct.unpack("=H108s", reply)[1].split(b"\0", 1)[0].decode()
    assert switch_end == os.path.join(port.path, "port.1")
    child = io.children["1"]
    assert isinstance(child, VdeClient) and child.ifname == "lan/1" and child.link_up
    assert child.description == "test client" and port.link_up
    client.data.connect(switch_end)
    # one datagram is one frame, both ways
    client.data.send(eth(BCAST, A))
    assert child.read_batch(child.fds[0]) == [eth(BCAST, A)]
    child.write_batch([eth(A, B)])
    assert client.data.recv(2000) == eth(A, B)
    # a second client gets the next number, the first's hang-up removes only its port
    other = Client(port.path)
    serve(port)
    other.ctl.sendall(request(other.path))
    serve(port)
    assert set(io.children) == {"1", "2"}
    client.close()
    serve(port)
    assert set(io.children) == {"2"} and io.removed == ["1"] and port.link_up
    assert not os.path.exists(switch_end)  # the port's data socket is gone with it
    other.close()
    serve(port)
    assert io.children == {} and not port.link_up
    assert port.refused == {}


def test_a_datagram_longer_than_a_frame_is_dropped_as_oversize(vde: tuple[VdePort, FakeIO]) -> None:
    port, io = vde
    client = Client(port.path)
    serve(port)
    client.ctl.sendall(request(client.path))
    serve(port)
    client.data.connect(struct.unpack("=H108s", client.ctl.recv(110))[1].split(b"\0", 1)[0])
    child = io.children["1"]
    client.data.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    biggest = eth(BCAST, A, bytes(MAX_FRAME - 14))
    client.data.send(biggest + b"x")  # one byte too many: never read cut short
    client.data.send(biggest)
    client.data.send(eth(BCAST, A, b"next"))
    assert child.read_batch(child.fds[0]) == [biggest, eth(BCAST, A, b"next")]
    assert child.refused == {"oversize": 1} and child.dev.rx_oversize == 1
    client.close()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"hello", "short_request"),
        (request("/tmp/x", magic=0xDEADBEEF), "bad_magic"),
        (request("/tmp/x", version=2), "bad_version"),
        (request("/tmp/x", kind=7), "bad_type"),
        (struct.pack("=III", MAGIC, 3, 0) + struct.pack("=H108s", 2, b"/tmp/x"), "bad_address"),
        (request("relative/path"), "bad_address"),
        (request("/proc/self/status"), "foreign_socket"),  # not a socket at all
    ],
)
def test_garbage_on_ctl_is_refused_and_counted_and_disturbs_nothing(
    vde: tuple[VdePort, FakeIO], raw: bytes, reason: str
) -> None:
    port, io = vde
    good = Client(port.path)
    serve(port)
    good.ctl.sendall(request(good.path))
    serve(port)
    good.data.connect(os.path.join(port.path, "port.1"))
    good.ctl.recv(110)
    bad = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bad.connect(port.ctl)
    serve(port)
    bad.sendall(raw)
    serve(port)
    bad.settimeout(5)
    assert bad.recv(200) == b""  # refused: closed without an answer
    assert port.refused == {reason: 1}
    assert set(io.children) == {"1"}
    child = io.children["1"]
    good.data.send(eth(BCAST, A))
    assert child.read_batch(child.fds[0]) == [eth(BCAST, A)]
    assert len(port.fds) == 2  # the listener and the good client's ctl
    good.close()
    bad.close()


def test_parse_request_takes_the_description_and_port_requests() -> None:
    assert parse_request(request("/run/x/.00001-00000", kind=(5 << 8))) == (
        "/run/x/.00001-00000",
        "test client",
    )
    assert parse_request(request("/a", description=b"")) == ("/a", "")
    assert parse_request(request("/a", kind=1)) == ("/a", "test client")  # REQ_NEW_PORT0


def test_a_silent_connection_and_too_many_clients_are_refused(tmp_path: Path) -> None:
    port = VdePort("lan", str(tmp_path / "d"), max_clients=1)
    io = FakeIO()
    port.io = io
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.connect(port.ctl)
    serve(port)
    extra = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    extra.connect(port.ctl)
    serve(port)
    assert port.refused == {"too_many": 1}
    assert io.timers and io.timers[0][0] == REQUEST_TIMEOUT
    io.fire_timers()
    assert port.refused == {"too_many": 1, "no_request": 1}
    silent.settimeout(5)
    assert silent.recv(10) == b""
    assert port.fds == (port.fds[0],)
    silent.close()
    extra.close()
    port.close()
    assert not os.path.exists(port.path)  # the directory it made is gone


def test_a_directory_path_that_is_a_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "lan.vde"
    path.write_text("")
    with pytest.raises(OSError, match="exists and is not a directory"):
        VdePort("lan", str(path))
    os.unlink(path)
    os.mkdir(path)
    (path / "ctl").write_text("")
    with pytest.raises(OSError, match="ctl exists and is not a socket"):
        VdePort("lan", str(path))
    assert path.is_dir()  # not ours: left in place


def test_vde_clients_are_switch_ports(tmp_path: Path) -> None:
    """On the data plane: each client is NAME/N, learned and flooded like any port."""

    async def scenario() -> None:
        with DataPlane() as dp:
            dp.add_switch("lan0", offload=False)
            events: list[tuple[str, str, bool]] = []
            dp.on_link = lambda sw, port, up: events.append((sw, port, up))
            port = VdePort("lan", str(tmp_path / "lan.vde"))
            dp.add_port("lan0", "lan", port)
            _, far = fake(dp, "lan0", "p1")
            loop = asyncio.get_running_loop()
            one, two = Client(port.path), Client(port.path)
            await loop.run_in_executor(None, one.handshake)
            await loop.run_in_executor(None, two.handshake)
            await until(lambda: {"lan/1", "lan/2"} <= set(dp.switch("lan0").ports))
            assert ("lan0", "lan/1", True) in events and ("lan0", "lan/2", True) in events
            one.data.send(eth(BCAST, A, b"who"))  # flooded to the fake and to client 2
            await until(lambda: far.drain() == [eth(BCAST, A, b"who")])
            got = await loop.run_in_executor(None, two.data.recv, 2000)
            assert got == eth(BCAST, A, b"who")
            two.data.send(eth(A, B, b"to one"))  # A was learned on lan/1: only there
            got = await loop.run_in_executor(None, one.data.recv, 2000)
            assert got == eth(A, B, b"to one")
            far.sock.send(eth(C, A, b"unknown"))  # flooded, never back to the fake
            assert await loop.run_in_executor(None, two.data.recv, 2000) == eth(C, A, b"unknown")
            assert dp.switch("lan0").lookup(A) is not None
            one.close()
            await until(lambda: "lan/1" not in dp.switch("lan0").ports)
            assert events[-1] == ("lan0", "lan/1", False)
            status = {p["name"]: p for p in dp.switch_status()[0]["ports"]}
            assert status["lan/2"]["type"] == "vde" and status["lan/2"]["rx_packets"] == 1
            assert status["lan"]["link"] and status["lan"]["refused"] == {}
            dp.remove_port("lan0", "lan")  # its clients go with it
            assert "lan/2" not in dp.switch("lan0").ports
            assert not os.path.exists(port.path)
            two.close()

    uvloop.run(scenario())


def test_a_client_the_switch_refuses_is_turned_away_alone(vde: tuple[VdePort, FakeIO]) -> None:
    port, io = vde

    def full(suffix: str, dev: object) -> None:
        raise ValueError("switch lan0: port lan/1 exists")

    io.add_child = full  # type: ignore[method-assign]
    client = Client(port.path)
    serve(port)
    client.ctl.sendall(request(client.path))
    serve(port)  # never raises out of the read path
    assert port.refused == {"not_attached": 1} and not port.link_up
    assert client.ctl.recv(200)[:2] == struct.pack("=H", socket.AF_UNIX)  # answered, then closed
    assert client.ctl.recv(200) == b""
    assert not os.path.exists(os.path.join(port.path, "port.1"))
    client.close()
