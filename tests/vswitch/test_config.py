"""The node configuration (design.md §4): both carp forms, defaults, every error with its path."""

from ipaddress import IPv4Address, IPv4Interface, IPv6Interface
from pathlib import Path

import pytest
from pydantic import ValidationError

from carp.constants import Balancing
from carp.params import CarpIfParams, CarpNodeParams, Sysctls
from vswitch.config import (
    ConfigError,
    NodeConfig,
    TapPortConfig,
    load_config,
    loads_config,
    parse_config,
)
from vswitch.configtypes import DEFAULT_METRICS

DATA = Path(__file__).parent.parent / "data"

HEAD = """
[node]
name = "gw-a"
[switch.lan0]
host = ["192.0.2.2/24"]
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        loads_config(text)
    return info.value.errors


def one_error(text: str) -> str:
    errors = errors_of(text)
    assert len(errors) == 1, errors
    return errors[0]


def carp(body: str) -> str:
    return HEAD + "[carp.carp0]\n" + body


# --- valid configurations ------------------------------------------------------------------------


def test_key_and_ifconfig_forms_give_equal_models() -> None:
    keys = load_config(DATA / "node-keys.toml")
    lines = load_config(DATA / "node-ifconfig.toml")
    assert keys == lines
    assert keys.carp_params() == lines.carp_params()
    assert keys.normalised(show_pass=True) == lines.normalised(show_pass=True)


def test_carp_params_of_the_example() -> None:
    carp0, carp1 = load_config(DATA / "node-keys.toml").carp_params()
    assert carp0 == CarpIfParams(
        name="carp0",
        carpdev="lan0",
        addresses=(IPv4Interface("192.0.2.10/24"), IPv6Interface("2001:db8::10/64")),
        carpnodes=(CarpNodeParams(10, 100),),
        advbase=1,
        passphrase=b"s3cret",
        balancing=Balancing.NONE,
        carppeer=None,
        groups=("carp", "gateway"),
        lladdr=None,
        admin_up=True,
    )
    # carpdev derived from the subnet of wan0's host address, nodes sorted by vhid (§6.1)
    assert carp1.carpdev == "wan0"
    assert carp1.carpnodes == (CarpNodeParams(1, 0), CarpNodeParams(2, 100))
    assert carp1.balancing is Balancing.IP


def test_sysctls() -> None:
    assert load_config(DATA / "node-keys.toml").sysctls() == Sysctls(True, True, 2)
    assert loads_config(HEAD).sysctls() == Sysctls(allow=True, preempt=False, log=2)
    text = HEAD + "[sysctl]\nallow = 0\npreempt = 1\nlog = -1\n"
    assert loads_config(text).sysctls() == Sysctls(allow=False, preempt=True, log=-1)


def test_defaults() -> None:
    config = loads_config('[node]\nname = "gw-b"\n')
    assert config.node.control == "/run/vswitch/gw-b.sock"
    assert config.node.metrics == DEFAULT_METRICS
    assert config.node.log == "stderr"
    assert config.switch == {} and config.carp == {} and config.hook == []
    switch = loads_config(HEAD).switch["lan0"]
    assert (switch.mode, switch.ageing, switch.ports, switch.host_mac) == (
        "learning",
        300,
        [],
        None,
    )


def test_carp_defaults() -> None:
    (params,) = loads_config(carp('addresses = ["192.0.2.10/24"]\nvhid = 3\n')).carp_params()
    assert params.carpdev == "lan0"
    assert params.carpnodes == (CarpNodeParams(3, 0),)
    assert (params.advbase, params.passphrase, params.balancing) == (1, b"", Balancing.NONE)
    assert (params.groups, params.carppeer, params.admin_up) == (("carp",), None, True)


@pytest.mark.parametrize(
    ("body", "balancing"),
    [
        ("vhid = 1", Balancing.NONE),
        ('carpnodes = "1:0,2:100"', Balancing.IP),
        ('vhid = 1\nbalancing = "ip-stealth"', Balancing.IP_STEALTH),
        ('carpnodes = "1:0,2:100"\nbalancing = "NONE"', Balancing.NONE),
        ('carpnodes = "1:0,2:100"\nbalancing = "arp"', Balancing.ARP),
        (
            'carpnodes = [{vhid = 2, advskew = 5}, "1:0"]\nbalancing = "ip-unicast"',
            Balancing.IP_UNICAST,
        ),
    ],
)
def test_balancing_defaults_and_choices(body: str, balancing: Balancing) -> None:
    (params,) = loads_config(carp(f'addresses = ["192.0.2.10/24"]\n{body}\n')).carp_params()
    assert params.balancing is balancing


def test_carp_options() -> None:
    (params,) = loads_config(
        carp(
            'addresses = ["192.0.2.10/24"]\nvhid = 9\nadvbase = 0\nadvskew = 254\n'
            'carppeer = "198.51.100.7"\nlladdr = "02-00-5E-00-01-09"\nstate = "down"\n'
            'groups = ["lab", "carp", "lab"]\n'
        )
    ).carp_params()
    assert params.carpnodes == (CarpNodeParams(9, 254),)
    assert params.advbase == 0
    assert params.carppeer == IPv4Address("198.51.100.7")
    assert params.lladdr == bytes.fromhex("02005e000109")
    assert params.admin_up is False
    assert params.groups == ("carp", "lab")


def test_carppeer_zero_is_the_multicast_group() -> None:
    (params,) = loads_config(
        carp('addresses = ["192.0.2.10/24"]\nvhid = 1\ncarppeer = "0.0.0.0"\n')
    ).carp_params()
    assert params.carppeer is None


def test_long_passphrase_is_kept_whole() -> None:
    # the key is its first 19 bytes (§2.1); auth.carp_key truncates, the config keeps it all
    phrase = "x" * 40
    (params,) = loads_config(
        carp(f'addresses = ["192.0.2.10/24"]\nvhid = 1\npass = "{phrase}"\n')
    ).carp_params()
    assert params.passphrase == phrase.encode()


@pytest.mark.parametrize(
    ("value", "expected"), [("false", None), ('""', None), ('"[::1]:9"', "[::1]:9")]
)
def test_metrics(value: str, expected: str | None) -> None:
    assert loads_config(f'[node]\nname = "n"\nmetrics = {value}\n').node.metrics == expected


def test_ports_and_hooks() -> None:
    config = loads_config(
        HEAD
        + 'ports = [{ name = "vm1", type = "tap", mac = "02:AA:00:00:00:01" }]\n'
        + "[[hook]]\ncommand = \"notify 'state change'\"\n"
        + '[[hook]]\ncommand = ["a"]\ntimeout = 2.5\non = "any"\n'
    )
    port = config.switch["lan0"].ports[0]
    assert (port.ifname, port.mac, port.netns) == ("vm1", "02:aa:00:00:00:01", None)
    assert config.hook[0].command == ["notify", "state change"]
    assert config.hook[0].timeout == 10.0
    assert config.hook[1].on == ["init", "backup", "master"]
    assert config.hook[1].timeout == 2.5


def test_same_vhid_on_different_carpdevs_is_fine() -> None:
    text = (
        HEAD
        + '[switch.lan1]\nhost = ["198.51.100.2/24"]\n'
        + '[carp.carp0]\naddresses = ["192.0.2.10/24"]\nvhid = 1\n'
        + '[carp.carp1]\naddresses = ["198.51.100.10/24"]\nvhid = 1\n'
    )
    assert [p.carpdev for p in loads_config(text).carp_params()] == ["lan0", "lan1"]


def test_normalised_masks_the_passphrase() -> None:
    config = load_config(DATA / "node-keys.toml")
    assert config.normalised()["carp"]["carp0"]["pass"] == "********"
    shown = config.normalised(show_pass=True)
    assert shown["carp"]["carp0"]["pass"] == "s3cret"
    assert shown["carp"]["carp0"]["vhid"] == 10
    assert shown["carp"]["carp1"]["carpnodes"] == "1:0,2:100"
    assert "vhid" not in shown["carp"]["carp1"]
    # the normalised data validates back to the same model
    assert parse_config(shown) == config


def test_python_dump_validates_back() -> None:
    config = load_config(DATA / "node-keys.toml")
    # addresses and carppeer as ipaddress objects, as code building a config would pass them
    again = NodeConfig.model_validate(config.model_dump(by_alias=True))
    assert again == config
    data = config.model_dump(by_alias=True)
    data["carp"]["carp0"]["carppeer"] = IPv4Address("198.51.100.7")
    assert NodeConfig.model_validate(data).carp["carp0"].carppeer == IPv4Address("198.51.100.7")


def test_model_validate_accepts_ifconfig_directly() -> None:
    data = {
        "node": {"name": "n"},
        "switch": {"lan0": {"host": ["192.0.2.2/24"]}},
        "carp": {"carp0": {"ifconfig": "192.0.2.10/24 vhid 4"}},
    }
    assert NodeConfig.model_validate(data).carp["carp0"].nodes[0].vhid == 4
    data["carp"] = {"carp0": {"ifconfig": "192.0.2.10/24 vhidd 4"}}
    with pytest.raises(ValidationError, match=r"carp\.carp0\.ifconfig: word 2 'vhidd'"):
        NodeConfig.model_validate(data)


# --- errors --------------------------------------------------------------------------------------

ERROR_CASES = [
    # (config text, the error it gives: path, message and fix)
    ("[node]\nname = 5\n", "node.name: expected a string, got 5"),
    ("node = 5\n", "node: expected a table, got 5"),
    (
        carp('addresses = ["192.0.2.10/24"]\ncarpnodes = 5\n'),
        "carp.carp0.carpnodes: expected a list, got 5",
    ),
    (
        carp('addresses = ["192.0.2.10/24"]\ncarpnodes = ["1:0", "x"]\n'),
        "carp.carp0.carpnodes[1]: 'x' is not vhid:advskew (e.g. \"2:100\")",
    ),
    (
        carp('addresses = ["192.0.2.10/24"]\ncarpnodes = [{vhid = 1, skew = 2}]\n'),
        "carp.carp0.carpnodes[0].skew: unknown key (did you mean advskew? known: vhid, advskew)",
    ),
    ("", 'node: missing (add a [node] table with name = "gw-a")'),
    (
        '[node]\nname = "a"\n[nodes]\n',
        "nodes: unknown section (did you mean node? known: node, sysctl, switch, carp, hook)",
    ),
    (
        '[node]\nname = "a b"\n',
        "node.name: 'a b' is not a valid node name (up to 64 letters, digits, '_', '.' or '-')",
    ),
    (
        '[node]\nname = "a"\ncontrol = "/' + "x" * 107 + '"\n',
        "node.control: '/"
        + "x" * 107
        + "' is not a usable socket path (1 to 107 bytes (sun_path))",
    ),
    (
        '[node]\nname = "a"\nmetrics = "localhost:1"\n',
        "node.metrics: 'localhost:1' is not an IP:port to listen on",
    ),
    (
        '[node]\nname = "a"\nmetrics = "127.0.0.1:70000"\n',
        "node.metrics: '127.0.0.1:70000' is not an IP:port",
    ),
    ('[node]\nname = "a"\nlog = "file"\n', "node.log: 'file' is not one of stderr, syslog"),
    (HEAD + '[sysctl]\npreempt = "yes"\n', "sysctl.preempt: 'yes' is not true or false"),
    (HEAD + "[sysctl]\nlog = true\n", "sysctl.log: True is not a whole number"),
    (HEAD + 'mode = "hubb"\n', "switch.lan0.mode: 'hubb' is not one of learning, hub"),
    (HEAD + "ageing = 0\n", "switch.lan0.ageing: 0 is not a positive number of seconds"),
    (
        HEAD + 'host_mac = "01:00:5e:00:00:01"\n',
        "switch.lan0.host_mac: '01:00:5e:00:00:01' is not a unicast MAC address (e.g. "
        "02:00:5e:10:00:01)",
    ),
    (
        HEAD + 'host_mac = "02:00"\n',
        "switch.lan0.host_mac: '02:00' is not a MAC address (write it as 02:00:5e:10:00:01)",
    ),
    (
        '[node]\nname = "a"\n[switch.lan0]\nhost = ["192.0.2.2"]\n',
        "switch.lan0.host[0]: '192.0.2.2' has no prefix length (write it as 192.0.2.2/24)",
    ),
    (
        '[node]\nname = "a"\n[switch.lan0]\nhost = ["2001:db8::2/64", "2001:db8::2/48"]\n',
        "switch.lan0.host[1]: address 2001:db8::2 is repeated (already at [0])",
    ),
    (
        '[node]\nname = "a"\n[switch.lan0]\nhost = "192.0.2.2/24"\n',
        "switch.lan0.host: expected a list, got '192.0.2.2/24'",
    ),
    (
        HEAD
        + 'ports = [{ name = "a", type = "tap" }, { name = "b", type = "tap" },\n'
        + '  { name = "c", type = "tun" }]\n',
        "switch.lan0.ports[2].type: 'tun' is not one of tap, raw",
    ),
    (
        HEAD + 'ports = [{ name = "up0", type = "raw" }]\n',
        "switch.lan0.ports[0].ifname: a raw port needs ifname (the interface to attach to)",
    ),
    (
        HEAD + 'ports = [{ name = "up0", type = "raw", ifname = "v", netns = "x" }]\n',
        "switch.lan0.ports[0].netns: netns applies to tap ports, not raw",
    ),
    (
        HEAD
        + 'ports = [{ name = "up0", type = "raw", ifname = "v", mac = "02:00:00:00:00:01" }]\n',
        "switch.lan0.ports[0].mac: mac applies to tap ports, not raw",
    ),
    (
        HEAD + 'ports = [{ name = "vm1", type = "tap", netns = "../x" }]\n',
        "switch.lan0.ports[0].netns: '../x' is not a valid network namespace name",
    ),
    (
        HEAD
        + 'ports = [{ name = "vm1", type = "tap" },\n'
        + '  { name = "vm1", type = "tap", ifname = "vm2" }]\n',
        "switch.lan0.ports[1].name: port name vm1 is already used by [0] (give each its own port "
        "name)",
    ),
    (
        HEAD + 'ports = [{ name = "a-very-long-name0", type = "tap" }]\n',
        "switch.lan0.ports[0].name: 'a-very-long-name0' is not a valid interface name (1 to 15 "
        "letters, digits, '_', '.' or '-')",
    ),
    (
        HEAD + 'ports = [{ name = "vm1", type = "tap", speed = 1 }]\n',
        "switch.lan0.ports[0].speed: unknown key (known: name, type, ifname, netns, mac, monitor, "
        "impair)",
    ),
    (
        HEAD + '[switch."lan/0"]\n',
        "switch.\"lan/0\": 'lan/0' is not a valid interface name (1 to 15 letters, digits, '_', "
        "'.' or '-')",
    ),
    (
        carp('addresses = ["192.0.2.10/24"]\ncarpnodes = "1:0,2:255"\n'),
        "carp.carp0.carpnodes[1].advskew: 255 is out of range 0..254",
    ),
    (
        carp('addresses = ["192.0.2.10/24"]\ncarpnodes = "1:0,256:0"\n'),
        "carp.carp0.carpnodes[1].vhid: 256 is out of range 1..255",
    ),
    (
        carp('addresses = ["192.0.2.10/24"]\ncarpnodes = "1:0,2:0,1:5"\n'),
        "carp.carp0.carpnodes[2].vhid: vhid 1 is already used by [0] (give each its own vhid)",
    ),
    (
        carp(
            'addresses = ["192.0.2.10/24"]\ncarpnodes = "'
            + ",".join(f"{v}:0" for v in range(1, 34))
            + '"\n'
        ),
        "carp.carp0.carpnodes: 33 carpnodes, at most 32 (CARP_MAXNODES)",
    ),
    (
        carp('addresses = ["192.0.2.10/24"]\ncarpnodes = "1-0"\n'),
        "carp.carp0.carpnodes: entry 0 '1-0' is not vhid:advskew (write the list as \"1:0,2:100\")",
    ),
    (
        carp('addresses = ["192.0.2.10/24"]\ncarpnodes = []\n'),
        'carp.carp0.carpnodes: an empty list (give at least one vhid:advskew, e.g. "1:0")',
    ),
    (
        carp('addresses = ["192.0.2.10/24"]\nvhid = 0\n'),
        "carp.carp0.vhid: 0 is out of range 1..255",
    ),
    (
        carp('addresses = ["192.0.2.10/24"]\nvhid = 1.5\n'),
        "carp.carp0.vhid: 1.5 is not a whole number",
    ),
    (
        carp('addresses = ["192.0.2.10/24"]\nvhid = 1\nadvskew = 255\n'),
        "carp.carp0.advskew: 255 is out of range 0..254",
    ),
    (
        carp('addresses = ["192.0.2.10/24"]\nvhid = 1\nadvbase = 255\n'),
        "carp.carp0.advbase: 255 is out of range 0..254",
    ),
    (
        carp('addresses = ["192.0.2.10/24"]\nvhid = 1\ncarpnodes = "2:0"\n'),
        "carp.carp0.vhid: vhid and carpnodes given together (keep one: vhid = N for one carpnode, "
        'or carpnodes = "1:0,2:100")',
    ),
    (
        carp('addresses = ["192.0.2.10/24"]\nadvskew = 5\ncarpnodes = "2:0"\n'),
        "carp.carp0.advskew: advskew applies with vhid; with carpnodes give each node's advskew "
        'in the list (carpnodes = "1:50,2:100")',
    ),
    (
        carp('addresses = ["192.0.2.10/24"]\n'),
        'carp.carp0.vhid: missing (add vhid = 1, or carpnodes = "1:0,2:100")',
    ),
    (
        carp("vhid = 1\n"),
        "carp.carp0.addresses: a carp interface needs at least one address (e.g. addresses = "
        '["192.0.2.10/24"])',
    ),
    (
        carp('addresses = ["192.0.2.10/24", "192.0.2.10/25"]\nvhid = 1\n'),
        "carp.carp0.addresses[1]: address 192.0.2.10 is repeated (already at [0])",
    ),
    (
        carp('addresses = ["192.0.2.300/24"]\nvhid = 1\n'),
        "carp.carp0.addresses[0]: '192.0.2.300/24' is not an IPv4 or IPv6 address with a prefix "
        "(write it as 192.0.2.10/24 or 2001:db8::10/64)",
    ),
    (
        carp('addresses = ["192.0.2.10/24"]\nvhid = 1\npass = 7\n'),
        "carp.carp0.pass: expected a string, got 7",
    ),
    (
        carp('addresses = ["192.0.2.10/24"]\nvhid = 1\npass = "a\\u0000b"\n'),
        "carp.carp0.pass: pass contains a NUL byte, which ends the key in carp(4)",
    ),
    (
        carp('addresses = ["192.0.2.10/24"]\nvhid = 1\nbalancing = "round-robin"\n'),
        "carp.carp0.balancing: 'round-robin' is not one of none, arp, ip, ip-unicast, ip-stealth",
    ),
    (
        carp('addresses = ["192.0.2.10/24"]\nvhid = 1\ncarppeer = "2001:db8::7"\n'),
        "carp.carp0.carppeer: 2001:db8::7 is IPv6; carppeer is IPv4 only (IPv6 advertisements "
        "always go to ff02::12; remove carppeer or give an IPv4 peer)",
    ),
    (
        carp('addresses = ["192.0.2.10/24"]\nvhid = 1\ncarppeer = "peer"\n'),
        "carp.carp0.carppeer: 'peer' is not an IPv4 address (e.g. 198.51.100.7)",
    ),
    (
        carp('addresses = ["192.0.2.10/24"]\nvhid = 1\ngroups = ["carp0"]\n'),
        "carp.carp0.groups[0]: group names may not end in a digit ('carp0') (e.g. 'uplink')",
    ),
    (
        carp('addresses = ["192.0.2.10/24"]\nvhid = 1\nlladdr = "ff:ff:ff:ff:ff:ff"\n'),
        "carp.carp0.lladdr: 'ff:ff:ff:ff:ff:ff' is not a unicast MAC address (e.g. "
        "02:00:5e:10:00:01)",
    ),
    (
        carp('addresses = ["192.0.2.10/24"]\nvhid = 1\nstate = "master"\n'),
        "carp.carp0.state: 'master' is not one of up, down",
    ),
    (
        carp('addresses = ["192.0.2.10/24"]\nvhd = 1\n'),
        "carp.carp0.vhd: unknown key (did you mean vhid? known: carpdev, addresses, vhid, "
        "advskew, carpnodes, advbase, pass, balancing, carppeer, groups, lladdr, state)",
    ),
    (
        carp('addresses = ["192.0.2.10/24"]\nvhid = 1\ncarpdev = "lan9"\n'),
        "carp.carp0.carpdev: 'lan9' is not a declared switch (declare [switch.lan9] or use one "
        "of: lan0)",
    ),
    (
        carp('addresses = ["203.0.113.10/24"]\nvhid = 1\n'),
        "carp.carp0.carpdev: missing, and no switch has a host address in the subnet of "
        '203.0.113.10/24 (set carpdev = "SWITCH" or give that switch a host address in the '
        "subnet; switches: lan0)",
    ),
    (
        HEAD
        + '[switch.lan1]\nhost = ["192.0.2.3/25"]\n'
        + '[carp.carp0]\naddresses = ["192.0.2.10/24"]\nvhid = 1\n',
        "carp.carp0.carpdev: missing, and the addresses share a subnet with switches lan0, lan1 "
        '(set carpdev = "lan0" or another of them)',
    ),
    (
        HEAD
        + '[carp.carp0]\naddresses = ["192.0.2.10/24"]\nvhid = 1\n'
        + '[carp.carp1]\naddresses = ["192.0.2.11/24"]\ncarpnodes = "2:0,1:0"\n',
        "carp.carp1.carpnodes: vhid 1 is already used by carp0 on switch lan0 (give each carp "
        "interface on one carpdev its own vhids)",
    ),
    (
        HEAD
        + '[carp.carp0]\naddresses = ["192.0.2.10/24"]\nvhid = 1\n'
        + '[carp.carp1]\naddresses = ["192.0.2.10/24"]\nvhid = 2\n',
        "carp.carp1.addresses[0]: 192.0.2.10 is already a virtual address of carp0 (virtual "
        "addresses must be unique on the node)",
    ),
    (
        carp('addresses = ["192.0.2.2/24"]\nvhid = 1\n'),
        "carp.carp0.addresses[0]: 192.0.2.2 is already a host address of switch lan0 (virtual "
        "addresses must be unique on the node)",
    ),
    (
        HEAD
        + 'ports = [{ name = "carp0", type = "tap" }]\n'
        + '[carp.carp0]\naddresses = ["192.0.2.10/24"]\nvhid = 1\n',
        "switch.lan0.ports[0].ifname: interface name 'carp0' is already used by carp.carp0",
    ),
    (
        HEAD + 'ports = [{ name = "vm", type = "tap", ifname = "lan0" }]\n',
        "switch.lan0.ports[0].ifname: interface name 'lan0' is already used by switch.lan0",
    ),
    (
        HEAD + '[[hook]]\ncommand = ""\n',
        'hook[0].command: an empty command (e.g. command = ["/usr/local/bin/notify", "--all"])',
    ),
    (
        HEAD + '[[hook]]\ncommand = "a \'b"\n',
        'hook[0].command: cannot split "a \'b": No closing quotation (or give a list of arguments)',
    ),
    (
        HEAD + '[[hook]]\ncommand = ["a"]\non = ["master", "down"]\n',
        "hook[0].on[1]: 'down' is not one of init, backup, master",
    ),
    (
        HEAD + '[[hook]]\ncommand = ["a"]\ntimeout = -1\n',
        "hook[0].timeout: -1 is not a positive number of seconds",
    ),
    (
        HEAD + '[[hook]]\non = "any"\n',
        'hook[0].command: missing (e.g. command = ["/usr/local/bin/notify", "--all"])',
    ),
]


@pytest.mark.parametrize(("text", "expected"), ERROR_CASES)
def test_error_path_message_and_fix(text: str, expected: str) -> None:
    assert one_error(text).startswith(expected)


IFCONFIG_CASES = [
    # errors inside ifconfig lines name the line and the word
    (
        'ifconfig = "192.0.2.10/24 vhid 1 advbase 300"',
        "carp.carp0.ifconfig: word 4 'advbase 300': 300 is out of range 0..254",
    ),
    (
        'ifconfig = "192.0.2.10/24 carpnodes 1:0,2:255"',
        "carp.carp0.ifconfig: word 2 'carpnodes 1:0,2:255': carpnodes[1].advskew: 255 is out of "
        "range 0..254",
    ),
    (
        'ifconfig = ["192.0.2.10/24", "vhid 0"]',
        "carp.carp0.ifconfig[1]: word 1 'vhid 0': 0 is out of range 1..255",
    ),
    (
        'ifconfig = ["192.0.2.10/24 vhid 1", "advskew x"]',
        "carp.carp0.ifconfig[1]: word 1 'advskew x': 'x' is not a whole number",
    ),
    (
        'ifconfig = ["vhid 1", "inet 192.0.2.10 NONE NONE"]',
        "carp.carp0.ifconfig[1]: word 2 '192.0.2.10 NONE NONE': '192.0.2.10' has no prefix length "
        "(write it as 192.0.2.10/24)",
    ),
    (
        'ifconfig = "inet 192.0.2.10 255.0.255.0 vhid 1"',
        "carp.carp0.ifconfig: word 2 '192.0.2.10 255.0.255.0': '192.0.2.10/255.0.255.0' is not an "
        "IPv4 or IPv6 address",
    ),
    (
        'ifconfig = "192.0.2.10/24 vhid 1 balancing ipp"',
        "carp.carp0.ifconfig: word 4 'balancing ipp': 'ipp' is not one of none, arp, ip, "
        "ip-unicast, ip-stealth",
    ),
    (
        'ifconfig = "192.0.2.10/24 vhid 1 carpdev lan7"',
        "carp.carp0.ifconfig: word 4 'carpdev lan7': 'lan7' is not a declared switch",
    ),
    (
        'ifconfig = "192.0.2.10/24 vhid 1 group lab1"',
        "carp.carp0.ifconfig: word 4 'group lab1': group names may not end in a digit",
    ),
    (
        'ifconfig = "192.0.2.10/24 vhid 1 lladdr 02:00"',
        "carp.carp0.ifconfig: word 4 'lladdr 02:00': '02:00' is not a MAC address",
    ),
    (
        'ifconfig = "192.0.2.10/24 vhid 1 carppeer 2001:db8::1"',
        "carp.carp0.ifconfig: word 4 'carppeer 2001:db8::1': 2001:db8::1 is IPv6; carppeer is "
        "IPv4 only",
    ),
    (
        'ifconfig = "vhid 1"',
        "carp.carp0.ifconfig: addresses: a carp interface needs at least one address",
    ),
    (
        'ifconfig = "192.0.2.10/24 advskew 3"',
        'carp.carp0.ifconfig: vhid: missing (add vhid = 1, or carpnodes = "1:0,2:100")',
    ),
    (
        'ifconfig = "192.0.2.10/24 vhid 1 vhidd 2"',
        "carp.carp0.ifconfig: word 4 'vhidd': unknown option or address 'vhidd' (did you mean "
        "vhid?)",
    ),
    (
        'ifconfig = ["192.0.2.10/24 vhid 1", "pass"]',
        "carp.carp0.ifconfig[1]: word 1 'pass': pass needs a value (pass VALUE)",
    ),
    ("ifconfig = 5", "carp.carp0.ifconfig: expected a string or a list of strings, got 5"),
    (
        'ifconfig = "192.0.2.10/24 vhid 1"\nvhid = 1',
        "carp.carp0.vhid: given together with ifconfig (put it in the ifconfig line, or use keys "
        "only)",
    ),
]


@pytest.mark.parametrize(("body", "expected"), IFCONFIG_CASES)
def test_ifconfig_errors_name_line_and_word(body: str, expected: str) -> None:
    assert one_error(carp(body + "\n")).startswith(expected)


def test_ifconfig_cross_section_errors_find_the_word() -> None:
    text = (
        HEAD
        + '[carp.carp0]\nifconfig = "192.0.2.10/24 vhid 3"\n'
        + '[carp.carp1]\nifconfig = ["192.0.2.11/24", "carpdev lan0 vhid 3"]\n'
    )
    assert one_error(text) == (
        "carp.carp1.ifconfig[1]: word 3 'vhid 3': vhid 3 is already used by carp0 on switch lan0 "
        "(give each carp interface on one carpdev its own vhids)"
    )


def test_many_errors_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(DATA / "node-broken.toml")
    expected = [
        "node.name: 'gw a' is not a valid node name",
        "node.metrics: 'localhost' is not an IP:port to listen on",
        "sysctl.preempt: 'yes' is not true or false",
        "switch.lan0.mode: 'hubb' is not one of learning, hub",
        "switch.lan0.host[0]: '192.0.2.2' has no prefix length",
        "switch.lan0.ports[0].ifname: a raw port needs ifname",
        "switch.lan0.ports[2].type: 'tun' is not one of tap, raw",
        "carp.carp0.carpnodes[1].advskew: 255 is out of range 0..254",
        "carp.carp0.advbase: 255 is out of range 0..254",
        "carp.carp0.pass: expected a string, got 7",
        "carp.carp0.colour: unknown key",
        "carp.carp1.ifconfig: word 4 'vhid 300': 300 is out of range 1..255",
        "carp.carp1.ifconfig: word 6 'balancing ipp': 'ipp' is not one of",
    ]
    errors = info.value.errors
    assert len(errors) == len(expected), errors
    for line in expected:
        assert sum(error.startswith(line) for error in errors) == 1, (line, errors)
    assert str(info.value) == "\n".join(errors)


def test_syntax_errors_and_value_errors_together() -> None:
    errors = errors_of(carp('ifconfig = ["192.0.2.10/24 vhid 1 frob", "advbase 999"]\n'))
    assert errors == [
        "carp.carp0.ifconfig[0]: word 4 'frob': unknown option or address 'frob' "
        "(see protocol.md §9.1 for the options)",
        "carp.carp0.ifconfig[1]: word 1 'advbase 999': 999 is out of range 0..254",
    ]


def test_toml_syntax_error_has_line_and_column() -> None:
    with pytest.raises(ConfigError) as info:
        loads_config('[node]\nname = "a"\nbad line\n', source="gw.toml")
    (error,) = info.value.errors
    assert error.startswith("gw.toml: line 3, column 5: ")
    assert error.endswith("(fix the TOML syntax)")


def test_toml_error_at_end_of_file() -> None:
    with pytest.raises(ConfigError) as info:
        loads_config('[node]\nname = "a', source="gw.toml")
    assert info.value.errors[0].startswith("gw.toml: ")
    assert "(fix the TOML syntax)" in info.value.errors[0]


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "absent.toml")
    assert info.value.errors == [
        f"{tmp_path / 'absent.toml'}: cannot read: No such file or directory"
    ]
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b'[node]\nname = "\xff"\n')
    with pytest.raises(ConfigError) as info:
        load_config(binary)
    assert info.value.errors == [f"{binary}: not UTF-8 at byte 15 (TOML is UTF-8)"]


def test_switch_offload_is_optional_and_boolean() -> None:
    base = '[node]\nname = "a"\n[switch.lan0]\n'
    assert loads_config(base).switch["lan0"].offload is None
    assert loads_config(base + "offload = false\n").switch["lan0"].offload is False
    with pytest.raises(ConfigError) as info:
        loads_config(base + 'offload = "maybe"\n')
    assert any(e.startswith("switch.lan0.offload:") for e in info.value.errors)


def test_each_port_type_is_its_own_model() -> None:
    from vswitch.config import PORT_TYPES, RawPortConfig, TapPortConfig

    config = loads_config(
        HEAD + 'ports = [{ name = "vm1", type = "tap", netns = "ns1" },\n'
        '  { name = "up0", type = "raw", ifname = "veth0" }]\n'
    )
    tap, raw = config.switch["lan0"].ports
    assert isinstance(tap, TapPortConfig) and isinstance(raw, RawPortConfig)
    assert (tap.ifname, tap.netns, raw.ifname) == ("vm1", "ns1", "veth0")
    assert set(PORT_TYPES) == {"tap", "raw", "stream", "vde", "vxlan"}
    assert one_error(HEAD + 'ports = [{ name = "vm1" }]\n') == (
        "switch.lan0.ports[0].type: missing (type = 'tap' or 'raw' or 'stream' or 'vde' or 'vxlan')"
    )
    assert errors_of(HEAD + 'ports = [{ name = "up0", type = "raw", ifnam = "x" }]\n') == [
        "switch.lan0.ports[0].ifnam: unknown key (did you mean ifname? known: name, type, ifname, "
        "monitor, impair)",
        "switch.lan0.ports[0].ifname: a raw port needs ifname (the interface to attach to)",
    ]


# --- socket ports (stream, vde, vxlan) and namespaces by path or pid -----------------------------


def test_socket_port_types() -> None:
    from vswitch.config import StreamPortConfig, VdePortConfig, VxlanPortConfig

    config = loads_config(
        HEAD
        + """
