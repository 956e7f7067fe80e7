"""Print a bash or zsh completion script for vswitch, generated from its argument parser.

The script knows every command and option of the parser `vswitch` itself is built from, so it
cannot fall behind it: regenerate it after an upgrade. Install it with
`vswitch completion bash > /etc/bash_completion.d/vswitch` (or `source <(vswitch completion bash)`
in ~/.bashrc), or `vswitch completion zsh > "${fpath[1]}/_vswitch"`.

Names only a running node knows (carp interfaces, switches, interface groups) are asked for when
completing, with `vswitch completion --names KIND`: the status request of `vswitch status --json`
through the control client (with the -s/-c given on the command line), and nothing at all when no
node answers.
"""

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass

from vswitch.ctl.client import CommandFailed, ControlClient, NodeUnavailable, find_socket
from vswitch.status import NodeStatus

SHELLS = ("bash", "zsh")
NAME_TIMEOUT = 2.0  # a completion that hangs is worse than none

# metavars whose values are paths
FILE_METAVARS = frozenset({"FILE", "CONFIG", "SOCKET", "PATH"})

# what a running node names, by kind, read from its status
NODE_NAMES: dict[str, Callable[[NodeStatus], list[str]]] = {
    "carp": lambda status: [carpif["name"] for carpif in status["carp"]],
    "switch": lambda status: [switch["name"] for switch in status["switches"]],
    "group": lambda status: list(status["groups"]),
}

# arguments whose values a running node knows: (command, dest) -> kind
NODE_ARGS: dict[tuple[str, str], str] = {("ifconfig", "group"): "group"}

# `vswitch ifconfig carpN [options]` takes its words as one REMAINDER argument, so the rules for
# them are written here: the first names a carp interface, the one after a keyword its value
REST_WORDS: dict[str, tuple[str, dict[str, str]]] = {
    "ifconfig": ("carp", {"carpdev": "switch", "group": "group", "-group": "group"}),
}


@dataclass(frozen=True, slots=True)
class Arg:
    """One visible argument of a parser."""

    flags: tuple[str, ...]  # empty for a positional
    dest: str
    metavar: str  # the value's name; for a flag without value, its dest
    help: str
    nargs: int | str | None  # argparse's nargs; 0 for a flag without value
    choices: tuple[str, ...]
    required: bool
    repeatable: bool  # append/count/extend: may be given more than once
    conflicts: tuple[str, ...] = ()  # the flags of its mutually exclusive groups, its own too

    @property
    def positional(self) -> bool:
        return not self.flags

    @property
    def takes_value(self) -> bool:
        """An option followed by exactly one value word."""
        return bool(self.flags) and self.nargs in (None, 1)


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    summary: str
    parser: argparse.ArgumentParser
    args: tuple[Arg, ...]

    @property
    def options(self) -> tuple[Arg, ...]:
        return tuple(a for a in self.args if not a.positional)

    @property
    def positionals(self) -> tuple[Arg, ...]:
        return tuple(a for a in self.args if a.positional)


REPEATABLE = (argparse._AppendAction, argparse._CountAction, argparse._ExtendAction)


def arguments(parser: argparse.ArgumentParser) -> tuple[Arg, ...]:
    """The parser's arguments as shown by --help (hidden ones and subcommands left out)."""
    groups = parser._mutually_exclusive_groups
    found = []
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
            continue
        if action.option_strings:
            metavar = action.metavar or action.dest.upper()
        else:
            metavar = action.metavar or action.dest
        found.append(
            Arg(
                flags=tuple(action.option_strings),
                dest=action.dest,
                metavar=metavar if isinstance(metavar, str) else " ".join(metavar),
                help=expand_help(action, parser.prog),
                nargs=action.nargs,
                choices=tuple(str(c) for c in action.choices or ()),
                required=action.required,
                repeatable=isinstance(action, REPEATABLE),
                conflicts=tuple(
                    dict.fromkeys(
                        [
                            *action.option_strings,
                            *(
                                flag
                                for group in groups
                                if action in group._group_actions
                                for other in group._group_actions
                                for flag in other.option_strings
                            ),
                        ]
                    )
                ),
            )
        )
    return tuple(found)


def expand_help(action: argparse.Action, prog: str) -> str:
    """An action's help with argparse's %(...)s filled in, as --help shows it."""
    text = action.help or ""
    if "%" not in text:
        return text
    params = {k: v for k, v in vars(action).items() if v is not argparse.SUPPRESS}
    params["prog"] = prog
    if params.get("choices") is not None:
        params["choices"] = ", ".join(str(c) for c in params["choices"])
    return text % params


