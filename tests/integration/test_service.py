"""A running node as systemd sees it: sd_notify over a real NOTIFY_SOCKET (READY, STATUS with the
carp states, WATCHDOG, RELOADING with MONOTONIC_USEC then READY on SIGHUP, STOPPING on SIGTERM),
and a node whose stderr reader has gone away still serves the VIP."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vswitch.lab.gateway import LAN_VIP, GatewayLab, pair_specs

pytestmark = pytest.mark.netns


class Listener:
    """The NOTIFY_SOCKET side: every datagram the node sends, as its lines."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[list[str]] = []

    def until(self, match: Callable[[list[str]], bool], timeout: float = 15.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                break
            lines = data.decode().splitlines()
            self.messages.append(lines)
            if match(lines):
                return lines
        raise AssertionError(f"no matching notification; got {self.messages}")


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    notify = Listener(tmp_path / "notify")
    yield notify
    notify.sock.close()


def test_the_node_speaks_sd_notify(listener: Listener, tmp_path: Path) -> None:
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "400000"}
    with GatewayLab(pair_specs(wan=False, ipv6=False)[:1], clients=1, upstream=False) as lab:
        gw = lab.gateways[0]
        lab.start(gw, env=env)
        assert listener.until(lambda m: m == ["READY=1"])
        listener.until(lambda m: m == ["STATUS=carp0 MASTER"])
        pings = 0
        while pings < 3:  # every WATCHDOG_USEC / 2 from the node's loop
            listener.until(lambda m: m == ["WATCHDOG=1"], timeout=2.0)
            pings += 1
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert gw.proc is not None
        os.kill(gw.proc.pid, signal.SIGHUP)
        reloading = listener.until(lambda m: m[:1] == ["RELOADING=1"])
        assert reloading[1].startswith("MONOTONIC_USEC=")
        assert int(reloading[1].split("=")[1]) >= before
        listener.until(lambda m: m == ["READY=1"])
        assert lab.stop(gw) == 0
        listener.until(lambda m: m == ["STOPPING=1"])


def test_a_dead_stderr_reader_stops_nothing() -> None:
    """`vswitch run ... 2>&1 | head -c 1`: the node's log lines meet a broken pipe from the first
    state change on; it must still become MASTER, advertise and answer for the VIP."""
    with GatewayLab(pair_specs(wan=False, ipv6=False)[:1], clients=1, upstream=False) as lab:
        gw = lab.gateways[0]
        argv = [sys.executable, "-m", "vswitch", "run", "-c", gw.config_path]
        shell = f"{' '.join(argv)} 2>&1 | head -c 1 >/dev/null; sleep 60"
        gw.proc = lab.lab.spawn(gw.netns, ["sh", "-c", shell], start_new_session=True)
        try:
            lab.wait_for(lambda: lab.request(gw, {"cmd": "status"}) is not None, 15.0, gw)
            lab.wait_for(lambda: lab.state(gw) == "MASTER", 15.0, gw)
            assert lab.ping(1, LAN_VIP)
            first = lab.request(gw, {"cmd": "status"})["carpstats"]["opackets"]
            lab.wait_for(
                lambda: lab.request(gw, {"cmd": "status"})["carpstats"]["opackets"] >= first + 2,
                10.0,
                gw,
            )
            status = lab.request(gw, {"cmd": "status"})
            assert status["channels"]["log"]["dropped"] >= 1  # the lines went nowhere, counted
        finally:
            os.killpg(gw.proc.pid, signal.SIGTERM)
            try:
                gw.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(gw.proc.pid, signal.SIGKILL)
            gw.proc = None
