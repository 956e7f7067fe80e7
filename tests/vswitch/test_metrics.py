"""Metrics: every line checked by a strict parser of the text format 0.0.4, scraped in-process."""

import asyncio
import errno
import math
import os
import platform
import re
import socket
from collections.abc import Callable, Coroutine
from importlib import metadata
from typing import Any

import pytest

from carp.actions import Reason
from carp.constants import State
from tests.vswitch.fakenode import FakeNode
from tests.vswitch.loops import Run
from tests.vswitch.polling import until
from vswitch.metrics import CONTENT_TYPE, Family, MetricsServer, exposition, parse_listen, render
from vswitch.status import NodeStatus

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
VALUE = r'"((?:[^"\\\n]|\\[\\"n])*)"'
Series = tuple[str, frozenset[tuple[str, str]]]


def _unescape(text: str) -> str:
    return re.sub(r"\\([\\\"n])", lambda m: "\n" if m.group(1) == "n" else m.group(1), text)


def parse_exposition(text: str) -> tuple[dict[str, str], dict[Series, float]]:
    """A strict reader of format 0.0.4: returns the TYPE of each family and every sample.

    Fails on anything malformed: bad names or escapes, a sample before its family's TYPE, a family
    split in two, a repeated series or TYPE/HELP, a counter not ending in _total.
    """
    assert text.endswith("\n") and not text.endswith("\n\n")
    types: dict[str, str] = {}
    helps: set[str] = set()
    samples: dict[Series, float] = {}
    current: str | None = None
    finished: set[str] = set()
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP "):
            m = re.fullmatch(rf"# HELP ({NAME}) ((?:[^\\\n]|\\[\\n])*)", line)
            assert m, line
            assert m.group(1) not in helps, f"second HELP: {line}"
            helps.add(m.group(1))
            continue
        if line.startswith("# TYPE "):
            m = re.fullmatch(rf"# TYPE ({NAME}) (counter|gauge|histogram|summary|untyped)", line)
            assert m, line
            name = m.group(1)
            assert name not in types, f"second TYPE: {line}"
            assert name in helps, f"TYPE without HELP first: {line}"
            if current is not None:
                finished.add(current)
            types[name], current = m.group(2), name
            continue
        assert not line.startswith("#") and line.strip() == line and line, repr(line)
        m = re.fullmatch(rf"({NAME})(?:\{{(.*)\}})? (\S+)", line)
        assert m, line
        name, label_text, value_text = m.groups()
        assert name == current and name not in finished, f"sample outside its family: {line}"
        labels: list[tuple[str, str]] = []
        rest = label_text or ""
        while rest:
            lm = re.match(rf"({LABEL})={VALUE}(,|$)", rest)
            assert lm, f"bad labels in {line}"
            labels.append((lm.group(1), _unescape(lm.group(2))))
            rest = rest[lm.end() :]
        assert len({k for k, _ in labels}) == len(labels), f"repeated label: {line}"
        assert re.fullmatch(r"[+-]?(\d+(\.\d*)?([eE][+-]?\d+)?|NaN|Inf)", value_text), line
        series = (name, frozenset(labels))
        assert series not in samples, f"repeated series: {line}"
        samples[series] = float(value_text)
    for name, kind in types.items():
        assert kind != "counter" or name.endswith("_total"), name
    return types, samples


def value(samples: dict[Series, float], name: str, **labels: object) -> float:
    return samples[(name, frozenset((k, str(v)) for k, v in labels.items()))]


