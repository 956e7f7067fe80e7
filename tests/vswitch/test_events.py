"""The event bus: numbering, order, snapshot first, bounded subscribers, listeners."""

import asyncio
import json

import pytest

from carp.actions import CarrierChanged, DemoteChanged, Log, Reason, StateChanged
from carp.constants import State
from vswitch.events import (
    CarpNodeState,
    Event,
    EventBus,
    EventType,
    SubscriptionClosed,
    states_from_status,
    states_of,
)
from vswitch.status import NodeStatus


def change(vhid: int, old: State, new: State, reason: Reason = Reason.MASTER_DOWN) -> StateChanged:
    return StateChanged("carp0", vhid, old, new, reason)


def make_bus(states: list[CarpNodeState] | None = None) -> EventBus:
    return EventBus("gw-a", states=lambda: list(states or []), clock=lambda: 5.0, wall=lambda: 0.25)


def test_actions_become_numbered_events() -> None:
    bus = make_bus()
    events = bus.publish_actions(
        10.0,
        [
            change(1, State.BACKUP, State.MASTER),
            Log(2, "carp0: state transition: BACKUP -> MASTER"),
            CarrierChanged("carp0", True),
            DemoteChanged("carp", 1, 1, "carpdev", "carp1"),
        ],
    )
    assert [e.seq for e in events] == [1, 2, 3]
    assert [e.type for e in events] == [EventType.STATE, EventType.CARRIER, EventType.DEMOTE]
    state = events[0]
    assert (state.carpif, state.vhid, state.old, state.new) == ("carp0", 1, "BACKUP", "MASTER")
    assert state.reason == "master-down timer"
    assert state.monotonic == 10.0
    assert state.time == "1970-01-01T00:00:00.250+00:00"
    assert state.node == "gw-a"
    assert events[1].up is True
    demote = events[2]
    assert (demote.group, demote.adj, demote.value, demote.reason) == ("carp", 1, 1, "carpdev")
    link = bus.publish_link(11.0, "lan0", "vm1", False)
    assert (link.seq, link.type, link.switch, link.port, link.up) == (
        4,
        "link",
        "lan0",
        "vm1",
        False,
    )
    assert bus.seq == 4


def test_transition_counts_and_reasons() -> None:
    bus = make_bus()
    bus.publish_actions(1.0, [change(1, State.INIT, State.BACKUP, Reason.START)])
    bus.publish_actions(2.0, [change(1, State.BACKUP, State.MASTER)])
    bus.publish_actions(2.0, [change(2, State.INIT, State.BACKUP, Reason.START)])
    assert bus.transitions == {("carp0", 1): 2, ("carp0", 2): 1}
    assert bus.last_reason == {("carp0", 1): "master-down timer", ("carp0", 2): "start"}


def test_json_round_trip_omits_empty_fields() -> None:
    bus = make_bus()
    (event,) = bus.publish_actions(1.0, [change(3, State.MASTER, State.BACKUP, Reason.PREEMPTED)])
    data = json.loads(event.to_json())
    assert next(iter(data)) == "format"
    assert data == {
        "format": 1,
        "seq": 1,
        "type": "state",
        "time": "1970-01-01T00:00:00.250+00:00",
        "monotonic": 1.0,
        "node": "gw-a",
        "carpif": "carp0",
        "vhid": 3,
        "old": "MASTER",
        "new": "BACKUP",
        "reason": "preempted by a peer",
    }
    assert Event.from_dict(data | {"extra": 1}) == event


def test_subscriber_gets_snapshot_then_live_events_in_order() -> None:
    states = [CarpNodeState("carp0", 1, "MASTER", "master-down timer")]
    states.append(CarpNodeState("carp0", 2, "BACKUP", None))
    bus = make_bus(states)
    bus.publish_actions(1.0, [change(1, State.BACKUP, State.MASTER)])
    sub = bus.subscribe()
    bus.publish_actions(2.0, [change(2, State.INIT, State.BACKUP)])
    bus.publish_actions(3.0, [change(1, State.MASTER, State.BACKUP)])
    got = []
    while (event := sub.get_nowait()) is not None:
        got.append(event)
    assert [(e.type, e.vhid, e.new) for e in got] == [
        ("snapshot", 1, "MASTER"),
        ("snapshot", 2, "BACKUP"),
        ("state", 2, "BACKUP"),
        ("state", 1, "BACKUP"),
    ]
    assert [e.seq for e in got] == [1, 1, 2, 3]  # snapshot: the last seq it reflects
    assert got[0].monotonic == 5.0 and got[0].reason == "master-down timer"
    assert got[1].old is None


