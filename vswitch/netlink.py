"""Thin netlink helpers (pyroute2) and a link-state monitor on a plain RTMGRP_LINK socket.

Every helper takes `netns`: the name of a network namespace under /var/run/netns, the path of a
namespace file (/proc/PID/ns/net, /var/run/docker/netns/ID) or pid:PID (None: the process's
own). The process enters it with setns(2) only for as long as it takes to open a socket (or a
/proc/sys file), which then stays bound to that namespace. `pin_netns` opens a namespace once so
that a process's namespace stays the one meant even if the pid is reused. Helpers are
synchronous and may be called from inside a running event loop (they briefly run pyroute2's own
loop).
"""

import asyncio
import ctypes
import errno
import fcntl
import ipaddress
import os
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute

NETNS_DIR = "/var/run/netns"
CLONE_NEWNET = 0x40000000
NS_GET_NSTYPE = 0xB703  # _IO(NSIO, 0x3): the CLONE_NEW* type of a namespace file
IFF_UP = 0x1
IFF_LOWER_UP = 0x10000
IFA_F_NODAD = 0x02
IFA_F_NOPREFIXROUTE = 0x200
RTMGRP_LINK = 0x1
RTM_NEWLINK = 16
RTM_DELLINK = 17
NLMSG_ERROR = 2
NLMSG_OVERRUN = 4
IFLA_IFNAME = 3

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_RTATTR = struct.Struct("=HH")  # len, type

_libc: ctypes.CDLL | None = None


def _setns(fd: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def netns_path(name: str) -> str:
    """The namespace file of `name`: a name under /var/run/netns, a path, or pid:PID."""
    if name.startswith("pid:"):
        return f"/proc/{name[4:]}/ns/net"
    return name if "/" in name else os.path.join(NETNS_DIR, name)


def pin_netns(spec: str) -> tuple[int, str]:
    """Open the network namespace `spec` names: (fd, a path to that very namespace for as long
    as fd is open). A pid's namespace file would follow the pid to another process once the
    first exits; the fd keeps the namespace meant. OSError names the spec and the cause."""
    path = netns_path(spec)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise OSError(exc.errno, f"network namespace {spec} ({path}): {exc.strerror}") from None
    try:
        kind = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError:
        kind = None
    if kind != CLONE_NEWNET:
        os.close(fd)
        raise OSError(
            errno.EINVAL,
            f"{path} is not a network namespace (give /proc/PID/ns/net, a file under "
            "/run/netns, or pid:PID)",
        )
    return fd, f"/proc/self/fd/{fd}"


@contextmanager
def in_netns(netns: str | None) -> Iterator[None]:
    """Run the body with this thread in `netns` (nothing to do for None)."""
    if netns is None:
        yield
        return
    target = os.open(netns_path(netns), os.O_RDONLY | os.O_CLOEXEC)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)
        os.close(target)


@contextmanager
def _outside_running_loop() -> Iterator[None]:
    # pyroute2's synchronous API runs its own asyncio loop, which asyncio refuses while another
    # loop (the data plane's uvloop) runs in this thread; hide ours for the duration
    running = asyncio.events._get_running_loop()
    if running is None:
        yield
        return
    asyncio.events._set_running_loop(None)
    try:
        yield
    finally:
        asyncio.events._set_running_loop(running)


@contextmanager
def iproute(netns: str | None = None) -> Iterator[Any]:
    """A pyroute2 IPRoute bound to `netns`, closed afterwards."""
    with _outside_running_loop():
        with in_netns(netns):
            ipr = IPRoute()
        try:
            yield ipr
        finally:
            ipr.close()


