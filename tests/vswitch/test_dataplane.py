"""The DataPlane runtime on uvloop with socket-pair devices (no privileges needed)."""

import errno
import socket
import struct
from collections.abc import Awaitable, Callable, Sequence

import pytest
import uvloop

from tests.vswitch.polling import until
from tests.vswitch.test_ports import FakePort
from vswitch.accounting import DROP_REASONS
from vswitch.dataplane import DataPlane
from vswitch.fwd import Emit
from vswitch.port import read_fd_batch
from vswitch.raw import plain_frames

A = bytes.fromhex("020000000001")
B = bytes.fromhex("020000000002")
BCAST = b"\xff" * 6
NO_DROPS = dict.fromkeys(DROP_REASONS, 0)


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


def run(scenario: Callable[[DataPlane], Awaitable[None]]) -> None:
    async def main() -> None:
        with DataPlane() as dp:
            await scenario(dp)

    uvloop.run(main())


def fake(dp: DataPlane, switch: str, name: str, kernel: bool = False) -> tuple[FakePort, Far]:
    mine, far = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    dev = FakePort(mine, dp.switch(switch).vnet_hdr)
    dp.add_port(switch, name, dev, kernel=kernel)
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
        counts = dp.counters()["lan0"]
        assert counts["macs"] == 2 and counts["mode"] == "learning" and not counts["offload"]
        p1 = counts["ports"]["p1"]
        assert p1["rx_packets"] == 100 and p1["rx_bytes"] == 100 * 64
        assert counts["ports"]["p2"]["tx_packets"] == 100
        assert counts["ports"]["p2"]["tx_bytes"] == 100 * 64

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
        p3 = dp.counters()["lan0"]["ports"]["p3"]
        assert p3["drops"] == {**NO_DROPS, "no_link": 10}  # EIO: a TAP whose link is down
        assert bad.dev.tx_errors == {errno.EIO: 10}
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


def test_frames_sent_while_held_are_written_when_the_block_ends() -> None:
    async def scenario(dp: DataPlane) -> None:
        dp.add_switch("lan0", offload=False)
        p1, f1 = fake(dp, "lan0", "p1")
        _, f2 = fake(dp, "lan0", "p2")
        writes: list[int] = []
        real = p1.write_batch
        p1.write_batch = lambda frames: writes.append(len(frames)) or real(frames)  # type: ignore[method-assign]
        with dp.held():
            for i in range(3):
                assert dp.send("lan0", eth(A, B, bytes([i])), port="p1") is None
            with dp.held():  # nested: written with the outer block
                dp.write("lan0", "p1", eth(A, B, b"w"))
            assert f1.drain() == [] and writes == []
            assert dp.send("lan0", eth(BCAST, B, b"all")) is None
        assert f1.drain() == [eth(A, B, bytes([i])) for i in range(3)] + [
            eth(A, B, b"w"),
            eth(BCAST, B, b"all"),
        ]
        assert writes == [5]  # one write batch for the port
        assert f2.drain() == [eth(BCAST, B, b"all")]
        dp.send("lan0", eth(A, B, b"now"), port="p1")  # outside a block: at once
        assert f1.drain()[-1] == eth(A, B, b"now")

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
        await until(lambda: dp.counters()["lan0"]["ports"]["p1"]["rx_packets"] == 1)
        assert dp.counters()["lan0"]["ports"]["p2"]["tx_packets"] == 0  # down: not flooded to

    run(scenario)


def test_port_management() -> None:
    async def scenario(dp: DataPlane) -> None:
        dp.add_switch("lan0", offload=False)
        dev, _ = fake(dp, "lan0", "p1", kernel=True)
        assert dp.device("lan0", "p1") is dev
        assert dp.counters()["lan0"]["ports"]["p1"]["kernel"]
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
                        "forwarded": 1,
                        "drops": {**NO_DROPS, "malformed": 1},
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
                        "forwarded": 0,
                        "drops": {**NO_DROPS, "filtered": 1},
                    },
                ],
                "table_full": 0,
            }
        ]

    run(scenario)


