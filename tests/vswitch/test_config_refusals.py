"""Configurations that look valid but would fail at run time are refused (issue 11, item 10)."""

import time

import pytest

from tests.vswitch.test_config import HEAD, errors_of
from vswitch.config import loads_config


def carp(addresses: str, extra: str = "") -> str:
    return HEAD + f'[carp.carp0]\naddresses = [{addresses}]\nvhid = 1\npass = "s"\n{extra}'


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ('"224.0.0.1/24"', "224.0.0.1 is a multicast address"),
        ('"127.0.0.2/8"', "127.0.0.2 is a loopback address"),
        ('"0.0.0.0/24"', "0.0.0.0 is a unspecified address"),
        ('"ff02::5/64"', "ff02::5 is a multicast address"),
        ('"::1/128"', "::1 is a loopback address"),
        ('"192.0.2.0/24"', "192.0.2.0 is the network address of 192.0.2.0/24"),
        ('"192.0.2.255/24"', "192.0.2.255 is the broadcast address of 192.0.2.0/24"),
    ],
)
def test_a_virtual_address_must_be_a_unicast_host_address(address: str, message: str) -> None:
    errors = errors_of(carp(address, 'carpdev = "lan0"\n'))
    assert any(e.startswith("carp.carp0.addresses[0]: ") and message in e for e in errors), errors


def test_a_point_to_point_pair_has_no_network_or_broadcast_address() -> None:
    text = HEAD.replace("192.0.2.2/24", "192.0.2.2/31") + (
        '[carp.carp0]\naddresses = ["192.0.2.3/31"]\nvhid = 1\npass = "s"\n'
    )
    assert loads_config(text).carp["carp0"].carpdev == "lan0"


def test_a_virtual_address_outside_every_host_subnet_names_the_host_address_to_add() -> None:
    errors = errors_of(carp('"2001:db8::9/64"', 'carpdev = "lan0"\n'))
    assert errors == [
        "carp.carp0.addresses[0]: no host address of switch lan0 is in 2001:db8::/64, so the "
        "node has no route back to its clients (add one to [switch.lan0] host, "
        'e.g. "2001:db8::1/64")'
    ]


def test_a_virtual_address_inside_a_host_subnet_passes() -> None:
    config = loads_config(carp('"192.0.2.1/24"', 'carpdev = "lan0"\n'))
    assert [str(a) for a in config.carp["carp0"].addresses] == ["192.0.2.1/24"]


@pytest.mark.parametrize(
    ("peer", "message"),
    [
        ("255.255.255.255", "255.255.255.255 is not a peer's address"),
        ("127.0.0.1", "127.0.0.1 is not a peer's address"),
        ("192.0.2.255", "192.0.2.255 is the broadcast address of 192.0.2.0/24"),
    ],
)
def test_carppeer_names_one_unicast_peer(peer: str, message: str) -> None:
    errors = errors_of(carp('"192.0.2.1/24"', f'carppeer = "{peer}"\n'))
    assert any(e.startswith("carp.carp0.carppeer: ") and message in e for e in errors), errors


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0", "-1"])
def test_durations_are_finite_and_positive(value: str) -> None:
    errors = errors_of(HEAD + f"ageing = {value}\n")
    assert len(errors) == 1 and errors[0].startswith("switch.lan0.ageing: "), errors
    assert "is not a positive number of seconds" in errors[0]


def test_a_nul_byte_in_a_hook_argument_is_refused() -> None:
    errors = errors_of(HEAD + '[[hook]]\ncommand = ["/bin/echo", "a\\u0000b"]\n')
    assert errors == [
        "hook[0].command: argument 1 contains a NUL byte (remove it from the command)"
    ]


def test_a_relative_control_path_is_refused() -> None:
    errors = errors_of('[node]\nname = "gw-a"\ncontrol = "gw-a.sock"\n')
    assert errors == [
        "node.control: 'gw-a.sock' is a relative path (give an absolute path, e.g. "
        "/run/vswitch/gw-a.sock)"
    ]


