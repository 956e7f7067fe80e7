"""`vswitch check --schema`: the JSON Schema of a node file, checked with `jsonschema` against
every shipped node file, the broken one, and the forms the validators take."""

import copy
import json
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic_core import SchemaValidator, ValidationError

from vswitch.check import DRAFT4, _FileSchema, _toml_draft4, node_file_schema
from vswitch.cli import main
from vswitch.config import ConfigError, NodeConfig, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
SHIPPED = [
    *sorted(ROOT.glob("examples/*/*.toml")),
    DATA / "node-ifconfig.toml",
    DATA / "node-keys.toml",
]


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return node_file_schema()


def errors(schema: dict[str, Any], data: Any) -> list[tuple[str | int, ...]]:
    """Where the file breaks the schema, by the validator the schema declares ($schema)."""
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [tuple(error.absolute_path) for error in validator.iter_errors(data)]


def nodes(value: Any) -> Iterator[Any]:
    yield value
    children = value.values() if isinstance(value, dict) else value
    if isinstance(value, dict | list):
        for child in children:
            yield from nodes(child)


def test_check_prints_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--schema"]) == 0
    assert json.loads(capsys.readouterr().out) == node_file_schema()
    with pytest.raises(SystemExit) as exit_:
        main(["check", "--schema", "-c", str(DATA / "node-keys.toml")])
    assert exit_.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_a_draft_4_schema_that_later_drafts_read_alike(schema: dict[str, Any]) -> None:
    # taplo (and so VS Code's Even Better TOML) supports draft 4
    assert schema["$schema"] == DRAFT4
    assert jsonschema.validators.validator_for(schema) is jsonschema.Draft4Validator
    for draft in (jsonschema.Draft4Validator, jsonschema.Draft7Validator):
        draft.check_schema(schema)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert "$defs" not in schema and set(schema["definitions"]) >= {"CarpConfig", "CarpIfconfig"}
    keys = {key for node in nodes(schema) if isinstance(node, dict) for key in node}
    assert not keys & {"const", "discriminator", "$defs"}  # not draft 4, or not JSON Schema
    assert {"type": "null"} not in list(nodes(schema))  # TOML has no null
    carp = schema["definitions"]["CarpConfig"]["properties"]
    assert "pass" in carp and "passphrase" not in carp  # the key as written in files


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_node_file_fits_the_schema(schema: dict[str, Any], path: Path) -> None:
    config = load_config(path)  # a valid file, so the schema must take it
    data = tomllib.loads(path.read_text())
    assert errors(schema, data) == []
    # what `vswitch check --show-pass` prints is a node file too
    assert errors(schema, config.normalised(show_pass=True)) == []


def test_examples_are_found() -> None:
    assert len(SHIPPED) >= 8 and all(path.exists() for path in SHIPPED)
    assert any("ifconfig" in path.read_text() for path in SHIPPED)


def test_the_broken_file_fails_it(schema: dict[str, Any]) -> None:
    data = tomllib.loads((DATA / "node-broken.toml").read_text())
    found = errors(schema, data)
    assert ("sysctl", "preempt") in found  # "yes"
    assert ("switch", "lan0", "mode") in found  # "hubb"
    assert ("switch", "lan0", "ports", 0) in found  # a raw port without ifname
    assert ("switch", "lan0", "ports", 2) in found  # type "tun"
    assert ("carp", "carp0") in found  # advbase 255, pass = 7, colour


def base() -> dict[str, Any]:
    return tomllib.loads((DATA / "node-keys.toml").read_text())


