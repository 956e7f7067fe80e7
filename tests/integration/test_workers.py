"""Forwarding workers (`[node] workers = 2`) end to end: the gateway pair with raw ports in a
PACKET_FANOUT group and multiqueue carp TAPs, both nodes with two workers each, gwa's node
process with rt_priority.

Checked: the pair elects and routes the clients through the master (carp decisions applied in
the workers), the master's status counts the workers' frames and shows its scheduling, a port
added at run time is served by a new set of workers, a frame for a VM on a stream port (a
station the node learned) is not flooded by the workers, impairment is refused with the fix, and a
`kill -9` of the master takes its workers (and so its TAPs and sockets) with it, so the backup
takes over.
"""

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from carp.wire import frame_is_carp
from vswitch import netlink
from vswitch.lab.gateway import LAN_VIP, UPSTREAM, Gateway, GatewayLab, pair_specs
from vswitch.lab.inject import Injector
from vswitch.lab.netns import Lab
from vswitch.netlink import link_index
from vswitch.raw import carp_socket

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parents[2]
VSWITCH = [sys.executable, "-m", "vswitch"]
SETTLE = 30.0  # generous bound for an election or a takeover (advbase 1: about 4 s)
WORKERS = 2
RT_PRIORITY = 50


def vswitch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VSWITCH, *args], cwd=ROOT, capture_output=True, text=True, timeout=30)


def status(gw: Gateway) -> dict[str, Any]:
    result = vswitch("status", "--json", "-s", gw.socket_path)
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie of ours is dead too
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


@pytest.fixture(scope="module")
def lab() -> Iterator[GatewayLab]:
    specs = pair_specs(ipv6=False)
    for spec in specs:
        spec.workers = WORKERS
    specs[0].rt_priority = RT_PRIORITY
    with GatewayLab(specs, clients=1, ipv6=False) as lab:
        for gw in lab.gateways:
            lab.start(gw)
        gwa, gwb = lab.gateways
        lab.wait_for(lambda: lab.state(gwa) == "MASTER" and lab.state(gwb) == "BACKUP", SETTLE)
        yield lab


def test_the_pair_routes_through_workers_and_counts_their_frames(lab: GatewayLab) -> None:
    gwa = lab.gateways[0]
    assert lab.ping(1, LAN_VIP), "the client cannot reach the VIP"
    assert lab.ping(1, UPSTREAM), "the client cannot reach upstream through the master"
    st = status(gwa)
    workers = st["workers"]
    assert workers["count"] == WORKERS and len(workers["pids"]) == WORKERS
    assert all(alive(pid) for pid in workers["pids"])
    assert workers["advert_socket_drops"] == 0  # read off the node's advertisement sockets

    def counted() -> bool:
        lan = next(s for s in status(gwa)["switches"] if s["name"] == "lan0")
        port = next(p for p in lan["ports"] if p["name"] == "lan")
        # the frames the workers switched: the ping's echo requests to the VIP at least
        return int(port["forwarded"]) >= 1 and int(port["rx_packets"]) >= 1

    # the protocol process real-time, its workers (SCHED_RESET_ON_FORK) at normal priority
    assert st["scheduling"] == {"policy": "rr", "priority": RT_PRIORITY}
    assert all(os.sched_getscheduler(pid) == os.SCHED_OTHER for pid in workers["pids"])
    lab.wait_for(counted, 10)
    # frames for the carp MAC that the workers gave carp0, counted there and summed here
    lab.wait_for(lambda: int(status(gwa)["datapath"]["delivered"]) >= 1, 10)