def test_exposition_of_a_status() -> None:
    node = FakeNode()
    node.force("carp1", State.BACKUP, Reason.DEMOTED)
    status = node.status()
    status["events"] = {"seq": 9, "subscribers": 2, "dropped": 1}
    status["hooks"] = {"queued": 1, "runs": 5, "failures": 1, "timeouts": 0, "overflows": 2}
    types, samples = parse_exposition(render(status))
    n = {"node": "gw-a"}
    assert value(samples, "vswitch_carp_state", **n, carpif="carp0", vhid=1) == 2
    assert value(samples, "vswitch_carp_state", **n, carpif="carp1", vhid=2) == 1
    one_hot = {
        s: value(samples, "vswitch_carp_in_state", **n, carpif="carp1", vhid=2, state=s)
        for s in ("init", "backup", "master")
    }
    assert one_hot == {"init": 0, "backup": 1, "master": 0}
    assert value(samples, "vswitch_carp_transitions_total", **n, carpif="carp1", vhid=2) == 1
    assert value(samples, "vswitch_carp_advskew", **n, carpif="carp1", vhid=3) == 100
    assert value(samples, "vswitch_carp_advbase", **n, carpif="carp0") == 1
    assert value(samples, "vswitch_carp_demote", **n, carpif="carp0") == 0
    assert value(samples, "vswitch_carp_carrier", **n, carpif="carp1") == 0
    assert value(samples, "vswitch_carp_group_demote", **n, group="uplink") == 0
    assert value(samples, "vswitch_carp_sysctl", **n, sysctl="log") == 2
    assert value(samples, "vswitch_carp_ipackets_total", **n) == 12
    assert value(samples, "vswitch_carp_badauth_total", **n) == 1
    stats = [name for name in types if name.startswith("vswitch_carp_") and name.endswith("_total")]
    assert len(stats) == 16 + 1  # carpstats and transitions
    assert types["vswitch_carp_preempt_total"] == "counter"
    peer = {"carpif": "carp0", "vhid": 1, "source": "192.0.2.3"}
    assert value(samples, "vswitch_carp_peer_age_seconds", **n, **peer) == 0.5
    port = {"switch": "lan0", "port": "vm1"}
    assert value(samples, "vswitch_port_tx_drops_total", **n, **port) == 3
    assert value(samples, "vswitch_port_tx_bytes_total", **n, **port) == 420
    assert value(samples, "vswitch_port_link", **n, **port) == 0
    assert value(samples, "vswitch_port_rx_packets_total", **n, switch="lan0", port="up0") == 100
    assert value(samples, "vswitch_switch_mac_entries", **n, switch="lan0") == 4
    assert value(samples, "vswitch_uptime_seconds", **n) == 3723.5
    assert value(samples, "vswitch_events_total", **n) == 9
    assert value(samples, "vswitch_event_subscribers_dropped_total", **n) == 1
    assert value(samples, "vswitch_hook_overflows_total", **n) == 2
    assert value(samples, "vswitch_hooks_queued", **n) == 1
    build = {"version": metadata.version("vswitch-carp"), "python": platform.python_version()}
    assert value(samples, "vswitch_build_info", **n, **build) == 1
    assert types["vswitch_build_info"] == "gauge"
    assert len([s for s in samples if s[0] == "vswitch_build_info"]) == 1


def test_workers_in_the_exposition() -> None:
    status = FakeNode().status()
    assert "vswitch_workers" not in render(status)  # a node without workers has none
    status["workers"] = {
        "count": 2,
        "pids": [101, 102],
        "ready": 1,
        "restarts": 3,
        "lost_messages": 0,
        "errors": {"channel full: arp": 4},
        "advert_socket_drops": 7,
    }
    types, samples = parse_exposition(render(status))
    n = {"node": "gw-a"}
    assert value(samples, "vswitch_advert_socket_drops_total", **n) == 7
    assert value(samples, "vswitch_workers", **n) == 1
    assert value(samples, "vswitch_worker_restarts_total", **n) == 3
    assert value(samples, "vswitch_worker_errors_total", **n, kind="channel full: arp") == 4
    assert types["vswitch_worker_restarts_total"] == "counter"


def test_escaping_and_special_values() -> None:
    family = Family("x_total", "counter", 'help with \\ and\nnewline "quoted"')
    family.add(1, node='gw "a"\\\nb')
    gauge = Family("y", "gauge", "values")
    gauge.add(math.nan, k="nan")
    gauge.add(math.inf, k="inf")
    gauge.add(-math.inf, k="-inf")
    gauge.add(0.125, k="frac")
    gauge.add(2.0**60, k="big")
    empty = Family("z", "gauge", "no samples: not written")
    text = exposition([family, gauge, empty])
    assert '# HELP x_total help with \\\\ and\\nnewline "quoted"' in text
    types, samples = parse_exposition(text)
    assert "z" not in types
    assert value(samples, "x_total", node='gw "a"\\\nb') == 1
    assert math.isnan(value(samples, "y", k="nan"))
    assert value(samples, "y", k="inf") == math.inf
    assert value(samples, "y", k="-inf") == -math.inf
    assert value(samples, "y", k="frac") == 0.125
    assert value(samples, "y", k="big") == 2.0**60


