"""Prometheus metrics: text exposition format 0.0.4 rendered from a status snapshot, served over
a minimal asyncio HTTP endpoint (GET /metrics; loopback by default, `[node] metrics`).

The endpoint is a side channel on the node's loop, so it is bounded in every direction: at most
`max_connections` at once (more are closed as soon as accepted, so a reconnect storm cannot eat
the node's descriptors), each connection bounded in time (request and answer) and size, and the
text rendered at most once per `cache` seconds whatever the scrape rate.
"""

import asyncio
import functools
import logging
import math
import platform
import re
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from vswitch.cli import version
from vswitch.status import STATES, NodeStatus, carpnodes

log = logging.getLogger("vswitch.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_LISTEN = "127.0.0.1:9812"
REQUEST_LIMIT = 8192  # bytes of request head
REQUEST_TIMEOUT = 5.0  # seconds for the whole request head, and again for the answer
MAX_CONNECTIONS = 16
RENDER_CACHE = 1.0  # seconds a rendered text is served again
BACKLOG = 64

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


@functools.cache
def build() -> dict[str, str]:
    """What this process runs: looked up once (importlib.metadata reads files)."""
    return {"version": version(), "python": platform.python_version()}


def families(status: NodeStatus) -> list[Family]:
    node = status["node"]
    fams: dict[str, Family] = {}

    def fam(name: str, type_: str, help_: str) -> Family:
        return fams.setdefault(name, Family(name, type_, help_))

    fam("vswitch_build_info", "gauge", "Always 1: the vswitch and Python versions running").add(
        1, node=node, **build()
    )
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
        if "conflicts" in vhe:
            fam(
                "vswitch_carp_conflicts_total",
                "counter",
                "Second masters heard while MASTER (conflict events: one-way link, partition)",
            ).add(vhe["conflicts"], **where)
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
            if "forwarded" in port:
                fam(
                    "vswitch_port_forwarded_total",
                    "counter",
                    "Frames received on the port and forwarded (or taken by the node)",
                ).add(port["forwarded"], **where)
            for reason, value in port.get("drops", {}).items():
                fam(
                    "vswitch_port_drops_total", "counter", "Frames dropped at the port, by reason"
                ).add(value, **where, reason=reason)
            for direction, impaired in port.get("impair", {}).items():
                at = {**where, "direction": direction}
                fam(
                    "vswitch_port_impaired", "gauge", "1 while the port's direction is impaired"
                ).add(int(bool(impaired["config"])), **at)
                fam(
                    "vswitch_port_impair_passed_total",
                    "counter",
                    "Frames the port's impairment let through",
                ).add(impaired["passed"], **at)
                fam(
                    "vswitch_port_impair_held", "gauge", "Frames waiting in the port's delay line"
                ).add(impaired["held"], **at)
                for reason, value in impaired["drops"].items():
                    fam(
                        "vswitch_port_impair_drops_total",
                        "counter",
                        "Frames the port's impairment dropped, by reason",
                    ).add(value, **at, reason=reason)
        if "table_full" in sw:
            fam(
                "vswitch_switch_table_full_total",
                "counter",
                "Source MACs not learned because the table was full",
            ).add(sw["table_full"], node=node, switch=sw["name"])
    for reason, value in status.get("ip_drops", {}).items():
        fam(
            "vswitch_carp_ip_drops_total",
            "counter",
            "Protocol-112 packets dropped by the IP-layer checks, by reason",
        ).add(value, node=node, reason=reason)
    for rule, value in status.get("datapath", {}).items():
        fam(
            "vswitch_carp_datapath_total", "counter", "Frames handled by the carp data path rules"
        ).add(value, node=node, rule=rule)
    if "counters" in status:
        counters = status["counters"]
        fam(
            "vswitch_node_adverts_unresolved_total",
            "counter",
            "Unicast advertisements not sent: the carppeer's MAC was unknown",
        ).add(counters["adverts_unresolved"], node=node)
        fam(
            "vswitch_node_apply_errors_total",
            "counter",
            "Actions and listeners that raised (a side channel failed)",
        ).add(counters["apply_errors"], node=node)
    for channel, read in status.get("channels", {}).items():
        for counter, value in read.items():
            fam(
                "vswitch_side_channel",
                "gauge",
                "Side channel counters (log, control, metrics, events, hooks, capture, systemd)",
            ).add(value, node=node, channel=channel, counter=counter)
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
    if "workers" in status:
        w = status["workers"]
        fam("vswitch_workers", "gauge", "Forwarding workers serving").add(w["ready"], node=node)
        fam("vswitch_worker_restarts_total", "counter", "Forwarding workers started again").add(
            w["restarts"], node=node
        )
        errors = fam("vswitch_worker_errors_total", "counter", "Worker errors by kind")
        for kind, n in sorted(w["errors"].items()):
            errors.add(n, node=node, kind=kind)
        if "advert_socket_drops" in w:
            fam(
                "vswitch_advert_socket_drops_total",
                "counter",
                "Advertisements the kernel dropped on the node's advertisement sockets",
            ).add(w["advert_socket_drops"], node=node)
    return list(fams.values())


def render(status: NodeStatus) -> str:
    return exposition(families(status))


def parse_listen(text: str) -> tuple[str, int]:
    """`127.0.0.1:9812` or `[::1]:9812`."""
    match = re.fullmatch(r"(?:\[([0-9a-fA-F:.]+)\]|([^:\[\]]+)):(\d{1,5})", text)
    if match is None or int(match.group(3)) > 65535:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return match.group(1) or match.group(2), int(match.group(3))


Answer = tuple[str, bytes, str]  # status line, body, extra header lines


class MetricsServer:
    """GET /metrics -> the exposition of `status()`; anything else 404 (or 405).

    `bind()` takes the listening socket synchronously, so a taken port is an error before the
    node builds anything; `start()` then serves on it (and binds first if nobody did).
    """

    def __init__(
        self,
        listen: str,
        status: Callable[[], NodeStatus],
        *,
        max_connections: int = MAX_CONNECTIONS,
        timeout: float = REQUEST_TIMEOUT,
        cache: float = RENDER_CACHE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host, self.port = parse_listen(listen)
        self.max_connections = max_connections
        self.timeout = timeout
        self.cache = cache
        self.renders = 0  # status snapshots rendered
        self.refused = 0  # connections closed at once: max_connections reached
        self.timeouts = 0  # connections cut off: request or answer too slow
        self._status = status
        self._clock = clock
        self._rendered: tuple[float, Answer] | None = None
        self._sock: socket.socket | None = None
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.StreamWriter] = set()

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def connections(self) -> int:
        return len(self._connections)

    def stats(self) -> dict[str, int]:
        return {
            "connections": self.connections,
            "renders": self.renders,
            "refused": self.refused,
            "timeouts": self.timeouts,
        }

    def bind(self) -> None:
        """Take the listening socket now; OSError naming the address if it cannot."""
        if self._sock is not None:
            return
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        try:
            sock = socket.create_server((self.host, self.port), family=family, backlog=BACKLOG)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise OSError(exc.errno, f"metrics: cannot listen on {self.address}: {reason}") from exc
        sock.setblocking(False)
        self._sock = sock
        self.port = sock.getsockname()[1]  # the real one when 0 was asked

    async def start(self) -> None:
        self.bind()
        assert self._sock is not None
        self._server = await asyncio.start_server(
            self._client, sock=self._sock, limit=REQUEST_LIMIT
        )

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._connections):
                writer.transport.abort()
            await self._server.wait_closed()
            self._server = None
        if self._sock is not None:
            self._sock.close()  # bound but never started
            self._sock = None

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= self.max_connections:
            self.refused += 1
            writer.transport.abort()  # the descriptor goes now, not after a timeout
            return
        self._connections.add(writer)
        try:
            await self._serve(reader, writer)
        except Exception as exc:  # a client must never leave a traceback in the node's log
            log.debug("metrics: client failed: %s: %s", type(exc).__name__, exc)
        finally:
            self._connections.discard(writer)
            writer.transport.abort()  # closed already, or given up on: the descriptor goes now

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.timeout)
        except TimeoutError:
            self.timeouts += 1
            answer: Answer = ("408 Request Timeout", b"request timeout\n", "")
        except asyncio.LimitOverrunError:
            answer = ("431 Request Header Fields Too Large", b"too large\n", "")
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        else:
            answer = self._answer(head.split(b"\r\n", 1)[0])
        writer.write(_response(*answer))
        writer.close()  # flushes what is buffered, then closes
        try:
            await asyncio.wait_for(writer.wait_closed(), self.timeout)
        except TimeoutError:  # a reader too slow to take the answer
            self.timeouts += 1

    def _answer(self, request_line: bytes) -> Answer:
        parts = request_line.decode("latin-1").split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return "400 Bad Request", b"bad request\n", ""
        method, target, _ = parts
        if target.split("?", 1)[0] != "/metrics":
            return "404 Not Found", b"not found; try /metrics\n", ""
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", b"method not allowed\n", "Allow: GET, HEAD\r\n"
        status, body, extra = self._metrics()
        if method == "HEAD" and status.startswith("200"):
            return status, b"", f"Content-Length: {len(body)}\r\n"
        return status, body, extra

    def _metrics(self) -> Answer:
        """The rendered text, rendered again only when older than `cache` seconds: a scrape
        storm costs the node's loop one render per interval. A failure is cached too, so it is
        logged once per interval, not once per scrape."""
        now = self._clock()
        if self._rendered is not None and now - self._rendered[0] < self.cache:
            return self._rendered[1]
        self.renders += 1
        try:
            answer: Answer = ("200 OK", render(self._status()).encode(), "")
        except Exception:
            log.exception("metrics: cannot render the status")
            answer = ("500 Internal Server Error", b"internal error\n", "")
        self._rendered = (now, answer)
        return answer


def _response(status: str, body: bytes, extra: str) -> bytes:
    content_type = CONTENT_TYPE if status == "200 OK" else "text/plain; charset=utf-8"
    length = "" if "Content-Length" in extra else f"Content-Length: {len(body)}\r\n"
    head = f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n{length}{extra}"
    return (head + "Connection: close\r\n\r\n").encode() + body
