"""Print a running node's events as JSON lines: current carpnode states first, then changes."""

import argparse
import json
import sys

from vswitch.ctl.client import ControlClient, add_socket_options, run_client


def configure(parser: argparse.ArgumentParser) -> None:
    add_socket_options(parser)
    parser.add_argument("--count", type=int, metavar="N", help="stop after N events")
    parser.add_argument(
        "--no-snapshot", action="store_true", help="skip the current states, only show changes"
    )


def run(args: argparse.Namespace) -> int:
    def body(client: ControlClient) -> int:
        if args.count is not None and args.count <= 0:
            return 0
        stream = client.events(snapshot=not args.no_snapshot)
        for seen, event in enumerate(stream, start=1):
            print(json.dumps(event, separators=(",", ":")), flush=True)
            if seen == args.count:
                return 0
        print("vswitch: the node closed the event stream", file=sys.stderr)
        return 1

    try:
        return run_client(args, body)
    except KeyboardInterrupt:
        return 0
