"""The data plane with real TAPs, veths and namespaces, in-process on uvloop (no threads).

Every test builds its own lab (unique prefix, removed afterwards) and closes the data plane
before the lab. Clients are namespaces on TAP ports; raw ports sit on the host end of a veth
whose peer is in a client namespace. Ports are opened as the node opens them (LinuxSystem: the
PORT_OPENERS of a port model, `open_tap` for the node's own kernel TAPs) and attached with
`add_port`. Traffic is ping, bounded iperf3 transfers, and frames sent and sniffed with
AF_PACKET sockets inside the client namespaces.
"""

import asyncio
import errno
import json
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import uvloop

from vswitch import netlink
from vswitch.config import RawPortConfig, TapPortConfig
from vswitch.dataplane import DataPlane
from vswitch.lab.netns import Lab
from vswitch.port import DevicePort
from vswitch.raw import RawPort
from vswitch.system import LinuxSystem
from vswitch.tap import TapPort

pytestmark = pytest.mark.netns

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
BCAST = b"\xff" * 6
IP_A, IP_B, IP_C = "192.0.2.1", "192.0.2.2", "192.0.2.3"
SYSTEM = LinuxSystem()


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab() as lab:
        yield lab
    assert lab.teardown_errors == []


def run(lab: Lab, scenario: Callable[[DataPlane], Awaitable[None]]) -> None:
    async def main() -> None:
        with DataPlane() as dp:
            await scenario(dp)

    uvloop.run(main())


async def until(cond: Callable[[], bool], deadline: float = 10.0) -> None:
    end = time.monotonic() + deadline
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.01)


class Sniffer:
    """An AF_PACKET socket on an interface inside a namespace: sends frames, collects arrivals."""

    def __init__(self, netns: str | None, ifname: str) -> None:
        with netlink.in_netns(netns):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        self.sock.bind((ifname, ETH_P_ALL))
        self.sock.setblocking(False)
        self.got: list[bytes] = []

    def send(self, frame: bytes) -> None:
        self.sock.send(frame)

    def incoming(self) -> list[bytes]:
        while True:
            try:
                data, addr = self.sock.recvfrom(65600)
            except BlockingIOError:
                return self.got
            if addr[2] != PACKET_OUTGOING:
                self.got.append(data)

    def close(self) -> None:
        self.sock.close()


def icmp(frames: list[bytes], src: str, dst: str) -> int:
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    return sum(
        1
        for f in frames
        if f[12:14] == b"\x08\x00" and f[23] == 1 and f[26:30] == s and f[30:34] == d
    )


def mac_of(lab: Lab, netns: str, ifname: str) -> bytes:
    out = lab.run(netns, ["cat", f"/sys/class/net/{ifname}/address"]).stdout.strip()
    return bytes.fromhex(out.replace(":", ""))


def client(dp: DataPlane, lab: Lab, port: str, ip: str, ip6: str, queues: int = 1) -> str:
    """A client namespace on a TAP port `port` that the switch creates and moves there."""
    ns = lab.netns(port)
    ifname = lab.name("t" + port)
    vnet_hdr = dp.switch("lan0").vnet_hdr
    dev: DevicePort
    if queues == 1:  # as the node opens a `type = "tap"` port
        config = TapPortConfig(name=port, type="tap", ifname=ifname, netns=ns)
        dev = SYSTEM.open_port(config, vnet_hdr=vnet_hdr)
    else:  # the node file has no multiqueue TAPs
        dev = TapPort(ifname, vnet_hdr=vnet_hdr, netns=ns, queues=queues)
    dp.add_port("lan0", port, dev)
    for cidr in (f"{ip}/24", f"{ip6}/64"):
        lab.addr(ns, ifname, cidr)
    return ns


def raw_port(dp: DataPlane, name: str, ifname: str) -> DevicePort:
    """A `type = "raw"` port on the existing interface `ifname`, opened as the node opens it."""
    config = RawPortConfig(name=name, type="raw", ifname=ifname)
    return dp.add_port("lan0", name, SYSTEM.open_port(config, vnet_hdr=dp.switch("lan0").vnet_hdr))