[[switch.lan0.ports]]
name = "vm1"
type = "stream"
path = "/run/vswitch/vm1.sock"
group = "kvm"
mode = "0660"
[[switch.lan0.ports]]
name = "lab"
type = "vde"
path = "/run/vswitch/lab.vde/"
owner = 1000
[[switch.lan0.ports]]
name = "dc2"
type = "vxlan"
vni = 42
local = "198.51.100.1"
remote = ["198.51.100.2", "198.51.100.3"]
"""
    )
    stream, vde, vxlan = config.switch["lan0"].ports
    assert isinstance(stream, StreamPortConfig)
    assert (stream.path, stream.group, stream.mode, stream.owner) == (
        "/run/vswitch/vm1.sock",
        "kvm",
        0o660,
        None,
    )
    assert isinstance(vde, VdePortConfig)
    assert (vde.path, vde.owner, vde.mode) == ("/run/vswitch/lab.vde", "1000", None)
    assert isinstance(vxlan, VxlanPortConfig)
    assert (vxlan.vni, str(vxlan.local), [str(r) for r in vxlan.remote], vxlan.port) == (
        42,
        "198.51.100.1",
        ["198.51.100.2", "198.51.100.3"],
        4789,
    )
    # what `vswitch check` prints validates back to the same
    ports = config.normalised()["switch"]["lan0"]["ports"]
    assert ports[0]["mode"] == "0660"
    assert ports[2]["local"] == "198.51.100.1" and ports[2]["remote"][1] == "198.51.100.3"
    again = parse_config(config.normalised(show_pass=True))
    assert again.switch["lan0"].ports == config.switch["lan0"].ports


SOCKET_PORT_ERRORS = [
    (
        '{ name = "vm1", type = "stream" }',
        "switch.lan0.ports[0].path: a stream port needs path (the socket to listen on, e.g. "
        'path = "/run/vswitch/vm1.sock")',
    ),
    (
        '{ name = "vm1", type = "stream", path = "vm1.sock" }',
        "switch.lan0.ports[0].path: 'vm1.sock' is a relative path (give an absolute path",
    ),
    (
        '{ name = "vm1", type = "stream", path = "/s", mode = 0o660 }',
        "switch.lan0.ports[0].mode: 432 is a number (write the mode as an octal string, e.g. "
        '"0660")',
    ),
    (
        '{ name = "vm1", type = "stream", path = "/s", mode = "0999" }',
        "switch.lan0.ports[0].mode: '0999' is not a file mode",
    ),
    (
        '{ name = "vm1", type = "stream", path = "/s", owner = "bad name" }',
        "switch.lan0.ports[0].owner: 'bad name' is not a user or group",
    ),
    (
        '{ name = "vm1", type = "stream", path = "/s", vni = 4 }',
        "switch.lan0.ports[0].vni: vni applies to vxlan ports, not stream",
    ),
    (
        '{ name = "lab", type = "vde", path = "/' + "d" * 100 + '" }',
        "switch.lan0.ports[0].path: '/ddd",
    ),
    (
        '{ name = "dc2", type = "vxlan", local = "198.51.100.1", remote = ["198.51.100.2"] }',
        "switch.lan0.ports[0].vni: a vxlan port needs vni (the segment's VXLAN network "
        "identifier, 0..16777215)",
    ),
    (
        '{ name = "dc2", type = "vxlan", vni = 16777216, local = "198.51.100.1", '
        'remote = ["198.51.100.2"] }',
        "switch.lan0.ports[0].vni: 16777216 is not a VXLAN network identifier (0 to 16777215)",
    ),
    (
        '{ name = "dc2", type = "vxlan", vni = 1, local = "198.51.100.1", remote = [] }',
        "switch.lan0.ports[0].remote: no peer",
    ),
    (
        '{ name = "dc2", type = "vxlan", vni = 1, local = "198.51.100.1", remote = ["239.1.1.1"] }',
        "switch.lan0.ports[0].remote[0]: 239.1.1.1 is a multicast address (give a unicast "
        "address of a host; multicast groups are not used: list every peer)",
    ),
    (
        '{ name = "dc2", type = "vxlan", vni = 1, local = "198.51.100.1", '
        'remote = ["2001:db8::2"] }',
        "switch.lan0.ports[0].remote[0]: 2001:db8::2 is IPv6 and local 198.51.100.1 is IPv4",
    ),
    (
        '{ name = "dc2", type = "vxlan", vni = 1, local = "198.51.100.1", '
        'remote = ["198.51.100.1"] }',
        "switch.lan0.ports[0].remote[0]: 198.51.100.1 is the local address",
    ),
    (
        '{ name = "dc2", type = "vxlan", vni = 1, local = "198.51.100.1", '
        'remote = ["198.51.100.2"], port = 0 }',
        "switch.lan0.ports[0].port: 0 is not a UDP port (1 to 65535; VXLAN's is 4789)",
    ),
    (
        '{ name = "a", type = "stream", path = "/s" }, { name = "b", type = "vde", path = "/s" }',
        "switch.lan0.ports[1].path: /s is already used by switch.lan0.ports[0].path",
    ),
    (
        '{ name = "a", type = "stream", path = "/run/vswitch/gw-a.sock" }',
        "switch.lan0.ports[0].path: /run/vswitch/gw-a.sock is already used by node.control",
    ),
    (
        '{ name = "a", type = "vxlan", vni = 1, local = "198.51.100.1", remote = ["198.51.100.2"]'
        ' }, { name = "b", type = "vxlan", vni = 2, local = "198.51.100.1", '
        'remote = ["198.51.100.3"] }',
        "switch.lan0.ports[1].port: udp 198.51.100.1:4789 is already used by "
        "switch.lan0.ports[0].port",
    ),
    (
        '{ name = "vm1", type = "tap", netns = "pid:x" }',
        "switch.lan0.ports[0].netns: 'pid:x' does not name a process (write pid:PID",
    ),
    (
        '{ name = "vm1", type = "tap", netns = "/proc/1/../2/ns/net" }',
        "switch.lan0.ports[0].netns: '/proc/1/../2/ns/net' is not a usable namespace path",
    ),
]


@pytest.mark.parametrize(("ports", "expected"), SOCKET_PORT_ERRORS)
def test_socket_port_errors_name_the_key_and_the_fix(ports: str, expected: str) -> None:
    assert one_error(HEAD + f"ports = [{ports}]\n").startswith(expected)


@pytest.mark.parametrize(
    ("netns", "kept"),
    [
        ("blue", "blue"),
        ("pid:04242", "pid:4242"),
        ("/proc/4242/ns/net", "/proc/4242/ns/net"),
        ("/var/run/docker/netns/1a2b3c", "/var/run/docker/netns/1a2b3c"),
        ("/run/netns/blue", "/run/netns/blue"),
    ],
)
def test_tap_netns_by_name_path_or_pid(netns: str, kept: str) -> None:
    config = loads_config(HEAD + f'ports = [{{ name = "vm1", type = "tap", netns = "{netns}" }}]\n')
    port = config.switch["lan0"].ports[0]
    assert isinstance(port, TapPortConfig) and port.netns == kept


def test_a_switch_with_socket_ports_runs_without_offload_by_default() -> None:
    plain = loads_config(
        HEAD + 'ports = [{ name = "vm1", type = "stream", path = "/run/v.sock" }]\n'
    )
    assert plain.switch["lan0"].offload is None and plain.switch["lan0"].vnet_offload is False
    taps = loads_config(HEAD + 'ports = [{ name = "vm1", type = "tap" }]\n')
    assert taps.switch["lan0"].vnet_offload is None  # where the kernel supports it
    forced = loads_config(
        HEAD + 'offload = true\nports = [{ name = "vm1", type = "stream", path = "/run/v.sock" }]\n'
    )
    assert forced.switch["lan0"].vnet_offload is True  # said so: segmented in software
