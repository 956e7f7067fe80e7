#!/usr/bin/env python3
"""Fuzz a running node's ports with mutated frames: it must not crash, must account for every
frame, and must still fail over afterwards.

    .venv/bin/python bench/fuzz.py [--frames 1000000] [--offload on off] [--ports ...] [--seed N]
    .venv/bin/python bench/fuzz.py --quick        (20k frames per kernel port, 10k per socket port)

(as root.) One gateway lab (vswitch/lab/gateway.py) with two nodes on the LAN bridge: gwa
(advskew 20, the master) and gwb, the fuzzed node (advskew 60, backup), both `vswitch run` from a
config, carp0 with 192.0.2.1/24 and 2001:db8::1/64, vhid 1, advbase 0. gwb's lan0 switch has a
port of every type: a raw port on its veth "lan", a TAP port "fz" that the node moves into a
namespace of its own ("fz", IPv6 off so its kernel adds no traffic), a stream port "vm", a vde
port "vd" and a vxlan port "vx" (VNI 42, local 203.0.113.1 on an underlay veth to "fz", where
the remote 203.0.113.2 and a stranger 203.0.113.3 live). For each offload mode (a node restart
between them), frames go into each port in turn:

- raw port: from the bridge's end of gwb's veth (an AF_PACKET socket on `lanN` in "seg", so the
  bridge is bypassed), straight into the node's socket;
- TAP port: on the TAP's interface from the "fz" namespace (an AF_PACKET socket on `fz`), which
  the node reads from its TAP file descriptor;
- stream port: over its Unix socket as QEMU connects, each frame after its 4-byte length, with
  framing faults among them: a length over the maximum (the node drops the peer: the next one
  connects), a zero length, a frame of the maximum length, a frame split across writes (each
  piece read by the node before the next is sent), a connection cut in the middle of a frame,
  a second peer while one is connected, a clean hang-up and reconnection;
- vde port: after the vde handshake (request_v3 on DIR/ctl, then datagrams to the socket the
  node answers with), one frame a datagram, from a few clients in turn (each its own port
  vd/N), with empty and over-long datagrams among them; and garbage on ctl between frames (a
  short request, a bad magic, version, type or address, a datagram socket that is not there),
  plus one connection that never sends its request;
- vxlan port: UDP datagrams from the remote with the frames inside, their VXLAN header broken
  now and then (reserved bits set, no I flag, another VNI, too short), and some from the
  stranger.

Frames are valid ARP, CARP (IPv4 and IPv6, valid HMAC), NS and echo frames broken at random
(vswitch/lab/mutate.py: random bytes, truncations, bit flips, byte overwrites, over-long frames
up to 9014 bytes, 802.1Q/802.1ad tags); into the raw and TAP ports a quarter go with a random
virtio-net header. The node never reads a header a peer wrote: the sender's kernel checks each
one (virtio_net_hdr_to_skb: EINVAL refuses the frame, counted here by errno), and what the node
reads is the header that the kernel derives from the packet it built (virtio_net_hdr_from_skb:
GSO type and size, partial checksum offsets). With offload on, the node carries those headers to
its other ports and the kernel checks them again on each write (a refusal is a per-port tx
drop), and the socket ports make them plain (vswitch/segment.py: the vxlan port, always
attached, gets every flood); with offload off, the raw port parses them (vswitch/raw.py
plain_frames: GSO dropped, partial checksums completed, over-long frames dropped; the TAP has no
TSO then, so the client's kernel segments GSO packets first and the TAP may be handed more
frames than were sent). Both veth ends and the TAP's interface get MTU 9000 (the underlay 9216)
so that over-long frames reach the node at all. Frames go out at up to `--rate` per second; the
raw, TAP and vxlan senders back off while the node's port loses frames in the kernel (its
rx_kernel, or the drops of its UDP socket, grow); the stream and vde peers block while the
node's socket is full, which loses nothing.

Checked per port, from counter deltas around the run (taken once the node has caught up), that
what the port was handed is what the node read or knows it lost: for the raw and TAP ports the
kernel's count (veth `lan` rx_packets; the TAP's tx_packets and tx_dropped) = the node's
rx_packets + rx_kernel + rx_error + the sent VLAN frames too short to untag (raw port only:
__netif_receive_skb_core frees those before any packet socket sees them, counting them nowhere;
the bench knows how many it sent). The socket ports have no such kernel count: the bench's own
counts are the reference. Stream: the whole frames sent plus the over-long lengths (each
counted by the node as one oversize frame) = rx_packets + rx_error, with the node's SIOCOUTQ at
zero (all read) before the counters are taken. vde: the datagrams sent = the rx_packets of the
clients' ports, read just before each client leaves. vxlan: the datagrams sent minus those the
sending veth dropped = rx_packets + rx_error + the drops of the node's UDP socket
(/proc/PID/net/udp), its receive queue empty. And the port's `refused` counts by reason =
those the bench's faults must cause (stream: oversize_length, busy, truncated; vde: the ctl
garbage by reason, no_request, oversize; vxlan: short, bad_flags, bad_vni, unknown_remote; with
socket drops, which frames were lost is unknown: then each reason at most what was sent and
the shortfall within the drops). The receive-side drops by reason and `forwarded` (rx_packets
minus those drops, a derived figure: vswitch/accounting.py) are reported, not checked. Then:
the node process is alive, its control socket answers, its log has no traceback from while it
ran (one written when it is stopped with SIGTERM is reported apart), every connection and
client the node had to close was closed, gwa (which got the frames gwb flooded) is alive too,
and after the runs gwb fails over: gwa is killed with SIGKILL and gwb must become MASTER within
its master-down time + 1 s (its event stream, on the same monotonic clock). Prints a table and
writes JSON under bench/results/; the lab is removed at the end, also on errors and Ctrl-C.
"""

import argparse
import contextlib
import os
import random
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from report import host_info, text_table, write_report

