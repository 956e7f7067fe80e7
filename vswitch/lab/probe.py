"""Failover seen from outside the nodes, for `vswitch demo` and bench/failover.py.

A `PingProbe` runs a fast `ping -D` from a client namespace into a file (iputils flushes every
line, so the file can be read while it runs) and finds the longest silence between two replies:
the outage the client saw. An `EventWatch` follows a node's event stream (control socket
`events`) and records when a carpnode became MASTER, on the node's clock, which is the same
CLOCK_MONOTONIC as ours: the takeover time. Both are bounded in time and count.
"""

import contextlib
import itertools
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from vswitch.ctl.client import EventReader
from vswitch.lab.netns import Lab

# iputils with -D: "[1712345678.123456] 64 bytes from 192.0.2.1: icmp_seq=12 ttl=64 time=0.1 ms"
_REPLY = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from [^:]+: icmp_seq=(\d+) ")
_RTT = re.compile(r"= [\d.]+/([\d.]+)/[\d.]+/[\d.]+ ms")
_COUNTS = re.compile(r"(\d+) packets transmitted, (\d+) received")


@dataclass(frozen=True)
class Reply:
    at: float  # wall clock (gettimeofday), as ping -D prints it
    seq: int


@dataclass(frozen=True)
class Gap:
    """The longest silence between two consecutive replies (the later one after `since`)."""

    seconds: float
    start: float  # wall clock of the last reply before the silence
    end: float  # wall clock of the first reply after it
    lost: int  # echo requests sent in between that got no reply


def parse_ping(text: str) -> list[Reply]:
    """The echo replies in ping -D output, in arrival order; other lines are ignored."""
    replies = []
    for line in text.splitlines():
        m = _REPLY.match(line)
        if m:
            replies.append(Reply(float(m.group(1)), int(m.group(2))))
    return replies


def ping_summary(text: str) -> tuple[int, int, float | None]:
    """(transmitted, received, average RTT in ms or None) from ping's closing lines."""
    counts = _COUNTS.search(text)
    rtt = _RTT.search(text)
    sent, received = (int(counts.group(1)), int(counts.group(2))) if counts else (0, 0)
    return sent, received, float(rtt.group(1)) if rtt else None


def largest_gap(replies: Sequence[Reply], since: float) -> Gap | None:
    """The longest interval between consecutive replies whose later reply came after `since`.

    None when no reply came after `since` (the client never got its gateway back) or there
    is no reply before it to measure from."""
    best: Gap | None = None
    for before, after in itertools.pairwise(replies):
        if after.at <= since:
            continue
        seconds = after.at - before.at
        if best is None or seconds > best.seconds:
            lost = max(0, after.seq - before.seq - 1)
            best = Gap(seconds, before.at, after.at, lost)
    return best


class PingProbe:
    """`ping -D -i interval -w deadline dst` in `netns`, output kept in a temporary file."""

    def __init__(
        self, lab: Lab, netns: str, dst: str, *, interval: float = 0.02, deadline: float = 30.0
    ) -> None:
        self.lab = lab
        self.dst = dst
        self.interval = interval
        fd, self.path = tempfile.mkstemp(prefix="vswitch-ping-", suffix=".txt")
        argv = ["ping", "-D", "-n", "-i", f"{interval:g}", "-w", f"{deadline:g}", dst]
        try:
            self.proc: subprocess.Popen[bytes] | None = lab.spawn(
                netns, argv, stdout=fd, stderr=subprocess.DEVNULL
            )
        except BaseException:
            os.close(fd)
            os.unlink(self.path)
            raise
        os.close(fd)
        self.text = ""

    def read(self) -> str:
        with open(self.path, errors="replace") as f:
            return f.read()

    def replies(self) -> list[Reply]:
        return parse_ping(self.text if self.proc is None else self.read())

    def wait_reply_after(self, at: float, timeout: float) -> bool:
        """True once a reply arrived after wall-clock time `at`; False after `timeout` s."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            replies = self.replies()
            if replies and replies[-1].at > at:
                return True
            if self.proc is None or self.proc.poll() is not None:
                return bool(replies and replies[-1].at > at)
            time.sleep(0.02)
        return False

    def stop(self) -> list[Reply]:
        """SIGINT (ping then flushes and prints its summary); SIGTERM/SIGKILL if it hangs."""
        proc = self.proc
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGINT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(3)
            self.lab.stop(proc, timeout=3)
            self.text = self.read()
            os.unlink(self.path)
            self.proc = None
        return parse_ping(self.text)

    def __enter__(self) -> "PingProbe":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class NodeEvent:
    monotonic: float
    data: dict[str, Any]


class EventWatch:
    """Live events of one node (its control socket's `events`), kept as they come."""

    def __init__(self, socket_path: str, timeout: float = 5.0) -> None:
        self.events: list[NodeEvent] = []
        self._lock = threading.Lock()
        self._reader = EventReader(socket_path, self._add, timeout=timeout)

    def _add(self, data: dict[str, Any]) -> None:
        with self._lock:
            self.events.append(NodeEvent(float(data.get("monotonic", 0.0)), data))

    def first(self, match: Callable[[dict[str, Any]], bool], timeout: float) -> NodeEvent | None:
        """The first event `match` accepts, waiting up to `timeout` seconds for it."""
        end = time.monotonic() + timeout
        while True:
            with self._lock:
                found = next((e for e in self.events if match(e.data)), None)
            if found is not None or time.monotonic() >= end:
                return found
            time.sleep(0.02)

    def became(self, carpif: str, state: str, timeout: float) -> NodeEvent | None:
        """The first transition of any carpnode of `carpif` into `state`."""
        return self.first(
            lambda e: e.get("type") == "state" and e.get("carpif") == carpif and e["new"] == state,
            timeout,
        )

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> "EventWatch":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
