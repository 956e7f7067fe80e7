"""Forwarding workers (vswitch/workers.py, vswitch/worker.py) without root: real worker processes
whose TAP queues are SOCK_SEQPACKET socketpairs (one frame per read/write, like a TAP fd). The
test keeps the other end of each pair and plays the kernel; the node's side is a real WorkerPool
on the test's event loop, its handler collecting what the workers hand over."""

import asyncio
import gc
import os
import signal
import socket
import struct
import subprocess
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest
import uvloop

from carp.actions import Action
from carp.datapath import CarpIfView, DataPath, DataPathStats
from carp.params import CarpDev
from tests.vswitch.loops import Run
from tests.vswitch.polling import until
from vswitch.accounting import (
    DROP_REASONS,
    Share,
    add_device_counters,
    add_port_counters,
    port_counts,
    switch_counts,
)
from vswitch.dataplane import DataPlane
from vswitch.fwd import Port, PortCounters, Switch
from vswitch.netlink import LinkState
from vswitch.port import DeviceCounters, DevicePort, read_fd_batch
from vswitch.workerproto import (
    Layout,
    PortLayout,
    State,
    SwitchLayout,
    WorkerCounts,
    decode,
    encode,
)
from vswitch.workers import DELEGATED, WorkerPool, layouts

ROOT = Path(__file__).resolve().parents[2]
SWITCH = "lan0"
RELAY = "sock0"  # a port the node process serves (a socket port): the workers relay to it
A = bytes.fromhex("020000000001")  # a station behind port a
B = bytes.fromhex("020000000002")  # a station behind port b
C = bytes.fromhex("020000000003")  # another station behind port a
BCAST = b"\xff" * 6
CARP_MCAST = bytes.fromhex("01005e000012")  # 224.0.0.18
NO_DROPS = dict.fromkeys(DROP_REASONS, 0)

Message = tuple[object, ...]


def eth(dst: bytes, src: bytes, payload: bytes = b"payload") -> bytes:
    return dst + src + b"\x08\x00" + payload


def ip_checksum(header: bytes) -> int:
    total: int = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def carp_advert(src: bytes) -> bytes:
    """An IPv4 CARP advertisement (protocol 112) from 192.0.2.1 to 224.0.0.18."""
    carp = bytes((0x21, 1, 0, 1, 0, 100)) + bytes(30)  # version 2 advertisement, vhid 1
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0x10,
        20 + len(carp),
        0,
        0,
        255,
        112,
        0,
        bytes((192, 0, 2, 1)),
        bytes((224, 0, 0, 18)),
    )
    header = header[:10] + struct.pack("!H", ip_checksum(header)) + header[12:]
    return CARP_MCAST + src + b"\x08\x00" + header + carp


def arp_request(sha: bytes, spa: bytes, tpa: bytes) -> bytes:
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, sha, spa, bytes(6), tpa)
    return BCAST + sha + b"\x08\x06" + arp


class NoCarp:
    """A HostView without carp interfaces: the decisions of a node that only switches."""

    def __init__(self) -> None:
        self.carpifs: dict[str, CarpIfView] = {}
        self.carpdevs: dict[str, CarpDev] = {}

    def receive(self, now: float, carpdev: str, ip_packet: bytes) -> list[Action]:
        return []


PEER = bytes((192, 0, 2, 1))  # the carppeer of every state here: its ARP frames go to the node


def state(links: dict[str, dict[str, bool]] | None = None) -> State:
    decisions = DataPath(NoCarp()).decisions()
    return State(decisions, {}, links if links is not None else {}, frozenset({PEER}))


class Wire:
    """One TAP queue: the worker's end (passed to it at spawn) and the kernel's end (ours)."""

    def __init__(self) -> None:
        self.kernel, self.worker = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # a TAP queue is opened O_NONBLOCK: the worker reads until EAGAIN
        self.worker.setblocking(False)
        self.kernel.setblocking(False)
        self.got: list[bytes] = []

    def send(self, frame: bytes) -> None:
        self.kernel.send(frame)

    def drain(self) -> list[bytes]:
        """Everything the worker wrote to this queue so far."""
        while True:
            try:
                self.got.append(self.kernel.recv(4096))
            except BlockingIOError:
                return self.got

    def close(self) -> None:
        self.kernel.close()
        self.worker.close()