from carp.timing import master_down_us, seconds
from vswitch import tomlw
from vswitch.accounting import RX_DROPS, TX_DROPS
from vswitch.config import PORT_TYPES
from vswitch.lab.gateway import LAN_VIP, LAN_VIP6, Gateway, GatewayLab, GatewaySpec, node_config
from vswitch.lab.inject import (
    Injector,
    StreamPeer,
    UdpSender,
    VdePeer,
    ctl_exchange,
    delta,
    link_counters,
    udp_socket,
    untag_discards,
    wait_closed,
)
from vswitch.lab.mutate import VDE_GARBAGE, Mutator, corpus
from vswitch.lab.netns import preflight
from vswitch.lab.nodelog import log_size, log_text, tracebacks
from vswitch.lab.probe import EventWatch
from vswitch.stream import LENGTH
from vswitch.stream import MAX_FRAME as STREAM_MAX_FRAME
from vswitch.vde import MAX_FRAME as VDE_MAX_FRAME
from vswitch.vde import REQUEST_TIMEOUT
from vswitch.vxlan import DEFAULT_PORT as VXLAN_PORT

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
PASSWORD = "secret"
VHID = 1
ADVBASE = 0
SKEW_MASTER, SKEW_FUZZED = 20, 60
JUMBO = 9000
SETTLE = 30.0  # bound for an election, a drain or a restart to happen at all
QUICK_FRAMES = 20_000
QUICK_SOCKET_FRAMES = 10_000
KERNEL_KINDS = ("raw", "tap")
SOCKET_KINDS = ("stream", "vde", "vxlan")
KINDS = KERNEL_KINDS + SOCKET_KINDS
PORT_NAME = {"raw": "lan", "tap": "fz", "stream": "vm", "vde": "vd", "vxlan": "vx"}
VNI = 42
NODE_UL, REMOTE_UL, STRANGER_UL = "203.0.113.1", "203.0.113.2", "203.0.113.3"
UNDERLAY_MTU = 9216  # the largest frame, tagged, in VXLAN over UDP over IPv4: no fragments
UNDERLAY_MACS = (bytes.fromhex("0200cb007101"), bytes.fromhex("0200cb007102"))
STRANGER_SHARE = 0.02
BATCH = 256  # frames between looks at the pace, the node and the events
EVENT_SPACING = 2000  # frames between two framing or control faults (at least 2 of each)
STREAM_EVENTS = (
    "oversize_length",
    "zero_length",
    "max_length",
    "split",
    "cut",
    "second_peer",
    "hang_up",
)
VDE_EVENTS = (*VDE_GARBAGE, "oversize", "empty")  # garbage on ctl; datagrams too long, empty
VDE_CLIENTS = 4  # clients in turn, each its own port vd/N
LEGEND = (
    "handed: frames the port was given (raw: veth rx; TAP: tx + tx_dropped; stream: whole "
    "frames + over-long lengths; vde: datagrams; vxlan: datagrams the sending veth passed); "
    "read: the node's rx_packets; k-drop: its rx_kernel (vxlan: its UDP socket's drops); unseen: "
    "sent VLAN frames too short to untag, freed by the receiving kernel before any packet socket "
    "(raw port only); forwarded: read minus the rx drops; port refused: the node's count by "
    "reason (expected in brackets where it differs); accounted: handed = read + k-drop + rx-err "
    "+ unseen, and the refusals as expected"
)
STOP_CODES: list[int] = []  # gwb's exit status at each SIGTERM (between modes, at the end)
# what the nodes logged, for the report: gwb while running (a failure) and when stopped, gwa
TRACEBACKS: dict[str, list[str]] = {"running": [], "at_stop": [], "master": []}
UNFUZZED = sorted(set(PORT_TYPES) - set(KINDS))


@dataclass
class PortRun:
    offload: bool
    kind: str  # one of KINDS
    sent: int = 0
    refused: dict[str, int] = field(default_factory=dict)  # errno -> frames the sender's kernel
    seconds: float = 0.0
    kernel: dict[str, int] = field(default_factory=dict)  # counter deltas of the node's side
    sender_side: dict[str, int] = field(default_factory=dict)  # of the injecting interface
    handed: int = 0  # frames the port was given (kernel counters; socket ports: the bench's)
    rx_packets: int = 0
    forwarded: int = 0
    drops: dict[str, int] = field(default_factory=dict)
    tx_drops: dict[str, dict[str, int]] = field(default_factory=dict)  # port -> reason -> n
    transitions: int = 0  # state changes of the fuzzed node during the run
    kinds: dict[str, int] = field(default_factory=dict)
    alive: bool = False
    answers: bool = False
    tracebacks: int = 0
    untag_discarded: int = 0  # sent VLAN frames the receiving kernel frees unseen
    rate: int = 0  # frames sent per second, on average
    handed_ok: bool = False  # handed == rx_packets + kernel drops + rx_error + untag_discarded
    settled: bool = False
    # socket ports
    port_refused: dict[str, int] = field(default_factory=dict)  # the node's refused, by reason
    expected_refused: dict[str, int] = field(default_factory=dict)  # what the faults must cause
    refused_ok: bool = True
    socket_drops: int = 0  # vxlan: datagrams the kernel dropped at the node's UDP socket
    path_drops: int = 0  # vxlan: datagrams the sending veth dropped (tx_dropped)
    events: dict[str, int] = field(default_factory=dict)  # framing and control faults made
    received: int = 0  # frames the bench's peers got from the node
    peer_errors: list[str] = field(default_factory=list)  # what the node did not do in time

    @property
    def kernel_drops(self) -> int:
        return self.socket_drops if self.kind in SOCKET_KINDS else self.drops.get("rx_kernel", 0)

    @property
    def ok(self) -> bool:
        clean = self.alive and self.answers and self.tracebacks == 0 and not self.peer_errors
        return clean and self.handed_ok and self.refused_ok


@dataclass
class Failover:
    offload: bool
    master_down: float
    takeover: float | None
    ok: bool


# -- the lab -----------------------------------------------------------------------------------


def carp0(advskew: int) -> dict[str, dict[str, Any]]:
    lan = {"carpdev": "lan0", "addresses": [f"{LAN_VIP}/24", f"{LAN_VIP6}/64"], "vhid": VHID}
    return {"carp0": lan | {"advbase": ADVBASE, "advskew": advskew, "pass": PASSWORD}}


