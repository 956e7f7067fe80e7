"""The DataPlane runtime on uvloop with socket-pair devices (no privileges needed)."""

import asyncio
import errno
import socket
import time
from collections.abc import Awaitable, Callable, Sequence

import pytest
import uvloop

from tests.vswitch.test_ports import FakePort
from vswitch.dataplane import DataPlane
from vswitch.fwd import Emit

A = bytes.fromhex("020000000001")
B = bytes.fromhex("020000000002")
BCAST = b"\xff" * 6


def eth(dst: bytes, src: bytes, payload: bytes = b"payload") -> bytes:
    return dst + src + b"\x08\x00" + payload


class Far:
    """The far end of a fake port (what a VM would be)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.setblocking(False)
        self.got: list[bytes] = []

    def drain(self) -> list[bytes]:
        while True:
            try:
                self.got.append(self.sock.recv(4096))
            except BlockingIOError:
                return self.got


async def until(cond: Callable[[], bool], deadline: float = 5.0) -> None:
    end = time.monotonic() + deadline
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.005)


def run(scenario: Callable[[DataPlane], Awaitable[None]]) -> None:
    async def main() -> None:
        with DataPlane() as dp:
            await scenario(dp)

    uvloop.run(main())


def fake(dp: DataPlane, switch: str, name: str, **kw: bool) -> tuple[FakePort, Far]:
    mine, far = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    dev = FakePort(mine, dp.switch(switch).vnet_hdr)
    dp.add_port(switch, name, dev, **kw)
    return dev, Far(far)


def test_frames_are_switched_and_counted() -> None:
    async def scenario(dp: DataPlane) -> None:
        dp.add_switch("lan0", offload=False)
        _, f1 = fake(dp, "lan0", "p1")
        _, f2 = fake(dp, "lan0", "p2")
        _, f3 = fake(dp, "lan0", "p3")
        f2.sock.send(eth(BCAST, B))
        await until(lambda: len(f1.drain()) == 1 and len(f3.drain()) == 1)
        for i in range(100):
            f1.sock.send(eth(B, A, bytes([i]) * 50))
        await until(lambda: len(f2.drain()) == 100)
        assert f2.got == [eth(B, A, bytes([i]) * 50) for i in range(100)]
        assert f3.drain() == [eth(BCAST, B)]  # B was known: no unicast reached p3
        stats = dp.stats()["lan0"]
        assert stats["macs"] == 2 and stats["mode"] == "learning" and not stats["offload"]
        p1 = stats["ports"]["p1"]
        assert p1["rx_packets"] == 100 and p1["rx_bytes"] == 100 * 64
        assert stats["ports"]["p2"]["tx_packets"] == 100
        assert stats["ports"]["p2"]["tx_bytes"] == 100 * 64

    run(scenario)


def test_write_errors_on_one_port_do_not_stop_the_others() -> None:
    async def scenario(dp: DataPlane) -> None:
        dp.add_switch("lan0", offload=False)
        _, f1 = fake(dp, "lan0", "p1")
        _, f2 = fake(dp, "lan0", "p2")
        bad, _ = fake(dp, "lan0", "p3")

        def eio(frame: bytes) -> int:
            raise OSError(5, "Input/output error")

        bad._sender = eio
        for _ in range(10):
            f1.sock.send(eth(BCAST, A))
        await until(lambda: len(f2.drain()) == 10)
        p3 = dp.stats()["lan0"]["ports"]["p3"]
        assert p3["tx_dropped"] == 10 and p3["tx_errors"] == {"EIO": 10}
        f2.sock.send(eth(A, B))
        await until(lambda: len(f1.drain()) == 1)

    run(scenario)


def test_hooks_can_send_through_the_data_plane() -> None:
    async def scenario(dp: DataPlane) -> None:
        sw = dp.add_switch("lan0", offload=True)
        _, f1 = fake(dp, "lan0", "p1")
        _, f2 = fake(dp, "lan0", "p2")
        seen: list[tuple[str, bytes]] = []

        def on_multicast(now: float, port: str, frame: bytes) -> Sequence[Emit]:
            seen.append((port, frame))
            dp.send("lan0", eth(BCAST, B, b"from-the-node"))  # written after the batch
            return [(port, eth(A, B, b"reply"))]

        sw.on_multicast = on_multicast
        f1.sock.send(bytes(10) + eth(BCAST, A))
        await until(lambda: len(f1.drain()) == 2 and len(f2.drain()) == 2)
        assert seen == [("p1", eth(BCAST, A))]
        # the node's frame was queued inside the hook, before the hook returned its reply
        assert f1.got == [
            bytes(10) + eth(BCAST, B, b"from-the-node"),
            bytes(10) + eth(A, B, b"reply"),
        ]
        assert f2.got == [bytes(10) + eth(BCAST, A), bytes(10) + eth(BCAST, B, b"from-the-node")]
        # outside a batch: written at once
        assert dp.send("lan0", eth(A, B, b"direct"), port="p1") is None
        assert f1.drain()[-1] == bytes(10) + eth(A, B, b"direct")
        dp.switch("lan0").set_link("p1", False)
        dp.switch("lan0").set_link("p2", False)
        assert dp.send("lan0", eth(BCAST, B, b"nowhere")) == errno.ENETDOWN

    run(scenario)


def test_a_vanished_device_is_dropped_from_the_loop_and_reported_down() -> None:
    async def scenario(dp: DataPlane) -> None:
        dp.add_switch("lan0", offload=False)
        _, f1 = fake(dp, "lan0", "p1")
        _, f2 = fake(dp, "lan0", "p2")
        events: list[tuple[str, str, bool]] = []
        dp.on_link = lambda sw, port, up: events.append((sw, port, up))
        f2.sock.close()
        await until(lambda: events == [("lan0", "p2", False)])
        f1.sock.send(eth(BCAST, A))
        await until(lambda: dp.stats()["lan0"]["ports"]["p1"]["rx_packets"] == 1)
        assert dp.stats()["lan0"]["ports"]["p2"]["tx_packets"] == 0  # down: not flooded to

    run(scenario)


def test_port_management() -> None:
    async def scenario(dp: DataPlane) -> None:
        dp.add_switch("lan0", offload=False)
        dev, _ = fake(dp, "lan0", "p1", kernel=True)
        assert dp.device("lan0", "p1") is dev
        assert dp.stats()["lan0"]["ports"]["p1"]["kernel"]
        with pytest.raises(ValueError):
            fake(dp, "lan0", "p1")
        mine, _ = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        wrong = FakePort(mine, vnet_hdr=10)
        with pytest.raises(ValueError):
            dp.add_port("lan0", "p9", wrong)
        assert wrong.closed  # the data plane owned it and closed it
        dp.remove_port("lan0", "p1")
        assert dev.closed and "p1" not in dp.switch("lan0").ports
        with pytest.raises(ValueError):
            dp.add_switch("lan0")
        last, _ = fake(dp, "lan0", "p2")
        dp.close()
        dp.close()
        assert last.closed

    run(scenario)


def test_switch_status_follows_the_status_schema() -> None:
    async def scenario(dp: DataPlane) -> None:
        sw = dp.add_switch("lan0", offload=False)
        _, f1 = fake(dp, "lan0", "p1")
        _, f2 = fake(dp, "lan0", "p2", kernel=True)
        sw.egress_filter = lambda now, port, frame: None  # the kernel port's frames: filtered
        f1.sock.send(eth(BCAST, A))
        f1.sock.send(b"runt")
        f2.sock.send(eth(BCAST, B))
        await until(lambda: len(f2.drain()) == 1 and sw.ports["p2"].counters.rx_filtered == 1)
        status = dp.switch_status()
        assert status == [
            {
                "name": "lan0",
                "mode": "learning",
                "mac_table": 1,
                "ports": [
                    {
                        "name": "p1",
                        "type": "fake",
                        "link": True,
                        "rx_packets": 2,
                        "rx_bytes": len(eth(BCAST, A)) + 4,
                        "rx_drops": 1,
                        "tx_packets": 0,
                        "tx_bytes": 0,
                        "tx_drops": 0,
                    },
                    {
                        "name": "p2",
                        "type": "fake",
                        "link": True,
                        "rx_packets": 1,
                        "rx_bytes": len(eth(BCAST, B)),
                        "rx_drops": 1,
                        "tx_packets": 1,
                        "tx_bytes": len(eth(BCAST, A)),
                        "tx_drops": 0,
                    },
                ],
            }
        ]

    run(scenario)
