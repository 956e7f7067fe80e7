"""The node file (design.md §4): TOML validated by pydantic, every error at once.

`load_config(path)`, `loads_config(text)` and `parse_config(data)` give a `NodeConfig` or raise
`ConfigError` listing every problem as `path: message (fix)`. The carp interfaces and sysctls are
CARP's own models (carp/config.py); this module adds the node around them: its name, control
socket, metrics and log, the switches with their ports, and the hooks.
"""

import difflib
import re
import tomllib
from collections.abc import Iterator, Mapping
from ipaddress import IPv4Interface, IPv6Interface
from pathlib import PurePath
from typing import Annotated, Any, Literal, Self, get_origin

from pydantic import BeforeValidator, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from carp import configerrors
from carp.config import CarpConfig, Model, SysctlSection, expand_ifconfig
from carp.configerrors import ConfigError
from carp.configtypes import IfAddress, IfName, Mac, problem, problems, repeats, repeats_at
from carp.ifconfig import Loc
from carp.params import CarpIfParams, Sysctls
from vswitch.configtypes import (
    DEFAULT_METRICS,
    Account,
    Argv,
    FileMode,
    Impair,
    LogTarget,
    Metrics,
    Netns,
    NodeName,
    Seconds,
    SocketDir,
    SocketPath,
    States,
    SwitchMode,
    UdpPort,
    Unicast,
    Vni,
    hook_states,
)
from vswitch.paths import RUN_DIR as CONTROL_DIR  # noqa: F401 - the name tests/vswitch know
from vswitch.paths import default_socket

__all__ = ["ConfigError", "NodeConfig", "load_config", "loads_config", "parse_config"]


class NodeSection(Model):
    name: NodeName
    control: SocketPath | None = None  # default: /run/vswitch/<name>.sock
    metrics: Metrics = DEFAULT_METRICS  # None: no metrics endpoint
    log: LogTarget = "stderr"
    workers: Annotated[
        int,
        Field(
            ge=0,
            le=16,  # port.MAX_QUEUES: a queue per worker
            description="processes that forward the TAP and raw ports, one per queue; "
            "0: the node process forwards (vswitch/workers.py)",
        ),
    ] = 0
    rt_priority: Annotated[
        int | None,
        Field(
            ge=1,
            le=99,
            description="run the node process SCHED_RR at this priority, memory locked "
            "(keepalived's vrrp_rt_priority; meant with workers >= 1)",
        ),
    ] = None

    @model_validator(mode="after")
    def _default_control(self) -> Self:
        if self.control is None:
            self.control = default_socket(self.name)
        return self


class TapPortConfig(Model):
    """A TAP device the switch creates, optionally moved into a network namespace: a named one,
    a namespace file (/proc/PID/ns/net, a container's) or pid:PID."""

    name: IfName
    type: Literal["tap"]
    ifname: IfName | None = None  # the kernel's name for it; default: the port name
    netns: Netns | None = None
    mac: Mac | None = None
    monitor: bool = False  # also gets a copy of every unicast frame switched to other ports
    impair: Impair = None  # delay, jitter, loss, rate, partition (vswitch/impair.py); live

    @model_validator(mode="after")
    def _default_ifname(self) -> Self:
        if self.ifname is None:
            self.ifname = self.name
        return self


class RawPortConfig(Model):
    """An AF_PACKET socket on an interface that exists already (an uplink, a veth)."""

    name: IfName
    type: Literal["raw"]
    ifname: Annotated[IfName, Field(description="the interface to attach to")]
    monitor: bool = False  # also gets a copy of every unicast frame switched to other ports
    impair: Impair = None  # delay, jitter, loss, rate, partition (vswitch/impair.py); live


class StreamPortConfig(Model):
    """A Unix stream socket the node listens on for one peer at a time (QEMU's `-netdev
    stream,server=off,addr.type=unix,addr.path=PATH`): a 4-byte length, then the frame."""

    name: IfName
    type: Literal["stream"]
    path: Annotated[
        SocketPath,
        Field(description='the socket to listen on, e.g. path = "/run/vswitch/vm1.sock"'),
    ]
    # who may connect: the socket's owner, group and mode (default 0600, 0660 with a group)
    owner: Account | None = None
    group: Account | None = None
    mode: FileMode | None = None
    monitor: bool = False  # also gets a copy of every unicast frame switched to other ports
    impair: Impair = None  # delay, jitter, loss, rate, partition (vswitch/impair.py); live


