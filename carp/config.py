"""The node configuration (design.md §4): TOML validated by pydantic, every error at once.

`loads_config(text)` / `parse_config(data)` give a `NodeConfig` or raise `ConfigError` listing
every problem as `path: message (fix)` (carp/configerrors.py); reading the file is vswitch's. A
carp interface is written with keys or as ifconfig lines (carp/ifconfig.py); both validate to the
same `CarpConfig`. `NodeConfig` produces the plain inputs of the core: `carp_params()` and
`sysctls()` (carp/params.py). The scalar types and their messages are in carp/configtypes.py.
"""

import re
import tomllib
from collections.abc import Iterator, Mapping
from ipaddress import IPv4Interface, IPv6Interface
from typing import Annotated, Any, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from carp import configerrors
from carp.configerrors import ConfigError
from carp.configtypes import (
    DEFAULT_METRICS,
    STATES,
    AdminState,
    Advbase,
    Advskew,
    Argv,
    BalancingLabel,
    Carppeer,
    Flag,
    GroupName,
    IfAddress,
    IfName,
    LogTarget,
    Mac,
    Metrics,
    Netns,
    NodeName,
    PortType,
    Seconds,
    SocketPath,
    States,
    SwitchMode,
    Vhid,
    Whole,
    carpnodes_input,
    problem,
    problems,
    repeats,
    repeats_at,
)
from carp.constants import CARP_MAXNODES, Balancing
from carp.ifconfig import Loc, ParsedIfconfig, parse_ifconfig
from carp.params import CarpIfParams, CarpNodeParams, Sysctls

__all__ = ["ConfigError", "NodeConfig", "loads_config", "parse_config"]

CONTROL_DIR = "/run/vswitch"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- sections ------------------------------------------------------------------------------------


class NodeSection(_Model):
    name: NodeName
    control: SocketPath | None = None  # default: /run/vswitch/<name>.sock
    metrics: Metrics = DEFAULT_METRICS  # None: no metrics endpoint
    log: LogTarget = "stderr"

    @model_validator(mode="after")
    def _default_control(self) -> Self:
        if self.control is None:
            self.control = f"{CONTROL_DIR}/{self.name}.sock"
        return self


class SysctlSection(_Model):
    """net.inet.carp.* (§8.1). log: syslog priority threshold, 0..7 in practice; any int works."""

    allow: Flag = True
    preempt: Flag = False
    log: Whole = 2


class PortConfig(_Model):
    name: IfName
    type: PortType
    ifname: IfName | None = None  # raw: the existing interface; tap: kernel name (default name)
    netns: Netns | None = None
    mac: Mac | None = None

    @model_validator(mode="after")
    def _by_type(self) -> Self:
        found: list[tuple[Loc, str]] = []
        if self.type == "raw":
            if self.ifname is None:
                found.append((("ifname",), "a raw port needs ifname (the interface to attach to)"))
            if self.netns is not None:
                found.append(
                    (("netns",), "netns applies to tap ports (move the interface yourself)")
                )
            if self.mac is not None:
                found.append((("mac",), "mac applies to tap ports (a raw port keeps its own)"))
        elif self.ifname is None:
            self.ifname = self.name
        if found:
            raise problems(found)
        return self


class SwitchConfig(_Model):
    mode: SwitchMode = "learning"
    host: list[IfAddress] = Field(default_factory=list)  # the host port's addresses
    host_mac: Mac | None = None
    ageing: Seconds = 300.0
    # virtio-net headers with TSO on every port (tap-io.md: 8-12x TCP); None: where supported
    offload: bool | None = None
    ports: list[PortConfig] = Field(default_factory=list)

    @field_validator("host")
    @classmethod
    def _distinct_host(cls, value: list[IPv4Interface | IPv6Interface]) -> Any:
        found = repeats([a.ip for a in value], "address")
        if found:
            raise problems(found)
        return value

    @field_validator("ports")
    @classmethod
    def _distinct_ports(cls, value: list[PortConfig]) -> list[PortConfig]:
        found = repeats_at([port.name for port in value], "name", "port name")
        if found:
            raise problems(found)
        return value


class CarpNode(_Model):
    vhid: Vhid
    advskew: Advskew = 0


