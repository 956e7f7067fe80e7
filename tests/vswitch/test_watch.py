"""vswitch/watch.py on a running Node without root: impairments in the data path (and none of
their cost when cleared), the node file's `impair`, `monitor` and `mode` applied at start and by
a reload in place, live captures (directly and over the control socket), `conflict` events,
and `explain`, through the control socket's Dispatcher and NodeController."""

import asyncio
import io
import os
import shutil
import socket
import struct
import tempfile
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address
from typing import Any

import dpkt
import pytest

from tests.carp.sim import advert
from tests.vswitch.polling import until
from tests.vswitch.test_capture import BT_EPB, blocks, interfaces, packets
from tests.vswitch.test_node import PEER_MAC, Harness, make_config, started
from tests.vswitch.test_node import harness as harness  # the fixture
from vswitch.capture import EPB_INBOUND, EPB_OUTBOUND
from vswitch.control import ControlServer
from vswitch.ctl.capture import BlockWriter
from vswitch.ctl.client import CommandFailed, ControlClient
from vswitch.ctl.impair import phrase, show
from vswitch.dispatch import Dispatcher
from vswitch.events import EventBus, EventType
from vswitch.hooks import HookSpec, hook_environment
from vswitch.impair import Direction, Impairment, PortImpairment
from vswitch.metrics import render
from vswitch.nodectl import NodeController
from vswitch.watch import BT_ISB, same_device, statistics_block

PEER = IPv4Address("198.51.100.7")
STATION = bytes.fromhex("020000000099")
FRAME = b"\xff" * 6 + STATION + b"\x88\xb5" + bytes(46)  # a broadcast from vm1


def frame(n: int, dst: bytes = b"\xff" * 6, src: bytes = STATION) -> bytes:
    return dst + src + b"\x88\xb5" + n.to_bytes(2, "big") + bytes(44)


def controller(h: Harness) -> tuple[NodeController, Dispatcher, EventBus]:
    bus = EventBus(h.node.name)
    h.node.listeners.append(bus.publish_actions)
    ctl = NodeController(h.node, bus)
    return ctl, Dispatcher(ctl), bus


def ask(dispatcher: Dispatcher, cmd: str, **params: Any) -> dict[str, Any]:
    return dispatcher.handle({"id": 1, "cmd": cmd, **params})


def port_status(ctl: NodeController, name: str, switch: str = "lan0") -> dict[str, Any]:
    (sw,) = [s for s in ctl.status()["switches"] if s["name"] == switch]
    (port,) = [p for p in sw["ports"] if p["name"] == name]
    return dict(port)


def watching(h: Harness, switch: str = "lan0") -> bool:
    """Whether the data plane calls the switch's watch (something impaired or captured)."""
    return h.node.dataplane.switches[switch].watch is not None


# -- impairment in the data path -----------------------------------------------------------------


def test_a_delay_holds_frames_until_the_loop_timer_and_keeps_their_order(
    harness: Callable[..., None],
) -> None:
    async def scenario(h: Harness) -> None:
        ctl, dispatcher, _ = controller(h)
        answer = ask(dispatcher, "impair", switch="lan0", port="vm1", words=["in", "delay", "50ms"])
        assert answer["ok"] and answer["result"]["in"] == ["delay", "50ms"]
        assert answer["result"]["out"] == ["clear"]
        before = set(h.clock.pending)
        h.dev("vm1").receive(frame(1), frame(2))
        await until(lambda: port_status(ctl, "vm1")["impair"]["in"]["held"] == 2)
        assert not [f for f in h.dev("up0").out if f in (frame(1), frame(2))]
        assert set(h.clock.pending) - before == {h.clock.now + 0.05}  # one timer, never a sleep
        assert port_status(ctl, "vm1")["rx_packets"] == 0  # the switch has not seen them yet
        h.clock.advance(0.049)
        assert frame(1) not in h.dev("up0").out
        h.clock.advance(0.001)
        assert [f for f in h.dev("up0").out if f in (frame(1), frame(2))] == [frame(1), frame(2)]
        shown = port_status(ctl, "vm1")
        assert shown["rx_packets"] == 2 and shown["forwarded"] == 2
        assert shown["impair"] == {
            "in": {
                "config": {"delay": "50ms"},
                "passed": 2,
                "held": 0,
                "drops": {"partition": 0, "loss": 0, "queue": 0, "limit": 0},
            }
        }

    harness(scenario)