# -- accounting --------------------------------------------------------------------------------

VMAC = bytes.fromhex("00005e000101")
H = bytes.fromhex("020000000003")
C = bytes.fromhex("020000000004")


def test_every_frame_read_is_forwarded_or_dropped_with_a_reason() -> None:
    async def scenario(dp: DataPlane) -> None:
        sw = dp.add_switch("lan0", offload=False)
        far = {"p1": fake(dp, "lan0", "p1")[1], "p2": fake(dp, "lan0", "p2")[1]}
        far["host"] = fake(dp, "lan0", "host", kernel=True)[1]
        sw.egress_filter = lambda now, port, frame: None if frame.endswith(b"drop") else frame
        claimed: list[bytes] = []

        def special(now: float, port: str, frame: bytes) -> tuple[bool, Sequence[Emit]]:
            claimed.append(frame[14:20])
            return False, ()  # the node takes it

        sw.on_special = special
        sw.set_special_macs([VMAC])
        ingress: dict[bytes, str] = {}
        sent = dict.fromkeys(far, 0)

        def send(port: str, dst: bytes, src: bytes, n: int = 1, suffix: bytes = b"") -> None:
            for _ in range(n):
                tag = b"T%05d" % len(ingress)
                ingress[tag] = port
                far[port].sock.send(eth(dst, src, tag + suffix))
                sent[port] += 1

        async def all_read() -> None:
            ports = dp.switch("lan0").ports
            await until(lambda: all(ports[p].counters.rx_packets == n for p, n in sent.items()))

        send("p2", BCAST, B)
        send("p1", BCAST, A)
        await all_read()  # A and B learned
        send("p1", B, A, 10)  # to p2
        for _ in range(5):
            far["p1"].sock.send(b"runt")  # malformed
            sent["p1"] += 1
        send("p1", A, C, 4)  # A is on p1 itself: same_port
        send("host", BCAST, H, 3, b"drop")  # filtered
        send("host", A, H, 2)  # to p1
        send("p2", VMAC, B, 3)  # claimed by the special hook
        await all_read()
        sw.set_link("p2", False)
        sw.set_link("host", False)
        send("p1", BCAST, A, 6)  # nobody up to take them: no_dest
        await all_read()
        delivered = {f[14:20] for fr in far.values() for f in fr.drain() if len(f) >= 20}
        assert len(delivered) == 1 + 1 + 10 + 2 and len(claimed) == 3

        sw_counts = dp.counters()["lan0"]
        ports = sw_counts["ports"]
        for name, p in ports.items():
            # what the far ends and the hook saw, by ingress port, against the port's counts:
            # forwarded is rx_packets minus the drops, so it matches only if each drop was
            # counted, once (the reasons are checked one by one below)
            forwarded = sum(1 for t in delivered | set(claimed) if ingress[t] == name)
            assert p["rx_packets"] == sent[name]
            assert p["forwarded"] == forwarded, name
        assert {n: {r: v for r, v in p["drops"].items() if v} for n, p in ports.items()} == {
            "p1": {"malformed": 5, "same_port": 4, "no_dest": 6},
            "p2": {},
            "host": {"filtered": 3},
        }
        assert all(list(p["drops"]) == list(DROP_REASONS) for p in ports.values())
        total = sw_counts["total"]
        assert total["rx_packets"] == sum(sent.values())
        assert total["drops"]["malformed"] == 5 and total["drops"]["filtered"] == 3
        assert total["forwarded"] == len(delivered) + len(claimed)
        assert total["tx_packets"] == sum(p["tx_packets"] for p in ports.values())
        # the status view sums the reasons
        status = {p["name"]: p for p in dp.switch_status()[0]["ports"]}
        assert status["p1"]["rx_drops"] == 15 and status["host"]["rx_drops"] == 3

    run(scenario)


