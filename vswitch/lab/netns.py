"""A lab builder for the demo, integration tests, examples and benchmarks.

A `Lab` creates network namespaces, veth pairs, Linux bridges, addresses, routes and sysctls
under one random per-run prefix ("vs" + 4 hex digits), runs commands and processes inside its
namespaces, and removes everything it created: on `close()`, at the end of a `with` block (also
on exceptions), on SIGTERM (turned into SystemExit so that `with` blocks unwind) and, as the last
resort, at interpreter exit. It never touches an interface it did not create: a name that exists
already is refused, and every interface left in the host's own namespace carries the prefix.

Processes are killed by pid, and only those the lab started. Close a DataPlane that has ports in
the lab's namespaces before the lab: its sockets keep a deleted namespace (and so its
interfaces) alive until they are closed. `preflight` says why a lab cannot be built here, and
`leftovers` what is left of one.
"""

import asyncio
import atexit
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from vswitch import netlink

IFNAMSIZ = 15
NETNS_DIR = netlink.NETNS_DIR
PACKAGES = {  # tool -> the Debian package that has it
    "ip": "iproute2",
    "ping": "iputils-ping",
    "ucarp": "ucarp",
    "tcpdump": "tcpdump",
    "tshark": "tshark",
}

_live: set["Lab"] = set()
_lock = threading.Lock()
_signal_installed = False


def _close_all() -> None:
    for lab in list(_live):
        lab.close()


atexit.register(_close_all)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # unwind `with Lab()` blocks and finally clauses; atexit closes what is left
    raise SystemExit(128 + signum)


def _install_signal_handler() -> None:
    global _signal_installed
    if _signal_installed or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)
        _signal_installed = True


def netns_exists(name: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, name))


class LabError(RuntimeError):
    pass


