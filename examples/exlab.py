"""What the examples share: the gateway lab with an example's own node configs, events as they
happen, who answers which flow, and a main() that always tears the lab down.

Each example directory holds gwa.toml and gwb.toml, written for the gateway lab of
vswitch/lab/gateway.py: node N (gwa = 1, gwb = 2) has raw ports on the veths "lan" and "wan", and
host addresses 192.0.2.1N/24 and 198.51.100.1N/24. The files are used as they are, except that
`[node] control` moves into the lab's own directory so that runs never share a socket.
"""

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the checkout's vswitch, also without run.sh

from vswitch.lab.gateway import LAN_VIP, GatewayLab, GatewaySpec  # noqa: E402

NODES = ("gwa", "gwb")
RESPONDER_PORT = 7000

States = dict[tuple[str, int], str]

# a UDP responder bound to a virtual address: it answers every datagram with its node's name
_RESPONDER = """
import socket, sys
name, addr, port, ready = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((addr, port))
open(ready, "w").close()
while True:
    _, peer = s.recvfrom(2048)
    s.sendto(name.encode(), peer)
"""

# one datagram from each source address (one flow each); prints source -> names that answered
_FLOWS = """
import json, selectors, socket, sys, time
dst, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
sel = selectors.DefaultSelector()
answers = {}
for src in sys.argv[4:]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 0))
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ, src)
    answers[src] = []
    s.sendto(b"who", (dst, port))
end = time.monotonic() + timeout
grace = None
while time.monotonic() < end:
    if grace is None and all(answers.values()):
        grace = end = min(end, time.monotonic() + 0.3)  # a little longer, to see duplicates
    for key, _ in sel.select(max(0.0, end - time.monotonic())):
        while True:
            try:
                data = key.fileobj.recv(2048)
            except BlockingIOError:
                break
            answers[key.data].append(data.decode())
print(json.dumps(answers))
"""


def say(text: str = "") -> None:
    print(text, flush=True)


def step(title: str) -> None:
    say(f"\n== {title} " + "=" * max(3, 70 - len(title)))


# -- the lab -----------------------------------------------------------------------------------


def node_config(path: Path, control: str) -> str:
    """The example's TOML with `[node] control` pointed at `control`."""
    text = path.read_text()
    new, count = re.subn(r"(?m)^control\s*=.*$", f"control = {json.dumps(control)}", text)
    if count != 1:
        raise ValueError(f"{path}: expected one `control = ...` line in [node]")
    return new


def spec_of(path: Path) -> GatewaySpec:
    data = tomllib.loads(path.read_text())
    sysctl = data.get("sysctl", {})
    return GatewaySpec(
        data["node"]["name"],
        data.get("carp", {}),
        preempt=bool(sysctl.get("preempt", False)),
        log=int(sysctl.get("log", 2)),
    )


@contextmanager
def example_lab(
    here: Path, *, clients: int = 1, segment: str = "bridge", upstream: bool = True
) -> Iterator[GatewayLab]:
    """A gateway lab whose nodes run `here`/gwa.toml and gwb.toml; removed on the way out."""
    paths = [here / f"{name}.toml" for name in NODES]
    specs = [spec_of(p) for p in paths]
    with GatewayLab(specs, clients=clients, segment=segment, upstream=upstream, ipv6=False) as lab:
        say(f"lab {lab.lab.prefix}: namespaces {lab.lab.prefix}-*, files in {lab.dir}")
        for gw, path in zip(lab.gateways, paths, strict=True):
            Path(gw.config_path).write_text(node_config(path, gw.socket_path))
        try:
            yield lab
        finally:
            say(f"\nremoving lab {lab.lab.prefix} ...")
    if lab.lab.teardown_errors:
        raise RuntimeError("teardown problems: " + "; ".join(lab.lab.teardown_errors))
    say(f"lab {lab.lab.prefix} removed")