def test_a_full_socket_buffer_on_write_is_counted_as_tx_full() -> None:
    async def scenario(dp: DataPlane) -> None:
        dp.add_switch("lan0", offload=False)
        _, f1 = fake(dp, "lan0", "p1")
        mine, other = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        mine.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        dp.add_port("lan0", "p2", FakePort(mine))
        f2 = Far(other)  # reads nothing until the end
        n = 100
        for i in range(n):
            f1.sock.send(eth(BCAST, A, bytes([i]) * 50))
        p1 = dp.switch("lan0").ports["p1"]
        await until(lambda: p1.counters.rx_packets == n)
        got = len(f2.drain())
        p2 = dp.counters()["lan0"]["ports"]["p2"]
        assert 0 < p2["tx_packets"] == got < n
        assert p2["drops"]["tx_full"] == n - got
        assert sum(p2["drops"].values()) == n - got  # nothing else

    run(scenario)


class KernelCounted(FakePort):
    """A fake port whose kernel keeps counters, as a raw port's socket does."""

    kernel_poll_periodic = True

    def __init__(self, sock: socket.socket, drops: int) -> None:
        super().__init__(sock)
        self.drops = drops
        self.polls = 0

    def poll_kernel(self) -> None:
        self.polls += 1
        self.dev.kernel_packets += self.drops + 1
        self.dev.rx_kernel += self.drops


def test_counters_read_the_kernel_counters_first() -> None:
    async def scenario(dp: DataPlane) -> None:
        dp.add_switch("lan0", offload=False)
        mine, other = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        periodic = KernelCounted(mine, drops=7)
        dp.add_port("lan0", "up0", periodic)
        fake(dp, "lan0", "p1")
        mine2, other2 = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        dp.add_port("lan0", "host", FakePort(mine2), kernel=True, role="host")
        dp.poll_kernel(periodic_only=True)  # what the data plane's timer does
        assert periodic.polls == 1
        ports = dp.counters()["lan0"]["ports"]
        assert periodic.polls == 2
        assert ports["up0"]["drops"]["rx_kernel"] == 14 and ports["up0"]["kernel_packets"] == 16
        assert ports["up0"]["rx_packets"] == ports["up0"]["forwarded"] == 0  # never read
        assert ports["p1"]["drops"]["rx_kernel"] == 0
        assert (ports["host"]["type"], ports["p1"]["type"]) == ("host", "fake")
        assert dp.switch_status()[0]["ports"][0]["rx_drops"] == 21  # a third poll: 3 x 7
        other.close()
        other2.close()

    run(scenario)


class HeaderFake(FakePort):
    """Reads frames with a virtio-net header for a switch without offload, as a raw port does:
    the device drops GSO, oversize and malformed frames before the switch sees them."""

    def read_batch(self, fd: int, limit: int = 64) -> list[bytes]:
        return plain_frames(read_fd_batch(self, fd, 4096, limit), 1518, self.dev)


def test_frames_the_device_drops_are_read_frames_with_a_reason() -> None:
    async def scenario(dp: DataPlane) -> None:
        dp.add_switch("lan0", offload=False)
        mine, other = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        dp.add_port("lan0", "up0", HeaderFake(mine))
        up = Far(other)
        _, f1 = fake(dp, "lan0", "p1")
        gso = struct.pack("=BBHHHH", 0, 1, 0, 0, 0, 0)  # VIRTIO_NET_HDR_GSO_TCPV4
        frames = [
            bytes(10) + eth(BCAST, A),
            gso + eth(BCAST, A, bytes(100)),
            bytes(10) + eth(BCAST, A, bytes(1600)),  # over MTU + 18
            b"short",
            bytes(10) + eth(BCAST, A, b"last"),
        ]
        for frame in frames:
            up.sock.send(frame)
        await until(lambda: len(f1.drain()) == 2)
        p = dp.counters()["lan0"]["ports"]["up0"]
        assert p["rx_packets"] == 5 and p["forwarded"] == 2
        dropped = {r: v for r, v in p["drops"].items() if v}
        assert dropped == {"gso": 1, "oversize": 1, "malformed": 1}
        # Ethernet bytes of every frame read (the short one has none)
        assert p["rx_bytes"] == sum(len(f) - 10 for f in frames if len(f) > 10)

    run(scenario)
