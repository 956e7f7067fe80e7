"""The ifconfig grammar and its two folds (protocol.md §9): a config file's ifconfig lines, and
`vswitch ifconfig carpN ...` applied to a running interface (tests/carp/test_ifconfig_table.py
checks that both agree option by option)."""

import re
from ipaddress import IPv4Address, IPv4Interface, IPv6Interface

import pytest

from carp.constants import Balancing, State
from carp.ifconfig import (
    IfconfigChange,
    Word,
    apply_params,
    parse_change,
    parse_demote,
    parse_ifconfig,
    split_carpnodes,
)
from carp.params import CarpIfParams, CarpNodeParams

# protocol.md §9.2, host A (two lines), host B and the load-balanced pair
HOST_A = [
    "inet 192.0.2.10 255.255.255.0 192.0.2.255 vhid 10 carpdev em0 pass s3cret advskew 0",
    "inet6 2001:db8::10 64",
]
HOST_B = "inet 192.0.2.10 255.255.255.0 192.0.2.255 vhid 10 carpdev em0 pass s3cret advskew 100"
BALANCED = (
    "inet 192.0.2.20 255.255.255.0 NONE carpdev em1 carpnodes 1:0,2:100 balancing ip pass s3cret"
)


def messages(value: str | list[str]) -> list[str]:
    return [error.message for error in parse_ifconfig(value).errors]


def test_hostname_if_host_a() -> None:
    parsed = parse_ifconfig(HOST_A)
    assert parsed.errors == []
    assert parsed.fields == {
        "carpdev": "em0",
        "pass": "s3cret",
        "balancing": "none",  # §6.1: the line set a one-vhid list
        "addresses": ["192.0.2.10/255.255.255.0", "2001:db8::10/64"],
        "carpnodes": [{"vhid": "10", "advskew": "0"}],
    }
    assert ("balancing",) not in parsed.origins  # a default: no word to blame
    assert parsed.origins[("addresses", 1)] == Word(1, 2, "2001:db8::10 64")
    assert parsed.origins[("carpnodes", 0, "advskew")] == Word(0, 11, "advskew 0")
    assert parsed.origins[("carpdev",)] == Word(0, 7, "carpdev em0")


def test_hostname_if_host_b_single_string() -> None:
    parsed = parse_ifconfig(HOST_B)
    assert parsed.errors == []
    assert parsed.fields["carpnodes"] == [{"vhid": "10", "advskew": "100"}]
    assert parsed.origins[("carpnodes", 0, "vhid")] == Word(None, 5, "vhid 10")
    # the broadcast address is consumed with the address, not taken for an option
    assert parsed.origins[("addresses", 0)].text == "192.0.2.10 255.255.255.0 192.0.2.255"


def test_hostname_if_load_balanced() -> None:
    parsed = parse_ifconfig(BALANCED)
    assert parsed.errors == []
    assert parsed.fields == {
        "carpdev": "em1",
        "balancing": "ip",
        "pass": "s3cret",
        "addresses": ["192.0.2.20/255.255.255.0"],
        "carpnodes": [{"vhid": "1", "advskew": "0"}, {"vhid": "2", "advskew": "100"}],
    }


def test_design_example_bare_address() -> None:
    parsed = parse_ifconfig(
        "192.0.2.10/24 carpdev lan0 carpnodes 1:0,2:100 balancing ip pass secret"
    )
    assert parsed.errors == []
    assert parsed.fields["addresses"] == ["192.0.2.10/24"]
    assert parsed.origins[("addresses", 0)] == Word(None, 1, "192.0.2.10/24")


@pytest.mark.parametrize(
    ("line", "address"),
    [
        ("inet 192.0.2.10 0xffffff00 NONE vhid 1", "192.0.2.10/255.255.255.0"),
        ("inet 192.0.2.10 netmask 255.255.255.128 vhid 1", "192.0.2.10/255.255.255.128"),
        ("vhid 1 192.0.2.10 netmask 0xffff0000", "192.0.2.10/255.255.0.0"),
        ("inet 192.0.2.10 0x0 vhid 1", "192.0.2.10/0.0.0.0"),  # inet_aton: one number, any length
        ("inet 192.0.2.10/24 192.0.2.255 vhid 1", "192.0.2.10/24"),
        ("inet6 2001:db8::10 vhid 1", "2001:db8::10/64"),
        ("inet6 2001:db8::10 prefixlen 48 vhid 1", "2001:db8::10/48"),
        ("2001:db8::10/56 vhid 1", "2001:db8::10/56"),
        ("inet 192.0.2.10 vhid 1", "192.0.2.10"),  # no mask: the model asks for one
    ],
)
def test_address_forms(line: str, address: str) -> None:
    parsed = parse_ifconfig(line)
    assert parsed.errors == []
    assert parsed.fields["addresses"] == [address]


