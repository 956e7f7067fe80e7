#!/usr/bin/env python3
"""Throughput, small-frame rate and latency between namespaces through several L2 paths.

    .venv/bin/python bench/throughput.py [--duration 5] [--repeat 1] [--paths ...] [--quick]
        [--plot FILE.svg]   (root)

Two client namespaces, a and b, are joined by one path per run, each in a lab of its own:
- `bridge`: a Linux bridge with veths in its own namespace (br_netfilter off there);
- `vde`: `vde_switch -t tapa -t tapb` (Debian vde2), its own TAPs moved into the clients;
- `vswitch`: what users run, `vswitch run -c node.toml` in its own namespace: one switch with a
  host address and two `type = "tap"` ports that the node creates and moves into a and b;
- `vswitch-carp`: the same node file with a carp interface in `balancing ip` whose virtual
  address is in the clients' subnet; a sends to that address, so every frame passes the
  per-frame carp filter (the multicast carp MAC, carp_lsdrop, the carp TAP and back out
  through the source-MAC rule), and the receiving end is the node's own kernel;
- `vswitch-stream`, `vswitch-vde`, `vswitch-vxlan`: the same node with a on its TAP port and b
  attached through a socket port as users attach one (vswitch/lab/attach.py): QEMU `-netdev
  stream` hubbed to a TAP in b; `vde_plug2tap` in b; a Linux vxlan device in b across a veth
  underlay (203.0.113.0/24) from the node's namespace. A switch with a socket port runs
  without offload by default (vswitch/config.py `vnet_offload`); `vswitch-vde-tso` is
  `vswitch-vde` with `offload = true`, so a's TSO segments are cut in software on the way to
  b (vswitch/segment.py): TAP and plain ports mixed, the cost that default avoids;
- `dataplane` (also `-plain` without offload, `-mq2` with two-queue TAPs): the bare DataPlane
  of vswitch/dataplane.py in a process of this script (`serve`), no node around it.
Measurements per path: TCP with 1 stream both ways and 4 streams (iperf3), 64-byte UDP
(iperf3 -u -l 64 at a bounded rate), 60-byte frames forwarded (trafgen, counted at the
receiving interface), and ping RTT median / p99; the socket-port paths skip the two small-frame
measurements. Every measurement is bounded in time; each lab is removed afterwards, also on
errors. Prints a table of ratios (TCP to the Linux bridge; UDP, frames and ping to vde_switch;
the other vswitch-* paths also to `vswitch`, TAP to TAP) and writes JSON under bench/results/
with the machine and its load.
"""

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from report import host_info, text_table, write_report

import vswitch
from vswitch import netlink, tomlw
from vswitch.ctl.client import ControlClient, NodeUnavailable
from vswitch.lab import timeline
from vswitch.lab.attach import (
    QEMU,
    fdb_append,
    qemu_argv,
    stream_netdev,
    tx_checksums_in_software,
    vxlan_device,
)
from vswitch.lab.netns import Lab, preflight
from vswitch.lab.procstat import cpu_ticks, family, run_ns

IP_A, IP_B = "192.0.2.101", "192.0.2.102"
HOST = "192.0.2.10"  # the node's host port on the clients' segment
VIP = "192.0.2.1"  # carp0 of vswitch-carp, balancing ip
UNDERLAY_NODE, UNDERLAY_B = "203.0.113.1", "203.0.113.2"  # vswitch-vxlan's veth underlay
VNI = 42
# b on a socket port of the node, a on its TAP port (the node's default offload unless -tso)
SOCKET_PATHS = ("vswitch-stream", "vswitch-vde", "vswitch-vxlan", "vswitch-vde-tso")
PATHS = (
    "bridge",
    "vde",
    "vswitch",
    "vswitch-carp",
    *SOCKET_PATHS,
    "vswitch-w2",
    "vswitch-carp-w2",
    "dataplane",
    "dataplane-plain",
    "dataplane-mq2",
)
DEFAULT_PATHS = (
    "bridge",
    "vde",
    "vswitch",
    "vswitch-carp",
    "vswitch-stream",
    "vswitch-vde",
    "vswitch-vxlan",
    "dataplane",
)
# what a path needs beyond ip, ping and iperf3: (command, Debian package)
TOOLS = {
    "vde": ("vde_switch", "vde2"),
    "vswitch-stream": (QEMU, "qemu-system-x86"),
    "vswitch-vde": ("vde_plug2tap", "vde2"),
    "vswitch-vde-tso": ("vde_plug2tap", "vde2"),
    "vswitch-vxlan": ("bridge", "iproute2"),
}
REFERENCE = "vswitch"  # TAP to TAP through the node: the other vswitch-* paths' second ratio


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    baseline: str  # the path the ratios are taken to (issue 10's targets)
    higher_is_better: bool


