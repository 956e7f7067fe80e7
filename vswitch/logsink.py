"""Where the node's log lines go: stderr (timestamped) or syslog (facility daemon), as carp(4).

The core already filters its `Log` actions by the `log` sysctl (section 8.3); a sink only writes
them, at their syslog priority. `SinkHandler` sends the node's own Python logging (hooks,
control socket) to the same place, so an operator reads one stream.
"""

import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Protocol, TextIO

from carp.actions import Action, Log

LOG_DAEMON = 3  # syslog facility
DEVLOG = "/dev/log"


class LogSink(Protocol):
    def emit(self, level: int, message: str) -> None: ...


class StderrSink:
    """`2024-05-01T10:00:00.123+00:00 gw-a carp0: state transition: BACKUP -> MASTER`."""

    def __init__(
        self, node: str, stream: TextIO | None = None, wall: Callable[[], float] = time.time
    ) -> None:
        self.node = node
        self._stream = stream
        self._wall = wall

    def emit(self, level: int, message: str) -> None:
        stamp = datetime.fromtimestamp(self._wall(), UTC).isoformat(timespec="milliseconds")
        stream = self._stream or sys.stderr
        stream.write(f"{stamp} {self.node} {message}\n")
        stream.flush()


class SyslogSink:
    """RFC 3164 datagrams to the local syslog socket, as syslog(3) writes them."""

    def __init__(
        self,
        node: str,
        fallback: StderrSink,
        address: str = DEVLOG,
        facility: int = LOG_DAEMON,
        ident: str = "vswitch",
    ) -> None:
        self.node = node
        self.address = address
        self.facility = facility
        self.ident = ident
        self._fallback = fallback
        self._failed = False
        self._sock: socket.socket | None = None
        self._connect()  # raises OSError when nothing listens: the caller falls back

    def _connect(self) -> None:
        self.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.connect(self.address)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)  # a full syslog queue must not stall the node
        self._sock = sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def emit(self, level: int, message: str) -> None:
        priority = self.facility * 8 + max(0, min(level, 7))
        stamp = time.strftime("%b %e %H:%M:%S")
        data = f"<{priority}>{stamp} {self.ident}[{os.getpid()}]: {self.node} {message}".encode()
        try:
            self._send(data)
        except OSError:
            try:
                self._connect()  # syslogd restarted: reconnect once
                self._send(data)
            except OSError as exc:
                self.close()
                if not self._failed:
                    note = f"syslog at {self.address} failed ({exc}); using stderr"
                    self._fallback.emit(3, note)
                self._failed = True
                self._fallback.emit(level, message)
                return
        self._failed = False

    def _send(self, data: bytes) -> None:
        if self._sock is None:
            raise OSError("not connected")
        self._sock.send(data)


def open_sink(kind: str, node: str, devlog: str = DEVLOG, stream: TextIO | None = None) -> LogSink:
    """The sink `[node] log` asks for; syslog falls back to stderr, with a note, if absent."""
    stderr = StderrSink(node, stream)
    if kind != "syslog":
        return stderr
    try:
        return SyslogSink(node, stderr, devlog)
    except OSError as exc:
        stderr.emit(4, f"vswitch: no syslog at {devlog} ({exc.strerror}); logging to stderr")
        return stderr


def emit_actions(sink: LogSink, actions: Iterable[Action]) -> None:
    """Write the core's Log actions; everything else is for other parts of the node."""
    for action in actions:
        if isinstance(action, Log):
            sink.emit(action.level, action.message)


def syslog_priority(levelno: int) -> int:
    """Python logging level -> syslog priority."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


class SinkHandler(logging.Handler):
    def __init__(self, sink: LogSink, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.sink.emit(syslog_priority(record.levelno), self.format(record))
        except Exception:
            self.handleError(record)


def install(sink: LogSink, level: int = logging.INFO, logger: str = "vswitch") -> SinkHandler:
    """Route the `vswitch.*` Python loggers to `sink`."""
    handler = SinkHandler(sink, level)
    target = logging.getLogger(logger)
    target.addHandler(handler)
    target.setLevel(min(target.level or level, level))
    return handler
