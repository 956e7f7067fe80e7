"""Link impairment of a port (design.md §2, `vswitch impair`): what to impair, as words or a table.

Per port and direction (`in`: frames the port receives, before the switch sees them; `out`:
frames the switch sends out of it) an `Impairment` says: `delay` and `jitter` (seconds), `loss`
(percent), `rate` (bits/s, 0: unlimited) and `partition` (every frame, or with `partition carp`
only IP protocol 112). The engine that applies it is vswitch/impairer.py.

The command words `[in|out] [delay 50ms] [jitter 5ms] [loss 30%] [rate 10mbit] [partition |
partition carp] | clear` (`parse_words`) and the node file's `impair = {delay = "50ms", ...}` or
`impair = {in = {...}, out = {...}}` (`parse_table`) give the same values and refuse the same
things, naming the word or key and the fix (`ImpairError`). A command states the whole
impairment of its direction(s), as `tc qdisc replace` does: words left out are off.
"""

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

MAX_DELAY = 60.0  # seconds, for delay and jitter: a lab link, not a tape archive
MIN_RATE = 1_000  # bits/s
MAX_RATE = 1_000_000_000_000

_TIME = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(us|ms|s)")
_RATE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(bit|kbit|mbit|gbit|tbit)?")
_PERCENT = re.compile(r"(\d+(?:\.\d*)?|\.\d+)%?")
_TIME_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
_RATE_UNITS = {None: 1, "bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9, "tbit": 10**12}

Loc = tuple[str | int, ...]


class Direction(StrEnum):
    IN = "in"  # received on the port
    OUT = "out"  # sent out of the port


class Partition(StrEnum):
    NONE = "none"
    ALL = "all"
    CARP = "carp"  # IP protocol 112 only


class ImpairError(ValueError):
    """Every problem found, each as (where, "message (fix)"); `where` is () for a command."""

    def __init__(self, errors: list[tuple[Loc, str]]) -> None:
        super().__init__("; ".join(m if not loc else f"{_path(loc)}: {m}" for loc, m in errors))
        self.errors = errors


def _path(loc: Loc) -> str:
    return ".".join(str(p) for p in loc)


@dataclass(frozen=True, slots=True)
class Impairment:
    """One direction's impairment; the default impairs nothing."""

    delay: float = 0.0  # seconds
    jitter: float = 0.0  # seconds, uniform +-
    loss: float = 0.0  # percent
    rate: int = 0  # bits/s; 0: unlimited
    partition: Partition = Partition.NONE

    @property
    def clear(self) -> bool:
        return self == Impairment()

    def words(self) -> list[str]:
        """The command words that set it (`clear` when it impairs nothing)."""
        out: list[str] = []
        for key, value in self.table().items():
            if key != "partition":
                out += [key, value]
            else:
                out += ["partition"] if value is True else ["partition", "carp"]
        return out or ["clear"]

    def table(self) -> dict[str, Any]:
        """The node file's form, defaults left out (what parse_table reads back)."""
        out: dict[str, Any] = {}
        if self.delay:
            out["delay"] = _time_text(self.delay)
        if self.jitter:
            out["jitter"] = _time_text(self.jitter)
        if self.loss:
            out["loss"] = f"{self.loss:g}%"
        if self.rate:
            out["rate"] = _rate_text(self.rate)
        if self.partition is not Partition.NONE:
            out["partition"] = True if self.partition is Partition.ALL else "carp"
        return out


def _time_text(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3)):
        value = seconds / scale
        if value >= 1 and math.isclose(value, round(value, 3)):
            return f"{round(value, 3):g}{unit}"
    return f"{seconds * 1e6:g}us"


def _rate_text(rate: int) -> str:
    for unit in ("tbit", "gbit", "mbit", "kbit"):
        if rate % _RATE_UNITS[unit] == 0:
            return f"{rate // _RATE_UNITS[unit]}{unit}"
    return f"{rate}bit"


@dataclass(frozen=True, slots=True)
class PortImpairment:
    """Both directions of a port."""

    inbound: Impairment = field(default_factory=Impairment)
    outbound: Impairment = field(default_factory=Impairment)

    def get(self, direction: Direction) -> Impairment:
        return self.inbound if direction is Direction.IN else self.outbound

    def table(self) -> dict[str, Any]:
        if self.inbound == self.outbound:
            return self.inbound.table()
        return {"in": self.inbound.table(), "out": self.outbound.table()}


@dataclass(frozen=True, slots=True)
class ImpairChange:
    """What one `vswitch impair PORT ...` command sets: one direction, or both (None)."""

    direction: Direction | None
    impairment: Impairment

    def apply(self, current: PortImpairment) -> PortImpairment:
        if self.direction is Direction.IN:
            return replace(current, inbound=self.impairment)
        if self.direction is Direction.OUT:
            return replace(current, outbound=self.impairment)
        return PortImpairment(self.impairment, self.impairment)


# -- values: one checker per option, shared by the words and the table -----------------------


def _number(text: str, pattern: re.Pattern[str], what: str, example: str) -> re.Match[str]:
    if text.strip().startswith("-"):
        raise ValueError(f"{text} is negative (give {what}, e.g. {example})")
    match = pattern.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"{text!r} is not {what} (e.g. {example})")
    return match


def _seconds(value: Any, name: str) -> float:
    example = "50ms" if name == "delay" else "5ms"
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{value!r} is not a time (e.g. {example})")
    if isinstance(value, str):
        match = _number(value, _TIME, "a time with its unit, us, ms or s", example)
        seconds = float(match.group(1)) * _TIME_UNITS[match.group(2)]
    elif value < 0 or not math.isfinite(value):
        raise ValueError(f"{value} is not a positive number of seconds (e.g. {example})")
    else:
        seconds = float(value)  # a TOML number is seconds, as every time in the node file
    if seconds > MAX_DELAY:
        raise ValueError(f"{value} is more than {MAX_DELAY:g}s (give 0 to {MAX_DELAY:g}s)")
    return seconds


