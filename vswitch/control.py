"""The node's control socket: JSON lines over a Unix socket (mode 0600).

Every request is one JSON object on one line, `{"id": .., "cmd": .., ...}`, answered by one line
`{"id": .., "ok": true, "result": ..}` or `{"id": .., "ok": false, "error": "..."}` (plus
`"errors": [...]` when a reload refuses a configuration). `events` acknowledges and then turns the
connection into a stream of event lines; `capture` acknowledges and then sends pcapng bytes.
The node is reached only through `NodeControl`, called synchronously on the node's loop by the
`Dispatcher` (vswitch/dispatch.py, the request side); the socket file is made and its peers named
by vswitch/unixsock.py. No client can hold the node up: writes are bounded in time, an event
subscriber whose queue fills is dropped and counted, and a capture whose reader lags loses frames
(counted).

A client is a side channel too, so everything it can make the server hold is bounded: the line
length and JSON nesting of a request, the time a request connection may stay idle, the number of
clients (with a reserve event subscribers cannot take, and idle clients closed first so the CLI
always gets in). Only root and the node's own user are served (SO_PEERCRED). Every refusal is an
error line before the connection closes, never silence.
"""

import asyncio
import contextlib
import json
import logging
import os
import re
import struct
from collections import Counter
from collections.abc import Iterable
from typing import Any

from vswitch.dispatch import Dispatcher, NodeControl, error, respond
from vswitch.events import EventBus, SubscriptionClosed
from vswitch.unixsock import bind_unix, peer_credentials

log = logging.getLogger("vswitch.control")

LINE_LIMIT = 64 * 1024
MAX_DEPTH = 32  # JSON nesting of a request; deeper would only feed the parser's recursion
MAX_CLIENTS = 32
RESERVE = 4  # client slots event subscribers cannot take: room for the CLI
MAX_PER_PEER = 8  # connections of one process: a client storm from one place cannot fill the rest
IDLE_TIMEOUT = 60.0  # a request connection waiting this long for a request is closed
WRITE_TIMEOUT = 5.0
CAPTURE_CHUNK = 256 * 1024  # pcapng bytes written before the next drain
LINGER = 1.0  # seconds to read what a client still sends after a refusal, so it sees the answer


def _encode(message: dict[str, Any]) -> bytes:
    return (json.dumps(message, separators=(",", ":")) + "\n").encode()


# a JSON string (an unterminated one runs to the end: no rescans) or a bracket
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"?|[\[\]{}]', re.DOTALL)
_OPEN = frozenset(b"[{")
_CLOSE = frozenset(b"]}")


