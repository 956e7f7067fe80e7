"""Ports at run time: `vswitch port add|del`, the control command, and the node applying it."""

import asyncio
import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from carp.constants import State
from tests.vswitch import test_node
from tests.vswitch.fakenode import NodeThread
from tests.vswitch.test_node import FakeSystem, Harness, until
from tests.vswitch.test_vde import Client
from vswitch.cli import main
from vswitch.config import ConfigError, StreamPortConfig, VdePortConfig, VxlanPortConfig
from vswitch.ctl.client import CommandFailed
from vswitch.ctl.port import settings
from vswitch.dispatch import Dispatcher
from vswitch.events import EventBus
from vswitch.nodectl import NodeController
from vswitch.port import DevicePort
from vswitch.stream import StreamPort
from vswitch.system import check_port, port_type

harness = test_node.harness  # the fixture: a started node on fakes

# -- the client command ------------------------------------------------------------------------


@pytest.fixture
def served() -> Iterator[tuple[NodeThread, list[tuple[str, str, Any]]]]:
    sockdir = tempfile.mkdtemp(prefix="vsport", dir="/tmp")
    calls: list[tuple[str, str, Any]] = []
    with NodeThread(os.path.join(sockdir, "gw-a.sock")) as node:

        def port(switch: str, name: str, words: dict[str, str] | None) -> list[str]:
            calls.append((switch, name, words))
            if name == "bad":
                raise FakeRefusal(["port bad.netns: pid:1: no process (fix netns)"])
            if switch != "lan0":
                raise ValueError(f"no switch {switch} (switches: lan0)")
            return [f"switch {switch}: port {name} {'removed' if words is None else 'added'}"]

        node.node.port = port  # type: ignore[attr-defined]
        yield node, calls
    os.rmdir(sockdir)


class FakeRefusal(Exception):
    def __init__(self, errors: list[str]) -> None:
        super().__init__(errors)
        self.errors = errors


