"""Impair a running node's port live: delay, jitter, loss, rate, partition; or clear it.

`vswitch impair lan0 up0 delay 50ms jitter 5ms loss 1%` impairs both directions of port up0 of
switch lan0; `in` or `out` first impairs one (`in`: what the port receives, `out`: what it
sends). A command states the whole impairment of its direction(s), as `tc qdisc replace` does:
options left out are off, and `clear` takes it all away. `partition` drops every frame while the
link stays up; `partition carp` only CARP (IP protocol 112), so the nodes stop hearing each other
while traffic still flows. Without options the port's impairment is shown. It lasts until a
reload changes the port's `impair` in the node file, or the node restarts.
"""

import argparse
from typing import Any

from vswitch.ctl.client import CommandFailed, ControlClient, add_socket_options, run_client


def configure(parser: argparse.ArgumentParser) -> None:
    parser.usage = (
        "%(prog)s [-s SOCKET | -c CONFIG] SWITCH PORT [in|out] [delay T] [jitter T] [loss P] "
        "[rate R] [partition [carp]]\n"
        "       %(prog)s [-s SOCKET | -c CONFIG] SWITCH PORT [in|out] clear"
    )
    parser.epilog = (
        "T: a time with its unit (us, ms, s), e.g. 50ms; P: a percentage, e.g. 30%; R: bits "
        "per second (bit, kbit, mbit, gbit), e.g. 10mbit. The same options as the port's "
        'impair = {delay = "50ms", ...} in the node file.'
    )
    add_socket_options(parser)
    parser.add_argument("switch", metavar="SWITCH", help="a switch of the node")
    parser.add_argument("port", metavar="PORT", help="one of its ports")
    parser.add_argument(
        "words", nargs=argparse.REMAINDER, help="[in|out] and the impairment, or clear"
    )


def run(args: argparse.Namespace) -> int:
    def body(client: ControlClient) -> int:
        if not args.words:
            print(show(client.request("status"), args.switch, args.port))
            return 0
        result = client.request("impair", switch=args.switch, port=args.port, words=args.words)
        print(f"{args.switch} {args.port}: {phrase(result['in'], result['out'])}")
        return 0

    return run_client(args, body)


def phrase(inbound: list[str], outbound: list[str]) -> str:
    """`delay 50ms loss 1%` when both directions agree, else `in ..., out ...`."""
    if inbound == outbound:
        return " ".join(inbound)
    return f"in {' '.join(inbound)}, out {' '.join(outbound)}"


def show(status: dict[str, Any], switch: str, port: str) -> str:
    """A port's impairment and what it dropped, from the status snapshot."""
    sw = next((s for s in status["switches"] if s["name"] == switch), None)
    if sw is None:
        raise CommandFailed(f"no switch {switch}")
    found = next((p for p in sw["ports"] if p["name"] == port), None)
    if found is None:
        raise CommandFailed(f"switch {switch} has no port {port}")
    impaired = found.get("impair", {})
    if not any(d["config"] for d in impaired.values()):
        lines = [f"{switch} {port}: clear"]
    else:
        lines = [f"{switch} {port}:"]
    for direction, d in impaired.items():
        setting = " ".join(_words(d["config"])) or "clear"
        drops = ", ".join(f"{r} {n}" for r, n in d["drops"].items() if n) or "none"
        lines.append(
            f"  {direction:<3} {setting}; passed {d['passed']}, held {d['held']}, dropped: {drops}"
        )
    return "\n".join(lines)


def _words(table: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for key, value in table.items():
        if key == "partition":
            out += ["partition"] if value is True else ["partition", str(value)]
        else:
            out += [key, str(value)]
    return out
