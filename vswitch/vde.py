"""vde ports: a vde_switch-compatible directory (vde_plug, vde_plug2tap, QEMU `-netdev vde`).

The port listens on the Unix stream socket DIR/ctl (attach-protocols.md). A client connects,
binds its own datagram socket (normally DIR/.PID-N), and sends one request_v3 in host byte
order: magic 0xfeedface, version 3, type, the 110-byte sockaddr_un of its datagram socket, and a
description of up to 128 bytes. The port binds a datagram socket DIR/port.N for it, connects it
to the client's (before answering: the client unlinks its socket file once connected), and
answers with that socket's sockaddr_un. From then on one datagram is one Ethernet frame, both
ways, and the client is a switch port of its own, `NAME/N`, learned and flooded like any port.
It is removed when its control connection closes. A datagram longer than MAX_FRAME is dropped
(counted as an oversize frame and `oversize` in the client's `refused`), never read cut short.

Refused and counted in `refused`, the connection then closed and nothing else disturbed: a short
request (`short_request`), a wrong magic or version (`bad_magic`, `bad_version`), an unknown
request type (`bad_type`), an address that is not an absolute Unix path (`bad_address`), a
datagram socket that is not the connecting process's own (`foreign_socket`: else anyone allowed
on ctl could make the node send frames into another process's socket, /dev/log say), no request
within REQUEST_TIMEOUT (`no_request`), more than MAX_CLIENTS clients (`too_many`), a client the
switch would not take (`not_attached`).

The port itself (NAME) carries no frames; its link is up while it has a client.
"""

import contextlib
import errno
import functools
import os
import socket
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from vswitch.port import READ_BATCH, set_buffers
from vswitch.sockport import (
    Access,
    SocketPort,
    bind_unix,
    clear_path,
    file_id,
    unlink_if,
)

MAGIC = 0xFEEDFACE
VERSION = 3
REQ_NEW_CONTROL = 0
REQ_NEW_PORT0 = 1
REQUEST = struct.Struct("=III")  # magic, version, type (host byte order: same host)
SOCKADDR_UN = struct.Struct("=H108s")  # sun_family, sun_path: 110 bytes
MIN_REQUEST = REQUEST.size + SOCKADDR_UN.size  # an empty description is not sent at all
MAX_DESCRIPTION = 128
MAX_CLIENTS = 32
REQUEST_TIMEOUT = 5.0  # seconds a control connection may take to send its request
MAX_FRAME = 65536 + 18


def parse_request(data: bytes) -> tuple[str, str] | str:
    """(the client's datagram socket path, its description), or the refusal reason."""
    if len(data) < MIN_REQUEST:
        return "short_request"
    magic, version, kind = REQUEST.unpack_from(data)
    if magic != MAGIC:
        return "bad_magic"
    if version != VERSION:
        return "bad_version"
    if kind & 0xFF not in (REQ_NEW_CONTROL, REQ_NEW_PORT0):
        return "bad_type"
    family, raw = SOCKADDR_UN.unpack_from(data, REQUEST.size)
    path = raw.split(b"\0", 1)[0]
    if family != socket.AF_UNIX or not path.startswith(b"/"):
        return "bad_address"
    try:
        text = os.fsdecode(path)
    except UnicodeDecodeError:
        return "bad_address"
    tail = data[MIN_REQUEST : MIN_REQUEST + MAX_DESCRIPTION]
    return text, tail.split(b"\0", 1)[0].decode("utf-8", "replace")


def sockaddr(path: str) -> bytes:
    """A struct sockaddr_un (110 bytes) as the client reads it back."""
    return SOCKADDR_UN.pack(socket.AF_UNIX, os.fsencode(path))