def test_port_add_and_del_on_the_command_line(
    served: tuple[NodeThread, list[tuple[str, str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    node, calls = served
    path = node.server.path
    argv = ["port", "add", "-s", path, "lan0", "vm9", "type=tap", "netns=pid:4242", "mac="]
    assert main(argv) == 0
    assert capsys.readouterr().out == "switch lan0: port vm9 added\n"
    assert main(["port", "-s", path, "del", "lan0", "vm9"]) == 0
    assert capsys.readouterr().out == "switch lan0: port vm9 removed\n"
    assert calls == [
        ("lan0", "vm9", {"type": "tap", "netns": "pid:4242", "mac": ""}),
        ("lan0", "vm9", None),
    ]
    # refusals: by the node (with every error), by the node (one message), by the client
    assert main(["port", "add", "-s", path, "lan0", "bad", "type=tap"]) == 2
    assert capsys.readouterr().err == (
        "vswitch: configuration refused, nothing changed\n"
        "  port bad.netns: pid:1: no process (fix netns)\n"
    )
    assert main(["port", "del", "-s", path, "lan9", "vm9"]) == 1
    assert capsys.readouterr().err == "vswitch: no switch lan9 (switches: lan0)\n"
    assert main(["port", "add", "-s", path, "lan0", "vm9"]) == 1
    assert "needs the port's settings" in capsys.readouterr().err
    assert main(["port", "del", "-s", path, "lan0", "vm9", "type=tap"]) == 1
    assert "port del takes no settings" in capsys.readouterr().err
    assert len(calls) == 4


def test_settings_words() -> None:
    assert settings(["type=vxlan", "remote=a,b", "x=y=z"]) == {
        "type": "vxlan",
        "remote": "a,b",
        "x": "y=z",
    }
    with pytest.raises(CommandFailed, match="'tap' is not KEY=VALUE"):
        settings(["tap"])
    with pytest.raises(CommandFailed, match="type is given twice"):
        settings(["type=tap", "type=raw"])


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []

    def port(self, switch: str, name: str, words: dict[str, str] | None) -> list[str]:
        self.calls.append((switch, name, words))
        return ["ok"]


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        ({"action": "move", "switch": "lan0", "name": "p"}, "action: 'move' is not add or del"),
        ({"action": "add", "switch": "lan0"}, "name the switch and the port"),
        ({"action": "add", "switch": "lan0", "name": "p", "settings": {"vni": 4}}, "settings:"),
        ({"action": "add", "switch": "lan0", "name": "p", "settings": ["type=tap"]}, "settings:"),
        ({"action": "del", "switch": 7, "name": "p"}, "switch: expected a string"),
    ],
)
def test_the_port_command_checks_its_request(request_: dict[str, Any], error: str) -> None:
    node = Recorder()
    answer = Dispatcher(node).handle({"id": 1, "cmd": "port", **request_})  # type: ignore[arg-type]
    assert answer["ok"] is False and answer["error"].startswith(error)
    assert node.calls == []


# -- the node ----------------------------------------------------------------------------------


class SocketSystem(FakeSystem):
    """The fake namespace, with socket ports opened for real (they need no privileges)."""

    def open_port(self, port: Any, *, vnet_hdr: int) -> DevicePort:
        if isinstance(port, StreamPortConfig | VdePortConfig | VxlanPortConfig):
            check_port(port, self)
            return port_type(port).open(port, vnet_hdr, 1)
        return super().open_port(port, vnet_hdr=vnet_hdr)


def controller(h: Harness) -> NodeController:
    return NodeController(h.node, EventBus("gw-a"))


def ports(h: Harness) -> dict[str, dict[str, Any]]:
    switch = h.node.dataplane.switch_status()[0]
    return {p["name"]: dict(p) for p in switch["ports"]}


def test_a_port_added_and_deleted_at_run_time(harness: Callable[..., None]) -> None:
    async def scenario(h: Harness) -> None:
        h.to_master()
        carp0 = h.node.core().carpifs["carp0"]
        transitions = carp0.leader.transitions
        ctl = controller(h)
        words = {"type": "tap", "netns": f"pid:{os.getpid()}", "mac": "02:00:00:00:00:99"}
        assert ctl.port("lan0", "vm9", words) == ["switch lan0: port vm9 added"]
        (dev,) = [d for d in h.system.opened if d.ifname == "vm9"]
        assert dev.netns == f"pid:{os.getpid()}" and dev.mac == bytes.fromhex("020000000099")
        assert "vm9" in ports(h) and not dev.closed
        assert [p.name for p in h.node.config.switch["lan0"].ports] == ["up0", "vm1", "vm9"]
        # the carp interfaces were not touched
        assert h.node.core().carpifs["carp0"] is carp0 and h.state() is State.MASTER
        assert carp0.leader.transitions == transitions
        assert ctl.port("lan0", "vm9", None) == ["switch lan0: port vm9 removed"]
        assert dev.closed and "vm9" not in ports(h)
        assert h.state() is State.MASTER and carp0.leader.transitions == transitions
        # through the control socket's dispatcher
        answer = Dispatcher(ctl).handle(
            {
                "id": 2,
                "cmd": "port",
                "action": "add",
                "switch": "lan0",
                "name": "vm8",
                "settings": {"type": "tap"},
            }
        )
        assert answer == {"id": 2, "ok": True, "result": ["switch lan0: port vm8 added"]}

    harness(scenario)


@pytest.mark.parametrize(
    ("words", "error"),
    [
        (
            {"type": "tap", "netns": "pid:4194304"},
            "port vm9.netns: pid:4194304: no process 4194304 (/proc/4194304/ns/net is missing) "
            "(start the container or process first, or fix netns)",
        ),
        ({"type": "tap", "speed": "10"}, "port vm9.speed: unknown key (known: name, type, "),
        ({"type": "tap", "ifname": "up0"}, "port vm9.ifname: interface name 'up0' is already"),
        ({"type": "tun"}, "port vm9.type: 'tun' is not one of tap, raw, stream, vde, vxlan"),
        (
            {"type": "vxlan", "vni": "x", "local": "198.51.100.2", "remote": "198.51.100.3"},
            "port vm9.vni: 'x' is not a VXLAN network identifier",
        ),
        ({"type": "stream", "path": "/proc/self/status"}, "port vm9: cannot open stream port"),
    ],
)
def test_a_port_that_cannot_be_made_changes_nothing(
    harness: Callable[..., None], words: dict[str, str], error: str
) -> None:
    async def scenario(h: Harness) -> None:
        h.to_master()
        before = h.node.config
        opened = len(h.system.opened)
        with pytest.raises(ConfigError) as refused:
            controller(h).port("lan0", "vm9", words)
        assert any(e.startswith(error) for e in refused.value.errors), refused.value.errors
        assert h.node.config is before and len(h.system.opened) == opened
        assert "vm9" not in ports(h) and h.state() is State.MASTER

    harness(scenario, system=SocketSystem())


def test_names_that_clash_or_are_missing_are_refused(harness: Callable[..., None]) -> None:
    async def scenario(h: Harness) -> None:
        ctl = controller(h)
        with pytest.raises(ValueError, match="switch lan0 has a port vm1 already"):
            ctl.port("lan0", "vm1", {"type": "tap"})
        with pytest.raises(ValueError, match=r"no switch lan9 \(switches: lan0\)"):
            ctl.port("lan9", "vm1", {"type": "tap"})
        with pytest.raises(ValueError, match=r"has no port vm7 .*\(ports: up0, vm1\)"):
            ctl.port("lan0", "vm7", None)
        with pytest.raises(ValueError, match="name= is not a setting"):
            ctl.port("lan0", "vm7", {"type": "tap", "name": "x"})

    harness(scenario)


def test_socket_ports_at_run_time_and_vde_clients_in_status(
    harness: Callable[..., None], tmp_path: Path
) -> None:
    async def scenario(h: Harness) -> None:
        ctl = controller(h)
        sock = str(tmp_path / "vm9.sock")
        assert ctl.port("lan0", "vm9", {"type": "stream", "path": sock}) == [
            "switch lan0: port vm9 added"
        ]
        dev = h.node.dataplane.device("lan0", "vm9")
        assert isinstance(dev, StreamPort) and ports(h)["vm9"]["type"] == "stream"
        peer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        peer.setblocking(False)
        peer.connect(sock)
        await until(lambda: ports(h)["vm9"]["link"])
        peer.close()
        await until(lambda: not ports(h)["vm9"]["link"])
        vde = str(tmp_path / "lab.vde")
        ctl.port("lan0", "lab", {"type": "vde", "path": vde})
        client = Client(vde)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, client.handshake)
        await until(lambda: "lab/1" in ports(h))
        assert ports(h)["lab/1"]["type"] == "vde" and ports(h)["lab/1"]["link"]
        assert ctl.status()["switches"][0]["ports"][-1]["name"] == "lab/1"
        client.close()
        await until(lambda: "lab/1" not in ports(h))
        assert ctl.port("lan0", "vm9", None) == ["switch lan0: port vm9 removed"]
        assert not os.path.exists(sock)
        ctl.port("lan0", "lab", None)
        assert not os.path.exists(vde)

    harness(scenario, system=SocketSystem())
