"""Stream ports: a Unix stream socket the node listens on, one peer at a time (QEMU's `-netdev
stream,server=off,addr.type=unix,addr.path=PATH`, passt's framing).

Every frame is preceded by its length as a 4-byte big-endian integer, nothing else
(attach-protocols.md); frames are reassembled across reads. A length above MAX_FRAME cannot be
a frame: the stream has lost its framing, so the peer is dropped (counted as `oversize_length`
and one oversize frame) and the port waits for the next peer.

The link is up while a peer is connected: a disconnect is a link-down event and the port then
accepts the next peer. While one is connected, a second is accepted and closed at once (counted
as `busy`): QEMU 7.2 does not reconnect by itself, so the first keeps its place. A peer that
leaves in the middle of a frame (its length or its bytes) has that part counted as `truncated`.

Writes go out in one send per batch; what the socket does not take at once waits in a bounded
buffer flushed when the socket is writable (frames beyond it are dropped as tx_full), so a slow
peer never blocks the switch and the stream never loses its framing.
"""

import errno
import socket
import struct
from collections.abc import Sequence

from vswitch.port import READ_BATCH, WriteResult, set_buffers
from vswitch.sockport import Access, SocketPort, bind_unix, file_id, unlink_if

LENGTH = struct.Struct("!I")
MAX_FRAME = 65535  # above it a length is garbage, not a frame (QEMU's own buffer is ~68 KiB)
RECV_BYTES = 256 << 10
MAX_BACKLOG = 4 << 20  # bytes waiting for a slow peer before frames are dropped


class StreamPort(SocketPort):
    kind = "stream"

    def __init__(
        self,
        name: str,
        path: str,
        *,
        vnet_hdr: int = 0,
        owner: str | None = None,
        group: str | None = None,
        mode: int | None = None,
    ) -> None:
        super().__init__(name, vnet_hdr)
        self.path = path
        self._listener = bind_unix(path, socket.SOCK_STREAM, Access(owner, group, mode), "stream")
        self._lfd = self._listener.fileno()
        self._ident = file_id(path)
        self._peer: socket.socket | None = None
        self._pfd = -1
        self._buf = bytearray()  # bytes of a frame not complete yet
        self._backlog = bytearray()  # bytes the peer's socket did not take yet
        self.peers = 0  # peers accepted so far

    @property
    def fds(self) -> tuple[int, ...]:
        return (self._lfd, self._pfd) if self._peer is not None else (self._lfd,)

    # -- peers ---------------------------------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except BlockingIOError:
                return
            except OSError:
                self.dev.rx_errors += 1
                return
            if self._peer is not None or self.io is None:
                conn.close()
                self.refuse("busy")
                continue
            conn.setblocking(False)
            set_buffers(conn)
            self._peer = conn
            self._pfd = conn.fileno()
            self.peers += 1
            self.io.watch(self._pfd)
            self.set_link(True)

    def _drop_peer(self) -> None:
        peer = self._peer
        if peer is None:
            return
        if self.io is not None:
            self.io.unwatch(self._pfd)
            if self._backlog:
                self.io.when_writable(self._pfd, None)
        self._peer = None
        self._pfd = -1
        self._buf.clear()
        self._backlog.clear()
        peer.close()
        self.set_link(False)

    # -- reading -------------------------------------------------------------------------------

    def read_batch(self, fd: int, limit: int = READ_BATCH) -> list[bytes]:
        if fd == self._lfd:
            self._accept()
            return []
        frames: list[bytes] = []
        peer = self._peer
        if peer is None or fd != self._pfd:
            return frames
        for _ in range(limit):
            try:
                data = peer.recv(RECV_BYTES)
            except BlockingIOError:
                break
            except OSError:
                self.dev.rx_errors += 1
                self._hung_up()
                break
            if not data:
                self._hung_up()  # link down, next peer welcome
                break
            self._buf += data
            if not self._split(frames) or len(frames) >= limit:
                break
        return frames

    def _hung_up(self) -> None:
        """The peer is gone; a frame it left unfinished is counted (`truncated`), not lost."""
        if self._buf:
            self.refuse("truncated")
        self._drop_peer()

    def _split(self, frames: list[bytes]) -> bool:
        """Move the complete frames of the buffer to `frames`; False when the peer was dropped."""
        buf = self._buf
        pos = 0
        end = len(buf)
        wire = self.wire
        while end - pos >= 4:
            (length,) = LENGTH.unpack_from(buf, pos)
            if length > MAX_FRAME:
                self.refused["oversize_length"] = self.refused.get("oversize_length", 0) + 1
                self.dev.rx_oversize += 1
                self._drop_peer()
                return False
            if end - pos - 4 < length:
                break
            frames.append(wire(bytes(buf[pos + 4 : pos + 4 + length])))
            pos += 4 + length
        del buf[:pos]
        return True

    # -- writing -------------------------------------------------------------------------------

    def write_batch(self, frames: Sequence[bytes]) -> WriteResult:
        if self._peer is None:
            return self._lost(frames, errno.ENETDOWN)
        if len(self._backlog) > MAX_BACKLOG:
            return self._lost(frames, errno.ENOBUFS)
        parts: list[bytes] = []
        sent = 0
        nbytes = 0
        errors = self.dev.tx_errors
        for frame in frames:
            try:
                pieces = self.plain(frame)
            except OSError as exc:
                errors[exc.errno or 0] = errors.get(exc.errno or 0, 0) + 1
                continue
            for piece in pieces:
                parts.append(LENGTH.pack(len(piece)))
                parts.append(piece)
            sent += 1
            nbytes += len(frame)
        if parts:
            code = self._send(b"".join(parts))
            if code is not None:  # the peer is gone: its reader sees the hangup and drops it
                errors[code] = errors.get(code, 0) + sent
                return WriteResult(0, 0)
        return WriteResult(sent, nbytes)

    def _lost(self, frames: Sequence[bytes], code: int) -> WriteResult:
        self.dev.tx_errors[code] = self.dev.tx_errors.get(code, 0) + len(frames)
        return WriteResult(0, 0)

    def _send(self, data: bytes) -> int | None:
        """Send or queue `data`; the errno when the peer is gone (EPIPE, ECONNRESET). The peer
        is not dropped here: a link event from inside the switch's write loop would re-enter
        it; the peer's reader sees the hangup next."""
        if self._backlog:
            self._backlog += data  # behind what waits, in order
            return None
        try:
            n = self._peer.send(data) if self._peer is not None else 0
        except BlockingIOError:
            n = 0
        except OSError as exc:
            return exc.errno or errno.EPIPE
        if n < len(data):
            self._backlog += data[n:]
            if self.io is not None:
                self.io.when_writable(self._pfd, self._flush)
        return None

    def _flush(self) -> None:
        peer = self._peer
        if peer is None:
            return
        try:
            n = peer.send(self._backlog)
        except BlockingIOError:
            return
        except OSError:
            self._drop_peer()
            return
        del self._backlog[:n]
        if not self._backlog and self.io is not None:
            self.io.when_writable(self._pfd, None)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.on_link = None  # closing is not a link event
        self._drop_peer()
        self._listener.close()
        unlink_if(self.path, self._ident)
