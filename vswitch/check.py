"""Validate a node configuration and print it normalised (defaults filled in, carpdevs derived).

Exit status 0 when the file is valid; otherwise every problem goes to stderr as
`path: message (fix)`, one per line, and the exit status is 2. The passphrase is masked unless
--show-pass is given; with it, the TOML output loads back to the same configuration.
"""

import argparse
import json
import re
import sys
from collections.abc import Mapping
from typing import Any

from carp.configerrors import ConfigError
from vswitch.config import load_config

EXIT_INVALID = 2
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "-c", "--config", required=True, metavar="FILE", help="the node's TOML configuration"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of TOML")
    parser.add_argument(
        "--show-pass", action="store_true", help="print carp passphrases instead of ********"
    )


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return EXIT_INVALID
    data = config.normalised(show_pass=args.show_pass)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        sys.stdout.write(to_toml(data))
    return 0


# --- a small TOML writer for the normalised config (plain data: str, int, float, bool, list, dict)


def _string(text: str) -> str:
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:  # TOML wants control characters escaped
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _string(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def _table(lines: list[str], path: list[str], table: Mapping[str, Any]) -> None:
    scalars = {k: v for k, v in table.items() if not isinstance(v, Mapping)}
    if scalars:
        if lines:
            lines.append("")
        lines.append("[" + ".".join(_key(p) for p in path) + "]")
        for key, value in scalars.items():
            if isinstance(value, list) and len(value) > 1 and isinstance(value[0], Mapping):
                lines.append(f"{_key(key)} = [")
                lines.extend(f"  {_value(item)}," for item in value)
                lines.append("]")
            else:
                lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in table.items():
        if isinstance(value, Mapping):
            _table(lines, [*path, key], value)


def to_toml(data: Mapping[str, Any]) -> str:
    """Tables as [name], their dict entries as [name.entry], lists of tables as [[name]]."""
    lines: list[str] = []
    for name, value in data.items():
        if isinstance(value, Mapping):
            _table(lines, [name], value)
        elif isinstance(value, list) and all(isinstance(item, Mapping) for item in value):
            for item in value:
                if lines:
                    lines.append("")
                lines.append(f"[[{_key(name)}]]")
                lines.extend(f"{_key(k)} = {_value(v)}" for k, v in item.items())
        else:
            lines.insert(0, f"{_key(name)} = {_value(value)}")
    return "\n".join(lines) + "\n"