class VdeClient(SocketPort):
    """One vde client: a switch port over a connected datagram socket, one frame a datagram."""

    kind = "vde"

    def __init__(
        self, name: str, sock: socket.socket, path: str, vnet_hdr: int, description: str
    ) -> None:
        super().__init__(name, vnet_hdr)
        self._sock = sock
        self._fd = sock.fileno()
        self.path = path  # our end, DIR/port.N
        self._ident = file_id(path)
        self.description = description
        self.link_up = True  # it exists while the client is connected
        self._sender = self._send

    @property
    def fds(self) -> tuple[int, ...]:
        return (self._fd,)

    def read_batch(self, fd: int, limit: int = READ_BATCH) -> list[bytes]:
        frames: list[bytes] = []
        recv = self._sock.recv
        wire = self.wire
        try:
            for _ in range(limit):
                data = recv(MAX_FRAME + 1)  # a byte more: a datagram that fills it is no frame
                if len(data) > MAX_FRAME:
                    self.refused["oversize"] = self.refused.get("oversize", 0) + 1
                    self.dev.rx_oversize += 1
                    continue
                frames.append(wire(data))
        except BlockingIOError:
            pass
        except OSError:
            # ECONNREFUSED once the client's socket is gone: its ctl connection tells the rest
            self.dev.rx_errors += 1
        return frames

    def _send(self, frame: bytes) -> int:
        send = self._sock.send
        for piece in self.plain(frame):
            send(piece)
        return len(frame)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._sender = self._not_open
        self._sock.close()
        unlink_if(self.path, self._ident)


@dataclass(eq=False)
class _Control:
    """One connection on ctl: waiting for its request, then holding client `number`."""

    sock: socket.socket
    fd: int
    number: int | None = None
    cancel: Callable[[], None] = field(default=lambda: None)


