"""The control socket, in-process against a FakeNode, on asyncio and uvloop."""

import asyncio
import json
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from carp.actions import Reason
from carp.constants import State
from tests.vswitch.fakenode import FakeNode
from tests.vswitch.loops import Run
from vswitch.control import LINE_LIMIT, ControlServer, ControlSocketError, Dispatcher, bind_unix


@pytest.fixture
def sockdir() -> Iterator[str]:
    # sun_path is 108 bytes: pytest's tmp_path can be longer than that
    path = tempfile.mkdtemp(prefix="vsctl", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, raw: bytes) -> None:
        self.writer.write(raw)
        await self.writer.drain()

    async def line(self) -> dict[str, Any] | None:
        raw = await asyncio.wait_for(self.reader.readline(), 10)
        return json.loads(raw) if raw else None

    async def next(self) -> dict[str, Any]:
        """The next line, which must be there."""
        message = await self.line()
        assert message is not None, "the server hung up"
        return message

    async def ask(self, **request: Any) -> dict[str, Any]:
        await self.send((json.dumps(request) + "\n").encode())
        answer = await self.line()
        assert answer is not None
        return answer

    def close(self) -> None:
        self.writer.close()


async def connect(path: str) -> Conn:
    return Conn(*await asyncio.open_unix_connection(path))


@asynccontextmanager
async def serving(path: str, node: FakeNode | None = None, **opts: Any) -> AsyncIterator[Any]:
    node = node or FakeNode()
    server = ControlServer(path, node, node.bus, **opts)
    await server.start()
    try:
        yield server, node
    finally:
        await server.close()


async def until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


# ---- the socket file ----


def test_socket_file_lifecycle(run: Run, sockdir: str) -> None:
    path = os.path.join(sockdir, "run", "vswitch", "gw-a.sock")

    async def scenario() -> None:
        async with serving(path):
            st = os.stat(path)
            assert stat.S_ISSOCK(st.st_mode)
            assert stat.S_IMODE(st.st_mode) == 0o600
            conn = await connect(path)
            assert (await conn.ask(id=1, cmd="status"))["ok"]
            conn.close()
        assert not os.path.exists(path)

    run(scenario())