def tap(name: str, wire: Wire) -> PortLayout:
    return PortLayout(
        name=name,
        kind="tap",
        fd=wire.worker.fileno(),
        kernel=False,
        flood=True,
        monitor=False,
        carp_tap=False,
        role=None,
        bufsize=2048,
    )


RELAY_LAYOUT = PortLayout(
    name=RELAY,
    kind="relay",
    fd=-1,
    kernel=False,
    flood=True,
    monitor=False,
    carp_tap=False,
    role=None,
)


class Rig:
    """A pool of `count` workers on switch lan0 with ports a and b (one queue per worker each)
    and the relay port sock0; `messages` is what the pool handed to its handler."""

    def __init__(self, loop: asyncio.AbstractEventLoop, count: int) -> None:
        self.a = [Wire() for _ in range(count)]
        self.b = [Wire() for _ in range(count)]
        self.messages: list[Message] = []
        self.pool = WorkerPool(loop, count, self.messages.append)

    def layouts(self, st: State) -> list[Layout]:
        return [
            Layout(
                i,
                (
                    SwitchLayout(
                        SWITCH,
                        "learning",
                        300.0,
                        False,
                        (tap("a", self.a[i]), tap("b", self.b[i]), RELAY_LAYOUT),
                    ),
                ),
                st,
            )
            for i in range(len(self.a))
        ]

    def of(self, kind: str) -> list[Message]:
        return [m for m in self.messages if m[0] == kind]

    def relayed(self) -> list[bytes]:
        """Frames switched to the relay port, in order; any other "out" fails the test."""
        out = []
        for m in self.of("out"):
            assert m[:3] == ("out", SWITCH, RELAY), m
            assert isinstance(m[3], bytes)
            out.append(m[3])
        return out

    def rx(self, port: str) -> int:
        share = self.pool.share(SWITCH)
        return share.ports[port][0].rx_packets if share is not None and port in share.ports else 0

    def tx(self, port: str) -> int:
        share = self.pool.share(SWITCH)
        return share.ports[port][0].tx_packets if share is not None and port in share.ports else 0

    def close(self) -> None:
        try:
            self.pool.close()
        finally:
            for w in self.a + self.b:
                w.close()


Scenario = Callable[[Rig], Awaitable[None]]


def scenario_main(scenario: Scenario, count: int = 1) -> Callable[[], Coroutine[Any, Any, None]]:
    async def main() -> None:
        rig = Rig(asyncio.get_running_loop(), count)
        try:
            rig.pool.start(rig.layouts(state()))
            await until(lambda: rig.pool.status()["ready"] == count, "the workers to be ready")
            await scenario(rig)
        finally:
            rig.close()

    return main


def run_uvloop(scenario: Scenario, count: int = 1) -> None:
    main = scenario_main(scenario, count)

    async def bounded() -> None:
        await asyncio.wait_for(main(), 60)

    uvloop.run(bounded())