def commands(parser: argparse.ArgumentParser) -> tuple[Command, ...]:
    """The subcommands of `parser`, in the order of its help."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            summaries = {a.dest: a.help or "" for a in action._choices_actions}
            return tuple(
                Command(name, summaries.get(name, ""), sub, arguments(sub))
                for name, sub in action.choices.items()
            )
    return ()


def value_kind(command: str, arg: Arg) -> str:
    """How to complete an argument's value: `file`, `node:KIND`, `words:W1 W2 ...` or ``."""
    if arg.choices:
        return "words:" + " ".join(arg.choices)
    kind = NODE_ARGS.get((command, arg.dest))
    if kind is not None:
        return f"node:{kind}"
    if arg.metavar in FILE_METAVARS:
        return "file"
    return ""


def positional_slots(command: Command) -> tuple[dict[int, str], int | None, bool]:
    """(index of a positional word -> how to complete it, the index from which one argument
    takes every remaining word or None, whether that argument is a REMAINDER: no options after
    its first word)."""
    slots: dict[int, str] = {}
    index = 0
    for arg in command.positionals:
        kind = value_kind(command.name, arg)
        if arg.nargs in ("*", "+", argparse.REMAINDER):
            rest = REST_WORDS.get(command.name)
            slots[index] = f"node:{rest[0]}" if rest else kind
            return slots, index, arg.nargs == argparse.REMAINDER
        count = arg.nargs if isinstance(arg.nargs, int) else 1
        for _ in range(count):
            slots[index] = kind
            index += 1
    return slots, None, False


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("shell", nargs="?", choices=SHELLS, help="the shell to complete for")
    # what the scripts call while completing: the names a running node knows
    parser.add_argument("--names", choices=sorted(NODE_NAMES), help=argparse.SUPPRESS)
    parser.add_argument("-s", "--socket", help=argparse.SUPPRESS)
    parser.add_argument("-c", "--config", help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    if args.names is not None:
        for name in node_names(args.names, args.socket, args.config):
            print(name)
        return 0
    if args.shell is None:
        print("vswitch completion: name the shell: bash or zsh", file=sys.stderr)
        return 2
    parser = args._parser()
    sys.stdout.write(bash_script(parser) if args.shell == "bash" else zsh_script(parser))
    return 0


def node_names(kind: str, sock: str | None = None, config: str | None = None) -> list[str]:
    """The names of `kind` the running node has; [] when none can be asked."""
    try:
        with ControlClient(find_socket(sock, config), NAME_TIMEOUT) as client:
            status: NodeStatus = client.request("status")
            return NODE_NAMES[kind](status)
    except (NodeUnavailable, CommandFailed, OSError, KeyError, TypeError):
        return []  # completion must never print errors into the command line


# --- bash ----------------------------------------------------------------------------------------

BASH_ENGINE = r"""
_vswitch_node_names() {
    # $1: carp | switch | group; the -s/-c of the command line choose the node
    local i w where=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        w=${COMP_WORDS[i]}
        case $w in
            -s|--socket|-c|--config)
                [[ ${COMP_WORDS[i+1]} == = ]] && ((i++))
                ((i + 1 < COMP_CWORD)) && where+=("$w" "${COMP_WORDS[i+1]}")
                ((i++)) ;;
        esac
    done
    "${COMP_WORDS[0]}" completion --names "$1" "${where[@]}" 2>/dev/null
}

_vswitch_complete() {
    # $1: how (file, node:KIND, words:W1 W2 ..., or nothing); $2: the word typed so far
    case $1 in
        file)
            compopt -o filenames 2>/dev/null
            mapfile -t COMPREPLY < <(compgen -f -- "$2") ;;
        node:*)
            mapfile -t COMPREPLY < <(compgen -W "$(_vswitch_node_names "${1#node:}")" -- "$2") ;;
        words:*) mapfile -t COMPREPLY < <(compgen -W "${1#words:}" -- "$2") ;;
        *) COMPREPLY=() ;;
    esac
}

_vswitch() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=
    ((COMP_CWORD > 0)) && prev=${COMP_WORDS[COMP_CWORD-1]}
    # `--option=value`: bash splits the `=` into a word of its own
    if [[ $cur == = ]]; then
        cur=
    elif [[ $prev == = ]] && ((COMP_CWORD > 1)); then
        prev=${COMP_WORDS[COMP_CWORD-2]}
    fi
    # cmd: the command ("-" before it); opt: an option whose value comes next; k: the number
    # of positional words; remainder: set once no more options can come
    local i w cmd=- opt= k=0 remainder= how
    for ((i = 1; i < COMP_CWORD; i++)); do
        w=${COMP_WORDS[i]}
        if [[ -n $opt ]]; then
            # the value of $opt (or the `=` before it)
            [[ $w == = ]] || opt=
            continue
        fi
        if [[ -z $remainder && $w == -?* ]]; then
            [[ -n ${_vswitch_values["$cmd $w"]+set} ]] && opt=$w
            continue
        fi
        if [[ $cmd == - ]]; then
            cmd=$w
            continue
        fi
        [[ -n ${_vswitch_remainder[$cmd]} ]] && ((k >= _vswitch_remainder[$cmd])) && remainder=1
        ((k++))
    done
    if [[ -n $opt ]]; then
        _vswitch_complete "${_vswitch_values["$cmd $opt"]}" "$cur"
    elif [[ $cmd == - ]]; then
        if [[ $cur == -* ]]; then
            _vswitch_complete "words:${_vswitch_options[-]}" "$cur"
        else
            _vswitch_complete "words:$_vswitch_commands" "$cur"
        fi
    elif [[ -z $remainder && $cur == -* ]]; then
        _vswitch_complete "words:${_vswitch_options[$cmd]}" "$cur"
    else
        local rest=${_vswitch_rest[$cmd]:-}
        if [[ -n $rest ]] && ((k > rest)); then
            how=${_vswitch_values["$cmd after $prev"]:-${_vswitch_values["$cmd #$rest+"]}}
        else
            how=${_vswitch_values["$cmd #$k"]}
        fi
        _vswitch_complete "$how" "$cur"
    fi
    return 0
}

complete -F _vswitch vswitch
"""


def _bash_word(text: str) -> str:
    """`text` as one bash word, single-quoted."""
    return "'" + text.replace("'", "'\\''") + "'"


def _bash_table(name: str, comment: str, entries: dict[str, str]) -> list[str]:
    lines = [f"# {comment}", f"declare -gA {name}=("]
    lines += [f"    [{_bash_word(key)}]={_bash_word(value)}" for key, value in entries.items()]
    return [*lines, ")"]


def bash_script(parser: argparse.ArgumentParser) -> str:
    """A bash completion script for `parser` (needs bash 4.2: associative arrays, mapfile)."""
    cmds = commands(parser)
    # "-" stands for the top level (bash refuses an empty key)
    options = {"-": " ".join(f for a in arguments(parser) for f in a.flags)}
    values = {
        f"- {f}": value_kind("", a) for a in arguments(parser) if a.takes_value for f in a.flags
    }
    rest: dict[str, str] = {}
    remainder: dict[str, str] = {}
    for cmd in cmds:
        options[cmd.name] = " ".join(f for a in cmd.options for f in a.flags)
        for arg in cmd.options:
            if arg.takes_value:
                values.update(
                    {f"{cmd.name} {flag}": value_kind(cmd.name, arg) for flag in arg.flags}
                )
        slots, start, is_remainder = positional_slots(cmd)
        values.update({f"{cmd.name} #{index}": kind for index, kind in slots.items()})
        if start is not None:
            rest[cmd.name] = str(start)
            last = cmd.positionals[-1]
            words = REST_WORDS.get(cmd.name)
            values[f"{cmd.name} #{start}+"] = "" if words else value_kind(cmd.name, last)
            for keyword, kind in (words[1] if words else {}).items():
                values[f"{cmd.name} after {keyword}"] = f"node:{kind}"
            if is_remainder:
                remainder[cmd.name] = str(start)
    lines = [
        f"# bash completion for {parser.prog}, generated by `{parser.prog} completion bash` from",
        "# its argument parser: regenerate it after an upgrade.",
        "",
        f"_vswitch_commands={_bash_word(' '.join(c.name for c in cmds))}",
        *_bash_table("_vswitch_options", "command -> its options", options),
        *_bash_table(
            "_vswitch_values",
            "'command option' (options that take a value), 'command #N' (the Nth positional),"
            " 'command after WORD': how to complete it",
            values,
        ),
        *_bash_table("_vswitch_rest", "command -> the positional taking all the rest", rest),
        *_bash_table("_vswitch_remainder", "command -> ... after which no options", remainder),
    ]
    return "\n".join(lines) + "\n" + BASH_ENGINE


# --- zsh -----------------------------------------------------------------------------------------


def _zsh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _zsh_action(kind: str) -> str:
    if kind == "file":
        return "_files"
    if kind.startswith("node:"):
        return f"_vswitch_node_names {kind.removeprefix('node:')}"
    if kind.startswith("words:"):
        return "(" + kind.removeprefix("words:") + ")"
    return " "


def _zsh_desc(text: str) -> str:
    """Text inside an _arguments [description]."""
    return text.replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]")


