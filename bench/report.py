"""What every benchmark script does with its results: one JSON file under bench/results/."""

import json
import os
import sys
import time
from typing import Any


def write_report(directory: str, name: str, report: dict[str, Any]) -> str:
    """Write `report` as `<directory>/<name>-<timestamp>.json` and say where on stderr."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    print(f"written {path}", file=sys.stderr)
    return path
