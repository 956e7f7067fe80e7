"""Netlink helpers (over vswitch/rtnl.py) and a link-state monitor on an RTMGRP_LINK socket.

Every helper takes `netns`: the name of a network namespace under /var/run/netns, the path of a
namespace file (/proc/PID/ns/net, /var/run/docker/netns/ID) or pid:PID (None: the process's
own). The process enters it with setns(2) only for as long as it takes to open a socket (or a
/proc/sys file), which then stays bound to that namespace. `pin_netns` opens a namespace once so
that a process's namespace stays the one meant even if the pid is reused. Helpers are
synchronous (the kernel answers a request at once) and may be called from inside the running
event loop.
"""

import ctypes
import errno
import fcntl
import ipaddress
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from vswitch.rtnl import (
    IFF_UP,
    IFLA_ADDRESS,
    IFLA_MASTER,
    IFLA_MTU,
    IFLA_NET_NS_FD,
    IFLA_NET_NS_PID,
    NLMSGHDR,
    RTM_DELLINK,
    RTM_NEWLINK,
    Link,
    Rtnl,
    attr,
    parse_link,
    u32,
)

NETNS_DIR = "/var/run/netns"
CLONE_NEWNET = 0x40000000
NS_GET_NSTYPE = 0xB703  # _IO(NSIO, 0x3): the CLONE_NEW* type of a namespace file
IFF_LOWER_UP = 0x10000
IFA_F_NODAD = 0x02
IFA_F_NOPREFIXROUTE = 0x200
RTMGRP_LINK = 0x1
NLMSG_OVERRUN = 4

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
def rtnl(netns: str | None = None) -> Iterator[Rtnl]:
    """An rtnetlink socket bound to `netns`, closed afterwards."""
    with in_netns(netns):
        conn = Rtnl()
    try:
        yield conn
    finally:
        conn.close()


def link(ifname: str, netns: str | None = None) -> Link | None:
    """The interface `ifname` of `netns` with its flags and IFLA_STATS64 (None: no such one)."""
    with rtnl(netns) as conn:
        return conn.link(ifname)


def links(netns: str | None = None) -> list[Link]:
    """Every interface of `netns`, with its flags and IFLA_STATS64."""
    with rtnl(netns) as conn:
        return conn.links()


def link_index(ifname: str, netns: str | None = None) -> int | None:
    found = link(ifname, netns)
    return None if found is None else found.index


def link_names(netns: str | None = None) -> set[str]:
    return {found.name for found in links(netns)}


@dataclass(frozen=True, slots=True)
class LinkState:
    ifname: str
    index: int
    admin_up: bool  # IFF_UP
    lower_up: bool  # IFF_LOWER_UP: carrier
    deleted: bool = False


def _state(found: Link, deleted: bool = False) -> LinkState:
    up, lower = bool(found.flags & IFF_UP), bool(found.flags & IFF_LOWER_UP)
    return LinkState(found.name, found.index, up, lower, deleted)


def link_state(ifname: str, netns: str | None = None) -> LinkState | None:
    found = link(ifname, netns)
    return None if found is None else _state(found)


def create_veth(
    name: str, peer: str, *, netns: str | None = None, peer_netns: str | None = None
) -> None:
    """A veth pair created in `netns`; the peer end is then moved to `peer_netns`."""
    with rtnl(netns) as conn:
        conn.add_veth(name, peer)
    if peer_netns != netns:
        move_to_netns(peer, peer_netns, netns=netns)


def create_bridge(name: str, *, netns: str | None = None) -> None:
    with rtnl(netns) as conn:
        conn.add_link(name, "bridge")


def set_master(ifname: str, master: str | None, *, netns: str | None = None) -> None:
    with rtnl(netns) as conn:
        owner = conn.index(master) if master else 0
        conn.set_link(conn.index(ifname), attrs=attr(IFLA_MASTER, u32(owner)))


def delete_link(ifname: str, *, netns: str | None = None) -> bool:
    """Delete an interface; False if it did not exist."""
    with rtnl(netns) as conn:
        found = conn.link(ifname)
        if found is None:
            return False
        conn.delete_link(found.index)
        return True


def move_to_netns(ifname: str, target: str | None, *, netns: str | None = None) -> None:
    """Move `ifname` from `netns` to `target` (None: this process's own namespace)."""
    with rtnl(netns) as conn:
        index = conn.index(ifname)
        if target is None:
            conn.set_link(index, attrs=attr(IFLA_NET_NS_PID, u32(os.getpid())))
            return
        fd = os.open(netns_path(target), os.O_RDONLY | os.O_CLOEXEC)
        try:
            conn.set_link(index, attrs=attr(IFLA_NET_NS_FD, u32(fd)))
        finally:
            os.close(fd)


def set_link(
    ifname: str,
    *,
    netns: str | None = None,
    up: bool | None = None,
    mac: bytes | str | None = None,
    mtu: int | None = None,
) -> None:
    """Set MAC and MTU, then the admin state (one request; the kernel applies them in this
    order, so a MAC is changed while the link is still down)."""
    attrs = b""
    if mac is not None:
        attrs += attr(
            IFLA_ADDRESS, bytes.fromhex(mac.replace(":", "")) if isinstance(mac, str) else mac
        )
    if mtu is not None:
        attrs += attr(IFLA_MTU, u32(mtu))
    with rtnl(netns) as conn:
        conn.set_link(conn.index(ifname), up=up, attrs=attrs)


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
    family = socket.AF_INET6 if iface.version == 6 else socket.AF_INET
    with rtnl(netns) as conn:
        conn.add_address(
            conn.index(ifname), family, iface.ip.packed, iface.network.prefixlen, flags
        )


def add_route(
    dst: str,
    *,
    netns: str | None = None,
    gateway: str | None = None,
    ifname: str | None = None,
) -> None:
    """A route to `dst` ("default" or a prefix) via `gateway` and/or out of `ifname`."""
    via = None if gateway is None else ipaddress.ip_address(gateway)
    if dst == "default":
        net = ipaddress.ip_network("::/0" if via is not None and via.version == 6 else "0.0.0.0/0")
    else:
        net = ipaddress.ip_network(dst)
    family = socket.AF_INET6 if net.version == 6 else socket.AF_INET
    with rtnl(netns) as conn:
        conn.add_route(
            family,
            net.network_address.packed,
            net.prefixlen,
            gateway=None if via is None else via.packed,
            oif=None if ifname is None else conn.index(ifname),
        )


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
        while offset + NLMSGHDR.size <= len(data):
            length, mtype, _, _, _ = NLMSGHDR.unpack_from(data, offset)
            if length < NLMSGHDR.size or offset + length > len(data):
                self.malformed += 1
                break
            if mtype == NLMSG_OVERRUN:
                self.overrun = True
            elif mtype in (RTM_NEWLINK, RTM_DELLINK):
                event = _parse_link(data[offset + NLMSGHDR.size : offset + length], mtype)
                if event is None:
                    self.malformed += 1
                else:
                    events.append(event)
            offset += (length + 3) & ~3
        return events

    def close(self) -> None:
        self._sock.close()


def _parse_link(body: bytes, mtype: int) -> LinkState | None:
    try:
        found = parse_link(body, stats=False)
    except ValueError:
        return None
    if not found.name:  # every link message names its interface
        return None
    return _state(found, deleted=mtype == RTM_DELLINK)