def put(data: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


def config_takes(data: dict[str, Any]) -> bool:
    try:
        parse_config(data)
    except ConfigError:
        return False
    return True


# (where, value, valid): the schema and `vswitch check` must agree on each
FORMS = [
    (("sysctl", "preempt"), True, True),
    (("sysctl", "preempt"), 1, True),
    (("sysctl", "preempt"), 0, True),
    (("sysctl", "preempt"), 2, False),
    (("sysctl", "preempt"), "yes", False),
    (("carp", "carp0", "vhid"), 255, True),
    (("carp", "carp0", "vhid"), "7", True),  # ifconfig words are strings; keys may be too
    (("carp", "carp0", "vhid"), 0, False),
    (("carp", "carp0", "vhid"), 256, False),
    (("carp", "carp0", "vhid"), "seven", False),
    (("carp", "carp0", "advskew"), 254, True),
    (("carp", "carp0", "advskew"), 255, False),
    (("carp", "carp1", "carpnodes"), "1:0,2:100", True),
    (("carp", "carp1", "carpnodes"), ["1:0", "2:100"], True),
    (("carp", "carp1", "carpnodes"), [{"vhid": 1}, {"vhid": 2, "advskew": 100}], True),
    (("carp", "carp1", "carpnodes"), [{"vhid": 1, "skew": 0}], False),
    (("carp", "carp1", "carpnodes"), 12, False),
    (("carp", "carp1", "advbase"), 0, True),
    (("carp", "carp1", "advbase"), 255, False),
    (("carp", "carp1", "pass"), 7, False),
    (("carp", "carp1", "state"), "down", True),
    (("carp", "carp1", "state"), "off", False),
    (("hook",), [{"command": "/bin/true --x"}], True),
    (("hook",), [{"command": ["/bin/true", "--x"]}], True),
    (("hook",), [{"command": "/bin/true", "on": "any"}], True),
    (("hook",), [{"command": "/bin/true", "on": ["master", "backup"]}], True),
    (("hook",), [{"command": "/bin/true", "on": "primary"}], False),
    (("hook",), [{"command": "/bin/true", "when": "master"}], False),
    (("node", "metrics"), False, True),
    (("node", "metrics"), "127.0.0.1:9900", True),
    (("node", "metrics"), True, False),
    (("node", "log"), "syslog", True),
    (("node", "log"), "journal", False),
    (("node", "colour"), "red", False),
    (("carp", "carp0"), {"ifconfig": "192.0.2.10/24 vhid 10 carpdev lan0"}, True),
    (("carp", "carp0"), {"ifconfig": ["inet 192.0.2.10 255.255.255.0 NONE vhid 10"]}, True),
    (("carp", "carp0"), {"ifconfig": "192.0.2.10/24 carpdev lan0", "vhid": 10}, False),
    (("carp", "carp0"), {"ifconfig": 10}, False),
]


@pytest.mark.parametrize(("where", "value", "valid"), FORMS)
def test_the_schema_takes_what_check_takes(
    schema: dict[str, Any], where: tuple[str, ...], value: Any, valid: bool
) -> None:
    data = put(base(), where, copy.deepcopy(value))
    assert config_takes(copy.deepcopy(data)) is valid
    assert (errors(schema, data) == []) is valid


# Values a TOML file can give, to probe every validator of the node file with
PROBES: list[Any] = [
    *("", "x", "0", "1", "-1", "255", "0660", "master", "any", "1:0,2:100", "192.0.2.1"),
    *("192.0.2.1/24", "2001:db8::1", "/run/vswitch/x.sock", "02:00:5e:10:00:01"),
    *(0, 1, 2, -1, 100, 255, 4789, 1.5, 300.0, True, False),
    *([], ["x"], ["master"], [1], {}),
]


def before_validators(core: Any) -> Iterator[dict[str, Any]]:
    """Every function-before node of a core schema: a validator that sees the file's value."""
    if isinstance(core, dict):
        if core.get("type") == "function-before":
            yield core
        for value in core.values():
            yield from before_validators(value)
    elif isinstance(core, list):
        for value in core:
            yield from before_validators(value)


def test_no_validator_takes_a_value_its_schema_refuses() -> None:
    """A new type whose validator takes more than its Python type (an octal string for an int,
    a number for a name) needs its file form: `json_schema_input_type=` on its BeforeValidator,
    or an entry in vswitch/check.py `_file_forms`. Else editors would mark a valid file."""
    narrower: set[str] = set()
    for node in before_validators(NodeConfig.__pydantic_core_schema__):
        takes = SchemaValidator(node)
        schema = _toml_draft4(_FileSchema().generate(node))
        shown = jsonschema.Draft4Validator(schema)
        name = getattr(node["function"]["function"], "__qualname__", "?")
        for probe in PROBES:
            try:
                takes.validate_python(copy.deepcopy(probe))
            except ValidationError:
                continue
            if not shown.is_valid(probe):
                narrower.add(f"{name} takes {probe!r}, its schema {schema} does not")
    assert sorted(narrower) == []
