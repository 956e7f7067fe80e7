"""Run a node in the foreground: `vswitch run -c node.toml` (SIGTERM bows out, SIGHUP reloads)."""

import argparse
import asyncio
import contextlib
import signal
import sys

import uvloop

from vswitch.config import ConfigError, NodeConfig, load_config
from vswitch.control import ControlServer, ControlSocketError
from vswitch.events import EventBus, states_from_status
from vswitch.hooks import HookRunner, HookSpec
from vswitch.logsink import LogSink, install, open_sink
from vswitch.metrics import MetricsServer
from vswitch.node import Node
from vswitch.nodectl import NodeController

DEFAULT_SOCKET_DIR = "/run/vswitch"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, help="the node's TOML file")


def control_path(config: NodeConfig) -> str:
    return config.node.control or f"{DEFAULT_SOCKET_DIR}/{config.node.name}.sock"


async def serve(config: NodeConfig, path: str | None, sink: LogSink) -> int:
    loop = asyncio.get_running_loop()
    node = Node(config, sink=sink)
    bus = EventBus(node.name, lambda: states_from_status(controller.status()))
    hooks = HookRunner(HookSpec.from_config(h) for h in config.hook)
    controller = NodeController(node, bus, hooks, (lambda: load_config(path)) if path else None)
    bus.add_listener(hooks.submit)
    node.listeners.append(bus.publish_actions)
    stop = asyncio.Event()
    control = ControlServer(control_path(config), controller, bus)
    metrics = MetricsServer(config.node.metrics, controller.status) if config.node.metrics else None
    try:
        node.start()
        _publish_links(node, bus)
        hooks.start()
        await control.start()
        if metrics is not None:
            await metrics.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: _reload(controller, sink))
        sink.emit(6, f"vswitch: node {node.name} running (control {control.path})")
        await stop.wait()
        node.bow_out()
        return 0
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        node.close()
        await control.close()
        if metrics is not None:
            await metrics.close()
        await hooks.aclose()


def _publish_links(node: Node, bus: EventBus) -> None:
    """Port link changes become `link` events, ahead of the state changes they cause."""
    inner = node.dataplane.on_link

    def on_link(switch: str, port: str, up: bool) -> None:
        bus.publish_link(node.clock(), switch, port, up)
        if inner is not None:
            inner(switch, port, up)

    node.dataplane.on_link = on_link


def _reload(controller: NodeController, sink: LogSink) -> None:
    try:
        changes = controller.reload()
    except ConfigError as exc:
        for line in exc.errors:
            sink.emit(3, f"vswitch: reload refused: {line}")
        return
    sink.emit(5, f"vswitch: reloaded ({'; '.join(changes) or 'no change'})")


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    sink = open_sink(config.node.log, config.node.name)
    install(sink)
    try:
        return uvloop.run(serve(config, args.config, sink))
    except (ControlSocketError, OSError) as exc:
        print(f"vswitch: {config.node.name}: {exc}", file=sys.stderr)
        return 1
    finally:
        with contextlib.suppress(Exception):
            sink.close()  # type: ignore[attr-defined]
