"""The benches' helpers that need no namespace: fuzz seeds and mutations (vswitch/lab/mutate.py),
the untag rule of the injector and the socket ports' peers (vswitch/lab/inject.py, against the
real ports), /proc sampling (vswitch/lab/procstat.py).
"""

import contextlib
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest

from carp import l2
from carp.auth import HmacContexts, carp_key
from carp.wire import CarpHeader, Verdict, parse_ip
from tests.vswitch.test_sockport import FakeIO
from vswitch.lab.inject import (
    StreamPeer,
    UdpSender,
    VdePeer,
    ctl_exchange,
    udp_socket,
    untag_discards,
)
from vswitch.lab.mutate import KINDS, VDE_GARBAGE, VNET_HDR, ZERO_HDR, Mutator, Seed, corpus
from vswitch.lab.procstat import ProcSampler, cpu_ticks, family, fd_count, rss_kib, run_ns
from vswitch.stream import MAX_FRAME, StreamPort
from vswitch.vde import VdePort, parse_request
from vswitch.vxlan import decapsulate

VIP, VIP6 = IPv4Address("192.0.2.1"), IPv6Address("2001:db8::1")
PEER_MAC = bytes.fromhex("020000000050")


def seeds() -> dict[str, bytes]:
    found = corpus(
        vip=VIP,
        vip6=VIP6,
        vhid=3,
        passphrase="secret",
        peer=IPv4Address("192.0.2.50"),
        peer6=IPv6Address("2001:db8::50"),
        peer_mac=PEER_MAC,
        advbase=0,
        advskew=40,
    )
    return {seed.name: seed.frame for seed in found}


def test_seed_adverts_pass_every_check_of_the_receiver() -> None:
    hmac = HmacContexts(carp_key("secret"), 3, [VIP], [VIP6])
    for name, ethertype in (("carp4", b"\x08\x00"), ("carp6", b"\x86\xdd")):
        frame = seeds()[name]
        assert frame[12:14] == ethertype
        parsed = parse_ip(frame[14:])
        assert parsed.verdict == Verdict.ACCEPT, name
        header = parsed.header
        assert isinstance(header, CarpHeader)
        assert (header.vhid, header.advbase, header.advskew) == (3, 0, 40)
        assert hmac.verify(header.counter, header.md)


def test_seed_arp_and_ns_parse_as_what_they_claim() -> None:
    s = seeds()
    request = l2.parse_arp(s["arp-request"])
    assert request is not None and (request.op, request.tpa) == (1, VIP.packed)
    gratuitous = l2.parse_arp(s["arp-gratuitous"])
    assert gratuitous is not None and gratuitous.gratuitous
    reply = l2.parse_arp(s["arp-reply"])
    assert reply is not None and (reply.op, reply.sha, reply.eth_dst[:5]) == (
        2,
        PEER_MAC,
        bytes.fromhex("00005e0001"),
    )
    for name in ("ns-group", "ns-unicast"):
        ns = l2.parse_ns(s[name])
        assert ns is not None and ns.target == VIP6.packed and ns.slla == PEER_MAC, name


def test_mutations_are_reproducible_and_bounded() -> None:
    made = [Mutator(random.Random(7), _corpus(), max_len=3000) for _ in range(2)]
    first = [made[0].next() for _ in range(3000)]
    assert first == [made[1].next() for _ in range(3000)]
    assert set(made[0].kinds) == set(KINDS)
    assert all(len(header) == VNET_HDR.size for header, _ in first)
    assert max(len(frame) for _, frame in first) <= 3000 + 8  # an over-long frame, tagged
    zero = sum(1 for header, _ in first if header == ZERO_HDR)
    assert 0.6 < zero / len(first) < 0.9  # a quarter asks for offload, at random
    seed_frames = set(seeds().values())
    assert sum(1 for _, frame in first if frame not in seed_frames) > 2500  # most are broken


def _corpus() -> list[Seed]:
    return corpus(
        vip=VIP,
        vip6=VIP6,
        vhid=1,
        passphrase="secret",
        peer=IPv4Address("192.0.2.50"),
        peer6=IPv6Address("2001:db8::50"),
        peer_mac=PEER_MAC,
    )


def test_untag_discards_only_vlan_frames_too_short_to_untag() -> None:
    head = bytes(12)
    assert untag_discards(head + b"\x81\x00" + bytes(5))
    assert untag_discards(head + b"\x88\xa8")
    assert not untag_discards(head + b"\x81\x00" + bytes(6))  # tag and inner type: untagged
    assert not untag_discards(head + b"\x08\x00")


def test_proc_sampling_of_this_process_and_of_none() -> None:
    assert (rss_kib(os.getpid()) or 0) > 0
    assert (fd_count(os.getpid()) or 0) > 0
    assert rss_kib(2**22 + 1) is None and fd_count(2**22 + 1) is None  # above pid_max
    with ProcSampler({"me": os.getpid()}, 0.01) as sampler:
        first = sampler.series("me")
    assert len(first) >= 1 and first[0].rss_kib is not None and first[0].fds is not None


