"""Prometheus metrics: text exposition format 0.0.4 rendered from a status snapshot, served over
a minimal asyncio HTTP endpoint (GET /metrics; loopback by default, `[node] metrics`)."""

import asyncio
import contextlib
import logging
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from vswitch.status import STATES, NodeStatus, carpnodes

log = logging.getLogger("vswitch.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_LISTEN = "127.0.0.1:9812"
REQUEST_LIMIT = 8192
REQUEST_TIMEOUT = 5.0

Labels = tuple[tuple[str, str], ...]

PORT_COUNTERS = {
    "rx_packets": "Frames received on the port",
    "rx_bytes": "Bytes received on the port",
    "rx_drops": "Frames dropped on receive",
    "tx_packets": "Frames sent on the port",
    "tx_bytes": "Bytes sent on the port",
    "tx_drops": "Frames dropped on send",
}
CARPSTATS_HELP = "carp(4) statistics counter carps_{} (struct carpstats)"


@dataclass
class Family:
    name: str
    type: str  # "gauge" | "counter"
    help: str
    samples: list[tuple[Labels, float]] = field(default_factory=list)

    def add(self, value: float, **labels: object) -> None:
        self.samples.append((tuple((k, str(v)) for k, v in labels.items()), float(value)))


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def exposition(families: Iterable[Family]) -> str:
    lines = []
    for family in families:
        if not family.samples:
            continue
        lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.type}")
        for labels, value in family.samples:
            text = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels)
            series = f"{family.name}{{{text}}}" if text else family.name
            lines.append(f"{series} {_number(value)}")
    return "\n".join(lines) + "\n"


def families(status: NodeStatus) -> list[Family]:
    node = status["node"]
    fams: dict[str, Family] = {}

    def fam(name: str, type_: str, help_: str) -> Family:
        return fams.setdefault(name, Family(name, type_, help_))

    fam("vswitch_uptime_seconds", "gauge", "Seconds since the node started").add(
        status["uptime"], node=node
    )
    for name, value in status["sysctl"].items():
        fam("vswitch_carp_sysctl", "gauge", "net.inet.carp.* values").add(
            value, node=node, sysctl=name
        )
    for group, value in status["groups"].items():
        fam("vswitch_carp_group_demote", "gauge", "Demote counter of an interface group").add(
            value, node=node, group=group
        )
    for carpif in status["carp"]:
        where: dict[str, object] = {"node": node, "carpif": carpif["name"]}
        fam("vswitch_carp_advbase", "gauge", "advbase of the carp interface").add(
            carpif["advbase"], **where
        )
        fam("vswitch_carp_demote", "gauge", "Demote value the carp interface advertises").add(
            carpif["demote"], **where
        )
        fam("vswitch_carp_carrier", "gauge", "1 while any carpnode of the interface is MASTER").add(
            int(carpif["carrier"]), **where
        )
    for carpif, vhe in carpnodes(status):
        where = {"node": node, "carpif": carpif["name"], "vhid": vhe["vhid"]}
        state = STATES.index(vhe["state"]) if vhe["state"] in STATES else -1
        fam("vswitch_carp_state", "gauge", "carpnode state: 0 INIT, 1 BACKUP, 2 MASTER").add(
            state, **where
        )
        for name in STATES:
            fam("vswitch_carp_in_state", "gauge", "1 for the carpnode's current state").add(
                int(vhe["state"] == name), **where, state=name.lower()
            )
        fam("vswitch_carp_advskew", "gauge", "advskew of the carpnode").add(vhe["advskew"], **where)
        fam("vswitch_carp_transitions_total", "counter", "State changes of the carpnode").add(
            vhe["transitions"], **where
        )
        for peer in vhe["peers"]:
            fam(
                "vswitch_carp_peer_age_seconds",
                "gauge",
                "Seconds since an advertisement from the peer was last heard",
            ).add(peer["age"], **where, source=peer["source"])
    for name, value in status["carpstats"].items():
        fam(f"vswitch_carp_{name}_total", "counter", CARPSTATS_HELP.format(name)).add(
            value, node=node
        )
    for sw in status["switches"]:
        fam("vswitch_switch_mac_entries", "gauge", "Learned MAC addresses of the switch").add(
            sw["mac_table"], node=node, switch=sw["name"]
        )
        for port in sw["ports"]:
            where = {"node": node, "switch": sw["name"], "port": port["name"]}
            fam("vswitch_port_link", "gauge", "1 while the port has link").add(
                int(port["link"]), **where
            )
            values = [port["rx_packets"], port["rx_bytes"], port["rx_drops"]]
            values += [port["tx_packets"], port["tx_bytes"], port["tx_drops"]]
            for (counter, help_), value in zip(PORT_COUNTERS.items(), values, strict=True):
                fam(f"vswitch_port_{counter}_total", "counter", help_).add(value, **where)
    if "events" in status:
        ev = status["events"]
        fam("vswitch_events_total", "counter", "Events published").add(ev["seq"], node=node)
        fam("vswitch_event_subscribers", "gauge", "Event stream readers").add(
            ev["subscribers"], node=node
        )
        fam("vswitch_event_subscribers_dropped_total", "counter", "Slow readers dropped").add(
            ev["dropped"], node=node
        )
    if "hooks" in status:
        hooks = status["hooks"]
        fam("vswitch_hooks_queued", "gauge", "Events waiting for hooks").add(
            hooks["queued"], node=node
        )
        for key in ("runs", "failures", "timeouts", "overflows"):
            fam(f"vswitch_hook_{key}_total", "counter", f"Hook {key}").add(hooks[key], node=node)
    return list(fams.values())


