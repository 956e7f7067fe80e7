#!/usr/bin/env python3
"""Fuzz a running node's ports with mutated frames: it must not crash, must account for every
frame, and must still fail over afterwards.

    .venv/bin/python bench/fuzz.py [--frames 1000000] [--offload on off] [--seed N]   (root)
    .venv/bin/python bench/fuzz.py --quick                                           (20k)

One gateway lab (vswitch/lab/gateway.py) with two nodes on the LAN bridge: gwa (advskew 20, the
master) and gwb, the fuzzed node (advskew 60, backup), both `vswitch run` from a config, carp0
with 192.0.2.1/24 and 2001:db8::1/64, vhid 1, advbase 0. gwb's lan0 switch has a raw port on its
veth "lan" and a TAP port "fz" that the node moves into a namespace of its own ("fz", IPv6 off
so its kernel adds no traffic). For each offload mode (a node restart between them):

- raw port: frames sent from the bridge's end of gwb's veth (an AF_PACKET socket on `lanN` in
  "seg", so the bridge is bypassed), straight into the node's socket;
- TAP port: frames sent on the TAP's interface from the "fz" namespace (an AF_PACKET socket on
  `fz`), which the node reads from its TAP file descriptor.

Frames are valid ARP, CARP (IPv4 and IPv6, valid HMAC), NS and echo frames broken at random
(vswitch/lab/mutate.py: random bytes, truncations, bit flips, byte overwrites, over-long frames
up to 9014 bytes, 802.1Q/802.1ad tags), a quarter with a random virtio-net header. The node never
reads a header a peer wrote: the sender's kernel checks each one (virtio_net_hdr_to_skb: EINVAL
refuses the frame, counted here by errno), and what the node reads is the header that the kernel
derives from the packet it built (virtio_net_hdr_from_skb: GSO type and size, partial checksum
offsets). With offload on, the node carries those headers to its other ports and the kernel
checks them again on each write (a refusal is a per-port tx drop); with offload off, the raw
port parses them (vswitch/raw.py plain_frames: GSO dropped, partial checksums completed, over-long
frames dropped; the TAP has no TSO then, so the client's kernel segments GSO packets first and
the TAP may be handed more frames than were sent). Both veth ends and the TAP's interface get
MTU 9000 so that over-long frames reach the node at all. Frames go out at up to `--rate` per
second; the sender backs off while the node's port loses frames in the kernel (its rx_kernel
grows), so that most frames reach the node's parsers rather than a full queue.

Checked per port, from counter deltas around the run (taken once the node has caught up): the
kernel's count of frames handed to the port (veth `lan` rx_packets; the TAP's tx_packets and
tx_dropped) = the node's rx_packets + rx_kernel + rx_error + the sent VLAN frames too short to
untag (raw port only: __netif_receive_skb_core frees those before any packet socket sees them,
counting them nowhere; the bench knows how many it sent). The receive-side drops by reason and
`forwarded` (rx_packets minus those drops, a derived figure: vswitch/accounting.py) are
reported, not checked. Then: the node process is alive, its control socket answers, its
log has no traceback from while it ran (one written when it is stopped with SIGTERM is reported
apart), gwa (which got the TAP port's frames, flooded) is alive too, and after the runs gwb
fails over: gwa is killed with SIGKILL and gwb must become MASTER within its master-down time
+ 1 s (its event stream, on the same monotonic clock). Only raw and TAP
ports are fuzzed: the output says which socket port types (stream, vde) exist and are not.
Prints a table and writes JSON under bench/results/; the lab is removed at the end, also on
errors and Ctrl-C.
"""

import argparse
import contextlib
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from report import host_info, text_table, write_report

