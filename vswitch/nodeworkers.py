"""The node's side of its forwarding workers (`[node] workers = N`; vswitch/workers.py).

`Forwarders` ties a `WorkerPool` to a `Node`: the `State` it publishes (the data path's
`Decisions`, each switch's special MACs and their owners, every port's link), the layouts of the
ports the workers read, what the workers hand over (advertisements, ARP frames, frames for the
socket ports), and a CARP-only socket per raw port that this process reads itself, so that a
peer's advertisement reaches the protocol as soon as the node process runs, not when a worker
busy with traffic gets to it (the workers only switch those on).
"""

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from carp.wire import ETHER_HDR_LEN, frame_is_carp
from vswitch.accounting import Share
from vswitch.port import READ_BATCH, DeviceCounters, DevicePort
from vswitch.raw import PACKET_OUTGOING, carp_socket, read_packet_statistics
from vswitch.status import WorkersStatus
from vswitch.workerproto import Layout, State
from vswitch.workers import WorkerPool, layouts

if TYPE_CHECKING:
    from carp.datapath import DataPathStats
    from vswitch.node import Node

STATIONS_DELAY = 0.05  # seconds from a station learned to the State that tells the workers
STATIONS_INTERVAL = 1.0  # ... and at least this long between two such States
ADVERT_READ = 2048  # an advertisement is under 100 bytes; IPv6 extension headers fit too

Failed = Callable[[str, Exception], None]


