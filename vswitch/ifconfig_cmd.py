"""`vswitch ifconfig`: ifconfig(8) carp options parsed into a change, and carp(4)-style status.

Parsing is pure and raises ValueError with a message naming the word at fault. `apply_params`
folds a change into a `CarpIfParams` with the kernel's rules for vhid lists (section 6.1); state,
up/down and nothing else are left for the node, which drives them through `CarpHost`.
"""

from dataclasses import dataclass, replace
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv6Interface,
    ip_address,
    ip_interface,
)

from carp.constants import CARP_MAXNODES, Balancing, State
from carp.params import CarpIfParams, CarpNodeParams
from vswitch.status import CarpIfStatus, NodeStatus, interface_status

Address = IPv4Interface | IPv6Interface

# section 9.1: ranges ifconfig accepts
VHID_RANGE = range(1, 256)
ADVBASE_RANGE = range(0, 255)
ADVSKEW_RANGE = range(0, 255)
DEMOTE_RANGE = range(0, 129)  # ifconfig -g carpdemote n (section 5.2)
INET6_DEFAULT_PREFIXLEN = 64  # ifconfig(8): prefixlen defaults to 64

_VALUE_OPTIONS = frozenset(
    {"vhid", "carpnodes", "advbase", "advskew", "pass", "balancing", "carppeer", "state"}
    | {"carpdev", "group", "-group", "netmask", "prefixlen", "broadcast"}
)


@dataclass(frozen=True, slots=True)
class AddressChange:
    address: Address
    mode: str  # "set" (no alias: replaces the first IPv4 address), "alias", "delete"


@dataclass(frozen=True, slots=True)
class IfconfigChange:
    """What one `vswitch ifconfig carpN ...` asks for. None / empty: left as it is."""

    address: AddressChange | None = None
    carpnodes: tuple[CarpNodeParams, ...] | None = None
    keep_leader_advskew: bool = False  # `vhid n` keeps the leader's advskew (setcarp_vhid)
    advbase: int | None = None
    advskew: int | None = None
    passphrase: bytes | None = None
    balancing: Balancing | None = None
    carppeer: IPv4Address | None = None
    clear_carppeer: bool = False
    carpdev: str | None = None
    groups_add: tuple[str, ...] = ()
    groups_remove: tuple[str, ...] = ()
    state: State | None = None
    admin_up: bool | None = None  # `up` / `down` (bow-out, section 4.7)

    @property
    def changes_params(self) -> bool:
        """True if anything besides `state` and `up`/`down` is asked for."""
        return replace(self, state=None, admin_up=None) != IfconfigChange()


def _int(word: str, value: str, allowed: range) -> int:
    try:
        number = int(value, 0)
    except ValueError:
        raise ValueError(f"{word} {value}: not a number") from None
    if number not in allowed:
        raise ValueError(f"{word} {value}: out of range {allowed.start}..{allowed.stop - 1}")
    return number


def parse_carpnodes(text: str) -> tuple[CarpNodeParams, ...]:
    """`vhid:advskew,...` (section 6.1), sorted by vhid as the kernel keeps them."""
    nodes: dict[int, CarpNodeParams] = {}
    for item in text.split(","):
        vhid_text, sep, skew_text = item.partition(":")
        if not sep:
            raise ValueError(f"carpnodes {text}: {item!r} is not vhid:advskew")
        vhid = _int("carpnodes vhid", vhid_text, VHID_RANGE)
        if vhid in nodes:
            raise ValueError(f"carpnodes {text}: vhid {vhid} appears twice")
        nodes[vhid] = CarpNodeParams(vhid, _int("carpnodes advskew", skew_text, ADVSKEW_RANGE))
    if len(nodes) > CARP_MAXNODES:
        raise ValueError(f"carpnodes {text}: too many carp nodes (at most {CARP_MAXNODES})")
    return tuple(nodes[v] for v in sorted(nodes))


