"""vswitch/node.py driven without root: a real DataPlane and CarpHost on fake devices, a fake
System (sysctls, TAPs, addresses, links, carrier) and a manual clock for the protocol timer.

Frames from the outside go through the event loop's reader of a fake device (a pipe rings it),
so the switch, its hooks and the node see them as they would a TAP's.
"""

import asyncio
import contextlib
import copy
import errno
import functools
import logging
import os
import signal
import socket
from collections import deque
from collections.abc import Callable, Coroutine, Iterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest

import vswitch.system
from carp import l2
from carp.actions import Action, DemoteChanged, StateChanged
from carp.balance import vhe_mac
from carp.carpif import SENDAD_FACTOR
from carp.constants import Balancing, State
from carp.ifconfig import parse_change
from tests.vswitch.polling import poll, until
from vswitch.build import SWITCH_PORT_SYSCTLS
from vswitch.config import (
    PORT_TYPES,
    ConfigError,
    NodeConfig,
    RawPortConfig,
    TapPortConfig,
    parse_config,
)
from vswitch.dataplane import DataPlane
from vswitch.dispatch import Dispatcher
from vswitch.events import EventBus, states_of
from vswitch.logsink import LogSink, install
from vswitch.neigh import NeighbourCache
from vswitch.netlink import LinkState
from vswitch.node import Node
from vswitch.nodectl import NodeController
from vswitch.port import DevicePort
from vswitch.run import HeldSignals, _reload, _tell_systemd, log_stats
from vswitch.sdnotify import Notifier
from vswitch.system import (
    PORT_OPENERS,
    LinuxSystem,
    PortRefused,
    PortType,
    check_port,
    if_sysctl,
    parse_mac,
)

Run = Callable[[Coroutine[Any, Any, None]], None]

OWN_MAC = bytes.fromhex("020000000001")
PEER_MAC = bytes.fromhex("020000000002")
OTHER_MAC = bytes.fromhex("020000000003")
ME = IPv4Address("198.51.100.2")
PEER = IPv4Address("198.51.100.7")
VIP = "198.51.100.10/24"
START = 1000.0


# -- fakes -----------------------------------------------------------------------------------------


class FakeDevice(DevicePort):
    """A port whose frames out are recorded and whose frames in are queued by the test; a pipe
    makes its fd readable while frames wait, so the data plane reads it from the loop."""

    follows_link = False

    def __init__(
        self, system: "FakeSystem", kind: str, ifname: str, netns: str | None, up: bool
    ) -> None:
        super().__init__(ifname, netns, 0)
        self.kind = kind
        self.system = system
        self.mac: bytes | None = None
        self.carrier: bool | None = None
        self.link_up = up
        self.out: list[bytes] = []
        self.inbox: deque[bytes] = deque()
        self._bell, self._ring = os.pipe()
        os.set_blocking(self._bell, False)
        self._sender = self._record

    @property
    def fds(self) -> tuple[int, ...]:
        return (self._bell,)

    def _record(self, frame: bytes) -> int:
        self.out.append(frame)
        return len(frame)

    def receive(self, *frames: bytes) -> None:
        if not self.inbox:
            os.write(self._ring, b"!")
        self.inbox.extend(frames)

    def read_batch(self, fd: int, limit: int = 64) -> list[bytes]:
        batch = [self.inbox.popleft() for _ in range(min(limit, len(self.inbox)))]
        if not self.inbox:
            with contextlib.suppress(BlockingIOError):
                os.read(self._bell, 64)
        return batch

    def link_from(self, state: LinkState) -> bool:
        return state.admin_up

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        os.close(self._bell)
        os.close(self._ring)
        self.system.closed(self)