def _zsh_specs(command: str, args: tuple[Arg, ...], rest_function: str | None) -> list[str]:
    specs = []
    for arg in args:
        if arg.positional:
            continue
        if arg.dest in ("help", argparse.SUPPRESS):  # --help, --version: nothing else
            exclusive = "(- *)"
        elif arg.repeatable:
            exclusive = "*"
        else:
            exclusive = f"({' '.join(arg.conflicts)})"
        for flag in arg.flags:
            if arg.takes_value:
                suffix = "=" if flag.startswith("--") else "+"
                action = _zsh_action(value_kind(command, arg))
                spec = f"{exclusive}{flag}{suffix}[{_zsh_desc(arg.help)}]:{arg.metavar}:{action}"
            else:
                spec = f"{exclusive}{flag}[{_zsh_desc(arg.help)}]"
            specs.append(_zsh_quote(spec))
    position = 1
    for arg in args:
        if not arg.positional:
            continue
        kind = value_kind(command, arg)
        if arg.nargs in ("*", "+", argparse.REMAINDER):
            action = rest_function or _zsh_action(kind)
            colons = "::" if arg.nargs == argparse.REMAINDER else ":"
            specs.append(_zsh_quote(f"*{colons}{arg.metavar}:{action}"))
            break
        optional = ":" if arg.nargs == "?" else ""
        for _ in range(arg.nargs if isinstance(arg.nargs, int) else 1):
            specs.append(_zsh_quote(f"{position}:{optional}{arg.metavar}:{_zsh_action(kind)}"))
            position += 1
    return specs


