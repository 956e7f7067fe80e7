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

Accounting (`counters()`): every frame read from a port is forwarded (queued to at least one
port, claimed by the node's special hook, or answered by a hook) or dropped with one reason of
RX_DROPS, so per port rx_packets == forwarded + sum(RX_DROPS). Frames lost before they could be
read (LOST_DROPS: the kernel's drops, failed reads) and copies for a port that were not written
(TX_DROPS) are counted by reason beside them. Drops are counted on their own paths only: a
switched frame costs no counting beyond the per-batch rx_packets/rx_bytes.
"""

import asyncio
import errno
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

from vswitch import netlink, raw, tap
from vswitch.fwd import DEFAULT_AGEING, Port, Switch
from vswitch.netlink import LinkMonitor, LinkState
from vswitch.port import READ_BATCH, DevicePort
from vswitch.sockport import SocketPort
from vswitch.status import PortStatus, SwitchStatus

if TYPE_CHECKING:
    from vswitch.watch import SwitchWatch

VNET_HDR_LEN = 10  # the one size both TAPs and AF_PACKET accept
KERNEL_POLL = 10.0  # seconds between reads of kernel counters that reset on read or wrap

# drop reasons: stable names (status keys, the `reason` label of metrics)
LOST_DROPS = ("rx_kernel", "rx_error")  # never read: the kernel's drops, failed reads
RX_DROPS = ("malformed", "oversize", "gso", "filtered", "same_port", "no_dest")  # read, dropped
TX_DROPS = ("tx_full", "no_link", "tx_error")  # copies for the port, not written
DROP_REASONS = LOST_DROPS + RX_DROPS + TX_DROPS

LinkCallback = Callable[[str, str, bool], None]
"""(switch, port, up)"""


def offload_supported() -> bool:
    return tap.vnet_hdr_supported() and raw.vnet_hdr_supported()


class Counts(TypedDict):
    """Frame accounting of a port, or summed over a switch's ports."""

    rx_packets: int  # frames read
    rx_bytes: int  # their Ethernet bytes (virtio-net headers not included)
    forwarded: int  # rx_packets minus the RX_DROPS
    tx_packets: int  # frames written
    tx_bytes: int
    kernel_packets: int  # frames the kernel offered the port: read, waiting, or rx_kernel
    drops: dict[str, int]  # every reason of DROP_REASONS, in that order


class PortCounts(Counts):
    type: str  # the role given when attached ("host", "carp"), else the device's kind
    kernel: bool  # one of the node's own kernel interfaces
    link: bool
    refused: NotRequired[dict[str, int]]  # socket ports: peers, requests, datagrams refused


class SwitchCounts(TypedDict):
    mode: str  # "learning" | "hub" | "learning-arp"
    offload: bool
    macs: int  # learned MAC entries
    table_full: int  # sources not learned, table full (the frames were still switched)
    bad_emits: int  # hook output naming an unknown port
    ports: dict[str, PortCounts]
    total: Counts  # the sum over `ports`


def port_counts(fport: Port, dev: DevicePort, role: str | None) -> PortCounts:
    """One port's accounting from its forwarding and device counters (dev polled already)."""
    c = fport.counters
    d = dev.dev
    tx = d.tx_drops()
    drops = {
        "rx_kernel": d.rx_kernel,
        "rx_error": d.rx_errors,
        "malformed": c.rx_malformed + d.rx_malformed,
        "oversize": d.rx_oversize,
        "gso": d.rx_gso_dropped,
        "filtered": c.rx_filtered,
        "same_port": c.rx_same_port,
        "no_dest": c.rx_no_dest,
        "tx_full": tx["tx_full"],
        "no_link": tx["no_link"] + c.tx_no_link,
        "tx_error": tx["tx_error"],
    }
    # frames the device dropped before the switch saw them were read all the same
    rx_packets = c.rx_packets + d.rx_malformed + d.rx_oversize + d.rx_gso_dropped
    counts: PortCounts = {
        "type": role or dev.kind,
        "kernel": fport.kernel,
        "link": dev.link_up,
        "rx_packets": rx_packets,
        "rx_bytes": c.rx_bytes + d.rx_dropped_bytes,
        "forwarded": rx_packets - sum(drops[r] for r in RX_DROPS),
        "tx_packets": c.tx_packets,
        "tx_bytes": c.tx_bytes,
        "kernel_packets": d.kernel_packets,
        "drops": drops,
    }
    if isinstance(dev, SocketPort):
        counts["refused"] = dict(dev.refused)
    return counts


def total_counts(ports: Sequence[Counts]) -> Counts:
    return {
        "rx_packets": sum(p["rx_packets"] for p in ports),
        "rx_bytes": sum(p["rx_bytes"] for p in ports),
        "forwarded": sum(p["forwarded"] for p in ports),
        "tx_packets": sum(p["tx_packets"] for p in ports),
        "tx_bytes": sum(p["tx_bytes"] for p in ports),
        "kernel_packets": sum(p["kernel_packets"] for p in ports),
        "drops": {r: sum(p["drops"][r] for p in ports) for r in DROP_REASONS},
    }


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

    def add_tap(
        self,
        switch: str,
        name: str,
        *,
        ifname: str | None = None,
        netns: str | None = None,
        mac: bytes | None = None,
        addresses: Sequence[str] = (),
        noprefixroute: bool = False,
        mtu: int = 1500,
        up: bool = True,
        queues: int = 1,
        kernel: bool = False,
        flood: bool = True,
        role: str | None = None,
    ) -> tap.TapPort:
        """A TAP created for this port (in this process's namespace, then moved to `netns`).
        The node's host port and carp TAPs are `kernel=True` (carp TAPs also `flood=False`);
        `role` ("host", "carp") is the port type shown in `switch_status()`."""
        rt = self.switches[switch]
        dev = tap.TapPort(
            ifname or name,
            vnet_hdr=rt.fwd.vnet_hdr,
            mtu=mtu,
            mac=mac,
            netns=netns,
            addresses=addresses,
            noprefixroute=noprefixroute,
            up=up,
            queues=queues,
        )
        self._attach(rt, name, dev, kernel, flood)
        if role is not None:
            rt.roles[name] = role
        return dev

    def add_raw(
        self,
        switch: str,
        name: str,
        *,
        ifname: str,
        netns: str | None = None,
        mtu: int = 1500,
        promisc: bool = True,
        ignore_outgoing: bool = True,
    ) -> raw.RawPort:
        """An AF_PACKET port on the existing interface `ifname` (in `netns`)."""
        rt = self.switches[switch]
        dev = raw.RawPort(
            ifname,
            vnet_hdr=rt.fwd.vnet_hdr,
            netns=netns,
            mtu=mtu,
            promisc=promisc,
            ignore_outgoing=ignore_outgoing,
        )
        self._attach(rt, name, dev, False, True)
        return dev

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
        rt = self.switches[switch]
        self._attach(rt, name, dev, kernel, flood)
        if role is not None:
            rt.roles[name] = role
        return dev

    def _attach(
        self, rt: SwitchRuntime, name: str, dev: DevicePort, kernel: bool, flood: bool
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
            rt.pairs = (*rt.pairs, (fport, dev))
            dev.on_link = functools.partial(self._link_changed, rt, name)
            rt.fwd.set_link(name, dev.link_up)
            for fd in dev.fds:
                self.loop.add_reader(fd, self._readable, rt, fport, dev, fd)
            if isinstance(dev, SocketPort):
                dev.io = SocketIO(self, rt, name, fport, dev)
            if dev.follows_link:
                self._follow(rt, name, dev)
        except BaseException:
            self._detach(rt, name, dev)
            raise

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
        if rt not in self._busy:
            self._flush(rt)
        return None if queued else errno.ENETDOWN

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
        for fd in dev.fds:
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
        """Per switch, per port frame accounting with drops by reason (module docstring),
        plain JSON-able dicts; the kernel's counters are read first."""
        self.poll_kernel()
        out: dict[str, SwitchCounts] = {}
        now = self.clock()
        for name, rt in self.switches.items():
            fwd = rt.fwd
            fwd.expire(now)
            ports = {
                pname: port_counts(fwd.ports[pname], dev, rt.roles.get(pname))
                for pname, dev in rt.devices.items()
            }
            out[name] = {
                "mode": fwd.mode,
                "offload": rt.offload,
                "macs": fwd.table_size,
                "table_full": fwd.table_full,
                "bad_emits": fwd.bad_emits,
                "ports": ports,
                "total": total_counts(list(ports.values())),
            }
        return out

    def stats(self) -> dict[str, Any]:
        """The older snapshot (kept for its readers; `counters()` has it all by reason):
        rx_dropped is every receive-side drop but `rx_filtered`, tx_dropped every send drop."""
        out: dict[str, Any] = {}
        for name, sw in self.counters().items():
            rt = self.switches[name]
            ports = {}
            for pname, p in sw["ports"].items():
                dev = rt.devices[pname]
                drops = p["drops"]
                ports[pname] = {
                    "kind": dev.kind,
                    "ifname": dev.ifname,
                    "netns": dev.netns,
                    "link": p["link"],
                    "kernel": p["kernel"],
                    "rx_packets": p["rx_packets"],
                    "rx_bytes": p["rx_bytes"],
                    "rx_dropped": sum(drops[r] for r in LOST_DROPS + RX_DROPS if r != "filtered"),
                    "rx_filtered": drops["filtered"],
                    "tx_packets": p["tx_packets"],
                    "tx_bytes": p["tx_bytes"],
                    "tx_dropped": sum(drops[r] for r in TX_DROPS),
                    **dev.dev.as_dict(),
                }
            out[name] = {
                "mode": sw["mode"],
                "offload": sw["offload"],
                "ageing": rt.fwd.ageing,
                "macs": sw["macs"],
                "table_full": sw["table_full"],
                "ports": ports,
            }
        return out

    def switch_status(self) -> list[SwitchStatus]:
        """The `switches` part of the node's status snapshot (vswitch/status.py): rx_drops and
        tx_drops are the sums of every receive-side and send-side reason."""
        out: list[SwitchStatus] = []
        for name, sw in self.counters().items():
            ports: list[PortStatus] = []
            for pname, p in sw["ports"].items():
                drops = p["drops"]
                port: PortStatus = {
                    "name": pname,
                    "type": p["type"],
                    "link": p["link"],
                    "rx_packets": p["rx_packets"],
                    "rx_bytes": p["rx_bytes"],
                    "rx_drops": sum(drops[r] for r in LOST_DROPS + RX_DROPS),
                    "tx_packets": p["tx_packets"],
                    "tx_bytes": p["tx_bytes"],
                    "tx_drops": sum(drops[r] for r in TX_DROPS),
                    "forwarded": p["forwarded"],
                    "drops": dict(drops),
                }
                if "refused" in p:
                    port["refused"] = p["refused"]
                ports.append(port)
            out.append(
                {
                    "name": name,
                    "mode": sw["mode"],
                    "mac_table": sw["macs"],
                    "ports": ports,
                    "table_full": sw["table_full"],
                }
            )
        return out

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
