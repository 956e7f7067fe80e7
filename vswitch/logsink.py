"""Where the node's log lines go: stderr (timestamped) or syslog (facility daemon), as carp(4).

The core already filters its `Log` actions by the `log` sysctl (section 8.3); a sink only writes
them, at their syslog priority. `SinkHandler` sends the node's own Python logging (hooks,
control socket) to the same place, so an operator reads one stream.

Under systemd, when stderr is the journal's stream (JOURNAL_STREAM), stderr lines carry the
priority as sd-daemon(3)'s `<N>` prefix instead of a timestamp: journald stamps each entry
itself and keeps the priority, so `journalctl -p err` works.

A sink never blocks and never raises: logging is a side channel and must not stop forwarding or
advertising. A line that cannot be written now (a full pipe, a reader that went away, a full
syslog queue) is dropped and counted in the sink's `dropped`, which status can report.
"""

import errno
import logging
import os
import re
import select
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Protocol, TextIO

from carp.actions import Action, Log

LOG_DAEMON = 3  # syslog facility
DEVLOG = "/dev/log"
STDERR = 2
# a pipe write of at most PIPE_BUF bytes after POLLOUT cannot block (one free pipe slot)
CHUNK = select.PIPE_BUF
# errors that mean "syslog is there but cannot take this datagram now": drop, do not reconnect
SYSLOG_BUSY = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS, errno.ENOMEM})
SYSLOG_TOO_BIG = frozenset({errno.EMSGSIZE})
JOURNAL_STREAM = "JOURNAL_STREAM"  # systemd.exec(5): "DEV:INODE" of the stream to the journal


class LogSink(Protocol):
    @property
    def dropped(self) -> int:
        """Lines that could not be written (and were not retried)."""
        ...

    def emit(self, level: int, message: str) -> None: ...


def write_nonblocking(fd: int, data: bytes) -> int:
    """Write what `fd` takes now, in PIPE_BUF chunks each after a zero-timeout poll; the number
    of bytes written. The fd stays in blocking mode: O_NONBLOCK would be shared with every
    process holding the same terminal or pipe. OSError (EPIPE, EBADF, ...) is the caller's."""
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    written = 0
    while written < len(data):
        events = poller.poll(0)
        if not events:
            break  # full: a reader that stopped reading
        if events[0][1] & select.POLLNVAL:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        try:
            n = os.write(fd, data[written : written + CHUNK])
        except BlockingIOError:  # the fd was non-blocking already
            break
        if n <= 0:
            break
        written += n
    return written


def priority(level: int) -> int:
    """A syslog priority 0..7 (LOG_EMERG..LOG_DEBUG); the `log` sysctl lets any int through."""
    return max(0, min(level, 7))


