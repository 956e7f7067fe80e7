"""Change a running node's carp interfaces, or show them, with ifconfig(8) carp options."""

import argparse

from vswitch.ctl.client import CommandFailed, ControlClient, add_socket_options, run_client


def configure(parser: argparse.ArgumentParser) -> None:
    parser.usage = (
        "%(prog)s [-s SOCKET | -c CONFIG] [carpN [options ...]]\n"
        "       %(prog)s [-s SOCKET | -c CONFIG] -g GROUP [carpdemote [N] | -carpdemote [N]]"
    )
    parser.epilog = (
        "options: ADDR/LEN | inet ADDR NETMASK | inet6 ADDR LEN [alias | -alias], vhid N,"
        " carpnodes V:S,..., advbase N, advskew N, pass P, balancing MODE, carppeer ADDR,"
        " -carppeer, carpdev SWITCH, group G, -group G, state master|backup, up, down"
    )
    add_socket_options(parser)
    parser.add_argument("-g", dest="group", metavar="GROUP", help="an interface group")
    # `-carpdemote` starts with a dash, so argparse has to know it to leave it alone
    parser.add_argument(
        "-carpdemote", dest="undemote", nargs="?", const="1", metavar="N", help=argparse.SUPPRESS
    )
    parser.add_argument("words", nargs=argparse.REMAINDER, help="carpN and its options")


def run(args: argparse.Namespace) -> int:
    def body(client: ControlClient) -> int:
        if args.group is not None or args.undemote is not None:
            return _group(client, args)
        carpif = args.words[0] if args.words else None
        print(client.request("ifconfig", carpif=carpif, words=args.words[1:]))
        return 0

    return run_client(args, body)


def _group(client: ControlClient, args: argparse.Namespace) -> int:
    if args.group is None:
        raise CommandFailed("ifconfig: -carpdemote needs -g GROUP")
    request: dict[str, object] = {"group": args.group}
    if args.undemote is not None:
        if args.words:
            raise CommandFailed(f"ifconfig: unexpected {' '.join(args.words)}")
        request |= {"word": "-carpdemote", "count": args.undemote}
    elif args.words:
        if len(args.words) > 2:
            raise CommandFailed(f"ifconfig: unexpected {' '.join(args.words[2:])}")
        request["word"] = args.words[0]
        request["count"] = args.words[1] if len(args.words) > 1 else None
    print(client.request("demote", **request)["text"])
    return 0
