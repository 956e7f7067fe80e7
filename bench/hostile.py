#!/usr/bin/env python3
"""Hostile clients against a running master: 1000 idle metrics connections, 32 idle control
clients and a full house of event subscribers at once; the CLI must still answer within 1 s,
advertisements must stay on time and the node's descriptors bounded.

    .venv/bin/python bench/hostile.py [--seconds 60] [--advbase 1]   (root)
    .venv/bin/python bench/hostile.py --quick                       (10 s)

One gateway lab (vswitch/lab/gateway.py) with the usual pair on the LAN (gwa advskew 0, the
master; gwb advskew 100), each with a metrics endpoint in its namespace (127.0.0.1:9812).
During the attack this script holds, against gwa:

- `--metrics` (1000) TCP connections to its metrics endpoint, opened from inside its namespace,
  that never send a request. The node serves 16 at a time (vswitch/metrics.py MAX_CONNECTIONS),
  aborts the rest as soon as it accepts them, and answers an idle one 408 after 5 s; every
  closed connection is opened again (at most `--reconnect-rate` per second in all), so the
  endpoint sees a storm for the whole attack;
- `--subscribers` (28: every slot event subscribers may take, vswitch/control.py MAX_CLIENTS 32
  less RESERVE 4) event streams on its control socket, which are never evicted, plus one more
  that must be refused ("too many event subscribers");
- `--control` (32) idle control clients that never send a request: with the subscribers they
  fill the node's 32 slots, each new one evicts the longest-idle one, and each evicted one
  connects again (same rate limit; `--reconnect-rate 0` opens every connection once, no storm).

Measured while it lasts: `vswitch status -s SOCK` (the CLI, a new process each time) once a
second, its wall-clock time and exit status; gwa's advertisements as they enter the bridge
(tcpdump on its bridge port in "seg", kernel timestamps), the largest gap between two against
the advertisement interval, also for a quiet period before the attack; gwa's open descriptors
(/proc, every 0.2 s). Asserted: every CLI run succeeds within 1 s, the largest gap during the
attack stays under interval + `--late` (0.25 s), the descriptor count stays under its quiet
count + 16 (metrics) + 32 (control) + 64 (the listen backlog the loop may accept in one go)
+ 8, gwb never takes over, gwa does not exit, and both stop cleanly on SIGTERM at the end
(exit 0; tracebacks in the logs are reported). The node's own counts of what it refused (status
`channels`: metrics refused and timeouts, control dropped by reason) are reported. Prints a
table and writes JSON under bench/results/; the lab and every connection are removed at the
end, also on errors and Ctrl-C.
"""

import argparse
import contextlib
import errno
import itertools
import os
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from report import host_info, text_table, write_report

from carp.timing import interval_us, seconds
from vswitch import netlink
from vswitch.control import MAX_CLIENTS, RESERVE
from vswitch.lab.capture import Capture
from vswitch.lab.gateway import Gateway, GatewayLab, pair_specs
from vswitch.lab.netns import preflight
from vswitch.lab.nodelog import node_logs_line, stop_all
from vswitch.lab.procstat import ProcSampler, cmdline
from vswitch.metrics import BACKLOG, MAX_CONNECTIONS

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRICS_HOST, METRICS_PORT = "127.0.0.1", 9812
CLI_LIMIT = 1.0
FD_SLACK = 8
SETTLE = 30.0
QUICK_SECONDS = 10.0
SUBSCRIBE = b'{"id":1,"cmd":"events","snapshot":false}\n'


# -- the attackers -------------------------------------------------------------------------------


@dataclass
class Conn:
    kind: str  # "metrics" | "control" | "subscriber"
    sock: socket.socket
    established: bool = False
    first: bytes = b""  # the start of what the node sent (its answer or refusal)


@dataclass
class StormCounts:
    opened: Counter[str] = field(default_factory=Counter)
    established: Counter[str] = field(default_factory=Counter)
    closed_by_node: Counter[str] = field(default_factory=Counter)
    connect_failed: Counter[str] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)  # kind: first line of what came


