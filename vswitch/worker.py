"""A forwarding worker: one process per queue (`[node] workers = N`), started by the node.

`python -m vswitch.worker FD`: FD is the worker's end of its socketpair with the node
(vswitch/workerproto.py). The worker reads its queue of every TAP and raw port of the node (the
node opened them with N queues, or N sockets in a PACKET_FANOUT group, and passed the worker its
own at spawn), switches the frames with its own copy of each switch (fwd.py, MAC learning of its
own: a destination it has not seen floods), and applies the carp decisions the node publishes
(`State`: carp/datapath.py `Decisions`, special MACs, links) with the same hooks as the node
(vswitch/carphooks.py). It never runs the protocol: CARP advertisements go to the node, which
answers through its own writes; ARP frames the hooks see go to it for its neighbour cache; frames
for a socket port go to it to be written.

It dies with the node (PR_SET_PDEATHSIG: a `kill -9` of the node takes its TAPs off the wire at
once) and when the pair closes.
"""

import asyncio
import collections
import ctypes
import errno
import functools
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence

import uvloop

from carp.actions import Action, Deliver, Transmit
from carp.datapath import DataPath
from carp.params import CarpDev
from vswitch import heap
from vswitch.carphooks import CarpHooks
from vswitch.dataplane import DataPlane
from vswitch.fwd import Emit
from vswitch.netlink import LinkState
from vswitch.port import READ_BATCH, DevicePort, WriteResult, read_fd_batch
from vswitch.raw import read_socket_batch, sender
from vswitch.workerproto import (
    COUNTS_INTERVAL,
    MAX_MESSAGE,
    Layout,
    PortLayout,
    State,
    WorkerCounts,
    decode,
    encode,
)

log = logging.getLogger("vswitch.worker")
PR_SET_PDEATHSIG = 1
ADVERT_BACKLOG = 256  # advertisements kept while the channel to the node is full


class QueuePort(DevicePort):
    """The worker's queue of a TAP, or its socket of a raw port's fanout group."""

    follows_link = False  # the node follows the link and says so in `State`

    def __init__(self, p: PortLayout, vnet_hdr: int) -> None:
        super().__init__(p.name, None, vnet_hdr)
        self.kind = p.kind
        self._fd = p.fd
        self._layout = p
        self._sock: socket.socket | None = None
        if p.kind == "raw":
            self._sock = socket.socket(fileno=p.fd)
            self._sender = sender(self._sock, vnet_hdr)
        else:
            self._sender = functools.partial(os.write, p.fd)

    @property
    def fds(self) -> tuple[int, ...]:
        return (self._fd,)

    def read_batch(self, fd: int, limit: int = READ_BATCH) -> list[bytes]:
        p = self._layout
        if self._sock is not None:
            return read_socket_batch(
                self._sock, self.dev, limit, p.skips_outgoing, self.vnet_hdr, p.max_plain
            )
        return read_fd_batch(self, fd, p.bufsize, limit)

    def link_from(self, state: LinkState) -> bool:
        return self.link_up

    def close(self) -> None:
        self.closed = True  # the fds are the node's; they close with this process


class RelayPort(DevicePort):
    """A port the node process serves (a socket port): frames switched to it go to the node,
    which writes them and counts them written; a full pair counts `tx_full` here."""

    follows_link = False

    def __init__(self, worker: "Worker", switch: str, name: str, vnet_hdr: int) -> None:
        super().__init__(name, None, vnet_hdr)
        self.kind = "relay"
        self._worker = worker
        self._switch = switch

    @property
    def fds(self) -> tuple[int, ...]:
        return ()

    def write_batch(self, frames: Sequence[bytes]) -> WriteResult:
        for frame in frames:
            if not self._worker.send(("out", self._switch, self.ifname, frame)):
                self.dev.tx_errors[errno.EAGAIN] = self.dev.tx_errors.get(errno.EAGAIN, 0) + 1
        return WriteResult(0, 0)  # counted written by the node, where it is written

    def link_from(self, state: LinkState) -> bool:
        return self.link_up

    def close(self) -> None:
        self.closed = True