def test_address_lines_apply_in_order() -> None:
    parsed = parse_ifconfig(
        [
            "inet 192.0.2.10/24 vhid 1",
            "inet alias 192.0.2.11/24",
            "inet6 2001:db8::10",
            "inet 192.0.2.12/24",  # no alias: replaces the primary IPv4 address (SIOCDIFADDR)
            "inet6 2001:db8::11/64",  # inet6 without alias adds
            "192.0.2.11/25 alias",  # an existing address is updated in place
            "2001:db8::10 -alias",
        ]
    )
    assert parsed.errors == []
    assert parsed.fields["addresses"] == ["192.0.2.12/24", "192.0.2.11/25", "2001:db8::11/64"]
    assert parsed.origins[("addresses", 0)] == Word(3, 2, "192.0.2.12/24")
    assert parsed.origins[("addresses", 1)] == Word(5, 1, "192.0.2.11/25")


def test_unparsable_addresses_are_matched_as_text() -> None:
    # the model reports them; the parser still applies alias / -alias by their text
    parsed = parse_ifconfig(["foo:bar vhid 1", "foo:bar/64 alias", "inet6 foo:baz"])
    assert parsed.errors == []
    assert parsed.fields["addresses"] == ["foo:bar/64", "foo:baz/64"]


def test_delete_of_a_missing_address() -> None:
    assert messages(["192.0.2.10/24 vhid 1", "delete 192.0.2.99"]) == [
        "not an address of this interface"
    ]


def test_vhid_and_advskew_in_either_order() -> None:
    one = parse_ifconfig("advskew 100 vhid 10 192.0.2.10/24")
    two = parse_ifconfig("192.0.2.10/24 vhid 10 advskew 100")
    assert one.fields == two.fields
    assert one.fields["carpnodes"] == [{"vhid": "10", "advskew": "100"}]


def test_advskew_sets_the_leader_of_carpnodes() -> None:
    parsed = parse_ifconfig(["carpnodes 1:0,2:100", "advskew 50"])
    assert parsed.fields["carpnodes"] == [
        {"vhid": "1", "advskew": "50"},
        {"vhid": "2", "advskew": "100"},
    ]
    assert parsed.origins[("carpnodes", 0, "advskew")] == Word(1, 1, "advskew 50")
    assert parsed.origins[("carpnodes", 1, "advskew")] == Word(0, 1, "carpnodes 1:0,2:100")


def test_vhid_replaces_carpnodes() -> None:
    parsed = parse_ifconfig("carpnodes 1:10,2:100 vhid 7")
    # like carpr_vhids: one vhid now, the leader keeps carpr_advskews[0]
    assert parsed.fields["carpnodes"] == [{"vhid": "7", "advskew": "10"}]


def test_advskew_without_vhid_is_passed_on() -> None:
    parsed = parse_ifconfig("advskew 5")
    assert parsed.fields == {"advskew": "5"}
    assert parsed.origins[("advskew",)] == Word(None, 1, "advskew 5")


def test_flags_groups_and_peer() -> None:
    parsed = parse_ifconfig(
        [
            "192.0.2.10/24 vhid 1 carppeer 198.51.100.7 group gateway group uplink down",
            "-group uplink -carppeer lladdr 02:00:5e:00:01:0a up",
        ]
    )
    assert parsed.errors == []
    assert parsed.fields["groups"] == ["carp", "gateway"]
    assert parsed.fields["carppeer"] is None
    assert parsed.fields["state"] == "up"
    assert parsed.fields["lladdr"] == "02:00:5e:00:01:0a"
    assert parsed.origins[("groups", 1)] == Word(0, 6, "group gateway")
    assert parsed.origins[("state",)] == Word(1, 6, "up")


def test_quoting_and_comments() -> None:
    parsed = parse_ifconfig(["# a comment line", "vhid 1 pass 'two words' # trailing"])
    assert parsed.errors == []
    assert parsed.fields["pass"] == "two words"
    assert parsed.fields["carpnodes"] == [{"vhid": "1", "advskew": "0"}]