def test_out_impairments_act_on_what_the_port_is_given_node_frames_included(
    harness: Callable[..., None],
) -> None:
    async def scenario(h: Harness) -> None:
        ctl, dispatcher, _ = controller(h)
        h.to_master()
        assert len(h.adverts()) == 1
        assert ask(dispatcher, "impair", switch="lan0", port="up0", words=["out", "partition"])[
            "ok"
        ]
        h.clock.advance(1.0)  # the next advertisement is queued for up0 and dropped there
        h.dev("vm1").receive(frame(3))
        await until(lambda: port_status(ctl, "up0")["impair"]["out"]["drops"]["partition"] >= 2)
        assert len(h.adverts()) == 1 and frame(3) not in h.dev("up0").out
        # partition carp: the data path flows again, the advertisements still do not
        ask(dispatcher, "impair", switch="lan0", port="up0", words=["out", "partition", "carp"])
        h.dev("vm1").receive(frame(4))
        await until(lambda: frame(4) in h.dev("up0").out)
        h.clock.advance(1.0)
        assert len(h.adverts()) == 1
        assert ask(dispatcher, "impair", switch="lan0", port="up0", words=["clear"])["ok"]
        h.clock.advance(1.0)
        assert len(h.adverts()) == 2

    harness(scenario)


def test_loss_drops_before_the_switch_counts_and_clear_costs_nothing(
    harness: Callable[..., None],
) -> None:
    async def scenario(h: Harness) -> None:
        ctl, dispatcher, _ = controller(h)
        assert not watching(h)
        ask(dispatcher, "impair", switch="lan0", port="vm1", words=["loss", "100%"])
        assert watching(h)
        h.dev("vm1").receive(*(frame(n) for n in range(5)))
        await until(lambda: port_status(ctl, "vm1")["impair"]["in"]["drops"]["loss"] == 5)
        shown = port_status(ctl, "vm1")
        assert shown["rx_packets"] == 0 and shown["rx_drops"] == 0  # never reached the switch
        assert shown["impair"]["out"]["config"] == {"loss": "100%"}
        ask(dispatcher, "impair", switch="lan0", port="vm1", words=["clear"])
        assert not watching(h)  # nothing left to do: out of the data path
        h.dev("vm1").receive(frame(9))
        await until(lambda: frame(9) in h.dev("up0").out)
        shown = port_status(ctl, "vm1")
        assert shown["impair"]["in"]["config"] == {}  # what it did stays in the status
        assert shown["impair"]["in"]["drops"]["loss"] == 5

    harness(scenario)