from carp.timing import master_down_us, seconds
from vswitch import tomlw
from vswitch.accounting import RX_DROPS, TX_DROPS
from vswitch.config import PORT_TYPES
from vswitch.lab.gateway import LAN_VIP, LAN_VIP6, Gateway, GatewayLab, GatewaySpec, node_config
from vswitch.lab.inject import Injector, delta, link_counters, untag_discards
from vswitch.lab.mutate import Mutator, corpus
from vswitch.lab.netns import preflight
from vswitch.lab.nodelog import log_size, log_text, tracebacks
from vswitch.lab.probe import EventWatch

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
PASSWORD = "secret"
VHID = 1
ADVBASE = 0
SKEW_MASTER, SKEW_FUZZED = 20, 60
JUMBO = 9000
SETTLE = 30.0  # bound for an election, a drain or a restart to happen at all
QUICK_FRAMES = 20_000
LEGEND = (
    "handed: frames the kernel gave the port (veth rx / TAP tx + tx_dropped); read: the node's "
    "rx_packets; k-drop: its rx_kernel; unseen: sent VLAN frames too short to untag, freed by "
    "the receiving kernel before any packet socket (raw port only); forwarded: read minus the "
    "rx drops; accounted: handed = read + k-drop + rx-err + unseen"
)
STOP_CODES: list[int] = []  # gwb's exit status at each SIGTERM (between modes, at the end)
# what the nodes logged, for the report: gwb while running (a failure) and when stopped, gwa
TRACEBACKS: dict[str, list[str]] = {"running": [], "at_stop": [], "master": []}
SOCKET_PORTS = sorted(set(PORT_TYPES) - {"tap", "raw"})
NO_SOCKET_PORTS = (
    f"socket port types ({', '.join(SOCKET_PORTS)}) exist but are not fuzzed by this bench yet"
    if SOCKET_PORTS
    else "socket port types (stream, vde) do not exist yet: not fuzzed"
)


@dataclass
class PortRun:
    offload: bool
    kind: str  # "raw" | "tap"
    sent: int = 0
    refused: dict[str, int] = field(default_factory=dict)  # errno -> frames the kernel refused
    seconds: float = 0.0
    kernel: dict[str, int] = field(default_factory=dict)  # counter deltas of the node's side
    sender_side: dict[str, int] = field(default_factory=dict)  # of the injecting interface
    handed: int = 0  # frames the kernel handed to the port (kernel counters)
    rx_packets: int = 0
    forwarded: int = 0
    drops: dict[str, int] = field(default_factory=dict)
    tx_drops: dict[str, dict[str, int]] = field(default_factory=dict)  # port -> reason -> n
    transitions: int = 0  # state changes of the fuzzed node during the run
    kinds: dict[str, int] = field(default_factory=dict)
    alive: bool = False
    answers: bool = False
    tracebacks: int = 0
    untag_discarded: int = 0  # sent VLAN frames the receiving kernel frees unseen
    rate: int = 0  # frames sent per second, on average
    handed_ok: bool = False  # handed == rx_packets + rx_kernel + rx_error + untag_discarded
    settled: bool = False

    @property
    def ok(self) -> bool:
        clean = self.alive and self.answers and self.tracebacks == 0
        return clean and self.handed_ok


@dataclass
class Failover:
    offload: bool
    master_down: float
    takeover: float | None
    ok: bool


# -- the lab -----------------------------------------------------------------------------------


def carp0(advskew: int) -> dict[str, dict[str, Any]]:
    lan = {"carpdev": "lan0", "addresses": [f"{LAN_VIP}/24", f"{LAN_VIP6}/64"], "vhid": VHID}
    return {"carp0": lan | {"advbase": ADVBASE, "advskew": advskew, "pass": PASSWORD}}


def write_fuzzed_config(lab: GatewayLab, gw: Gateway, fzns: str, offload: bool) -> None:
    """The lab's node file for `gw` plus the TAP port "fz" in `fzns`, offload as asked."""
    data = node_config(gw.spec, gw.index, gw.socket_path, lab.ipv6)
    lan0 = data["switch"]["lan0"]
    lan0["offload"] = offload
    lan0["ports"].append({"name": "fz", "type": "tap", "ifname": "fz", "netns": fzns})
    with open(gw.config_path, "w") as f:
        f.write(tomlw.dumps(data))


