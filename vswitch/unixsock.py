"""The control socket's Unix socket, apart from what is said on it.

Making the listening socket safely (its directory checked, mode 0600 before listen, a live node's
socket never replaced) and asking who is at the other end (SO_PEERCRED): operating-system
plumbing, kept out of the protocol and server of vswitch/control.py.
"""

import contextlib
import os
import socket
import stat
import struct
from typing import Any


class ControlSocketError(Exception):
    """The control socket cannot be created (another node listens there, not a socket, ...)."""


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