def _loss(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{value!r} is not a percentage (e.g. 30%)")
    percent = (
        float(_number(value, _PERCENT, "a percentage", "30%").group(1))
        if isinstance(value, str)
        else float(value)
    )
    if not 0 <= percent <= 100:
        shown = value if isinstance(value, str) else f"{value}%"
        raise ValueError(f"{shown} is out of range 0..100% (give 0% to 100%)")
    return percent


def _rate(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"{value!r} is not a rate (e.g. 10mbit)")
    if isinstance(value, str):
        if value.strip().lower().endswith(("bps", "b/s")):
            raise ValueError(
                f"{value!r} is ambiguous (give bits per second as bit, kbit, mbit or gbit, "
                "e.g. 10mbit; tc's mbps means megabytes)"
            )
        match = _number(value, _RATE, "a rate in bit, kbit, mbit, gbit or tbit", "10mbit")
        bits = round(float(match.group(1)) * _RATE_UNITS[match.group(2)])
    else:
        bits = value
    if not MIN_RATE <= bits <= MAX_RATE:
        raise ValueError(f"{value} is out of range 1kbit..1tbit (e.g. 10mbit)")
    return bits


def _partition(value: Any) -> Partition:
    if value is True or value == "all":
        return Partition.ALL
    if value is False or value == "none":
        return Partition.NONE
    if value == "carp":
        return Partition.CARP
    raise ValueError(
        f'{value!r} is not true, false or "carp" (partition = true drops every frame, '
        'partition = "carp" only protocol 112)'
    )


_CHECKS = {
    "delay": lambda v: _seconds(v, "delay"),
    "jitter": lambda v: _seconds(v, "jitter"),
    "loss": _loss,
    "rate": _rate,
    "partition": _partition,
}


# -- the command words ----------------------------------------------------------------------


def parse_words(words: Sequence[str]) -> ImpairChange:
    """`[in|out] [delay T] [jitter T] [loss P] [rate R] [partition [carp]] | [in|out] clear`."""
    direction: Direction | None = None
    rest = list(words)
    if rest and rest[0] in (Direction.IN, Direction.OUT):
        direction = Direction(rest.pop(0))
    first = len(words) - len(rest) + 1  # 1-based number of the first option word
    if not rest:
        raise ImpairError([((), "nothing to set (e.g. delay 50ms loss 1%, or clear)")])
    if rest == ["clear"]:
        return ImpairChange(direction, Impairment())
    values: dict[str, Any] = {}
    errors: list[tuple[Loc, str]] = []
    i = 0
    while i < len(rest):
        word, number = rest[i], first + i
        if word == "partition":
            carp = i + 1 < len(rest) and rest[i + 1] == "carp"
            text, value, i = ("partition carp", "carp", i + 2) if carp else (word, True, i + 1)
        elif word in _CHECKS and i + 1 < len(rest):
            text, value, i = f"{word} {rest[i + 1]}", rest[i + 1], i + 2
        elif word in _CHECKS:
            errors.append(((), f"word {number} {word!r}: needs a value (e.g. {_EXAMPLES[word]})"))
            break
        else:
            known = "delay, jitter, loss, rate, partition [carp]; clear alone; in or out first"
            errors.append(((), f"word {number} {word!r}: unknown (known: {known})"))
            i += 1
            continue
        name = "partition" if word == "partition" else word
        if name in values:
            errors.append(((), f"word {number} {text!r}: {name} is given twice (give it once)"))
            continue
        try:
            values[name] = _CHECKS[name](value)
        except ValueError as exc:
            errors.append(((), f"word {number} {text!r}: {exc}"))
    if errors:
        raise ImpairError(errors)
    return ImpairChange(direction, Impairment(**values))


_EXAMPLES = {
    "delay": "delay 50ms",
    "jitter": "jitter 5ms",
    "loss": "loss 1%",
    "rate": "rate 10mbit",
}


# -- the node file's table ------------------------------------------------------------------


def _one_table(value: Any, loc: Loc, errors: list[tuple[Loc, str]]) -> Impairment:
    if not isinstance(value, Mapping):
        errors.append((loc, 'expected a table (e.g. {delay = "50ms", loss = "1%"})'))
        return Impairment()
    values: dict[str, Any] = {}
    for key, raw in value.items():
        check = _CHECKS.get(key)
        if check is None:
            errors.append(((*loc, key), f"unknown key (known: {', '.join(_CHECKS)}, in, out)"))
            continue
        try:
            values[key] = check(raw)
        except ValueError as exc:
            errors.append(((*loc, key), str(exc)))
    return Impairment(**values)


def parse_table(value: Any) -> PortImpairment:
    """`impair = {delay = "50ms", ...}` for both directions, or `{in = {...}, out = {...}}`."""
    errors: list[tuple[Loc, str]] = []
    if isinstance(value, Mapping) and ("in" in value or "out" in value):
        flat = [k for k in value if k not in ("in", "out")]
        for key in flat:
            fix = "give each direction's keys inside in = {...} and out = {...}"
            errors.append(((key,), f"beside in/out tables ({fix})"))
        result = PortImpairment(
            _one_table(value.get("in", {}), ("in",), errors),
            _one_table(value.get("out", {}), ("out",), errors),
        )
    else:
        both = _one_table(value, (), errors)
        result = PortImpairment(both, both)
    if errors:
        raise ImpairError(errors)
    return result
