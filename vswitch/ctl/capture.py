"""Capture a running node's switch ports live as pcapng: `capture lan0 -w - | wireshark -k -i -`.

The node streams what the named ports of SWITCH (all of them without names) receive and send,
each frame with its port (the pcapng interface) and direction, until Ctrl-C, `--count` frames
or `--duration` seconds. Only whole pcapng blocks are written, so a file cut short by Ctrl-C
still reads. A reader that cannot keep up loses frames at the node (counted there, in
`vswitch status --json` under channels.capture, and told at the end of the stream); the node
never slows down for it.
"""

import argparse
import contextlib
import os
import struct
import sys
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from vswitch.ctl.client import CommandFailed, ControlClient, run_client

BT_EPB = 6
BT_ISB = 5
OPT_ISB_IFDROP = 4


def configure(parser: argparse.ArgumentParser) -> None:
    parser.usage = (
        "%(prog)s [-s SOCKET | --config CONFIG] SWITCH [PORT ...] -w FILE|- [--duration S] "
        "[-c N] [--snaplen N]"
    )
    parser.epilog = (
        "e.g. `vswitch capture lan0 -w - | wireshark -k -i -`, `vswitch capture lan0 up0 vm1 -w "
        "lan0.pcapng -c 100`, `vswitch capture lan0 -w - | tshark -r - -Y carp`. A capture shows "
        "each port's wire: what its peer sent (inbound) and what it was given (outbound), "
        "impairments included."
    )
    # -c is the frame count here, as tcpdump's; the node file is --config
    where = parser.add_mutually_exclusive_group()
    where.add_argument("-s", "--socket", metavar="SOCKET", help="the node's control socket")
    where.add_argument("--config", metavar="CONFIG", help="the node's config ([node] control)")
    parser.add_argument("switch", metavar="SWITCH", help="a switch of the node")
    parser.add_argument("ports", nargs="*", metavar="PORT", help="its ports (default: all)")
    parser.add_argument(
        "-w", "--write", required=True, metavar="FILE", help="the pcapng file, - for stdout"
    )
    parser.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    parser.add_argument("-c", "--count", type=int, metavar="N", help="stop after N frames")
    parser.add_argument(
        "--snaplen", type=int, metavar="N", help="bytes kept of each frame (default 262144)"
    )


class BlockWriter:
    """Writes whole pcapng blocks only (a stream cut anywhere leaves a readable file) and
    counts the frames and the losses the node reports at the end."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.frames = 0
        self.lost = 0
        self._pending = b""

    def feed(self, data: bytes) -> None:
        buf = self._pending + data
        at = 0
        while len(buf) - at >= 8:
            kind, length = struct.unpack_from("<II", buf, at)
            if length < 12 or length % 4:
                raise CommandFailed(f"the node sent a malformed pcapng block (length {length})")
            if len(buf) - at < length:
                break
            if kind == BT_EPB:
                self.frames += 1
            elif kind == BT_ISB:
                self.lost += _ifdrop(buf[at + 20 : at + length - 4])
            at += length
        if at:
            self.out.write(buf[:at])
            self.out.flush()
        self._pending = buf[at:]


def _ifdrop(options: bytes) -> int:
    """isb_ifdrop from an Interface Statistics Block's options (0 when absent)."""
    at = 0
    while len(options) - at >= 4:
        code, length = struct.unpack_from("<HH", options, at)
        if code == 0:
            break
        if code == OPT_ISB_IFDROP and length == 8:
            return int(struct.unpack_from("<Q", options, at + 4)[0])
        at += 4 + length + (-length % 4)
    return 0


def copy(stream: Iterable[bytes], writer: BlockWriter) -> None:
    for chunk in stream:
        writer.feed(chunk)


def run(args: argparse.Namespace) -> int:
    if args.write == "-" and sys.stdout.isatty():
        print(
            "vswitch: capture: stdout is a terminal; pipe it (-w - | wireshark -k -i -) or "
            "give -w FILE",
            file=sys.stderr,
        )
        return 2
    for name, value in (("--count", args.count), ("--duration", args.duration)):
        if value is not None and not value > 0:
            print(f"vswitch: capture: {name} {value}: give a positive number", file=sys.stderr)
            return 2

    def body(client: ControlClient) -> int:
        request = {
            "switch": args.switch,
            "ports": args.ports,
            "count": args.count,
            "duration": args.duration,
            "snaplen": args.snaplen,
        }
        started, stream = client.stream("capture", **{k: v for k, v in request.items() if v})
        with _output(args.write) as out:
            writer = BlockWriter(out)
            where = ", ".join(started["ports"] or ["every port"])
            print(f"capturing on {started['switch']} ({where})", file=sys.stderr)
            try:
                copy(stream, writer)
            except KeyboardInterrupt:
                _summary(writer)
                return 0
            except BrokenPipeError:  # the reader (wireshark, head) went: that is the end
                _quiet_stdout()
                return 0
            except OSError as exc:
                _summary(writer)
                print(f"vswitch: lost the node: {exc}", file=sys.stderr)
                return 1
        _summary(writer)
        if args.count is None and args.duration is None:
            print("vswitch: the node ended the capture", file=sys.stderr)
            return 1
        return 0

    try:
        return run_client(args, body)
    except KeyboardInterrupt:  # before the stream started
        return 130


@contextlib.contextmanager
def _output(path: str) -> Iterator[BinaryIO]:
    if path == "-":
        yield sys.stdout.buffer
        return
    try:
        f = open(path, "wb")  # noqa: SIM115 (closed below, also on Ctrl-C)
    except OSError as exc:
        raise CommandFailed(f"cannot write {path}: {exc.strerror or exc}") from None
    with f:
        yield f


def _summary(writer: BlockWriter) -> None:
    lost = f", {writer.lost} lost (the reader lagged)" if writer.lost else ""
    print(f"{writer.frames} frames captured{lost}", file=sys.stderr)


def _quiet_stdout() -> None:
    """stdout's reader went: point it at /dev/null so the exit does not complain."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