class VdePortConfig(Model):
    """A vde_switch-compatible directory (`DIR/ctl`): vde_plug, vde_plug2tap and QEMU's `-netdev
    vde,sock=DIR` connect; every client becomes its own switch port NAME/N."""

    name: IfName
    type: Literal["vde"]
    path: Annotated[
        SocketDir,
        Field(description='the switch directory, e.g. path = "/run/vswitch/lan0.vde"'),
    ]
    # who may connect: owner, group and mode of the sockets (default 0600, 0660 with a group)
    owner: Account | None = None
    group: Account | None = None
    mode: FileMode | None = None
    monitor: bool = False  # also gets a copy of every unicast frame switched to other ports
    impair: Impair = None  # delay, jitter, loss, rate, partition (vswitch/impair.py); live


class VxlanPortConfig(Model):
    """RFC 7348 over UDP to a fixed list of peers: floods go to every remote (head-end
    replication), known unicast to the remote its MAC was learned from."""

    name: IfName
    type: Literal["vxlan"]
    vni: Annotated[Vni, Field(description="the segment's VXLAN network identifier, 0..16777215")]
    local: Annotated[
        Unicast, Field(description='this host\'s underlay address, e.g. local = "198.51.100.1"')
    ]
    remote: Annotated[
        list[Unicast],
        Field(description='the peers\' underlay addresses, e.g. remote = ["198.51.100.2"]'),
    ]
    port: UdpPort = 4789  # IANA's; a Linux vxlan device needs `dstport 4789` to match
    monitor: bool = False  # also gets a copy of every unicast frame switched to other ports
    impair: Impair = None  # delay, jitter, loss, rate, partition (vswitch/impair.py); live

    @model_validator(mode="after")
    def _peers(self) -> Self:
        found: list[tuple[Loc, str]] = []
        if not self.remote:
            found.append((("remote",), 'no peer (list at least one, e.g. ["198.51.100.2"])'))
        found += [(("remote", *loc), m) for loc, m in repeats(self.remote, "remote")]
        for n, peer in enumerate(self.remote):
            if peer.version != self.local.version:
                found.append(
                    (
                        ("remote", n),
                        f"{peer} is IPv{peer.version} and local {self.local} is "
                        f"IPv{self.local.version} (give peers of the local address's family)",
                    )
                )
            elif peer == self.local:
                found.append((("remote", n), f"{peer} is the local address (list the peers only)"))
        if found:
            raise problems(found)
        return self


# One model per port type: a new type is a model here and a device class in the daemon.
PORT_TYPES: dict[str, type[Model]] = {
    "tap": TapPortConfig,
    "raw": RawPortConfig,
    "stream": StreamPortConfig,
    "vde": VdePortConfig,
    "vxlan": VxlanPortConfig,
}


def _port_input(value: Any) -> Any:
    """Check the type and the keys against that type's model, so an error names the key."""
    if not isinstance(value, Mapping):
        return value  # pydantic says what it expected
    kind = value.get("type")
    if kind is None:
        raise problems([(("type",), f"missing (type = {' or '.join(map(repr, PORT_TYPES))})")])
    model = PORT_TYPES.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise problems([(("type",), f"{kind!r} is not one of {', '.join(PORT_TYPES)}")])
    fields = model.model_fields
    found: list[tuple[Loc, str]] = []
    for key in value:
        owners = [t for t, m in PORT_TYPES.items() if key in m.model_fields]
        if key in fields:
            continue
        if owners:
            found.append(((key,), f"{key} applies to {' and '.join(owners)} ports, not {kind}"))
        else:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            found.append(((key,), f"unknown key ({hint}known: {', '.join(fields)})"))
    for key, field in fields.items():
        if field.is_required() and key not in value:
            fix = f" ({field.description})" if field.description else ""
            found.append(((key,), f"a {kind} port needs {key}{fix}"))
    if found:
        raise problems(found)
    try:  # here, so that error paths name the port's keys, not the union's tag
        return model.model_validate(value)
    except ValidationError as exc:
        raise problems([p for d in exc.errors() for p in _relative(d)]) from None


def _relative(detail: ErrorDetails) -> list[tuple[Loc, str]]:
    loc = tuple(detail["loc"])
    if detail["type"] == "vswitch_many":
        return [(loc + tuple(rel), m) for rel, m in (detail.get("ctx") or {})["problems"]]
    return [(loc, detail["msg"])]


PortConfig = Annotated[
    TapPortConfig | RawPortConfig | StreamPortConfig | VdePortConfig | VxlanPortConfig,
    Field(discriminator="type"),
    BeforeValidator(_port_input),
]


