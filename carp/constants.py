"""Protocol constants of carp(4) (ip_carp.h, ip_carp.c)."""

from enum import IntEnum

IPPROTO_CARP = 112
CARP_VERSION = 2
CARP_ADVERTISEMENT = 1
CARP_DFLTTL = 255
CARP_KEY_LEN = 20
CARP_DFLTINTV = 1
CARP_MAXNODES = 32
CARP_HEADER_LEN = 36
CARP_AUTHLEN = 7
CARP_BOWOUT = 255  # advbase and advskew of a bow-out advertisement

INADDR_CARP_GROUP = "224.0.0.18"
IN6ADDR_CARP_GROUP = "ff02::12"
MAC_CARP_GROUP4 = bytes.fromhex("01005e000012")
MAC_CARP_GROUP6 = bytes.fromhex("333300000012")
MAC_BROADCAST = b"\xff" * 6

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD

# syslog priorities used by net.inet.carp.log
LOG_CRIT = 2
LOG_ERR = 3
LOG_WARNING = 4
LOG_NOTICE = 5
LOG_INFO = 6
LOG_DEBUG = 7


class State(IntEnum):
    """CARP_STATES of ip_carp.h."""

    INIT = 0
    BACKUP = 1
    MASTER = 2

    def __str__(self) -> str:
        return self.name


class Balancing(IntEnum):
    """Balancing modes; `arp` is the historical mode kept by design.md decision 3."""

    NONE = 0
    ARP = 1
    IP = 2
    IP_STEALTH = 3
    IP_UNICAST = 4

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")

    @classmethod
    def parse(cls, text: str) -> "Balancing":
        return cls[text.strip().upper().replace("-", "_")]

    @property
    def is_ip(self) -> bool:
        """`balancing >= ip` of carp_vhe_match: every node accepts, carp_lsdrop filters."""
        return self in (Balancing.IP, Balancing.IP_STEALTH, Balancing.IP_UNICAST)
