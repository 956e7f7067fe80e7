"""One ifconfig grammar, two folds: a config-file line and `vswitch ifconfig carp0 <same words>`.

Each row is an option line. The file side validates the base lines plus the row's line as a node
file's `[carp.carp0] ifconfig = [...]` does (expand_ifconfig, then CarpConfig, errors rendered
with their line and word); the runtime side applies the same words, split as a shell would, to the
running interface the base lines describe, through the entry points dispatch.py and the node use
(`parse_change`, then `apply_params` when the change has parameters; up/down as the node applies
them). Both must accept or refuse alike, with the same message text where they refuse (the file's
minus its path), and give the same carp interface. `state` is the one runtime-only option.
"""

import re
import shlex
from dataclasses import replace
from ipaddress import IPv4Address, ip_interface
from typing import Any

import pytest
from pydantic import ValidationError

from carp import configerrors
from carp.config import CarpConfig, Model, expand_ifconfig
from carp.constants import Balancing, State
from carp.ifconfig import IfconfigChange, apply_params, parse_change
from carp.params import CarpIfParams, CarpNodeParams

BASE = [
    "inet 192.0.2.10 255.255.255.0 192.0.2.255 vhid 1 carpdev lan0 pass s3cret advskew 100",
    "inet6 2001:db8::10 64",
    "group gateway",
]
BALANCED = ["192.0.2.20/24 carpdev lan0 carpnodes 1:0,2:100 balancing ip-unicast pass s3cret"]


class Section(Model):
    """The carp tables of a node file, as vswitch's NodeConfig holds them."""

    carp: dict[str, CarpConfig]


def from_file(lines: list[str]) -> CarpIfParams | list[str]:
    data, parsed, errors = expand_ifconfig({"carp": {"carp0": {"ifconfig": lines}}})
    try:
        section = Section.model_validate(data)
    except ValidationError as exc:
        errors += configerrors.rendered(Section, exc, parsed)
    return errors or section.carp["carp0"].params("carp0")


def at_runtime(running: CarpIfParams, words: list[str]) -> tuple[CarpIfParams, IfconfigChange]:
    change = parse_change(words)
    new = apply_params(running, change) if change.changes_params else running
    if change.admin_up is not None:  # the node's set_admin (bow-out), not a parameter
        new = replace(new, admin_up=change.admin_up)
    return new, change


def running_from(lines: list[str]) -> CarpIfParams:
    params = from_file(lines)
    assert isinstance(params, CarpIfParams), params
    return params


def nodes(*pairs: tuple[int, int]) -> tuple[CarpNodeParams, ...]:
    return tuple(CarpNodeParams(vhid, advskew) for vhid, advskew in pairs)


def addrs(*texts: str) -> tuple[Any, ...]:
    return tuple(ip_interface(text) for text in texts)


V4, V6 = "192.0.2.10/24", "2001:db8::10/64"