def render(status: NodeStatus) -> str:
    return exposition(families(status))


def parse_listen(text: str) -> tuple[str, int]:
    """`127.0.0.1:9812` or `[::1]:9812`."""
    match = re.fullmatch(r"(?:\[([0-9a-fA-F:.]+)\]|([^:\[\]]+)):(\d{1,5})", text)
    if match is None or int(match.group(3)) > 65535:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return match.group(1) or match.group(2), int(match.group(3))


class MetricsServer:
    """GET /metrics -> the exposition of `status()`; anything else 404 (or 405)."""

    def __init__(self, listen: str, status: Callable[[], NodeStatus]) -> None:
        self.host, self.port = parse_listen(listen)
        self._status = status
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._client, self.host, self.port, limit=REQUEST_LIMIT
        )
        self.port = self._server.sockets[0].getsockname()[1]  # the real one when 0 was asked

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
            status, body, extra = self._answer(head.split(b"\r\n", 1)[0])
            writer.write(_response(status, body, extra))
            await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.LimitOverrunError:
            writer.write(_response("431 Request Header Fields Too Large", b"too large\n", ""))
        finally:
            with contextlib.suppress(ConnectionError):
                writer.close()

    def _answer(self, request_line: bytes) -> tuple[str, bytes, str]:
        parts = request_line.decode("latin-1").split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return "400 Bad Request", b"bad request\n", ""
        method, target, _ = parts
        if target.split("?", 1)[0] != "/metrics":
            return "404 Not Found", b"not found; try /metrics\n", ""
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", b"method not allowed\n", "Allow: GET, HEAD\r\n"
        try:
            body = render(self._status()).encode()
        except Exception:
            log.exception("metrics: cannot render the status")
            return "500 Internal Server Error", b"internal error\n", ""
        if method == "HEAD":
            return "200 OK", b"", f"Content-Length: {len(body)}\r\n"
        return "200 OK", body, ""


def _response(status: str, body: bytes, extra: str) -> bytes:
    content_type = CONTENT_TYPE if status == "200 OK" else "text/plain; charset=utf-8"
    length = "" if "Content-Length" in extra else f"Content-Length: {len(body)}\r\n"
    head = f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n{length}{extra}"
    return (head + "Connection: close\r\n\r\n").encode() + body
