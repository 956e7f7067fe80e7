"""What the node asks of the system, behind two small seams so the node runs in unit tests.

`System`: the kernel calls of node.py (sysctls, opening TAPs and raw ports, addresses, link
up/down, carrier); `LinuxSystem` does them with vswitch/netlink.py, tap.py and raw.py, in the
process's own network namespace. `Clock`: the core's `now` (monotonic seconds) and one-shot
timers at such a time; `LoopClock` puts them on the event loop. Tests pass fakes of both.
"""

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

from vswitch import netlink
from vswitch.port import DevicePort
from vswitch.raw import RawPort
from vswitch.tap import TapPort


def if_sysctl(af: str, ifname: str, key: str) -> str:
    """The sysctl of one interface, e.g. net/ipv4/conf/eth0.100/arp_ignore (slashes: interface
    names may contain dots)."""
    return f"net/{af}/conf/{ifname}/{key}"


class System(Protocol):
    def set_sysctl(self, name: str, value: int | str) -> None: ...

    def get_sysctl(self, name: str) -> str: ...

    def interface_exists(self, ifname: str) -> bool: ...

    def open_tap(
        self,
        ifname: str,
        *,
        vnet_hdr: int,
        mac: bytes | None = None,
        netns: str | None = None,
        up: bool = True,
    ) -> DevicePort:
        """A new TAP (never an existing one), moved to `netns` if given."""
        ...

    def open_raw(self, ifname: str, *, vnet_hdr: int) -> DevicePort:
        """An AF_PACKET port on the existing interface `ifname`."""
        ...

    def add_address(self, ifname: str, cidr: str, *, noprefixroute: bool = False) -> None:
        """Without DAD: the node's addresses are its own by configuration."""
        ...

    def set_link(self, ifname: str, up: bool) -> None: ...

    def set_carrier(self, dev: DevicePort, up: bool) -> None:
        """The carrier of a TAP opened by `open_tap` (a carp TAP's link, §4.11)."""
        ...


class LinuxSystem:
    """System on this process's network namespace."""

    def set_sysctl(self, name: str, value: int | str) -> None:
        netlink.set_sysctl(name, value)

    def get_sysctl(self, name: str) -> str:
        return netlink.get_sysctl(name)

    def interface_exists(self, ifname: str) -> bool:
        return netlink.link_index(ifname) is not None

    def open_tap(
        self,
        ifname: str,
        *,
        vnet_hdr: int,
        mac: bytes | None = None,
        netns: str | None = None,
        up: bool = True,
    ) -> DevicePort:
        return TapPort(ifname, vnet_hdr=vnet_hdr, mac=mac, netns=netns, up=up)

    def open_raw(self, ifname: str, *, vnet_hdr: int) -> DevicePort:
        return RawPort(ifname, vnet_hdr=vnet_hdr)

    def add_address(self, ifname: str, cidr: str, *, noprefixroute: bool = False) -> None:
        netlink.add_address(ifname, cidr, nodad=True, noprefixroute=noprefixroute)

    def set_link(self, ifname: str, up: bool) -> None:
        netlink.set_link(ifname, up=up)

    def set_carrier(self, dev: DevicePort, up: bool) -> None:
        if not isinstance(dev, TapPort):
            raise TypeError(f"{dev.ifname}: a carrier is set on TAPs only")
        dev.set_carrier(up)


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def __call__(self) -> float:
        """Now, in the core's time: monotonic seconds."""
        ...

    def call_at(self, deadline: float, callback: Callable[[], None]) -> Timer:
        """Call `callback` once at `deadline` (core time), or soon after."""
        ...


class LoopClock:
    """time.monotonic for the core; its deadlines become timers on the event loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.loop = loop
        self._monotonic = monotonic

    def __call__(self) -> float:
        return self._monotonic()

    def call_at(self, deadline: float, callback: Callable[[], None]) -> Timer:
        # the loop's clock may differ from the core's (uvloop counts milliseconds): convert the
        # delay, not the time; a timer that fires early is re-armed by its owner
        return self.loop.call_at(self.loop.time() + max(0.0, deadline - self()), callback)
