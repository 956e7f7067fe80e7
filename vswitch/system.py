"""What the node asks of the system, behind two small seams so the node runs in unit tests.

`System`: the kernel calls of the node (sysctls, opening switch ports and the node's own TAPs,
addresses, link up/down, carrier); `LinuxSystem` does them with vswitch/netlink.py, tap.py and
raw.py, in the process's own network namespace. `Clock`: the core's `now` (monotonic seconds) and
one-shot timers at such a time; `LoopClock` puts them on the event loop. Tests pass fakes of both.

Switch ports are opened through one table, `PORT_OPENERS` (model class -> `PortType`), so that a
new port type is a model in vswitch/config.py (`PORT_TYPES`), a `DevicePort` subclass, and one
entry here.
"""

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from carp.config import Model
from vswitch import netlink
from vswitch.config import (
    RawPortConfig,
    StreamPortConfig,
    TapPortConfig,
    VdePortConfig,
    VxlanPortConfig,
)
from vswitch.port import DevicePort
from vswitch.raw import RawPort
from vswitch.sockport import group_id, user_id
from vswitch.stream import StreamPort
from vswitch.tap import TapPort
from vswitch.vde import VdePort
from vswitch.vxlan import VxlanPort

M = TypeVar("M", bound=Model)


def if_sysctl(af: str, ifname: str, key: str) -> str:
    """The sysctl of one interface, e.g. net/ipv4/conf/eth0.100/arp_ignore (slashes: interface
    names may contain dots)."""
    return f"net/{af}/conf/{ifname}/{key}"


def parse_mac(text: str) -> bytes:
    """A MAC of the config ("02:00:00:00:00:01") as its 6 bytes."""
    return bytes.fromhex(text.replace(":", ""))


class PortRefused(Exception):
    """A port type's pre-check failed before anything was opened: `key` is the field of the
    port's model at fault, `fix` what to do about it."""

    def __init__(self, key: str, message: str, fix: str) -> None:
        super().__init__(f"{key}: {message} ({fix})")
        self.key = key
        self.message = message
        self.fix = fix


class System(Protocol):
    def set_sysctl(self, name: str, value: int | str) -> None: ...

    def get_sysctl(self, name: str) -> str: ...

    def interface_exists(self, ifname: str) -> bool: ...

    def open_port(self, port: Model, *, vnet_hdr: int) -> DevicePort:
        """The device of a switch port (a model of vswitch/config.py PORT_TYPES), opened through
        its `PORT_OPENERS` entry: PortRefused from the type's pre-check, OSError when the kernel
        refuses."""
        ...

    def open_tap(self, ifname: str, *, vnet_hdr: int, mac: bytes) -> DevicePort:
        """One of the node's own kernel TAPs (a host port, a carp TAP): new (never an existing
        one), in the node's namespace, administratively down."""
        ...

    def add_address(self, ifname: str, cidr: str, *, noprefixroute: bool = False) -> None:
        """Without DAD: the node's addresses are its own by configuration."""
        ...

    def set_link(self, ifname: str, up: bool) -> None: ...

    def set_carrier(self, dev: DevicePort, up: bool) -> None:
        """The carrier of a TAP opened by `open_tap` (a carp TAP's link, §4.11)."""
        ...


# -- the port types ---------------------------------------------------------------------------


def no_check(port: Any, system: System) -> None:
    """A port type with nothing to check before it is opened."""


def no_interface(port: Any) -> str | None:
    """A port type whose device is no kernel interface (a socket of the node's own)."""
    return None


@dataclass(frozen=True, slots=True)
class PortType(Generic[M]):
    """How the daemon opens one port type: an entry of `PORT_OPENERS`.

    `check(port, system)` runs first and names what can be named before anything is opened:
    it raises PortRefused with the model's field and the fix (the node reports it as
    `switch.S.ports[i].<field>: message (fix)`); it may ask `system` (interface_exists), so the
    unit tests' fake System runs the same checks through `check_port`. `open(port, vnet_hdr,
    queues)` then returns the configured device or raises OSError (`vnet_hdr`: 0, or the switch's
    virtio-net header length when it uses offload; a device that cannot carry it raises; `queues`:
    the node's forwarding workers, each reading its own queue of a TAP or raw port, ignored by
    the socket ports the node process serves itself).
    `interface(port)` names the kernel interface the device is made as or attached to (None:
    it is none). The node does the rest for every type alike (vswitch/build.py): while the
    device stays in the node's namespace that interface gets the switch-port sysctls, put back
    when it existed before the node; the device is attached to the switch under the port's
    name; and a reload that gives the name or the interface to a new port takes the old port
    off first (vswitch/reconfig.py).

    A new type is its model in config.py's PORT_TYPES, a DevicePort subclass and its line in
    PORT_OPENERS, as vxlan: `VxlanPortConfig`, `VxlanPort`, `PortType(open_vxlan_port)`."""

    open: Callable[[M, int, int], DevicePort]
    check: Callable[[M, System], None] = no_check
    interface: Callable[[M], str | None] = no_interface