async def iperf(lab: Lab, server_ns: str, client_ns: str, dst: str, *args: str) -> dict[str, Any]:
    """A bounded iperf3 transfer of 20 MiB; returns the client's JSON result."""
    server = lab.spawn(server_ns, ["iperf3", "-s", "-1", "-B", dst], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):  # the server needs a moment to listen
            rc, out, _ = await lab.arun(
                client_ns, ["iperf3", "-c", dst, "-n", "20M", "-J", *args], timeout=60
            )
            result: dict[str, Any] = json.loads(out) if out.strip() else {}
            if rc == 0 or "Connection refused" not in str(result.get("error", "")):
                assert rc == 0, result.get("error")
                return result
            await asyncio.sleep(0.05)
        raise AssertionError("iperf3 server never listened")
    finally:
        lab.stop(server)


@pytest.mark.parametrize("offload", [True, False], ids=["offload", "plain"])
def test_two_taps_ping_and_tcp(lab: Lab, offload: bool) -> None:
    async def scenario(dp: DataPlane) -> None:
        dp.add_switch("lan0", offload=offload)
        a = client(dp, lab, "a", IP_A, "2001:db8::1")
        b = client(dp, lab, "b", IP_B, "2001:db8::2")
        assert await lab.aping(a, IP_B)
        assert await lab.aping(b, "2001:db8::1")
        rc, out, _ = await lab.arun(a, ["ping", "-c", "20", "-i", "0.01", "-q", IP_B])
        assert rc == 0 and " 0% packet loss" in out
        result = await iperf(lab, b, a, IP_B)
        assert result["end"]["sum_sent"]["bytes"] >= 20 << 20  # TCP: all of it arrived
        counts = dp.counters()["lan0"]
        assert counts["offload"] is offload
        tx = counts["ports"]["b"]
        per_frame = tx["tx_bytes"] / tx["tx_packets"]
        # with offload the TCP data crosses as GSO frames far larger than the MTU
        assert (per_frame > 3000) if offload else (per_frame <= 1514)
        assert [tx["drops"][r] for r in ("tx_full", "no_link", "tx_error")] == [0, 0, 0]

    run(lab, scenario)


@pytest.mark.parametrize("hub", [False, True], ids=["learning", "hub"])
def test_third_port_sees_unicast_only_in_hub_mode(lab: Lab, hub: bool) -> None:
    async def scenario(dp: DataPlane) -> None:
        dp.add_switch("lan0", hub=hub)
        a = client(dp, lab, "a", IP_A, "2001:db8::1")
        client(dp, lab, "b", IP_B, "2001:db8::2")
        c = client(dp, lab, "c", IP_C, "2001:db8::3")
        sniff = Sniffer(c, lab.name("tc"))
        try:
            rc, _, _ = await lab.arun(a, ["ping", "-c", "5", "-i", "0.02", "-q", IP_B])
            assert rc == 0
            # a broadcast marker after the pings: once c has it, c has everything before it
            marker = BCAST + mac_of(lab, a, lab.name("ta")) + b"\x88\xb5" + b"marker"
            at_a = Sniffer(a, lab.name("ta"))
            at_a.send(marker)
            at_a.close()
            await until(lambda: any(f.startswith(marker) for f in sniff.incoming()))
            seen = icmp(sniff.got, IP_A, IP_B) + icmp(sniff.got, IP_B, IP_A)
            assert seen == (10 if hub else 0)
        finally:
            sniff.close()

    run(lab, scenario)


