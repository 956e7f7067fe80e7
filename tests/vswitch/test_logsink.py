"""Log sinks: stderr lines, syslog datagrams (to a private socket), fallback, Python logging."""

import io
import logging
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from carp.actions import Log, Reason, StateChanged
from carp.constants import LOG_CRIT, LOG_ERR, State
from vswitch.logsink import (
    SinkHandler,
    StderrSink,
    SyslogSink,
    emit_actions,
    install,
    open_sink,
    syslog_priority,
)


@pytest.fixture
def devlog() -> Iterator[tuple[str, socket.socket]]:
    directory = tempfile.mkdtemp(prefix="vslog", dir="/tmp")
    path = os.path.join(directory, "log")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(10)
    yield path, server
    server.close()
    shutil.rmtree(directory, ignore_errors=True)


class Recorder:
    def __init__(self) -> None:
        self.lines: list[tuple[int, str]] = []

    def emit(self, level: int, message: str) -> None:
        self.lines.append((level, message))


def test_stderr_line() -> None:
    out = io.StringIO()
    sink = StderrSink("gw-a", out, wall=lambda: 1_700_000_000.5)
    sink.emit(LOG_CRIT, "carp0: state transition: BACKUP -> MASTER")
    assert out.getvalue() == (
        "2023-11-14T22:13:20.500+00:00 gw-a carp0: state transition: BACKUP -> MASTER\n"
    )


def test_emit_actions_writes_only_log_actions() -> None:
    rec = Recorder()
    emit_actions(
        rec,
        [
            StateChanged("carp0", 1, State.BACKUP, State.MASTER, Reason.MASTER_DOWN),
            Log(LOG_CRIT, "carp0: state transition: BACKUP -> MASTER"),
            Log(LOG_ERR, "carp0 demoted group carp by 1 to 1 (carpdev)"),
        ],
    )
    assert rec.lines == [
        (2, "carp0: state transition: BACKUP -> MASTER"),
        (3, "carp0 demoted group carp by 1 to 1 (carpdev)"),
    ]


def test_syslog_datagram(devlog: tuple[str, socket.socket]) -> None:
    path, server = devlog
    sink = open_sink("syslog", "gw-a", devlog=path, stream=io.StringIO())
    assert isinstance(sink, SyslogSink)
    sink.emit(LOG_CRIT, "carp0: state transition: BACKUP -> MASTER")
    sink.emit(9, "clamped")
    first = server.recv(4096).decode()
    pattern = r"<26>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d vswitch\[(\d+)\]: gw-a carp0: state"
    match = re.match(pattern, first)
    assert match, first
    assert int(match.group(1)) == os.getpid()
    assert first.endswith("state transition: BACKUP -> MASTER")
    assert server.recv(4096).decode().startswith("<31>")  # daemon.debug
    sink.close()


def test_syslog_missing_falls_back_with_a_note(tmp_path: Path) -> None:
    out = io.StringIO()
    sink = open_sink("syslog", "gw-a", devlog=str(tmp_path / "nope"), stream=out)
    assert isinstance(sink, StderrSink)
    sink.emit(LOG_CRIT, "carp0: state transition: INIT -> BACKUP")
    lines = out.getvalue().splitlines()
    assert "logging to stderr" in lines[0] and "nope" in lines[0]
    assert lines[1].endswith("gw-a carp0: state transition: INIT -> BACKUP")
    assert isinstance(open_sink("stderr", "gw-a"), StderrSink)


def test_syslog_going_away_falls_back_then_recovers(devlog: tuple[str, socket.socket]) -> None:
    path, server = devlog
    out = io.StringIO()
    sink = SyslogSink("gw-a", StderrSink("gw-a", out), address=path)
    server.close()
    os.unlink(path)  # syslogd is gone
    sink.emit(LOG_CRIT, "first")
    sink.emit(LOG_CRIT, "second")
    lines = out.getvalue().splitlines()
    assert len(lines) == 3  # one note, then both messages
    assert f"syslog at {path} failed" in lines[0]
    assert lines[1].endswith("gw-a first") and lines[2].endswith("gw-a second")
    revived = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # syslogd is back
    revived.bind(path)
    revived.settimeout(10)
    try:
        sink.emit(LOG_CRIT, "third")
        assert revived.recv(4096).decode().endswith("gw-a third")
        assert len(out.getvalue().splitlines()) == 3
    finally:
        revived.close()
        sink.close()


def test_python_logging_goes_to_the_sink() -> None:
    rec = Recorder()
    handler = install(rec, logger="vswitch.test_logsink")
    try:
        logger = logging.getLogger("vswitch.test_logsink.hooks")
        logger.error("hook notify timed out")
        logger.warning("dropped a client")
        logger.debug("not at INFO")
    finally:
        logging.getLogger("vswitch.test_logsink").removeHandler(handler)
    assert rec.lines == [(3, "hook notify timed out"), (4, "dropped a client")]
    assert [syslog_priority(n) for n in (50, 40, 30, 20, 10)] == [2, 3, 4, 6, 7]


def test_handler_survives_a_broken_sink(capsys: pytest.CaptureFixture[str]) -> None:
    class Broken:
        def emit(self, level: int, message: str) -> None:
            raise OSError("disk full")

    handler = SinkHandler(Broken())
    record = logging.LogRecord("vswitch", logging.ERROR, __file__, 1, "boom", None, None)
    handler.emit(record)  # logging's handleError reports, nothing is raised
    assert "disk full" in capsys.readouterr().err
