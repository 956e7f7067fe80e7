"""The daemon: one CARP host on the data plane (design.md sections 1, 2, 5).

`Node` builds, in the namespace it runs in, the switches with their ports, a host port (a kernel
TAP with the node's own addresses on that segment) per switch that has `host` addresses, and a
kernel TAP per carp interface (`carp0`: the virtual addresses without DAD and without a prefix
route, the carp MAC, carrier up while any carpnode is MASTER). The sans-IO core (`CarpHost`) and
its per-frame rules (`DataPath`) sit on the switches' hooks; one timer, re-armed from
`CarpHost.get_timer()` after every batch of actions, drives the protocol clock.

How the kernel's replies keep the balancing rules: a virtual address has no prefix route, so
what the node's kernel sends from it leaves through the host port; `DataPath.output` then sees
a frame whose source IP is virtual and sets the source MAC the mode asks for (design decision 4).
ARP and NDP for virtual addresses are answered by the DataPath; the host port runs with
arp_ignore=1 / arp_announce=2 so the kernel neither answers nor announces them itself. The
kernel takes frames for a virtual address only from the carp TAP, after the balancing filter:
the host port and every switch port in the node's namespace (raw ports) drop unicast IP in
link-layer multicast (the `ip`-mode carp MAC is multicast and flooded), and a raw port's
interface answers ARP only for addresses of its own (arp_ignore=1), never for a VIP.
"""

import asyncio
import errno
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address, IPv4Interface, IPv6Address

from carp.actions import (
    Action,
    CarrierChanged,
    Deliver,
    DemoteChanged,
    Log,
    StateChanged,
    Transmit,
    TxKind,
)
from carp.carpif import keeps_state
from carp.datapath import DataPath
from carp.host import CarpHost
from carp.params import CarpDev, CarpIfParams
from vswitch import netlink
from vswitch.config import NodeConfig, PortConfig, SwitchConfig
from vswitch.dataplane import DataPlane
from vswitch.fwd import Emit, SpecialHook
from vswitch.ifconfig_cmd import IfconfigChange, apply_params
from vswitch.logsink import LogSink, StderrSink
from vswitch.neigh import NeighbourCache
from vswitch.tap import TapPort

log = logging.getLogger("vswitch.node")

# sysctls of the node's namespace: it is a gateway (design.md 1.7), and replies to clients
# arrive on carp TAPs while leaving through host ports (asymmetric for rp_filter)
NAMESPACE_SYSCTLS = (
    ("net.ipv4.ip_forward", 1),
    ("net.ipv6.conf.all.forwarding", 1),
    ("net.ipv4.conf.all.rp_filter", 0),
    ("net.ipv4.conf.default.rp_filter", 0),
)
# the host port must neither answer nor announce virtual addresses (vswitch does, per mode),
# nor take the `ip`-mode frames to the multicast carp MAC that the switch floods to it: those
# reach the kernel only through the carp TAP, after carp_lsdrop (§6.4, §6.5)
HOST_PORT_SYSCTLS = (
    ("ipv4", "arp_ignore", 1),
    ("ipv4", "arp_announce", 2),
    ("ipv4", "rp_filter", 0),
    ("ipv4", "drop_unicast_in_l2_multicast", 1),
    ("ipv6", "drop_unicast_in_l2_multicast", 1),
)
# a switch port whose interface sits in the node's namespace (raw ports, tap ports without
# netns) is the switch's, not the kernel's: the kernel must not answer ARP for a virtual address
# on it with that interface's MAC, nor answer the `ip`-mode frames it also sees there
SWITCH_PORT_SYSCTLS = (
    ("ipv4", "arp_ignore", 1),
    ("ipv4", "drop_unicast_in_l2_multicast", 1),
    ("ipv6", "drop_unicast_in_l2_multicast", 1),
)


def link_local(mac: bytes) -> IPv6Address:
    """The EUI-64 link-local address the kernel gives an interface with this MAC."""
    eui = bytes((mac[0] ^ 0x02, *mac[1:3], 0xFF, 0xFE, *mac[3:6]))
    return IPv6Address(b"\xfe\x80" + bytes(6) + eui)


