"""CARP's own configuration models (design.md §4): a carp interface and the carp sysctls.

A carp interface is written with keys or as ifconfig lines (carp/ifconfig.py); both validate to
the same `CarpConfig`, and `CarpConfig.params(name)` gives the plain input of the core
(carp/params.py). The node file around them (switches, ports, hooks, metrics) is vswitch's
(vswitch/config.py). Scalar types and their messages are in carp/configtypes.py; errors render
as `path: message (fix)` (carp/configerrors.py).
"""

from collections.abc import Mapping
from ipaddress import IPv4Interface, IPv6Interface
from typing import Annotated, Any, Self, cast

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from carp import configerrors
from carp.configtypes import (
    AdminState,
    Advbase,
    Advskew,
    BalancingLabel,
    Carppeer,
    Flag,
    GroupName,
    IfName,
    Mac,
    Vhid,
    VirtualAddress,
    Whole,
    carpnodes_input,
    problem,
    problems,
    repeats,
    repeats_at,
)
from carp.constants import CARP_MAXNODES, Balancing
from carp.ifconfig_fold import ParsedIfconfig, default_balancing, parse_ifconfig
from carp.params import CarpIfParams, CarpNodeParams, Sysctls


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- sections ------------------------------------------------------------------------------------


class SysctlSection(Model):
    """net.inet.carp.* (§8.1). log: syslog priority threshold, 0..7 in practice; any int works."""

    allow: Flag = True
    preempt: Flag = False
    log: Whole = 2

    def sysctls(self) -> Sysctls:
        return Sysctls(allow=self.allow, preempt=self.preempt, log=self.log)


class CarpNode(Model):
    vhid: Vhid
    advskew: Advskew = 0


class CarpConfig(Model):
    """One carp interface (carpN); normalised: carpnodes sorted by vhid, vhid/advskew folded in."""

    carpdev: IfName | None = None  # None until NodeConfig derives it from the host subnets
    addresses: list[VirtualAddress] = Field(default_factory=list, validate_default=True)
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
        if self.balancing is None:  # §6.1 defaults, as a fresh carpN gets them from ifconfig
            self.balancing = cast(BalancingLabel, default_balancing(len(nodes), None))
        return self

    @property
    def nodes(self) -> list[CarpNode]:
        return self.carpnodes or []

    def params(self, name: str) -> CarpIfParams:
        """The core's input for carp interface `name` (its carpdev must be derived by now)."""
        return CarpIfParams(
            name=name,
            carpdev=self.carpdev or "",
            addresses=tuple(self.addresses),
            carpnodes=tuple(CarpNodeParams(n.vhid, n.advskew) for n in self.nodes),
            advbase=self.advbase,
            passphrase=self.passphrase.encode(),  # auth.carp_key keeps the first 19 bytes
            balancing=Balancing.parse(self.balancing or "none"),
            carppeer=self.carppeer,
            groups=tuple(self.groups),
            lladdr=bytes.fromhex(self.lladdr.replace(":", "")) if self.lladdr else None,
            admin_up=self.state == "up",
        )


_BOTH_VHID_FORMS = (
    "vhid and carpnodes given together "
    '(keep one: vhid = N for one carpnode, or carpnodes = "1:0,2:100")'
)
_ADVSKEW_WITH_CARPNODES = (
    "advskew applies with vhid; with carpnodes give each node's advskew in the list "
    '(carpnodes = "1:50,2:100")'
)


# --- ifconfig sections and entry points ----------------------------------------------------------


def expand_ifconfig(data: Any) -> tuple[Any, dict[str, ParsedIfconfig], list[str]]:
    """Replace every `ifconfig = ...` carp section by the key form it sets (carp/ifconfig_fold.py).

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
            errors.append(f"{where}: {error.text()}")
        parsed[str(name)] = result
        carps[name] = result.fields
    return {**data, "carp": carps}, parsed, errors
