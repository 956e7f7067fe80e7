"""Per-frame carp decisions for the switch (carp-protocol.md §6.4-6.8, §7; design.md 1.3/1.4/1.7).

`input()` sees what arrives at a switch (carpdev) and is meant for the carp interfaces: CARP
advertisements go to the host, ARP requests and neighbour solicitations for virtual addresses
are answered here (the kernel's own answers are dropped by `output()`), and unicast frames for a
carp MAC are delivered to the carp TAP as carp_input/carp_lsdrop would. `output()` sees what the
node's kernel sends and applies the source-MAC rule of design decision 4. input() never decides
forwarding: the switch still forwards or floods every frame as usual.

All state the rules need is copied into lookup tables by `refresh()`, which the driver calls
after every batch of actions, so the common case costs a few slices and one dict lookup. Those
tables are `Decisions`: plain data, so that a forwarding process that does not run the protocol
applies the decisions of the one that does (`decisions()` there, `load()` here).
"""

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import Protocol

from carp import l2
from carp.actions import Action, Deliver, Transmit, TxKind
from carp.balance import arp_choice, arp_hash, lsdrop_keep, source_mac, tap_mac
from carp.constants import Balancing, State
from carp.params import CarpDev
from carp.wire import frame_is_carp

_IP4 = b"\x08\x00"
_IP6 = b"\x86\xdd"
_ARP = b"\x08\x06"
_ICMP6 = bytes((l2.IPPROTO_ICMPV6,))
_NS = bytes((l2.ND_NEIGHBOR_SOLICIT,))
_NA = bytes((l2.ND_NEIGHBOR_ADVERT,))
_OP_REQUEST = l2.ARPOP_REQUEST.to_bytes(2, "big")
_OP_REPLY = l2.ARPOP_REPLY.to_bytes(2, "big")
_UNSPECIFIED = bytes(16)
_HOPOPTS = b"\x00"
# kernel chatter of the carp TAP the segment must not see: MLD (130-132, 143) and RS (133)
_ICMP6_NOISE = frozenset((130, 131, 132, 133, 143))
_ARP_SRC_CACHE_MAX = 4096
# Router flag of our NAs: a gateway node forwards (design.md 1.7); carpif's unsolicited NAs agree
NA_ROUTER = True


class VheView(Protocol):
    """What the data path reads of a carpnode."""

    @property
    def vhid(self) -> int: ...
    @property
    def state(self) -> State: ...
    @property
    def mac(self) -> bytes: ...


class CarpIfView(Protocol):
    """What the data path reads of a carp interface (docs/architecture.md, CarpInterface)."""

    @property
    def name(self) -> str: ...
    @property
    def carpdev(self) -> str: ...
    @property
    def balancing(self) -> Balancing: ...
    @property
    def mac(self) -> bytes: ...
    @property
    def vhes(self) -> Sequence[VheView]: ...
    @property
    def leader(self) -> VheView: ...
    @property
    def lsmask(self) -> int: ...
    @property
    def lscount(self) -> int: ...
    @property
    def v4(self) -> frozenset[IPv4Address]: ...
    @property
    def v6(self) -> frozenset[IPv6Address]: ...
    @property
    def is_running(self) -> bool: ...
    @property
    def key(self) -> bytes: ...
    @property
    def hmac_inner(self) -> tuple[int, int]: ...


class HostView(Protocol):
    """What the data path uses of CarpHost."""

    @property
    def carpifs(self) -> Mapping[str, CarpIfView]: ...
    @property
    def carpdevs(self) -> Mapping[str, CarpDev]: ...

    def receive(self, now: float, carpdev: str, ip_packet: bytes) -> list[Action]: ...