def local_mac() -> bytes:
    """A random locally administered unicast MAC (for a switch without a host_mac)."""
    raw = bytearray(os.urandom(6))
    raw[0] = (raw[0] & 0xFC) | 0x02
    return bytes(raw)


def parse_mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def cookie() -> bytes:
    """The injected randomness of the core: 8 random bytes (the replay cookie, §3)."""
    return os.urandom(8)


class Node:
    """One running vswitch node; `start()` builds everything, `close()` removes it."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        sink: LogSink | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.name = config.node.name
        self.sink: LogSink = sink or StderrSink(self.name)
        self.clock = clock
        self.started_at = clock()
        self.loop = asyncio.get_running_loop()
        self.dataplane = DataPlane(self.loop, clock=clock)
        self.carpdevs: dict[str, CarpDev] = {}
        self.carp_taps: dict[str, TapPort] = {}
        self.switch_link: dict[str, bool] = {}
        self.neigh = NeighbourCache()
        self.host: CarpHost | None = None
        self.datapath: DataPath | None = None
        self.listeners: list[Callable[[float, Sequence[Action]], object]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline: float | None = None
        self._closed = False

    # -- building ------------------------------------------------------------------------------

    def start(self) -> None:
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        for name, value in NAMESPACE_SYSCTLS:
            netlink.set_sysctl(name, value)
        for name, sw in self.config.switch.items():
            self._build_switch(name, sw)
        params = self.config.carp_params()
        self.host = CarpHost(self.config.sysctls(), params, self.carpdevs, cookie)
        self.datapath = DataPath(self.host)
        for p in params:
            self._build_carp_tap(p)
        for name in self.config.switch:
            fwd = self.dataplane.switch(name)
            fwd.on_special = self._on_special(name)
            fwd.on_multicast = self._on_multicast(name)
            fwd.egress_filter = self._egress(name)
        self.dataplane.on_link = self._on_port_link
        self._refresh()
        now = self.clock()
        actions = self.host.start(now)
        for name in self.config.switch:
            # a carpdev that starts without link starts suppressed (§4.8: carp_carpdev_state)
            self.switch_link[name] = self._link_of(name)
            if not self.switch_link[name]:
                actions += self.host.set_carpdev_link(now, name, False)
        self.apply(now, actions)

    def _build_switch(self, name: str, sw: SwitchConfig) -> None:
        self.dataplane.add_switch(name, hub=sw.mode == "hub", ageing=sw.ageing, offload=sw.offload)
        own_mac = parse_mac(sw.host_mac) if sw.host_mac else local_mac()
        ipv4 = next((a.ip for a in sw.host if isinstance(a, IPv4Interface)), None)
        ipv6: IPv6Address | None = None
        if sw.host:
            self.dataplane.add_tap(name, name, mac=own_mac, up=False, kernel=True)
            for af, key, value in HOST_PORT_SYSCTLS:
                netlink.set_sysctl(f"net.{af}.conf.{name}.{key}", value)
            for addr in sw.host:
                netlink.add_address(name, str(addr), nodad=True)
            netlink.set_link(name, up=True)
            ipv6 = link_local(own_mac)
        for port in sw.ports:
            self._add_port(name, port)
        self.carpdevs[name] = CarpDev(name, own_mac, ipv4, ipv6)

    def _add_port(self, switch: str, port: PortConfig) -> None:
        if port.type == "tap":
            ifname = port.ifname or port.name
            self.dataplane.add_tap(
                switch,
                port.name,
                ifname=ifname,
                netns=port.netns,
                mac=parse_mac(port.mac) if port.mac else None,
            )
            if port.netns is not None:
                return
        else:
            assert port.ifname is not None
            ifname = port.ifname
            self.dataplane.add_raw(switch, port.name, ifname=ifname)
        for af, key, value in SWITCH_PORT_SYSCTLS:
            netlink.set_sysctl(f"net.{af}.conf.{ifname}.{key}", value)

    def _build_carp_tap(self, p: CarpIfParams) -> None:
        assert self.datapath is not None
        mac = self.datapath.tap_macs[p.name]
        dev = TapPort(p.name, vnet_hdr=self.dataplane.switch(p.carpdev).vnet_hdr, mac=mac, up=False)
        try:
            # no link-local and no router solicitations: the carp TAP only holds the VIPs
            netlink.set_sysctl(f"net.ipv6.conf.{p.name}.addr_gen_mode", 1)
            netlink.set_sysctl(f"net.ipv4.conf.{p.name}.rp_filter", 0)
            netlink.set_sysctl(f"net.ipv4.conf.{p.name}.arp_ignore", 1)
            for addr in p.addresses:
                netlink.add_address(p.name, str(addr), nodad=True, noprefixroute=True)
            dev.set_carrier(False)
            netlink.set_link(p.name, up=True)
        except BaseException:
            dev.close()
            raise
        self.dataplane.add_port(p.carpdev, p.name, dev, kernel=True, flood=False)
        self.carp_taps[p.name] = dev

    # -- the hooks on the switches ---------------------------------------------------------------

    def _on_special(self, switch: str) -> SpecialHook:
        def hook(now: float, port: str, frame: bytes) -> tuple[bool, Sequence[Emit]]:
            assert self.datapath is not None and self.host is not None
            self.neigh.snoop(frame)
            emits = self._run(now, self.datapath.input(now, switch, port, frame))
            # a frame this node takes for a unicast virtual MAC (modes none, arp) is for it
            # alone; the multicast MAC of `ip` and the shared MACs of ip-unicast / ip-stealth
            # also go on to the other nodes on the segment (§6.6)
            for name, _ in emits:
                sc = self.host.carpifs.get(name or "")
                if sc is not None and not sc.balancing.is_ip:
                    return False, emits
            return True, emits

        return hook

    def _on_multicast(self, switch: str) -> Callable[[float, str, bytes], Sequence[Emit]]:
        def hook(now: float, port: str, frame: bytes) -> Sequence[Emit]:
            assert self.datapath is not None
            self.neigh.snoop(frame)
            return self._run(now, self.datapath.input(now, switch, port, frame))

        return hook

    def _egress(self, switch: str) -> Callable[[float, str, bytes], bytes | None]:
        def egress(now: float, port: str, frame: bytes) -> bytes | None:
            assert self.datapath is not None
            return self.datapath.output(switch, frame, port in self.carp_taps)

        return egress

    def _run(self, now: float, actions: list[Action]) -> Sequence[Emit]:
        """Apply the actions of a hook; deliveries go back to the switch as emits so they keep
        the ingress frame's virtio-net header (GSO) where the frame is a same-length rewrite."""
        if not actions:
            return ()
        emits = [(a.carpif, a.frame) for a in actions if isinstance(a, Deliver)]
        rest = [a for a in actions if not isinstance(a, Deliver)]
        if rest:
            self.apply(now, rest)
        return emits

    # -- actions -------------------------------------------------------------------------------

    def apply(self, now: float, actions: Sequence[Action]) -> None:
        """Carry out the core's actions, then refresh the data path and re-arm the timer."""
        assert self.host is not None
        changed = False
        results: list[Action] = []
        for action in actions:
            if isinstance(action, Transmit):
                error = self._transmit(action)
                if action.kind in (TxKind.ADVERT, TxKind.BOWOUT):
                    results += self.host.transmit_result(now, action, error)
            elif isinstance(action, Deliver):
                self.dataplane.send(
                    self.host.carpifs[action.carpif].carpdev, action.frame, action.carpif
                )
            elif isinstance(action, StateChanged):
                changed = True
            elif isinstance(action, CarrierChanged):
                tap = self.carp_taps.get(action.carpif)
                if tap is not None and not tap.closed:
                    tap.set_carrier(action.up)
            elif isinstance(action, Log):
                self.sink.emit(action.level, action.message)
            elif isinstance(action, DemoteChanged):
                changed = True
        if changed:
            self._refresh()
        for listener in self.listeners:
            listener(now, actions)
        if results:
            self.apply(now, results)
        self._rearm()

    def _transmit(self, action: Transmit) -> int | None:
        frame = action.frame
        if action.next_hop is not None:
            mac = self.neigh.lookup(action.next_hop)
            if mac is None:
                self._resolve(action.carpdev, action.next_hop)
                return errno.EHOSTDOWN  # not counted as a send error for a unicast peer (§4.6)
            frame = mac + frame[6:]
        if not self._link_of(action.carpdev):
            return errno.ENETDOWN
        self.dataplane.send(action.carpdev, frame, action.port)
        return None

    def _resolve(self, switch: str, ip: IPv4Address) -> None:
        dev = self.carpdevs[switch]
        request = self.neigh.request(dev.mac, dev.ipv4, ip)
        if request is not None:
            self.dataplane.send(switch, request)

    def _refresh(self) -> None:
        assert self.datapath is not None and self.host is not None
        self.datapath.refresh()
        for name in self.config.switch:
            fwd = self.dataplane.switch(name)
            macs = set(self.datapath.carpdev_macs.get(name, frozenset()))
            owners: dict[bytes, str] = {}
            if any(
                sc.carpdev == name and not sc.peer_is_multicast for sc in self.host.carpifs.values()
            ):
                # unicast advertisements and the ARP replies for carppeer come to our own MAC;
                # switched normally they go to the host port only
                own = self.carpdevs[name].mac
                macs.add(own)
                if name in fwd.ports and fwd.ports[name].kernel:
                    owners[own] = name
            if fwd.special_macs != macs:
                fwd.set_special_macs(macs, owners=owners)

    # -- timer and links -----------------------------------------------------------------------

    def _rearm(self) -> None:
        if self._closed or self.host is None:
            return
        deadline = self.host.get_timer()
        if deadline == self._timer_deadline and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_deadline = deadline
        if deadline is not None:
            self._timer = self.loop.call_at(self._loop_time(deadline), self._fire)

    def _loop_time(self, deadline: float) -> float:
        # the core's clock is time.monotonic; the loop's may differ (uvloop: milliseconds)
        return self.loop.time() + max(0.0, deadline - self.clock())

    def _fire(self) -> None:
        self._timer = None
        self._timer_deadline = None
        assert self.host is not None
        now = self.clock()
        deadline = self.host.get_timer()
        if deadline is not None and deadline > now:
            self._rearm()  # woke early (loop clock granularity): sleep the rest
            return
        self.apply(now, self.host.handle_timer(now))

    def _link_of(self, switch: str) -> bool:
        """A switch (carpdev) has link while any of its non-kernel ports has, or has none."""
        fwd = self.dataplane.switch(switch)
        external = [p for p in fwd.ports.values() if not p.kernel]
        return not external or any(p.link_up for p in external)

    def _on_port_link(self, switch: str, port: str, up: bool) -> None:
        if self.host is None:
            return
        now = self.clock()
        link = self._link_of(switch)
        if self.switch_link.get(switch) != link:
            self.switch_link[switch] = link
            self.apply(now, self.host.set_carpdev_link(now, switch, link))

    # -- runtime changes (vswitch ifconfig, reload) --------------------------------------------

    def ifconfig(self, carpif: str, change: IfconfigChange) -> None:
        """`vswitch ifconfig carpN ...`: parameters first (SIOCSVH), then up/down and state."""
        assert self.host is not None
        sc = self.host.carpifs.get(carpif)
        if sc is None:
            raise ValueError(f"no carp interface {carpif}")
        now = self.clock()
        if change.changes_params:
            params = apply_params(sc.params, change)
            if params.carpdev not in self.carpdevs:
                raise ValueError(f"carpdev {params.carpdev}: no such switch")
            if params != sc.params:
                self._replace_carpif(now, carpif, params)
        actions: list[Action] = []
        if change.admin_up is not None:
            actions += self.host.set_admin(now, carpif, change.admin_up)
        if change.state is not None:
            actions += self.host.force_state(now, carpif, change.state)
        self.apply(now, actions)

    def _replace_carpif(self, now: float, name: str, params: CarpIfParams | None) -> None:
        """Swap a carp interface (None: remove it): the core first (it validates), then the TAP."""
        assert self.host is not None and self.datapath is not None
        current = self.host.carpifs.get(name)
        if params is not None and current is not None and keeps_state(current.params, params):
            # advbase, advskew, pass, carppeer: SIOCSVH keeps the state, and the TAP (§4.9)
            actions = self.host.update_carpif(now, name, params)
            self._refresh()  # a new carppeer changes which MACs the switch hands over
            self.apply(now, actions)
            return
        actions = self.host.replace_carpif(now, name, params)
        old = self.carp_taps.pop(name, None)
        if old is not None:
            for switch, rt in self.dataplane.switches.items():
                if rt.devices.get(name) is old:
                    self.dataplane.remove_port(switch, name)
            old.close()
        self.datapath.refresh()
        if params is not None:
            self._build_carp_tap(params)
        self.apply(now, actions)

    def reload(self, config: NodeConfig) -> list[str]:
        """Apply a new, already valid configuration; unchanged carp interfaces keep their state.
        Returns what changed; what needs a restart is said so and left as it is."""
        assert self.host is not None
        now = self.clock()
        old = self.config
        changes: list[str] = []
        if config.node != old.node:
            changes.append("[node] changed: restart the node to apply it")
        for key, value in config.sysctl.model_dump().items():
            if getattr(old.sysctl, key) != value:
                self.apply(now, self.host.set_sysctl(now, key, int(value)))
                changes.append(f"net.inet.carp.{key}={int(value)}")
        for name in sorted(set(old.switch) | set(config.switch)):
            if old.switch.get(name) != config.switch.get(name):
                changes += self._reload_switch(name, old.switch.get(name), config.switch.get(name))
        new_params = {p.name: p for p in config.carp_params()}
        for name in [n for n in self.host.carpifs if n not in new_params]:
            self._replace_carpif(now, name, None)
            changes.append(f"{name} removed")
        for name, params in new_params.items():
            current = self.host.carpifs.get(name)
            if current is None or current.params != params:
                if params.carpdev not in self.carpdevs:
                    changes.append(f"{name}: carpdev {params.carpdev} needs a restart")
                    continue
                kept = current is not None and keeps_state(current.params, params)
                self._replace_carpif(now, name, params)
                what = "added" if current is None else "updated, state kept" if kept else "replaced"
                changes.append(f"{name} {what}")
        self.config = config
        return changes

    def _reload_switch(
        self, name: str, old: SwitchConfig | None, new: SwitchConfig | None
    ) -> list[str]:
        if old is None or new is None or (old.host, old.host_mac) != (new.host, new.host_mac):
            return [f"switch {name}: added, removed or host port changed; restart to apply it"]
        changes: list[str] = []
        fwd = self.dataplane.switch(name)
        if (old.mode, old.ageing) != (new.mode, new.ageing):
            fwd.hub = new.mode == "hub"
            fwd.ageing = new.ageing
            fwd.flush()
            changes.append(f"switch {name}: mode {new.mode}, ageing {new.ageing:g}")
        old_ports = {p.name: p for p in old.ports}
        new_ports = {p.name: p for p in new.ports}
        for pname, port in old_ports.items():
            if new_ports.get(pname) != port:
                self.dataplane.remove_port(name, pname)
                changes.append(f"switch {name}: port {pname} removed")
        for pname, port in new_ports.items():
            if old_ports.get(pname) != port:
                self._add_port(name, port)
                changes.append(f"switch {name}: port {pname} added")
        return changes

    # -- shutdown ------------------------------------------------------------------------------

    def bow_out(self) -> None:
        """SIGTERM: advertise advbase/advskew 255 for every MASTER carpnode (§4.7)."""
        if self.host is not None and not self._closed:
            now = self.clock()
            self.apply(now, self.host.shutdown(now))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        self.dataplane.close()
        for tap in self.carp_taps.values():
            tap.close()


async def serve(node: Node, stop: asyncio.Event) -> None:
    """Run until `stop` is set (signals), then bow out and clean up."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        node.bow_out()
        node.close()
