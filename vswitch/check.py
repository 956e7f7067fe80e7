"""Validate a node configuration and print it normalised (defaults filled in, carpdevs derived).

Exit status 0 when the file is valid; otherwise every problem goes to stderr as
`path: message (fix)`, one per line, and the exit status is 2. The passphrase is masked unless
--show-pass is given; with it, the TOML output loads back to the same configuration. The --json
output carries "format": 1, the version of its layout, next to the sections.

--schema prints the JSON Schema (draft 4) of what a node file may hold, for editors: saved as
vswitch.schema.json and named by a `#:schema ./vswitch.schema.json` first line, it lets taplo
and VS Code's Even Better TOML complete and check a node file while it is written. The schema
knows the keys and the values of each; what spans sections (derived carpdevs, unique vhids and
addresses, a route back to the clients) only `vswitch check` judges.
"""

import argparse
import functools
import inspect
import json
import sys
from collections.abc import Callable
from typing import Any, get_args

from pydantic import BeforeValidator
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from carp.configerrors import ConfigError
from carp.configtypes import Advbase, Advskew, Flag, Vhid, carpnodes_input
from vswitch.config import NodeConfig, load_config
from vswitch.configtypes import STATES, Argv, Metrics, States
from vswitch.tomlw import dumps

EXIT_INVALID = 2
CHECK_FORMAT = 1  # "format" of the --json output: raised when a key changes meaning or goes away
DRAFT4 = "http://json-schema.org/draft-04/schema#"  # taplo supports draft 4


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("-c", "--config", metavar="FILE", help="the node's TOML configuration")
    source.add_argument(
        "--schema", action="store_true", help="print the JSON Schema of a node file (for editors)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of TOML")
    parser.add_argument(
        "--show-pass", action="store_true", help="print carp passphrases instead of ********"
    )


def run(args: argparse.Namespace) -> int:
    if args.schema:
        print(json.dumps(node_file_schema(), indent=2))
        return 0
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return EXIT_INVALID
    for warning in config.warnings():  # valid, so the exit status stays 0
        print(f"warning: {warning}", file=sys.stderr)
    data = config.normalised(show_pass=args.show_pass)
    if args.json:
        print(json.dumps({"format": CHECK_FORMAT, **data}, indent=2))
    else:
        sys.stdout.write(dumps(data))
    return 0


# --- the JSON Schema of a node file --------------------------------------------------------------

FileForm = Callable[[JsonSchemaValue], JsonSchemaValue]  # the model's schema -> the file's
WHOLE_NUMBER_TEXT = {"type": "string", "pattern": r"^\s*[+-]?[0-9]+\s*$"}  # ifconfig words
IFCONFIG = {
    "title": "Carp interface as ifconfig(8) arguments",
    "type": "object",
    "properties": {
        "ifconfig": {
            "description": "one line of carp(4) ifconfig options, or a list of hostname.if lines",
            "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
        }
    },
    "required": ["ifconfig"],
    "additionalProperties": False,
}


def _validator(alias: Any) -> Any:
    """The BeforeValidator function of an Annotated type: how the core schema names the type."""
    return next(m.func for m in get_args(alias)[1:] if isinstance(m, BeforeValidator))


def _ranged(alias: Any) -> tuple[Any, FileForm]:
    check = _validator(alias)
    bounds = inspect.getclosurevars(check).nonlocals  # carp.configtypes._ranged(low, high)
    limits = {"minimum": bounds["low"], "maximum": bounds["high"]}
    return check, lambda inner: {"anyOf": [inner | limits, WHOLE_NUMBER_TEXT]}


def _carpnodes(inner: JsonSchemaValue) -> JsonSchemaValue:
    tables = next(b for b in inner.get("anyOf", [inner]) if b.get("type") == "array")["items"]
    text = {"type": "string", "description": 'vhid:advskew pairs, e.g. "1:0,2:100"'}
    return {"anyOf": [text, {"type": "array", "items": {"anyOf": [{"type": "string"}, tables]}}]}


@functools.cache
def _file_forms() -> dict[Any, FileForm]:
    """Validators that take more than their type, keyed by function: what they take."""
    return {
        _validator(Flag): lambda inner: {"anyOf": [inner, {"type": "integer", "enum": [0, 1]}]},
        carpnodes_input: _carpnodes,
        _validator(Argv): lambda inner: {"anyOf": [{"type": "string"}, inner]},
        _validator(States): lambda inner: {
            "anyOf": [{"type": "string", "enum": [*STATES, "any"]}, inner]
        },
        _validator(Metrics): lambda inner: {"anyOf": [inner, {"type": "boolean", "enum": [False]}]},
        **dict(_ranged(alias) for alias in (Vhid, Advskew, Advbase)),
    }


class _FileSchema(GenerateJsonSchema):
    def function_before_schema(
        self, schema: core_schema.BeforeValidatorFunctionSchema
    ) -> JsonSchemaValue:
        inner = super().function_before_schema(schema)
        form = _file_forms().get(schema["function"]["function"])
        return inner if form is None else form(inner)


SCHEMA_MAPS = ("properties", "definitions", "patternProperties")  # name -> schema
VALUES = ("default", "enum", "examples")  # data, not schemas


def _toml_draft4(node: Any) -> Any:
    """TOML has no null: drop null alternatives and defaults. Draft 4 has no const: a one-value
    enum. `discriminator` is OpenAPI's, not JSON Schema's."""
    if isinstance(node, list):
        return [_toml_draft4(n) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in SCHEMA_MAPS:
            out[key] = {name: _toml_draft4(sub) for name, sub in value.items()}
        elif key == "discriminator" or (key == "default" and value is None):
            continue
        elif key == "const":
            out["enum"] = [value]
        else:
            out[key] = value if key in VALUES else _toml_draft4(value)
    for key in ("anyOf", "oneOf"):
        if key in out:
            branches = [b for b in out[key] if b != {"type": "null"}]
            if len(branches) == 1:
                del out[key]
                out = branches[0] | out  # the field's title and default stay
            else:
                out[key] = branches
    return out


def node_file_schema() -> dict[str, Any]:
    """The JSON Schema of a node file: the models' (by alias: `pass`), with each value in every
    form the file may give it, and a carp interface as keys or as `ifconfig`."""
    schema = NodeConfig.model_json_schema(
        by_alias=True, ref_template="#/definitions/{model}", schema_generator=_FileSchema
    )
    definitions = schema.pop("$defs")
    definitions["CarpIfconfig"] = IFCONFIG
    carp = schema["properties"]["carp"]
    ifconfig = {"$ref": "#/definitions/CarpIfconfig"}
    carp["additionalProperties"] = {"anyOf": [carp["additionalProperties"], ifconfig]}
    schema.pop("title")  # the model's class name
    head = {
        "$schema": DRAFT4,
        "title": "vswitch node file",
        "description": "One node's configuration; `vswitch check -c FILE` judges it in full.",
    }
    document: dict[str, Any] = _toml_draft4({**head, **schema, "definitions": definitions})
    return document
