#!/usr/bin/env python3
"""Throughput, small-frame rate and latency between two namespaces through several L2 paths.

    .venv/bin/python bench/throughput.py [--duration 5] [--repeat 1] [--paths ...]   (root)

Paths: a Linux bridge with veths (the baseline; br_netfilter off in its namespace), our switch
with and without virtio-net offload (two TAP ports, the switch in its own process and
namespace, as the daemon runs), `vde_switch -t tapA -t tapB` (Debian vde2), and our switch with
two-queue TAPs read by its one process (multiqueue as far as it goes today). Measurements per
path: TCP with 1 and 4 streams (iperf3), 64-byte UDP through the whole path (iperf3 -u -l 64),
60-byte frame forwarding rate (trafgen, counted at the receiving interface), and ping RTT
median / p99. Every measurement is bounded in time; everything runs in namespaces of a lab
that is removed afterwards. Prints a table with ratios to the Linux bridge and writes JSON under
bench/results/. `serve` is the switch process this script starts for our paths.
"""

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from report import host_info, write_report

from vswitch.lab.netns import Lab

IP_A, IP_B = "192.0.2.1", "192.0.2.2"
PATHS = ("bridge", "vswitch-offload", "vswitch-plain", "vde", "vswitch-mq2")
METRICS = (
    ("tcp1_gbps", "TCP 1 stream", "Gbit/s"),
    ("tcp4_gbps", "TCP 4 streams", "Gbit/s"),
    ("udp64_kpps", "UDP 64 B (iperf3)", "kpps"),
    ("frames60_kpps", "60 B frames (trafgen)", "kpps"),
    ("rtt_median_ms", "ping median", "ms"),
    ("rtt_p99_ms", "ping p99", "ms"),
)
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


@dataclass
class Path:
    """Two client namespaces joined by some switch: a at IP_A on if_a, b at IP_B on if_b."""

    a: str
    b: str
    if_a: str
    if_b: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)


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
    path = Path(a, b, "eth0", "eth0")
    address(lab, path)
    return path


def build_vswitch(lab: Lab, offload: bool, queues: int = 1) -> Path:
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
    return Path(a, b, "tapa", "tapb", [proc])


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
    path = Path(a, b, "tapa", "tapb", [proc])
    address(lab, path)
    return path


# -- measurements -------------------------------------------------------------------------------


def iperf(lab: Lab, path: Path, duration: float, *args: str) -> dict[str, Any]:
    out = lab.run(
        path.a,
        ["iperf3", "-c", IP_B, "-t", f"{duration:g}", "-J", *args],
        timeout=duration + 30,
        check=False,
    ).stdout
    result: dict[str, Any] = json.loads(out)
    if "error" in result:
        raise RuntimeError(f"iperf3 {' '.join(args)}: {result['error']}")
    return result


def tcp_gbps(lab: Lab, path: Path, duration: float, streams: int) -> float:
    result = iperf(lab, path, duration, "-P", str(streams))
    return float(result["end"]["sum_received"]["bits_per_second"]) / 1e9


def udp64_kpps(lab: Lab, path: Path, duration: float) -> float:
    result = iperf(lab, path, duration, "-u", "-l", "64", "-b", "0")
    s = result["end"]["sum"]
    return (int(s["packets"]) - int(s["lost_packets"])) / float(s["seconds"]) / 1e3


def rx_packets(lab: Lab, ns: str, ifname: str) -> int:
    return int(lab.run(ns, ["cat", f"/sys/class/net/{ifname}/statistics/rx_packets"]).stdout)


def mac(lab: Lab, ns: str, ifname: str) -> bytes:
    text = lab.run(ns, ["cat", f"/sys/class/net/{ifname}/address"]).stdout.strip()
    return bytes.fromhex(text.replace(":", ""))