METRICS = (
    Metric("tcp1_gbps", "TCP 1 stream", "Gbit/s", "bridge", True),
    Metric("tcp1r_gbps", "TCP 1 stream, b to a", "Gbit/s", "bridge", True),
    Metric("tcp4_gbps", "TCP 4 streams", "Gbit/s", "bridge", True),
    Metric("udp64_kpps", "UDP 64 B (iperf3)", "kpps", "vde", True),
    Metric("frames60_kpps", "60 B frames (trafgen)", "kpps", "vde", True),
    Metric("rtt_median_ms", "ping median", "ms", "vde", False),
    Metric("rtt_p99_ms", "ping p99", "ms", "vde", False),
)
CPU_KEYS = ("tcp1", "udp64", "frames60")  # measurements with the switch's CPU time taken
CPU_LABELS = {"tcp1": "TCP 1 stream", "udp64": "UDP 64 B", "frames60": "60 B frames"}
BASELINE_NAMES = {"bridge": "Linux bridge", "vde": "vde_switch", "vswitch": "vswitch TAP to TAP"}
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
NODE_START = 15.0  # seconds for the node to serve, and for its carp0 to become MASTER
# the tree this script's vswitch comes from: the node it starts runs the same code
SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(vswitch.__file__)))


@dataclass
class Path:
    """Two clients joined by some switch: a at IP_A on if_a sends to `dst`, whose receiving end
    (iperf3's server, the 60 B frame counter on `server_if`) is in `server_ns`."""

    a: str
    b: str
    if_a: str
    if_b: str
    dst: str
    server_ns: str
    server_if: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    control: str | None = None  # the node's control socket (vswitch paths)
    small_frames: bool = True  # UDP 64 B and trafgen measured (not on the socket-port paths)


@dataclass(frozen=True)
class Settings:
    duration: float
    pings: int
    udp_rate: str
    trafgen: bool


def wait_for(cond: Callable[[], bool], deadline: float, what: str) -> None:
    end = time.monotonic() + deadline
    while not cond():
        if time.monotonic() > end:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def clients(lab: Lab) -> tuple[str, str]:
    return lab.netns("a"), lab.netns("b")


def address(lab: Lab, path: Path) -> None:
    for ns, ifname, ip in ((path.a, path.if_a, IP_A), (path.b, path.if_b, IP_B)):
        lab.addr(ns, ifname, f"{ip}/24")
        lab.link(ns, ifname, up=True)


def build_bridge(lab: Lab) -> Path:
    a, b = clients(lab)
    sw = lab.netns("sw")
    lab.veth("eth0", "pa", a_netns=a, b_netns=sw)
    lab.veth("eth0", "pb", a_netns=b, b_netns=sw)
    lab.bridge("br0", sw, ["pa", "pb"])
    path = Path(a, b, "eth0", "eth0", IP_B, b, "eth0")
    address(lab, path)
    return path


