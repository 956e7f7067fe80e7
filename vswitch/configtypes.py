"""Scalar types of the node file around the carp interfaces (switches, ports, hooks, metrics).

Each fails with its own message, rendered as `path: message (fix)` (carp/configerrors.py).
"""

import math
import re
import shlex
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, PlainSerializer, PlainValidator, WithJsonSchema

from carp.configtypes import choice, problem, problems, string
from vswitch.impair import ImpairError, PortImpairment, parse_table

DEFAULT_METRICS = "127.0.0.1:9812"
SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes including the NUL
StateLabel = Literal["init", "backup", "master"]
STATES: tuple[StateLabel, ...] = ("init", "backup", "master")
# what a hook may run on: a new state, or a second master heard (the `conflict` event)
HookOn = Literal["init", "backup", "master", "conflict"]
HOOK_ON: tuple[HookOn, ...] = (*STATES, "conflict")


def hook_states() -> list[HookOn]:
    """A hook's default `on`: every new state (conflicts only when asked for)."""
    return [*STATES]


_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
_ACCOUNT = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$")  # useradd's NAME_REGEX, loosely
PID_MAX = 1 << 22  # the kernel's PID_MAX_LIMIT on 64-bit
PATH_MAX = 4095
VNI_MAX = (1 << 24) - 1
NETNS_FIX = (
    "a name under /run/netns (letters, digits, _.-), an absolute path to a namespace file "
    "such as /proc/PID/ns/net or /var/run/docker/netns/ID, or pid:PID"
)


def _seconds(value: Any) -> float:
    # `not value > 0` also refuses nan; inf would never expire
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise problem(f"{value!r} is not a positive number of seconds", "e.g. 10 or 2.5")
    return float(value)


def _node_name(value: Any) -> str:
    text = string(value)
    if not _NAME.match(text):
        raise problem(
            f"{text!r} is not a valid node name", "up to 64 letters, digits, '_', '.' or '-'"
        )
    return text


def _netns(value: Any) -> str:
    """A named namespace (ip netns), a namespace file (a container's), or pid:PID (the
    namespace of that process, e.g. `unshare -n` or a container's init)."""
    text = string(value)
    if text.startswith("pid:"):
        pid = text[4:]
        if not (pid.isascii() and pid.isdigit() and 0 < int(pid) <= PID_MAX):
            raise problem(f"{text!r} does not name a process", "write pid:PID, e.g. pid:4242")
        return f"pid:{int(pid)}"
    if text.startswith("/"):
        if "\0" in text or len(text.encode()) > PATH_MAX or "/../" in f"{text}/":
            raise problem(f"{text!r} is not a usable namespace path", NETNS_FIX)
        return text
    if not _NAME.match(text):
        raise problem(f"{text!r} is not a valid network namespace name", NETNS_FIX)
    return text


def _socket_path(value: Any) -> str:
    text = string(value)
    if not text or len(text.encode()) > SUN_PATH_MAX or "\0" in text:
        raise problem(
            f"{text!r} is not a usable socket path", f"1 to {SUN_PATH_MAX} bytes (sun_path)"
        )
    if not text.startswith("/"):
        # the node and its clients may run in different directories
        raise problem(
            f"{text!r} is a relative path", f"give an absolute path, e.g. /run/vswitch/{text}"
        )
    return text


