"""Say why each carpnode of a running node is MASTER, BACKUP or INIT, in carp(4)'s terms.

For each carp interface: whether it runs (§4.3, §4.8), what it advertises (demotion, the
advskew-240 rule), the master it hears and the §4.4 rule that put it in its state and judged
the last advertisement, second masters heard, and the advertisements it refused with their
likely cause (a wrong pass, a TTL not 255, our own coming back, a vhid of another group).
"""

import argparse
import json

from vswitch.ctl.client import ControlClient, add_socket_options, run_client

EXPLAIN_FORMAT = 1  # "format" of --json: raised when a key changes meaning or goes away


def configure(parser: argparse.ArgumentParser) -> None:
    add_socket_options(parser)
    parser.add_argument("carpif", nargs="?", metavar="carpN", help="one carp interface")
    parser.add_argument("--json", action="store_true", help="print the data as JSON")


def run(args: argparse.Namespace) -> int:
    def body(client: ControlClient) -> int:
        result = client.request("explain", carpif=args.carpif)
        if args.json:
            print(json.dumps({"format": EXPLAIN_FORMAT, **result["data"]}, indent=2))
        else:
            print(result["text"], end="")
        return 0

    return run_client(args, body)