def status(lab: GatewayLab, gw: Gateway) -> dict[str, Any]:
    result = lab.request(gw, {"cmd": "status"})
    if not isinstance(result, dict):
        raise RuntimeError(f"{gw.name} does not answer on its control socket")
    return result


def lan0_ports(st: dict[str, Any]) -> dict[str, dict[str, Any]]:
    sw = next(s for s in st["switches"] if s["name"] == "lan0")
    return {p["name"]: p for p in sw["ports"]}


def transitions(st: dict[str, Any]) -> int:
    return sum(n["transitions"] for c in st["carp"] for n in c["carpnodes"])


def wait_steady(lab: GatewayLab, master: Gateway, backup: Gateway) -> None:
    lab.wait_for(
        lambda: lab.state(master) == "MASTER" and lab.state(backup) == "BACKUP", SETTLE, master
    )


# -- one port ----------------------------------------------------------------------------------


class Target:
    """Where the frames go in and what the kernel counts for the node's port."""

    def __init__(self, lab: GatewayLab, gw: Gateway, fzns: str, kind: str) -> None:
        self.kind = kind
        if kind == "raw":
            self.port = "lan"
            self.send_ns, self.send_if = lab.seg, lab.seg_port(gw)
            self.node_ns, self.node_if = gw.netns, "lan"
        else:
            self.port = "fz"
            self.send_ns, self.send_if = fzns, "fz"
            self.node_ns, self.node_if = fzns, "fz"

    def handed(self, counters: dict[str, int]) -> int:
        """Frames the kernel handed to the node's port: received by its veth end, or queued
        to (tx_packets, read) or dropped at (tx_dropped) the TAP."""
        if self.kind == "raw":
            return counters["rx_packets"]
        return counters["tx_packets"] + counters["tx_dropped"]

    def kernel_counters(self) -> dict[str, int]:
        return link_counters(self.node_ns, self.node_if)


def node_seen(st: dict[str, Any], port: str) -> int:
    """Frames the node read from `port` or knows it lost before reading them."""
    p = lan0_ports(st)[port]
    return int(p["rx_packets"] + p["drops"]["rx_kernel"] + p["drops"]["rx_error"])


def settled(
    lab: GatewayLab, gw: Gateway, target: Target
) -> tuple[dict[str, int], dict[str, Any], bool]:
    """Kernel counters and the node's status with no frame handed to the port in between, once
    the node has caught up (what the kernel handed and what the node saw differ by the same
    number twice running): (counters, status, settled)."""
    last_gap: int | None = None
    end = time.monotonic() + SETTLE
    while True:
        before = target.kernel_counters()
        st = status(lab, gw)
        after = target.kernel_counters()
        if target.handed(before) == target.handed(after):
            gap = target.handed(after) - node_seen(st, target.port)
            if gap == last_gap:
                return after, st, True
            last_gap = gap
        if time.monotonic() > end:
            return after, st, False
        time.sleep(0.2)


class Pacer:
    """At most `rate` frames per second, backing off while the node's port loses frames in
    the kernel (its rx_kernel grows: the node reads slower than we send) and speeding up
    again while it does not; the aim is frames the node reads, not frames the kernel drops."""

    BATCH = 256
    CHECK = 0.25  # seconds between looks at the node's losses
    FLOOR = 500.0

    def __init__(self, lost: Callable[[], int], rate: float) -> None:
        self.lost = lost
        self.max_rate = rate
        self.rate = rate
        self.rates: list[float] = []
        now = time.monotonic()
        self._due = now
        self._next_check = now + self.CHECK
        self._lost = lost()

    def batch_sent(self) -> None:
        now = time.monotonic()
        if now >= self._next_check:
            lost = self.lost()
            if lost > self._lost:
                self.rate = max(self.FLOOR, self.rate * 0.7)
            else:
                self.rate = min(self.max_rate, self.rate * 1.1)
            self._lost = lost
            self.rates.append(self.rate)
            self._next_check = now + self.CHECK
        self._due += self.BATCH / self.rate
        delay = self._due - now
        if delay > 0:
            time.sleep(delay)
        elif delay < -0.1:
            self._due = now  # fell behind: no burst to catch up