@pytest.fixture(autouse=True)
def importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The workers run `python -m vswitch.worker`: they import this checkout."""
    old = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", str(ROOT) if not old else f"{ROOT}{os.pathsep}{old}")


# -- with worker processes -----------------------------------------------------------------------


def test_frames_flow_through_a_worker_and_it_learns(run: Run) -> None:
    """On both event loops the node may run the pool on."""

    async def scenario(rig: Rig) -> None:
        a, b = rig.a[0], rig.b[0]
        hello = eth(BCAST, A, b"hello")
        a.send(hello)
        await until(lambda: b.drain() == [hello], "the broadcast at b")
        await until(lambda: rig.relayed() == [hello], "the broadcast at the relay")
        assert rig.of("out")[0] == ("out", SWITCH, RELAY, hello)
        unicast = eth(A, B, b"for-a")
        marker = eth(BCAST, B, b"marker")
        b.send(unicast)
        b.send(marker)
        # the marker follows the unicast frame through the worker: once it is relayed, the
        # unicast frame went wherever it went
        await until(lambda: rig.relayed() == [hello, marker], "the marker at the relay")
        await until(lambda: a.drain() == [unicast, marker], "the unicast frame at a")
        assert rig.relayed() == [hello, marker]  # A was learned on a: not flooded
        assert b.drain() == [hello]  # nothing comes back out of the port it came in on
        assert {m[0] for m in rig.messages} == {"out"}

    run(scenario_main(scenario)())


def test_carp_advertisements_go_to_the_node() -> None:
    async def scenario(rig: Rig) -> None:
        advert = carp_advert(A)
        rig.a[0].send(advert)
        await until(lambda: bool(rig.of("advert")), "the advertisement")
        assert rig.of("advert") == [("advert", SWITCH, advert[14:])]
        # the switch still floods it: the other nodes of the segment hear it
        await until(lambda: rig.b[0].drain() == [advert], "the advertisement at b")
        await until(lambda: rig.relayed() == [advert], "the advertisement at the relay")
        assert not rig.of("arp")

    run_uvloop(scenario)


def test_a_carppeers_arp_frames_go_to_the_node_and_all_are_flooded() -> None:
    async def scenario(rig: Rig) -> None:
        # another host's ARP is switched on, not handed over: only carppeers are resolved
        other = arp_request(C, bytes((192, 0, 2, 9)), bytes((192, 0, 2, 2)))
        rig.a[0].send(other)
        await until(lambda: rig.relayed() == [other], "the other host's ARP at the relay")
        request = arp_request(A, PEER, bytes((192, 0, 2, 2)))
        rig.a[0].send(request)
        await until(lambda: bool(rig.of("arp")), "the carppeer's ARP frame at the node")
        assert rig.of("arp") == [("arp", request)]
        await until(lambda: rig.b[0].drain() == [other, request], "the ARP requests at b")
        await until(lambda: rig.relayed() == [other, request], "the ARP request at the relay")
        assert not rig.of("advert")
        # a plain IPv4 frame is no ARP: not handed over
        rig.a[0].send(eth(BCAST, A, b"not-arp"))
        await until(lambda: len(rig.relayed()) == 3, "the third frame at the relay")
        assert rig.of("arp") == [("arp", request)]

    run_uvloop(scenario)


def test_counts_of_every_worker_are_summed() -> None:
    n0, n1 = 12, 7
    frames0 = [eth(B, A, bytes([i]) * (20 + i)) for i in range(n0)]
    frames1 = [eth(BCAST, C, bytes([i]) * 30) for i in range(n1)]

    async def scenario(rig: Rig) -> None:
        for f in frames0:
            rig.a[0].send(f)
        for f in frames1:
            rig.a[1].send(f)
        await until(lambda: len(rig.b[0].drain()) == n0 and len(rig.b[1].drain()) == n1)
        # counts come twice a second: poll until both workers reported all of it
        await until(
            lambda: rig.rx("a") == n0 + n1 and rig.tx("b") == n0 + n1,
            "the workers' counts of port a and b",
        )
        share = rig.pool.share(SWITCH)
        assert share is not None
        pa, da = share.ports["a"]
        assert pa.rx_bytes == sum(map(len, frames0 + frames1))
        assert pa.rx_no_dest == pa.rx_malformed == pa.rx_same_port == 0
        assert share.ports["b"][0].tx_bytes == sum(map(len, frames0 + frames1))
        assert share.ports["b"][0].rx_packets == 0
        assert share.ports[RELAY][0].rx_packets == 0
        assert da.rx_errors == 0
        assert share.macs == {A, C}  # learned by one worker each
        assert share.table_full == share.bad_emits == 0
        assert rig.pool.share("nosuch") is None
        status = rig.pool.status()
        assert status["count"] == 2 and status["ready"] == 2 and status["restarts"] == 0
        assert status["lost_messages"] == 0 and status["errors"] == {}
        assert sorted(status["pids"]) == sorted(p.proc.pid for p in rig.pool.procs)
        assert len(set(status["pids"])) == 2
        assert rig.pool.datapath_stats(DataPathStats(delivered=3)) == {
            **DataPathStats().as_dict(),
            "delivered": 3,
        }

    run_uvloop(scenario, count=2)


def test_a_published_link_state_stops_floods_to_the_port() -> None:
    async def scenario(rig: Rig) -> None:
        a, b = rig.a[0], rig.b[0]
        sent: list[bytes] = []

        async def reaches_b() -> bool:
            """One broadcast from a: whether b got it. It is known to be switched once it is
            at the relay, and b is written before the relay is sent to in the same batch."""
            frame = eth(BCAST, A, len(sent).to_bytes(4, "big"))
            sent.append(frame)
            before = len(b.drain())
            a.send(frame)
            await until(lambda: rig.relayed()[-1:] == [frame], "the probe at the relay")
            after = b.drain()[before:]
            assert after in ([], [frame])
            return bool(after)

        assert await reaches_b()
        down = state({SWITCH: {"b": False}})
        rig.pool.publish(down)
        assert rig.pool.procs[0].layout.state is down  # what a restarted worker starts with
        # the state and the frames reach the worker on different fds: probe until it applied
        # the state, then it stays applied
        for _ in range(500):
            if not await reaches_b():
                break
        else:
            pytest.fail("the published link state was never applied")
        for _ in range(5):
            assert not await reaches_b()
        rig.pool.publish(state({SWITCH: {"b": True}}))
        for _ in range(500):
            if await reaches_b():
                break
        else:
            pytest.fail("the link of b never came up again")
        assert rig.relayed() == sent  # the relay got every probe, whatever b's link

    run_uvloop(scenario)


def test_stations_the_node_learned_on_its_ports_are_not_flooded() -> None:
    """The node serves the socket ports and learns their stations; the State pins them in the
    workers' tables, so a frame for one goes to the relay alone, not to every port."""
    station = bytes.fromhex("02000000000c")

    async def scenario(rig: Rig) -> None:
        a, b = rig.a[0], rig.b[0]
        sent: list[bytes] = []

        async def flooded() -> bool:
            """A unicast frame for the station, then a broadcast marker behind it: whether
            the unicast frame reached b (known once the marker is at the relay)."""
            frame = eth(station, A, len(sent).to_bytes(4, "big"))
            marker = eth(BCAST, A, b"marker" + len(sent).to_bytes(4, "big"))
            sent.append(frame)
            before = len(b.drain())
            a.send(frame)
            a.send(marker)
            await until(lambda: rig.relayed()[-1:] == [marker], "the marker at the relay")
            after = b.drain()[before:]
            assert after in ([marker], [frame, marker])
            assert frame in rig.relayed()  # the relay gets it either way
            return frame in after

        assert await flooded()  # unknown: flooded
        rig.pool.publish(replace(state(), stations={SWITCH: {station: RELAY}}))
        for _ in range(500):
            if not await flooded():
                break
        else:
            pytest.fail("the station was never pinned")
        for _ in range(5):
            assert not await flooded()
        rig.pool.publish(state())  # the node forgot it: unpinned, flooded again
        for _ in range(500):
            if await flooded():
                break
        else:
            pytest.fail("the station was never unpinned")

    run_uvloop(scenario)


