"""The `vswitch` command line: one module per subcommand, each with `configure` and `run`."""

import argparse
import importlib
import sys

# subcommand -> module implementing `configure(parser)` and `run(args) -> int`
COMMANDS: dict[str, str] = {
    "run": "vswitch.run",
    "check": "vswitch.check",
    "decode": "vswitch.decode",
    "demo": "vswitch.lab.demo",
    "status": "vswitch.ctl.status",
    "ifconfig": "vswitch.ctl.ifconfig",
    "sysctl": "vswitch.ctl.sysctl",
    "events": "vswitch.ctl.events",
    "reload": "vswitch.ctl.reload",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vswitch",
        description="Userspace virtual switch and gateway with OpenBSD's CARP in its data path.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        summary = module.__doc__.splitlines()[0] if module.__doc__ else None
        sub_parser = sub.add_parser(name, help=summary, description=summary)
        module.configure(sub_parser)
        sub_parser.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return int(args._run(args))
    except KeyboardInterrupt:
        return 130
