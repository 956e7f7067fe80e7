#!/usr/bin/env python3
"""Failover time after `kill -9` of the master: vswitch against ucarp in the same gateway lab.

    .venv/bin/python bench/failover.py [--runs 7] [--scenarios ...] [--seed N]   (root)

One lab (vswitch/lab/gateway.py: a LAN bridge, a client, two vswitch gateway namespaces) gets two
more namespaces for a pair of ucarp 1.5.2 nodes (Debian) on the same bridge. Every pair serves
the same VIP 192.0.2.1 with vhid 1 and the same pass, master advskew lower than backup's, preempt
on; the pairs take turns. A run: the master is steady, the client pings the VIP every
`--interval` s, a random pause of up to one advertisement interval (stratified over the runs)
puts the kill at a random phase of the master's advertisement timer, then SIGKILL:
- vswitch: the process dies and its TAPs with it (the node is gone from the wire);
- ucarp: ucarp dies, and its namespace's link goes down at once (otherwise the kernel would
  keep answering on the VIP that ucarp's up script left on the interface).
Measured: the takeover time (kill -> the backup is MASTER: vswitch's event stream, on the same
monotonic clock; ucarp's up script logs `date +%s.%N`) and the client-visible outage (the
longest silence between echo replies). Then the master comes back and preempts, and the next
run starts. ucarp's up script adds the VIP and sends a gratuitous ARP (an AF_PACKET broadcast,
in the background: vswitch/lab/ucarp.py); ucarp itself sends one more after the script. Its
down script removes the VIP.

Master-down differs by design: vswitch follows current OpenBSD, 3 x (advbase + advskew/256);
ucarp keeps the 2003 formula, 3 x advbase + advskew/256, and, as a BACKUP, checks it only when
its poll() returns (a packet, or advbase + advskew/256 s of silence), so it takes over up to
that much later. Prints a table with the ratios (vswitch / ucarp, advbase 1) and writes JSON
under bench/results/. Every run is bounded in time; the lab is removed at the end, also on
errors and Ctrl-C.
"""

import argparse
import contextlib
import os
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from report import host_info, write_report

from carp.timing import interval_us, master_down_us, seconds
from vswitch.lab.gateway import LAN_VIP, GatewayLab, GatewaySpec
from vswitch.lab.netns import preflight
from vswitch.lab.probe import EventWatch, PingProbe, largest_gap
from vswitch.lab.ucarp import UcarpNode

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
PASSWORD = "secret"
VHID = 1
RUN_TIMEOUT = 20.0  # seconds for one takeover / recovery / restore to happen at all
MAX_RUNS = 50


@dataclass(frozen=True)
class Scenario:
    impl: str  # "vswitch" | "ucarp"
    advbase: int
    skew_master: int
    skew_backup: int

    @property
    def label(self) -> str:
        name = "ucarp 1.5.2" if self.impl == "ucarp" else "vswitch"
        return f"{name}, advbase {self.advbase}"

    def master_interval(self) -> float:
        return seconds(interval_us(self.advbase, self.skew_master))

    def master_down(self) -> float:
        if self.impl == "ucarp":  # ucarp carp.c carp_setrun: dead_ratio * advbase + advskew/256
            return 3 * self.advbase + self.skew_backup / 256
        return seconds(master_down_us(self.advbase, self.skew_backup))


SCENARIOS = {
    "vswitch-1": Scenario("vswitch", 1, 0, 100),
    "ucarp-1": Scenario("ucarp", 1, 0, 100),
    "vswitch-0": Scenario("vswitch", 0, 0, 20),
}


@dataclass
class Run:
    phase: float  # pause between a steady master and the kill
    takeover: float | None
    outage: float | None
    lost: int | None


# -- the pairs ---------------------------------------------------------------------------------


