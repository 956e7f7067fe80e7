"""The switch runtime: switches, their device ports, readers on the event loop, link monitors.

One `DataPlane` per process, on the running (uv)loop, no threads. Each readable port fd is
drained in batches of up to 64 frames; the batch goes through the switch's forwarding core
(fwd.py) with one `now` and every output queue is written before the callback returns. Link
events come from one RTMGRP_LINK socket per network namespace that holds a port.

Offload (virtio-net headers, TSO) is decided per switch when it is added: `offload=None` turns it
on when this kernel supports it for both port kinds (TUNGETFEATURES has IFF_VNET_HDR and
AF_PACKET takes PACKET_VNET_HDR), since a port of either kind may join the switch later; every
port of the switch then uses it (tap-io.md: on every port or on none).

Socket ports (vswitch/sockport.py: stream, vde, vxlan) get a `PortIO` when attached: their fds
change as peers come and go, a stream port writes when its socket can take more, and a vde port
adds a child port `NAME/N` per client (attached like any port; the link callback hears of its
arrival and departure). What they refuse is `refused` in their counts.

Accounting (`counters()`, `switch_status()`): per port frames read, written and dropped by
reason, built by vswitch/accounting.py, which also says which of its figures can be checked
against what.
"""

import asyncio
import errno
import functools
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vswitch import netlink, raw, tap
from vswitch.accounting import Share, SwitchCounts, switch_counts, switch_status
from vswitch.fwd import DEFAULT_AGEING, Port, Switch
from vswitch.netlink import LinkMonitor, LinkState
from vswitch.port import READ_BATCH, DevicePort
from vswitch.sockport import SocketPort
from vswitch.status import SwitchStatus

if TYPE_CHECKING:
    from vswitch.watch import SwitchWatch

VNET_HDR_LEN = 10  # the one size both TAPs and AF_PACKET accept
KERNEL_POLL = 10.0  # seconds between reads of kernel counters that reset on read or wrap

LinkCallback = Callable[[str, str, bool], None]
"""(switch, port, up)"""


def offload_supported() -> bool:
    return tap.vnet_hdr_supported() and raw.vnet_hdr_supported()


class SocketIO:
    """The data plane's side of an attached socket port (sockport.PortIO)."""

    def __init__(
        self, dp: "DataPlane", rt: "SwitchRuntime", name: str, fport: Port, dev: DevicePort
    ) -> None:
        self._dp = dp
        self._rt = rt
        self._name = name
        self._fport = fport
        self._dev = dev

    def watch(self, fd: int) -> None:
        self._dp.loop.add_reader(fd, self._dp._readable, self._rt, self._fport, self._dev, fd)

    def unwatch(self, fd: int) -> None:
        self._dp.loop.remove_reader(fd)

    def when_writable(self, fd: int, callback: Callable[[], None] | None) -> None:
        if callback is None:
            self._dp.loop.remove_writer(fd)
        else:
            self._dp.loop.add_writer(fd, callback)

    def call_later(self, delay: float, callback: Callable[[], None]) -> Callable[[], None]:
        return self._dp.loop.call_later(delay, callback).cancel

    def add_child(self, suffix: str, dev: DevicePort) -> None:
        name = f"{self._name}/{suffix}"
        self._dp.add_port(self._rt.name, name, dev)
        if self._fport.monitor:  # a vde port's clients are what its monitor flag is about
            self._rt.fwd.set_monitor(name, True)
        if self._dp.on_link is not None:
            self._dp.on_link(self._rt.name, name, dev.link_up)

    def remove_child(self, suffix: str) -> None:
        name = f"{self._name}/{suffix}"
        dev = self._rt.devices.get(name)
        if dev is None:
            return
        self._dp._detach(self._rt, name, dev)
        if self._dp.on_link is not None and not self._dp.closed:
            self._dp.on_link(self._rt.name, name, False)


@dataclass(eq=False)
class SwitchRuntime:
    """A switch with its devices; `pairs` is the write list walked after every batch."""

    fwd: Switch
    offload: bool
    devices: dict[str, DevicePort] = field(default_factory=dict)
    pairs: tuple[tuple[Port, DevicePort], ...] = ()
    roles: dict[str, str] = field(default_factory=dict)  # port -> type shown in status
    # impairment and capture of its ports (vswitch/watch.py); None while there is neither
    watch: "SwitchWatch | None" = None

    @property
    def name(self) -> str:
        return self.fwd.name


