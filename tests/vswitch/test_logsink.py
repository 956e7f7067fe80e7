"""Log sinks: stderr lines, syslog datagrams (to a private socket), fallback, Python logging;
none of them blocks or raises when the other end is full or gone."""

import contextlib
import errno
import fcntl
import io
import logging
import os
import re
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from carp.actions import Log, Reason, StateChanged
from carp.constants import LOG_CRIT, LOG_ERR, State
from vswitch.logsink import (
    JOURNAL_STREAM,
    SinkHandler,
    StderrSink,
    SyslogSink,
    emit_actions,
    install,
    journal_stream,
    open_sink,
    syslog_priority,
    write_nonblocking,
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
        self.dropped = 0

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
    handler = install(rec, logger="vswitch.test_logsink", last_resort=False)
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
        dropped = 0

        def emit(self, level: int, message: str) -> None:
            raise OSError("disk full")

    handler = SinkHandler(Broken())
    record = logging.LogRecord("vswitch", logging.ERROR, __file__, 1, "boom", None, None)
    handler.handle(record)
    bad_args = logging.LogRecord("vswitch", logging.ERROR, __file__, 1, "%d", ("x",), None)
    handler.handle(bad_args)  # cannot even be formatted
    assert handler.dropped == 2
    assert capsys.readouterr().err == ""  # nothing written to a stderr that may be blocked


def test_last_resort_goes_to_the_sink(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logging, "lastResort", logging.lastResort)  # restored afterwards
    rec = Recorder()
    handler = install(rec, logger="vswitch.test_logsink.lr")
    logging.getLogger("vswitch.test_logsink.lr").removeHandler(handler)
    orphan = logging.getLogger("test_logsink_orphan")  # no handler anywhere, like asyncio's
    orphan.propagate = False
    orphan.error("Exception in callback")
    orphan.info("below WARNING")
    assert rec.lines == [(3, "Exception in callback")]


# ---- stderr that cannot take a line: dropped and counted, never blocking or raising ----


def in_thread(action: Callable[[], None]) -> None:
    """Run `action` where a block would show: the test fails instead of hanging."""
    worker = threading.Thread(target=action, daemon=True)
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), "the sink blocked"


def fill(fd: int) -> int:
    """Fill the pipe behind `fd` in whole 4 KiB writes; the number of bytes it holds."""
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    total = 0
    try:
        while True:
            total += os.write(fd, b"f" * 4096)
    except BlockingIOError:
        pass
    fcntl.fcntl(fd, fcntl.F_SETFL, flags)  # blocking again, as stderr normally is
    return total


def drain(fd: int) -> bytes:
    os.set_blocking(fd, False)
    data = b""
    try:
        while chunk := os.read(fd, 65536):
            data += chunk
    except BlockingIOError:
        pass
    return data


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        with contextlib.suppress(OSError):  # the test closed it already
            os.close(fd)


def test_stderr_reader_gone(pipe: tuple[int, int]) -> None:
    r, w = pipe
    os.close(r)  # `vswitch run 2>&1 | head -c 1` after head exits
    sink = StderrSink("gw-a", fd=w)
    in_thread(lambda: sink.emit(LOG_CRIT, "carp0: state transition: BACKUP -> MASTER"))
    sink.emit(LOG_CRIT, "again")
    assert sink.dropped == 2


def test_stderr_closed_fd(pipe: tuple[int, int]) -> None:
    _, w = pipe
    sink = StderrSink("gw-a", fd=w)
    os.close(w)
    sink.emit(LOG_CRIT, "to nowhere")  # EBADF
    assert sink.dropped == 1


def test_stderr_full_pipe_drops_without_blocking(pipe: tuple[int, int]) -> None:
    r, w = pipe
    held = fill(w)
    sink = StderrSink("gw-a", fd=w, wall=lambda: 0.0)
    in_thread(lambda: sink.emit(LOG_CRIT, "lost"))
    assert sink.dropped == 1
    assert len(drain(r)) == held  # nothing of the line went in
    os.set_blocking(r, True)
    sink.emit(LOG_CRIT, "kept")
    assert os.read(r, 4096) == b"1970-01-01T00:00:00.000+00:00 gw-a kept\n"
    assert sink.dropped == 1