class VswitchPair:
    def __init__(self, lab: GatewayLab, sc: Scenario) -> None:
        self.lab = lab
        self.master, self.backup = lab.gateways
        for gw, skew in ((self.master, sc.skew_master), (self.backup, sc.skew_backup)):
            carp0 = {"carpdev": "lan0", "addresses": [f"{LAN_VIP}/24"], "vhid": VHID}
            carp0 |= {"advbase": sc.advbase, "advskew": skew, "pass": PASSWORD}
            lab.reconfigure(gw, {"carp0": carp0})
        self._watch: EventWatch | None = None

    def start(self) -> None:
        self.lab.start(self.master)
        self.lab.start(self.backup)
        self.wait_steady()

    def wait_steady(self) -> None:
        self.lab.wait_for(
            lambda: (
                self.lab.state(self.master) == "MASTER" and self.lab.state(self.backup) == "BACKUP"
            ),
            RUN_TIMEOUT,
        )

    def arm(self) -> None:
        self._watch = EventWatch(self.backup.socket_path)

    def kill_master(self) -> None:
        self.lab.kill(self.master)

    def takeover(self, wall: float, mono: float) -> float | None:
        assert self._watch is not None
        event = self._watch.became("carp0", "MASTER", RUN_TIMEOUT)
        self._watch.close()
        self._watch = None
        return None if event is None else event.monotonic - mono

    def restore(self) -> None:
        self.lab.start(self.master)
        self.wait_steady()

    def stop(self) -> None:
        if self._watch is not None:
            self._watch.close()
        for gw in (self.master, self.backup):
            if gw.proc is not None:
                self.lab.stop(gw)


class UcarpPair:
    def __init__(self, lab: GatewayLab, sc: Scenario) -> None:
        self.lab = lab
        self.nodes: list[UcarpNode] = [
            lab.add_ucarp(
                name,
                f"192.0.2.{21 + i}",
                vhid=VHID,
                password=PASSWORD,
                advbase=sc.advbase,
                advskew=skew,
                preempt=True,
                garp=True,
            )
            for i, (name, skew) in enumerate((("ua", sc.skew_master), ("ub", sc.skew_backup)))
        ]

    @property
    def master(self) -> UcarpNode:
        return self.nodes[0]

    @property
    def backup(self) -> UcarpNode:
        return self.nodes[1]

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        self.wait_steady()

    def wait_steady(self) -> None:
        self.lab.wait_for(
            lambda: self.master.state() == "master" and self.backup.state() == "backup",
            RUN_TIMEOUT,
        )

    def arm(self) -> None:
        pass

    def kill_master(self) -> None:
        # the host is gone: its kernel must stop answering on the VIP the up script added
        self.master.kill(host_down=True)

    def takeover(self, wall: float, mono: float) -> float | None:
        end = time.monotonic() + RUN_TIMEOUT
        while time.monotonic() < end:
            taken = [t for s, t in self.backup.states() if s == "master" and t > wall]
            if taken:
                return taken[0] - wall
            time.sleep(0.02)
        return None

    def restore(self) -> None:
        node = self.master
        # a rebooted host: no VIP left on its interface, link up, ucarp starts as BACKUP
        node.drop_vip()
        self.lab.lab.link(node.netns, node.ifname, up=True)
        start = time.time()
        node.start()
        self.lab.wait_for(
            lambda: (
                any(s == "master" and t > start for s, t in node.states())
                and self.backup.state() == "backup"
            ),
            RUN_TIMEOUT,
        )

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
            node.drop_vip()


# -- measuring ---------------------------------------------------------------------------------


def one_run(
    lab: GatewayLab,
    pair: VswitchPair | UcarpPair,
    sc: Scenario,
    phase: float,
    interval: float,
) -> Run:
    client = lab.clients[0]
    with PingProbe(lab.lab, client, LAN_VIP, interval=interval, deadline=4 * RUN_TIMEOUT) as probe:
        lab.wait_for(lambda: len(probe.replies()) >= 10, RUN_TIMEOUT)
        pair.arm()
        time.sleep(phase)  # a random point of the master's advertisement cycle
        wall, mono = time.time(), time.monotonic()
        pair.kill_master()
        takeover = pair.takeover(wall, mono)
        resumed = probe.wait_reply_after(wall + (takeover or 0.0), RUN_TIMEOUT)
        gap = largest_gap(probe.stop(), wall) if resumed else None
    return Run(
        round(phase, 4),
        None if takeover is None else round(takeover, 4),
        None if gap is None else round(gap.seconds, 4),
        None if gap is None else gap.lost,
    )


def kill_phases(rng: random.Random, runs: int, interval: float) -> list[float]:
    """One random pause per run, stratified over the advertisement interval and shuffled, so
    that a few runs already cover the whole cycle of the master's timer."""
    phases = [(i + rng.random()) * interval / runs for i in range(runs)]
    rng.shuffle(phases)
    return phases


