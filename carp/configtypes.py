"""Scalar types of CARP's configuration (design.md §4), each with the message it fails with.

Validators raise `problem(message, fix)`, rendered as `path: message (fix)`; a validator finding
several faults raises `problems([(relative path, message), ...])`. Numbers may come as strings
because ifconfig words are strings (carp/ifconfig_words.py); TOML gives them typed.
"""

import re
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address, IPv4Interface, IPv6Interface, ip_address, ip_interface
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

from carp.ifconfig_words import Loc, split_carpnodes

IFNAMSIZ = 16  # Linux and OpenBSD: names are at most 15 bytes plus the NUL

_IFNAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_MAC = re.compile(r"^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}$")


def problem(message: str, fix: str | None = None) -> PydanticCustomError:
    text = f"{message} ({fix})" if fix else message
    return PydanticCustomError("vswitch", "{message}", {"message": text})


def problems(found: list[tuple[Loc, str]]) -> PydanticCustomError:
    """Several faults found by one validator, each at a path relative to where it runs."""
    text = "; ".join(message for _, message in found)
    return PydanticCustomError("vswitch_many", "{message}", {"message": text, "problems": found})


def repeats(values: Sequence[Any], what: str) -> list[tuple[Loc, str]]:
    """Entries of a plain list that repeat an earlier one."""
    first: dict[Any, int] = {}
    found: list[tuple[Loc, str]] = []
    for n, value in enumerate(values):
        if value in first:
            found.append(((n,), f"{what} {value} is repeated (already at [{first[value]}])"))
        first.setdefault(value, n)
    return found


def repeats_at(values: Sequence[Any], key: str, what: str) -> list[tuple[Loc, str]]:
    """Entries of a list of tables whose `key` repeats an earlier one's."""
    first: dict[Any, int] = {}
    found: list[tuple[Loc, str]] = []
    for n, value in enumerate(values):
        if value in first:
            message = (
                f"{what} {value} is already used by [{first[value]}] (give each its own {what})"
            )
            found.append(((n, key), message))
        first.setdefault(value, n)
    return found


def string(value: Any) -> str:
    if not isinstance(value, str):
        raise problem(f"expected a string, got {value!r}")
    return value