def port_table(name: str, words: Mapping[str, str]) -> dict[str, Any]:
    """A port given as key=value words (`vswitch port add SWITCH NAME type=tap netns=pid:42`)
    as the table a file would have: a word that is a TOML value is that value (vni=42), a list
    field takes a comma list (remote=198.51.100.2,198.51.100.3), anything else is its text.
    The port's model then judges it exactly as it judges the file's."""
    model = PORT_TYPES.get(words.get("type", ""))
    table: dict[str, Any] = {"name": name}
    for key, text in words.items():
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except (tomllib.TOMLDecodeError, RecursionError):
            value = text
        field = model.model_fields.get(key) if model is not None else None
        if field is not None and get_origin(field.annotation) is list and isinstance(value, str):
            value = [part.strip() for part in text.split(",") if part.strip()]
        table[key] = value
    return table


def port_ifname(port: Model) -> str | None:
    """The kernel interface a port creates or attaches to; None for a socket port."""
    if isinstance(port, TapPortConfig):
        return port.ifname or port.name
    if isinstance(port, RawPortConfig):
        return port.ifname
    return None


def port_endpoint(port: Model) -> str | None:
    """What a socket port binds on the node (a path, or a UDP address), which no other port may
    bind; None for a port on a kernel interface."""
    if isinstance(port, StreamPortConfig | VdePortConfig):
        return port.path
    if isinstance(port, VxlanPortConfig):
        host = f"[{port.local}]" if port.local.version == 6 else str(port.local)
        return f"udp {host}:{port.port}"
    return None


PLAIN_PORT_TYPES = frozenset({"stream", "vde", "vxlan"})  # frames without virtio-net header


class SwitchConfig(Model):
    mode: SwitchMode = "learning"
    host: list[IfAddress] = Field(default_factory=list)  # the host port's addresses
    host_mac: Mac | None = None
    ageing: Seconds = 300.0
    # virtio-net headers with TSO on every port (tap-io.md: 8-12x TCP); None: where supported,
    # unless a port carries plain frames (see `vnet_offload`)
    offload: bool | None = None
    ports: list[PortConfig] = Field(default_factory=list)

    @property
    def vnet_offload(self) -> bool | None:
        """What the switch is built with. Left to the default, a switch with socket ports
        (stream, vde, vxlan: plain frames) runs without offload: cutting TSO segments up in
        Python for them costs more than offload gains (bench/throughput.py: vswitch-vde 0.54
        vs vswitch-vde-plain 1.24 Gbit/s); one added at run time gets segmented frames."""
        if self.offload is None and any(p.type in PLAIN_PORT_TYPES for p in self.ports):
            return False
        return self.offload

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


class HookConfig(Model):
    """A command run on state changes (design.md §6); argv, never through a shell."""

    command: Argv
    timeout: Seconds = 10.0
    on: States = Field(default_factory=hook_states)


# --- the node ------------------------------------------------------------------------------------