@pytest.mark.parametrize(
    ("offload", "ignore_outgoing"), [(True, True), (False, False)], ids=["offload", "plain"]
)
def test_raw_port_on_a_veth(lab: Lab, offload: bool, ignore_outgoing: bool) -> None:
    async def scenario(dp: DataPlane) -> None:
        dp.add_switch("lan0", offload=offload)
        t = client(dp, lab, "t", IP_A, "2001:db8::1")
        r = lab.netns("r")
        host_end, _ = lab.veth(lab.name("r0"), "eth0", b_netns=r)
        lab.addr(r, "eth0", f"{IP_B}/24")
        lab.addr(r, "eth0", "2001:db8::2/64")
        vnet_hdr = dp.switch("lan0").vnet_hdr
        if ignore_outgoing:
            port = raw_port(dp, "up0", host_end)
        else:  # a kernel without PACKET_IGNORE_OUTGOING: the port skips them itself
            port = dp.add_port(
                "lan0", "up0", RawPort(host_end, vnet_hdr=vnet_hdr, ignore_outgoing=False)
            )
        assert isinstance(port, RawPort) and port.kernel_skips_outgoing is ignore_outgoing
        assert await lab.aping(r, IP_A)
        assert await lab.aping(r, "2001:db8::1")
        n = 50
        rc, out, _ = await lab.arun(r, ["ping", "-c", str(n), "-i", "0.005", IP_A])
        assert rc == 0 and "DUP" not in out
        up0 = dp.counters()["lan0"]["ports"]["up0"]
        # what the switch sent out of the veth must not come back in (PACKET_OUTGOING)
        assert up0["rx_packets"] < n + 30 < up0["tx_packets"] + 30
        # nor what anybody else sends out of it (here: another packet socket on the host end)
        at_host, at_r, at_t = (
            Sniffer(None, host_end),
            Sniffer(r, "eth0"),
            Sniffer(t, lab.name("tt")),
        )
        try:
            at_host.send(BCAST + bytes.fromhex("020000000077") + b"\x88\xb5outgoing")
            at_r.send(BCAST + bytes.fromhex("020000000078") + b"\x88\xb5incoming")
            await until(lambda: any(f.endswith(b"incoming") for f in at_t.incoming()))
            assert not any(f.endswith(b"outgoing") for f in at_t.got)
            assert any(f.endswith(b"outgoing") for f in at_r.incoming())  # it did go out
        finally:
            for s in (at_host, at_r, at_t):
                s.close()

        # UDP from the veth peer carries a partial checksum (veth offload): the receiver
        # only accepts it if the switch passed the offload on or completed the checksum
        recv = lab.spawn(t, [sys.executable, "-c", UDP_RECEIVER, IP_A, "20"], stdout=-1)
        await until(lambda: ":7000 " in lab.run(t, ["ss", "-uln"]).stdout)
        rc, _, err = await lab.arun(r, [sys.executable, "-c", UDP_SENDER, IP_A, "20"])
        assert rc == 0, err
        await until(lambda: recv.poll() is not None, deadline=15)
        assert recv.stdout is not None and recv.stdout.read().decode().strip() == "20"
        completed = port.dev.rx_csum_completed
        assert (completed == 0) if offload else (completed >= 20)
        if offload:  # GSO frames in both directions through the raw port
            await iperf(lab, t, r, IP_A)
            await iperf(lab, t, r, IP_A, "-R")

    run(lab, scenario)


UDP_RECEIVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 7000))
s.settimeout(10)
n = 0
try:
    while n < int(sys.argv[2]):
        if s.recv(2048) == b"x" * 1000:
            n += 1
except TimeoutError:
    pass
print(n)
"""

UDP_SENDER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(int(sys.argv[2])):
    s.sendto(b"x" * 1000, (sys.argv[1], 7000))
    time.sleep(0.01)
"""