def stream_path(lab: GatewayLab) -> str:
    return os.path.join(lab.dir, "vm.sock")


def vde_dir(lab: GatewayLab) -> str:
    return os.path.join(lab.dir, "vd.vde")


def write_fuzzed_config(lab: GatewayLab, gw: Gateway, fzns: str, offload: bool) -> None:
    """The lab's node file for `gw` plus a port of every other type, offload as asked."""
    data = node_config(gw.spec, gw.index, gw.socket_path, lab.ipv6)
    lan0 = data["switch"]["lan0"]
    lan0["offload"] = offload
    lan0["ports"] += [
        {"name": PORT_NAME["tap"], "type": "tap", "ifname": "fz", "netns": fzns},
        {"name": PORT_NAME["stream"], "type": "stream", "path": stream_path(lab)},
        {"name": PORT_NAME["vde"], "type": "vde", "path": vde_dir(lab)},
        {
            "name": PORT_NAME["vxlan"],
            "type": "vxlan",
            "vni": VNI,
            "local": NODE_UL,
            "remote": [REMOTE_UL],
        },
    ]
    with open(gw.config_path, "w") as f:
        f.write(tomlw.dumps(data))


def underlay(lab: GatewayLab, gw: Gateway, fzns: str) -> None:
    """The vxlan port's underlay: veth ul0 (gwb, 203.0.113.1) to ul1 ("fz", the remote and the
    stranger), neighbours fixed so that no datagram waits for ARP (or is dropped waiting)."""
    node_mac, far_mac = UNDERLAY_MACS
    lab.lab.veth("ul0", "ul1", a_netns=gw.netns, b_netns=fzns, a_mac=node_mac, b_mac=far_mac)
    lab.lab.link(gw.netns, "ul0", mtu=UNDERLAY_MTU)
    lab.lab.link(fzns, "ul1", mtu=UNDERLAY_MTU)
    lab.lab.addr(gw.netns, "ul0", f"{NODE_UL}/24")
    for address in (REMOTE_UL, STRANGER_UL):
        lab.lab.addr(fzns, "ul1", f"{address}/24")
    for ns, dev, address, mac in (
        (fzns, "ul1", NODE_UL, node_mac),
        (gw.netns, "ul0", REMOTE_UL, far_mac),
        (gw.netns, "ul0", STRANGER_UL, far_mac),
    ):
        lladdr = mac.hex(":")
        argv = ["ip", "neigh", "replace", address, "lladdr", lladdr, "dev", dev, "nud", "permanent"]
        lab.lab.run(ns, argv)


def status(lab: GatewayLab, gw: Gateway) -> dict[str, Any]:
    result = lab.request(gw, {"cmd": "status"})
    if not isinstance(result, dict):
        raise RuntimeError(f"{gw.name} does not answer on its control socket")
    return result


def lan0_ports(st: dict[str, Any]) -> dict[str, dict[str, Any]]:
    sw = next(s for s in st["switches"] if s["name"] == "lan0")
    return {p["name"]: p for p in sw["ports"]}


def transitions(st: dict[str, Any]) -> int:
    return sum(n["transitions"] for c in st["carp"] for n in c["carpnodes"])


def wait_steady(lab: GatewayLab, master: Gateway, backup: Gateway) -> None:
    lab.wait_for(
        lambda: lab.state(master) == "MASTER" and lab.state(backup) == "BACKUP", SETTLE, master
    )


def add_counts(run: PortRun, before: dict[str, Any] | None, after: dict[str, Any]) -> None:
    """Add a port's counter deltas to `run` (`before` None: a port that began at zero)."""

    def was(*keys: str) -> int:
        value: Any = before
        for key in keys:
            value = {} if value is None else value.get(key, 0 if key == keys[-1] else {})
        return int(value or 0)

    run.rx_packets += after["rx_packets"] - was("rx_packets")
    run.forwarded += after["forwarded"] - was("forwarded")
    for reason, n in after["drops"].items():
        run.drops[reason] = run.drops.get(reason, 0) + n - was("drops", reason)
    for reason, n in after.get("refused", {}).items():
        grown = n - was("refused", reason)
        if grown:
            run.port_refused[reason] = run.port_refused.get(reason, 0) + grown


# -- the raw and TAP ports ---------------------------------------------------------------------


class Target:
    """Where the frames go in and what the kernel counts for the node's port."""

    def __init__(self, lab: GatewayLab, gw: Gateway, fzns: str, kind: str) -> None:
        self.kind = kind
        self.port = PORT_NAME[kind]
        if kind == "raw":
            self.send_ns, self.send_if = lab.seg, lab.seg_port(gw)
            self.node_ns, self.node_if = gw.netns, "lan"
        else:
            self.send_ns, self.send_if = fzns, "fz"
            self.node_ns, self.node_if = fzns, "fz"

    def handed(self, counters: dict[str, int]) -> int:
        """Frames the kernel handed to the node's port: received by its veth end, or queued
        to (tx_packets, read) or dropped at (tx_dropped) the TAP."""
        if self.kind == "raw":
            return counters["rx_packets"]
        return counters["tx_packets"] + counters["tx_dropped"]

    def kernel_counters(self) -> dict[str, int]:
        return link_counters(self.node_ns, self.node_if)


def node_seen(st: dict[str, Any], port: str) -> int:
    """Frames the node read from `port` or knows it lost before reading them."""
    p = lan0_ports(st)[port]
    return int(p["rx_packets"] + p["drops"]["rx_kernel"] + p["drops"]["rx_error"])


def settled(
    lab: GatewayLab, gw: Gateway, target: Target
) -> tuple[dict[str, int], dict[str, Any], bool]:
    """Kernel counters and the node's status with no frame handed to the port in between, once
    the node has caught up (what the kernel handed and what the node saw differ by the same
    number twice running): (counters, status, settled)."""
    last_gap: int | None = None
    end = time.monotonic() + SETTLE
    while True:
        before = target.kernel_counters()
        st = status(lab, gw)
        after = target.kernel_counters()
        if target.handed(before) == target.handed(after):
            gap = target.handed(after) - node_seen(st, target.port)
            if gap == last_gap:
                return after, st, True
            last_gap = gap
        if time.monotonic() > end:
            return after, st, False
        time.sleep(0.2)