def test_a_delay_line_with_frames_stays_in_the_path_after_clear_until_they_left(
    harness: Callable[..., None],
) -> None:
    async def scenario(h: Harness) -> None:
        ctl, dispatcher, _ = controller(h)
        ask(dispatcher, "impair", switch="lan0", port="vm1", words=["in", "delay", "1s"])
        h.dev("vm1").receive(frame(1))
        await until(lambda: port_status(ctl, "vm1")["impair"]["in"]["held"] == 1)
        ask(dispatcher, "impair", switch="lan0", port="vm1", words=["clear"])
        assert watching(h)
        h.dev("vm1").receive(frame(2))  # after the one held: a link does not reorder
        await until(lambda: port_status(ctl, "vm1")["impair"]["in"]["held"] == 2)
        h.clock.advance(1.0)
        assert [f for f in h.dev("up0").out if f in (frame(1), frame(2))] == [frame(1), frame(2)]
        assert not watching(h)

    harness(scenario)


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["loss", "130%"], "word 1 'loss 130%': 130% is out of range 0..100% (give 0% to 100%)"),
        (["delay", "-5ms"], "word 1 'delay -5ms': -5ms is negative"),
        (["in", "rate", "10mbps"], "word 2 'rate 10mbps': '10mbps' is ambiguous"),
        ([], "nothing to set"),
    ],
)
def test_bad_impairments_are_refused_with_the_reason_and_change_nothing(
    harness: Callable[..., None], words: list[str], message: str
) -> None:
    async def scenario(h: Harness) -> None:
        _, dispatcher, _ = controller(h)
        ask(dispatcher, "impair", switch="lan0", port="vm1", words=["delay", "5ms"])
        answer = ask(dispatcher, "impair", switch="lan0", port="vm1", words=words)
        assert not answer["ok"] and message in answer["error"]
        assert h.node.watch.impairment("lan0", "vm1") == PortImpairment(
            Impairment(delay=0.005), Impairment(delay=0.005)
        )

    harness(scenario)


def test_an_unknown_switch_or_port_is_refused_naming_what_exists(
    harness: Callable[..., None],
) -> None:
    async def scenario(h: Harness) -> None:
        _, dispatcher, _ = controller(h)
        answer = ask(dispatcher, "impair", switch="lan9", port="vm1", words=["clear"])
        assert answer["error"] == "no switch lan9 (switches: lan0)"
        answer = ask(dispatcher, "impair", switch="lan0", port="vm7", words=["clear"])
        assert answer["error"].startswith("switch lan0 has no port vm7 (ports: ")
        assert "up0" in answer["error"] and "vm1" in answer["error"]
        assert ask(dispatcher, "impair", switch="lan0", words=["clear"])["error"] == (
            "name the switch and the port"
        )
        assert not watching(h)

    harness(scenario)


# -- the node file: impair, monitor and mode, at start and by reload ------------------------------


