"""A node's devices: its switches with their host ports and ports, its carp TAPs, and the
sysctls it sets on interfaces (design.md 1.7, 2).

`NodeDevices` opens and attaches them for `Node.start()` and for the reload and ifconfig
transactions (vswitch/reconfig.py): every failure is a ConfigError naming the config field and
the cause, and a device half set up is closed again. Switch ports are opened through
`System.open_port` (one table of port types, vswitch/system.py); what follows is the same for
every type. What the node sets on an interface it did not create is noted first and put back
when it lets go of the interface (`release_sysctls`).
"""

import errno
import logging
import os
from collections.abc import Callable, Iterable
from ipaddress import IPv4Interface, IPv6Address, IPv6Interface

from carp.configerrors import path
from carp.params import CarpDev
from vswitch.config import ConfigError, PortConfig, SwitchConfig
from vswitch.dataplane import DataPlane
from vswitch.port import DevicePort
from vswitch.system import PortRefused, System, if_sysctl, parse_mac, port_type

log = logging.getLogger("vswitch.build")

# sysctls of the node's namespace: it is a gateway (design.md 1.7), and replies to clients
# arrive on carp TAPs while leaving through host ports (asymmetric for rp_filter)
NAMESPACE_SYSCTLS = (
    ("net.ipv4.ip_forward", 1),
    ("net.ipv6.conf.all.forwarding", 1),
    ("net.ipv4.conf.all.rp_filter", 0),
    ("net.ipv4.conf.default.rp_filter", 0),
)
# the host port must neither answer nor announce virtual addresses (vswitch does, per mode),
# nor take the `ip`-mode frames to the multicast carp MAC that the switch floods to it: those
# reach the kernel only through the carp TAP, after carp_lsdrop (§6.4, §6.5)
HOST_PORT_SYSCTLS = (
    ("ipv4", "arp_ignore", 1),
    ("ipv4", "arp_announce", 2),
    ("ipv4", "rp_filter", 0),
    ("ipv4", "drop_unicast_in_l2_multicast", 1),
    ("ipv6", "drop_unicast_in_l2_multicast", 1),
)
# a switch port whose interface sits in the node's namespace (raw ports, tap ports without
# netns) is the switch's, not the kernel's: the kernel must not answer ARP for a virtual address
# on it with that interface's MAC, nor answer the `ip`-mode frames it also sees there
SWITCH_PORT_SYSCTLS = (
    ("ipv4", "arp_ignore", 1),
    ("ipv4", "drop_unicast_in_l2_multicast", 1),
    ("ipv6", "drop_unicast_in_l2_multicast", 1),
)
# the carp TAP holds the VIPs only: no link-local, no router solicitations, no own ARP answers
CARP_TAP_SYSCTLS = (
    ("ipv6", "addr_gen_mode", 1),
    ("ipv4", "rp_filter", 0),
    ("ipv4", "arp_ignore", 1),
)


def link_local(mac: bytes) -> IPv6Address:
    """The EUI-64 link-local address the kernel gives an interface with this MAC."""
    eui = bytes((mac[0] ^ 0x02, *mac[1:3], 0xFF, 0xFE, *mac[3:6]))
    return IPv6Address(b"\xfe\x80" + bytes(6) + eui)


def local_mac() -> bytes:
    """A random locally administered unicast MAC (for a switch without a host_mac)."""
    raw = bytearray(os.urandom(6))
    raw[0] = (raw[0] & 0xFC) | 0x02
    return bytes(raw)


def cookie() -> bytes:
    """The injected randomness of the core: 8 random bytes (the replay cookie, §3)."""
    return os.urandom(8)


def refused(where: str, what: str, exc: BaseException, fix: str = "") -> ConfigError:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return ConfigError([f"{where}: {what}: {reason}" + (f" ({fix})" if fix else "")])


def undo(what: str, step: Callable[[], object]) -> None:
    """Run one clean-up step; a failure is logged and the next step still runs."""
    try:
        step()
    except Exception as exc:
        log.error("could not %s: %s", what, exc)