class CarpConfig(_Model):
    """One carp interface (carpN); normalised: carpnodes sorted by vhid, vhid/advskew folded in."""

    carpdev: IfName | None = None  # None until NodeConfig derives it from the host subnets
    addresses: list[IfAddress] = Field(default_factory=list, validate_default=True)
    vhid: Vhid | None = None
    advskew: Advskew | None = None
    carpnodes: Annotated[list[CarpNode] | None, BeforeValidator(carpnodes_input)] = None
    advbase: Advbase = 1
    passphrase: Annotated[str, Field(alias="pass")] = ""  # the key is its first 19 bytes (§2.1)
    balancing: BalancingLabel | None = None  # None: the default of §6.1
    carppeer: Carppeer = None  # None: 224.0.0.18
    groups: list[GroupName] = Field(default_factory=lambda: ["carp"])
    lladdr: Mac | None = None
    state: AdminState = "up"

    @field_validator("addresses")
    @classmethod
    def _some_addresses(cls, value: list[IPv4Interface | IPv6Interface]) -> Any:
        if not value:
            raise problem(
                "a carp interface needs at least one address", 'e.g. addresses = ["192.0.2.10/24"]'
            )
        found = repeats([a.ip for a in value], "address")
        if found:
            raise problems(found)
        return value

    @field_validator("passphrase")
    @classmethod
    def _no_nul(cls, value: str) -> str:
        if "\0" in value:  # setcarp_passwd strlcpy()s it
            raise problem("pass contains a NUL byte, which ends the key in carp(4)")
        return value

    @field_validator("carpnodes")
    @classmethod
    def _carpnodes_rules(cls, value: list[CarpNode] | None) -> list[CarpNode] | None:
        """§6.1 setcarp_nodes / carp_vhids_ioctl: 1..32 nodes, distinct vhids."""
        if value is None:
            return value
        if not value:
            raise problem("an empty list", 'give at least one vhid:advskew, e.g. "1:0"')
        if len(value) > CARP_MAXNODES:
            raise problem(f"{len(value)} carpnodes, at most {CARP_MAXNODES} (CARP_MAXNODES)")
        found = repeats_at([node.vhid for node in value], "vhid", "vhid")
        if found:
            raise problems(found)
        return value

    @field_validator("groups")
    @classmethod
    def _carp_group(cls, value: list[str]) -> list[str]:
        """Every carp interface is in group carp (§5.1): first, and each group once."""
        return list(dict.fromkeys(["carp", *value]))

    @model_validator(mode="after")
    def _fold_vhids(self) -> Self:
        if self.vhid is not None and self.carpnodes is not None:
            raise problems([(("vhid",), _BOTH_VHID_FORMS)])
        if self.carpnodes is not None and self.advskew is not None:
            raise problems([(("advskew",), _ADVSKEW_WITH_CARPNODES)])
        if self.vhid is None and self.carpnodes is None:
            raise problems([(("vhid",), 'missing (add vhid = 1, or carpnodes = "1:0,2:100")')])
        if self.vhid is not None:
            self.carpnodes = [CarpNode(vhid=self.vhid, advskew=self.advskew or 0)]
        nodes = sorted(self.carpnodes or [], key=lambda node: node.vhid)  # §6.1: sorted by vhid
        self.carpnodes, self.vhid, self.advskew = nodes, None, None
        if self.balancing is None:  # §6.1 defaults: one vhid -> none, several -> ip
            self.balancing = "none" if len(nodes) == 1 else "ip"
        return self

    @property
    def nodes(self) -> list[CarpNode]:
        return self.carpnodes or []


_BOTH_VHID_FORMS = (
    "vhid and carpnodes given together "
    '(keep one: vhid = N for one carpnode, or carpnodes = "1:0,2:100")'
)
_ADVSKEW_WITH_CARPNODES = (
    "advskew applies with vhid; with carpnodes give each node's advskew in the list "
    '(carpnodes = "1:50,2:100")'
)


class HookConfig(_Model):
    """A command run on state changes (design.md §6); argv, never through a shell."""

    command: Argv
    timeout: Seconds = 10.0
    on: States = Field(default_factory=lambda: list(STATES))


# --- the node ------------------------------------------------------------------------------------


