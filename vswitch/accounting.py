"""Frame accounting of the data plane: per port counts with drops by reason, per switch snapshots.

Every frame read from a port is either dropped, counted once under one reason of RX_DROPS where
it is dropped (the forwarding core: malformed, filtered, same_port, no_dest; the device, before
the switch sees it: malformed, oversize, gso), or switched on (queued to at least one port,
claimed by the node's special hook, or answered by a hook). Frames lost before they could be
read (LOST_DROPS: the kernel's drops, failed reads) and copies for a port that were not written
(TX_DROPS) are counted by reason beside them. A switched frame costs no counting beyond the
per-batch rx_packets/rx_bytes.

`forwarded` is rx_packets minus the RX_DROPS: a convenience figure for status and metrics.
Being derived, `rx_packets == forwarded + sum(RX_DROPS)` holds by construction and proves
nothing. What can be checked, because each side is counted on its own:

- against the kernel: what the kernel handed to the port's interface (a veth's rx_packets, a
  TAP's tx_packets + tx_dropped), once the node has caught up, is rx_packets + rx_kernel +
  rx_error (bench/fuzz.py; `kernel_packets` is the node's reading of that kernel count);
- against the peers: the distinct frames that arrive at the other ports' peers or are taken by
  the node's hooks, by the port they came in on, are that port's `forwarded` ones; every copy
  queued for a port is written (tx_packets, what its peer reads) or counted under a TX_DROPS
  reason;
- per reason: each drop is counted where it happens, so the frames a sender knows to be
  malformed, filtered or without a destination show up under exactly that reason
  (tests/vswitch/test_dataplane.py).
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import NotRequired, TypedDict

from vswitch.fwd import Port, PortCounters, Switch
from vswitch.port import DeviceCounters, DevicePort
from vswitch.sockport import SocketPort
from vswitch.status import PortStatus, SwitchStatus

# drop reasons: stable names (status keys, the `reason` label of metrics)
LOST_DROPS = ("rx_kernel", "rx_error")  # never read: the kernel's drops, failed reads
RX_DROPS = ("malformed", "oversize", "gso", "filtered", "same_port", "no_dest")  # read, dropped
TX_DROPS = ("tx_full", "no_link", "tx_error")  # copies for the port, not written
DROP_REASONS = LOST_DROPS + RX_DROPS + TX_DROPS


class Counts(TypedDict):
    """Frame accounting of a port, or summed over a switch's ports."""

    rx_packets: int  # frames read
    rx_bytes: int  # their Ethernet bytes (virtio-net headers not included)
    forwarded: int  # rx_packets minus the RX_DROPS (derived: see the module docstring)
    tx_packets: int  # frames written
    tx_bytes: int
    kernel_packets: int  # frames the kernel offered the port: read, waiting, or rx_kernel
    drops: dict[str, int]  # every reason of DROP_REASONS, in that order


class PortCounts(Counts):
    type: str  # the role given when attached ("host", "carp"), else the device's kind
    kernel: bool  # one of the node's own kernel interfaces
    link: bool
    refused: NotRequired[dict[str, int]]  # socket ports: peers, requests, datagrams refused


class SwitchCounts(TypedDict):
    mode: str  # "learning" | "hub" | "learning-arp"
    offload: bool
    macs: int  # learned MAC entries
    table_full: int  # sources not learned, table full (the frames were still switched)
    bad_emits: int  # hook output naming an unknown port
    ports: dict[str, PortCounts]
    total: Counts  # the sum over `ports`


@dataclass(slots=True)
class Share:
    """What the forwarding workers counted of one switch (vswitch/workers.py), summed."""

    ports: dict[str, tuple[PortCounters, DeviceCounters]]
    macs: frozenset[bytes]
    table_full: int
    bad_emits: int


def add_port_counters(a: PortCounters, b: PortCounters) -> PortCounters:
    return PortCounters(*(getattr(a, f.name) + getattr(b, f.name) for f in fields(PortCounters)))


def add_device_counters(a: DeviceCounters, b: DeviceCounters) -> DeviceCounters:
    out = DeviceCounters(
        *(getattr(a, f.name) + getattr(b, f.name) for f in fields(DeviceCounters)[:-1])
    )
    for d in (a.tx_errors, b.tx_errors):
        for code, n in d.items():
            out.tx_errors[code] = out.tx_errors.get(code, 0) + n
    return out