def run_scenario(
    lab: GatewayLab, key: str, runs: int, rng: random.Random, interval: float
) -> list[Run]:
    sc = SCENARIOS[key]
    phases = kill_phases(rng, runs, sc.master_interval())
    for ns in lab.clients:  # the previous pair's MAC for the VIP must not linger
        lab.lab.run(ns, ["ip", "neigh", "flush", "dev", "eth0"])
    pair: VswitchPair | UcarpPair
    pair = VswitchPair(lab, sc) if sc.impl == "vswitch" else UcarpPair(lab, sc)
    results = []
    try:
        pair.start()
        if not lab.ping(1, LAN_VIP):
            raise RuntimeError(f"{key}: the client cannot reach {LAN_VIP}")
        for i in range(runs):
            run = one_run(lab, pair, sc, phases[i], interval)
            results.append(run)
            print(
                f"  [{key} {i + 1}/{runs}] phase {run.phase:.3f} s, takeover {fmt(run.takeover)}, "
                f"outage {fmt(run.outage)} ({run.lost} lost)",
                file=sys.stderr,
                flush=True,
            )
            pair.restore()
            lab.wait_for(lambda: lab.ping(1, LAN_VIP, deadline=2), RUN_TIMEOUT)
    finally:
        pair.stop()
    return results


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


def stats(values: list[float | None]) -> dict[str, float | int | None]:
    ok = [v for v in values if v is not None]
    if not ok:
        return {"median": None, "min": None, "max": None, "failed": len(values)}
    return {
        "median": round(statistics.median(ok), 4),
        "min": min(ok),
        "max": max(ok),
        "failed": len(values) - len(ok),
    }


def summarise(runs: dict[str, list[Run]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key, rs in runs.items():
        sc = SCENARIOS[key]
        out[key] = {
            "scenario": asdict(sc),
            "master_down": round(sc.master_down(), 4),
            "takeover": stats([r.takeover for r in rs]),
            "outage": stats([r.outage for r in rs]),
        }
    ucarp = out.get("ucarp-1")
    for summary in out.values():
        for what in ("takeover", "outage"):
            mine, theirs = summary[what]["median"], ucarp[what]["median"] if ucarp else None
            summary[what]["vs_ucarp"] = round(mine / theirs, 3) if mine and theirs else None
    return out


def table(summary: dict[str, dict[str, Any]]) -> str:
    def cell(s: dict[str, Any]) -> str:
        if s["median"] is None:
            return "failed"
        ratio = f" ({s['vs_ucarp']:.2f}x)" if s["vs_ucarp"] is not None else ""
        return f"{s['median']:.3f} [{s['min']:.3f}-{s['max']:.3f}]{ratio}"

    head = ["", "advskew m/b", "master-down", "takeover: median [min-max] (vs ucarp)", "outage"]
    rows = [head]
    for key, s in summary.items():
        sc = SCENARIOS[key]
        rows.append(
            [
                SCENARIOS[key].label,
                f"{sc.skew_master}/{sc.skew_backup}",
                f"{s['master_down']:.3f}",
                cell(s["takeover"]),
                cell(s["outage"]),
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]]) + "\n(seconds)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help=f"kills per scenario (1..{MAX_RUNS})")
    parser.add_argument("--scenarios", nargs="+", choices=list(SCENARIOS), default=list(SCENARIOS))
    parser.add_argument("--interval", type=float, default=0.005, help="client ping interval, s")
    parser.add_argument("--seed", type=int, default=None, help="seed for the kill phases")
    parser.add_argument("--out", default=RESULTS, help="directory for the JSON result")
    args = parser.parse_args(argv)
    reason = preflight("failover.py", ("ip", "ping", "ucarp"))
    if reason is not None:
        print(reason, file=sys.stderr)
        return 2
    if not 1 <= args.runs <= MAX_RUNS:
        parser.error(f"--runs must be 1..{MAX_RUNS}")
    if not 0.002 <= args.interval <= 0.2:
        parser.error("--interval must be 0.002..0.2 s")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)
    load_before = os.getloadavg()
    started = time.monotonic()
    runs: dict[str, list[Run]] = {}
    specs = [GatewaySpec("gwa", {}), GatewaySpec("gwb", {})]
    with GatewayLab(specs, clients=1, upstream=False, ipv6=False) as lab:
        for key in dict.fromkeys(args.scenarios):
            print(f"{SCENARIOS[key].label} ...", file=sys.stderr, flush=True)
            runs[key] = run_scenario(lab, key, args.runs, rng, args.interval)
    summary = summarise(runs)
    print(f"Failover after kill -9 of the master, {args.runs} runs each, random phase")
    print(table(summary))
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": host_info(load_before),
        "seed": seed,
        "runs_per_scenario": args.runs,
        "probe_interval_s": args.interval,
        "seconds": round(time.monotonic() - started, 1),
        "summary": summary,
        "runs": {k: [asdict(r) for r in rs] for k, rs in runs.items()},
    }
    write_report(args.out, "failover", report)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
