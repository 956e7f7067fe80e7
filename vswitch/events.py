"""The node's ordered event bus: state, demote, carrier, link changes and conflicts as numbered
events.

Everything runs on the node's event loop, so publishing is synchronous and ordered. A subscriber
(the control socket's `events` stream) gets a bounded queue; when it overflows the subscriber is
dropped and counted, so a slow reader never holds the node back. Listeners (the hook runner) are
plain callbacks and must not block; one that raises is logged and counted (`listener_errors`),
never raised into the node that published.

Every event's JSON carries `"format": EVENT_FORMAT`, the layout's version: raised when a key
changes meaning or goes away, not when one is added.
"""

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NamedTuple

from carp.actions import Action, CarrierChanged, Conflict, DemoteChanged, StateChanged
from vswitch.status import CarpIfStatus, NodeStatus

log = logging.getLogger("vswitch.events")

EVENT_FORMAT = 1


class EventType(StrEnum):
    STATE = "state"  # a carpnode changed state (carp.actions.StateChanged)
    SNAPSHOT = "snapshot"  # current state of a carpnode, sent first to a new subscriber
    DEMOTE = "demote"  # an interface group's demote counter moved (DemoteChanged)
    CARRIER = "carrier"  # a carp interface's link went up/down (CarrierChanged, section 4.11)
    LINK = "link"  # a port's link went up/down
    CONFLICT = "conflict"  # a MASTER heard a less preferred master for its vhid (Conflict)


@dataclass(frozen=True, slots=True)
class Event:
    """One event. Fields that do not apply to the type are None and left out of the JSON."""

    seq: int
    type: EventType
    time: str  # wall clock, ISO 8601 UTC
    monotonic: float  # the node's `now`
    node: str
    carpif: str | None = None
    vhid: int | None = None
    old: str | None = None
    new: str | None = None
    reason: str | None = None
    group: str | None = None
    adj: int | None = None
    value: int | None = None
    switch: str | None = None
    port: str | None = None
    up: bool | None = None
    peer: str | None = None  # conflict: the other master's address and what it advertises
    advbase: int | None = None
    advskew: int | None = None
    demote: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"format": EVENT_FORMAT} | {k: v for k, v in asdict(self).items() if v is not None}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Event":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["type"] = EventType(values["type"])
        return cls(**values)


class CarpNodeState(NamedTuple):
    carpif: str
    vhid: int
    state: str
    reason: str | None


def states_of(carp: Iterable[CarpIfStatus]) -> list[CarpNodeState]:
    """The snapshot source from the carp part of a status (`NodeController.carp_status()`)."""
    return [
        CarpNodeState(carpif["name"], vhe["vhid"], vhe["state"], vhe["reason"])
        for carpif in carp
        for vhe in carpif["carpnodes"]
    ]


def states_from_status(status: NodeStatus) -> list[CarpNodeState]:
    """The snapshot source for a node that already builds a whole status snapshot."""
    return states_of(status["carp"])


class SubscriptionClosed(Exception):
    """The subscription was closed, or dropped because its queue overflowed."""


class Subscription:
    """A bounded queue of events for one reader."""

    def __init__(self, bus: "EventBus", maxsize: int, on_drop: Callable[[], None] | None) -> None:
        self._bus = bus
        self._queue: deque[Event] = deque()
        self._maxsize = maxsize
        self._wakeup = asyncio.Event()
        self._on_drop = on_drop
        self.closed = False
        self.overflowed = False

    def offer(self, event: Event) -> bool:
        """Queue `event`; False (and the subscription is closed) if the queue was full."""
        if self.closed:
            return False
        if len(self._queue) >= self._maxsize:
            self.overflowed = True
            self._bus.dropped += 1
            self.close()
            if self._on_drop is not None:
                self._bus._call(self._on_drop)
            return False
        self._queue.append(event)
        self._wakeup.set()
        return True

    def get_nowait(self) -> Event | None:
        if self.overflowed:
            raise SubscriptionClosed("event queue overflowed")
        if self._queue:
            return self._queue.popleft()
        if self.closed:
            raise SubscriptionClosed("subscription closed")
        return None

    async def get(self) -> Event:
        while True:
            event = self.get_nowait()
            if event is not None:
                return event
            self._wakeup.clear()
            await self._wakeup.wait()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._bus._remove(self)
            self._wakeup.set()

    def __len__(self) -> int:
        return len(self._queue)