class VdePort(SocketPort):
    """The switch directory: accepts clients on DIR/ctl and adds one child port per client."""

    kind = "vde"
    carries_frames = False

    def __init__(
        self,
        name: str,
        path: str,
        *,
        vnet_hdr: int = 0,
        owner: str | None = None,
        group: str | None = None,
        mode: int | None = None,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        super().__init__(name, vnet_hdr)
        self.path = path
        self.access = Access(owner, group, mode)
        self.max_clients = max_clients
        self._made_dir = self._directory()
        self.ctl = os.path.join(path, "ctl")
        try:
            self._listener = bind_unix(self.ctl, socket.SOCK_STREAM, self.access, "vde")
        except BaseException:
            self._remove_dir()
            raise
        self._lfd = self._listener.fileno()
        self._ident = file_id(self.ctl)
        self._conns: dict[int, _Control] = {}  # fd -> connection
        self.clients: dict[int, VdeClient] = {}  # number -> its port
        self._sender = self._no_frames

    def _directory(self) -> bool:
        """Create DIR (True) or check the one there; OSError names it."""
        try:
            os.mkdir(self.path, 0o700)
        except FileExistsError:
            st = os.stat(self.path)
            if not stat.S_ISDIR(st.st_mode):
                raise OSError(
                    errno.ENOTDIR,
                    f"vde {self.path} exists and is not a directory (remove it or change path)",
                ) from None
            return False
        try:
            # like vde_switch: every class the socket mode serves may enter (and bind there)
            if self.access.uid != -1 or self.access.gid != -1:
                os.chown(self.path, self.access.uid, self.access.gid)
            os.chmod(self.path, self.access.dir_mode())
        except OSError:
            os.rmdir(self.path)
            raise
        return True

    def _remove_dir(self) -> None:
        if self._made_dir:
            with contextlib.suppress(OSError):
                os.rmdir(self.path)  # only if empty: a client's socket may still be there

    @property
    def fds(self) -> tuple[int, ...]:
        return (self._lfd, *self._conns)

    def _no_frames(self, frame: bytes) -> int:
        return len(frame)  # never flooded to; a hook's frame for NAME itself goes nowhere

    # -- control connections -------------------------------------------------------------------

    def read_batch(self, fd: int, limit: int = READ_BATCH) -> list[bytes]:
        if fd == self._lfd:
            self._accept()
        else:
            conn = self._conns.get(fd)
            if conn is not None:
                self._control(conn)
        return []

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except BlockingIOError:
                return
            except OSError:
                self.dev.rx_errors += 1
                return
            if self.io is None or len(self._conns) >= self.max_clients:
                sock.close()
                self.refuse("too_many")
                continue
            sock.setblocking(False)
            conn = _Control(sock, sock.fileno())
            self._conns[conn.fd] = conn
            self.io.watch(conn.fd)
            timeout = functools.partial(self._timeout, conn)
            conn.cancel = self.io.call_later(REQUEST_TIMEOUT, timeout)

    def _timeout(self, conn: _Control) -> None:
        if conn.number is None and self._conns.get(conn.fd) is conn:
            self.refuse("no_request")
            self._hang_up(conn)

    def _control(self, conn: _Control) -> None:
        try:
            data = conn.sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._hang_up(conn)  # the client left: its port goes
        elif conn.number is None:
            conn.cancel()
            self._request(conn, data)
        # anything a client sends later on ctl is not part of the protocol: ignored

    def _request(self, conn: _Control, data: bytes) -> None:
        parsed = parse_request(data)
        if isinstance(parsed, str):
            self.refuse(parsed)
            self._hang_up(conn)
            return
        path, description = parsed
        if not self._own_socket(conn.sock, path):
            self.refuse("foreign_socket")
            self._hang_up(conn)
            return
        number = next(n for n in range(1, len(self.clients) + 2) if n not in self.clients)
        try:
            client = self._open_client(number, path, description)
        except OSError:
            self.refuse("bad_address")  # the client's socket cannot be reached
            self._hang_up(conn)
            return
        try:
            conn.sock.send(sockaddr(client.path))
        except OSError:
            client.close()
            self._hang_up(conn)
            return
        assert self.io is not None
        try:
            self.io.add_child(str(number), client)
        except Exception:  # the switch would not take it: this client only is turned away
            client.close()
            self.refuse("not_attached")
            self._hang_up(conn)
            return
        conn.number = number
        self.clients[number] = client
        self.set_link(True)

    @staticmethod
    def _own_socket(ctl: socket.socket, path: str) -> bool:
        """Whether `path` is a socket owned by the process at the other end of `ctl` (root's
        clients may name any)."""
        try:
            uid = struct.unpack("3i", ctl.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1]
            st = os.lstat(path)
        except OSError:
            return False
        return stat.S_ISSOCK(st.st_mode) and uid in (0, st.st_uid)

    def _open_client(self, number: int, client_path: str, description: str) -> VdeClient:
        path = os.path.join(self.path, f"port.{number}")
        clear_path(path, "vde")
        sock = socket.socket(
            socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
        )
        try:
            sock.bind(path)
            try:
                self.access.apply(path)
                set_buffers(sock)
                sock.connect(client_path)
            except BaseException:
                os.unlink(path)
                raise
        except BaseException:
            sock.close()
            raise
        return VdeClient(f"{self.ifname}/{number}", sock, path, self.vnet_hdr, description)

    def _hang_up(self, conn: _Control) -> None:
        conn.cancel()
        if self._conns.pop(conn.fd, None) is conn and self.io is not None:
            self.io.unwatch(conn.fd)
        conn.sock.close()
        if conn.number is not None:
            self.clients.pop(conn.number, None)
            if self.io is not None:
                self.io.remove_child(str(conn.number))
            self.set_link(bool(self.clients))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.on_link = None
        self._sender = self._not_open
        for conn in list(self._conns.values()):
            self._hang_up(conn)
        for client in self.clients.values():
            client.close()  # not attached (no io): closed here
        self.clients.clear()
        self._listener.close()
        unlink_if(self.ctl, self._ident)
        self._remove_dir()