def run_port(
    lab: GatewayLab,
    gw: Gateway,
    target: Target,
    mutator: Mutator,
    frames: int,
    rate: float,
    offload: bool,
    log_start: int,
) -> PortRun:
    run = PortRun(offload, target.kind)
    assert gw.proc is not None
    k0, st0, _ = settled(lab, gw, target)
    s0 = link_counters(target.send_ns, target.send_if)
    kinds_before = dict(mutator.kinds)
    start = time.monotonic()
    limit = start + 2 * frames / Pacer.FLOOR + 60

    def lost() -> int:  # a node that does not answer: the crash check below tells
        request = lab.request(gw, {"cmd": "status"})
        if not isinstance(request, dict):
            return 0
        return int(lan0_ports(request)[target.port]["drops"]["rx_kernel"])

    pacer = Pacer(lost, rate)
    with Injector(target.send_ns, target.send_if) as inj:
        made = 0
        while inj.sent < frames and made < 3 * frames and time.monotonic() < limit:
            header, frame = mutator.next()
            if inj.send(header, frame) and target.kind == "raw" and untag_discards(frame):
                run.untag_discarded += 1
            made += 1
            if made % Pacer.BATCH == 0:
                if gw.proc.poll() is not None:
                    break  # crashed: stop and report
                pacer.batch_sent()
        run.sent, run.refused = inj.sent, dict(inj.refused)
    run.seconds = round(time.monotonic() - start, 2)
    run.rate = round(run.sent / run.seconds) if run.seconds else 0
    run.kinds = {k: v - kinds_before.get(k, 0) for k, v in mutator.kinds.items()}
    run.alive = gw.proc.poll() is None
    run.tracebacks = len(tracebacks(log_text(gw, log_start)))
    if not run.alive:
        return run
    try:
        k1, st1, run.settled = settled(lab, gw, target)
    except RuntimeError:
        return run
    run.answers = True
    run.sender_side = delta(link_counters(target.send_ns, target.send_if), s0)
    run.kernel = delta(k1, k0)
    run.handed = target.handed(run.kernel)
    p0, p1 = lan0_ports(st0), lan0_ports(st1)
    before, after = p0[target.port], p1[target.port]
    run.rx_packets = after["rx_packets"] - before["rx_packets"]
    run.forwarded = after["forwarded"] - before["forwarded"]
    run.drops = {r: after["drops"][r] - before["drops"][r] for r in after["drops"]}
    run.tx_drops = {
        name: nonzero({r: p["drops"][r] - p0[name]["drops"][r] for r in TX_DROPS})
        for name, p in p1.items()
        if name in p0
    }
    run.transitions = transitions(st1) - transitions(st0)
    seen = run.rx_packets + run.drops["rx_kernel"] + run.drops["rx_error"]
    run.handed_ok = run.handed == seen + run.untag_discarded
    return run


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counts.items() if v}


# -- failover afterwards -----------------------------------------------------------------------


def failover(lab: GatewayLab, master: Gateway, fuzzed: Gateway, offload: bool) -> Failover:
    """Kill the master; the fuzzed node must take over within its master-down + 1 s."""
    down = seconds(master_down_us(ADVBASE, SKEW_FUZZED))
    wait_steady(lab, master, fuzzed)
    with EventWatch(fuzzed.socket_path) as watch:
        mono = time.monotonic()
        lab.kill(master)
        event = watch.became("carp0", "MASTER", down + SETTLE)
    takeover = None if event is None else round(event.monotonic - mono, 4)
    lab.start(master)
    wait_steady(lab, master, fuzzed)
    return Failover(
        offload, round(down, 4), takeover, takeover is not None and takeover <= down + 1
    )


# -- the whole run -----------------------------------------------------------------------------