def build_vde(lab: Lab) -> Path:
    a, b = clients(lab)
    sw = lab.netns("sw")
    ctl = os.path.join(tempfile.gettempdir(), f"{lab.prefix}.vde")
    # vde_switch reads commands from stdin and exits at EOF: hold a pipe open
    proc = lab.spawn(
        sw,
        ["vde_switch", "-t", "tapa", "-t", "tapb", "-s", ctl],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def taps_exist() -> bool:
        links = lab.run(sw, ["ip", "-br", "link"]).stdout
        return "tapa" in links and "tapb" in links

    wait_for(taps_exist, 10, "vde_switch's TAPs")
    for ifname, ns in (("tapa", a), ("tapb", b)):
        lab.run(sw, ["ip", "link", "set", ifname, "netns", ns])
    path = Path(a, b, "tapa", "tapb", IP_B, b, "tapb", [proc])
    address(lab, path)
    return path


def node_file(
    name: str,
    control: str,
    ports: list[dict[str, Any]],
    carp: bool,
    offload: bool | None = None,
    workers: int = 0,
) -> dict[str, Any]:
    """The node file (as data): switch lan0 with a host address and `ports`; with `carp`, carp0
    in balancing ip on it, alone and so MASTER; `offload` None keeps the node's default;
    `workers` forwarding processes (0: the node's own)."""
    lan0: dict[str, Any] = {"host": [f"{HOST}/24"], "ports": ports}
    if offload is not None:
        lan0["offload"] = offload
    node: dict[str, Any] = {"name": name, "control": control, "metrics": False, "log": "stderr"}
    if workers:
        node["workers"] = workers
    config: dict[str, Any] = {"node": node, "switch": {"lan0": lan0}}
    if carp:
        config["carp"] = {
            "carp0": {
                "carpdev": "lan0",
                "addresses": [f"{VIP}/24"],
                "vhid": 1,
                "advbase": 1,
                "advskew": 0,
                "balancing": "ip",
                "pass": "bench",
            }
        }
    return config


def status(control: str) -> Any:
    """The node's status, or None while it does not answer."""
    try:
        with ControlClient(control, timeout=5) as client:
            return client.request("status")
    except NodeUnavailable:
        return None


def carp0_state(control: str) -> str | None:
    st = status(control)
    if not isinstance(st, dict):
        return None
    return next((n["state"] for c in st.get("carp", []) for n in c["carpnodes"]), None)


def tap_port(ifname: str, netns: str) -> dict[str, Any]:
    return {"name": ifname, "type": "tap", "netns": netns}


def build_node(lab: Lab, folder: str, name: str) -> Path:
    """`vswitch run -c node.toml` in namespace "sw", as users run it: a on a TAP port, b on a
    TAP port too (vswitch, vswitch-carp) or attached to a socket port (SOCKET_PATHS)."""
    a, b = clients(lab)
    sw = lab.netns("sw")
    carp = name.startswith("vswitch-carp")
    workers = int(name.rsplit("-w", 1)[1]) if "-w" in name else 0
    control = os.path.join(folder, "node.sock")
    config = os.path.join(folder, "node.toml")
    log = os.path.join(folder, "node.log")
    port_b = socket_port(lab, folder, name, sw, b) if name in SOCKET_PATHS else tap_port("tapb", b)
    offload = True if name.endswith("-tso") else None
    with open(config, "w") as f:
        f.write(
            tomlw.dumps(
                node_file("bench", control, [tap_port("tapa", a), port_b], carp, offload, workers)
            )
        )
    env = {**os.environ, "PYTHONPATH": SOURCE_ROOT}
    proc = lab.spawn(sw, [sys.executable, "-m", "vswitch", "run", "-c", config], log=log, env=env)

    def serving() -> bool:
        if proc.poll() is not None:
            with open(log, errors="replace") as f:
                raise RuntimeError(f"vswitch run exited ({proc.returncode}):\n{f.read()[-2000:]}")
        return status(control) is not None and (not carp or carp0_state(control) == "MASTER")

    wait_for(serving, NODE_START, "the node" + (" and carp0 MASTER" if carp else ""))
    if carp:  # a sends to the VIP: the node's kernel answers, behind the carp TAP
        path = Path(a, b, "tapa", "tapb", VIP, sw, "carp0", [proc], control)
    elif name in SOCKET_PATHS:
        if_b, client = attach_b(lab, folder, port_b, b)
        path = Path(a, b, "tapa", if_b, IP_B, b, if_b, [proc, *client], control, False)
    else:
        path = Path(a, b, "tapa", "tapb", IP_B, b, "tapb", [proc], control)
    address(lab, path)
    return path


def socket_port(lab: Lab, folder: str, name: str, sw: str, b: str) -> dict[str, Any]:
    """The node's port for b on a socket-port path; for vxlan also the underlay and b's vxlan
    device (head-end replication to the node), which must exist before the node binds."""
    if name == "vswitch-stream":
        return {"name": "vm1", "type": "stream", "path": os.path.join(folder, "vm1.sock")}
    if name in ("vswitch-vde", "vswitch-vde-tso"):
        return {"name": "lab", "type": "vde", "path": os.path.join(folder, "lab.vde")}
    if name != "vswitch-vxlan":
        raise ValueError(name)
    lab.veth("ul0", "ul1", a_netns=sw, b_netns=b)
    lab.addr(sw, "ul0", f"{UNDERLAY_NODE}/24")
    lab.addr(b, "ul1", f"{UNDERLAY_B}/24")
    tx_checksums_in_software("ul1", b)  # as b's NIC would: else TCP from b arrives unusable
    lab.run(b, vxlan_device("vxb", VNI, UNDERLAY_B, "ul1"))  # MTU 1450: the underlay's - 50
    lab.run(b, fdb_append("vxb", UNDERLAY_NODE))
    return {
        "name": "far",
        "type": "vxlan",
        "vni": VNI,
        "local": UNDERLAY_NODE,
        "remote": [UNDERLAY_B],
    }


def attach_b(
    lab: Lab, folder: str, port: dict[str, Any], b: str
) -> tuple[str, list[subprocess.Popen[bytes]]]:
    """b's interface behind the node's socket `port`, once it exists, and the client processes:
    QEMU (stream) or vde_plug2tap (vde) started in b, each making its TAP "tapb" there."""
    if port["type"] == "vxlan":
        return "vxb", []  # the kernel's device, made with the underlay
    if port["type"] == "stream":
        argv = qemu_argv(stream_netdev(port["path"]), "tapb")
    else:
        argv = ["vde_plug2tap", "-s", port["path"], "tapb"]
    log = os.path.join(folder, "client-b.log")
    proc = lab.spawn(b, argv, log=log)

    def made() -> bool:
        if proc.poll() is not None:
            with open(log, errors="replace") as f:
                raise RuntimeError(f"{argv[0]} exited ({proc.returncode}):\n{f.read()[-2000:]}")
        return netlink.link_index("tapb", b) is not None

    wait_for(made, 15, f"{argv[0]}'s TAP in b")
    return "tapb", [proc]


def build_dataplane(lab: Lab, offload: bool, queues: int = 1) -> Path:
    a, b = clients(lab)
    sw = lab.netns("sw")
    spec = {
        "offload": offload,
        "taps": [
            {
                "name": n,
                "ifname": f"tap{n}",
                "netns": ns,
                "addresses": [f"{ip}/24"],
                "queues": queues,
            }
            for n, ns, ip in (("a", a, IP_A), ("b", b, IP_B))
        ],
    }
    proc = lab.spawn(
        sw,
        [sys.executable, os.path.abspath(__file__), "serve", json.dumps(spec)],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != b"ready":
        raise RuntimeError("the switch process did not start")
    return Path(a, b, "tapa", "tapb", IP_B, b, "tapb", [proc])


# -- measurements -------------------------------------------------------------------------------


def iperf(lab: Lab, path: Path, duration: float, *args: str) -> dict[str, Any]:
    out = lab.run(
        path.a,
        ["iperf3", "-c", path.dst, "-t", f"{duration:g}", "-J", *args],
        timeout=duration + 30,
        check=False,
    ).stdout
    result: dict[str, Any] = json.loads(out)
    if "error" in result:
        raise RuntimeError(f"iperf3 {' '.join(args)}: {result['error']}")
    return result


def tcp_gbps(lab: Lab, path: Path, duration: float, streams: int, reverse: bool = False) -> float:
    """a to `dst`, or with `reverse` the other way (iperf3 -R: the server sends, a receives)."""
    result = iperf(lab, path, duration, "-P", str(streams), *(["-R"] if reverse else []))
    return float(result["end"]["sum_received"]["bits_per_second"]) / 1e9


def udp64_kpps(lab: Lab, path: Path, duration: float, rate: str) -> float:
    result = iperf(lab, path, duration, "-u", "-l", "64", "-b", rate)
    s = result["end"]["sum"]
    return (int(s["packets"]) - int(s["lost_packets"])) / float(s["seconds"]) / 1e3


def rx_packets(lab: Lab, ns: str, ifname: str) -> int:
    return int(lab.run(ns, ["cat", f"/sys/class/net/{ifname}/statistics/rx_packets"]).stdout)


def mac(lab: Lab, ns: str, ifname: str) -> bytes:
    text = lab.run(ns, ["cat", f"/sys/class/net/{ifname}/address"]).stdout.strip()
    return bytes.fromhex(text.replace(":", ""))


def neighbour(lab: Lab, path: Path) -> bytes:
    """The MAC a resolved `dst` to (b's, or the multicast carp MAC of balancing ip)."""
    out = lab.run(path.a, ["ip", "neigh", "show", "to", path.dst, "dev", path.if_a]).stdout
    m = re.search(r"\blladdr ([0-9a-f:]{17})\b", out)
    if m is None:
        raise RuntimeError(f"a has no neighbour entry for {path.dst}: {out.strip()!r}")
    return bytes.fromhex(m.group(1).replace(":", ""))


def frames60_kpps(lab: Lab, path: Path, duration: float) -> float:
    """trafgen sends 60-byte UDP frames to the MAC a resolved `dst` to for `duration` seconds;
    the rate is what arrives at the receiving interface."""
    src, dst = mac(lab, path.a, path.if_a), neighbour(lab, path)
    ip = bytes.fromhex("4500002e000000004011") + b"\x00\x00"  # checksum filled below
    ip += socket.inet_aton(IP_A) + socket.inet_aton(path.dst)
    total = sum(int.from_bytes(ip[i : i + 2], "big") for i in range(0, 20, 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    ip = ip[:10] + (~total & 0xFFFF).to_bytes(2, "big") + ip[12:]
    udp = (9).to_bytes(2, "big") * 2 + (26).to_bytes(2, "big") + bytes(2) + bytes(18)
    frame = dst + src + b"\x08\x00" + ip + udp
    assert len(frame) == 60
    conf = "{ " + ", ".join(f"0x{b:02x}" for b in frame) + " }"
    before = rx_packets(lab, path.server_ns, path.server_if)
    start = time.monotonic()
    # one generator process, no tuning of the host's (global) socket memory or IRQs
    lab.run(
        path.a,
        [
            "timeout",
            "-s",
            "INT",
            f"{duration:g}",
            "trafgen",
            "--dev",
            path.if_a,
            "--cpus",
            "1",
            "--no-sock-mem",
            "--notouch-irq",
            "--no-cpu-stats",
            conf,
        ],
        timeout=duration + 30,
        check=False,
    )
    elapsed = time.monotonic() - start
    return (rx_packets(lab, path.server_ns, path.server_if) - before) / elapsed / 1e3


def rtt_ms(lab: Lab, path: Path, count: int) -> tuple[float, float]:
    out = lab.run(
        path.a, ["ping", "-n", "-c", str(count), "-i", "0.005", path.dst], timeout=count * 0.01 + 30
    ).stdout
    rtts = sorted(float(m) for m in re.findall(r"time=([\d.]+) ms", out))
    if not rtts:
        raise RuntimeError("ping got no replies")
    p99 = rtts[min(len(rtts) - 1, round(0.99 * (len(rtts) - 1)))]
    return statistics.median(rtts), p99


def listening(lab: Lab, ns: str, port: int = 5201) -> bool:
    return f":{port} " in lab.run(ns, ["ss", "-tln"]).stdout


class SwitchCpu:
    """CPU the switch process (with its children) spends during each measurement, so that a
    table can say how much of it is the kernel's (system time: TAP reads and writes, and the
    receiving stack run inside a write) and how much the switch's own (user time)."""

    def __init__(self, path: Path) -> None:
        self.pid = path.processes[0].pid if path.processes else None
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def during(self, key: str) -> Iterator[None]:
        if self.pid is None:
            yield
            return
        before = cpu_ticks(family(self.pid))
        yield
        after = cpu_ticks(family(self.pid))
        tick = os.sysconf("SC_CLK_TCK")
        self.seconds[f"{key}_user_s"] = (after[0] - before[0]) / tick
        self.seconds[f"{key}_sys_s"] = (after[1] - before[1]) / tick

    @contextlib.contextmanager
    def echoes(self, count: int) -> Iterator[None]:
        """The switch's CPU time per echo of the ping (two frames through it)."""
        if self.pid is None:
            yield
            return
        pids = family(self.pid)
        before = run_ns(pids)
        yield
        self.seconds["ping_us_per_echo"] = (run_ns(pids) - before) / count / 1000


def measure(lab: Lab, path: Path, settings: Settings) -> dict[str, float]:
    if not lab.ping(path.a, path.dst, deadline=10):
        raise RuntimeError(f"no connectivity from a to {path.dst}")
    lab.ping(path.b, IP_A, deadline=10)  # both MACs learned before unicast measurements
    server = lab.spawn(
        path.server_ns,
        ["iperf3", "-s", "-B", path.dst],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: listening(lab, path.server_ns), 10, "iperf3 server")
        d = settings.duration
        res: dict[str, float] = {}
        cpu = SwitchCpu(path)
        with cpu.echoes(settings.pings):
            res["rtt_median_ms"], res["rtt_p99_ms"] = rtt_ms(lab, path, settings.pings)
        with cpu.during("tcp1"):
            res["tcp1_gbps"] = tcp_gbps(lab, path, d, 1)
        res["tcp1r_gbps"] = tcp_gbps(lab, path, d, 1, reverse=True)
        res["tcp4_gbps"] = tcp_gbps(lab, path, d, 4)
        if path.small_frames:
            with cpu.during("udp64"):
                res["udp64_kpps"] = udp64_kpps(lab, path, d, settings.udp_rate)
            if settings.trafgen:
                with cpu.during("frames60"):
                    res["frames60_kpps"] = frames60_kpps(lab, path, d)
        return res | {f"cpu_{k}": v for k, v in cpu.seconds.items()}
    finally:
        lab.stop(server)


def run_path(name: str, settings: Settings) -> tuple[dict[str, float], Any]:
    """The measurements, and the switch's counters (None for the bridge and vde)."""
    folder = tempfile.mkdtemp(prefix="vswitch-bench-")
    try:
        with Lab() as lab:
            if name == "bridge":
                path = build_bridge(lab)
            elif name == "vde":
                path = build_vde(lab)
            elif name in (
                "vswitch",
                "vswitch-carp",
                "vswitch-w2",
                "vswitch-carp-w2",
                *SOCKET_PATHS,
            ):
                path = build_node(lab, folder, name)
            elif name == "dataplane":
                path = build_dataplane(lab, offload=True)
            elif name == "dataplane-plain":
                path = build_dataplane(lab, offload=False)
            elif name == "dataplane-mq2":  # multiqueue TAPs, all queues read by the one process
                path = build_dataplane(lab, offload=True, queues=2)
            else:
                raise ValueError(name)
            res = measure(lab, path, settings)
            counters = None
            if path.control is not None:
                st = status(path.control)
                counters = {k: st.get(k) for k in ("switches", "carp")} if st else None
            elif name.startswith("dataplane"):
                proc = path.processes[0]
                lab.stop(proc)
                assert proc.stdout is not None
                counters = json.loads(proc.stdout.read() or b"null")
            return res, counters
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# -- the bare DataPlane process (dataplane paths) --------------------------------------------


def serve(spec_json: str) -> int:
    import uvloop

    from vswitch import netlink
    from vswitch.config import TapPortConfig
    from vswitch.dataplane import DataPlane
    from vswitch.port import DevicePort
    from vswitch.system import LinuxSystem
    from vswitch.tap import TapPort

    spec = json.loads(spec_json)
    system = LinuxSystem()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = loop.create_future()

        def on_signal() -> None:
            if not stop.done():
                stop.set_result(None)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        with DataPlane(loop) as dp:
            vnet_hdr = dp.add_switch("lan0", offload=spec["offload"]).vnet_hdr
            for t in spec["taps"]:
                dev: DevicePort
                if t["queues"] == 1:  # opened as the node opens a `type = "tap"` port
                    port = TapPortConfig(
                        name=t["name"], type="tap", ifname=t["ifname"], netns=t["netns"]
                    )
                    dev = system.open_port(port, vnet_hdr=vnet_hdr)
                else:  # the node file has no multiqueue TAPs
                    dev = TapPort(
                        t["ifname"], vnet_hdr=vnet_hdr, netns=t["netns"], queues=t["queues"]
                    )
                dp.add_port("lan0", t["name"], dev)
                for cidr in t["addresses"]:
                    netlink.add_address(t["ifname"], cidr, netns=t["netns"], nodad=True)
            print("ready", flush=True)
            await stop
            print(json.dumps(dp.counters()), flush=True)

    uvloop.run(main())
    return 0


# -- report -------------------------------------------------------------------------------------


def ratios(
    results: dict[str, dict[str, float]], reference: str | None = None
) -> dict[str, dict[str, float]]:
    """path -> metric -> value / the metric's baseline path's value (where both were measured);
    with `reference`, to that path's value instead, for the other vswitch-* paths only."""
    out: dict[str, dict[str, float]] = {}
    for p, values in results.items():
        if reference is not None and not p.startswith(f"{reference}-"):
            continue
        for m in METRICS:
            to = reference or m.baseline
            base = results.get(to, {}).get(m.key)
            if base and p != to and values.get(m.key) is not None:
                out.setdefault(p, {})[m.key] = values[m.key] / base
    return out


def table(results: dict[str, dict[str, float]]) -> str:
    """Each value with its ratio to the metric's baseline, and for the vswitch-* paths to
    `vswitch` (TAP to TAP) after it; "-" where a path skips the measurement."""
    rel, ref = ratios(results), ratios(results, REFERENCE)
    paths = list(results)
    rows: list[list[str]] = []
    for m in METRICS:
        row = [f"{m.label} ({m.unit}) vs {m.baseline}"]
        for p in paths:
            value = results[p].get(m.key)
            if value is None:
                row.append("-")
                continue
            ratio, second = rel.get(p, {}).get(m.key), ref.get(p, {}).get(m.key)
            marks = ["base"] if p == m.baseline else [f"{ratio:.2f}x"] if ratio else []
            if second:
                marks.append(f"{second:.2f}x {REFERENCE}")
            row.append(f"{value:.3f}" + (f" ({'; '.join(marks)})" if marks else ""))
        rows.append(row)
    return text_table(["", *paths], rows, rule=False)


def cpu_table(results: dict[str, dict[str, float]], duration: float) -> str:
    """The switch process's CPU per measurement: the share of a core it used, and how much of
    that was in the kernel (system time)."""
    rows = []
    for p, values in results.items():
        row = [p]
        for key in CPU_KEYS:
            user, sys_ = values.get(f"cpu_{key}_user_s"), values.get(f"cpu_{key}_sys_s")
            if user is None or sys_ is None or user + sys_ <= 0:
                row.append("-")
                continue
            busy = user + sys_
            row.append(f"{100 * busy / duration:.0f} % ({100 * sys_ / busy:.0f} % kernel)")
        per_echo = values.get("cpu_ping_us_per_echo")
        row.append("-" if per_echo is None else f"{per_echo:.0f} us")
        if any(cell != "-" for cell in row[1:]):
            rows.append(row)
    head = ["switch process CPU", *(CPU_LABELS[k] for k in CPU_KEYS), "per ping echo"]
    return text_table(head, rows, rule=False)


def picture(results: dict[str, dict[str, float]], title: str) -> timeline.Figure:
    groups = []
    for reference in (None, REFERENCE):
        rel = ratios(results, reference)
        for m in METRICS:
            bars = tuple(timeline.Bar(p, rel[p][m.key]) for p in results if m.key in rel.get(p, {}))
            if bars:
                to = reference or m.baseline
                vs = BASELINE_NAMES.get(to, to)
                better = "higher" if m.higher_is_better else "lower"
                label = f"{m.label} vs {vs} ({better} is better)"
                groups.append(timeline.BarGroup(label, bars, m.higher_is_better))
    note = "ratio to the baseline on a log scale; green: better than the baseline, orange: worse"
    return timeline.ratio_bars(title, groups, note=note)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd")
    srv = sub.add_parser("serve", help="run the bare DataPlane (started by this script)")
    srv.add_argument("spec")
    parser.add_argument("--duration", type=float, default=None, help="seconds per measurement (5)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per path (median)")
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(DEFAULT_PATHS))
    parser.add_argument("--no-trafgen", action="store_true")
    parser.add_argument(
        "--udp-rate", default="300M", help="iperf3 -b for the 64 B UDP test (bounded; 300M)"
    )
    parser.add_argument("--quick", action="store_true", help="a short check: 1 s, 200 pings")
    parser.add_argument("--plot", metavar="FILE", help="draw the ratios into FILE (SVG)")
    parser.add_argument("--out", default=RESULTS, help="directory for the JSON result")
    args = parser.parse_args(argv)
    if args.cmd == "serve":
        return serve(args.spec)
    duration = args.duration if args.duration is not None else (1.0 if args.quick else 5.0)
    if not 1 <= duration <= 60:
        parser.error("--duration must be 1..60 s")
    if not 1 <= args.repeat <= 20:
        parser.error("--repeat must be 1..20")
    if not re.fullmatch(r"[1-9]\d*[KMG]?", args.udp_rate):
        parser.error("--udp-rate: a positive iperf3 rate such as 300M")
    reason = preflight("throughput.py", ("ip", "ping", "iperf3"))
    for p in args.paths:
        if reason is None and p in TOOLS and shutil.which(TOOLS[p][0]) is None:
            tool, package = TOOLS[p]
            reason = (
                f"throughput.py needs {tool} for the {p} path (Debian: apt-get install {package})"
            )
    if reason is not None:
        print(reason, file=sys.stderr)
        return 2
    trafgen = not args.no_trafgen and shutil.which("trafgen") is not None
    settings = Settings(duration, 200 if args.quick else 500, args.udp_rate, trafgen)
    paths = list(dict.fromkeys(args.paths))
    runs: dict[str, list[dict[str, float]]] = {p: [] for p in paths}
    counters: dict[str, Any] = {}
    load_before = os.getloadavg()
    started = time.monotonic()
    for i in range(args.repeat):
        for p in paths:
            print(f"[{i + 1}/{args.repeat}] {p} ...", file=sys.stderr, flush=True)
            res, stats = run_path(p, settings)
            runs[p].append(res)
            if stats is not None:
                counters[p] = stats
    results = {p: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for p, rs in runs.items()}
    print(table(results))
    print(cpu_table(results, duration))
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": host_info(load_before),
        "seconds": round(time.monotonic() - started, 1),
        "duration_s": duration,
        "pings": settings.pings,
        "udp_rate": settings.udp_rate,
        "repeat": args.repeat,
        "baselines": {m.key: m.baseline for m in METRICS},
        "results": results,
        "ratios": ratios(results),
        "reference": REFERENCE,
        "ratios_to_reference": ratios(results, REFERENCE),
        "runs": runs,
        "switch_counters": counters,
    }
    write_report(args.out, "throughput", report)
    if args.plot:
        host = report["host"]
        title = (
            f"Paths between two namespaces: ratios, {args.repeat} x {duration:g} s "
            f"({host['cpu_model']}, {host['cpus']} CPUs, kernel {host['kernel']})"
        )
        timeline.write(args.plot, [picture(results, title)])
        print(f"written {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
