"""A carp interface (carpN): its carpnodes and what they share (carp-protocol.md §4, §6, §7).

The interface owns the carpnodes sorted by vhid (the leader is the lowest), the key and HMAC
contexts, the MACs, lsmask/lscount, the carrier (§4.11), delayed gratuitous ARP (§7), send-error
demotion (§4.6) and the per-interface state of §4.7-4.10. What belongs to the whole node (group
demote counters, sysctls, statistics, the cookie source) is reached through `HostEnv`, which
CarpHost implements.
"""

import errno
from collections.abc import Iterable
from dataclasses import dataclass, replace
from ipaddress import IPv4Address
from typing import Protocol

from carp import l2
from carp.actions import (
    Action,
    CarrierChanged,
    Conflict,
    Log,
    Reason,
    StateChanged,
    Transmit,
    TxKind,
)
from carp.auth import HmacContexts, carp_key, inner_words
from carp.balance import source_mac, vhe_mac
from carp.constants import (
    CARP_BOWOUT,
    CARP_MAXNODES,
    ETH_P_IP,
    ETH_P_IPV6,
    INADDR_CARP_GROUP,
    LOG_CRIT,
    LOG_DEBUG,
    LOG_INFO,
    LOG_NOTICE,
    LOG_WARNING,
    MAC_CARP_GROUP6,
    Balancing,
    State,
)
from carp.election import Advert, Decision, decide
from carp.params import CarpDev, CarpIfParams
from carp.stats import CarpStats
from carp.timing import interval_us, is_bowout, master_down_us, seconds
from carp.vhe import AF_INET, AF_INET6, Timer, Vhe
from carp.wire import CarpHeader, build_frame, build_ipv4, build_ipv6, mac_for_ip_dst

CARP_GROUP4 = IPv4Address(INADDR_CARP_GROUP)
UNRESOLVED_MAC = bytes(6)  # a unicast carppeer: the driver resolves Transmit.next_hop
DEMOTE_MAX = 255
DELAYED_ARP_ADVERTS = 2  # sc_delayed_arp: resend the burst on the 2nd IPv4 advert (§7)
DELAYED_ARP_OFF = -1
SENDAD_FACTOR = 3  # CARP_SENDAD_MAX_ERRORS / MIN_SUCCESS = 3 x number of vhes (§4.6)
PEERS_KEPT = 8  # sources remembered per carpnode for status
REJECTS_KEPT = 8  # (source, reason) pairs remembered per carp interface for `explain`


def keeps_state(old: CarpIfParams, new: CarpIfParams) -> bool:
    """True if going from `old` to `new` is an SIOCSVH that keeps every carpnode's state (§4.9).

    advbase, the carpnodes' advskews (same vhid list), pass and carppeer only re-arm the timers
    (carp_hmac_prepare, carp_setrun_all(sc, 0)); addresses, the vhid list, the carp MAC
    (balancing, lladdr), the carpdev, groups and up/down go another way (`replace_carpif`).
    """
    if sorted(n.vhid for n in old.carpnodes) != sorted(n.vhid for n in new.carpnodes):
        return False
    soft = replace(
        old,
        carpnodes=new.carpnodes,
        advbase=new.advbase,
        passphrase=new.passphrase,
        carppeer=new.carppeer,
    )
    return soft == new


class HostEnv(Protocol):
    """What a carp interface needs from its node (implemented by CarpHost)."""

    stats: CarpStats

    def preempt(self) -> bool: ...

    def demote_count(self, carpif: str) -> int: ...

    def advertised_advskew(self, advskew: int) -> int: ...

    def draw(self) -> bytes: ...

    def adjust_demote(self, now: float, carpif: str, adj: int, reason: str) -> list[Action]: ...


@dataclass(frozen=True, slots=True)
class PeerHeard:
    """The last valid advertisement heard for a carpnode from one source (for status)."""

    advbase: int
    advskew: int
    demote: int
    at: float


@dataclass(frozen=True, slots=True)
class Decided:
    """Which row of the §4.4 table (carp/election.py) judged an advertisement, and whose."""

    row: str
    decision: Decision
    source: str
    at: float


@dataclass(slots=True)
class Rejected:
    """Advertisements from one source refused for one reason (what `explain` reports).

    `reason` is the carpstats counter that counted them (badttl, badlen, badsum, badvhid,
    badver, badauth), `loop` for our own cookie coming back, or `ip-<IpDrop>` for a drop of the
    IP layer; `detail` says more where the packet shows it (the TTL, the vhid).
    """

    reason: str
    vhid: int | None
    count: int
    first: float
    last: float
    detail: str = ""


