"""Show a running node: switches, ports, carp interfaces, carpnodes, peers, statistics."""

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from vswitch.ctl.client import ControlClient, add_socket_options, run_client
from vswitch.status import NodeStatus, interface_status

CLEAR = "\x1b[H\x1b[2J"  # cursor home, erase screen


def configure(parser: argparse.ArgumentParser) -> None:
    add_socket_options(parser)
    parser.add_argument("--json", action="store_true", help="print the raw snapshot as JSON")
    parser.add_argument("--watch", action="store_true", help="redraw every second until Ctrl-C")


def run(args: argparse.Namespace) -> int:
    def body(client: ControlClient) -> int:
        if args.watch:
            return watch(lambda: render(client.request("status"), args.json), sys.stdout)
        print(render(client.request("status"), args.json))
        return 0

    return run_client(args, body)


def render(status: NodeStatus, as_json: bool = False) -> str:
    return json.dumps(status, indent=2) if as_json else format_status(status)


def watch(
    draw: Callable[[], str],
    out: TextIO,
    interval: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
    rounds: int | None = None,
) -> int:
    """Redraw in place until Ctrl-C (or `rounds` redraws)."""
    done = 0
    try:
        while rounds is None or done < rounds:
            out.write(CLEAR + draw() + "\n")
            out.flush()
            done += 1
            if rounds is None or done < rounds:
                sleep(interval)
    except KeyboardInterrupt:
        out.write("\n")
    return 0


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    cells = [[str(h) for h in headers]] + [["-" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    days, whole = divmod(whole, 86400)
    hours, whole = divmod(whole, 3600)
    minutes, secs = divmod(whole, 60)
    text = f"{hours}h{minutes:02d}m{secs:02d}s" if hours or days else f"{minutes}m{secs:02d}s"
    return f"{days}d{text}" if days else text


def format_status(status: NodeStatus) -> str:
    sysctl = " ".join(f"{k} {v}" for k, v in status["sysctl"].items())
    lines = [f"node {status['node']}  up {duration(status['uptime'])}  {sysctl}", ""]
    port_rows: list[list[Any]] = []
    for sw in status["switches"]:
        first: list[Any] = [sw["name"], sw["mode"], sw["mac_table"]]
        if not sw["ports"]:
            port_rows.append(first + [None] * 9)
        for index, p in enumerate(sw["ports"]):
            port_rows.append(
                (first if index == 0 else ["", "", ""])
                + [p["name"], p["type"], "up" if p["link"] else "down"]
                + [p["rx_packets"], p["rx_bytes"], p["rx_drops"]]
                + [p["tx_packets"], p["tx_bytes"], p["tx_drops"]]
            )
    headers = ["SWITCH", "MODE", "MACS", "PORT", "TYPE", "LINK"]
    headers += ["RX PKTS", "RX BYTES", "RX DROPS", "TX PKTS", "TX BYTES", "TX DROPS"]
    lines += [*table(headers, port_rows), ""]
    carp_rows: list[list[Any]] = []
    peer_rows: list[list[Any]] = []
    for c in status["carp"]:
        flags = ("up" if c["admin_up"] else "down") + ("" if c["running"] else ",not running")
        for v in c["carpnodes"]:
            carp_rows.append(
                [
                    *(c["name"], c["carpdev"], flags, interface_status(c), c["balancing"]),
                    *(c["demote"], v["vhid"], v["state"], c["advbase"], v["advskew"]),
                    *(v["transitions"], duration(v["since"]), v["reason"]),
                ]
            )
            for peer in v["peers"]:
                peer_rows.append(
                    [
                        *(c["name"], v["vhid"], peer["source"], peer["advbase"]),
                        *(peer["advskew"], peer["demote"], duration(peer["age"])),
                    ]
                )
    headers = ["CARP", "CARPDEV", "IF", "STATUS", "BALANCING", "DEMOTE", "VHID", "STATE"]
    headers += ["ADVBASE", "ADVSKEW", "CHANGES", "SINCE", "LAST REASON"]
    lines += [*table(headers, carp_rows), ""]
    lines += ["peers last heard:"]
    if peer_rows:
        headers = ["CARP", "VHID", "SOURCE", "ADVBASE", "ADVSKEW", "DEMOTE", "AGE"]
        lines += table(headers, peer_rows)
    else:
        lines += ["  none"]
    groups = " ".join(f"{g}={n}" for g, n in status["groups"].items()) or "none"
    lines += ["", f"demote counters: {groups}", "carpstats:"]
    lines += grid(list(status["carpstats"].items()))
    # the counters that explain what carpstats cannot: advertisements the IP layer dropped before
    # carp saw them (a wrong unicast carppeer is `notours`), and the per-frame carp rules
    for title, counters in (
        ("ip_drops (by the IP layer, before carp input; non-zero)", status.get("ip_drops")),
        ("datapath (the per-frame carp rules; non-zero)", status.get("datapath")),
    ):
        if counters is not None:  # NotRequired: a node may not report them
            moved = [(k, v) for k, v in counters.items() if v]
            lines += ["", f"{title}:", *(grid(moved) or ["  none"])]
    return "\n".join(lines)


def grid(counters: Sequence[tuple[str, int]]) -> list[str]:
    """`name value` pairs four to a line, indented, as the carpstats block."""
    return [
        "  " + "  ".join(f"{k} {v}".ljust(16) for k, v in counters[i : i + 4]).rstrip()
        for i in range(0, len(counters), 4)
    ]