class FakeSystem:
    """The node's namespace: interfaces, their sysctls and addresses, the devices opened."""

    def __init__(self, interfaces: tuple[str, ...] = ("up0",)) -> None:
        self.interfaces = set(interfaces)  # existing before the node: its raw ports' interfaces
        self.sysctls: dict[str, str] = {}
        for ifname in interfaces:
            for af, key, _ in SWITCH_PORT_SYSCTLS:
                self.sysctls[if_sysctl(af, ifname, key)] = "0"
        self.devices: dict[str, FakeDevice] = {}  # open, in the node's namespace
        self.opened: list[FakeDevice] = []
        self.addresses: dict[str, list[str]] = {}
        self.fail_next: dict[str, OSError] = {}  # ifname -> error of its next open

    def _interface_of(self, name: str) -> str | None:
        parts = name.split("/")
        return parts[3] if len(parts) == 5 and parts[2] == "conf" else None

    def set_sysctl(self, name: str, value: int | str) -> None:
        ifname = self._interface_of(name)
        if ifname is not None and ifname not in self.interfaces:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", name)
        self.sysctls[name] = str(value)

    def get_sysctl(self, name: str) -> str:
        ifname = self._interface_of(name)
        if ifname is not None and ifname not in self.interfaces:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", name)
        return self.sysctls.get(name, "0")

    def interface_exists(self, ifname: str) -> bool:
        return ifname in self.interfaces

    def _open(self, kind: str, ifname: str, netns: str | None, up: bool) -> FakeDevice:
        failure = self.fail_next.pop(ifname, None)
        if failure is not None:
            raise failure
        dev = FakeDevice(self, kind, ifname, netns, up)
        self.opened.append(dev)
        if netns is None:
            self.devices[ifname] = dev
        return dev

    def _tap(self, ifname: str, mac: bytes | None, netns: str | None, up: bool) -> FakeDevice:
        if netns is None and ifname in self.interfaces:
            raise OSError(errno.EBUSY, "Device or resource busy")
        dev = self._open("tap", ifname, netns, up)
        dev.mac = mac
        if netns is None:
            self.interfaces.add(ifname)
        return dev

    def open_port(self, port: Any, *, vnet_hdr: int) -> DevicePort:
        check_port(port, self)  # the real per-type pre-checks, on this namespace
        if isinstance(port, TapPortConfig):
            mac = parse_mac(port.mac) if port.mac else None
            return self._tap(port.ifname or port.name, mac, port.netns, True)
        assert isinstance(port, RawPortConfig), port
        if port.ifname not in self.interfaces:
            raise OSError(errno.ENODEV, "No such device")
        return self._open("raw", port.ifname, None, True)

    def open_tap(self, ifname: str, *, vnet_hdr: int, mac: bytes) -> DevicePort:
        return self._tap(ifname, mac, None, False)

    def add_address(self, ifname: str, cidr: str, *, noprefixroute: bool = False) -> None:
        assert ifname in self.interfaces, ifname
        self.addresses.setdefault(ifname, []).append(cidr)

    def set_link(self, ifname: str, up: bool) -> None:
        self.devices[ifname].update_link(LinkState(ifname, 1, up, up))

    def set_carrier(self, dev: DevicePort, up: bool) -> None:
        assert isinstance(dev, FakeDevice) and dev.kind == "tap"
        dev.carrier = up

    def closed(self, dev: FakeDevice) -> None:
        if dev.netns is not None or self.devices.get(dev.ifname) is not dev:
            return
        del self.devices[dev.ifname]
        if dev.kind == "tap":  # a TAP vanishes with its addresses and sysctls
            self.interfaces.discard(dev.ifname)
            self.addresses.pop(dev.ifname, None)
            prefix = [f"net/ipv4/conf/{dev.ifname}/", f"net/ipv6/conf/{dev.ifname}/"]
            for name in [n for n in self.sysctls if n.startswith(tuple(prefix))]:
                del self.sysctls[name]


class ManualTimer:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False
        self.fired = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """The core's clock and its timers, moved by the test only."""

    def __init__(self, now: float = START) -> None:
        self.now = now
        self.timers: list[ManualTimer] = []

    def __call__(self) -> float:
        return self.now

    def call_at(self, deadline: float, callback: Callable[[], None]) -> ManualTimer:
        timer = ManualTimer(deadline, callback)
        self.timers.append(timer)
        return timer

    @property
    def pending(self) -> list[float]:
        return [t.when for t in self.timers if not (t.cancelled or t.fired)]

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while due := [t for t in self.timers if not (t.cancelled or t.fired) and t.when <= end]:
            timer = min(due, key=lambda t: t.when)
            self.now = max(self.now, timer.when)
            timer.fired = True
            timer.callback()
        self.now = end

    def wake_early(self) -> None:
        """The loop's timer fires before the deadline (its clock is coarser than the core's)."""
        (timer,) = [t for t in self.timers if not (t.cancelled or t.fired)]
        timer.fired = True
        timer.callback()


class FailingPlane(DataPlane):
    """A data plane whose sends of carp advertisements fail while `failing` is set."""

    failing: int | None = None

    def send(self, switch: str, frame: bytes, port: str | None = None) -> int | None:
        if self.failing is not None and is_advert(frame):
            return self.failing
        return super().send(switch, frame, port)


class RecordingSink:
    def __init__(self) -> None:
        self.lines: list[tuple[int, str]] = []
        self.dropped = 0

    def emit(self, level: int, message: str) -> None:
        self.lines.append((level, message))


class BrokenSink:
    """stderr piped into `head -c 1`, after head has gone."""

    dropped = 0

    def emit(self, level: int, message: str) -> None:
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")


# -- helpers ---------------------------------------------------------------------------------------


def config_data() -> dict[str, Any]:
    return {
        "node": {"name": "gw-a"},
        "switch": {
            "lan0": {
                "host": ["198.51.100.2/24"],
                "host_mac": OWN_MAC.hex(":"),
                "offload": False,
                "ports": [
                    {"name": "up0", "type": "raw", "ifname": "up0"},
                    {"name": "vm1", "type": "tap"},
                ],
            }
        },
        "carp": {"carp0": {"carpdev": "lan0", "addresses": [VIP], "vhid": 1, "pass": "secret"}},
    }


def make_config(edit: Callable[[dict[str, Any]], object] | None = None) -> NodeConfig:
    data = config_data()
    if edit is not None:
        edit(data)
    return parse_config(copy.deepcopy(data))


class Harness:
    def __init__(self, node: Node, system: FakeSystem, clock: ManualClock) -> None:
        self.node = node
        self.system = system
        self.clock = clock
        self.actions: list[Action] = []
        node.listeners.append(lambda now, actions: self.actions.extend(actions))

    def dev(self, ifname: str) -> FakeDevice:
        return self.system.devices[ifname]

    def state(self, carpif: str = "carp0") -> State:
        host = self.node.host
        assert host is not None
        return host.carpifs[carpif].leader.state

    def adverts(self, ifname: str = "up0") -> list[bytes]:
        return [f for f in self.dev(ifname).out if is_advert(f)]

    def to_master(self) -> None:
        self.node.ifconfig("carp0", parse_change(["state", "master"]))
        assert self.state() is State.MASTER


