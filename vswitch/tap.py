"""TAP ports (python-pytun): IFF_TAP | IFF_NO_PI, optionally IFF_VNET_HDR with TSO offload.

A TapPort creates its TAP (never attaches to an existing one: IFF_TUN_EXCL), optionally moves it
into a network namespace (how a VM or container attaches) and configures it there. Every queue is
opened before the move: a later TUNSETIFF by name would create a new TAP in the opener's
namespace (tap-io.md). The TAP disappears when the port is closed.

The namespace is a name under /run/netns, a namespace file (/proc/PID/ns/net, Docker's
/var/run/docker/netns/ID) or pid:PID. A file or a pid is opened once and held while the port
lives (netlink.pin_netns): every later netlink call goes to that namespace even if the pid is
reused; if the container goes away while the port lives, its namespace (and the TAP) stay until
the port is closed.

Offload: with `vnet_hdr` (10 or 12) every frame carries a virtio-net header and TUNSETOFFLOAD
(CSUM|TSO4|TSO6|TSO_ECN) lets the kernel hand over 64 KiB GSO frames: 8-12x TCP throughput.
The switch decides it for all its ports at once (dataplane.py).

Link: a TAP carries traffic while it is administratively up where it lives (a write to a down
TAP fails with EIO); the carrier (TUNSETCARRIER) is a separate thing, used for carp TAPs.

Frames the kernel could not queue to us (the TAP's queue, tx_queue_len frames, was full) are the
TAP interface's tx_dropped; `poll_kernel` reads them with the interface's other counters over
netlink. They count from the TAP's creation, which was ours, and never reset.
"""

import fcntl
import functools
import os
import struct
from collections.abc import Iterable, Mapping, Sequence

import pytun

from vswitch import netlink
from vswitch.netlink import LinkState
from vswitch.port import MAX_QUEUES, READ_BATCH, DevicePort, read_fd_batch

TUNSETIFF = 0x400454CA
TUNGETFEATURES = 0x800454CF
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
TUNSETCARRIER = 0x400454E2
IFF_VNET_HDR = 0x4000
IFF_MULTI_QUEUE = 0x0100
IFF_TUN_EXCL = 0x8000
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08
OFFLOAD = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN
GSO_MAX_FRAME = 65536 + 18  # a 64 KiB GSO packet with Ethernet and VLAN headers


def tun_features() -> int:
    """TUNGETFEATURES: the IFF_* flags this kernel's tun driver supports (creates nothing)."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        raw = fcntl.ioctl(fd, TUNGETFEATURES, struct.pack("I", 0))
    finally:
        os.close(fd)
    return int(struct.unpack("I", raw)[0])


def vnet_hdr_supported() -> bool:
    try:
        return bool(tun_features() & IFF_VNET_HDR)
    except OSError:
        return False


def apply_link_stats(ports: Iterable["TapPort"], stats: Mapping[str, Mapping[str, int]]) -> None:
    """Set the kernel counters of `ports` from their interfaces' IFLA_STATS64 (by ifname); the
    kernel's tx is our rx: tx_packets were read by us, tx_dropped never could be."""
    for port in ports:
        link = stats.get(port.ifname)
        if link is not None:
            dropped = int(link["tx_dropped"])
            port.dev.rx_kernel = dropped
            port.dev.kernel_packets = int(link["tx_packets"]) + dropped


def poll_kernel(netns: str | None, ports: Sequence["TapPort"]) -> None:
    """Read the kernel counters of `ports`, all in `netns`, with one link dump. Never raises:
    a namespace or TAP that is gone keeps its last counts."""
    try:
        links = netlink.links(netns)
    except Exception:  # a side channel of status: whatever the dump raises, counts stay
        return
    apply_link_stats(ports, {link.name: link.stats for link in links if link.stats is not None})


def set_carrier(fd: int, up: bool) -> None:
    """TUNSETCARRIER: NO-CARRIER / operstate down and `linkdown` routes while off."""
    fcntl.ioctl(fd, TUNSETCARRIER, struct.pack("i", int(up)))


