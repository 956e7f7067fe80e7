"""Plain, validated inputs of the core: what config.py produces and CarpHost consumes."""

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface

from carp.constants import Balancing


@dataclass(frozen=True, slots=True)
class CarpNodeParams:
    """One carpnode (vhe): a vhid and its advskew."""

    vhid: int
    advskew: int = 0


@dataclass(frozen=True, slots=True)
class CarpIfParams:
    """One carp interface (carpN), already validated; carpnodes sorted by vhid."""

    name: str
    carpdev: str
    addresses: tuple[IPv4Interface | IPv6Interface, ...]
    carpnodes: tuple[CarpNodeParams, ...]
    advbase: int = 1
    passphrase: bytes = b""
    balancing: Balancing = Balancing.NONE
    carppeer: IPv4Address | None = None  # None: 224.0.0.18
    groups: tuple[str, ...] = ("carp",)
    lladdr: bytes | None = None  # a custom carp MAC (ifconfig lladdr); None: derived (6.3)
    admin_up: bool = True

    @property
    def v4(self) -> tuple[IPv4Address, ...]:
        return tuple(a.ip for a in self.addresses if isinstance(a, IPv4Interface))

    @property
    def v6(self) -> tuple[IPv6Address, ...]:
        return tuple(a.ip for a in self.addresses if isinstance(a, IPv6Interface))


@dataclass(frozen=True, slots=True)
class Sysctls:
    """net.inet.carp.* (8.1). preempt defaults to off as in OpenBSD."""

    allow: bool = True
    preempt: bool = False
    log: int = 2


@dataclass(frozen=True, slots=True)
class CarpDev:
    """The parent (carpdev) as the driver sees it: one switch of the node."""

    name: str
    mac: bytes  # the node's own MAC on that segment (its host port's MAC)
    ipv4: IPv4Address | None = None  # first IPv4 address of the host port: advert source
    ipv6: IPv6Address | None = None  # its link-local: IPv6 advert source
    # every address of the host port: a peer's unicast advertisement may be sent to any of them
    local: frozenset[IPv4Address | IPv6Address] = frozenset()
    extra: dict[str, str] = field(default_factory=dict)
