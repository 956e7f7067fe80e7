"""Operations of the ifconfig grammar folded onto a carp interface's key form (protocol.md §9).

The key form is what `CarpConfig` (carp/config.py) validates: `{"addresses": [...], "carpnodes":
[{"vhid": .., "advskew": ..}], "advbase": .., ...}`, with `origins` mapping each field back to the
word that set it. A config file's lines fold onto a fresh carpN (`parse_ifconfig`); a runtime
change folds onto the key form of the running interface (`KeyForm.of`, carp/ifconfig.py). Each
line is one ifconfig invocation: its operations apply in order, then the §6.1 balancing default
when the line changed the vhid list.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from ipaddress import ip_interface
from typing import Any, Self

from carp.ifconfig_words import (
    Address,
    Admin,
    Group,
    IfconfigError,
    Loc,
    Operation,
    SetAdvskew,
    SetCarpnodes,
    SetField,
    SetState,
    SetVhid,
    Word,
    parse_line,
    split_line,
)
from carp.params import CarpIfParams

STATE_IN_FILE = (
    "state is a runtime command, not configuration "
    "(use `vswitch ifconfig CARPIF state master|backup` on the running node)"
)


@dataclass(slots=True)
class ParsedIfconfig:
    """The key-form fields set by the lines, where each came from, and the errors found."""

    fields: dict[str, Any] = field(default_factory=dict)
    origins: dict[Loc, Word] = field(default_factory=dict)
    errors: list[IfconfigError] = field(default_factory=list)


def default_balancing(count: int, current: str | None) -> str:
    """§6.1 carp_vhids_ioctl, when the vhid list changes: one vhid forces none; several turn
    none (or a fresh interface's unset mode) into ip and keep any other mode."""
    if count == 1:
        return "none"
    return "ip" if current is None or current.lower() == "none" else current


def _same_ip(a: str, b: str) -> bool:
    """Addresses are matched by IP alone, as SIOCDIFADDR / SIOCAIFADDR do."""
    try:
        return ip_interface(a).ip == ip_interface(b).ip
    except ValueError:
        return a.split("/")[0] == b.split("/")[0]


def _vhid_key(vhid: str) -> int | str:
    return int(vhid) if vhid.isdigit() else vhid


@dataclass(frozen=True, slots=True)
class _Node:
    vhid: str
    advskew: str
    vhid_word: Word | None
    skew_word: Word | None


class KeyForm:
    """What ifconfig builds up in struct carpreq and the address list, with the words that did."""

    def __init__(self) -> None:
        self.scalars: dict[str, tuple[str | None, Word | None]] = {}
        self.addresses: list[tuple[str, Word | None]] = []
        self.nodes: list[_Node] | None = None  # None: no vhid yet (a fresh carpN)
        self.nodes_word: Word | None = None
        self.lone_skew: tuple[str, Word] | None = None  # advskew given before any vhid
        self.groups: list[tuple[str, Word | None]] = [("carp", None)]
        self.groups_touched = False
        self.errors: list[IfconfigError] = []

    @classmethod
    def of(cls, params: CarpIfParams) -> Self:
        """A running carp interface in the key form, so a change folds as a file line does."""
        form = cls()
        form.scalars = {
            "advbase": (str(params.advbase), None),
            # passphrases come from the file's strings (CarpConfig.params encodes them)
            "pass": (params.passphrase.decode(), None),
            "balancing": (params.balancing.label, None),
            "state": ("up" if params.admin_up else "down", None),
        }
        if params.carpdev:
            form.scalars["carpdev"] = (params.carpdev, None)
        if params.carppeer is not None:
            form.scalars["carppeer"] = (str(params.carppeer), None)
        if params.lladdr is not None:
            form.scalars["lladdr"] = (":".join(f"{b:02x}" for b in params.lladdr), None)
        form.addresses = [(str(address), None) for address in params.addresses]
        if params.carpnodes:
            form.nodes = [_Node(str(n.vhid), str(n.advskew), None, None) for n in params.carpnodes]
        form.groups = [(name, None) for name in params.groups]
        form.groups_touched = True
        return form

    def error(self, word: Word, message: str) -> None:
        self.errors.append(IfconfigError(word.line, word, message))

    def vhids(self) -> frozenset[int | str] | None:
        return None if self.nodes is None else frozenset(_vhid_key(n.vhid) for n in self.nodes)

    def leader(self, nodes: list[_Node]) -> int:
        """carpr_advskews[0]: SIOCGVH lists the vhes sorted, so the lowest vhid leads (§6.1)."""
        numbered = [n for n, node in enumerate(nodes) if node.vhid.isdigit()]
        return min(numbered, key=lambda n: int(nodes[n].vhid)) if numbered else 0

    def apply_line(self, ops: Sequence[Operation]) -> None:
        before = self.vhids()
        for op in ops:
            self.apply(op)
        given = any(isinstance(op, SetField) and op.key == "balancing" for op in ops)
        if self.nodes and self.vhids() != before and not given:
            mode, word = self.scalars.get("balancing", (None, None))
            new = default_balancing(len(self.nodes), mode)
            self.scalars["balancing"] = (new, word if new == mode else None)

    def apply(self, op: Operation) -> None:
        if isinstance(op, SetField):
            self.scalars[op.key] = (op.value, op.word)
        elif isinstance(op, Admin):
            self.scalars["state"] = ("up" if op.up else "down", op.word)
        elif isinstance(op, SetVhid):
            if self.nodes:
                leader = self.nodes[self.leader(self.nodes)]
                skew, skew_word = leader.advskew, leader.skew_word
            else:
                skew, skew_word = self.lone_skew or ("0", None)
            self.nodes = [_Node(op.vhid, skew, op.word, skew_word)]
            self.nodes_word, self.lone_skew = op.word, None
        elif isinstance(op, SetAdvskew):
            if self.nodes:
                n = self.leader(self.nodes)
                self.nodes[n] = replace(self.nodes[n], advskew=op.advskew, skew_word=op.word)
            else:
                self.lone_skew = (op.advskew, op.word)
        elif isinstance(op, SetCarpnodes):
            self.nodes = [_Node(v, s, op.word, op.word) for v, s in op.nodes]
            self.nodes_word, self.lone_skew = op.word, None
        elif isinstance(op, Group):
            self.group(op)
        elif isinstance(op, Address):
            self.address(op)
        else:
            assert isinstance(op, SetState)
            self.error(op.word, STATE_IN_FILE)

    def group(self, op: Group) -> None:
        names = [name for name, _ in self.groups]
        if op.join:
            self.groups_touched = True
            if op.name not in names:
                self.groups.append((op.name, op.word))
        elif op.name == "carp":
            self.error(op.word, "every carp interface stays in group carp")
        elif op.name not in names:
            self.error(op.word, f"not a member of group {op.name!r}")
        else:
            self.groups = [(name, word) for name, word in self.groups if name != op.name]
            self.groups_touched = True

    def address(self, op: Address) -> None:
        entry = (op.text, op.word)
        same = [n for n, (have, _) in enumerate(self.addresses) if _same_ip(have, op.text)]
        if op.mode == "delete":
            if not same:
                self.error(op.word, "not an address of this interface")
            self.addresses = [a for n, a in enumerate(self.addresses) if n not in same]
        elif same:
            self.addresses[same[0]] = entry  # SIOCAIFADDR on an existing address updates it
        else:
            primary = [n for n, (have, _) in enumerate(self.addresses) if ":" not in have]
            if op.mode == "set" and op.family == "inet" and primary:
                # without alias, ifconfig deletes the first IPv4 address first (SIOCDIFADDR)
                self.addresses[primary[0]] = entry
            else:
                self.addresses.append(entry)

    def result(self) -> ParsedIfconfig:
        result = ParsedIfconfig(errors=list(self.errors))
        fields, origins = result.fields, result.origins
        for key, (value, word) in self.scalars.items():
            fields[key] = value
            if word is not None:
                origins[(key,)] = word
        if self.addresses:
            fields["addresses"] = [text for text, _ in self.addresses]
            for n, (_, word) in enumerate(self.addresses):
                if word is not None:
                    origins[("addresses", n)] = word
        if self.nodes is not None:
            fields["carpnodes"] = [{"vhid": n.vhid, "advskew": n.advskew} for n in self.nodes]
            if self.nodes_word is not None:
                origins[("carpnodes",)] = self.nodes_word
            for n, node in enumerate(self.nodes):
                if node.vhid_word is not None:
                    origins[("carpnodes", n, "vhid")] = node.vhid_word
                if node.skew_word is not None:
                    origins[("carpnodes", n, "advskew")] = node.skew_word
        elif self.lone_skew is not None:
            fields["advskew"], origins[("advskew",)] = self.lone_skew
        if self.groups_touched:
            fields["groups"] = [name for name, _ in self.groups]
            for n, (_, group_word) in enumerate(self.groups):
                if group_word is not None:
                    origins[("groups", n)] = group_word
        return result


def parse_ifconfig(value: str | Sequence[str]) -> ParsedIfconfig:
    """A config file's ifconfig lines (one string, or a list as in hostname.if), in order, on a
    fresh carpN: the key form, its origins, and the syntax and fold errors."""
    form = KeyForm()
    lines: list[tuple[int | None, object]]
    lines = [(None, value)] if isinstance(value, str) else list(enumerate(value))
    for line_no, line in lines:
        if not isinstance(line, str):
            form.errors.append(IfconfigError(line_no, None, f"expected a string, got {line!r}"))
            continue
        try:
            words = split_line(line)
        except ValueError as exc:  # unbalanced quotes
            message = f"cannot split the line into words: {exc}"
            form.errors.append(IfconfigError(line_no, None, message))
            continue
        ops, syntax = parse_line(line_no, words)
        form.errors += syntax  # then the fold's own, so errors read in line order
        form.apply_line(ops)
    return form.result()
