"""What a lab node wrote to its log: the text from an offset on (the lab appends across restarts)
and the Python tracebacks in it, for the benches' crash checks, and a clean stop that keeps both.
"""

import os

from vswitch.lab.gateway import Gateway, GatewayLab


def log_size(gw: Gateway) -> int:
    """Where the node's log ends now: pass it to `log_text` later for what came after."""
    return os.path.getsize(gw.log_path) if gw.log_path and os.path.exists(gw.log_path) else 0


def log_text(gw: Gateway, offset: int = 0) -> str:
    if not gw.log_path or not os.path.exists(gw.log_path):
        return ""
    with open(gw.log_path, "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def tracebacks(text: str, limit: int = 5) -> list[str]:
    """The tracebacks in a log text, each with the line before it (asyncio's "Exception in
    callback ..." or the node's own message), at most `limit`."""
    lines = text.splitlines()
    out: list[str] = []
    for i, line in enumerate(lines):
        if line.startswith("Traceback") and len(out) < limit:
            end = i + 1
            while end < len(lines) and (lines[end].startswith((" ", "\t")) or not lines[end]):
                end += 1
            out.append("\n".join(lines[max(0, i - 1) : end + 1]))
    return out


def stop_all(lab: GatewayLab) -> dict[str, dict[str, object]]:
    """SIGTERM every running node of `lab` (before the lab removes the logs): per node its exit
    status and the tracebacks its whole log holds, those written while stopping included."""
    out: dict[str, dict[str, object]] = {}
    for gw in lab.gateways:
        code = lab.stop(gw) if gw.proc is not None else None  # an exited one: its status
        out[gw.name] = {"exit": code, "tracebacks": tracebacks(log_text(gw))}
    return out


def node_logs_line(stopped: dict[str, dict[str, object]]) -> str:
    """One line on what `stop_all` found: exit statuses and tracebacks per node."""
    parts = []
    for name, seen in stopped.items():
        found = seen["tracebacks"]
        count = len(found) if isinstance(found, list) else 0
        parts.append(f"{name} exit {seen['exit']}, {count} traceback(s)")
    return (
        "node logs at the end (SIGTERM): "
        + "; ".join(parts)
        + (" (texts in the JSON)" if any(seen["tracebacks"] for seen in stopped.values()) else "")
    )