def test_stderr_nonblocking_full_pipe(pipe: tuple[int, int]) -> None:
    _, w = pipe
    os.set_blocking(w, False)
    fill(w)
    os.set_blocking(w, False)  # fill() restored the flags it found
    sink = StderrSink("gw-a", fd=w)
    sink.emit(LOG_CRIT, "lost")  # EAGAIN
    assert sink.dropped == 1


def test_a_line_cut_short_is_ended_before_the_next(pipe: tuple[int, int]) -> None:
    r, w = pipe
    held = fill(w)
    assert len(os.read(r, 4096)) == 4096  # one pipe slot free: room for one chunk only
    sink = StderrSink("gw-a", fd=w, wall=lambda: 0.0)
    long_line = "x" * 10_000
    in_thread(lambda: sink.emit(LOG_CRIT, long_line))
    assert sink.dropped == 1
    data = drain(r)
    assert len(data) == held  # the pipe was full again: 4096 bytes of the line went in
    assert data.endswith(b" gw-a " + b"x" * (4096 - len("1970-01-01T00:00:00.000+00:00 gw-a ")))
    os.set_blocking(r, True)
    sink.emit(LOG_CRIT, "next")
    assert os.read(r, 4096) == b"\n1970-01-01T00:00:00.000+00:00 gw-a next\n"


def test_write_nonblocking_writes_long_data_in_chunks(pipe: tuple[int, int]) -> None:
    r, w = pipe
    data = bytes(range(256)) * 64  # 16 KiB: four chunks, all fit in an empty pipe
    assert write_nonblocking(w, data) == len(data)
    assert drain(r) == data
    os.close(r)
    with pytest.raises(OSError) as broken:
        write_nonblocking(w, b"x")
    assert broken.value.errno == errno.EPIPE


def test_stream_errors_are_counted() -> None:
    out = io.StringIO()
    sink = StderrSink("gw-a", out)
    out.close()
    sink.emit(LOG_CRIT, "closed stream")
    assert sink.dropped == 1


# ---- syslog that is busy or gone ----


def test_syslog_busy_drops_and_counts(devlog: tuple[str, socket.socket]) -> None:
    path, server = devlog
    out = io.StringIO()
    sink = SyslogSink("gw-a", StderrSink("gw-a", out), address=path)
    sent = 0
    while sink.dropped == 0:  # syslogd does not read: its queue fills
        assert sent < 100_000, "never dropped"
        sink.emit(LOG_CRIT, "x" * 200)
        sent += 1
    assert out.getvalue() == ""  # busy is not gone: no fallback, no note
    server.setblocking(False)
    received = 0
    with pytest.raises(BlockingIOError):
        while True:
            server.recv(4096)
            received += 1
    assert received == sent - 1  # only the one counted was lost
    server.settimeout(10)
    sink.emit(LOG_CRIT, "after")
    assert server.recv(4096).decode().endswith("gw-a after")
    sink.close()


def test_syslog_and_stderr_both_gone(
    devlog: tuple[str, socket.socket], pipe: tuple[int, int]
) -> None:
    path, server = devlog
    r, w = pipe
    os.close(r)
    sink = SyslogSink("gw-a", StderrSink("gw-a", fd=w), address=path)
    server.close()
    os.unlink(path)
    in_thread(lambda: sink.emit(LOG_CRIT, "lost"))
    sink.emit(LOG_CRIT, "lost too")
    assert sink.dropped == 3  # the note and both lines: nothing raised


# ---- stderr connected to the journal (systemd sets JOURNAL_STREAM) ----


def dev_ino(fd: int) -> str:
    st = os.fstat(fd)
    return f"{st.st_dev}:{st.st_ino}"


