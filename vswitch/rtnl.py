"""A small synchronous rtnetlink client: the link, address and route requests the node and the
lab make, and the link dump that status reads.

Not pyroute2: any import of it loads its whole library (NDB, IPDB, conntrack, sqlite3,
multiprocessing...), 13 MB of RSS in the node and in each forwarding worker and 0.1-0.2 s of
start-up, and each of its synchronous calls runs an asyncio loop of its own, which had to be
hidden from the running uvloop. The node sends a handful of fixed messages: their layouts are
rtnetlink(7)'s, and the kernel answers each with an ACK, an error (with the extended-ack text
when it has one) or a dump.

A `Rtnl` socket belongs to the network namespace it was opened in (vswitch/netlink.py opens it
inside `in_netns`). Errors are OSError with the kernel's errno and the request's name.
"""

import contextlib
import errno
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

# netlink(7)
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP_INTR = 0x10  # the dump raced a change: its result may be inconsistent
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_DUMP = 0x300
NLM_F_CAPPED = 0x100  # on an error: the request is echoed as its header only
NLM_F_ACK_TLVS = 0x200  # on an error: extended-ack attributes follow the echo
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSGERR_ATTR_MSG = 1
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER
# rtnetlink(7)
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_NEWROUTE = 24
IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_MASTER = 10
IFLA_LINKINFO = 18
IFLA_NET_NS_PID = 19
IFLA_STATS64 = 23
IFLA_NET_NS_FD = 28
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
VETH_INFO_PEER = 1
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_FLAGS = 8
RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RT_TABLE_MAIN = 254
RTPROT_BOOT = 3
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RTN_UNICAST = 1
IFF_UP = 0x1
IFNAMSIZ = 16
RECV_SIZE = 65536  # the kernel builds dump messages of at most 32 KiB
TIMEOUT = 1.0  # the kernel answers at once; a stuck answer must not outlast master-down

NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, proto, scope, type
_RTATTR = struct.Struct("=HH")  # len, type
_U32 = struct.Struct("=I")
_ERRNO = struct.Struct("=i")
# struct rtnl_link_stats64 in the kernel's order (include/uapi/linux/if_link.h); a kernel may
# send fewer (older) or more (newer) fields: those it sends and this names are read
STATS64 = (
    "rx_packets",
    "tx_packets",
    "rx_bytes",
    "tx_bytes",
    "rx_errors",
    "tx_errors",
    "rx_dropped",
    "tx_dropped",
    "multicast",
    "collisions",
    "rx_length_errors",
    "rx_over_errors",
    "rx_crc_errors",
    "rx_frame_errors",
    "rx_fifo_errors",
    "rx_missed_errors",
    "tx_aborted_errors",
    "tx_carrier_errors",
    "tx_fifo_errors",
    "tx_heartbeat_errors",
    "tx_window_errors",
    "rx_compressed",
    "tx_compressed",
    "rx_nohandler",
    "rx_otherhost_dropped",
)
_NAMES = {
    RTM_NEWLINK: "RTM_NEWLINK",
    RTM_DELLINK: "RTM_DELLINK",
    RTM_GETLINK: "RTM_GETLINK",
    RTM_NEWADDR: "RTM_NEWADDR",
    RTM_NEWROUTE: "RTM_NEWROUTE",
}


def _align(n: int) -> int:
    return (n + 3) & ~3


def attr(atype: int, data: bytes) -> bytes:
    """One attribute (rtattr), padded to 4 bytes; nest by passing attributes as `data`."""
    n = _RTATTR.size + len(data)
    return _RTATTR.pack(n, atype) + data + bytes(_align(n) - n)


def parse_attrs(data: bytes, offset: int = 0) -> Iterator[tuple[int, bytes]]:
    """(type, payload) of the attributes from `offset`; ValueError on a malformed one."""
    pos = offset
    while pos + _RTATTR.size <= len(data):
        alen, atype = _RTATTR.unpack_from(data, pos)
        if alen < _RTATTR.size or pos + alen > len(data):
            raise ValueError(f"malformed netlink attribute at {pos}")
        yield atype & NLA_TYPE_MASK, data[pos + _RTATTR.size : pos + alen]
        pos += _align(alen)


def ifinfomsg(index: int = 0, flags: int = 0, change: int = 0) -> bytes:
    return _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, flags, change)


def _name(ifname: str) -> bytes:
    return attr(IFLA_IFNAME, ifname.encode() + b"\0")


@dataclass(frozen=True, slots=True)
class Link:
    """What a link message says of an interface (RTM_NEWLINK, from a get or a dump)."""

    index: int
    flags: int  # IFF_*
    name: str
    stats: dict[str, int] | None = None  # IFLA_STATS64