def test_vxlan_faults_are_refused_for_the_reason_they_were_made_for() -> None:
    """The bench's expectations (by construction, RFC 7348 5) agree with the port's parser."""
    mutator = Mutator(random.Random(3), _corpus())
    reasons: Counter[str] = Counter()
    for _ in range(4000):
        datagram, reason = mutator.vxlan(42, mutator.frame())
        parsed = decapsulate(datagram, 42)
        assert (parsed if isinstance(parsed, str) else "") == reason, datagram[:8].hex()
        reasons[reason] += 1
    assert set(reasons) == {"", "short", "bad_flags", "bad_vni"}
    assert reasons[""] > 2000  # most frames get through to the switch
    assert {"vxlan-reserved", "vxlan-short"} <= set(mutator.kinds)


def test_vde_garbage_is_refused_for_the_reason_it_was_made_for() -> None:
    mutator = Mutator(random.Random(5), _corpus())
    made = set()
    for _ in range(600):
        garbage, reason = mutator.vde_request("/run/x/.client")
        parsed = parse_request(garbage)
        if reason == "foreign_socket":  # well formed: the socket it names is not there
            assert isinstance(parsed, tuple) and not os.path.exists(parsed[0])
        else:
            assert parsed == reason, garbage[:16].hex()
        made.add(reason)
    assert made == {*VDE_GARBAGE} - {"foreign"} | {"foreign_socket"}
    assert mutator.vde_request("/run/x/.c", "bad_type")[1] == "bad_type"  # asked for
    with pytest.raises(ValueError, match="kind must be one of"):
        mutator.vde_request("/run/x/.c", "bad_luck")


def test_a_stream_peer_frames_drains_and_sees_the_port_close(tmp_path: Path) -> None:
    port = StreamPort("vm", str(tmp_path / "vm.sock"))
    port.io = FakeIO()
    peer = StreamPeer(port.path)
    port.read_batch(port.fds[0])  # accepted
    frames = [b"", bytes(14), bytes(range(200))]
    peer.send(StreamPeer.framed(frames))
    assert peer.unread() > 0
    assert port.read_batch(port.fds[1]) == frames
    assert peer.caught_up(time.monotonic() + 5) and peer.unread() == 0
    port.write_batch([bytes(60), bytes(61)])
    peer.drain()
    assert (peer.received, peer.bad_lengths) == (2, 0)
    with serving(port, lambda: not port.link_up):  # the node reads our EOF, closes its end
        assert peer.hang_up(time.monotonic() + 5)
    assert port.refused == {}
    peer.close()
    peer = StreamPeer(port.path)
    port.read_batch(port.fds[0])  # the next peer is taken
    with serving(port, lambda: "busy" in port.refused):
        assert ctl_exchange(port.path, b"\x00\x00", time.monotonic() + 5)  # a second: closed
    assert port.refused == {"busy": 1} and port.link_up
    peer.close()
    port.close()


@contextlib.contextmanager
def serving(port: StreamPort | VdePort, done: Callable[[], bool]) -> Iterator[None]:
    """The port handles its fds in a thread (as the node's loop would) until `done`."""

    def serve() -> None:
        deadline = time.monotonic() + 5
        while not done() and time.monotonic() < deadline:
            for fd in port.fds:
                port.read_batch(fd)
            time.sleep(0.001)

    server = threading.Thread(target=serve)
    server.start()
    try:
        yield
    finally:
        server.join()
    assert done()


def test_a_vde_peer_does_the_handshake_and_sends_datagrams(tmp_path: Path) -> None:
    port = VdePort("vd", str(tmp_path / "vd.vde"))
    io = FakeIO()
    port.io = io

    with serving(port, lambda: bool(io.children)):
        peer = VdePeer(port.path, "t")
    child = io.children["1"]
    peer.send(b"")
    peer.send(bytes(64))
    assert peer.unread() > 0
    assert child.read_batch(child.fds[0]) == [b"", bytes(64)]
    assert peer.caught_up(time.monotonic() + 5)
    child.write_batch([bytes(60)])
    peer.drain()
    assert peer.received == 1 and not os.path.exists(peer.path)  # unlinked once connected
    peer.close()
    port.close()


def test_udp_sender_and_the_socket_seen_in_proc() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as node:
        node.bind(("127.0.0.1", 0))
        where = node.getsockname()
        sender = UdpSender(None, "127.0.0.2", where)
        assert sender.send(b"x" * 100) and sender.send(b"")
        sender.close()
        found = udp_socket(os.getpid(), "127.0.0.1", where[1])
        assert found is not None and found[0] > 0 and found[1] == 0  # waiting, none dropped
        node.recv(200)
        node.recv(200)
        assert udp_socket(os.getpid(), "127.0.0.1", where[1]) == (0, 0)
    assert udp_socket(os.getpid(), "127.0.0.1", where[1]) is None
    assert MAX_FRAME == 65535  # the stream peer's check of the node's output uses it


def test_cpu_time_of_a_process_and_its_children_is_read() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        mine = family(os.getpid())
        assert mine[0] == os.getpid() and child.pid in mine
        assert family(child.pid) == [child.pid]
        ticks, ns = cpu_ticks([os.getpid()]), run_ns([os.getpid()])
        end = time.process_time() + 0.05
        while time.process_time() < end:  # spend CPU
            pass
        assert run_ns([os.getpid()]) > ns
        assert sum(cpu_ticks([os.getpid()])) >= sum(ticks)
        gone = 2**22 + 1  # above pid_max: no such process
        assert cpu_ticks([gone]) == (0, 0) and run_ns([gone]) == 0
    finally:
        child.kill()
        child.wait()