def test_a_port_added_at_run_time_gets_new_workers(lab: GatewayLab) -> None:
    gwa = lab.gateways[0]
    before = status(gwa)["workers"]["pids"]
    ns = lab.lab.netns("extra")
    added = vswitch("port", "add", "lan0", "vm9", "type=tap", f"netns={ns}", "-s", gwa.socket_path)
    assert added.returncode == 0, added.stderr
    try:
        lab.wait_for(lambda: link_index("vm9", ns) is not None, 10)

        def new_set() -> bool:
            w = status(gwa)["workers"]
            return w["ready"] == WORKERS and not set(w["pids"]) & set(before)

        lab.wait_for(new_set, 15)
        lab.lab.addr(ns, "vm9", "192.0.2.99/24")
        lab.lab.link(ns, "vm9", up=True)
        assert lab.lab.ping(ns, LAN_VIP, deadline=10), "the new port does not reach the VIP"
        lab.wait_for(lambda: not any(alive(pid) for pid in before), 10)
    finally:
        deleted = vswitch("port", "del", "lan0", "vm9", "-s", gwa.socket_path)
        assert deleted.returncode == 0, deleted.stderr


def test_stations_on_a_socket_port_are_not_flooded_by_the_workers(
    lab: GatewayLab, tmp_path: Path
) -> None:
    """A VM on a stream port (served by the node process): once the node learned its MAC, a
    frame for it from the LAN (read by a worker) goes to that port alone, not to every port
    of the switch; an observer TAP port on the same switch sees nothing of it."""
    gwa = lab.gateways[0]
    sock_path = str(tmp_path / "vm7.sock")
    ns = lab.lab.netns("observe")
    station = bytes.fromhex("020000000707")
    before = status(gwa)["workers"]["pids"]
    for args in (("vm7", "type=stream", f"path={sock_path}"), ("vm6", "type=tap", f"netns={ns}")):
        added = vswitch("port", "add", "lan0", *args, "-s", gwa.socket_path)
        assert added.returncode == 0, added.stderr
    vm = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        lab.wait_for(lambda: link_index("vm6", ns) is not None and os.path.exists(sock_path), 10)
        lab.lab.link(ns, "vm6", up=True)

        def new_set() -> bool:
            w = status(gwa)["workers"]
            return w["ready"] == WORKERS and not set(w["pids"]) & set(before)

        lab.wait_for(new_set, 15)
        with netlink.in_netns(ns):
            observer = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        observer.bind(("vm6", 0))
        observer.setblocking(False)
        vm.connect(sock_path)
        vm.settimeout(5)
        hello = b"\xff" * 6 + station + b"\x88\xb5" + b"hello".ljust(46, b"\0")
        vm.sendall(len(hello).to_bytes(4, "big") + hello)  # the node learns the station
        client_mac = bytes.fromhex(
            lab.lab.run(lab.clients[0], ["cat", "/sys/class/net/eth0/address"])
            .stdout.strip()
            .replace(":", "")
        )

        def observed(payload: bytes) -> bool:
            got = False
            with contextlib.suppress(BlockingIOError):
                while True:
                    got |= payload in observer.recv(4096)
            return got

        def flooded(n: int) -> bool:
            """One frame for the station from the client: it reaches the VM (read off the
            stream); whether the observer port got a copy too."""
            payload = b"probe%04d" % n
            frame = station + client_mac + b"\x88\xb5" + payload.ljust(46, b"\0")
            with Injector(lab.clients[0], "eth0") as inj:
                assert inj.send(bytes(10), frame)
            while True:  # the VM gets it whatever the workers' tables say
                length = int.from_bytes(recv_exactly(vm, 4), "big")
                if payload in recv_exactly(vm, length):
                    break
            return observed(payload)

        for n in range(200):
            if not flooded(n):
                break
        else:
            pytest.fail("frames for the station on the stream port were flooded every time")
        for n in range(200, 205):
            assert not flooded(n), "a frame for a known station was flooded"
    finally:
        vm.close()
        for name in ("vm7", "vm6"):
            deleted = vswitch("port", "del", "lan0", name, "-s", gwa.socket_path)
            assert deleted.returncode == 0, deleted.stderr


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "the stream port closed"
        data += chunk
    return data


