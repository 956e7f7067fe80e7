"""vswitch ifconfig: carp(4)-style status (the options are carp's grammar: tests/carp)."""

import pytest

from vswitch.ifconfig_cmd import render_group, render_status
from vswitch.status import CarpIfStatus, CarpNodeStatus, NodeStatus


def vhe(vhid: int, state: str, advskew: int = 0) -> CarpNodeStatus:
    return {
        "vhid": vhid,
        "advskew": advskew,
        "state": state,
        "reason": None,
        "since": None,
        "transitions": 0,
        "peers": [],
    }


def carpif(name: str, nodes: list[CarpNodeStatus], **kw: object) -> CarpIfStatus:
    status: CarpIfStatus = {
        "name": name,
        "carpdev": "lan0",
        "lladdr": "00:00:5e:00:01:01",
        "advbase": 1,
        "balancing": "none",
        "carppeer": None,
        "addresses": ["192.0.2.10/24", "2001:db8::10/64"],
        "groups": ["carp"],
        "demote": 0,
        "admin_up": True,
        "running": True,
        "carrier": True,
        "carpnodes": nodes,
    }
    status.update(kw)  # type: ignore[typeddict-item]
    return status


def node(*carpifs: CarpIfStatus) -> NodeStatus:
    return {
        "node": "gw-a",
        "uptime": 1.0,
        "sysctl": {"allow": 1, "preempt": 0, "log": 2},
        "groups": {"carp": 3},
        "switches": [],
        "carp": list(carpifs),
        "carpstats": {},
    }


def test_render_single_vhid() -> None:
    text = render_status(node(carpif("carp0", [vhe(1, "MASTER", 100)])), "carp0")
    assert text.splitlines() == [
        "carp0: flags=8843<UP,BROADCAST,RUNNING,SIMPLEX,MULTICAST>",
        "\tlladdr 00:00:5e:00:01:01",
        "\tcarp: MASTER carpdev lan0 vhid 1 advbase 1 advskew 100",
        "\tgroups: carp",
        "\tstatus: master",
        "\tinet 192.0.2.10 netmask 0xffffff00 broadcast 192.0.2.255",
        "\tinet6 2001:db8::10 prefixlen 64",
    ]


def test_render_several_vhids_down_and_peer() -> None:
    status = carpif(
        "carp1",
        [vhe(1, "BACKUP"), vhe(2, "BACKUP", 100)],
        balancing="ip",
        carppeer="198.51.100.7",
        admin_up=False,
        running=False,
        addresses=[],
    )
    lines = render_status(node(status)).splitlines()
    assert lines[0] == "carp1: flags=8802<BROADCAST,SIMPLEX,MULTICAST>"
    assert lines[2] == "\tcarp: carpdev lan0 advbase 1 balancing ip carppeer 198.51.100.7"
    assert lines[3] == "\t\tstate BACKUP vhid 1 advskew 0"
    assert lines[4] == "\t\tstate BACKUP vhid 2 advskew 100"
    assert lines[-1] == "\tstatus: backup"


def test_render_all_and_unknown() -> None:
    status = node(carpif("carp0", [vhe(1, "INIT")]), carpif("carp1", [vhe(2, "MASTER")]))
    text = render_status(status)
    assert "carp0: flags" in text and "carp1: flags" in text
    assert "\tstatus: invalid" in text
    with pytest.raises(ValueError, match="carp7: no such carp interface"):
        render_status(status, "carp7")
    assert render_group(status, "carp") == "carp: carp demote count 3"
    with pytest.raises(ValueError, match="lab: no such interface group"):
        render_group(status, "lab")
