"""carp(4) load balancing: `carpnodes 1:0,2:100` on gwa and `1:100,2:0` on gwb, `balancing ip`.

Both hosts share 192.0.2.1. Each is MASTER of one carpnode; ARP answers the multicast carp MAC,
so every frame for the address reaches both hosts, and each keeps the flows whose IP hash falls
on a carpnode it is MASTER of. A UDP responder on each host answers with its name: one datagram
from each of many client addresses shows the split. Then gwb bows out (`ifconfig carp0 down`):
gwa serves every flow; `up` again and gwb takes its carpnode back (preempt).
Run as root: examples/load-balancing/run.sh
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import exlab as ex

from vswitch.lab.gateway import LAN_VIP, GatewayLab


def run(args: argparse.Namespace) -> None:
    here = Path(__file__).resolve().parent
    title = "gwa (carpnodes 1:0,2:100) and gwb (1:100,2:0) start: one carpnode each"
    flows = 16 if args.quick else 64
    with ex.balanced_pair(here, flows, title, events=True) as (lab, sources):
        gwa, gwb = lab.gateways
        if not args.quick:
            ex.say("\n$ vswitch ifconfig carp0  (on gwa)")
            ex.say(ex.vswitch("ifconfig", "-s", gwa.socket_path, "carp0").rstrip())
        split(lab, sources, "both hosts up")
        mac = lab.neighbour(lab.clients[0], LAN_VIP)
        ex.say(f"   the client's ARP entry for {LAN_VIP}: {mac} (the multicast carp MAC)")

        ex.step("gwb bows out: ifconfig carp0 down")
        ex.vswitch("ifconfig", "-s", gwb.socket_path, "carp0", "down")
        ex.wait_states(lab, {"gwa": {("carp0", 1): "MASTER", ("carp0", 2): "MASTER"}})
        ex.show_states(lab)
        split(lab, sources, "gwb down")

        ex.step("gwb comes back: ifconfig carp0 up")
        ex.vswitch("ifconfig", "-s", gwb.socket_path, "carp0", "up")
        ex.wait_states(lab, ex.SPLIT)
        ex.show_states(lab)
        split(lab, sources, "both hosts up again")


def split(lab: GatewayLab, sources: list[str], label: str) -> None:
    shares = ex.measure(lab, sources)
    ex.say(f"   {len(sources)} flows to {LAN_VIP} ({label}): {shares.line()}")
    if shares.unanswered or shares.duplicated:
        raise RuntimeError(f"every flow should be answered exactly once ({label})")


if __name__ == "__main__":
    sys.exit(ex.main(__doc__.splitlines()[0], run))
