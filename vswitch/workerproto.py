"""What the node process and its forwarding workers (vswitch/worker.py) say to each other.

One SOCK_SEQPACKET socketpair per worker; each message is one pickled tuple (both ends are this
program, started by the node itself: nothing else can write to the pair). Node to worker:

- `Layout` once, first: the switches and ports the worker serves, with its queue's fd of each TAP
  and raw port (passed to it at spawn) and a `State`.
- `State` whenever a carp decision, a special MAC or a link changes: the whole of it, so that a
  newer one replaces an older one that could not be sent yet.

Worker to node: `("ready", index)` once it serves, `("advert", carpdev, ip_packet)` (a CARP
advertisement for the protocol, from a port the node has no CARP socket on), `("arp", frame)`
(a carppeer's, for the neighbour cache), `("out", switch, port, frame)` (a frame switched to a
port the node process serves: a socket port) and `("counts", WorkerCounts)` twice a second.
"""

import pickle
from dataclasses import dataclass, field

from carp.datapath import DataPathStats, Decisions
from vswitch.fwd import PortCounters
from vswitch.port import DeviceCounters

COUNTS_INTERVAL = 0.5  # seconds between a worker's counts
MAX_MESSAGE = 1 << 22  # SO_SNDBUF/SO_RCVBUF of the pair: a layout, or GSO frames in flight


@dataclass(frozen=True, slots=True)
class PortLayout:
    name: str
    kind: str  # "tap", "raw", or "relay" (served by the node process: frames go there)
    fd: int  # the worker's queue of a TAP / socket of a raw port's fanout group; -1 for relay
    kernel: bool
    flood: bool
    monitor: bool
    carp_tap: bool
    role: str | None
    bufsize: int = 0  # tap: the read size
    max_plain: int = 0  # raw: largest frame a switch without offload passes on
    skips_outgoing: bool = True  # raw: the kernel skips PACKET_OUTGOING itself
    direct: bool = False  # the node reads this port's advertisements itself (raw.carp_socket)


@dataclass(frozen=True, slots=True)
class SwitchLayout:
    name: str
    mode: str
    ageing: float
    offload: bool
    ports: tuple[PortLayout, ...]


@dataclass(frozen=True, slots=True)
class State:
    decisions: Decisions
    # switch -> (special MACs, their owner ports), as the node sets them on its own switches
    special: dict[str, tuple[frozenset[bytes], dict[bytes, str]]]
    links: dict[str, dict[str, bool]]  # switch -> port -> link up
    # the configured unicast carppeers (packed IPv4): only their ARP frames go to the node's
    # neighbour cache, whatever else an ARP storm brings
    carppeers: frozenset[bytes] = frozenset()
    # switch -> MAC -> port: the stations the node learned on the ports it serves itself (the
    # socket ports), pinned in the workers' tables so that frames for them are not flooded
    stations: dict[str, dict[bytes, str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Layout:
    index: int
    switches: tuple[SwitchLayout, ...]
    state: State


@dataclass(slots=True)
class WorkerCounts:
    """What one worker counted since it started."""

    ports: dict[str, dict[str, tuple[PortCounters, DeviceCounters]]] = field(default_factory=dict)
    macs: dict[str, frozenset[bytes]] = field(default_factory=dict)  # learned, per switch
    table_full: dict[str, int] = field(default_factory=dict)
    bad_emits: dict[str, int] = field(default_factory=dict)
    datapath: DataPathStats = field(default_factory=DataPathStats)
    errors: dict[str, int] = field(default_factory=dict)  # hook failures and lost messages


def encode(message: object) -> bytes:
    return pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)


def decode(data: bytes | memoryview) -> object:
    return pickle.loads(data)
