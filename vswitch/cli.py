"""The `vswitch` command line: one module per subcommand, each with `configure` and `run`.

Only the chosen subcommand's module is imported: a client command talking to a running node must
not pay for the daemon (pydantic, pyroute2, asyncio, dpkt). The summaries shown by `vswitch
--help` are therefore written here, and a test checks that they match each module's docstring.
"""

import argparse
import importlib
import sys

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
}


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
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = _chosen(argv) if argv is not None else None
    for name, (module_name, summary) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=summary, description=summary)
        if argv is None or name == chosen:
            module = importlib.import_module(module_name)
            module.configure(sub_parser)
            sub_parser.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    args = build_parser(words).parse_args(words)
    try:
        return int(args._run(args))
    except KeyboardInterrupt:
        return 130
