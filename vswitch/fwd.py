"""The L2 forwarding core of one switch: pure, frames in, per-port output queues out.

No I/O and no clock: the caller passes a coarse `now` per batch. The hot path per frame is a
length check, two slices and two dict lookups (source learning, destination); flooding, special
MACs, hooks and malformed input are slow paths off to the side.

Frames are in the switch's wire format: with `vnet_hdr` > 0 every frame starts with a virtio-net
header of that many bytes (10, or 12 with TUNSETVNETHDRSZ) that is carried through unchanged.
Hooks always see and return plain Ethernet frames; a frame a hook returns inherits the ingress
frame's virtio-net header when it has the ingress frame's length (a rewrite of it, e.g. a new
destination MAC, so checksum offsets and GSO sizes stay valid) and gets a zero header (no offload)
otherwise.

Ports marked `kernel` are the node's own kernel interfaces (the host port, carp TAPs): frames they
send pass the egress filter first, floods between two kernel ports are skipped (one kernel), a
special MAC is never learned from them, and frames the node injects are not flooded to them.

Modes (design.md §2): `learning`, `hub` (flood everything), and `learning-arp`, which also learns
the sender hardware address of every ARP packet on its ingress port, as the Layer-3 switches of
carp(4)'s ip-stealth caveat do (a stealth node's ARP reply then pins the virtual MAC to it). A
`monitor` port also gets a copy of every unicast frame switched to one other port (learned
destinations, special MACs switched normally, the node's own frames), like a SPAN port; floods
reach it anyway, frames a hook consumes or emits do not. Both cost plain learning mode nothing
per frame beyond one test of an empty tuple on the unicast path.
"""

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Emit = tuple[str | None, bytes]
"""(output port name, Ethernet frame); port None: switch the frame as sent by the node itself."""

SpecialHook = Callable[[float, str, bytes], tuple[bool, Sequence[Emit]]]
"""(now, ingress port, frame) -> (also switch it normally?, frames to send)."""

MulticastHook = Callable[[float, str, bytes], Sequence[Emit]]
"""(now, ingress port, frame) -> frames to send (e.g. ARP/NA replies back out of the ingress)."""

EgressFilter = Callable[[float, str, bytes], bytes | None]
"""(now, kernel port, frame) -> the frame to switch (possibly rewritten), or None to drop it."""

MODES = ("learning", "hub", "learning-arp")
DEFAULT_AGEING = 300.0  # seconds, as the Linux bridge and carp(4)'s bridge(4)
DEFAULT_MAX_ENTRIES = 8192  # bound the table against a flood of random source MACs
ETH_HLEN = 14
_ZERO_MAC = bytes(6)
_PINNED = float("inf")  # the time of a pinned entry (`Switch.pin`): never aged out
_ETH_P_ARP = b"\x08\x06"
_ARP_ETHER = b"\x00\x01"  # ARP hardware type Ethernet
_ARP_LEN = 28  # an Ethernet/IPv4 ARP packet; the sender hardware address is at 8..14


@dataclass(slots=True)
class PortCounters:
    """Per-port counters; rx_* are counted by `Switch.forward`, tx_packets/tx_bytes by whoever
    writes the port. Every frame `forward` takes is either forwarded (queued to at least one port,
    claimed by the special hook, or answered by a hook) or counted in exactly one rx_* drop
    counter below; each is counted on its drop path only, so switched frames pay nothing."""

    rx_packets: int = 0
    rx_bytes: int = 0
    rx_malformed: int = 0  # shorter than an Ethernet header
    rx_filtered: int = 0  # dropped by the egress filter (kernel ports)
    rx_same_port: int = 0  # the destination is on the ingress port itself
    rx_no_dest: int = 0  # no port to take it (no other port up, or its owner port down)
    tx_packets: int = 0
    tx_bytes: int = 0
    tx_no_link: int = 0  # hook or node output for this port while its link was down


