"""VXLAN ports (RFC 7348) over a UDP socket of the node's own: one segment stretched to other
hosts across a routed underlay.

Each datagram is an 8-byte header (flags 0x08: the I bit, the VNI valid; the 24-bit VNI) and an
Ethernet frame. The port sends from `local`:`port` to a fixed list of remotes at `port`:
floods (broadcast, multicast, unknown unicast) go to every remote (head-end replication), a
unicast frame whose destination MAC was learned goes to the remote it was learned from. The
port learns from what it receives: the inner source MAC behind the outer source address, for
`ageing` seconds (as the switch's own table), at most `max_entries` MACs (a full table is swept
for aged MACs at most every quarter ageing; until then new sources are not learned).

Received and dropped, counted in `refused` (and as malformed frames): a datagram too short to
hold the header and an Ethernet header (`short`), without the I bit (`bad_flags`), for another
VNI (`bad_vni`), or from an address that is not a configured remote (`unknown_remote`: the
underlay is not trusted to add peers). Any UDP source port is accepted: a Linux vxlan device
picks it from a hash of the inner flow.

Why a UDP socket in userspace rather than a kernel vxlan device: it needs no interface in the
node's namespace (none to name, move or clean up, no sysctls to put back), the remotes and the
MAC table stay the port's own (learned per frame, flooded by the switch's own rules, shown in
status), and it works wherever the node can open a UDP socket. The cost is a syscall per
datagram in Python, like every other port (docs/architecture.md).
"""

import socket
import struct
import time
from collections.abc import Callable, Sequence
from ipaddress import IPv6Address, ip_address

from vswitch.port import READ_BATCH, WriteResult, set_buffers
from vswitch.sockport import SocketPort

FLAG_I = 0x08
HEADER = struct.Struct("!B3xI")  # flags, reserved, VNI << 8 | reserved
HEADER_LEN = HEADER.size
ETH_HLEN = 14
MAX_DATAGRAM = 65535
DEFAULT_PORT = 4789
DEFAULT_AGEING = 300.0
DEFAULT_MAX_ENTRIES = 8192

Address = tuple[str, int] | tuple[str, int, int, int]


class Learned:
    """Where a MAC was last heard from (refreshed in place: the hot path allocates nothing)."""

    __slots__ = ("remote", "seen")

    def __init__(self, remote: Address, seen: float) -> None:
        self.remote = remote
        self.seen = seen


def encapsulate(vni: int, frame: bytes) -> bytes:
    return HEADER.pack(FLAG_I, vni << 8) + frame


def decapsulate(data: bytes, vni: int) -> bytes | str:
    """The inner frame of a datagram for `vni`, or the refusal reason."""
    if len(data) < HEADER_LEN + ETH_HLEN:
        return "short"
    flags, word = HEADER.unpack_from(data)
    if not flags & FLAG_I:
        return "bad_flags"  # the other flag bits are reserved: ignored on receipt (RFC 7348 5)
    if word >> 8 != vni:
        return "bad_vni"
    return data[HEADER_LEN:]