def test_raw_link_follows_the_veth_peer(lab: Lab) -> None:
    async def scenario(dp: DataPlane) -> None:
        dp.add_switch("lan0")
        client(dp, lab, "t", IP_A, "2001:db8::1")
        r = lab.netns("r")
        host_end, _ = lab.veth(lab.name("r0"), "eth0", b_netns=r)
        lab.addr(r, "eth0", f"{IP_B}/24")
        events: list[tuple[str, str, bool]] = []
        dp.on_link = lambda sw, port, up: events.append((sw, port, up))
        port = raw_port(dp, "up0", host_end)
        assert port.link_up and events == []
        assert await lab.aping(r, IP_A)
        # link flaps, of the peer (carrier) and of the port's own interface (admin down: the
        # socket gets ENETDOWN): reported, and traffic flows again afterwards
        for ns, ifname in ((r, "eth0"), (None, host_end), (r, "eth0"), (None, host_end)):
            lab.link(ns, ifname, up=False)
            await until(lambda: events[-1:] == [("lan0", "up0", False)])
            assert not dp.switch("lan0").ports["up0"].link_up
            lab.link(ns, ifname, up=True)
            await until(lambda: events[-1:] == [("lan0", "up0", True)])
            assert dp.switch("lan0").ports["up0"].link_up
            assert await lab.aping(r, IP_A)
        assert len(events) == 8

    run(lab, scenario)


def test_a_down_tap_costs_a_drop_not_the_switch(lab: Lab) -> None:
    async def scenario(dp: DataPlane) -> None:
        dp.add_switch("lan0")
        a = client(dp, lab, "a", IP_A, "2001:db8::1")
        client(dp, lab, "b", IP_B, "2001:db8::2")
        c = client(dp, lab, "c", IP_C, "2001:db8::3")
        events: list[tuple[str, str, bool]] = []
        dp.on_link = lambda sw, port, up: events.append((sw, port, up))
        lab.link(c, lab.name("tc"), up=False)
        # the link event is not read yet (the loop has not run): this write meets EIO
        dp.send("lan0", BCAST + bytes.fromhex("020000000099") + b"\x88\xb5probe", port="c")
        pc = dp.counters()["lan0"]["ports"]["c"]
        assert [pc["drops"][r] for r in ("tx_full", "no_link", "tx_error")] == [0, 1, 0]
        assert dp.device("lan0", "c").dev.tx_errors == {errno.EIO: 1}
        await until(lambda: events == [("lan0", "c", False)])
        assert await lab.aping(a, IP_B)
        lab.link(c, lab.name("tc"), up=True)
        await until(lambda: events[-1:] == [("lan0", "c", True)])
        assert await lab.aping(a, IP_C)
        assert c in dp.monitored_namespaces
        dp.remove_port("lan0", "c")  # the last port there: its monitor no longer pins c
        assert c not in dp.monitored_namespaces and a in dp.monitored_namespaces
        assert lab.name("tc") not in netlink.link_names(c)

    run(lab, scenario)


def test_learned_macs_age_out(lab: Lab) -> None:
    async def scenario(dp: DataPlane) -> None:
        sw = dp.add_switch("lan0", ageing=1.0)
        a = client(dp, lab, "a", IP_A, "2001:db8::1")
        b = client(dp, lab, "b", IP_B, "2001:db8::2")
        c = client(dp, lab, "c", IP_C, "2001:db8::3")
        # a made-up station behind b: only these frames ever carry its MAC
        station, src = bytes.fromhex("02000000beef"), bytes.fromhex("02000000aaaa")
        at_a, at_b, at_c = (
            Sniffer(ns, lab.name("t" + p)) for ns, p in ((a, "a"), (b, "b"), (c, "c"))
        )
        try:
            at_b.send(BCAST + station + b"\x88\xb5hello")
            await until(lambda: sw.lookup(station) == "b")
            at_a.send(station + src + b"\x88\xb5first")
            await until(lambda: any(f.endswith(b"first") for f in at_b.incoming()))
            at_a.send(BCAST + src + b"\x88\xb5marker1")
            await until(lambda: any(f.endswith(b"marker1") for f in at_c.incoming()))
            assert not any(f.endswith(b"first") for f in at_c.got)

            def aged() -> bool:
                sw.expire(dp.clock())
                return sw.lookup(station) is None

            await until(aged, deadline=5.0)
            at_a.send(station + src + b"\x88\xb5second")
            await until(lambda: any(f.endswith(b"second") for f in at_c.incoming()))
        finally:
            for s in (at_a, at_b, at_c):
                s.close()

    run(lab, scenario)


