"""The daemon: one CARP host on the data plane (design.md sections 1, 2, 5).

`Node` builds, in the namespace it runs in, the switches with their ports, a host port (a kernel
TAP with the node's own addresses on that segment) per switch that has `host` addresses, and a
kernel TAP per carp interface (`carp0`: the virtual addresses without DAD and without a prefix
route, the carp MAC, carrier up while any carpnode is MASTER). The sans-IO core (`CarpHost`) and
its per-frame rules (`DataPath`) sit on the switches' hooks; one timer, re-armed from
`CarpHost.get_timer()` after every batch of actions, drives the protocol clock. The data plane,
the kernel calls and the clock are handed in (vswitch/system.py), so unit tests drive a Node
without root.

How the kernel's replies keep the balancing rules: a virtual address has no prefix route, so
what the node's kernel sends from it leaves through the host port; `DataPath.output` then sees
a frame whose source IP is virtual and sets the source MAC the mode asks for (design decision 4).
ARP and NDP for virtual addresses are answered by the DataPath; the host port runs with
arp_ignore=1 / arp_announce=2 so the kernel neither answers nor announces them itself. The
kernel takes frames for a virtual address only from the carp TAP, after the balancing filter:
the host port and every switch port in the node's namespace (raw ports) drop unicast IP in
link-layer multicast (the `ip`-mode carp MAC is multicast and flooded), and a raw port's
interface answers ARP only for addresses of its own (arp_ignore=1), never for a VIP. What the
node sets on an interface it did not create is put back when it lets go of the interface.

Nothing on the side stops the protocol: every action is applied on its own (a log sink or an
event listener that raises is logged once per kind and counted) and the timer is re-armed
whatever happens. A reload or an ifconfig change is prepared in full (devices opened, names
checked, the new carp interfaces validated) before anything is committed; when a step fails,
what was prepared is undone and ConfigError (reload) or ValueError (ifconfig) names the cause.
"""

import errno
import functools
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface

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
from carp.configerrors import path
from carp.datapath import DataPath
from carp.host import CarpHost
from carp.ifconfig import IfconfigChange, apply_params
from carp.params import CarpDev, CarpIfParams
from vswitch.config import ConfigError, NodeConfig, PortConfig, RawPortConfig, SwitchConfig
from vswitch.dataplane import DataPlane
from vswitch.fwd import Emit, Port, SpecialHook
from vswitch.logsink import LogSink, StderrSink
from vswitch.neigh import NeighbourCache
from vswitch.port import DevicePort
from vswitch.system import Clock, LoopClock, System, Timer, if_sysctl

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
# the carp TAP holds the VIPs only: no link-local, no router solicitations, no own ARP answers
CARP_TAP_SYSCTLS = (
    ("ipv6", "addr_gen_mode", 1),
    ("ipv4", "rp_filter", 0),
    ("ipv4", "arp_ignore", 1),
)
TIMER_RETRY = 0.1  # seconds before the timer runs again after the core itself raised
COUNTERS = ("adverts_unresolved", "apply_errors")

Listener = Callable[[float, Sequence[Action]], object]


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


def refused(where: str, what: str, exc: BaseException, fix: str = "") -> ConfigError:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return ConfigError([f"{where}: {what}: {reason}" + (f" ({fix})" if fix else "")])


def _kind(action: Action) -> str:
    if isinstance(action, Transmit):
        return f"transmit {action.kind}"
    return f"{type(action).__name__} action"


