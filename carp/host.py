"""CarpHost: one CARP node, the core's single entry object (docs/architecture.md).

It holds the sysctls (§8.1), the interface groups and their demote counters (§5), carpstats
(§8.2) and every carp interface, runs the receive pipeline of §1.6 in the kernel's order, and
filters Log actions by the `log` sysctl (§8.3). Everything is sans-IO: each entry point takes
`now` and returns the actions for the driver; `get_timer()` says when to call `handle_timer`.
"""

import heapq
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import ClassVar, NamedTuple

from carp.actions import Action, DemoteChanged, Log, Reason, Transmit, TxKind
from carp.carpif import DEMOTE_MAX, CarpInterface, CarpNode, Rejects
from carp.constants import (
    CARP_VERSION,
    LOG_ERR,
    LOG_INFO,
    LOG_NOTICE,
    State,
)
from carp.params import CarpDev, CarpIfParams, Sysctls
from carp.stats import CarpStats
from carp.vhe import AF_INET6
from carp.wire import IPAddress, Parsed, Receiver, Verdict, address_text, parse_ip, receiver_of

SUPPRESSED_ADVSKEW = 240  # design.md decision 5 (carp(4) <= 4.7, ip_carp.c rev 1.94)
SYSCTL_PREFIX = "net.inet.carp."
ADMIN_DEMOTE_RANGE = range(0, DEMOTE_MAX + 1)  # if_setgroupattribs keeps a group in 0..255


class _Route(NamedTuple):
    receiver: Receiver  # what ip_input takes as its own on the carpdev
    vhids: dict[tuple[bool | None, int], tuple[CarpInterface, CarpNode]]  # (peer kind, vhid)


