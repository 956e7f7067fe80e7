"""Build a gateway lab in network namespaces and show failover, preemption and balancing.

`vswitch demo [--quick] [--json FILE] [--plot FILE.svg]` (root; `./dev.sh demo` on a fresh
machine) builds the lab of vswitch/lab/gateway.py (clients, a LAN and a WAN segment, an
upstream server, two gateway nodes), shows the election, pings and TCP flows through the
virtual address, kills the master (`kill -9`) and measures the failover as the client sees it
and as the backup's events say, brings the master back (preemption), reloads both nodes with
`carpnodes 1:0,2:100` / `1:100,2:0` and `balancing ip` and shows how flows from many client
addresses split, then removes everything it created (also on Ctrl-C and errors) and prints a
short report. `--plot` draws the failover as an SVG timeline (vswitch/lab/timeline.py): both
nodes' states, the kill, when master-down was due, and the client's replies with the gap
between them.
"""

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from ipaddress import ip_address
from typing import Any

from carp.balance import ip_fold
from carp.timing import interval_us, master_down_us, seconds
from vswitch.lab import timeline
from vswitch.lab.gateway import (
    LAN_VIP,
    LAN_VIP6,
    UPSTREAM,
    Gateway,
    GatewayLab,
    client_ip,
    pair_specs,
)
from vswitch.lab.netns import leftovers, preflight
from vswitch.lab.probe import EventWatch, PingProbe, largest_gap, ping_summary

HINT = ": run `sudo ./dev.sh demo`, which installs what it needs too"  # ends preflight's reasons
ADVBASE = 1
BACKUP_SKEW = 100  # pair_specs: gwa advskew 0, gwb advskew 100
CARPNODES = ("1:0,2:100", "1:100,2:0")
HTTP_PORT = 8080
FLOW_SOURCE_BASE = 150  # balancing flows come from 192.0.2.150 and up on client c1


@dataclass
class Settings:
    clients: int
    flow_bytes: int
    balance_flows: int
    probe_interval: float
    pings: int

    @classmethod
    def make(cls, quick: bool) -> "Settings":
        if quick:
            return cls(
                clients=2, flow_bytes=256 * 1024, balance_flows=8, probe_interval=0.05, pings=2
            )
        return cls(clients=3, flow_bytes=4 << 20, balance_flows=24, probe_interval=0.02, pings=4)


@dataclass
class Report:
    prefix: str = ""
    clients: int = 0
    election: dict[str, dict[str, str]] = field(default_factory=dict)
    pings: list[dict[str, Any]] = field(default_factory=list)
    flows: list[dict[str, Any]] = field(default_factory=list)
    failover: dict[str, Any] = field(default_factory=dict)
    preemption: dict[str, Any] = field(default_factory=dict)
    balancing: dict[str, Any] = field(default_factory=dict)
    cleanup: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick", action="store_true", help="fewer clients, flows and pings (for tests)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the report as JSON to FILE")
    parser.add_argument(
        "--plot", metavar="FILE", help="draw the failover as an SVG timeline into FILE"
    )


class Out:
    """What the person running the demo reads: numbered steps and indented lines."""

    def __init__(self) -> None:
        self.step_no = 0

    def step(self, title: str) -> None:
        self.step_no += 1
        heading = f"== {self.step_no}. {title} "
        print(f"\n{heading}{'=' * max(3, 72 - len(heading))}", flush=True)

    def say(self, text: str) -> None:
        print(f"   {text}", flush=True)


def states_table(lab: GatewayLab) -> dict[str, dict[str, str]]:
    """node -> "carp0 vhid 1" -> state."""
    return {
        gw.name: {f"{c} vhid {v}": s for (c, v), s in sorted(lab.states(gw).items())}
        for gw in lab.gateways
    }


def show_states(out: Out, table: dict[str, dict[str, str]]) -> None:
    keys = sorted({k for states in table.values() for k in states})
    for key in keys:
        cells = ", ".join(f"{node} {states.get(key, '-')}" for node, states in table.items())
        out.say(f"{key:<14} {cells}")


