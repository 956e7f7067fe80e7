"""The running node as the control socket, the CLI and the metrics see it (NodeControl)."""

from collections.abc import Callable

from carp.carpif import CarpInterface
from carp.constants import State
from carp.host import CarpHost
from carp.ifconfig import IfconfigChange
from vswitch.config import ConfigError, NodeConfig
from vswitch.events import EventBus
from vswitch.hooks import HookRunner, HookSpec
from vswitch.node import Node
from vswitch.status import (
    CarpIfStatus,
    CarpNodeStatus,
    NodeStatus,
    PeerStatus,
    PortStatus,
    SwitchStatus,
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
            "node": node.name,
            "uptime": round(now - node.started_at, 3),
            "sysctl": {
                "allow": int(host.sysctls.allow),
                "preempt": int(host.sysctls.preempt),
                "log": host.sysctls.log,
            },
            "groups": dict(host.groups),
            "switches": self._switches(),
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

    def _switches(self) -> list[SwitchStatus]:
        out: list[SwitchStatus] = []
        for name, sw in self.node.dataplane.stats().items():
            ports: list[PortStatus] = []
            for pname, p in sw["ports"].items():
                kind = p["kind"]
                if pname in self.node.carp_taps:
                    kind = "carp"
                elif p["kernel"]:
                    kind = "host"
                ports.append(
                    {
                        "name": pname,
                        "type": kind,
                        "link": bool(p["link"]),
                        "rx_packets": p["rx_packets"],
                        "rx_bytes": p["rx_bytes"],
                        "rx_drops": p["rx_dropped"] + p["rx_filtered"],
                        "tx_packets": p["tx_packets"],
                        "tx_bytes": p["tx_bytes"],
                        "tx_drops": p["tx_dropped"],
                    }
                )
            out.append({"name": name, "mode": sw["mode"], "mac_table": sw["macs"], "ports": ports})
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
