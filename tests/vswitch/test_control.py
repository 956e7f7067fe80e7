"""The control socket, in-process against a FakeNode, on asyncio and uvloop."""

import asyncio
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from carp.actions import Reason
from carp.constants import State
from tests.vswitch.fakenode import FakeNode
from tests.vswitch.loops import Run
from tests.vswitch.polling import until
from vswitch import control
from vswitch.control import LINE_LIMIT, MAX_DEPTH, ControlServer, too_deep
from vswitch.dispatch import Dispatcher
from vswitch.unixsock import ControlSocketError, bind_unix, check_socket_dir, peer_credentials


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
        with pytest.raises(ControlSocketError, match="is already listening there") as refused:
            bind_unix(path)
        assert f"another node (pid {os.getpid()}: " in str(refused.value)  # names the other
    finally:
        live.close()
    other = os.path.join(sockdir, "file")
    with open(other, "w") as f:
        f.write("keep me")
    with pytest.raises(ControlSocketError, match="exists and is not a socket"):
        bind_unix(other)
    with open(other) as f:
        assert f.read() == "keep me"


def test_a_busy_node_keeps_its_socket(sockdir: str) -> None:
    path = os.path.join(sockdir, "n.sock")
    busy = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    busy.bind(path)
    busy.listen(0)  # a node that does not get round to accepting
    inode = os.stat(path).st_ino
    waiting = []
    try:
        while True:  # fill its backlog: a probe now cannot connect, the node is not dead
            assert len(waiting) < 100, "the backlog never filled"
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.setblocking(False)
            waiting.append(client)
            try:
                client.connect(path)
            except BlockingIOError:
                break
        with pytest.raises(ControlSocketError, match="listening there but not accepting"):
            bind_unix(path)
        assert os.stat(path).st_ino == inode  # never unlinked
    finally:
        for client in waiting:
            client.close()
        busy.close()


def test_the_socket_directory_is_checked(sockdir: str) -> None:
    shared = os.path.join(sockdir, "shared")
    os.mkdir(shared)
    os.chmod(shared, 0o1777)  # like /tmp: anyone could put a socket there first
    with pytest.raises(ControlSocketError, match=r"writable by group or others.*chmod go-w"):
        bind_unix(os.path.join(shared, "n.sock"))
    assert os.listdir(shared) == []
    os.chmod(shared, 0o775)
    with pytest.raises(ControlSocketError, match="mode 0775"):
        check_socket_dir(shared)
    mine = os.path.join(sockdir, "mine")
    os.mkdir(mine, 0o755)
    check_socket_dir(mine)
    owner = os.stat(mine).st_uid
    if owner == 0:  # root owns it: another owner only by chown
        os.chown(mine, 4242, -1)
        stranger = 0
    else:  # ours: checked as if the node ran as someone else
        stranger = owner + 1
    with pytest.raises(ControlSocketError, match="neither root nor the node's user"):
        check_socket_dir(mine, stranger)
    with open(os.path.join(sockdir, "file"), "w"):
        pass
    with pytest.raises(ControlSocketError, match="not a directory"):
        check_socket_dir(os.path.join(sockdir, "file"))


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
            assert bad["id"] == 4 and bad["ok"] is False
            assert "advskew" in bad["error"] and "300" in bad["error"] and "0..254" in bad["error"]
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


def test_idle_clients_make_room_for_the_cli(run: Run, sockdir: str) -> None:
    path = os.path.join(sockdir, "n.sock")

    async def scenario() -> None:
        async with serving(path, max_clients=3, reserve=1) as (server, node):
            subs = [await connect(path) for _ in range(3)]
            for sub in subs[:2]:
                assert (await sub.ask(id=1, cmd="events", snapshot=False))["ok"]
            third = await subs[2].ask(id=1, cmd="events", snapshot=False)
            assert third == {"id": 1, "ok": False, "error": "too many event subscribers (2)"}
            assert (await subs[2].ask(id=2, cmd="status"))["ok"]  # still a request client
            cli = await connect(path)  # every slot taken: the idle one makes room
            assert (await cli.ask(id=1, cmd="status"))["ok"]
            evicted = await subs[2].next()
            assert evicted["error"] == "closed: too many control clients and this one was idle"
            assert await subs[2].line() is None
            assert server.dropped_by_reason == {"evicted": 1}
            node.bus.publish_link(1.0, "lan0", "vm1", True)  # the subscribers were left alone
            for sub in subs[:2]:
                assert (await sub.next())["type"] == "link"
            for conn in (*subs, cli):
                conn.close()

    run(scenario())