def with_ports(**extra: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        for port in data["switch"]["lan0"]["ports"]:
            port.update(extra.get(port["name"], {}))

    return edit


def test_the_files_impair_applies_at_start_and_a_reload_changes_it_in_place(
    harness: Callable[..., None],
) -> None:
    config = make_config(with_ports(vm1={"impair": {"in": {"loss": "100%"}}}))

    async def scenario(h: Harness) -> None:
        _, dispatcher, _ = controller(h)
        assert h.node.watch.impairment("lan0", "vm1").inbound == Impairment(loss=100.0)
        device = h.dev("vm1")
        new = make_config(with_ports(vm1={"impair": {"delay": "20ms"}}))
        changes = h.node.reload(new)
        assert changes == ["switch lan0: port vm1 impair delay 20ms"]
        assert h.dev("vm1") is device and not device.closed  # the same device: in place
        # what `vswitch impair` sets on another port survives a reload that leaves it alone
        ask(dispatcher, "impair", switch="lan0", port="up0", words=["out", "loss", "5%"])
        assert h.node.reload(new) == []
        assert h.node.watch.impairment("lan0", "up0").outbound == Impairment(loss=5.0)
        assert h.node.reload(make_config()) == ["switch lan0: port vm1 impair clear"]
        assert h.node.watch.impairment("lan0", "vm1") == PortImpairment()

    harness(scenario, config=config)


def test_a_bad_impair_in_the_file_names_the_port_and_the_key() -> None:
    from vswitch.config import ConfigError

    with pytest.raises(ConfigError) as caught:
        make_config(with_ports(vm1={"impair": {"loss": "130%", "delay": "-5ms"}}))
    assert caught.value.errors == [
        "switch.lan0.ports[1].impair.loss: 130% is out of range 0..100% (give 0% to 100%)",
        "switch.lan0.ports[1].impair.delay: -5ms is negative (give a time with its unit, us, ms "
        "or s, e.g. 50ms)",
    ]


def test_monitor_and_mode_apply_at_start_and_in_place_on_reload(
    harness: Callable[..., None],
) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["switch"]["lan0"]["mode"] = "learning-arp"
        data["switch"]["lan0"]["ports"].append({"name": "mon", "type": "tap", "monitor": True})

    async def scenario(h: Harness) -> None:
        ctl, _, _ = controller(h)
        fwd = h.node.dataplane.switch("lan0")
        assert fwd.mode == "learning-arp" and fwd.ports["mon"].monitor
        assert [s["mode"] for s in ctl.status()["switches"]] == ["learning-arp"]
        # a unicast frame between two learned stations: a copy for the monitor port
        h.dev("up0").receive(frame(1, src=PEER_MAC))
        await until(lambda: fwd.lookup(PEER_MAC) == "up0")
        h.dev("vm1").receive(frame(2, dst=PEER_MAC))
        await until(lambda: frame(2, dst=PEER_MAC) in h.dev("up0").out)
        assert frame(2, dst=PEER_MAC) in h.dev("mon").out
        device = h.dev("mon")

        def plain(data: dict[str, Any]) -> None:
            data["switch"]["lan0"]["ports"].append({"name": "mon", "type": "tap"})

        changes = h.node.reload(make_config(plain))
        assert changes == [
            "switch lan0: mode learning, ageing 300",
            "switch lan0: port mon not a monitor port",
        ]
        assert h.dev("mon") is device and not fwd.ports["mon"].monitor and fwd.mode == "learning"
        h.dev("up0").receive(frame(4, src=PEER_MAC))  # learned again after the mode's flush
        await until(lambda: fwd.lookup(PEER_MAC) == "up0")
        h.dev("vm1").receive(frame(3, dst=PEER_MAC))
        await until(lambda: frame(3, dst=PEER_MAC) in h.dev("up0").out)
        assert frame(3, dst=PEER_MAC) not in h.dev("mon").out

    harness(scenario, config=make_config(edit))


def test_same_device_ignores_only_what_applies_in_place() -> None:
    base = make_config().switch["lan0"].ports
    impaired = make_config(with_ports(vm1={"impair": {"loss": "1%"}, "monitor": True}))
    moved = make_config(with_ports(vm1={"mac": "02:00:00:00:00:42"}))
    assert same_device(base[1], impaired.switch["lan0"].ports[1])
    assert not same_device(base[1], moved.switch["lan0"].ports[1])
    assert not same_device(base[0], base[1]) and same_device(None, None)


# -- capture ---------------------------------------------------------------------------------


def test_a_capture_records_each_ports_wire_with_the_direction(
    harness: Callable[..., None],
) -> None:
    async def scenario(h: Harness) -> None:
        session = h.node.watch.capture("lan0", ["vm1", "up0"])
        assert watching(h)
        h.dev("vm1").receive(frame(1))
        await until(lambda: frame(1) in h.dev("up0").out)
        data = session.take(1 << 20)
        names = [i[dpkt.pcapng.PCAPNG_OPT_IF_NAME].rstrip(b"\0") for i in interfaces(data)]
        assert names == [b"up0", b"vm1"]
        assert [(iface, flags, buf) for iface, _, flags, buf, _ in packets(data)] == [
            (1, EPB_INBOUND, frame(1)),  # vm1 received it
            (0, EPB_OUTBOUND, frame(1)),  # and up0 was given it (the host port is not named)
        ]
        session.close()
        assert not watching(h) and session.finished
        assert h.node.watch.stats()["captured"] == 2

    harness(scenario)


def test_a_capture_sees_what_a_partition_drops_inbound_but_not_outbound(
    harness: Callable[..., None],
) -> None:
    async def scenario(h: Harness) -> None:
        h.node.watch.impair("lan0", "vm1", _change(["in", "partition"]))
        h.node.watch.impair("lan0", "up0", _change(["out", "partition"]))
        session = h.node.watch.capture("lan0", ["vm1", "up0"])
        h.dev("vm1").receive(frame(1))
        await until(
            lambda: (
                h.node.watch.switches["lan0"]
                .impairers["vm1"]
                .lines[Direction.IN]
                .drops["partition"]
                == 1
            )
        )
        h.node.watch.impair("lan0", "vm1", _change(["clear"]))
        h.dev("vm1").receive(frame(2))
        await until(
            lambda: (
                h.node.watch.switches["lan0"]
                .impairers["up0"]
                .lines[Direction.OUT]
                .drops["partition"]
                >= 1
            )
        )
        flags = [(buf, fl) for _, _, fl, buf, _ in packets(session.take(1 << 20))]
        # vm1's wire had both; up0's had neither
        assert flags == [(frame(1), EPB_INBOUND), (frame(2), EPB_INBOUND)]
        session.close()

    harness(scenario)


def _change(words: list[str]) -> Any:
    from vswitch.impair import parse_words

    return parse_words(words)


def test_a_count_ends_the_capture_with_each_ports_losses(harness: Callable[..., None]) -> None:
    async def scenario(h: Harness) -> None:
        session = h.node.watch.capture("lan0", count=2)
        assert session.describe() == {
            "switch": "lan0",
            "ports": None,
            "snaplen": 262144,
            "count": 2,
        }
        h.dev("vm1").receive(frame(1), frame(2), frame(3))
        await until(lambda: session.stopped)
        assert not watching(h)
        data = b""
        while chunk := session.take(1 << 20):
            data += chunk
        assert session.finished
        kinds = [k for k, _ in blocks(data)]
        assert kinds.count(BT_EPB) == 2 and kinds[-1] == BT_ISB
        reader = dpkt.pcapng.Reader(io.BytesIO(data))
        assert [buf for _, buf in reader] == [frame(1), frame(2)]  # vm1 in, in

    harness(scenario)


def test_a_capture_of_an_unknown_switch_or_port_is_refused(harness: Callable[..., None]) -> None:
    async def scenario(h: Harness) -> None:
        with pytest.raises(ValueError, match=r"^no switch lan7 \(switches: lan0\)$"):
            h.node.watch.capture("lan7")
        with pytest.raises(ValueError, match=r"^switch lan0 has no port vm9 \(ports: "):
            h.node.watch.capture("lan0", ["vm1", "vm9"])
        with pytest.raises(ValueError, match="count 0"):
            h.node.watch.capture("lan0", count=0)
        assert not watching(h) and h.node.watch.stats()["sessions"] == 0

    harness(scenario)


def test_a_slow_capture_reader_loses_frames_counted_and_forwarding_goes_on(
    harness: Callable[..., None],
) -> None:
    async def scenario(h: Harness) -> None:
        ctl, _, _ = controller(h)
        session = h.node.watch.capture("lan0", ["vm1"], limit=400)
        session.take(1 << 20)  # the header; then nobody reads
        h.dev("vm1").receive(*(frame(n) for n in range(20)))
        await until(lambda: frame(19) in h.dev("up0").out)
        channel = ctl.status()["channels"]["capture"]
        assert channel["lost"] > 0 and channel["captured"] + channel["lost"] == 20
        assert channel["running"] == 1
        session.stop()
        data = b""
        while chunk := session.take(1 << 20):
            data += chunk
        writer = BlockWriter(io.BytesIO())
        writer.feed(data)
        assert writer.frames == channel["captured"] and writer.lost == channel["lost"]

    harness(scenario)


@pytest.fixture
def sockdir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="vswatch", dir="/tmp")  # sun_path is 108 bytes
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_the_control_socket_streams_a_capture_until_its_count(
    harness: Callable[..., None], sockdir: str
) -> None:
    path = os.path.join(sockdir, "gw.sock")

    async def scenario(h: Harness) -> None:
        ctl, _, bus = controller(h)
        server = ControlServer(path, ctl, bus)
        await server.start()
        loop = asyncio.get_running_loop()
        try:
            out = io.BytesIO()
            writer = BlockWriter(out)
            # the blocking client reads in a thread while the node's loop runs here
            reading = loop.run_in_executor(None, _capture, path, writer, {"ports": ["vm1"]})
            await until(lambda: h.node.watch.stats()["running"] == 1)
            h.dev("vm1").receive(*(frame(n) for n in range(5)))
            started_ = await asyncio.wait_for(reading, 10)
            assert started_ == {"switch": "lan0", "ports": ["vm1"], "snaplen": 262144, "count": 3}
            assert writer.frames == 3 and writer.lost == 0
            got = [buf for _, buf in dpkt.pcapng.Reader(io.BytesIO(out.getvalue()))]
            assert got == [frame(0), frame(1), frame(2)]
            await until(lambda: server.subscribers == 0)
            assert not watching(h)
            # refused requests are error lines; nothing is left running
            for request, message in (({"ports": ["vm9"]}, "no port vm9"), ({"duration": -1}, "")):
                with pytest.raises(CommandFailed, match=message or "duration -1"):
                    await loop.run_in_executor(None, _capture, path, writer, request)
            assert h.node.watch.stats()["running"] == 0
        finally:
            await server.close()

    harness(scenario)