def fuzz_mode(
    lab: GatewayLab,
    fzns: str,
    offload: bool,
    mutator: Mutator,
    frames: int,
    rate: float,
) -> tuple[list[PortRun], Failover | None]:
    master, fuzzed = lab.gateways
    write_fuzzed_config(lab, fuzzed, fzns, offload)
    log_start = log_size(fuzzed)
    lab.start(fuzzed)
    runs: list[PortRun] = []
    try:
        lab.lab.link(fzns, "fz", mtu=JUMBO)  # the node created it; over-long frames may pass
        wait_steady(lab, master, fuzzed)
        for kind in ("raw", "tap"):
            print(f"  offload {'on' if offload else 'off'}, {kind} port ...", file=sys.stderr)
            run = run_port(
                lab,
                fuzzed,
                Target(lab, fuzzed, fzns, kind),
                mutator,
                frames,
                rate,
                offload,
                log_start,
            )
            runs.append(run)
            print(f"    {summary_line(run)}", file=sys.stderr, flush=True)
            if not (run.alive and run.answers):
                return runs, None
        return runs, failover(lab, master, fuzzed, offload)
    finally:
        keep_tracebacks(fuzzed, log_start, "running")
        stop_mark = log_size(fuzzed)
        if fuzzed.proc is not None:
            STOP_CODES.append(lab.stop(fuzzed))
        keep_tracebacks(fuzzed, stop_mark, "at_stop")


def keep_tracebacks(gw: Gateway, offset: int, when: str) -> None:
    for text in tracebacks(log_text(gw, offset)):
        TRACEBACKS[when].append(text)
        print(f"  {gw.name} logged ({when.replace('_', ' ')}):\n{text}", file=sys.stderr)


def summary_line(run: PortRun) -> str:
    refused = sum(run.refused.values())
    return (
        f"sent {run.sent} at {run.rate}/s (refused {refused}), handed {run.handed}, "
        f"read {run.rx_packets}, unseen {run.untag_discarded}, "
        f"kernel drops {run.drops.get('rx_kernel', 0)}, rx errors {run.drops.get('rx_error', 0)}, "
        f"forwarded {run.forwarded}, {'ok' if run.ok else 'FAILED'}"
    )


