"""The node's two run-time transactions: `vswitch reload` and `vswitch ifconfig carpN ...`.

Both are all or nothing. A change is first prepared in full under an ExitStack: new ports opened
and attached, the carp interfaces as they will be validated by a throw-away CarpHost, carp TAPs
swapped whose MAC, addresses or switch change. When a step fails every step before it is undone
and ConfigError (reload) or ValueError (ifconfig) names the cause: nothing changed. The commit
then opens and validates nothing; its actions go through `Node.apply`.

The seam is two functions taking the running `Node` (`Node.reload` and `Node.ifconfig` call
them); they use its core, data path, devices (vswitch/build.py) and `refresh`.
"""

import functools
from collections.abc import Mapping
from contextlib import ExitStack
from typing import TYPE_CHECKING

from pydantic import ValidationError

from carp import configerrors
from carp.actions import Action
from carp.carpif import keeps_state
from carp.datapath import DataPath
from carp.host import SYSCTL_PREFIX, CarpHost
from carp.ifconfig import IfconfigChange, apply_params
from carp.ifconfig_fold import KeyForm, ParsedIfconfig
from carp.params import CarpIfParams
from vswitch.build import cookie, refused, undo
from vswitch.config import ConfigError, NodeConfig, PortConfig, SwitchConfig, port_endpoint
from vswitch.system import port_type
from vswitch.watch import same_device

if TYPE_CHECKING:
    from vswitch.node import Node

Wanted = Mapping[str, CarpIfParams | None]  # carp interface -> its new parameters, None: removed


def ifconfig(node: "Node", carpif: str, change: IfconfigChange) -> None:
    """Parameters first (SIOCSVH), then up/down and state. ValueError says why a change cannot
    be applied; nothing changed then."""
    host = node.core()
    sc = host.carpifs.get(carpif)
    if sc is None:
        raise ValueError(f"no carp interface {carpif}")
    now = node.clock()
    actions: list[Action] = []
    if change.changes_params:
        params = apply_params(sc.params, change)
        if params.carpdev not in node.carpdevs:
            raise ValueError(f"carpdev {params.carpdev}: no such switch")
        if params != sc.params:
            _check_node(node, carpif, change)
            wanted: dict[str, CarpIfParams | None] = {carpif: params}
            try:
                with ExitStack() as steps:
                    _prepare_carpifs(node, steps, wanted)
                    steps.pop_all()
            except ConfigError as exc:
                raise ValueError("; ".join(exc.errors) + "; nothing changed") from None
            actions += _commit_carpifs(node, now, wanted)
    if change.admin_up is not None:
        actions += host.set_admin(now, carpif, change.admin_up)
    if change.state is not None:
        actions += host.force_state(now, carpif, change.state)
    node.apply(now, actions)


def _check_node(node: "Node", carpif: str, change: IfconfigChange) -> None:
    """The node file's rules across sections (NodeConfig: a virtual address that a host address
    of the carpdev covers and that no other address of the node has, a vhid free on the
    carpdev, a carppeer that is not a subnet's broadcast) on the running carp interfaces with
    `change` folded onto `carpif`. ValueError names what the change brings as `apply_params`
    names its errors; a mismatch that was there before (a carp interface a reload left for a
    restart) is not this change's to refuse."""
    host = node.core()
    others = {n: KeyForm.of(sc.params).result() for n, sc in host.carpifs.items() if n != carpif}
    form = KeyForm.of(host.carpifs[carpif].params)
    before = _node_errors(node, others, carpif, form.result())
    form.apply_line(change.operations)  # the fold apply_params did, for its words
    errors = [e for e in _node_errors(node, others, carpif, form.result()) if e not in before]
    if errors:
        raise ValueError("; ".join(errors))


def _node_errors(
    node: "Node", others: Mapping[str, ParsedIfconfig], carpif: str, parsed: ParsedIfconfig
) -> list[str]:
    """NodeConfig's errors for the node's file with these carp interfaces, `carpif` last: what
    it clashes with (a vhid, an address) is then reported on it, by the word that set it."""
    config = node.config
    carps = {name: p.fields for name, p in others.items()} | {carpif: parsed.fields}
    data = {
        "node": config.node,
        "sysctl": config.sysctl,
        "switch": config.switch,
        "carp": carps,
        "hook": config.hook,
    }
    try:
        NodeConfig.model_validate(data)
    except ValidationError as exc:
        ours = f"carp.{configerrors.key(carpif)}.ifconfig: "  # the file's path, not a command's
        found = configerrors.rendered(NodeConfig, exc, {carpif: parsed})
        return [error.removeprefix(ours) for error in found]
    return []


