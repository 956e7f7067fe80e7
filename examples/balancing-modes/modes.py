"""Every balancing mode against every segment carp(4) speaks of: who answers the flows.

The load-balanced pair (gwa `carpnodes 1:0,2:100`, gwb `1:100,2:0`) serves 192.0.2.1; a UDP
responder on each host answers with its name, and one datagram from each of many client
addresses shows each host's share of the flows. The segment between the client and the hosts
is itself a vswitch switch: a third `vswitch run` node (segment.toml) in the lab's segment
namespace, with raw ports on the veths the Linux bridge had, changed between cells by rewriting
its file and `vswitch reload` (mode, ageing and monitor ports apply in place). For each mode
(none with one carpnode per host, as the usual pair; arp, ip, ip-unicast and ip-stealth with the
load-balanced pair; set at runtime with `vswitch ifconfig carp0 ...` on both hosts), the segment
is a hub, a learning switch, a learning switch whose host ports are monitor ports (each gets a
copy of every unicast frame switched to another port, as a SPAN port), and a learning-arp switch
(it also learns ARP sender hardware addresses, as the Layer-3 switches of carp(4)'s ip-stealth
caveat). A last cell turns ip-stealth on while a learning switch still holds the carp MAC it
learned in ip-unicast, and measures again once that entry has aged out.

Each cell prints each node's share of the flows, the flows nobody answered and those answered
twice, and the carp(4) sentence (in our words) it confirms or refutes; a table of every cell
ends the run. Run as root: examples/balancing-modes/run.sh [--quick]
"""

import argparse
import os
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import exlab as ex

from vswitch import tomlw
from vswitch.ctl.client import ControlClient, NodeUnavailable
from vswitch.lab.gateway import GatewayLab

MODES = ("none", "arp", "ip", "ip-unicast", "ip-stealth")
# segment name -> (switch mode, the hosts' ports are monitor ports)
SEGMENTS = {
    "hub": ("hub", False),
    "learning switch": ("learning", False),
    "learning + monitor": ("learning", True),
    "learning-arp": ("learning-arp", False),
}
HOST_PORTS = ("lan1", "lan2")  # the segment's ports to gwa and gwb (the client's is c1)
DEFAULT_AGEING = 300.0
STEALTH_AGEING = {True: 12.0, False: 30.0}  # --quick or not: the last cell's MAC ageing
STEALTH_CELL = "ip-unicast -> ip-stealth"

# what each mode's carpnodes are, per host (none: the usual pair, one carpnode each)
CARPNODES = {
    "none": {"gwa": "1:0", "gwb": "1:100"},
    **{m: {"gwa": "1:0,2:100", "gwb": "1:100,2:0"} for m in MODES[1:]},
}
ONE_MASTER: dict[str, ex.States] = {
    "gwa": {("carp0", 1): "MASTER"},
    "gwb": {("carp0", 1): "BACKUP"},
}

# what carp(4) leads one to expect of each mode, in our words
SENTENCES = {
    "none": "without balancing the master of the carpnode answers for the address alone: one "
    "node carries every flow, whatever the segment",
    "arp": "(carp(4) until OpenBSD 5.8) the node a client's MAC hashes to answers its ARP "
    "request, so one client stays with one node",
    "ip": "the carp MAC is a multicast MAC, so every switch floods the traffic to all nodes and "
    "the IP hash gives each its share",
    "ip-unicast": "the carp MAC is unicast, so the segment must send the traffic to every node, "
    "a hub or monitor ports; a learning switch delivers each frame to one node",
    "ip-stealth": "no frame carries the carp MAC as its source, so a switch never learns it and "
    "floods it to every node; a switch that learns MACs from ARP replies (some Layer-3 "
    "switches) pins it to one node",
    STEALTH_CELL: "ip-stealth stops a switch from learning the carp MAC, it does not make it "
    "forget: the entry learned in ip-unicast steers the flows to one node until it ages out",
}

