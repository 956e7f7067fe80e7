"""The attach lab: one vswitch node whose switch every kind of client joins (docs/attach.md).

    QEMU (-netdev stream) --- stream port "vm1" ---+
    QEMU (-netdev vde), vde_plug2tap --- vde "lab" -+-- switch lan0 -- host port, carp0 VIP
    a kernel vxlan device across an underlay ------+   (192.0.2.2, VIP 192.0.2.1)
    processes in their own namespace (unshare -n) -- tap ports added at run time (pid:, path)

The node runs `vswitch run` in its namespace "gw" with the VIP 192.0.2.1/24 (alone, it becomes
MASTER). A QEMU client is `qemu-system-x86_64 -M none` whose network backend (stream or vde) is
joined by a hub to a TAP it makes in the client's namespace, so the client's kernel speaks
through QEMU. The vxlan host "far" sits across the underlay 203.0.113.0/24 with a Linux vxlan
device. Everything lives under the lab's prefix and is removed on close, QEMU and the
`unshare -n` processes included (ended by pid).
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from pyroute2.ethtool import Ethtool

from vswitch import netlink, tomlw
from vswitch.ctl.client import ControlClient, NodeUnavailable
from vswitch.lab.netns import Lab

VIP = "192.0.2.1"
HOST = "192.0.2.2"
VNI = 42
UNDERLAY_GW = "203.0.113.1"
UNDERLAY_FAR = "203.0.113.2"
QEMU = "qemu-system-x86_64"
TOOLS = ("ip", "ping", "nsenter", "unshare", QEMU, "vde_plug2tap")


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


class AttachLab:
    """`with AttachLab() as lab:` builds the node and the vxlan host; clients come on request."""

    def __init__(self) -> None:
        self.lab = Lab()
        self.dir = tempfile.mkdtemp(prefix=f"vswitch-{self.lab.prefix}-")
        self.socket = os.path.join(self.dir, "gw.sock")
        self.stream_path = os.path.join(self.dir, "vm1.sock")
        self.vde_dir = os.path.join(self.dir, "lab.vde")
        self.log_path = os.path.join(self.dir, "gw.log")
        self.clients: dict[str, str] = {}  # name -> its namespace
        self.proc: subprocess.Popen[bytes] | None = None
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        lab = self.lab
        self.gw = lab.netns("gw", forwarding=True)
        self.far = lab.netns("far")
        lab.veth("ul0", "ul1", a_netns=self.gw, b_netns=self.far)
        lab.addr(self.gw, "ul0", f"{UNDERLAY_GW}/24")
        lab.addr(self.far, "ul1", f"{UNDERLAY_FAR}/24")
        tx_checksums_in_software("ul1", self.far)  # else TCP through vx0 arrives unusable
        # the far host: a plain Linux vxlan device, head-end replication to the node
        lab.run(self.far, vxlan_device("vx0", VNI, UNDERLAY_FAR, "ul1"))
        lab.run(self.far, fdb_append("vx0", UNDERLAY_GW))
        lab.addr(self.far, "vx0", "192.0.2.104/24")
        lab.link(self.far, "vx0", up=True)
        config = {
            "node": {"name": "gw", "control": self.socket, "metrics": False},
            "switch": {
                "lan0": {
                    "host": [f"{HOST}/24"],
                    "ports": [
                        {"name": "vm1", "type": "stream", "path": self.stream_path},
                        {"name": "lab", "type": "vde", "path": self.vde_dir},
                        {
                            "name": "far",
                            "type": "vxlan",
                            "vni": VNI,
                            "local": UNDERLAY_GW,
                            "remote": [UNDERLAY_FAR],
                        },
                    ],
                }
            },
            "carp": {"carp0": {"addresses": [f"{VIP}/24"], "vhid": 1, "pass": "attach"}},
        }
        self.config_path = os.path.join(self.dir, "gw.toml")
        with open(self.config_path, "w") as f:
            f.write(tomlw.dumps(config))

    # -- the node ------------------------------------------------------------------------------

    def start(self) -> None:
        argv = [sys.executable, "-m", "vswitch", "run", "-c", self.config_path]
        self.proc = self.lab.spawn(self.gw, argv, log=self.log_path)
        self.wait_for(lambda: self.request("status") is not None, 15)
        self.wait_for(lambda: self.state() == "MASTER", 15)

    def request(self, cmd: str, **params: Any) -> Any:
        """One control request; None while the node does not answer."""
        try:
            with ControlClient(self.socket, timeout=5) as client:
                return client.request(cmd, **params)
        except NodeUnavailable:
            return None

    def state(self) -> str | None:
        status = self.request("status")
        if not isinstance(status, dict):
            return None
        return str(status["carp"][0]["carpnodes"][0]["state"])

    def ports(self) -> dict[str, dict[str, Any]]:
        status = self.request("status") or {"switches": [{"ports": []}]}
        return {p["name"]: p for p in status["switches"][0]["ports"]}

    def vswitch(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The `vswitch` command line against this node, as an operator runs it."""
        argv = [sys.executable, "-m", "vswitch", *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)

    def wait_for(self, condition: Callable[[], bool], timeout: float) -> None:
        """Poll `condition` until true; TimeoutError (or the node's exit) with its log."""
        end = time.monotonic() + timeout
        while not condition():
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"the node exited\n{self.log()}")
            if time.monotonic() > end:
                raise TimeoutError(f"condition not met within {timeout:g} s\n{self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    # -- clients -------------------------------------------------------------------------------

    def qemu(self, name: str, backend: str, address: str) -> str:
        """A client namespace whose kernel speaks through QEMU: `backend` is "stream" (the
        stream port) or "vde" (the vde port); QEMU's hub joins it to a TAP "qtap" here."""
        ns = self.lab.netns(name)
        if backend == "stream":
            netdev = stream_netdev(self.stream_path)
        else:
            netdev = vde_netdev(self.vde_dir)
        argv = qemu_argv(netdev, "qtap")
        proc = self.lab.spawn(ns, argv, log=os.path.join(self.dir, f"{name}.log"))
        self._client_tap(ns, "qtap", address, proc)
        self.clients[name] = ns
        return ns

    def vde_plug2tap(self, name: str, address: str) -> str:
        """A second kind of vde client: vde_plug2tap joins a TAP of its own to the vde port."""
        ns = self.lab.netns(name)
        argv = ["vde_plug2tap", "-s", self.vde_dir, "ptap"]
        proc = self.lab.spawn(ns, argv, log=os.path.join(self.dir, f"{name}.log"))
        self._client_tap(ns, "ptap", address, proc)
        self.clients[name] = ns
        return ns

    def _client_tap(
        self, ns: str, ifname: str, address: str, proc: subprocess.Popen[bytes]
    ) -> None:
        def made() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
            return netlink.link_index(ifname, ns) is not None

        self.wait_for(made, 15)
        self.lab.addr(ns, ifname, f"{address}/24")
        self.lab.link(ns, ifname, up=True)

    def isolated(self) -> subprocess.Popen[bytes]:
        """A process in a network namespace of its own (`unshare -n`), as a container's init;
        its namespace has only `lo` until a port is added with netns=pid:PID."""
        proc = self.lab.spawn(None, ["unshare", "-n", "sleep", "3600"])
        own = os.stat("/proc/self/ns/net").st_ino
        self.wait_for(lambda: _netns_inode(proc.pid) not in (None, own), 10)
        return proc

    def inside(self, pid: int, argv: list[str], *, timeout: float = 30.0) -> int:
        """Run `argv` in the network namespace of process `pid`; its exit status."""
        full = ["nsenter", f"--net=/proc/{pid}/ns/net", *argv]
        return self.lab.run(None, full, timeout=timeout, check=False).returncode

    # -- teardown ------------------------------------------------------------------------------

    def close(self) -> None:
        self.lab.close()  # the node, QEMU, vde_plug2tap and unshare processes, by pid
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "AttachLab":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stream_netdev(path: str) -> str:
    """QEMU's backend (id n0) for a node's `type = "stream"` port listening on `path`."""
    return f"stream,id=n0,server=off,addr.type=unix,addr.path={path}"


def vde_netdev(directory: str) -> str:
    """QEMU's backend (id n0) for a node's `type = "vde"` port in `directory`."""
    return f"vde,id=n0,sock={directory}"


def qemu_argv(netdev: str, tap: str) -> list[str]:
    """QEMU with no machine whose hub joins the backend `netdev` (id n0) to a TAP `tap` it makes
    in the namespace it runs in: that namespace's kernel then speaks through QEMU."""
    return [
        QEMU, "-M", "none", "-nodefaults", "-display", "none",
        "-netdev", netdev,
        "-netdev", f"tap,id=t0,ifname={tap},script=no,downscript=no",
        "-netdev", "hubport,id=h0,hubid=0,netdev=n0",
        "-netdev", "hubport,id=h1,hubid=0,netdev=t0",
    ]  # fmt: skip


def vxlan_device(name: str, vni: int, local: str, dev: str) -> list[str]:
    """`ip link add` of a Linux vxlan device on IANA's port (iproute2's default is 8472)."""
    return [
        "ip", "link", "add", name, "type", "vxlan", "id", str(vni),
        "local", local, "dstport", "4789", "dev", dev,
    ]  # fmt: skip


def fdb_append(dev: str, peer: str) -> list[str]:
    """Head-end replication to `peer`: every flood also goes there."""
    return ["bridge", "fdb", "append", "00:00:00:00:00:00", "dev", dev, "dst", peer]


def tx_checksums_in_software(ifname: str, netns: str) -> None:
    """What `ethtool -K IFNAME tx off` does to a veth in `netns` (its tx checksum feature is
    tx-checksum-ip-generic): the kernel completes every checksum before a frame leaves, as a NIC
    does on the wire. A veth never completes them, so a Linux vxlan device whose underlay is a
    veth hands its inner TCP segments to the node's UDP socket with the checksum still partial,
    and the TCP receiver behind the node drops them (ICMP, checksummed in software, passes)."""
    with netlink.in_netns(netns):
        tool = Ethtool()
    try:
        found = tool.get_features(ifname)
        found.features["tx-checksum-ip-generic"].enable = False
        tool.set_features(ifname, found)
    finally:
        tool.close()


def _netns_inode(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None
