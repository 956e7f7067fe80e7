"""vswitch ifconfig: option parsing, applying a change to CarpIfParams, carp(4)-style status."""

import re
from ipaddress import IPv4Address, IPv4Interface, IPv6Interface, ip_interface

import pytest

from carp.constants import Balancing, State
from carp.params import CarpIfParams, CarpNodeParams
from vswitch.ifconfig_cmd import (
    AddressChange,
    IfconfigChange,
    apply_params,
    parse_carpnodes,
    parse_demote,
    parse_ifconfig,
    render_group,
    render_status,
)
from vswitch.status import CarpIfStatus, CarpNodeStatus, NodeStatus


def base(**kw: object) -> CarpIfParams:
    values: dict[str, object] = {
        "name": "carp0",
        "carpdev": "lan0",
        "addresses": (IPv4Interface("192.0.2.10/24"),),
        "carpnodes": (CarpNodeParams(1, 0),),
    }
    values.update(kw)
    return CarpIfParams(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("words", "address"),
    [
        (["192.0.2.20/24"], "192.0.2.20/24"),
        (["inet", "192.0.2.20", "255.255.255.0"], "192.0.2.20/24"),
        (["inet", "192.0.2.20", "netmask", "0xffffff80"], "192.0.2.20/25"),
        (["inet", "192.0.2.20", "255.255.255.0", "192.0.2.255"], "192.0.2.20/24"),
        (["inet", "192.0.2.20", "255.255.255.0", "NONE"], "192.0.2.20/24"),
        (["inet", "192.0.2.20/24", "broadcast", "192.0.2.255"], "192.0.2.20/24"),
        (["inet6", "2001:db8::10", "64"], "2001:db8::10/64"),
        (["inet6", "2001:db8::10", "prefixlen", "48"], "2001:db8::10/48"),
        (["inet6", "2001:db8::10"], "2001:db8::10/64"),
        (["2001:db8::10/96"], "2001:db8::10/96"),
    ],
)
def test_address_forms(words: list[str], address: str) -> None:
    change = parse_ifconfig(words)
    assert change.address == AddressChange(ip_interface(address), "set")


def test_address_with_options_around_it() -> None:
    words = "inet 192.0.2.20 255.255.255.0 NONE vhid 10 carpdev em0 pass s3cret advskew 100"
    change = parse_ifconfig(words.split())
    assert change.address == AddressChange(IPv4Interface("192.0.2.20/24"), "set")
    assert change.carpnodes == (CarpNodeParams(10, 0),)
    assert change.keep_leader_advskew
    assert (change.carpdev, change.passphrase, change.advskew) == ("em0", b"s3cret", 100)


def test_alias_and_delete() -> None:
    assert parse_ifconfig(["192.0.2.11/24", "alias"]).address == AddressChange(
        IPv4Interface("192.0.2.11/24"), "alias"
    )
    for word in ("-alias", "delete"):
        change = parse_ifconfig(["inet6", "2001:db8::11", "64", word])
        assert change.address == AddressChange(IPv6Interface("2001:db8::11/64"), "delete")


def test_options() -> None:
    change = parse_ifconfig(
        [
            "carpnodes",
            "2:100,1:0",
            "advbase",
            "0",
            "balancing",
            "ip-stealth",
            "carppeer",
            "198.51.100.7",
            "state",
            "MASTER",
            "up",
            "group",
            "lab",
            "-group",
            "carp",
        ]
    )
    assert change.carpnodes == (CarpNodeParams(1, 0), CarpNodeParams(2, 100))
    assert not change.keep_leader_advskew
    assert change.advbase == 0
    assert change.balancing is Balancing.IP_STEALTH
    assert change.carppeer == IPv4Address("198.51.100.7")
    assert change.state is State.MASTER
    assert change.admin_up is True
    assert (change.groups_add, change.groups_remove) == (("lab",), ("carp",))
    assert change.changes_params