def elsewhere() -> str:
    """JOURNAL_STREAM of a stream that is not the sink's (/dev/null)."""
    st = os.stat(os.devnull)
    return f"{st.st_dev}:{st.st_ino}"


def test_journal_stream_matches_the_fds_own_device_and_inode(pipe: tuple[int, int]) -> None:
    _, w = pipe
    assert journal_stream(w, {JOURNAL_STREAM: dev_ino(w)})
    assert not journal_stream(w, {})  # not under systemd
    # stderr redirected by whoever started us: the variable is inherited, the stream is not
    assert not journal_stream(w, {JOURNAL_STREAM: elsewhere()})
    for bad in ("", "12", "12:", ":34", "a:b", "1:2:3", f" {dev_ino(w)}", "１:２"):
        assert not journal_stream(w, {JOURNAL_STREAM: bad}), bad
    value = dev_ino(w)
    os.close(w)
    assert not journal_stream(w, {JOURNAL_STREAM: value})  # EBADF: no error, no journal


def test_journal_lines_carry_the_priority_and_no_timestamp(
    pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    r, w = pipe
    monkeypatch.setenv(JOURNAL_STREAM, dev_ino(w))
    sink = StderrSink("gw-a", fd=w, wall=lambda: 0.0)
    assert sink.journal
    sink.emit(LOG_CRIT, "carp0: state transition: BACKUP -> MASTER")
    sink.emit(LOG_ERR, "hook failed\nTraceback (most recent call last):\n  boom")
    sink.emit(9, "clamped to debug")
    sink.emit(-1, "clamped to emerg")
    assert drain(r).decode().splitlines() == [
        "<2>gw-a carp0: state transition: BACKUP -> MASTER",
        "<3>gw-a hook failed",  # every line of a message is an entry of its own in journald
        "<3>Traceback (most recent call last):",
        "<3>  boom",
        "<7>gw-a clamped to debug",
        "<0>gw-a clamped to emerg",
    ]
    assert sink.dropped == 0


def test_without_the_journal_lines_stay_timestamped(
    pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    r, w = pipe
    monkeypatch.setenv(JOURNAL_STREAM, elsewhere())
    sink = StderrSink("gw-a", fd=w, wall=lambda: 0.0)
    assert not sink.journal
    sink.emit(LOG_CRIT, "plain")
    assert drain(r) == b"1970-01-01T00:00:00.000+00:00 gw-a plain\n"
    monkeypatch.setenv(JOURNAL_STREAM, dev_ino(w))
    out = io.StringIO()  # a stream given by the caller is never taken for the journal
    assert not StderrSink("gw-a", out).journal
    assert StderrSink("gw-a", out, journal=True).line(LOG_ERR, "x") == "<3>gw-a x\n"


def test_open_sink_detects_the_journal_on_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(JOURNAL_STREAM, dev_ino(2))
    sink = open_sink("stderr", "gw-a")
    assert isinstance(sink, StderrSink) and sink.journal and sink.fd == 2
    monkeypatch.delenv(JOURNAL_STREAM)
    sink = open_sink("stderr", "gw-a")
    assert isinstance(sink, StderrSink) and not sink.journal


def test_a_full_journal_stream_drops_without_blocking(
    pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    r, w = pipe
    monkeypatch.setenv(JOURNAL_STREAM, dev_ino(w))
    held = fill(w)
    sink = StderrSink("gw-a", fd=w)
    in_thread(lambda: sink.emit(LOG_CRIT, "lost"))
    assert sink.dropped == 1
    assert len(drain(r)) == held
    os.set_blocking(r, True)
    sink.emit(LOG_CRIT, "kept")
    assert os.read(r, 4096) == b"<2>gw-a kept\n"
    os.close(r)  # journald went away
    in_thread(lambda: sink.emit(LOG_CRIT, "to nobody"))
    assert sink.dropped == 2