def test_a_capture_ends_when_its_reader_goes(harness: Callable[..., None], sockdir: str) -> None:
    path = os.path.join(sockdir, "gw.sock")

    async def scenario(h: Harness) -> None:
        ctl, _, bus = controller(h)
        server = ControlServer(path, ctl, bus)
        await server.start()
        try:
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            await asyncio.get_running_loop().sock_connect(conn, path)
            conn.sendall(b'{"id": 1, "cmd": "capture", "switch": "lan0"}\n')
            await until(lambda: h.node.watch.stats()["running"] == 1)
            conn.close()
            await until(lambda: h.node.watch.stats()["running"] == 0)
            assert not watching(h)
        finally:
            await server.close()

    harness(scenario)


def _capture(path: str, writer: BlockWriter, request: dict[str, Any]) -> Any:
    """`vswitch capture lan0 -c 3`'s client side: the acknowledgement; the stream to `writer`."""
    with ControlClient(path) as client:
        started_, stream = client.stream("capture", switch="lan0", count=3, **request)
        for chunk in stream:
            writer.feed(chunk)
    return started_


def test_the_client_writes_whole_blocks_only() -> None:
    out = io.BytesIO()
    writer = BlockWriter(out)
    isb = statistics_block(0, 1.0, 7)
    epb = struct.pack("<II", BT_EPB, 16) + bytes(4) + struct.pack("<I", 16)
    data = epb + isb
    writer.feed(data[:10])
    assert out.getvalue() == b""
    writer.feed(data[10:20])
    assert out.getvalue() == epb and writer.frames == 1
    writer.feed(data[20:])
    assert out.getvalue() == data and writer.lost == 7