@dataclass(slots=True)
class DataPathStats:
    """What the data path did with frames (for status and metrics)."""

    malformed: int = 0  # ARP / NS / IP frames for a carp interface that do not parse
    arp_replies: int = 0
    na_replies: int = 0
    delivered: int = 0  # frames handed to a carp TAP
    not_accepted: int = 0  # for a carp MAC, but this host may not accept it (§6.4)
    lsdropped: int = 0  # removed by the IP balancing filter (§6.5)
    kernel_answers: int = 0  # the kernel's ARP replies / NAs / announcements for a VIP, dropped
    unreach: int = 0  # refused output while not allowed to send (ENETUNREACH)
    noise: int = 0  # MLD / RS / DAD from the carp TAP, dropped

    def as_dict(self) -> dict[str, int]:
        """Every counter by its field name (stable: status keys and metric labels)."""
        return asdict(self)


@dataclass(slots=True)
class _Entry:
    """One carp interface as the rules see it, copied at refresh()."""

    name: str
    balancing: Balancing
    carp_mac: bytes  # ARP sender / NA target link-layer address in every mode but arp
    tap_mac: bytes
    src_mac: bytes  # design decision 4 (arp mode picks per frame, see _arp_source)
    leader_vhid: int
    running: bool
    leader_master: bool
    may_send: bool
    lsmask: int
    lscount: int
    vhids: tuple[int, ...]
    vhe_macs: tuple[bytes, ...]
    masters: tuple[bool, ...]
    key: bytes
    inner: tuple[int, int]
    arp_src: dict[bytes, bytes] = field(default_factory=dict)  # arp mode: dst MAC -> source


@dataclass(slots=True)
class _Tables:
    """Lookup tables of one carpdev: raw address / MAC bytes -> carp interface."""

    v4: dict[bytes, _Entry] = field(default_factory=dict)
    v6: dict[bytes, _Entry] = field(default_factory=dict)
    macs: dict[bytes, tuple[_Entry, int]] = field(default_factory=dict)  # (entry, vhe index)
    taps: dict[bytes, _Entry] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Decisions:
    """Everything input() and output() read, as refresh() copied it from the host."""

    tables: dict[str, _Tables]
    tap_macs: dict[str, bytes]
    ip_balanced: frozenset[str]  # the carp interfaces in an ip* mode


def may_send(balancing: Balancing, leader_master: bool, any_master: bool) -> bool:
    """Whether a frame may leave from the carp interface / a virtual address (§6.6).

    carp_output: mode none only while the leader is MASTER, else ENETUNREACH; ip* always.
    arp (ours; design decision 3): while any carpnode is MASTER here, so this host never
    teaches switches a virtual MAC it does not serve.
    """
    if balancing is Balancing.NONE:
        return leader_master
    if balancing is Balancing.ARP:
        return any_master
    return True


def may_accept(balancing: Balancing, leader_master: bool, vhe_master: bool) -> bool:
    """carp_vhe_match (§6.4): leader MASTER or any ip* mode; arp mode: that carpnode MASTER
    (carp_ourether, §6.8)."""
    if balancing is Balancing.ARP:
        return vhe_master
    return leader_master or balancing.is_ip