def _index(ipr: Any, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise LookupError(f"no interface {ifname}")
    return int(found[0])


def link_index(ifname: str, netns: str | None = None) -> int | None:
    with iproute(netns) as ipr:
        found = ipr.link_lookup(ifname=ifname)
        return int(found[0]) if found else None


def link_names(netns: str | None = None) -> set[str]:
    with iproute(netns) as ipr:
        return {str(link.get_attr("IFLA_IFNAME")) for link in ipr.link("dump")}


@dataclass(frozen=True, slots=True)
class LinkState:
    ifname: str
    index: int
    admin_up: bool  # IFF_UP
    lower_up: bool  # IFF_LOWER_UP: carrier
    deleted: bool = False


def link_state(ifname: str, netns: str | None = None) -> LinkState | None:
    with iproute(netns) as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            return None
        link = ipr.link("get", index=found[0])[0]
        flags = int(link["flags"])
        return LinkState(ifname, int(found[0]), bool(flags & IFF_UP), bool(flags & IFF_LOWER_UP))


def create_veth(
    name: str, peer: str, *, netns: str | None = None, peer_netns: str | None = None
) -> None:
    """A veth pair created in `netns`; the peer end is then moved to `peer_netns`."""
    with iproute(netns) as ipr:
        ipr.link("add", ifname=name, kind="veth", peer=peer)
    if peer_netns != netns:
        move_to_netns(peer, peer_netns, netns=netns)


def create_bridge(name: str, *, netns: str | None = None) -> None:
    with iproute(netns) as ipr:
        ipr.link("add", ifname=name, kind="bridge")


def set_master(ifname: str, master: str | None, *, netns: str | None = None) -> None:
    with iproute(netns) as ipr:
        ipr.link("set", index=_index(ipr, ifname), master=_index(ipr, master) if master else 0)


def delete_link(ifname: str, *, netns: str | None = None) -> bool:
    """Delete an interface; False if it did not exist."""
    with iproute(netns) as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            return False
        ipr.link("del", index=found[0])
        return True


def move_to_netns(ifname: str, target: str | None, *, netns: str | None = None) -> None:
    """Move `ifname` from `netns` to `target` (None: this process's own namespace)."""
    with iproute(netns) as ipr:
        index = _index(ipr, ifname)
        if target is None:
            ipr.link("set", index=index, net_ns_pid=os.getpid())
        else:
            ipr.link("set", index=index, net_ns_fd=netns_path(target))


def set_link(
    ifname: str,
    *,
    netns: str | None = None,
    up: bool | None = None,
    mac: bytes | str | None = None,
    mtu: int | None = None,
) -> None:
    """Set MAC and MTU first, then the admin state (a MAC change wants the link down)."""
    with iproute(netns) as ipr:
        index = _index(ipr, ifname)
        if mac is not None:
            text = mac if isinstance(mac, str) else mac.hex(":")
            ipr.link("set", index=index, address=text)
        if mtu is not None:
            ipr.link("set", index=index, mtu=mtu)
        if up is not None:
            ipr.link("set", index=index, state="up" if up else "down")


def add_address(
    ifname: str,
    cidr: str,
    *,
    netns: str | None = None,
    nodad: bool = False,
    noprefixroute: bool = False,
) -> None:
    """Add `cidr` ("192.0.2.1/24", "2001:db8::1/64"); `nodad` applies to IPv6 only."""
    iface = ipaddress.ip_interface(cidr)
    flags = 0
    if nodad and iface.version == 6:
        flags |= IFA_F_NODAD
    if noprefixroute:
        flags |= IFA_F_NOPREFIXROUTE
    with iproute(netns) as ipr:
        ipr.addr(
            "add",
            index=_index(ipr, ifname),
            address=str(iface.ip),
            prefixlen=iface.network.prefixlen,
            flags=flags,
        )


def add_route(
    dst: str,
    *,
    netns: str | None = None,
    gateway: str | None = None,
    ifname: str | None = None,
) -> None:
    """A route to `dst` ("default" or a prefix) via `gateway` and/or out of `ifname`."""
    spec: dict[str, Any] = {}
    if dst == "default":
        spec["dst"] = "0.0.0.0/0" if gateway is None or ":" not in gateway else "::/0"
    else:
        spec["dst"] = dst
    if gateway is not None:
        spec["gateway"] = gateway
    with iproute(netns) as ipr:
        if ifname is not None:
            spec["oif"] = _index(ipr, ifname)
        ipr.route("add", **spec)


def _sysctl_path(name: str) -> str:
    # "net.ipv4.conf.eth0.forwarding" or "net/ipv4/conf/eth0.1/forwarding" (for dotted names)
    rel = name if "/" in name else name.replace(".", "/")
    return os.path.join("/proc/sys", rel)


def set_sysctl(name: str, value: str | int, *, netns: str | None = None) -> None:
    with in_netns(netns), open(_sysctl_path(name), "w") as f:
        f.write(str(value))


def get_sysctl(name: str, *, netns: str | None = None) -> str:
    with in_netns(netns), open(_sysctl_path(name)) as f:
        return f.read().strip()


class LinkMonitor:
    """RTM_NEWLINK/RTM_DELLINK of one namespace, on a non-blocking socket for add_reader.

    `read()` never raises on bad input; an overrun (ENOBUFS: events were lost) sets
    `overrun` so the owner re-reads the state of the links it follows.
    """

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self.malformed = 0
        self.overrun = False
        with in_netns(netns):
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.bind((0, RTMGRP_LINK))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock = sock

    def fileno(self) -> int:
        return self._sock.fileno()

    def read(self) -> list[LinkState]:
        events: list[LinkState] = []
        while True:
            try:
                data = self._sock.recv(65536)
            except BlockingIOError:
                return events
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.overrun = True
                    continue
                raise
            if not data:
                return events
            events.extend(self.parse(data))

    def parse(self, data: bytes) -> list[LinkState]:
        events = []
        offset = 0
        while offset + _NLMSGHDR.size <= len(data):
            length, mtype, _, _, _ = _NLMSGHDR.unpack_from(data, offset)
            if length < _NLMSGHDR.size or offset + length > len(data):
                self.malformed += 1
                break
            if mtype == NLMSG_OVERRUN:
                self.overrun = True
            elif mtype in (RTM_NEWLINK, RTM_DELLINK):
                event = _parse_link(data[offset + _NLMSGHDR.size : offset + length], mtype)
                if event is None:
                    self.malformed += 1
                else:
                    events.append(event)
            offset += (length + 3) & ~3
        return events

    def close(self) -> None:
        self._sock.close()


def _parse_link(body: bytes, mtype: int) -> LinkState | None:
    if len(body) < _IFINFOMSG.size:
        return None
    _, _, index, flags, _ = _IFINFOMSG.unpack_from(body)
    pos = _IFINFOMSG.size
    while pos + _RTATTR.size <= len(body):
        alen, atype = _RTATTR.unpack_from(body, pos)
        if alen < _RTATTR.size or pos + alen > len(body):
            return None
        if atype == IFLA_IFNAME:
            raw = body[pos + _RTATTR.size : pos + alen]
            name = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
            return LinkState(
                name,
                index,
                bool(flags & IFF_UP),
                bool(flags & IFF_LOWER_UP),
                deleted=mtype == RTM_DELLINK,
            )
        pos += (alen + 3) & ~3
    return None
