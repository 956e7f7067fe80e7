#!/usr/bin/env python3
"""Chaos against three nodes on one segment: after every fault heals there is exactly one
master again within master-down + 1 s, the client reaches the virtual address, and no node
exits unless it was killed.

    .venv/bin/python bench/chaos.py [--faults 100] [--seed N]   (root)
    .venv/bin/python bench/chaos.py --quick                     (10 faults)

One gateway lab (vswitch/lab/gateway.py: a LAN bridge, one client) with three `vswitch run`
nodes, gwa / gwb / gwc, carp0 with 192.0.2.1/24, vhid 1, advbase 0 and advskew 20 / 40 / 60
(master-down 3 x advskew/256: 0.23 / 0.47 / 0.70 s), preempt on, so gwa is the master when all
is well. A seeded RNG picks each fault's kind, its node (the current master half of the time,
else any node) and how long it lasts (0.3-1.2 s):

- kill: SIGKILL, then the node is started again (healed when its control socket answers; a
  transition it made before its event stream existed is put back from its status's `since`);
- stop: SIGSTOP, then SIGCONT;
- link: the node's segment veth ("lan" in its namespace) down, then up;
- partition: the node's bridge port in "seg" set to STP state disabled (`bridge link set dev
  lanN state 0`: the bridge neither takes nor sends the node's frames, while both veth ends keep
  their carrier, so the node notices nothing), then forwarding again. This kernel has neither
  tc's gact nor flower, nor ebtables/nft, so the partition cuts all of the node's traffic, not
  only CARP;
- reload: SIGHUP, alternately with the file unchanged and with advskew moved by 5 (20 <-> 25,
  40 <-> 45, 60 <-> 65: the order stays); healed when the node logs "reloaded".

Who is MASTER comes from every node's event stream (control socket `events`, stamped with the
node's monotonic clock, which is ours): a killed node counts as nothing from the kill until its
new stream's snapshot. Per fault, over the window from the heal to heal + bound + 0.3 s (bound =
the largest master-down of the current configs + 1 s): the settle time (from the heal until the
count of masters is 1 for the rest of the window), the dual-master time (more than one master)
and the no-master time. Then one ping from the client to 192.0.2.1 (up to 5 s). Asserted: every
fault settles within the bound, every ping is answered, no unexpected node exit, and at the end
every node stops cleanly on SIGTERM (exit 0; tracebacks in the logs are reported). Prints a table
per fault kind and writes JSON under bench/results/; the lab is removed at the end, also on
errors and Ctrl-C (a stopped node gets SIGCONT, links and ports are restored first).
"""

import argparse
import bisect
import contextlib
import itertools
import os
import random
import signal
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from report import host_info, text_table, write_report

from carp.timing import master_down_us, seconds
from vswitch.ctl.client import EventReader
from vswitch.lab.gateway import LAN_VIP, Gateway, GatewayLab, GatewaySpec
from vswitch.lab.netns import preflight
from vswitch.lab.nodelog import node_logs_line, stop_all

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
PASSWORD = "secret"
VHID = 1
ADVBASE = 0
SKEWS = {"gwa": 20, "gwb": 40, "gwc": 60}
SKEW_STEP = 5  # a changed reload moves a node's advskew by this much, and back
KINDS = ("kill", "stop", "link", "partition", "reload")
HOLD = (0.3, 1.2)  # seconds a fault lasts
MARGIN = 0.3  # the window watched after a heal goes this far past the bound
SETTLE = 30.0  # bound for a start, a reload or a steady state to happen at all
QUICK_FAULTS = 10
MASTER = "MASTER"
DEAD = "DEAD"  # killed: no state until its new event stream says


def carp0(advskew: int) -> dict[str, dict[str, Any]]:
    lan = {"carpdev": "lan0", "addresses": [f"{LAN_VIP}/24"], "vhid": VHID, "pass": PASSWORD}
    return {"carp0": lan | {"advbase": ADVBASE, "advskew": advskew}}


# -- who is master, from the event streams -------------------------------------------------------