class Pacer:
    """At most `rate` frames per second, backing off while the node's port loses frames in
    the kernel (`lost` grows: the node reads slower than we send) and speeding up again while
    it does not; the aim is frames the node reads, not frames the kernel drops."""

    CHECK = 0.25  # seconds between looks at the node's losses
    FLOOR = 500.0
    SLACK = 0.01  # losses per frame sent that still mean "keeping up"

    def __init__(self, lost: Callable[[], int], rate: float) -> None:
        self.lost = lost
        self.max_rate = rate
        self.rate = rate
        self.rates: list[float] = []
        now = time.monotonic()
        self._due = now
        self._next_check = now + self.CHECK
        self._lost = lost()
        self._sent = 0

    def batch_sent(self, frames: int = BATCH) -> None:
        now = time.monotonic()
        self._sent += frames
        if now >= self._next_check:
            lost = self.lost()
            # a few losses are the kernel refusing a mutated frame (a TAP drops bad GSO
            # metadata), not the node falling behind: back off on more than SLACK only
            if lost - self._lost > self.SLACK * self._sent:
                self.rate = max(self.FLOOR, self.rate * 0.7)
            else:
                self.rate = min(self.max_rate, self.rate * 1.1)
            self._lost = lost
            self._sent = 0
            self.rates.append(self.rate)
            self._next_check = now + self.CHECK
        self._due += frames / self.rate
        delay = self._due - now
        if delay > 0:
            time.sleep(delay)
        elif delay < -0.1:
            self._due = now  # fell behind: no burst to catch up


def time_limit(frames: int) -> float:
    """When a run stops sending whatever it reached: the floor rate, twice over, plus a minute."""
    return time.monotonic() + 2 * frames / Pacer.FLOOR + 60


def run_port(
    lab: GatewayLab,
    gw: Gateway,
    target: Target,
    mutator: Mutator,
    frames: int,
    rate: float,
    offload: bool,
    log_start: int,
) -> PortRun:
    run = PortRun(offload, target.kind)
    assert gw.proc is not None
    k0, st0, _ = settled(lab, gw, target)
    s0 = link_counters(target.send_ns, target.send_if)
    kinds_before = dict(mutator.kinds)
    start = time.monotonic()
    limit = time_limit(frames)

    def lost() -> int:  # a node that does not answer: the crash check below tells
        request = lab.request(gw, {"cmd": "status"})
        if not isinstance(request, dict):
            return 0
        return int(lan0_ports(request)[target.port]["drops"]["rx_kernel"])

    pacer = Pacer(lost, rate)
    with Injector(target.send_ns, target.send_if) as inj:
        made = 0
        while inj.sent < frames and made < 3 * frames and time.monotonic() < limit:
            header, frame = mutator.next()
            if inj.send(header, frame) and target.kind == "raw" and untag_discards(frame):
                run.untag_discarded += 1
            made += 1
            if made % BATCH == 0:
                if gw.proc.poll() is not None:
                    break  # crashed: stop and report
                pacer.batch_sent()
        run.sent, run.refused = inj.sent, dict(inj.refused)
    run.seconds = round(time.monotonic() - start, 2)
    run.rate = round(run.sent / run.seconds) if run.seconds else 0
    run.kinds = {k: v - kinds_before.get(k, 0) for k, v in mutator.kinds.items()}
    run.alive = gw.proc.poll() is None
    run.tracebacks = len(tracebacks(log_text(gw, log_start)))
    if not run.alive:
        return run
    try:
        k1, st1, run.settled = settled(lab, gw, target)
    except RuntimeError:
        return run
    run.answers = True
    run.sender_side = delta(link_counters(target.send_ns, target.send_if), s0)
    run.kernel = delta(k1, k0)
    run.handed = target.handed(run.kernel)
    add_counts(run, lan0_ports(st0)[target.port], lan0_ports(st1)[target.port])
    whole_run(run, st0, st1)
    seen = run.rx_packets + run.drops["rx_kernel"] + run.drops["rx_error"]
    run.handed_ok = run.handed == seen + run.untag_discarded
    return run


def whole_run(run: PortRun, st0: dict[str, Any], st1: dict[str, Any]) -> None:
    """What the run did to the rest of the node: tx drops on every port, carp transitions."""
    p0, p1 = lan0_ports(st0), lan0_ports(st1)
    run.tx_drops = {
        name: nonzero({r: p["drops"][r] - p0[name]["drops"][r] for r in TX_DROPS})
        for name, p in p1.items()
        if name in p0
    }
    run.transitions = transitions(st1) - transitions(st0)


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counts.items() if v}


# -- the socket ports --------------------------------------------------------------------------