def test_state_and_down_do_not_change_params() -> None:
    change = parse_ifconfig(["state", "backup", "down"])
    assert change == IfconfigChange(state=State.BACKUP, admin_up=False)
    assert not change.changes_params
    assert parse_ifconfig(["-carppeer"]).clear_carppeer


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["vhid", "0"], "vhid 0: out of range 1..255"),
        (["vhid", "256"], "out of range 1..255"),
        (["vhid"], "vhid: missing value"),
        (["advskew", "255"], "advskew 255: out of range 0..254"),
        (["advbase", "x"], "advbase x: not a number"),
        (["balancing", "carp"], "balancing carp: unknown mode"),
        (["carppeer", "2001:db8::1"], "carppeer 2001:db8::1: not an IPv4 address"),
        (["state", "sleepy"], "state sleepy: use init, backup or master"),
        (["frobnicate"], "frobnicate: unknown option"),
        (["192.0.2.10"], "give a prefix length"),
        (["inet", "2001:db8::1/64"], "wrong address family"),
        (["inet6", "192.0.2.1/24"], "wrong address family"),
        (["inet"], "inet: missing address"),
        (["inet", "gateway"], "gateway: not an IPv4 or IPv6 address"),
        (["inet", "192.0.2.1", "255.0.255.0"], "not a contiguous netmask"),
        (["inet", "192.0.2.1", "netmask", "0xzz"], "not a netmask"),
        (["192.0.2.1/24", "192.0.2.2/24"], "one address per command"),
        (["alias"], "no address given"),
        (["netmask", "255.255.255.0"], "must follow an address"),
        (["192.0.2.1/33"], "192.0.2.1/33"),
        (["carpnodes", "1:0,1:5"], "vhid 1 appears twice"),
        (["carpnodes", "1-0"], "is not vhid:advskew"),
        (["carpnodes", "1:255"], "advskew 255: out of range"),
    ],
)
def test_bad_words(words: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_ifconfig(words)


def test_carpnodes_limit() -> None:
    text = ",".join(f"{v}:0" for v in range(1, 34))
    with pytest.raises(ValueError, match="too many carp nodes"):
        parse_carpnodes(text)
    assert len(parse_carpnodes(",".join(f"{v}:0" for v in range(1, 33)))) == 32


def test_parse_demote() -> None:
    assert parse_demote("carpdemote", None) == 1
    assert parse_demote("carpdemote", "50") == 50
    assert parse_demote("-carpdemote", "50") == -50
    assert parse_demote("-carpdemote", None) == -1
    with pytest.raises(ValueError, match=r"out of range 0\.\.128"):
        parse_demote("carpdemote", "129")
    with pytest.raises(ValueError, match="expected carpdemote"):
        parse_demote("demote", None)


# ---- apply_params ----


def test_vhid_keeps_leader_advskew_and_forces_none() -> None:
    params = base(carpnodes=(CarpNodeParams(1, 50), CarpNodeParams(2, 0)), balancing=Balancing.IP)
    new = apply_params(params, parse_ifconfig(["vhid", "7"]))
    assert new.carpnodes == (CarpNodeParams(7, 50),)
    assert new.balancing is Balancing.NONE  # section 6.1: one vhid forces none


def test_carpnodes_turn_none_into_ip_but_keep_explicit_modes() -> None:
    new = apply_params(base(), parse_ifconfig(["carpnodes", "1:0,2:100"]))
    assert new.balancing is Balancing.IP
    new = apply_params(
        base(balancing=Balancing.IP_UNICAST), parse_ifconfig(["carpnodes", "1:0,2:100"])
    )
    assert new.balancing is Balancing.IP_UNICAST
    new = apply_params(base(), parse_ifconfig(["carpnodes", "1:0,2:100", "balancing", "none"]))
    assert new.balancing is Balancing.NONE


def test_unchanged_vhid_list_keeps_balancing() -> None:
    params = base(balancing=Balancing.ARP)
    assert apply_params(params, parse_ifconfig(["vhid", "1"])).balancing is Balancing.ARP


def test_advskew_sets_the_leader() -> None:
    params = base(carpnodes=(CarpNodeParams(1, 0), CarpNodeParams(2, 100)))
    new = apply_params(params, parse_ifconfig(["advskew", "20"]))
    assert new.carpnodes == (CarpNodeParams(1, 20), CarpNodeParams(2, 100))
    new = apply_params(params, parse_ifconfig(["carpnodes", "3:5,4:6", "advskew", "9"]))
    assert new.carpnodes == (CarpNodeParams(3, 9), CarpNodeParams(4, 6))
    with pytest.raises(ValueError, match="set a vhid first"):
        apply_params(base(carpnodes=()), parse_ifconfig(["advskew", "1"]))


def test_scalar_options_apply() -> None:
    params = base(carppeer=IPv4Address("198.51.100.7"))
    words = "advbase 3 pass other balancing arp carpdev lan1 group lab -group carp -carppeer"
    new = apply_params(params, parse_ifconfig(words.split()))
    assert (new.advbase, new.passphrase, new.balancing) == (3, b"other", Balancing.ARP)
    assert (new.carpdev, new.groups, new.carppeer) == ("lan1", ("lab",), None)
    peer = apply_params(base(), parse_ifconfig(["carppeer", "198.51.100.9"])).carppeer
    assert peer == IPv4Address("198.51.100.9")
    assert apply_params(params, parse_ifconfig(["state", "master"])) == params


def test_addresses_apply() -> None:
    params = base(
        addresses=(IPv4Interface("192.0.2.10/24"), IPv6Interface("2001:db8::10/64")),
    )
    replaced = apply_params(params, parse_ifconfig(["192.0.2.20/24"])).addresses
    assert replaced == (IPv4Interface("192.0.2.20/24"), IPv6Interface("2001:db8::10/64"))
    added = apply_params(params, parse_ifconfig(["192.0.2.20/24", "alias"])).addresses
    assert added[-1] == IPv4Interface("192.0.2.20/24") and len(added) == 3
    v6 = apply_params(params, parse_ifconfig(["inet6", "2001:db8::11"])).addresses
    assert v6[-1] == IPv6Interface("2001:db8::11/64") and len(v6) == 3
    prefix = apply_params(params, parse_ifconfig(["192.0.2.10/25", "alias"])).addresses
    assert prefix[0] == IPv4Interface("192.0.2.10/25") and len(prefix) == 2
    gone = apply_params(params, parse_ifconfig(["2001:db8::10/64", "-alias"])).addresses
    assert gone == (IPv4Interface("192.0.2.10/24"),)
    first = apply_params(base(addresses=()), parse_ifconfig(["192.0.2.30/24"])).addresses
    assert first == (IPv4Interface("192.0.2.30/24"),)
    with pytest.raises(ValueError, match=r"192\.0\.2\.99: not an address of carp0"):
        apply_params(params, parse_ifconfig(["192.0.2.99/24", "delete"]))


# ---- status rendering ----


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