def port_counts(
    fport: Port,
    dev: DevicePort,
    role: str | None,
    extra: tuple[PortCounters, DeviceCounters] | None = None,
) -> PortCounts:
    """One port's accounting from its forwarding and device counters (dev polled already),
    plus what the workers counted of it (`extra`)."""
    c = fport.counters
    d = dev.dev
    if extra is not None:
        c = add_port_counters(c, extra[0])
        d = add_device_counters(d, extra[1])
    tx = d.tx_drops()
    drops = {
        "rx_kernel": d.rx_kernel,
        "rx_error": d.rx_errors,
        "malformed": c.rx_malformed + d.rx_malformed,
        "oversize": d.rx_oversize,
        "gso": d.rx_gso_dropped,
        "filtered": c.rx_filtered,
        "same_port": c.rx_same_port,
        "no_dest": c.rx_no_dest,
        "tx_full": tx["tx_full"],
        "no_link": tx["no_link"] + c.tx_no_link,
        "tx_error": tx["tx_error"],
    }
    # frames the device dropped before the switch saw them were read all the same
    rx_packets = c.rx_packets + d.rx_malformed + d.rx_oversize + d.rx_gso_dropped
    counts: PortCounts = {
        "type": role or dev.kind,
        "kernel": fport.kernel,
        "link": dev.link_up,
        "rx_packets": rx_packets,
        "rx_bytes": c.rx_bytes + d.rx_dropped_bytes,
        "forwarded": rx_packets - sum(drops[r] for r in RX_DROPS),
        "tx_packets": c.tx_packets,
        "tx_bytes": c.tx_bytes,
        "kernel_packets": d.kernel_packets,
        "drops": drops,
    }
    if isinstance(dev, SocketPort):
        counts["refused"] = dict(dev.refused)
    return counts


def total_counts(ports: Sequence[Counts]) -> Counts:
    return {
        "rx_packets": sum(p["rx_packets"] for p in ports),
        "rx_bytes": sum(p["rx_bytes"] for p in ports),
        "forwarded": sum(p["forwarded"] for p in ports),
        "tx_packets": sum(p["tx_packets"] for p in ports),
        "tx_bytes": sum(p["tx_bytes"] for p in ports),
        "kernel_packets": sum(p["kernel_packets"] for p in ports),
        "drops": {r: sum(p["drops"][r] for p in ports) for r in DROP_REASONS},
    }


def switch_counts(
    fwd: Switch,
    offload: bool,
    devices: Mapping[str, DevicePort],
    roles: Mapping[str, str],
    share: Share | None = None,
    now: float = 0.0,
) -> SwitchCounts:
    """A switch's accounting: its ports' (devices polled already) and their sum, with the
    workers' `share` (then `macs` counts each MAC learned anywhere once)."""
    extra = share.ports if share is not None else {}
    ports = {
        name: port_counts(fwd.ports[name], dev, roles.get(name), extra.get(name))
        for name, dev in devices.items()
    }
    macs = fwd.table_size
    if share is not None:
        macs = len(share.macs | {mac for mac, _, _ in fwd.entries(now)})
    return {
        "mode": fwd.mode,
        "offload": offload,
        "macs": macs,
        "table_full": fwd.table_full + (share.table_full if share else 0),
        "bad_emits": fwd.bad_emits + (share.bad_emits if share else 0),
        "ports": ports,
        "total": total_counts(list(ports.values())),
    }


def switch_status(name: str, sw: SwitchCounts) -> SwitchStatus:
    """A switch's part of the status snapshot (vswitch/status.py): rx_drops and tx_drops are
    the sums of every receive-side and send-side reason."""
    ports: list[PortStatus] = []
    for pname, p in sw["ports"].items():
        drops = p["drops"]
        port: PortStatus = {
            "name": pname,
            "type": p["type"],
            "link": p["link"],
            "rx_packets": p["rx_packets"],
            "rx_bytes": p["rx_bytes"],
            "rx_drops": sum(drops[r] for r in LOST_DROPS + RX_DROPS),
            "tx_packets": p["tx_packets"],
            "tx_bytes": p["tx_bytes"],
            "tx_drops": sum(drops[r] for r in TX_DROPS),
            "forwarded": p["forwarded"],
            "drops": dict(drops),
        }
        if "refused" in p:
            port["refused"] = p["refused"]
        ports.append(port)
    return {
        "name": name,
        "mode": sw["mode"],
        "mac_table": sw["macs"],
        "ports": ports,
        "table_full": sw["table_full"],
    }
