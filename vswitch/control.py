"""The node's control socket: JSON lines over a Unix socket (mode 0600).

Every request is one JSON object on one line, `{"id": .., "cmd": .., ...}`, answered by one line
`{"id": .., "ok": true, "result": ..}` or `{"id": .., "ok": false, "error": "..."}` (plus
`"errors": [...]` when a reload refuses a configuration). `events` acknowledges and then turns the
connection into a stream of event lines. The node is reached only through `NodeControl`, called
synchronously on the node's loop; no client can hold the node up: writes are bounded in time and
an event subscriber whose queue fills is dropped and counted.
"""

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
from typing import Any, Protocol

from vswitch.events import EventBus, SubscriptionClosed
from vswitch.ifconfig_cmd import (
    IfconfigChange,
    parse_demote,
    parse_ifconfig,
    render_group,
    render_status,
)
from vswitch.status import NodeStatus

log = logging.getLogger("vswitch.control")

SYSCTL_PREFIX = "net.inet.carp."
SYSCTLS = ("allow", "preempt", "log")  # writable; `stats` is read-only (section 8.1)
LINE_LIMIT = 64 * 1024


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
            self.node.ifconfig(carpif, parse_ifconfig(words))
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


def _optional_str(request: dict[str, Any], key: str) -> str | None:
    value = request.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{key}: expected a string")
    return value


def _encode(message: dict[str, Any]) -> bytes:
    return (json.dumps(message, separators=(",", ":")) + "\n").encode()


def bind_unix(path: str) -> socket.socket:
    """A listening socket at `path`, mode 0600, replacing a stale socket file.

    The mode is set between bind and listen: until listen() nobody can connect, so there is no
    window in which another user could reach it.
    """
    os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise ControlSocketError(f"{path} exists and is not a socket; remove it")
        if _listening(path):
            raise ControlSocketError(f"{path}: another node is already listening there")
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


def _listening(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


class ControlServer:
    """Serves a `NodeControl` and an `EventBus` on a Unix socket."""

    def __init__(
        self,
        path: str,
        node: NodeControl,
        bus: EventBus,
        *,
        queue_size: int = 1024,
        max_clients: int = 32,
        write_timeout: float = 5.0,
    ) -> None:
        self.path = path
        self.dispatcher = Dispatcher(node)
        self.bus = bus
        self.queue_size = queue_size
        self.max_clients = max_clients
        self.write_timeout = write_timeout
        self.dropped = 0  # clients dropped: event queue full, write timed out, or too many
        self._server: asyncio.AbstractServer | None = None
        self._inode: int | None = None
        self._clients: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        sock = bind_unix(self.path)
        self._inode = os.stat(self.path).st_ino
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

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._clients) >= self.max_clients:
            self.dropped += 1
            writer.write(_encode(_error(None, "too many control clients")))
            writer.close()
            return
        self._clients.add(writer)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._clients.discard(writer)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                line = await reader.readline()
            except ValueError:  # longer than LINE_LIMIT
                await self._send(writer, _error(None, f"request longer than {LINE_LIMIT} bytes"))
                return
            if not line:
                return
            if not line.strip():
                continue
            try:
                request = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                response = _error(None, "not a JSON object")
            else:
                if not isinstance(request, dict):
                    response = _error(None, "not a JSON object")
                elif request.get("cmd") == "events":
                    await self._stream(request, reader, writer)
                    return
                else:
                    response = self.dispatcher.handle(request)
            if not await self._send(writer, response):
                return

    async def _send(self, writer: asyncio.StreamWriter, message: dict[str, Any]) -> bool:
        writer.write(_encode(message))
        return await self._drain(writer)

    async def _drain(self, writer: asyncio.StreamWriter) -> bool:
        """Wait for the client to take what was written; drop it if it does not in time."""
        try:
            await asyncio.wait_for(writer.drain(), self.write_timeout)
        except TimeoutError:
            self.dropped += 1
            log.warning("control: dropped a client that stopped reading")
            writer.transport.abort()
            return False
        return True

    async def _stream(
        self,
        request: dict[str, Any],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        def drop() -> None:
            self.dropped += 1
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


async def _wait_eof(reader: asyncio.StreamReader) -> None:
    """Anything after `events` is ignored; EOF or an error means the reader has gone."""
    with contextlib.suppress(ConnectionError, ValueError):
        while await reader.read(4096):
            pass
