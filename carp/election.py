"""The decision table of carp-protocol.md §4.4 (ip_carp.c carp_proto_input_c) as a pure function.

A valid advertisement arrives for one carpnode. With `mine = (advbase, advskew)` (the configured
values: demotion never alters advskew), `theirs` from the header, `D_local` our demote count and
`D_peer` the header's demote byte, the first row whose state matches and whose condition holds
decides:

    row  state   condition                                                  decision
    1    INIT    anything                                                   IGNORE
    2    MASTER  (mine >= theirs and D_peer <= D_local) or D_peer < D_local   BECOME_BACKUP
    2'   MASTER  otherwise                                                  STAY_MASTER
    3    BACKUP  preempt and mine < theirs and D_peer >= D_local            BECOME_MASTER
    4    BACKUP  D_peer > D_local (whatever preempt says)                   BECOME_MASTER
    5    BACKUP  advbase != 0 and (3*advbase, advskew) < theirs             BECOME_MASTER
    6    BACKUP  otherwise                                                  RESTART_MASTER_DOWN

Ties (§4.4 "Ties", design.md decision 6): there is no tie-break. Two MASTERs with equal
(advbase, advskew) and demote both step down on hearing each other (row 2, `mine >= theirs`);
whichever master-down timer expires first wins the next round.
"""

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from carp.actions import Reason
from carp.constants import State
from carp.timing import is_bowout, is_slow_master, preference


class Decision(StrEnum):
    IGNORE = "ignore"
    BECOME_BACKUP = "become backup"
    STAY_MASTER = "stay master"
    BECOME_MASTER = "become master"
    RESTART_MASTER_DOWN = "restart master-down timer"


@dataclass(frozen=True, slots=True)
class Advert:
    """What one row looks at: our side and the sender's."""

    advbase: int
    advskew: int
    d_local: int
    their_advbase: int
    their_advskew: int
    d_peer: int
    preempt: bool

    @property
    def mine(self) -> int:
        return preference(self.advbase, self.advskew)

    @property
    def theirs(self) -> int:
        return preference(self.their_advbase, self.their_advskew)


@dataclass(frozen=True, slots=True)
class Row:
    number: str
    state: State
    condition: Callable[[Advert], bool]
    decision: Decision
    reason: Reason | None


@dataclass(frozen=True, slots=True)
class Outcome:
    decision: Decision
    reason: Reason | None
    row: str


def _always(_: Advert) -> bool:
    return True


def _master_yields(a: Advert) -> bool:
    # row 2: the sender is at least as preferred and no more demoted (includes the tie)
    return a.mine >= a.theirs and a.d_peer <= a.d_local


def _peer_less_demoted(a: Advert) -> bool:
    # row 2: a less demoted peer always wins
    return a.d_peer < a.d_local


def _preempt(a: Advert) -> bool:
    # row 3: preemption by frequency, only with net.inet.carp.preempt
    return a.preempt and a.mine < a.theirs and a.d_peer >= a.d_local


def _peer_more_demoted(a: Advert) -> bool:
    # row 4: a more demoted master is taken over regardless of preempt
    return a.d_peer > a.d_local


def _slow_master(a: Advert) -> bool:
    # row 5: its next advertisement would come after our master-down timer (old formula)
    return is_slow_master(a.advbase, a.advskew, a.their_advbase, a.their_advskew)


TABLE: tuple[Row, ...] = (
    Row("1", State.INIT, _always, Decision.IGNORE, None),
    Row("2a", State.MASTER, _master_yields, Decision.BECOME_BACKUP, Reason.PREEMPTED),
    Row("2b", State.MASTER, _peer_less_demoted, Decision.BECOME_BACKUP, Reason.DEMOTED),
    Row("2'", State.MASTER, _always, Decision.STAY_MASTER, None),
    Row("3", State.BACKUP, _preempt, Decision.BECOME_MASTER, Reason.PREEMPT),
    Row("4", State.BACKUP, _peer_more_demoted, Decision.BECOME_MASTER, Reason.PEER_DEMOTED),
    Row("5", State.BACKUP, _slow_master, Decision.BECOME_MASTER, Reason.SLOW_MASTER),
    Row("6", State.BACKUP, _always, Decision.RESTART_MASTER_DOWN, None),
)


def decide(state: State, advert: Advert) -> Outcome:
    """The first matching row of TABLE. A takeover caused by a bow-out carries BOWOUT_HEARD."""
    # every state ends in an `_always` row, so a row always matches
    row = next(r for r in TABLE if r.state is state and r.condition(advert))
    reason = row.reason
    if row.decision is Decision.BECOME_MASTER and is_bowout(
        advert.their_advbase, advert.their_advskew
    ):
        reason = Reason.BOWOUT_HEARD
    return Outcome(row.decision, reason, row.number)


def is_tie(advert: Advert) -> bool:
    """Equal (advbase, advskew) and demote: nothing breaks it (no address or random tie-break)."""
    return advert.mine == advert.theirs and advert.d_peer == advert.d_local
