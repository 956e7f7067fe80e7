"""VXLAN ports over real UDP on loopback addresses: encapsulation, head-end replication,
learning, and what is dropped (wrong VNI or flags, strangers, short datagrams)."""

import socket
from collections.abc import Iterator

import pytest
import uvloop

from tests.vswitch.test_dataplane import BCAST, eth, fake, until
from tests.vswitch.test_sockport import tcp_frame, verify_tcp, vnet
from vswitch import segment
from vswitch.dataplane import DataPlane
from vswitch.vxlan import DEFAULT_AGEING, VxlanPort, decapsulate, encapsulate

A = bytes.fromhex("020000000001")
B = bytes.fromhex("020000000002")
C = bytes.fromhex("020000000003")
LOCAL, PEER1, PEER2, STRANGER = "127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((LOCAL, 0))
        return int(probe.getsockname()[1])


class Peer:
    """A remote VTEP: a UDP socket at its address and the VXLAN port."""

    def __init__(self, address: str, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((address, port))
        self.sock.settimeout(5)

    def recv(self) -> bytes:
        return self.sock.recv(70000)

    def pending(self) -> list[bytes]:
        self.sock.setblocking(False)
        out = []
        try:
            while True:
                out.append(self.sock.recv(70000))
        except BlockingIOError:
            return out
        finally:
            self.sock.settimeout(5)


@pytest.fixture
def lab() -> Iterator[tuple[VxlanPort, Peer, Peer, Clock]]:
    port = free_port()
    clock = Clock()
    one, two = Peer(PEER1, port), Peer(PEER2, port)
    dev = VxlanPort("vx", vni=42, local=LOCAL, remotes=[PEER1, PEER2], port=port, clock=clock)
    yield dev, one, two, clock
    dev.close()
    one.sock.close()
    two.sock.close()


def send_from(address: str, to_port: int, data: bytes) -> None:
    """A datagram from `address` at an arbitrary source port (as a kernel VTEP's flow hash)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((address, 0))
        sock.sendto(data, (LOCAL, to_port))


def read(dev: VxlanPort, want: int) -> list[bytes]:
    frames: list[bytes] = []
    for _ in range(1000):
        frames += dev.read_batch(dev.fds[0])
        if len(frames) >= want:
            break
    return frames


def test_header_codec() -> None:
    data = encapsulate(42, eth(B, A))
    assert data[:8] == bytes.fromhex("0800000000002a00") and decapsulate(data, 42) == eth(B, A)
    assert decapsulate(data, 43) == "bad_vni"
    assert decapsulate(b"\x00" + data[1:], 42) == "bad_flags"
    assert decapsulate(b"\xff" + data[1:], 42) == eth(B, A)  # reserved bits ignored
    assert decapsulate(data[:20], 42) == "short"


def test_floods_go_to_every_remote_and_learned_unicast_to_one(
    lab: tuple[VxlanPort, Peer, Peer, Clock],
) -> None:
    dev, one, two, clock = lab
    port = dev.remotes[0][1]
    result = dev.write_batch([eth(BCAST, A, b"arp?")])
    assert result.packets == 1
    assert one.recv() == two.recv() == encapsulate(42, eth(BCAST, A, b"arp?"))
    # unknown unicast: flooded too
    dev.write_batch([eth(C, A, b"who are you")])
    assert one.recv() == two.recv() == encapsulate(42, eth(C, A, b"who are you"))
    # C speaks from behind peer two (any source port): learned there
    send_from(PEER2, port, encapsulate(42, eth(A, C, b"me")))
    assert read(dev, 1) == [eth(A, C, b"me")]
    assert dev.lookup(C, clock.now) == (PEER2, port)
    dev.write_batch([eth(C, A, b"just you")])
    assert two.recv() == encapsulate(42, eth(C, A, b"just you"))
    assert one.pending() == []
    # a MAC that moves is followed
    send_from(PEER1, port, encapsulate(42, eth(BCAST, C, b"moved")))
    read(dev, 1)
    dev.write_batch([eth(C, A, b"again")])
    assert one.recv() == encapsulate(42, eth(C, A, b"again"))
    assert two.pending() == []
    # and forgotten after the ageing time: flooded again
    clock.now += DEFAULT_AGEING + 1
    dev.write_batch([eth(C, A, b"still there?")])
    assert one.recv() == two.recv() == encapsulate(42, eth(C, A, b"still there?"))


@pytest.mark.parametrize(
    ("source", "data", "reason"),
    [
        (PEER1, encapsulate(43, eth(BCAST, C)), "bad_vni"),
        (PEER1, b"\x00" + encapsulate(42, eth(BCAST, C))[1:], "bad_flags"),
        (PEER1, encapsulate(42, b"tiny"), "short"),
        (STRANGER, encapsulate(42, eth(BCAST, C)), "unknown_remote"),
    ],
)
def test_bad_datagrams_are_dropped_and_counted(
    lab: tuple[VxlanPort, Peer, Peer, Clock], source: str, data: bytes, reason: str
) -> None:
    dev, _, _, clock = lab
    port = dev.remotes[0][1]
    send_from(source, port, data)
    send_from(PEER1, port, encapsulate(42, eth(BCAST, A, b"good")))
    assert read(dev, 1) == [eth(BCAST, A, b"good")]  # the next one still comes through
    assert dev.refused == {reason: 1}
    assert dev.dev.rx_malformed == 1 and dev.dev.rx_dropped_bytes == len(data) - 8
    assert dev.lookup(C, clock.now) is None  # nothing learned from it


def test_a_full_table_is_swept_at_most_every_quarter_ageing(
    lab: tuple[VxlanPort, Peer, Peer, Clock],
) -> None:
    """A MAC flood from behind a remote must not cost a scan of the table per datagram."""
    dev, _, _, clock = lab
    dev.ageing, dev.max_entries = 2.0, 2  # a sweep every 0.5 s at most
    port = dev.remotes[0][1]

    def hear(mac: bytes) -> None:
        send_from(PEER1, port, encapsulate(42, eth(BCAST, mac)))
        assert read(dev, 1) == [eth(BCAST, mac)]  # switched, learned or not

    hear(A)
    clock.now += 1.0
    hear(B)  # the table is full
    clock.now += 0.9
    hear(C)  # swept: nothing aged yet, C not learned
    assert dev.lookup(C, clock.now) is None
    clock.now += 0.2  # A has aged (2.1 s), but the last sweep was 0.2 s ago
    hear(C)
    assert dev.lookup(C, clock.now) is None and A in dev.fdb
    clock.now += 0.3
    hear(C)  # a sweep is due: A goes, C takes its place
    assert dev.lookup(C, clock.now) == (PEER1, port) and A not in dev.fdb
    assert dev.lookup(B, clock.now) == (PEER1, port)


def test_offloaded_frames_are_segmented_per_remote() -> None:
    port = free_port()
    peer = Peer(PEER1, port)
    dev = VxlanPort("vx", vni=7, local=LOCAL, remotes=[PEER1], port=port, vnet_hdr=10)
    payload = bytes(range(256)) * 12
    dev.write_batch([vnet(1, segment.GSO_TCPV4, 1400, 34, 16) + tcp_frame(payload)])
    got = [peer.recv() for _ in range(3)]
    assert all(d[:8] == encapsulate(7, b"") for d in got)
    inner = [d[8:] for d in got]
    assert b"".join(verify_tcp(f, False)[2] for f in inner) == payload
    send_from(PEER1, port, encapsulate(7, eth(BCAST, C)))
    assert read(dev, 1) == [bytes(10) + eth(BCAST, C)]
    dev.close()
    peer.sock.close()


def test_construction_errors_name_the_cause() -> None:
    with pytest.raises(OSError, match=r"vxlan 192\.0\.2\.77:4789: .*local must be an address"):
        VxlanPort("vx", vni=1, local="192.0.2.77", remotes=["192.0.2.78"])
    with pytest.raises(ValueError, match="out of range"):
        VxlanPort("vx", vni=1 << 24, local=LOCAL, remotes=[PEER1])
    with pytest.raises(ValueError, match="not all of local"):
        VxlanPort("vx", vni=1, local=LOCAL, remotes=["2001:db8::1"])


def test_a_vxlan_port_on_a_switch() -> None:
    async def scenario() -> None:
        port = free_port()
        one = Peer(PEER1, port)
        with DataPlane() as dp:
            dp.add_switch("lan0", offload=False)
            dev = VxlanPort("vx", vni=42, local=LOCAL, remotes=[PEER1], port=port)
            dp.add_port("lan0", "vx", dev)
            _, far = fake(dp, "lan0", "p1")
            send_from(PEER1, port, encapsulate(42, eth(BCAST, C, b"hello")))
            await until(lambda: far.drain() == [eth(BCAST, C, b"hello")])
            far.sock.send(eth(C, A, b"reply"))
            await until(lambda: bool(one.pending() == [encapsulate(42, eth(C, A, b"reply"))]))
            counts = dp.counters()["lan0"]["ports"]["vx"]
            assert (counts["rx_packets"], counts["tx_packets"], counts["link"]) == (1, 1, True)
            send_from(PEER1, port, encapsulate(9, eth(BCAST, C)))
            await until(lambda: dp.counters()["lan0"]["ports"]["vx"]["drops"]["malformed"] == 1)
            status = dp.switch_status()[0]["ports"][0]
            assert status["type"] == "vxlan" and status.get("refused") == {"bad_vni": 1}
        one.sock.close()

    uvloop.run(scenario())