def test_the_impair_command_shows_a_ports_impairment() -> None:
    assert phrase(["delay", "50ms"], ["delay", "50ms"]) == "delay 50ms"
    assert phrase(["loss", "1%"], ["clear"]) == "in loss 1%, out clear"
    drops = {"partition": 3, "loss": 0, "queue": 0, "limit": 0}
    status = {
        "switches": [
            {
                "name": "lan0",
                "ports": [
                    {"name": "up0"},
                    {
                        "name": "vm1",
                        "impair": {
                            "out": {
                                "config": {"partition": "carp"},
                                "passed": 4,
                                "held": 0,
                                "drops": drops,
                            }
                        },
                    },
                ],
            }
        ]
    }
    assert show(status, "lan0", "up0") == "lan0 up0: clear"
    assert show(status, "lan0", "vm1") == (
        "lan0 vm1:\n  out partition carp; passed 4, held 0, dropped: partition 3"
    )


# -- conflict, explain -----------------------------------------------------------------------


def peer_advert(advskew: int, src: IPv4Address = PEER, passphrase: bytes = b"secret") -> bytes:
    ip = advert(advskew=advskew, v4=("198.51.100.10",), src=str(src), passphrase=passphrase)
    return bytes.fromhex("01005e000012") + PEER_MAC + b"\x08\x00" + ip