@pytest.mark.parametrize(
    ("value", "word", "message"),
    [
        (
            "vhd 3 advbase 1",
            Word(None, 1, "vhd"),
            "unknown option or address 'vhd' (did you mean vhid?)",
        ),
        (
            "vhid 1 frobnicate",
            Word(None, 3, "frobnicate"),
            "unknown option or address 'frobnicate'",
        ),
        ("vhid 1 advskew", Word(None, 3, "advskew"), "advskew needs a value (advskew VALUE)"),
        (
            "inet 2001:db8::1 vhid 1",
            Word(None, 2, "2001:db8::1"),
            "is not an inet address (use inet6)",
        ),
        ("inet6 192.0.2.1/24", Word(None, 2, "192.0.2.1/24"), "is not an inet6 address (use inet)"),
        (
            "192.0.2.1/24 192.0.2.2/24",
            Word(None, 2, "192.0.2.2/24"),
            "a second address on one line",
        ),
        (
            "vhid 1 netmask 255.0.0.0",
            Word(None, 3, "netmask 255.0.0.0"),
            "needs an address earlier",
        ),
        (
            "2001:db8::1 netmask 255.0.0.0",
            Word(None, 2, "netmask 255.0.0.0"),
            "not an IPv4 netmask",
        ),
        ("192.0.2.1 prefixlen 24", Word(None, 2, "prefixlen 24"), "applies to inet6 addresses"),
        ("192.0.2.1/24 broadcast foo", Word(None, 2, "broadcast foo"), "not an IPv4 broadcast"),
        ("state master", Word(None, 1, "state master"), "state is a runtime command"),
        ("carpnodes 1:0,2", Word(None, 1, "carpnodes 1:0,2"), "entry 1 '2' is not vhid:advskew"),
        ("-group carp", Word(None, 1, "-group carp"), "every carp interface stays in group carp"),
        ("-group lab", Word(None, 1, "-group lab"), "not a member of group 'lab'"),
        ("inet vhid 1", Word(None, 1, "inet"), "inet without an address"),
        ("vhid 1 inet6", Word(None, 3, "inet6"), "inet6 without an address"),
        ("inet inet6 2001:db8::1", Word(None, 2, "inet6"), "one address family per line"),
    ],
)
def test_syntax_errors_name_the_word(value: str, word: Word, message: str) -> None:
    errors = parse_ifconfig(value).errors
    assert len(errors) == 1, errors
    assert errors[0].word == word
    assert message in errors[0].message


def test_misspelt_option_skips_its_value() -> None:
    # one error for "advskw 100", not a second one for "100"
    assert len(parse_ifconfig("vhid 1 advskw 100").errors) == 1


def test_errors_carry_the_line_and_parsing_goes_on() -> None:
    errors = parse_ifconfig(["vhid 1", "pass 'open", 7, "carpdevv lan0 advbase"]).errors  # type: ignore[list-item]
    assert [(e.line, e.word.index if e.word else None) for e in errors] == [
        (1, None),
        (2, None),
        (3, 1),
        (3, 3),
    ]
    assert "cannot split the line" in errors[0].message
    assert errors[1].message == "expected a string, got 7"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1:0", [{"vhid": "1", "advskew": "0"}]),
        (" 2:100 , 1:0", [{"vhid": "2", "advskew": "100"}, {"vhid": "1", "advskew": "0"}]),
    ],
)
def test_split_carpnodes(text: str, expected: list[dict[str, str]]) -> None:
    assert split_carpnodes(text) == expected


@pytest.mark.parametrize("text", ["", "1", "1:0,", "a:b", "1:0:2", "1:-1"])
def test_split_carpnodes_rejects(text: str) -> None:
    result = split_carpnodes(text)
    assert isinstance(result, str)
    assert "is not vhid:advskew" in result


def balancing(lines: list[str]) -> object:
    return parse_ifconfig(lines).fields["balancing"]


def test_balancing_default_applies_per_line_when_the_vhid_list_changes() -> None:
    # §6.1 carp_vhids_ioctl, as netstart feeds each line to ifconfig: a new one-vhid list forces
    # none, a new longer one turns none into ip; an explicit balancing on the line wins
    assert balancing(["carpnodes 1:0,2:0 balancing arp", "vhid 3"]) == "none"
    assert balancing(["vhid 1 balancing arp", "vhid 1"]) == "arp"  # the same list
    assert balancing(["balancing NONE", "carpnodes 1:0,2:0"]) == "ip"
    assert balancing(["vhid 1 balancing arp", "vhid 2 balancing arp"]) == "arp"
    kept = parse_ifconfig(["carpnodes 1:0,2:0 balancing ip-stealth", "carpnodes 1:0,2:0,3:0"])
    assert kept.fields["balancing"] == "ip-stealth"
    assert kept.origins[("balancing",)] == Word(0, 3, "balancing ip-stealth")


