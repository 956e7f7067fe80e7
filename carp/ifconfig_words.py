"""The ifconfig(8) carp grammar (protocol.md §9): the words of one line -> typed operations.

One grammar for both places the language is written: a carp interface's `ifconfig = ...` in the
config file (hostname.if lines, which netstart(8) feeds to ifconfig one at a time) and `vswitch
ifconfig carpN ...` on a running node. It is syntactic only: it knows which words take an argument,
how an address is written (`ADDR/LEN`, `inet ADDR NETMASK [BROADCAST|NONE]`, `inet6 ADDR PREFIXLEN`,
or the `netmask` / `prefixlen` keywords) and which option a misspelt word probably meant. Values
(ranges, addresses, names) are validated once, by the models of carp/config.py, and the rules of
applying an operation by the fold (carp/ifconfig_fold.py); every operation keeps its `Word` so both
can name it in an error.
"""

import difflib
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address

Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Word:
    """Where a value came from: line index (None for one string or a command) and word number."""

    line: int | None
    index: int  # 1-based position on the line
    text: str  # the option with its argument(s), as written

    def where(self) -> str:
        return f"word {self.index} {self.text!r}"


@dataclass(frozen=True, slots=True)
class IfconfigError:
    line: int | None
    word: Word | None
    message: str

    def text(self) -> str:
        """The message after the word it is about (`word 3 'advbase 300': ...`), no file path."""
        return f"{self.word.where()}: {self.message}" if self.word else self.message


# --- operations --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetField:
    """advbase, pass, balancing, carppeer (None: -carppeer), carpdev, lladdr: one key-form field."""

    word: Word
    key: str
    value: str | None


@dataclass(frozen=True, slots=True)
class SetVhid:
    """`vhid n`: a one-node list; the leader keeps its advskew (ifconfig setcarp_vhid)."""

    word: Word
    vhid: str


@dataclass(frozen=True, slots=True)
class SetAdvskew:
    """`advskew n`: the leader's advskew (carpr_advskews[0], the lowest vhid once sorted)."""

    word: Word
    advskew: str


@dataclass(frozen=True, slots=True)
class SetCarpnodes:
    """`carpnodes v:s,...`: replaces the list (ifconfig setcarp_nodes, §6.1)."""

    word: Word
    nodes: tuple[tuple[str, str], ...]  # (vhid, advskew) as written


@dataclass(frozen=True, slots=True)
class Group:
    """`group g` (join) / `-group g` (leave)."""

    word: Word
    name: str
    join: bool


@dataclass(frozen=True, slots=True)
class Admin:
    """`up` / `down` (down is the bow-out of §4.7)."""

    word: Word
    up: bool


@dataclass(frozen=True, slots=True)
class SetState:
    """`state init|backup|master` (§4.10): a runtime command, never configuration."""

    word: Word
    state: str


@dataclass(frozen=True, slots=True)
class Address:
    """One address; without alias an inet address replaces the first IPv4 one (SIOCDIFADDR)."""

    word: Word
    text: str  # ADDR/LEN or ADDR/NETMASK; a bare IPv4 ADDR is left for the model to refuse
    family: str  # "inet" | "inet6"
    mode: str  # "set", "alias" or "delete"


Operation = SetField | SetVhid | SetAdvskew | SetCarpnodes | Group | Admin | SetState | Address

# --- words -------------------------------------------------------------------------------------

# ifconfig words taking one argument that map straight onto a key-form field
_FIELD_OPTIONS = frozenset({"advbase", "pass", "balancing", "carppeer", "carpdev", "lladdr"})
_ARG_OPTIONS = (
    _FIELD_OPTIONS
    | {"vhid", "advskew", "carpnodes", "group", "-group", "state"}
    | {
        "netmask",
        "prefixlen",
        "broadcast",
    }
)
_FLAG_OPTIONS = frozenset({"up", "down", "-carppeer", "alias", "-alias", "delete", "inet", "inet6"})
KEYWORDS = _ARG_OPTIONS | _FLAG_OPTIONS

_DOTTED = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
_HEXMASK = re.compile(r"^0x[0-9a-fA-F]{1,8}$")  # inet_aton: one hex number is the whole mask
_V4_WORD = re.compile(r"^\d{1,3}(\.\d{1,3}){3}(/\S*)?$")
_CARPNODE = re.compile(r"^(\d+):(\d+)$")