class Storm:
    """Holds `want[kind]` connections of each kind open from a thread, opening again what the
    node closes, at most `rate` (re)connections per second after the first round."""

    def __init__(self, gw: Gateway, want: dict[str, int], rate: float) -> None:
        self.gw = gw
        self.want = want
        self.rate = rate
        self.counts = StormCounts()
        self.sel = selectors.DefaultSelector()
        self.conns: dict[int, Conn] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _open(self, kind: str) -> None:
        self.counts.opened[kind] += 1
        if kind == "metrics":
            with netlink.in_netns(self.gw.netns):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            code = sock.connect_ex((METRICS_HOST, METRICS_PORT))
            ok = code in (0, errno.EINPROGRESS)
        else:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            code = sock.connect_ex(self.gw.socket_path)
            ok = code == 0
        if not ok:
            self.counts.connect_failed[kind] += 1
            sock.close()
            return
        conn = Conn(kind, sock)
        self.conns[sock.fileno()] = conn
        if kind == "subscriber":
            with contextlib.suppress(OSError):
                sock.send(SUBSCRIBE)
        self.sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)

    def _close(self, conn: Conn, by_node: bool) -> None:
        self.sel.unregister(conn.sock)
        del self.conns[conn.sock.fileno()]
        conn.sock.close()
        if by_node:
            self.counts.closed_by_node[conn.kind] += 1
            if conn.first:
                line = conn.first.split(b"\n", 1)[0][:80].decode(errors="replace")
                self.counts.answers[f"{conn.kind}: {line}"] += 1

    def _missing(self) -> dict[str, int]:
        have = Counter(c.kind for c in self.conns.values())
        return {k: n - have[k] for k, n in self.want.items() if n > have[k]}

    def _run(self) -> None:
        for kind, n in self._missing().items():  # the first round at once
            for _ in range(n):
                self._open(kind)
        # a budget per kind: the thousand metrics connections the node aborts at once must not
        # starve the few control clients, nor the other way round
        budget = dict.fromkeys(self.want, 0.0)
        last = time.monotonic()
        while not self._stop.is_set():
            for key, mask in self.sel.select(0.05):
                conn: Conn = key.data
                if mask & selectors.EVENT_WRITE and not conn.established:
                    conn.established = True
                    self.counts.established[conn.kind] += 1
                    self.sel.modify(conn.sock, selectors.EVENT_READ, conn)
                if mask & selectors.EVENT_READ:
                    try:
                        data = conn.sock.recv(4096)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if not data:
                        self._close(conn, by_node=True)
                    elif len(conn.first) < 200:
                        conn.first += data
            now = time.monotonic()
            for kind, n in self._missing().items():
                budget[kind] = min(self.rate, budget[kind] + (now - last) * self.rate)
                while n > 0 and budget[kind] >= 1:
                    budget[kind] -= 1
                    n -= 1
                    self._open(kind)
            last = now

    def have(self) -> dict[str, int]:
        return dict(Counter(c.kind for c in list(self.conns.values())))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for conn in list(self.conns.values()):
            self._close(conn, by_node=False)
        self.sel.close()


# -- measuring -----------------------------------------------------------------------------------


CLI_ERRORS: Counter[str] = Counter()  # what a failing CLI said


def cli_status(gw: Gateway) -> tuple[float, int]:
    """(wall-clock seconds, exit status) of one `vswitch status -s SOCK`."""
    start = time.monotonic()
    argv = [sys.executable, "-m", "vswitch", "status", "-s", gw.socket_path]
    try:
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, timeout=30)
        code = done.returncode
        if code:
            CLI_ERRORS[done.stderr.decode(errors="replace").strip()[:200]] += 1
    except subprocess.TimeoutExpired:
        code = -1
        CLI_ERRORS["timed out after 30 s"] += 1
    return round(time.monotonic() - start, 3), code


def advert_gaps(cap: Capture, since: float, until: float) -> list[float]:
    """Gaps between consecutive captured frames whose wall-clock stamps lie in [since, until]."""
    stamps = sorted(ts for ts, _ in cap.frames() if since <= ts <= until)
    return [round(b - a, 4) for a, b in itertools.pairwise(stamps)]


@dataclass
class Period:
    seconds: float
    adverts: int
    max_gap: float | None
    cli: list[tuple[float, int]]
    fd_max: int | None