def test_a_master_hearing_a_second_master_publishes_a_conflict(
    harness: Callable[..., None],
) -> None:
    async def scenario(h: Harness) -> None:
        ctl, dispatcher, bus = controller(h)
        events: list[Any] = []
        bus.add_listener(events.append)
        h.to_master()
        h.dev("up0").receive(peer_advert(advskew=200))
        await until(lambda: any(e.type == EventType.CONFLICT for e in events))
        (event,) = [e for e in events if e.type == EventType.CONFLICT]
        assert (event.carpif, event.vhid, event.peer) == ("carp0", 1, str(PEER))
        assert (event.advbase, event.advskew, event.demote) == (1, 200, 0)
        assert event.to_dict()["type"] == "conflict" and "new" not in event.to_dict()
        assert h.state().name == "MASTER"
        (carpnode,) = ctl.status()["carp"][0]["carpnodes"]
        assert carpnode["conflicts"] == 1
        assert HookSpec(("x",), on=frozenset({"conflict"})).matches(event)
        assert not HookSpec(("x",)).matches(event)  # the default: states only
        assert hook_environment(event)["VSWITCH_PEER"] == str(PEER)
        text = render(ctl.status())
        assert 'vswitch_carp_conflicts_total{node="gw-a",carpif="carp0",vhid="1"} 1' in text
        text = ask(dispatcher, "explain", carpif="carp0")["result"]["text"]
        assert f"{PEER} also advertises as master" in text

    harness(scenario)


def test_explain_names_a_peer_with_the_wrong_pass(harness: Callable[..., None]) -> None:
    async def scenario(h: Harness) -> None:
        _, dispatcher, _ = controller(h)
        h.dev("up0").receive(peer_advert(advskew=0, passphrase=b"other"))
        await until(lambda: h.node.core().stats.badauth == 1)
        result = ask(dispatcher, "explain")["result"]
        (carpif,) = result["data"]["carpifs"]
        (rejected,) = carpif["rejected"]
        assert (rejected["source"], rejected["reason"]) == (str(PEER), "badauth")
        assert "the pass differs" in result["text"]
        assert ask(dispatcher, "explain", carpif="carp9")["error"] == "no carp interface carp9"

    harness(scenario)


def test_the_hook_config_takes_conflict_but_any_stays_the_states() -> None:
    def hooks(on: Any) -> Callable[[dict[str, Any]], None]:
        def edit(data: dict[str, Any]) -> None:
            data["hook"] = [{"command": ["/bin/true"], "on": on}]

        return edit

    assert make_config(hooks(["conflict", "master"])).hook[0].on == ["conflict", "master"]
    assert make_config(hooks("any")).hook[0].on == ["init", "backup", "master"]
    spec = HookSpec.from_config(make_config(hooks("conflict")).hook[0])
    assert spec.on == frozenset({"conflict"})


def test_node_closing_ends_the_captures_and_the_timer(run: Any) -> None:
    async def main() -> None:
        h = started(make_config())
        h.node.watch.impair("lan0", "vm1", _change(["delay", "1s"]))
        session = h.node.watch.capture("lan0")
        h.dev("vm1").receive(frame(1))
        await until(lambda: h.node.watch.switches["lan0"].deadline() is not None)
        h.node.close()
        assert session.closed and session.finished
        assert all(
            t.cancelled or t.fired for t in h.clock.timers if t.callback == h.node.watch._fire
        )

    run(main())