def is_advert(frame: bytes) -> bool:
    return frame[12:14] == b"\x08\x00" and frame[23] == 112


def arps(frames: list[bytes]) -> list[l2.ArpPacket]:
    return [a for f in frames if (a := l2.parse_arp(f)) is not None]


def started(
    config: NodeConfig,
    *,
    system: FakeSystem | None = None,
    plane: type[DataPlane] = DataPlane,
    sink: LogSink | None = None,
    neigh: NeighbourCache | None = None,
) -> Harness:
    clock = ManualClock()
    system = system or FakeSystem()
    dp = plane(asyncio.get_running_loop(), clock=clock)
    node = Node(config, dataplane=dp, system=system, clock=clock, sink=sink or RecordingSink())
    if neigh is not None:
        node.neigh = neigh
    h = Harness(node, system, clock)
    node.start()
    return h


@pytest.fixture
def harness(run: Run) -> Iterator[Callable[..., Any]]:
    """Run `scenario(h)` on a started node (on asyncio and on uvloop); the node is closed after."""

    def go(scenario: Callable[[Harness], Coroutine[Any, Any, None]], **options: Any) -> None:
        async def main() -> None:
            config = options.pop("config", None) or make_config()
            h = started(config, **options)
            try:
                await scenario(h)
            finally:
                h.node.close()
            assert all(d.closed for d in h.system.opened)

        run(main())

    yield go


# -- the timer ---------------------------------------------------------------------------------


def test_the_timer_follows_the_earliest_deadline_and_sleeps_again_after_an_early_wake(
    harness: Callable[..., None],
) -> None:
    async def scenario(h: Harness) -> None:
        assert h.clock.pending == [START + 3.0]  # master-down: 3 x advbase 1
        h.to_master()  # the deadline moves earlier: the timer is re-armed, the old one gone
        assert h.clock.pending == [START + 1.0]
        assert len(h.adverts()) == 1
        h.clock.wake_early()  # at START, before the deadline: nothing is due
        assert len(h.adverts()) == 1 and h.clock.pending == [START + 1.0]
        h.clock.advance(1.0)
        assert len(h.adverts()) == 2 and h.clock.pending == [START + 2.0]
        h.node.ifconfig("carp0", parse_change(["advbase", "5"]))  # later: re-armed too
        assert h.clock.pending == [START + 1.0 + 5.0]

    harness(scenario)


def test_a_backup_becomes_master_when_its_timer_fires(harness: Callable[..., None]) -> None:
    async def scenario(h: Harness) -> None:
        h.clock.advance(2.9)
        assert h.state() is State.BACKUP and not h.adverts()
        h.clock.advance(0.1)
        assert h.state() is State.MASTER and len(h.adverts()) == 1
        assert h.dev("carp0").carrier is True
        garps = [a for a in arps(h.dev("up0").out) if a.gratuitous]
        assert [IPv4Address(a.spa) for a in garps] == [IPv4Address("198.51.100.10")]

    harness(scenario)


# -- transmit results ------------------------------------------------------------------------------


def test_failed_advertisements_are_counted_and_demote_as_carp_does(
    harness: Callable[..., None],
) -> None:
    async def scenario(h: Harness) -> None:
        plane = h.node.dataplane
        assert isinstance(plane, FailingPlane)
        host = h.node.host
        assert host is not None
        sc = host.carpifs["carp0"]
        h.to_master()
        sent = host.stats.opackets
        plane.failing = errno.ENOBUFS
        for _ in range(SENDAD_FACTOR):
            assert host.demote_count("carp0") == 0
            h.clock.advance(1.0)
        assert host.demote_count("carp0") == 1  # > snderrors
        # the demotion is advertised at once (and fails too)
        assert sc.oerrors == host.stats.onomem == SENDAD_FACTOR + 1
        assert any(isinstance(a, DemoteChanged) and a.adj == 1 for a in h.actions)
        assert host.stats.opackets == sent
        plane.failing = None
        for _ in range(SENDAD_FACTOR):
            h.clock.advance(1.0)
        assert host.demote_count("carp0") == 0  # < snderrors
        assert host.stats.opackets == sent + SENDAD_FACTOR

    harness(scenario, plane=FailingPlane)


# -- a unicast carppeer ----------------------------------------------------------------------------


def with_peer(data: dict[str, Any]) -> None:
    data["carp"]["carp0"]["carppeer"] = str(PEER)


def test_a_unicast_peer_is_asked_for_and_gets_the_advertisement_once_known(
    harness: Callable[..., None],
) -> None:
    async def scenario(h: Harness) -> None:
        assert h.node.neigh.pinned == {PEER}
        up0 = h.dev("up0")
        h.to_master()
        assert not h.adverts() and h.node.counters["adverts_unresolved"] == 1
        (request,) = [a for a in arps(up0.out) if a.op == 1 and not a.gratuitous]
        assert (request.sha, request.spa, request.tpa) == (OWN_MAC, ME.packed, PEER.packed)
        up0.receive(l2.arp_reply(request, PEER_MAC))
        await until(lambda: h.node.neigh.lookup(PEER) == PEER_MAC)
        h.clock.advance(1.0)
        (advert,) = h.adverts()
        assert advert[:6] == PEER_MAC and advert[6:12] == vhe_mac(1, Balancing.NONE, True)
        assert advert[30:34] == PEER.packed
        assert h.node.counters["adverts_unresolved"] == 1

    harness(scenario, config=make_config(with_peer))


