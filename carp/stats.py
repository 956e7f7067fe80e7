"""struct carpstats of ip_carp.h: sixteen counters, named as in the kernel without `carps_`."""

from dataclasses import asdict, dataclass, fields


@dataclass(slots=True)
class CarpStats:
    ipackets: int = 0
    ipackets6: int = 0
    badif: int = 0
    badttl: int = 0
    hdrops: int = 0
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

    def count(self, name: str, n: int = 1) -> None:
        setattr(self, name, getattr(self, name) + n)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))