def test_the_leader_is_the_lowest_vhid() -> None:
    parsed = parse_ifconfig(["carpnodes 2:100,1:0", "advskew 50", "vhid 9"])
    assert parsed.fields["carpnodes"] == [{"vhid": "9", "advskew": "50"}]
    assert parsed.origins[("carpnodes", 0, "advskew")] == Word(1, 1, "advskew 50")


def test_alias_needs_an_address() -> None:
    assert messages("vhid 1 -alias") == ["-alias needs an address on the same line"]


# ---- `vswitch ifconfig carpN ...`: parse_change and apply_params ----


def base(**kw: object) -> CarpIfParams:
    values: dict[str, object] = {
        "name": "carp0",
        "carpdev": "lan0",
        "addresses": (IPv4Interface("192.0.2.10/24"),),
        "carpnodes": (CarpNodeParams(1, 0),),
    }
    values.update(kw)
    return CarpIfParams(**values)  # type: ignore[arg-type]


def apply(params: CarpIfParams, words: str) -> CarpIfParams:
    return apply_params(params, parse_change(words.split()))


def test_no_operation_gives_the_same_interface() -> None:
    # the running interface survives the trip through the key form and CarpConfig
    params = base(
        carpdev="",
        addresses=(IPv4Interface("192.0.2.10/24"), IPv6Interface("2001:db8::10/64")),
        carpnodes=(CarpNodeParams(1, 10), CarpNodeParams(2, 100)),
        advbase=3,
        passphrase=b"s3cret",
        balancing=Balancing.IP_UNICAST,
        carppeer=IPv4Address("198.51.100.7"),
        groups=("carp", "gateway"),
        lladdr=bytes.fromhex("02005e00010a"),
        admin_up=False,
    )
    assert apply_params(params, IfconfigChange()) == params


@pytest.mark.parametrize(
    ("words", "address"),
    [
        ("192.0.2.20/24", "192.0.2.20/24"),
        ("inet 192.0.2.20 255.255.255.0", "192.0.2.20/24"),
        ("inet 192.0.2.20 netmask 0xffffff80", "192.0.2.20/25"),
        ("inet 192.0.2.20 255.255.255.0 192.0.2.255", "192.0.2.20/24"),
        ("inet 192.0.2.20 255.255.255.0 NONE", "192.0.2.20/24"),
        ("inet 192.0.2.20/24 broadcast 192.0.2.255", "192.0.2.20/24"),
        ("inet6 2001:db8::10 64", "2001:db8::10/64"),
        ("inet6 2001:db8::10 prefixlen 48", "2001:db8::10/48"),
        ("inet6 2001:db8::10", "2001:db8::10/64"),
        ("2001:db8::10/96", "2001:db8::10/96"),
    ],
)
def test_runtime_address_forms(words: str, address: str) -> None:
    new = apply(base(addresses=(IPv4Interface("192.0.2.10/24"),)), words)
    expected = IPv4Interface(address) if ":" not in address else IPv6Interface(address)
    assert new.addresses[-1] == expected
    assert len(new.addresses) == (1 if isinstance(expected, IPv4Interface) else 2)


def test_change_splits_runtime_parts_from_parameters() -> None:
    change = parse_change(["state", "backup", "down"])
    assert change == IfconfigChange(state=State.BACKUP, admin_up=False)
    assert not change.changes_params
    words = "inet 192.0.2.20 255.255.255.0 NONE vhid 10 state MASTER up"
    change = parse_change(words.split())
    assert (change.state, change.admin_up, change.changes_params) == (State.MASTER, True, True)
    assert parse_change(["-carppeer"]).changes_params


def test_options_apply_together() -> None:
    words = "inet 192.0.2.20 255.255.255.0 NONE vhid 10 carpdev em0 pass s3cret advskew 100"
    new = apply(base(), words)
    assert new.addresses == (IPv4Interface("192.0.2.20/24"),)
    assert new.carpnodes == (CarpNodeParams(10, 100),)
    assert (new.carpdev, new.passphrase) == ("em0", b"s3cret")
    words = "carpnodes 2:100,1:0 advbase 0 balancing ip-stealth carppeer 198.51.100.7 group lab"
    new = apply(base(), words)
    assert new.carpnodes == (CarpNodeParams(1, 0), CarpNodeParams(2, 100))
    assert (new.advbase, new.balancing) == (0, Balancing.IP_STEALTH)
    assert (new.carppeer, new.groups) == (IPv4Address("198.51.100.7"), ("carp", "lab"))