def documentation_senders() -> list[IPv4Address]:
    nets = [IPv4Network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")]
    return [ip for net in nets for ip in net.hosts() if ip not in (ME, PEER)]


def test_a_flood_of_arp_senders_does_not_evict_the_peer(harness: Callable[..., None]) -> None:
    async def scenario(h: Harness) -> None:
        up0 = h.dev("up0")
        up0.receive(l2.arp_request(PEER_MAC, PEER, ME))
        await until(lambda: h.node.neigh.lookup(PEER) == PEER_MAC)
        senders = documentation_senders()
        flood = [l2.arp_request(OTHER_MAC, senders[i % len(senders)], ME) for i in range(5000)]
        up0.receive(*flood)
        await until(lambda: not up0.inbox)
        assert h.node.neigh.lookup(senders[0]) is None  # the cache did turn over
        h.to_master()
        h.clock.advance(1.0)
        adverts = h.adverts()
        assert len(adverts) == 2 and all(a[:6] == PEER_MAC for a in adverts)
        assert h.node.counters["adverts_unresolved"] == 0

    # the documentation networks hold fewer senders than the cache: a smaller one turns over
    harness(scenario, config=make_config(with_peer), neigh=NeighbourCache(max_entries=64))


# -- ifconfig --------------------------------------------------------------------------------------


def test_ifconfig_updates_in_place_or_replaces(harness: Callable[..., None]) -> None:
    async def scenario(h: Harness) -> None:
        host = h.node.host
        assert host is not None
        h.to_master()
        tap = h.dev("carp0")
        h.actions.clear()
        h.node.ifconfig("carp0", parse_change(["advskew", "100"]))  # SIOCSVH: state kept
        assert h.state() is State.MASTER and host.carpifs["carp0"].leader.advskew == 100
        assert h.dev("carp0") is tap and not tap.closed
        assert not [a for a in h.actions if isinstance(a, StateChanged)]
        h.node.ifconfig("carp0", parse_change(["vhid", "2"]))  # a new carp interface
        assert h.state() is State.BACKUP
        assert [(a.old, a.new) for a in h.actions if isinstance(a, StateChanged)] == [
            (State.MASTER, State.INIT),
            (State.INIT, State.BACKUP),
        ]
        new = h.dev("carp0")
        assert tap.closed and new is not tap
        assert new.mac == vhe_mac(2, Balancing.NONE, True) and new.carrier is False
        assert h.system.addresses["carp0"] == [VIP]
        special = h.node.dataplane.switch("lan0").special_macs
        assert vhe_mac(2, Balancing.NONE, True) in special
        assert vhe_mac(1, Balancing.NONE, True) not in special

    harness(scenario)


def with_carp1(data: dict[str, Any]) -> None:
    data["carp"]["carp1"] = {"carpdev": "lan0", "addresses": ["198.51.100.11/24"], "vhid": 2}


def test_an_ifconfig_change_that_cannot_be_applied_changes_nothing(
    harness: Callable[..., None],
) -> None:
    async def scenario(h: Harness) -> None:
        host = h.node.host
        assert host is not None
        h.to_master()
        tap = h.dev("carp0")
        with pytest.raises(ValueError, match="vhid 2"):  # carp1 has it: the core refuses
            h.node.ifconfig("carp0", parse_change(["vhid", "2"]))
        assert h.dev("carp0") is tap and not tap.closed and h.state() is State.MASTER
        h.system.fail_next["carp0"] = OSError(errno.ENOMEM, "Cannot allocate memory")
        with pytest.raises(ValueError, match=r"carp0.*Cannot allocate memory.*nothing changed"):
            h.node.ifconfig("carp0", parse_change(["vhid", "3"]))
        assert h.state() is State.MASTER and [v.vhid for v in host.carpifs["carp0"].vhes] == [1]
        back = h.dev("carp0")  # the old TAP again, as it was
        assert back.mac == vhe_mac(1, Balancing.NONE, True) and back.carrier is True
        assert h.system.addresses["carp0"] == [VIP]
        h.clock.advance(1.0)
        assert len(h.adverts()) == 2  # and it still advertises

    harness(scenario, config=make_config(with_carp1))


def test_ifconfig_keeps_the_rules_of_the_node_file(harness: Callable[..., None]) -> None:
    async def scenario(h: Harness) -> None:
        host = h.node.host
        assert host is not None
        h.to_master()
        tap = h.dev("carp0")
        refusals = {
            ("alias", "192.0.2.9/24"): "word 2 '192.0.2.9/24': no host address of switch "
            "lan0 is in 192.0.2.0/24, so the node has no route back to its clients",
            ("alias", "198.51.100.2/24"): "word 2 '198.51.100.2/24': 198.51.100.2 is "
            "already a host address of switch lan0 (virtual addresses must be unique",
            ("alias", "198.51.100.11/24"): "word 2 '198.51.100.11/24': 198.51.100.11 is "
            "already a virtual address of carp1 (virtual addresses must be unique",
            ("carppeer", "198.51.100.255"): "word 1 'carppeer 198.51.100.255': 198.51.100.255 "
            "is the broadcast address of 198.51.100.0/24",
            ("vhid", "2"): "word 1 'vhid 2': vhid 2 is already used by carp1 on switch lan0",
        }
        for words, message in refusals.items():
            with pytest.raises(ValueError) as refused:
                h.node.ifconfig("carp0", parse_change(list(words)))
            assert str(refused.value).startswith(message), str(refused.value)
            assert "carp.carp0" not in str(refused.value)
            params = host.carpifs["carp0"].params
            assert [str(a) for a in params.addresses] == [VIP] and params.carppeer is None
            assert h.dev("carp0") is tap and not tap.closed and h.state() is State.MASTER
            assert h.system.addresses["carp0"] == [VIP]
        h.node.ifconfig("carp0", parse_change(["alias", "198.51.100.20/24"]))  # a covered one
        addresses = [str(a) for a in host.carpifs["carp0"].params.addresses]
        assert addresses == [VIP, "198.51.100.20/24"]

    harness(scenario, config=make_config(with_carp1))


def test_ifconfig_refuses_only_what_the_change_brings(harness: Callable[..., None]) -> None:
    """A reload that leaves carp0 for a restart (its new carpdev is a new switch) leaves the
    running carp0 outside the file's subnets: unrelated changes to it still apply."""

    async def scenario(h: Harness) -> None:
        host = h.node.host
        assert host is not None

        def move(data: dict[str, Any]) -> None:
            data["switch"]["lan0"]["host"] = ["203.0.113.2/24"]
            data["switch"]["lan1"] = {"host": ["198.51.100.3/24"], "offload": False}
            data["carp"]["carp0"]["carpdev"] = "lan1"

        changes = h.node.reload(make_config(move))
        assert "carp0: carpdev lan1 needs a restart" in changes
        assert host.carpifs["carp0"].carpdev == "lan0"
        h.node.ifconfig("carp0", parse_change(["advskew", "7"]))
        assert host.carpifs["carp0"].leader.advskew == 7
        with pytest.raises(ValueError, match=r"^word 2 '192\.0\.2\.9/24': no host"):
            h.node.ifconfig("carp0", parse_change(["alias", "192.0.2.9/24"]))
        assert [str(a) for a in host.carpifs["carp0"].params.addresses] == [VIP]

    harness(scenario)


# -- reload ----------------------------------------------------------------------------------------


def test_reload_applies_what_changed_and_keeps_state(harness: Callable[..., None]) -> None:
    async def scenario(h: Harness) -> None:
        h.to_master()

        def edit(data: dict[str, Any]) -> None:
            data["sysctl"] = {"preempt": True}
            data["carp"]["carp0"]["advskew"] = 50
            with_carp1(data)
            data["switch"]["lan0"]["ports"].append({"name": "vm2", "type": "tap"})

        changes = h.node.reload(make_config(edit))
        assert changes == [
            "switch lan0: port vm2 added",
            "net.inet.carp.preempt=1",
            "carp0 updated, state kept",
            "carp1 added",
        ]
        assert h.state() is State.MASTER and h.state("carp1") is State.BACKUP
        assert not h.dev("vm2").closed and not h.dev("carp1").closed
        assert h.node.config.carp["carp1"].addresses

    harness(scenario)


def test_a_reload_that_fails_changes_nothing_and_the_next_one_applies(
    harness: Callable[..., None],
) -> None:
    async def scenario(h: Harness) -> None:
        h.to_master()
        before = h.node.config
        vm1 = h.dev("vm1")

        def swap_port(data: dict[str, Any]) -> None:
            ports = data["switch"]["lan0"]["ports"]
            ports[:] = [ports[0], {"name": "up1", "type": "raw", "ifname": "eth9"}]
            with_carp1(data)

        with pytest.raises(ConfigError) as refused:
            h.node.reload(make_config(swap_port))
        assert "eth9" in str(refused.value)
        assert h.node.config is before and h.dev("vm1") is vm1 and not vm1.closed
        assert "carp1" not in h.system.devices and h.state() is State.MASTER

        def add_both(data: dict[str, Any]) -> None:  # the port opens, the carp TAP does not
            data["switch"]["lan0"]["ports"].append({"name": "vm2", "type": "tap"})
            with_carp1(data)

        h.system.fail_next["carp1"] = OSError(errno.EEXIST, "File exists")
        controller = NodeController(h.node, EventBus("gw-a"), None, lambda: make_config(add_both))
        answer = Dispatcher(controller).handle({"id": 1, "cmd": "reload"})
        assert answer["ok"] is False and "carp1" in answer["errors"][0]
        assert "vm2" not in h.system.devices and "carp1" not in h.system.devices
        assert h.node.config is before and h.state() is State.MASTER

        def drop_vm1(data: dict[str, Any]) -> None:
            del data["switch"]["lan0"]["ports"][1]

        assert h.node.reload(make_config(drop_vm1)) == ["switch lan0: port vm1 removed"]
        assert vm1.closed and "vm1" not in h.system.devices
        assert h.state() is State.MASTER
        h.clock.advance(1.0)
        assert len(h.adverts()) == 2

    harness(scenario)


def test_reload_sets_the_switch_mode_as_a_start_does(harness: Callable[..., None]) -> None:
    def mode(name: str) -> Callable[[dict[str, Any]], None]:
        def edit(data: dict[str, Any]) -> None:
            data["switch"]["lan0"]["mode"] = name

        return edit

    async def scenario(h: Harness) -> None:
        fwd = h.node.dataplane.switch("lan0")
        for name in ("learning-arp", "hub", "learning-arp", "learning"):
            started_so = started(make_config(mode(name)), system=FakeSystem(("up0",)))
            try:
                at_start = started_so.node.dataplane.switch("lan0")
                expected = (at_start.mode, at_start.hub, at_start.learn_arp)
            finally:
                started_so.node.close()
            changes = h.node.reload(make_config(mode(name)))
            assert changes == [f"switch lan0: mode {name}, ageing 300"]
            assert (fwd.mode, fwd.hub, fwd.learn_arp) == expected
            assert expected[0] == name
            (status,) = h.node.dataplane.switch_status()
            assert status["mode"] == name

    harness(scenario)


def test_sysctls_read_the_same_everywhere(harness: Callable[..., None]) -> None:
    async def scenario(h: Harness) -> None:
        controller = NodeController(h.node, EventBus("gw-a"))
        dispatcher = Dispatcher(controller)
        answer = dispatcher.handle({"id": 1, "cmd": "sysctl", "name": "preempt", "value": 1})
        assert answer["result"] == {"net.inet.carp.preempt": 1, "old": 0}
        every = {"allow": 1, "preempt": 1, "log": 2}
        assert controller.sysctl(None, None) == controller.status()["sysctl"] == every
        assert controller.sysctl("net.inet.carp.log", None) == {"log": 2}
        answer = dispatcher.handle({"id": 2, "cmd": "sysctl"})
        assert {k: v for k, v in answer["result"].items() if ".stats." not in k} == {
            f"net.inet.carp.{k}": v for k, v in every.items()
        }

    harness(scenario)


# -- nothing on the side stops the protocol --------------------------------------------------------


def test_a_raising_sink_and_listener_stop_neither_adverts_nor_the_timer(
    harness: Callable[..., None], caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(h: Harness) -> None:
        calls: list[int] = []

        def broken(now: float, actions: Any) -> None:
            raise RuntimeError("listener bug")

        h.node.listeners.insert(0, broken)
        h.node.listeners.append(lambda now, actions: calls.append(len(actions)))
        with caplog.at_level(logging.ERROR, logger="vswitch.node"):
            h.clock.advance(3.0)  # master-down: MASTER, log lines, advert, gratuitous ARP
            assert h.state() is State.MASTER and len(h.adverts()) == 1
            assert [a for a in arps(h.dev("up0").out) if a.gratuitous]
            assert h.dev("carp0").carrier is True
            assert h.clock.pending == [START + 4.0]
            h.clock.advance(1.0)  # the timer fires again
            assert len(h.adverts()) == 2 and h.clock.pending == [START + 5.0]
            h.node.ifconfig("carp0", parse_change(["down"]))  # bow-out, logged
        assert calls and h.node.counters["apply_errors"] >= 4
        logged = [r.getMessage() for r in caplog.records if r.name == "vswitch.node"]
        assert sum("Log action" in m for m in logged) == 1  # once per kind
        assert sum("listener" in m for m in logged) == 1

    data = config_data()
    data["sysctl"] = {"log": 7}
    harness(scenario, config=parse_config(data), sink=BrokenSink())


def ether(dst: bytes, src: bytes, fill: int) -> bytes:
    return dst + src + b"\x88\xb5" + bytes([fill]) * 46


BAD = 0xEE  # the payload byte the broken core trips on


def test_a_carp_hook_that_raises_drops_that_frame_only(
    harness: Callable[..., None], caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(h: Harness) -> None:
        dp = h.node.datapath
        assert dp is not None
        real_input, real_output = dp.input, dp.output

        def input_(now: float, carpdev: str, port: str, frame: bytes) -> list[Action]:
            if frame[-1] == BAD:
                raise RuntimeError("core bug")
            return real_input(now, carpdev, port, frame)

        def output(carpdev: str, frame: bytes, from_carp: bool) -> bytes | None:
            if frame[-1] == BAD:
                raise RuntimeError("core bug")
            return real_output(carpdev, frame, from_carp)

        dp.input = input_  # type: ignore[method-assign]
        dp.output = output  # type: ignore[method-assign]
        h.to_master()
        up0, carp_mac, everyone = h.dev("up0"), vhe_mac(1, Balancing.NONE, True), b"\xff" * 6
        assert carp_mac in h.node.dataplane.switch("lan0").special_macs
        good = [ether(everyone, OTHER_MAC, n) for n in (1, 2, 3)]
        with caplog.at_level(logging.ERROR, logger="vswitch.node"):
            # multicast hook, special hook, then the host port's egress filter
            h.dev("vm1").receive(
                good[0], ether(everyone, OTHER_MAC, BAD), good[1], ether(carp_mac, OTHER_MAC, BAD)
            )
            h.dev("vm1").receive(good[2])
            await until(lambda: good[2] in up0.out)
            assert good[0] in up0.out and good[1] in up0.out
            mine = [ether(everyone, OWN_MAC, n) for n in (4, 5)]
            h.dev("lan0").receive(mine[0], ether(everyone, OWN_MAC, BAD), mine[1])
            await until(lambda: mine[1] in up0.out)
            assert mine[0] in up0.out and ether(everyone, OWN_MAC, BAD) not in up0.out
        assert h.node.counters["apply_errors"] == 3
        host_port = h.node.dataplane.switch("lan0").ports["lan0"]
        assert host_port.counters.rx_filtered == 1
        logged = [r.getMessage() for r in caplog.records if r.name == "vswitch.node"]
        assert sum("carp input on switch lan0 failed" in m for m in logged) == 1  # once per kind
        assert sum("carp output on switch lan0 failed" in m for m in logged) == 1
        assert h.state() is State.MASTER

    harness(scenario)


def test_a_core_that_raises_in_its_timer_is_retried_later(harness: Callable[..., None]) -> None:
    async def scenario(h: Harness) -> None:
        host = h.node.host
        assert host is not None
        real = host.handle_timer
        failures: list[float] = []

        def once(now: float) -> list[Action]:
            if not failures:
                failures.append(now)
                raise RuntimeError("core bug")
            return real(now)

        host.handle_timer = once  # type: ignore[method-assign]
        h.clock.advance(3.0)
        assert failures == [START + 3.0] and h.node.counters["apply_errors"] == 1
        assert h.clock.pending == [pytest.approx(START + 3.1)]  # not a busy loop
        h.clock.advance(0.1)
        assert h.state() is State.MASTER

    harness(scenario)


# -- sysctls on interfaces the node did not create ------------------------------------------------


def raw_sysctls(system: FakeSystem, ifname: str = "up0") -> list[str]:
    return [system.sysctls[if_sysctl(af, ifname, key)] for af, key, _ in SWITCH_PORT_SYSCTLS]


def test_sysctls_of_a_raw_port_are_put_back(run: Run) -> None:
    async def main() -> None:
        system = FakeSystem(("up0", "up1"))
        system.sysctls[if_sysctl("ipv4", "up1", "arp_ignore")] = "2"

        def two_raw(data: dict[str, Any]) -> None:
            data["switch"]["lan0"]["ports"].append({"name": "up1", "type": "raw", "ifname": "up1"})

        h = started(make_config(two_raw), system=system)
        assert raw_sysctls(system) == raw_sysctls(system, "up1") == ["1", "1", "1"]
        assert h.node.reload(make_config()) == ["switch lan0: port up1 removed"]
        assert raw_sysctls(system, "up1") == ["2", "0", "0"]  # let go of: as it was
        assert raw_sysctls(system) == ["1", "1", "1"]
        h.node.close()
        assert raw_sysctls(system) == ["0", "0", "0"]
        assert system.interfaces == {"up0", "up1"}  # every TAP it made is gone

    run(main())


def test_a_start_that_fails_undoes_everything(run: Run) -> None:
    async def main() -> None:
        system = FakeSystem()

        def missing(data: dict[str, Any]) -> None:
            data["switch"]["lan0"]["ports"].append({"name": "up1", "type": "raw", "ifname": "eth9"})

        with pytest.raises(
            ConfigError, match=r"switch\.lan0\.ports\[2\]\.ifname: no interface eth9"
        ):
            started(make_config(missing), system=system)
        assert raw_sysctls(system) == ["0", "0", "0"]
        assert system.opened and all(d.closed for d in system.opened)
        assert system.interfaces == {"up0"}

    run(main())


# -- the port types -------------------------------------------------------------------------------


def test_every_port_model_has_one_opener_and_every_opener_a_model() -> None:
    models = set(PORT_TYPES.values())
    without = sorted(m.__name__ for m in models - set(PORT_OPENERS))
    assert not without, f"no entry in vswitch.system.PORT_OPENERS for {without}"
    assert set(PORT_OPENERS) <= models  # an opener no config can reach


def test_linux_system_opens_a_port_through_its_type_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeSystem()
    calls: list[tuple[str, object, object]] = []

    def check(port: TapPortConfig, system: object) -> None:
        calls.append(("check", port.name, system))

    def open_(port: TapPortConfig, vnet_hdr: int, queues: int) -> DevicePort:
        calls.append(("open", port.name, (vnet_hdr, queues)))
        return fake._open("tap", port.name, None, True)

    monkeypatch.setattr(vswitch.system, "PORT_OPENERS", {TapPortConfig: PortType(open_, check)})
    system = LinuxSystem(queues=3)
    dev = system.open_port(TapPortConfig(name="vm7", type="tap"), vnet_hdr=10)
    assert calls == [("check", "vm7", system), ("open", "vm7", (10, 3))]
    assert dev is fake.devices["vm7"]
    dev.close()
    calls.clear()

    def refuse(port: TapPortConfig, system: object) -> None:
        raise PortRefused("mac", "taken", "pick another")

    monkeypatch.setattr(vswitch.system, "PORT_OPENERS", {TapPortConfig: PortType(open_, refuse)})
    with pytest.raises(PortRefused, match=r"^mac: taken \(pick another\)$"):
        system.open_port(TapPortConfig(name="vm8", type="tap"), vnet_hdr=0)
    assert calls == []  # refused before anything was opened
    monkeypatch.setattr(vswitch.system, "PORT_OPENERS", {})
    with pytest.raises(TypeError, match="no opener for port model TapPortConfig"):
        system.open_port(TapPortConfig(name="vm9", type="tap"), vnet_hdr=0)


# -- run.py: signals before the node serves --------------------------------------------------------


def test_signals_are_held_until_released() -> None:
    before = signal.getsignal(signal.SIGHUP)
    held = HeldSignals()
    held.hold()
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        os.kill(os.getpid(), signal.SIGTERM)
        # the handlers run between bytecodes of the main thread: poll, no loop needed
        poll(lambda: len(held.pending) >= 2, "both signals held")
        assert held.take() == [signal.SIGHUP, signal.SIGTERM]
        assert held.take() == []
    finally:
        held.release()
    assert signal.getsignal(signal.SIGHUP) == before


# -- run.py: what systemd and the side channels are told ------------------------------------------


class Manager:
    """systemd's end of NOTIFY_SOCKET: the datagrams received, in order."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.setblocking(False)
        self.notifier = Notifier(path)

    def received(self) -> list[bytes]:
        out = []
        with contextlib.suppress(BlockingIOError):
            while True:
                out.append(self.sock.recv(4096))
        return out

    def close(self) -> None:
        self.notifier.close()
        self.sock.close()


def counting_switch_status(node: Node) -> list[int]:
    """Calls of the data plane's switch_status (the kernel counters): counted from now."""
    calls: list[int] = []
    real = node.dataplane.switch_status

    def counted() -> Any:
        calls.append(1)
        return real()

    node.dataplane.switch_status = counted  # type: ignore[method-assign]
    return calls


def test_state_changes_tell_systemd_the_carp_states_only(
    harness: Callable[..., None], tmp_path: Path
) -> None:
    async def scenario(h: Harness) -> None:
        manager = Manager(str(tmp_path / "notify"))
        try:
            bus = EventBus("gw-a", lambda: states_of(controller.carp_status()))  # as run.py
            controller = NodeController(h.node, bus)
            reads = counting_switch_status(h.node)
            h.node.listeners.append(functools.partial(_tell_systemd, manager.notifier, controller))
            assert controller.carp_status() == controller.status()["carp"]
            reads.clear()
            h.clock.advance(3.0)  # master-down: BACKUP -> MASTER
            assert manager.received() == [b"STATUS=carp0 MASTER"]
            snapshot = bus.subscribe(maxsize=8)
            event = snapshot.get_nowait()
            assert event is not None and (event.carpif, event.vhid, event.new) == (
                "carp0",
                1,
                "MASTER",
            )
            assert not reads  # neither read a switch's counters
            assert manager.notifier.stats() == {"sent": 1, "dropped": 0}
        finally:
            manager.close()

    harness(scenario)


def test_a_reload_ends_with_ready_even_without_a_status(
    harness: Callable[..., None], tmp_path: Path
) -> None:
    async def scenario(h: Harness) -> None:
        manager = Manager(str(tmp_path / "notify"))
        sink = RecordingSink()
        try:
            controller = NodeController(h.node, EventBus("gw-a"), None, make_config)
            _reload(controller, sink, manager.notifier)
            got = manager.received()
            assert got[0].startswith(b"RELOADING=1\n") and got[1:] == [
                b"READY=1",
                b"STATUS=carp0 BACKUP",
            ]

            def broken() -> Any:
                raise RuntimeError("status bug")

            controller.carp_status = broken  # type: ignore[method-assign]
            _reload(controller, sink, manager.notifier)
            assert manager.received()[1:] == [b"READY=1"]
            assert [m for _, m in sink.lines] == ["vswitch: reloaded (no change)"] * 2
        finally:
            manager.close()

    harness(scenario)


def test_the_log_channel_counts_what_the_logging_bridge_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(logging, "lastResort", logging.lastResort)  # restored afterwards
    sink = BrokenSink()
    bridge = install(sink, logger="vswitch.test_node.bridge")
    try:
        assert log_stats(sink, bridge) == {"dropped": 0, "bridge_dropped": 0}
        logging.getLogger("vswitch.test_node.bridge").warning("lost")
        monkeypatch.setattr(logging.getLogger("vswitch.test_node.nohandler"), "propagate", False)
        logging.getLogger("vswitch.test_node.nohandler").warning("lost too")  # the last resort
        assert log_stats(sink, bridge) == {"dropped": 0, "bridge_dropped": 2}
        assert log_stats(sink, None) == {"dropped": 0, "bridge_dropped": 0}
    finally:
        logging.getLogger("vswitch.test_node.bridge").removeHandler(bridge)


# -- the protocol's turn between forwarding batches (issue 10, item 3) ------------------------

FRAME = bytes.fromhex("ffffffffffff020000000099") + b"\x88\xb5" + bytes(46)


def test_a_passed_deadline_fires_after_the_next_batch(harness: Callable[..., None]) -> None:
    async def scenario(h: Harness) -> None:
        h.to_master()
        assert len(h.adverts()) == 1
        (timer,) = [t for t in h.clock.timers if not (t.cancelled or t.fired)]
        h.clock.now = timer.when + 0.001  # the deadline passed; the loop's timer has not run
        h.dev("vm1").receive(FRAME)  # a batch to forward
        await until(lambda: len(h.adverts()) == 2)
        assert timer.cancelled  # fired from the data plane, the loop's timer dropped
        assert h.clock.pending == [h.clock.now + 1.0]  # and the next advertisement armed

    harness(scenario)


def test_nothing_fires_between_batches_before_the_deadline(harness: Callable[..., None]) -> None:
    async def scenario(h: Harness) -> None:
        h.to_master()
        h.dev("vm1").receive(FRAME)
        await until(lambda: FRAME in h.dev("up0").out)
        assert len(h.adverts()) == 1 and len(h.clock.pending) == 1

    harness(scenario)
