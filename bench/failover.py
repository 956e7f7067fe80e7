#!/usr/bin/env python3
"""Failover time after `kill -9` of the master: vswitch against ucarp in the same gateway lab.

    .venv/bin/python bench/failover.py [--runs 7] [--scenarios ...] [--seed N] [--load 60]
        [--load-skews 1 2] [--plot FILE.svg] [--quick]   (root)

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

False takeovers: with advbase 0 the backup's master-down is a few milliseconds (advskew 1:
3/256 s = 11.7 ms), so a master too busy to advertise on time loses its place while alive. For
each `--load-skews` advskew of the backup, the pair runs with advbase 0 while a client sends 4
TCP streams (iperf3 -P 4, `--load` s) through the master to the upstream server, and both nodes'
events (control socket) count how often the backup became MASTER. `--plot` draws the first
kill of each scenario and each loaded run as timelines (vswitch/lab/timeline.py).
"""

import argparse
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from report import host_info, text_table, write_report

from carp.timing import interval_us, master_down_us, seconds
from vswitch.lab import timeline
from vswitch.lab.gateway import LAN_VIP, UPSTREAM, GatewayLab, GatewaySpec
from vswitch.lab.netns import preflight
from vswitch.lab.probe import EventWatch, NodeEvent, PingProbe, largest_gap
from vswitch.lab.ucarp import UcarpNode

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
PASSWORD = "secret"
VHID = 1
RUN_TIMEOUT = 20.0  # seconds for one takeover / recovery / restore to happen at all
MAX_RUNS = 50
MAX_LOAD = 600  # seconds of one loaded run
LOAD_STREAMS = 4


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

    @property
    def title(self) -> str:
        return f"{self.label}, advskew {self.skew_master}/{self.skew_backup}"

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
    "vswitch-0-1": Scenario("vswitch", 0, 0, 1),  # master-down 3/256 s = 11.7 ms
}


@dataclass
class Run:
    phase: float  # pause between a steady master and the kill
    takeover: float | None
    outage: float | None
    lost: int | None


@dataclass
class Trace:
    """One run for its picture: seconds after the kill."""

    replies: list[float]
    backup_changes: list[tuple[float, str]]


@dataclass
class LoadRun:
    """One loaded run with advbase 0: how often the backup took over while the master lived."""

    skew_master: int
    skew_backup: int
    master_down: float
    seconds: float
    gbps: float | None  # what the 4 TCP streams carried through the master
    false_takeovers: int  # the backup became MASTER (the master never died)
    master_lost: int  # the master left MASTER
    backup_master_s: float  # time the backup spent as MASTER
    master_alive: bool
    error: str | None = None
    changes: dict[str, list[tuple[float, str]]] = field(default_factory=dict)


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
        self.names = (f"{self.master.name} carp0", f"{self.backup.name} carp0")
        self.changes: list[tuple[float, str]] = []  # the backup's, of the last run

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
        # the first MASTER after the kill: with advbase 0 a busy master may lose its place
        # before it (a false takeover, counted by the loaded runs), which is not this one
        event = self._watch.first(
            lambda e: is_change(e, "MASTER") and float(e.get("monotonic", 0.0)) >= mono,
            RUN_TIMEOUT,
        )
        self.changes = changes(self._watch.events, mono)
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
        self.names = ("ua", "ub")
        self.changes: list[tuple[float, str]] = []  # the backup's, of the last run

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
                self.changes = [
                    (t - wall, s.upper()) for s, t in self.backup.states() if t > wall - 5
                ]
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


def is_change(event: dict[str, Any], state: str | None = None, carpif: str = "carp0") -> bool:
    """A carpnode state change of `carpif` (into `state`, if given) in a node's event stream."""
    return (
        event.get("type") == "state"
        and event.get("carpif") == carpif
        and (state is None or event.get("new") == state)
    )


def changes(events: list[NodeEvent], since: float) -> list[tuple[float, str]]:
    """carp0's state changes as (seconds after the monotonic time `since`, new state)."""
    return [(e.monotonic - since, str(e.data["new"])) for e in list(events) if is_change(e.data)]