def parse_link(body: bytes, *, stats: bool = True) -> Link:
    """A link message's body (ifinfomsg and attributes); ValueError if it is malformed.
    Without `stats` the IFLA_STATS64 counters are not decoded (link events need none)."""
    if len(body) < _IFINFOMSG.size:
        raise ValueError("link message shorter than an ifinfomsg")
    _, _, index, flags, _ = _IFINFOMSG.unpack_from(body)
    name = ""
    counters = None
    for atype, value in parse_attrs(body, _IFINFOMSG.size):
        if atype == IFLA_IFNAME:
            name = value.split(b"\0", 1)[0].decode("utf-8", "replace")
        elif atype == IFLA_STATS64 and stats:
            count = min(len(value) // 8, len(STATS64))
            values = struct.unpack_from(f"={count}Q", value)
            counters = dict(zip(STATS64[:count], values, strict=True))
    return Link(index, flags, name, counters)


def _error(mtype: int, code: int, text: str | None) -> OSError:
    what = _NAMES.get(mtype, f"netlink request {mtype}")
    return OSError(code, f"{what}: {text or os.strerror(code)}")


def _ext_ack(flags: int, body: bytes, echoed: bool = True) -> str | None:
    """The extended-ack message of an error, if the kernel gave one: after the errno and the
    echoed request of an NLMSG_ERROR, right after the errno of a dump's NLMSG_DONE."""
    if not flags & NLM_F_ACK_TLVS:
        return None
    start = 4
    if echoed:
        if len(body) < 4 + NLMSGHDR.size:
            return None
        start += _align(NLMSGHDR.size if flags & NLM_F_CAPPED else NLMSGHDR.unpack_from(body, 4)[0])
    try:
        for atype, value in parse_attrs(body, start):
            if atype == NLMSGERR_ATTR_MSG:
                return value.split(b"\0", 1)[0].decode("utf-8", "replace")
    except ValueError:
        pass
    return None


class Rtnl:
    """One NETLINK_ROUTE socket and its requests; the kernel answers each before `recv`."""

    def __init__(self) -> None:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        try:
            sock.settimeout(TIMEOUT)
            for option in (NETLINK_CAP_ACK, NETLINK_EXT_ACK):
                with contextlib.suppress(OSError):  # older kernels: full echoes, no texts
                    sock.setsockopt(SOL_NETLINK, option, 1)
            sock.bind((0, 0))
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "Rtnl":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- messages ------------------------------------------------------------------------------

    def _send(self, mtype: int, flags: int, body: bytes) -> int:
        self._seq += 1
        header = NLMSGHDR.pack(
            NLMSGHDR.size + len(body), mtype, NLM_F_REQUEST | flags, self._seq, 0
        )
        self._sock.send(header + body)
        return self._seq

    def _replies(self, seq: int) -> Iterator[tuple[int, int, bytes]]:
        """(type, flags, body) of the kernel's messages answering `seq`, as they come."""
        while True:
            data = self._sock.recv(RECV_SIZE)
            pos = 0
            while pos + NLMSGHDR.size <= len(data):
                length, mtype, flags, mseq, _ = NLMSGHDR.unpack_from(data, pos)
                if length < NLMSGHDR.size or pos + length > len(data):
                    raise OSError(errno.EPROTO, "malformed netlink reply")
                body = data[pos + NLMSGHDR.size : pos + length]
                pos += _align(length)
                if mseq == seq:  # anything else answers an earlier, abandoned request
                    yield mtype, flags, body

    def _status(self, mtype: int, flags: int, body: bytes, echoed: bool = True) -> OSError | None:
        """The error an NLMSG_ERROR (or, not `echoed`, a dump's NLMSG_DONE) carries; None for
        success."""
        code = _ERRNO.unpack_from(body)[0] if len(body) >= _ERRNO.size else -errno.EPROTO
        return None if code == 0 else _error(mtype, -code, _ext_ack(flags, body, echoed))

    def do(self, mtype: int, body: bytes, flags: int = 0) -> None:
        """A request answered by an ACK; OSError with the kernel's errno otherwise."""
        seq = self._send(mtype, flags | NLM_F_ACK, body)
        for rtype, rflags, rbody in self._replies(seq):
            if rtype == NLMSG_ERROR:
                error = self._status(mtype, rflags, rbody)
                if error is not None:
                    raise error
                return

    def get(self, mtype: int, body: bytes) -> bytes:
        """A request answered by one message: its body."""
        seq = self._send(mtype, 0, body)
        for rtype, rflags, rbody in self._replies(seq):
            if rtype == NLMSG_ERROR:
                raise self._status(mtype, rflags, rbody) or _error(mtype, errno.EPROTO, None)
            return rbody
        raise AssertionError("unreachable")  # _replies never ends

    def dump(self, mtype: int, body: bytes, retries: int = 3) -> list[bytes]:
        """A dump request: every message's body. One that raced a change is asked again, a
        few times; then EAGAIN."""
        for _ in range(retries):
            seq = self._send(mtype, NLM_F_DUMP, body)
            out: list[bytes] = []
            interrupted = False
            for rtype, rflags, rbody in self._replies(seq):
                interrupted |= bool(rflags & NLM_F_DUMP_INTR)
                if rtype == NLMSG_ERROR:
                    raise self._status(mtype, rflags, rbody) or _error(mtype, errno.EPROTO, None)
                if rtype == NLMSG_DONE:
                    error = self._status(mtype, rflags, rbody, echoed=False) if rbody else None
                    if error is not None:
                        raise error
                    break
                out.append(rbody)
            if not interrupted:
                return out
        raise _error(mtype, errno.EAGAIN, f"the dump changed under {retries} reads")

    # -- links ---------------------------------------------------------------------------------

    def link(self, ifname: str) -> Link | None:
        """The interface named `ifname` (None: there is none)."""
        if len(ifname.encode()) >= IFNAMSIZ:
            return None  # no interface can have it (the kernel would refuse the request)
        try:
            return parse_link(self.get(RTM_GETLINK, ifinfomsg() + _name(ifname)))
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                return None
            raise
        except ValueError as exc:
            raise OSError(errno.EPROTO, f"RTM_GETLINK {ifname}: {exc}") from None

    def links(self) -> list[Link]:
        try:
            return [parse_link(body) for body in self.dump(RTM_GETLINK, ifinfomsg())]
        except ValueError as exc:
            raise OSError(errno.EPROTO, f"RTM_GETLINK dump: {exc}") from None

    def index(self, ifname: str) -> int:
        link = self.link(ifname)
        if link is None:
            raise LookupError(f"no interface {ifname}")
        return link.index

    def set_link(self, index: int, *, up: bool | None = None, attrs: bytes = b"") -> None:
        """Change a link: its attributes first, then IFF_UP (the kernel's order in
        do_setlink, so a MAC is set while the link is still down)."""
        flags, change = (0, 0) if up is None else (IFF_UP if up else 0, IFF_UP)
        self.do(RTM_NEWLINK, ifinfomsg(index, flags, change) + attrs)

    def add_link(self, ifname: str, kind: str, data: bytes = b"") -> None:
        info = attr(IFLA_INFO_KIND, kind.encode())
        if data:
            info += attr(IFLA_INFO_DATA, data)
        body = ifinfomsg() + _name(ifname) + attr(IFLA_LINKINFO, info)
        self.do(RTM_NEWLINK, body, NLM_F_CREATE | NLM_F_EXCL)

    def add_veth(self, ifname: str, peer: str) -> None:
        self.add_link(ifname, "veth", attr(VETH_INFO_PEER, ifinfomsg() + _name(peer)))

    def delete_link(self, index: int) -> None:
        self.do(RTM_DELLINK, ifinfomsg(index))

    def add_address(
        self, index: int, family: int, address: bytes, prefixlen: int, flags: int
    ) -> None:
        # IFA_LOCAL and IFA_ADDRESS the same: an address without a peer, as `ip addr add`
        body = _IFADDRMSG.pack(family, prefixlen, flags & 0xFF, RT_SCOPE_UNIVERSE, index)
        body += attr(IFA_LOCAL, address) + attr(IFA_ADDRESS, address)
        body += attr(IFA_FLAGS, _U32.pack(flags))
        self.do(RTM_NEWADDR, body, NLM_F_CREATE | NLM_F_EXCL)

    def add_route(
        self,
        family: int,
        dst: bytes,
        dst_len: int,
        *,
        gateway: bytes | None = None,
        oif: int | None = None,
    ) -> None:
        scope = RT_SCOPE_LINK if gateway is None else RT_SCOPE_UNIVERSE
        body = _RTMSG.pack(family, dst_len, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, scope, RTN_UNICAST, 0)
        if dst_len:
            body += attr(RTA_DST, dst)
        if gateway is not None:
            body += attr(RTA_GATEWAY, gateway)
        if oif is not None:
            body += attr(RTA_OIF, _U32.pack(oif))
        self.do(RTM_NEWROUTE, body, NLM_F_CREATE | NLM_F_EXCL)


def u32(value: int) -> bytes:
    return _U32.pack(value)
