"""struct carpstats of ip_carp.h: sixteen counters, named as in the kernel without `carps_`, and
apart from them the protocol-112 packets the IP layer drops before carp(4) sees them."""

from dataclasses import asdict, dataclass, field, fields


@dataclass(slots=True)
class IpDropStats:
    """Packets showing protocol 112 that OpenBSD's ip_input / ip6_input would drop before
    carp_proto_input: one counter per `carp.wire.IpDrop` reason. The kernel counts these in
    ipstat / ip6stat, never in carpstats, so they are kept apart from `CarpStats`' counters."""

    toosmall: int = 0
    badhlen: int = 0
    badsrc: int = 0
    badsum: int = 0
    badlen: int = 0
    tooshort: int = 0
    notours: int = 0
    badoptions: int = 0
    toomanyhdr: int = 0
    fragment: int = 0

    def count(self, reason: str, n: int = 1) -> None:
        setattr(self, reason, getattr(self, reason) + n)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


@dataclass(slots=True)
class CarpStats:
    ipackets: int = 0
    ipackets6: int = 0
    badif: int = 0
    badttl: int = 0
    hdrops: int = 0  # an m_pullup failure: none here (a cut IP header is in ip_drops)
    badsum: int = 0
    badver: int = 0
    badlen: int = 0
    badauth: int = 0
    badvhid: int = 0
    badaddrs: int = 0  # defined, never incremented by ip_carp.c
    opackets: int = 0
    opackets6: int = 0
    onomem: int = 0
    ostates: int = 0  # defined, never incremented by ip_carp.c
    preempt: int = 0
    # not in struct carpstats: read it with `ip_drops.as_dict()`
    ip_drops: IpDropStats = field(default_factory=IpDropStats)

    def count(self, name: str, n: int = 1) -> None:
        setattr(self, name, getattr(self, name) + n)

    def as_dict(self) -> dict[str, int]:
        """The sixteen carpstats counters (the IP-layer drops are `ip_drops.as_dict()`)."""
        return {name: getattr(self, name) for name in self.names()}

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls) if f.name != "ip_drops")