def vswitch(*args: str) -> str:
    """The `vswitch` command line, as an operator runs it."""
    result = subprocess.run(
        [sys.executable, "-m", "vswitch", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    if result.returncode != 0:
        raise RuntimeError(f"vswitch {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def wait_states(lab: GatewayLab, want: dict[str, States], timeout: float = 30.0) -> float:
    """Wait until every named node shows exactly these carpnode states; seconds it took."""
    by_name = {gw.name: gw for gw in lab.gateways}

    def reached() -> bool:
        gone = [
            gw.name for gw in lab.gateways if gw.proc is not None and gw.proc.poll() is not None
        ]
        if gone:
            raise RuntimeError(f"node {', '.join(gone)} exited\n{lab.logs()}")
        return all(lab.states(by_name[n]) == s for n, s in want.items())

    return lab.wait_for(reached, timeout)


def show_states(lab: GatewayLab) -> None:
    """A table: one row per running node, one column per carpnode."""
    table = {gw.name: lab.states(gw) for gw in lab.gateways if gw.proc is not None}
    keys = sorted({k for states in table.values() for k in states})
    say("   node  " + "".join(f"{c} vhid {v}".ljust(16) for c, v in keys).rstrip())
    for name, states in table.items():
        say(f"   {name:<6}" + "".join(states.get(k, "-").ljust(16) for k in keys).rstrip())


# -- events as they happen -----------------------------------------------------------------------


@dataclass
class EventPrinter:
    """Prints every node's state and link events from its event stream while the example runs
    (the control protocol's `events` command, read on a socket per node)."""

    lab: GatewayLab
    start: float = field(default_factory=time.monotonic)
    seen: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        for gw in self.lab.gateways:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._socks.append(sock)
            sock.connect(gw.socket_path)
            sock.sendall(b'{"id": 1, "cmd": "events", "snapshot": false}\n')
            thread = threading.Thread(target=self._read, args=(gw.name, sock), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _read(self, node: str, sock: socket.socket) -> None:
        buffer = b""
        answered = False
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return  # the node stopped, or close()
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if not answered:  # the answer to `events` comes first
                    answered = True
                    continue
                event = json.loads(line)
                if event.get("type") in ("state", "link"):
                    at = time.monotonic() - self.start
                    self.seen.append((at, node, event))
                    say(f"   {at:7.2f}s  {node}  {describe(event)}")

    def mark(self) -> float:
        return time.monotonic() - self.start

    def close(self) -> None:
        for sock in self._socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the reader
        for thread in self._threads:
            thread.join(5)
        for sock in self._socks:
            sock.close()


def describe(event: dict[str, Any]) -> str:
    if event["type"] == "link":
        return f"port {event['port']} of {event['switch']}: link {'up' if event['up'] else 'down'}"
    return (
        f"{event['carpif']} vhid {event['vhid']}: {event['old']} -> {event['new']}"
        f" ({event['reason']})"
    )


# -- flows: who answers ------------------------------------------------------------------------


def start_responders(lab: GatewayLab, addr: str = LAN_VIP, port: int = RESPONDER_PORT) -> None:
    """A UDP responder on `addr` in every node's namespace, answering with the node's name."""
    for gw in lab.gateways:
        ready = os.path.join(lab.dir, f"responder-{gw.name}.ready")
        argv = [sys.executable, "-c", _RESPONDER, gw.name, addr, str(port), ready]
        proc = lab.lab.spawn(gw.netns, argv)
        end = time.monotonic() + 10
        while not os.path.exists(ready):
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"the responder in {gw.name} did not start")
            time.sleep(0.02)


def flow_sources(count: int, first: int = 150) -> list[str]:
    return [f"192.0.2.{first + i}" for i in range(count)]


@dataclass
class Shares:
    """Who answered the flows: node -> flows, plus flows nobody or several nodes answered."""

    flows: int
    by_node: dict[str, int]
    unanswered: int
    duplicated: int

    def line(self) -> str:
        parts = [f"{n} {self.by_node.get(n, 0):>3} ({self.percent(n):5.1f}%)" for n in NODES]
        return "  ".join(
            [*parts, f"unanswered {self.unanswered:>3}", f"answered twice {self.duplicated}"]
        )

    def percent(self, node: str) -> float:
        return 100.0 * self.by_node.get(node, 0) / self.flows if self.flows else 0.0


def measure(
    lab: GatewayLab,
    sources: Sequence[str],
    *,
    client: int = 1,
    dst: str = LAN_VIP,
    port: int = RESPONDER_PORT,
    timeout: float = 2.0,
) -> Shares:
    """One UDP datagram per source address to dst:port; which node answered each flow."""
    ns = lab.clients[client - 1]
    lab.lab.run(ns, ["ip", "neigh", "flush", "dev", "eth0"], check=False)  # a new carp MAC
    argv = [sys.executable, "-c", _FLOWS, dst, str(port), f"{timeout:g}", *sources]
    answers: dict[str, list[str]] = json.loads(lab.lab.run(ns, argv, timeout=timeout + 30).stdout)
    by_node: dict[str, int] = {}
    for names in answers.values():
        if names:
            by_node[names[0]] = by_node.get(names[0], 0) + 1
    return Shares(
        len(answers),
        by_node,
        sum(1 for names in answers.values() if not names),
        sum(1 for names in answers.values() if len(set(names)) > 1),
    )


# -- running an example ------------------------------------------------------------------------


def preflight() -> str | None:
    if os.geteuid() != 0:
        return "needs root (it creates network namespaces, veths and TAP devices)"
    for tool in ("ip", "ping"):
        if shutil.which(tool) is None:
            return f"needs `{tool}` (iproute2, iputils-ping)"
    if not os.path.exists("/dev/net/tun"):
        return "needs /dev/net/tun (modprobe tun)"
    return None


def main(description: str, body: Callable[[argparse.Namespace], None]) -> int:
    """Parse --quick, run `body`; a failure or Ctrl-C still removes the lab (the `with`)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="fewer flows and pauses (tests)")
    args = parser.parse_args()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    problem = preflight()
    if problem:
        print(f"{parser.prog}: {problem}", file=sys.stderr)
        return 1
    try:
        body(args)
    except KeyboardInterrupt:
        print("\ninterrupted; the lab has been removed", file=sys.stderr)
        return 130
    except (RuntimeError, TimeoutError) as exc:
        print(f"\n{parser.prog}: {exc}", file=sys.stderr)
        return 1
    return 0