def reload(node: "Node", config: NodeConfig) -> list[str]:
    """Apply a new, already valid configuration; unchanged carp interfaces keep their state.
    Returns what changed; what needs a restart is said so and left as it is. All or nothing:
    when a part cannot be applied, ConfigError names it and nothing changed."""
    host = node.core()
    now = node.clock()
    changes, sysctls, switches, wanted = _plan(node, config)
    removals: list[tuple[str, str]] = []
    try:
        with ExitStack() as steps:
            for name, (before, after) in switches.items():
                changes += _prepare_ports(node, steps, name, before, after, removals)
            _prepare_carpifs(node, steps, wanted)
            steps.pop_all()
    except (OSError, ValueError) as exc:
        raise refused("reload", "cannot be applied", exc, "nothing changed") from exc
    finally:
        node.devices.release_sysctls()
    # commit: nothing below opens a device or validates anything
    actions: list[Action] = []
    for key, value in sysctls.items():
        actions += host.set_sysctl(now, key, value)
        changes.append(f"{SYSCTL_PREFIX}{key}={value}")
    for name, (before, after) in switches.items():
        if (before.mode, before.ageing) != (after.mode, after.ageing):
            fwd = node.dataplane.switch(name)
            fwd.mode = after.mode
            fwd.ageing = after.ageing
            fwd.flush()
            changes.append(f"switch {name}: mode {after.mode}, ageing {after.ageing:g}")
    for switch, port in removals:
        node.dataplane.remove_port(switch, port)
    node.devices.release_sysctls()
    for name, (before, after) in switches.items():
        changes += node.watch.configure(name, after, before)  # monitor and impair, in place
    for name, new in wanted.items():
        current = host.carpifs.get(name)
        if new is None:
            changes.append(f"{name} removed")
        elif current is None:
            changes.append(f"{name} added")
        elif keeps_state(current.params, new):
            changes.append(f"{name} updated, state kept")
        else:
            changes.append(f"{name} replaced")
    actions += _commit_carpifs(node, now, wanted)
    node.config = config
    node.apply(now, actions)
    return changes


def _plan(
    node: "Node", config: NodeConfig
) -> tuple[
    list[str],
    dict[str, int],
    dict[str, tuple[SwitchConfig, SwitchConfig]],
    dict[str, CarpIfParams | None],
]:
    """What a reload changes: notes on what needs a restart, carp sysctls, switches whose
    ports or mode change, carp interfaces (None: removed)."""
    host = node.core()
    old = node.config
    notes: list[str] = []
    if config.node != old.node:
        notes.append("[node] changed: restart the node to apply it")
    sysctls = {
        key: int(value)
        for key, value in config.sysctl.model_dump().items()
        if getattr(old.sysctl, key) != value
    }
    switches: dict[str, tuple[SwitchConfig, SwitchConfig]] = {}
    for name in sorted(set(old.switch) | set(config.switch)):
        before, after = old.switch.get(name), config.switch.get(name)
        if before == after:
            continue
        if before is None or after is None or not _same_device(before, after):
            notes.append(f"switch {name}: added, removed or host port changed; restart")
        else:
            switches[name] = (before, after)
    wanted: dict[str, CarpIfParams | None] = {
        name: None for name in host.carpifs if name not in config.carp
    }
    for params in config.carp_params():
        current = host.carpifs.get(params.name)
        if current is not None and current.params == params:
            continue
        if params.carpdev not in node.carpdevs:
            notes.append(f"{params.name}: carpdev {params.carpdev} needs a restart")
            continue
        wanted[params.name] = params
    return notes, sysctls, switches, wanted


def _same_device(before: SwitchConfig, after: SwitchConfig) -> bool:
    """What a running switch cannot change: its host port and its offload."""
    return (before.host, before.host_mac, before.offload) == (
        after.host,
        after.host_mac,
        after.offload,
    )


