"""A fake segment for carp tests: N CarpHost instances on a virtual clock.

Each node's carpdevs are attached to named segments. Advertisements (ADVERT / BOWOUT frames)
travel to every other live node on the same segment, with per-link delay and loss (a seeded
random, so runs are deterministic) and partitions; every action a host returns is recorded
with its virtual time. Nothing sleeps: `run_until` jumps from event to event.
"""

import heapq
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv6Address,
    IPv6Interface,
    ip_address,
    ip_interface,
)

from carp.actions import Action, StateChanged, Transmit, TxKind
from carp.auth import HmacContexts, carp_key
from carp.checksum import inet_checksum
from carp.constants import Balancing, State
from carp.host import CarpHost
from carp.params import CarpDev, CarpIfParams, CarpNodeParams, Sysctls
from carp.wire import CarpHeader, build_ipv4, build_ipv6

ETH_HEADER = 14
MAX_EVENTS = 200_000  # a bound on every run, so a livelock fails instead of hanging


def carpnodes(spec: str) -> tuple[CarpNodeParams, ...]:
    """ "1:0,2:100" -> carpnodes, as ifconfig's carpnodes option."""
    nodes = []
    for item in spec.split(","):
        vhid, _, skew = item.partition(":")
        nodes.append(CarpNodeParams(int(vhid), int(skew or 0)))
    return tuple(sorted(nodes, key=lambda n: n.vhid))


def ifparams(
    name: str = "carp0",
    carpdev: str = "lan0",
    addresses: Sequence[str] = ("192.0.2.10/24",),
    nodes: str = "1:0",
    **kw: object,
) -> CarpIfParams:
    addrs: tuple[IPv4Interface | IPv6Interface, ...] = tuple(ip_interface(a) for a in addresses)
    return CarpIfParams(name, carpdev, addrs, carpnodes(nodes), **kw)  # type: ignore[arg-type]


def carpdev(name: str, index: int, v4: str | None = None, v6: str | None = None) -> CarpDev:
    """A carpdev with MAC 02:00:00:00:<node index>:<segment hash>."""
    mac = bytes((2, 0, 0, 0, index & 0xFF, sum(name.encode()) & 0xFF))
    return CarpDev(name, mac, IPv4Address(v4) if v4 else None, IPv6Address(v6) if v6 else None)


@dataclass(order=True)
class _Delivery:
    at: float
    seq: int
    src: str = field(compare=False)
    node: str = field(compare=False)
    carpdev: str = field(compare=False)
    packet: bytes = field(compare=False)


@dataclass(frozen=True)
class Record:
    at: float
    node: str
    action: Action


@dataclass
class Node:
    name: str
    sysctls: Sysctls
    carpifs: tuple[CarpIfParams, ...]
    carpdevs: dict[str, CarpDev]
    host: CarpHost
    alive: bool = True
    send_error: Callable[[Transmit], int | None] = lambda _tx: None