def one_run(
    lab: GatewayLab,
    pair: VswitchPair | UcarpPair,
    sc: Scenario,
    phase: float,
    interval: float,
) -> tuple[Run, Trace]:
    client = lab.clients[0]
    with PingProbe(lab.lab, client, LAN_VIP, interval=interval, deadline=4 * RUN_TIMEOUT) as probe:
        lab.wait_for(lambda: len(probe.replies()) >= 10, RUN_TIMEOUT)
        pair.arm()
        time.sleep(phase)  # a random point of the master's advertisement cycle
        wall, mono = time.time(), time.monotonic()
        pair.kill_master()
        takeover = pair.takeover(wall, mono)
        resumed = probe.wait_reply_after(wall + (takeover or 0.0), RUN_TIMEOUT)
        replies = probe.stop()
        gap = largest_gap(replies, wall) if resumed else None
    run = Run(
        round(phase, 4),
        None if takeover is None else round(takeover, 4),
        None if gap is None else round(gap.seconds, 4),
        None if gap is None else gap.lost,
    )
    return run, Trace([r.at - wall for r in replies], list(pair.changes))


def kill_phases(rng: random.Random, runs: int, interval: float) -> list[float]:
    """One random pause per run, stratified over the advertisement interval and shuffled, so
    that a few runs already cover the whole cycle of the master's timer."""
    phases = [(i + rng.random()) * interval / runs for i in range(runs)]
    rng.shuffle(phases)
    return phases


def run_scenario(
    lab: GatewayLab,
    key: str,
    runs: int,
    rng: random.Random,
    interval: float,
    pictures: list[timeline.Figure],
) -> list[Run]:
    """`runs` kills of the master; the first one drawn into `pictures`."""
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
            run, trace = one_run(lab, pair, sc, phases[i], interval)
            results.append(run)
            if i == 0:
                pictures.append(picture(sc, pair.names, trace, run))
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


def picture(sc: Scenario, names: tuple[str, str], trace: Trace, run: Run) -> timeline.Figure:
    return timeline.failover(
        f"{sc.title}: kill -9 of the master, takeover {fmt(run.takeover)}, "
        f"client outage {fmt(run.outage)}",
        master=names[0],
        backup=names[1],
        backup_changes=trace.backup_changes,
        replies=trace.replies,
        master_down=sc.master_down(),
        master_interval=sc.master_interval(),
    )


# -- false takeovers under load ----------------------------------------------------------------


def route_upstream_via(lab: GatewayLab, gw_index: int) -> None:
    """The upstream server returns the clients' traffic through the master's WAN host address:
    the loaded runs configure carp on the LAN only, so there is no WAN virtual address."""
    lab.lab.run(
        lab.up, ["ip", "route", "replace", "192.0.2.0/24", "via", f"198.51.100.{10 + gw_index}"]
    )


