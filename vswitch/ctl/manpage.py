"""The vswitch(1) man page in roff, generated from the argument parser.

`python -m vswitch.ctl.manpage > docs/vswitch.1` writes it; a test checks that the committed
page is the one the parser gives. The parser is named as a string ("vswitch.cli:build_parser"),
as cli.py names its subcommands: this module stays in the client's room, and building the whole
parser imports every command, which only this generator needs.
"""

import argparse
import importlib
import re
import sys
from collections.abc import Iterable

from vswitch.ctl.complete import Arg, arguments, commands

PARSER = "vswitch.cli:build_parser"

# what the parser cannot say; roff written by hand
FILES = r"""
.TP
.I /etc/vswitch/NAME.toml
A node's configuration, as the systemd unit vswitch@NAME.service reads it.
.TP
.I /run/vswitch/NAME.sock
The control socket of node NAME unless its [node] control names another; the client commands
find the only socket there when neither \fB\-s\fR nor \fB\-c\fR is given.
"""
ENVIRONMENT = r"""
.TP
.B VSWITCH_RUN_DIR
Where the client commands look for control sockets instead of /run/vswitch.
.TP
.BR NOTIFY_SOCKET ", " WATCHDOG_USEC
Set by systemd: \fBvswitch run\fR reports readiness, reloads, shutdown and its carp states
there, and pings the watchdog.
"""
EXIT_STATUS = r"""
.TP
.B 0
Success.
.TP
.B 1
No node could be reached, or a command or the node failed.
.TP
.B 2
A usage error, an invalid configuration (every problem is printed) or a refused reload.
"""
SEE_ALSO = r"""
.BR carp (4),
.BR ifconfig (8),
.BR sysctl (8),
.BR systemd.service (5),
.BR sd_notify (3)
"""


def escape(text: str) -> str:
    """Plain text as roff: backslashes, a leading dot or quote, and option dashes."""
    text = text.replace("\\", "\\e")
    text = re.sub(r"(?<!\w)-", r"\\-", text)  # dashes of options; a word's hyphen stays
    return text


def inline(text: str) -> str:
    """Text with `code` spans set in bold."""
    parts = text.split("`")
    out = []
    for index, part in enumerate(parts):
        out.append(f"\\fB{escape(part)}\\fR" if index % 2 else escape(part))
    return "".join(out)


def _line(text: str) -> str:
    return "\\&" + text if text.startswith((".", "'")) else text


def paragraphs(text: str) -> list[str]:
    """A description (paragraphs split by blank lines, bullets `* ` or `- `) as roff lines."""
    lines: list[str] = []
    for block in re.split(r"\n\s*\n", text.strip()):
        items: list[list[str]] = []
        for raw in block.splitlines():
            stripped = raw.strip()
            if re.match(r"[*-] ", stripped):
                items.append([stripped[2:]])
            elif items and (items[-1][0] == "" or raw[:1].isspace()):
                items[-1].append(stripped)  # a bullet goes on on indented lines only
            else:
                items.append(["", stripped])  # "" marks a plain paragraph
        for item in items:
            if item[0] == "":
                lines += [".PP", _line(inline(" ".join(item[1:])))]
            else:
                lines += [".IP \\(bu 2", _line(inline(" ".join(item)))]
    return lines


def invocation(arg: Arg) -> str:
    """`-c, --config CONFIG` in roff."""
    if arg.positional:
        return f"\\fI{escape(arg.metavar)}\\fR"
    flags = ", ".join(f"\\fB{escape(flag)}\\fR" for flag in arg.flags)
    return f"{flags} \\fI{escape(arg.metavar)}\\fR" if arg.nargs != 0 else flags


def synopsis(parser: argparse.ArgumentParser) -> list[str]:
    """argparse's usage for `parser`, unwrapped (independent of the terminal's width)."""
    formatter = argparse.HelpFormatter(parser.prog, width=10_000)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups, "")
    usage = formatter.format_help().strip()
    lines = [".nf"]
    lines += [_line(escape(line.strip())) for line in usage.splitlines()]
    return [*lines, ".fi"]


def describe_args(args: Iterable[Arg]) -> list[str]:
    lines = []
    for arg in args:
        lines += [".TP", invocation(arg), _line(inline(arg.help or "(no description)"))]
        if arg.choices:
            lines += [
                ".br",
                "One of: " + ", ".join(f"\\fB{escape(c)}\\fR" for c in arg.choices) + ".",
            ]
    return lines


def version_of(parser: argparse.ArgumentParser) -> str | None:
    for action in parser._actions:
        found = getattr(action, "version", None)
        if "--version" in action.option_strings and isinstance(found, str):
            return found
    return None


def render(parser: argparse.ArgumentParser) -> str:
    """The man page of `parser` and its subcommands."""
    prog = parser.prog
    version = version_of(parser)
    source = f"vswitch-carp {version}" if version else "vswitch-carp"
    cmds = commands(parser)
    summary = (parser.description or "").rstrip(".")
    lines = [
        f'.TH {prog.upper()} 1 "" "{source}" "User Commands"',
        ".SH NAME",
        f"{prog} \\- {escape(summary[:1].lower() + summary[1:])}",
        ".SH SYNOPSIS",
        f".B {prog}",
        "[\\fB\\-h\\fR] [\\fB\\-\\-version\\fR] \\fICOMMAND\\fR [\\fIargument\\fR ...]",
        ".SH DESCRIPTION",
        *paragraphs(parser.description or ""),
        ".PP",
        "Commands:",
        *(f".TP\n.B {c.name}\n{_line(inline(c.summary))}" for c in cmds),
        ".SH OPTIONS",
        *describe_args(arguments(parser)),
        ".SH COMMANDS",
    ]
    for cmd in cmds:
        sub = cmd.parser
        lines += [f'.SS "{prog} {cmd.name}"', *synopsis(sub)]
        lines += paragraphs(sub.description or cmd.summary)
        lines += describe_args(cmd.args)
        if sub.epilog:
            lines += paragraphs(sub.epilog)
    lines += [".SH FILES", *FILES.strip().splitlines()]
    lines += [".SH ENVIRONMENT", *ENVIRONMENT.strip().splitlines()]
    lines += [".SH EXIT STATUS", *EXIT_STATUS.strip().splitlines()]
    lines += [".SH SEE ALSO", *SEE_ALSO.strip().splitlines()]
    return "\n".join(lines) + "\n"


def load_parser(spec: str = PARSER) -> argparse.ArgumentParser:
    """`module:function` -> the parser that function builds (the whole tree)."""
    module, _, function = spec.partition(":")
    parser = getattr(importlib.import_module(module), function)()
    if not isinstance(parser, argparse.ArgumentParser):
        raise TypeError(f"{spec} did not return an ArgumentParser")
    return parser


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(prog="python -m vswitch.ctl.manpage", description=__doc__)
    cli.add_argument("--parser", default=PARSER, help=f"module:function (default {PARSER})")
    args = cli.parse_args(argv)
    sys.stdout.write(render(load_parser(args.parser)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