def journal_stream(fd: int = STDERR, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether `fd` is the stream systemd connected to the journal. systemd sets JOURNAL_STREAM
    to that stream's "DEV:INODE" in decimal (systemd.exec(5)); a process whose stderr was
    redirected inherits the variable but not the stream, so the fd's own fstat must match."""
    match = re.fullmatch(r"(\d+):(\d+)", environ.get(JOURNAL_STREAM, ""), re.ASCII)
    if match is None:
        return False
    try:
        st = os.fstat(fd)
    except OSError:  # stderr closed: nothing to match
        return False
    return (st.st_dev, st.st_ino) == (int(match.group(1)), int(match.group(2)))


class StderrSink:
    """`2024-05-01T10:00:00.123+00:00 gw-a carp0: state transition: BACKUP -> MASTER`, or, when
    `journal`, `<2>gw-a carp0: state transition: BACKUP -> MASTER` (every line of a message
    prefixed: journald makes each line an entry, and reads the prefix unless the unit says
    SyslogLevelPrefix=no).

    Written to `stream` if given (tests, embedding), else straight to file descriptor `fd`
    without blocking; a line cut short is ended before the next one so lines never merge.
    `journal` defaults to whether `fd` is systemd's journal stream (never for a `stream`).
    """

    def __init__(
        self,
        node: str,
        stream: TextIO | None = None,
        wall: Callable[[], float] = time.time,
        fd: int = STDERR,
        journal: bool | None = None,
    ) -> None:
        self.node = node
        self.fd = fd
        self.dropped = 0
        self.journal = journal if journal is not None else (stream is None and journal_stream(fd))
        self._stream = stream
        self._wall = wall
        self._partial = False  # the last line was cut short: start the next on a new line

    def line(self, level: int, message: str) -> str:
        if self.journal:
            prefix = f"<{priority(level)}>"
            body = message.replace("\n", "\n" + prefix)
            return f"{prefix}{self.node} {body}\n"
        stamp = datetime.fromtimestamp(self._wall(), UTC).isoformat(timespec="milliseconds")
        return f"{stamp} {self.node} {message}\n"

    def emit(self, level: int, message: str) -> None:
        try:
            line = self.line(level, message)
            if self._stream is not None:
                self._stream.write(line)
                self._stream.flush()
            else:
                self._write(line.encode(errors="backslashreplace"))
        except Exception:  # EPIPE, EBADF, ENOSPC, a closed stream...: logging must go on
            self.dropped += 1

    def _write(self, data: bytes) -> None:
        if self._partial:
            data = b"\n" + data
        written = write_nonblocking(self.fd, data)
        if written < len(data):
            self.dropped += 1
            self._partial = written > 0 or self._partial
        else:
            self._partial = False


class SyslogSink:
    """RFC 3164 datagrams to the local syslog socket, as syslog(3) writes them.

    syslogd gone or restarted: reconnect once, else the line goes to the stderr fallback (with a
    note the first time). syslogd busy (its queue full): the line is dropped and counted.
    """

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
        self._dropped = 0
        self._failed = False
        self._sock: socket.socket | None = None
        self._connect()  # raises OSError when nothing listens: the caller falls back

    @property
    def dropped(self) -> int:
        """Lines lost: syslog busy, or syslog gone and stderr could not take them either."""
        return self._dropped + self._fallback.dropped

    def _connect(self) -> None:
        self.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)  # a full syslog queue must not stall the node
            sock.connect(self.address)
        except OSError:
            sock.close()
            raise
        self._sock = sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def emit(self, level: int, message: str) -> None:
        try:
            pri = self.facility * 8 + priority(level)
            stamp = time.strftime("%b %e %H:%M:%S")
            text = f"<{pri}>{stamp} {self.ident}[{os.getpid()}]: {self.node} {message}"
            self._deliver(level, message, text.encode(errors="backslashreplace"))
        except Exception:
            self._dropped += 1

    def _deliver(self, level: int, message: str, data: bytes) -> None:
        try:
            self._send(data)
        except OSError as exc:
            if exc.errno in SYSLOG_BUSY or exc.errno in SYSLOG_TOO_BIG:
                self._dropped += 1
                return
            try:
                self._connect()  # syslogd restarted: reconnect once
                self._send(data)
            except OSError as again:
                if again.errno in SYSLOG_BUSY:  # reconnected, but it is busy
                    self._dropped += 1
                    return
                self.close()
                if not self._failed:
                    note = f"syslog at {self.address} failed ({again}); using stderr"
                    self._fallback.emit(3, note)
                self._failed = True
                self._fallback.emit(level, message)
                return
        self._failed = False

    def _send(self, data: bytes) -> None:
        if self._sock is None:
            raise OSError(errno.ENOTCONN, "not connected")
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
    """Python logging into a sink. Never raises and never falls back to logging's handleError,
    which would write a traceback to a possibly blocked stderr: a record that cannot be
    formatted or written is counted in `dropped`."""

    def __init__(self, sink: LogSink, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.sink = sink
        self.dropped = 0
        self.last_resort: SinkHandler | None = None  # the one `install` put in place, if any

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.sink.emit(syslog_priority(record.levelno), self.format(record))
        except Exception:
            self.dropped += 1

    def handleError(self, record: logging.LogRecord) -> None:
        self.dropped += 1  # logging calls it on its own errors too (e.g. in flush)


def install(
    sink: LogSink, level: int = logging.INFO, logger: str = "vswitch", last_resort: bool = True
) -> SinkHandler:
    """Route the `vswitch.*` Python loggers to `sink`; the handler returned counts the records
    it drops (`dropped`), and keeps the last-resort handler below as `last_resort`.

    With `last_resort`, records of loggers with no handler at all (asyncio's "exception in
    callback", uvloop's) go to the sink at WARNING too, instead of logging's last-resort
    handler that writes to sys.stderr and would block on a full pipe.
    """
    handler = SinkHandler(sink, level)
    target = logging.getLogger(logger)
    target.addHandler(handler)
    target.setLevel(min(target.level or level, level))
    if last_resort:
        handler.last_resort = SinkHandler(sink, logging.WARNING)
        logging.lastResort = handler.last_resort
    return handler