def test_a_worker_that_dies_is_started_again(run: Run) -> None:
    n = 5

    async def scenario(rig: Rig) -> None:
        a, b = rig.a[0], rig.b[0]
        for i in range(n):
            a.send(eth(BCAST, A, bytes([i])))
        await until(lambda: rig.rx("a") == n, "the first worker's counts")
        [old_pid] = rig.pool.status()["pids"]
        old = rig.pool.procs[0].proc
        os.kill(old_pid, signal.SIGKILL)
        await until(
            lambda: (
                rig.pool.status()["restarts"] == 1
                and rig.pool.status()["ready"] == 1
                and rig.pool.status()["pids"] != [old_pid]
            ),
            "the worker to be started again",
        )
        assert old.poll() == -signal.SIGKILL
        b.drain()
        b.got.clear()
        again = eth(BCAST, A, b"again")
        a.send(again)
        await until(lambda: b.drain() == [again], "a frame through the new worker")
        # what the dead worker counted is kept: the totals never go back
        await until(lambda: rig.rx("a") == n + 1, "the counts of both workers")
        share = rig.pool.share(SWITCH)
        assert share is not None and share.macs == {A}  # the new worker learned A again
        status = rig.pool.status()
        assert status["restarts"] == 1 and status["count"] == 1

    run(scenario_main(scenario)())


