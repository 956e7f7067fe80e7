#!/usr/bin/env python3
"""Soak a gateway pair: traffic, link flaps, status and metrics scraping, event subscribers and
hooks for minutes on end; the nodes' memory and descriptors must stay flat.

    .venv/bin/python bench/soak.py [--minutes 10] [--flap-every 30]   (root)
    .venv/bin/python bench/soak.py --quick                           (1 minute)

One gateway lab (vswitch/lab/gateway.py: client LAN, WAN with an upstream server) with the usual
pair (pair_specs: gwa advskew 0, gwb advskew 100, carp0 on the LAN, carp1 on the WAN, advbase 1,
preempt on). Each node has a metrics endpoint in its namespace (127.0.0.1:9812) and a hook that
runs on every state change (`/bin/sh -c 'exec true'`). For the whole run, at the same time:

- traffic: `iperf3 -c 198.51.100.200 -t 10 -b 20M` from the client through the gateways, over
  and over (each run bounded by `timeout`), an `iperf3 -s` on the upstream server;
- link flaps: every `--flap-every` seconds the master's LAN veth goes down for 2 s (its carp
  interfaces go INIT, gwb may take over, gwa preempts back: state changes, events, hooks);
- every 5 s per node: `vswitch status -s SOCK` (the CLI, as a user runs it) and a metrics
  scrape (`curl -m 5 http://127.0.0.1:9812/metrics` in the node's namespace);
- event subscribers: one per node for the whole run, and every 10 s a short-lived one per node
  (subscribe, take the snapshot, leave).

Sampled every 2 s from /proc: each node's VmRSS and open descriptors. After the warm-up (the
first minute, or the first 20 % of a shorter run): the RSS growth (largest sample after the
warm-up minus the sample at its end) must stay under 2 MiB, and the descriptor count must be
constant: the smallest count in each 30 s window after the warm-up (the count while no client
is connected) is the same in every window. No node may exit, and each stops cleanly on SIGTERM
at the end (exit 0; tracebacks in the logs are reported). Prints a table and writes JSON
(every sample) under bench/results/; the lab is removed at the end, also on errors and Ctrl-C.
"""

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from report import host_info, text_table, write_report

from vswitch.ctl.client import EventReader, NodeUnavailable
from vswitch.lab.gateway import UPSTREAM, Gateway, GatewayLab, pair_specs
from vswitch.lab.netns import preflight
from vswitch.lab.nodelog import node_logs_line, stop_all
from vswitch.lab.procstat import ProcSampler, Sample, cmdline

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRICS = "127.0.0.1:9812"  # each node has its own namespace: the port is free there
SAMPLE_EVERY = 2.0
CLI_EVERY = 5.0
SUBSCRIBER_EVERY = 10.0
FLAP_DOWN = 2.0
WINDOW = 30.0  # descriptor floors are taken per window of this many seconds
RSS_LIMIT_KIB = 2048
IPERF = ["iperf3", "-c", UPSTREAM, "-t", "10", "-b", "20M", "-J"]
SETTLE = 30.0


@dataclass
class Activity:
    """What the soak did, and what failed (none of it is asserted but the node's health)."""

    iperf_runs: int = 0
    iperf_failed: int = 0
    iperf_mbps: list[float] = field(default_factory=list)
    flaps: int = 0
    status_calls: int = 0
    status_failed: int = 0
    status_seconds: list[float] = field(default_factory=list)
    scrapes: int = 0
    scrapes_failed: int = 0
    subscribers: int = 0
    subscribers_failed: int = 0
    events: dict[str, int] = field(default_factory=dict)


class Traffic:
    """iperf3 runs from the client to the upstream server, one after the other, in a thread."""

    def __init__(self, lab: GatewayLab, activity: Activity) -> None:
        self.lab = lab
        self.activity = activity
        self._stop = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        argv = self.lab.lab.argv(self.lab.clients[0], ["timeout", "30", *IPERF])
        while not self._stop.is_set():
            try:
                out = subprocess.run(argv, capture_output=True, text=True, timeout=40)
                result = json.loads(out.stdout or "{}")
                bps = result["end"]["sum_received"]["bits_per_second"]
            except (subprocess.TimeoutExpired, ValueError, KeyError, TypeError):
                self.activity.iperf_failed += 1
                self._stop.wait(1.0)
                continue
            self.activity.iperf_runs += 1
            self.activity.iperf_mbps.append(round(bps / 1e6, 2))
            self._stop.wait(0.5)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(60)