class Rejects:
    """The last REJECTS_KEPT (source, reason) pairs refused on a carp interface, oldest first."""

    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], Rejected] = {}

    def note(
        self, now: float, source: str, reason: str, vhid: int | None, detail: str = ""
    ) -> None:
        key = (source, reason)
        old = self.entries.pop(key, None)
        if old is None:
            self.entries[key] = Rejected(reason, vhid, 1, now, now, detail)
        else:
            old.count, old.last, old.vhid, old.detail = old.count + 1, now, vhid, detail
            self.entries[key] = old
        while len(self.entries) > REJECTS_KEPT:
            del self.entries[next(iter(self.entries))]


class CarpNode(Vhe):
    """A Vhe plus what status, the event stream and `explain` show about it."""

    __slots__ = ("cause", "changed_at", "conflicts", "decided", "peers", "reason", "transitions")

    def __init__(self, vhid: int, advskew: int, leader: bool, mac: bytes) -> None:
        super().__init__(vhid, advskew, leader, mac)
        self.reason: Reason | None = None
        self.changed_at: float | None = None
        self.transitions = 0
        self.peers: dict[str, PeerHeard] = {}
        self.decided: Decided | None = None  # the last advertisement judged by the §4.4 table
        self.cause: Decided | None = None  # the one that moved it to its state (None: no advert)
        self.conflicts: dict[str, float] = {}  # second masters heard: peer -> last Conflict

    def heard(self, source: str, header: CarpHeader, now: float) -> None:
        self.peers.pop(source, None)
        self.peers[source] = PeerHeard(header.advbase, header.advskew, header.demote, now)
        while len(self.peers) > PEERS_KEPT:
            del self.peers[next(iter(self.peers))]


def state_log_level(old: State, new: State) -> int:
    """carp_set_state: LOG_WARNING for transitions to or from INIT, LOG_CRIT otherwise (§8.3)."""
    return LOG_WARNING if State.INIT in (old, new) else LOG_CRIT