class TapPort(DevicePort):
    kind = "tap"

    def __init__(
        self,
        ifname: str,
        *,
        vnet_hdr: int = 0,
        mtu: int = 1500,
        mac: bytes | None = None,
        netns: str | None = None,
        addresses: Sequence[str] = (),
        nodad: bool = True,
        noprefixroute: bool = False,
        up: bool = True,
        queues: int = 1,
    ) -> None:
        if vnet_hdr not in (0, 10, 12):
            raise ValueError(f"vnet_hdr must be 0, 10 or 12, not {vnet_hdr}")
        if not 1 <= queues <= MAX_QUEUES:
            raise ValueError(f"queues must be 1..{MAX_QUEUES}, not {queues}")
        if len(ifname.encode()) > 15:
            raise ValueError(f"interface name {ifname!r} is longer than 15 bytes")
        super().__init__(ifname, netns, vnet_hdr)
        self.netns_spec = netns  # as configured; `netns` may become the pinned namespace's path
        self._netns_fd: int | None = None
        self.mtu = mtu
        # without offload a frame is at most MTU + Ethernet + VLAN header (tap-io.md)
        self.bufsize = vnet_hdr + (GSO_MAX_FRAME if vnet_hdr else mtu + 18)
        flags = pytun.IFF_TAP | pytun.IFF_NO_PI
        if vnet_hdr:
            flags |= IFF_VNET_HDR
        if queues > 1:
            flags |= IFF_MULTI_QUEUE
        self._devs: list[pytun.TunTapDevice] = []
        try:
            if netns is not None and ("/" in netns or netns.startswith("pid:")):
                self._netns_fd, netns = netlink.pin_netns(netns)
                self.netns = netns
            # EXCL on the first queue: never attach to a TAP that existed before us
            for i in range(queues):
                self._devs.append(
                    pytun.TunTapDevice(name=ifname, flags=flags | (IFF_TUN_EXCL if i == 0 else 0))
                )
            self._fds: tuple[int, ...] = tuple(int(dev.fileno()) for dev in self._devs)
            for fd in self._fds:
                os.set_blocking(fd, False)
            first = self._fds[0]
            self._sender = functools.partial(os.write, first)
            if vnet_hdr == 12:
                fcntl.ioctl(first, TUNSETVNETHDRSZ, struct.pack("i", 12))
            if vnet_hdr:
                fcntl.ioctl(first, TUNSETOFFLOAD, OFFLOAD)
            netlink.set_link(ifname, mac=mac, mtu=mtu)
            if netns is not None:
                netlink.move_to_netns(ifname, netns)
            for cidr in addresses:
                netlink.add_address(
                    ifname, cidr, netns=netns, nodad=nodad, noprefixroute=noprefixroute
                )
            if up:
                netlink.set_link(ifname, netns=netns, up=True)
            state = netlink.link_state(ifname, netns)
        except BaseException:
            self.close()
            raise
        self.link_up = state is not None and self.link_from(state)

    @property
    def fds(self) -> tuple[int, ...]:
        return self._fds

    def fileno(self) -> int:
        return self._fds[0]

    def read_batch(self, fd: int, limit: int = READ_BATCH) -> list[bytes]:
        return read_fd_batch(self, fd, self.bufsize, limit)

    def link_from(self, state: LinkState) -> bool:
        return state.admin_up

    def set_carrier(self, up: bool) -> None:
        set_carrier(self._fds[0], up)

    def poll_kernel(self) -> None:
        if not self.closed:
            poll_kernel(self.netns, (self,))

    def close(self) -> None:
        """Close every queue: the TAP (not persistent) disappears with its addresses."""
        if self.closed:
            return
        self.closed = True
        self._sender = self._not_open
        for dev in self._devs:
            dev.close()
        self._devs.clear()
        if self._netns_fd is not None:
            os.close(self._netns_fd)
            self._netns_fd = None
