"""Read batches and processes on the TAP path: the measurement behind READ_BYTES and workers.

Not what users run (that is throughput.py): the least a userspace switch can do, a relay
between two TAPs with TSO (virtio-net headers, as the node's default), so that only the batch
policy and the number of processes differ. Two client namespaces, `a` (192.0.2.101) and `b`
(192.0.2.102), each with a TAP that this script creates and moves there (vswitch/tap.py
`TapPort`); for each policy the relay runs in forked processes of this script (one per TAP
queue); iperf3 measures 1 and 4 TCP streams a to b, then ping the RTT through it (median and
p99 of 500 echoes 5 ms apart) with the relay's CPU time per echo. Policies:

| policy | a relay process |
| --- | --- |
| `frames64` | reads up to 64 frames, then writes them (the node's batch before READ_BYTES) |
| `frames16`, `frames4` | the same with 16 and 4 frames |
| `bytes256k` | reads up to 64 frames or 256 KiB (vswitch/port.py READ_BYTES), then writes |
| `each` | writes every frame as soon as it is read |
| `bytes256k-x2` | `bytes256k` in two processes, each on its own queue of two-queue TAPs |

    sudo PYTHONPATH=. .venv/bin/python bench/batching.py [--duration 5] [--policies ...]
"""

import argparse
import contextlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from typing import Any

from report import host_info, text_table, write_report

from vswitch.lab.netns import Lab, preflight
from vswitch.lab.procstat import run_ns
from vswitch.port import READ_BYTES
from vswitch.tap import TapPort

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
IP_A, IP_B = "192.0.2.101", "192.0.2.102"
POLICIES = {  # name -> (frames per batch, byte budget or None, processes)
    "frames64": (64, None, 1),
    "frames16": (16, None, 1),
    "frames4": (4, None, 1),
    "bytes256k": (64, READ_BYTES, 1),
    "each": (1, None, 1),
    "bytes256k-x2": (64, READ_BYTES, 2),
}
PINGS = 500
RELAY_LIFETIME = 120.0  # seconds: a relay process ends by itself even if this script dies


def relay(pairs: list[tuple[int, int]], frames: int, budget: int | None) -> None:
    """Forward frames between the fds of `pairs` (in, out) until killed or RELAY_LIFETIME."""
    ep = select.epoll()
    out = dict(pairs)
    for fd, _ in pairs:
        ep.register(fd, select.EPOLLIN)
    end = time.monotonic() + RELAY_LIFETIME
    while time.monotonic() < end:
        for fd, _ in ep.poll(1.0):
            batch: list[bytes] = []
            size = 0
            for _ in range(frames):
                try:
                    frame = os.read(fd, 65600)
                except BlockingIOError:
                    break
                batch.append(frame)
                size += len(frame)
                if budget is not None and size >= budget:
                    break
            for frame in batch:
                with contextlib.suppress(OSError):  # a full queue: the frame is dropped
                    os.write(out[fd], frame)


def echoes(lab: Lab, a: str, relays: list[int]) -> dict[str, float]:
    """Ping RTT median and p99 through the relay (PINGS echoes, 5 ms apart), and the relay's
    CPU time per echo: two frames, each a wake-up, a read, a write and the read that finds the
    queue empty, plus the receiving stack run inside the write."""
    before = run_ns(relays)
    text = lab.run(a, ["ping", "-n", "-c", str(PINGS), "-i", "0.005", IP_B], timeout=60).stdout
    spent = run_ns(relays) - before
    rtts = sorted(float(m) for m in re.findall(r"time=([\d.]+) ms", text))
    if len(rtts) < PINGS // 2:
        raise RuntimeError(f"ping through the relay: {len(rtts)} of {PINGS} echoes answered")
    return {
        "rtt_median_ms": rtts[len(rtts) // 2],
        "rtt_p99_ms": rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))],
        "cpu_us_per_echo": round(spent / len(rtts) / 1000, 1),
    }


def measure(policy: str, duration: float) -> dict[str, float]:
    frames, budget, procs = POLICIES[policy]
    with Lab() as lab:
        a, b = lab.netns("a"), lab.netns("b")
        ta = TapPort(lab.name("ta"), vnet_hdr=10, netns=a, queues=procs, addresses=[f"{IP_A}/24"])
        tb = TapPort(lab.name("tb"), vnet_hdr=10, netns=b, queues=procs, addresses=[f"{IP_B}/24"])
        kids = []
        try:
            for i in range(procs):
                pid = os.fork()
                if pid == 0:  # the relay: nothing of the lab's clean-up runs here
                    try:
                        pairs = [(ta.fds[i], tb.fds[i]), (tb.fds[i], ta.fds[i])]
                        relay(pairs, frames, budget)
                    finally:
                        os._exit(0)
                kids.append(pid)
            if not lab.ping(a, IP_B, deadline=10):
                raise RuntimeError(f"{policy}: no connectivity through the relay")
            server = lab.spawn(
                b,
                ["iperf3", "-s", "-B", IP_B],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                deadline = time.monotonic() + 10
                while ":5201 " not in lab.run(b, ["ss", "-tln"]).stdout:
                    if time.monotonic() > deadline:
                        raise RuntimeError("iperf3 server did not start")
                    time.sleep(0.05)
                out: dict[str, float] = {}
                for streams in (1, 4):
                    argv = ["iperf3", "-c", IP_B, "-t", f"{duration:g}", "-P", str(streams), "-J"]
                    text = lab.run(a, argv, timeout=duration + 30, check=False).stdout
                    result = json.loads(text)
                    bps = result["end"]["sum_received"]["bits_per_second"]
                    out[f"tcp{streams}_gbps"] = round(float(bps) / 1e9, 3)
                out |= echoes(lab, a, kids)
                return out
            finally:
                lab.stop(server)
        finally:
            for pid in kids:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            ta.close()
            tb.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per iperf3 run")
    parser.add_argument("--policies", nargs="+", choices=list(POLICIES), default=list(POLICIES))
    parser.add_argument("--out", default=RESULTS, help="directory for the JSON result")
    args = parser.parse_args(argv)
    if not 1 <= args.duration <= 60:
        parser.error("--duration must be 1..60 s")
    reason = preflight("batching.py", ["ip", "ping", "iperf3"])
    if reason is not None:
        print(reason, file=sys.stderr)
        return 2
    load_before = os.getloadavg()
    results: dict[str, dict[str, float]] = {}
    for policy in args.policies:
        print(f"{policy} ...", file=sys.stderr, flush=True)
        results[policy] = measure(policy, args.duration)
    rows = [
        [
            p,
            f"{r['tcp1_gbps']:.2f}",
            f"{r['tcp4_gbps']:.2f}",
            f"{r['rtt_median_ms']:.3f} / {r['rtt_p99_ms']:.3f}",
            f"{r['cpu_us_per_echo']:.1f}",
        ]
        for p, r in results.items()
    ]
    head = (
        "policy",
        "TCP 1 stream (Gbit/s)",
        "TCP 4 streams (Gbit/s)",
        "ping median / p99 (ms)",
        "relay CPU per echo (us)",
    )
    print(text_table(head, rows))
    report: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": host_info(load_before),
        "duration_s": args.duration,
        "read_bytes": READ_BYTES,
        "results": results,
    }
    write_report(args.out, "batching", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
