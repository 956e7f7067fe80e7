"""Hypothesis: every (state, event) pair and random event sequences keep the invariants.

Invariants checked after every step, for every carpnode of the interface:
- its state is INIT, BACKUP or MASTER;
- MASTER iff the advertisement timer is armed (and then no master-down timer);
- BACKUP iff a master-down timer is armed (and then no advertisement timer);
- INIT has no timer; an interface that is not running has only INIT carpnodes, and a running
  one (after start) has none;
- every deadline lies in the future of the driver (`get_timer() > now`), and handle_timer(t)
  fires everything due at t (a driver re-arming from get_timer() never busy-loops);
- carrier == any carpnode MASTER, and CarrierChanged/StateChanged actions agree with it;
- lsmask/lscount match the states (0/0 without balancing);
- nothing raises.
"""

import errno
import itertools
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carp.actions import Action, CarrierChanged, StateChanged, Transmit, TxKind
from carp.constants import Balancing, State
from carp.host import CarpHost
from carp.params import Sysctls
from carp.vhe import AF_INET6
from tests.carp.sim import advert, carpdev, ifparams

PASS = b"hypothesis"
EVENTS = (
    "timer",
    "advert-better",
    "advert-worse",
    "advert-equal",
    "advert-more-demoted",
    "advert-less-demoted",
    "advert-bowout",
    "link-down",
    "link-up",
    "force-master",
    "force-backup",
    "admin-down",
    "admin-up",
    "send-error",
    "send-ok",
    "demote-group",
    "undemote-group",
    "toggle-preempt",
)


@dataclass(frozen=True)
class Config:
    skews: tuple[int, ...]
    dual: bool
    balancing: Balancing
    preempt: bool
    advbase: int


configs = st.builds(
    Config,
    skews=st.lists(st.integers(0, 254), min_size=1, max_size=3).map(tuple),
    dual=st.booleans(),
    balancing=st.sampled_from(list(Balancing)),
    preempt=st.booleans(),
    advbase=st.sampled_from([0, 1, 2]),
)


