"""A small in-memory NodeControl for the control socket, client and metrics tests.

It keeps CarpIfParams per carp interface and applies ifconfig changes with the real
`apply_params`, so what a test reads back depends on what it asked for.
"""

import asyncio
import threading
from collections.abc import Callable, Coroutine
from dataclasses import replace
from ipaddress import IPv4Interface, IPv6Interface
from typing import Any, TypeVar

from carp.actions import Reason, StateChanged
from carp.constants import Balancing, State
from carp.ifconfig import IfconfigChange, apply_params
from carp.params import CarpIfParams, CarpNodeParams
from carp.stats import CarpStats
from vswitch.control import ControlServer
from vswitch.events import EventBus, states_from_status
from vswitch.status import CarpIfStatus, NodeStatus

T = TypeVar("T")


class FakeConfigError(Exception):
    def __init__(self, errors: list[str]) -> None:
        super().__init__(errors)
        self.errors = errors


class FakeNode:
    def __init__(self) -> None:
        self.name = "gw-a"
        self.sysctls = {"allow": 1, "preempt": 0, "log": 2}
        self.groups = {"carp": 0, "uplink": 0}
        self.params = {
            "carp0": CarpIfParams(
                name="carp0",
                carpdev="lan0",
                addresses=(IPv4Interface("192.0.2.10/24"), IPv6Interface("2001:db8::10/64")),
                carpnodes=(CarpNodeParams(1, 0),),
                passphrase=b"secret",
            ),
            "carp1": CarpIfParams(
                name="carp1",
                carpdev="lan1",
                addresses=(IPv4Interface("198.51.100.10/24"),),
                carpnodes=(CarpNodeParams(2, 0), CarpNodeParams(3, 100)),
                balancing=Balancing.IP,
                groups=("carp", "uplink"),
            ),
        }
        self.states: dict[tuple[str, int], str] = {
            ("carp0", 1): "MASTER",
            ("carp1", 2): "MASTER",
            ("carp1", 3): "BACKUP",
        }
        self.stats = CarpStats(ipackets=12, opackets=30, badauth=1, preempt=2)
        self.bus = EventBus(self.name, states=lambda: states_from_status(self.status()))
        self.reload_errors: list[str] = []
        self.calls: list[tuple[str, Any]] = []

    def status(self) -> NodeStatus:
        return {
            "node": self.name,
            "uptime": 3723.5,
            "sysctl": dict(self.sysctls),
            "groups": dict(self.groups),
            "switches": [
                {
                    "name": "lan0",
                    "mode": "learning",
                    "mac_table": 4,
                    "ports": [
                        {
                            "name": "up0",
                            "type": "raw",
                            "link": True,
                            "rx_packets": 100,
                            "rx_bytes": 6400,
                            "rx_drops": 1,
                            "tx_packets": 90,
                            "tx_bytes": 5400,
                            "tx_drops": 0,
                        },
                        {
                            "name": "vm1",
                            "type": "tap",
                            "link": False,
                            "rx_packets": 0,
                            "rx_bytes": 0,
                            "rx_drops": 0,
                            "tx_packets": 7,
                            "tx_bytes": 420,
                            "tx_drops": 3,
                        },
                    ],
                },
                {"name": "lan1", "mode": "hub", "mac_table": 0, "ports": []},
            ],
            "carp": [self._carpif(p) for p in self.params.values()],
            "carpstats": self.stats.as_dict(),
        }

    def _carpif(self, p: CarpIfParams) -> CarpIfStatus:
        demote = sum(self.groups.get(g, 0) for g in p.groups)
        return {
            "name": p.name,
            "carpdev": p.carpdev,
            "lladdr": f"00:00:5e:00:01:{p.carpnodes[0].vhid:02x}",
            "advbase": p.advbase,
            "balancing": p.balancing.label,
            "carppeer": None if p.carppeer is None else str(p.carppeer),
            "addresses": [str(a) for a in p.addresses],
            "groups": list(p.groups),
            "demote": min(demote, 255),
            "admin_up": p.admin_up,
            "running": p.admin_up,
            "carrier": any(self.states.get((p.name, n.vhid)) == "MASTER" for n in p.carpnodes),
            "carpnodes": [
                {
                    "vhid": n.vhid,
                    "advskew": n.advskew,
                    "state": self.states.get((p.name, n.vhid), "INIT"),
                    "reason": self.bus.last_reason.get((p.name, n.vhid)),
                    "since": 12.25,
                    "transitions": self.bus.transitions.get((p.name, n.vhid), 0),
                    "peers": [
                        {
                            "source": "192.0.2.3",
                            "advbase": p.advbase,
                            "advskew": 100,
                            "demote": 0,
                            "age": 0.5,
                        }
                    ]
                    if self.states.get((p.name, n.vhid)) == "MASTER"
                    else [],
                }
                for n in p.carpnodes
            ],
        }

    def ifconfig(self, carpif: str, change: IfconfigChange) -> None:
        self.calls.append(("ifconfig", (carpif, change)))
        if carpif not in self.params:
            raise ValueError(f"{carpif}: no such carp interface")
        params = apply_params(self.params[carpif], change)
        if change.admin_up is not None:
            params = replace(params, admin_up=change.admin_up)
        self.params[carpif] = params
        if change.state is not None:
            self.force(carpif, change.state, Reason.FORCED)

    def force(self, carpif: str, state: State, reason: Reason, now: float = 1.0) -> None:
        """Move every carpnode of `carpif` to `state` and publish the transitions."""
        actions = []
        for node in self.params[carpif].carpnodes:
            old = State[self.states.get((carpif, node.vhid), "INIT")]
            if old != state:
                self.states[(carpif, node.vhid)] = state.name
                actions.append(StateChanged(carpif, node.vhid, old, state, reason))
        self.bus.publish_actions(now, actions)

    def group_demote(self, group: str, adj: int) -> int:
        if group not in self.groups:
            raise ValueError(f"{group}: no such interface group")
        value = self.groups[group] + adj
        if not 0 <= value <= 255:
            raise ValueError(f"demote counter of {group} would be {value}, outside 0..255")
        self.groups[group] = value
        return value

    def sysctl(self, name: str | None, value: int | None) -> dict[str, int]:
        if name is None:
            return dict(self.sysctls)
        if value is not None:
            if name in ("allow", "preempt") and value not in (0, 1):
                raise ValueError(f"net.inet.carp.{name}: {value} is not 0 or 1")
            self.sysctls[name] = value
        return {name: self.sysctls[name]}

    def reload(self) -> list[str]:
        if self.reload_errors:
            raise FakeConfigError(self.reload_errors)
        return ["carp1: advbase 1 -> 2"]


class NodeThread:
    """A FakeNode served on a control socket by an event loop in a background thread, so that
    blocking clients (the CLI) can talk to it from the test's thread."""

    def __init__(self, path: str, **server_options: Any) -> None:
        self.node = FakeNode()
        self.server = ControlServer(path, self.node, self.node.bus, **server_options)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> "NodeThread":
        self._thread.start()
        self.call(self.server.start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.call(self.server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def do(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the node's loop (as the node's own code would) and wait for it."""

        async def wrapper() -> T:
            return fn()

        return self.call(wrapper())
