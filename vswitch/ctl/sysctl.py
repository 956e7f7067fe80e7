"""Read or set net.inet.carp.* on a running node; statistics are read-only stats.* lines."""

import argparse

from vswitch.ctl.client import CommandFailed, ControlClient, add_socket_options, run_client


def configure(parser: argparse.ArgumentParser) -> None:
    add_socket_options(parser)
    parser.add_argument(
        "names",
        nargs="*",
        metavar="net.inet.carp.NAME[=VALUE]",
        help="allow, preempt, log, stats[.COUNTER]; none: all of them",
    )


def run(args: argparse.Namespace) -> int:
    def body(client: ControlClient) -> int:
        for text in args.names or [None]:
            for line in _one(client, text):
                print(line)
        return 0

    return run_client(args, body)


def _one(client: ControlClient, text: str | None) -> list[str]:
    if text is None or "=" not in text:
        values = client.request("sysctl", name=text)
        return [f"{name}={value}" for name, value in values.items()]
    name, _, raw = text.partition("=")
    try:
        value = int(raw, 0)
    except ValueError:
        raise CommandFailed(f"{name}: {raw!r} is not an integer") from None
    result = client.request("sysctl", name=name, value=value)
    old = result.pop("old")
    ((full, new),) = result.items()
    return [f"{full}: {old} -> {new}"]  # as sysctl(8) reports a change