def test_the_parser_is_strict() -> None:
    good = '# HELP a_total h\n# TYPE a_total counter\na_total{x="1"} 1\n'
    parse_exposition(good)
    for bad in (
        '# TYPE a_total counter\na_total{x="1"} 1\n',  # no HELP
        '# HELP a h\n# TYPE a counter\na{x="1"} 1\n',  # counter without _total
        '# HELP a h\n# TYPE a gauge\na{x="1"} 1\na{x="1"} 2\n',  # repeated series
        '# HELP a h\n# TYPE a gauge\na{x="1} 1\n',  # broken quoting
        '# HELP a h\n# TYPE a gauge\na{x="1"} one\n',  # bad value
        '# HELP a h\n# TYPE a gauge\nb{x="1"} 1\n',  # sample of another family
        "# HELP a h\n# TYPE a gauge\n# HELP b h\n# TYPE b gauge\na 1\n",  # family split
        '# HELP a h\n# TYPE a gauge\na{x="\\q"} 1\n',  # bad escape
    ):
        with pytest.raises(AssertionError):
            parse_exposition(bad)


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:9812") == ("127.0.0.1", 9812)
    assert parse_listen("[::1]:9100") == ("::1", 9100)
    assert parse_listen("localhost:0") == ("localhost", 0)
    for bad in ("127.0.0.1", "127.0.0.1:99999", "::1:9812", ""):
        with pytest.raises(ValueError, match="is not HOST:PORT"):
            parse_listen(bad)


# ---- the HTTP endpoint ----


async def http(port: int, raw: bytes) -> tuple[str, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)  # the server closes after one answer
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status, *header_lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return status, headers, body


