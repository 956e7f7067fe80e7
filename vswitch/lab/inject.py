"""Frames into a lab interface from outside any node, and what the kernel counted for it.

An `Injector` is an AF_PACKET socket bound to one interface of a lab namespace (protocol 0: it
receives nothing) with PACKET_VNET_HDR on, so every frame goes out with a virtio-net header the
sender chooses. The kernel checks that header (virtio_net_hdr_to_skb) and refuses what it cannot
turn into a packet (EINVAL) before anything leaves; a refused send is counted by errno, never
raised. `link_counters` reads an interface's IFLA_STATS64 (rx/tx packets and drops), the
kernel's side of a port's accounting. Used by bench/fuzz.py.
"""

import errno
import socket
from collections import Counter
from typing import Any

from vswitch import netlink

SOL_PACKET = 263
PACKET_VNET_HDR = 15
SO_SNDBUFFORCE = 32
VNET_HDR_LEN = 10  # struct virtio_net_hdr, the size AF_PACKET takes
VLAN_TYPES = (b"\x81\x00", b"\x88\xa8")  # eth_type_vlan(): 802.1Q, 802.1ad
COUNTERS = ("rx_packets", "tx_packets", "rx_dropped", "tx_dropped", "rx_errors", "tx_errors")


class Injector:
    """Sends `header + frame` out of `ifname` in `netns`; `sent` and `refused` (errno -> count)
    say what became of each."""

    def __init__(self, netns: str | None, ifname: str, *, sndbuf: int = 4 << 20) -> None:
        with netlink.in_netns(netns):
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, sndbuf)
            sock.bind((ifname, 0))
        except BaseException:
            sock.close()
            raise
        self.ifname = ifname
        self._sock = sock
        self.sent = 0
        self.refused: Counter[str] = Counter()

    def send(self, header: bytes, frame: bytes) -> bool:
        """One frame with its virtio-net header (10 bytes); False if the kernel refused it."""
        try:
            self._sock.send(header + frame)
        except OSError as exc:
            code = exc.errno or 0
            self.refused[errno.errorcode.get(code, str(code))] += 1
            return False
        self.sent += 1
        return True

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "Injector":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def untag_discards(frame: bytes) -> bool:
    """Whether a receiving interface's kernel drops `frame` before any packet socket sees it:
    __netif_receive_skb_core untags VLAN frames first, and skb_vlan_untag frees one with fewer
    than 6 bytes after the Ethernet header (the tag and the inner type), counting it nowhere."""
    return len(frame) < 20 and frame[12:14] in VLAN_TYPES


def link_counters(netns: str | None, ifname: str) -> dict[str, int]:
    """The kernel's counters of `ifname` in `netns` (COUNTERS from IFLA_STATS64); LookupError
    if there is no such interface."""
    with netlink.iproute(netns) as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            raise LookupError(f"no interface {ifname} in {netns or 'this namespace'}")
        link: Any = ipr.link("get", index=found[0])[0]
        stats = link.get_attr("IFLA_STATS64") or {}
        return {key: int(stats.get(key, 0)) for key in COUNTERS}


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    """Counter differences, key by key (keys of `after`)."""
    return {key: after[key] - before.get(key, 0) for key in after}
