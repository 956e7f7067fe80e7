"""Seeing frames in the namespace lab: tcpdump into a pcap file (`Capture`), or AF_PACKET sockets
read in this process (`Sniffer`), which tell a frame sent out of a bridge port from one received.
"""

import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass

from vswitch import netlink
from vswitch.lab.netns import Lab


class Capture:
    """tcpdump into a pcap file inside a lab namespace, bounded by a count and a time limit."""

    def __init__(self, lab: Lab, netns: str, path: str) -> None:
        self.lab = lab
        self.netns = netns
        self.path = path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(
        self, ifname: str, expr: str, *, count: int, limit: float, inbound: bool = False
    ) -> None:
        # --immediate-mode: a frame reaches the file at once (libpcap's TPACKET_V3 blocks would
        # hold up to a second of frames, lost when tcpdump is stopped)
        argv = ["timeout", f"{limit:g}", "tcpdump", "-i", ifname, "-n", "-U", "--immediate-mode"]
        argv += ["-c", str(count)]
        argv += (["-Q", "in"] if inbound else []) + ["-w", self.path, expr]
        err = open(f"{self.path}.err", "wb")  # noqa: SIM115 - owned by the process
        self.proc = self.lab.spawn(self.netns, argv, stdout=subprocess.DEVNULL, stderr=err)
        err.close()
        end = time.monotonic() + 10
        while "listening on" not in self.stderr():
            if self.proc.poll() is not None or time.monotonic() > end:
                self.stop()
                raise RuntimeError(f"tcpdump did not start: {self.stderr()}")
            time.sleep(0.02)

    def stderr(self) -> str:
        with open(f"{self.path}.err", errors="replace") as f:
            return f.read()

    def done(self) -> bool:
        """True once tcpdump exited (its count reached or its time limit over)."""
        return self.proc is None or self.proc.poll() is not None

    def stop(self) -> None:
        if self.proc is not None:
            self.lab.stop(self.proc, timeout=5)  # timeout(1) passes SIGTERM on to tcpdump
            self.proc = None

    def frames(self) -> list[tuple[float, bytes]]:
        """The frames captured so far (Ethernet), with their timestamps."""
        from vswitch.decode import open_capture

        with open(self.path, "rb") as f:
            return list(open_capture(f).frames)

    def __enter__(self) -> "Capture":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SO_RCVBUFFORCE = 33  # root: a buffer beyond rmem_max


@dataclass(frozen=True, slots=True)
class Sniffed:
    """One frame seen on a bridge port: `inbound` if the device behind the port sent it (it
    entered the bridge), else the bridge sent it out to that device."""

    ifname: str
    inbound: bool
    frame: bytes


class Sniffer:
    """AF_PACKET sockets on interfaces of one lab namespace, in this process (no tcpdump): on the
    bridge ports in "seg" they show which node sent a frame and which node a frame reached."""

    BUFFER = 8 << 20  # room for everything a short test sends without reading in between

    def __init__(self, netns: str, ifnames: Sequence[str]) -> None:
        self.socks: dict[str, socket.socket] = {}
        self.seen: list[Sniffed] = []
        try:
            for ifname in ifnames:
                with netlink.in_netns(netns):
                    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
                self.socks[ifname] = s
                s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, self.BUFFER)
                s.bind((ifname, ETH_P_ALL))
                s.setblocking(False)
        except BaseException:
            self.close()
            raise

    def frames(self) -> list[Sniffed]:
        """Everything seen so far (read now), in order per interface."""
        for ifname, s in self.socks.items():
            while True:
                try:
                    data, addr = s.recvfrom(65600)
                except BlockingIOError:
                    break
                self.seen.append(Sniffed(ifname, addr[2] != PACKET_OUTGOING, data))
        return self.seen

    def clear(self) -> None:
        self.frames()
        self.seen = []

    def close(self) -> None:
        for s in self.socks.values():
            s.close()
        self.socks = {}