class NodeConfig(Model):
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
            *self._reachable(),
            *self._unique_vhids(),
            *self._unique_addresses(),
            *self._unique_ifnames(),
            *self._unique_endpoints(),
            *self._worker_ports(),
        ]
        if found:
            raise problems(found)
        return self

    def _worker_ports(self) -> Iterator[tuple[Loc, str]]:
        """Impairment runs where a port is read: in the node process, not in workers."""
        if not self.node.workers:
            return
        for name, sw in self.switch.items():
            for i, port in enumerate(sw.ports):
                if port.impair is not None and port.type in ("tap", "raw"):
                    yield (
                        ("switch", name, "ports", i, "impair"),
                        f"a {port.type} port is forwarded by the workers, which do not impair "
                        "(remove impair, or set [node] workers = 0)",
                    )

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

    def _reachable(self) -> Iterator[tuple[Loc, str]]:
        """The node's kernel answers a virtual address only if a host address of the carpdev
        covers its subnet (its route back to the clients); a carppeer is one unicast host."""
        for name, carp in self.carp.items():
            switch = self.switch.get(carp.carpdev or "")
            if switch is None:
                continue  # reported by _derive_carpdevs
            for n, vip in enumerate(carp.addresses):
                if not any(_same_subnet(vip, host) for host in switch.host):
                    example = _host_example(vip, carp.addresses)
                    yield (
                        ("carp", name, "addresses", n),
                        f"no host address of switch {carp.carpdev} is in {vip.network}, so the "
                        f"node has no route back to its clients (add one to [switch."
                        f'{carp.carpdev}] host, e.g. "{example}")',
                    )
            broadcasts = {
                h.network.broadcast_address: h.network
                for h in switch.host
                if h.version == 4 and h.network.prefixlen < 31
            }
            if carp.carppeer in broadcasts:
                yield (
                    ("carp", name, "carppeer"),
                    f"{carp.carppeer} is the broadcast address of {broadcasts[carp.carppeer]} "
                    "(carppeer names one peer; remove it to advertise to 224.0.0.18)",
                )

    def warnings(self) -> list[str]:
        """What is valid but probably not meant, as `path: message (fix)`."""
        found = [
            f"carp.{configerrors.key(name)}.pass: empty, so any host on the segment can take "
            'over the addresses (set pass = "SECRET" on every node)'
            for name, carp in self.carp.items()
            if not carp.passphrase
        ]
        if self.node.rt_priority is not None and not self.node.workers:
            found.append(
                "node.rt_priority: the node process also forwards (workers = 0), so under load "
                "it can keep the CPU from everything else (set workers = 1 or more)"
            )
        elif self.node.rt_priority is not None:
            found += [
                f"node.rt_priority: the node process forwards socket port {sw}.{p.name} "
                "itself at that priority, so its traffic can keep the CPU from the workers "
                "(attach it as a tap port, or remove rt_priority)"
                for sw, c in self.switch.items()
                for p in c.ports
                if p.type not in ("tap", "raw")
            ]
        return found

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
                ifname = port_ifname(port)
                if ifname is not None:
                    used.append((ifname, ("switch", sw, "ports", n, "ifname")))
        for ifname, loc in used:
            if ifname in owner:
                yield (loc, f"interface name {ifname!r} is already used by {owner[ifname]}")
            owner.setdefault(ifname, configerrors.path(loc))

    def _unique_endpoints(self) -> Iterator[tuple[Loc, str]]:
        """Two socket ports cannot bind one path or UDP address, nor a port the control socket."""
        owner: dict[str, str] = {}
        if self.node.control is not None:
            owner[self.node.control] = "node.control"
        for sw, config in self.switch.items():
            for n, port in enumerate(config.ports):
                endpoint = port_endpoint(port)
                if endpoint is None:
                    continue
                key = "port" if isinstance(port, VxlanPortConfig) else "path"
                loc: Loc = ("switch", sw, "ports", n, key)
                if endpoint in owner:
                    yield (
                        loc,
                        f"{endpoint} is already used by {owner[endpoint]} "
                        "(give each socket port its own path, or each vxlan port its own "
                        "local address or port)",
                    )
                owner.setdefault(endpoint, configerrors.path(loc))

    # --- what the core consumes ---

    def carp_params(self) -> list[CarpIfParams]:
        return [carp.params(name) for name, carp in self.carp.items()]

    def sysctls(self) -> Sysctls:
        return self.sysctl.sysctls()

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


def _host_example(
    vip: IPv4Interface | IPv6Interface, taken: list[IPv4Interface | IPv6Interface]
) -> str:
    """A host address in the virtual address's subnet that the carp interface does not use."""
    used = {a.ip for a in taken}
    hosts = (h for h in vip.network.hosts() if h not in used)
    return f"{next(hosts, vip.ip)}/{vip.network.prefixlen}"


def _same_subnet(vip: IPv4Interface | IPv6Interface, host: IPv4Interface | IPv6Interface) -> bool:
    return vip.version == host.version and (vip.ip in host.network or host.ip in vip.network)


def parse_config(data: Mapping[str, Any]) -> NodeConfig:
    """Validate parsed TOML; raise ConfigError with every problem."""
    expanded, parsed, errors = expand_ifconfig(data)
    try:
        config = NodeConfig.model_validate(expanded)
    except ValidationError as exc:
        errors += configerrors.rendered(NodeConfig, exc, parsed)
    except RecursionError:
        errors.append("config: nested too deeply (fix the structure)")
    if errors:
        raise ConfigError(errors)
    return config


def loads_config(text: str, source: str = "config") -> NodeConfig:
    try:
        data = tomllib.loads(text)
    except RecursionError:
        raise ConfigError([f"{source}: nested too deeply (fix the TOML structure)"]) from None
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


def load_config(path: str | PurePath) -> NodeConfig:
    """Read and validate one node's TOML file; ConfigError lists every problem."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
        text = raw.decode("utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 at byte {exc.start} (TOML is UTF-8)"]) from None
    return loads_config(text, str(path))