class NodeConfig(_Model):
    node: NodeSection
    sysctl: SysctlSection = Field(default_factory=SysctlSection)
    switch: dict[IfName, SwitchConfig] = Field(default_factory=dict)
    carp: dict[IfName, CarpConfig] = Field(default_factory=dict)
    hook: list[HookConfig] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _expand(cls, data: Any) -> Any:
        """Direct model_validate of ifconfig sections; parse_config expands them beforehand."""
        expanded, _, errors = expand_ifconfig(data)
        if errors:
            raise problem("; ".join(errors))
        return expanded

    @model_validator(mode="after")
    def _across_sections(self) -> Self:
        found = [
            *self._derive_carpdevs(),
            *self._unique_vhids(),
            *self._unique_addresses(),
            *self._unique_ifnames(),
        ]
        if found:
            raise problems(found)
        return self

    def _derive_carpdevs(self) -> Iterator[tuple[Loc, str]]:
        """design.md §2: carpdev defaults to the switch whose host address shares a subnet."""
        declared = ", ".join(self.switch) or "none declared"
        for name, carp in self.carp.items():
            if carp.carpdev is not None:
                if carp.carpdev not in self.switch:
                    yield (
                        ("carp", name, "carpdev"),
                        f"{carp.carpdev!r} is not a declared switch "
                        f"(declare [switch.{carp.carpdev}] or use one of: {declared})",
                    )
                continue
            found = [
                sw
                for sw, config in self.switch.items()
                if any(_same_subnet(v, h) for v in carp.addresses for h in config.host)
            ]
            if len(found) == 1:
                carp.carpdev = found[0]
            elif not found:
                yield (
                    ("carp", name, "carpdev"),
                    "missing, and no switch has a host address in the subnet of "
                    f'{", ".join(str(a) for a in carp.addresses)} (set carpdev = "SWITCH" '
                    "or give that switch a host address in the subnet; switches: "
                    f"{declared})",
                )
            else:
                yield (
                    ("carp", name, "carpdev"),
                    f"missing, and the addresses share a subnet with switches {', '.join(found)} "
                    f'(set carpdev = "{found[0]}" or another of them)',
                )

    def _unique_vhids(self) -> Iterator[tuple[Loc, str]]:
        """§6.1: the kernel rejects a vhid already used by another carp interface on the parent."""
        owner: dict[tuple[str, int], str] = {}
        for name, carp in self.carp.items():
            for node in carp.nodes:
                slot = (carp.carpdev or "", node.vhid)
                if carp.carpdev is not None and slot in owner:
                    yield (
                        ("carp", name, "vhid" if len(carp.nodes) == 1 else "carpnodes"),
                        f"vhid {node.vhid} is already used by {owner[slot]} on switch "
                        f"{carp.carpdev} (give each carp interface on one carpdev its own vhids)",
                    )
                owner.setdefault(slot, name)

    def _unique_addresses(self) -> Iterator[tuple[Loc, str]]:
        owner: dict[Any, str] = {}
        for sw, config in self.switch.items():
            for address in config.host:
                owner.setdefault(address.ip, f"a host address of switch {sw}")
        for name, carp in self.carp.items():
            for n, address in enumerate(carp.addresses):
                if address.ip in owner:
                    yield (
                        ("carp", name, "addresses", n),
                        f"{address.ip} is already {owner[address.ip]} "
                        "(virtual addresses must be unique on the node)",
                    )
                owner.setdefault(address.ip, f"a virtual address of {name}")

    def _unique_ifnames(self) -> Iterator[tuple[Loc, str]]:
        """Every kernel interface the node creates or attaches to is used once."""
        owner: dict[str, str] = {}
        used: list[tuple[str, Loc]] = [(name, ("carp", name)) for name in self.carp]
        used += [(sw, ("switch", sw)) for sw, config in self.switch.items() if config.host]
        for sw, config in self.switch.items():
            for n, port in enumerate(config.ports):
                used.append((port.ifname or port.name, ("switch", sw, "ports", n, "ifname")))
        for ifname, loc in used:
            if ifname in owner:
                yield (loc, f"interface name {ifname!r} is already used by {owner[ifname]}")
            owner.setdefault(ifname, configerrors.path(loc))

    # --- what the core consumes ---

    def carp_params(self) -> list[CarpIfParams]:
        return [
            CarpIfParams(
                name=name,
                carpdev=carp.carpdev or "",
                addresses=tuple(carp.addresses),
                carpnodes=tuple(CarpNodeParams(n.vhid, n.advskew) for n in carp.nodes),
                advbase=carp.advbase,
                passphrase=carp.passphrase.encode(),  # auth.carp_key keeps the first 19 bytes
                balancing=Balancing.parse(carp.balancing or "none"),
                carppeer=carp.carppeer,
                groups=tuple(carp.groups),
                lladdr=bytes.fromhex(carp.lladdr.replace(":", "")) if carp.lladdr else None,
                admin_up=carp.state == "up",
            )
            for name, carp in self.carp.items()
        ]

    def sysctls(self) -> Sysctls:
        return Sysctls(allow=self.sysctl.allow, preempt=self.sysctl.preempt, log=self.sysctl.log)

    def normalised(self, show_pass: bool = False) -> dict[str, Any]:
        """The validated config as plain data (TOML/JSON-able), defaults filled in."""
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        data["node"]["metrics"] = self.node.metrics or False
        for config in data["switch"].values():
            config["ageing"] = _plain_number(config["ageing"])
        for hook in data["hook"]:
            hook["timeout"] = _plain_number(hook["timeout"])
        for name, carp in data["carp"].items():
            nodes = self.carp[name].nodes
            carp.pop("carpnodes", None)
            ordered: dict[str, Any] = {"carpdev": carp.pop("carpdev")}
            ordered["addresses"] = carp.pop("addresses")
            if len(nodes) == 1:
                ordered |= {"vhid": nodes[0].vhid, "advskew": nodes[0].advskew}
            else:
                ordered["carpnodes"] = ",".join(f"{n.vhid}:{n.advskew}" for n in nodes)
            if carp["pass"] and not show_pass:
                carp["pass"] = "********"
            data["carp"][name] = ordered | carp
        return data


