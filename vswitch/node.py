"""The daemon: one CARP host on the data plane (design.md sections 1, 2, 5).

`Node` builds, in the namespace it runs in, the switches with their ports, a host port (a kernel
TAP with the node's own addresses on that segment) per switch that has `host` addresses, and a
kernel TAP per carp interface (`carp0`: the virtual addresses without DAD and without a prefix
route, the carp MAC, carrier up while any carpnode is MASTER). The sans-IO core (`CarpHost`) and
its per-frame rules (`DataPath`) sit on the switches' hooks; one timer, re-armed from
`CarpHost.get_timer()` after every batch of actions, drives the protocol clock. The data plane,
the kernel calls and the clock are handed in (vswitch/system.py), so unit tests drive a Node
without root. The devices and their sysctls are opened and put back by vswitch/build.py, the
reload and ifconfig transactions are vswitch/reconfig.py.

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
import logging
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address

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
from carp.datapath import DataPath
from carp.host import CarpHost
from carp.ifconfig import IfconfigChange
from carp.params import CarpDev
from vswitch import reconfig
from vswitch.build import NodeDevices, cookie, undo
from vswitch.carphooks import CarpHooks
from vswitch.config import ConfigError, NodeConfig
from vswitch.dataplane import DataPlane
from vswitch.fwd import Emit
from vswitch.logsink import LogSink, StderrSink
from vswitch.neigh import NeighbourCache
from vswitch.nodeworkers import Forwarders
from vswitch.system import Clock, LoopClock, System, Timer
from vswitch.watch import Watch
from vswitch.workers import DELEGATED

log = logging.getLogger("vswitch.node")

TIMER_RETRY = 0.1  # seconds before the timer runs again after the core itself raised
COUNTERS = ("adverts_unresolved", "apply_errors")

Listener = Callable[[float, Sequence[Action]], object]


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
        self.watch = Watch(dataplane, self.clock)  # impairments and captures (vswitch/watch.py)
        self.started_at = self.clock()
        self.carpdevs: dict[str, CarpDev] = {}
        self.devices = NodeDevices(dataplane, system)
        self.switch_link: dict[str, bool] = {}
        self.neigh = NeighbourCache()
        self.host: CarpHost | None = None
        self.datapath: DataPath | None = None
        self.listeners: list[Listener] = []
        # adverts_unresolved: unicast advertisements not sent, the carppeer's MAC being unknown;
        # apply_errors: actions and listeners that raised (each kind logged once)
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._logged: set[str] = set()
        self._timer: Timer | None = None
        self._timer_deadline: float | None = None
        self._closed = False
        self.workers: Forwarders | None = None  # forwarding workers (vswitch/nodeworkers.py)

    def core(self) -> CarpHost:
        """The started node's CarpHost."""
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
        if self.config.node.workers:
            self.dataplane.delegated = DELEGATED  # read by the workers, from their queues
        self.devices.set_namespace_sysctls()
        for name, sw in self.config.switch.items():
            self.carpdevs[name] = self.devices.build_switch(name, sw)
        params = self.config.carp_params()
        try:
            self.host = CarpHost(self.config.sysctls(), params, self.carpdevs, cookie)
        except ValueError as exc:
            raise ConfigError([f"carp: {exc}"]) from None
        self.datapath = DataPath(self.host)
        for p in params:
            self.devices.open_carp_tap(
                p.name, p.carpdev, self.datapath.tap_macs[p.name], p.addresses
            )
        hooks = CarpHooks(
            self.datapath, self.devices.carp_taps, self._run, self.neigh.snoop, self._failed
        )
        for name in self.config.switch:
            hooks.install(name, self.dataplane.switch(name))
        self.dataplane.on_link = self._on_port_link
        for name, sw in self.config.switch.items():
            self.watch.configure(name, sw, None)  # monitor ports and impairments
        self.dataplane.between_batches = self._due
        self.refresh()
        now = self.clock()
        actions = self.host.start(now)
        for name in self.config.switch:
            # a carpdev that starts without link starts suppressed (§4.8: carp_carpdev_state)
            self.switch_link[name] = self._link_of(name)
            if not self.switch_link[name]:
                actions += self.host.set_carpdev_link(now, name, False)
        if self.config.node.workers:
            self.workers = Forwarders(self, self.config.node.workers, self._failed)
            self.workers.start()
        self.apply(now, actions)

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
        so a MASTER still advertises and answers ARP; the timer is re-armed whatever happens.
        What they send is written when they are all done (`DataPlane.held`), before the data
        path is refreshed and the listeners run."""
        try:
            self._apply(now, actions)
        finally:
            self._rearm()

    def _apply(self, now: float, actions: Sequence[Action]) -> None:
        results: list[Action] = []
        changed = False
        with self.dataplane.held():
            for action in actions:
                try:
                    changed |= self._apply_one(now, action, results)
                except Exception as exc:
                    self._failed(_kind(action), exc)
        if changed:
            try:
                self.refresh()
            except Exception as exc:
                self._failed("data path refresh", exc)
        for listener in list(self.listeners):
            try:
                listener(now, actions)
            except Exception as exc:
                self._failed(f"listener {getattr(listener, '__qualname__', listener)}", exc)
        if results:
            self._apply(now, results)

    def _apply_one(self, now: float, action: Action, results: list[Action]) -> bool:
        """One action; True when the data path must be refreshed."""
        host = self.core()
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
            tap = self.devices.carp_taps.get(action.carpif)
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
        external = self.dataplane.switch(action.carpdev).external
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

    def refresh(self) -> None:
        """After the core's interfaces or states changed: the data path's tables, the pinned
        carppeers and each switch's special MACs."""
        host = self.core()
        assert self.datapath is not None
        self.datapath.refresh()
        # the configured unicast peers stay in the neighbour cache whatever else is heard
        self.neigh.pin(
            [sc.params.carppeer for sc in host.carpifs.values() if sc.params.carppeer is not None]
        )
        for name in self.carpdevs:  # the switches running: a reload adds none (restart)
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
        if self.workers is not None:
            self.workers.publish()

    # -- forwarding workers (vswitch/nodeworkers.py) ---------------------------------------------

    def advert(self, switch: str, packet: bytes) -> None:
        """An advertisement a worker or the workers' CARP socket took off `switch`."""
        now = self.clock()
        with self.dataplane.held():  # its deliveries and replies: one walk of the ports
            for out, emitted in self._run(now, self.core().receive(now, switch, packet)):
                self.dataplane.send(switch, emitted, out)

    def relayout(self) -> None:
        """After the ports changed: the workers serve the new set (started anew if needed)."""
        if self.workers is not None and not self._closed:
            self.workers.relayout()

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

    def _due(self) -> None:
        """Between two forwarding batches: a protocol deadline that has passed fires now, so an
        advertisement waits for one batch at most, not for a whole loop iteration of them."""
        deadline = self._timer_deadline
        if deadline is not None and self.clock() >= deadline:
            if self._timer is not None:
                self._timer.cancel()
            self._fire()

    def _fire(self) -> None:
        self._timer = None
        self._timer_deadline = None
        floor: float | None = None
        try:
            host = self.core()
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

    def _link_of(self, switch: str) -> bool:
        """A switch (carpdev) has link while any of its non-kernel ports has, or has none."""
        external = self.dataplane.switch(switch).external
        return not external or any(p.link_up for p in external)

    def _on_port_link(self, switch: str, port: str, up: bool) -> None:
        if self.host is None:
            return
        now = self.clock()
        link = self._link_of(switch)
        if self.switch_link.get(switch) != link:
            self.switch_link[switch] = link
            self.apply(now, self.host.set_carpdev_link(now, switch, link))
        self.relayout()  # a port's link, or a vde client come or gone

    # -- runtime changes (vswitch/reconfig.py) ------------------------------------------------

    def ifconfig(self, carpif: str, change: IfconfigChange) -> None:
        """`vswitch ifconfig carpN ...`: parameters first (SIOCSVH), then up/down and state.
        ValueError says why a change cannot be applied; nothing changed then."""
        try:
            reconfig.ifconfig(self, carpif, change)
        finally:
            self.relayout()  # a carp TAP made anew (new addresses) gets workers again

    def reload(self, config: NodeConfig) -> list[str]:
        """Apply a new, already valid configuration; unchanged carp interfaces keep their state.
        Returns what changed; what needs a restart is said so and left as it is. All or
        nothing: when a part cannot be applied, ConfigError names it and nothing changed."""
        try:
            return reconfig.reload(self, config)
        finally:
            self.relayout()

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
            ("stop the forwarding workers", self.workers.close if self.workers else lambda: None),
            ("stop the captures and delay lines", self.watch.close),
            ("close the data plane", self.dataplane.close),
            ("close the carp TAPs", self.devices.close_carp_taps),
            ("restore sysctls", self.devices.release_sysctls),
        )
        for what, step in steps:
            undo(what, step)