class Sim:
    def __init__(self, seed: int = 0) -> None:
        self.now = 0.0
        self.rng = random.Random(seed)
        self.nodes: dict[str, Node] = {}
        self.segments: dict[str, list[tuple[str, str]]] = {}
        self.delay: dict[tuple[str, str], float] = {}
        self.loss: dict[tuple[str, str], float] = {}
        self.partitions: list[frozenset[str]] = []
        # drop(src node, dst node, frame) -> True to lose it (e.g. only one address family)
        self.drop: Callable[[str, str, Transmit], bool] = lambda _s, _d, _tx: False
        self.records: list[Record] = []
        self._queue: list[_Delivery] = []
        self._seq = 0

    # -- building

    def add(
        self,
        name: str,
        carpifs: Iterable[CarpIfParams],
        carpdevs: Iterable[CarpDev],
        sysctls: Sysctls | None = None,
    ) -> CarpHost:
        devs = {d.name: d for d in carpdevs}
        params = tuple(carpifs)
        ctl = sysctls or Sysctls()
        node = Node(name, ctl, params, devs, self._new_host(ctl, params, devs))
        self.nodes[name] = node
        return node.host

    def _new_host(
        self, sysctls: Sysctls, carpifs: tuple[CarpIfParams, ...], devs: dict[str, CarpDev]
    ) -> CarpHost:
        return CarpHost(sysctls, carpifs, devs, lambda: self.rng.randbytes(8))

    def connect(self, segment: str, node: str, carpdev: str) -> None:
        self.segments.setdefault(segment, []).append((node, carpdev))

    def host(self, node: str) -> CarpHost:
        return self.nodes[node].host

    # -- faults

    def set_delay(self, a: str, b: str, seconds: float) -> None:
        self.delay[(a, b)] = self.delay[(b, a)] = seconds

    def set_loss(self, src: str, dst: str, probability: float) -> None:
        self.loss[(src, dst)] = probability

    def partition(self, *groups: Iterable[str]) -> None:
        self.partitions = [frozenset(g) for g in groups]

    def heal(self) -> None:
        self.partitions = []

    def _reachable(self, a: str, b: str) -> bool:
        if not self.partitions:
            return True
        return any(a in g and b in g for g in self.partitions)

    def kill(self, node: str) -> None:
        """The node stops dead: no bow-out, its timers and frames vanish."""
        self.nodes[node].alive = False

    def reboot(self, node: str) -> None:
        """A fresh CarpHost with the same configuration, started now."""
        n = self.nodes[node]
        n.host = self._new_host(n.sysctls, n.carpifs, n.carpdevs)
        n.alive = True
        self.act(node, lambda h, now: h.start(now))

    # -- running

    def act(self, node: str, call: Callable[[CarpHost, float], list[Action]]) -> list[Action]:
        """Run an entry point of `node` now, carry out what it returns, deliver what is due."""
        actions = call(self.nodes[node].host, self.now)
        self._carry_out(node, actions)
        self.run_until(self.now)
        return actions

    def start(self, *nodes: str) -> None:
        for name in nodes or tuple(self.nodes):
            self.act(name, lambda h, now: h.start(now))

    def _carry_out(self, node: str, actions: list[Action]) -> None:
        n = self.nodes[node]
        for action in actions:
            self.records.append(Record(self.now, node, action))
            if not isinstance(action, Transmit) or action.kind not in (
                TxKind.ADVERT,
                TxKind.BOWOUT,
            ):
                continue
            error = n.send_error(action)
            if error is None:
                self._send(node, action)
            more = n.host.transmit_result(self.now, action, error)
            self._carry_out(node, more)

    def _segment_of(self, node: str, carpdev: str) -> str | None:
        for seg, members in self.segments.items():
            if (node, carpdev) in members:
                return seg
        return None

    def _send(self, node: str, tx: Transmit) -> None:
        seg = self._segment_of(node, tx.carpdev)
        if seg is None:
            return
        packet = tx.frame[ETH_HEADER:]
        for other, dev in self.segments[seg]:
            if other == node:
                continue
            if tx.next_hop is not None and self.nodes[other].carpdevs[dev].ipv4 != tx.next_hop:
                continue
            if self.rng.random() < self.loss.get((node, other), 0.0) or self.drop(node, other, tx):
                continue
            at = self.now + self.delay.get((node, other), 0.0)
            self._seq += 1
            heapq.heappush(self._queue, _Delivery(at, self._seq, node, other, dev, packet))

    def _next_timer(self) -> tuple[float, str] | None:
        best: tuple[float, str] | None = None
        for name, n in self.nodes.items():
            if not n.alive:
                continue
            t = n.host.get_timer()
            if t is not None and (best is None or t < best[0]):
                best = (t, name)
        return best

    def run_until(self, until: float) -> None:
        for _ in range(MAX_EVENTS):
            timer = self._next_timer()
            delivery = self._queue[0] if self._queue else None
            if (
                delivery is not None
                and delivery.at <= until
                and (timer is None or delivery.at <= timer[0])
            ):
                heapq.heappop(self._queue)
                self.now = max(self.now, delivery.at)
                n = self.nodes[delivery.node]
                if n.alive and self._reachable(delivery.src, delivery.node):
                    actions = n.host.receive(self.now, delivery.carpdev, delivery.packet)
                    self._carry_out(delivery.node, actions)
                continue
            if timer is not None and timer[0] <= until:
                self.now = max(self.now, timer[0])
                self._carry_out(timer[1], self.nodes[timer[1]].host.handle_timer(self.now))
                continue
            self.now = max(self.now, until)
            return
        raise RuntimeError(f"more than {MAX_EVENTS} events before t={until}")

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    # -- observing

    def state(self, node: str, carpif: str = "carp0", vhid: int | None = None) -> State:
        sc = self.nodes[node].host.carpifs[carpif]
        vhe = sc.leader if vhid is None else sc.vhe(vhid)
        assert vhe is not None
        return vhe.state

    def masters(self, carpif: str = "carp0", vhid: int | None = None) -> list[str]:
        return [
            name
            for name, n in self.nodes.items()
            if n.alive
            and carpif in n.host.carpifs
            and self.state(name, carpif, vhid) is State.MASTER
        ]

    def changes(
        self, node: str | None = None, new: State | None = None, after: float = -1.0
    ) -> list[tuple[float, str, StateChanged]]:
        return [
            (r.at, r.node, r.action)
            for r in self.records
            if isinstance(r.action, StateChanged)
            and (node is None or r.node == node)
            and (new is None or r.action.new is new)
            and r.at > after
        ]

    def transmits(
        self, kind: TxKind, node: str | None = None, after: float = -1.0
    ) -> list[tuple[float, str, Transmit]]:
        return [
            (r.at, r.node, r.action)
            for r in self.records
            if isinstance(r.action, Transmit)
            and r.action.kind is kind
            and (node is None or r.node == node)
            and r.at > after
        ]