def wait_states(
    lab: GatewayLab, want: dict[str, dict[tuple[str, int], str]], timeout: float
) -> float:
    by_name = {gw.name: gw for gw in lab.gateways}
    return lab.wait_for(lambda: all(lab.states(by_name[n]) == s for n, s in want.items()), timeout)


def ping_stats(
    lab: GatewayLab, client: int, dst: str, count: int, source: str | None = None
) -> dict[str, Any]:
    argv = ["ping", "-n", "-q", "-c", str(count), "-i", "0.05", "-W", "1"]
    if source is not None:
        argv += ["-I", source]
    result = lab.lab.run(lab.clients[client - 1], [*argv, dst], timeout=count + 10, check=False)
    sent, received, avg = ping_summary(result.stdout)
    return {"client": f"c{client}", "dst": dst, "sent": sent, "received": received, "avg_ms": avg}


# -- steps -------------------------------------------------------------------------------------


def step_election(out: Out, lab: GatewayLab, report: Report) -> None:
    gwa, gwb = lab.gateways
    out.step("Two gateway nodes elect a master")
    out.say("starting gwa (advskew 0) and gwb (advskew 100), advbase 1, preempt on ...")
    lab.start(gwa)
    lab.start(gwb)
    took = wait_states(
        lab,
        {
            "gwa": {("carp0", 1): "MASTER", ("carp1", 2): "MASTER"},
            "gwb": {("carp0", 1): "BACKUP", ("carp1", 2): "BACKUP"},
        },
        20,
    )
    out.say(f"elected {took:.1f} s after both answered (a BACKUP waits 3 x its interval):")
    report.election = states_table(lab)
    show_states(out, report.election)


