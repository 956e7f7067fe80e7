"""Validate a node configuration and print it normalised (defaults filled in, carpdevs derived).

Exit status 0 when the file is valid; otherwise every problem goes to stderr as
`path: message (fix)`, one per line, and the exit status is 2. The passphrase is masked unless
--show-pass is given; with it, the TOML output loads back to the same configuration.
"""

import argparse
import json
import sys

from carp.configerrors import ConfigError
from vswitch.config import load_config
from vswitch.tomlw import dumps

EXIT_INVALID = 2


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "-c", "--config", required=True, metavar="FILE", help="the node's TOML configuration"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of TOML")
    parser.add_argument(
        "--show-pass", action="store_true", help="print carp passphrases instead of ********"
    )


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return EXIT_INVALID
    for warning in config.warnings():  # valid, so the exit status stays 0
        print(f"warning: {warning}", file=sys.stderr)
    data = config.normalised(show_pass=args.show_pass)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        sys.stdout.write(dumps(data))
    return 0