def watch(gw: Gateway, cap: Capture, duration: float, sampler: ProcSampler) -> Period:
    """CLI once a second for `duration`, then the adverts and descriptors of that period."""
    wall0, mono0 = time.time(), time.monotonic()
    cli = []
    while time.monotonic() - mono0 < duration:
        tick = time.monotonic()
        cli.append(cli_status(gw))
        time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    wall1, mono1 = time.time(), time.monotonic()
    time.sleep(0.5)  # tcpdump writes what it saw up to now
    gaps = advert_gaps(cap, wall0, wall1)
    fds = [s.fds for s in sampler.series(gw.name) if mono0 <= s.at <= mono1 and s.fds is not None]
    return Period(
        round(mono1 - mono0, 2),
        len(gaps) + 1,
        max(gaps) if gaps else None,
        cli,
        max(fds, default=None),
    )


def transitions(lab: GatewayLab, gw: Gateway) -> int:
    st = lab.request(gw, {"cmd": "status"})
    return sum(n["transitions"] for c in st["carp"] for n in c["carpnodes"]) if st else -1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the attack")
    parser.add_argument("--metrics", type=int, default=1000, help="idle metrics connections")
    parser.add_argument("--control", type=int, default=MAX_CLIENTS, help="idle control clients")
    parser.add_argument(
        "--subscribers", type=int, default=MAX_CLIENTS - RESERVE + 1, help="event streams"
    )
    parser.add_argument(
        "--reconnect-rate", type=float, default=500.0, help="per second and kind (0: none)"
    )
    parser.add_argument("--advbase", type=int, default=1, choices=range(0, 256), metavar="0..255")
    parser.add_argument("--late", type=float, default=0.25, help="tolerated advert lateness, s")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_SECONDS:g} s of attack")
    parser.add_argument("--out", default=RESULTS, help="directory for the JSON result")
    args = parser.parse_args(argv)
    reason = preflight("hostile.py", ("ip", "ping", "tcpdump"))
    if reason is not None:
        print(reason, file=sys.stderr)
        return 2
    duration = QUICK_SECONDS if args.quick else args.seconds
    if not 2 <= duration <= 3600:
        parser.error("--seconds must be 2..3600")
    if not 0 <= args.reconnect_rate <= 100_000:
        parser.error("--reconnect-rate must be 0..100000")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.metrics + args.control + args.subscribers + 256
    if hard != resource.RLIM_INFINITY and hard < need:
        parser.error(f"needs {need} descriptors, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))
    load_before = os.getloadavg()
    specs = pair_specs(ipv6=False, wan=False, advbase=args.advbase)
    for spec in specs:
        spec.metrics = f"{METRICS_HOST}:{METRICS_PORT}"
    interval = seconds(interval_us(args.advbase, 0))
    with GatewayLab(specs, clients=1, upstream=False, ipv6=False) as lab:
        gwa, gwb = lab.gateways
        lab.start(gwa)
        lab.start(gwb)
        lab.wait_for(lambda: lab.state(gwa) == "MASTER" and lab.state(gwb) == "BACKUP", SETTLE)
        assert gwa.proc is not None
        if "vswitch" not in cmdline(gwa.proc.pid):  # `ip netns exec` execs: the pid is the node's
            raise RuntimeError(f"pid {gwa.proc.pid} is not the node: {cmdline(gwa.proc.pid)!r}")
        quiet = max(5.0, min(10.0, duration))
        count = int((quiet + duration) / interval * 2) + 100
        cap = lab.capture(
            lab.seg,
            lab.seg_port(gwa),
            "ip proto 112",
            count=count,
            limit=quiet + duration + 60,
            inbound=True,
        )
        skew_b = transitions(lab, gwb)
        with cap, ProcSampler({gwa.name: gwa.proc.pid}, 0.2) as sampler:
            before = watch(gwa, cap, quiet, sampler)
            fd_quiet = min(s.fds for s in sampler.series(gwa.name) if s.fds is not None)
            want = {
                "metrics": args.metrics,
                "subscriber": args.subscribers,
                "control": args.control,
            }
            storm = Storm(gwa, want, args.reconnect_rate)
            try:
                time.sleep(1.0)  # the first round is in
                held = storm.have()
                during = watch(gwa, cap, duration, sampler)
                held_end = storm.have()
            finally:
                storm.close()
        time.sleep(1.0)
        alive = gwa.proc is not None and gwa.proc.poll() is None
        final = lab.request(gwa, {"cmd": "status"}) if alive else None
        took_over = transitions(lab, gwb) != skew_b
        stopped = stop_all(lab)  # SIGTERM; whatever the nodes logged, stopping included
    fd_bound = fd_quiet + MAX_CONNECTIONS + MAX_CLIENTS + BACKLOG + FD_SLACK
    cli_ok = bool(during.cli) and all(code == 0 and t < CLI_LIMIT for t, code in during.cli)
    gap_ok = during.max_gap is not None and during.max_gap < interval + args.late
    fd_ok = during.fd_max is not None and during.fd_max <= fd_bound
    ok = cli_ok and gap_ok and fd_ok and alive and not took_over
    ok = ok and all(seen["exit"] == 0 for seen in stopped.values())  # a clean SIGTERM
    channels = final.get("channels", {}) if isinstance(final, dict) else {}
    print(f"Hostile clients against gwa for {duration:g} s", end=" ")
    print(f"(advbase {args.advbase}, advertisement interval {interval:.3f} s)")
    print(f"held at the start: {held}, at the end: {held_end} (wanted {want})")
    print(f"opened {dict(storm.counts.opened)}, established {dict(storm.counts.established)}")
    print(f"closed by the node {dict(storm.counts.closed_by_node)}")
    for answer, n in storm.counts.answers.most_common(8):
        print(f"  {n:6d}  {answer}")
    print(table(before, during, interval + args.late, fd_bound, (cli_ok, gap_ok, fd_ok)))
    for message, n in CLI_ERRORS.items():
        print(f"CLI failed {n} time(s): {message}")
    print(f"gwa alive: {yes(alive)}; gwb took over: {'YES' if took_over else 'no'}")
    print(node_logs_line(stopped))
    print(f"gwa channels: metrics {channels.get('metrics')}, control {channels.get('control')}")
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": host_info(load_before),
        "seconds": duration,
        "advbase": args.advbase,
        "interval_s": interval,
        "wanted": want,
        "held_start": held,
        "held_end": held_end,
        "storm": {k: dict(v) for k, v in storm.counts.__dict__.items()},
        "quiet": before.__dict__,
        "attack": during.__dict__,
        "fd_quiet": fd_quiet,
        "fd_bound": fd_bound,
        "channels": channels,
        "cli_errors": dict(CLI_ERRORS),
        "alive": alive,
        "backup_took_over": took_over,
        "stopped": stopped,
        "ok": ok,
    }
    write_report(args.out, "hostile", report)
    print("all checks passed" if ok else "CHECKS FAILED (see above)")
    return 0 if ok else 1


