"""vswitch/sdnotify.py: the exact datagrams a listening service manager receives, on a path and
on an abstract socket; the watchdog's interval and timer; nothing raised or blocked, ever."""

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.vswitch.fakenode import FakeNode
from tests.vswitch.polling import until
from vswitch.sdnotify import Notifier, socket_address, status_text, watchdog_usec


class Manager:
    """What systemd listens on: an AF_UNIX datagram socket, with `env` naming it."""

    def __init__(self, sock: socket.socket, name: str) -> None:
        self.sock = sock
        self.env = {"NOTIFY_SOCKET": name}

    def receive(self, timeout: float = 5.0) -> bytes:
        self.sock.settimeout(timeout)
        return self.sock.recv(4096)

    def pending(self) -> list[bytes]:
        """Every datagram already queued, without waiting."""
        self.sock.setblocking(False)
        out = []
        while True:
            try:
                out.append(self.sock.recv(4096))
            except BlockingIOError:
                return out


@pytest.fixture(params=["path", "abstract"])
def manager(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Manager]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        path = str(tmp_path / "notify")
        sock.bind(path)
        name = path
    else:
        abstract = f"vswitch-test-{os.getpid()}-{uuid.uuid4().hex}"
        sock.bind(b"\0" + abstract.encode())
        name = "@" + abstract
    with sock:
        yield Manager(sock, name)


def test_each_message_is_the_exact_datagram(manager: Manager) -> None:
    notifier = Notifier.from_env(dict(manager.env))
    assert notifier.enabled
    assert notifier.ready()
    assert manager.receive() == b"READY=1"
    assert notifier.reloading(123456789)
    assert manager.receive() == b"RELOADING=1\nMONOTONIC_USEC=123456789"
    assert notifier.stopping()
    assert manager.receive() == b"STOPPING=1"
    assert notifier.status("carp0 MASTER, carp1 BACKUP")
    assert manager.receive() == b"STATUS=carp0 MASTER, carp1 BACKUP"
    assert notifier.watchdog()
    assert manager.receive() == b"WATCHDOG=1"
    assert notifier.sent == 5 and notifier.dropped == 0
    assert notifier.stats() == {"sent": 5, "dropped": 0}
    notifier.close()


def test_reloading_defaults_to_now_on_the_monotonic_clock(manager: Manager) -> None:
    notifier = Notifier.from_env(dict(manager.env))
    before = time.monotonic_ns() // 1000
    notifier.reloading()
    after = time.monotonic_ns() // 1000
    first, second = manager.receive().split(b"\n")
    assert first == b"RELOADING=1"
    key, value = second.split(b"=")
    assert key == b"MONOTONIC_USEC" and before <= int(value) <= after


def test_a_status_text_stays_one_assignment(manager: Manager) -> None:
    notifier = Notifier.from_env(dict(manager.env))
    notifier.status("carp0 MASTER\nREADY=1")
    assert manager.receive() == b"STATUS=carp0 MASTER READY=1"


def test_status_text_names_each_carp_interface_and_its_states() -> None:
    node = FakeNode()
    assert status_text(node.status()["carp"]) == "carp0 MASTER, carp1 2:MASTER 3:BACKUP"
    node.states[("carp0", 1)] = "BACKUP"
    assert status_text(node.status()["carp"]).startswith("carp0 BACKUP, ")
    node.params.clear()
    assert status_text(node.status()["carp"]) == "no carp interfaces"


def test_without_notify_socket_everything_is_a_no_op() -> None:
    for env in ({}, {"NOTIFY_SOCKET": ""}, {"NOTIFY_SOCKET": "relative/path"}):
        notifier = Notifier.from_env(dict(env, WATCHDOG_USEC="1000000"))
        assert not notifier.enabled
        assert not notifier.ready() and not notifier.status("x") and not notifier.watchdog()
        assert notifier.watchdog_interval() is None
        assert notifier.sent == 0 and notifier.dropped == 0


def test_socket_address_forms() -> None:
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@abc") == b"\0abc"
    assert socket_address("vsock:2:1234") is None
    assert socket_address(None) is None


def test_an_unreachable_manager_is_counted_not_raised(tmp_path: Path) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert notifier.enabled
    assert not notifier.ready()
    assert not notifier.stopping()
    assert notifier.dropped == 2 and notifier.sent == 0
    assert notifier.stats() == {"sent": 0, "dropped": 2}  # what status reports for "systemd"


def test_a_full_queue_drops_instead_of_blocking(manager: Manager) -> None:
    # nobody reads: the receive queue fills (net.unix.max_dgram_qlen datagrams or the buffer)
    notifier = Notifier.from_env(dict(manager.env))
    results = [notifier.status("x" * 1000) for _ in range(5000)]
    assert results[0] and not results[-1]
    assert notifier.dropped > 0 and notifier.sent + notifier.dropped == 5000
    assert len(manager.pending()) == notifier.sent


def test_unset_removes_the_variables_from_the_environment(manager: Manager) -> None:
    env = dict(manager.env, WATCHDOG_USEC="4000000", WATCHDOG_PID=str(os.getpid()), KEEP="1")
    notifier = Notifier.from_env(env, unset=True)
    assert env == {"KEEP": "1"}
    assert notifier.watchdog_interval() == 2.0
    assert notifier.ready()
    assert manager.receive() == b"READY=1"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "10000000"}, 10_000_000),
        ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "OWN"}, 10_000_000),
        ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "ten"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({}, None),
    ],
)
def test_watchdog_usec_is_ours_only(env: dict[str, str], expected: int | None) -> None:
    env = {k: str(os.getpid()) if v == "OWN" else v for k, v in env.items()}
    assert watchdog_usec(env, os.getpid()) == expected


def test_watchdog_interval_is_half_of_watchdog_usec(manager: Manager) -> None:
    notifier = Notifier.from_env(dict(manager.env, WATCHDOG_USEC="30000000"))
    assert notifier.watchdog_interval() == 15.0
    other = Notifier.from_env(dict(manager.env, WATCHDOG_USEC="30000000", WATCHDOG_PID="1"))
    assert other.watchdog_interval() is None


def test_the_watchdog_pings_from_the_event_loop_until_stopped(manager: Manager) -> None:
    notifier = Notifier.from_env(dict(manager.env, WATCHDOG_USEC="20000"))  # every 10 ms

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = notifier.start_watchdog(loop)
        received: list[bytes] = []

        def three_pings() -> bool:
            received.extend(manager.pending())
            return len(received) >= 3

        await until(three_pings, "three watchdog pings")
        stop()
        assert received[:3] == [b"WATCHDOG=1"] * 3
        sent = notifier.sent
        # A sentinel from a timer three intervals on: the loop runs its timers in deadline
        # order, so a ping still scheduled (due within one interval) would be queued before it.
        interval = notifier.watchdog_interval()
        assert interval is not None
        sentinel = loop.create_future()
        loop.call_later(3 * interval, lambda: sentinel.set_result(notifier.status("sentinel")))
        assert await sentinel
        assert manager.pending() == [b"STATUS=sentinel"]
        assert notifier.sent == sent + 1

    asyncio.run(main())


def test_start_watchdog_without_a_watchdog_does_nothing(manager: Manager) -> None:
    notifier = Notifier.from_env(dict(manager.env))

    async def main() -> None:
        stop = notifier.start_watchdog(asyncio.get_running_loop())
        await asyncio.sleep(0)
        stop()

    asyncio.run(main())
    assert notifier.sent == 0 and manager.pending() == []
