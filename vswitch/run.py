"""Run a node in the foreground: `vswitch run -c node.toml` (SIGTERM bows out, SIGHUP reloads).

From the start of `run` until the node serves, and again while it shuts down, SIGHUP, SIGTERM and
SIGINT are held: noted, not acted on, since their default action would kill a half-built node
and leave its sysctls and control socket behind. What was held during start-up is acted on once
the node serves. Every way out (a failed start, SIGTERM, SIGINT) closes the node, the control
socket, the metrics endpoint and the hooks (a running hook's process group is killed).
"""

import argparse
import asyncio
import contextlib
import functools
import gc
import logging
import signal
import sys
from collections.abc import Iterable
from types import FrameType
from typing import Any

import uvloop

from carp.actions import StateChanged
from vswitch import heap
from vswitch.config import ConfigError, NodeConfig, load_config
from vswitch.control import ControlServer
from vswitch.dataplane import DataPlane
from vswitch.events import EventBus, states_of
from vswitch.hooks import HookRunner, HookSpec
from vswitch.logsink import LogSink, SinkHandler, install, open_sink
from vswitch.metrics import MetricsServer
from vswitch.node import Node
from vswitch.nodectl import NodeController
from vswitch.paths import default_socket
from vswitch.realtime import set_realtime
from vswitch.sdnotify import Notifier, status_text
from vswitch.system import LinuxSystem, LoopClock
from vswitch.unixsock import ControlSocketError

log = logging.getLogger("vswitch.run")

HELD = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)


class HeldSignals:
    """SIGHUP, SIGTERM and SIGINT noted, in order of arrival, while the loop's handlers are not
    in place; `release` puts back the dispositions from before the first `hold`."""

    def __init__(self) -> None:
        self.pending: list[int] = []
        self._previous: dict[int, Any] = {}

    def hold(self, signals: Iterable[int] = HELD) -> None:
        for sig in signals:
            previous = signal.signal(sig, self._note)
            self._previous.setdefault(sig, signal.SIG_DFL if previous is None else previous)

    def take(self) -> list[int]:
        pending, self.pending = self.pending, []
        return pending

    def release(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def _note(self, signum: int, frame: FrameType | None) -> None:
        if signum not in self.pending:
            self.pending.append(signum)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, help="the node's TOML file")


def control_path(config: NodeConfig) -> str:
    return config.node.control or default_socket(config.node.name)


async def serve(
    config: NodeConfig,
    path: str | None,
    sink: LogSink,
    held: HeldSignals,
    notifier: Notifier,
    bridge: SinkHandler | None = None,
) -> int:
    loop = asyncio.get_running_loop()
    # closed in the reverse order: signals, node, control socket, metrics, hooks
    cleanup = contextlib.AsyncExitStack()
    try:
        hooks = HookRunner(HookSpec.from_config(h) for h in config.hook)
        cleanup.push_async_callback(hooks.aclose)
        cleanup.callback(hooks.kill_all)  # runs before aclose: no hook outlives the node
        metrics = None
        if config.node.metrics:
            metrics = MetricsServer(config.node.metrics, lambda: controller.status())
            cleanup.push_async_callback(metrics.close)
            metrics.bind()  # a port already taken fails here, before anything is built
        for warning in config.warnings():
            sink.emit(4, f"vswitch: warning: {warning}")
        node = Node(
            config,
            dataplane=DataPlane(loop),
            system=LinuxSystem(queues=max(1, config.node.workers)),
            clock=LoopClock(loop),
            sink=sink,
        )
        bus = EventBus(node.name, lambda: states_of(controller.carp_status()))
        controller = NodeController(node, bus, hooks, (lambda: load_config(path)) if path else None)
        bus.add_listener(hooks.submit)
        node.listeners.append(bus.publish_actions)
        node.listeners.append(functools.partial(_tell_systemd, notifier, controller))
        control = ControlServer(control_path(config), controller, bus)
        cleanup.push_async_callback(control.close)
        controller.channels["log"] = functools.partial(log_stats, sink, bridge)
        if notifier.address is not None:  # started by systemd
            controller.channels["systemd"] = notifier.stats
        controller.channels["control"] = control.stats
        if metrics is not None:
            controller.channels["metrics"] = metrics.stats
        cleanup.callback(node.close)
        node.start()
        if config.node.rt_priority is not None:
            try:  # after the workers started: they forward at normal priority
                set_realtime(config.node.rt_priority)
            except OSError as exc:
                fix = "run as root, or with CAP_SYS_NICE and CAP_IPC_LOCK; or remove rt_priority"
                raise ConfigError([f"node.rt_priority: {exc.strerror or exc} ({fix})"]) from exc
        _publish_links(node, bus)
        hooks.start()
        await control.start()
        if metrics is not None:
            await metrics.start()
        stop = asyncio.Event()
        reload = functools.partial(_reload, controller, sink, notifier)
        cleanup.callback(_hold_again, loop, held)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, reload)
        sink.emit(6, f"vswitch: node {node.name} running (control {control.path})")
        report_status(notifier, controller)
        notifier.ready()
        cleanup.callback(notifier.start_watchdog(loop))
        # what start-up built lives as long as the node: out of the collector's sight, so a
        # collection pause (which delays advertisements) walks only what is new
        gc.collect()
        gc.freeze()
        heap.settle()
        for early in held.take():  # what came during start-up
            if early == signal.SIGHUP:
                reload()
            else:
                stop.set()
        await stop.wait()
        notifier.stopping()
        node.bow_out()
        return 0
    finally:
        await cleanup.aclose()


