"""What a node process holds and spends, read from /proc: resident memory, open descriptors
(sampled), and CPU time (clock ticks split user/system, or nanoseconds on a CPU).

`ProcSampler` samples processes by pid from a thread of its own every `interval` seconds
(bench/soak.py, bench/hostile.py). A process that has gone is sampled as None, never raised.
"""

import os
import threading
import time
from dataclasses import dataclass


def rss_kib(pid: int) -> int | None:
    """VmRSS of `pid` in KiB, None if the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def fd_count(pid: int) -> int | None:
    """The number of open descriptors of `pid`, None if the process is gone."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def family(pid: int) -> list[int]:
    """`pid` and its living children (a node's forwarding workers)."""
    pids = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:  # its parent
                        pids.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return pids


def cpu_ticks(pids: list[int]) -> tuple[int, int]:
    """utime and stime of `pids` in clock ticks (SC_CLK_TCK); one gone counts nothing."""
    user = system = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11])
        system += int(fields[12])
    return user, system


def run_ns(pids: list[int]) -> int:
    """Nanoseconds `pids` ran on a CPU (/proc/PID/schedstat: finer than the clock ticks)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            continue
    return total


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class Sample:
    at: float  # monotonic seconds
    rss_kib: int | None
    fds: int | None


class ProcSampler:
    """Samples every pid of `pids` (name -> pid) until `close()`; `samples[name]` in order."""

    def __init__(self, pids: dict[str, int], interval: float) -> None:
        self.pids = dict(pids)
        self.interval = interval
        self.samples: dict[str, list[Sample]] = {name: [] for name in pids}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def sample(self) -> None:
        now = time.monotonic()
        with self._lock:
            for name, pid in self.pids.items():
                self.samples[name].append(Sample(now, rss_kib(pid), fd_count(pid)))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def series(self, name: str) -> list[Sample]:
        with self._lock:
            return list(self.samples[name])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(self.interval + 5)

    def __enter__(self) -> "ProcSampler":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
