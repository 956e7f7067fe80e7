"""What the sans-IO core asks its driver to do. Every entry point returns a list of these."""

from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Address

from carp.constants import State


class TxKind(StrEnum):
    ADVERT = "advert"  # periodic or immediate advertisement (carp_send_ad)
    BOWOUT = "bowout"  # advbase 255 / advskew 255 on `down` (4.7)
    GARP = "garp"  # gratuitous ARP on takeover (section 7)
    UNSOL_NA = "unsol-na"  # unsolicited neighbour advertisement on takeover (section 7)
    ARP_REPLY = "arp-reply"  # answer to an ARP request for a virtual address
    NA_REPLY = "na-reply"  # answer to a neighbour solicitation for a virtual address


class Reason(StrEnum):
    """Why a carpnode changed state (events, hooks, logs)."""

    START = "start"  # INIT -> BACKUP when the interface starts running
    MASTER_DOWN = "master-down timer"
    PREEMPT = "preempting a less preferred master"
    PEER_DEMOTED = "master is more demoted"
    SLOW_MASTER = "master advertises too slowly"
    BOWOUT_HEARD = "bow-out heard"
    PREEMPTED = "preempted by a peer"
    DEMOTED = "demoted"
    LINK_DOWN = "link down"
    LINK_UP = "link up"
    FORCED = "forced"
    DOWN = "interface down"
    RECONFIG = "reconfigured"


@dataclass(frozen=True, slots=True)
class Transmit:
    """Send `frame` (a whole Ethernet frame) into the switch `carpdev`, as sent by the node.

    For ADVERT and BOWOUT the driver reports the outcome with
    ``CarpHost.transmit_result(now, action, error)`` (send-error demotion, 4.6).
    For ARP_REPLY / NA_REPLY, `port` is the ingress port of the request the reply goes back to.
    `next_hop` is set for an advertisement to a unicast carppeer: the frame's destination MAC is
    then zero and the driver fills in the MAC it resolves for that address (1.3).
    """

    carpdev: str
    frame: bytes
    kind: TxKind
    carpif: str
    vhid: int = 0
    af: int = 0  # 4 or 6 for advertisements
    port: str | None = None
    next_hop: IPv4Address | None = None


@dataclass(frozen=True, slots=True)
class Deliver:
    """Hand `frame` to the kernel through the carp interface's TAP (destination MAC rewritten)."""

    carpif: str
    frame: bytes


@dataclass(frozen=True, slots=True)
class StateChanged:
    carpif: str
    vhid: int
    old: State
    new: State
    reason: Reason


@dataclass(frozen=True, slots=True)
class CarrierChanged:
    """The carp interface's link (4.11): up while any carpnode is MASTER."""

    carpif: str
    up: bool


@dataclass(frozen=True, slots=True)
class DemoteChanged:
    group: str
    adj: int
    value: int
    reason: str
    carpif: str | None = None


@dataclass(frozen=True, slots=True)
class Conflict:
    """A MASTER heard a valid, less preferred advertisement for its own vhid from `peer`: a
    second master (a one-way link failure, or the other side of a healed partition).

    Emitted at most once per own advertisement interval per peer while it lasts (design.md §6,
    the `conflict` event); `advbase`, `advskew` and `demote` are the peer's, `at` is `now`.
    """

    carpif: str
    vhid: int
    peer: str
    advbase: int
    advskew: int
    demote: int
    at: float


@dataclass(frozen=True, slots=True)
class Log:
    """A carp(4) log line at syslog `level`; the core emits it only when `level <= sysctl log`."""

    level: int
    message: str


Action = Transmit | Deliver | StateChanged | CarrierChanged | DemoteChanged | Conflict | Log
