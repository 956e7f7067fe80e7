"""What every benchmark script does with its results: one JSON file under bench/results/."""

import json
import os
import platform
import sys
import time
from typing import Any


def host_info(load_before: tuple[float, float, float]) -> dict[str, Any]:
    """The machine a run was made on; the load average says how shared it was (1, 5, 15 min)."""
    return {
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
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
