"""ifconfig(8) for carp interfaces (protocol.md §9): one grammar, two folds.

- carp/ifconfig_words.py: the words of a line -> typed operations, each with its `Word`;
- carp/ifconfig_fold.py: operations folded onto a carp interface's key form;
- here, the two uses. A config file's `ifconfig = ...` lines fold onto a fresh carpN
  (`parse_ifconfig`, fed to `CarpConfig` by carp/config.py `expand_ifconfig`). `vswitch ifconfig
  carpN ...` is parsed by `parse_change` and applied by `apply_params`: the running interface's
  parameters are turned into the key form, the same fold applies the operations, and the same
  `CarpConfig` validates the result, so a runtime error reads like the file's, minus the file path
  (`word 1 'advskew 300': 300 is out of range 0..254`).

`state` and `up`/`down` are runtime-only parts of a change: the node drives them through
`CarpHost` (§4.10, §4.7), so `apply_params` leaves them out.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from carp import configerrors
from carp.config import CarpConfig
from carp.constants import State
from carp.ifconfig_fold import KeyForm, ParsedIfconfig, default_balancing, parse_ifconfig
from carp.ifconfig_words import (
    DEFAULT_PREFIXLEN6,
    KEYWORDS,
    Admin,
    IfconfigError,
    Loc,
    Operation,
    SetState,
    Word,
    parse_demote,
    parse_line,
    split_carpnodes,
)
from carp.params import CarpIfParams

__all__ = [
    "DEFAULT_PREFIXLEN6",
    "KEYWORDS",
    "IfconfigChange",
    "IfconfigError",
    "Loc",
    "ParsedIfconfig",
    "Word",
    "apply_params",
    "default_balancing",
    "parse_change",
    "parse_demote",
    "parse_ifconfig",
    "split_carpnodes",
]

_STATES = ", ".join(state.name.lower() for state in State)


@dataclass(frozen=True, slots=True)
class IfconfigChange:
    """What one `vswitch ifconfig carpN ...` asks for: parameter operations for `apply_params`,
    and the runtime-only parts. None / empty: left as it is."""

    operations: tuple[Operation, ...] = ()
    state: State | None = None  # `state init|backup|master` (§4.10)
    admin_up: bool | None = None  # `up` / `down` (bow-out, §4.7)

    @property
    def changes_params(self) -> bool:
        """True if anything besides `state` and `up`/`down` is asked for."""
        return bool(self.operations)


def _refused(errors: Sequence[str]) -> ValueError:
    return ValueError("; ".join(errors))


def parse_change(words: Sequence[str]) -> IfconfigChange:
    """The options after the interface name, as one ifconfig invocation; ValueError names the
    word at fault (unknown options, missing values, a state that does not exist)."""
    ops, errors = parse_line(None, words)
    operations: list[Operation] = []
    state: State | None = None
    admin_up: bool | None = None
    for op in ops:
        if isinstance(op, SetState):
            try:
                state = State[op.state.upper()]
            except KeyError:
                message = f"{op.state!r} is not one of {_STATES}"
                errors.append(IfconfigError(None, op.word, message))
        elif isinstance(op, Admin):
            admin_up = op.up
        else:
            operations.append(op)
    if errors:
        raise _refused([error.text() for error in errors])
    return IfconfigChange(tuple(operations), state, admin_up)


def apply_params(params: CarpIfParams, change: IfconfigChange) -> CarpIfParams:
    """The interface's parameters after `change` (all but state and up/down), validated as a
    config file's carp interface is; ValueError with every problem, and nothing is changed."""
    form = KeyForm.of(params)
    form.apply_line(change.operations)
    parsed = form.result()
    errors = [error.text() for error in parsed.errors]
    try:
        config = CarpConfig.model_validate(parsed.fields)
    except ValidationError as exc:
        errors += configerrors.in_ifconfig(CarpConfig, exc, parsed.origins)
    else:
        if not errors:
            return config.params(params.name)
    raise _refused(errors)
