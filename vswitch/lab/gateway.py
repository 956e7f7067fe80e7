"""The gateway lab: redundant vswitch gateways between a client LAN and an upstream network.

Used by `vswitch demo`, the integration tests, the examples and the benchmarks (design.md 7):

    clients c1..cN --+                                   +-- upstream server "up"
                     |-- LAN segment "lan" (bridge) --+  |
                     |      gw nodes: raw port "lan" -+  |
                     |      gw nodes: raw port "wan" ----+-- WAN segment "wan" (bridge)

Each gateway node is one `vswitch run` process in its own namespace with two switches (lan0,
wan0), a host port on each (192.0.2.1N/24 and 198.51.100.1N/24) and the carp interfaces the
caller describes. Clients live in 192.0.2.0/24 and 2001:db8::/64 with the LAN virtual address as
default gateway; the upstream server 198.51.100.200 routes the client LAN via the WAN virtual
address. Everything is built in namespaces with the lab's unique prefix and removed on close.
The nodes are reached with the control client of vswitch/ctl/client.py.
"""

import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from vswitch import tomlw
from vswitch.ctl.client import ControlClient, NodeUnavailable
from vswitch.lab import traffic
from vswitch.lab.capture import Capture, Sniffer
from vswitch.lab.capture import Sniffed as Sniffed  # tests/integration/test_balancing.py
from vswitch.lab.netns import Lab
from vswitch.lab.ucarp import UcarpNode

LAN_VIP = "192.0.2.1"
LAN_VIP6 = "2001:db8::1"
WAN_VIP = "198.51.100.1"
UPSTREAM = "198.51.100.200"
SEGMENTS = ("bridge", "hub")  # hub: a bridge that never learns (ageing 0) floods all unicast


def client_ip(i: int) -> str:
    return f"192.0.2.{100 + i}"


def client_ip6(i: int) -> str:
    return f"2001:db8::{100 + i:x}"


@dataclass
class GatewaySpec:
    """One gateway node: its carp interfaces as TOML `[carp.NAME]` tables (dicts)."""

    name: str
    carp: dict[str, dict[str, Any]]
    preempt: bool = True
    log: int = 6
    metrics: str | None = None  # "[node] metrics" address (in the node's namespace); None: off
    hooks: list[dict[str, Any]] = field(default_factory=list)  # [[hook]] tables
    workers: int = 0  # "[node] workers": forwarding processes (0: the node's own)
    rt_priority: int | None = None  # "[node] rt_priority": SCHED_RR for the node process


@dataclass
class Gateway:
    spec: GatewaySpec
    index: int
    netns: str
    config_path: str
    socket_path: str
    proc: subprocess.Popen[bytes] | None = None
    log_path: str = ""

    @property
    def name(self) -> str:
        return self.spec.name


def node_config(spec: GatewaySpec, index: int, control: str, ipv6: bool) -> dict[str, Any]:
    """The node file (as data) of gateway number `index`: raw ports on the veths "lan" and
    "wan", host addresses 192.0.2.1N/24 (and 2001:db8::1N/64) and 198.51.100.1N/24."""
    lan_host = [f"192.0.2.{10 + index}/24"]
    if ipv6:
        lan_host.append(f"2001:db8::{10 + index:x}/64")
    wan_host = [f"198.51.100.{10 + index}/24"]
    return {
        "node": {
            "name": spec.name,
            "control": control,
            "metrics": spec.metrics or False,
            "log": "stderr",
            **({"workers": spec.workers} if spec.workers else {}),
            **({"rt_priority": spec.rt_priority} if spec.rt_priority else {}),
        },
        "sysctl": {"preempt": spec.preempt, "log": spec.log},
        "switch": {"lan0": _raw_switch(lan_host, "lan"), "wan0": _raw_switch(wan_host, "wan")},
        "carp": spec.carp,
        "hook": spec.hooks,  # [[hook]]
    }


def _raw_switch(host: list[str], port: str) -> dict[str, Any]:
    return {"host": host, "ports": [{"name": port, "type": "raw", "ifname": port}]}