class CarpInterface:
    """One carp interface and its carpnodes."""

    def __init__(self, params: CarpIfParams, dev: CarpDev, env: HostEnv) -> None:
        if not params.carpnodes or len(params.carpnodes) > CARP_MAXNODES:
            raise ValueError(f"{params.name}: 1..{CARP_MAXNODES} carpnodes required")
        vhids = [n.vhid for n in params.carpnodes]
        if len(set(vhids)) != len(vhids):
            raise ValueError(f"{params.name}: duplicate vhid in carpnodes")
        self.params = params
        self.dev = dev
        self.env = env
        self.name = params.name
        self.carpdev = params.carpdev
        self.balancing = params.balancing
        self.advbase = params.advbase
        self.groups = tuple(dict.fromkeys(("carp", *params.groups)))
        self.v4 = frozenset(params.v4)
        self.v6 = frozenset(params.v6)
        self.peer = params.carppeer or CARP_GROUP4
        self.peer_is_multicast = self.peer.is_multicast
        self.key = carp_key(params.passphrase)
        self.hmac_inner = inner_words(self.key)
        nodes = sorted(params.carpnodes, key=lambda n: n.vhid)  # carp_set_ifp keeps them sorted
        self.vhes: tuple[CarpNode, ...] = tuple(
            CarpNode(n.vhid, n.advskew, i == 0, vhe_mac(n.vhid, params.balancing, i == 0))
            for i, n in enumerate(nodes)
        )
        self.leader = self.vhes[0]
        self.mac = params.lladdr or self.leader.mac  # §6.3: the leader's MAC unless lladdr
        self.hmac = {v.vhid: self._hmac_for(v) for v in self.vhes}
        self.lsmask = 0
        self.lscount = 0 if params.balancing is Balancing.NONE else len(self.vhes)
        self.carrier = False
        self.admin_up = params.admin_up
        self.suppressed = False  # sc_suppress: the carpdev's link is down (§4.8)
        self.demote_cnt = 0  # sc_demote_cnt (§5.1)
        self.sendad_errors = 0
        self.sendad_success = 0
        self.delayed_arp = DELAYED_ARP_OFF
        self.ierrors = 0
        self.oerrors = 0
        self.rejects = Rejects()  # noted by CarpHost's receive path
        self._ident: int | None = None
        self._reannounced = False  # since the leader's last advertisement (design decision 6)

    def _hmac_for(self, vhe: Vhe) -> HmacContexts:
        # §2.2 step 3: only the leader, and only for a custom lladdr that is neither its
        # virtual MAC nor the carpdev's real MAC (sc_realmac == 0)
        lladdr = self.params.lladdr
        custom = vhe.leader and lladdr is not None and lladdr not in (vhe.mac, self.dev.mac)
        return HmacContexts(self.key, vhe.vhid, self.v4, self.v6, lladdr if custom else None)

    # -- read-only views

    @property
    def is_running(self) -> bool:
        """UP|RUNNING (§4.3): up, not suppressed by the carpdev, with at least one address."""
        return self.admin_up and not self.suppressed and bool(self.v4 or self.v6)

    @property
    def families(self) -> tuple[int, ...]:
        return tuple(af for af, has in ((AF_INET, self.v4), (AF_INET6, self.v6)) if has)

    def vhe(self, vhid: int) -> CarpNode | None:
        return next((v for v in self.vhes if v.vhid == vhid), None)

    def deadline(self) -> float | None:
        armed = [d for d in (v.deadline() for v in self.vhes) if d is not None]
        return min(armed) if armed else None

    def interval(self, vhe: Vhe) -> float:
        return seconds(interval_us(self.advbase, vhe.advskew))

    def master_down(self, vhe: Vhe) -> float:
        return seconds(master_down_us(self.advbase, vhe.advskew))

    def log(self, level: int, message: str) -> Log:
        return Log(level, f"{self.name}: {message}")

    # -- state changes (carp_set_state, carp_update_lsmask, §4.11)

    def _changed(self, now: float, vhe: CarpNode, old: State, reason: Reason) -> list[Action]:
        if old is vhe.state:
            return []
        vhe.reason, vhe.changed_at = reason, now
        vhe.transitions += 1
        vhe.cause = None  # input() names the advertisement when one caused it
        vhe.conflicts.clear()  # a conflict lasts while we stay MASTER
        vhid = f" (vhid {vhe.vhid})" if len(self.vhes) > 1 else ""
        message = f"state transition{vhid}: {old} -> {vhe.state}"
        actions: list[Action] = [
            StateChanged(self.name, vhe.vhid, old, vhe.state, reason),
            self.log(state_log_level(old, vhe.state), message),
        ]
        if vhe.state is State.MASTER:
            self.env.stats.count("preempt")  # carps_preempt: every BACKUP -> MASTER (§8.2)
        if vhe.leader and vhe.state is not State.MASTER:
            self.delayed_arp = DELAYED_ARP_OFF  # going BACKUP (or INIT) cancels it (§7)
        actions += self._update_lsmask()
        carrier = any(v.state is State.MASTER for v in self.vhes)
        if carrier != self.carrier:
            self.carrier = carrier
            actions.append(CarrierChanged(self.name, carrier))
        return actions

    def _update_lsmask(self) -> list[Action]:
        """carp_update_lsmask: bit i set iff the vhe at sorted index i is MASTER here (§6.1)."""
        if self.balancing is Balancing.NONE:
            return []
        self.lsmask = sum(
            1 << i for i, v in enumerate(self.vhes[:CARP_MAXNODES]) if v.state is State.MASTER
        )
        self.lscount = len(self.vhes)
        return [self.log(LOG_DEBUG, f"carp_update_lsmask: {self.lsmask:x}")]

    def _to_init(self, now: float, vhe: CarpNode, reason: Reason) -> list[Action]:
        return self._changed(now, vhe, vhe.enter_init(), reason)

    def _to_backup(
        self, now: float, vhe: CarpNode, reason: Reason, families: Iterable[int] | None = None
    ) -> list[Action]:
        """carp_setrun BACKUP case: master-down timers for `families` (default: configured)."""
        fams = self.families if families is None else families
        return self._changed(now, vhe, vhe.enter_backup(now, self.master_down(vhe), fams), reason)

    def _master_down(self, now: float, vhe: CarpNode, reason: Reason) -> list[Action]:
        """carp_master_down (§4.5): only a BACKUP carpnode moves."""
        if vhe.state is not State.BACKUP:
            return []
        actions = self._changed(now, vhe, vhe.enter_master(now, self.interval(vhe)), reason)
        actions += self._send_ad(now, vhe)
        if self.balancing is Balancing.NONE and vhe.leader:
            actions += self._garp()
            self.delayed_arp = DELAYED_ARP_ADVERTS
            actions += self._unsolicited_na()
        return actions

    def setrun_all(self, now: float, reason: Reason) -> list[Action]:
        """carp_setrun_all(sc, 0) from INIT: every INIT carpnode goes BACKUP when running (§4.3)."""
        if not self.is_running:
            return []
        actions: list[Action] = []
        for vhe in self.vhes:
            if vhe.state is State.INIT:
                actions += self._to_backup(now, vhe, reason)
        return actions

    def all_init(self, now: float, reason: Reason) -> list[Action]:
        actions: list[Action] = []
        for vhe in self.vhes:
            actions += self._to_init(now, vhe, reason)
        return actions

    # -- advertisements (carp_send_ad, §1.3, §1.4, §4.6)

    def _next_ident(self) -> int:
        """IP ID: a per-interface counter seeded from the injected randomness (no ip_randomid)."""
        if self._ident is None:
            self._ident = int.from_bytes(self.env.draw()[:2], "big")
        self._ident = (self._ident + 1) & 0xFFFF
        return self._ident

    def _src_mac(self, vhe: Vhe) -> bytes:
        # design.md decision 4; arp mode sends each carpnode's adverts from its own MAC (§6.8)
        vmac = vhe.mac if self.balancing is Balancing.ARP else self.mac
        return source_mac(self.balancing, vmac, self.dev.mac)

    def _header(self, vhe: Vhe, bowout: bool) -> bytes:
        cookie = vhe.ensure_cookie(self.env.draw)
        if bowout:
            advbase = advskew = CARP_BOWOUT
        else:
            advbase, advskew = self.advbase, self.env.advertised_advskew(vhe.advskew)
        demote = min(self.env.demote_count(self.name), DEMOTE_MAX)
        md = self.hmac[vhe.vhid].generate(cookie)
        return CarpHeader(vhe.vhid, advskew, advbase, demote, cookie, md).pack()

    def _send_ad(self, now: float, vhe: CarpNode, bowout: bool = False) -> list[Action]:
        """One advertisement per configured family (IPv4 first), then re-arm (not on bow-out)."""
        kind = TxKind.BOWOUT if bowout else TxKind.ADVERT
        header = self._header(vhe, bowout)
        src_mac = self._src_mac(vhe)
        actions: list[Action] = []
        if self.v4:
            src4 = self.dev.ipv4 or self.params.v4[0]
            packet = build_ipv4(src4, self.peer, header, self._next_ident())
            dst_mac = mac_for_ip_dst(self.peer)
            next_hop = None if dst_mac is not None else self.peer
            frame = build_frame(dst_mac or UNRESOLVED_MAC, src_mac, ETH_P_IP, packet)
            actions.append(
                Transmit(self.carpdev, frame, kind, self.name, vhe.vhid, AF_INET, next_hop=next_hop)
            )
            if vhe.leader and not bowout:
                actions += self._delayed_arp_tick()
        if self.v6:
            src6 = self.dev.ipv6 or self.params.v6[0]
            packet = build_ipv6(src6, header)
            frame = build_frame(MAC_CARP_GROUP6, src_mac, ETH_P_IPV6, packet)
            actions.append(Transmit(self.carpdev, frame, kind, self.name, vhe.vhid, AF_INET6))
        if not bowout:
            vhe.rearm_ad(now, self.interval(vhe))
            if vhe.leader:
                self._reannounced = False
        return actions

    def _delayed_arp_tick(self) -> list[Action]:
        """§7: each later IPv4 advert of the leader counts down; at 0 the burst goes out again."""
        if self.delayed_arp > 0:
            self.delayed_arp -= 1
        if self.delayed_arp != 0:
            return []
        self.delayed_arp = DELAYED_ARP_OFF
        return self._garp()

    def _garp(self) -> list[Action]:
        """carp_send_arp: one gratuitous ARP request per IPv4 address (§7)."""
        eth_src = self._src_mac(self.leader)
        return [
            self._tx(l2.gratuitous_arp(self.mac, a, eth_src), TxKind.GARP, AF_INET)
            for a in self.params.v4
        ]

    def _unsolicited_na(self) -> list[Action]:
        """One unsolicited NA (Override, Router) to ff02::1 per configured IPv6 address (§7).

        The kernel sends it when the carp link comes up and includes the carp interface's
        link-local; our carp TAP has none (design.md), so only the configured addresses. Router
        is set as net.inet6.ip6.forwarding is on a gateway node (design.md decision 7).
        """
        eth_src = self._src_mac(self.leader)
        return [
            self._tx(l2.unsolicited_na(self.mac, a, True, eth_src), TxKind.UNSOL_NA, AF_INET6)
            for a in self.params.v6
        ]

    def _tx(self, frame: bytes, kind: TxKind, af: int) -> Transmit:
        return Transmit(self.carpdev, frame, kind, self.name, self.leader.vhid, af)

    def advertise_masters(self, now: float) -> list[Action]:
        """carp_vhe_send_ad_all: an immediate advert for every MASTER carpnode (§5.1 step 3)."""
        if not self.is_running:
            return []
        actions: list[Action] = []
        for vhe in self.vhes:
            if vhe.state is State.MASTER:
                actions += self._send_ad(now, vhe)
        return actions

    # -- events

    def handle_timer(self, now: float) -> list[Action]:
        actions: list[Action] = []
        for vhe in self.vhes:
            timer = vhe.due(now)
            if timer is Timer.AD:
                actions += self._send_ad(now, vhe)  # carp_timer_ad
            elif timer is not None:
                actions += self._master_down(now, vhe, Reason.MASTER_DOWN)  # carp_timer_down
        return actions

    def input(
        self, now: float, vhe: CarpNode, header: CarpHeader, af: int, src: str
    ) -> list[Action]:
        """State-machine processing of a valid advertisement (§4.4, carp_proto_input_c)."""
        vhe.heard(src, header, now)
        advert = Advert(
            self.advbase,
            vhe.advskew,
            self.env.demote_count(self.name),
            header.advbase,
            header.advskew,
            header.demote,
            self.env.preempt(),
        )
        outcome = decide(vhe.state, advert)
        decided = Decided(outcome.row, outcome.decision, src, now)
        vhe.decided = decided
        if outcome.decision is Decision.BECOME_BACKUP:
            assert outcome.reason is not None
            actions = self._to_backup(now, vhe, outcome.reason)
            vhe.cause = decided
            return actions
        if outcome.decision is Decision.BECOME_MASTER:
            assert outcome.reason is not None
            actions = self._master_down(now, vhe, outcome.reason)
            vhe.cause = decided
            return actions
        if outcome.decision is Decision.RESTART_MASTER_DOWN:
            vhe.restart_master_down(now, self.master_down(vhe), af)
        elif outcome.decision is Decision.STAY_MASTER:
            return self._conflict(now, vhe, header, src) + self._reannounce(vhe)
        return []

    def _conflict(self, now: float, vhe: CarpNode, header: CarpHeader, src: str) -> list[Action]:
        """A second master for our vhid (design.md §6, `conflict`): only masters advertise, so
        a valid, less preferred advertisement means a one-way link failure or the other side of
        a healed partition. At most once per own advertisement interval per peer; a bow-out
        (§4.7) is a master leaving, not a conflict."""
        if is_bowout(header.advbase, header.advskew):
            return []
        last = vhe.conflicts.get(src)
        if last is not None and now - last < self.interval(vhe):
            return []
        vhe.conflicts.pop(src, None)
        vhe.conflicts[src] = now
        while len(vhe.conflicts) > PEERS_KEPT:
            del vhe.conflicts[next(iter(vhe.conflicts))]
        h = header
        return [Conflict(self.name, vhe.vhid, src, h.advbase, h.advskew, h.demote, now)]

    def _reannounce(self, vhe: Vhe) -> list[Action]:
        """design.md decision 6: a split brain heals by the ordinary rules, and the winner
        re-announces its addresses.

        Only masters advertise, so a MASTER hearing a less preferred advertisement for its own
        vhid has just met the other side of a split brain: in mode `none` the leader sends the
        gratuitous ARPs and unsolicited NAs of a takeover again (at most once per advertisement
        interval), so switches move the virtual MAC back at once. If instead the loser hears
        the winner first, it yields silently and the winner cannot know; its periodic adverts,
        sent from the virtual MAC, then re-teach the switches. ip_carp.c does nothing here.
        """
        if self.balancing is not Balancing.NONE or not vhe.leader or self._reannounced:
            return []
        self._reannounced = True
        return self._garp() + self._unsolicited_na()

    def reconfigure(self, now: float, params: CarpIfParams) -> list[Action]:
        """SIOCSVH with `keeps_state` parameters: new advbase, advskews, key and peer, then
        carp_setrun_all(sc, 0): a MASTER re-arms its advertisement timer and a BACKUP its
        master-down timers with the new interval; no carpnode changes state (§4.9)."""
        if params.name != self.name or not keeps_state(self.params, params):
            raise ValueError(f"{self.name}: this change needs the interface to be replaced")
        self.params = params
        self.advbase = params.advbase
        advskews = {n.vhid: n.advskew for n in params.carpnodes}
        for vhe in self.vhes:
            vhe.advskew = advskews[vhe.vhid]
        self.peer = params.carppeer or CARP_GROUP4
        self.peer_is_multicast = self.peer.is_multicast
        self.key = carp_key(params.passphrase)
        self.hmac_inner = inner_words(self.key)
        self.hmac = {v.vhid: self._hmac_for(v) for v in self.vhes}  # carp_hmac_prepare
        for vhe in self.vhes:
            if vhe.state is State.MASTER:
                vhe.rearm_ad(now, self.interval(vhe))
            elif vhe.state is State.BACKUP:
                for af in self.families:
                    vhe.restart_master_down(now, self.master_down(vhe), af)
        return []

    def set_admin(self, now: float, up: bool) -> list[Action]:
        """`ifconfig carpN up|down` (§4.7): down bows out of every MASTER carpnode, then INIT."""
        if up == self.admin_up:
            return []
        actions: list[Action] = []
        if up:
            self.admin_up = True
            return self.setrun_all(now, Reason.START)
        if self.leader.state is not State.INIT:
            for vhe in self.vhes:
                if vhe.state is State.MASTER:
                    actions += self._send_ad(now, vhe, bowout=True)
        self.admin_up = False
        return actions + self.all_init(now, Reason.DOWN)

    def force_state(self, now: float, state: State) -> list[Action]:
        """`ifconfig carpN state backup|master` (§4.10); INIT and a no-op request do nothing."""
        if self.leader.state is State.INIT or self.leader.state is state:
            return []
        actions: list[Action] = []
        if state is State.BACKUP:
            for vhe in self.vhes:
                actions += self._to_backup(now, vhe, Reason.FORCED)
        elif state is State.MASTER:
            for vhe in self.vhes:
                actions += self._master_down(now, vhe, Reason.FORCED)
        return actions

    def set_carpdev_link(self, now: float, up: bool) -> list[Action]:
        """carp_carpdev_state (§4.8): down -> INIT, suppressed, demote +1; up -> BACKUP, -1."""
        if not up:
            actions = self.all_init(now, Reason.LINK_DOWN)
            if self.suppressed:
                return actions
            self.suppressed = True
            return actions + self.env.adjust_demote(now, self.name, +1, "carpdev")
        if not self.suppressed:
            return []
        self.suppressed = False
        actions = self.setrun_all(now, Reason.LINK_UP)
        return actions + self.env.adjust_demote(now, self.name, -1, "carpdev")

    def transmit_result(self, now: float, action: Transmit, error: int | None) -> list[Action]:
        """Send-error accounting of carp_send_ad (§4.6) for one ADVERT/BOWOUT frame."""
        six = "6" if action.af == AF_INET6 else ""
        limit = SENDAD_FACTOR * len(self.vhes)
        if error is None:
            self.env.stats.count("opackets6" if six else "opackets")
            if self.sendad_errors < limit:
                self.sendad_errors = 0
                return []
            self.sendad_success += 1
            if self.sendad_success < limit:
                return []
            self.sendad_errors = self.sendad_success = 0
            return self.env.adjust_demote(now, self.name, -1, f"< snd{six}errors")
        if error == errno.EHOSTDOWN and action.next_hop is not None:
            return []  # a unicast peer being down is not our fault
        actions: list[Action] = []
        if error == errno.ENOBUFS:
            self.env.stats.count("onomem")
        else:
            actions.append(self.log(LOG_WARNING, f"ip{six}_output failed: {error}"))
        self.oerrors += 1
        self.sendad_errors += 1
        self.sendad_success = 0
        if self.sendad_errors == limit:
            actions += self.env.adjust_demote(now, self.name, +1, f"> snd{six}errors")
        return actions

    # -- receive-side logging helpers used by the host pipeline

    def bad_version(self, version: int) -> Log:
        self.ierrors += 1
        return self.log(LOG_NOTICE, f"invalid version {version} != 2")

    def bad_auth(self) -> Log:
        self.ierrors += 1
        return self.log(LOG_INFO, "incorrect hash")

    def loop_detected(self) -> Log:
        self.ierrors += 1
        return self.log(LOG_WARNING, "replay or network loop detected")