class NodeDevices:
    """What a node opened on the data plane and set on the system, and how to undo it."""

    def __init__(self, dataplane: DataPlane, system: System) -> None:
        self.dataplane = dataplane
        self.system = system
        self.carp_taps: dict[str, DevicePort] = {}
        # interfaces the node did not create: sysctl -> value before the node set it
        self._saved_sysctls: dict[str, dict[str, str]] = {}

    def set_namespace_sysctls(self) -> None:
        for name, value in NAMESPACE_SYSCTLS:
            self.system.set_sysctl(name, value)

    def build_switch(self, name: str, sw: SwitchConfig) -> CarpDev:
        """The switch, its host port and its ports; the carpdev the core sees it as."""
        try:
            fwd = self.dataplane.add_switch(
                name, hub=sw.mode == "hub", ageing=sw.ageing, offload=sw.vnet_offload
            )
        except OSError as exc:
            where = f"switch.{name}.offload"
            raise refused(where, "not available", exc, "set offload = false") from exc
        fwd.mode = sw.mode  # learning, hub or learning-arp
        own_mac = parse_mac(sw.host_mac) if sw.host_mac else local_mac()
        ipv4 = next((a.ip for a in sw.host if isinstance(a, IPv4Interface)), None)
        ipv6: IPv6Address | None = None
        if sw.host:
            self._open_host_port(name, sw, own_mac, fwd.vnet_hdr)
            ipv6 = link_local(own_mac)
        for index, port in enumerate(sw.ports):
            self.attach_port(name, index, port)
        local = frozenset(a.ip for a in sw.host)
        return CarpDev(name, own_mac, ipv4, ipv6, local=local)

    def _open_host_port(self, name: str, sw: SwitchConfig, mac: bytes, vnet_hdr: int) -> None:
        try:
            dev = self.system.open_tap(name, vnet_hdr=vnet_hdr, mac=mac)
        except OSError as exc:
            what = f"cannot create the host port TAP {name}"
            raise refused(f"switch.{name}.host", what, exc) from exc
        self.dataplane.add_port(name, name, dev, kernel=True, role="host")
        for af, key, value in HOST_PORT_SYSCTLS:
            self.system.set_sysctl(if_sysctl(af, name, key), value)
        for addr in sw.host:
            self.system.add_address(name, str(addr))
        self.system.set_link(name, True)

    def attach_port(self, switch: str, index: int, port: PortConfig) -> None:
        """Open, configure and attach one switch port; ConfigError names it and the cause."""
        where = path(("switch", switch, "ports", index))
        ifname = port_type(port).interface(port)
        # an interface that was there before the node gets its sysctls back when let go of; a
        # device the node makes vanishes with its own
        existed = ifname is not None and self.system.interface_exists(ifname)
        try:
            dev = self.system.open_port(port, vnet_hdr=self.dataplane.switch(switch).vnet_hdr)
        except PortRefused as exc:
            raise ConfigError([f"{where}.{exc.key}: {exc.message} ({exc.fix})"]) from None
        except OSError as exc:
            what = f"cannot open {port.type} port {ifname or port.name}"
            raise refused(where, what, exc) from exc
        try:
            if ifname is not None and dev.netns is None:
                for af, key, value in SWITCH_PORT_SYSCTLS:
                    self._set_if_sysctl(ifname, af, key, value, restore=existed)
            self.dataplane.add_port(switch, port.name, dev)
        except OSError as exc:
            dev.close()
            raise refused(where, f"cannot set up port {ifname or port.name}", exc) from exc
        except BaseException:
            dev.close()
            raise

    def _set_if_sysctl(self, ifname: str, af: str, key: str, value: int, restore: bool) -> None:
        name = if_sysctl(af, ifname, key)
        if restore:
            saved = self._saved_sysctls.setdefault(ifname, {})
            if name not in saved:
                saved[name] = self.system.get_sysctl(name)
        self.system.set_sysctl(name, value)

    def release_sysctls(self) -> None:
        """Put back the sysctls of interfaces the node did not create and no longer uses."""
        used = {
            dev.ifname
            for rt in self.dataplane.switches.values()
            for dev in rt.devices.values()
            if dev.netns is None and not dev.closed
        }
        for ifname in [i for i in self._saved_sysctls if i not in used]:
            for name, value in reversed(self._saved_sysctls.pop(ifname).items()):
                try:
                    self.system.set_sysctl(name, value)
                except OSError as exc:
                    log.warning("could not restore %s to %s: %s", name, value, exc)

    # -- carp TAPs -----------------------------------------------------------------------------

    def open_carp_tap(
        self,
        name: str,
        carpdev: str,
        mac: bytes,
        addresses: Iterable[IPv4Interface | IPv6Interface],
    ) -> DevicePort:
        """The kernel TAP of carp interface `name`: its MAC, its virtual addresses, carrier off,
        attached to its carpdev's switch for the frames the data path delivers."""
        where = f"carp.{name}"
        try:
            dev = self.system.open_tap(
                name, vnet_hdr=self.dataplane.switch(carpdev).vnet_hdr, mac=mac
            )
        except OSError as exc:
            taken = exc.errno in (errno.EBUSY, errno.EEXIST)
            fix = "another interface has that name: rename the carp interface" if taken else ""
            raise refused(where, f"cannot create the carp TAP {name}", exc, fix) from exc
        try:
            for af, key, value in CARP_TAP_SYSCTLS:
                self.system.set_sysctl(if_sysctl(af, name, key), value)
            for addr in addresses:
                self.system.add_address(name, str(addr), noprefixroute=True)
            self.system.set_carrier(dev, False)
            self.system.set_link(name, True)
            self.dataplane.add_port(carpdev, name, dev, kernel=True, flood=False, role="carp")
        except OSError as exc:
            dev.close()
            raise refused(where, f"cannot set up the carp TAP {name}", exc) from exc
        except BaseException:
            dev.close()
            raise
        self.carp_taps[name] = dev
        return dev

    def close_carp_tap(self, name: str) -> None:
        dev = self.carp_taps.pop(name, None)
        if dev is None:
            return
        for switch, rt in self.dataplane.switches.items():
            if rt.devices.get(name) is dev:
                self.dataplane.remove_port(switch, name)
        dev.close()

    def close_carp_taps(self) -> None:
        for dev in self.carp_taps.values():
            dev.close()
