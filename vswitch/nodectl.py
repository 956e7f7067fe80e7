"""The running node as the control socket, the CLI and the metrics see it (NodeControl)."""

from collections.abc import Callable, Mapping

from carp.carpif import CarpInterface
from carp.constants import State
from carp.host import CarpHost
from carp.ifconfig import IfconfigChange
from vswitch.config import ConfigError, NodeConfig
from vswitch.events import EventBus
from vswitch.hooks import HookRunner, HookSpec
from vswitch.node import Node
from vswitch.status import (
    STATUS_FORMAT,
    CarpIfStatus,
    CarpNodeStatus,
    NodeStatus,
    PeerStatus,
)


class NodeController:
    """Implements vswitch.control.NodeControl on a `Node`."""

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
            "sysctl": {
                "allow": int(host.sysctls.allow),
                "preempt": int(host.sysctls.preempt),
                "log": host.sysctls.log,
            },
            "groups": dict(host.groups),
            "switches": node.dataplane.switch_status(),
            "carp": [self._carpif(sc, now) for sc in host.carpifs.values()],
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
            status["datapath"] = node.datapath.stats.as_dict()
        status["ip_drops"] = host.stats.ip_drops.as_dict()
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
        current = {
            "allow": int(host.sysctls.allow),
            "preempt": int(host.sysctls.preempt),
            "log": host.sysctls.log,
        }
        if name is None:
            return current
        short = name.removeprefix("net.inet.carp.")
        if short not in current:
            raise ValueError(f"unknown sysctl {name} (allow, preempt, log)")
        return {short: current[short]}

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