def _netmask_bits(word: str) -> int:
    """A netmask as dotted quad or 0xffffff00, as a prefix length."""
    try:
        value = int(word, 16) if word.lower().startswith("0x") else int(IPv4Address(word))
    except ValueError:
        raise ValueError(f"netmask {word}: not a netmask") from None
    bits = bin(value).count("1")
    if value != (0xFFFFFFFF << (32 - bits)) & 0xFFFFFFFF:
        raise ValueError(f"netmask {word}: not a contiguous netmask")
    return bits


def _looks_like_netmask(word: str) -> bool:
    return word.lower().startswith("0x") or word.count(".") == 3


def _parse_address(family: str | None, words: list[str], i: int) -> tuple[Address, int]:
    """An address at words[i] with an optional netmask/prefixlen/broadcast after it."""
    text = words[i]
    i += 1
    prefix: int | None = None
    if "/" not in text:
        if family != "inet6" and i < len(words) and words[i] == "netmask":
            prefix = _netmask_bits(_value(words, i))
            i += 2
        elif family != "inet6" and i < len(words) and _looks_like_netmask(words[i]):
            prefix = _netmask_bits(words[i])
            i += 1
            # hostname.if style: a positional broadcast (or NONE) may follow; it is derived
            if i < len(words) and (words[i] == "NONE" or _is_plain_ipv4(words[i])):
                i += 1
        elif family == "inet6" and i < len(words) and words[i] == "prefixlen":
            prefix = _int("prefixlen", _value(words, i), range(0, 129))
            i += 2
        elif family == "inet6" and i < len(words) and words[i].isdigit():
            prefix = _int("prefixlen", words[i], range(0, 129))
            i += 1
    try:
        host = ip_address(text.partition("/")[0])
    except ValueError:
        raise ValueError(f"{text}: not an IPv4 or IPv6 address") from None
    if (family == "inet" and host.version != 4) or (family == "inet6" and host.version != 6):
        raise ValueError(f"{family} {text}: wrong address family")
    if "/" not in text and prefix is None:
        if host.version == 4:
            raise ValueError(f"{text}: give a prefix length ({text}/24) or a netmask")
        prefix = INET6_DEFAULT_PREFIXLEN
    try:
        address = ip_interface(text if prefix is None else f"{text}/{prefix}")
    except ValueError as exc:
        raise ValueError(f"{text}: {exc}") from None
    if host.version == 4 and i < len(words) and words[i] == "broadcast":
        _value(words, i)  # derived from the prefix, as the kernel would
        i += 2
    return address, i


def _is_plain_ipv4(word: str) -> bool:
    try:
        IPv4Address(word)
    except ValueError:
        return False
    return True


def _value(words: list[str], i: int) -> str:
    if i + 1 >= len(words):
        raise ValueError(f"{words[i]}: missing value")
    return words[i + 1]


def parse_ifconfig(words: list[str]) -> IfconfigChange:
    """Parse the options after the interface name; ValueError names the offending word."""
    change = IfconfigChange()
    address: Address | None = None
    mode = "set"
    i = 0
    while i < len(words):
        word = words[i]
        if word in ("inet", "inet6") or _is_address(word):
            family = word if word in ("inet", "inet6") else None
            if family is not None:
                if i + 1 >= len(words):
                    raise ValueError(f"{word}: missing address")
                i += 1
            if address is not None:
                raise ValueError(f"{words[i]}: one address per command, as with ifconfig")
            address, i = _parse_address(family, words, i)
            continue
        if word == "alias":
            mode = "alias"
        elif word in ("-alias", "delete"):
            mode = "delete"
        elif word in ("up", "down"):
            change = replace(change, admin_up=word == "up")
        elif word == "-carppeer":
            change = replace(change, carppeer=None, clear_carppeer=True)
        elif word in _VALUE_OPTIONS:
            change = _option(change, word, _value(words, i))
            i += 1
        else:
            raise ValueError(f"{word}: unknown option")
        i += 1
    if address is not None:
        change = replace(change, address=AddressChange(address, mode))
    elif mode != "set":
        raise ValueError("alias/-alias: no address given")
    return change