def _account(value: Any) -> str:
    """A user or group: a name, or a number (uid/gid); resolved when the socket is made."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 32:
        return str(value)
    text = string(value)
    if (text.isascii() and text.isdigit() and int(text) < 1 << 32) or _ACCOUNT.match(text):
        return text
    raise problem(f"{text!r} is not a user or group", 'a name such as "qemu" or a number')


def _file_mode(value: Any) -> int:
    """Permission bits written as an octal string ("0660"); a TOML integer is refused since
    0660 and 660 would differ silently."""
    if isinstance(value, str) and re.fullmatch(r"0?[0-7]{3}", value):
        return int(value, 8)
    if isinstance(value, int) and not isinstance(value, bool):
        raise problem(f"{value!r} is a number", 'write the mode as an octal string, e.g. "0660"')
    raise problem(f"{value!r} is not a file mode", 'an octal string from "0000" to "0777"')


def _vni(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= VNI_MAX:
        raise problem(f"{value!r} is not a VXLAN network identifier", f"0 to {VNI_MAX}")
    return value


def _udp_port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 65535:
        raise problem(f"{value!r} is not a UDP port", "1 to 65535; VXLAN's is 4789")
    return value


def _unicast(value: Any) -> IPv4Address | IPv6Address:
    """A unicast host address (a VXLAN endpoint)."""
    if isinstance(value, IPv4Address | IPv6Address):
        return value
    text = string(value)
    try:
        address = ip_address(text)
    except ValueError:
        raise problem(
            f"{text!r} is not an IP address", "e.g. 198.51.100.1 or 2001:db8::1"
        ) from None
    if address.is_multicast or address.is_unspecified or address.is_loopback:
        kind = "multicast" if address.is_multicast else "loopback" if address.is_loopback else "any"
        raise problem(
            f"{text} is a {kind} address",
            "give a unicast address of a host; multicast groups are not used: list every peer",
        )
    return address


def _dir_path(value: Any) -> str:
    """A directory for sockets (vde): DIR/ctl and DIR/port.N must fit sun_path."""
    text = _socket_path(value)
    if not text.rstrip("/"):
        raise problem(f"{text!r} is the root directory", "give a directory of its own")
    longest = len(text.rstrip("/").encode()) + len("/port.99999")
    if longest > SUN_PATH_MAX:
        raise problem(
            f"{text!r} is too long for the sockets inside it",
            f"at most {SUN_PATH_MAX - len('/port.99999')} bytes",
        )
    return text.rstrip("/")


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


def _argv(value: Any) -> Any:
    """A string is split like a shell would (no shell runs); a list is the argv."""
    if isinstance(value, str):
        try:
            value = shlex.split(value)
        except ValueError as exc:
            raise problem(f"cannot split {value!r}: {exc}", "or give a list of arguments") from None
    if isinstance(value, list) and (not value or value[0] == ""):
        raise problem("an empty command", 'e.g. command = ["/usr/local/bin/notify", "--all"]')
    if isinstance(value, list):
        bad = [n for n, arg in enumerate(value) if isinstance(arg, str) and "\0" in arg]
        if bad:  # execve() cannot pass it: the argument would end there
            raise problem(f"argument {bad[0]} contains a NUL byte", "remove it from the command")
    return value


def _states(value: Any) -> Any:
    if value == "any":
        return list(STATES)
    return [value] if isinstance(value, str) else value


Seconds = Annotated[float, BeforeValidator(_seconds)]
NodeName = Annotated[str, BeforeValidator(_node_name)]
Netns = Annotated[str, BeforeValidator(_netns)]
SocketPath = Annotated[str, BeforeValidator(_socket_path)]
SocketDir = Annotated[str, BeforeValidator(_dir_path)]
Account = Annotated[str, BeforeValidator(_account, json_schema_input_type=str | int)]
FileMode = Annotated[
    int,
    BeforeValidator(_file_mode, json_schema_input_type=str),  # written "0660"
    PlainSerializer(lambda mode: f"{mode:04o}", return_type=str),
]
Vni = Annotated[int, BeforeValidator(_vni)]
UdpPort = Annotated[int, BeforeValidator(_udp_port)]
Unicast = Annotated[IPv4Address | IPv6Address, BeforeValidator(_unicast)]
Metrics = Annotated[str | None, BeforeValidator(_metrics)]
Argv = Annotated[list[str], BeforeValidator(_argv)]
States = Annotated[list[Annotated[HookOn, choice(*HOOK_ON)]], BeforeValidator(_states)]
LogTarget = Annotated[Literal["stderr", "syslog"], choice("stderr", "syslog")]
# learning-arp also learns ARP sender hardware addresses (the L3 switches of carp(4)'s caveat)
SwitchMode = Annotated[
    Literal["learning", "hub", "learning-arp"], choice("learning", "hub", "learning-arp")
]


def _impair_schema() -> dict[str, Any]:
    """What `impair` takes, for editors: one table, or one per direction (`in`, `out`)."""
    text_or_number = [{"type": "string"}, {"type": "number"}]
    options: dict[str, Any] = {
        "delay": {"anyOf": text_or_number, "description": 'e.g. "50ms"; a number is seconds'},
        "jitter": {"anyOf": text_or_number, "description": 'e.g. "5ms"; a number is seconds'},
        "loss": {"anyOf": text_or_number, "description": 'e.g. "30%"; a number is percent'},
        "rate": {
            "anyOf": [{"type": "string"}, {"type": "integer"}],
            "description": 'e.g. "10mbit"; a number is bits/s',
        },
        "partition": {
            "anyOf": [{"type": "boolean"}, {"type": "string", "enum": ["carp"]}],
            "description": 'true drops every frame, "carp" only IP protocol 112',
        },
    }
    one = {"type": "object", "properties": options, "additionalProperties": False}
    return {
        "description": "impairment of the port's traffic, both directions or per direction",
        "type": "object",
        "properties": {**options, "in": one, "out": one},
        "additionalProperties": False,
    }


def _impair(value: Any) -> PortImpairment | None:
    """A port's `impair` table, checked by the same rules as `vswitch impair`; an impairment
    of nothing is no impairment (None), so `impair = {}` normalises away."""
    if value is None or isinstance(value, PortImpairment):
        return None if value is None or value == PortImpairment() else value
    try:
        parsed = parse_table(value)
    except ImpairError as exc:
        raise problems(list(exc.errors)) from None
    return None if parsed == PortImpairment() else parsed


def _impair_table(value: PortImpairment | None) -> dict[str, Any] | None:
    return None if value is None else value.table()


Impair = Annotated[
    PortImpairment | None,
    PlainValidator(_impair),
    WithJsonSchema(_impair_schema()),
    PlainSerializer(_impair_table, return_type=dict[str, Any] | None),
]