class DataPath:
    """carp decisions per frame for every switch of the node (see the module docstring)."""

    def __init__(self, host: HostView) -> None:
        self._host = host
        self._tables: dict[str, _Tables] = {}
        self.macs: frozenset[bytes] = frozenset()
        self.carpdev_macs: dict[str, frozenset[bytes]] = {}
        self.tap_macs: dict[str, bytes] = {}
        # carp interfaces in an ip* mode: the frames delivered to them also go on to the
        # other nodes of the segment (§6.6), those of the other modes are for this node alone
        self.ip_balanced: frozenset[str] = frozenset()
        self.stats = DataPathStats()
        self.refresh()

    # -- tables

    def refresh(self) -> None:
        """Rebuild the lookup tables from the host's carp interfaces (after any change)."""
        tables: dict[str, _Tables] = {}
        tap_macs: dict[str, bytes] = {}
        for name in sorted(self._host.carpifs):
            cif = self._host.carpifs[name]
            dev = self._host.carpdevs.get(cif.carpdev)
            entry = self._entry(cif, dev.mac if dev is not None else cif.mac)
            t = tables.setdefault(cif.carpdev, _Tables())
            # a VIP or MAC configured twice on one carpdev: the first interface by name wins
            for a4 in cif.v4:
                t.v4.setdefault(a4.packed, entry)
            for a6 in cif.v6:
                t.v6.setdefault(a6.packed, entry)
            t.macs.setdefault(entry.carp_mac, (entry, 0))
            t.macs.setdefault(entry.tap_mac, (entry, 0))
            if entry.balancing is Balancing.ARP:
                for index, vmac in enumerate(entry.vhe_macs):
                    t.macs.setdefault(vmac, (entry, index))
            t.taps.setdefault(entry.tap_mac, entry)
            tap_macs[name] = entry.tap_mac
        ip = frozenset(n for n, c in self._host.carpifs.items() if c.balancing.is_ip)
        self.load(Decisions(tables, tap_macs, ip))

    def decisions(self) -> Decisions:
        """The tables as they stand, for a data path elsewhere (`load`)."""
        return Decisions(self._tables, self.tap_macs, self.ip_balanced)

    def load(self, decisions: Decisions) -> None:
        """Decide with these tables from now on (this data path's or another's)."""
        tables = decisions.tables
        self._tables = tables
        self.tap_macs = decisions.tap_macs
        self.carpdev_macs = {dev: frozenset(t.macs) for dev, t in tables.items()}
        self.macs = frozenset(m for t in tables.values() for m in t.macs)
        self.ip_balanced = decisions.ip_balanced

    @staticmethod
    def _entry(cif: CarpIfView, own_mac: bytes) -> _Entry:
        masters = tuple(v.state is State.MASTER for v in cif.vhes)
        leader_master = cif.leader.state is State.MASTER
        running = cif.is_running
        return _Entry(
            name=cif.name,
            balancing=cif.balancing,
            carp_mac=cif.mac,
            tap_mac=tap_mac(cif.mac),
            src_mac=source_mac(cif.balancing, cif.mac, own_mac),
            leader_vhid=cif.leader.vhid,
            running=running,
            leader_master=leader_master,
            may_send=may_send(cif.balancing, leader_master, any(masters)),
            lsmask=cif.lsmask,
            lscount=cif.lscount,
            vhids=tuple(v.vhid for v in cif.vhes),
            vhe_macs=tuple(v.mac for v in cif.vhes),
            masters=masters,
            key=cif.key,
            inner=cif.hmac_inner,
        )

    # -- input: frames arriving at the switch

    def input(self, now: float, carpdev: str, port: str, frame: bytes) -> list[Action]:
        """A frame arriving at switch `carpdev` from `port`: what the carp interfaces do with it."""
        if frame_is_carp(frame):
            # (a) protocol 112 -> the host's §1.6 pipeline, whatever the destination MAC
            return self._host.receive(now, carpdev, frame[14:])
        ethertype = frame[12:14]
        if ethertype == _IP6 and frame[20:21] == _ICMP6 and frame[54:55] == _NS:
            t = self._tables.get(carpdev)
            if t is not None:
                entry = t.v6.get(frame[62:78])
                if entry is not None:  # (c) NS for a virtual address: answered here
                    return self._answer_ns(carpdev, port, frame, entry)
        elif ethertype == _ARP and frame[20:22] == _OP_REQUEST:
            t = self._tables.get(carpdev)
            if t is not None:
                entry = t.v4.get(frame[38:42])
                if entry is not None:  # (b) ARP request for a virtual address: answered here
                    return self._answer_arp(carpdev, port, frame, entry)
        t = self._tables.get(carpdev)
        if t is None:
            return []
        hit = t.macs.get(frame[0:6])
        if hit is None:
            return []  # (e) not for a carp MAC: the switch floods/forwards it, nothing here
        return self._deliver(hit[0], hit[1], ethertype, frame)

    def _deliver(self, entry: _Entry, index: int, ethertype: bytes, frame: bytes) -> list[Action]:
        """(d) a frame for a carp MAC: carp_input's acceptance, then carp_lsdrop for ip*."""
        if not entry.running or not may_accept(
            entry.balancing, entry.leader_master, entry.masters[index]
        ):
            self.stats.not_accepted += 1
            return []
        if entry.balancing.is_ip and ethertype in (_IP4, _IP6):
            af = 4 if ethertype == _IP4 else 6
            packet = frame[14:]
            if len(packet) < (20 if af == 4 else 40):
                self.stats.malformed += 1
                return []
            if not lsdrop_keep(packet, af, entry.lsmask, entry.lscount):
                self.stats.lsdropped += 1
                return []
        self.stats.delivered += 1
        # the TAP cannot hold the ip-mode multicast MAC (nor an arp-mode sibling's MAC)
        return [Deliver(entry.name, entry.tap_mac + frame[6:])]

    def _responder(self, entry: _Entry, sha: bytes | None) -> tuple[bytes, bytes, int] | None:
        """Who answers an ARP request / NS for a VIP: (hw address, Ethernet source, vhid).

        in_arpinput/nd6_ns_input via carp_iamatch: the leader MASTER answers with the carp MAC
        (§6.6); arp mode hashes the requester's hardware address and answers with the chosen
        carpnode's MAC iff MASTER of it here (§6.8). A BACKUP answers nothing.
        """
        if not entry.running:
            return None
        if entry.balancing is Balancing.ARP:
            if sha is None:
                return None  # NS without a source link-layer option: unanswered (§6.8)
            answer, index = arp_choice(
                entry.lsmask, entry.lscount, arp_hash(entry.inner, entry.key, sha)
            )
            if not answer:
                return None
            vmac = entry.vhe_macs[index]
            return vmac, vmac, entry.vhids[index]
        if not entry.leader_master:
            return None
        return entry.carp_mac, entry.src_mac, entry.leader_vhid

    def _answer_arp(self, carpdev: str, port: str, frame: bytes, entry: _Entry) -> list[Action]:
        request = l2.parse_arp(frame)
        if request is None:
            self.stats.malformed += 1
            return []
        # a gratuitous ARP is another master's announcement; a group sha cannot be answered
        if request.gratuitous or request.sha[0] & 0x01:
            return []
        who = self._responder(entry, request.sha)
        if who is None:
            return []
        hw, eth_src, vhid = who
        self.stats.arp_replies += 1
        reply = l2.arp_reply(request, hw, eth_src)
        return [Transmit(carpdev, reply, TxKind.ARP_REPLY, entry.name, vhid, 4, port=port)]

    def _answer_ns(self, carpdev: str, port: str, frame: bytes, entry: _Entry) -> list[Action]:
        ns = l2.parse_ns(frame)
        if ns is None:
            self.stats.malformed += 1
            return []
        who = self._responder(entry, ns.slla)
        if who is None:
            return []
        hw, eth_src, vhid = who
        self.stats.na_replies += 1
        reply = l2.na_reply(ns, hw, NA_ROUTER, eth_src)
        return [Transmit(carpdev, reply, TxKind.NA_REPLY, entry.name, vhid, 6, port=port)]

    # -- output: frames the node's kernel sends

    def output(self, carpdev: str, frame: bytes, from_carp: bool) -> bytes | None:
        """A frame the node's kernel sends on `carpdev` (host port, or the carp TAP if
        `from_carp`): the frame to put on the switch, possibly rewritten, or None to drop it."""
        t = self._tables.get(carpdev)
        if t is None:
            return frame
        ethertype = frame[12:14]
        if ethertype == _IP4:
            entry = t.v4.get(frame[26:30])
        elif ethertype == _IP6:
            if frame[20:21] == _ICMP6 and frame[54:55] == _NA and frame[62:78] in t.v6:
                self.stats.kernel_answers += 1  # vswitch sends the NAs for VIPs itself
                return None
            entry = t.v6.get(frame[22:38])
            if from_carp and self._noise6(frame):
                self.stats.noise += 1
                return None
        elif ethertype == _ARP:
            return self._output_arp(t, frame, from_carp)
        else:
            entry = None
        if entry is None:
            if not from_carp:
                return frame  # the common case: not from a virtual address
            entry = t.taps.get(frame[6:12])
            if entry is None:
                return frame
        out = self._from_vip(entry, frame)
        if out is not None and ethertype == _IP6 and frame[54:55] == _NS:
            # a solicitation from the carp interface advertises the carp MAC (as ARP, below)
            out = l2.rewrite_slla(out, self._sender_hw(entry, out))
        return out

    @staticmethod
    def _sender_hw(entry: _Entry, frame: bytes) -> bytes:
        # ARP sha / NS source link-layer address of the carp interface: its carp MAC, in arp
        # mode the carpnode MAC chosen as Ethernet source
        return entry.carp_mac if entry.balancing is not Balancing.ARP else frame[6:12]

    @staticmethod
    def _noise6(frame: bytes) -> bool:
        # DAD (source ::), anything behind hop-by-hop options (MLD), MLD and RS
        if frame[22:38] == _UNSPECIFIED or frame[20:21] == _HOPOPTS:
            return True
        return frame[20:21] == _ICMP6 and frame[54:55] != b"" and frame[54] in _ICMP6_NOISE

    def _from_vip(self, entry: _Entry, frame: bytes) -> bytes | None:
        """A frame sent from a virtual address or the carp TAP: may it leave, and its source."""
        if not entry.may_send:
            self.stats.unreach += 1
            return None
        src = (
            self._arp_source(entry, frame[0:6])
            if entry.balancing is Balancing.ARP
            else entry.src_mac
        )
        if frame[6:12] == src:
            return frame
        return frame[0:6] + src + frame[12:]

    def _arp_source(self, entry: _Entry, dst: bytes) -> bytes:
        """arp mode: send from the MAC the destination's own ARP hash chose, if this host is
        MASTER of it, so switches learn each virtual MAC only at its master (§6.8); else from
        the first carpnode MASTER here."""
        cached = entry.arp_src.get(dst)
        if cached is not None:
            return cached
        src = next(
            (m for m, up in zip(entry.vhe_macs, entry.masters, strict=True) if up), entry.carp_mac
        )
        if not dst[0] & 0x01:
            answer, index = arp_choice(
                entry.lsmask, entry.lscount, arp_hash(entry.inner, entry.key, dst)
            )
            if answer:
                src = entry.vhe_macs[index]
        if len(entry.arp_src) >= _ARP_SRC_CACHE_MAX:
            entry.arp_src.clear()
        entry.arp_src[dst] = src
        return src

    def _output_arp(self, t: _Tables, frame: bytes, from_carp: bool) -> bytes | None:
        entry = t.v4.get(frame[28:32])
        if entry is None:
            if from_carp:
                tap_entry = t.taps.get(frame[6:12])
                if tap_entry is not None:
                    return self._from_vip(tap_entry, frame)
            return frame
        op = frame[20:22]
        if op == _OP_REPLY or (op == _OP_REQUEST and frame[28:32] == frame[38:42]):
            # the kernel answering or announcing a VIP: vswitch does both itself (§7, design 1.7)
            self.stats.kernel_answers += 1
            return None
        out = self._from_vip(entry, frame)
        if out is None or op != _OP_REQUEST or len(out) < 28:
            return out
        # a request from a VIP updates the neighbour's cache: the sender is the carp MAC
        return out[0:22] + self._sender_hw(entry, out) + out[28:]