class Forwarders:
    def __init__(self, node: "Node", count: int, failed: Failed) -> None:
        self.node = node
        self.failed = failed
        self.pool = WorkerPool(node.dataplane.loop, count, self._message)
        self._sockets: dict[tuple[str, str], tuple[DevicePort, socket.socket]] = {}
        self._publish_soon: asyncio.TimerHandle | None = None
        self._stations_published = float("-inf")
        self._advert_drops = DeviceCounters()  # rx_kernel: drops on the advertisement sockets

    def start(self) -> None:
        dp = self.node.dataplane
        dp.shares = self.pool.share
        dp.before_close = self._release
        for rt in dp.switches.values():
            rt.fwd.on_stations = self._stations_changed
        self.pool.after_batch = self.node._due
        self.pool.start(self._layouts())

    def publish(self) -> None:
        self.pool.publish(self.state())

    def relayout(self) -> None:
        """After a change of the ports; a failure is logged and counted (the pool retries a
        worker that cannot start)."""
        try:
            self.pool.relayout(self._layouts())
        except Exception as exc:
            self.failed("forwarding workers", exc)

    def close(self) -> None:
        if self._publish_soon is not None:
            self._publish_soon.cancel()
            self._publish_soon = None
        self.pool.close()
        loop = self.node.dataplane.loop
        for _, sock in self._sockets.values():
            loop.remove_reader(sock.fileno())
            sock.close()
        self._sockets.clear()

    # -- what status reads

    def share(self, switch: str) -> Share | None:
        return self.pool.share(switch)

    def datapath_stats(self, own: "DataPathStats") -> dict[str, int]:
        return self.pool.datapath_stats(own)

    def status(self) -> WorkersStatus:
        status = self.pool.status()
        for _, sock in self._sockets.values():
            self._read_drops(sock)
        status["advert_socket_drops"] = self._advert_drops.rx_kernel
        return status

    def _read_drops(self, sock: socket.socket) -> None:
        """The kernel's drops on an advertisement socket (its receive queue was full), added
        up: reading resets them, and the socket may be closed before the next status."""
        with contextlib.suppress(OSError):
            read_packet_statistics(sock, self._advert_drops)

    # -- state and layouts

    def state(self) -> State:
        node = self.node
        assert node.datapath is not None
        switches = node.dataplane.switches
        host = node.core()
        peers = frozenset(
            sc.params.carppeer.packed
            for sc in host.carpifs.values()
            if sc.params.carppeer is not None
        )
        delegated = node.dataplane.delegated
        return State(
            node.datapath.decisions(),
            {n: (rt.fwd.special_macs, rt.fwd.special_owners) for n, rt in switches.items()},
            {n: {p: fp.link_up for p, fp in rt.fwd.ports.items()} for n, rt in switches.items()},
            peers,
            {
                n: rt.fwd.learned_on(p for p, d in rt.devices.items() if d.kind not in delegated)
                for n, rt in switches.items()
            },
        )

    def _stations_changed(self) -> None:
        """Stations learned, moved or aged out on this process's ports: the workers hear of it
        soon, in one State for all that changed meanwhile, and at most once a second (a MAC
        flood on a socket port is a few States, not one per frame)."""
        if self._publish_soon is not None:
            return
        loop = self.node.dataplane.loop
        delay = max(STATIONS_DELAY, self._stations_published + STATIONS_INTERVAL - loop.time())
        self._publish_soon = loop.call_later(delay, self._publish_stations)

    def _publish_stations(self) -> None:
        self._publish_soon = None
        self._stations_published = self.node.dataplane.loop.time()
        try:
            self.publish()
        except Exception as exc:
            self.failed("forwarding workers' stations", exc)

    def _layouts(self) -> list[Layout]:
        # the running pool's count: a reload that changes [node] workers needs a restart
        node = self.node
        direct = self._carp_sockets()
        carp_taps = set(node.devices.carp_taps)
        return layouts(node.dataplane, self.pool.count, carp_taps, self.state(), direct)

    def _release(self, dev: DevicePort) -> None:
        """A device the workers read is about to be closed: they let go of it first, or its TAP
        would outlive the close and a new one of that name could not be made."""
        self.pool.stop_all()

    # -- what the workers hand over

    def _message(self, message: tuple[object, ...]) -> None:
        node = self.node
        try:
            kind = message[0]
            if kind == "advert":
                _, carpdev, packet = message
                assert isinstance(carpdev, str) and isinstance(packet, bytes)
                node.advert(carpdev, packet)
            elif kind == "arp":
                assert isinstance(message[1], bytes)
                node.neigh.snoop(node.clock(), message[1])
            elif kind == "out":
                _, switch, name, frame = message
                assert isinstance(switch, str) and isinstance(name, str)
                assert isinstance(frame, bytes)
                node.dataplane.write(switch, name, frame)
        except Exception as exc:
            self.failed(f"worker message {message[0]!r}", exc)

    # -- the CARP sockets on raw ports

    def _carp_sockets(self) -> set[tuple[str, str]]:
        """A CARP socket on every raw port (raw.carp_socket), read here; the (switch, port)
        pairs that have one. A socket that cannot be opened leaves that port's advertisements
        to its workers."""
        dp = self.node.dataplane
        want = {
            (sw, name): dev
            for sw, rt in dp.switches.items()
            for name, dev in rt.devices.items()
            if dev.kind == "raw" and not dev.closed
        }
        for key, (dev, sock) in list(self._sockets.items()):
            if want.get(key) is not dev:
                dp.loop.remove_reader(sock.fileno())
                self._read_drops(sock)
                sock.close()
                del self._sockets[key]
        for key, dev in want.items():
            if key not in self._sockets:
                try:
                    sock = carp_socket(dev.ifname, dev.netns)
                except Exception as exc:  # e.g. the interface renamed: the workers take them
                    self.failed(f"advertisement socket on {dev.ifname}", exc)
                    continue
                dp.loop.add_reader(sock.fileno(), self._read, key[0], sock)
                self._sockets[key] = (dev, sock)
        return set(self._sockets)

    def _read(self, switch: str, sock: socket.socket) -> None:
        node = self.node
        for _ in range(READ_BATCH):
            try:
                frame, addr = sock.recvfrom(ADVERT_READ)
            except BlockingIOError:
                return
            except OSError as exc:
                self.failed("advertisement socket", exc)
                return
            if addr[2] == PACKET_OUTGOING or not frame_is_carp(frame):
                continue
            # what the switch would hand to carp: a group address or one of its special MACs
            # (the socket is promiscuous; unicast for another host is not ours)
            if not frame[0] & 1 and frame[:6] not in node.dataplane.switch(switch).special_macs:
                continue
            try:
                node.advert(switch, frame[ETHER_HDR_LEN:])
            except Exception as exc:
                self.failed(f"carp input on switch {switch}", exc)
