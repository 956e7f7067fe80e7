"""Scalar types of the node configuration (design.md §4), each with the message it fails with.

Validators raise `problem(message, fix)`, rendered as `path: message (fix)`; a validator finding
several faults raises `problems([(relative path, message), ...])`. Numbers may come as strings
because ifconfig words are strings (carp/ifconfig.py); TOML gives them typed.
"""

import re
import shlex
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address, IPv4Interface, IPv6Interface, ip_address, ip_interface
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

from carp.ifconfig import Loc, split_carpnodes

DEFAULT_METRICS = "127.0.0.1:9812"
IFNAMSIZ = 16  # Linux and OpenBSD: names are at most 15 bytes plus the NUL
SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes including the NUL
StateLabel = Literal["init", "backup", "master"]
STATES: tuple[StateLabel, ...] = ("init", "backup", "master")

_IFNAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
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


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise problem(f"{value!r} is not a positive number of seconds")
    return float(value)


def _flag(value: Any) -> bool:
    """true/false, or 1/0 as the sysctl would be written."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise problem(f"{value!r} is not true or false")


def _choice(*options: str, fold: bool = False) -> BeforeValidator:
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


def _node_name(value: Any) -> str:
    text = string(value)
    if not _NAME.match(text):
        raise problem(
            f"{text!r} is not a valid node name", "up to 64 letters, digits, '_', '.' or '-'"
        )
    return text


def _netns(value: Any) -> str:
    text = string(value)
    if not _NAME.match(text):
        raise problem(f"{text!r} is not a valid network namespace name", "letters, digits, _.-")
    return text


def _socket_path(value: Any) -> str:
    text = string(value)
    if not text or len(text.encode()) > SUN_PATH_MAX:
        raise problem(
            f"{text!r} is not a usable socket path", f"1 to {SUN_PATH_MAX} bytes (sun_path)"
        )
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
    return None if address == IPv4Address(0) else address  # 0 means the group (§9.1)


def _metrics(value: Any) -> str | None:
    """IP:port to listen on for Prometheus; false or "" disables the endpoint."""
    if value is False or value == "":
        return None
    text = string(value)
    match = re.fullmatch(r"(?:\[([0-9a-fA-F:.]+)\]|([0-9.]+)):(\d{1,5})", text)
    try:
        valid = match is not None and int(match.group(3)) <= 65535
        ip_address((match.group(1) or match.group(2)) if match else "")
    except ValueError:
        valid = False
    if not valid:
        raise problem(
            f"{text!r} is not an IP:port to listen on",
            f'e.g. "{DEFAULT_METRICS}" or "[::1]:9812"; false disables metrics',
        )
    return text


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


def _argv(value: Any) -> Any:
    """A string is split like a shell would (no shell runs); a list is the argv."""
    if isinstance(value, str):
        try:
            value = shlex.split(value)
        except ValueError as exc:
            raise problem(f"cannot split {value!r}: {exc}", "or give a list of arguments") from None
    if isinstance(value, list) and (not value or value[0] == ""):
        raise problem("an empty command", 'e.g. command = ["/usr/local/bin/notify", "--all"]')
    return value


def _states(value: Any) -> Any:
    if value == "any":
        return list(STATES)
    return [value] if isinstance(value, str) else value


Vhid = Annotated[int, BeforeValidator(_ranged(1, 255))]
Advskew = Annotated[int, BeforeValidator(_ranged(0, 254))]
Advbase = Annotated[int, BeforeValidator(_ranged(0, 254))]
Whole = Annotated[int, BeforeValidator(_whole)]
Seconds = Annotated[float, BeforeValidator(_seconds)]
Flag = Annotated[bool, BeforeValidator(_flag)]
IfName = Annotated[str, BeforeValidator(_ifname)]
GroupName = Annotated[str, BeforeValidator(_group)]
NodeName = Annotated[str, BeforeValidator(_node_name)]
Netns = Annotated[str, BeforeValidator(_netns)]
SocketPath = Annotated[str, BeforeValidator(_socket_path)]
Mac = Annotated[str, BeforeValidator(_mac)]
IfAddress = Annotated[IPv4Interface | IPv6Interface, BeforeValidator(_ifaddress)]
Carppeer = Annotated[IPv4Address | None, BeforeValidator(_carppeer)]
Metrics = Annotated[str | None, BeforeValidator(_metrics)]
Argv = Annotated[list[str], BeforeValidator(_argv)]
States = Annotated[list[Annotated[StateLabel, _choice(*STATES)]], BeforeValidator(_states)]
LogTarget = Annotated[Literal["stderr", "syslog"], _choice("stderr", "syslog")]
SwitchMode = Annotated[Literal["learning", "hub"], _choice("learning", "hub")]
PortType = Annotated[Literal["tap", "raw"], _choice("tap", "raw")]
AdminState = Annotated[Literal["up", "down"], _choice("up", "down")]
BalancingLabel = Annotated[
    Literal["none", "arp", "ip", "ip-unicast", "ip-stealth"],
    _choice("none", "arp", "ip", "ip-unicast", "ip-stealth", fold=True),  # ifconfig folds case
]