class VxlanPort(SocketPort):
    kind = "vxlan"

    def __init__(
        self,
        name: str,
        *,
        vni: int,
        local: str,
        remotes: Sequence[str],
        port: int = DEFAULT_PORT,
        vnet_hdr: int = 0,
        ageing: float = DEFAULT_AGEING,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(name, vnet_hdr)
        if not 0 <= vni < 1 << 24:
            raise ValueError(f"vni {vni} is out of range 0..16777215")
        if not remotes:
            raise ValueError("a vxlan port needs at least one remote")
        self.vni = vni
        self.ageing = ageing
        self.max_entries = max_entries
        self.clock = clock
        here = ip_address(local)
        peers = [ip_address(r) for r in remotes]
        if any(p.version != here.version for p in peers):
            raise ValueError(f"remotes {', '.join(remotes)}: not all of local {local}'s family")
        v6 = isinstance(here, IPv6Address)
        self.remotes: tuple[Address, ...] = tuple(
            (str(p), port, 0, 0) if v6 else (str(p), port) for p in peers
        )
        # source address as recvfrom gives it -> remote
        pairs = zip(peers, self.remotes, strict=True)
        self._known: dict[str, Address] = {str(p): r for p, r in pairs}
        self.fdb: dict[bytes, Learned] = {}  # MAC -> where to send unicast for it
        self._next_sweep = 0.0  # when a full table may be swept again
        self._header = HEADER.pack(FLAG_I, vni << 8)
        sock = socket.socket(
            socket.AF_INET6 if v6 else socket.AF_INET,
            socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
        )
        try:
            if v6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            set_buffers(sock)
            sock.bind((local, port, 0, 0) if v6 else (local, port))
        except OSError as exc:
            sock.close()
            where = f"[{local}]:{port}" if v6 else f"{local}:{port}"
            raise OSError(
                exc.errno,
                f"vxlan {where}: {exc.strerror or exc} (local must be an address of this host, "
                "and the UDP port free)",
            ) from None
        self._sock = sock
        self._fd = sock.fileno()
        self.link_up = True  # the socket is open; remotes are not probed

    @property
    def fds(self) -> tuple[int, ...]:
        return (self._fd,)

    def read_batch(self, fd: int, limit: int = READ_BATCH) -> list[bytes]:
        frames: list[bytes] = []
        recvfrom = self._sock.recvfrom
        known = self._known
        fdb = self.fdb
        vni = self.vni
        now = self.clock()
        try:
            for _ in range(limit):
                data, source = recvfrom(MAX_DATAGRAM)
                remote = known.get(source[0]) or self._remote(source[0])
                if remote is None:
                    self.refuse("unknown_remote", max(0, len(data) - HEADER_LEN))
                    continue
                inner = decapsulate(data, vni)
                if isinstance(inner, str):
                    self.refuse(inner, max(0, len(data) - HEADER_LEN))
                    continue
                mac = inner[6:12]
                if not mac[0] & 1 and any(mac):
                    entry = fdb.get(mac)
                    if entry is not None:
                        entry.remote = remote
                        entry.seen = now
                    elif len(fdb) < self.max_entries or self._room(now):
                        fdb[mac] = Learned(remote, now)
                frames.append(self.wire(inner))
        except BlockingIOError:
            pass
        except OSError:
            self.dev.rx_errors += 1  # e.g. ECONNREFUSED reported for an earlier send
        return frames

    def _remote(self, source: str) -> Address | None:
        """A configured remote written another way (an IPv6 address with a scope, say)."""
        try:
            address = ip_address(source.split("%", 1)[0])
        except ValueError:
            return None
        return self._known.get(str(address))

    def _room(self, now: float) -> bool:
        """Whether a full table has room after forgetting MACs not heard for `ageing`. Swept at
        most every quarter ageing (1 s at most, as the switch's table): a sweep per new source
        would let a MAC flood from behind a remote cost a scan of the table per datagram."""
        if now >= self._next_sweep:
            self._next_sweep = now + min(1.0, self.ageing / 4)
            old = [mac for mac, entry in self.fdb.items() if now - entry.seen > self.ageing]
            for mac in old:
                del self.fdb[mac]
        return len(self.fdb) < self.max_entries

    def lookup(self, mac: bytes, now: float) -> Address | None:
        """The remote a unicast MAC was learned from, None while unknown or aged out."""
        entry = self.fdb.get(mac)
        if entry is None or now - entry.seen > self.ageing:
            return None
        return entry.remote

    def write_batch(self, frames: Sequence[bytes]) -> WriteResult:
        """Each frame to its learned remote, else to every remote. A copy a remote does not
        take is a tx drop of its own (by errno); a frame counts as written when one took it."""
        sendto = self._sock.sendto
        header = self._header
        remotes = self.remotes
        errors = self.dev.tx_errors
        now = self.clock()
        sent = 0
        nbytes = 0
        for frame in frames:
            try:
                pieces = self.plain(frame)
            except OSError as exc:
                errors[exc.errno or 0] = errors.get(exc.errno or 0, 0) + 1
                continue
            took = False
            for piece in pieces:
                target = None if piece[0] & 1 else self.lookup(piece[:6], now)
                for remote in (target,) if target is not None else remotes:
                    try:
                        sendto(header + piece, remote)
                        took = True
                    except OSError as exc:
                        code = exc.errno or 0
                        errors[code] = errors.get(code, 0) + 1
            if took:
                sent += 1
                nbytes += len(frame)
        return WriteResult(sent, nbytes)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._sender = self._not_open
        self._sock.close()
