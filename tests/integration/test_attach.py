"""What labs are made of, attached to a real node (vswitch/lab/attach.py): QEMU over a stream
port and over a vde port, vde_plug2tap beside it, a Linux vxlan host across an underlay,
processes in namespaces of their own added at run time by pid and by path, and bad input on
each kind of socket, refused and counted while the rest goes on."""

import socket
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vswitch.lab.attach import UNDERLAY_GW, VIP, VNI, AttachLab, missing_tools
from vswitch.lab.netns import leftovers

pytestmark = pytest.mark.netns


@pytest.fixture(scope="module")
def lab() -> Iterator[AttachLab]:
    missing = missing_tools()
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (Debian: qemu-system-x86, vde2, util-linux)")
    with AttachLab() as built:
        built.start()
        yield built
    assert built.lab.teardown_errors == []
    left = leftovers(built.lab.prefix)
    assert left["namespaces"] == [] and left["links"] == []


def pings(lab: AttachLab, pid: int, dst: str, deadline: float = 15.0) -> bool:
    """One echo answered from inside process `pid`'s namespace, within `deadline`."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if lab.inside(pid, ["ping", "-n", "-q", "-c", "1", "-W", "1", dst]) == 0:
            return True
    return False


def test_qemu_over_a_stream_port_reaches_the_vip(lab: AttachLab) -> None:
    ns = lab.qemu("qs", "stream", "192.0.2.101")
    lab.wait_for(lambda: lab.ports()["vm1"]["link"], 10)
    assert lab.lab.ping(ns, VIP, deadline=15)
    port = lab.ports()["vm1"]
    assert port["type"] == "stream" and port["rx_packets"] > 0 and port["tx_packets"] > 0


def test_qemu_and_vde_plug2tap_on_one_vde_port(lab: AttachLab) -> None:
    qemu = lab.qemu("qv", "vde", "192.0.2.102")
    plug = lab.vde_plug2tap("pt", "192.0.2.103")
    lab.wait_for(lambda: {"lab/1", "lab/2"} <= set(lab.ports()), 10)
    assert lab.lab.ping(qemu, VIP, deadline=15)
    assert lab.lab.ping(plug, VIP, deadline=15)
    assert lab.lab.ping(qemu, "192.0.2.103", deadline=15)  # the two clients reach each other
    ports = lab.ports()
    assert ports["lab/1"]["type"] == "vde" and ports["lab/1"]["rx_packets"] > 0
    assert ports["lab/2"]["rx_packets"] > 0 and ports["lab"]["link"]


def test_a_linux_vxlan_host_reaches_the_vip(lab: AttachLab) -> None:
    assert lab.lab.ping(lab.far, VIP, deadline=15)
    port = lab.ports()["far"]
    assert port["type"] == "vxlan" and port["rx_packets"] > 0 and port["tx_packets"] > 0


def test_processes_attached_by_pid_and_by_path_and_taken_away(lab: AttachLab) -> None:
    first, second = lab.isolated(), lab.isolated()
    for name, netns, address, proc in (
        ("u1", f"pid:{first.pid}", "192.0.2.105", first),
        ("u2", f"/proc/{second.pid}/ns/net", "192.0.2.106", second),
    ):
        added = lab.vswitch(
            "port", "add", "-s", lab.socket, "lan0", name, "type=tap", f"netns={netns}"
        )
        assert added.returncode == 0, added.stderr
        assert added.stdout == f"switch lan0: port {name} added\n"
        assert lab.inside(proc.pid, ["ip", "addr", "add", f"{address}/24", "dev", name]) == 0
        assert lab.inside(proc.pid, ["ip", "link", "set", name, "up"]) == 0
        assert pings(lab, proc.pid, VIP), name
    assert pings(lab, first.pid, "192.0.2.106")  # one container to the other, through the switch
    gone = lab.vswitch("port", "del", "-s", lab.socket, "lan0", "u1")
    assert gone.returncode == 0 and gone.stdout == "switch lan0: port u1 removed\n"
    assert lab.inside(first.pid, ["ip", "link", "show", "u1"]) != 0  # the TAP went with it
    assert "u1" not in lab.ports() and lab.ports()["u2"]["link"]
    assert lab.state() == "MASTER"  # port changes never touch carp
    missing = lab.vswitch(
        "port", "add", "-s", lab.socket, "lan0", "u3", "type=tap", "netns=pid:4194304"
    )
    assert missing.returncode == 2 and "port u3.netns: pid:4194304: no process" in missing.stderr


def test_bad_input_is_refused_counted_and_disturbs_nothing(lab: AttachLab) -> None:
    # a stream path that is a file: the port is refused with an error naming it
    path = Path(lab.dir) / "not-a-socket"
    path.write_text("keep me")
    bad = lab.vswitch("port", "add", "-s", lab.socket, "lan0", "vm8", "type=stream", f"path={path}")
    assert bad.returncode == 2 and f"{path} exists and is not a socket" in bad.stderr
    assert path.read_text() == "keep me" and "vm8" not in lab.ports()
    # a second peer and an oversize length on a stream port added for it
    sock = str(Path(lab.dir) / "vm9.sock")
    assert (
        lab.vswitch(
            "port", "add", "-s", lab.socket, "lan0", "vm9", "type=stream", f"path={sock}"
        ).returncode
        == 0
    )
    peer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    peer.connect(sock)
    lab.wait_for(lambda: lab.ports()["vm9"]["link"], 10)
    second = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    second.connect(sock)
    second.settimeout(10)
    assert second.recv(10) == b""
    peer.sendall(struct.pack("!I", 0xFFFFFFFF) + b"x" * 64)
    lab.wait_for(lambda: not lab.ports()["vm9"]["link"], 10)
    vm9 = lab.ports()["vm9"]
    assert vm9["refused"] == {"busy": 1, "oversize_length": 1} and vm9["drops"]["oversize"] == 1
    peer.close()
    second.close()
    # garbage on vde's ctl
    ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ctl.connect(str(Path(lab.vde_dir) / "ctl"))
    ctl.sendall(b"GARBAGE")
    ctl.settimeout(10)
    assert ctl.recv(200) == b""
    ctl.close()
    assert lab.ports()["lab"]["refused"].get("short_request") == 1
    # a datagram for another VNI from the vxlan host
    frame = b"\xff" * 6 + b"\x02" + b"\x00" * 5 + b"\x08\x06" + b"\x00" * 28
    datagram = struct.pack("!B3xI", 0x08, (VNI + 1) << 8) + frame
    send = f"import socket; socket.socket(2, 2).sendto({datagram!r}, ({UNDERLAY_GW!r}, 4789))"
    lab.lab.run(lab.far, [sys.executable, "-c", send])
    lab.wait_for(lambda: lab.ports()["far"]["refused"].get("bad_vni") == 1, 10)
    assert lab.ports()["far"]["drops"]["malformed"] >= 1
    # and everything else goes on
    assert lab.lab.ping(lab.far, VIP, deadline=15)
    assert lab.state() == "MASTER"
    status = lab.vswitch("status", "-s", lab.socket)
    assert status.returncode == 0, status.stderr