class Timeline:
    """Every node's carp0 state over time (monotonic seconds), from its event stream."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.states: dict[str, list[tuple[float, str]]] = {}
        self._readers: dict[str, EventReader] = {}

    def follow(self, gw: Gateway) -> None:
        """Subscribe to `gw`'s events; its snapshot sets its state from now on."""
        self.states.setdefault(gw.name, [])
        name = gw.name

        def on_event(event: dict[str, Any]) -> None:
            if event.get("type") in ("state", "snapshot") and event.get("carpif") == "carp0":
                with self._lock:
                    self.states[name].append((float(event["monotonic"]), str(event["new"])))

        self._readers[name] = EventReader(gw.socket_path, on_event, snapshot=True)

    def backfill(self, gw: Gateway, status: Any) -> None:
        """Put back a restarted node's transition from before its stream existed: its status
        says the state and for how long (`since`) it has held it."""
        received = time.monotonic()
        if not isinstance(status, dict):
            return
        for carpif in status.get("carp", []):
            for node in carpif["carpnodes"] if carpif["name"] == "carp0" else []:
                if node.get("since") is not None:
                    with self._lock:
                        entry = (received - float(node["since"]), str(node["state"]))
                        bisect.insort(self.states[gw.name], entry)

    def dead(self, gw: Gateway, at: float) -> None:
        with self._lock:
            self.states.setdefault(gw.name, []).append((at, DEAD))
        self.unfollow(gw)

    def unfollow(self, gw: Gateway) -> None:
        reader = self._readers.pop(gw.name, None)
        if reader is not None:
            reader.close()

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()

    def _state_at(self, entries: list[tuple[float, str]], at: float) -> str | None:
        state = None
        for t, st in entries:
            if t > at:
                break
            state = st
        return state

    def masters(self, at: float) -> list[str]:
        with self._lock:
            return [
                name
                for name, entries in self.states.items()
                if self._state_at(entries, at) == MASTER
            ]

    def changes(self, start: float, end: float) -> list[float]:
        with self._lock:
            return sorted({t for e in self.states.values() for t, _ in e if start < t <= end})

    def analyse(self, start: float, end: float) -> dict[str, float | None]:
        """Over [start, end]: settle (seconds from `start` until one master for the rest of
        it; None if the window ends with another count), dual and none (seconds with more
        than one master, with none)."""
        points = [start, *self.changes(start, end), end]
        dual = none = 0.0
        settle_at: float | None = None
        for a, b in itertools.pairwise(points):
            count = len(self.masters(a))
            if count > 1:
                dual += b - a
            elif count == 0:
                none += b - a
            if count != 1:
                settle_at = None
            elif settle_at is None:
                settle_at = a
        return {
            "settle": None if settle_at is None else round(settle_at - start, 4),
            "dual": round(dual, 4),
            "none": round(none, 4),
        }


# -- faults ----------------------------------------------------------------------------------------


@dataclass
class Fault:
    n: int
    kind: str
    node: str
    was_master: bool
    hold: float
    detail: str = ""
    bound: float = 0.0
    settle: float | None = None
    dual: float | None = None
    none: float | None = None
    ping: bool = False
    ok: bool = False


