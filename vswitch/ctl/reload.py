"""Make a running node re-read its configuration; a bad file is refused with every error."""

import argparse

from vswitch.ctl.client import ControlClient, add_socket_options, run_client


def configure(parser: argparse.ArgumentParser) -> None:
    add_socket_options(parser)


def run(args: argparse.Namespace) -> int:
    def body(client: ControlClient) -> int:
        changes = client.request("reload")
        for line in changes or ["nothing changed"]:
            print(line)
        return 0

    return run_client(args, body)