# (base, line, expected): the CarpIfParams fields the line changes, or the refusal's message text
# (as the runtime says it; the file prefixes carp.carp0.ifconfig[N])
ROWS: list[tuple[list[str], str, dict[str, Any] | str]] = [
    (BASE, "vhid 7", {"carpnodes": nodes((7, 100))}),  # setcarp_vhid keeps the leader's advskew
    (BASE, "vhid 0", "word 1 'vhid 0': 0 is out of range 1..255"),
    (BASE, "vhid 256 advbase 3", "word 1 'vhid 256': 256 is out of range 1..255"),
    (
        BASE,
        "carpnodes 2:100,1:0",
        {"carpnodes": nodes((1, 0), (2, 100)), "balancing": Balancing.IP},
    ),
    (
        BASE,
        "carpnodes 1:0,1:5",
        "word 1 'carpnodes 1:0,1:5': carpnodes[1].vhid: vhid 1 is already used by [0] "
        "(give each its own vhid)",
    ),
    (
        BASE,
        "carpnodes 1:0,2",
        "word 1 'carpnodes 1:0,2': entry 1 '2' is not vhid:advskew "
        '(write the list as "1:0,2:100")',
    ),
    (
        BASE,
        "carpnodes 1:0,2:255",
        "word 1 'carpnodes 1:0,2:255': carpnodes[1].advskew: 255 is out of range 0..254",
    ),
    (BASE, "advbase 0", {"advbase": 0}),
    (BASE, "advbase 300", "word 1 'advbase 300': 300 is out of range 0..254"),
    (BASE, "advskew 20", {"carpnodes": nodes((1, 20))}),
    (BASE, "advskew x", "word 1 'advskew x': 'x' is not a whole number"),
    (BASE, "pass 'two words'", {"passphrase": b"two words"}),
    (BASE, "balancing none", {}),
    (BASE, "balancing ARP", {"balancing": Balancing.ARP}),  # ifconfig folds case
    (BASE, "balancing ip", {"balancing": Balancing.IP}),
    (BASE, "balancing IP-Unicast", {"balancing": Balancing.IP_UNICAST}),
    (BASE, "balancing ip-stealth", {"balancing": Balancing.IP_STEALTH}),
    (
        BASE,
        "balancing carp",
        "word 1 'balancing carp': 'carp' is not one of none, arp, ip, ip-unicast, ip-stealth",
    ),
    (
        BASE,
        "carpnodes 1:0,2:100 balancing none",
        {"carpnodes": nodes((1, 0), (2, 100))},
    ),
    (BASE, "carppeer 198.51.100.7", {"carppeer": IPv4Address("198.51.100.7")}),
    (BASE, "carppeer 0.0.0.0", {}),  # 0 means the group (§9.1)
    (
        BASE,
        "carppeer 2001:db8::1",
        "word 1 'carppeer 2001:db8::1': 2001:db8::1 is IPv6; carppeer is IPv4 only "
        "(IPv6 advertisements always go to ff02::12; remove carppeer or give an IPv4 peer)",
    ),
    (BASE, "carppeer 198.51.100.7 -carppeer", {}),
    (BASE, "carpdev lan1", {"carpdev": "lan1"}),
    (
        BASE,
        "carpdev 'lan 1'",
        "word 1 'carpdev lan 1': 'lan 1' is not a valid interface name "
        "(1 to 15 letters, digits, '_', '.' or '-')",
    ),
    (BASE, "lladdr 02:00:5E:00:01:0A", {"lladdr": bytes.fromhex("02005e00010a")}),
    (
        BASE,
        "lladdr 01:00:5e:00:00:12",
        "word 1 'lladdr 01:00:5e:00:00:12': '01:00:5e:00:00:12' is not a unicast MAC address "
        "(e.g. 02:00:5e:10:00:01)",
    ),
    (BASE, "group uplink group uplink", {"groups": ("carp", "gateway", "uplink")}),
    (
        BASE,
        "group lab1",
        "word 1 'group lab1': group names may not end in a digit ('lab1') (e.g. 'uplink')",
    ),
    (BASE, "-group gateway", {"groups": ("carp",)}),
    (BASE, "-group carp", "word 1 '-group carp': every carp interface stays in group carp"),
    (BASE, "-group uplink", "word 1 '-group uplink': not a member of group 'uplink'"),
    (BASE, "down", {"admin_up": False}),
    (BASE, "down up", {}),
    (BASE, "192.0.2.20/24", {"addresses": addrs("192.0.2.20/24", V6)}),  # replaces the first
    (BASE, "192.0.2.20/24 alias", {"addresses": addrs(V4, V6, "192.0.2.20/24")}),
    (BASE, "alias 192.0.2.10/25", {"addresses": addrs("192.0.2.10/25", V6)}),  # updated in place
    (BASE, "inet 192.0.2.20 255.255.255.128 NONE", {"addresses": addrs("192.0.2.20/25", V6)}),
    (
        BASE,
        "inet 192.0.2.20 255.255.255.0 192.0.2.255 alias",
        {"addresses": addrs(V4, V6, "192.0.2.20/24")},
    ),
    (BASE, "inet 192.0.2.20 0xffff0000", {"addresses": addrs("192.0.2.20/16", V6)}),
    (
        BASE,
        "inet 192.0.2.20 0xff00ff00",
        "word 2 '192.0.2.20 0xff00ff00': '192.0.2.20/255.0.255.0' is not an IPv4 or IPv6 "
        "address with a prefix (write it as 192.0.2.10/24 or 2001:db8::10/64)",
    ),
    (BASE, "192.0.2.20 netmask 0xffffff00", {"addresses": addrs("192.0.2.20/24", V6)}),
    (BASE, "192.0.2.20/24 broadcast 192.0.2.255", {"addresses": addrs("192.0.2.20/24", V6)}),
    (
        BASE,
        "192.0.2.20",
        "word 1 '192.0.2.20': '192.0.2.20' has no prefix length (write it as 192.0.2.20/24)",
    ),
    (BASE, "inet6 2001:db8::11 prefixlen 48", {"addresses": addrs(V4, V6, "2001:db8::11/48")}),
    (BASE, "inet6 2001:db8::11 56", {"addresses": addrs(V4, V6, "2001:db8::11/56")}),
    (BASE, "inet6 2001:db8::11", {"addresses": addrs(V4, V6, "2001:db8::11/64")}),
    (BASE, "2001:db8::10 -alias", {"addresses": addrs(V4)}),
    (BASE, "inet 192.0.2.10 delete", {"addresses": addrs(V6)}),
    (
        BASE,
        "192.0.2.99/24 delete",
        "word 1 '192.0.2.99/24': not an address of this interface",
    ),
    (
        BASE,
        "inet 2001:db8::1",
        "word 2 '2001:db8::1': '2001:db8::1' is not an inet address (use inet6)",
    ),
    (BASE, "alias", "word 1 'alias': alias needs an address on the same line"),
    (BASE, "vhd 2", "word 1 'vhd': unknown option or address 'vhd' (did you mean vhid?)"),
    (BASE, "advskew", "word 1 'advskew': advskew needs a value (advskew VALUE)"),
    (
        BASE,
        "192.0.2.20/24 vhid 2 advskew 5 balancing arp",
        {
            "addresses": addrs("192.0.2.20/24", V6),
            "carpnodes": nodes((2, 5)),
            "balancing": Balancing.ARP,
        },
    ),
    (
        BASE,
        "advbase 300 -group carp",  # every problem at once: the fold's, then the model's
        "word 3 '-group carp': every carp interface stays in group carp; "
        "word 1 'advbase 300': 300 is out of range 0..254",
    ),
    # several vhids: the leader is the lowest; a new list re-applies the §6.1 default
    (BALANCED, "vhid 3", {"carpnodes": nodes((3, 0)), "balancing": Balancing.NONE}),
    (BALANCED, "advskew 50", {"carpnodes": nodes((1, 50), (2, 100))}),
    (BALANCED, "carpnodes 2:5,1:7", {"carpnodes": nodes((1, 7), (2, 5))}),  # same vhid set
    (BALANCED, "carpnodes 1:0,2:0,3:0", {"carpnodes": nodes((1, 0), (2, 0), (3, 0))}),
    (
        BALANCED,
        "carpnodes 4:0,3:10 advskew 9",
        {"carpnodes": nodes((3, 9), (4, 0))},
    ),
    (
        BALANCED,
        "192.0.2.20/24 delete",
        "addresses: a carp interface needs at least one address "
        '(e.g. addresses = ["192.0.2.10/24"])',
    ),
]