# ifconfig's default prefix length for inet6 when none is given (ifconfig.c, explicit_prefix)
DEFAULT_PREFIXLEN6 = 64
DEMOTE_RANGE = range(0, 129)  # ifconfig -g GROUP carpdemote n (§5.2)


def split_carpnodes(text: str) -> list[dict[str, str]] | str:
    """`vhid:advskew,...` (§6.1, ifconfig setcarp_nodes) -> entries, or a message saying why not."""
    entries: list[dict[str, str]] = []
    for position, item in enumerate(text.split(",")):
        match = _CARPNODE.match(item.strip())
        if match is None:
            return (
                f"entry {position} {item.strip()!r} is not vhid:advskew "
                '(write the list as "1:0,2:100")'
            )
        entries.append({"vhid": match.group(1), "advskew": match.group(2)})
    return entries


def split_line(line: str) -> list[str]:
    """Words of one hostname.if line; shell quoting allowed, a word starting with # ends it.

    ValueError for unbalanced quotes."""
    lexer = shlex.shlex(line, posix=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    words: list[str] = []
    for word in lexer:
        if word.startswith("#"):
            break
        words.append(word)
    return words


def _is_netmask(word: str) -> bool:
    return bool(_DOTTED.match(word) or _HEXMASK.match(word))


def _netmask_text(word: str) -> str:
    """A hex netmask (0xffffff00, as ifconfig prints it) in dotted form; dotted ones unchanged."""
    if _HEXMASK.match(word):
        return str(IPv4Address(int(word, 16)))
    return word


def _looks_like_address(word: str) -> bool:
    return ":" in word or bool(_V4_WORD.match(word))


@dataclass(slots=True)
class _Pending:
    """The address of the line, finished when the line ends (alias and netmask may follow)."""

    word: Word
    text: str
    family: str
    mask: str | None = None
    prefixlen: str | None = None

    def operation(self, mode: str) -> Address:
        text = self.text
        if "/" not in text:
            if self.mask is not None:
                text = f"{text}/{_netmask_text(self.mask)}"
            elif self.prefixlen is not None:
                text = f"{text}/{self.prefixlen}"
            elif self.family == "inet6":
                text = f"{text}/{DEFAULT_PREFIXLEN6}"
        return Address(self.word, text, self.family, mode)


class _Line:
    """One line (one ifconfig invocation): its operations in order, then its address."""

    def __init__(self, line: int | None, words: Sequence[str]) -> None:
        self.line = line
        self.words = words
        self.ops: list[Operation] = []
        self.errors: list[IfconfigError] = []
        self.address: _Pending | None = None

    def error(self, word: Word | None, message: str) -> None:
        self.errors.append(IfconfigError(self.line, word, message))

    def parse(self) -> None:
        words = self.words
        family: Word | None = None
        mode: tuple[str, Word] | None = None  # alias / delete, and where it was asked for
        i = 0
        while i < len(words):
            word = words[i]
            here = Word(self.line, i + 1, word)
            if word in ("inet", "inet6"):
                if family is not None or self.address is not None:
                    self.error(here, "one address family per line (start a new line)")
                family = here
                i += 1
            elif word in ("alias", "-alias", "delete"):
                mode = ("alias" if word == "alias" else "delete", here)
                i += 1
            elif word in _ARG_OPTIONS:
                if i + 1 >= len(words):
                    self.error(here, f"{word} needs a value ({word} VALUE)")
                    break
                value = words[i + 1]
                self.option(Word(self.line, i + 1, f"{word} {value}"), word, value)
                i += 2
            elif word == "-carppeer":  # back to the multicast group 224.0.0.18
                self.ops.append(SetField(here, "carppeer", None))
                i += 1
            elif word in _FLAG_OPTIONS:  # up, down
                self.ops.append(Admin(here, word == "up"))
                i += 1
            elif _looks_like_address(word) and self.address is None:
                i = self.take_address(i, family.text if family else None)
            elif _looks_like_address(word):
                self.error(here, "a second address on one line (give it its own line)")
                i += 1
            else:
                # a misspelt option that takes a value: skip the value too, one error is enough
                i += 2 if self.unknown(here, word) in _ARG_OPTIONS and i + 1 < len(words) else 1
        if family is not None and self.address is None:
            self.error(family, f"{family.text} without an address")
        if mode is not None and self.address is None:
            self.error(mode[1], f"{mode[1].text} needs an address on the same line")
        if self.address is not None:
            self.ops.append(self.address.operation("set" if mode is None else mode[0]))

    def take_address(self, i: int, family: str | None) -> int:
        """ADDR and, after inet/inet6 (hostname.if style), NETMASK [BROADCAST] or PREFIXLEN."""
        words = self.words
        start = i
        text = words[i]
        detected = "inet6" if ":" in text else "inet"
        i += 1
        mask: str | None = None
        prefixlen: str | None = None
        if family == "inet":
            if "/" not in text and i < len(words) and (_is_netmask(words[i]) or words[i] == "NONE"):
                mask = None if words[i] == "NONE" else words[i]
                i += 1
            if i < len(words) and (_DOTTED.match(words[i]) or words[i] == "NONE"):
                i += 1  # the broadcast address: skipped, the prefix decides it
        elif family == "inet6" and "/" not in text and i < len(words) and words[i].isdigit():
            prefixlen = words[i]
            i += 1
        here = Word(self.line, start + 1, " ".join(words[start:i]))
        if family is not None and family != detected:
            self.error(here, f"{text!r} is not an {family} address (use {detected})")
        self.address = _Pending(here, text, detected, mask, prefixlen)
        return i

    def option(self, here: Word, word: str, value: str) -> None:
        if word in _FIELD_OPTIONS:
            self.ops.append(SetField(here, word, value))
        elif word == "vhid":
            self.ops.append(SetVhid(here, value))
        elif word == "advskew":
            self.ops.append(SetAdvskew(here, value))
        elif word == "carpnodes":
            entries = split_carpnodes(value)
            if isinstance(entries, str):
                self.error(here, entries)
            else:
                nodes = tuple((entry["vhid"], entry["advskew"]) for entry in entries)
                self.ops.append(SetCarpnodes(here, nodes))
        elif word in ("group", "-group"):
            self.ops.append(Group(here, value, join=word == "group"))
        elif word == "state":
            self.ops.append(SetState(here, value))
        elif word == "broadcast":
            if not (_DOTTED.match(value) or value == "NONE"):
                self.error(here, f"{value!r} is not an IPv4 broadcast address or NONE")
        else:
            self.set_mask(here, word, value)

    def set_mask(self, here: Word, word: str, value: str) -> None:
        """`netmask MASK` / `prefixlen N` after the address of the line."""
        address = self.address
        if address is None:
            self.error(here, f"{word} needs an address earlier on the same line")
        elif word == "netmask":
            if address.family != "inet" or not _is_netmask(value):
                self.error(here, f"{value!r} is not an IPv4 netmask (255.255.255.0)")
            else:
                address.mask = value
        elif address.family != "inet6" or not value.isdigit():
            self.error(here, "prefixlen takes a number and applies to inet6 addresses")
        else:
            address.prefixlen = value

    def unknown(self, here: Word, word: str) -> str | None:
        """Report an unknown word; return the option it probably meant."""
        close = difflib.get_close_matches(word, sorted(KEYWORDS), n=1)
        hint = f"did you mean {close[0]}?" if close else "see protocol.md §9.1 for the options"
        self.error(here, f"unknown option or address {word!r} ({hint})")
        return close[0] if close else None


def parse_line(
    line: int | None, words: Sequence[str]
) -> tuple[list[Operation], list[IfconfigError]]:
    """The operations of one line, in the order they apply, and its syntax errors."""
    parsed = _Line(line, words)
    parsed.parse()
    return parsed.ops, parsed.errors


def parse_demote(word: str, count: str | None) -> int:
    """`carpdemote [n]` / `-carpdemote [n]` as a signed adjustment (n 0..128, default 1)."""
    if word not in ("carpdemote", "-carpdemote"):
        raise ValueError(f"{word}: expected carpdemote or -carpdemote")
    if count is None:
        return 1 if word == "carpdemote" else -1
    if not re.fullmatch(r"\d+", count.strip()):
        raise ValueError(f"{word} {count}: {count!r} is not a whole number")
    n = int(count)
    if n not in DEMOTE_RANGE:
        raise ValueError(f"{word} {count}: {n} is out of range 0..128")
    return n if word == "carpdemote" else -n