def test_an_address_added_at_run_time_swaps_the_carp_tap_under_the_workers(
    lab: GatewayLab,
) -> None:
    # a new address makes carp0's TAP anew: the workers let go of the old one first (else the
    # TAP would outlive its close and the new one could not be made), and a new set reads it
    gwa, gwb = lab.gateways
    before = status(gwa)["workers"]["pids"]
    for gw in (gwa, gwb):  # the HMAC covers the addresses: both nodes change
        result = vswitch("ifconfig", "-s", gw.socket_path, "carp0", "alias", "192.0.2.7/24")
        assert result.returncode == 0, result.stderr
    lab.wait_for(lambda: status(gwa)["workers"]["ready"] == WORKERS, 15)
    assert not set(status(gwa)["workers"]["pids"]) & set(before)
    lab.wait_for(lambda: lab.state(gwa) == "MASTER" and lab.state(gwb) == "BACKUP", SETTLE)
    assert lab.ping(1, "192.0.2.7"), "the new address does not answer through the workers"
    assert lab.ping(1, UPSTREAM)


def test_impairment_is_refused_with_the_fix(lab: GatewayLab) -> None:
    gwa = lab.gateways[0]
    result = vswitch("impair", "-s", gwa.socket_path, "lan0", "lan", "loss", "10%")
    assert result.returncode != 0
    assert "forwarded by the workers" in result.stderr and "workers = 0" in result.stderr


def test_kill_9_takes_the_workers_with_the_node(lab: GatewayLab) -> None:
    gwa, gwb = lab.gateways
    pids = status(gwa)["workers"]["pids"]
    lab.kill(gwa)
    lab.wait_for(lambda: not any(alive(pid) for pid in pids), 10)
    lab.wait_for(lambda: lab.state(gwb) == "MASTER", SETTLE)
    assert lab.ping(1, UPSTREAM), "the client cannot reach upstream through the backup"


def test_the_carp_socket_takes_advertisements_only() -> None:
    # the node process's own socket on a raw port (raw.carp_socket): its filter passes IPv4
    # protocol 112 and IPv6 next header 112 or an extension header (the kernel's own MLD
    # reports, behind hop-by-hop options, pass too: frame_is_carp refuses them), nothing else
    with Lab() as lab:
        ns = lab.netns("cs")
        lab.veth("va", "vb", a_netns=ns, b_netns=ns)
        listener = carp_socket("vb", ns)
        with netlink.in_netns(ns):
            sender = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            sender.bind(("va", 0))
            macs = bytes.fromhex("01005e000012") + bytes.fromhex("020000000001")
            carp4 = macs + b"\x08\x00" + bytes([0x45, 0, 0, 56, 0, 0, 0, 0, 255, 112]) + bytes(46)
            carp6 = macs + b"\x86\xdd" + bytes([0x60, 0, 0, 0, 0, 36, 112, 255]) + bytes(68)
            udp4 = macs + b"\x08\x00" + bytes([0x45, 0, 0, 56, 0, 0, 0, 0, 64, 17]) + bytes(46)
            arp = bytes(6 * [0xFF]) + macs[6:] + b"\x08\x06" + bytes(28)
            for frame in (udp4, carp4, arp, carp6):
                sender.send(frame)
            got: list[bytes] = []
            deadline = time.monotonic() + 5
            while len([f for f in got if frame_is_carp(f)]) < 2 and time.monotonic() < deadline:
                with contextlib.suppress(BlockingIOError):
                    got.append(listener.recv(2048))
                time.sleep(0.01)
            time.sleep(0.2)  # anything else the filter let through would be queued by now
            with contextlib.suppress(BlockingIOError):
                while True:
                    got.append(listener.recv(2048))
            assert [f for f in got if frame_is_carp(f)] == [carp4, carp6]
            assert udp4 not in got and arp not in got
            assert all(f[12:14] == b"\x86\xdd" for f in got if not frame_is_carp(f))
        finally:
            sender.close()
            listener.close()