# the outcome each sentence implies: one (one node answers every flow), split (both nodes
# answer a share, none lost), lost (flows nobody answers)
EXPECTED: dict[tuple[str, str], str] = {
    **{("none", seg): "one" for seg in SEGMENTS},
    **{("arp", seg): "one" for seg in SEGMENTS},
    **{("ip", seg): "split" for seg in SEGMENTS},
    ("ip-unicast", "hub"): "split",
    ("ip-unicast", "learning switch"): "lost",
    ("ip-unicast", "learning + monitor"): "split",
    ("ip-unicast", "learning-arp"): "lost",
    ("ip-stealth", "hub"): "split",
    ("ip-stealth", "learning switch"): "split",
    ("ip-stealth", "learning + monitor"): "split",
    ("ip-stealth", "learning-arp"): "lost",
    (STEALTH_CELL, "before, ip-unicast"): "lost",
    (STEALTH_CELL, "stealth, entry fresh"): "lost",
    (STEALTH_CELL, "stealth, entry aged"): "split",
}


def outcome(shares: ex.Shares) -> str:
    if shares.unanswered:
        return "lost"
    if shares.duplicated:
        return "duplicated"
    return "split" if sum(1 for n in shares.by_node.values() if n) > 1 else "one"


@dataclass
class Cell:
    mode: str
    segment: str
    shares: ex.Shares

    @property
    def expected(self) -> str:
        return EXPECTED[(self.mode, self.segment)]

    @property
    def verdict(self) -> str:
        return "confirms" if outcome(self.shares) == self.expected else "refutes"


class Segment:
    """The third node: one vswitch switch with raw ports on the segment namespace's veths."""

    def __init__(self, lab: GatewayLab, here: Path) -> None:
        self.lab = lab
        self.path = Path(lab.dir) / "segment.toml"
        self.socket = os.path.join(lab.dir, "segment.sock")
        self.log = os.path.join(lab.dir, "segment.log")
        self.data = tomllib.loads(ex.node_config(here / "segment.toml", self.socket))
        ports = [p["ifname"] for p in self.data["switch"]["lan"]["ports"]]
        for ifname in ports:  # the Linux bridge lets go of them
            lab.lab.run(lab.seg, ["ip", "link", "set", ifname, "nomaster"])
        self.write("hub", False, DEFAULT_AGEING)
        argv = [sys.executable, "-m", "vswitch", "run", "-c", str(self.path)]
        self.proc = lab.lab.spawn(lab.seg, argv, log=self.log)
        try:
            lab.wait_for(self.answers, 15)
        except TimeoutError:
            raise RuntimeError(f"the segment node did not start:\n{self.tail()}") from None

    def answers(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"the segment node exited:\n{self.tail()}")
        try:
            with ControlClient(self.socket, timeout=2) as client:
                client.request("status")
        except NodeUnavailable:
            return False
        return True

    def tail(self) -> str:
        with open(self.log, errors="replace") as f:
            return f.read()[-3000:]

    def write(self, mode: str, monitor: bool, ageing: float) -> None:
        switch = self.data["switch"]["lan"]
        switch["mode"] = mode
        switch["ageing"] = ageing
        for port in switch["ports"]:
            port["monitor"] = monitor and port["name"] in HOST_PORTS
        self.path.write_text(tomlw.dumps(self.data))

    def set(self, mode: str, monitor: bool, ageing: float = DEFAULT_AGEING) -> None:
        """Rewrite the file and reload: a new mode or ageing also empties the MAC table."""
        self.write(mode, monitor, ageing)
        ex.vswitch("reload", "-s", self.socket)


def set_balancing(lab: GatewayLab, mode: str) -> float:
    """`vswitch ifconfig carp0 carpnodes ... balancing MODE` on both hosts, then the election;
    returns when the command was given (time.monotonic)."""
    given = time.monotonic()
    for gw in lab.gateways:
        words = ["carpnodes", CARPNODES[mode][gw.name], "balancing", mode]
        ex.vswitch("ifconfig", "-s", gw.socket_path, "carp0", *words)
    ex.wait_states(lab, ONE_MASTER if mode == "none" else ex.SPLIT)
    return given