def test_an_empty_pass_is_a_warning_not_an_error() -> None:
    config = loads_config(HEAD + '[carp.carp0]\naddresses = ["192.0.2.1/24"]\nvhid = 1\n')
    assert config.warnings() == [
        "carp.carp0.pass: empty, so any host on the segment can take over the addresses "
        '(set pass = "SECRET" on every node)'
    ]
    assert loads_config(carp('"192.0.2.1/24"')).warnings() == []


@pytest.mark.parametrize("depth", [50, 5000])
def test_deep_nesting_is_a_clear_error(depth: int) -> None:
    errors = errors_of(HEAD + "x = " + "[" * depth + "]" * depth + "\n")
    assert len(errors) == 1
    assert errors[0].startswith("switch.lan0.x: unknown key") or "nested too deeply" in errors[0]


def test_validation_stays_linear() -> None:
    """1000 carp interfaces on four switches validate in well under a second."""
    nets = ["192.0.2.", "198.51.100.", "203.0.113.", "2001:db8::"]
    switches = "".join(
        f'[switch.s{n}]\nhost = ["{net}{"fe" if ":" in net else 254}/{64 if ":" in net else 24}"]\n'
        for n, net in enumerate(nets)
    )
    carps = "".join(
        f'[carp.c{i}]\naddresses = ["{nets[i % 4]}{i // 4 + 1:{"x" if i % 4 == 3 else "d"}}/'
        f'{64 if i % 4 == 3 else 24}"]\ncarpnodes = "{i // 4 + 1}:0"\npass = "s"\n'
        for i in range(1000)
    )
    text = '[node]\nname = "big"\n' + switches + carps
    started = time.process_time()
    config = loads_config(text)
    spent = time.process_time() - started
    assert len(config.carp) == 1000
    assert {c.carpdev for c in config.carp.values()} == {"s0", "s1", "s2", "s3"}
    # a guard against quadratic blow-up, not a benchmark: 1000 quadratic steps would take minutes
    assert spent < 5.0


def test_a_multicast_carppeer_is_a_group_carp_joins() -> None:
    config = loads_config(carp('"192.0.2.1/24"', 'carppeer = "239.1.1.1"\n'))
    assert str(config.carp["carp0"].carppeer) == "239.1.1.1"


# -- [node] workers and rt_priority ----------------------------------------------------------------

WORKERS = """
[node]
name = "gw-a"
workers = {workers}
{extra}
[switch.lan0]
host = ["192.0.2.2/24"]
ports = [
  {{ name = "vm1", type = "tap", impair = {{ loss = "10%" }} }},
  {{ name = "vm2", type = "stream", path = "/run/vswitch/vm2.sock", impair = {{ loss = "5%" }} }},
]
"""


def test_workers_refuse_an_impaired_tap_port_and_name_the_fix() -> None:
    errors = errors_of(WORKERS.format(workers=2, extra=""))
    # the TAP port is read by the workers; the stream port by the node process, which impairs
    assert errors == [
        "switch.lan0.ports[0].impair: a tap port is forwarded by the workers, which do not "
        "impair (remove impair, or set [node] workers = 0)"
    ]
    assert loads_config(WORKERS.format(workers=0, extra="")).node.workers == 0


@pytest.mark.parametrize(("key", "value"), [("workers", -1), ("workers", 17), ("rt_priority", 0)])
def test_workers_and_rt_priority_have_ranges(key: str, value: int) -> None:
    text = HEAD.replace('name = "gw-a"', f'name = "gw-a"\n{key} = {value}')
    assert any(e.startswith(f"node.{key}: ") for e in errors_of(text))


def test_rt_priority_without_workers_is_a_warning() -> None:
    text = HEAD.replace('name = "gw-a"', 'name = "gw-a"\nrt_priority = 50')
    warnings = loads_config(text).warnings()
    assert any(w.startswith("node.rt_priority: ") and "workers = 1" in w for w in warnings)
    with_workers = text.replace("rt_priority = 50", "rt_priority = 50\nworkers = 1")
    assert not any("rt_priority" in w for w in loads_config(with_workers).warnings())
