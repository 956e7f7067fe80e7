"""What the socket ports (stream.py, vde.py, vxlan.py) share: frames without a virtio-net header,
their own link state, refusals counted by reason, fds that come and go, Unix sockets others use.

A socket port's peer is QEMU, a vde client or another host: it sends and takes plain Ethernet
frames. On a switch with offload, frames read get a zero virtio-net header (no offload asked) and
frames written are made plain by vswitch/segment.py (checksums completed, GSO segmented).

Its link is its own (up while a peer is there): no netlink. Its fds change as peers come and go,
so once the data plane attaches it, it gets a `PortIO` to have fds read through the switch, to
write when a socket would block, and (vde) to add and remove switch ports of its own.

What it refuses (a second peer, a garbled request, a datagram for another VNI...) is counted in
`refused` by reason; a refused frame is also a read frame dropped (`dev.rx_malformed` or
`rx_oversize`), so the data plane's accounting stays whole. Nothing raises out of a read.
"""

import contextlib
import errno
import grp
import os
import pwd
import socket
import stat
from collections.abc import Callable
from typing import Protocol

from vswitch import segment
from vswitch.netlink import LinkState
from vswitch.port import DevicePort

DEFAULT_MODE = 0o600  # only the node's user; 0660 when a group is given
GROUP_MODE = 0o660


class PortIO(Protocol):
    """What the data plane offers an attached socket port."""

    def watch(self, fd: int) -> None:
        """Read `fd` from now on (the port's `read_batch(fd)` on readiness)."""
        ...

    def unwatch(self, fd: int) -> None:
        """Stop reading `fd` (call before closing it)."""
        ...

    def when_writable(self, fd: int, callback: Callable[[], None] | None) -> None:
        """Call `callback` whenever `fd` is writable; None stops it."""
        ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> Callable[[], None]:
        """Run `callback` once after `delay` seconds; returns a function that cancels it."""
        ...

    def add_child(self, suffix: str, dev: DevicePort) -> None:
        """Attach `dev` as a port of this port's switch named `<this port>/<suffix>`."""
        ...

    def remove_child(self, suffix: str) -> None:
        """Detach (and close) the child port `<this port>/<suffix>`."""
        ...


class SocketPort(DevicePort):
    """Base of the socket ports: plain frames, own link state, counted refusals."""

    follows_link = False
    carries_frames = True  # False: a port that only makes others (vde's NAME), never flooded

    def __init__(self, name: str, vnet_hdr: int) -> None:
        if vnet_hdr not in (0, 10, 12):
            raise ValueError(f"vnet_hdr must be 0, 10 or 12, not {vnet_hdr}")
        super().__init__(name, None, vnet_hdr)
        self.io: PortIO | None = None  # set by the data plane when it attaches the port
        self.refused: dict[str, int] = {}
        self._zero = bytes(vnet_hdr)

    def refuse(self, reason: str, dropped_bytes: int = -1) -> None:
        """Count a refusal; `dropped_bytes` >= 0: it was a frame read (and dropped as malformed)."""
        self.refused[reason] = self.refused.get(reason, 0) + 1
        if dropped_bytes >= 0:
            self.dev.rx_malformed += 1
            self.dev.rx_dropped_bytes += dropped_bytes

    def set_link(self, up: bool) -> None:
        if up != self.link_up:
            self.link_up = up
            if self.on_link is not None:
                self.on_link(up)

    def link_from(self, state: LinkState) -> bool:
        return self.link_up  # never asked: the link is the port's own (follows_link False)

    def wire(self, frame: bytes) -> bytes:
        """A plain frame read from the peer, in the switch's wire format."""
        return self._zero + frame if self._zero else frame

    def plain(self, frame: bytes) -> list[bytes]:
        """A frame in the switch's wire format as plain frames for the peer; OSError (counted
        as tx_error by the write loop) when it cannot be made plain."""
        if not self.vnet_hdr:
            return [frame]
        try:
            return segment.plain(frame, self.vnet_hdr)
        except ValueError:
            self.refused["unsegmentable"] = self.refused.get("unsegmentable", 0) + 1
            raise OSError(errno.EPROTONOSUPPORT, "cannot send this offloaded frame") from None


# -- Unix sockets other users' processes connect to --------------------------------------------


def user_id(spec: str | None) -> int:
    """A uid from a name or a number; -1 (unchanged) for None. ValueError names it."""
    if spec is None:
        return -1
    if spec.isdigit():
        return int(spec)
    try:
        return pwd.getpwnam(spec).pw_uid
    except KeyError:
        raise ValueError(f"owner {spec!r}: no such user (give a user name or a uid)") from None


def group_id(spec: str | None) -> int:
    if spec is None:
        return -1
    if spec.isdigit():
        return int(spec)
    try:
        return grp.getgrnam(spec).gr_gid
    except KeyError:
        raise ValueError(f"group {spec!r}: no such group (give a group name or a gid)") from None


class Access:
    """Owner, group and mode for the sockets a port makes (mode default 0600, 0660 with a
    group), resolved once so a bad name fails before anything is made."""

    def __init__(self, owner: str | None, group: str | None, mode: int | None) -> None:
        self.uid = user_id(owner)
        self.gid = group_id(group)
        self.mode = mode if mode is not None else GROUP_MODE if group else DEFAULT_MODE

    def apply(self, path: str) -> None:
        if self.uid != -1 or self.gid != -1:
            os.chown(path, self.uid, self.gid)
        os.chmod(path, self.mode)

    def dir_mode(self) -> int:
        """A directory's mode for these sockets: search and write for every class the socket
        mode grants anything (vde clients bind their own socket there)."""
        mode = 0
        for cls in (0o700, 0o070, 0o007):
            if self.mode & cls:
                mode |= cls
        return mode


def _alive(path: str) -> bool:
    """Whether a process listens on the Unix socket at `path` (else it is stale)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except OSError:
        return True  # a full backlog (EAGAIN) or anything else: maybe alive, never replaced
    finally:
        probe.close()
    return True


def clear_path(path: str, what: str) -> None:
    """Make room for a socket at `path`: nothing there, or a stale socket (removed). OSError
    naming the path when it is another kind of file or a live socket."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(
            errno.EEXIST, f"{what} {path} exists and is not a socket (remove it or change path)"
        )
    if _alive(path):
        raise OSError(
            errno.EADDRINUSE,
            f"{what} {path}: another process listens there (stop it or change path)",
        )
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def bind_unix(path: str, kind: int, access: Access, what: str) -> socket.socket:
    """A non-blocking Unix socket of `kind` bound at `path` with `access` applied (before a
    stream socket listens, so nobody connects in between)."""
    clear_path(path, what)
    sock = socket.socket(socket.AF_UNIX, kind | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    try:
        sock.bind(path)
        try:
            access.apply(path)
            if kind == socket.SOCK_STREAM:
                sock.listen(16)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"{what} {path}: {exc.strerror or exc}") from None
    except BaseException:
        sock.close()
        raise
    return sock


def file_id(path: str) -> tuple[int, int] | None:
    """(device, inode) of the file at `path`, to recognise it later; None if there is none."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def unlink_if(path: str, ident: tuple[int, int] | None) -> None:
    """Remove the file at `path` if it is still the one `ident` names (not a successor's)."""
    if ident is not None and file_id(path) == ident:
        with contextlib.suppress(OSError):
            os.unlink(path)
