"""The node's control socket: JSON lines over a Unix socket (mode 0600).

Every request is one JSON object on one line, `{"id": .., "cmd": .., ...}`, answered by one line
`{"id": .., "ok": true, "result": ..}` or `{"id": .., "ok": false, "error": "..."}` (plus
`"errors": [...]` when a reload refuses a configuration). `events` acknowledges and then turns the
connection into a stream of event lines; `capture` acknowledges and then sends pcapng bytes.
The node is reached only through `NodeControl`, called synchronously on the node's loop; no
client can hold the node up: writes are bounded in time, an event subscriber whose queue fills
is dropped and counted, and a capture whose reader lags loses frames (counted).

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
import math
import os
import re
import socket
import stat
import struct
from collections import Counter
from collections.abc import Iterable
from typing import Any, Protocol

from carp.host import SYSCTL_PREFIX
from carp.ifconfig import IfconfigChange, parse_change, parse_demote
from vswitch.events import EventBus, SubscriptionClosed
from vswitch.ifconfig_cmd import render_group, render_status
from vswitch.status import NodeStatus
from vswitch.watch import CaptureSession

log = logging.getLogger("vswitch.control")

SYSCTLS = ("allow", "preempt", "log")  # writable; `stats` is read-only (section 8.1)
LINE_LIMIT = 64 * 1024
MAX_DEPTH = 32  # JSON nesting of a request; deeper would only feed the parser's recursion
MAX_CLIENTS = 32
RESERVE = 4  # client slots event subscribers cannot take: room for the CLI
MAX_PER_PEER = 8  # connections of one process: a client storm from one place cannot fill the rest
IDLE_TIMEOUT = 60.0  # a request connection waiting this long for a request is closed
WRITE_TIMEOUT = 5.0
CAPTURE_CHUNK = 256 * 1024  # pcapng bytes written before the next drain
LINGER = 1.0  # seconds to read what a client still sends after a refusal, so it sees the answer


class NodeControl(Protocol):
    """What the control socket needs from a running node (vswitch/node.py implements it)."""

    def status(self) -> NodeStatus:
        """A JSON-able snapshot (vswitch/status.py)."""
        ...

    def ifconfig(self, carpif: str, change: IfconfigChange) -> None:
        """Apply a parsed `vswitch ifconfig carpN ...`; ValueError says why it cannot."""
        ...

    def group_demote(self, group: str, adj: int) -> int:
        """`ifconfig -g GROUP [-]carpdemote N`; returns the new counter, ValueError if outside
        0..255 (section 5.1) or the group is unknown."""
        ...

    def sysctl(self, name: str | None, value: int | None) -> dict[str, int]:
        """Short names (allow, preempt, log). name None: all; value None: read; else set and
        return the new value. ValueError for a value the node refuses."""
        ...

    def reload(self) -> list[str]:
        """Re-read the configuration and apply what changed; returns what changed. Raises an
        exception with `errors: list[str]` (carp.config.ConfigError) and changes nothing when
        the file is invalid."""
        ...

    def port(self, switch: str, name: str, words: dict[str, str] | None) -> list[str]:
        """`vswitch port add` (words: the port's key=value settings) or `port del` (None);
        returns what changed. ValueError for an unknown switch or port; an exception with
        `errors` (ConfigError) when the port is refused; nothing changed then."""
        ...

    def impair(self, switch: str, port: str, words: list[str]) -> dict[str, Any]:
        """`vswitch impair SWITCH PORT words`: the port's impairment after the change. ValueError
        names the word, or the unknown switch or port; nothing changed then."""
        ...

    def capture(
        self, switch: str, ports: list[str], *, snaplen: int | None, count: int | None
    ) -> CaptureSession:
        """`vswitch capture`: a new capture of those ports (none: all) of `switch`
        (vswitch/watch.py). ValueError for an unknown switch or port."""
        ...

    def explain(self, carpif: str | None) -> dict[str, Any]:
        """`vswitch explain [carpN]`: {"data": carp/explain.py's data, "text": its rendering}.
        ValueError for an unknown carp interface."""
        ...


class ControlSocketError(Exception):
    """The control socket cannot be created (another node listens there, not a socket, ...)."""


def _respond(request_id: Any, result: Any) -> dict[str, Any]:
    return {"id": request_id, "ok": True, "result": result}


def _error(request_id: Any, message: str, errors: list[str] | None = None) -> dict[str, Any]:
    response = {"id": request_id, "ok": False, "error": message}
    if errors is not None:
        response["errors"] = errors
    return response


class Dispatcher:
    """Requests to NodeControl calls; synchronous so it is tested without any socket."""

    def __init__(self, node: NodeControl) -> None:
        self.node = node

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        request_id = request.get("id")
        cmd = request.get("cmd")
        handler = {
            "status": self._status,
            "ifconfig": self._ifconfig,
            "demote": self._demote,
            "sysctl": self._sysctl,
            "reload": self._reload,
            "port": self._port,
            "impair": self._impair,
            "explain": self._explain,
        }.get(cmd if isinstance(cmd, str) else "")
        if handler is None:
            return _error(request_id, f"unknown command {cmd!r}")
        try:
            return _respond(request_id, handler(request))
        except (ValueError, KeyError, TypeError) as exc:
            return _error(request_id, str(exc) or type(exc).__name__)
        except Exception as exc:
            errors = getattr(exc, "errors", None)
            if isinstance(errors, list) and all(isinstance(e, str) for e in errors):
                return _error(request_id, "configuration refused, nothing changed", errors)
            log.exception("control: %s failed", cmd)
            return _error(request_id, f"internal error: {type(exc).__name__}: {exc}")

    def _status(self, request: dict[str, Any]) -> NodeStatus:
        return self.node.status()

    def _ifconfig(self, request: dict[str, Any]) -> str:
        carpif = _optional_str(request, "carpif")
        words = request.get("words", [])
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise ValueError("words: expected a list of strings")
        if words:
            if carpif is None:
                raise ValueError("name the carp interface to change")
            self.node.ifconfig(carpif, parse_change(words))
        return render_status(self.node.status(), carpif)

    def _demote(self, request: dict[str, Any]) -> dict[str, Any]:
        group = _optional_str(request, "group")
        if group is None:
            raise ValueError("group: missing")
        word = _optional_str(request, "word")
        if word is None:
            return {"group": group, "value": None, "text": render_group(self.node.status(), group)}
        count = request.get("count")
        adj = parse_demote(word, None if count is None else str(count))
        value = self.node.group_demote(group, adj)
        return {"group": group, "value": value, "text": f"{group}: carp demote count {value}"}

    def _sysctl(self, request: dict[str, Any]) -> dict[str, Any]:
        name = _optional_str(request, "name")
        value = request.get("value")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{name}: the value must be an integer")
        if name is None:
            values = {SYSCTL_PREFIX + k: v for k, v in self.node.sysctl(None, None).items()}
            return values | self._stats(None)
        short = name.removeprefix(SYSCTL_PREFIX)
        if short == "stats" or short.startswith("stats."):
            if value is not None:
                raise ValueError(f"{SYSCTL_PREFIX}{short}: read-only")
            return self._stats(short.removeprefix("stats").removeprefix("."))
        if short not in SYSCTLS:
            known = ", ".join(SYSCTL_PREFIX + s for s in (*SYSCTLS, "stats"))
            raise ValueError(f"{name}: unknown sysctl (known: {known})")
        old = self.node.sysctl(short, None)[short]
        if value is None:
            return {SYSCTL_PREFIX + short: old}
        new = self.node.sysctl(short, value)[short]
        return {SYSCTL_PREFIX + short: new, "old": old}

    def _stats(self, counter: str | None) -> dict[str, Any]:
        stats = self.node.status()["carpstats"]
        if counter and counter not in stats:
            raise ValueError(f"{SYSCTL_PREFIX}stats.{counter}: no such counter")
        prefix = f"{SYSCTL_PREFIX}stats."
        return {prefix + k: v for k, v in stats.items() if not counter or k == counter}

    def _reload(self, request: dict[str, Any]) -> list[str]:
        return self.node.reload()

    def _port(self, request: dict[str, Any]) -> list[str]:
        """`action` "add" with `settings` {key: value text}, or "del"; `switch`, `name`."""
        action = _optional_str(request, "action")
        switch = _optional_str(request, "switch")
        name = _optional_str(request, "name")
        if action not in ("add", "del"):
            raise ValueError(f"action: {action!r} is not add or del")
        if not switch or not name:
            raise ValueError("name the switch and the port")
        if action == "del":
            return self.node.port(switch, name, None)
        settings = request.get("settings", {})
        if not isinstance(settings, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in settings.items()
        ):
            raise ValueError("settings: expected an object of strings (key=value words)")
        return self.node.port(switch, name, settings)

    def _impair(self, request: dict[str, Any]) -> dict[str, Any]:
        """`switch`, `port`, `words` (e.g. ["in", "delay", "50ms"], or ["clear"])."""
        switch = _optional_str(request, "switch")
        port = _optional_str(request, "port")
        if not switch or not port:
            raise ValueError("name the switch and the port")
        return self.node.impair(switch, port, _strings(request, "words"))

    def _explain(self, request: dict[str, Any]) -> dict[str, Any]:
        return self.node.explain(_optional_str(request, "carpif"))

    def capture(self, request: dict[str, Any]) -> tuple[CaptureSession, float | None]:
        """A `capture` request (`switch`, `ports`?, `snaplen`?, `count`?, `duration`?): its
        session and how long it runs (None: until the reader goes or the count is reached).
        ValueError says what is wrong; nothing was started then."""
        switch = _optional_str(request, "switch")
        if not switch:
            raise ValueError("name the switch to capture on")
        ports = _strings(request, "ports")
        snaplen = _optional_int(request, "snaplen")
        count = _optional_int(request, "count")
        duration = request.get("duration")
        if duration is not None and (
            isinstance(duration, bool)
            or not isinstance(duration, int | float)
            or not 0 < duration < math.inf
        ):
            raise ValueError(f"duration {duration!r}: give a positive number of seconds")
        session = self.node.capture(switch, ports, snaplen=snaplen, count=count)
        return session, None if duration is None else float(duration)


def _strings(request: dict[str, Any], key: str) -> list[str]:
    value = request.get(key, [])
    if not isinstance(value, list) or not all(isinstance(w, str) for w in value):
        raise ValueError(f"{key}: expected a list of strings")
    return value


def _optional_int(request: dict[str, Any], key: str) -> int | None:
    value = request.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"{key}: expected an integer")
    return value


def _optional_str(request: dict[str, Any], key: str) -> str | None:
    value = request.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{key}: expected a string")
    return value


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


def peer_credentials(sock: Any) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a Unix stream socket (SO_PEERCRED)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


def check_socket_dir(directory: str, uid: int | None = None) -> None:
    """The socket's directory must be owned by root or `uid` (default: us) and writable by no
    one else: whoever can write there can replace the socket and speak for the node."""
    uid = os.geteuid() if uid is None else uid
    st = os.stat(directory)
    if not stat.S_ISDIR(st.st_mode):
        raise ControlSocketError(f"{directory}: not a directory")
    if st.st_uid not in (0, uid):
        raise ControlSocketError(
            f"{directory}: owned by uid {st.st_uid}, neither root nor the node's user (uid {uid})"
            "; another user could replace the control socket: use a directory of root's or ours"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ControlSocketError(
            f"{directory}: writable by group or others (mode {stat.S_IMODE(st.st_mode):04o});"
            f" another user could replace the control socket: chmod go-w {directory}"
        )


def bind_unix(path: str) -> socket.socket:
    """A listening socket at `path`, mode 0600, replacing a stale socket file.

    The directory is created 0755 if missing and checked (check_socket_dir). The mode is set
    between bind and listen: until listen() nobody can connect, so there is no window in which
    another user could reach it.
    """
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o755, exist_ok=True)
    check_socket_dir(directory)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise ControlSocketError(f"{path} exists and is not a socket; remove it")
        _refuse_if_alive(path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, 0o600)
        sock.listen(16)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _refuse_if_alive(path: str) -> None:
    """Return only if the socket at `path` is stale (ECONNREFUSED: nobody listens, a crashed
    node) or gone (ENOENT). Anything else, a full backlog (EAGAIN) or any other error included,
    may be a live node that is merely slow: its socket is never unlinked."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)  # a Unix connect never waits: it is queued, refused or EAGAIN
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        return
    except BlockingIOError:
        raise ControlSocketError(
            f"{path}: a node is listening there but not accepting (its queue is full);"
            " not replacing its socket: stop that node first"
        ) from None
    except OSError as exc:
        raise ControlSocketError(
            f"{path}: cannot tell whether a node listens there ({exc.strerror or exc});"
            " not replacing its socket"
        ) from None
    else:
        try:
            who = f" ({_describe(peer_credentials(probe)[0])})"
        except OSError:
            who = ""
        raise ControlSocketError(f"{path}: another node{who} is already listening there")
    finally:
        probe.close()


def _describe(pid: int) -> str:
    """`pid 1234: vswitch run -c gw-a.toml`, as far as /proc tells."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            words = f.read(4096).rstrip(b"\0").split(b"\0")
    except OSError:
        return f"pid {pid}"
    command = " ".join(w.decode(errors="replace") for w in words)
    return f"pid {pid}: {command}" if command else f"pid {pid}"


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
        pid, refusal = self._refusal(writer)
        if refusal is not None:
            await self._hang_up(reader, writer, _error(None, refusal))
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
            _encode(_error(None, "closed: too many control clients and this one was idle"))
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
                idle = _error(None, f"idle for {self.idle_timeout:g} s; closing")
                await self._hang_up(reader, writer, idle)
                return
            except ValueError:  # longer than LINE_LIMIT: read on a little so the client sees it
                self._drop("line")
                too_long = _error(None, f"request longer than {LINE_LIMIT} bytes")
                await self._hang_up(reader, writer, too_long, LINGER)
                return
            client.idle_since = None
            if not line:
                return
            if not line.strip():
                continue
            request = _parse(line)
            if isinstance(request, str):
                response = _error(None, request)
            elif request.get("cmd") == "events":
                if self.subscribers >= self.max_clients - self.reserve:
                    response = _error(
                        request.get("id"), f"too many event subscribers ({self.subscribers})"
                    )
                else:
                    client.streaming = True
                    await self._stream(request, reader, writer)
                    return
            elif request.get("cmd") == "capture":
                if self.subscribers >= self.max_clients - self.reserve:
                    response = _error(
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
            data = _encode(_error(message.get("id"), f"internal error: {exc}"))
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
            if not await self._send(writer, _respond(request.get("id"), {"seq": self.bus.seq})):
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
            await self._send(writer, _error(request.get("id"), str(exc)))
            return
        watcher = asyncio.ensure_future(_wait_eof(reader))
        watcher.add_done_callback(lambda _: session.close())
        loop = asyncio.get_running_loop()
        end = None if duration is None else loop.time() + duration
        try:
            if not await self._send(writer, _respond(request.get("id"), session.describe())):
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
