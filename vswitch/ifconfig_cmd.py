"""`vswitch ifconfig`: carp(4)-style status of the carp interfaces (protocol.md §9.1).

The options of a change are carp's ifconfig grammar (carp/ifconfig.py: `parse_change`,
`apply_params`, `parse_demote`); this module only renders what a node reports.
"""

from ipaddress import IPv4Interface, ip_interface

from vswitch.status import CarpIfStatus, NodeStatus, interface_status

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