class Soak:
    def __init__(self, lab: GatewayLab, seconds: float, flap_every: float) -> None:
        self.lab = lab
        self.seconds = seconds
        self.flap_every = flap_every
        self.activity = Activity()
        self.readers: list[EventReader] = []
        self.exits: list[str] = []
        self._lock = threading.Lock()

    def count_event(self, name: str) -> Any:
        def on_event(event: dict[str, Any]) -> None:
            with self._lock:
                self.activity.events[name] = self.activity.events.get(name, 0) + 1

        return on_event

    def cli_status(self, gw: Gateway) -> None:
        start = time.monotonic()
        argv = [sys.executable, "-m", "vswitch", "status", "-s", gw.socket_path]
        try:
            done = subprocess.run(argv, cwd=ROOT, capture_output=True, timeout=20)
            failed = done.returncode != 0
        except subprocess.TimeoutExpired:
            failed = True
        self.activity.status_calls += 1
        self.activity.status_failed += failed
        self.activity.status_seconds.append(round(time.monotonic() - start, 3))

    def scrape(self, gw: Gateway) -> None:
        url = f"http://{METRICS}/metrics"
        argv = ["curl", "-sf", "-m", "5", "-o", "/dev/null", url]
        done = self.lab.lab.run(gw.netns, argv, timeout=20, check=False)
        self.activity.scrapes += 1
        self.activity.scrapes_failed += done.returncode != 0

    def short_subscriber(self, gw: Gateway) -> None:
        got = threading.Event()
        self.activity.subscribers += 1
        try:
            with EventReader(gw.socket_path, lambda e: got.set(), snapshot=True):
                if not got.wait(5):
                    self.activity.subscribers_failed += 1
        except NodeUnavailable:
            self.activity.subscribers_failed += 1

    def flap(self, gw: Gateway) -> None:
        self.lab.lab.link(gw.netns, "lan", up=False)
        try:
            time.sleep(FLAP_DOWN)
        finally:
            self.lab.lab.link(gw.netns, "lan", up=True)
        self.activity.flaps += 1

    def check_exits(self) -> None:
        for gw in self.lab.gateways:
            if gw.proc is not None and gw.proc.poll() is not None:
                self.exits.append(f"{gw.name} exited with {gw.proc.returncode}")
                gw.proc = None

    def run(self) -> None:
        """The schedule: every action when it is due, one at a time, until the time is up."""
        start = time.monotonic()
        due = {"cli": start, "sub": start + SUBSCRIBER_EVERY, "flap": start + self.flap_every}
        while (now := time.monotonic()) - start < self.seconds and not self.exits:
            if now >= due["cli"]:
                for gw in self.lab.gateways:
                    self.cli_status(gw)
                    self.scrape(gw)
                due["cli"] += CLI_EVERY
            if now >= due["sub"]:
                for gw in self.lab.gateways:
                    self.short_subscriber(gw)
                due["sub"] += SUBSCRIBER_EVERY
            if now >= due["flap"] and now - start + FLAP_DOWN < self.seconds:
                masters = [gw for gw in self.lab.gateways if self.lab.state(gw) == "MASTER"]
                self.flap(masters[0] if masters else self.lab.gateways[0])
                due["flap"] += self.flap_every
            self.check_exits()
            time.sleep(0.2)


# -- the verdict -------------------------------------------------------------------------------


def verdict(samples: list[Sample], start: float, warmup: float) -> dict[str, Any]:
    """RSS growth after the warm-up and the descriptor floors of each window after it."""
    after = [s for s in samples if s.at - start >= warmup and s.rss_kib is not None]
    if not after:
        return {"ok": False, "why": "no sample after the warm-up"}
    base = after[0]
    rss = [s.rss_kib for s in after if s.rss_kib is not None]
    floors = []
    t = base.at
    while t < after[-1].at:
        window = [s.fds for s in after if t <= s.at < t + WINDOW and s.fds is not None]
        if window:
            floors.append(min(window))
        t += WINDOW
    growth = max(rss) - rss[0]
    fds = [s.fds for s in after if s.fds is not None]
    return {
        "rss_warm_kib": rss[0],
        "rss_max_kib": max(rss),
        "rss_end_kib": rss[-1],
        "rss_growth_kib": growth,
        "rss_end_growth_kib": rss[-1] - rss[0],
        "fd_floors": floors,
        "fd_max": max(fds) if fds else None,
        "ok": growth < RSS_LIMIT_KIB and len(set(floors)) == 1,
    }


