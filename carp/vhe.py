"""One carpnode (vhe, "vhost entry"): its state and timers (carp-protocol.md §3, §4.1-4.5).

The machine is small on purpose; the carp interface (carpif.py) decides *when* to move and does
the sending. What a Vhe guarantees, whatever the caller does:

- INIT has no timer armed;
- BACKUP has no advertisement timer and at least one master-down timer (`md` for IPv4, `md6` for
  IPv6; an advertisement restarts only its own family's timer, §4.2);
- MASTER has the advertisement timer armed and no master-down timer (the kernel leaves the other
  family's timer running and ignores it in carp_master_down; clearing it is equivalent).

Timers are absolute deadlines in the caller's monotonic seconds.
"""

from collections.abc import Callable, Iterable
from enum import StrEnum

from carp.constants import State

AF_INET = 4
AF_INET6 = 6
COOKIE_LEN = 8
ZERO_COOKIE = bytes(COOKIE_LEN)


class Timer(StrEnum):
    AD = "ad_tmo"  # carp_timer_ad: periodic advertisement (MASTER)
    MD = "md_tmo"  # carp_timer_down for IPv4 (BACKUP)
    MD6 = "md6_tmo"  # carp_timer_down for IPv6 (BACKUP)


class Vhe:
    """A carpnode: vhid, advskew, state, timers and the replay cookie."""

    __slots__ = ("ad", "advskew", "cookie", "leader", "mac", "md", "md6", "state", "vhid")

    def __init__(self, vhid: int, advskew: int, leader: bool, mac: bytes) -> None:
        self.vhid = vhid
        self.advskew = advskew
        self.leader = leader  # lowest vhid of its interface (§6.1)
        self.mac = mac  # 00:00:5e:00:01:<vhid>, or the multicast form for an ip-mode leader
        self.state = State.INIT
        self.ad: float | None = None
        self.md: float | None = None
        self.md6: float | None = None
        self.cookie: bytes | None = None  # drawn on first send (§3)

    def __repr__(self) -> str:
        return f"Vhe(vhid={self.vhid}, advskew={self.advskew}, state={self.state})"

    # -- cookie (§3 carp_prepare_ad, §1.6 step 5)

    def ensure_cookie(self, draw: Callable[[], bytes]) -> bytes:
        """The vhe's constant random cookie, drawn on first use; a zero draw is redrawn.

        A zero counter would make a never-sending OpenBSD backup drop our adverts as its own (§3).
        """
        while self.cookie is None or self.cookie == ZERO_COOKIE:
            drawn = draw()
            if len(drawn) != COOKIE_LEN:
                raise ValueError(f"cookie source returned {len(drawn)} bytes, not {COOKIE_LEN}")
            self.cookie = drawn
        return self.cookie

    def is_own(self, counter: bytes) -> bool:
        """Loop detection by equality with our cookie (ip_carp.c carp_proto_input_c)."""
        return self.cookie is not None and counter == self.cookie

    # -- transitions; each returns the previous state

    def enter_init(self) -> State:
        old, self.state = self.state, State.INIT
        self.ad = self.md = self.md6 = None
        return old

    def enter_backup(self, now: float, master_down: float, families: Iterable[int]) -> State:
        """carp_setrun BACKUP case: stop the ad timer, start master-down for `families`."""
        old, self.state = self.state, State.BACKUP
        self.ad = None
        for af in families:
            self.restart_master_down(now, master_down, af)
        if self.md is None and self.md6 is None:
            raise ValueError("a BACKUP carpnode needs a master-down timer")
        return old

    def enter_master(self, now: float, interval: float) -> State:
        """carp_master_down: MASTER with the ad timer re-armed (the caller sends the advert)."""
        old, self.state = self.state, State.MASTER
        self.md = self.md6 = None
        self.ad = now + interval
        return old

    # -- timers

    def restart_master_down(self, now: float, master_down: float, af: int) -> None:
        """Restart only `af`'s master-down timer (§4.2, §4.4 row 6)."""
        if af == AF_INET:
            self.md = now + master_down
        elif af == AF_INET6:
            self.md6 = now + master_down
        else:
            raise ValueError(f"unknown address family {af}")

    def rearm_ad(self, now: float, interval: float) -> None:
        """carp_send_ad re-arms the periodic timer after every (non bow-out) advertisement."""
        self.ad = now + interval

    def deadline(self) -> float | None:
        armed = [t for t in (self.ad, self.md, self.md6) if t is not None]
        return min(armed) if armed else None

    def due(self, now: float) -> Timer | None:
        """The timer that has expired at `now`, if any (the advertisement timer first)."""
        if self.ad is not None and self.ad <= now:
            return Timer.AD
        if self.md is not None and self.md <= now:
            return Timer.MD
        if self.md6 is not None and self.md6 <= now:
            return Timer.MD6
        return None