def test_multiqueue_tap(lab: Lab) -> None:
    async def scenario(dp: DataPlane) -> None:
        dp.add_switch("lan0")
        a = client(dp, lab, "a", IP_A, "2001:db8::1", queues=4)
        b = client(dp, lab, "b", IP_B, "2001:db8::2", queues=4)
        assert len(dp.device("lan0", "a").fds) == 4
        assert await lab.aping(a, IP_B)
        await iperf(lab, b, a, IP_B, "-P", "4")

    run(lab, scenario)


def test_kernel_port_with_egress_filter_and_hooks(lab: Lab) -> None:
    node = lab.netns("node")
    rewritten = bytes.fromhex("02000000c0de")

    async def scenario(dp: DataPlane) -> None:
        sw = dp.add_switch("lan0")
        # the node's own kernel TAPs, opened and set up as vswitch/build.py does
        host = SYSTEM.open_tap("lan0", vnet_hdr=sw.vnet_hdr, mac=bytes.fromhex("0200000000fe"))
        dp.add_port("lan0", "host", host, kernel=True, role="host")
        SYSTEM.add_address("lan0", "192.0.2.254/24")
        SYSTEM.set_link("lan0", True)
        vip = SYSTEM.open_tap("carp0", vnet_hdr=sw.vnet_hdr, mac=bytes.fromhex("00005e000101"))
        dp.add_port("lan0", "carp0", vip, kernel=True, flood=False, role="carp")
        for cidr in ("192.0.2.10/24", "2001:db8::10/64"):
            SYSTEM.add_address("carp0", cidr, noprefixroute=True)
        SYSTEM.set_link("carp0", True)
        a = client(dp, lab, "a", IP_A, "2001:db8::1")
        arp_requests: list[str] = []

        def egress(now: float, port: str, frame: bytes) -> bytes | None:
            if frame[12:14] == b"\x08\x00":  # IPv4 from the node's kernel: our source MAC
                return frame[:6] + rewritten + frame[12:]
            return frame

        def on_multicast(now: float, port: str, frame: bytes) -> list[tuple[str | None, bytes]]:
            if frame[12:14] == b"\x08\x06":
                arp_requests.append(port)
            return []

        sw.egress_filter = egress
        sw.on_multicast = on_multicast
        sniff = Sniffer(a, lab.name("ta"))
        try:
            assert await lab.aping(a, "192.0.2.254")
            await until(lambda: icmp(sniff.incoming(), "192.0.2.254", IP_A) >= 1)
            replies = [
                f
                for f in sniff.got
                if f[12:14] == b"\x08\x00" and f[26:30] == socket.inet_aton("192.0.2.254")
            ]
            assert replies and all(f[6:12] == rewritten for f in replies)
            assert "a" in arp_requests
            assert sw.lookup(rewritten) == "host"
            SYSTEM.set_carrier(host, False)
            assert "NO-CARRIER" in lab.run(None, ["ip", "link", "show", "lan0"]).stdout
            # the virtual addresses came without prefix routes; the carp TAP got no floods
            routes = lab.run(None, ["ip", "route", "show", "dev", "carp0"]).stdout
            assert routes.strip() == ""
            assert "noprefixroute" in lab.run(None, ["ip", "addr", "show", "carp0"]).stdout
            carp0 = next(p for p in dp.switch_status()[0]["ports"] if p["name"] == "carp0")
            assert carp0["type"] == "carp" and carp0["tx_packets"] == 0
            assert vip.link_up
        finally:
            sniff.close()

    # the data plane runs inside the node's namespace, where its kernel ports live
    with netlink.in_netns(node):
        run(lab, scenario)