class CarpHost:
    """The whole node: sysctls, groups and demotion, statistics, all carp interfaces."""

    SYSCTLS: ClassVar[tuple[str, ...]] = ("allow", "preempt", "log")

    def __init__(
        self,
        sysctls: Sysctls,
        carpifs: Sequence[CarpIfParams],
        carpdevs: Mapping[str, CarpDev],
        cookie: Callable[[], bytes],
    ) -> None:
        self.sysctls = sysctls
        self.stats = CarpStats()
        self._cookie = cookie
        self.carpdevs = dict(carpdevs)
        self.link: dict[str, bool] = dict.fromkeys(self.carpdevs, True)
        self.carpifs: dict[str, CarpInterface] = {}
        self.groups: dict[str, int] = {"carp": 0}  # the carp family group always exists
        for params in carpifs:
            if params.name in self.carpifs:
                raise ValueError(f"duplicate carp interface {params.name}")
            if params.carpdev not in self.carpdevs:
                raise ValueError(f"{params.name}: unknown carpdev {params.carpdev}")
            sc = CarpInterface(params, self.carpdevs[params.carpdev], self)
            self.carpifs[sc.name] = sc
            for group in sc.groups:
                self.groups.setdefault(group, 0)
        self._by_dev: dict[str, list[CarpInterface]] = {}
        self._routes: dict[str, _Route] = {}  # carpdev -> receive lookups; cleared on change
        self.rejects: dict[str, Rejects] = {}  # carpdev -> refusals no carp interface claims
        # the earliest deadline of every carp interface, cached: with 255 of them a walk over
        # all costs ~200 us, once per timer event and per advertisement received (timers)
        self._timers: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []  # (deadline, name); stale entries skipped
        self._order: dict[str, int] = {}  # configuration order: the order actions come in
        self._stale: set[str] = set()  # interfaces whose deadline may have moved
        self._all_stale = True  # anything but a timer or an advertisement: recompute all
        for sc in sorted(self.carpifs.values(), key=lambda c: c.leader.vhid):
            used = {v.vhid for other in self._by_dev.get(sc.carpdev, []) for v in other.vhes}
            if clash := used & {v.vhid for v in sc.vhes}:
                # carp_vhids_ioctl: a vhid already used on the same parent is EINVAL
                raise ValueError(f"{sc.name}: vhid {min(clash)} already used on {sc.carpdev}")
            self._by_dev.setdefault(sc.carpdev, []).append(sc)

    # -- HostEnv (what the carp interfaces ask of the node)

    def preempt(self) -> bool:
        return self.sysctls.preempt

    def draw(self) -> bytes:
        return self._cookie()

    def demote_count(self, carpif: str) -> int:
        """D_local (carp_group_demote_count, §5.1): the sum over the interface's groups, or its
        own counter when that sum is 0, capped at 255."""
        sc = self.carpifs[carpif]
        total = sum(self.groups[g] for g in sc.groups)
        return min(total or sc.demote_cnt, DEMOTE_MAX)

    def any_carpdev_down(self) -> bool:
        return any(not self.link[dev] for dev in self._by_dev)

    def advertised_advskew(self, advskew: int) -> int:
        """design.md decision 5: while preempt is on and any carpdev of the node is down, every
        carp interface advertises advskew max(240, own).

        Our choice: only the advertised value changes (carp(4)'s description); the interval we
        send at and the advskew we compare with in §4.4 stay the configured ones, as in current
        ip_carp.c. Demotion (§4.8) moves the addresses anyway; the 240 makes an old-style peer
        with preempt take over too.
        """
        if self.sysctls.preempt and self.any_carpdev_down():
            return max(SUPPRESSED_ADVSKEW, advskew)
        return advskew

    def adjust_demote(self, now: float, carpif: str, adj: int, reason: str) -> list[Action]:
        """carp_group_demote_adj (§5.1) for a kernel-internal reason: counters floor at 0; a
        0 -> 1 group transition makes every MASTER carpnode advertise at once."""
        self._all_stale = True
        sc = self.carpifs[carpif]
        sc.demote_cnt = max(0, sc.demote_cnt + adj)
        actions: list[Action] = []
        became_one = False
        for group in sc.groups:
            value = max(0, self.groups[group] + adj)
            self.groups[group] = value
            became_one = became_one or (adj > 0 and value == 1)
            actions.append(DemoteChanged(group, adj, value, reason, carpif))
            message = f"{carpif} demoted group {group} by {adj} to {value} ({reason})"
            actions.append(sc.log(LOG_ERR, message))
        if became_one:
            actions += self._send_ad_all(now)
        return actions

    def _send_ad_all(self, now: float) -> list[Action]:
        actions: list[Action] = []
        for sc in self.carpifs.values():
            actions += sc.advertise_masters(now)
        return actions

    # -- entry points

    def start(self, now: float) -> list[Action]:
        """Every running interface INIT -> BACKUP; MASTER only after master-down (§4.3)."""
        self._all_stale = True
        return self._entry(now, lambda sc: sc.setrun_all(now, Reason.START))

    def get_timer(self) -> float | None:
        self._retime()
        heap, timers = self._heap, self._timers
        while heap and timers.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)  # an interface's deadline that has moved since
        return heap[0][0] if heap else None

    def handle_timer(self, now: float) -> list[Action]:
        """The interfaces whose earliest deadline has come (the others have nothing due)."""
        self._retime()
        heap, timers = self._heap, self._timers
        due: set[str] = set()
        while heap and heap[0][0] <= now:
            deadline, name = heapq.heappop(heap)
            if timers.get(name) == deadline:
                del timers[name]  # recomputed below, pushed again
                due.add(name)
        self._stale |= due  # before any of them runs: one that raises must not lose the rest
        actions: list[Action] = []
        for name in sorted(due, key=self._order.__getitem__):
            actions += self.carpifs[name].handle_timer(now)
        return self._filter(actions)

    def _retime(self) -> None:
        """Bring the cached deadlines up to date with what changed since the last call."""
        if self._all_stale:
            self._all_stale = False
            self._stale.clear()
            self._order = {name: i for i, name in enumerate(self.carpifs)}
            self._timers = {
                name: d for name, sc in self.carpifs.items() if (d := sc.deadline()) is not None
            }
            self._heap = [(d, name) for name, d in self._timers.items()]
            heapq.heapify(self._heap)
            return
        for name in self._stale:
            sc = self.carpifs.get(name)
            d = sc.deadline() if sc is not None else None
            if d is None:
                self._timers.pop(name, None)
            elif self._timers.get(name) != d:
                self._timers[name] = d
                heapq.heappush(self._heap, (d, name))
        self._stale.clear()
        if len(self._heap) > 2 * len(self._timers) + 64:  # stale entries pile up: rebuild
            self._heap = [(d, name) for name, d in self._timers.items()]
            heapq.heapify(self._heap)

    def receive(self, now: float, carpdev: str, ip_packet: bytes) -> list[Action]:
        """One protocol-112 packet from the switch `carpdev`: first the IP layer's checks
        (a drop is counted in `stats.ip_drops` only), then §1.6 in order, then §4.4."""
        return self._filter(self._receive(now, carpdev, ip_packet))

    def transmit_result(self, now: float, action: Transmit, error: int | None) -> list[Action]:
        """The driver's report for an ADVERT/BOWOUT frame: opackets, send-error demotion."""
        sc = self.carpifs.get(action.carpif)
        if sc is None or action.kind not in (TxKind.ADVERT, TxKind.BOWOUT):
            return []
        self._stale.add(sc.name)
        return self._filter(sc.transmit_result(now, action, error))

    def set_carpdev_link(self, now: float, carpdev: str, up: bool) -> list[Action]:
        """§4.8 for every carp interface on `carpdev`."""
        self._all_stale = True
        if carpdev not in self.link:
            raise ValueError(f"unknown carpdev {carpdev}")
        self.link[carpdev] = up
        actions: list[Action] = []
        for sc in self._by_dev.get(carpdev, []):
            actions += sc.set_carpdev_link(now, up)
        return self._filter(actions)

    def force_state(self, now: float, carpif: str, state: State) -> list[Action]:
        self._all_stale = True
        return self._filter(self._carpif(carpif).force_state(now, state))

    def set_admin(self, now: float, carpif: str, up: bool) -> list[Action]:
        self._all_stale = True
        return self._filter(self._carpif(carpif).set_admin(now, up))

    def group_demote(self, now: float, group: str, adj: int, reason: str = "admin") -> list[Action]:
        """`ifconfig -g <group> carpdemote [adj]` (§5.2): the result must stay in 0..255.

        if_setgroupattribs then hands a positive change to every member (carp_ifgattr_ioctl),
        and each running member advertises its MASTER carpnodes at once.
        """
        self._all_stale = True
        if group not in self.groups:
            raise ValueError(f"no interface group {group}")
        value = self.groups[group] + adj
        if value not in ADMIN_DEMOTE_RANGE:
            raise ValueError(f"demote counter of group {group} would be {value}, not in 0..255")
        self.groups[group] = value
        actions: list[Action] = [
            DemoteChanged(group, adj, value, reason),
            Log(LOG_ERR, f"carp: group {group} demoted by {adj} to {value} ({reason})"),
        ]
        if adj > 0:
            for sc in self.carpifs.values():
                if group in sc.groups:
                    actions += sc.advertise_masters(now)
        return self._filter(actions)

    def set_sysctl(self, now: float, name: str, value: int) -> list[Action]:
        """net.inet.carp.{allow,preempt,log} at runtime (§8.1); takes effect from now on."""
        self._all_stale = True
        short = name.removeprefix(SYSCTL_PREFIX)
        if short not in self.SYSCTLS:
            raise ValueError(f"unknown sysctl {name}")
        if short == "log":
            self.sysctls = replace(self.sysctls, log=int(value))
        elif short == "allow":
            self.sysctls = replace(self.sysctls, allow=bool(value))
        else:
            self.sysctls = replace(self.sysctls, preempt=bool(value))
        return []

    def replace_carpif(self, now: float, name: str, params: CarpIfParams | None) -> list[Action]:
        """Reconfigure a carp interface (§4.9; ifconfig options, a reload); None destroys it.

        The new parameters are validated before anything changes. The old interface's carpnodes
        go INIT (their timers and cookies end, no bow-out, as SIOCSIFADDR / carp_vhids_ioctl
        do) and the demotion it held leaves with it (detach); the new one starts and, when
        running, goes BACKUP. A name not yet known adds an interface.
        """
        self._all_stale = True
        old = self.carpifs.get(name)
        new: CarpInterface | None = None
        if params is not None:
            if params.name != name:
                raise ValueError(f"{name}: parameters are for {params.name}")
            if params.carpdev not in self.carpdevs:
                raise ValueError(f"{name}: unknown carpdev {params.carpdev}")
            new = CarpInterface(params, self.carpdevs[params.carpdev], self)
            used = {
                v.vhid
                for other in self._by_dev.get(params.carpdev, [])
                if other.name != name
                for v in other.vhes
            }
            if clash := used & {v.vhid for v in new.vhes}:
                raise ValueError(f"{name}: vhid {min(clash)} already used on {params.carpdev}")
        actions: list[Action] = []
        self._routes.clear()
        if old is not None:
            actions += old.all_init(now, Reason.RECONFIG)
            if old.demote_cnt:
                actions += self.adjust_demote(now, name, -old.demote_cnt, "detach")
            self._by_dev[old.carpdev].remove(old)
        if new is None:
            self.carpifs.pop(name, None)
            return self._filter(actions)
        # keep the interface's place in configuration order
        self.carpifs = {n: (new if n == name else sc) for n, sc in self.carpifs.items()}
        self.carpifs.setdefault(name, new)
        for group in new.groups:
            self.groups.setdefault(group, 0)
        ifs = self._by_dev.setdefault(new.carpdev, [])
        ifs.append(new)
        ifs.sort(key=lambda c: c.leader.vhid)
        if not self.link[new.carpdev]:
            actions += new.set_carpdev_link(now, False)
        actions += new.setrun_all(now, Reason.START)
        return self._filter(actions)

    def update_carpif(self, now: float, name: str, params: CarpIfParams) -> list[Action]:
        """An ifconfig option or reload that only changes advbase, advskews, pass or carppeer
        (`carpif.keeps_state`): applied in place, every carpnode keeps its state and cookie
        (§4.9, SIOCSVH). ValueError for any other change; use `replace_carpif` for those."""
        self._all_stale = True
        self._routes.clear()  # carppeer may change the peer kind
        return self._filter(self._carpif(name).reconfigure(now, params))

    def shutdown(self, now: float) -> list[Action]:
        """Bow out of everything (SIGTERM): `down` on every carp interface (§4.7)."""
        self._all_stale = True
        return self._entry(now, lambda sc: sc.set_admin(now, False))

    # -- internals

    def _carpif(self, name: str) -> CarpInterface:
        if name not in self.carpifs:
            raise ValueError(f"no carp interface {name}")
        return self.carpifs[name]

    def _entry(self, now: float, each: Callable[[CarpInterface], list[Action]]) -> list[Action]:
        actions: list[Action] = []
        for sc in self.carpifs.values():
            actions += each(sc)
        return self._filter(actions)

    def _filter(self, actions: list[Action]) -> list[Action]:
        """Log actions pass iff level <= net.inet.carp.log (CARP_LOG, §8.3)."""
        limit = self.sysctls.log
        return [a for a in actions if not isinstance(a, Log) or a.level <= limit]

    def _reject(self, counter: str, log: Log | None = None) -> list[Action]:
        self.stats.count(counter)
        return [log] if log is not None else []

    def _route(self, carpdev: str) -> _Route:
        """What a packet on `carpdev` is checked against, built once per configuration (the
        receive path must not walk every carp interface: 255 vhids, 255 packets a second)."""
        route = self._routes.get(carpdev)
        if route is None:
            ifs = self._by_dev.get(carpdev, [])
            table: dict[tuple[bool | None, int], tuple[CarpInterface, CarpNode]] = {}
            for sc in ifs:  # sorted by leader vhid: the first with the vhid takes it (§1.6)
                for vhe in sc.vhes:
                    table.setdefault((None, vhe.vhid), (sc, vhe))  # IPv6: any peer kind
                    table.setdefault((sc.peer_is_multicast, vhe.vhid), (sc, vhe))
            route = self._routes[carpdev] = _Route(self._receiver(carpdev), table)
        return route

    def _receiver(self, carpdev: str) -> Receiver:
        """What ip_input on `carpdev` takes as its own: the carpdev's addresses, the CARP groups
        and the multicast carppeers its carp interfaces joined (carp_join_multicast)."""
        dev = self.carpdevs.get(carpdev)
        addresses: set[IPAddress] = set()
        if dev is not None:
            addresses.update(a for a in (dev.ipv4, dev.ipv6) if a is not None)
            addresses.update(dev.local)
        addresses.update(sc.peer for sc in self._by_dev.get(carpdev, []) if sc.peer_is_multicast)
        return receiver_of(addresses)

    def _receive(self, now: float, carpdev: str, packet: bytes) -> list[Action]:
        route = self._route(carpdev)
        parsed = parse_ip(packet, route.receiver)
        if not parsed.carp:
            return []  # not protocol 112: the kernel would never have handed it to carp
        if parsed.ip_drop is not None:
            # ip_input / ip6_input drop it before carp_proto_input: no carpstats counter moves
            self.stats.ip_drops.count(parsed.ip_drop)
            self._note(now, carpdev, route, parsed, f"ip-{parsed.ip_drop}")
            return []
        self.stats.count("ipackets6" if parsed.af == AF_INET6 else "ipackets")
        if not self.sysctls.allow:
            return []
        ifs = self._by_dev.get(carpdev, [])
        if not self._acceptable_if(parsed, ifs):
            message = "carp: packet received on non-carp interface"
            return self._reject("badif", Log(LOG_INFO, message))
        early = self._ip_verdict(parsed, carpdev, len(packet))
        if early is not None:
            self._note(now, carpdev, route, parsed, parsed.verdict.value)
            return early
        header = parsed.header
        assert header is not None  # ACCEPT always carries the header
        # §1.6 common step 1: the first interface on this carpdev (sorted by leader vhid)
        # whose peer kind matches and that has the vhid
        found = route.vhids.get((None if parsed.af == AF_INET6 else parsed.ismulti, header.vhid))
        if found is None:
            self._note(now, carpdev, route, parsed, "badvhid")
            return self._reject("badvhid")
        sc, vhe = found
        self._stale.add(sc.name)  # its master-down timer restarts, or its state changes
        if not sc.is_running:
            sc.rejects.note(now, str(parsed.src), "badvhid", vhe.vhid, "not running")
            return self._reject("badvhid")
        if header.version != CARP_VERSION:
            sc.rejects.note(now, str(parsed.src), "badver", vhe.vhid, f"version {header.version}")
            return self._reject("badver", sc.bad_version(header.version))
        if not sc.hmac[vhe.vhid].verify(header.counter, header.md):
            sc.rejects.note(now, str(parsed.src), "badauth", vhe.vhid)
            return self._reject("badauth", sc.bad_auth())
        if vhe.is_own(header.counter):
            sc.rejects.note(now, str(parsed.src), "loop", vhe.vhid)
            return self._reject("badauth", sc.loop_detected())  # simplex parent: counted too
        return sc.input(now, vhe, header, parsed.af, address_text(parsed.src))

    def _note(self, now: float, carpdev: str, route: _Route, parsed: Parsed, reason: str) -> None:
        """Remember a refused advertisement for `explain`: on the carp interface of `carpdev`
        its vhid names, else (no header, a vhid nobody has here) on the carpdev itself."""
        header = parsed.header
        vhid = header.vhid if header is not None else None
        found = None
        detail = f"ttl {parsed.ttl}" if parsed.verdict is Verdict.BADTTL else ""
        if vhid is not None:
            found = route.vhids.get((None if parsed.af == AF_INET6 else parsed.ismulti, vhid))
            if reason == "badvhid":
                detail = f"vhid {vhid}"
                if found is None and (None, vhid) in route.vhids:
                    # §1.6 step 1: a multicast advert never matches a unicast carppeer
                    found = route.vhids[(None, vhid)]
                    sent = "multicast" if parsed.ismulti else "unicast"
                    detail = f"vhid {vhid} sent {sent}, carppeer differs"
        source = str(parsed.src) if parsed.src is not None else "?"
        record = found[0].rejects if found is not None else self.rejects.get(carpdev)
        if record is None:
            record = self.rejects[carpdev] = Rejects()
        record.note(now, source, reason, vhid, detail)

    @staticmethod
    def _acceptable_if(parsed: Parsed, ifs: list[CarpInterface]) -> bool:
        """§1.6 IPv4 step 4 / IPv6 step 3: multicast reaches every UP carp interface; IPv4
        unicast is accepted on a parent with carp interfaces; IPv6 only via a carp interface,
        so an IPv6 unicast (to the parent's own address: it has no carppeer) is badif."""
        if parsed.af == AF_INET6:
            multicast = parsed.dst is not None and parsed.dst.is_multicast
            return multicast and any(sc.admin_up for sc in ifs)
        return parsed.ismulti or bool(ifs)

    def _ip_verdict(self, parsed: Parsed, carpdev: str, size: int) -> list[Action] | None:
        """§1.6 IPv4 steps 5-7 / IPv6 steps 4-6 as parse_ip judged them; None: accepted."""
        verdict = parsed.verdict
        if verdict is Verdict.ACCEPT:
            return None
        logged = {
            Verdict.BADTTL: (LOG_NOTICE, f"carp: received ttl {parsed.ttl} != 255 on {carpdev}"),
            Verdict.BADLEN: (LOG_INFO, f"carp: packet size {size} too small"),
            Verdict.BADSUM: (LOG_INFO, f"carp: checksum failed on {carpdev}"),
        }.get(verdict)
        # Verdict values are the carpstats counter names
        return self._reject(verdict.value, Log(*logged) if logged else None)
