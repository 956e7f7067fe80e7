"""Configuration errors as `path: message (fix)`, one per problem (design.md §4).

Paths are dotted keys with list indexes (`carp.carp0.carpnodes[1].advskew`). Inside a carp
interface written as ifconfig lines the path names the line and the word that set the value
(`carp.carp0.ifconfig[1]: word 3 'advbase 300': ...`), found through the fold's origins; a
runtime `vswitch ifconfig` change reads the same without the path (`in_ifconfig`).
"""

import difflib
import re
import types
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from carp.ifconfig_fold import ParsedIfconfig
from carp.ifconfig_words import Loc, Word


class ConfigError(Exception):
    """Every problem of one configuration, each as `path: message (fix)`."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__(errors)
        self.errors = errors

    def __str__(self) -> str:
        return "\n".join(self.errors)


def key(part: str | int) -> str:
    if isinstance(part, int):
        return f"[{part}]"
    return part if re.fullmatch(r"[A-Za-z0-9_-]+", part) else f'"{part}"'


def path(loc: Sequence[str | int]) -> str:
    text = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for a bad dict key: the key itself is at fault
            continue
        piece = key(part)
        text += piece if isinstance(part, int) or not text else f".{piece}"
    return text


_TYPE_MESSAGES = {
    "string_type": "expected a string, got {input!r}",
    "list_type": "expected a list, got {input!r}",
    "dict_type": "expected a table, got {input!r}",
    "model_type": "expected a table, got {input!r}",
    "model_attributes_type": "expected a table, got {input!r}",
}

_MISSING_FIX = {
    "node": 'add a [node] table with name = "gw-a"',
    "name": 'e.g. name = "gw-a"',
    "type": 'type = "tap" or "raw"',
    "command": 'e.g. command = ["/usr/local/bin/notify", "--all"]',
}


def _unwrap(annotation: Any) -> Any:
    """What is behind Annotated[...] and X | None."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            rest = [a for a in get_args(annotation) if a is not type(None)]
            if len(rest) != 1:
                return annotation
            annotation = rest[0]
        else:
            return annotation


def _model_at(root: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The model class holding the key at the end of `loc`, to list the keys it knows."""
    current: Any = root
    for part in loc[:-1]:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            fields = {(f.alias or n): f for n, f in current.model_fields.items()}
            if part not in fields:
                return None
            current = fields[str(part)].annotation
        elif get_origin(current) in (dict, list):
            current = get_args(current)[-1]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _message(root: type[BaseModel], error: ErrorDetails) -> str:
    kind, loc = error["type"], error["loc"]
    if kind == "extra_forbidden":
        model = _model_at(root, loc)
        known = [(f.alias or n) for n, f in model.model_fields.items()] if model else []
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        what = "unknown section" if len(loc) == 1 else "unknown key"
        hint = f"did you mean {close[0]}? " if close else ""
        return f"{what} ({hint}known: {', '.join(known)})"
    if kind == "missing":
        fix = _MISSING_FIX.get(str(loc[-1]))
        return f"missing ({fix})" if fix else "missing"
    if kind in _TYPE_MESSAGES:
        return _TYPE_MESSAGES[kind].format(input=error["input"])
    return error["msg"]


def _origin(origins: Mapping[Loc, Word], rest: Loc) -> tuple[Word | None, bool]:
    """The word that set the value at `rest` (or an enclosing value), and whether it is exact."""
    candidates = [rest]
    if rest[:1] in (("vhid",), ("advskew",)):  # ifconfig's vhid/advskew words fill carpnodes
        candidates.append(("carpnodes", 0, *rest))
    for candidate in candidates:
        for size in range(len(candidate), 0, -1):
            word = origins.get(candidate[:size])
            if word is not None:
                return word, candidate is not rest or size == len(rest)
    return None, False


def _at_word(rest: Loc, message: str, origins: Mapping[Loc, Word]) -> tuple[int | None, str]:
    """`word 3 'advbase 300': message` (or `field: message` when no word set it), and its line."""
    word, exact = _origin(origins, rest)
    if word is None:
        return None, f"{path(rest) + ': ' if rest else ''}{message}"
    # name the field only where the word alone does not say it (one entry of carpnodes)
    detailed = not exact or (word.text.startswith("carpnodes ") and len(rest) > 1)
    return word.line, f"{word.where()}: {path(rest) + ': ' if detailed else ''}{message}"


def render(loc: Loc, message: str, parsed: Mapping[str, ParsedIfconfig]) -> str:
    """`path: message`; inside an ifconfig section the path names the line and the word."""
    if len(loc) < 2 or loc[0] != "carp" or str(loc[1]) not in parsed:
        return f"{path(loc) or 'config'}: {message}"
    line, text = _at_word(tuple(loc[2:]), message, parsed[str(loc[1])].origins)
    base = f"carp.{key(loc[1])}.ifconfig"
    return f"{base}{'' if line is None else f'[{line}]'}: {text}"


def _details(root: type[BaseModel], error: ValidationError) -> list[tuple[Loc, str]]:
    """Every problem of a validation of `root`: where, and the message."""
    found: list[tuple[Loc, str]] = []
    for detail in error.errors():
        loc = tuple(detail["loc"])
        if detail["type"] == "vswitch_many":
            found += [
                (loc + tuple(rel), text) for rel, text in (detail.get("ctx") or {})["problems"]
            ]
        else:
            found.append((loc, _message(root, detail)))
    return found


def rendered(
    root: type[BaseModel], error: ValidationError, parsed: Mapping[str, ParsedIfconfig]
) -> list[str]:
    """Every error of a validation of `root`, rendered."""
    return [render(loc, message, parsed) for loc, message in _details(root, error)]


def in_ifconfig(
    root: type[BaseModel], error: ValidationError, origins: Mapping[Loc, Word]
) -> list[str]:
    """Every error of a validation of one carp interface (`root`) set by an ifconfig command,
    as the file would name it minus the file path (`word 1 'advskew 300': ...`)."""
    return [_at_word(loc, message, origins)[1] for loc, message in _details(root, error)]