def _plain_number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _same_subnet(vip: IPv4Interface | IPv6Interface, host: IPv4Interface | IPv6Interface) -> bool:
    return vip.version == host.version and (vip.ip in host.network or host.ip in vip.network)


# --- ifconfig sections and entry points ----------------------------------------------------------


def expand_ifconfig(data: Any) -> tuple[Any, dict[str, ParsedIfconfig], list[str]]:
    """Replace every `ifconfig = ...` carp section by the key form it sets (carp/ifconfig.py).

    Returns the new data, the parse of each such section (its origins), and the syntax errors.
    """
    if not isinstance(data, Mapping) or not isinstance(data.get("carp"), Mapping):
        return data, {}, []
    carps: dict[str, Any] = {}
    parsed: dict[str, ParsedIfconfig] = {}
    errors: list[str] = []
    for name, section in data["carp"].items():
        if not isinstance(section, Mapping) or "ifconfig" not in section:
            carps[name] = section
            continue
        lines = section["ifconfig"]
        base = f"carp.{configerrors.key(name)}.ifconfig"
        for extra in section:
            if extra != "ifconfig":
                errors.append(
                    f"carp.{configerrors.key(name)}.{configerrors.key(extra)}: given together "
                    "with ifconfig (put it in the ifconfig line, or use keys only)"
                )
        if not isinstance(lines, str | list):
            errors.append(f"{base}: expected a string or a list of strings, got {lines!r}")
            continue  # nothing to validate in it
        result = parse_ifconfig(lines)
        for error in result.errors:
            where = base if error.line is None else f"{base}[{error.line}]"
            prefix = f"{error.word.where()}: " if error.word else ""
            errors.append(f"{where}: {prefix}{error.message}")
        parsed[str(name)] = result
        carps[name] = result.fields
    return {**data, "carp": carps}, parsed, errors


def parse_config(data: Mapping[str, Any]) -> NodeConfig:
    """Validate parsed TOML; raise ConfigError with every problem."""
    expanded, parsed, errors = expand_ifconfig(data)
    try:
        config = NodeConfig.model_validate(expanded)
    except ValidationError as exc:
        errors += configerrors.rendered(NodeConfig, exc, parsed)
    if errors:
        raise ConfigError(errors)
    return config


def loads_config(text: str, source: str = "config") -> NodeConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = re.search(r"\(at line (\d+), column (\d+)\)$", message)
        if match:
            where = f"line {match.group(1)}, column {match.group(2)}"
            message = message[: match.start()].strip()
        else:
            where = "end of file" if "end of document" in message else "TOML"
            message = re.sub(r"\s*\(at end of document\)$", "", message)
        raise ConfigError([f"{source}: {where}: {message} (fix the TOML syntax)"]) from None
    return parse_config(data)