class Chaos:
    def __init__(self, lab: GatewayLab, rng: random.Random) -> None:
        self.lab = lab
        self.rng = rng
        self.timeline = Timeline()
        self.skews = dict(SKEWS)
        self.reloads = 0
        self.killed: set[str] = set()  # killed on purpose and not (yet) restarted
        self.unexpected: list[str] = []

    def bound(self) -> float:
        return max(seconds(master_down_us(ADVBASE, s)) for s in self.skews.values()) + 1.0

    def start(self) -> None:
        for gw in self.lab.gateways:
            self.lab.start(gw)
            self.timeline.follow(gw)
        self.lab.wait_for(lambda: self.timeline.masters(time.monotonic()) == ["gwa"], SETTLE)

    def one(self, n: int) -> Fault:
        now = time.monotonic()
        masters = self.timeline.masters(now)
        gateways = self.lab.gateways
        if masters and self.rng.random() < 0.5:
            gw = next(g for g in gateways if g.name == masters[0])
        else:
            gw = self.rng.choice(gateways)
        kind = self.rng.choice(KINDS)
        hold = round(self.rng.uniform(*HOLD), 3)
        fault = Fault(n, kind, gw.name, gw.name in masters, hold)
        healed = getattr(self, f"_{kind}")(gw, hold, fault)
        fault.bound = round(self.bound(), 4)
        end = healed + fault.bound + MARGIN
        time.sleep(max(0.0, end - time.monotonic()))
        result = self.timeline.analyse(healed, end)
        fault.settle, fault.dual, fault.none = result["settle"], result["dual"], result["none"]
        fault.ping = self.lab.ping(1, LAN_VIP, deadline=5)
        self.check_exits()
        fault.ok = fault.settle is not None and fault.settle <= fault.bound and fault.ping
        return fault

    def check_exits(self) -> None:
        for gw in self.lab.gateways:
            if gw.name in self.killed or gw.proc is None:
                continue
            code = gw.proc.poll()
            if code is not None:
                self.unexpected.append(f"{gw.name} exited with {code}")
                gw.proc = None

    # each returns the monotonic time of the heal

    def _kill(self, gw: Gateway, hold: float, fault: Fault) -> float:
        at = time.monotonic()
        self.lab.kill(gw)
        self.killed.add(gw.name)
        self.timeline.dead(gw, at)
        time.sleep(hold)
        self.lab.start(gw, wait=SETTLE)
        self.killed.discard(gw.name)
        healed = time.monotonic()
        self.timeline.follow(gw)
        self.timeline.backfill(gw, self.lab.request(gw, {"cmd": "status"}))
        return healed

    def _stop(self, gw: Gateway, hold: float, fault: Fault) -> float:
        assert gw.proc is not None
        os.kill(gw.proc.pid, signal.SIGSTOP)
        try:
            time.sleep(hold)
        finally:
            os.kill(gw.proc.pid, signal.SIGCONT)
        return time.monotonic()

    def _link(self, gw: Gateway, hold: float, fault: Fault) -> float:
        self.lab.lab.link(gw.netns, "lan", up=False)
        try:
            time.sleep(hold)
        finally:
            self.lab.lab.link(gw.netns, "lan", up=True)
        return time.monotonic()

    def _partition(self, gw: Gateway, hold: float, fault: Fault) -> float:
        port = self.lab.seg_port(gw)
        self.port_state(port, 0)
        try:
            time.sleep(hold)
        finally:
            self.port_state(port, 3)
        return time.monotonic()

    def port_state(self, port: str, state: int) -> None:
        """STP port state of a bridge port in "seg": 0 disabled, 3 forwarding."""
        argv = ["bridge", "link", "set", "dev", port, "state", str(state)]
        self.lab.lab.run(self.lab.seg, argv)

    def _reload(self, gw: Gateway, hold: float, fault: Fault) -> float:
        assert gw.proc is not None
        self.reloads += 1
        changed = self.reloads % 2 == 0
        if changed:
            base = SKEWS[gw.name]
            self.skews[gw.name] = base + SKEW_STEP if self.skews[gw.name] == base else base
            self.lab.reconfigure(gw, carp0(self.skews[gw.name]))
            fault.detail = f"advskew {self.skews[gw.name]}"
        else:
            self.lab.write_config(gw)
            fault.detail = "unchanged"
        done = self.log_count(gw, "reloaded")
        os.kill(gw.proc.pid, signal.SIGHUP)
        self.lab.wait_for(lambda: self.log_count(gw, "reloaded") > done, SETTLE, gw)
        return time.monotonic()

    @staticmethod
    def log_count(gw: Gateway, word: str) -> int:
        with open(gw.log_path, errors="replace") as f:
            return f.read().count(word)

    def restore(self) -> None:
        """Whatever a fault interrupted by an error: running nodes continued, links up, ports
        forwarding."""
        for gw in self.lab.gateways:
            if gw.proc is not None and gw.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(gw.proc.pid, signal.SIGCONT)
            with contextlib.suppress(Exception):
                self.lab.lab.link(gw.netns, "lan", up=True)
            with contextlib.suppress(Exception):
                self.port_state(self.lab.seg_port(gw), 3)


# -- summary ---------------------------------------------------------------------------------------


def stats(values: list[float | None]) -> dict[str, float | int | None]:
    ok = [v for v in values if v is not None]
    return {
        "n": len(values),
        "missing": len(values) - len(ok),
        "median": round(statistics.median(ok), 4) if ok else None,
        "max": max(ok) if ok else None,
    }


