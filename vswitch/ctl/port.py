"""Add a port to a running node's switch, or delete one: `port add SWITCH NAME key=value ...`."""

import argparse

from vswitch.ctl.client import CommandFailed, ControlClient, add_socket_options, run_client


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "The keys are those of a port table in the node file, e.g. `vswitch port add lan0 vm9 "
        "type=tap netns=pid:4242`, `type=stream path=/run/vswitch/vm9.sock`, `type=vxlan vni=42 "
        "local=198.51.100.1 remote=198.51.100.2,198.51.100.3`; `vswitch port del lan0 vm9` "
        "takes it away. The port is checked as the file's would be and lasts until the next "
        "reload from the file or restart; a port that cannot be made changes nothing."
    )
    add_socket_options(parser)
    parser.add_argument("action", choices=("add", "del"), help="add a port, or delete one")
    parser.add_argument("switch", metavar="SWITCH", help="a switch of the node")
    parser.add_argument("name", metavar="NAME", help="the port's name")
    parser.add_argument(
        "settings", nargs="*", metavar="KEY=VALUE", help="add: the port's settings, e.g. type=tap"
    )


def settings(words: list[str]) -> dict[str, str]:
    """key=value words as a mapping; CommandFailed names a malformed or repeated one."""
    out: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise CommandFailed(f"{word!r} is not KEY=VALUE (e.g. type=tap)")
        if key in out:
            raise CommandFailed(f"{key} is given twice")
        out[key] = value
    return out


def run(args: argparse.Namespace) -> int:
    def body(client: ControlClient) -> int:
        if args.action == "add":
            if not args.settings:
                raise CommandFailed("port add needs the port's settings, at least type=TYPE")
            words = settings(args.settings)
            changes = client.request(
                "port", action="add", switch=args.switch, name=args.name, settings=words
            )
        elif args.settings:
            raise CommandFailed(f"port del takes no settings ({' '.join(args.settings)})")
        else:
            changes = client.request("port", action="del", switch=args.switch, name=args.name)
        for line in changes or ["nothing changed"]:
            print(line)
        return 0

    return run_client(args, body)
