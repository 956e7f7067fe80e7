"""ifconfig(8) carp options and hostname.if(5) lines (protocol.md §9), parsed into the key form.

The parser is syntactic only: it knows which words take an argument, how an address is written
(`ADDR/LEN`, `inet ADDR NETMASK BROADCAST|NONE`, `inet6 ADDR PREFIXLEN`, or the `netmask` /
`prefixlen` keywords) and that lines and options apply in order, as netstart(8) feeds hostname.if
lines to ifconfig one at a time. Values (ranges, addresses, names) are validated once, by the
models of carp/config.py; `origins` maps each produced field back to the word that set it so those
errors can name the line and the word.
"""

import difflib
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, ip_interface
from typing import Any

Loc = tuple[str | int, ...]

# ifconfig words taking one argument that map straight onto a key-form field
_SCALAR_OPTIONS: dict[str, str] = {
    "advbase": "advbase",
    "pass": "pass",
    "balancing": "balancing",
    "carppeer": "carppeer",
    "carpdev": "carpdev",
    "lladdr": "lladdr",
}
_ARG_OPTIONS = frozenset(
    {*_SCALAR_OPTIONS, "vhid", "advskew", "carpnodes", "group", "-group", "netmask", "prefixlen"}
    | {"broadcast", "state"}
)
_FLAG_OPTIONS = frozenset({"up", "down", "-carppeer", "alias", "-alias", "delete", "inet", "inet6"})
KEYWORDS = _ARG_OPTIONS | _FLAG_OPTIONS

_DOTTED = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
_HEXMASK = re.compile(r"^0x[0-9a-fA-F]{8}$")
_V4_WORD = re.compile(r"^\d{1,3}(\.\d{1,3}){3}(/\S*)?$")
_CARPNODE = re.compile(r"^(\d+):(\d+)$")

# ifconfig's default prefix length for inet6 when none is given (ifconfig.c, explicit_prefix)
DEFAULT_PREFIXLEN6 = 64


@dataclass(frozen=True, slots=True)
class Word:
    """Where a value came from: line index (None when ifconfig is one string) and word number."""

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


@dataclass(slots=True)
class ParsedIfconfig:
    """The key-form fields set by the lines, where each came from, and the syntax errors."""

    fields: dict[str, Any] = field(default_factory=dict)
    origins: dict[Loc, Word] = field(default_factory=dict)
    errors: list[IfconfigError] = field(default_factory=list)


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


def _is_netmask(word: str) -> bool:
    return bool(_DOTTED.match(word) or _HEXMASK.match(word))


def _netmask_text(word: str) -> str:
    """A hex netmask (0xffffff00, as ifconfig prints it) in dotted form; dotted ones unchanged."""
    if _HEXMASK.match(word):
        return str(IPv4Address(int(word, 16)))
    return word


def _looks_like_address(word: str) -> bool:
    return ":" in word or bool(_V4_WORD.match(word))


def _same_ip(a: str, b: str) -> bool:
    """Addresses are matched by IP alone, as SIOCDIFADDR / SIOCAIFADDR do."""
    try:
        return ip_interface(a).ip == ip_interface(b).ip
    except ValueError:
        return a.split("/")[0] == b.split("/")[0]


