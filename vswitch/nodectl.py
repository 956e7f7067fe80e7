"""The running node as the control socket, the CLI and the metrics see it (NodeControl)."""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from carp.carpif import CarpInterface
from carp.constants import State
from carp.explain import explain, render
from carp.host import SYSCTL_PREFIX, CarpHost
from carp.ifconfig import IfconfigChange
from vswitch.config import ConfigError, NodeConfig, parse_config, port_table
from vswitch.events import EventBus
from vswitch.hooks import HookRunner, HookSpec
from vswitch.impair import parse_words
from vswitch.node import Node
from vswitch.realtime import scheduling
from vswitch.status import (
    STATUS_FORMAT,
    CarpIfStatus,
    CarpNodeStatus,
    NodeStatus,
    PeerStatus,
)
from vswitch.watch import CaptureSession


class NodeController:
    """Implements vswitch.dispatch.NodeControl on a `Node`."""

    def __init__(
        self,
        node: Node,
        bus: EventBus,
        hooks: HookRunner | None = None,
        reload: Callable[[], NodeConfig] | None = None,
    ) -> None:
        self.node = node
        self.bus = bus
        self.hooks = hooks
        self._load = reload
        # side channel -> its counters (run.py registers the log sink, control socket, metrics)
        self.channels: dict[str, Callable[[], Mapping[str, int]]] = {
            "events": lambda: {"dropped": bus.dropped, "listener_errors": bus.listener_errors},
        }
        if hooks is not None:
            self.channels["hooks"] = lambda: hooks.failures_by_reason
        self.channels["capture"] = node.watch.stats

    @property
    def _host(self) -> CarpHost:
        assert self.node.host is not None
        return self.node.host

    # -- status --------------------------------------------------------------------------------

    def status(self) -> NodeStatus:
        node = self.node
        host = self._host
        now = node.clock()
        status: NodeStatus = {
            "format": STATUS_FORMAT,
            "node": node.name,
            "uptime": round(now - node.started_at, 3),
            "sysctl": self._sysctls(),
            "groups": dict(host.groups),
            "switches": node.dataplane.switch_status(),
            "carp": self._carp(now),
            "carpstats": host.stats.as_dict(),
            "events": {
                "seq": self.bus.seq,
                "subscribers": self.bus.subscribers,
                "dropped": self.bus.dropped,
            },
            "counters": {
                "adverts_unresolved": node.counters["adverts_unresolved"],
                "apply_errors": node.counters["apply_errors"],
            },
        }
        if node.datapath is not None:
            stats = node.datapath.stats
            w = node.workers
            status["datapath"] = w.datapath_stats(stats) if w is not None else stats.as_dict()
        if node.workers is not None:
            status["workers"] = node.workers.status()
        if node.config.node.rt_priority is not None:
            status["scheduling"] = scheduling()
        status["ip_drops"] = host.stats.ip_drops.as_dict()
        node.watch.annotate(status["switches"])  # each impaired port's `impair`
        status["channels"] = self._channels()
        if self.hooks is not None:
            hooks = self.hooks.stats()
            status["hooks"] = {
                "queued": hooks["queued"],
                "runs": hooks["runs"],
                "failures": hooks["failures"],
                "timeouts": hooks["timeouts"],
                "overflows": hooks["overflows"],
            }
        return status

    def carp_status(self) -> list[CarpIfStatus]:
        """The `carp` part of `status()` alone: what STATUS= and the event snapshot need, without
        the switches' kernel counters (a netlink dump per namespace) the full snapshot reads."""
        return self._carp(self.node.clock())

    def _carp(self, now: float) -> list[CarpIfStatus]:
        return [self._carpif(sc, now) for sc in self._host.carpifs.values()]

    def _sysctls(self) -> dict[str, int]:
        """net.inet.carp.* by short name, as status and `vswitch sysctl` show them."""
        sysctls = self._host.sysctls
        return {"allow": int(sysctls.allow), "preempt": int(sysctls.preempt), "log": sysctls.log}

    def _channels(self) -> dict[str, dict[str, int]]:
        """Each side channel's counters; one that fails to report is skipped, never raised."""
        out: dict[str, dict[str, int]] = {}
        for name, read in self.channels.items():
            try:
                out[name] = {key: int(value) for key, value in read().items()}
            except Exception:
                continue
        return out

    def _carpif(self, sc: CarpInterface, now: float) -> CarpIfStatus:
        host = self._host
        nodes: list[CarpNodeStatus] = []
        for vhe in sc.vhes:
            peers: list[PeerStatus] = [
                {
                    "source": source,
                    "advbase": heard.advbase,
                    "advskew": heard.advskew,
                    "demote": heard.demote,
                    "age": round(now - heard.at, 3),
                }
                for source, heard in vhe.peers.items()
            ]
            nodes.append(
                {
                    "vhid": vhe.vhid,
                    "advskew": vhe.advskew,
                    "state": State(vhe.state).name,
                    "reason": str(vhe.reason) if vhe.reason is not None else None,
                    "since": round(now - vhe.changed_at, 3) if vhe.changed_at is not None else None,
                    "transitions": vhe.transitions,
                    "peers": peers,
                    "conflicts": self.bus.conflicts.get((sc.name, vhe.vhid), 0),
                }
            )
        params = sc.params
        return {
            "name": sc.name,
            "carpdev": sc.carpdev,
            "lladdr": sc.mac.hex(":"),
            "advbase": sc.advbase,
            "balancing": sc.balancing.label,
            "carppeer": str(params.carppeer) if params.carppeer is not None else None,
            "addresses": [str(a) for a in params.addresses],
            "groups": list(sc.groups),
            "demote": host.demote_count(sc.name),
            "admin_up": sc.admin_up,
            "running": sc.is_running,
            "carrier": sc.carrier,
            "carpnodes": nodes,
        }

    # -- changes -------------------------------------------------------------------------------

    def ifconfig(self, carpif: str, change: IfconfigChange) -> None:
        self.node.ifconfig(carpif, change)

    def group_demote(self, group: str, adj: int) -> int:
        now = self.node.clock()
        self.node.apply(now, self._host.group_demote(now, group, adj))
        return int(self._host.groups[group])

    def sysctl(self, name: str | None, value: int | None) -> dict[str, int]:
        host = self._host
        if name is not None and value is not None:
            now = self.node.clock()
            self.node.apply(now, host.set_sysctl(now, name, value))
        current = self._sysctls()
        if name is None:
            return current
        short = name.removeprefix(SYSCTL_PREFIX)
        if short not in current:
            raise ValueError(f"unknown sysctl {name} (allow, preempt, log)")
        return {short: current[short]}

    def port(self, switch: str, name: str, words: Mapping[str, str] | None) -> list[str]:
        """`vswitch port add SWITCH NAME key=value...` (words) or `port del` (None): the node's
        configuration with that one port more or less, validated by the file's models and
        applied as a reload is (all or nothing; carp interfaces untouched). The port lasts
        until the next reload from the file or restart."""
        config = self.node.config
        if switch not in config.switch:
            known = ", ".join(config.switch) or "none"
            raise ValueError(f"no switch {switch} (switches: {known})")
        data = config.normalised(show_pass=True)
        ports: list[dict[str, object]] = data["switch"][switch]["ports"]
        names = [str(p["name"]) for p in ports]
        if words is None:
            if name not in names:
                listed = ", ".join(names) or "none"
                raise ValueError(
                    f"switch {switch} has no port {name} from its configuration (ports: {listed})"
                )
            ports[:] = [p for p in ports if p["name"] != name]
        else:
            if name in names:
                raise ValueError(f"switch {switch} has a port {name} already (port del it first)")
            if "name" in words:
                raise ValueError("name= is not a setting: the port's name is NAME")
            ports.append(port_table(name, words))
        # errors about the new port name it, not its place in a file there is none of
        where = f"switch.{switch}.ports[{len(ports) - 1}]" if words is not None else "\0"
        try:
            candidate = parse_config(data)
        except ConfigError as exc:
            raise ConfigError([e.replace(where, f"port {name}", 1) for e in exc.errors]) from None
        # only this switch changes: the rest stays the very same objects (no carp change)
        new = config.model_copy(
            update={"switch": config.switch | {switch: candidate.switch[switch]}}
        )
        try:
            return self.node.reload(new)
        except ConfigError as exc:
            raise ConfigError([e.replace(where, f"port {name}", 1) for e in exc.errors]) from None

    def impair(self, switch: str, port: str, words: Sequence[str]) -> dict[str, Any]:
        """`vswitch impair SWITCH PORT [in|out] ...`: the port's impairment after the change.
        ValueError (ImpairError) names the word or the unknown switch or port; nothing changed
        then. It lasts until a reload changes that port's `impair` in the file, or a restart."""
        change = parse_words(words)
        self._not_delegated("impair", switch, [port])
        config = self.node.watch.impair(switch, port, change)
        return {
            "switch": switch,
            "port": port,
            "in": config.inbound.words(),
            "out": config.outbound.words(),
            "table": config.table(),
        }

    def capture(
        self, switch: str, ports: Sequence[str], *, snaplen: int | None, count: int | None
    ) -> CaptureSession:
        """`vswitch capture`: a capture of those ports (none: all); ValueError for an unknown
        switch or port."""
        self._not_delegated("capture", switch, ports)
        return self.node.watch.capture(switch, ports, snaplen=snaplen, count=count)

    def _not_delegated(self, what: str, switch: str, ports: Sequence[str]) -> None:
        """Impairment and capture happen where a port is read: not in the forwarding workers."""
        dp = self.node.dataplane
        rt = dp.switches.get(switch)
        if rt is None or not dp.delegated:
            return  # nothing delegated; an unknown switch is named by the watch
        for name in ports or list(rt.devices):
            dev = rt.devices.get(name)
            if dev is not None and dev.kind in dp.delegated:
                raise ValueError(
                    f"{what}: port {name} of switch {switch} is forwarded by the workers "
                    f"([node] workers = {self.node.config.node.workers}), which cannot {what} "
                    "(set workers = 0 in the node file and restart)"
                )

    def explain(self, carpif: str | None) -> dict[str, Any]:
        """`vswitch explain [carpN]`: carp/explain.py's data and its text (the client does not
        import carp)."""
        data = explain(self._host, self.node.clock(), carpif)
        return {"data": data, "text": render(data)}

    def reload(self) -> list[str]:
        if self._load is None:
            raise ConfigError(["this node was started without a configuration file"])
        config = self._load()  # raises ConfigError with every error; nothing changed then
        changes = self.node.reload(config)
        if self.hooks is not None:
            hooks = tuple(HookSpec.from_config(h) for h in config.hook)
            if hooks != self.hooks.hooks:
                self.hooks.update(hooks)
                changes.append(f"hooks: {len(hooks)}")
        return changes