def too_deep(line: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether the JSON text `line` nests arrays/objects deeper than `limit`, brackets inside
    strings not counted; linear in the length, checked before json.loads recurses into it."""
    if line.count(b"[") + line.count(b"{") <= limit:
        return False
    depth = 0
    for match in _TOKENS.finditer(line):
        char = line[match.start()]
        if char in _OPEN:
            depth += 1
            if depth > limit:
                return True
        elif char in _CLOSE:
            depth -= 1
    return False


class _Client:
    """One connection, as the client limits see it."""

    __slots__ = ("idle_since", "pid", "streaming", "writer")

    def __init__(self, writer: asyncio.StreamWriter, now: float, pid: int = -1) -> None:
        self.writer = writer
        self.pid = pid  # of the peer process (SO_PEERCRED); -1 when unknown
        self.idle_since: float | None = now  # waiting for a request since; None while busy
        self.streaming = False  # an event subscriber: never idle, never evicted


class ControlServer:
    """Serves a `NodeControl` and an `EventBus` on a Unix socket."""

    def __init__(
        self,
        path: str,
        node: NodeControl,
        bus: EventBus,
        *,
        queue_size: int = 1024,
        max_clients: int = MAX_CLIENTS,
        reserve: int = RESERVE,
        write_timeout: float = WRITE_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self.path = path
        self.dispatcher = Dispatcher(node)
        self.bus = bus
        self.queue_size = queue_size
        self.max_clients = max_clients
        self.reserve = min(reserve, max_clients - 1)  # at least one subscriber can get in
        self.write_timeout = write_timeout
        self.idle_timeout = idle_timeout
        self.dropped = 0  # connections the server closed, for any of the reasons below
        self.dropped_by_reason: Counter[str] = Counter()
        self._server: asyncio.AbstractServer | None = None
        self._inode: int | None = None
        self._owner = os.geteuid()
        self._clients: dict[asyncio.StreamWriter, _Client] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # every connection's, until it ends

    async def start(self) -> None:
        sock = bind_unix(self.path)
        st = os.stat(self.path)
        self._inode, self._owner = st.st_ino, st.st_uid
        self._server = await asyncio.start_unix_server(self._client, sock=sock, limit=LINE_LIMIT)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._clients):
                writer.transport.abort()
            await self._server.wait_closed()
            self._server = None
        # every connection's task ends here, not when the loop is torn down under it (a
        # coroutine closed by the collector mid-`finally` prints "Exception ignored" at exit)
        tasks = set(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=WRITE_TIMEOUT)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=WRITE_TIMEOUT)
        with contextlib.suppress(FileNotFoundError):
            if os.stat(self.path).st_ino == self._inode:  # only our own socket file
                os.unlink(self.path)

    @property
    def clients(self) -> int:
        return len(self._clients)

    @property
    def subscribers(self) -> int:
        return sum(1 for c in self._clients.values() if c.streaming)

    def stats(self) -> dict[str, int]:
        """Clients now, and connections closed by the server: in all and by reason (idle,
        evicted, too-many, peer, line, slow, overflow)."""
        reasons = {f"dropped_{k.replace('-', '_')}": v for k, v in self.dropped_by_reason.items()}
        return {"clients": self.clients, "dropped": self.dropped, **reasons}

    def _drop(self, reason: str) -> None:
        self.dropped += 1
        self.dropped_by_reason[reason] += 1

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        pid, refusal = self._refusal(writer)
        if refusal is not None:
            await self._hang_up(reader, writer, error(None, refusal))
            return
        client = _Client(writer, asyncio.get_running_loop().time(), pid)
        self._clients[writer] = client
        try:
            await self._serve(reader, client)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # the server is closing: end quietly (a cancelled connection task is logged as an
            # error by asyncio's start_unix_server callback)
            pass
        except Exception:  # a bug here must cost one client, not the server
            log.exception("control: client failed")
        finally:
            self._clients.pop(writer, None)
            await self._close(writer)

    def _refusal(self, writer: asyncio.StreamWriter) -> tuple[int, str | None]:
        """The peer's pid, and why its new connection is refused (None: served). Only root and
        the node's user are served; one process holds at most MAX_PER_PEER connections (its own
        longest-idle one makes room); when every slot is taken the longest-idle request
        connection makes room."""
        try:
            pid, uid, _ = peer_credentials(writer.get_extra_info("socket"))
        except (OSError, AttributeError, struct.error):
            pid, uid = -1, -1
        if uid not in (0, self._owner):
            self._drop("peer")
            log.warning("control: refused a client of uid %d", uid)
            return pid, f"permission denied: uid {uid} is neither root nor the node's user"
        mine = [c for c in self._clients.values() if c.pid == pid]
        if pid != -1 and len(mine) >= MAX_PER_PEER and not self._evict_idle(mine):
            self._drop("per-peer")
            return pid, f"too many control connections from process {pid} ({len(mine)})"
        if len(self._clients) >= self.max_clients and not self._evict_idle():
            self._drop("too-many")
            return pid, f"too many control clients ({len(self._clients)})"
        return pid, None

    def _evict_idle(self, among: Iterable[_Client] | None = None) -> bool:
        clients = self._clients.values() if among is None else among
        idle = [c for c in clients if c.idle_since is not None and not c.streaming]
        if not idle:
            return False
        victim = min(idle, key=lambda c: c.idle_since or 0.0)
        self._drop("evicted")
        del self._clients[victim.writer]
        victim.writer.write(
            _encode(error(None, "closed: too many control clients and this one was idle"))
        )
        victim.writer.close()  # its task reads EOF and finishes
        return True

    async def _serve(self, reader: asyncio.StreamReader, client: _Client) -> None:
        writer = client.writer
        loop = asyncio.get_running_loop()
        while True:
            client.idle_since = loop.time()
            try:
                line = await asyncio.wait_for(reader.readline(), self.idle_timeout)
            except TimeoutError:
                self._drop("idle")
                idle = error(None, f"idle for {self.idle_timeout:g} s; closing")
                await self._hang_up(reader, writer, idle)
                return
            except ValueError:  # longer than LINE_LIMIT: read on a little so the client sees it
                self._drop("line")
                too_long = error(None, f"request longer than {LINE_LIMIT} bytes")
                await self._hang_up(reader, writer, too_long, LINGER)
                return
            client.idle_since = None
            if not line:
                return
            if not line.strip():
                continue
            request = _parse(line)
            if isinstance(request, str):
                response = error(None, request)
            elif request.get("cmd") == "events":
                if self.subscribers >= self.max_clients - self.reserve:
                    response = error(
                        request.get("id"), f"too many event subscribers ({self.subscribers})"
                    )
                else:
                    client.streaming = True
                    await self._stream(request, reader, writer)
                    return
            elif request.get("cmd") == "capture":
                if self.subscribers >= self.max_clients - self.reserve:
                    response = error(
                        request.get("id"), f"too many streaming clients ({self.subscribers})"
                    )
                else:
                    client.streaming = True
                    await self._capture(request, reader, writer)
                    return
            else:
                response = self.dispatcher.handle(request)
            if not await self._send(writer, response):
                return

    async def _send(self, writer: asyncio.StreamWriter, message: dict[str, Any]) -> bool:
        try:
            data = _encode(message)
        except (TypeError, ValueError, RecursionError) as exc:  # a node bug, not the client's
            log.error("control: cannot encode an answer: %s", exc)
            data = _encode(error(message.get("id"), f"internal error: {exc}"))
        writer.write(data)
        return await self._drain(writer)

    async def _drain(self, writer: asyncio.StreamWriter) -> bool:
        """Wait for the client to take what was written; drop it if it does not in time."""
        try:
            await asyncio.wait_for(writer.drain(), self.write_timeout)
        except TimeoutError:
            self._drop("slow")
            log.warning("control: dropped a client that stopped reading")
            writer.transport.abort()
            return False
        return True

    async def _hang_up(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        message: dict[str, Any],
        linger: float = 0.0,
    ) -> None:
        """Answer `message`, then close. With `linger`, first read on (and discard) what the
        client still sends, up to `linger` seconds: closing with unread input would reset the
        connection and the client could lose the answer."""
        try:
            writer.write(_encode(message))
            if linger > 0 and writer.can_write_eof():
                writer.write_eof()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(_wait_eof(reader), linger)
        except ConnectionError:
            pass
        finally:
            await self._close(writer)

    async def _close(self, writer: asyncio.StreamWriter) -> None:
        """Close after what is buffered has gone, or after write_timeout whatever the client
        does: a connection never outlives its usefulness by more than that."""
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), self.write_timeout)
        except (Exception, asyncio.CancelledError):
            # timed out, the client reset, or the server is closing: it is going now either way
            pass
        finally:
            writer.transport.abort()

    async def _stream(
        self,
        request: dict[str, Any],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        def drop() -> None:
            self._drop("overflow")
            log.warning("control: dropped a slow event subscriber")
            writer.transport.abort()

        sub = self.bus.subscribe(self.queue_size, request.get("snapshot", True) is not False, drop)
        watcher = asyncio.ensure_future(_wait_eof(reader))
        watcher.add_done_callback(lambda _: sub.close())
        try:
            if not await self._send(writer, respond(request.get("id"), {"seq": self.bus.seq})):
                return
            while True:
                event = await sub.get()
                writer.write((event.to_json() + "\n").encode())
                if len(sub) == 0 and not await self._drain(writer):
                    return
        except SubscriptionClosed:
            return
        finally:
            sub.close()
            watcher.cancel()

    async def _capture(
        self,
        request: dict[str, Any],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        """An acknowledgement line, then pcapng until the count or duration is reached, the
        reader goes or the node closes the capture. Frames wait in the capture's own bounded
        queue: a reader that lags loses frames there (counted, and told at the end), never the
        node's time; one that takes nothing for write_timeout is dropped like any client."""
        try:
            session, duration = self.dispatcher.capture(request)
        except ValueError as exc:
            await self._send(writer, error(request.get("id"), str(exc)))
            return
        watcher = asyncio.ensure_future(_wait_eof(reader))
        watcher.add_done_callback(lambda _: session.close())
        loop = asyncio.get_running_loop()
        end = None if duration is None else loop.time() + duration
        try:
            if not await self._send(writer, respond(request.get("id"), session.describe())):
                return
            while not session.finished:
                data = session.take(CAPTURE_CHUNK)
                if data:
                    writer.write(data)
                    if not await self._drain(writer):
                        return
                    continue
                left = None if end is None else end - loop.time()
                if left is not None and left <= 0:
                    session.stop()  # the statistics blocks follow, then the end
                else:
                    await session.wait(left)
        finally:
            session.close()
            watcher.cancel()


def _parse(line: bytes) -> dict[str, Any] | str:
    """A request object, or why the line is not one."""
    if too_deep(line):
        return f"request nested deeper than {MAX_DEPTH} levels"
    try:
        request = json.loads(line)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return "not a JSON object"
    if not isinstance(request, dict):
        return "not a JSON object"
    return request


async def _wait_eof(reader: asyncio.StreamReader) -> None:
    """Anything after `events` is ignored; EOF or an error means the reader has gone."""
    with contextlib.suppress(ConnectionError, ValueError):
        while await reader.read(4096):
            pass