class EventBus:
    """Numbers events, fans them out in order, and remembers per-carpnode counts for status."""

    def __init__(
        self,
        node: str,
        states: Callable[[], Iterable[CarpNodeState]] = list,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.node = node
        self._states = states
        self._clock = clock
        self._wall = wall
        self._subscribers: list[Subscription] = []
        self._listeners: list[Callable[[Event], None]] = []
        self.seq = 0
        self.dropped = 0  # subscribers dropped for overflow
        self.listener_errors = 0  # listeners or drop callbacks that raised
        self.transitions: dict[tuple[str, int], int] = {}
        self.last_reason: dict[tuple[str, int], str] = {}
        self.conflicts: dict[tuple[str, int], int] = {}  # conflict events per carpnode

    def add_listener(self, listener: Callable[[Event], None]) -> None:
        self._listeners.append(listener)

    def subscribe(
        self, maxsize: int = 1024, snapshot: bool = True, on_drop: Callable[[], None] | None = None
    ) -> Subscription:
        """A new subscriber: the current state of every carpnode first, then live events.

        Snapshot events carry the seq of the last live event they already reflect, so the live
        events that follow have strictly greater numbers.
        """
        sub = Subscription(self, maxsize, on_drop)
        if snapshot:
            mono, iso = self._clock(), self._iso()
            for st in self._states():
                sub.offer(
                    Event(
                        self.seq,
                        EventType.SNAPSHOT,
                        iso,
                        mono,
                        self.node,
                        carpif=st.carpif,
                        vhid=st.vhid,
                        new=st.state,
                        reason=st.reason,
                    )
                )
        if not sub.closed:
            self._subscribers.append(sub)
        return sub

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish_actions(self, now: float, actions: Iterable[Action]) -> list[Event]:
        """Turn the core's StateChanged / DemoteChanged / CarrierChanged / Conflict into
        events."""
        events = []
        for action in actions:
            if isinstance(action, StateChanged):
                key = (action.carpif, action.vhid)
                self.transitions[key] = self.transitions.get(key, 0) + 1
                self.last_reason[key] = str(action.reason)
                events.append(
                    self._publish(
                        now,
                        EventType.STATE,
                        carpif=action.carpif,
                        vhid=action.vhid,
                        old=action.old.name,
                        new=action.new.name,
                        reason=str(action.reason),
                    )
                )
            elif isinstance(action, DemoteChanged):
                events.append(
                    self._publish(
                        now,
                        EventType.DEMOTE,
                        carpif=action.carpif,
                        group=action.group,
                        adj=action.adj,
                        value=action.value,
                        reason=action.reason,
                    )
                )
            elif isinstance(action, CarrierChanged):
                events.append(
                    self._publish(now, EventType.CARRIER, carpif=action.carpif, up=action.up)
                )
            elif isinstance(action, Conflict):
                key = (action.carpif, action.vhid)
                self.conflicts[key] = self.conflicts.get(key, 0) + 1
                events.append(
                    self._publish(
                        now,
                        EventType.CONFLICT,
                        carpif=action.carpif,
                        vhid=action.vhid,
                        peer=action.peer,
                        advbase=action.advbase,
                        advskew=action.advskew,
                        demote=action.demote,
                    )
                )
        return events

    def publish_link(self, now: float, switch: str, port: str, up: bool) -> Event:
        return self._publish(now, EventType.LINK, switch=switch, port=port, up=up)

    def _publish(self, now: float, type_: EventType, **values: Any) -> Event:
        self.seq += 1
        event = Event(self.seq, type_, self._iso(), now, self.node, **values)
        for sub in list(self._subscribers):
            sub.offer(event)
        for listener in self._listeners:
            self._call(listener, event)
        return event

    def _call(self, callback: Callable[..., None], *args: Any) -> None:
        """A side channel's callback: its failure must not reach the publishing node."""
        try:
            callback(*args)
        except Exception:
            self.listener_errors += 1
            log.exception("events: %r failed", callback)

    def _iso(self) -> str:
        return datetime.fromtimestamp(self._wall(), UTC).isoformat(timespec="milliseconds")

    def _remove(self, sub: Subscription) -> None:
        if sub in self._subscribers:
            self._subscribers.remove(sub)