class DataPlane:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        batch: int = READ_BATCH,
    ) -> None:
        self.loop = loop if loop is not None else asyncio.get_running_loop()
        self.clock = clock
        self.batch = batch
        self.switches: dict[str, SwitchRuntime] = {}
        self.on_link: LinkCallback | None = None
        self._monitors: dict[str | None, LinkMonitor] = {}
        self._watch: dict[tuple[str | None, str], tuple[SwitchRuntime, str]] = {}
        self._busy: set[SwitchRuntime] = set()
        # called after every forwarding batch: the node's protocol clock gets its turn between
        # two batches, not only after every ready port's batch of a loop iteration
        self.between_batches: Callable[[], None] | None = None
        # with forwarding workers (vswitch/workers.py): the device kinds they read, which this
        # process then only writes; and what they counted, per switch, for `counters()`
        self.delegated: frozenset[str] = frozenset()
        self.shares: Callable[[str], Share | None] | None = None
        # called before a delegated device is closed (the workers must let go of it first)
        self.before_close: Callable[[DevicePort], None] | None = None
        # switches the node sent to inside `held()`, written when it ends
        self._held: set[SwitchRuntime] | None = None
        self.closed = False
        self._poll_timer = self.loop.call_later(KERNEL_POLL, self._poll_tick)

    # -- switches and ports --------------------------------------------------------------------

    def add_switch(
        self,
        name: str,
        *,
        hub: bool = False,
        ageing: float = DEFAULT_AGEING,
        offload: bool | None = None,
    ) -> Switch:
        if name in self.switches:
            raise ValueError(f"switch {name} exists")
        supported = offload_supported()
        if offload is None:
            offload = supported
        elif offload and not supported:
            raise OSError("offload requested but this kernel lacks IFF_VNET_HDR/PACKET_VNET_HDR")
        fwd = Switch(name, hub=hub, ageing=ageing, vnet_hdr=VNET_HDR_LEN if offload else 0)
        self.switches[name] = SwitchRuntime(fwd, offload)
        return fwd

    def switch(self, name: str) -> Switch:
        return self.switches[name].fwd

    def device(self, switch: str, port: str) -> DevicePort:
        return self.switches[switch].devices[port]

    def add_port(
        self,
        switch: str,
        name: str,
        dev: DevicePort,
        *,
        kernel: bool = False,
        flood: bool = True,
        role: str | None = None,
    ) -> DevicePort:
        """Attach an opened device (any DevicePort) to a switch; the data plane owns it now.
        `role` ("host", "carp") is the port type shown in `counters()` and `switch_status()`."""
        self._attach(self.switches[switch], name, dev, kernel, flood, role)
        return dev

    def _attach(
        self,
        rt: SwitchRuntime,
        name: str,
        dev: DevicePort,
        kernel: bool,
        flood: bool,
        role: str | None,
    ) -> None:
        try:
            if name in rt.devices:
                raise ValueError(f"switch {rt.name}: port {name} exists")
            if dev.vnet_hdr != rt.fwd.vnet_hdr:
                raise ValueError(f"port {name}: vnet_hdr {dev.vnet_hdr}, switch {rt.fwd.vnet_hdr}")
            if isinstance(dev, SocketPort) and not dev.carries_frames:
                flood = False  # vde's NAME: its clients are the ports on the wire
            fport = rt.fwd.add_port(name, kernel=kernel, flood=flood)
            rt.devices[name] = dev
            if role is not None:
                rt.roles[name] = role
            rt.pairs = (*rt.pairs, (fport, dev))
            dev.on_link = functools.partial(self._link_changed, rt, name)
            rt.fwd.set_link(name, dev.link_up)
            for fd in self._read_fds(dev):
                self.loop.add_reader(fd, self._readable, rt, fport, dev, fd)
            if isinstance(dev, SocketPort):
                dev.io = SocketIO(self, rt, name, fport, dev)
            if dev.follows_link:
                self._follow(rt, name, dev)
        except BaseException:
            self._detach(rt, name, dev)
            raise

    def _read_fds(self, dev: DevicePort) -> tuple[int, ...]:
        return () if dev.kind in self.delegated else dev.fds

    def remove_port(self, switch: str, name: str) -> None:
        rt = self.switches[switch]
        self._detach(rt, name, rt.devices[name])

    def _detach(self, rt: SwitchRuntime, name: str, dev: DevicePort) -> None:
        if rt.devices.get(name) is dev:
            if not dev.closed:
                for fd in dev.fds:
                    self.loop.remove_reader(fd)
            if self._watch.get((dev.netns, dev.ifname)) == (rt, name):
                del self._watch[(dev.netns, dev.ifname)]
                self._unfollow_idle(dev.netns)
            del rt.devices[name]
            rt.roles.pop(name, None)
            rt.pairs = tuple(p for p in rt.pairs if p[1] is not dev)
            rt.fwd.remove_port(name)
        if dev.kind in self.delegated and self.before_close is not None and not dev.closed:
            self.before_close(dev)
        dev.close()

    # -- the hot path --------------------------------------------------------------------------

    def _readable(self, rt: SwitchRuntime, fport: Port, dev: DevicePort, fd: int) -> None:
        frames = dev.read_batch(fd, self.batch)
        if frames and rt.watch is not None:
            frames = rt.watch.received(self.clock(), fport.name, frames)
        if frames:
            self._busy.add(rt)
            try:
                rt.fwd.forward(self.clock(), fport, frames)
            finally:
                self._busy.discard(rt)
            self._flush(rt)
            if self.between_batches is not None:
                self.between_batches()
        if dev.failed is not None:
            # the device is gone for good (e.g. its namespace was deleted): stop polling it
            for fd_ in dev.fds:
                self.loop.remove_reader(fd_)
            dev.update_link(None)

    def _flush(self, rt: SwitchRuntime) -> None:
        hdr = rt.fwd.vnet_hdr
        watch = rt.watch
        for fport, dev in rt.pairs:
            queue = fport.outq
            if queue and watch is not None:
                watch.sending(self.clock(), fport.name, queue)  # filtered in place
            if queue:
                result = dev.write_batch(queue)  # failed writes: in dev.tx_errors by errno
                queue.clear()
                c = fport.counters
                c.tx_packets += result.packets
                c.tx_bytes += result.bytes - result.packets * hdr

    def release(
        self, switch: str, port: str, inbound: Sequence[bytes], outbound: Sequence[bytes]
    ) -> None:
        """Frames an impaired port held back, due now (vswitch/watch.py): `inbound` are switched
        as if just read from the port, `outbound` written to it. A port gone meanwhile takes
        what it held with it."""
        rt = self.switches.get(switch)
        fport = rt.fwd.ports.get(port) if rt is not None else None
        if rt is None or fport is None:
            return
        if outbound:
            result = rt.devices[port].write_batch(list(outbound))
            c = fport.counters
            c.tx_packets += result.packets
            c.tx_bytes += result.bytes - result.packets * rt.fwd.vnet_hdr
        if inbound:
            self._busy.add(rt)
            try:
                rt.fwd.forward(self.clock(), fport, inbound)
            finally:
                self._busy.discard(rt)
            self._flush(rt)

    def send(self, switch: str, frame: bytes, port: str | None = None) -> int | None:
        """Send an Ethernet frame as the node: out of `port`, or switched by destination (see
        `fwd.Switch.inject`). Safe from inside a hook (written after the current batch).
        Returns ENETDOWN when no port could take the frame (for `transmit_result`), else None;
        a failed write on one of several ports is a per-port drop."""
        rt = self.switches[switch]
        queued = rt.fwd.inject(frame, port)
        self._written(rt)
        return None if queued else errno.ENETDOWN

    def write(self, switch: str, port: str, frame: bytes) -> None:
        """Write a frame a forwarding worker switched to `port` (one this process serves)."""
        rt = self.switches.get(switch)
        fport = rt.fwd.ports.get(port) if rt is not None else None
        if rt is None or fport is None:
            return  # the port went away meanwhile
        fport.outq.append(frame)
        self._written(rt)  # impairment and capture of the port apply, as to its own frames

    def _written(self, rt: SwitchRuntime) -> None:
        if rt in self._busy:
            return  # the batch being switched writes it
        if self._held is not None:
            self._held.add(rt)
        else:
            self._flush(rt)

    @contextmanager
    def held(self) -> Iterator[None]:
        """What the node sends meanwhile (`send`, `write`) is written when the block ends: one
        walk of a switch's ports for all of it, not one per frame (the 255 advertisements of
        one timer were 255 walks of 257 ports). A nested block writes when the outer ends."""
        if self._held is not None:
            yield
            return
        held = self._held = set()
        try:
            yield
        finally:
            self._held = None
            failed: Exception | None = None
            for rt in held:  # every switch is written, whatever one of them raises
                try:
                    self._flush(rt)
                except Exception as exc:
                    failed = failed or exc
            if failed is not None:
                raise failed

    # -- link state ----------------------------------------------------------------------------

    def _follow(self, rt: SwitchRuntime, name: str, dev: DevicePort) -> None:
        if dev.netns not in self._monitors:
            monitor = LinkMonitor(dev.netns)
            self._monitors[dev.netns] = monitor
            self.loop.add_reader(monitor.fileno(), self._link_events, monitor)
        self._watch[(dev.netns, dev.ifname)] = (rt, name)
        # the state may have changed between the device's creation and the subscription
        dev.update_link(netlink.link_state(dev.ifname, dev.netns))

    @property
    def monitored_namespaces(self) -> set[str | None]:
        """Namespaces with an open link monitor (each is kept alive by it)."""
        return set(self._monitors)

    def _unfollow_idle(self, netns: str | None) -> None:
        # a monitor keeps its namespace alive: close it with the last port it follows
        if any(ns == netns for ns, _ in self._watch):
            return
        monitor = self._monitors.pop(netns, None)
        if monitor is not None:
            self.loop.remove_reader(monitor.fileno())
            monitor.close()

    def _link_events(self, monitor: LinkMonitor) -> None:
        for state in monitor.read():
            hit = self._watch.get((monitor.netns, state.ifname))
            if hit is not None:
                rt, name = hit
                rt.devices[name].update_link(state)
        if monitor.overrun:
            monitor.overrun = False
            self._resync(monitor.netns)

    def _resync(self, netns: str | None) -> None:
        for (ns, ifname), (rt, name) in list(self._watch.items()):
            if ns == netns:
                state: LinkState | None = netlink.link_state(ifname, ns)
                dev = rt.devices[name]
                was_up = dev.link_up
                dev.update_link(state)
                if was_up and dev.link_up:
                    # events were lost: a down/up in between would have stopped the polling
                    self._rearm(rt, name)

    def set_link(self, switch: str, name: str, up: bool) -> None:
        """A port's link as another process follows it (a forwarding worker): the switch
        floods to it or not, and on link-up its fds are polled afresh (`_rearm`)."""
        rt = self.switches[switch]
        if name in rt.fwd.ports:
            rt.fwd.set_link(name, up)
            if up:
                self._rearm(rt, name)

    def _link_changed(self, rt: SwitchRuntime, name: str, up: bool) -> None:
        if name in rt.fwd.ports:
            rt.fwd.set_link(name, up)
            if up and rt.devices[name].follows_link:
                self._rearm(rt, name)  # a socket port's own link never stopped its polling
        if self.on_link is not None:
            self.on_link(rt.name, name, up)

    def _rearm(self, rt: SwitchRuntime, name: str) -> None:
        """Poll a port's fds afresh when its link comes back. An AF_PACKET socket gets
        sk_err ENETDOWN when its interface goes down; libuv answers the POLLERR by stopping the
        poll handle and uvloop closes it, so without this the port would stay deaf. One read
        first consumes the pending error (and forwards what queued meanwhile)."""
        dev = rt.devices.get(name)
        fport = rt.fwd.ports.get(name)
        if dev is None or fport is None or dev.closed or dev.failed is not None:
            return
        for fd in self._read_fds(dev):
            self.loop.remove_reader(fd)
            self._readable(rt, fport, dev, fd)
            if dev.failed is not None:
                return
            self.loop.add_reader(fd, self._readable, rt, fport, dev, fd)

    # -- status and shutdown -------------------------------------------------------------------

    def poll_kernel(self, *, periodic_only: bool = False) -> None:
        """Fold the kernel's counters of every port into its device counters; TAPs of one
        namespace share one netlink dump. `periodic_only`: only those that reset or wrap."""
        taps: dict[str | None, list[tap.TapPort]] = {}
        for rt in self.switches.values():
            for dev in rt.devices.values():
                if periodic_only and not dev.kernel_poll_periodic:
                    continue
                if isinstance(dev, tap.TapPort):
                    if not dev.closed:
                        taps.setdefault(dev.netns, []).append(dev)
                else:
                    dev.poll_kernel()
        for netns, devs in taps.items():
            tap.poll_kernel(netns, devs)

    def _poll_tick(self) -> None:
        if self.closed:
            return
        try:
            self.poll_kernel(periodic_only=True)
        finally:
            self._poll_timer = self.loop.call_later(KERNEL_POLL, self._poll_tick)

    def counters(self) -> dict[str, SwitchCounts]:
        """Per switch, per port frame accounting with drops by reason (vswitch/accounting.py),
        plain JSON-able dicts; the kernel's counters are read first."""
        self.poll_kernel()
        now = self.clock()
        out: dict[str, SwitchCounts] = {}
        for name, rt in self.switches.items():
            rt.fwd.expire(now)
            share = self.shares(name) if self.shares is not None else None
            out[name] = switch_counts(rt.fwd, rt.offload, rt.devices, rt.roles, share, now)
        return out

    def switch_status(self) -> list[SwitchStatus]:
        """The `switches` part of the node's status snapshot (vswitch/status.py)."""
        return [switch_status(name, sw) for name, sw in self.counters().items()]

    def close(self) -> None:
        """Stop every reader, close every port (their TAPs disappear) and monitor."""
        if self.closed:
            return
        self.closed = True
        self._poll_timer.cancel()
        for rt in self.switches.values():
            for name, dev in list(rt.devices.items()):
                self._detach(rt, name, dev)
        for monitor in self._monitors.values():
            self.loop.remove_reader(monitor.fileno())
            monitor.close()
        self._monitors.clear()

    def __enter__(self) -> "DataPlane":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