def _hold_again(loop: asyncio.AbstractEventLoop, held: HeldSignals) -> None:
    """Shutting down: signals are held again instead of killing the node half-closed."""
    for sig in HELD:
        loop.remove_signal_handler(sig)
        held.hold((sig,))


def _publish_links(node: Node, bus: EventBus) -> None:
    """Port link changes become `link` events, ahead of the state changes they cause."""
    inner = node.dataplane.on_link

    def on_link(switch: str, port: str, up: bool) -> None:
        try:
            bus.publish_link(node.clock(), switch, port, up)
        except Exception:
            log.exception("link event %s/%s not published", switch, port)
        if inner is not None:
            inner(switch, port, up)

    node.dataplane.on_link = on_link


def log_stats(sink: LogSink, bridge: SinkHandler | None) -> dict[str, int]:
    """The log channel's counters: lines the sink dropped, and records of the node's Python
    logging (its bridge, and the last resort for loggers without a handler) it dropped."""
    handlers = [] if bridge is None else [bridge, bridge.last_resort]
    lost = sum(handler.dropped for handler in handlers if handler is not None)
    return {"dropped": sink.dropped, "bridge_dropped": lost}


def report_status(notifier: Notifier, controller: NodeController) -> None:
    """STATUS= with the carp states (`systemctl status` shows them), from the carp part of the
    status only: nothing is read when nobody listens, and a failure is logged, not raised."""
    if not notifier.enabled:
        return
    try:
        notifier.status(status_text(controller.carp_status()))
    except Exception:
        log.exception("STATUS= not sent")


def _tell_systemd(notifier: Notifier, controller: NodeController, now: float, actions: Any) -> None:
    """STATUS= follows the carp states."""
    if notifier.enabled and any(isinstance(action, StateChanged) for action in actions):
        report_status(notifier, controller)


def _reload(controller: NodeController, sink: LogSink, notifier: Notifier) -> None:
    notifier.reloading()
    try:
        changes = controller.reload()
    except ConfigError as exc:
        for line in exc.errors:
            sink.emit(3, f"vswitch: reload refused: {line}")
        return
    except Exception as exc:
        sink.emit(3, f"vswitch: reload failed: {type(exc).__name__}: {exc}")
        return
    finally:
        notifier.ready()  # first: a status that cannot be built must not cost the READY=1
        report_status(notifier, controller)
    sink.emit(5, f"vswitch: reloaded ({'; '.join(changes) or 'no change'})")


def run(args: argparse.Namespace) -> int:
    held = HeldSignals()
    held.hold()
    notifier = Notifier.from_env(unset=True)  # hooks must not inherit NOTIFY_SOCKET
    try:
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return 2
        sink = open_sink(config.node.log, config.node.name)
        bridge = install(sink)
        try:
            return uvloop.run(serve(config, args.config, sink, held, notifier, bridge))
        except ConfigError as exc:  # the system refused the configuration (a missing interface)
            for line in exc.errors:
                print(f"vswitch: {config.node.name}: {line}", file=sys.stderr)
            return 1
        except (ControlSocketError, OSError) as exc:
            print(f"vswitch: {config.node.name}: {exc}", file=sys.stderr)
            return 1
        finally:
            with contextlib.suppress(Exception):
                sink.close()  # type: ignore[attr-defined]
    finally:
        held.release()