def iperf_server(lab: GatewayLab) -> subprocess.Popen[bytes]:
    server = lab.lab.spawn(
        lab.up,
        ["iperf3", "-s", "-B", UPSTREAM],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    lab.wait_for(lambda: ":5201 " in lab.lab.run(lab.up, ["ss", "-tln"]).stdout, 10)
    return server


def load_run(lab: GatewayLab, skew_backup: int, duration: float) -> LoadRun:
    """advbase 0, advskew 0/`skew_backup`: 4 TCP streams from client c1 to the upstream server
    through the master for `duration` s, with both nodes' events recorded."""
    sc = Scenario("vswitch", 0, 0, skew_backup)
    pair = VswitchPair(lab, sc)
    result = LoadRun(0, skew_backup, round(sc.master_down(), 4), duration, None, 0, 0, 0.0, False)
    try:
        pair.start()
        route_upstream_via(lab, pair.master.index)
        if not lab.ping(1, UPSTREAM):
            raise RuntimeError(f"the client cannot reach {UPSTREAM} through the master")
        with contextlib.ExitStack() as stack:
            watches = [
                stack.enter_context(EventWatch(gw.socket_path)) for gw in (pair.master, pair.backup)
            ]
            start = time.monotonic()
            argv = ["iperf3", "-c", UPSTREAM, "-P", str(LOAD_STREAMS), "-t", f"{duration:g}"]
            out = lab.lab.run(
                lab.clients[0], [*argv, "-J"], timeout=duration + 30, check=False
            ).stdout
            # a takeover near the end settles (the master preempts back) before counting
            with contextlib.suppress(TimeoutError):
                pair.wait_steady()
            found = {
                gw.name: changes(w.events, start)
                for gw, w in zip((pair.master, pair.backup), watches, strict=True)
            }
        result.changes = found
        master, backup = found[pair.master.name], found[pair.backup.name]
        result.false_takeovers = sum(1 for _, st in backup if st == "MASTER")
        result.master_lost = sum(1 for _, st in master if st != "MASTER")
        result.backup_master_s = round(time_in(backup, "MASTER", time.monotonic() - start), 4)
        result.master_alive = pair.master.proc is not None and pair.master.proc.poll() is None
        result.gbps = tcp_gbps(out)
        if result.gbps is None:
            result.error = f"iperf3: {out.strip()[-300:] or 'no output'}"
    except (RuntimeError, TimeoutError, subprocess.TimeoutExpired) as exc:
        result.error = str(exc).splitlines()[0]
    finally:
        pair.stop()
    return result


def tcp_gbps(iperf_json: str) -> float | None:
    try:
        data = json.loads(iperf_json)
        return round(float(data["end"]["sum_received"]["bits_per_second"]) / 1e9, 3)
    except (ValueError, KeyError, TypeError):
        return None


def time_in(found: list[tuple[float, str]], state: str, end: float) -> float:
    """Seconds spent in `state` by a node whose changes are `found`, up to `end`."""
    total = 0.0
    if not found:
        return 0.0
    until = [at for at, _ in found[1:]] + [end]
    for (at, st), later in zip(found, until, strict=True):
        if st == state:
            total += max(0.0, later - at)
    return total


def load_picture(run: LoadRun, names: tuple[str, str]) -> timeline.Figure:
    lanes = [
        timeline.Lane(
            f"{name} carp0", timeline.bands([(0.0, first), *run.changes.get(name, [])], run.seconds)
        )
        for name, first in zip(names, ("MASTER", "BACKUP"), strict=True)
    ]
    return timeline.timeline(
        f"vswitch advbase 0, advskew {run.skew_master}/{run.skew_backup} (master-down "
        f"{run.master_down * 1000:.1f} ms) under {LOAD_STREAMS} TCP streams: "
        f"{run.false_takeovers} false takeovers",
        lanes,
        start=0.0,
        end=run.seconds,
        unit="seconds of load",
    )


def load_table(runs: list[LoadRun]) -> str:
    head = [
        "advskew m/b",
        "master-down",
        "seconds",
        "TCP Gbit/s",
        "false takeovers",
        "backup MASTER for",
        "master alive",
    ]
    rows: list[list[str]] = []
    for r in runs:
        rows.append(
            [
                f"{r.skew_master}/{r.skew_backup}",
                f"{r.master_down * 1000:.1f} ms",
                f"{r.seconds:g}",
                "-" if r.gbps is None else f"{r.gbps:.2f}",
                str(r.false_takeovers),
                f"{r.backup_master_s:.3f} s",
                ("yes" if r.master_alive else "NO") + (f" ({r.error})" if r.error else ""),
            ]
        )
    title = f"False takeovers with advbase 0 under {LOAD_STREAMS} TCP streams through the master"
    return title + "\n" + text_table(head, rows)


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
            summary[what]["vs_ucarp"] = round(mine / theirs, 4) if mine and theirs else None
    return out


def table(summary: dict[str, dict[str, Any]]) -> str:
    def cell(s: dict[str, Any]) -> str:
        if s["median"] is None:
            return "failed"
        ratio = f" ({s['vs_ucarp']:.3g}x)" if s["vs_ucarp"] is not None else ""
        return f"{s['median']:.3f} [{s['min']:.3f}-{s['max']:.3f}]{ratio}"

    head = ["", "advskew m/b", "master-down", "takeover: median [min-max] (vs ucarp)", "outage"]
    rows: list[list[str]] = []
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
    return text_table(head, rows) + "\n(seconds)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs", type=int, default=None, help=f"kills per scenario (1..{MAX_RUNS}; 7, quick 2)"
    )
    parser.add_argument("--scenarios", nargs="+", choices=list(SCENARIOS), default=list(SCENARIOS))
    parser.add_argument("--interval", type=float, default=0.005, help="client ping interval, s")
    parser.add_argument("--seed", type=int, default=None, help="seed for the kill phases")
    parser.add_argument(
        "--load",
        type=float,
        default=None,
        help="seconds of each loaded run counting false takeovers (0: none; 60, quick 10)",
    )
    parser.add_argument(
        "--load-skews",
        type=int,
        nargs="+",
        default=[1, 2],
        help="the backup's advskew in the loaded runs (the master's is 0, advbase 0)",
    )
    parser.add_argument(
        "--workers", type=int, default=0, help="[node] workers of both vswitch nodes (0..16)"
    )
    parser.add_argument(
        "--rt-priority",
        type=int,
        default=None,
        help="[node] rt_priority of both vswitch nodes (1..99; meant with --workers)",
    )
    parser.add_argument("--plot", metavar="FILE", help="draw timelines into FILE (SVG)")
    parser.add_argument(
        "--quick", action="store_true", help="a short check: 2 kills per scenario, 10 s loads"
    )
    parser.add_argument("--out", default=RESULTS, help="directory for the JSON result")
    args = parser.parse_args(argv)
    runs_each = args.runs if args.runs is not None else (2 if args.quick else 7)
    load = args.load if args.load is not None else (10.0 if args.quick else 60.0)
    if not 1 <= runs_each <= MAX_RUNS:
        parser.error(f"--runs must be 1..{MAX_RUNS}")
    if not 0.002 <= args.interval <= 0.2:
        parser.error("--interval must be 0.002..0.2 s")
    if not (load == 0 or 1 <= load <= MAX_LOAD):
        parser.error(f"--load must be 0 or 1..{MAX_LOAD} s")
    if not all(1 <= skew <= 254 for skew in args.load_skews):
        parser.error("--load-skews must be 1..254 (above the master's 0)")
    tools = ["ip", "ping", "ucarp", *(["iperf3"] if load else [])]
    reason = preflight("failover.py", tools)
    if reason is not None:
        print(reason, file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)
    load_before = os.getloadavg()
    started = time.monotonic()
    runs: dict[str, list[Run]] = {}
    loaded: list[LoadRun] = []
    pictures: list[timeline.Figure] = []
    if not 0 <= args.workers <= 16:
        parser.error("--workers must be 0..16")
    if args.rt_priority is not None and not 1 <= args.rt_priority <= 99:
        parser.error("--rt-priority must be 1..99")
    specs = [
        GatewaySpec(n, {}, workers=args.workers, rt_priority=args.rt_priority)
        for n in ("gwa", "gwb")
    ]
    with GatewayLab(specs, clients=1, upstream=True, ipv6=False) as lab:
        for key in dict.fromkeys(args.scenarios):
            print(f"{SCENARIOS[key].title} ...", file=sys.stderr, flush=True)
            runs[key] = run_scenario(lab, key, runs_each, rng, args.interval, pictures)
        if load:
            server = iperf_server(lab)
            try:
                for skew in dict.fromkeys(args.load_skews):
                    print(
                        f"advbase 0, advskew 0/{skew}: {LOAD_STREAMS} TCP streams for {load:g} s",
                        file=sys.stderr,
                        flush=True,
                    )
                    loaded.append(load_run(lab, skew, load))
                    names = (lab.gateways[0].name, lab.gateways[1].name)
                    pictures.append(load_picture(loaded[-1], names))
            finally:
                lab.lab.stop(server)
    summary = summarise(runs)
    print(f"Failover after kill -9 of the master, {runs_each} runs each, random phase")
    print(table(summary))
    fast = summary.get("vswitch-0-1")
    if fast is not None and fast["takeover"]["median"] is not None:
        print(
            f"kill -9 takeover with advbase 0, advskew 0/1: median {fast['takeover']['median']:.4f}"
            f" s (master-down {fast['master_down']:.4f} s)"
        )
    if loaded:
        print(load_table(loaded))
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": host_info(load_before),
        "seed": seed,
        "runs_per_scenario": runs_each,
        "probe_interval_s": args.interval,
        "workers": args.workers,
        "rt_priority": args.rt_priority,
        "seconds": round(time.monotonic() - started, 1),
        "summary": summary,
        "runs": {k: [asdict(r) for r in rs] for k, rs in runs.items()},
        "false_takeovers": [asdict(r) for r in loaded],
    }
    write_report(args.out, "failover", report)
    if args.plot:
        timeline.write(args.plot, pictures)
        print(f"written {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
