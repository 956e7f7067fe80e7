"""Scalar types of the node file around the carp interfaces (switches, ports, hooks, metrics).

Each fails with its own message, rendered as `path: message (fix)` (carp/configerrors.py).
"""

import math
import re
import shlex
from ipaddress import ip_address
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator

from carp.configtypes import choice, problem, string

DEFAULT_METRICS = "127.0.0.1:9812"
SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes including the NUL
StateLabel = Literal["init", "backup", "master"]
STATES: tuple[StateLabel, ...] = ("init", "backup", "master")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


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
    text = string(value)
    if not _NAME.match(text):
        raise problem(f"{text!r} is not a valid network namespace name", "letters, digits, _.-")
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
Metrics = Annotated[str | None, BeforeValidator(_metrics)]
Argv = Annotated[list[str], BeforeValidator(_argv)]
States = Annotated[list[Annotated[StateLabel, choice(*STATES)]], BeforeValidator(_states)]
LogTarget = Annotated[Literal["stderr", "syslog"], choice("stderr", "syslog")]
SwitchMode = Annotated[Literal["learning", "hub"], choice("learning", "hub")]
