"""carp(4) EXAMPLE 1: two gateways, carp0 on the LAN and carp1 on the WAN, preempt on.

Pulling gwa's LAN uplink makes carp0 go INIT and demotes gwa's interface group, so gwb takes
over carp1 as well: both addresses move together, and the client keeps reaching the upstream
server (its packets go out through one VIP and come back through the other). Putting the
uplink back makes gwa take both back (preempt). Run as root: examples/group-failover/run.sh
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import exlab as ex

from vswitch.lab.gateway import UPSTREAM, GatewayLab

BOTH = (("carp0", 1), ("carp1", 2))
ELECTED = {"gwa": dict.fromkeys(BOTH, "MASTER"), "gwb": dict.fromkeys(BOTH, "BACKUP")}


def run(args: argparse.Namespace) -> None:
    with ex.example_lab(Path(__file__).resolve().parent) as lab:
        gwa, gwb = lab.gateways
        ex.step("gwa (advskew 0) and gwb (advskew 100) start and elect")
        lab.start(gwa)
        lab.start(gwb)
        with ex.EventPrinter(lab) as events:
            ex.wait_states(lab, ELECTED)
            ex.show_states(lab)
            if not args.quick:
                ex.say("\n$ vswitch ifconfig  (on gwa)")
                ex.say(ex.vswitch("ifconfig", "-s", gwa.socket_path).rstrip())
            reach(lab, "through gwa")

            ex.step("pull gwa's LAN uplink")
            uplink = lab.seg_port(gwa)  # the bridge port of gwa's "lan" veth
            pulled = events.mark()
            lab.lab.link(lab.seg, uplink, up=False)
            ex.wait_states(
                lab,
                {
                    "gwa": {("carp0", 1): "INIT", ("carp1", 2): "BACKUP"},
                    "gwb": dict.fromkeys(BOTH, "MASTER"),
                },
            )
            ex.show_states(lab)
            groups = lab.request(gwa, {"cmd": "status"})["groups"]
            ex.say(f"   gwa's demote counters: {groups} (carp0 lost its carpdev, section 4.8)")
            moved = [at - pulled for at, node, e in events.seen if node == "gwb" and at > pulled]
            ex.say(f"   gwb took both over within {max(moved):.2f} s")
            reach(lab, "through gwb, both ways")

            ex.step("put the uplink back")
            lab.lab.link(lab.seg, uplink, up=True)
            ex.wait_states(lab, ELECTED)
            ex.show_states(lab)
            if not args.quick:
                reach(lab, "through gwa again")


def reach(lab: GatewayLab, how: str) -> None:
    if not lab.ping(1, UPSTREAM, deadline=10.0):
        raise RuntimeError(f"the client cannot reach {UPSTREAM} ({how})")
    ex.say(f"   client c1 -> upstream {UPSTREAM}: answered ({how})")


if __name__ == "__main__":
    sys.exit(ex.main(__doc__.splitlines()[0], run))