def test_stale_socket_is_replaced(run: Run, sockdir: str) -> None:
    path = os.path.join(sockdir, "n.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # the file stays, nobody listens: what a crashed node leaves

    async def scenario() -> None:
        async with serving(path):
            conn = await connect(path)
            assert (await conn.ask(id=7, cmd="status"))["id"] == 7
            conn.close()

    run(scenario())


def test_refuses_a_live_socket_and_other_files(sockdir: str) -> None:
    path = os.path.join(sockdir, "n.sock")
    live = bind_unix(path)
    try:
        with pytest.raises(ControlSocketError, match="another node is already listening"):
            bind_unix(path)
    finally:
        live.close()
    other = os.path.join(sockdir, "file")
    with open(other, "w") as f:
        f.write("keep me")
    with pytest.raises(ControlSocketError, match="exists and is not a socket"):
        bind_unix(other)
    with open(other) as f:
        assert f.read() == "keep me"


def test_close_leaves_a_replaced_socket_alone(run: Run, sockdir: str) -> None:
    path = os.path.join(sockdir, "n.sock")

    async def scenario() -> None:
        async with serving(path):
            os.unlink(path)
            newcomer = bind_unix(path)  # another node took the path over
        assert os.path.exists(path)
        newcomer.close()

    run(scenario())


# ---- requests ----


def test_status_round_trips(run: Run, sockdir: str) -> None:
    path = os.path.join(sockdir, "n.sock")

    async def scenario() -> None:
        async with serving(path) as (_, node):
            conn = await connect(path)
            answer = await conn.ask(id="a", cmd="status")
            assert answer == {"id": "a", "ok": True, "result": node.status()}
            conn.close()

    run(scenario())


def test_ifconfig_show_change_and_errors(run: Run, sockdir: str) -> None:
    path = os.path.join(sockdir, "n.sock")

    async def scenario() -> None:
        async with serving(path) as (_, node):
            conn = await connect(path)
            shown = (await conn.ask(id=1, cmd="ifconfig", carpif="carp0"))["result"]
            assert "\tcarp: MASTER carpdev lan0 vhid 1 advbase 1 advskew 0" in shown
            assert "carp1" not in shown
            every = (await conn.ask(id=2, cmd="ifconfig"))["result"]
            assert "carp0: flags" in every and "carp1: flags" in every
            changed = await conn.ask(
                id=3, cmd="ifconfig", carpif="carp0", words=["advskew", "50", "state", "backup"]
            )
            assert "\tcarp: BACKUP carpdev lan0 vhid 1 advbase 1 advskew 50" in changed["result"]
            assert node.params["carp0"].carpnodes[0].advskew == 50
            bad = await conn.ask(id=4, cmd="ifconfig", carpif="carp0", words=["advskew", "300"])
            assert bad == {"id": 4, "ok": False, "error": "advskew 300: out of range 0..254"}
            unknown = await conn.ask(id=5, cmd="ifconfig", carpif="carp9", words=["up"])
            assert unknown["error"] == "carp9: no such carp interface"
            nameless = await conn.ask(id=6, cmd="ifconfig", words=["up"])
            assert nameless["error"] == "name the carp interface to change"
            words = await conn.ask(id=7, cmd="ifconfig", carpif="carp0", words="up")
            assert words["error"] == "words: expected a list of strings"
            conn.close()

    run(scenario())


def test_dispatcher_demote_sysctl_reload() -> None:
    node = FakeNode()
    d = Dispatcher(node)

    def ok(**request: Any) -> Any:
        answer = d.handle(request)
        assert answer["ok"], answer
        return answer["result"]

    def error(**request: Any) -> str:
        answer = d.handle(request)
        assert not answer["ok"], answer
        return str(answer["error"])

    assert ok(cmd="demote", group="carp")["text"] == "carp: carp demote count 0"
    assert ok(cmd="demote", group="carp", word="carpdemote", count=50)["value"] == 50
    assert ok(cmd="demote", group="carp", word="-carpdemote")["value"] == 49
    assert node.groups["carp"] == 49
    assert "out of range 0..128" in error(cmd="demote", group="carp", word="carpdemote", count=200)
    ok(cmd="demote", group="carp", word="carpdemote", count=128)
    assert "would be 305" in error(cmd="demote", group="carp", word="carpdemote", count=128)
    assert error(cmd="demote") == "group: missing"
    assert error(cmd="demote", group=5) == "group: expected a string"

    every = ok(cmd="sysctl")
    assert every["net.inet.carp.preempt"] == 0
    assert every["net.inet.carp.stats.ipackets"] == 12
    assert len(every) == 3 + 16
    assert ok(cmd="sysctl", name="net.inet.carp.log") == {"net.inet.carp.log": 2}
    assert ok(cmd="sysctl", name="preempt", value=1) == {"net.inet.carp.preempt": 1, "old": 0}
    assert node.sysctls["preempt"] == 1
    assert ok(cmd="sysctl", name="net.inet.carp.stats.badauth") == {
        "net.inet.carp.stats.badauth": 1
    }
    assert len(ok(cmd="sysctl", name="net.inet.carp.stats")) == 16
    assert "read-only" in error(cmd="sysctl", name="net.inet.carp.stats.ipackets", value=0)
    assert "no such counter" in error(cmd="sysctl", name="net.inet.carp.stats.bogus")
    assert "unknown sysctl" in error(cmd="sysctl", name="net.inet.carp.ttl")
    assert "must be an integer" in error(cmd="sysctl", name="preempt", value="1")
    assert "must be an integer" in error(cmd="sysctl", name="preempt", value=True)
    assert error(cmd="sysctl", name="allow", value=7) == "net.inet.carp.allow: 7 is not 0 or 1"

    assert ok(cmd="reload") == ["carp1: advbase 1 -> 2"]
    node.reload_errors = ["carp.carp0.advskew: 255 is out of range 0..254", "node: missing"]
    refused = d.handle({"id": 9, "cmd": "reload"})
    assert refused == {
        "id": 9,
        "ok": False,
        "error": "configuration refused, nothing changed",
        "errors": node.reload_errors,
    }
    assert error(cmd="frobnicate") == "unknown command 'frobnicate'"
    assert error(cmd=None) == "unknown command None"


def test_internal_errors_are_answered_not_raised() -> None:
    node = FakeNode()

    def broken() -> Any:
        raise RuntimeError("disk on fire")

    node.status = broken  # type: ignore[method-assign]
    answer = Dispatcher(node).handle({"id": 1, "cmd": "status"})
    assert answer == {"id": 1, "ok": False, "error": "internal error: RuntimeError: disk on fire"}


def test_bad_requests_keep_the_connection(run: Run, sockdir: str) -> None:
    path = os.path.join(sockdir, "n.sock")

    async def scenario() -> None:
        async with serving(path):
            conn = await connect(path)
            await conn.send(b"{not json\n\n")
            assert await conn.line() == {"id": None, "ok": False, "error": "not a JSON object"}
            await conn.send(b"[1, 2]\n")
            assert (await conn.next())["error"] == "not a JSON object"
            await conn.send(b"\xff\xfe\n")
            assert (await conn.next())["error"] == "not a JSON object"
            assert (await conn.ask(id=3, cmd="status"))["ok"]
            await conn.send(b"x" * (LINE_LIMIT + 10) + b"\n")
            too_long = await conn.line()
            assert too_long == {
                "id": None,
                "ok": False,
                "error": f"request longer than {LINE_LIMIT} bytes",
            }
            assert await conn.line() is None  # then the server hangs up
            conn.close()

    run(scenario())


def test_too_many_clients(run: Run, sockdir: str) -> None:
    path = os.path.join(sockdir, "n.sock")

    async def scenario() -> None:
        async with serving(path, max_clients=1) as (server, _):
            first = await connect(path)
            assert (await first.ask(id=1, cmd="status"))["ok"]
            second = await connect(path)
            assert (await second.next())["error"] == "too many control clients"
            assert await second.line() is None
            assert server.dropped == 1
            assert (await first.ask(id=2, cmd="status"))["ok"]
            first.close()
            second.close()

    run(scenario())


# ---- the event stream ----


def test_events_snapshot_then_live_in_order(run: Run, sockdir: str) -> None:
    path = os.path.join(sockdir, "n.sock")

    async def scenario() -> None:
        async with serving(path) as (_, node):
            node.force("carp1", State.BACKUP, Reason.DEMOTED)  # seq 1: vhid 2 MASTER -> BACKUP
            conn = await connect(path)
            ack = await conn.ask(id=1, cmd="events")
            assert ack == {"id": 1, "ok": True, "result": {"seq": 1}}
            snapshot = [await conn.next() for _ in range(3)]
            assert [(e["type"], e["carpif"], e["vhid"], e["new"]) for e in snapshot] == [
                ("snapshot", "carp0", 1, "MASTER"),
                ("snapshot", "carp1", 2, "BACKUP"),
                ("snapshot", "carp1", 3, "BACKUP"),
            ]
            assert snapshot[1]["reason"] == "demoted"
            node.force("carp0", State.BACKUP, Reason.PREEMPTED)
            node.force("carp1", State.MASTER, Reason.MASTER_DOWN)
            node.bus.publish_link(2.0, "lan0", "vm1", True)
            live = [await conn.next() for _ in range(4)]
            assert [(e["seq"], e["type"], e.get("vhid"), e.get("new")) for e in live] == [
                (2, "state", 1, "BACKUP"),
                (3, "state", 2, "MASTER"),
                (4, "state", 3, "MASTER"),
                (5, "link", None, None),
            ]
            assert live[0]["old"] == "MASTER" and live[0]["reason"] == "preempted by a peer"
            conn.close()
            await until(lambda: node.bus.subscribers == 0, "the subscriber to go")

    run(scenario())


def test_events_without_snapshot(run: Run, sockdir: str) -> None:
    path = os.path.join(sockdir, "n.sock")

    async def scenario() -> None:
        async with serving(path) as (_, node):
            conn = await connect(path)
            assert (await conn.ask(id=1, cmd="events", snapshot=False))["ok"]
            node.bus.publish_link(2.0, "lan0", "vm1", False)
            assert (await conn.next())["type"] == "link"
            conn.close()

    run(scenario())


def test_a_burst_beyond_the_queue_drops_only_that_subscriber(run: Run, sockdir: str) -> None:
    path = os.path.join(sockdir, "n.sock")

    async def scenario() -> None:
        async with serving(path, queue_size=8) as (server, node):
            small = await connect(path)
            assert (await small.ask(id=1, cmd="events", snapshot=False))["ok"]
            await until(lambda: node.bus.subscribers == 1, "the first subscriber")
            big_server = ControlServer(path + "2", node, node.bus, queue_size=1000)
            await big_server.start()
            try:
                big = await connect(path + "2")
                assert (await big.ask(id=1, cmd="events", snapshot=False))["ok"]
                for i in range(20):  # one loop turn: the stream tasks cannot run in between
                    node.bus.publish_link(float(i), "lan0", f"p{i}", True)
                assert server.dropped == 1 and node.bus.dropped == 1
                assert node.bus.subscribers == 1
                seen = []
                while (event := await small.line()) is not None:
                    seen.append(event)
                assert len(seen) < 20  # cut off, not delivered in full
                ports = [(await big.next())["port"] for _ in range(20)]
                assert ports == [f"p{i}" for i in range(20)]
                big.close()
            finally:
                await big_server.close()
            small.close()

    run(scenario())


def test_a_client_that_stops_reading_is_dropped(run: Run, sockdir: str) -> None:
    path = os.path.join(sockdir, "n.sock")

    async def scenario() -> None:
        async with serving(path, queue_size=100_000, write_timeout=0.2) as (server, node):
            conn = await connect(path)
            assert (await conn.ask(id=1, cmd="events", snapshot=False))["ok"]
            published = 0
            deadline = asyncio.get_running_loop().time() + 30
            while server.dropped == 0:  # fill the socket buffers; the client never reads
                assert asyncio.get_running_loop().time() < deadline, "never dropped"
                for _ in range(500):
                    node.bus.publish_link(1.0, "lan0", "x" * 200, True)
                published += 500
                await asyncio.sleep(0.01)
            await until(lambda: node.bus.subscribers == 0, "the subscriber to go")
            assert server.clients == 0
            assert published < 1_000_000
            conn.close()

    run(scenario())


def test_close_with_clients_connected(run: Run, sockdir: str) -> None:
    path = os.path.join(sockdir, "n.sock")

    async def scenario() -> None:
        node = FakeNode()
        server = ControlServer(path, node, node.bus)
        await server.start()
        idle = await connect(path)
        streaming = await connect(path)
        assert (await streaming.ask(id=1, cmd="events", snapshot=False))["ok"]
        assert (await idle.ask(id=1, cmd="status"))["ok"]
        await asyncio.wait_for(server.close(), 10)
        assert await idle.line() is None
        assert await streaming.line() is None
        assert not os.path.exists(path)
        idle.close()
        streaming.close()

    run(scenario())