def step_traffic(out: Out, lab: GatewayLab, settings: Settings, report: Report, www: str) -> None:
    out.step("Traffic through the virtual address")
    targets = [(1, LAN_VIP), (1, LAN_VIP6)] + [
        (c, UPSTREAM) for c in range(1, settings.clients + 1)
    ]
    for client, dst in targets:
        r = ping_stats(lab, client, dst, settings.pings)
        report.pings.append(r)
        avg = f"{r['avg_ms']:.2f} ms" if r["avg_ms"] is not None else "-"
        via = " (routed via the VIP)" if dst == UPSTREAM else ""
        out.say(f"c{client} ping {dst:<15} {r['received']}/{r['sent']} replies, avg {avg}{via}")
        if r["received"] == 0:
            report.problems.append(f"c{client} got no reply from {dst}")
    with open(os.path.join(www, "blob"), "wb") as f:
        f.write(os.urandom(settings.flow_bytes))
    server = lab.lab.spawn(
        lab.up,
        [
            sys.executable,
            "-m",
            "http.server",
            str(HTTP_PORT),
            "--bind",
            UPSTREAM,
            "--directory",
            www,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://{UPSTREAM}:{HTTP_PORT}/blob"
        out.say(f"TCP: each client fetches {settings.flow_bytes >> 10} KiB from {url}")
        for client in range(1, settings.clients + 1):
            flow = fetch(lab, client, url)
            report.flows.append(flow)
            if flow["bytes"] != settings.flow_bytes:
                report.problems.append(f"c{client}: TCP flow got {flow['bytes']} bytes")
                out.say(f"c{client} flow failed: {flow['error']}")
                continue
            mbit = flow["bytes"] * 8 / flow["seconds"] / 1e6
            out.say(
                f"c{client} {flow['bytes']} bytes in {flow['seconds']:.2f} s ({mbit:.0f} Mbit/s)"
            )
    finally:
        lab.lab.stop(server)


FETCH = (
    "import sys, time, urllib.request as u\n"
    "end = time.monotonic() + 10\n"
    "while True:\n"
    "    t = time.monotonic()\n"
    "    try:\n"
    "        n = len(u.urlopen(sys.argv[1], timeout=5).read())\n"
    "        print(n, time.monotonic() - t); break\n"
    "    except OSError as exc:\n"
    "        if time.monotonic() > end: print(0, 0, exc); break\n"
    "        time.sleep(0.1)\n"
)


def fetch(lab: GatewayLab, client: int, url: str) -> dict[str, Any]:
    """One TCP flow from a client (the server may still be starting: it retries for 10 s)."""
    result = lab.lab.run(
        lab.clients[client - 1], [sys.executable, "-c", FETCH, url], timeout=30, check=False
    )
    words = result.stdout.split(maxsplit=2)
    if len(words) < 2:
        return {"client": f"c{client}", "bytes": 0, "seconds": 0.0, "error": result.stderr[-200:]}
    return {
        "client": f"c{client}",
        "bytes": int(words[0]),
        "seconds": float(words[1]),
        "error": words[2] if len(words) > 2 else "",
    }


def step_failover(out: Out, lab: GatewayLab, settings: Settings, report: Report) -> timeline.Figure:
    """Kill the master, measure, and return the run as a timeline picture."""
    gwa, gwb = lab.gateways
    out.step("Failover: kill -9 the master (gwa)")
    expected = seconds(master_down_us(ADVBASE, BACKUP_SKEW))
    out.say(f"gwb takes over when it has heard nothing for 3 x (1 + 100/256) s = {expected:.2f} s")
    every = f"every {settings.probe_interval * 1000:.0f} ms"
    out.say(f"c1 pings {LAN_VIP} and c{settings.clients} pings {UPSTREAM} {every}")
    with contextlib.ExitStack() as stack:
        watch = stack.enter_context(EventWatch(gwb.socket_path))
        vip = stack.enter_context(
            PingProbe(lab.lab, lab.clients[0], LAN_VIP, interval=settings.probe_interval)
        )
        upstream = stack.enter_context(
            PingProbe(lab.lab, lab.clients[-1], UPSTREAM, interval=settings.probe_interval)
        )
        lab.wait_for(lambda: len(vip.replies()) >= 3 and len(upstream.replies()) >= 3, 10)
        time.sleep(
            random.uniform(0, ADVBASE)
        )  # lands the kill at a random point of the advert cycle
        wall, mono = time.time(), time.monotonic()
        out.say(f"kill -9 {gwa.proc.pid if gwa.proc else '?'} (gwa) ...")
        lab.kill(gwa)
        events = {c: watch.became(c, "MASTER", 15) for c in ("carp0", "carp1")}
        resumed = [p.wait_reply_after(wall + 0.001, 15) for p in (vip, upstream)]
        replies = [p.stop() for p in (vip, upstream)]
        gaps = [largest_gap(r, wall) for r in replies]
        changes = [
            (e.monotonic - mono, str(e.data["new"]))
            for e in list(watch.events)
            if e.data.get("type") == "state" and e.data.get("carpif") == "carp0"
        ]
    result: dict[str, Any] = {"expected_master_down": round(expected, 3)}
    for carpif, event in events.items():
        took = None if event is None else round(event.monotonic - mono, 3)
        result[f"takeover_{carpif}"] = took
        text = "no takeover within 15 s" if took is None else f"MASTER {took:.2f} s after the kill"
        out.say(f"gwb {carpif}: {text} (event stream)")
        if took is None:
            report.problems.append(f"gwb {carpif} did not take over")
    for name, dst, gap, ok in zip(
        ("vip", "upstream"), (LAN_VIP, UPSTREAM), gaps, resumed, strict=True
    ):
        if gap is None or not ok:
            result[f"outage_{name}"] = None
            report.problems.append(f"replies from {dst} did not resume after the kill")
            out.say(f"ping {dst}: replies did not resume")
            continue
        result[f"outage_{name}"] = round(gap.seconds, 3)
        result[f"lost_{name}"] = gap.lost
        out.say(f"ping {dst:<15} no reply for {gap.seconds:.2f} s ({gap.lost} echo requests lost)")
    report.failover = result
    show_states(out, {"gwb": states_table(lab)["gwb"]})
    return timeline.failover(
        f"vswitch demo: kill -9 of the master gwa (carp0, advbase {ADVBASE}, "
        f"advskew 0/{BACKUP_SKEW}), c1 pinging {LAN_VIP}",
        master="gwa carp0",
        backup="gwb carp0",
        backup_changes=changes,
        replies=[r.at - wall for r in replies[0]],
        master_down=expected,
        master_interval=seconds(interval_us(ADVBASE, 0)),
    )


def step_preemption(out: Out, lab: GatewayLab, settings: Settings, report: Report) -> None:
    gwa, gwb = lab.gateways
    out.step("Preemption: gwa comes back and takes over again")
    with contextlib.ExitStack() as stack:
        watch = stack.enter_context(EventWatch(gwb.socket_path))
        vip = stack.enter_context(
            PingProbe(lab.lab, lab.clients[0], LAN_VIP, interval=settings.probe_interval)
        )
        lab.wait_for(lambda: len(vip.replies()) >= 3, 10)
        wall, mono = time.time(), time.monotonic()
        lab.start(gwa)
        out.say("gwa restarted; it starts as BACKUP, hears gwb's less preferred adverts, preempts")
        event = watch.became("carp0", "BACKUP", 15)
        wait_states(
            lab,
            {
                "gwa": {("carp0", 1): "MASTER", ("carp1", 2): "MASTER"},
                "gwb": {("carp0", 1): "BACKUP", ("carp1", 2): "BACKUP"},
            },
            15,
        )
        vip.wait_reply_after(time.time(), 10)
        gap = largest_gap(vip.stop(), wall)
    status = lab.request(gwa, {"cmd": "status"})
    carp0 = next(c for c in status["carp"] if c["name"] == "carp0")["carpnodes"][0]
    after_start = round(status["uptime"] - carp0["since"], 3)
    result: dict[str, Any] = {
        "reason": carp0["reason"],
        "master_after_node_start": after_start,
        "backup_after_spawn": None if event is None else round(event.monotonic - mono, 3),
        "outage_vip": None if gap is None else round(gap.seconds, 3),
    }
    out.say(f"gwa carp0 MASTER {after_start:.2f} s after its start (reason: {carp0['reason']})")
    if event is not None:
        out.say(f"gwb carp0 BACKUP ({event.data.get('reason')})")
    if gap is not None:
        out.say(f"ping {LAN_VIP}: longest silence {gap.seconds:.2f} s ({gap.lost} lost)")
    report.preemption = result
    show_states(out, states_table(lab))


def step_balancing(out: Out, lab: GatewayLab, settings: Settings, report: Report) -> None:
    gwa, gwb = lab.gateways
    out.step("Load balancing: carpnodes 1:0,2:100 / 1:100,2:0, balancing ip")
    for gw, spec in zip(lab.gateways, pair_specs("ip", carpnodes=CARPNODES), strict=True):
        lab.reconfigure(gw, spec.carp)
        changes = lab.request(gw, {"cmd": "reload"})
        out.say(
            f"{gw.name}: carp0 carpnodes {spec.carp['carp0']['carpnodes']} -> reload: {changes}"
        )
    want = {
        "gwa": {("carp0", 1): "MASTER", ("carp0", 2): "BACKUP", ("carp1", 10): "MASTER"},
        "gwb": {("carp0", 1): "BACKUP", ("carp0", 2): "MASTER", ("carp1", 10): "BACKUP"},
    }
    took = wait_states(lab, want, 20)
    out.say(f"each node is MASTER of one carpnode after {took:.1f} s:")
    show_states(out, states_table(lab))
    # carp(4) sends no gratuitous ARP in the balancing modes: a client keeps the old unicast
    # virtual MAC until its ARP entry expires, so the demo makes it resolve the VIP again now
    for ns in lab.clients:
        lab.lab.run(ns, ["ip", "neigh", "flush", "dev", "eth0"])
    out.say("clients flush their ARP cache (ip mode sends no gratuitous ARP, as carp(4)) and")
    out.say(
        f"resolve {LAN_VIP} to the multicast MAC 01:00:5e:00:01:01: both nodes get every frame;"
    )
    out.say(
        "each keeps the packets whose (source ^ destination) fold % 2 names its MASTER carpnode"
    )
    sources = [client_ip(FLOW_SOURCE_BASE - 100 + i) for i in range(settings.balance_flows)]
    for src in sources:
        lab.lab.addr(lab.clients[0], "eth0", f"{src}/24")
    owner = {1: "gwa", 2: "gwb"}  # carpnode index 0 is vhid 1 (gwa), index 1 is vhid 2 (gwb)
    flows: list[dict[str, Any]] = []
    for src in sources:
        before = {gw.name: carp_tx(lab, gw) for gw in (gwa, gwb)}
        r = ping_stats(lab, 1, UPSTREAM, 3, source=src)
        after = {gw.name: carp_tx(lab, gw) for gw in (gwa, gwb)}
        served = [n for n in before if after[n] - before[n] >= max(1, r["received"])]
        fold = ip_fold(ip_address(src).packed, ip_address(UPSTREAM).packed)
        predicted = owner[1 + fold % 2]
        flows.append(
            {"src": src, "served_by": served, "predicted": predicted, "replies": r["received"]}
        )
    per_node = {n: sum(1 for f in flows if f["served_by"] == [n]) for n in ("gwa", "gwb")}
    twice = [f["src"] for f in flows if len(f["served_by"]) > 1]
    unserved = [f["src"] for f in flows if not f["served_by"] or f["replies"] == 0]
    mismatched = [f["src"] for f in flows if f["served_by"] and f["served_by"] != [f["predicted"]]]
    for row in chunks(
        [f"{f['src'].split('.')[-1]}->{'+'.join(f['served_by']) or '-'}" for f in flows], 6
    ):
        out.say("  ".join(f"{cell:<10}" for cell in row).rstrip())
    as_predicted = len(flows) - len(mismatched) - len(unserved)
    out.say(
        f"{len(flows)} flows (ping from 192.0.2.x to {UPSTREAM}): gwa {per_node['gwa']}, "
        f"gwb {per_node['gwb']}; as the hash predicts: {as_predicted}"
    )
    report.balancing = {
        "flows": flows,
        "per_node": per_node,
        "served_twice": twice,
        "unserved": unserved,
        "not_as_predicted": mismatched,
    }
    if twice:
        report.problems.append(f"flows served by both nodes: {twice}")
    if unserved:
        report.problems.append(f"flows not served: {unserved}")
    if mismatched:
        report.problems.append(f"flows not served where the hash says: {mismatched}")


def carp_tx(lab: GatewayLab, gw: Gateway) -> int:
    """Frames the node delivered to its carp0 TAP (to its kernel) so far."""
    status = lab.request(gw, {"cmd": "status"})
    for switch in status["switches"]:
        for port in switch["ports"]:
            if port["name"] == "carp0":
                return int(port["tx_packets"])
    raise RuntimeError(f"{gw.name} has no carp0 port")


def chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# -- cleanup and report ------------------------------------------------------------------------


def cleanup(out: Out, lab: GatewayLab, report: Report) -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not stop it
    try:
        lab.close()
        left = leftovers(lab.lab.prefix)
    finally:
        signal.signal(signal.SIGINT, previous)
    report.cleanup = {**left, "errors": list(lab.lab.teardown_errors)}
    if any(report.cleanup.values()):
        report.problems.append(f"left behind: {report.cleanup}")
        out.say(f"NOT clean: {report.cleanup}")
    else:
        out.say(f"namespaces, links, processes: nothing named {lab.lab.prefix}* is left")


def summary(out: Out, report: Report) -> None:
    out.step("Report")
    f, p, b = report.failover, report.preemption, report.balancing
    per_node = b.get("per_node", {})
    pings = " ".join(f"{r['received']}/{r['sent']}" for r in report.pings)
    flows = ", ".join(f"{r['client']} {r['bytes'] >> 10} KiB" for r in report.flows if r["bytes"])
    rows = [
        ("lab", f"prefix {report.prefix}, 2 gateways, {report.clients} clients, upstream"),
        ("election", "gwa MASTER, gwb BACKUP" if report.election else "-"),
        ("pings via the VIP", pings or "-"),
        ("TCP flows via the VIP", flows or "-"),
        (
            "failover takeover",
            fmt_s(f.get("takeover_carp0"))
            + f" (master-down {fmt_s(f.get('expected_master_down'))})",
        ),
        (
            "failover client outage",
            f"VIP {fmt_s(f.get('outage_vip'))}, upstream {fmt_s(f.get('outage_upstream'))}",
        ),
        (
            "preemption",
            f"gwa MASTER {fmt_s(p.get('master_after_node_start'))} after its start, "
            f"outage {fmt_s(p.get('outage_vip'))}",
        ),
        (
            "balancing ip",
            f"gwa {per_node.get('gwa', '-')} / gwb {per_node.get('gwb', '-')} "
            f"flows, {len(b.get('served_twice', []))} served twice",
        ),
        ("cleanup", cleanup_text(report.cleanup)),
        ("time", f"{report.seconds:.0f} s"),
    ]
    for name, value in rows:
        out.say(f"{name:<24} {value}")
    for problem in report.problems:
        out.say(f"PROBLEM: {problem}")


def plot(out: Out, path: str, picture: timeline.Figure | None, report: Report) -> None:
    if picture is None:
        report.problems.append(f"no picture for {path}: the failover step did not finish")
        return
    try:
        timeline.write(path, [picture])
    except OSError as exc:
        report.problems.append(f"cannot write the picture {path}: {exc}")
        return
    out.say(f"failover timeline written to {path}")


def cleanup_text(cleanup: dict[str, Any]) -> str:
    if not cleanup:
        return "-"
    if any(cleanup.values()):
        return f"NOT clean: {cleanup}"
    return "nothing left (namespaces, links, processes)"


def fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def run(args: argparse.Namespace) -> int:
    reason = preflight("vswitch demo", hint=HINT)
    if reason is not None:
        print(f"vswitch: {reason}", file=sys.stderr)
        return 2
    return demo(Settings.make(args.quick), args.json, args.plot)


def demo(settings: Settings, json_path: str | None, plot_path: str | None = None) -> int:
    out = Out()
    report = Report()
    start = time.monotonic()
    code = 0
    www = tempfile.mkdtemp(prefix="vswitch-demo-www-")
    lab: GatewayLab | None = None
    picture: timeline.Figure | None = None
    try:
        out.step("Building the lab in network namespaces")
        lab = GatewayLab(pair_specs(), clients=settings.clients)
        report.prefix = lab.lab.prefix
        report.clients = settings.clients
        out.say(f"prefix {lab.lab.prefix}: namespaces {', '.join(lab.lab.namespaces)}")
        out.say(f"clients 192.0.2.101.. / 2001:db8::65.. default via {LAN_VIP} / {LAN_VIP6}")
        out.say(f"upstream {UPSTREAM} routes 192.0.2.0/24 via the WAN VIP 198.51.100.1")
        step_election(out, lab, report)
        step_traffic(out, lab, settings, report, www)
        picture = step_failover(out, lab, settings, report)
        step_preemption(out, lab, settings, report)
        step_balancing(out, lab, settings, report)
    except KeyboardInterrupt:
        print("\ninterrupted: removing everything the demo created ...", flush=True)
        code = 130
    except Exception as exc:
        print(f"\ndemo failed: {exc}", flush=True)
        report.problems.append(
            f"failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        )
        code = 1
    finally:
        out.step("Cleaning up")
        if lab is not None:
            cleanup(out, lab, report)
        shutil.rmtree(www, ignore_errors=True)
    if plot_path and code != 130:
        plot(out, plot_path, picture, report)
    report.seconds = round(time.monotonic() - start, 1)
    if code != 130:
        summary(out, report)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(asdict(report), f, indent=1)
    if code == 0 and report.problems:
        code = 1
    return code