class Port:
    """One port of a switch as the forwarding core sees it (the device lives in vswitch/tap.py or
    vswitch/raw.py). `outq` collects frames to write; the writer empties it after each batch."""

    __slots__ = ("_flood", "counters", "flood", "kernel", "link_up", "monitor", "name", "outq")

    def __init__(self, name: str, kernel: bool, flood: bool, monitor: bool = False) -> None:
        self.name = name
        self.kernel = kernel
        self.flood = flood  # receives flooded frames (off for carp TAPs: the carp hooks decide)
        self.monitor = monitor  # also gets a copy of unicast frames switched to other ports
        self.link_up = True
        self.counters = PortCounters()
        self.outq: list[bytes] = []
        # bound `append` of every flood target's queue, recomputed when ports or links change
        self._flood: tuple[Callable[[bytes], None], ...] = ()


# Table entries are mutable lists so a refresh is an item store, not an allocation:
#   learned: [port, last_seen]
#   special: [_SPECIAL, last_seen, port learned from a non-kernel port or None]
_Entry = list[Any]
_SPECIAL = Port("<special>", kernel=False, flood=False)


class Switch:
    """One L2 segment: MAC learning with ageing, flooding, hub mode, special MACs and hooks."""

    def __init__(
        self,
        name: str,
        *,
        hub: bool = False,
        ageing: float = DEFAULT_AGEING,
        vnet_hdr: int = 0,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        learn_arp: bool = False,
    ) -> None:
        if vnet_hdr not in (0, 10, 12):
            raise ValueError(f"vnet_hdr must be 0, 10 or 12, not {vnet_hdr}")
        if ageing <= 0:
            raise ValueError(f"ageing must be positive, not {ageing}")
        self.name = name
        self.hub = hub
        self.learn_arp = learn_arp  # learning-arp mode (hub takes precedence)
        self.ageing = ageing
        self.vnet_hdr = vnet_hdr
        self.max_entries = max_entries
        self.on_special: SpecialHook | None = None
        self.on_multicast: MulticastHook | None = None
        self.egress_filter: EgressFilter | None = None
        # stations learned anew, moved or aged out (the slow paths): the node tells its
        # forwarding workers where those of the ports it serves itself are (nodeworkers.py)
        self.on_stations: Callable[[], None] | None = None
        self.table_full = 0  # sources not learned because the table was full
        self.bad_emits = 0  # hook output naming an unknown port
        self.ports: dict[str, Port] = {}
        self._table: dict[bytes, _Entry] = {}
        self._special: frozenset[bytes] = frozenset()
        self._owners: dict[bytes, Port] = {}  # special MACs of our own kernel ports
        self._pinned: set[bytes] = set()  # the MACs of the last `pin`
        self._inject_flood: tuple[Callable[[bytes], None], ...] = ()
        # the ports that are not the node's own kernel's: the switch's link to the world
        self.external: tuple[Port, ...] = ()
        self._monitors: tuple[Port, ...] = ()  # monitor ports with link, for _mirror
        self._zero_hdr = bytes(vnet_hdr)
        self._next_sweep = 0.0

    # -- configuration -------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        """One of MODES, as the node file and status name it."""
        return "hub" if self.hub else "learning-arp" if self.learn_arp else "learning"

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise ValueError(f"switch {self.name}: mode {value!r} is not one of {', '.join(MODES)}")
        self.hub = value == "hub"
        self.learn_arp = value == "learning-arp"

    def add_port(
        self, name: str, *, kernel: bool = False, flood: bool = True, monitor: bool = False
    ) -> Port:
        if name in self.ports:
            raise ValueError(f"switch {self.name}: port {name} exists")
        port = Port(name, kernel, flood, monitor)
        self.ports[name] = port
        self._recompute()
        return port

    def set_monitor(self, name: str, monitor: bool) -> None:
        """Make a port a monitor port (or a plain one again), live."""
        self.ports[name].monitor = monitor
        self._recompute()

    def remove_port(self, name: str) -> None:
        port = self.ports.pop(name)
        self._forget(port)
        # its own MACs stay special (for the hook) but belong to nobody now
        self._owners = {m: p for m, p in self._owners.items() if p is not port}
        self._recompute()

    def set_link(self, name: str, up: bool) -> None:
        """A down port gets no floods and its learned MACs are flushed (as bridge(4) does); the
        special MACs it owns stay its own (frames for them are dropped, not flooded)."""
        port = self.ports[name]
        if port.link_up == up:
            return
        port.link_up = up
        if not up:
            self._forget(port)
        self._recompute()

    @property
    def special_macs(self) -> frozenset[bytes]:
        return self._special

    @property
    def special_owners(self) -> dict[bytes, str]:
        """The `owners` of set_special_macs, by port name."""
        return {mac: port.name for mac, port in self._owners.items()}

    def set_special_macs(
        self, macs: Iterable[bytes], *, owners: Mapping[bytes, str] | None = None
    ) -> None:
        """Destination MACs whose frames go to `on_special` (the carp MACs); they take precedence
        over the learned table, and a location learned for them from a non-kernel port is kept
        for when the hook asks to switch the frame normally. `owners` names the port a special
        MAC belongs to (a kernel port's own MAC, e.g. the host port's for unicast
        advertisements): switched normally, such a frame goes there and nowhere else."""
        owned = {bytes(m): self.ports[name] for m, name in (owners or {}).items()}
        new = frozenset(bytes(m) for m in macs) | owned.keys()
        self._owners = owned
        table = self._table
        for mac in self._special - new:
            entry = table.pop(mac, None)
            if entry is not None and entry[2] is not None:
                table[mac] = [entry[2], entry[1]]
        for mac in new - self._special:
            entry = table.get(mac)
            if entry is None:
                table[mac] = [_SPECIAL, 0.0, None]
            else:
                learned: Port = entry[0]
                seen = 0.0 if entry[1] == _PINNED else entry[1]  # a pin's location ages here
                table[mac] = [_SPECIAL, seen, None if learned.kernel else learned]
        self._special = new

    def _recompute(self) -> None:
        ports = list(self.ports.values())
        # few ports take floods (carp TAPs do not): n x that, not n x n with 255 carp TAPs
        takers = [q for q in ports if q.flood and q.link_up]
        for p in ports:
            p._flood = tuple(
                q.outq.append for q in takers if q is not p and not (p.kernel and q.kernel)
            )
        self._inject_flood = tuple(q.outq.append for q in takers if not q.kernel)
        self._monitors = tuple(q for q in ports if q.monitor and q.link_up)
        self.external = tuple(q for q in ports if not q.kernel)

    def _forget(self, port: Port) -> None:
        table = self._table
        for mac in [m for m, e in table.items() if e[0] is port]:
            del table[mac]
        for entry in table.values():
            if entry[0] is _SPECIAL and entry[2] is port:
                entry[2] = None

    # -- the table -----------------------------------------------------------------------------

    def lookup(self, mac: bytes) -> str | None:
        """The port a unicast MAC was learned on (for a special MAC: its owner or its learned
        location)."""
        owner = self._owners.get(mac)
        if owner is not None:
            return owner.name
        entry = self._table.get(mac)
        if entry is None:
            return None
        port: Port | None = entry[2] if entry[0] is _SPECIAL else entry[0]
        return None if port is None else port.name

    @property
    def table_size(self) -> int:
        return sum(1 for e in self._table.values() if e[0] is not _SPECIAL)

    def entries(self, now: float) -> list[tuple[bytes, str, float]]:
        """(MAC, port, age in seconds) of every learned entry."""
        out = []
        for mac, entry in self._table.items():
            port: Port | None = entry[2] if entry[0] is _SPECIAL else entry[0]
            if port is not None:
                out.append((mac, port.name, now - entry[1]))
        return out

    def learned_on(self, ports: Iterable[str]) -> dict[bytes, str]:
        """MAC -> port of the learned stations on `ports`."""
        wanted = {self.ports[name] for name in ports if name in self.ports}
        return {mac: e[0].name for mac, e in self._table.items() if e[0] in wanted}

    def pin(self, macs: Mapping[bytes, str]) -> None:
        """Stations another process learned (a forwarding worker is told where the node's own
        ports' stations are): they stay until a later `pin` leaves them out or they are seen
        on a port here (a move, which a later pin does not undo), and never age out meanwhile.
        A special MAC is not pinned, and pins never take the table's last quarter."""
        table = self._table
        for mac in self._pinned - macs.keys():
            e = table.get(mac)
            if e is not None and e[0] is not _SPECIAL and e[1] == _PINNED:
                del table[mac]
        pinned = set()
        room = self.max_entries - self.max_entries // 4 - len(table)
        for mac, name in macs.items():
            port = self.ports.get(name)
            e = table.get(mac)
            if port is None or mac in self._special:
                continue
            if e is None:
                if room <= 0:
                    continue
                room -= 1
            elif e[1] != _PINNED:
                continue  # learned here, later than the node could know
            table[mac] = [port, _PINNED]
            pinned.add(mac)
        self._pinned = pinned

    def expire(self, now: float) -> None:
        """Remove entries not seen for `ageing` seconds (forward() calls this by itself)."""
        limit = now - self.ageing
        table = self._table
        aged = [m for m, e in table.items() if e[0] is not _SPECIAL and e[1] < limit]
        for mac in aged:
            del table[mac]
        if aged and self.on_stations is not None:
            self.on_stations()
        for entry in table.values():
            if entry[0] is _SPECIAL and entry[2] is not None and entry[1] < limit:
                entry[2] = None
        # sweeping a few times per ageing period bounds the overrun to a quarter of it
        self._next_sweep = now + min(1.0, self.ageing / 4)

    def flush(self) -> None:
        """Forget every learned MAC (special MACs stay special)."""
        for mac in [m for m, e in self._table.items() if e[0] is not _SPECIAL]:
            del self._table[mac]
        for entry in self._table.values():
            entry[2] = None

    # -- forwarding ----------------------------------------------------------------------------

    def forward(self, now: float, port: Port, frames: Sequence[bytes]) -> None:
        """Switch a batch of frames received on `port`; outputs land in the ports' `outq`."""
        c = port.counters
        n = len(frames)
        c.rx_packets += n
        c.rx_bytes += sum(map(len, frames)) - n * self.vnet_hdr
        if port.kernel and self.egress_filter is not None:
            frames = self._filter_egress(now, port, frames)
        if now >= self._next_sweep:
            self.expire(now)
        if self.hub:
            self._forward_hub(now, port, frames)
        elif self.learn_arp:
            self._forward_learning_arp(now, port, frames)
        else:
            self._forward_learning(now, port, frames)

    def _forward_learning(self, now: float, port: Port, frames: Sequence[bytes]) -> None:
        """The hot path: learn the source, switch by destination."""
        c = port.counters
        o = self.vnet_hdr
        o6 = o + 6
        o12 = o + 12
        minlen = o + ETH_HLEN
        table = self._table
        get = table.get
        flood = port._flood
        mirror = self._monitors
        for frame in frames:
            if len(frame) < minlen:
                c.rx_malformed += 1
                continue
            src = frame[o6:o12]
            e = get(src)
            if e is not None and e[0] is port:
                e[1] = now
            else:
                self._learn(now, port, src, e)
            d = get(frame[o:o6])
            if d is None:
                if flood:
                    for append in flood:
                        append(frame)
                    if frame[o] & 1 and self.on_multicast is not None:
                        self._multicast(now, port, frame)
                elif not self._answered(now, port, frame):
                    c.rx_no_dest += 1
            else:
                q = d[0]
                if q is _SPECIAL:
                    self._to_special(now, port, frame, d)
                elif q is not port:
                    q.outq.append(frame)
                    if mirror:
                        self._mirror(port, q, frame)
                else:
                    c.rx_same_port += 1

    def _forward_learning_arp(self, now: float, port: Port, frames: Sequence[bytes]) -> None:
        """learning-arp: an ARP packet's sender hardware address is learned on the ingress
        port before the packet is switched; the frames around it go through the hot path in
        order, so the table changes exactly where a per-frame switch would change it."""
        at = self.vnet_hdr + 12
        start = 0
        for i, frame in enumerate(frames):
            if frame[at : at + 2] == _ETH_P_ARP:
                if i > start:
                    self._forward_learning(now, port, frames[start:i])
                self._learn_arp(now, port, frame)
                start = i
        self._forward_learning(now, port, frames[start:] if start else frames)

    def _learn_arp(self, now: float, port: Port, frame: bytes) -> None:
        a = self.vnet_hdr + ETH_HLEN
        # Ethernet hardware addresses only; a short packet is switched, never parsed
        if len(frame) < a + _ARP_LEN or frame[a : a + 2] != _ARP_ETHER or frame[a + 4] != 6:
            return
        sha = frame[a + 8 : a + 14]
        e = self._table.get(sha)
        if e is not None and e[0] is port:
            e[1] = now
        else:
            self._learn(now, port, sha, e)

    def _mirror(self, ingress: Port | None, dest: Port, frame: bytes) -> None:
        """A copy of a unicast frame switched to `dest` for every monitor port but the two."""
        for m in self._monitors:
            if m is not ingress and m is not dest:
                m.outq.append(frame)

    def _forward_hub(self, now: float, port: Port, frames: Sequence[bytes]) -> None:
        o = self.vnet_hdr
        minlen = o + ETH_HLEN
        special = self._special
        flood = port._flood
        c = port.counters
        for frame in frames:
            if len(frame) < minlen:
                c.rx_malformed += 1
                continue
            if special and frame[o : o + 6] in special:
                self._to_special(now, port, frame, None)
                continue
            if flood:
                for append in flood:
                    append(frame)
                if frame[o] & 1 and self.on_multicast is not None:
                    self._multicast(now, port, frame)
            elif not self._answered(now, port, frame):
                c.rx_no_dest += 1

    def _learn(self, now: float, port: Port, src: bytes, e: _Entry | None) -> None:
        if e is None:
            # multicast or zero sources are switched but never learned (carp in `ip` mode on
            # OpenBSD sends from its multicast MAC; dropping those would break interop)
            if src[0] & 1 or src == _ZERO_MAC:
                return
            if len(self._table) >= self.max_entries:
                self.table_full += 1
                return
            self._table[src] = [port, now]
        elif e[0] is _SPECIAL:
            # a virtual MAC seen from the segment (another node's master); never from our kernel
            if not port.kernel:
                e[1] = now
                e[2] = port
            return
        else:
            e[0] = port  # station moved
            e[1] = now
        if self.on_stations is not None:
            self.on_stations()

    def _to_special(self, now: float, port: Port, frame: bytes, d: _Entry | None) -> None:
        o = self.vnet_hdr
        eth = frame[o:] if o else frame
        switch: bool = True
        emits: Sequence[Emit] = ()
        if self.on_special is not None:
            switch, emits = self.on_special(now, port.name, eth)
        if switch:
            miss = self._switch_special(port, frame, d)
            # a frame the hook answered is accounted for even when switching found nobody
            if miss is not None and not emits:
                c = port.counters
                if miss is port:
                    c.rx_same_port += 1
                else:
                    c.rx_no_dest += 1
        if emits:
            self._emit(frame, eth, emits)

    def _switch_special(self, port: Port, frame: bytes, d: _Entry | None) -> Port | None:
        """Switch a frame for a special MAC normally; returns None when some port took it,
        else `port` (its destination is the ingress port) or `_SPECIAL` (no port to take it)."""
        o = self.vnet_hdr
        learned: Port | None = d[2] if d is not None else None
        owner = self._owners.get(frame[o : o + 6]) if self._owners else None
        if owner is not None:
            if owner is port:
                return port
            if not owner.link_up:
                return _SPECIAL
            owner.outq.append(frame)
            if self._monitors:
                self._mirror(port, owner, frame)
        elif self.hub or frame[o] & 1 or learned is None:
            flood = port._flood
            if not flood:
                return _SPECIAL
            for append in flood:
                append(frame)
        elif learned is port:
            return port
        else:
            learned.outq.append(frame)
            if self._monitors:
                self._mirror(port, learned, frame)
        return None

    def _multicast(self, now: float, port: Port, frame: bytes) -> bool:
        """Hand a multicast frame to `on_multicast`; True when the hook emitted something."""
        assert self.on_multicast is not None
        o = self.vnet_hdr
        eth = frame[o:] if o else frame
        emits = self.on_multicast(now, port.name, eth)
        if emits:
            self._emit(frame, eth, emits)
            return True
        return False

    def _answered(self, now: float, port: Port, frame: bytes) -> bool:
        """A frame no port takes: accounted for as forwarded if the multicast hook answers it
        (e.g. an ARP request for a virtual address on a switch with one port)."""
        o = self.vnet_hdr
        if frame[o] & 1 and self.on_multicast is not None:
            return self._multicast(now, port, frame)
        return False

    def _filter_egress(self, now: float, port: Port, frames: Sequence[bytes]) -> list[bytes]:
        assert self.egress_filter is not None
        o = self.vnet_hdr
        out = []
        for frame in frames:
            eth = frame[o:] if o else frame
            new = self.egress_filter(now, port.name, eth)
            if new is None:
                port.counters.rx_filtered += 1
            elif new is eth:
                out.append(frame)
            else:
                out.append(self._wire(frame, eth, new))
        return out

    def _wire(self, frame: bytes | None, eth: bytes | None, new: bytes) -> bytes:
        """`new` in wire format: the virtio-net header of `frame` for a same-length rewrite."""
        o = self.vnet_hdr
        if not o:
            return new
        if frame is not None and eth is not None and len(new) == len(eth):
            return frame[:o] + new
        return self._zero_hdr + new

    def _emit(self, frame: bytes | None, eth: bytes | None, emits: Sequence[Emit]) -> int:
        """Queue hook or node output; returns how many copies were queued."""
        queued = 0
        for name, out in emits:
            wire = self._wire(frame, eth, out)
            if name is None:
                queued += self._inject_wire(wire)
                continue
            port = self.ports.get(name)
            if port is None:
                self.bad_emits += 1
            elif not port.link_up:
                port.counters.tx_no_link += 1
            else:
                port.outq.append(wire)
                queued += 1
        return queued

    # -- frames sent by the node itself --------------------------------------------------------

    def inject(self, frame: bytes, port: str | None = None) -> int:
        """Queue an Ethernet frame the node sends (advertisement, gratuitous ARP, reply): out of
        `port`, or switched by destination (no learning, no hooks, never to kernel ports).
        Returns the number of copies queued: 0 means no port could take it."""
        return self._emit(None, None, ((port, frame),))

    def _inject_wire(self, wire: bytes) -> int:
        o = self.vnet_hdr
        if len(wire) < o + ETH_HLEN:
            self.bad_emits += 1
            return 0
        d = None if self.hub else self._table.get(wire[o : o + 6])
        target: Port | None = None
        if d is not None:
            target = d[2] if d[0] is _SPECIAL else d[0]
        if target is not None and not target.kernel and not wire[o] & 1:
            target.outq.append(wire)
            if self._monitors:
                self._mirror(None, target, wire)
            return 1
        for append in self._inject_flood:
            append(wire)
        return len(self._inject_flood)

    def drain(self) -> list[tuple[Port, list[bytes]]]:
        """Take every non-empty output queue (the queues stay the same list objects)."""
        out = []
        for port in self.ports.values():
            if port.outq:
                out.append((port, port.outq[:]))
                port.outq.clear()
        return out
