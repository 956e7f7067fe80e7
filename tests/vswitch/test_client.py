"""The client subcommands (status, ifconfig, sysctl, events, reload) through `vswitch.cli.main`,
against a FakeNode served on a real Unix socket by a loop in a background thread."""

import io
import json
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import cast

import pytest

from carp.actions import Reason
from carp.constants import State
from carp.datapath import DataPath
from carp.host import CarpHost
from carp.params import Sysctls
from tests.carp.sim import advert, carpdev, ifparams
from tests.vswitch.fakenode import NodeThread
from vswitch.cli import main
from vswitch.ctl.client import ControlClient, EventReader, NodeUnavailable, find_socket
from vswitch.ctl.status import CLEAR, duration, format_status, watch
from vswitch.events import EventBus
from vswitch.node import Node
from vswitch.nodectl import NodeController
from vswitch.status import STATUS_FORMAT


@pytest.fixture
def sockdir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="vscli", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def served(sockdir: str) -> Iterator[NodeThread]:
    with NodeThread(os.path.join(sockdir, "gw-a.sock")) as node:
        yield node


def cli(served: NodeThread, *argv: str) -> int:
    return main([argv[0], "-s", served.server.path, *argv[1:]])


def poll(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


# ---- status ----


def test_status_table(served: NodeThread, capsys: pytest.CaptureFixture[str]) -> None:
    served.do(lambda: served.node.force("carp1", State.BACKUP, Reason.DEMOTED))
    assert cli(served, "status") == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "node gw-a  up 1h02m03s  allow 1 preempt 0 log 2"
    assert any(line.split()[:4] == ["lan0", "learning", "4", "up0"] for line in lines)
    vm1 = next(line for line in lines if " vm1 " in line).split()
    assert vm1 == ["vm1", "tap", "down", "0", "0", "0", "7", "420", "3"]
    carp1 = next(line for line in lines if line.startswith("carp1") and " 2 " in line)
    assert carp1.split()[:9] == ["carp1", "lan1", "up", "backup", "ip", "0", "2", "BACKUP", "1"]
    assert carp1.endswith("12.2s  demoted")
    assert "carp0  1     192.0.2.3  1        100      0       0.5s" in out
    assert "demote counters: carp=0 uplink=0" in out
    assert "ipackets 12" in out and "badauth 1" in out
    assert "ip_drops" not in out and "datapath" not in out  # this node reports neither


def test_status_json(served: NodeThread, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(served, "status", "--json") == 0
    assert json.loads(capsys.readouterr().out) == served.do(served.node.status)


def test_a_nodes_status_says_its_format() -> None:
    # the real NodeController over the least of a node: no carp interfaces, no switches
    host = CarpHost(Sysctls(), [], {}, lambda: bytes(8))
    node = SimpleNamespace(
        name="gw-a",
        clock=lambda: 12.5,
        started_at=10.0,
        host=host,
        dataplane=SimpleNamespace(switch_status=list),
        counters={"adverts_unresolved": 0, "apply_errors": 0},
        datapath=None,
        watch=SimpleNamespace(annotate=lambda switches: None, stats=dict),  # nothing impaired
        workers=None,
        config=SimpleNamespace(node=SimpleNamespace(workers=0, rt_priority=None)),
    )
    status = NodeController(cast(Node, node), EventBus("gw-a")).status()
    assert next(iter(status)) == "format"
    assert status["format"] == STATUS_FORMAT == 1
    assert (status["node"], status["uptime"], status["carp"]) == ("gw-a", 2.5, [])
    assert json.loads(json.dumps(status)) == status  # what `vswitch status --json` prints


def controller_of(host: CarpHost, datapath: DataPath | None) -> NodeController:
    """The real NodeController over the least of a node: a CarpHost, its DataPath, no switch."""
    node = SimpleNamespace(
        name="gw-a",
        clock=lambda: 12.5,
        started_at=10.0,
        host=host,
        dataplane=SimpleNamespace(switch_status=list),
        counters={"adverts_unresolved": 0, "apply_errors": 0},
        datapath=datapath,
        watch=SimpleNamespace(annotate=lambda switches: None, stats=dict),
        workers=None,
        config=SimpleNamespace(node=SimpleNamespace(workers=0, rt_priority=None)),
    )
    return NodeController(cast(Node, node), EventBus("gw-a"))


def section(text: str, title: str) -> list[str]:
    """The indented lines under the line starting with `title`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title)) + 1
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("  ")), len(lines))
    return lines[start:end]


def test_status_text_shows_the_ip_drops_and_datapath_rules_that_moved() -> None:
    dev = carpdev("lan0", 1, "192.0.2.2")
    host = CarpHost(Sysctls(), [ifparams(passphrase=b"secret")], {"lan0": dev}, lambda: bytes(8))
    host.start(0.0)  # carp0 BACKUP
    datapath = DataPath(host)
    peer = bytes.fromhex("020000000002")
    # a peer whose unicast carppeer names an address that is not this node's: the IP layer
    # drops its advertisements before carp sees them, so no carpstats counter moves
    wrong = advert(passphrase=b"secret", src="192.0.2.3", dst="192.0.2.77")
    datapath.input(1.0, "lan0", "up0", dev.mac + peer + b"\x08\x00" + wrong)
    # a frame for the carp MAC while BACKUP: not accepted (§6.4)
    carp_mac = host.carpifs["carp0"].mac
    datapath.input(1.5, "lan0", "up0", carp_mac + peer + b"\x08\x00" + bytes(40))
    status = controller_of(host, datapath).status()
    assert status["carpstats"]["ipackets"] == 0
    text = format_status(status)
    assert section(text, "ip_drops") == ["  notours 1"]
    assert section(text, "datapath") == ["  not_accepted 1"]
    # zero counters are left out; the JSON has them all
    assert status["ip_drops"]["badsrc"] == 0 and "badsrc" not in text
    assert status["datapath"]["delivered"] == 0 and "delivered" not in text


def test_status_text_says_none_when_no_ip_drop_or_datapath_rule_moved() -> None:
    host = CarpHost(Sysctls(), [], {}, lambda: bytes(8))
    text = format_status(controller_of(host, DataPath(host)).status())
    assert section(text, "ip_drops") == ["  none"]
    assert section(text, "datapath") == ["  none"]


def test_watch_redraws_until_interrupted() -> None:
    out = io.StringIO()
    draws = iter(["first", "second", "third"])
    sleeps: list[float] = []
    assert watch(lambda: next(draws), out, sleep=sleeps.append, rounds=3) == 0
    assert out.getvalue() == f"{CLEAR}first\n{CLEAR}second\n{CLEAR}third\n"
    assert sleeps == [1.0, 1.0]

    def interrupt(_: float) -> None:
        raise KeyboardInterrupt

    out = io.StringIO()
    assert watch(lambda: "frame", out, sleep=interrupt) == 0
    assert out.getvalue() == f"{CLEAR}frame\n\n"


def test_duration() -> None:
    assert (duration(None), duration(0.25), duration(75), duration(3723)) == (
        "-",
        "0.2s",
        "1m15s",
        "1h02m03s",
    )
    assert duration(2 * 86400 + 5) == "2d0h00m05s"


# ---- ifconfig ----


def test_ifconfig_show_and_change(served: NodeThread, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(served, "ifconfig") == 0
    out = capsys.readouterr().out
    assert "carp0: flags=8843<UP,BROADCAST,RUNNING,SIMPLEX,MULTICAST>" in out
    assert "\t\tstate BACKUP vhid 3 advskew 100" in out
    assert cli(served, "ifconfig", "carp1") == 0
    assert "carp0" not in capsys.readouterr().out
    assert cli(served, "ifconfig", "carp0", "192.0.2.11/24", "alias", "-carppeer", "down") == 0
    out = capsys.readouterr().out
    assert "\tinet 192.0.2.11 netmask 0xffffff00 broadcast 192.0.2.255" in out
    assert out.startswith("carp0: flags=8802<BROADCAST,SIMPLEX,MULTICAST>")
    assert served.node.params["carp0"].admin_up is False


def test_ifconfig_errors(served: NodeThread, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(served, "ifconfig", "carp0", "vhid", "0") == 1
    assert capsys.readouterr().err == "vswitch: word 1 'vhid 0': 0 is out of range 1..255\n"
    assert cli(served, "ifconfig", "carp5") == 1
    assert "carp5: no such carp interface" in capsys.readouterr().err


def test_ifconfig_group_demote(served: NodeThread, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(served, "ifconfig", "-g", "carp", "carpdemote", "50") == 0
    assert capsys.readouterr().out == "carp: carp demote count 50\n"
    assert cli(served, "ifconfig", "-g", "carp", "-carpdemote", "20") == 0
    assert capsys.readouterr().out == "carp: carp demote count 30\n"
    assert cli(served, "ifconfig", "-g", "carp", "-carpdemote") == 0
    assert capsys.readouterr().out == "carp: carp demote count 29\n"
    assert cli(served, "ifconfig", "-g", "carp", "carpdemote") == 0
    assert cli(served, "ifconfig", "-g", "carp") == 0
    assert capsys.readouterr().out.splitlines()[-1] == "carp: carp demote count 30"
    assert served.node.groups["carp"] == 30
    for argv in (
        ("-g", "nope", "carpdemote"),
        ("-carpdemote", "1"),
        ("-g", "carp", "carpdemote", "1", "2"),
        ("-g", "carp", "-carpdemote", "1", "x"),
        ("-g", "carp", "carpdemote", "129"),
    ):
        assert cli(served, "ifconfig", *argv) == 1, argv
    err = capsys.readouterr().err
    assert "nope: no such interface group" in err
    assert "-carpdemote needs -g GROUP" in err
    assert "unexpected 2" in err and "unexpected x" in err
    assert "out of range 0..128" in err
    assert served.node.groups["carp"] == 30


# ---- sysctl ----


def test_sysctl(served: NodeThread, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(served, "sysctl") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:3] == ["net.inet.carp.allow=1", "net.inet.carp.preempt=0", "net.inet.carp.log=2"]
    assert "net.inet.carp.stats.ipackets=12" in lines and len(lines) == 19
    assert cli(served, "sysctl", "net.inet.carp.preempt=1", "net.inet.carp.log") == 0
    assert capsys.readouterr().out.splitlines() == [
        "net.inet.carp.preempt: 0 -> 1",
        "net.inet.carp.log=2",
    ]
    assert served.node.sysctls["preempt"] == 1
    assert cli(served, "sysctl", "net.inet.carp.log=x") == 1
    assert cli(served, "sysctl", "net.inet.carp.nope") == 1
    err = capsys.readouterr().err
    assert "net.inet.carp.log: 'x' is not an integer" in err
    assert "net.inet.carp.nope: unknown sysctl" in err


# ---- events ----


def test_events_count(served: NodeThread, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(served, "events", "--count", "2") == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["type"], e["carpif"], e["vhid"]) for e in lines] == [
        ("snapshot", "carp0", 1),
        ("snapshot", "carp1", 2),
    ]
    assert [e["format"] for e in lines] == [1, 1]  # every line says its layout's version
    assert cli(served, "events", "--count", "0") == 0


def test_events_live(served: NodeThread, capsys: pytest.CaptureFixture[str]) -> None:
    codes: list[int] = []
    reader = threading.Thread(
        target=lambda: codes.append(cli(served, "events", "--no-snapshot", "--count", "2"))
    )
    reader.start()
    poll(lambda: served.do(lambda: served.node.bus.subscribers) == 1, "the subscription")
    served.do(lambda: served.node.force("carp0", State.BACKUP, Reason.PREEMPTED))
    served.do(lambda: served.node.bus.publish_link(3.0, "lan0", "vm1", True))
    reader.join(10)
    assert codes == [0]
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["seq"], e["type"]) for e in lines] == [(1, "state"), (2, "link")]
    assert lines[0]["reason"] == "preempted by a peer"


def test_events_stream_closed_by_the_node(
    served: NodeThread, capsys: pytest.CaptureFixture[str]
) -> None:
    codes: list[int] = []
    reader = threading.Thread(target=lambda: codes.append(cli(served, "events")))
    reader.start()
    poll(lambda: served.do(lambda: served.node.bus.subscribers) == 1, "the subscription")
    served.call(served.server.close())
    reader.join(10)
    assert codes == [1]
    assert "the node closed the event stream" in capsys.readouterr().err


# ---- reload ----


def test_reload(served: NodeThread, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(served, "reload") == 0
    assert capsys.readouterr().out == "carp1: advbase 1 -> 2\n"
    served.node.reload_errors = ["carp.carp0.carpnodes[1].advskew: 255 is out of range 0..254"]
    assert cli(served, "reload") == 2
    assert capsys.readouterr().err == (
        "vswitch: configuration refused, nothing changed\n"
        "  carp.carp0.carpnodes[1].advskew: 255 is out of range 0..254\n"
    )


# ---- finding the node ----


def test_find_socket_from_config(sockdir: str) -> None:
    config = os.path.join(sockdir, "node.toml")
    with open(config, "w") as f:
        f.write('[node]\nname = "gw-a"\ncontrol = "/tmp/x/gw-a.sock"\n')
    assert find_socket(None, config) == "/tmp/x/gw-a.sock"
    with open(config, "w") as f:
        f.write('[node]\nname = "gw-b"\n')
    assert find_socket(None, config) == "/run/vswitch/gw-b.sock"
    assert find_socket("/given.sock", config) == "/given.sock"
    with open(config, "w") as f:
        f.write("[switch.lan0]\n")
    with pytest.raises(NodeUnavailable, match="neither control nor name"):
        find_socket(None, config)
    with open(config, "w") as f:
        f.write("[node\n")
    with pytest.raises(NodeUnavailable, match="cannot read"):
        find_socket(None, config)


def test_find_the_only_socket(sockdir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VSWITCH_RUN_DIR", sockdir)
    with pytest.raises(NodeUnavailable, match="no control socket in"):
        find_socket(None, None)
    with open(os.path.join(sockdir, "notes.sock"), "w"):
        pass  # a regular file named like a socket does not count
    socks = []
    for name in ("gw-a", "gw-b"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(os.path.join(sockdir, f"{name}.sock"))
        socks.append(s)
        if name == "gw-a":
            assert find_socket(None, None) == os.path.join(sockdir, "gw-a.sock")
    with pytest.raises(NodeUnavailable, match=r"several nodes .*\(gw-a.sock, gw-b.sock\)"):
        find_socket(None, None)
    for s in socks:
        s.close()


def test_no_node_running(sockdir: str, capsys: pytest.CaptureFixture[str]) -> None:
    missing = os.path.join(sockdir, "none.sock")
    assert main(["status", "-s", missing]) == 1
    assert capsys.readouterr().err == f"vswitch: no node is running at {missing} (no such socket)\n"
    dead = os.path.join(sockdir, "dead.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(dead)
    s.close()
    assert main(["reload", "-s", dead]) == 1
    assert "(connection refused)" in capsys.readouterr().err


# ---- the client as a library (the namespace lab) ----


def test_event_reader_hands_events_over_from_its_thread(served: NodeThread) -> None:
    got: list[dict[str, object]] = []
    with EventReader(served.server.path, got.append) as reader:
        # subscribed when the constructor returns: nothing after it is missed
        assert served.do(lambda: served.node.bus.subscribers) == 1
        served.do(lambda: served.node.force("carp0", State.BACKUP, Reason.PREEMPTED))
        served.do(lambda: served.node.bus.publish_link(3.0, "lan0", "vm1", False))
        poll(lambda: len(got) == 2, "two events")
        assert [(e["type"], e["seq"]) for e in got] == [("state", 1), ("link", 2)]
    poll(lambda: served.do(lambda: served.node.bus.subscribers) == 0, "the unsubscription")
    assert not reader._thread.is_alive()


def test_event_reader_ends_when_the_node_closes_the_stream(served: NodeThread) -> None:
    carpnodes = sum(len(c["carpnodes"]) for c in served.do(served.node.status)["carp"])
    got: list[dict[str, object]] = []
    reader = EventReader(served.server.path, got.append, snapshot=True)
    poll(lambda: len(got) == carpnodes, "the snapshot")
    served.call(served.server.close())
    reader._thread.join(10)
    assert not reader._thread.is_alive()
    reader.close()  # after the node went: nothing to wake, no error
    assert [e["type"] for e in got] == ["snapshot"] * carpnodes


def test_event_reader_refused_raises_in_the_constructor(sockdir: str) -> None:
    with pytest.raises(NodeUnavailable, match="no such socket"):
        EventReader(os.path.join(sockdir, "none.sock"), print)


def test_a_garbled_answer_is_a_clear_error(sockdir: str) -> None:
    path = os.path.join(sockdir, "garbled.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)

    def answer() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(1024)
            conn.sendall(b"not json\n")

    thread = threading.Thread(target=answer)
    thread.start()
    try:
        with ControlClient(path) as client, pytest.raises(NodeUnavailable, match="unexpected"):
            client.request("status")
    finally:
        thread.join(10)
        server.close()