def test_too_many_clients_and_none_idle(run: Run, sockdir: str) -> None:
    path = os.path.join(sockdir, "n.sock")

    async def scenario() -> None:
        async with serving(path, max_clients=1, reserve=0) as (server, _):
            sub = await connect(path)
            assert (await sub.ask(id=1, cmd="events", snapshot=False))["ok"]
            second = await connect(path)
            assert (await second.next())["error"] == "too many control clients (1)"
            assert await second.line() is None
            assert server.dropped == 1 and server.stats()["dropped_too_many"] == 1
            sub.close()
            await until(lambda: server.clients == 0, "the subscriber to go")
            third = await connect(path)
            assert (await third.ask(id=2, cmd="status"))["ok"]
            second.close()
            third.close()

    run(scenario())


def test_idle_request_clients_time_out_subscribers_do_not(run: Run, sockdir: str) -> None:
    path = os.path.join(sockdir, "n.sock")

    async def scenario() -> None:
        async with serving(path, idle_timeout=0.2) as (server, node):
            sub = await connect(path)
            assert (await sub.ask(id=1, cmd="events", snapshot=False))["ok"]
            idle = await connect(path)
            assert (await idle.ask(id=1, cmd="status"))["ok"]
            assert await idle.next() == {
                "id": None,
                "ok": False,
                "error": "idle for 0.2 s; closing",
            }
            assert await idle.line() is None
            assert server.dropped_by_reason == {"idle": 1}
            node.bus.publish_link(1.0, "lan0", "vm1", True)  # the subscriber outlived it
            assert (await sub.next())["type"] == "link"
            idle.close()
            sub.close()

    run(scenario())


def test_a_long_line_still_being_sent_gets_its_answer(run: Run, sockdir: str) -> None:
    path = os.path.join(sockdir, "n.sock")

    async def scenario() -> None:
        async with serving(path) as (server, _):
            conn = await connect(path)
            conn.writer.write(b"x" * (LINE_LIMIT * 4))  # no newline, more than the server reads
            answer = await conn.next()
            assert answer["error"] == f"request longer than {LINE_LIMIT} bytes"
            assert await conn.line() is None
            assert server.dropped_by_reason == {"line": 1}
            conn.close()

    run(scenario())


def test_deep_nesting_is_answered(run: Run, sockdir: str) -> None:
    path = os.path.join(sockdir, "n.sock")

    async def scenario() -> None:
        async with serving(path):
            conn = await connect(path)
            await conn.send(b"[" * 20_000 + b"]" * 20_000 + b"\n")
            deep = await conn.next()
            assert deep["error"] == f"request nested deeper than {MAX_DEPTH} levels"
            await conn.send(b'{"id": 1, "cmd": "status", "x": ' + b"[" * 40_000 + b"\n")
            assert (await conn.next())["error"] == deep["error"]
            bracey = "[{" * 100  # brackets in a string are not nesting
            answer = await conn.ask(id=bracey, cmd="status")
            assert answer["ok"] and answer["id"] == bracey
            conn.close()

    run(scenario())


def test_too_deep() -> None:
    def nested(depth: int) -> bytes:
        return b'{"a":' * depth + b"1" + b"}" * depth

    assert not too_deep(nested(MAX_DEPTH))
    assert too_deep(nested(MAX_DEPTH + 1))
    assert not too_deep(b"[" * MAX_DEPTH)
    assert too_deep(b"[" * (MAX_DEPTH + 1))
    assert not too_deep(b"[" * 10 + b"]" * 10 + b"[" * 30)  # depth, not count
    inside = b'["' + b"[" * 100 + b'"]'
    assert not too_deep(inside)
    escaped = b'["\\"' + b"[" * 100 + b'"]'  # \" does not end the string
    assert not too_deep(escaped)
    # brackets in an unterminated string: scanned in linear time, not rescanned per quote
    unterminated = b'["' + b'\\"' * 20_000 + b"[" * 40
    assert not too_deep(unterminated)