def _zsh_function(name: str, specs: list[str]) -> list[str]:
    body = " \\\n    ".join(["_arguments -s -S", *specs])
    return [f"{name}() {{", "  local -A opt_args", f"  {body}", "}", ""]


def zsh_script(parser: argparse.ArgumentParser) -> str:
    """A zsh completion function file (#compdef) for `parser`."""
    prog = parser.prog
    cmds = commands(parser)
    lines = [
        f"#compdef {prog}",
        f"# zsh completion for {prog}, generated by `{prog} completion zsh` from its argument",
        "# parser: regenerate it after an upgrade.",
        "",
        "_vswitch_node_names() {",
        "  # the last argument: carp | switch | group; the others are compadd options (_arguments",
        "  # passes some); the -s/-c of the command line choose the node",
        "  local o kind=${@[-1]}",
        "  local -a where names",
        "  for o in -s --socket -c --config; do",
        "    [[ -n ${opt_args[$o]} ]] && where+=($o ${(Q)opt_args[$o]})",
        "  done",
        '  names=(${(f)"$("$_vswitch_prog" completion --names $kind $where 2>/dev/null)"})',
        '  compadd "${@[1,-2]}" -a names',
        "}",
        "",
    ]
    for cmd in cmds:
        rest_function = None
        words = REST_WORDS.get(cmd.name)
        if words is not None:
            rest_function = f"_vswitch_{cmd.name}_words"
            lines += [
                f"{rest_function}() {{",
                f"  if (( CURRENT == 1 )); then _vswitch_node_names {words[0]}; return; fi",
                "  case ${words[CURRENT-1]} in",
            ]
            for keyword, kind in words[1].items():
                lines.append(f"    {_zsh_quote(keyword)}) _vswitch_node_names {kind} ;;")
            lines += ["  esac", "}", ""]
        specs = _zsh_specs(cmd.name, cmd.args, rest_function)
        lines += _zsh_function(f"_vswitch_{cmd.name}", specs)
    entries = [_zsh_quote(f"{c.name.replace(':', chr(92) + ':')}:{c.summary}") for c in cmds]
    lines += [
        "_vswitch_commands() {",
        "  local -a commands",
        "  commands=(",
        *(f"    {entry}" for entry in entries),
        "  )",
        "  _describe -t commands 'vswitch command' commands",
        "}",
        "",
        "_vswitch() {",
        "  local _vswitch_prog=${words[1]}",
        "  local curcontext=$curcontext state state_descr line ret=1",
        "  local -A opt_args",
        "  _arguments -C \\",
        *(f"    {spec} \\" for spec in _zsh_specs("", arguments(parser), None)),
        "    '1:command:_vswitch_commands' \\",
        "    '*::argument:->command' && ret=0",
        "  if [[ $state == command ]]; then",
        "    curcontext=${curcontext%:*:*}:vswitch-${words[1]}:",
        "    case ${words[1]} in",
        *(f"      {c.name}) _vswitch_{c.name} && ret=0 ;;" for c in cmds),
        "    esac",
        "  fi",
        "  return ret",
        "}",
        "",
        "if [[ ${funcstack[1]} == _vswitch ]]; then",
        '  _vswitch "$@"',
        "else",
        f"  compdef _vswitch {prog}",
        "fi",
    ]
    return "\n".join(lines) + "\n"
