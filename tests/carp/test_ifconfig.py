"""The ifconfig / hostname.if line parser (protocol.md §9)."""

import pytest

from carp.ifconfig import Word, parse_ifconfig, split_carpnodes

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
        "addresses": ["192.0.2.10/255.255.255.0", "2001:db8::10/64"],
        "carpnodes": [{"vhid": "10", "advskew": "0"}],
    }
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