@pytest.mark.parametrize(
    ("words", "message"),
    [
        ("vhid 0", "word 1 'vhid 0': 0 is out of range 1..255"),
        ("vhid", "word 1 'vhid': vhid needs a value (vhid VALUE)"),
        ("advskew 255", "word 1 'advskew 255': 255 is out of range 0..254"),
        ("advbase x", "word 1 'advbase x': 'x' is not a whole number"),
        ("balancing carp", "word 1 'balancing carp': 'carp' is not one of none, arp"),
        ("carppeer 2001:db8::1", "2001:db8::1 is IPv6; carppeer is IPv4 only"),
        ("state sleepy", "word 1 'state sleepy': 'sleepy' is not one of init, backup, master"),
        ("frobnicate", "word 1 'frobnicate': unknown option or address 'frobnicate'"),
        ("advskw 3", "word 1 'advskw': unknown option or address 'advskw' (did you mean advskew?)"),
        ("lladdr 02:00", "word 1 'lladdr 02:00': '02:00' is not a MAC address"),
        ("192.0.2.10", "word 1 '192.0.2.10': '192.0.2.10' has no prefix length"),
        ("inet 2001:db8::1/64", "'2001:db8::1/64' is not an inet address (use inet6)"),
        ("inet6 192.0.2.1/24", "'192.0.2.1/24' is not an inet6 address (use inet)"),
        ("inet", "word 1 'inet': inet without an address"),
        ("inet gateway", "word 2 'gateway': unknown option or address 'gateway'"),
        ("inet 192.0.2.1 255.0.255.0", "'192.0.2.1/255.0.255.0' is not an IPv4 or IPv6 address"),
        ("inet 192.0.2.1 netmask 0xzz", "word 3 'netmask 0xzz': '0xzz' is not an IPv4 netmask"),
        ("192.0.2.1/24 192.0.2.2/24", "word 2 '192.0.2.2/24': a second address on one line"),
        ("alias", "word 1 'alias': alias needs an address on the same line"),
        ("netmask 255.255.255.0", "netmask needs an address earlier on the same line"),
        ("192.0.2.1/33", "'192.0.2.1/33' is not an IPv4 or IPv6 address with a prefix"),
        ("carpnodes 1:0,1:5", "carpnodes[1].vhid: vhid 1 is already used by [0]"),
        ("carpnodes 1-0", "word 1 'carpnodes 1-0': entry 0 '1-0' is not vhid:advskew"),
        ("carpnodes 1:255", "carpnodes[0].advskew: 255 is out of range 0..254"),
        ("192.0.2.99/24 delete", "word 1 '192.0.2.99/24': not an address of this interface"),
        ("-group lab", "word 1 '-group lab': not a member of group 'lab'"),
        ("-group carp", "word 1 '-group carp': every carp interface stays in group carp"),
        ("192.0.2.10/24 delete", "addresses: a carp interface needs at least one address"),
    ],
)
def test_runtime_refusals_name_the_word(words: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        apply(base(), words)


def test_too_many_carpnodes() -> None:
    text = ",".join(f"{v}:0" for v in range(1, 34))
    with pytest.raises(ValueError, match=r"33 carpnodes, at most 32 \(CARP_MAXNODES\)"):
        apply(base(), f"carpnodes {text}")
    assert len(apply(base(), f"carpnodes {text.rsplit(',', 1)[0]}").carpnodes) == 32


def test_parse_demote() -> None:
    assert parse_demote("carpdemote", None) == 1
    assert parse_demote("carpdemote", "50") == 50
    assert parse_demote("-carpdemote", "50") == -50
    assert parse_demote("-carpdemote", None) == -1
    with pytest.raises(ValueError, match=r"carpdemote 129: 129 is out of range 0\.\.128"):
        parse_demote("carpdemote", "129")
    with pytest.raises(ValueError, match="'x' is not a whole number"):
        parse_demote("-carpdemote", "x")
    with pytest.raises(ValueError, match="expected carpdemote"):
        parse_demote("demote", None)


def test_vhid_keeps_leader_advskew_and_forces_none() -> None:
    params = base(carpnodes=(CarpNodeParams(1, 50), CarpNodeParams(2, 0)), balancing=Balancing.IP)
    new = apply(params, "vhid 7")
    assert new.carpnodes == (CarpNodeParams(7, 50),)
    assert new.balancing is Balancing.NONE  # section 6.1: one vhid forces none


def test_carpnodes_turn_none_into_ip_but_keep_explicit_modes() -> None:
    assert apply(base(), "carpnodes 1:0,2:100").balancing is Balancing.IP
    unicast = base(balancing=Balancing.IP_UNICAST)
    assert apply(unicast, "carpnodes 1:0,2:100").balancing is Balancing.IP_UNICAST
    assert apply(base(), "carpnodes 1:0,2:100 balancing none").balancing is Balancing.NONE
    assert apply(base(), "balancing none carpnodes 1:0,2:100").balancing is Balancing.NONE


def test_unchanged_vhid_set_keeps_balancing() -> None:
    # carp_vhids_ioctl compares the vhids only: new advskews are no new list
    params = base(balancing=Balancing.ARP)
    assert apply(params, "vhid 1").balancing is Balancing.ARP
    new = apply(params, "carpnodes 1:5")
    assert (new.carpnodes, new.balancing) == ((CarpNodeParams(1, 5),), Balancing.ARP)


def test_advskew_sets_the_leader() -> None:
    params = base(carpnodes=(CarpNodeParams(1, 0), CarpNodeParams(2, 100)))
    assert apply(params, "advskew 20").carpnodes == (CarpNodeParams(1, 20), CarpNodeParams(2, 100))
    new = apply(params, "carpnodes 4:6,3:5 advskew 9")
    assert new.carpnodes == (CarpNodeParams(3, 9), CarpNodeParams(4, 6))
    with pytest.raises(ValueError, match=re.escape("vhid: missing (add vhid = 1")):
        apply(base(carpnodes=()), "advskew 1")


def test_scalar_options_apply() -> None:
    params = base(carppeer=IPv4Address("198.51.100.7"), groups=("carp", "lab"))
    words = "advbase 3 pass other balancing arp carpdev lan1 group uplink -group lab -carppeer"
    new = apply(params, words)
    assert (new.advbase, new.passphrase, new.balancing) == (3, b"other", Balancing.ARP)
    assert (new.carpdev, new.groups, new.carppeer) == ("lan1", ("carp", "uplink"), None)
    assert apply(base(), "lladdr 02:00:5e:00:01:0a").lladdr == bytes.fromhex("02005e00010a")


def test_addresses_apply() -> None:
    params = base(addresses=(IPv4Interface("192.0.2.10/24"), IPv6Interface("2001:db8::10/64")))
    replaced = apply(params, "192.0.2.20/24").addresses
    assert replaced == (IPv4Interface("192.0.2.20/24"), IPv6Interface("2001:db8::10/64"))
    added = apply(params, "192.0.2.20/24 alias").addresses
    assert added[-1] == IPv4Interface("192.0.2.20/24") and len(added) == 3
    prefix = apply(params, "192.0.2.10/25 alias").addresses
    assert prefix[0] == IPv4Interface("192.0.2.10/25") and len(prefix) == 2
    gone = apply(params, "2001:db8::10/64 -alias").addresses
    assert gone == (IPv4Interface("192.0.2.10/24"),)
    only_v6 = base(addresses=(IPv6Interface("2001:db8::10/64"),))
    assert apply(only_v6, "192.0.2.30/24").addresses[-1] == IPv4Interface("192.0.2.30/24")


def test_every_problem_is_reported_and_nothing_is_applied() -> None:
    params = base()
    with pytest.raises(ValueError) as refused:
        apply(params, "advbase 300 -group lab balancing ipp")
    assert str(refused.value) == (
        "word 3 '-group lab': not a member of group 'lab'; "
        "word 1 'advbase 300': 300 is out of range 0..254; "
        "word 5 'balancing ipp': 'ipp' is not one of none, arp, ip, ip-unicast, ip-stealth"
    )
    with pytest.raises(ValueError) as unknown:
        parse_change(["vhd", "1", "stat", "master"])
    assert str(unknown.value) == (
        "word 1 'vhd': unknown option or address 'vhd' (did you mean vhid?); "
        "word 3 'stat': unknown option or address 'stat' (did you mean state?)"
    )