class Node:
    """One running vswitch node; `start()` builds everything, `close()` removes it."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        dataplane: DataPlane,
        system: System,
        clock: Clock | None = None,
        sink: LogSink | None = None,
    ) -> None:
        self.config = config
        self.name = config.node.name
        self.sink: LogSink = sink or StderrSink(self.name)
        self.dataplane = dataplane
        self.system = system
        self.clock: Clock = clock if clock is not None else LoopClock(dataplane.loop)
        self.started_at = self.clock()
        self.carpdevs: dict[str, CarpDev] = {}
        self.carp_taps: dict[str, DevicePort] = {}
        self.switch_link: dict[str, bool] = {}
        self.neigh = NeighbourCache()
        self.host: CarpHost | None = None
        self.datapath: DataPath | None = None
        self.listeners: list[Listener] = []
        # adverts_unresolved: unicast advertisements not sent, the carppeer's MAC being unknown;
        # apply_errors: actions and listeners that raised (each kind logged once)
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._logged: set[str] = set()
        # interfaces the node did not create: sysctl -> value before the node set it
        self._saved_sysctls: dict[str, dict[str, str]] = {}
        self._timer: Timer | None = None
        self._timer_deadline: float | None = None
        self._closed = False

    def _core(self) -> CarpHost:
        if self.host is None:
            raise RuntimeError(f"node {self.name} is not started")
        return self.host

    # -- building ------------------------------------------------------------------------------

    def start(self) -> None:
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        for name, value in NAMESPACE_SYSCTLS:
            self.system.set_sysctl(name, value)
        for name, sw in self.config.switch.items():
            self._build_switch(name, sw)
        params = self.config.carp_params()
        try:
            self.host = CarpHost(self.config.sysctls(), params, self.carpdevs, cookie)
        except ValueError as exc:
            raise ConfigError([f"carp: {exc}"]) from None
        self.datapath = DataPath(self.host)
        for p in params:
            self._open_carp_tap(p.name, p.carpdev, self.datapath.tap_macs[p.name], p.addresses)
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
        try:
            fwd = self.dataplane.add_switch(
                name, hub=sw.mode == "hub", ageing=sw.ageing, offload=sw.offload
            )
        except OSError as exc:
            where = f"switch.{name}.offload"
            raise refused(where, "not available", exc, "set offload = false") from exc
        own_mac = parse_mac(sw.host_mac) if sw.host_mac else local_mac()
        ipv4 = next((a.ip for a in sw.host if isinstance(a, IPv4Interface)), None)
        ipv6: IPv6Address | None = None
        if sw.host:
            self._open_host_port(name, sw, own_mac, fwd.vnet_hdr)
            ipv6 = link_local(own_mac)
        for index, port in enumerate(sw.ports):
            self._attach_port(name, index, port)
        local = frozenset(a.ip for a in sw.host)
        self.carpdevs[name] = CarpDev(name, own_mac, ipv4, ipv6, local=local)

    def _open_host_port(self, name: str, sw: SwitchConfig, mac: bytes, vnet_hdr: int) -> None:
        try:
            dev = self.system.open_tap(name, vnet_hdr=vnet_hdr, mac=mac, up=False)
        except OSError as exc:
            what = f"cannot create the host port TAP {name}"
            raise refused(f"switch.{name}.host", what, exc) from exc
        self.dataplane.add_port(name, name, dev, kernel=True, role="host")
        for af, key, value in HOST_PORT_SYSCTLS:
            self.system.set_sysctl(if_sysctl(af, name, key), value)
        for addr in sw.host:
            self.system.add_address(name, str(addr))
        self.system.set_link(name, True)

    def _attach_port(self, switch: str, index: int, port: PortConfig) -> None:
        """Open, configure and attach one switch port; ConfigError names it and the cause."""
        where = path(("switch", switch, "ports", index))
        ifname = port.ifname or port.name
        vnet_hdr = self.dataplane.switch(switch).vnet_hdr
        raw = isinstance(port, RawPortConfig)
        if raw and not self.system.interface_exists(ifname):
            missing = f"no interface {ifname} in the node's network namespace"
            raise ConfigError([f"{where}.ifname: {missing} (create it first, or fix ifname)"])
        try:
            if isinstance(port, RawPortConfig):
                dev = self.system.open_raw(ifname, vnet_hdr=vnet_hdr)
            else:
                mac = parse_mac(port.mac) if port.mac else None
                dev = self.system.open_tap(ifname, vnet_hdr=vnet_hdr, mac=mac, netns=port.netns)
        except OSError as exc:
            raise refused(where, f"cannot open {port.type} port {ifname}", exc) from exc
        try:
            if dev.netns is None:
                for af, key, value in SWITCH_PORT_SYSCTLS:
                    # a TAP made here vanishes with its sysctls; a raw port's interface stays
                    self._set_if_sysctl(ifname, af, key, value, restore=raw)
            self.dataplane.add_port(switch, port.name, dev)
        except OSError as exc:
            dev.close()
            raise refused(where, f"cannot set up port {ifname}", exc) from exc
        except BaseException:
            dev.close()
            raise

    def _set_if_sysctl(self, ifname: str, af: str, key: str, value: int, restore: bool) -> None:
        name = if_sysctl(af, ifname, key)
        if restore:
            saved = self._saved_sysctls.setdefault(ifname, {})
            if name not in saved:
                saved[name] = self.system.get_sysctl(name)
        self.system.set_sysctl(name, value)

    def _release_sysctls(self) -> None:
        """Put back the sysctls of interfaces the node did not create and no longer uses."""
        used = {
            dev.ifname
            for rt in self.dataplane.switches.values()
            for dev in rt.devices.values()
            if dev.netns is None and not dev.closed
        }
        for ifname in [i for i in self._saved_sysctls if i not in used]:
            for name, value in reversed(self._saved_sysctls.pop(ifname).items()):
                try:
                    self.system.set_sysctl(name, value)
                except OSError as exc:
                    log.warning("could not restore %s to %s: %s", name, value, exc)

    def _open_carp_tap(
        self,
        name: str,
        carpdev: str,
        mac: bytes,
        addresses: Iterable[IPv4Interface | IPv6Interface],
    ) -> None:
        where = f"carp.{name}"
        try:
            dev = self.system.open_tap(
                name, vnet_hdr=self.dataplane.switch(carpdev).vnet_hdr, mac=mac, up=False
            )
        except OSError as exc:
            taken = exc.errno in (errno.EBUSY, errno.EEXIST)
            fix = "another interface has that name: rename the carp interface" if taken else ""
            raise refused(where, f"cannot create the carp TAP {name}", exc, fix) from exc
        try:
            for af, key, value in CARP_TAP_SYSCTLS:
                self.system.set_sysctl(if_sysctl(af, name, key), value)
            for addr in addresses:
                self.system.add_address(name, str(addr), noprefixroute=True)
            self.system.set_carrier(dev, False)
            self.system.set_link(name, True)
            self.dataplane.add_port(carpdev, name, dev, kernel=True, flood=False, role="carp")
        except OSError as exc:
            dev.close()
            raise refused(where, f"cannot set up the carp TAP {name}", exc) from exc
        except BaseException:
            dev.close()
            raise
        self.carp_taps[name] = dev

    def _close_carp_tap(self, name: str) -> None:
        dev = self.carp_taps.pop(name, None)
        if dev is None:
            return
        for switch, rt in self.dataplane.switches.items():
            if rt.devices.get(name) is dev:
                self.dataplane.remove_port(switch, name)
        dev.close()

    # -- the hooks on the switches ---------------------------------------------------------------

    def _on_special(self, switch: str) -> SpecialHook:
        def hook(now: float, port: str, frame: bytes) -> tuple[bool, Sequence[Emit]]:
            assert self.datapath is not None and self.host is not None
            self.neigh.snoop(now, frame)
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
            self.neigh.snoop(now, frame)
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
        """Carry out the core's actions, then refresh the data path and re-arm the timer.

        Each action and each listener runs on its own: one that raises (a log sink on a closed
        pipe, a listener's bug) is logged once per kind and counted, and the others still run,
        so a MASTER still advertises and answers ARP; the timer is re-armed whatever happens."""
        try:
            results: list[Action] = []
            changed = False
            for action in actions:
                try:
                    changed |= self._apply_one(now, action, results)
                except Exception as exc:
                    self._failed(_kind(action), exc)
            if changed:
                try:
                    self._refresh()
                except Exception as exc:
                    self._failed("data path refresh", exc)
            for listener in list(self.listeners):
                try:
                    listener(now, actions)
                except Exception as exc:
                    self._failed(f"listener {getattr(listener, '__qualname__', listener)}", exc)
            if results:
                self.apply(now, results)
        finally:
            self._rearm()

    def _apply_one(self, now: float, action: Action, results: list[Action]) -> bool:
        """One action; True when the data path must be refreshed."""
        host = self._core()
        if isinstance(action, Transmit):
            try:
                error = self._transmit(now, action)
            except Exception as exc:
                self._failed(_kind(action), exc)
                error = exc.errno if isinstance(exc, OSError) and exc.errno else errno.EIO
            if action.kind in (TxKind.ADVERT, TxKind.BOWOUT):
                results += host.transmit_result(now, action, error)
        elif isinstance(action, Deliver):
            self.dataplane.send(host.carpifs[action.carpif].carpdev, action.frame, action.carpif)
        elif isinstance(action, CarrierChanged):
            tap = self.carp_taps.get(action.carpif)
            if tap is not None and not tap.closed:
                self.system.set_carrier(tap, action.up)
        elif isinstance(action, Log):
            self.sink.emit(action.level, action.message)
        return isinstance(action, StateChanged | DemoteChanged)

    def _failed(self, what: str, exc: Exception) -> None:
        self.counters["apply_errors"] += 1
        kind = f"{what}: {type(exc).__name__}"
        if kind not in self._logged:
            self._logged.add(kind)
            log.error("%s failed (%s); further failures of this kind are only counted", what, exc)

    def _transmit(self, now: float, action: Transmit) -> int | None:
        """Send one frame; the errno for `transmit_result` (§4.6), None when sent."""
        frame = action.frame
        if action.next_hop is not None:
            mac = self.neigh.lookup(action.next_hop)
            if mac is None or self.neigh.stale(now, action.next_hop):
                self._resolve(now, action.carpdev, action.next_hop)
            if mac is None:
                self.counters["adverts_unresolved"] += 1
                return errno.EHOSTDOWN  # not counted as a send error for a unicast peer (§4.6)
            frame = mac + frame[6:]
        external = self._external(action.carpdev)
        if external and not any(p.link_up for p in external):
            return errno.ENETDOWN
        error = self.dataplane.send(action.carpdev, frame, action.port)
        # a switch without ports of its own has link (`_link_of`) and nobody to send to: sent
        return error if external else None

    def _resolve(self, now: float, switch: str, ip: IPv4Address) -> None:
        dev = self.carpdevs[switch]
        request = self.neigh.request(now, dev.mac, dev.ipv4, ip)
        if request is not None:
            self.dataplane.send(switch, request)

    def _refresh(self) -> None:
        host = self._core()
        assert self.datapath is not None
        self.datapath.refresh()
        # the configured unicast peers stay in the neighbour cache whatever else is heard
        self.neigh.pin(
            [sc.params.carppeer for sc in host.carpifs.values() if sc.params.carppeer is not None]
        )
        for name in self.config.switch:
            fwd = self.dataplane.switch(name)
            macs = set(self.datapath.carpdev_macs.get(name, frozenset()))
            owners: dict[bytes, str] = {}
            if any(sc.carpdev == name and not sc.peer_is_multicast for sc in host.carpifs.values()):
                # unicast advertisements and the ARP replies for carppeer come to our own MAC;
                # switched normally they go to the host port only
                own = self.carpdevs[name].mac
                macs.add(own)
                if name in fwd.ports and fwd.ports[name].kernel:
                    owners[own] = name
            if fwd.special_macs != macs:
                fwd.set_special_macs(macs, owners=owners)

    # -- timer and links -----------------------------------------------------------------------

    def _rearm(self, floor: float | None = None) -> None:
        if self._closed or self.host is None:
            return
        deadline = self.host.get_timer()
        if deadline is not None and floor is not None:
            deadline = max(deadline, floor)
        if deadline == self._timer_deadline and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_deadline = deadline
        if deadline is not None:
            self._timer = self.clock.call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_deadline = None
        floor: float | None = None
        try:
            host = self._core()
            now = self.clock()
            deadline = host.get_timer()
            if deadline is not None and deadline > now:
                return  # woke early (loop clock granularity): the finally sleeps the rest
            try:
                actions = host.handle_timer(now)
            except Exception:
                floor = now + TIMER_RETRY  # a core that raises must not spin the loop
                raise
            self.apply(now, actions)
        except Exception as exc:
            self._failed("timer", exc)
        finally:
            self._rearm(floor)

    def _external(self, switch: str) -> list[Port]:
        return [p for p in self.dataplane.switch(switch).ports.values() if not p.kernel]

    def _link_of(self, switch: str) -> bool:
        """A switch (carpdev) has link while any of its non-kernel ports has, or has none."""
        external = self._external(switch)
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
        """`vswitch ifconfig carpN ...`: parameters first (SIOCSVH), then up/down and state.
        ValueError says why a change cannot be applied; nothing changed then."""
        host = self._core()
        sc = host.carpifs.get(carpif)
        if sc is None:
            raise ValueError(f"no carp interface {carpif}")
        now = self.clock()
        actions: list[Action] = []
        if change.changes_params:
            params = apply_params(sc.params, change)
            if params.carpdev not in self.carpdevs:
                raise ValueError(f"carpdev {params.carpdev}: no such switch")
            if params != sc.params:
                wanted: dict[str, CarpIfParams | None] = {carpif: params}
                try:
                    with ExitStack() as undo:
                        self._prepare_carpifs(undo, wanted)
                        undo.pop_all()
                except ConfigError as exc:
                    raise ValueError("; ".join(exc.errors) + "; nothing changed") from None
                actions += self._commit_carpifs(now, wanted)
        if change.admin_up is not None:
            actions += host.set_admin(now, carpif, change.admin_up)
        if change.state is not None:
            actions += host.force_state(now, carpif, change.state)
        self.apply(now, actions)

    def reload(self, config: NodeConfig) -> list[str]:
        """Apply a new, already valid configuration; unchanged carp interfaces keep their state.
        Returns what changed; what needs a restart is said so and left as it is. All or
        nothing: when a part cannot be applied, ConfigError names it and nothing changed."""
        host = self._core()
        now = self.clock()
        changes, sysctls, switches, wanted = self._plan(config)
        removals: list[tuple[str, str]] = []
        try:
            with ExitStack() as undo:
                for name, (before, after) in switches.items():
                    changes += self._prepare_ports(undo, name, before, after, removals)
                self._prepare_carpifs(undo, wanted)
                undo.pop_all()
        except (OSError, ValueError) as exc:
            raise refused("reload", "cannot be applied", exc, "nothing changed") from exc
        finally:
            self._release_sysctls()
        # commit: nothing below opens a device or validates anything
        actions: list[Action] = []
        for key, value in sysctls.items():
            actions += host.set_sysctl(now, key, value)
            changes.append(f"net.inet.carp.{key}={value}")
        for name, (before, after) in switches.items():
            if (before.mode, before.ageing) != (after.mode, after.ageing):
                fwd = self.dataplane.switch(name)
                fwd.hub = after.mode == "hub"
                fwd.ageing = after.ageing
                fwd.flush()
                changes.append(f"switch {name}: mode {after.mode}, ageing {after.ageing:g}")
        for switch, port in removals:
            self.dataplane.remove_port(switch, port)
        self._release_sysctls()
        for name, new in wanted.items():
            current = host.carpifs.get(name)
            if new is None:
                changes.append(f"{name} removed")
            elif current is None:
                changes.append(f"{name} added")
            elif keeps_state(current.params, new):
                changes.append(f"{name} updated, state kept")
            else:
                changes.append(f"{name} replaced")
        actions += self._commit_carpifs(now, wanted)
        self.config = config
        self.apply(now, actions)
        return changes

    def _plan(
        self, config: NodeConfig
    ) -> tuple[
        list[str],
        dict[str, int],
        dict[str, tuple[SwitchConfig, SwitchConfig]],
        dict[str, CarpIfParams | None],
    ]:
        """What a reload changes: notes on what needs a restart, carp sysctls, switches whose
        ports or mode change, carp interfaces (None: removed)."""
        host = self._core()
        old = self.config
        notes: list[str] = []
        if config.node != old.node:
            notes.append("[node] changed: restart the node to apply it")
        sysctls = {
            key: int(value)
            for key, value in config.sysctl.model_dump().items()
            if getattr(old.sysctl, key) != value
        }
        switches: dict[str, tuple[SwitchConfig, SwitchConfig]] = {}
        for name in sorted(set(old.switch) | set(config.switch)):
            before, after = old.switch.get(name), config.switch.get(name)
            if before == after:
                continue
            if before is None or after is None or not _same_device(before, after):
                notes.append(f"switch {name}: added, removed or host port changed; restart")
            else:
                switches[name] = (before, after)
        wanted: dict[str, CarpIfParams | None] = {
            name: None for name in host.carpifs if name not in config.carp
        }
        for params in config.carp_params():
            current = host.carpifs.get(params.name)
            if current is not None and current.params == params:
                continue
            if params.carpdev not in self.carpdevs:
                notes.append(f"{params.name}: carpdev {params.carpdev} needs a restart")
                continue
            wanted[params.name] = params
        return notes, sysctls, switches, wanted

    def _prepare_ports(
        self,
        undo: ExitStack,
        switch: str,
        before: SwitchConfig,
        after: SwitchConfig,
        removals: list[tuple[str, str]],
    ) -> list[str]:
        """Open and attach the new ports of a switch; the ports that go are detached now only
        when a new one takes their name or interface, else listed in `removals` for the
        commit. Every step is undone by `undo` if a later one fails."""
        old = {p.name: (i, p) for i, p in enumerate(before.ports)}
        new = {p.name: (i, p) for i, p in enumerate(after.ports)}
        gone = [(i, p) for name, (i, p) in old.items() if new.get(name, (0, None))[1] != p]
        come = [(i, p) for name, (i, p) in new.items() if old.get(name, (0, None))[1] != p]
        taken = {p.name for _, p in come} | {p.ifname or p.name for _, p in come}
        changes: list[str] = []
        for index, port in gone:
            changes.append(f"switch {switch}: port {port.name} removed")
            if port.name not in taken and (port.ifname or port.name) not in taken:
                removals.append((switch, port.name))
                continue
            self.dataplane.remove_port(switch, port.name)
            restore = functools.partial(self._attach_port, switch, index, port)
            undo.callback(_undo, f"restore port {port.name} of switch {switch}", restore)
        for index, port in come:
            self._attach_port(switch, index, port)
            remove = functools.partial(self.dataplane.remove_port, switch, port.name)
            undo.callback(_undo, f"remove the new port {port.name} of switch {switch}", remove)
            changes.append(f"switch {switch}: port {port.name} added")
        return changes

    def _prepare_carpifs(self, undo: ExitStack, wanted: Mapping[str, CarpIfParams | None]) -> None:
        """Validate the carp interfaces as they will be (`wanted`: name -> new parameters,
        None: removed) and swap the TAPs whose MAC, addresses or switch change."""
        host = self._core()
        assert self.datapath is not None
        final = {name: sc.params for name, sc in host.carpifs.items()}
        for name, params in wanted.items():
            if params is None:
                final.pop(name, None)
            else:
                final[name] = params
        try:
            check = CarpHost(host.sysctls, list(final.values()), self.carpdevs, cookie)
        except ValueError as exc:
            raise ConfigError([f"carp: {exc}"]) from None
        new_macs = DataPath(check).tap_macs
        old_macs = self.datapath.tap_macs
        swap: list[str] = []
        add: list[str] = []
        for name, params in wanted.items():
            current = host.carpifs.get(name)
            if current is not None:
                was = (current.carpdev, old_macs[name], current.params.addresses)
                if params is None or was != (params.carpdev, new_macs[name], params.addresses):
                    swap.append(name)
            if params is not None and (current is None or name in swap):
                add.append(name)
        for name in swap:
            sc = host.carpifs[name]
            self._close_carp_tap(name)
            reopen = functools.partial(
                self._reopen_carp_tap, name, sc.params, old_macs[name], sc.carrier
            )
            undo.callback(_undo, f"restore the carp TAP {name}", reopen)
        for name in add:
            params = wanted[name]
            assert params is not None
            self._open_carp_tap(name, params.carpdev, new_macs[name], params.addresses)
            close = functools.partial(self._close_carp_tap, name)
            undo.callback(_undo, f"remove the new carp TAP {name}", close)

    def _reopen_carp_tap(self, name: str, params: CarpIfParams, mac: bytes, carrier: bool) -> None:
        self._open_carp_tap(name, params.carpdev, mac, params.addresses)
        if carrier:
            self.system.set_carrier(self.carp_taps[name], True)

    def _commit_carpifs(
        self, now: float, wanted: Mapping[str, CarpIfParams | None]
    ) -> list[Action]:
        """The core's part of a change `_prepare_carpifs` validated: SIOCSVH in place where the
        state is kept (§4.9: advbase, advskew, pass, carppeer), a new interface otherwise."""
        host = self._core()
        # a vhid passed between changing interfaces of one carpdev would clash half-way: the
        # interface taking it leaves first and comes back after the others
        last = [
            name
            for name, params in wanted.items()
            if params is not None and self._takes_vhid(name, params)
        ]
        actions: list[Action] = []
        for name, params in wanted.items():
            if (params is None or name in last) and name in host.carpifs:
                actions += host.replace_carpif(now, name, None)
        for name in [n for n in wanted if n not in last] + last:
            params = wanted[name]
            if params is None:
                continue
            current = host.carpifs.get(name)
            if current is not None and keeps_state(current.params, params):
                actions += host.update_carpif(now, name, params)
            else:
                actions += host.replace_carpif(now, name, params)
        self._refresh()  # new MACs and peers, before any frame of the new interfaces
        return actions

    def _takes_vhid(self, name: str, params: CarpIfParams) -> bool:
        vhids = {n.vhid for n in params.carpnodes}
        return any(
            other != name and sc.carpdev == params.carpdev and vhids & {v.vhid for v in sc.vhes}
            for other, sc in self._core().carpifs.items()
        )

    # -- shutdown ------------------------------------------------------------------------------

    def bow_out(self) -> None:
        """SIGTERM: advertise advbase/advskew 255 for every MASTER carpnode (§4.7)."""
        if self.host is not None and not self._closed:
            now = self.clock()
            self.apply(now, self.host.shutdown(now))

    def close(self) -> None:
        """Remove what the node made and put back what it changed on interfaces it did not
        make; every step runs whatever the others do."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        steps = (
            ("close the data plane", self.dataplane.close),
            ("close the carp TAPs", self._close_carp_taps),
            ("restore sysctls", self._release_sysctls),
        )
        for what, step in steps:
            _undo(what, step)

    def _close_carp_taps(self) -> None:
        for dev in self.carp_taps.values():
            dev.close()


def _same_device(before: SwitchConfig, after: SwitchConfig) -> bool:
    """What a running switch cannot change: its host port and its offload."""
    return (before.host, before.host_mac, before.offload) == (
        after.host,
        after.host_mac,
        after.offload,
    )


def _undo(what: str, step: Callable[[], object]) -> None:
    """Run one clean-up step; a failure is logged and the next step still runs."""
    try:
        step()
    except Exception as exc:
        log.error("could not %s: %s", what, exc)
