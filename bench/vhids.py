"""Many vhids: what 255 carp interfaces cost a node, and one advertisement's cost in the core.

Two `vswitch run` nodes (the gateway lab: a LAN bridge, one client) share 255 carp interfaces
carp0..carp254 (vhid 1..255, advbase 1, IPv6 virtual addresses 2001:db8::100:N/64, pass set); gwa
is preferred. Once gwa is MASTER of all 255, the CPU time of each node's process (utime + stime
from /proc/PID/stat) is sampled over a window and given as a share of one core, with its RSS.
Beside it, in the same run, the sans-IO core alone: the cost of sending one advertisement
(`CarpHost.handle_timer` for all 255 carpnodes, per advertisement) and of receiving one (a valid
advertisement from the peer through `CarpHost.receive`, HMAC verified), in microseconds.

    sudo PYTHONPATH=. .venv/bin/python bench/vhids.py [--quick] [--window S] [--json DIR]
"""

import argparse
import os
import sys
import time
from dataclasses import replace
from ipaddress import IPv6Address, ip_interface
from typing import Any

from report import host_info, text_table, write_report

from carp.actions import Transmit
from carp.constants import Balancing
from carp.host import CarpHost
from carp.params import CarpDev, CarpIfParams, CarpNodeParams, Sysctls
from vswitch.lab.gateway import GatewayLab, GatewaySpec
from vswitch.lab.netns import preflight
from vswitch.lab.procstat import cpu_ticks, rss_kib

VHIDS = 255
PASS = "vhids-bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def vip(vhid: int) -> str:
    return f"2001:db8::100:{vhid:x}/64"


def specs() -> list[GatewaySpec]:
    out = []
    for index, name in enumerate(("gwa", "gwb")):
        carp = {
            f"carp{vhid - 1}": {
                "carpdev": "lan0",
                "addresses": [vip(vhid)],
                "vhid": vhid,
                "advskew": 100 * index,
                "pass": PASS,
            }
            for vhid in range(1, VHIDS + 1)
        }
        out.append(GatewaySpec(name, carp, log=3))
    return out


def cpu_seconds(pid: int) -> float:
    return sum(cpu_ticks([pid])) / CLK_TCK  # utime + stime


def rss_mib(pid: int) -> float:
    kib = rss_kib(pid)
    return float("nan") if kib is None else kib / 1024


def node_figures(lab: GatewayLab, window: float) -> dict[str, dict[str, float]]:
    pids = {gw.name: gw.proc.pid for gw in lab.gateways if gw.proc is not None}
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    started = time.monotonic()
    time.sleep(window)  # a bench samples over a window; nothing here waits for a condition
    spent = time.monotonic() - started
    return {
        name: {
            "cpu_percent": 100 * (cpu_seconds(pid) - before[name]) / spent,
            "rss_mib": rss_mib(pid),
        }
        for name, pid in pids.items()
    }


def all_master(lab: GatewayLab) -> bool:
    states = lab.states(lab.gateways[0])
    return len(states) == VHIDS and set(states.values()) == {"MASTER"}


# -- the core alone ---------------------------------------------------------------------------


def core_params(advskew: int) -> list[CarpIfParams]:
    return [
        CarpIfParams(
            f"carp{vhid - 1}",
            "lan0",
            (ip_interface(vip(vhid)),),
            (CarpNodeParams(vhid, advskew),),
            passphrase=PASS.encode(),
            balancing=Balancing.NONE,
        )
        for vhid in range(1, VHIDS + 1)
    ]


def core_host(index: int, advskew: int) -> CarpHost:
    mac = bytes((2, 0, 0, 0, 0, index))
    dev = CarpDev("lan0", mac, None, IPv6Address(f"fe80::{index}"))
    return CarpHost(Sysctls(preempt=True), core_params(advskew), {"lan0": dev}, lambda: b"\x01" * 8)