_FILE_PREFIX = re.compile(r"^carp\.carp0\.ifconfig(\[(?P<line>\d+)\])?: ")


def file_message(errors: list[str], line: int) -> str:
    """The file's errors without their path; each must be about the row's line or unlocated."""
    texts = []
    for error in errors:
        match = _FILE_PREFIX.match(error)
        assert match, error
        assert match.group("line") in (None, str(line)), error
        texts.append(error[match.end() :])
    return "; ".join(texts)


@pytest.mark.parametrize(("base", "line", "expected"), ROWS)
def test_file_and_runtime_agree(base: list[str], line: str, expected: dict[str, Any] | str) -> None:
    running = running_from(base)
    in_file = from_file([*base, line])
    if isinstance(expected, str):
        assert isinstance(in_file, list), in_file
        assert file_message(in_file, len(base)) == expected
        with pytest.raises(ValueError) as refused:
            at_runtime(running, shlex.split(line))
        assert str(refused.value) == expected
    else:
        assert isinstance(in_file, CarpIfParams), in_file
        assert in_file == replace(running, **expected)
        assert at_runtime(running, shlex.split(line))[0] == in_file


def test_the_table_covers_every_keyword() -> None:
    words = {word for _, line, _ in ROWS for word in shlex.split(line)}
    keywords = {"vhid", "carpnodes", "advbase", "advskew", "pass", "balancing", "carppeer"}
    keywords |= {"-carppeer", "carpdev", "lladdr", "group", "-group", "up", "down", "inet"}
    keywords |= {"inet6", "netmask", "prefixlen", "broadcast", "alias", "-alias", "delete"}
    assert keywords <= words
    assert len(ROWS) >= 30


@pytest.mark.parametrize(
    ("line", "state", "error"),
    [
        ("state master", State.MASTER, None),
        ("state Backup down", State.BACKUP, None),
        ("state init", State.INIT, None),
        (
            "state sleepy",
            None,
            "word 1 'state sleepy': 'sleepy' is not one of init, backup, master",
        ),
    ],
)
def test_state_is_runtime_only(line: str, state: State | None, error: str | None) -> None:
    running = running_from(BASE)
    in_file = from_file([*BASE, line])
    assert isinstance(in_file, list)
    assert file_message(in_file, len(BASE)) == (
        f"word 1 '{' '.join(line.split()[:2])}': state is a runtime command, not configuration "
        "(use `vswitch ifconfig CARPIF state master|backup` on the running node)"
    )
    if error is not None:
        with pytest.raises(ValueError, match=re.escape(error)):
            parse_change(line.split())
        return
    new, change = at_runtime(running, line.split())
    assert change.state is state and not change.changes_params
    assert new == replace(running, admin_up="down" not in line)