def test_a_worker_that_dies_with_a_state_pending_is_started_again() -> None:
    async def scenario(rig: Rig) -> None:
        problems: list[str] = []  # not the contexts: they would keep a failed spawn's socket
        asyncio.get_running_loop().set_exception_handler(
            lambda _, context: problems.append(
                f"{context['message']}: {context.get('exception')!r}"
            )
        )
        [p] = rig.pool.procs
        old_pid = p.proc.pid
        os.kill(old_pid, signal.SIGSTOP)  # it stops reading its channel: the channel fills
        for _ in range(100_000):
            if p.pending is not None:
                break
            rig.pool.publish(state({SWITCH: {"b": True}}))
        assert p.pending is not None, "the channel never filled"
        os.kill(old_pid, signal.SIGKILL)
        await until(
            lambda: (
                bool(problems)
                or (rig.pool.status()["ready"] == 1 and rig.pool.status()["pids"] != [old_pid])
            ),
            "the worker to be started again",
        )
        assert problems == []
        frame = eth(BCAST, A, b"after")
        rig.a[0].send(frame)
        await until(lambda: frame in rig.b[0].drain(), "a frame through the new worker")

    try:
        run_uvloop(scenario)
    finally:
        gc.collect()  # a spawn that failed: its socket closes, its worker sees EOF and exits


def test_close_ends_every_worker() -> None:
    procs: list[subprocess.Popen[bytes]] = []

    async def scenario(rig: Rig) -> None:
        procs.extend(p.proc for p in rig.pool.procs)
        assert len(procs) == 2 and all(p.poll() is None for p in procs)
        rig.pool.close()
        assert all(p.returncode is not None for p in procs)
        assert rig.pool.status()["pids"] == [] and rig.pool.status()["ready"] == 0
        rig.pool.close()  # twice is harmless
        rig.pool.publish(state())  # nothing to publish to

    run_uvloop(scenario, count=2)
    assert len(procs) == 2


def test_a_stopped_worker_hands_over_its_last_counts() -> None:
    # counts come every 0.5 s; a worker stopped between two of them says its last ones as it
    # goes, so what it switched since is counted all the same
    frames = [eth(B, A, bytes([i]) * 40) for i in range(5)]

    async def scenario(rig: Rig) -> None:
        for f in frames:
            rig.a[0].send(f)
        await until(lambda: len(rig.b[0].drain()) == len(frames), "the frames at b")
        [worker] = rig.pool.procs
        rig.pool.stop_all()  # right away: no periodic counts since the frames
        assert worker.finished and worker.proc.returncode is not None
        assert rig.rx("a") == len(frames) and rig.tx("b") == len(frames)

    run_uvloop(scenario)


def test_relayout_with_new_ports_starts_new_workers() -> None:
    fresh = Wire()

    async def scenario(rig: Rig) -> None:
        [old] = rig.pool.procs
        rig.pool.relayout(rig.layouts(state({SWITCH: {"b": True}})))  # same ports: same worker
        assert rig.pool.procs == [old] and old.layout.state.links == {SWITCH: {"b": True}}
        a, b = rig.a[0], rig.b[0]
        a.send(eth(BCAST, A, b"one"))
        await until(lambda: rig.rx("a") == 1, "the first set's counts")
        sw = rig.layouts(state())[0].switches[0]
        bigger = SwitchLayout(sw.name, sw.mode, sw.ageing, sw.offload, (*sw.ports, tap("c", fresh)))
        rig.pool.relayout([Layout(0, (bigger,), state())])
        [new] = rig.pool.procs
        # the old worker reads on until its successor serves: no queue goes unread meanwhile
        assert new is not old and new.replaces is old and not old.stopping
        await until(lambda: rig.pool.status()["ready"] == 1, "the new set to be ready")
        assert old.stopping and rig.pool.status()["pids"] == [new.proc.pid]
        await until(lambda: old.proc.poll() is not None, "the old set to stop")
        b.drain()
        frame = eth(BCAST, A, b"two")
        a.send(frame)
        await until(lambda: fresh.drain() == [frame] and b.drain()[-1:] == [frame], "port c")
        # the old set's counts are kept beside the new set's
        await until(lambda: rig.rx("a") == 2, "the counts of both sets")
        assert rig.tx("c") == 1 and rig.pool.status()["restarts"] == 0

    try:
        run_uvloop(scenario)
    finally:
        fresh.close()