def frames60_kpps(lab: Lab, path: Path, duration: float) -> float:
    """trafgen sends 60-byte UDP frames to b's MAC (learned: unicast) for `duration` seconds;
    the rate is what arrives at b's interface."""
    src, dst = mac(lab, path.a, path.if_a), mac(lab, path.b, path.if_b)
    ip = bytes.fromhex("4500002e000000004011") + b"\x00\x00"  # checksum filled below
    ip += socket.inet_aton(IP_A) + socket.inet_aton(IP_B)
    total = sum(int.from_bytes(ip[i : i + 2], "big") for i in range(0, 20, 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    ip = ip[:10] + (~total & 0xFFFF).to_bytes(2, "big") + ip[12:]
    udp = (9).to_bytes(2, "big") * 2 + (26).to_bytes(2, "big") + bytes(2) + bytes(18)
    frame = dst + src + b"\x08\x00" + ip + udp
    assert len(frame) == 60
    conf = "{ " + ", ".join(f"0x{b:02x}" for b in frame) + " }"
    before = rx_packets(lab, path.b, path.if_b)
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
    return (rx_packets(lab, path.b, path.if_b) - before) / elapsed / 1e3


def rtt_ms(lab: Lab, path: Path, count: int) -> tuple[float, float]:
    out = lab.run(
        path.a, ["ping", "-n", "-c", str(count), "-i", "0.005", IP_B], timeout=count * 0.01 + 30
    ).stdout
    rtts = sorted(float(m) for m in re.findall(r"time=([\d.]+) ms", out))
    if not rtts:
        raise RuntimeError("ping got no replies")
    p99 = rtts[min(len(rtts) - 1, round(0.99 * (len(rtts) - 1)))]
    return statistics.median(rtts), p99


def measure(lab: Lab, path: Path, duration: float, trafgen: bool) -> dict[str, float]:
    if not lab.ping(path.a, IP_B, deadline=10):
        raise RuntimeError("no connectivity")
    lab.ping(path.b, IP_A, deadline=10)  # both MACs learned before unicast measurements
    server = lab.spawn(
        path.b,
        ["iperf3", "-s", "-B", IP_B],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: ":5201 " in lab.run(path.b, ["ss", "-tln"]).stdout, 10, "iperf3 server")
        res: dict[str, float] = {}
        res["rtt_median_ms"], res["rtt_p99_ms"] = rtt_ms(lab, path, 500)
        res["tcp1_gbps"] = tcp_gbps(lab, path, duration, 1)
        res["tcp4_gbps"] = tcp_gbps(lab, path, duration, 4)
        res["udp64_kpps"] = udp64_kpps(lab, path, duration)
        if trafgen:
            res["frames60_kpps"] = frames60_kpps(lab, path, duration)
        return res
    finally:
        lab.stop(server)


def run_path(name: str, duration: float, trafgen: bool) -> tuple[dict[str, float], Any]:
    """The measurements, and our switch's counters (None for the other paths)."""
    with Lab() as lab:
        if name == "bridge":
            path = build_bridge(lab)
        elif name == "vswitch-offload":
            path = build_vswitch(lab, offload=True)
        elif name == "vswitch-plain":
            path = build_vswitch(lab, offload=False)
        elif name == "vde":
            path = build_vde(lab)
        elif name == "vswitch-mq2":  # multiqueue TAPs, all queues read by the one process
            path = build_vswitch(lab, offload=True, queues=2)
        else:
            raise ValueError(name)
        res = measure(lab, path, duration, trafgen)
        counters = None
        if name.startswith("vswitch"):
            proc = path.processes[0]
            lab.stop(proc)
            assert proc.stdout is not None
            counters = json.loads(proc.stdout.read() or b"null")
        return res, counters


# -- the switch process for our paths ---------------------------------------------------------


def serve(spec_json: str) -> int:
    import uvloop

    from vswitch.dataplane import DataPlane

    spec = json.loads(spec_json)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = loop.create_future()

        def on_signal() -> None:
            if not stop.done():
                stop.set_result(None)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        with DataPlane(loop) as dp:
            dp.add_switch("lan0", offload=spec["offload"])
            for t in spec["taps"]:
                dp.add_tap(
                    "lan0",
                    t["name"],
                    ifname=t["ifname"],
                    netns=t["netns"],
                    addresses=t["addresses"],
                    queues=t.get("queues", 1),
                )
            print("ready", flush=True)
            await stop
            print(json.dumps(dp.stats()), flush=True)

    uvloop.run(main())
    return 0


# -- report -------------------------------------------------------------------------------------


def table(results: dict[str, dict[str, float]]) -> str:
    base = results.get("bridge", {})
    paths = list(results)
    head = f"{'':24}" + "".join(f"{p:>22}" for p in paths)
    lines = [head]
    for key, label, unit in METRICS:
        row = f"{label + ' (' + unit + ')':24}"
        for p in paths:
            value = results[p].get(key)
            if value is None:
                row += f"{'-':>22}"
                continue
            ratio = f" ({value / base[key]:.2f}x)" if base.get(key) and p != "bridge" else ""
            row += f"{value:>13.3f}{ratio:>9}"
        lines.append(row)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd")
    srv = sub.add_parser("serve", help="run our switch (started by this script)")
    srv.add_argument("spec")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--repeat", type=int, default=1, help="runs per path (median)")
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    parser.add_argument("--no-trafgen", action="store_true")
    parser.add_argument("--out", default=RESULTS, help="directory for the JSON result")
    args = parser.parse_args(argv)
    if args.cmd == "serve":
        return serve(args.spec)
    if os.geteuid() != 0:
        print("throughput.py needs root (namespaces, TAPs)", file=sys.stderr)
        return 2
    if not 1 <= args.duration <= 60:
        parser.error("--duration must be 1..60 s")
    trafgen = not args.no_trafgen and bool(
        subprocess.run(["which", "trafgen"], capture_output=True).stdout
    )
    runs: dict[str, list[dict[str, float]]] = {p: [] for p in args.paths}
    counters: dict[str, Any] = {}
    load_before = os.getloadavg()
    for i in range(args.repeat):
        for p in args.paths:
            print(f"[{i + 1}/{args.repeat}] {p} ...", file=sys.stderr, flush=True)
            res, stats = run_path(p, args.duration, trafgen)
            runs[p].append(res)
            if stats is not None:
                counters[p] = stats
    results = {p: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for p, rs in runs.items()}
    print(table(results))
    base = results.get("bridge", {})
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": host_info(load_before),
        "duration_s": args.duration,
        "repeat": args.repeat,
        "results": results,
        "runs": runs,
        "switch_counters": counters,
        "ratio_to_bridge": {
            p: {k: v / base[k] for k, v in r.items() if base.get(k)}
            for p, r in results.items()
            if base
        },
    }
    write_report(args.out, "throughput", report)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