def _is_address(word: str) -> bool:
    try:
        ip_address(word.partition("/")[0])
    except ValueError:
        return False
    return True


def _option(change: IfconfigChange, word: str, value: str) -> IfconfigChange:
    if word == "vhid":
        node = CarpNodeParams(_int(word, value, VHID_RANGE))
        return replace(change, carpnodes=(node,), keep_leader_advskew=True)
    if word == "carpnodes":
        return replace(change, carpnodes=parse_carpnodes(value), keep_leader_advskew=False)
    if word == "advbase":
        return replace(change, advbase=_int(word, value, ADVBASE_RANGE))
    if word == "advskew":
        return replace(change, advskew=_int(word, value, ADVSKEW_RANGE))
    if word == "pass":
        return replace(change, passphrase=value.encode())
    if word == "balancing":
        try:
            return replace(change, balancing=Balancing.parse(value))
        except KeyError:
            modes = ", ".join(b.label for b in Balancing)
            raise ValueError(f"balancing {value}: unknown mode (one of {modes})") from None
    if word == "carppeer":
        try:
            peer = IPv4Address(value)
        except ValueError:
            raise ValueError(f"carppeer {value}: not an IPv4 address") from None
        return replace(change, carppeer=peer, clear_carppeer=False)
    if word == "state":
        try:
            return replace(change, state=State[value.upper()])
        except KeyError:
            raise ValueError(f"state {value}: use init, backup or master") from None
    if word == "carpdev":
        return replace(change, carpdev=value)
    if word == "group":
        return replace(change, groups_add=(*change.groups_add, value))
    if word == "-group":
        return replace(change, groups_remove=(*change.groups_remove, value))
    raise ValueError(f"{word}: must follow an address")  # netmask, prefixlen, broadcast


def parse_demote(word: str, count: str | None) -> int:
    """`carpdemote [n]` / `-carpdemote [n]` as a signed adjustment (n 0..128, default 1)."""
    if word not in ("carpdemote", "-carpdemote"):
        raise ValueError(f"{word}: expected carpdemote or -carpdemote")
    n = 1 if count is None else _int(word, count, DEMOTE_RANGE)
    return n if word == "carpdemote" else -n


def apply_params(params: CarpIfParams, change: IfconfigChange) -> CarpIfParams:
    """The interface parameters after `change` (everything but state and up/down)."""
    new = params
    if change.carpnodes is not None:
        nodes = change.carpnodes
        if change.keep_leader_advskew and params.carpnodes:
            nodes = (replace(nodes[0], advskew=params.carpnodes[0].advskew),)
        new = replace(new, carpnodes=nodes)
        if nodes != params.carpnodes:
            new = replace(new, balancing=_default_balancing(len(nodes), params.balancing))
    if change.advskew is not None:
        if not new.carpnodes:
            raise ValueError("advskew: set a vhid first")
        leader = replace(new.carpnodes[0], advskew=change.advskew)
        new = replace(new, carpnodes=(leader, *new.carpnodes[1:]))
    if change.advbase is not None:
        new = replace(new, advbase=change.advbase)
    if change.passphrase is not None:
        new = replace(new, passphrase=change.passphrase)
    if change.balancing is not None:
        new = replace(new, balancing=change.balancing)
    if change.carppeer is not None or change.clear_carppeer:
        new = replace(new, carppeer=change.carppeer)
    if change.carpdev is not None:
        new = replace(new, carpdev=change.carpdev)
    groups = [g for g in new.groups if g not in change.groups_remove]
    groups += [g for g in change.groups_add if g not in groups]
    new = replace(new, groups=tuple(groups))
    if change.address is not None:
        new = replace(new, addresses=_apply_address(new, change.address))
    return new