class GatewayLab:
    """Build with `with GatewayLab(...) as lab:`; `start(gw)` runs a node, `kill(gw)` kills it."""

    def __init__(
        self,
        gateways: Sequence[GatewaySpec],
        *,
        clients: int = 2,
        segment: str = "bridge",
        upstream: bool = True,
        ipv6: bool = True,
        prefix: str | None = None,
    ) -> None:
        if segment not in SEGMENTS:
            raise ValueError(f"segment must be one of {SEGMENTS}")
        self.lab = Lab(prefix)
        self.dir = tempfile.mkdtemp(prefix=f"vswitch-{self.lab.prefix}-")
        self.ipv6 = ipv6
        self.gateways: list[Gateway] = []
        self.clients: list[str] = []
        self.ucarps: list[UcarpNode] = []
        self.sniffers: list[Sniffer] = []
        try:
            self._build(gateways, clients, segment, upstream, ipv6)
        except BaseException:
            self.close()
            raise

    # -- building ------------------------------------------------------------------------------

    def _build(
        self,
        specs: Sequence[GatewaySpec],
        clients: int,
        segment: str,
        upstream: bool,
        ipv6: bool,
    ) -> None:
        lab = self.lab
        self.seg = lab.netns("seg")
        lab.bridge("br-lan", self.seg)
        lab.bridge("br-wan", self.seg)
        if segment == "hub":
            lab.run(self.seg, ["ip", "link", "set", "br-lan", "type", "bridge", "ageing_time", "0"])
        for i in range(1, clients + 1):
            ns = lab.netns(f"c{i}")
            lab.veth("eth0", f"c{i}", a_netns=ns, b_netns=self.seg, bridge="br-lan")
            lab.addr(ns, "eth0", f"{client_ip(i)}/24")
            lab.route(ns, "default", via=LAN_VIP)
            if ipv6:
                lab.addr(ns, "eth0", f"{client_ip6(i)}/64")
                lab.route(ns, "default", via=LAN_VIP6)
            self.clients.append(ns)
        if upstream:
            self.up = lab.netns("up")
            lab.veth("eth0", "upstream", a_netns=self.up, b_netns=self.seg, bridge="br-wan")
            lab.addr(self.up, "eth0", f"{UPSTREAM}/24")
            lab.route(self.up, "192.0.2.0/24", via=WAN_VIP)
        for index, spec in enumerate(specs, start=1):
            self.gateways.append(self._gateway(index, spec))

    def _gateway(self, index: int, spec: GatewaySpec) -> Gateway:
        lab = self.lab
        ns = lab.netns(spec.name, forwarding=True)
        for side in ("lan", "wan"):
            lab.veth(side, f"{side}{index}", a_netns=ns, b_netns=self.seg, bridge=f"br-{side}")
        sock = os.path.join(self.dir, f"{spec.name}.sock")
        path = os.path.join(self.dir, f"{spec.name}.toml")
        gw = Gateway(spec, index, ns, path, sock)
        self.write_config(gw)
        return gw

    def write_config(self, gw: Gateway) -> None:
        """(Re)write the node's TOML from `gw.spec`; a running node reads it on its next start
        (or on SIGHUP)."""
        with open(gw.config_path, "w") as f:
            f.write(tomlw.dumps(node_config(gw.spec, gw.index, gw.socket_path, self.ipv6)))

    def reconfigure(self, gw: Gateway, carp: dict[str, dict[str, Any]]) -> None:
        """New carp interfaces for `gw`: its config is rewritten for a reload (SIGHUP or the
        control socket's `reload`) or the next start."""
        gw.spec = replace(gw.spec, carp=carp)
        self.write_config(gw)

    # -- nodes ---------------------------------------------------------------------------------

    def start(self, gw: Gateway, wait: float = 10.0, env: Mapping[str, str] | None = None) -> None:
        """Start the node (with `env` added to its environment) and wait until its control
        socket answers."""
        gw.log_path = os.path.join(self.dir, f"{gw.name}.log")
        argv = [sys.executable, "-m", "vswitch", "run", "-c", gw.config_path]
        extra = {"env": {**os.environ, **env}} if env else {}
        gw.proc = self.lab.spawn(gw.netns, argv, log=gw.log_path, **extra)
        self.wait_for(lambda: self.request(gw, {"cmd": "status"}) is not None, wait, gw)

    def kill(self, gw: Gateway) -> None:
        """`kill -9`: no bow-out, nothing removed by the node (its namespace goes with the lab)."""
        assert gw.proc is not None
        self.lab.kill(gw.proc)
        gw.proc = None

    def stop(self, gw: Gateway) -> int:
        """SIGTERM: the node bows out and removes what it created."""
        assert gw.proc is not None
        code = self.lab.stop(gw.proc, timeout=10)
        gw.proc = None
        return code

    def request(self, gw: Gateway, message: dict[str, Any]) -> Any:
        """One control-socket request (`{"cmd": ..., params}`): its result, or None if the node
        does not answer (yet); a command the node refuses raises CommandFailed."""
        params = dict(message)
        try:
            with ControlClient(gw.socket_path, timeout=5) as client:
                return client.request(params.pop("cmd"), **params)
        except NodeUnavailable:
            return None

    def states(self, gw: Gateway) -> dict[tuple[str, int], str]:
        """(carp interface, vhid) -> state, from the node's status."""
        status = self.request(gw, {"cmd": "status"})
        if not isinstance(status, dict) or "carp" not in status:
            return {}
        return {(c["name"], n["vhid"]): n["state"] for c in status["carp"] for n in c["carpnodes"]}

    def state(self, gw: Gateway, carpif: str = "carp0", vhid: int | None = None) -> str | None:
        for (name, v), st in self.states(gw).items():
            if name == carpif and (vhid is None or v == vhid):
                return st
        return None

    def wait_for(
        self, condition: Callable[[], bool], timeout: float, gw: Gateway | None = None
    ) -> float:
        """Poll `condition` until true; returns the seconds it took, raises with the logs."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if condition():
                return time.monotonic() - start
            if gw is not None and gw.proc is not None and gw.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise TimeoutError(f"condition not met within {timeout:g} s\n{self.logs()}")

    def logs(self) -> str:
        out = []
        for gw in self.gateways:
            if gw.log_path and os.path.exists(gw.log_path):
                with open(gw.log_path, errors="replace") as f:
                    out.append(f"--- {gw.name} ---\n{f.read()[-4000:]}")
        for u in self.ucarps:
            out.append(f"--- ucarp {u.name}: {' '.join(u.transitions())} ---\n{u.log()[-2000:]}")
        return "\n".join(out)

    def ping(self, client: int, dst: str, deadline: float = 10.0) -> bool:
        return self.lab.ping(self.clients[client - 1], dst, deadline=deadline, wait=0.5)

    # -- looking into namespaces ---------------------------------------------------------------

    def link_flags(self, netns: str) -> dict[str, frozenset[str]]:
        """Interface name -> its flags (`ip -o link show`: UP, LOWER_UP, NO-CARRIER, ...)."""
        out = self.lab.run(netns, ["ip", "-o", "link", "show"]).stdout
        return {
            m.group(1): frozenset(m.group(2).split(","))
            for m in re.finditer(r"^\d+: ([^:@\s]+)(?:@\S+)?: <([^>]*)>", out, re.M)
        }

    def neighbour(self, netns: str, ip: str) -> str | None:
        """The link-layer address `netns` holds for `ip` (None: no entry or not resolved)."""
        out = self.lab.run(netns, ["ip", "neigh", "show", "to", ip]).stdout
        m = re.search(r"\blladdr ([0-9a-f:]{17})\b", out)
        return m.group(1) if m else None

    def capture(
        self,
        netns: str,
        ifname: str,
        expr: str,
        *,
        count: int = 100,
        limit: float = 60.0,
        inbound: bool = False,
    ) -> Capture:
        """Start tcpdump on `ifname` in `netns` (bounded by `count` and `limit` seconds) and
        wait until it listens."""
        n = len([f for f in os.listdir(self.dir) if f.startswith("cap")])
        cap = Capture(self.lab, netns, os.path.join(self.dir, f"cap{n}.pcap"))
        cap.start(ifname, expr, count=count, limit=limit, inbound=inbound)
        return cap

    # -- ucarp nodes (interop) -----------------------------------------------------------------

    def add_ucarp(
        self, name: str, address: str, *, vip: str = LAN_VIP, **options: Any
    ) -> UcarpNode:
        """A ucarp host `name` on the LAN bridge with `address`/24, ready to run ucarp for `vip`
        (`options`: vhid, password, advbase, advskew, preempt, garp of UcarpNode.build)."""
        u = UcarpNode.build(
            self.lab, self.seg, "br-lan", self.dir, name, address, vip=vip, **options
        )
        self.ucarps.append(u)
        return u

    def start_ucarp(self, u: UcarpNode) -> None:
        u.start()

    def kill_ucarp(self, u: UcarpNode) -> None:
        u.kill()

    # -- many flows, and who carries them (balancing) -------------------------------------------

    def masters(self, carpif: str = "carp0") -> dict[int, list[str]]:
        """vhid -> names of the running nodes that are MASTER of it (every vhid seen)."""
        out: dict[int, list[str]] = {}
        for gw in self.gateways:
            if gw.proc is None:
                continue
            for (name, vhid), st in self.states(gw).items():
                if name == carpif:
                    out.setdefault(vhid, [])
                    if st == "MASTER":
                        out[vhid].append(gw.name)
        return out

    def seg_port(self, gw: Gateway, side: str = "lan") -> str:
        """The bridge port in "seg" that `gw`'s raw port `side` ("lan" or "wan") plugs into."""
        return f"{side}{gw.index}"

    def add_addresses(self, client: int, cidrs: Sequence[str]) -> None:
        """More source addresses on client `client`'s eth0 (no DAD)."""
        for cidr in cidrs:
            self.lab.addr(self.clients[client - 1], "eth0", cidr)

    def set_client_mac(self, client: int, mac: str) -> None:
        self.lab.link(self.clients[client - 1], "eth0", mac=bytes.fromhex(mac.replace(":", "")))

    def sniff(self, ifnames: Sequence[str], netns: str | None = None) -> Sniffer:
        """AF_PACKET sockets on `ifnames` in `netns` (default "seg", the bridges' namespace)."""
        sniffer = Sniffer(netns or self.seg, ifnames)
        self.sniffers.append(sniffer)
        return sniffer

    def ping_many(
        self, client: int, sources: Sequence[str], dst: str, *, wait: float = 2.0
    ) -> dict[str, bool]:
        """traffic.ping_many from client `client`: source -> answered."""
        return traffic.ping_many(self.lab, self.clients[client - 1], sources, dst, wait=wait)

    def udp_echo(self, netns: str, addr: str, port: int, reply: str | None = None) -> None:
        """A UDP server on addr:port in `netns` that echoes, or answers with `reply`."""
        traffic.udp_server(self.lab, netns, addr, port, self.dir, reply)

    def udp_answers(
        self, client: int, sources: Sequence[str], dst: str, port: int, **bounds: float
    ) -> dict[str, list[str]]:
        """traffic.udp_answers from client `client` (`bounds`: timeout, grace)."""
        ns = self.clients[client - 1]
        return traffic.udp_answers(self.lab, ns, sources, dst, port, **bounds)

    def udp_flows(
        self, client: int, sources: Sequence[str], dst: str, port: int, **bounds: float
    ) -> dict[str, int]:
        """One datagram per source address to dst:port; source -> how many answers came back."""
        answers = self.udp_answers(client, sources, dst, port, **bounds)
        return {src: len(got) for src, got in answers.items()}

    def close(self) -> None:
        for sniffer in self.sniffers:
            sniffer.close()  # a socket there would keep the namespace's interfaces alive
        for gw in self.gateways:
            if gw.proc is not None and gw.proc.poll() is None:
                try:
                    self.stop(gw)
                except Exception as exc:
                    self.lab.teardown_errors.append(f"{gw.name}: {exc}")
        self.lab.close()
        for name in os.listdir(self.dir):
            os.unlink(os.path.join(self.dir, name))
        os.rmdir(self.dir)

    def __enter__(self) -> "GatewayLab":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def pair_specs(
    balancing: str = "none",
    *,
    advbase: int = 1,
    ipv6: bool = True,
    password: str = "secret",
    wan: bool = True,
    carpnodes: tuple[str, str] | None = None,
) -> list[GatewaySpec]:
    """The usual pair: gw-a preferred (advskew 0), gw-b backup (advskew 100); with `carpnodes`,
    the load-balanced pair of carp(4)'s EXAMPLES (e.g. ("1:0,2:100", "1:100,2:0"))."""
    specs = []
    for i, name in enumerate(("gwa", "gwb")):
        lan: dict[str, Any] = {
            "carpdev": "lan0",
            "addresses": [f"{LAN_VIP}/24"] + ([f"{LAN_VIP6}/64"] if ipv6 else []),
            "advbase": advbase,
            "pass": password,
        }
        if carpnodes is not None:
            lan["carpnodes"] = carpnodes[i]
            lan["balancing"] = balancing
        else:
            lan["vhid"] = 1
            lan["advskew"] = 100 * i
            lan["balancing"] = balancing
        carp: dict[str, dict[str, Any]] = {"carp0": lan}
        if wan:
            carp["carp1"] = {
                "carpdev": "wan0",
                "addresses": [f"{WAN_VIP}/24"],
                "vhid": 2 if carpnodes is None else 10,
                "advskew": 100 * i,
                "advbase": advbase,
                "pass": password,
            }
        specs.append(GatewaySpec(name, carp))
    return specs
