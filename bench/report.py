"""What every benchmark script does with its results: one JSON file under bench/results/, and
its tables as text."""

import json
import os
import platform
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any


def cpu_model() -> str:
    """The CPU's name as the kernel reports it (x86: "model name"; others: the machine type)."""
    try:
        with open("/proc/cpuinfo") as f:
            for row in f:
                key, _, value = row.partition(":")
                if key.strip() in ("model name", "Model", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_info(load_before: tuple[float, float, float]) -> dict[str, Any]:
    """The machine a run was made on; the load average says how shared it was (1, 5, 15 min)."""
    return {
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
    }


def write_report(directory: str, name: str, report: dict[str, Any]) -> str:
    """Write `report` as `<directory>/<name>-<timestamp>.json` and say where on stderr."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    print(f"written {path}", file=sys.stderr)
    return path


def text_table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, rule: bool = True) -> str:
    """Left-aligned columns two spaces apart, a rule under the header line unless `rule` is
    False; no trailing blanks. Every row has as many cells as `headers`."""
    cells = [list(headers), *(list(row) for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    if rule:
        lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)