def summarise(faults: list[Fault]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for kind in (*KINDS, "all"):
        fs = [f for f in faults if kind in ("all", f.kind)]
        if not fs:
            continue
        out[kind] = {
            "faults": len(fs),
            "settled_in_bound": sum(1 for f in fs if f.settle is not None and f.settle <= f.bound),
            "pings": sum(1 for f in fs if f.ping),
            "settle": stats([f.settle for f in fs]),
            "dual": stats([f.dual for f in fs]),
            "none": stats([f.none for f in fs]),
        }
    return out


def table(summary: dict[str, dict[str, Any]]) -> str:
    def cell(s: dict[str, Any]) -> str:
        if s["median"] is None:
            return "-"
        return f"{s['median']:.3f} / {s['max']:.3f}"

    head = ["fault", "n", "one master in bound", "ping ok", "settle med/max", "dual-master med/max"]
    head.append("no-master med/max")
    rows: list[list[str]] = []
    for kind, s in summary.items():
        rows.append(
            [
                kind,
                str(s["faults"]),
                f"{s['settled_in_bound']}/{s['faults']}",
                f"{s['pings']}/{s['faults']}",
                cell(s["settle"]),
                cell(s["dual"]),
                cell(s["none"]),
            ]
        )
    return text_table(head, rows) + "\n(seconds, after the heal)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faults", type=int, default=100, help="faults to inject (1..1000)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the fault sequence")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_FAULTS} faults")
    parser.add_argument("--out", default=RESULTS, help="directory for the JSON result")
    args = parser.parse_args(argv)
    reason = preflight("chaos.py", ("ip", "ping", "bridge"))
    if reason is not None:
        print(reason, file=sys.stderr)
        return 2
    count = QUICK_FAULTS if args.quick else args.faults
    if not 1 <= count <= 1000:
        parser.error("--faults must be 1..1000")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    load_before = os.getloadavg()
    started = time.monotonic()
    faults: list[Fault] = []
    errors: list[str] = []
    specs = [GatewaySpec(name, carp0(skew)) for name, skew in SKEWS.items()]
    with GatewayLab(specs, clients=1, upstream=False, ipv6=False) as lab:
        chaos = Chaos(lab, random.Random(seed))
        try:
            chaos.start()
            for n in range(1, count + 1):
                try:
                    fault = chaos.one(n)
                except (TimeoutError, RuntimeError, OSError) as exc:  # a node that won't come back
                    errors.append(f"fault {n}: {type(exc).__name__}: {exc}")
                    print(f"  [{n}/{count}] {errors[-1]}", file=sys.stderr)
                    break
                faults.append(fault)
                print(
                    f"  [{n}/{count}] {fault.kind} {fault.node}"
                    f"{' (master)' if fault.was_master else ''} {fault.hold:.2f} s"
                    f"{' ' + fault.detail if fault.detail else ''}: settle {fmt(fault.settle)}, "
                    f"dual {fmt(fault.dual)}, none {fmt(fault.none)}, "
                    f"ping {'ok' if fault.ping else 'FAILED'}",
                    file=sys.stderr,
                    flush=True,
                )
                if chaos.unexpected:
                    break
        finally:
            chaos.restore()
            chaos.timeline.close()
        chaos.check_exits()
        stopped = stop_all(lab)  # SIGTERM; whatever the nodes logged, stopping included
    summary = summarise(faults)
    print(f"Chaos: {len(faults)} faults against three nodes, seed {seed}")
    print(table(summary))
    print(f"unexpected node exits: {len(chaos.unexpected)} {chaos.unexpected or ''}".rstrip())
    for error in errors:
        print(error.splitlines()[0])
    print(node_logs_line(stopped))
    ok = len(faults) == count and all(f.ok for f in faults) and not chaos.unexpected
    ok = ok and all(seen["exit"] == 0 for seen in stopped.values())  # a clean SIGTERM
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": host_info(load_before),
        "seed": seed,
        "advbase": ADVBASE,
        "advskews": SKEWS,
        "seconds": round(time.monotonic() - started, 1),
        "summary": summary,
        "faults": [asdict(f) for f in faults],
        "unexpected_exits": chaos.unexpected,
        "errors": errors,
        "stopped": stopped,
        "ok": ok,
    }
    write_report(args.out, "chaos", report)
    print("all checks passed" if ok else "CHECKS FAILED (see above)")
    return 0 if ok else 1


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