def pair(
    skew_a: int = 0,
    skew_b: int = 100,
    preempt: bool = False,
    advbase: int = 1,
    addresses: Sequence[str] = ("192.0.2.10/24",),
    balancing: Balancing = Balancing.NONE,
    nodes_a: str | None = None,
    nodes_b: str | None = None,
    seed: int = 0,
) -> Sim:
    """Two nodes "a" and "b" with carp0 on lan0, joined by segment "seg0"."""
    sim = Sim(seed)
    ctl = Sysctls(preempt=preempt, log=7)
    for index, (name, skew, spec) in enumerate((("a", skew_a, nodes_a), ("b", skew_b, nodes_b))):
        params = ifparams(
            addresses=addresses,
            nodes=spec or f"1:{skew}",
            advbase=advbase,
            passphrase=b"secret",
            balancing=balancing,
        )
        dev = carpdev("lan0", index + 1, f"192.0.2.{index + 1}", f"fe80::{index + 1}")
        sim.add(name, [params], [dev], ctl)
        sim.connect("seg0", name, "lan0")
    return sim


def advert(
    vhid: int = 1,
    advskew: int = 0,
    advbase: int = 1,
    demote: int = 0,
    counter: bytes = b"\x5a" * 8,
    passphrase: bytes = b"secret",
    v4: Sequence[str] = ("192.0.2.10",),
    v6: Sequence[str] = (),
    src: str = "192.0.2.99",
    dst: str = "224.0.0.18",
    ttl: int = 255,
    version: int = 2,
) -> bytes:
    """A peer's advertisement as an IP packet (IPv6 when `src` is an IPv6 address)."""
    ctx = HmacContexts(
        carp_key(passphrase),
        vhid,
        [IPv4Address(a) for a in v4],
        [IPv6Address(a) for a in v6],
    )
    header = CarpHeader(
        vhid, advskew, advbase, demote, counter, ctx.generate(counter), version=version
    ).pack()
    source = ip_address(src)
    if isinstance(source, IPv6Address):
        packet = bytearray(build_ipv6(source, header))
        packet[7] = ttl
    else:
        packet = bytearray(build_ipv4(source, IPv4Address(dst), header, 1))
        packet[8] = ttl
        packet[10:12] = b"\0\0"  # the header checksum covers the TTL
        packet[10:12] = inet_checksum(bytes(packet[:20])).to_bytes(2, "big")
    return bytes(packet)