def table(per_node: dict[str, dict[str, Any]], activity: Activity, exits: list[str]) -> str:
    head = ["node", "RSS at warm-up", "max after", "end", "growth", "fd floors", "fd max", "ok"]
    rows: list[list[str]] = []
    for name, v in per_node.items():
        if "rss_warm_kib" not in v:
            rows.append([name, "-", "-", "-", "-", "-", "-", "NO"])
            continue
        floors = sorted(set(v["fd_floors"]))
        rows.append(
            [
                name,
                f"{v['rss_warm_kib'] / 1024:.1f} MiB",
                f"{v['rss_max_kib'] / 1024:.1f} MiB",
                f"{v['rss_end_kib'] / 1024:.1f} MiB",
                f"{v['rss_growth_kib']} KiB",
                "/".join(map(str, floors)),
                str(v["fd_max"]),
                "yes" if v["ok"] else "NO",
            ]
        )
    a = activity
    mbps = f"{statistics.median(a.iperf_mbps):.1f} Mbit/s median" if a.iperf_mbps else "-"
    slowest = f"{max(a.status_seconds):.2f}" if a.status_seconds else "-"
    lines = [
        text_table(head, rows),
        "",
        f"iperf3 runs {a.iperf_runs} ({a.iperf_failed} failed, {mbps}); link flaps {a.flaps}",
        f"vswitch status {a.status_calls} ({a.status_failed} failed, slowest {slowest} s); "
        f"metrics scrapes {a.scrapes} ({a.scrapes_failed} failed)",
        f"short subscribers {a.subscribers} ({a.subscribers_failed} failed); events seen by "
        f"the long ones {a.events}",
        f"unexpected node exits: {len(exits)} {exits or ''}".rstrip(),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the soak")
    parser.add_argument("--flap-every", type=float, default=30.0, help="seconds between flaps")
    parser.add_argument("--quick", action="store_true", help="one minute")
    parser.add_argument("--out", default=RESULTS, help="directory for the JSON result")
    args = parser.parse_args(argv)
    reason = preflight("soak.py", ("ip", "ping", "iperf3", "curl"))
    if reason is not None:
        print(reason, file=sys.stderr)
        return 2
    minutes = 1.0 if args.quick else args.minutes
    if not 0.5 <= minutes <= 24 * 60:
        parser.error("--minutes must be 0.5..1440")
    if not 5 <= args.flap_every <= 3600:
        parser.error("--flap-every must be 5..3600 s")
    seconds = minutes * 60
    warmup = min(60.0, 0.2 * seconds)
    load_before = os.getloadavg()
    specs = pair_specs(ipv6=False)
    for spec in specs:
        spec.metrics = METRICS
        spec.hooks = [{"command": ["/bin/sh", "-c", "exec true"], "timeout": 5}]
    per_node: dict[str, dict[str, Any]] = {}
    with GatewayLab(specs, clients=1, upstream=True, ipv6=False) as lab:
        gwa, gwb = lab.gateways
        lab.lab.spawn(lab.up, ["iperf3", "-s"], log=os.path.join(lab.dir, "iperf3-server.log"))
        for gw in lab.gateways:
            lab.start(gw)
        lab.wait_for(lambda: lab.state(gwa) == "MASTER" and lab.state(gwb) == "BACKUP", SETTLE)
        pids = {gw.name: gw.proc.pid for gw in lab.gateways if gw.proc is not None}
        for name, pid in pids.items():  # `ip netns exec` execs: the pid is the node's
            if "vswitch" not in cmdline(pid):
                raise RuntimeError(f"pid {pid} of {name} is not the node: {cmdline(pid)!r}")
        soak = Soak(lab, seconds, args.flap_every)
        start = time.monotonic()
        with contextlib.ExitStack() as stack:
            for gw in lab.gateways:
                reader = EventReader(gw.socket_path, soak.count_event(gw.name), snapshot=True)
                stack.callback(reader.close)
            sampler = ProcSampler(pids, SAMPLE_EVERY)
            stack.callback(sampler.close)
            traffic = Traffic(lab, soak.activity)
            stack.callback(traffic.close)
            soak.run()
        final = {gw.name: lab.request(gw, {"cmd": "status"}) for gw in lab.gateways}
        soak.check_exits()
        for name in pids:
            per_node[name] = verdict(sampler.series(name), start, warmup)
        side = {
            name: {"hooks": st.get("hooks"), "channels": st.get("channels")}
            for name, st in final.items()
            if isinstance(st, dict)
        }
        stopped = stop_all(lab)  # SIGTERM; whatever the nodes logged, stopping included
    print(f"Soak: {minutes:g} min, warm-up {warmup:.0f} s, samples every {SAMPLE_EVERY:g} s")
    print(table(per_node, soak.activity, soak.exits))
    for name, s in side.items():
        print(f"{name}: hooks {s['hooks']}, channels {s['channels']}")
    print(node_logs_line(stopped))
    ok = all(v.get("ok") for v in per_node.values()) and not soak.exits and len(per_node) == 2
    ok = ok and all(seen["exit"] == 0 for seen in stopped.values())  # a clean SIGTERM
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": host_info(load_before),
        "minutes": minutes,
        "warmup_s": warmup,
        "nodes": per_node,
        "activity": asdict(soak.activity),
        "side_channels": side,
        "samples": {n: [asdict(s) for s in sampler.series(n)] for n in pids},
        "unexpected_exits": soak.exits,
        "stopped": stopped,
        "ok": ok,
    }
    write_report(args.out, "soak", report)
    print("all checks passed" if ok else "CHECKS FAILED (see above)")
    return 0 if ok else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
