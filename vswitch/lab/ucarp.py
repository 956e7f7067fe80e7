"""ucarp 1.5.2 (Debian) peers in the namespace lab: the interop test and the failover benchmark.

A `UcarpNode` is a namespace with one address on its eth0, plugged into a LAN bridge, and the
argv of a ucarp process serving a virtual address there. ucarp runs its up/down scripts as
`SCRIPT IFNAME VIP` and waits for them (the down script also runs at start): they add / remove
the address in the node's namespace and then append "master TIME" / "backup TIME" to the node's
state file, TIME being the wall clock (`date +%s.%N`) when ucarp ran the script. A transition
read from the file has therefore happened. With `garp`, the up script also sends a gratuitous
ARP at once, in the background (`python -m vswitch.lab.ucarp IFNAME VIP`); ucarp sends its own
only after the script.
"""

import os
import shlex
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from carp.l2 import gratuitous_arp
from vswitch.lab.netns import Lab

PREFIXLEN = 24  # the lab's LAN
IFNAME = "eth0"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass
class UcarpNode:
    """One ucarp host of a lab (`build` makes it; `start` runs ucarp)."""

    lab: Lab
    name: str
    netns: str
    address: str
    vip: str
    base: str  # path prefix of its scripts, state file and log
    argv: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    ifname: str = IFNAME

    @classmethod
    def build(
        cls,
        lab: Lab,
        seg: str,
        bridge: str,
        directory: str,
        name: str,
        address: str,
        *,
        vip: str,
        vhid: int = 1,
        password: str = "secret",
        advbase: int = 1,
        advskew: int = 0,
        preempt: bool = True,
        garp: bool = False,
    ) -> "UcarpNode":
        """A namespace `name` on `bridge` (in the namespace `seg`) with `address` on eth0, its
        scripts in `directory`, ready to run ucarp for `vip`."""
        ns = lab.netns(name)
        lab.veth(IFNAME, name, a_netns=ns, b_netns=seg, bridge=bridge)
        lab.addr(ns, IFNAME, f"{address}/{PREFIXLEN}")
        node = cls(lab, name, ns, address, vip, os.path.join(directory, f"ucarp-{name}"))
        node._write_scripts(garp)
        node.argv = ["ucarp", "-i", IFNAME, "-s", address, "-v", str(vhid), "-p", password]
        node.argv += ["-a", vip, "-b", str(advbase), "-k", str(advskew)]
        node.argv += ["-u", f"{node.base}.up", "-d", f"{node.base}.down"]
        node.argv += ["-P"] if preempt else []
        return node

    def _write_scripts(self, garp: bool) -> None:
        state = shlex.quote(f"{self.base}.state")
        announce = ""
        if garp:
            python = f"PYTHONPATH={shlex.quote(ROOT)} {shlex.quote(sys.executable)}"
            announce = f'{python} -m vswitch.lab.ucarp "$1" "$2" </dev/null >/dev/null 2>&1 &\n'
        for script, change, word, extra in (
            ("up", "add", "master", announce),
            ("down", "del", "backup", ""),
        ):
            path = f"{self.base}.{script}"
            with open(path, "w") as f:
                f.write(
                    "#!/bin/sh\n"
                    "at=$(date +%s.%N)\n"
                    f'ip addr {change} "$2/{PREFIXLEN}" dev "$1" 2>/dev/null\n'
                    f"{extra}"
                    f'echo "{word} $at" >> {state}\n'
                )
            os.chmod(path, 0o755)

    # -- the process ---------------------------------------------------------------------------

    def start(self) -> None:
        self.proc = self.lab.spawn(self.netns, self.argv, log=f"{self.base}.log")

    def kill(self, *, host_down: bool = False) -> None:
        """`kill -9` (ucarp sends nothing on exit anyway). The address it holds stays, unless
        `host_down`: then its link goes down at once too, as the whole host had died."""
        assert self.proc is not None
        self.lab.kill(self.proc)
        if host_down:
            self.lab.link(self.netns, self.ifname, up=False)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.lab.stop(self.proc)
            self.proc = None

    def drop_vip(self) -> None:
        """Remove the virtual address its up script may have left (a host that reboots)."""
        argv = ["ip", "addr", "del", f"{self.vip}/{PREFIXLEN}", "dev", self.ifname]
        self.lab.run(self.netns, argv, check=False)

    # -- what it did ---------------------------------------------------------------------------

    def states(self) -> list[tuple[str, float]]:
        """("master" | "backup", wall clock) for every up/down script run, in order."""
        try:
            with open(f"{self.base}.state") as f:
                rows = [line.split() for line in f]
        except FileNotFoundError:
            return []
        return [(row[0], float(row[1])) for row in rows if len(row) == 2]

    def transitions(self) -> list[str]:
        return [word for word, _ in self.states()]

    def state(self) -> str | None:
        """The last transition ("master" or "backup"); None before ucarp ran a script."""
        states = self.states()
        return states[-1][0] if states else None

    def log(self) -> str:
        try:
            with open(f"{self.base}.log", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""


def send_garp(ifname: str, vip: str) -> None:
    """One gratuitous ARP request for `vip` from `ifname`'s MAC (run in the node's namespace)."""
    with open(f"/sys/class/net/{ifname}/address") as f:
        mac = bytes.fromhex(f.read().strip().replace(":", ""))
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind((ifname, 0))
        s.send(gratuitous_arp(mac, IPv4Address(vip)))


if __name__ == "__main__":  # the up script's gratuitous ARP: IFNAME VIP
    send_garp(sys.argv[1], sys.argv[2])