def _ranged(low: int, high: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        # strings come from ifconfig words; TOML gives ints
        if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
            number = int(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            raise problem(f"{value!r} is not a whole number")
        if not low <= number <= high:
            raise problem(f"{number} is out of range {low}..{high}")
        return number

    return check


def _whole(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise problem(f"{value!r} is not a whole number")
    return value


def _flag(value: Any) -> bool:
    """true/false, or 1/0 as the sysctl would be written."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise problem(f"{value!r} is not true or false")


def choice(*options: str, fold: bool = False) -> BeforeValidator:
    def check(value: Any) -> str:
        text = value.lower() if fold and isinstance(value, str) else value
        if text not in options:
            raise problem(f"{value!r} is not one of {', '.join(options)}")
        return str(text)

    return BeforeValidator(check)


def _ifname(value: Any) -> str:
    text = string(value)
    if not (_IFNAME.match(text) and len(text.encode()) < IFNAMSIZ):
        raise problem(
            f"{text!r} is not a valid interface name", "1 to 15 letters, digits, '_', '.' or '-'"
        )
    return text


def _group(value: Any) -> str:
    text = _ifname(value)
    if text[-1].isdigit():  # ifconfig setifgroup: a name ending in a digit is an interface
        raise problem(f"group names may not end in a digit ({text!r})", "e.g. 'uplink'")
    return text


def _mac(value: Any) -> str:
    text = string(value)
    if not _MAC.match(text):
        raise problem(f"{text!r} is not a MAC address", "write it as 02:00:5e:10:00:01")
    octets = bytes.fromhex(text.replace("-", "").replace(":", ""))
    if octets[0] & 1 or not any(octets):
        raise problem(f"{text!r} is not a unicast MAC address", "e.g. 02:00:5e:10:00:01")
    return ":".join(f"{b:02x}" for b in octets)


def _ifaddress(value: Any) -> IPv4Interface | IPv6Interface:
    """An interface address with its prefix: the prefix decides subnets and routes."""
    if isinstance(value, IPv4Interface | IPv6Interface):
        return value
    text = string(value)
    try:
        address = ip_interface(text)
    except ValueError:
        raise problem(
            f"{text!r} is not an IPv4 or IPv6 address with a prefix",
            "write it as 192.0.2.10/24 or 2001:db8::10/64",
        ) from None
    if "/" not in text:
        example = f"{text}/24" if address.version == 4 else f"{text}/64"
        raise problem(f"{text!r} has no prefix length", f"write it as {example}")
    return address


def _virtual_address(value: Any) -> IPv4Interface | IPv6Interface:
    """A virtual address: an interface address that a host on the segment can be given."""
    address = _ifaddress(value)
    ip, net = address.ip, address.network
    if ip.is_multicast or ip.is_loopback or ip.is_unspecified:
        kind = "multicast" if ip.is_multicast else "loopback" if ip.is_loopback else "unspecified"
        raise problem(f"{ip} is a {kind} address", "a virtual address is a unicast host address")
    if isinstance(address, IPv4Interface) and net.prefixlen < 31:  # RFC 3021: /31 has neither
        if ip == net.network_address:
            raise problem(
                f"{ip} is the network address of {net}",
                f"use a host address such as {net.network_address + 1}/{net.prefixlen}",
            )
        if ip == net.broadcast_address:
            raise problem(
                f"{ip} is the broadcast address of {net}",
                f"use a host address such as {net.broadcast_address - 1}/{net.prefixlen}",
            )
    return address


def _carppeer(value: Any) -> IPv4Address | None:
    if value is None or isinstance(value, IPv4Address):  # None: ifconfig -carppeer
        return value
    text = string(value)
    try:
        address = ip_address(text)
    except ValueError:
        raise problem(f"{text!r} is not an IPv4 address", "e.g. 198.51.100.7") from None
    if not isinstance(address, IPv4Address):
        raise problem(
            f"{text} is IPv6; carppeer is IPv4 only",
            "IPv6 advertisements always go to ff02::12; remove carppeer or give an IPv4 peer",
        )
    if address == IPv4Address(0):
        return None  # 0 means the group (§9.1)
    # a multicast group is allowed (carp joins it, ip_carp.c carp_join_multicast); a broadcast
    # or loopback address never reaches one peer
    if address == IPv4Address("255.255.255.255") or address.is_loopback:
        raise problem(
            f"{text} is not a peer's address",
            "remove carppeer to advertise to 224.0.0.18, or give the peer's unicast address",
        )
    return address


def carpnodes_input(value: Any) -> Any:
    """ "1:0,2:100" or ["1:0", "2:100"] become the list-of-tables form; tables pass through."""
    if isinstance(value, str):
        entries = split_carpnodes(value)
        if isinstance(entries, str):
            raise problem(entries)
        return entries
    if isinstance(value, list):
        items = [_carpnode_item(item) for item in value]
        bad: list[tuple[Loc, str]] = [((n,), i) for n, i in enumerate(items) if isinstance(i, str)]
        if bad:
            raise problems(bad)
        return items
    return value


def _carpnode_item(item: Any) -> Any:
    """A "2:100" entry as a table; a message when it is not one (tables pass through)."""
    if not isinstance(item, str):
        return item
    entries = split_carpnodes(item)
    if isinstance(entries, str) or len(entries) != 1:
        return f'{item!r} is not vhid:advskew (e.g. "2:100")'
    return entries[0]


Vhid = Annotated[int, BeforeValidator(_ranged(1, 255))]
Advskew = Annotated[int, BeforeValidator(_ranged(0, 254))]
Advbase = Annotated[int, BeforeValidator(_ranged(0, 254))]
Whole = Annotated[int, BeforeValidator(_whole)]
Flag = Annotated[bool, BeforeValidator(_flag)]
IfName = Annotated[str, BeforeValidator(_ifname)]
GroupName = Annotated[str, BeforeValidator(_group)]
Mac = Annotated[str, BeforeValidator(_mac)]
IfAddress = Annotated[IPv4Interface | IPv6Interface, BeforeValidator(_ifaddress)]
VirtualAddress = Annotated[IPv4Interface | IPv6Interface, BeforeValidator(_virtual_address)]
Carppeer = Annotated[IPv4Address | None, BeforeValidator(_carppeer)]
AdminState = Annotated[Literal["up", "down"], choice("up", "down")]
BalancingLabel = Annotated[
    Literal["none", "arp", "ip", "ip-unicast", "ip-stealth"],
    choice("none", "arp", "ip", "ip-unicast", "ip-stealth", fold=True),  # ifconfig folds case
]