def table(
    before: Period, during: Period, gap_bound: float, fd_bound: int, oks: tuple[bool, ...]
) -> str:
    def cli(p: Period, pick: str) -> str:
        times = [t for t, _ in p.cli]
        if not times:
            return "-"
        return fmt(statistics.median(times) if pick == "median" else max(times))

    def failures(p: Period) -> str:
        return str(sum(1 for _, code in p.cli if code))

    cli_ok, gap_ok, fd_ok = oks
    rows = [
        ("CLI status, median s", cli(before, "median"), cli(during, "median"), "", ""),
        ("CLI status, max s", cli(before, "max"), cli(during, "max"), f"< {CLI_LIMIT:g}", ""),
        ("CLI failures", failures(before), failures(during), "0", yes(cli_ok)),
        ("adverts seen", str(before.adverts), str(during.adverts), "", ""),
        (
            "largest advert gap s",
            fmt(before.max_gap),
            fmt(during.max_gap),
            f"< {gap_bound:.3f}",
            yes(gap_ok),
        ),
        ("descriptors, max", str(before.fd_max), str(during.fd_max), f"<= {fd_bound}", yes(fd_ok)),
    ]
    return text_table(("", "quiet", "attack", "bound", "ok"), rows)


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def yes(flag: bool) -> str:
    return "yes" if flag else "NO"


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