def table(runs: list[PortRun], failovers: list[Failover]) -> str:
    head = [
        "offload",
        "port",
        "sent",
        "rate/s",
        "refused",
        "handed",
        "read",
        "k-drop",
        "rx-err",
        "unseen",
        "forwarded",
        "rx drops by reason",
        "alive",
        "accounted",
    ]
    rows: list[list[str]] = []
    for r in runs:
        reasons = ", ".join(
            f"{k} {v}" for k, v in nonzero({x: r.drops.get(x, 0) for x in RX_DROPS}).items()
        )
        rows.append(
            [
                "on" if r.offload else "off",
                r.kind,
                str(r.sent),
                str(r.rate),
                str(sum(r.refused.values())),
                str(r.handed),
                str(r.rx_packets),
                str(r.drops.get("rx_kernel", 0)),
                str(r.drops.get("rx_error", 0)),
                str(r.untag_discarded),
                str(r.forwarded),
                reasons or "-",
                "yes" if r.alive and r.answers and not r.tracebacks else "NO",
                "yes" if r.handed_ok else "NO",
            ]
        )
    out = [text_table(head, rows), LEGEND, ""]
    for f in failovers:
        took = "none" if f.takeover is None else f"{f.takeover:.3f} s"
        out.append(
            f"failover after offload {'on' if f.offload else 'off'}: takeover {took} "
            f"(bound: master-down {f.master_down:.3f} s + 1 s) {'ok' if f.ok else 'FAILED'}"
        )
    if TRACEBACKS["at_stop"]:
        out.append(
            f"gwb logged {len(TRACEBACKS['at_stop'])} traceback(s) when stopped with SIGTERM "
            "after the runs (a shutdown bug, not a fuzz failure; in the JSON)"
        )
    if any(STOP_CODES):
        out.append(f"gwb exit codes on SIGTERM: {STOP_CODES}")
    out.append(NO_SOCKET_PORTS)
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1_000_000, help="frames sent per port")
    parser.add_argument(
        "--rate", type=float, default=50_000, help="frames per second at most (backs off)"
    )
    parser.add_argument("--offload", nargs="+", choices=("on", "off"), default=["on", "off"])
    parser.add_argument("--seed", type=int, default=None, help="seed of the mutations")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_FRAMES} frames per port")
    parser.add_argument("--out", default=RESULTS, help="directory for the JSON result")
    args = parser.parse_args(argv)
    reason = preflight("fuzz.py", ("ip", "ping"))
    if reason is not None:
        print(reason, file=sys.stderr)
        return 2
    frames = QUICK_FRAMES if args.quick else args.frames
    if not 1 <= frames <= 100_000_000:
        parser.error("--frames must be 1..100000000")
    if not 100 <= args.rate <= 10_000_000:
        parser.error("--rate must be 100..10000000")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    load_before = os.getloadavg()
    started = time.monotonic()
    runs: list[PortRun] = []
    failovers: list[Failover] = []
    specs = [GatewaySpec("gwa", carp0(SKEW_MASTER)), GatewaySpec("gwb", carp0(SKEW_FUZZED))]
    with GatewayLab(specs, clients=1, upstream=False, ipv6=True) as lab:
        master, fuzzed = lab.gateways
        fzns = lab.lab.netns("fz")
        for key in ("all", "default"):  # the TAP arrives later: its kernel adds no IPv6 traffic
            lab.lab.sysctl(fzns, f"net.ipv6.conf.{key}.disable_ipv6", 1)
        # over-long frames reach gwb's socket; the bridge forgets junk source MACs soon
        lab.lab.link(lab.seg, lab.seg_port(fuzzed), mtu=JUMBO)
        lab.lab.link(fuzzed.netns, "lan", mtu=JUMBO)
        lab.lab.run(
            lab.seg, ["ip", "link", "set", "br-lan", "type", "bridge", "ageing_time", "1000"]
        )
        seeds = corpus(
            vip=IPv4Address(LAN_VIP),
            vip6=IPv6Address(LAN_VIP6),
            vhid=VHID,
            passphrase=PASSWORD,
            peer=IPv4Address("192.0.2.50"),
            peer6=IPv6Address("2001:db8::50"),
            peer_mac=bytes.fromhex("020000000050"),
            advbase=ADVBASE,
            advskew=(SKEW_MASTER + SKEW_FUZZED) // 2,  # unbroken, it moves neither node
        )
        mutator = Mutator(random.Random(seed), seeds)
        lab.start(master)
        for mode in dict.fromkeys(args.offload):
            mode_runs, fail = fuzz_mode(lab, fzns, mode == "on", mutator, frames, args.rate)
            runs += mode_runs
            if fail is not None:
                failovers.append(fail)
            if not all(r.ok for r in mode_runs) or fail is None:
                break
        master_alive = master.proc is not None and master.proc.poll() is None
        keep_tracebacks(master, 0, "master")  # it got the TAP port's frames, flooded
    print(f"Fuzzing gwb's ports, {frames} frames each, seed {seed}")
    print(table(runs, failovers))
    ok = (
        bool(runs)
        and all(r.ok for r in runs)
        and len(failovers) == len(dict.fromkeys(args.offload))
    )
    ok = ok and all(f.ok for f in failovers) and master_alive and not TRACEBACKS["master"]
    ok = ok and all(code == 0 for code in STOP_CODES)
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": host_info(load_before),
        "seed": seed,
        "frames_per_port": frames,
        "rate": args.rate,
        "seconds": round(time.monotonic() - started, 1),
        "seeds": {s.name: len(s.frame) for s in seeds},
        "runs": [r.__dict__ for r in runs],
        "failovers": [f.__dict__ for f in failovers],
        "master_alive_at_end": master_alive,
        "node_tracebacks": TRACEBACKS,
        "stop_exit_codes": STOP_CODES,
        "socket_ports": NO_SOCKET_PORTS,
        "ok": ok,
    }
    write_report(args.out, "fuzz", report)
    print("all checks passed" if ok else "CHECKS FAILED (see above)")
    return 0 if ok else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