class Harness:
    """One CarpHost with carp0 on lan0, driven like the real driver would."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        nodes = ",".join(f"{i + 1}:{s}" for i, s in enumerate(cfg.skews))
        addresses = ("192.0.2.10/24", "2001:db8::10/64") if cfg.dual else ("192.0.2.10/24",)
        self.v6 = ["2001:db8::10"] if cfg.dual else []
        balancing = cfg.balancing
        params = ifparams(
            addresses=addresses,
            nodes=nodes,
            advbase=cfg.advbase,
            passphrase=PASS,
            balancing=balancing,
        )
        counter = itertools.count(1)
        self.host = CarpHost(
            Sysctls(preempt=cfg.preempt, log=7),
            [params],
            {"lan0": carpdev("lan0", 1, "192.0.2.1", "fe80::1")},
            lambda: next(counter).to_bytes(8, "big"),
        )
        self.sc = self.host.carpifs["carp0"]
        self.now = 0.0
        self.carrier = False
        self.states = {v.vhid: v.state for v in self.sc.vhes}
        self.last_ad: Transmit | None = None
        self.started = False

    def start(self) -> None:
        self.started = True
        self.apply(self.host.start(self.now))

    # -- driving

    def apply(self, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, StateChanged):
                assert a.carpif == "carp0"
                assert a.old is not a.new
                assert self.states[a.vhid] is a.old
                self.states[a.vhid] = a.new
            elif isinstance(a, CarrierChanged):
                assert a.up is not self.carrier
                self.carrier = a.up
            elif isinstance(a, Transmit) and a.kind is TxKind.ADVERT:
                self.last_ad = a

    def fire_due(self, until: float) -> None:
        """What the driver's timer does: fire every deadline up to `until`, in order."""
        for _ in range(10_000):
            deadline = self.host.get_timer()
            if deadline is None or deadline > until:
                break
            self.now = deadline
            self.apply(self.host.handle_timer(deadline))
            after = self.host.get_timer()
            assert after is None or after > deadline  # everything due fired: no busy loop
        self.now = until

    def step(self, event: str, vhid_index: int, frac: float, six: bool) -> None:
        """`frac` of the leader's master-down time passes (timers fire), then `event`."""
        self.fire_due(self.now + frac * self.sc.master_down(self.sc.leader))
        self.apply(self.event(event, vhid_index, six))
        self.check()

    def _advert(self, vhid_index: int, six: bool, advbase: int, advskew: int, demote: int) -> bytes:
        vhe = self.sc.vhes[vhid_index % len(self.sc.vhes)]
        src = "fe80::99" if six and self.v6 else "192.0.2.99"
        return advert(
            vhid=vhe.vhid,
            advskew=advskew,
            advbase=advbase,
            demote=demote,
            passphrase=PASS,
            v6=self.v6,
            src=src,
        )

    def event(self, event: str, vhid_index: int, six: bool) -> list[Action]:
        host, now = self.host, self.now
        vhe = self.sc.vhes[vhid_index % len(self.sc.vhes)]
        base, skew = self.cfg.advbase, vhe.advskew
        d_local = host.demote_count("carp0")
        better = (base, skew - 1) if skew else (base - 1, 254)
        adverts: dict[str, Callable[[], tuple[int, int, int]]] = {
            "advert-better": lambda: (*better, d_local),
            "advert-worse": lambda: (base, skew + 1, d_local),
            "advert-equal": lambda: (base, skew, d_local),
            "advert-more-demoted": lambda: (base, skew, min(d_local + 1, 255)),
            "advert-less-demoted": lambda: (base, skew, max(d_local - 1, 0)),
            "advert-bowout": lambda: (255, 255, d_local),
        }
        if event in adverts:
            advbase, advskew, demote = adverts[event]()
            if advbase < 0:  # nothing is better than (0, 0): send an equal one instead
                advbase, advskew = 0, 0
            packet = self._advert(vhid_index, six, advbase, advskew, demote)
            return host.receive(now, "lan0", packet)
        simple: dict[str, Callable[[], list[Action]]] = {
            "timer": lambda: self._timer(),
            "link-down": lambda: host.set_carpdev_link(now, "lan0", False),
            "link-up": lambda: host.set_carpdev_link(now, "lan0", True),
            "force-master": lambda: host.force_state(now, "carp0", State.MASTER),
            "force-backup": lambda: host.force_state(now, "carp0", State.BACKUP),
            "admin-down": lambda: host.set_admin(now, "carp0", False),
            "admin-up": lambda: host.set_admin(now, "carp0", True),
            "send-error": lambda: host.transmit_result(now, self._ad(six), errno.EIO),
            "send-ok": lambda: host.transmit_result(now, self._ad(six), None),
            "demote-group": lambda: self._group(+1),
            "undemote-group": lambda: self._group(-1),
            "toggle-preempt": lambda: host.set_sysctl(now, "preempt", int(not host.preempt())),
        }
        return simple[event]()

    def _timer(self) -> list[Action]:
        deadline = self.host.get_timer()
        if deadline is None:
            return []
        self.now = deadline
        return self.host.handle_timer(deadline)

    def _ad(self, six: bool) -> Transmit:
        if self.last_ad is not None:
            return self.last_ad
        af = AF_INET6 if six else 4
        return Transmit("lan0", b"", TxKind.ADVERT, "carp0", self.sc.leader.vhid, af)

    def _group(self, adj: int) -> list[Action]:
        value = self.host.groups["carp"] + adj
        if not 0 <= value <= 255:
            with pytest.raises(ValueError):
                self.host.group_demote(self.now, "carp", adj)
            return []
        return self.host.group_demote(self.now, "carp", adj)

    # -- invariants

    def check(self) -> None:
        sc = self.sc
        for v in sc.vhes:
            assert v.state in (State.INIT, State.BACKUP, State.MASTER)
            assert self.states[v.vhid] is v.state
            master_down = v.md is not None or v.md6 is not None
            assert (v.ad is not None) == (v.state is State.MASTER), v
            assert master_down == (v.state is State.BACKUP), v
            if v.state is State.INIT:
                assert v.deadline() is None
            if not sc.is_running:
                assert v.state is State.INIT
            elif self.started:
                assert v.state is not State.INIT  # running: setrun moved it out of INIT
        deadline = self.host.get_timer()
        assert deadline is None or deadline > self.now
        masters = [v.state is State.MASTER for v in sc.vhes]
        assert sc.carrier == any(masters) == self.carrier
        if sc.balancing is Balancing.NONE:
            assert (sc.lsmask, sc.lscount) == (0, 0)
        else:
            assert sc.lsmask == sum(1 << i for i, m in enumerate(masters) if m)
            assert sc.lscount == len(sc.vhes)
        assert 0 <= self.host.demote_count("carp0") <= 255


def prepare(h: Harness, state: State, init_via: str) -> None:
    """Bring the leader into `state` the way a node gets there."""
    if state is State.INIT:
        if init_via == "admin-down":
            h.start()
            h.apply(h.host.set_admin(h.now, "carp0", False))
        elif init_via == "link-down":
            h.start()
            h.apply(h.host.set_carpdev_link(h.now, "lan0", False))
        return
    h.start()
    if state is State.MASTER:
        h.apply(h.host.force_state(h.now, "carp0", State.MASTER))
    assert h.sc.leader.state is state
    h.check()


@pytest.mark.parametrize("event", EVENTS)
@pytest.mark.parametrize("state", list(State), ids=str)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cfg=configs,
    init_via=st.sampled_from(["fresh", "admin-down", "link-down"]),
    vhid_index=st.integers(0, 2),
    frac=st.floats(0.0, 1.5),
    six=st.booleans(),
)
def test_every_state_event_pair(
    state: State, event: str, cfg: Config, init_via: str, vhid_index: int, frac: float, six: bool
) -> None:
    h = Harness(cfg)
    prepare(h, state, init_via)
    h.apply(h.event(event, vhid_index, six))  # at once, in exactly that state
    h.check()
    h.step(event, vhid_index, frac, six)  # and again, after time has passed
    h.step("timer", 0, 0.0, six)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cfg=configs,
    steps=st.lists(
        st.tuples(st.sampled_from(EVENTS), st.integers(0, 2), st.floats(0.0, 1.5), st.booleans()),
        max_size=40,
    ),
)
def test_random_event_sequences(cfg: Config, steps: list[tuple[str, int, float, bool]]) -> None:
    h = Harness(cfg)
    h.start()
    h.check()
    for event, vhid_index, frac, six in steps:
        h.step(event, vhid_index, frac, six)