class Lab:
    def __init__(self, prefix: str | None = None, *, handle_signals: bool = True) -> None:
        self.prefix = prefix or "vs" + secrets.token_hex(2)
        if not self.prefix.isalnum() or len(self.prefix) > 8:
            raise ValueError(f"lab prefix {self.prefix!r}: 1-8 letters or digits")
        self.namespaces: list[str] = []
        self.root_links: list[str] = []  # interfaces we created in the host's namespace
        self.processes: list[subprocess.Popen[bytes]] = []
        self.teardown_errors: list[str] = []
        self.closed = False
        with _lock:
            _live.add(self)
        if handle_signals:
            _install_signal_handler()

    # -- names ---------------------------------------------------------------------------------

    def name(self, short: str) -> str:
        """A prefixed name ("vs1a2b" + short), checked against IFNAMSIZ."""
        full = self.prefix + short
        if len(full) > IFNAMSIZ:
            raise ValueError(f"name {full!r} is longer than {IFNAMSIZ} characters")
        return full

    def _own_ns(self, netns: str | None) -> None:
        if netns is not None and netns not in self.namespaces:
            raise LabError(f"namespace {netns} is not one of this lab's")

    def _root_name(self, ifname: str) -> None:
        if not ifname.startswith(self.prefix):
            raise LabError(f"{ifname}: interfaces in the host namespace must carry {self.prefix}")
        if netlink.link_index(ifname) is not None:
            raise LabError(f"{ifname} exists already; the lab never touches it")

    # -- building ------------------------------------------------------------------------------

    def netns(self, short: str, *, forwarding: bool = False) -> str:
        """A new namespace "<prefix>-<short>" with lo up (and IP forwarding if asked)."""
        self._check_open()
        name = f"{self.prefix}-{short}"
        if netns_exists(name):
            raise LabError(f"namespace {name} exists already")
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=30)
        self.namespaces.append(name)
        netlink.set_link("lo", netns=name, up=True)
        if forwarding:
            self.sysctl(name, "net.ipv4.ip_forward", 1)
            self.sysctl(name, "net.ipv6.conf.all.forwarding", 1)
        return name

    def veth(
        self,
        a: str,
        b: str,
        *,
        a_netns: str | None = None,
        b_netns: str | None = None,
        up: bool = True,
        a_mac: bytes | None = None,
        b_mac: bytes | None = None,
        bridge: str | None = None,
    ) -> tuple[str, str]:
        """A veth pair with end `a` in `a_netns` and `b` in `b_netns` (None: the host's own
        namespace, where the name must carry the prefix); `b` joins `bridge` there if given."""
        self._check_open()
        self._own_ns(a_netns)
        self._own_ns(b_netns)
        for ifname, ns in ((a, a_netns), (b, b_netns)):
            if ns is None:
                self._root_name(ifname)
        # create inside a lab namespace where possible, so no temporary name shows in the host's
        if a_netns is None and b_netns is not None:
            netlink.create_veth(b, a, netns=b_netns, peer_netns=None)
            self.root_links.append(a)
        else:
            netlink.create_veth(a, b, netns=a_netns, peer_netns=b_netns)
            if a_netns is None:
                self.root_links.append(a)
            if b_netns is None:
                self.root_links.append(b)
        for ifname, ns, mac in ((a, a_netns, a_mac), (b, b_netns, b_mac)):
            netlink.set_link(ifname, netns=ns, mac=mac, up=up)
        if bridge is not None:
            netlink.set_master(b, bridge, netns=b_netns)
        return a, b

    def bridge(self, name: str, netns: str, ports: Sequence[str] = ()) -> str:
        """A Linux bridge in a lab namespace, with br_netfilter off there (fair baselines)."""
        self._check_open()
        self._own_ns(netns)
        netlink.create_bridge(name, netns=netns)
        for port in ports:
            netlink.set_master(port, name, netns=netns)
        for key in ("iptables", "ip6tables", "arptables"):
            path = f"net.bridge.bridge-nf-call-{key}"
            with contextlib.suppress(FileNotFoundError):
                self.sysctl(netns, path, 0)
        netlink.set_link(name, netns=netns, up=True)
        return name

    def addr(
        self, netns: str, ifname: str, cidr: str, *, nodad: bool = True, noprefixroute: bool = False
    ) -> None:
        self._own_ns(netns)
        netlink.add_address(ifname, cidr, netns=netns, nodad=nodad, noprefixroute=noprefixroute)

    def link(
        self,
        netns: str | None,
        ifname: str,
        *,
        up: bool | None = None,
        mac: bytes | None = None,
        mtu: int | None = None,
    ) -> None:
        """Change an interface in a lab namespace, or one the lab created in the host's."""
        self._own_ns(netns)
        if netns is None and ifname not in self.root_links:
            raise LabError(f"{ifname} was not created by this lab")
        netlink.set_link(ifname, netns=netns, up=up, mac=mac, mtu=mtu)

    def route(
        self, netns: str, dst: str, *, via: str | None = None, dev: str | None = None
    ) -> None:
        self._own_ns(netns)
        netlink.add_route(dst, netns=netns, gateway=via, ifname=dev)

    def sysctl(self, netns: str, name: str, value: str | int) -> None:
        self._own_ns(netns)
        netlink.set_sysctl(name, value, netns=netns)

    # -- commands and processes ----------------------------------------------------------------

    @staticmethod
    def argv(netns: str | None, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", netns, *argv] if netns else list(argv)

    def run(
        self,
        netns: str | None,
        argv: Sequence[str],
        *,
        timeout: float = 30.0,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command to completion inside `netns` (bounded by `timeout`)."""
        self._own_ns(netns)
        return subprocess.run(
            self.argv(netns, argv), capture_output=True, text=True, timeout=timeout, check=check
        )

    async def arun(
        self, netns: str | None, argv: Sequence[str], *, timeout: float = 30.0
    ) -> tuple[int, str, str]:
        """`run` for code on an event loop (a data plane in this process keeps switching)."""
        self._own_ns(netns)
        proc = await asyncio.create_subprocess_exec(
            *self.argv(netns, argv),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise
        assert proc.returncode is not None
        return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")

    def spawn(
        self, netns: str | None, argv: Sequence[str], *, log: str | None = None, **popen: Any
    ) -> subprocess.Popen[bytes]:
        """Start a long-running process in `netns` (its stdout and stderr appended to the file
        `log` if given); `stop()`, `kill()` or `close()` ends it by pid."""
        self._check_open()
        self._own_ns(netns)
        popen.setdefault("stdin", subprocess.DEVNULL)
        with contextlib.ExitStack() as stack:
            if log is not None:  # the process keeps its own descriptor
                popen["stdout"] = stack.enter_context(open(log, "ab"))
                popen["stderr"] = subprocess.STDOUT
            proc: subprocess.Popen[bytes] = subprocess.Popen(self.argv(netns, argv), **popen)
        self.processes.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 5.0) -> int:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit status."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout)
        return self._forget(proc)

    def kill(self, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
        """SIGKILL at once, as a crash: the process cleans nothing up. Returns the exit status."""
        proc.kill()  # Popen signals only a process not yet reaped: never a reused pid
        proc.wait(timeout)
        return self._forget(proc)

    def _forget(self, proc: subprocess.Popen[bytes]) -> int:
        if proc in self.processes:
            self.processes.remove(proc)
        return proc.returncode

    # -- reachability, polled with a deadline --------------------------------------------------

    @staticmethod
    def _ping_argv(dst: str, wait: float) -> list[str]:
        return ["ping", "-n", "-q", "-c", "1", "-W", f"{wait:g}", dst]

    def ping(self, netns: str, dst: str, *, deadline: float = 10.0, wait: float = 1.0) -> bool:
        """True as soon as one echo is answered; False if none is by `deadline` seconds."""
        end = time.monotonic() + deadline
        while True:
            left = end - time.monotonic()
            w = max(0.2, min(wait, left))
            if self.run(netns, self._ping_argv(dst, w), timeout=w + 5, check=False).returncode == 0:
                return True
            if time.monotonic() >= end:
                return False

    async def aping(
        self, netns: str, dst: str, *, deadline: float = 10.0, wait: float = 1.0
    ) -> bool:
        end = time.monotonic() + deadline
        while True:
            left = end - time.monotonic()
            w = max(0.2, min(wait, left))
            rc, _, _ = await self.arun(netns, self._ping_argv(dst, w), timeout=w + 5)
            if rc == 0:
                return True
            if time.monotonic() >= end:
                return False

    # -- teardown ------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            raise LabError("the lab is closed")

    def close(self) -> None:
        """Kill our processes, delete our interfaces and namespaces. Never raises; problems
        are kept in `teardown_errors`."""
        if self.closed:
            return
        self.closed = True
        for proc in list(self.processes):
            try:
                self.stop(proc, timeout=3.0)
            except Exception as exc:
                self.teardown_errors.append(f"process {proc.pid}: {exc}")
        for ifname in reversed(self.root_links):
            try:
                netlink.delete_link(ifname)
            except Exception as exc:
                self.teardown_errors.append(f"link {ifname}: {exc}")
        for ns in reversed(self.namespaces):
            try:
                subprocess.run(
                    ["ip", "netns", "del", ns], check=True, capture_output=True, timeout=30
                )
            except Exception as exc:
                self.teardown_errors.append(f"netns {ns}: {exc}")
        with _lock:
            _live.discard(self)

    def __enter__(self) -> "Lab":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def preflight(
    what: str,
    tools: Sequence[str] = ("ip", "ping"),
    *,
    hint: str = "",
    euid: Callable[[], int] = os.geteuid,
    which: Callable[[str], str | None] = shutil.which,
    exists: Callable[[str], bool] = os.path.exists,
) -> str | None:
    """Why `what` (a lab with vswitch nodes) cannot run here, or None: root, the `tools` (named
    with their Debian packages) and /dev/net/tun. `hint` ends the root and tools messages."""
    if euid() != 0:
        return f"{what} needs root (it creates network namespaces, veths and TAP devices){hint}"
    missing = [tool for tool in tools if which(tool) is None]
    if missing:
        packages = " ".join(PACKAGES.get(tool, tool) for tool in missing)
        return f"{what} needs {', '.join(missing)} (Debian: apt-get install {packages}){hint}"
    if not exists("/dev/net/tun"):
        return f"{what} needs /dev/net/tun: load the tun module (modprobe tun)"
    return None


def leftovers(prefix: str) -> dict[str, list[str]]:
    """What is left of the lab `prefix`: its namespaces, interfaces in the host's namespace, and
    processes that run in one of those namespaces or whose command line names the prefix (the
    lab's files carry it), as "PID COMMAND LINE"."""
    try:
        namespaces = sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(f"{prefix}-"))
    except FileNotFoundError:  # no namespace was made since boot
        namespaces = []
    inside = {_inode(os.path.join(NETNS_DIR, ns)) for ns in namespaces} - {None}
    processes = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # it ended meanwhile
            continue
        if int(pid) != os.getpid() and (
            prefix in cmdline or _inode(f"/proc/{pid}/ns/net") in inside
        ):
            processes.append(f"{pid} {cmdline}")
    return {
        "namespaces": namespaces,
        "links": sorted(n for n in netlink.link_names() if n.startswith(prefix)),
        "processes": processes,
    }


def _inode(path: str) -> tuple[int, int] | None:
    """A namespace's identity (a bind mount under NETNS_DIR or a process's ns/net link)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino
