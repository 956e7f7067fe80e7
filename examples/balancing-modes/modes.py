"""Balancing ip, ip-unicast and ip-stealth on a learning switch and on a hub: who answers.

The load-balanced pair (gwa `carpnodes 1:0,2:100`, gwb `1:100,2:0`) serves 192.0.2.1; a UDP
responder on each host answers with its name, and one datagram from each of many client
addresses shows each host's share of the flows. For each mode (switched at runtime with
`vswitch ifconfig carp0 balancing MODE` on both hosts) the LAN bridge runs first as a learning
switch, then as a hub (ageing 0: it floods every frame). What carp(4) leads one to expect:
- ip: the carp MAC is a multicast MAC, flooded by any switch: the flows split on both;
- ip-unicast: a unicast carp MAC that both hosts send from: a learning switch delivers each
  frame to one host only, so flows are lost; a hub floods them and they split;
- ip-stealth: the carp MAC is never a source MAC, so no switch learns it and floods it:
  the flows split on both.
Run as root: examples/balancing-modes/run.sh
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import exlab as ex

from vswitch.lab.gateway import GatewayLab

MODES = ("ip", "ip-unicast", "ip-stealth")
SEGMENTS = (("learning switch", 30000), ("hub", 0))  # the bridge's ageing_time (1/100 s)


def run(args: argparse.Namespace) -> None:
    here = Path(__file__).resolve().parent
    results: list[tuple[str, str, ex.Shares]] = []
    title = "gwa and gwb start with balancing ip"
    with ex.balanced_pair(here, 16 if args.quick else 48, title) as (lab, sources):
        for mode in MODES:
            ex.step(f"balancing {mode}")
            if mode != "ip":
                for gw in lab.gateways:  # a new carp MAC: INIT, then the election again
                    ex.vswitch("ifconfig", "-s", gw.socket_path, "carp0", "balancing", mode)
                ex.wait_states(lab, ex.SPLIT)
                ex.show_states(lab)
            lladdr = lab.request(lab.gateways[0], {"cmd": "status"})["carp"][0]["lladdr"]
            ex.say(f"   carp MAC {lladdr}; {len(sources)} flows to 192.0.2.1:")
            for segment, ageing in SEGMENTS:
                set_segment(lab, ageing)
                shares = ex.measure(lab, sources)
                ex.say(f"   {segment:<16} {shares.line()}")
                results.append((mode, segment, shares))
    ex.step("each node's share of the flows")
    ex.say(f"   {'mode':<11} {'segment':<16} {'gwa':>6} {'gwb':>6} {'lost':>6} {'twice':>6}")
    for mode, segment, s in results:
        ex.say(
            f"   {mode:<11} {segment:<16} {s.percent('gwa'):5.0f}% {s.percent('gwb'):5.0f}%"
            f" {100.0 * s.unanswered / s.flows:5.0f}% {s.duplicated:>6}"
        )


def set_segment(lab: GatewayLab, ageing: int) -> None:
    """Learning switch or hub: the LAN bridge's ageing time (0 floods every frame)."""
    argv = ["ip", "link", "set", "br-lan", "type", "bridge", "ageing_time", str(ageing)]
    lab.lab.run(lab.seg, argv)


if __name__ == "__main__":
    sys.exit(ex.main(__doc__.splitlines()[0], run))
