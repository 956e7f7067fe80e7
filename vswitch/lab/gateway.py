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
"""

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from vswitch import netlink
from vswitch.lab.netns import Lab

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
    extra_switch: dict[str, Any] = field(default_factory=dict)
    metrics: str | None = None  # "[node] metrics" address (in the node's namespace); None: off
    hooks: list[dict[str, Any]] = field(default_factory=list)  # [[hook]] tables


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


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def toml_table(name: str, values: dict[str, Any]) -> str:
    lines = [f"[{name}]"] + [f"{k} = {toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


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
            lab.veth("eth0", f"c{i}", a_netns=ns, b_netns=self.seg)
            netlink.set_master(f"c{i}", "br-lan", netns=self.seg)
            lab.addr(ns, "eth0", f"{client_ip(i)}/24")
            lab.route(ns, "default", via=LAN_VIP)
            if ipv6:
                lab.addr(ns, "eth0", f"{client_ip6(i)}/64")
                lab.route(ns, "default", via=LAN_VIP6)
            self.clients.append(ns)
        if upstream:
            self.up = lab.netns("up")
            lab.veth("eth0", "upstream", a_netns=self.up, b_netns=self.seg)
            netlink.set_master("upstream", "br-wan", netns=self.seg)
            lab.addr(self.up, "eth0", f"{UPSTREAM}/24")
            lab.route(self.up, "192.0.2.0/24", via=WAN_VIP)
        for index, spec in enumerate(specs, start=1):
            self.gateways.append(self._gateway(index, spec))

    def _gateway(self, index: int, spec: GatewaySpec) -> Gateway:
        lab = self.lab
        ns = lab.netns(spec.name, forwarding=True)
        for side in ("lan", "wan"):
            peer = f"{side}{index}"
            lab.veth(side, peer, a_netns=ns, b_netns=self.seg)
            netlink.set_master(peer, f"br-{side}", netns=self.seg)
        sock = os.path.join(self.dir, f"{spec.name}.sock")
        path = os.path.join(self.dir, f"{spec.name}.toml")
        gw = Gateway(spec, index, ns, path, sock)
        self.write_config(gw)
        return gw

    def write_config(self, gw: Gateway) -> None:
        """(Re)write the node's TOML from `gw.spec`; a running node reads it on its next start
        (or on SIGHUP)."""
        index = gw.index
        spec = gw.spec
        lan_host = [f"192.0.2.{10 + index}/24"]
        if self.ipv6:
            lan_host.append(f"2001:db8::{10 + index:x}/64")
        text = toml_table(
            "node",
            {
                "name": spec.name,
                "control": gw.socket_path,
                "metrics": spec.metrics or False,
                "log": "stderr",
            },
        )
        text += toml_table("sysctl", {"preempt": spec.preempt, "log": spec.log})
        text += toml_table(
            "switch.lan0",
            {"host": lan_host, "ports": [{"name": "lan", "type": "raw", "ifname": "lan"}]},
        )
        text += toml_table(
            "switch.wan0",
            {
                "host": [f"198.51.100.{10 + index}/24"],
                "ports": [{"name": "wan", "type": "raw", "ifname": "wan"}],
            },
        )
        for name, values in spec.carp.items():
            text += toml_table(f"carp.{name}", values)
        for hook in spec.hooks:
            text += toml_table("[hook]", hook)  # "[[hook]]": an array of tables
        with open(gw.config_path, "w") as f:
            f.write(text)

    def reconfigure(self, gw: Gateway, carp: dict[str, dict[str, Any]]) -> None:
        """New carp interfaces for `gw`: its config is rewritten for a reload (SIGHUP or the
        control socket's `reload`) or the next start."""
        gw.spec = replace(gw.spec, carp=carp)
        self.write_config(gw)

    # -- nodes ---------------------------------------------------------------------------------

    def start(self, gw: Gateway, wait: float = 10.0) -> None:
        """Start the node and wait until its control socket answers."""
        gw.log_path = os.path.join(self.dir, f"{gw.name}.log")
        log = open(gw.log_path, "ab")  # noqa: SIM115 - owned by the process
        gw.proc = self.lab.spawn(
            gw.netns,
            [sys.executable, "-m", "vswitch", "run", "-c", gw.config_path],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.wait_for(lambda: self.request(gw, {"cmd": "status"}) is not None, wait, gw)

    def kill(self, gw: Gateway) -> None:
        """`kill -9`: no bow-out, nothing removed by the node (its namespace goes with the lab)."""
        assert gw.proc is not None
        gw.proc.kill()
        gw.proc.wait(10)
        self.lab.processes.remove(gw.proc)
        gw.proc = None

    def stop(self, gw: Gateway) -> int:
        """SIGTERM: the node bows out and removes what it created."""
        assert gw.proc is not None
        code = self.lab.stop(gw.proc, timeout=10)
        gw.proc = None
        return code

    def request(self, gw: Gateway, message: dict[str, Any]) -> Any:
        """One control-socket request; None if the node does not answer (yet)."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(5)
                s.connect(gw.socket_path)
                s.sendall(json.dumps(message).encode() + b"\n")
                data = b""
                while not data.endswith(b"\n"):
                    chunk = s.recv(65536)
                    if not chunk:
                        return None
                    data += chunk
        except OSError:
            return None
        reply = json.loads(data)
        return reply.get("result") if reply.get("ok") else reply

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
    ) -> "Capture":
        """Start tcpdump on `ifname` in `netns` (bounded by `count` and `limit` seconds) and
        wait until it listens."""
        n = len([f for f in os.listdir(self.dir) if f.startswith("cap")])
        cap = Capture(self.lab, netns, os.path.join(self.dir, f"cap{n}.pcap"))
        cap.start(ifname, expr, count=count, limit=limit, inbound=inbound)
        return cap

    # -- ucarp nodes (interop) -----------------------------------------------------------------

    def add_ucarp(
        self,
        name: str,
        address: str,
        *,
        vhid: int = 1,
        password: str = "secret",
        vip: str = LAN_VIP,
        advbase: int = 1,
        advskew: int = 0,
        preempt: bool = True,
    ) -> "UcarpNode":
        """A namespace `name` on the LAN bridge with `address`/24 on eth0, ready to run ucarp
        for `vip`; its up/down scripts add/remove the address there and log the transition."""
        ns = self.lab.netns(name)
        self.lab.veth("eth0", name, a_netns=ns, b_netns=self.seg)
        netlink.set_master(name, "br-lan", netns=self.seg)
        self.lab.addr(ns, "eth0", f"{address}/24")
        base = os.path.join(self.dir, f"ucarp-{name}")
        u = UcarpNode(name, ns, "eth0", address, base)
        for script, ip_cmd, word in (("up", "add", "master"), ("down", "del", "backup")):
            # ucarp runs them as SCRIPT INTERFACE VIP; the down script also runs at start
            with open(f"{base}.{script}", "w") as f:
                f.write(
                    "#!/bin/sh\n"
                    f'ip addr {ip_cmd} "$2/24" dev "$1" 2>/dev/null\n'
                    f"echo {word} >> {base}.state\n"
                )
            os.chmod(f"{base}.{script}", 0o755)
        u.argv = [
            "ucarp",
            "-i",
            "eth0",
            "-s",
            address,
            "-v",
            str(vhid),
            "-p",
            password,
            "-a",
            vip,
            "-u",
            f"{base}.up",
            "-d",
            f"{base}.down",
            "-b",
            str(advbase),
            "-k",
            str(advskew),
        ] + (["-P"] if preempt else [])
        self.ucarps.append(u)
        return u

    def start_ucarp(self, u: "UcarpNode") -> None:
        log = open(f"{u.base}.log", "ab")  # noqa: SIM115 - owned by the process
        u.proc = self.lab.spawn(u.netns, u.argv, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def kill_ucarp(self, u: "UcarpNode") -> None:
        """`kill -9` (ucarp sends nothing on exit anyway); its address stays until removed."""
        assert u.proc is not None
        u.proc.kill()
        u.proc.wait(10)
        self.lab.processes.remove(u.proc)
        u.proc = None

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

    def sniff(self, ifnames: Sequence[str], netns: str | None = None) -> "Sniffer":
        """AF_PACKET sockets on `ifnames` in `netns` (default "seg", the bridges' namespace)."""
        sniffer = Sniffer(netns or self.seg, ifnames)
        self.sniffers.append(sniffer)
        return sniffer

    def ping_many(
        self, client: int, sources: Sequence[str], dst: str, *, wait: float = 2.0
    ) -> dict[str, bool]:
        """One echo request from each source address to `dst`, all at once; source -> answered
        (ping -c 1 stops at the first reply: count duplicates on the wire)."""
        ns = self.clients[client - 1]
        procs = {
            src: subprocess.Popen(
                self.lab.argv(
                    ns, ["ping", "-n", "-q", "-c", "1", "-W", f"{wait:g}", "-I", src, dst]
                ),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for src in sources
        }
        try:
            return {src: p.wait(wait + 10) == 0 for src, p in procs.items()}
        finally:
            for p in procs.values():
                if p.poll() is None:
                    p.kill()
                    p.wait(10)

    def udp_echo(self, netns: str, addr: str, port: int) -> None:
        """A UDP echo server on addr:port in `netns` (a lab process, ends with the lab)."""
        ready = os.path.join(self.dir, f"echo-{port}.ready")
        proc = self.lab.spawn(netns, [sys.executable, "-c", _UDP_ECHO, addr, str(port), ready])
        end = time.monotonic() + 10
        while not os.path.exists(ready):
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError("the UDP echo server did not start")
            time.sleep(0.02)

    def udp_flows(
        self,
        client: int,
        sources: Sequence[str],
        dst: str,
        port: int,
        *,
        timeout: float = 5.0,
        grace: float = 0.5,
    ) -> dict[str, int]:
        """One datagram from each source address (one flow each) to dst:port; source -> how
        many echoes came back: until every flow has one or `timeout`, then `grace` seconds
        more to see duplicates."""
        argv = [sys.executable, "-c", _UDP_FLOWS, dst, str(port), f"{timeout:g}", f"{grace:g}"]
        out = self.lab.run(
            self.clients[client - 1], [*argv, *sources], timeout=timeout + grace + 30
        ).stdout
        counts: dict[str, int] = json.loads(out)
        return counts

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


@dataclass
class UcarpNode:
    """One ucarp process in its own namespace (GatewayLab.add_ucarp)."""

    name: str
    netns: str
    ifname: str
    address: str
    base: str  # path prefix of its scripts, state file and log
    argv: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    def transitions(self) -> list[str]:
        """ "master" / "backup" for every up/down script run, in order."""
        try:
            with open(f"{self.base}.state") as f:
                return f.read().split()
        except FileNotFoundError:
            return []

    def log(self) -> str:
        try:
            with open(f"{self.base}.log", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""


class Capture:
    """tcpdump into a pcap file inside a lab namespace, bounded by a count and a time limit."""

    def __init__(self, lab: Lab, netns: str, path: str) -> None:
        self.lab = lab
        self.netns = netns
        self.path = path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(
        self, ifname: str, expr: str, *, count: int, limit: float, inbound: bool = False
    ) -> None:
        # --immediate-mode: a frame reaches the file at once (libpcap's TPACKET_V3 blocks would
        # hold up to a second of frames, lost when tcpdump is stopped)
        argv = ["timeout", f"{limit:g}", "tcpdump", "-i", ifname, "-n", "-U", "--immediate-mode"]
        argv += ["-c", str(count)]
        argv += (["-Q", "in"] if inbound else []) + ["-w", self.path, expr]
        err = open(f"{self.path}.err", "wb")  # noqa: SIM115 - owned by the process
        self.proc = self.lab.spawn(self.netns, argv, stdout=subprocess.DEVNULL, stderr=err)
        err.close()
        end = time.monotonic() + 10
        while "listening on" not in self.stderr():
            if self.proc.poll() is not None or time.monotonic() > end:
                self.stop()
                raise RuntimeError(f"tcpdump did not start: {self.stderr()}")
            time.sleep(0.02)

    def stderr(self) -> str:
        with open(f"{self.path}.err", errors="replace") as f:
            return f.read()

    def done(self) -> bool:
        """True once tcpdump exited (its count reached or its time limit over)."""
        return self.proc is None or self.proc.poll() is not None

    def stop(self) -> None:
        if self.proc is not None:
            self.lab.stop(self.proc, timeout=5)  # timeout(1) passes SIGTERM on to tcpdump
            self.proc = None

    def frames(self) -> list[tuple[float, bytes]]:
        """The frames captured so far (Ethernet), with their timestamps."""
        from vswitch.decode import open_capture

        with open(self.path, "rb") as f:
            return list(open_capture(f).frames)

    def __enter__(self) -> "Capture":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SO_RCVBUFFORCE = 33  # root: a buffer beyond rmem_max


@dataclass(frozen=True, slots=True)
class Sniffed:
    """One frame seen on a bridge port: `inbound` if the device behind the port sent it (it
    entered the bridge), else the bridge sent it out to that device."""

    ifname: str
    inbound: bool
    frame: bytes


class Sniffer:
    """AF_PACKET sockets on interfaces of one lab namespace, in this process (no tcpdump): on the
    bridge ports in "seg" they show which node sent a frame and which node a frame reached."""

    BUFFER = 8 << 20  # room for everything a short test sends without reading in between

    def __init__(self, netns: str, ifnames: Sequence[str]) -> None:
        self.socks: dict[str, socket.socket] = {}
        self.seen: list[Sniffed] = []
        try:
            for ifname in ifnames:
                with netlink.in_netns(netns):
                    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
                self.socks[ifname] = s
                s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, self.BUFFER)
                s.bind((ifname, ETH_P_ALL))
                s.setblocking(False)
        except BaseException:
            self.close()
            raise

    def frames(self) -> list[Sniffed]:
        """Everything seen so far (read now), in order per interface."""
        for ifname, s in self.socks.items():
            while True:
                try:
                    data, addr = s.recvfrom(65600)
                except BlockingIOError:
                    break
                self.seen.append(Sniffed(ifname, addr[2] != PACKET_OUTGOING, data))
        return self.seen

    def clear(self) -> None:
        self.frames()
        self.seen = []

    def close(self) -> None:
        for s in self.socks.values():
            s.close()
        self.socks = {}


_UDP_ECHO = """
import socket, sys
addr, port, ready = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((addr, port))
open(ready, "w").close()
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(data, peer)
"""

_UDP_FLOWS = """
import json, selectors, socket, sys, time
dst, port, timeout, grace = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
sel = selectors.DefaultSelector()
counts = {}
for src in sys.argv[5:]:
    s = socket.socket(socket.AF_INET6 if ":" in src else socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 0))
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ, src)
    counts[src] = 0
    s.sendto(src.encode(), (dst, port))
end = time.monotonic() + timeout
while time.monotonic() < end:
    if all(counts.values()):
        end = min(end, time.monotonic() + grace)
    for key, _ in sel.select(max(0.0, end - time.monotonic())):
        while True:
            try:
                key.fileobj.recv(2048)
            except BlockingIOError:
                break
            counts[key.data] += 1
print(json.dumps(counts))
"""


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
