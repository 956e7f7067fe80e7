"""Across hosts: two gateways on two hosts joined only by a routed underlay share 192.0.2.1 over
VXLAN, and a plain Linux host behind a kernel vxlan device uses it.

    host gwa 203.0.113.10 --+
    host gwb 203.0.113.74 --+-- router --  client 203.0.113.138 (vx0: 192.0.2.100, VNI 42)

Each gateway runs `vswitch run` with one switch whose only port is a vxlan port (VNI 42, the
other gateway and the client as remotes): the carp advertisements cross the tunnel, gwa
(advskew 0) is elected, and the client, which knows nothing of CARP, pings 192.0.2.1 through
its vx0. Killing gwa (kill -9) makes gwb take over across the tunnel; the client's vxlan device
learns the virtual MAC behind gwb from gwb's gratuitous ARP and keeps reaching the address.
Starting gwa again makes it take the address back (preempt). Run as root:
examples/across-hosts/run.sh
"""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import exlab as ex

from vswitch.lab.attach import fdb_append, vxlan_device
from vswitch.lab.gateway import Gateway, GatewayLab, GatewaySpec

HERE = Path(__file__).resolve().parent
VIP = "192.0.2.1"
CLIENT = "192.0.2.100"
VNI = 42
# underlay: one /26 per host, the router at .1 of each
HOSTS = {"gwa": ("203.0.113.10", "203.0.113.1"), "gwb": ("203.0.113.74", "203.0.113.65")}
CLIENT_UNDERLAY = ("203.0.113.138", "203.0.113.129")
ELECTED = {"gwa": {("carp0", 1): "MASTER"}, "gwb": {("carp0", 1): "BACKUP"}}


class TunnelLab(GatewayLab):
    """The gateway lab's nodes, events and states on another topology: hosts behind a router,
    the segment a VXLAN tunnel between them (the nodes' vxlan ports and the client's vx0)."""

    def _build(
        self,
        specs: Sequence[GatewaySpec],
        clients: int,
        segment: str,
        upstream: bool,
        ipv6: bool,
    ) -> None:
        lab = self.lab
        router = lab.netns("router", forwarding=True)
        for index, spec in enumerate(specs, start=1):
            ns = lab.netns(spec.name, forwarding=True)
            self._underlay(ns, router, f"r{index}", *HOSTS[spec.name])
            sock = f"{self.dir}/{spec.name}.sock"
            path = f"{self.dir}/{spec.name}.toml"
            Path(path).write_text(ex.node_config(HERE / f"{spec.name}.toml", sock))
            self.gateways.append(Gateway(spec, index, ns, path, sock))
        client = lab.netns("client")
        self._underlay(client, router, "rc", *CLIENT_UNDERLAY)
        lab.run(client, vxlan_device("vx0", VNI, CLIENT_UNDERLAY[0], "ul"))
        for address, _ in HOSTS.values():
            lab.run(client, fdb_append("vx0", address))
        lab.addr(client, "vx0", f"{CLIENT}/24")
        lab.link(client, "vx0", up=True)
        self.clients.append(client)

    def _underlay(self, ns: str, router: str, port: str, address: str, gateway: str) -> None:
        self.lab.veth("ul", port, a_netns=ns, b_netns=router)
        self.lab.addr(ns, "ul", f"{address}/26")
        self.lab.addr(router, port, f"{gateway}/26")
        self.lab.route(ns, "default", via=gateway)


def run(args: argparse.Namespace) -> None:
    specs = [ex.spec_of(HERE / f"{name}.toml") for name in ex.NODES]
    with TunnelLab(specs, clients=1, upstream=False, ipv6=False) as lab:
        ex.say(f"lab {lab.lab.prefix}: namespaces {lab.lab.prefix}-*, files in {lab.dir}")
        try:
            body(lab, args.quick)
        finally:
            ex.say(f"\nremoving lab {lab.lab.prefix} ...")
    if lab.lab.teardown_errors:
        raise RuntimeError("teardown problems: " + "; ".join(lab.lab.teardown_errors))
    ex.say(f"lab {lab.lab.prefix} removed")


def body(lab: TunnelLab, quick: bool) -> None:
    gwa, gwb = lab.gateways
    ex.step("gwa and gwb start on their hosts and elect across the tunnel")
    lab.start(gwa)
    lab.start(gwb)
    with ex.EventPrinter(lab) as events:
        ex.wait_states(lab, ELECTED)
        ex.show_states(lab)
        if not quick:
            ex.say("\n$ vswitch status  (on gwa)")
            ex.say(ex.vswitch("status", "-s", gwa.socket_path).rstrip())
        reach(lab, "through gwa")

        ex.step("kill -9 gwa")
        killed = events.mark()
        lab.kill(gwa)
        ex.wait_states(lab, {"gwb": {("carp0", 1): "MASTER"}})
        ex.show_states(lab)

        def took_over() -> list[float]:
            return [at - killed for at, node, e in events.seen if node == "gwb" and at > killed]

        lab.wait_for(lambda: bool(took_over()), 10)  # its event may trail its status a little
        took = took_over()
        ex.say(f"   gwb took over {max(took):.2f} s after the kill (3 x advbase + skew/256)")
        reach(lab, "through gwb")

        ex.step("gwa comes back and takes the address back (preempt)")
        lab.start(gwa)
        ex.wait_states(lab, ELECTED)
        ex.show_states(lab)
        if not quick:
            reach(lab, "through gwa again")


def reach(lab: TunnelLab, how: str) -> None:
    if not lab.ping(1, VIP, deadline=15.0):
        raise RuntimeError(f"the client cannot reach {VIP} over vxlan ({how})")
    ex.say(f"   client {CLIENT} -> {VIP} over vxlan: answered ({how})")


if __name__ == "__main__":
    sys.exit(ex.main(__doc__.splitlines()[0], run))