def _tokens(line: str) -> list[str]:
    """Words of one line; shell quoting allowed, a word starting with # ends the line."""
    lexer = shlex.shlex(line, posix=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    words: list[str] = []
    for word in lexer:
        if word.startswith("#"):
            break
        words.append(word)
    return words


@dataclass(slots=True)
class _Address:
    """The address operation of one line, applied when the line ends (alias may come after)."""

    word: Word
    text: str
    family: str  # "inet" | "inet6"
    mask: str | None = None
    prefixlen: str | None = None


class _Builder:
    """The state ifconfig would build up in struct carpreq and the address list, line by line."""

    def __init__(self) -> None:
        self.result = ParsedIfconfig()
        self.scalars: dict[str, tuple[Any, Word]] = {}
        self.addresses: list[tuple[str, Word]] = []
        self.vhids: list[tuple[str, Word]] | None = None
        self.nodes_word: Word | None = None
        self.skews: dict[int, tuple[str, Word]] = {}
        self.groups: list[tuple[str, Word | None]] = [("carp", None)]
        self.groups_touched = False

    def error(self, line: int | None, word: Word | None, message: str) -> None:
        self.result.errors.append(IfconfigError(line, word, message))

    def parse_line(self, line_no: int | None, text: str) -> None:
        try:
            words = _tokens(text)
        except ValueError as exc:  # unbalanced quotes
            self.error(line_no, None, f"cannot split the line into words: {exc}")
            return
        family: Word | None = None
        address: _Address | None = None
        alias: str | None = None  # None (replace the primary), "alias" (add), "delete"
        i = 0
        while i < len(words):
            word = words[i]
            here = Word(line_no, i + 1, word)
            if word in ("inet", "inet6"):
                if family is not None or address is not None:
                    self.error(line_no, here, "one address family per line (start a new line)")
                family = here
                i += 1
            elif word == "alias":
                alias = "alias"
                i += 1
            elif word in ("-alias", "delete"):
                alias = "delete"
                i += 1
            elif word in _ARG_OPTIONS:
                if i + 1 >= len(words):
                    self.error(line_no, here, f"{word} needs a value ({word} VALUE)")
                    break
                value = words[i + 1]
                here = Word(line_no, i + 1, f"{word} {value}")
                i += 2
                address = self.option(here, word, value, address)
            elif word in _FLAG_OPTIONS:
                self.flag(here, word)
                i += 1
            elif _looks_like_address(word) and address is None:
                i, address = self.address(words, i, line_no, family.text if family else None)
            elif _looks_like_address(word):
                self.error(line_no, here, "a second address on one line (give it its own line)")
                i += 1
            else:
                # a misspelt option that takes a value: skip the value too, one error is enough
                i += 2 if self.unknown(here, word) in _ARG_OPTIONS and i + 1 < len(words) else 1
        if family is not None and address is None:
            self.error(line_no, family, f"{family.text} without an address")
        if address is not None:
            self.apply_address(address, alias)

    def address(
        self, words: Sequence[str], i: int, line_no: int | None, family: str | None
    ) -> tuple[int, _Address]:
        """ADDR and, after inet/inet6 (hostname.if style), NETMASK [BROADCAST] or PREFIXLEN."""
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
        here = Word(line_no, start + 1, " ".join(words[start:i]))
        if family is not None and family != detected:
            self.error(line_no, here, f"{text!r} is not an {family} address (use {detected})")
        return i, _Address(here, text, detected, mask, prefixlen)

    def option(
        self, here: Word, word: str, value: str, address: _Address | None
    ) -> _Address | None:
        if word in _SCALAR_OPTIONS:
            self.scalars[_SCALAR_OPTIONS[word]] = (value, here)
        elif word == "vhid":
            self.vhids = [(value, here)]
            self.nodes_word = here
        elif word == "advskew":
            self.skews[0] = (value, here)  # the leader's advskew (carpr_advskews[0])
        elif word == "carpnodes":
            entries = split_carpnodes(value)
            if isinstance(entries, str):
                self.error(here.line, here, entries)
            else:
                self.vhids = [(entry["vhid"], here) for entry in entries]
                self.skews = {n: (entry["advskew"], here) for n, entry in enumerate(entries)}
                self.nodes_word = here
        elif word == "group":
            self.groups_touched = True
            if all(name != value for name, _ in self.groups):
                self.groups.append((value, here))
        elif word == "-group":
            self.leave_group(here, value)
        elif word in ("netmask", "prefixlen"):
            return self.set_mask(here, word, value, address)
        elif word == "broadcast":
            if not (_DOTTED.match(value) or value == "NONE"):
                self.error(here.line, here, f"{value!r} is not an IPv4 broadcast address or NONE")
        else:  # state
            self.error(
                here.line,
                here,
                "state is a runtime command, not configuration "
                "(use `vswitch ifconfig CARPIF state master|backup` on the running node)",
            )
        return address

    def set_mask(
        self, here: Word, word: str, value: str, address: _Address | None
    ) -> _Address | None:
        if address is None:
            self.error(here.line, here, f"{word} needs an address earlier on the same line")
        elif word == "netmask":
            if address.family != "inet" or not _is_netmask(value):
                self.error(here.line, here, f"{value!r} is not an IPv4 netmask (255.255.255.0)")
            else:
                address.mask = value
        elif address.family != "inet6" or not value.isdigit():
            self.error(here.line, here, "prefixlen takes a number and applies to inet6 addresses")
        else:
            address.prefixlen = value
        return address

    def leave_group(self, here: Word, name: str) -> None:
        if name == "carp":
            self.error(here.line, here, "every carp interface stays in group carp")
            return
        kept = [(g, w) for g, w in self.groups if g != name]
        if len(kept) == len(self.groups):
            self.error(here.line, here, f"not a member of group {name!r}")
        self.groups = kept
        self.groups_touched = True

    def flag(self, here: Word, word: str) -> None:
        if word in ("up", "down"):
            self.scalars["state"] = (word, here)
        else:  # -carppeer: back to the multicast group 224.0.0.18
            self.scalars["carppeer"] = (None, here)

    def unknown(self, here: Word, word: str) -> str | None:
        """Report an unknown word; return the option it probably meant."""
        close = difflib.get_close_matches(word, sorted(KEYWORDS), n=1)
        hint = f"did you mean {close[0]}?" if close else "see protocol.md §9.1 for the options"
        self.error(here.line, here, f"unknown option or address {word!r} ({hint})")
        return close[0] if close else None

    def apply_address(self, address: _Address, alias: str | None) -> None:
        text = address.text
        if "/" not in text:
            if address.mask is not None:
                text = f"{text}/{_netmask_text(address.mask)}"
            elif address.prefixlen is not None:
                text = f"{text}/{address.prefixlen}"
            elif address.family == "inet6":
                text = f"{text}/{DEFAULT_PREFIXLEN6}"
        entry = (text, address.word)
        same = [n for n, (have, _) in enumerate(self.addresses) if _same_ip(have, text)]
        if alias == "delete":
            if not same:
                self.error(address.word.line, address.word, "not an address of this interface")
            self.addresses = [a for n, a in enumerate(self.addresses) if n not in same]
            return
        if same:
            self.addresses[same[0]] = entry  # SIOCAIFADDR on an existing address updates it
            return
        primary = [n for n, (have, _) in enumerate(self.addresses) if ":" not in have]
        if alias is None and address.family == "inet" and primary:
            # without alias, ifconfig deletes the first IPv4 address first (SIOCDIFADDR)
            self.addresses[primary[0]] = entry
        else:
            self.addresses.append(entry)

    def finish(self) -> ParsedIfconfig:
        result = self.result
        for key, (value, word) in self.scalars.items():
            result.fields[key] = value
            result.origins[(key,)] = word
        if self.addresses:
            result.fields["addresses"] = [text for text, _ in self.addresses]
            for n, (_, word) in enumerate(self.addresses):
                result.origins[("addresses", n)] = word
        if self.vhids is not None and self.nodes_word is not None:
            nodes: list[dict[str, str]] = []
            result.origins[("carpnodes",)] = self.nodes_word
            for n, (vhid, word) in enumerate(self.vhids):
                skew = self.skews.get(n)
                nodes.append({"vhid": vhid, "advskew": skew[0] if skew else "0"})
                result.origins[("carpnodes", n, "vhid")] = word
                if skew is not None:
                    result.origins[("carpnodes", n, "advskew")] = skew[1]
            result.fields["carpnodes"] = nodes
        elif 0 in self.skews:
            result.fields["advskew"], result.origins[("advskew",)] = self.skews[0]
        if self.groups_touched:
            result.fields["groups"] = [name for name, _ in self.groups]
            for n, (_, group_word) in enumerate(self.groups):
                if group_word is not None:
                    result.origins[("groups", n)] = group_word
        return result


def parse_ifconfig(value: str | Sequence[str]) -> ParsedIfconfig:
    """Apply ifconfig lines in order (one string, or a list as in hostname.if) to a fresh carpN."""
    builder = _Builder()
    lines: list[tuple[int | None, object]]
    lines = [(None, value)] if isinstance(value, str) else list(enumerate(value))
    for line_no, line in lines:
        if not isinstance(line, str):
            builder.error(line_no, None, f"expected a string, got {line!r}")
        elif not line.strip().startswith("#"):
            builder.parse_line(line_no, line)
    return builder.finish()
