"""What the client subcommands share: finding a node's control socket and talking to it.

The socket is `-s SOCKET`, or `[node] control` of `-c CONFIG` (default
/run/vswitch/<name>.sock), or the only socket in /run/vswitch. The client is plain blocking
sockets: one request, one line back; `events` reads lines until told to stop. It is also the
namespace lab's client (vswitch/lab/): `EventReader` hands a node's events to a callback from a
thread while the lab works. Nothing here imports the daemon's modules.
"""

import argparse
import contextlib
import json
import os
import socket
import stat
import sys
import threading
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from vswitch.paths import RUN_DIR, default_socket

TIMEOUT = 10.0


class NodeUnavailable(Exception):
    """No node can be reached: no socket, nothing listening, no permission."""


class CommandFailed(Exception):
    """The node answered with an error."""

    def __init__(self, message: str, errors: list[str] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


def add_socket_options(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("-s", "--socket", metavar="SOCKET", help="the node's control socket")
    where.add_argument(
        "-c", "--config", metavar="CONFIG", help="the node's config ([node] control)"
    )


def control_path_from_config(path: str) -> str:
    """[node] control, or its default, read without validating the rest of the file."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise NodeUnavailable(f"cannot read {path}: {exc}") from None
    node = data.get("node")
    if isinstance(node, dict):
        if isinstance(node.get("control"), str):
            return str(node["control"])
        if isinstance(node.get("name"), str):
            return default_socket(node["name"])
    raise NodeUnavailable(f"{path}: [node] has neither control nor name")


def find_socket(sock: str | None, config: str | None) -> str:
    if sock:
        return sock
    if config:
        return control_path_from_config(config)
    directory = Path(os.environ.get("VSWITCH_RUN_DIR", RUN_DIR))  # tests, unusual installs
    found = sorted(str(p) for p in directory.glob("*.sock") if _is_socket(p))
    if len(found) == 1:
        return found[0]
    if not found:
        raise NodeUnavailable(
            f"no control socket in {directory}: is a node running? (or use -s SOCKET / -c CONFIG)"
        )
    names = ", ".join(Path(p).name for p in found)
    raise NodeUnavailable(f"several nodes in {directory} ({names}): choose with -s or -c")


def _is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(path.stat().st_mode)
    except OSError:
        return False


class ControlClient:
    def __init__(self, path: str, timeout: float | None = TIMEOUT) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(path)
        except FileNotFoundError:
            self._sock.close()
            raise NodeUnavailable(f"no node is running at {path} (no such socket)") from None
        except ConnectionRefusedError:
            self._sock.close()
            raise NodeUnavailable(f"no node is running at {path} (connection refused)") from None
        except PermissionError:
            self._sock.close()
            raise NodeUnavailable(f"{path}: permission denied (run as the node's user)") from None
        except OSError as exc:
            self._sock.close()
            raise NodeUnavailable(f"cannot reach the node at {path}: {exc}") from None
        self._file = self._sock.makefile("rb")
        self._next_id = 0

    def __enter__(self) -> "ControlClient":
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()
        self._sock.close()

    def shutdown(self) -> None:
        """End the connection under a thread blocked reading it: its read sees the end."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)

    def _send(self, cmd: str, params: dict[str, Any]) -> int:
        self._next_id += 1
        line = json.dumps({"id": self._next_id, "cmd": cmd, **params}) + "\n"
        try:
            self._sock.sendall(line.encode())
        except OSError as exc:
            raise NodeUnavailable(f"lost the node at {self.path}: {exc}") from None
        return self._next_id

    def _read(self) -> dict[str, Any] | None:
        try:
            line = self._file.readline()
        except TimeoutError:
            raise NodeUnavailable(f"the node at {self.path} did not answer in time") from None
        except OSError as exc:
            raise NodeUnavailable(f"lost the node at {self.path}: {exc}") from None
        if not line:
            return None
        try:
            message = json.loads(line)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            raise NodeUnavailable(f"unexpected answer from {self.path}: {line!r}")
        return message

    def request(self, cmd: str, **params: Any) -> Any:
        request_id = self._send(cmd, params)
        response = self._read()
        if response is None:
            raise NodeUnavailable(f"the node at {self.path} closed the connection")
        if not response.get("ok"):
            raise CommandFailed(str(response.get("error")), response.get("errors"))
        if response.get("id") != request_id:
            raise NodeUnavailable(f"answer to another request from {self.path}")
        return response.get("result")

    def events(self, snapshot: bool = True) -> Iterator[dict[str, Any]]:
        """Subscribe now (an error is raised here), then event dicts as they come; the iterator
        ends when the node closes the stream."""
        self.request("events", snapshot=snapshot)
        self._sock.settimeout(None)  # events may be minutes apart
        return iter(self._read, None)

    def stream(self, cmd: str, **params: Any) -> tuple[Any, Iterator[bytes]]:
        """A request whose answer turns the connection into bytes (`capture`): the result (an
        error is raised here), then the bytes as they come until the node ends the stream."""
        result = self.request(cmd, **params)
        self._sock.settimeout(None)  # frames may be minutes apart
        return result, iter(lambda: self._file.read1(65536), b"")


class EventReader:
    """A node's live events, read in a thread of their own and handed to `on_event` as they
    come, until `close()` or the node closes the stream. The subscription stands when the
    constructor returns, so nothing that happens after it is missed."""

    def __init__(
        self,
        path: str,
        on_event: Callable[[dict[str, Any]], None],
        *,
        snapshot: bool = False,
        timeout: float = TIMEOUT,
    ) -> None:
        self._client = ControlClient(path, timeout)
        try:
            events = self._client.events(snapshot)
        except BaseException:
            self._client.close()
            raise
        self._thread = threading.Thread(target=self._run, args=(events, on_event), daemon=True)
        self._thread.start()

    @staticmethod
    def _run(events: Iterator[dict[str, Any]], on_event: Callable[[dict[str, Any]], None]) -> None:
        with contextlib.suppress(NodeUnavailable):  # the node went away, or close()
            for event in events:
                on_event(event)

    def close(self) -> None:
        self._client.shutdown()  # wakes the thread
        self._thread.join(TIMEOUT)
        self._client.close()

    def __enter__(self) -> "EventReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_client(args: argparse.Namespace, body: Callable[[ControlClient], int]) -> int:
    """Connect as the options say, run `body`, and turn failures into messages and exit codes."""
    try:
        path = find_socket(args.socket, args.config)
        with ControlClient(path) as client:
            return body(client)
    except NodeUnavailable as exc:
        print(f"vswitch: {exc}", file=sys.stderr)
        return 1
    except CommandFailed as exc:
        print(f"vswitch: {exc}", file=sys.stderr)
        for error in exc.errors:
            print(f"  {error}", file=sys.stderr)
        return 2 if exc.errors else 1