class EventPlan:
    """Faults among `total` frames: one every EVENT_SPACING frames but at least two of each
    kind, the kinds in a cycle shuffled anew each round."""

    def __init__(self, rng: random.Random, kinds: tuple[str, ...], total: int) -> None:
        count = max(2 * len(kinds), total // EVENT_SPACING)
        self.every = max(1, total // count)
        self.rng = rng
        self.kinds = kinds
        self._round: list[str] = []
        self._next = self.every

    def due(self, sent: int) -> list[str]:
        """The faults whose turn came once `sent` frames are out."""
        out = []
        while sent >= self._next:
            if not self._round:
                self._round = list(self.kinds)
                self.rng.shuffle(self._round)
            out.append(self._round.pop())
            self._next += self.every
        return out


class SocketRun:
    """One socket port's run: the bench's side of its accounting, and the ways to fail."""

    def __init__(
        self, lab: GatewayLab, gw: Gateway, run: PortRun, mutator: Mutator, frames: int
    ) -> None:
        self.lab = lab
        self.gw = gw
        self.run = run
        self.mutator = mutator
        self.rng = mutator.rng
        self.frames = frames
        self.sent = 0  # mutated frames sent (the faults' frames come on top, in run.handed)
        self.expected: Counter[str] = Counter()
        self.events: Counter[str] = Counter()
        self.limit = time_limit(frames)
        self.started = time.monotonic()
        self.sending = 0.0  # seconds spent sending, once done (not waiting for the node after)

    def sent_all(self) -> None:
        self.sending = time.monotonic() - self.started

    def going(self, until: int) -> bool:
        assert self.gw.proc is not None
        alive = self.gw.proc.poll() is None
        return alive and not self.run.peer_errors and self.sent < until

    def in_time(self) -> bool:
        return time.monotonic() < self.limit

    def deadline(self) -> float:
        return time.monotonic() + SETTLE

    def fail(self, what: str) -> None:
        self.run.peer_errors.append(what)

    def ports(self) -> dict[str, dict[str, Any]]:
        return lan0_ports(status(self.lab, self.gw))


def feed_stream(sr: SocketRun, rate: float) -> None:
    """Length-prefixed frames over the stream port's socket, framing faults among them."""
    run, port = sr.run, PORT_NAME["stream"]
    before = sr.ports()[port]
    pacer = Pacer(lambda: 0, rate)  # the socket blocks while the node is behind: nothing lost
    plan = EventPlan(sr.rng, STREAM_EVENTS, sr.frames)
    peers: list[StreamPeer] = [StreamPeer(stream_path(sr.lab))]
    try:
        while sr.going(sr.frames) and sr.in_time():
            batch = [sr.mutator.frame() for _ in range(min(BATCH, sr.frames - sr.sent))]
            peers[-1].send(StreamPeer.framed(batch))
            sr.sent += len(batch)
            run.handed += len(batch)
            peers[-1].drain()
            pacer.batch_sent(len(batch))
            for kind in plan.due(sr.sent):
                stream_event(sr, kind, peers)
        sr.sent_all()
        if not sr.run.peer_errors and not peers[-1].hang_up(sr.deadline()):
            sr.fail("stream: the node did not close the connection after our EOF")
    finally:
        retire(sr, peers[-1])
    add_counts(run, before, sr.ports()[port])  # our EOF came after every frame: all read


def retire(sr: SocketRun, peer: StreamPeer) -> None:
    """Close a peer, keeping what it got from the node: a frame count and framing errors."""
    sr.run.received += peer.received
    if peer.bad_lengths:
        sr.fail(f"stream: the node's output lost its framing ({peer.bad_lengths} bad lengths)")
    peer.close()


def stream_event(sr: SocketRun, kind: str, peers: list[StreamPeer]) -> None:
    """One framing fault on the current peer (`peers[-1]`); a new peer takes the place of one
    the node closed or we hung up."""
    run, rng, mutator = sr.run, sr.rng, sr.mutator
    peer = peers[-1]
    sr.events[kind] += 1
    deadline = sr.deadline()
    if kind == "zero_length":
        peer.send(LENGTH.pack(0))
        run.handed += 1
    elif kind == "max_length":
        frame = mutator.frame()
        peer.send(StreamPeer.framed([frame + rng.randbytes(STREAM_MAX_FRAME - len(frame))]))
        run.handed += 1
    elif kind == "split":  # in three pieces, each read by the node before the next is sent
        data = StreamPeer.framed([mutator.frame()])
        cuts = sorted(rng.sample(range(1, len(data)), 2))
        for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True):
            peer.send(data[a:b])
            if not peer.caught_up(deadline):
                sr.fail("stream: the node did not read a piece of a split frame")
                return
        run.handed += 1
    elif kind == "second_peer":  # refused at once (busy), whatever it sends
        sr.expected["busy"] += 1
        if not ctl_exchange(stream_path(sr.lab), rng.randbytes(rng.randrange(64)), deadline):
            sr.fail("stream: the node kept a second peer")
    else:
        if kind == "oversize_length":  # the node must drop us
            length = rng.randrange(STREAM_MAX_FRAME + 1, 1 << 32)
            peer.send(LENGTH.pack(length) + rng.randbytes(rng.randrange(64)))
            run.handed += 1  # counted as one oversize frame
            sr.expected["oversize_length"] += 1
            closed = peer.wait_closed(deadline)
        elif kind == "cut":  # part of a frame (maybe of its length), then EOF
            data = StreamPeer.framed([mutator.frame()])
            peer.send(data[: rng.randrange(1, len(data))])
            sr.expected["truncated"] += 1
            closed = peer.hang_up(deadline)
        else:  # hang_up between frames
            closed = peer.hang_up(deadline)
        if not closed:
            sr.fail(f"stream: the node did not close the connection ({kind})")
            return
        peers[-1] = StreamPeer(stream_path(sr.lab))
        retire(sr, peer)


def feed_vde(sr: SocketRun, rate: float) -> None:
    """Datagrams from a few vde clients in turn, garbage on ctl among them, and one connection
    that never sends its request."""
    run, port = sr.run, PORT_NAME["vde"]
    before = sr.ports()[port]
    pacer = Pacer(lambda: 0, rate)  # Unix datagram sockets block too: nothing lost
    plan = EventPlan(sr.rng, VDE_EVENTS, sr.frames)
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        silent.connect(os.path.join(vde_dir(sr.lab), "ctl"))
        sr.expected["no_request"] += 1
        silent_until = time.monotonic() + REQUEST_TIMEOUT + SETTLE
        for number in range(VDE_CLIENTS):
            until = sr.frames * (number + 1) // VDE_CLIENTS
            if not vde_client(sr, f"{run.offload:d}{number}", until, plan, pacer):
                break
        sr.sent_all()
        if not wait_closed(silent, silent_until):
            sr.fail("vde: a ctl connection without a request was never closed")
    finally:
        silent.close()
    after = sr.ports()
    add_counts(run, before, after[port])  # the refusals on ctl
    left = sorted(name for name in after if name.startswith(f"{port}/"))
    if left:
        sr.fail(f"vde: ports left after their clients: {', '.join(left)}")


def vde_client(sr: SocketRun, tag: str, until: int, plan: EventPlan, pacer: Pacer) -> bool:
    """One client: the handshake, datagrams until `until` frames are out in all, its port's
    counters once the node has read them all, and goodbye. False when the run cannot go on."""
    run = sr.run
    ctl = os.path.join(vde_dir(sr.lab), "ctl")
    known = set(sr.ports())
    peer = VdePeer(vde_dir(sr.lab), tag)
    try:
        child = new_port(sr, known)
        if child is None:
            sr.fail("vde: no port appeared for a client after its handshake")
            return False
        while sr.going(until) and sr.in_time():
            for _ in range(min(BATCH, until - sr.sent)):
                peer.send(sr.mutator.frame())
                sr.sent += 1
                run.handed += 1
            peer.drain()
            pacer.batch_sent()
            for kind in plan.due(sr.sent):
                vde_event(sr, kind, peer, ctl)
        if not peer.caught_up(sr.deadline()):
            sr.fail(f"vde: the node did not read all of {child}'s datagrams")
            return False
        add_counts(run, None, sr.ports()[child])  # a new port: from zero
        run.received += peer.received
    finally:
        peer.close()
    deadline = sr.deadline()
    while child in sr.ports():
        if time.monotonic() > deadline:
            sr.fail(f"vde: {child} stayed after its client left")
            return False
        time.sleep(0.05)
    return sr.in_time()


def new_port(sr: SocketRun, known: set[str]) -> str | None:
    """The vde client port that appears beside `known`, within SETTLE."""
    deadline = sr.deadline()
    prefix = f"{PORT_NAME['vde']}/"
    while time.monotonic() < deadline:
        fresh = [name for name in sr.ports() if name.startswith(prefix) and name not in known]
        if fresh:
            return fresh[0]
        time.sleep(0.02)
    return None


def vde_event(sr: SocketRun, kind: str, peer: VdePeer, ctl: str) -> None:
    run, rng = sr.run, sr.rng
    sr.events[kind] += 1
    if kind in VDE_GARBAGE:  # on ctl: refused, the connection closed
        where = os.path.join(vde_dir(sr.lab), ".garbage")
        garbage, reason = sr.mutator.vde_request(where, kind)
        sr.expected[reason] += 1
        if not ctl_exchange(ctl, garbage, sr.deadline()):
            sr.fail(f"vde: a ctl connection with garbage ({reason}) was never closed")
    elif kind == "oversize":  # longer than any frame: dropped, never read cut short
        peer.send(rng.randbytes(rng.randrange(VDE_MAX_FRAME + 1, VDE_MAX_FRAME + 4096)))
        sr.expected["oversize"] += 1
        run.handed += 1
    else:  # an empty datagram: an empty frame (malformed)
        peer.send(b"")
        run.handed += 1


def feed_vxlan(sr: SocketRun, rate: float, fzns: str) -> None:
    """VXLAN datagrams from the remote (headers broken now and then) and from a stranger."""
    run, rng, port = sr.run, sr.rng, PORT_NAME["vxlan"]
    assert sr.gw.proc is not None
    pid = sr.gw.proc.pid

    def node_socket() -> tuple[int, int]:
        found = udp_socket(pid, NODE_UL, VXLAN_PORT)
        if found is None:
            raise RuntimeError(f"no UDP socket at {NODE_UL}:{VXLAN_PORT} in {sr.gw.netns}")
        return found

    _, drops0 = node_socket()
    path0 = link_counters(fzns, "ul1")
    before = sr.ports()[port]
    remote = UdpSender(fzns, REMOTE_UL, (NODE_UL, VXLAN_PORT))
    stranger = UdpSender(fzns, STRANGER_UL, (NODE_UL, VXLAN_PORT))
    pacer = Pacer(lambda: node_socket()[1], rate)
    try:
        while sr.going(sr.frames) and sr.in_time():
            for _ in range(min(BATCH, sr.frames - sr.sent)):
                data, reason = sr.mutator.vxlan(VNI, sr.mutator.frame())
                sender = remote
                if rng.random() < STRANGER_SHARE:
                    sender, reason = stranger, "unknown_remote"
                if sender.send(data) and reason:
                    sr.expected[reason] += 1
                sr.sent += 1
            pacer.batch_sent()
        sr.sent_all()
    finally:
        remote.close()
        stranger.close()
    run.refused = dict(remote.refused + stranger.refused)
    deadline = sr.deadline()
    while node_socket()[0]:  # bytes wait in its receive queue
        if time.monotonic() > deadline:
            sr.fail("vxlan: the node did not read what waited in its socket")
            break
        time.sleep(0.02)
    add_counts(run, before, sr.ports()[port])
    run.socket_drops = node_socket()[1] - drops0
    run.path_drops = link_counters(fzns, "ul1")["tx_dropped"] - path0["tx_dropped"]
    run.handed = remote.sent + stranger.sent - run.path_drops
    sr.sent = remote.sent + stranger.sent


WRITE_REFUSALS = ("unsegmentable",)  # a socket port's refusals on the way out (tx_error)


def refusals_match(run: PortRun) -> bool:
    """The port's receive-side refusals are those the faults must cause; with socket drops
    (not knowing which datagrams were lost) each at most that, the shortfall within them."""
    got = {r: n for r, n in run.port_refused.items() if r not in WRITE_REFUSALS}
    want = nonzero(run.expected_refused)
    if not run.socket_drops:
        return got == want
    short = sum(want.values()) - sum(got.values())
    within = all(n <= want.get(r, 0) for r, n in got.items())
    return within and 0 <= short <= run.socket_drops


def run_socket_port(
    lab: GatewayLab,
    gw: Gateway,
    kind: str,
    mutator: Mutator,
    frames: int,
    rate: float,
    offload: bool,
    log_start: int,
    fzns: str,
) -> PortRun:
    run = PortRun(offload, kind)
    assert gw.proc is not None
    st0 = status(lab, gw)
    kinds_before = dict(mutator.kinds)
    sr = SocketRun(lab, gw, run, mutator, frames)
    try:
        if kind == "stream":
            feed_stream(sr, rate)
        elif kind == "vde":
            feed_vde(sr, rate)
        else:
            feed_vxlan(sr, rate, fzns)
    except (OSError, RuntimeError) as exc:  # a peer the node would not take, a node gone
        sr.fail(f"{kind}: {type(exc).__name__}: {exc}")
    run.sent = sr.sent
    run.seconds = round(sr.sending or time.monotonic() - sr.started, 2)
    run.rate = round(run.sent / run.seconds) if run.seconds else 0
    run.kinds = nonzero({k: v - kinds_before.get(k, 0) for k, v in mutator.kinds.items()})
    run.events = dict(sr.events)
    run.expected_refused = dict(sr.expected)
    run.alive = gw.proc.poll() is None
    run.tracebacks = len(tracebacks(log_text(gw, log_start)))
    if not run.alive:
        return run
    try:
        st1 = status(lab, gw)
    except RuntimeError:
        return run
    run.answers = True
    run.settled = not run.peer_errors
    whole_run(run, st0, st1)
    seen = run.rx_packets + run.socket_drops + run.drops.get("rx_error", 0)
    run.handed_ok = run.handed == seen
    run.refused_ok = refusals_match(run)
    return run


# -- failover afterwards -----------------------------------------------------------------------


def failover(lab: GatewayLab, master: Gateway, fuzzed: Gateway, offload: bool) -> Failover:
    """Kill the master; the fuzzed node must take over within its master-down + 1 s."""
    down = seconds(master_down_us(ADVBASE, SKEW_FUZZED))
    wait_steady(lab, master, fuzzed)
    with EventWatch(fuzzed.socket_path) as watch:
        mono = time.monotonic()
        lab.kill(master)
        event = watch.became("carp0", "MASTER", down + SETTLE)
    takeover = None if event is None else round(event.monotonic - mono, 4)
    lab.start(master)
    wait_steady(lab, master, fuzzed)
    return Failover(
        offload, round(down, 4), takeover, takeover is not None and takeover <= down + 1
    )


# -- the whole run -----------------------------------------------------------------------------


@dataclass
class Plan:
    kinds: list[str]
    frames: int  # per raw and TAP port
    socket_frames: int  # per socket port
    rate: float


def fuzz_mode(
    lab: GatewayLab, fzns: str, offload: bool, mutator: Mutator, plan: Plan
) -> tuple[list[PortRun], Failover | None]:
    master, fuzzed = lab.gateways
    write_fuzzed_config(lab, fuzzed, fzns, offload)
    log_start = log_size(fuzzed)
    lab.start(fuzzed)
    runs: list[PortRun] = []
    try:
        lab.lab.link(fzns, "fz", mtu=JUMBO)  # the node created it; over-long frames may pass
        wait_steady(lab, master, fuzzed)
        for kind in plan.kinds:
            print(f"  offload {'on' if offload else 'off'}, {kind} port ...", file=sys.stderr)
            if kind in KERNEL_KINDS:
                target = Target(lab, fuzzed, fzns, kind)
                run = run_port(
                    lab, fuzzed, target, mutator, plan.frames, plan.rate, offload, log_start
                )
            else:
                run = run_socket_port(
                    lab,
                    fuzzed,
                    kind,
                    mutator,
                    plan.socket_frames,
                    plan.rate,
                    offload,
                    log_start,
                    fzns,
                )
            runs.append(run)
            print(f"    {summary_line(run)}", file=sys.stderr, flush=True)
            if not (run.alive and run.answers):
                return runs, None
        return runs, failover(lab, master, fuzzed, offload)
    finally:
        keep_tracebacks(fuzzed, log_start, "running")
        stop_mark = log_size(fuzzed)
        if fuzzed.proc is not None:
            STOP_CODES.append(lab.stop(fuzzed))
        keep_tracebacks(fuzzed, stop_mark, "at_stop")


def keep_tracebacks(gw: Gateway, offset: int, when: str) -> None:
    for text in tracebacks(log_text(gw, offset)):
        TRACEBACKS[when].append(text)
        print(f"  {gw.name} logged ({when.replace('_', ' ')}):\n{text}", file=sys.stderr)


def refusals(run: PortRun) -> str:
    """The node's refusals by reason, the expected count in brackets where it differs."""
    reasons = sorted(set(run.port_refused) | set(nonzero(run.expected_refused)))
    parts = []
    for r in reasons:
        got, want = run.port_refused.get(r, 0), run.expected_refused.get(r, 0)
        write_side = r in WRITE_REFUSALS and not want
        parts.append(f"{r} {got}" if got == want or write_side else f"{r} {got} [{want}]")
    return ", ".join(parts) or "-"


def summary_line(run: PortRun) -> str:
    refused = sum(run.refused.values())
    line = (
        f"sent {run.sent} at {run.rate}/s (refused {refused}), handed {run.handed}, "
        f"read {run.rx_packets}, unseen {run.untag_discarded}, kernel drops {run.kernel_drops}, "
        f"rx errors {run.drops.get('rx_error', 0)}, forwarded {run.forwarded}"
    )
    if run.kind in SOCKET_KINDS:
        line += f", port refused: {refusals(run)}"
    for error in run.peer_errors:
        line += f"\n    {error}"
    return f"{line}, {'ok' if run.ok else 'FAILED'}"


def table(runs: list[PortRun], failovers: list[Failover]) -> str:
    head = [
        "offload",
        "port",
        "sent",
        "rate/s",
        "refused",
        "handed",
        "read",
        "k-drop",
        "rx-err",
        "unseen",
        "forwarded",
        "rx drops by reason",
        "port refused",
        "alive",
        "accounted",
    ]
    rows: list[list[str]] = []
    for r in runs:
        reasons = ", ".join(
            f"{k} {v}" for k, v in nonzero({x: r.drops.get(x, 0) for x in RX_DROPS}).items()
        )
        rows.append(
            [
                "on" if r.offload else "off",
                r.kind,
                str(r.sent),
                str(r.rate),
                str(sum(r.refused.values())),
                str(r.handed),
                str(r.rx_packets),
                str(r.kernel_drops),
                str(r.drops.get("rx_error", 0)),
                str(r.untag_discarded),
                str(r.forwarded),
                reasons or "-",
                refusals(r) if r.kind in SOCKET_KINDS else "",
                "yes" if r.alive and r.answers and not r.tracebacks else "NO",
                "yes" if r.handed_ok and r.refused_ok else "NO",
            ]
        )
    out = [text_table(head, rows), LEGEND, ""]
    for r in runs:
        for error in r.peer_errors:
            out.append(f"offload {'on' if r.offload else 'off'}, {r.kind}: {error}")
    for f in failovers:
        took = "none" if f.takeover is None else f"{f.takeover:.3f} s"
        out.append(
            f"failover after offload {'on' if f.offload else 'off'}: takeover {took} "
            f"(bound: master-down {f.master_down:.3f} s + 1 s) {'ok' if f.ok else 'FAILED'}"
        )
    if TRACEBACKS["at_stop"]:
        out.append(
            f"gwb logged {len(TRACEBACKS['at_stop'])} traceback(s) when stopped with SIGTERM "
            "after the runs (a shutdown bug, not a fuzz failure; in the JSON)"
        )
    if any(STOP_CODES):
        out.append(f"gwb exit codes on SIGTERM: {STOP_CODES}")
    if UNFUZZED:
        out.append(f"port types not fuzzed by this bench: {', '.join(UNFUZZED)}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1_000_000, help="frames sent per port")
    parser.add_argument(
        "--rate", type=float, default=50_000, help="frames per second at most (backs off)"
    )
    parser.add_argument("--offload", nargs="+", choices=("on", "off"), default=["on", "off"])
    parser.add_argument(
        "--ports", nargs="+", choices=KINDS, default=list(KINDS), help="port types to fuzz"
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the mutations")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_FRAMES} frames per raw and TAP port, {QUICK_SOCKET_FRAMES} per socket port",
    )
    parser.add_argument("--out", default=RESULTS, help="directory for the JSON result")
    args = parser.parse_args(argv)
    reason = preflight("fuzz.py", ("ip", "ping"))
    if reason is not None:
        print(reason, file=sys.stderr)
        return 2
    if not 1 <= args.frames <= 100_000_000:
        parser.error("--frames must be 1..100000000")
    if not 100 <= args.rate <= 10_000_000:
        parser.error("--rate must be 100..10000000")
    plan = Plan(
        list(dict.fromkeys(args.ports)),
        QUICK_FRAMES if args.quick else args.frames,
        QUICK_SOCKET_FRAMES if args.quick else args.frames,
        args.rate,
    )
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    load_before = os.getloadavg()
    started = time.monotonic()
    runs: list[PortRun] = []
    failovers: list[Failover] = []
    specs = [GatewaySpec("gwa", carp0(SKEW_MASTER)), GatewaySpec("gwb", carp0(SKEW_FUZZED))]
    with GatewayLab(specs, clients=1, upstream=False, ipv6=True) as lab:
        master, fuzzed = lab.gateways
        fzns = lab.lab.netns("fz")
        for key in ("all", "default"):  # the TAP arrives later: its kernel adds no IPv6 traffic
            lab.lab.sysctl(fzns, f"net.ipv6.conf.{key}.disable_ipv6", 1)
        # over-long frames reach gwb's socket; the bridge forgets junk source MACs soon
        lab.lab.link(lab.seg, lab.seg_port(fuzzed), mtu=JUMBO)
        lab.lab.link(fuzzed.netns, "lan", mtu=JUMBO)
        lab.lab.run(
            lab.seg, ["ip", "link", "set", "br-lan", "type", "bridge", "ageing_time", "1000"]
        )
        underlay(lab, fuzzed, fzns)
        seeds = corpus(
            vip=IPv4Address(LAN_VIP),
            vip6=IPv6Address(LAN_VIP6),
            vhid=VHID,
            passphrase=PASSWORD,
            peer=IPv4Address("192.0.2.50"),
            peer6=IPv6Address("2001:db8::50"),
            peer_mac=bytes.fromhex("020000000050"),
            advbase=ADVBASE,
            advskew=(SKEW_MASTER + SKEW_FUZZED) // 2,  # unbroken, it moves neither node
        )
        mutator = Mutator(random.Random(seed), seeds)
        lab.start(master)
        for mode in dict.fromkeys(args.offload):
            mode_runs, fail = fuzz_mode(lab, fzns, mode == "on", mutator, plan)
            runs += mode_runs
            if fail is not None:
                failovers.append(fail)
            if not all(r.ok for r in mode_runs) or fail is None:
                break
        master_alive = master.proc is not None and master.proc.poll() is None
        keep_tracebacks(master, 0, "master")  # it got the frames gwb flooded
    print(
        f"Fuzzing gwb's ports, {plan.frames} frames per raw and TAP port, "
        f"{plan.socket_frames} per socket port, seed {seed}"
    )
    print(table(runs, failovers))
    ok = (
        bool(runs)
        and all(r.ok for r in runs)
        and len(failovers) == len(dict.fromkeys(args.offload))
    )
    ok = ok and all(f.ok for f in failovers) and master_alive and not TRACEBACKS["master"]
    ok = ok and all(code == 0 for code in STOP_CODES)
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": host_info(load_before),
        "seed": seed,
        "frames_per_port": plan.frames,
        "frames_per_socket_port": plan.socket_frames,
        "ports": plan.kinds,
        "rate": args.rate,
        "seconds": round(time.monotonic() - started, 1),
        "seeds": {s.name: len(s.frame) for s in seeds},
        "runs": [r.__dict__ for r in runs],
        "failovers": [f.__dict__ for f in failovers],
        "master_alive_at_end": master_alive,
        "node_tracebacks": TRACEBACKS,
        "stop_exit_codes": STOP_CODES,
        "unfuzzed_port_types": UNFUZZED,
        "ok": ok,
    }
    write_report(args.out, "fuzz", report)
    print("all checks passed" if ok else "CHECKS FAILED (see above)")
    return 0 if ok else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