def _default_balancing(count: int, current: Balancing) -> Balancing:
    # section 6.1, carp_vhids_ioctl: one vhid forces none; several turn none into ip
    if count == 1:
        return Balancing.NONE
    return Balancing.IP if current == Balancing.NONE else current


def _apply_address(params: CarpIfParams, op: AddressChange) -> tuple[Address, ...]:
    addresses = list(params.addresses)
    same = [a for a in addresses if a.ip == op.address.ip]
    if op.mode == "delete":
        if not same:
            raise ValueError(f"{op.address.ip}: not an address of {params.name}")
        return tuple(a for a in addresses if a.ip != op.address.ip)
    if same:  # SIOCAIFADDR on an existing address updates its prefix
        return tuple(op.address if a.ip == op.address.ip else a for a in addresses)
    if op.mode == "set" and op.address.version == 4:
        for index, current in enumerate(addresses):
            if current.version == 4:  # without alias, inet replaces the first address
                addresses[index] = op.address
                return tuple(addresses)
    return (*addresses, op.address)


# ---- carp(4)-style status (section 9.1, ifconfig carp_status) ----

# if_flags of a carp interface (IFF_BROADCAST|IFF_SIMPLEX|IFF_MULTICAST, section 4.11)
_FLAGS = (
    ("UP", 0x1),
    ("BROADCAST", 0x2),
    ("RUNNING", 0x40),
    ("SIMPLEX", 0x800),
    ("MULTICAST", 0x8000),
)


def render_interface(carpif: CarpIfStatus) -> str:
    off = {"UP": not carpif["admin_up"], "RUNNING": not carpif["running"]}
    flags = [(n, v) for n, v in _FLAGS if not off.get(n, False)]
    value = sum(v for _, v in flags)
    names = ",".join(n for n, _ in flags)
    lines = [f"{carpif['name']}: flags={value:x}<{names}>", f"\tlladdr {carpif['lladdr']}"]
    nodes = carpif["carpnodes"]
    peer = f" carppeer {carpif['carppeer']}" if carpif["carppeer"] else ""
    if len(nodes) == 1:
        vhe = nodes[0]
        lines.append(
            f"\tcarp: {vhe['state']} carpdev {carpif['carpdev']} vhid {vhe['vhid']}"
            f" advbase {carpif['advbase']} advskew {vhe['advskew']}{peer}"
        )
    else:
        lines.append(
            f"\tcarp: carpdev {carpif['carpdev']} advbase {carpif['advbase']}"
            f" balancing {carpif['balancing']}{peer}"
        )
        lines += [f"\t\tstate {v['state']} vhid {v['vhid']} advskew {v['advskew']}" for v in nodes]
    lines.append(f"\tgroups: {' '.join(carpif['groups'])}")
    lines.append(f"\tstatus: {interface_status(carpif)}")
    for text in carpif["addresses"]:
        address = ip_interface(text)
        if isinstance(address, IPv4Interface):
            net = address.network
            lines.append(
                f"\tinet {address.ip} netmask 0x{int(net.netmask):08x}"
                f" broadcast {net.broadcast_address}"
            )
        else:
            lines.append(f"\tinet6 {address.ip} prefixlen {address.network.prefixlen}")
    return "\n".join(lines)


def render_status(status: NodeStatus, name: str | None = None) -> str:
    """All carp interfaces, or the one called `name` (ValueError if there is none)."""
    carpifs = [c for c in status["carp"] if name is None or c["name"] == name]
    if name is not None and not carpifs:
        raise ValueError(f"{name}: no such carp interface")
    return "\n".join(render_interface(c) for c in carpifs)


def render_group(status: NodeStatus, group: str) -> str:
    """`ifconfig -g GROUP`: the group's demote counter."""
    if group not in status["groups"]:
        raise ValueError(f"{group}: no such interface group")
    return f"{group}: carp demote count {status['groups'][group]}"