def core_costs(rounds: int) -> dict[str, float]:
    """Microseconds per advertisement sent (timer path) and received (parse, HMAC, election)."""
    master, backup = core_host(1, 0), core_host(2, 100)
    master.start(0.0)
    backup.start(0.0)
    now = 10.0  # past master-down: every carpnode of `master` is MASTER after one timer
    master.handle_timer(now)
    sent: list[bytes] = []
    started = time.perf_counter()
    adverts = 0
    for _ in range(rounds):
        now += 1.01
        for action in master.handle_timer(now):
            if isinstance(action, Transmit):
                adverts += 1
                if len(sent) < VHIDS:
                    sent.append(action.frame[14:])  # the IP packet
    send_us = 1e6 * (time.perf_counter() - started) / max(adverts, 1)
    started = time.perf_counter()
    received = 0
    for _ in range(rounds):
        now += 1.01
        for packet in sent:
            backup.receive(now, "lan0", packet)
            received += 1
    receive_us = 1e6 * (time.perf_counter() - started) / max(received, 1)
    accepted = backup.stats.as_dict()["ipackets6"]
    return {
        "send_us": send_us,
        "receive_us": receive_us,
        "adverts": adverts,
        "accepted": accepted,
        "event_us": spread_event_us(rounds),
    }


def spread_event_us(rounds: int) -> float:
    """Microseconds per timer event as a node drives the core (get_timer, handle_timer at that
    deadline, get_timer again) when the 255 interfaces' timers are spread over the interval,
    as after failovers at different times: one event per advertisement, not one per second
    for all (advskew 0..254 gives each interface its own interval)."""
    params = [
        replace(p, carpnodes=(CarpNodeParams(p.carpnodes[0].vhid, i),))
        for i, p in enumerate(core_params(0))
    ]
    dev = CarpDev("lan0", bytes((2, 0, 0, 0, 0, 1)), None, IPv6Address("fe80::1"))
    host = CarpHost(Sysctls(preempt=True), params, {"lan0": dev}, lambda: b"\x01" * 8)
    host.start(0.0)
    host.handle_timer(10.0)  # past master-down: every carpnode MASTER
    events = 0
    started = time.perf_counter()
    end = 10.0 + rounds
    deadline = host.get_timer()
    while deadline is not None and deadline < end:
        host.handle_timer(deadline)
        deadline = host.get_timer()
        events += 1
    return 1e6 * (time.perf_counter() - started) / max(events, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 5 s window, fewer core rounds")
    parser.add_argument("--window", type=float, default=30.0, help="seconds of CPU sampling")
    parser.add_argument("--json", default="bench/results", help="directory for the JSON report")
    args = parser.parse_args(argv)
    problem = preflight("bench/vhids.py")
    if problem:
        print(f"vhids: {problem}", file=sys.stderr)
        return 2
    window = 5.0 if args.quick else args.window
    load = os.getloadavg()
    core = core_costs(20 if args.quick else 200)
    with GatewayLab(specs(), clients=1, upstream=False) as lab:
        gwa, gwb = lab.gateways
        lab.start(gwa, wait=60.0)
        lab.start(gwb, wait=60.0)
        took = lab.wait_for(lambda: all_master(lab), 60.0, gwa)
        nodes = node_figures(lab, window)
    report: dict[str, Any] = {
        "vhids": VHIDS,
        "window_s": window,
        "election_s": took,
        "nodes": nodes,
        "core": core,
        "host": host_info(load),
    }
    print(f"255 vhids at advbase 1, {window:g} s window (election took {took:.1f} s)")
    rows = [
        (
            f"{name} {'master' if name == 'gwa' else 'backup'}",
            f"{figures['cpu_percent']:.2f}",
            f"{figures['rss_mib']:.1f}",
        )
        for name, figures in nodes.items()
    ]
    print(text_table(("", "CPU % of a core", "RSS MiB"), rows, rule=False))
    print(
        f"core: {core['send_us']:.1f} us per advertisement sent, "
        f"{core['receive_us']:.1f} us per advertisement received "
        f"({core['accepted']} accepted); {core['event_us']:.1f} us per timer event with the "
        "255 timers spread over the interval"
    )
    write_report(args.json, "vhids", report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