# -- without processes -----------------------------------------------------------------------------


class Queues(DevicePort):
    """A multiqueue device of the kind the workers read ("tap"), over socketpairs."""

    kind = "tap"
    follows_link = False

    def __init__(self, socks: list[socket.socket]) -> None:
        super().__init__("tap0", None, 0)
        self.socks = socks
        self.link_up = True

    @property
    def fds(self) -> tuple[int, ...]:
        return tuple(s.fileno() for s in self.socks)

    def read_batch(self, fd: int, limit: int = 64) -> list[bytes]:
        return read_fd_batch(self, fd, 2048, limit)

    def link_from(self, state: LinkState) -> bool:
        return state.admin_up

    def close(self) -> None:
        self.closed = True  # the sockets are the test's


class Sock(Queues):
    """A device the node process serves itself (as a socket port): the workers relay to it."""

    kind = "sock"


@pytest.fixture
def plane() -> Iterator[DataPlane]:
    loop = asyncio.new_event_loop()
    dp = DataPlane(loop)
    dp.delegated = DELEGATED
    try:
        yield dp
    finally:
        dp.close()
        loop.close()


def pairs(n: int) -> tuple[list[socket.socket], list[socket.socket]]:
    mine, far = [], []
    for _ in range(n):
        x, y = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        mine.append(x)
        far.append(y)
    return mine, far


def test_layouts_give_each_worker_its_queue(plane: DataPlane) -> None:
    plane.add_switch(SWITCH, offload=False, hub=True, ageing=60.0)
    qa, fa = pairs(2)
    qc, fc = pairs(2)
    sock, far = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        plane.add_port(SWITCH, "a", Queues(qa))
        plane.add_port(SWITCH, "carp0", Queues(qc), kernel=True, flood=False, role="carp")
        plane.add_port(SWITCH, RELAY, Sock([sock]))
        st = state()
        out = layouts(plane, 2, {"carp0"}, st)
        assert [x.index for x in out] == [0, 1]
        for i, layout in enumerate(out):
            assert layout.state is st
            [sw] = layout.switches
            assert (sw.name, sw.mode, sw.ageing, sw.offload) == (SWITCH, "hub", 60.0, False)
            a, carp, relay = sw.ports
            assert (a.name, a.kind, a.fd) == ("a", "tap", qa[i].fileno())
            assert not a.kernel and a.flood and not a.carp_tap and a.role is None
            assert (carp.kind, carp.fd, carp.kernel, carp.flood) == (
                "tap",
                qc[i].fileno(),
                True,
                False,
            )
            assert carp.carp_tap and carp.role == "carp"
            assert (relay.name, relay.kind, relay.fd) == (RELAY, "relay", -1)
        with pytest.raises(ValueError, match="port a: 2 queues for 3 workers"):
            layouts(plane, 3, set(), st)
        assert layouts(plane, 0, set(), st) == []
    finally:
        plane.close()  # before the sockets: it unregisters their fds
        for s in [*qa, *fa, *qc, *fc, sock, far]:
            s.close()


def test_layouts_refuse_a_tap_with_too_few_queues(plane: DataPlane) -> None:
    plane.add_switch(SWITCH, offload=False)
    q, f = pairs(1)
    try:
        plane.add_port(SWITCH, "a", Queues(q))
        with pytest.raises(ValueError, match="port a: 1 queues for 2 workers"):
            layouts(plane, 2, set(), state())
        assert len(layouts(plane, 1, set(), state())) == 1
    finally:
        plane.close()
        for s in q + f:
            s.close()