def _prepare_ports(
    node: "Node",
    steps: ExitStack,
    switch: str,
    before: SwitchConfig,
    after: SwitchConfig,
    removals: list[tuple[str, str]],
) -> list[str]:
    """Open and attach the new ports of a switch; the ports that go are detached now only
    when a new one takes their name or interface, else listed in `removals` for the commit.
    Every step is undone by `steps` if a later one fails."""
    devices = node.devices
    old = {p.name: (i, p) for i, p in enumerate(before.ports)}
    new = {p.name: (i, p) for i, p in enumerate(after.ports)}
    # a port whose device stays (only impair or monitor change) is changed in place at commit
    gone = [
        (i, p) for name, (i, p) in old.items() if not same_device(new.get(name, (0, None))[1], p)
    ]
    come = [
        (i, p) for name, (i, p) in new.items() if not same_device(old.get(name, (0, None))[1], p)
    ]
    taken = {claim for _, p in come for claim in _claims(p)}
    changes: list[str] = []
    for index, port in gone:
        changes.append(f"switch {switch}: port {port.name} removed")
        if not _claims(port) & taken:
            removals.append((switch, port.name))
            continue
        node.dataplane.remove_port(switch, port.name)
        restore = functools.partial(devices.attach_port, switch, index, port)
        steps.callback(undo, f"restore port {port.name} of switch {switch}", restore)
    for index, port in come:
        devices.attach_port(switch, index, port)
        remove = functools.partial(node.dataplane.remove_port, switch, port.name)
        steps.callback(undo, f"remove the new port {port.name} of switch {switch}", remove)
        changes.append(f"switch {switch}: port {port.name} added")
    return changes


def _claims(port: PortConfig) -> set[str]:
    """What two ports cannot both hold: the port name, its kernel interface, and the path or
    UDP address a socket port binds."""
    ifname = port_type(port).interface(port)
    endpoint = port_endpoint(port)
    return {port.name} | {c for c in (ifname, endpoint) if c is not None}


def _prepare_carpifs(node: "Node", steps: ExitStack, wanted: Wanted) -> None:
    """Validate the carp interfaces as they will be (`wanted`) and swap the TAPs whose MAC,
    addresses or switch change."""
    host = node.core()
    assert node.datapath is not None
    devices = node.devices
    final = {name: sc.params for name, sc in host.carpifs.items()}
    for name, params in wanted.items():
        if params is None:
            final.pop(name, None)
        else:
            final[name] = params
    try:
        check = CarpHost(host.sysctls, list(final.values()), node.carpdevs, cookie)
    except ValueError as exc:
        raise ConfigError([f"carp: {exc}"]) from None
    new_macs = DataPath(check).tap_macs
    old_macs = node.datapath.tap_macs
    swap: list[str] = []
    add: list[str] = []
    for name, params in wanted.items():
        current = host.carpifs.get(name)
        if current is not None:
            was = (current.carpdev, old_macs[name], current.params.addresses)
            if params is None or was != (params.carpdev, new_macs[name], params.addresses):
                swap.append(name)
        if params is not None and (current is None or name in swap):
            add.append(name)
    for name in swap:
        sc = host.carpifs[name]
        devices.close_carp_tap(name)
        reopen = functools.partial(
            _reopen_carp_tap, node, name, sc.params, old_macs[name], sc.carrier
        )
        steps.callback(undo, f"restore the carp TAP {name}", reopen)
    for name in add:
        params = wanted[name]
        assert params is not None
        devices.open_carp_tap(name, params.carpdev, new_macs[name], params.addresses)
        close = functools.partial(devices.close_carp_tap, name)
        steps.callback(undo, f"remove the new carp TAP {name}", close)


def _reopen_carp_tap(
    node: "Node", name: str, params: CarpIfParams, mac: bytes, carrier: bool
) -> None:
    dev = node.devices.open_carp_tap(name, params.carpdev, mac, params.addresses)
    if carrier:
        node.system.set_carrier(dev, True)


def _commit_carpifs(node: "Node", now: float, wanted: Wanted) -> list[Action]:
    """The core's part of a change `_prepare_carpifs` validated: SIOCSVH in place where the
    state is kept (§4.9: advbase, advskew, pass, carppeer), a new interface otherwise."""
    host = node.core()
    # a vhid passed between changing interfaces of one carpdev would clash half-way: the
    # interface taking it leaves first and comes back after the others
    last = [
        name
        for name, params in wanted.items()
        if params is not None and _takes_vhid(host, name, params)
    ]
    actions: list[Action] = []
    for name, params in wanted.items():
        if (params is None or name in last) and name in host.carpifs:
            actions += host.replace_carpif(now, name, None)
    for name in [n for n in wanted if n not in last] + last:
        params = wanted[name]
        if params is None:
            continue
        current = host.carpifs.get(name)
        if current is not None and keeps_state(current.params, params):
            actions += host.update_carpif(now, name, params)
        else:
            actions += host.replace_carpif(now, name, params)
    node.refresh()  # new MACs and peers, before any frame of the new interfaces
    return actions


def _takes_vhid(host: CarpHost, name: str, params: CarpIfParams) -> bool:
    vhids = {n.vhid for n in params.carpnodes}
    return any(
        other != name and sc.carpdev == params.carpdev and vhids & {v.vhid for v in sc.vhes}
        for other, sc in host.carpifs.items()
    )