def measure(lab: GatewayLab, sources: list[str], mode: str, segment: str) -> Cell:
    """One cell: the flows, who answered, and what carp(4) says of it."""
    found = Cell(mode, segment, ex.measure(lab, sources))
    ex.say(f"   {segment:<20} {found.shares.line()}")
    ex.say(f"   {'':<20} {found.verdict} ({outcome(found.shares)}) {mode}: {SENTENCES[mode]}")
    return found


def run(args: argparse.Namespace) -> None:
    here = Path(__file__).resolve().parent
    cells: list[Cell] = []
    sources = ex.flow_sources(16 if args.quick else 48)
    began = time.monotonic()
    with ex.example_lab(here, upstream=False) as lab:
        lab.add_addresses(1, [f"{s}/24" for s in sources])
        ex.step("the segment: a vswitch switch (segment.toml) instead of the Linux bridge")
        segment = Segment(lab, here)
        ex.say(f"   node 'segment' in {lab.seg}: ports c1 (client), lan1 (gwa), lan2 (gwb)")
        ex.step("gwa and gwb start with balancing ip")
        for gw in lab.gateways:
            lab.start(gw)
        ex.wait_states(lab, ex.SPLIT)
        ex.show_states(lab)
        ex.start_responders(lab)
        for mode in MODES:
            ex.step(f"balancing {mode} (carpnodes gwa {CARPNODES[mode]['gwa']})")
            set_balancing(lab, mode)
            lladdr = lab.request(lab.gateways[0], {"cmd": "status"})["carp"][0]["lladdr"]
            ex.say(f"   carp MAC {lladdr}; {len(sources)} flows to 192.0.2.1:")
            for name, (kind, monitor) in SEGMENTS.items():
                segment.set(kind, monitor)
                cells.append(measure(lab, sources, mode, name))
        cells += stealth_while_running(lab, segment, sources, STEALTH_AGEING[args.quick])
    report(cells, time.monotonic() - began)


def stealth_while_running(
    lab: GatewayLab, segment: Segment, sources: list[str], ageing: float
) -> list[Cell]:
    ex.step(f"ip-stealth turned on while running, on a learning switch with ageing {ageing:g} s")
    segment.set("learning", False, ageing)
    set_balancing(lab, "ip-unicast")
    cells = [measure(lab, sources, STEALTH_CELL, "before, ip-unicast")]
    given = set_balancing(lab, "ip-stealth")
    cells.append(measure(lab, sources, STEALTH_CELL, "stealth, entry fresh"))
    # the switch sweeps its table every min(1 s, ageing/4): wait for one sweep past the ageing
    rest = given + ageing + 1.5 - time.monotonic()
    ex.say(f"   ... {max(rest, 0.0):.0f} s until the entry has aged out")
    time.sleep(max(rest, 0.0))
    cells.append(measure(lab, sources, STEALTH_CELL, "stealth, entry aged"))
    return cells


def report(cells: list[Cell], seconds: float) -> None:
    ex.step("each node's share of the flows, per mode and segment")
    ex.say(
        f"   {'mode':<24} {'segment':<20} {'gwa':>5} {'gwb':>5} {'lost':>5} {'twice':>5}"
        "  expected  carp(4)"
    )
    for c in cells:
        s = c.shares
        ex.say(
            f"   {c.mode:<24} {c.segment:<20} {s.percent('gwa'):4.0f}% {s.percent('gwb'):4.0f}%"
            f" {100.0 * s.unanswered / s.flows:4.0f}% {s.duplicated:>5}  {c.expected:<8}"
            f"  {c.verdict}"
        )
    refuted = [c for c in cells if c.verdict == "refutes"]
    ex.say(f"\n   {len(cells) - len(refuted)} of {len(cells)} cells confirm carp(4)")
    for mode in dict.fromkeys(c.mode for c in cells):
        ex.say(f"   {mode}: {SENTENCES[mode]}")
    ex.say(f"   the matrix took {seconds:.0f} s")


if __name__ == "__main__":
    sys.exit(ex.main(__doc__.splitlines()[0], run))
