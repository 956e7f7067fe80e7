"""A small TOML writer for plain data (str, int, float, bool, lists, dicts), as `vswitch check`
prints a normalised node file and the namespace lab writes its nodes' files.

Tables become `[name]`, their dict entries `[name.entry]`, lists of tables `[[name]]`; strings
are basic strings with control characters escaped, so the output loads back to the same data.
"""

import re
from collections.abc import Mapping
from typing import Any

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def string(text: str) -> str:
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:  # TOML wants control characters escaped
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def key(name: str) -> str:
    return name if _BARE_KEY.match(name) else string(name)


def value(data: Any) -> str:
    """One value as TOML: lists as arrays, dicts as inline tables."""
    if isinstance(data, bool):
        return "true" if data else "false"
    if isinstance(data, int | float):
        return repr(data)
    if isinstance(data, str):
        return string(data)
    if isinstance(data, list | tuple):
        return "[" + ", ".join(value(item) for item in data) + "]"
    if isinstance(data, Mapping):
        return "{ " + ", ".join(f"{key(k)} = {value(v)}" for k, v in data.items()) + " }"
    raise TypeError(f"cannot write {data!r} as TOML")


def _table(lines: list[str], path: list[str], table: Mapping[str, Any]) -> None:
    scalars = {k: v for k, v in table.items() if not isinstance(v, Mapping)}
    if scalars:
        if lines:
            lines.append("")
        lines.append("[" + ".".join(key(p) for p in path) + "]")
        for name, item in scalars.items():
            if isinstance(item, list) and len(item) > 1 and isinstance(item[0], Mapping):
                lines.append(f"{key(name)} = [")
                lines.extend(f"  {value(entry)}," for entry in item)
                lines.append("]")
            else:
                lines.append(f"{key(name)} = {value(item)}")
    for name, item in table.items():
        if isinstance(item, Mapping):
            _table(lines, [*path, name], item)


def dumps(data: Mapping[str, Any]) -> str:
    """A whole document: top-level scalars first, then the tables in their order."""
    lines: list[str] = []
    for name, item in data.items():
        if isinstance(item, Mapping):
            _table(lines, [name], item)
        elif isinstance(item, list) and all(isinstance(entry, Mapping) for entry in item):
            for entry in item:
                if lines:
                    lines.append("")
                lines.append(f"[[{key(name)}]]")
                lines.extend(f"{key(k)} = {value(v)}" for k, v in entry.items())
        else:
            lines.insert(0, f"{key(name)} = {value(item)}")
    return "\n".join(lines) + "\n"