class RelayHost:
    """The HostView of a worker's DataPath: decisions come from `load`, advertisements go to
    the node."""

    def __init__(self, worker: "Worker") -> None:
        self._worker = worker
        self.carpifs: dict[str, object] = {}
        self.carpdevs: dict[str, CarpDev] = {}

    def receive(self, now: float, carpdev: str, ip_packet: bytes) -> list[Action]:
        self._worker.send(("advert", carpdev, ip_packet))
        return []


class Worker:
    def __init__(self, loop: asyncio.AbstractEventLoop, channel: socket.socket) -> None:
        self.loop = loop
        self.channel = channel
        self.dp = DataPlane(loop)
        self.datapath = DataPath(RelayHost(self))  # type: ignore[arg-type]
        self.counts = WorkerCounts()
        self.done: asyncio.Future[None] = loop.create_future()
        self._buffer = bytearray(MAX_MESSAGE)
        self.carppeers: frozenset[bytes] = frozenset()
        # advertisements the full channel could not take, sent when it can (never dropped for
        # relayed frames or ARP: a lost advertisement can make a BACKUP take over)
        self._adverts: collections.deque[bytes] = collections.deque(maxlen=ADVERT_BACKLOG)

    def send(self, message: tuple[object, ...]) -> bool:
        data = encode(message)
        if self._adverts and message[0] == "advert":
            self._adverts.append(data)  # in order, after those waiting
            return True
        try:
            self.channel.send(data)
        except BlockingIOError:
            if message[0] == "advert":
                if not self._adverts:
                    self.loop.add_writer(self.channel.fileno(), self._send_adverts)
                self._adverts.append(data)
                return True
            self._error(f"channel full: {message[0]}")
            return False
        except (BrokenPipeError, ConnectionResetError):
            self.stop()  # the node is gone
            return False
        except OSError as exc:
            self._error(f"send {message[0]}: {exc.strerror or exc}")
            return False
        return True

    def _send_adverts(self) -> None:
        while self._adverts:
            try:
                self.channel.send(self._adverts[0])
            except BlockingIOError:
                return
            except OSError:
                self._error("advert not sent")
            self._adverts.popleft()
        self.loop.remove_writer(self.channel.fileno())

    def _error(self, what: str) -> None:
        self.counts.errors[what] = self.counts.errors.get(what, 0) + 1

    def build(self, layout: Layout) -> None:
        direct = {(sw.name, p.name) for sw in layout.switches for p in sw.ports if p.direct}
        hooks = CarpHooks(
            self.datapath, self._carp_taps(layout), self._run, self._snoop, self._failed, direct
        )
        for sw in layout.switches:
            fwd = self.dp.add_switch(
                sw.name, hub=sw.mode == "hub", ageing=sw.ageing, offload=sw.offload
            )
            fwd.mode = sw.mode
            for p in sw.ports:
                dev: DevicePort
                if p.kind == "relay":
                    dev = RelayPort(self, sw.name, p.name, fwd.vnet_hdr)
                else:
                    dev = QueuePort(p, fwd.vnet_hdr)
                dev.link_up = layout.state.links.get(sw.name, {}).get(p.name, True)
                self.dp.add_port(sw.name, p.name, dev, kernel=p.kernel, flood=p.flood, role=p.role)
                if p.monitor:
                    fwd.set_monitor(p.name, True)
            hooks.install(sw.name, fwd)
        self.apply(layout.state)
        self.loop.call_later(COUNTS_INTERVAL, self._report)

    @staticmethod
    def _carp_taps(layout: Layout) -> set[str]:
        return {p.name for sw in layout.switches for p in sw.ports if p.carp_tap}

    def apply(self, state: State) -> None:
        self.carppeers = state.carppeers
        self.datapath.load(state.decisions)
        for name, rt in self.dp.switches.items():
            macs, owners = state.special.get(name, (frozenset(), {}))
            if rt.fwd.special_macs != macs:
                rt.fwd.set_special_macs(set(macs), owners=owners)
            rt.fwd.pin(state.stations.get(name, {}))
            for port, up in state.links.get(name, {}).items():
                dev = rt.devices.get(port)
                if dev is not None and dev.link_up != up:
                    dev.link_up = up
                    self.dp.set_link(name, port, up)

    # -- the hooks' side effects

    def _run(self, now: float, actions: list[Action]) -> Sequence[Emit]:
        emits: list[Emit] = []
        for a in actions:
            if isinstance(a, Deliver):
                emits.append((a.carpif, a.frame))
            elif isinstance(a, Transmit):
                # an ARP reply or NA out of the ingress port, sent as the node sends it (a
                # frame of its own: no virtio-net header of the request's), after the batch
                self.dp.send(a.carpdev, a.frame, a.port)
            else:
                self._error(f"unexpected {type(a).__name__}")
        return emits

    def _snoop(self, now: float, frame: bytes) -> None:
        # the node resolves only its unicast carppeers (neigh.py): their ARP frames, no others
        if frame[12:14] == b"\x08\x06" and frame[28:32] in self.carppeers:
            self.send(("arp", frame))

    def _failed(self, what: str, exc: Exception) -> None:
        self._error(f"{what}: {type(exc).__name__}")

    # -- the channel

    def readable(self) -> None:
        view = memoryview(self._buffer)
        while True:
            try:
                n = self.channel.recv_into(self._buffer)
            except BlockingIOError:
                return
            except OSError:
                n = 0
            if not n:
                self.stop()
                return
            try:
                message = decode(view[:n])
                if isinstance(message, State):
                    self.apply(message)
                else:
                    self._error("unknown message")
            except Exception as exc:  # a state that cannot be applied: forwarding goes on
                self._error(f"state: {type(exc).__name__}")

    def _report(self) -> None:
        if self.done.done():
            return
        try:
            self._count()
        except Exception as exc:
            self._error(f"counts: {type(exc).__name__}")
        finally:
            self.loop.call_later(COUNTS_INTERVAL, self._report)

    def _count(self) -> None:
        c = self.counts
        for name, rt in self.dp.switches.items():
            c.ports[name] = {
                p: (rt.fwd.ports[p].counters, dev.dev) for p, dev in rt.devices.items()
            }
            now = self.dp.clock()
            rt.fwd.expire(now)
            c.macs[name] = frozenset(mac for mac, _, _ in rt.fwd.entries(now))
            c.table_full[name] = rt.fwd.table_full
            c.bad_emits[name] = rt.fwd.bad_emits
        c.datapath = self.datapath.stats
        self.send(("counts", c))

    def stop(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def serve(fd: int) -> None:
    loop = asyncio.get_running_loop()
    channel = socket.socket(fileno=fd)
    channel.setblocking(True)
    layout = decode(channel.recv(MAX_MESSAGE))
    if not isinstance(layout, Layout):
        raise SystemExit("vswitch worker: the first message is not a layout")
    channel.setblocking(False)
    worker = Worker(loop, channel)
    worker.build(layout)
    loop.add_reader(channel.fileno(), worker.readable)
    # the node ends a worker (its channel closes, or the node dies: PR_SET_PDEATHSIG); a
    # Ctrl-C or systemd's SIGTERM to the whole group must not stop it before the node bows out
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    heap.settle()
    worker.send(("ready", layout.index))
    await worker.done
    try:
        worker._count()  # the last counts: the node keeps them (workers.py `_finish`)
    except Exception as exc:
        log.debug("last counts not sent: %s", exc)
    worker.dp.close()


def die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:  # the node died before the line above
        raise SystemExit(1)


def main(argv: list[str]) -> int:
    die_with_parent()
    uvloop.run(serve(int(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
