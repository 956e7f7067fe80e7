"""The `vswitch` command line: one module per subcommand, each with `configure` and `run`.

Only the chosen subcommand's module is imported: a client command talking to a running node must
not pay for the daemon (pydantic, pyroute2, asyncio, dpkt). The summaries shown by `vswitch
--help` are therefore written here, and a test checks that they match each module's docstring.
"""

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DISTRIBUTION = "vswitch-carp"

# subcommand -> (module implementing `configure(parser)` and `run(args) -> int`, its summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": (
        "vswitch.run",
        "Run a node in the foreground: `vswitch run -c node.toml` (SIGTERM bows out, SIGHUP "
        "reloads).",
    ),
    "check": (
        "vswitch.check",
        "Validate a node configuration and print it normalised (defaults filled in, carpdevs "
        "derived).",
    ),
    "decode": (
        "vswitch.decode",
        "Decode CARP/VRRP (IP protocol 112) packets in a pcap or pcapng capture and judge them.",
    ),
    "demo": (
        "vswitch.lab.demo",
        "Build a gateway lab in network namespaces and show failover, preemption and balancing.",
    ),
    "status": (
        "vswitch.ctl.status",
        "Show a running node: switches, ports, carp interfaces, carpnodes, peers, statistics.",
    ),
    "ifconfig": (
        "vswitch.ctl.ifconfig",
        "Change a running node's carp interfaces, or show them, with ifconfig(8) carp options.",
    ),
    "sysctl": (
        "vswitch.ctl.sysctl",
        "Read or set net.inet.carp.* on a running node; statistics are read-only stats.* lines.",
    ),
    "events": (
        "vswitch.ctl.events",
        "Print a running node's events as JSON lines: current carpnode states first, then changes.",
    ),
    "reload": (
        "vswitch.ctl.reload",
        "Make a running node re-read its configuration; a bad file is refused with every error.",
    ),
    "port": (
        "vswitch.ctl.port",
        "Add a port to a running node's switch, or delete one: `port add SWITCH NAME key=value "
        "...`.",
    ),
    "explain": (
        "vswitch.ctl.explain",
        "Say why each carpnode of a running node is MASTER, BACKUP or INIT, in carp(4)'s terms.",
    ),
    "impair": (
        "vswitch.ctl.impair",
        "Impair a running node's port live: delay, jitter, loss, rate, partition; or clear it.",
    ),
    "capture": (
        "vswitch.ctl.capture",
        "Capture a running node's switch ports live as pcapng: `capture lan0 -w - | wireshark -k "
        "-i -`.",
    ),
    "completion": (
        "vswitch.ctl.complete",
        "Print a bash or zsh completion script for vswitch, generated from its argument parser.",
    ),
}


def version() -> str:
    """The installed distribution's version; from a source tree that is not installed, the
    version in its pyproject.toml."""
    # imported here: importlib.metadata alone costs ~10 ms, and only --version needs it
    from importlib import metadata

    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        pass
    import tomllib

    try:
        with open(Path(__file__).resolve().parents[1] / "pyproject.toml", "rb") as f:
            found = tomllib.load(f).get("project", {}).get("version")
    except (OSError, tomllib.TOMLDecodeError):
        found = None
    return found if isinstance(found, str) else "unknown (neither installed nor in a source tree)"


class VersionAction(argparse.Action):
    """--version, looked up only when asked for (argparse's own takes the string up front)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs.setdefault("help", "print the version and exit")
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    @property
    def version(self) -> str:
        return version()

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        print(f"{parser.prog} {self.version}")
        parser.exit()


def _chosen(argv: list[str]) -> str | None:
    """The subcommand named on the command line (the first word that is not an option)."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; only the subcommand in `argv` (all of them when None) is fully configured."""
    parser = argparse.ArgumentParser(
        prog="vswitch",
        description="Userspace virtual switch and gateway with OpenBSD's CARP in its data path.",
    )
    parser.add_argument("--version", action=VersionAction, dest=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = _chosen(argv) if argv is not None else None
    for name, (module_name, summary) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=summary, description=summary)
        if argv is None or name == chosen:
            module = importlib.import_module(module_name)
            module.configure(sub_parser)
            # _parser: the whole tree, for a command that describes the CLI itself (completion)
            sub_parser.set_defaults(_run=module.run, _parser=lambda: build_parser(None))
    return parser


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    args = build_parser(words).parse_args(words)
    try:
        return int(args._run(args))
    except KeyboardInterrupt:
        return 130