def test_subscribe_without_snapshot() -> None:
    bus = make_bus([CarpNodeState("carp0", 1, "MASTER", None)])
    sub = bus.subscribe(snapshot=False)
    assert sub.get_nowait() is None
    assert bus.subscribers == 1


def test_overflow_drops_the_subscriber_and_counts() -> None:
    bus = make_bus()
    dropped: list[bool] = []
    slow = bus.subscribe(maxsize=2, on_drop=lambda: dropped.append(True))
    fast = bus.subscribe(maxsize=100)
    for vhid in range(1, 4):
        bus.publish_actions(1.0, [change(vhid, State.INIT, State.BACKUP)])
    assert dropped == [True]
    assert bus.dropped == 1
    assert bus.subscribers == 1
    assert slow.overflowed and slow.closed
    with pytest.raises(SubscriptionClosed, match="overflowed"):
        slow.get_nowait()
    assert len(fast) == 3  # the others keep every event
    assert slow.offer(bus.publish_link(2.0, "lan0", "p", True)) is False


def test_snapshot_larger_than_queue_drops_at_once() -> None:
    bus = make_bus([CarpNodeState("carp0", v, "BACKUP", None) for v in range(1, 5)])
    sub = bus.subscribe(maxsize=2)
    assert sub.overflowed
    assert bus.subscribers == 0
    assert bus.dropped == 1


def test_close_wakes_a_waiting_reader() -> None:
    async def scenario() -> None:
        bus = make_bus()
        sub = bus.subscribe()
        reader = asyncio.ensure_future(sub.get())
        await asyncio.sleep(0)
        bus.publish_link(1.0, "lan0", "p", True)
        assert (await reader).port == "p"
        reader = asyncio.ensure_future(sub.get())
        await asyncio.sleep(0)
        sub.close()
        with pytest.raises(SubscriptionClosed, match="closed"):
            await asyncio.wait_for(reader, 5)
        assert bus.subscribers == 0

    asyncio.run(scenario())


def test_listeners_see_every_event_in_order() -> None:
    bus = make_bus()
    seen: list[int] = []
    bus.add_listener(lambda e: seen.append(e.seq))
    bus.publish_actions(1.0, [change(1, State.INIT, State.BACKUP), CarrierChanged("carp0", False)])
    bus.publish_link(1.0, "lan0", "p", True)
    assert seen == [1, 2, 3]


def test_states_from_status() -> None:
    status: NodeStatus = {
        "node": "gw-a",
        "uptime": 1.0,
        "sysctl": {},
        "groups": {},
        "switches": [],
        "carpstats": {},
        "carp": [
            {
                "name": "carp1",
                "carpdev": "lan0",
                "lladdr": "00:00:5e:00:01:01",
                "advbase": 1,
                "balancing": "ip",
                "carppeer": None,
                "addresses": [],
                "groups": ["carp"],
                "demote": 0,
                "admin_up": True,
                "running": True,
                "carrier": True,
                "carpnodes": [
                    {
                        "vhid": v,
                        "advskew": 0,
                        "state": s,
                        "reason": r,
                        "since": None,
                        "transitions": 1,
                        "peers": [],
                    }
                    for v, s, r in [
                        (1, "MASTER", "preempting a less preferred master"),
                        (2, "BACKUP", None),
                    ]
                ],
            }
        ],
    }
    assert states_from_status(status) == [
        CarpNodeState("carp1", 1, "MASTER", "preempting a less preferred master"),
        CarpNodeState("carp1", 2, "BACKUP", None),
    ]
    assert states_of(status["carp"]) == states_from_status(status)  # carp_status() alone
    assert states_of([]) == []


def test_a_failing_listener_is_counted_not_raised() -> None:
    bus = make_bus()
    seen: list[int] = []

    def broken(event: Event) -> None:
        raise RuntimeError("listener bug")

    def broken_drop() -> None:
        raise OSError("transport gone")

    bus.add_listener(broken)
    bus.add_listener(lambda e: seen.append(e.seq))
    slow = bus.subscribe(maxsize=1, snapshot=False, on_drop=broken_drop)
    bus.publish_link(1.0, "lan0", "vm1", True)
    bus.publish_link(2.0, "lan0", "vm1", False)  # overflows `slow`: its drop callback raises
    assert seen == [1, 2]  # the next listener still saw every event
    assert slow.closed and bus.dropped == 1
    assert bus.listener_errors == 3
