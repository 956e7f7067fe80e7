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

from exlab import (
    EventPrinter,
    example_lab,
    flow_sources,
    main,
    measure,
    say,
    show_states,
    start_responders,
    step,
    vswitch,
    wait_states,
)

from vswitch.lab.gateway import LAN_VIP, GatewayLab

HERE = Path(__file__).resolve().parent
SPLIT = {
    "gwa": {("carp0", 1): "MASTER", ("carp0", 2): "BACKUP"},
    "gwb": {("carp0", 1): "BACKUP", ("carp0", 2): "MASTER"},
}


def run(args: argparse.Namespace) -> None:
    sources = flow_sources(16 if args.quick else 64)
    with example_lab(HERE, upstream=False) as lab:
        gwa, gwb = lab.gateways
        lab.add_addresses(1, [f"{s}/24" for s in sources])
        step("gwa (carpnodes 1:0,2:100) and gwb (1:100,2:0) start: one carpnode each")
        lab.start(gwa)
        lab.start(gwb)
        events = EventPrinter(lab)
        try:
            wait_states(lab, SPLIT)
            show_states(lab)
            if not args.quick:
                say("\n$ vswitch ifconfig carp0  (on gwa)")
                say(vswitch("ifconfig", "-s", gwa.socket_path, "carp0").rstrip())
            start_responders(lab)
            split(lab, sources, "both hosts up")
            mac = lab.neighbour(lab.clients[0], LAN_VIP)
            say(f"   the client's ARP entry for {LAN_VIP}: {mac} (the multicast carp MAC)")

            step("gwb bows out: ifconfig carp0 down")
            vswitch("ifconfig", "-s", gwb.socket_path, "carp0", "down")
            wait_states(lab, {"gwa": {("carp0", 1): "MASTER", ("carp0", 2): "MASTER"}})
            show_states(lab)
            split(lab, sources, "gwb down")

            step("gwb comes back: ifconfig carp0 up")
            vswitch("ifconfig", "-s", gwb.socket_path, "carp0", "up")
            wait_states(lab, SPLIT)
            show_states(lab)
            split(lab, sources, "both hosts up again")
        finally:
            events.close()


def split(lab: GatewayLab, sources: list[str], label: str) -> None:
    shares = measure(lab, sources)
    say(f"   {len(sources)} flows to {LAN_VIP} ({label}): {shares.line()}")
    if shares.unanswered or shares.duplicated:
        raise RuntimeError(f"every flow should be answered exactly once ({label})")


if __name__ == "__main__":
    sys.exit(main(__doc__.splitlines()[0], run))