def tap_ifname(port: TapPortConfig) -> str:
    return port.ifname or port.name


def open_tap_port(port: TapPortConfig, vnet_hdr: int, queues: int) -> DevicePort:
    mac = parse_mac(port.mac) if port.mac else None
    return TapPort(tap_ifname(port), vnet_hdr=vnet_hdr, mac=mac, netns=port.netns, queues=queues)


def require_netns_file(port: TapPortConfig, system: System) -> None:
    """A namespace given as pid:PID or a path must be there (a container that has started)."""
    spec = port.netns
    if spec is not None and (spec.startswith("pid:") or "/" in spec):
        found = netlink.netns_path(spec)
        if not os.path.exists(found):
            what = f"no process {spec[4:]}" if spec.startswith("pid:") else "no such file"
            fix = "start the container or process first, or fix netns"
            raise PortRefused("netns", f"{spec}: {what} ({found} is missing)", fix)


def require_accounts(port: StreamPortConfig | VdePortConfig, system: System) -> None:
    """The owner and group of a socket port's files must exist here."""
    for key, lookup, value in (("owner", user_id, port.owner), ("group", group_id, port.group)):
        try:
            lookup(value)
        except ValueError:
            kind = "user" if key == "owner" else "group"
            missing = f"no {kind} {value!r} on this host"
            raise PortRefused(key, missing, f"create it or fix {key}") from None


def open_stream_port(port: StreamPortConfig, vnet_hdr: int, queues: int) -> DevicePort:
    return StreamPort(
        port.name,
        port.path,
        vnet_hdr=vnet_hdr,
        owner=port.owner,
        group=port.group,
        mode=port.mode,
    )


def open_vde_port(port: VdePortConfig, vnet_hdr: int, queues: int) -> DevicePort:
    return VdePort(
        port.name,
        port.path,
        vnet_hdr=vnet_hdr,
        owner=port.owner,
        group=port.group,
        mode=port.mode,
    )


def open_vxlan_port(port: VxlanPortConfig, vnet_hdr: int, queues: int) -> DevicePort:
    return VxlanPort(
        port.name,
        vni=port.vni,
        local=str(port.local),
        remotes=[str(r) for r in port.remote],
        port=port.port,
        vnet_hdr=vnet_hdr,
    )


def require_interface(port: RawPortConfig, system: System) -> None:
    if not system.interface_exists(port.ifname):
        missing = f"no interface {port.ifname} in the node's network namespace"
        raise PortRefused("ifname", missing, "create it first, or fix ifname")


def raw_ifname(port: RawPortConfig) -> str:
    return port.ifname


def open_raw_port(port: RawPortConfig, vnet_hdr: int, queues: int) -> DevicePort:
    return RawPort(port.ifname, vnet_hdr=vnet_hdr, queues=queues)


# One entry per model of vswitch/config.py PORT_TYPES: model class -> how to open its device.
# A new port type: its model in config.py, its DevicePort subclass, its line here.
PORT_OPENERS: dict[type[Model], PortType[Any]] = {
    TapPortConfig: PortType(open_tap_port, check=require_netns_file, interface=tap_ifname),
    RawPortConfig: PortType(open_raw_port, check=require_interface, interface=raw_ifname),
    # socket ports: no kernel interface; frames without a virtio-net header (vswitch/segment.py)
    StreamPortConfig: PortType(open_stream_port, check=require_accounts),
    VdePortConfig: PortType(open_vde_port, check=require_accounts),
    VxlanPortConfig: PortType(open_vxlan_port),
}


def port_type(port: Model) -> PortType[Any]:
    """The `PORT_OPENERS` entry of a port model; TypeError for a model without one."""
    entry = PORT_OPENERS.get(type(port))
    if entry is None:
        raise TypeError(f"no opener for port model {type(port).__name__} (add it to PORT_OPENERS)")
    return entry


def check_port(port: Model, system: System) -> None:
    """Run the pre-check of the port's type against `system` (PortRefused)."""
    port_type(port).check(port, system)


class LinuxSystem:
    """System on this process's network namespace. `queues`: how many queues every TAP and raw
    port gets, one per forwarding worker (1 without workers)."""

    def __init__(self, queues: int = 1) -> None:
        self.queues = queues

    def set_sysctl(self, name: str, value: int | str) -> None:
        netlink.set_sysctl(name, value)

    def get_sysctl(self, name: str) -> str:
        return netlink.get_sysctl(name)

    def interface_exists(self, ifname: str) -> bool:
        return netlink.link_index(ifname) is not None

    def open_port(self, port: Model, *, vnet_hdr: int) -> DevicePort:
        entry = port_type(port)
        entry.check(port, self)
        return entry.open(port, vnet_hdr, self.queues)

    def open_tap(self, ifname: str, *, vnet_hdr: int, mac: bytes) -> DevicePort:
        return TapPort(ifname, vnet_hdr=vnet_hdr, mac=mac, up=False, queues=self.queues)

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