def test_peer_credentials_of_a_socketpair() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        assert peer_credentials(a) == (os.getpid(), os.getuid(), os.getgid())
    finally:
        a.close()
        b.close()


def test_other_users_are_refused(run: Run, sockdir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = os.path.join(sockdir, "n.sock")
    monkeypatch.setattr(control, "peer_credentials", lambda sock: (1, 4242, 4242))

    async def scenario() -> None:
        async with serving(path) as (server, _):
            conn = await connect(path)
            answer = await conn.next()
            assert answer == {
                "id": None,
                "ok": False,
                "error": "permission denied: uid 4242 is neither root nor the node's user",
            }
            assert await conn.line() is None
            assert server.dropped_by_reason == {"peer": 1}
            conn.close()

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


def test_a_request_client_that_stops_reading_is_dropped(run: Run, sockdir: str) -> None:
    path = os.path.join(sockdir, "n.sock")

    async def scenario() -> None:
        async with serving(path, write_timeout=0.2) as (server, _):
            conn = await connect(path)
            sent = 0
            deadline = asyncio.get_running_loop().time() + 30
            while not server.dropped:  # ask and ask, never read: the answers back up
                assert asyncio.get_running_loop().time() < deadline, "never dropped"
                conn.writer.write(b'{"id": 1, "cmd": "status"}\n' * 100)
                sent += 100
                await asyncio.sleep(0.01)
            assert server.dropped_by_reason == {"slow": 1}
            await until(lambda: server.clients == 0, "the client to go")
            assert sent < 1_000_000
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
        assert server.clients == 0  # every connection ended with the close, none left to GC
        assert await idle.line() is None
        assert await streaming.line() is None
        assert not os.path.exists(path)
        idle.close()
        streaming.close()

    run(scenario())


def test_one_process_holds_at_most_its_share(run: Run, sockdir: str) -> None:
    """A client storm from one process (idle connections, subscribers) takes MAX_PER_PEER slots
    at most: its own longest-idle connection makes room, and when none is idle it is refused,
    while another process's CLI still gets in."""
    path = os.path.join(sockdir, "n.sock")

    async def scenario() -> None:
        async with serving(path) as (server, _):
            subs = [await connect(path) for _ in range(control.MAX_PER_PEER)]
            for n, sub in enumerate(subs[:-1]):
                assert (await sub.ask(id=n, cmd="events", snapshot=False))["ok"]
            idle = subs[-1]
            await until(lambda: server.clients == control.MAX_PER_PEER, "every slot of ours")
            newer = await connect(path)  # our own idle one makes room
            assert (await newer.ask(id=1, cmd="status"))["ok"]
            assert (await idle.next())["error"].startswith("closed: too many control clients")
            assert (await newer.ask(id=2, cmd="events", snapshot=False))["ok"]
            refused = await connect(path)  # none of ours idle now: refused
            message = (await refused.next())["error"]
            assert message == (
                f"too many control connections from process {os.getpid()} ({control.MAX_PER_PEER})"
            )
            assert server.stats()["dropped_per_peer"] == 1
            cli = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "vswitch", "status", "-s", path, "--json"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert cli.returncode == 0, cli.stderr  # another process is served
            for conn in (*subs, newer, refused):
                conn.close()

    run(scenario())


def test_a_cancelled_connection_ends_quietly(run: Run, sockdir: str) -> None:
    """When the loop ends, connection tasks are cancelled: no 'Exception in callback' traceback
    in the node's log (asyncio's start_unix_server reports a cancelled task as an error)."""
    path = os.path.join(sockdir, "n.sock")

    async def scenario() -> None:
        errors: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: errors.append(ctx))
        async with serving(path):
            conn = await connect(path)
            assert (await conn.ask(id=1, cmd="status"))["ok"]
            tasks = [
                t for t in asyncio.all_tasks() if "ControlServer._client" in repr(t.get_coro())
            ]
            assert tasks
            for task in tasks:
                task.cancel()
            await until(lambda: all(t.done() for t in tasks), "the connection task to end")
            await asyncio.sleep(0)  # the task's done callbacks run on the next turn
            conn.close()
        assert errors == []

    run(scenario())
