"""The status snapshot a running node hands to the control socket, the CLI and the metrics.

`NodeControl.status()` returns a `NodeStatus`: plain JSON-able dicts and lists, so the same value
travels over the control socket unchanged. Keys marked NotRequired may be absent (a node without
hooks has no "hooks" section); renderers must cope. States are carp(4) names ("INIT", "BACKUP",
"MASTER"), reasons are `carp.actions.Reason` values. `format` is the layout's version
(`STATUS_FORMAT`): raised when a key changes meaning or goes away, not when one is added.
"""

from collections.abc import Iterator
from typing import Any, NotRequired, TypedDict

STATES = ("INIT", "BACKUP", "MASTER")  # index = carp.constants.State value
STATUS_FORMAT = 1


class ImpairDirectionStatus(TypedDict):
    """One direction ("in": received on the port, "out": sent out of it) of a port's impairment
    (vswitch/impair.py) and what it did since it was first set."""

    config: dict[str, Any]  # the node file's form: {"delay": "50ms", "loss": "1%"}; {}: cleared
    passed: int  # frames let through (after their delay)
    held: int  # frames in the delay line now
    drops: dict[str, int]  # partition, loss, queue (rate backlog), limit (delay line full)


class PortStatus(TypedDict):
    name: str
    type: str  # "tap" | "raw" | "host" | "carp"
    link: bool
    rx_packets: int
    rx_bytes: int
    rx_drops: int
    tx_packets: int
    tx_bytes: int
    tx_drops: int
    forwarded: NotRequired[int]  # rx_packets minus the receive-side drops
    drops: NotRequired[dict[str, int]]  # reason -> frames (vswitch/accounting.py DROP_REASONS)
    refused: NotRequired[dict[str, int]]  # socket ports (stream, vde, vxlan): refusals by reason
    impair: NotRequired[dict[str, ImpairDirectionStatus]]  # "in", "out": each one ever impaired


class SwitchStatus(TypedDict):
    name: str
    mode: str  # "learning" | "hub" | "learning-arp"
    mac_table: int  # learned MAC entries
    ports: list[PortStatus]
    table_full: NotRequired[int]  # sources not learned because the table was full


class PeerStatus(TypedDict):
    """The last valid advertisement heard for a vhid from one source address."""

    source: str
    advbase: int
    advskew: int
    demote: int
    age: float  # seconds since it was heard


class CarpNodeStatus(TypedDict):
    vhid: int
    advskew: int
    state: str
    reason: str | None  # why the last transition happened; None before the first
    since: float | None  # seconds in the current state
    transitions: int  # state changes since the node started
    peers: list[PeerStatus]
    conflicts: NotRequired[int]  # `conflict` events: a less preferred master heard while MASTER


class CarpIfStatus(TypedDict):
    name: str
    carpdev: str
    lladdr: str  # "00:00:5e:00:01:01"
    advbase: int
    balancing: str  # "none" | "arp" | "ip" | "ip-unicast" | "ip-stealth"
    carppeer: str | None  # None: the multicast group
    addresses: list[str]  # "192.0.2.10/24", "2001:db8::10/64"
    groups: list[str]
    demote: int  # D_local: what this interface advertises (section 5.1)
    admin_up: bool
    running: bool
    carrier: bool  # up while any carpnode is MASTER (section 4.11)
    carpnodes: list[CarpNodeStatus]


class EventsStatus(TypedDict):
    seq: int
    subscribers: int
    dropped: int


class HooksStatus(TypedDict):
    queued: int
    runs: int
    failures: int
    timeouts: int
    overflows: int


class NodeCounters(TypedDict):
    """What the node itself failed to do (not the core's carpstats)."""

    adverts_unresolved: int  # unicast advertisements not sent: the carppeer's MAC was unknown
    apply_errors: int  # actions and listeners that raised (a log sink, a hook submitter)


class WorkersStatus(TypedDict):
    """The forwarding workers (`[node] workers`; vswitch/workers.py)."""

    count: int
    pids: list[int]
    ready: int  # workers of the running set that have started serving
    restarts: int  # workers that died and were started again
    lost_messages: int  # messages from workers that could not be read
    errors: dict[str, int]  # hook failures and messages a full channel lost, by kind
    # advertisements the kernel dropped before the node read them: the receive queue of a raw
    # port's advertisement socket (the node's own, nodeworkers.py) was full
    advert_socket_drops: NotRequired[int]


class NodeStatus(TypedDict):
    format: int  # STATUS_FORMAT
    node: str
    uptime: float
    sysctl: dict[str, int]  # allow, preempt, log
    groups: dict[str, int]  # interface group -> demote counter
    switches: list[SwitchStatus]
    carp: list[CarpIfStatus]
    carpstats: dict[str, int]  # carp.stats.CarpStats.as_dict()
    events: NotRequired[EventsStatus]
    hooks: NotRequired[HooksStatus]
    counters: NotRequired[NodeCounters]
    datapath: NotRequired[dict[str, int]]  # carp.datapath.DataPathStats: per-frame carp rules
    ip_drops: NotRequired[dict[str, int]]  # carp.stats.IpDropStats: dropped before carp input
    channels: NotRequired[dict[str, dict[str, int]]]  # side channels: log, control, metrics...
    workers: NotRequired[WorkersStatus]
    scheduling: NotRequired[dict[str, object]]  # with rt_priority: the policy and priority


def carpnodes(status: NodeStatus) -> Iterator[tuple[CarpIfStatus, CarpNodeStatus]]:
    """Every (carp interface, carpnode) pair in configuration order."""
    for carpif in status["carp"]:
        for vhe in carpif["carpnodes"]:
            yield carpif, vhe


def interface_status(carpif: CarpIfStatus) -> str:
    """ifconfig `status:` (section 4.11): master if any carpnode is MASTER, else backup/invalid."""
    states = {vhe["state"] for vhe in carpif["carpnodes"]}
    if "MASTER" in states:
        return "master"
    if "BACKUP" in states:
        return "backup"
    return "invalid"
