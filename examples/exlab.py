"""What the examples share: the gateway lab with an example's own node configs, events as they
happen, who answers which flow, and a main() that always tears the lab down.

Each example directory holds gwa.toml and gwb.toml, written for the gateway lab of
vswitch/lab/gateway.py: node N (gwa = 1, gwb = 2) has raw ports on the veths "lan" and "wan", and
host addresses 192.0.2.1N/24 and 198.51.100.1N/24. The files are used as they are, except that
`[node] control` moves into the lab's own directory so that runs never share a socket.
"""

import argparse
import contextlib
import re
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the checkout's vswitch, also without run.sh

from vswitch import tomlw  # noqa: E402
from vswitch.ctl.client import EventReader  # noqa: E402
from vswitch.lab.gateway import LAN_VIP, GatewayLab, GatewaySpec  # noqa: E402
from vswitch.lab.netns import preflight  # noqa: E402

NODES = ("gwa", "gwb")
RESPONDER_PORT = 7000

States = dict[tuple[str, int], str]

# the load-balanced pair (carpnodes 1:0,2:100 / 1:100,2:0) settled: each node MASTER of one vhid
SPLIT: dict[str, States] = {
    "gwa": {("carp0", 1): "MASTER", ("carp0", 2): "BACKUP"},
    "gwb": {("carp0", 1): "BACKUP", ("carp0", 2): "MASTER"},
}


def say(text: str = "") -> None:
    print(text, flush=True)


def step(title: str) -> None:
    say(f"\n== {title} " + "=" * max(3, 70 - len(title)))


# -- the lab -----------------------------------------------------------------------------------


def node_config(path: Path, control: str) -> str:
    """The example's TOML with `[node] control` pointed at `control`."""
    text = path.read_text()
    new, count = re.subn(r"(?m)^control\s*=.*$", f"control = {tomlw.string(control)}", text)
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


class EventPrinter:
    """Prints every node's state and link events from its event stream while the example runs
    (the control protocol's `events`, read by a thread per node)."""

    def __init__(self, lab: GatewayLab) -> None:
        self.start = time.monotonic()
        self.seen: list[tuple[float, str, dict[str, Any]]] = []
        self._readers: list[EventReader] = []
        try:
            for gw in lab.gateways:
                self._readers.append(EventReader(gw.socket_path, self._printer(gw.name)))
        except BaseException:
            self.close()
            raise

    def _printer(self, node: str) -> Callable[[dict[str, Any]], None]:
        def show(event: dict[str, Any]) -> None:
            if event.get("type") in ("state", "link"):
                at = self.mark()
                self.seen.append((at, node, event))
                say(f"   {at:7.2f}s  {node}  {describe(event)}")

        return show

    def mark(self) -> float:
        return time.monotonic() - self.start

    def close(self) -> None:
        for reader in self._readers:
            reader.close()

    def __enter__(self) -> "EventPrinter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
        lab.udp_echo(gw.netns, addr, port, reply=gw.name)


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
    answers = lab.udp_answers(client, sources, dst, port, timeout=timeout, grace=0.3)
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


@contextmanager
def balanced_pair(
    here: Path, flows: int, title: str, *, events: bool = False
) -> Iterator[tuple[GatewayLab, list[str]]]:
    """What the balancing examples start from: the lab of `here` (the load-balanced pair, no
    upstream) with `flows` source addresses on the client, both nodes started (under the step
    `title`) and settled into SPLIT, a responder on each; with `events`, their events printed
    until the end. Yields the lab and the source addresses."""
    sources = flow_sources(flows)
    with example_lab(here, upstream=False) as lab:
        lab.add_addresses(1, [f"{s}/24" for s in sources])
        step(title)
        for gw in lab.gateways:
            lab.start(gw)
        with contextlib.ExitStack() as stack:
            if events:
                stack.enter_context(EventPrinter(lab))
            wait_states(lab, SPLIT)
            show_states(lab)
            start_responders(lab)
            yield lab, sources


# -- running an example ------------------------------------------------------------------------


def main(description: str, body: Callable[[argparse.Namespace], None]) -> int:
    """Parse --quick, run `body`; a failure or Ctrl-C still removes the lab (the `with`)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="fewer flows and pauses (tests)")
    args = parser.parse_args()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    problem = preflight("this example")
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