def numbered_port_counters(start: int) -> PortCounters:
    return PortCounters(*range(start, start + len(fields(PortCounters))))


def numbered_device_counters(start: int, tx_errors: dict[int, int]) -> DeviceCounters:
    d = DeviceCounters(tx_errors=tx_errors)
    for i, f in enumerate(fields(DeviceCounters)[:-1]):  # all but tx_errors, the last
        setattr(d, f.name, start + i)
    return d


def test_add_port_and_device_counters_sum_every_field() -> None:
    a = numbered_port_counters(1)
    b = numbered_port_counters(100)
    s = add_port_counters(a, b)
    for f in fields(PortCounters):
        assert getattr(s, f.name) == getattr(a, f.name) + getattr(b, f.name), f.name
    da = numbered_device_counters(1, {11: 1, 5: 2})
    db = numbered_device_counters(100, {11: 3, 105: 4})
    ds = add_device_counters(da, db)
    for f in fields(DeviceCounters)[:-1]:
        assert getattr(ds, f.name) == getattr(da, f.name) + getattr(db, f.name), f.name
    assert ds.tx_errors == {11: 4, 5: 2, 105: 4}
    assert da.tx_errors == {11: 1, 5: 2} and db.tx_errors == {11: 3, 105: 4}  # untouched
    ds.tx_errors[11] = 0
    assert da.tx_errors[11] == 1


def test_port_counts_add_the_workers_share() -> None:
    sw = Switch(SWITCH)
    fport: Port = sw.add_port("a")
    sw.add_port("b")
    fport.counters.rx_packets = 3
    fport.counters.rx_bytes = 300
    fport.counters.tx_packets = 2
    fport.counters.tx_bytes = 200
    sock, far = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        dev = Sock([sock])
        dev.dev.rx_oversize = 1
        dev.dev.rx_dropped_bytes = 9000
        own = port_counts(fport, dev, None)
        assert own["rx_packets"] == 4 and own["forwarded"] == 3 and own["type"] == "sock"
        worker = (
            PortCounters(rx_packets=10, rx_bytes=1000, rx_no_dest=2, tx_packets=5, tx_bytes=500),
            DeviceCounters(rx_malformed=1, rx_dropped_bytes=10, tx_errors={11: 3}),
        )
        both = port_counts(fport, dev, "host", worker)
        assert both["type"] == "host"
        assert both["rx_packets"] == 3 + 10 + 1 + 1
        assert both["rx_bytes"] == 300 + 1000 + 9000 + 10
        assert both["tx_packets"] == 7 and both["tx_bytes"] == 700
        assert both["drops"] == {
            **NO_DROPS,
            "oversize": 1,
            "malformed": 1,
            "no_dest": 2,
            "tx_full": 3,
        }
        assert both["forwarded"] == both["rx_packets"] - 4
        # the port's own counters are not changed by adding the share
        assert fport.counters.rx_packets == 3 and dev.dev.tx_errors == {}
        share = Share({"a": worker}, frozenset({A, B}), table_full=2, bad_emits=1)
        sw.forward(0.0, fport, [eth(BCAST, A), eth(BCAST, C)])  # this process learns A and C
        counts = switch_counts(sw, False, {"a": dev}, {}, share, 0.0)
        assert counts["macs"] == 3  # A, B, C: each MAC once
        assert counts["table_full"] == 2 and counts["bad_emits"] == 1
        # its own 3 + the 2 just switched, the workers' 10 and 1 malformed, 1 oversize
        assert counts["ports"]["a"]["rx_packets"] == 17 == counts["total"]["rx_packets"]
    finally:
        sock.close()
        far.close()


def test_worker_counts_travel_through_pickle() -> None:
    c = WorkerCounts()
    c.ports[SWITCH] = {"a": (numbered_port_counters(1), DeviceCounters(tx_errors={11: 2}))}
    c.macs[SWITCH] = frozenset({A})
    c.errors["channel full"] = 1
    back = decode(encode(("counts", c)))
    assert isinstance(back, tuple) and back[0] == "counts"
    assert back[1] == c
    st = state({SWITCH: {"a": False}})
    again = decode(encode(st))
    assert isinstance(again, State) and again.links == st.links