def test_scrape(run: Callable[[Coroutine[Any, Any, None]], None]) -> None:
    node = FakeNode()
    now = [100.0]

    async def scenario() -> None:
        server = MetricsServer("127.0.0.1:0", node.status, clock=lambda: now[0])
        await server.start()
        try:
            assert server.port > 0
            status, headers, body = await http(
                server.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            assert status == "HTTP/1.1 200 OK"
            assert headers["Content-Type"] == CONTENT_TYPE
            assert int(headers["Content-Length"]) == len(body)
            _, samples = parse_exposition(body.decode())
            assert value(samples, "vswitch_carp_state", node="gw-a", carpif="carp0", vhid=1) == 2
            node.force("carp0", State.BACKUP, Reason.PREEMPTED)
            _, _, cached = await http(server.port, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n")
            assert cached == body  # within the cache interval: the same text
            now[0] += 1.0  # a scrape after the interval sees the change
            _, _, body = await http(server.port, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n")
            _, samples = parse_exposition(body.decode())
            assert value(samples, "vswitch_carp_state", node="gw-a", carpif="carp0", vhid=1) == 1
            assert server.renders == 2
            status, headers, body = await http(server.port, b"HEAD /metrics HTTP/1.1\r\n\r\n")
            assert status == "HTTP/1.1 200 OK" and body == b""
            assert int(headers["Content-Length"]) > 1000
            status, _, body = await http(server.port, b"GET / HTTP/1.1\r\n\r\n")
            assert status == "HTTP/1.1 404 Not Found" and b"/metrics" in body
            status, headers, _ = await http(server.port, b"POST /metrics HTTP/1.1\r\n\r\n")
            assert status == "HTTP/1.1 405 Method Not Allowed"
            assert headers["Allow"] == "GET, HEAD"
            status, _, _ = await http(server.port, b"garbage\r\n\r\n")
            assert status == "HTTP/1.1 400 Bad Request"
            status, _, _ = await http(server.port, b"GET /metrics HTTP/1.1\r\nX: " + b"y" * 9000)
            assert status == "HTTP/1.1 431 Request Header Fields Too Large"
        finally:
            await server.close()

    run(scenario())


def test_render_failure_is_a_500() -> None:
    def broken() -> NodeStatus:
        raise RuntimeError("no status")

    async def scenario() -> None:
        server = MetricsServer("127.0.0.1:0", broken)
        await server.start()
        try:
            status, _, _ = await http(server.port, b"GET /metrics HTTP/1.1\r\n\r\n")
            assert status == "HTTP/1.1 500 Internal Server Error"
        finally:
            await server.close()

    asyncio.run(scenario())


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_connections_beyond_the_limit_are_closed_at_once(run: Run) -> None:
    node = FakeNode()

    async def scenario() -> None:
        server = MetricsServer("127.0.0.1:0", node.status, max_connections=4)
        await server.start()
        idle = []
        try:
            for _ in range(4):  # hold every slot with a request never finished
                idle.append(await asyncio.open_connection("127.0.0.1", server.port))
            await until(lambda: server.connections == 4, "four connections")
            before = open_fds()
            extra = []
            for _ in range(20):
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                extra.append(writer)
                with pytest.raises(ConnectionResetError):  # closed at once, not after a timeout
                    if await asyncio.wait_for(reader.read(), 10) == b"":
                        raise ConnectionResetError  # an orderly close counts the same
            assert server.refused == 20 and server.connections == 4
            assert open_fds() - before == 20  # only the client ends: the node kept none
            for writer in extra:
                writer.close()
            _, writer = idle.pop()
            writer.close()  # a slot frees: a scrape gets through again
            await until(lambda: server.connections == 3, "a free slot")
            status, _, _ = await http(server.port, b"GET /metrics HTTP/1.1\r\n\r\n")
            assert status == "HTTP/1.1 200 OK"
        finally:
            for _, writer in idle:
                writer.close()
            await server.close()

    run(scenario())


def test_a_slowloris_is_cut_off(run: Run) -> None:
    node = FakeNode()

    async def scenario() -> None:
        server = MetricsServer("127.0.0.1:0", node.status, timeout=0.2)
        await server.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 10)
            assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
            assert server.timeouts == 1
            await until(lambda: server.connections == 0, "the connection to go")
            writer.close()
        finally:
            await server.close()

    run(scenario())


def test_a_taken_port_fails_at_bind() -> None:
    holder = socket.create_server(("127.0.0.1", 0))
    try:
        port = holder.getsockname()[1]
        server = MetricsServer(f"127.0.0.1:{port}", FakeNode().status)
        with pytest.raises(OSError, match=f"metrics: cannot listen on 127.0.0.1:{port}") as exc:
            server.bind()
        assert exc.value.errno == errno.EADDRINUSE
    finally:
        holder.close()
    v6 = MetricsServer("[::1]:0", FakeNode().status)
    try:
        v6.bind()
    except OSError as exc:  # a host without IPv6 still names the address
        assert "[::1]:0" in str(exc)
    else:
        assert v6.port > 0
        asyncio.run(v6.close())


def test_bind_then_start_serves_on_the_bound_socket(run: Run) -> None:
    node = FakeNode()

    async def scenario() -> None:
        server = MetricsServer("127.0.0.1:0", node.status)
        server.bind()
        port = server.port
        assert port > 0
        await server.start()
        try:
            assert server.port == port
            status, _, _ = await http(port, b"GET /metrics HTTP/1.1\r\n\r\n")
            assert status == "HTTP/1.1 200 OK"
        finally:
            await server.close()

    run(scenario())


def test_a_scrape_storm_renders_once(run: Run) -> None:
    node = FakeNode()
    calls = []

    def status() -> NodeStatus:
        calls.append(1)
        return node.status()

    now = [50.0]

    async def scenario() -> None:
        server = MetricsServer("127.0.0.1:0", status, clock=lambda: now[0])
        await server.start()
        try:
            request = b"GET /metrics HTTP/1.1\r\n\r\n"
            answers = await asyncio.gather(*(http(server.port, request) for _ in range(12)))
            assert {status for status, _, _ in answers} == {"HTTP/1.1 200 OK"}
            assert len({body for _, _, body in answers}) == 1
            assert len(calls) == 1 and server.renders == 1
            now[0] += 0.999
            await http(server.port, request)
            assert len(calls) == 1
            now[0] += 0.001
            await http(server.port, request)
            assert len(calls) == 2
        finally:
            await server.close()

    run(scenario())
