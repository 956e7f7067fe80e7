"""The lab builder creates namespaces, veths, bridges, addresses, routes and processes, and
removes all of it: on close, on exceptions, on SIGTERM and at interpreter exit."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from vswitch import netlink
from vswitch.lab.netns import Lab, LabError, leftovers, netns_exists

pytestmark = pytest.mark.netns

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def left(prefix: str) -> list[str]:
    return [name for names in leftovers(prefix).values() for name in names]


def test_creates_and_removes_everything() -> None:
    with Lab() as lab:
        a = lab.netns("a")
        b = lab.netns("b", forwarding=True)
        c = lab.netns("c")
        lab.veth("ab", "ba", a_netns=a, b_netns=b)
        root_end, _ = lab.veth(lab.name("r0"), "r1", a_netns=None, b_netns=c)
        lab.veth("c1", "c2", a_netns=c, b_netns=c)
        lab.bridge("br0", c, ["c1", "r1"])
        lab.addr(a, "ab", "192.0.2.1/24")
        lab.addr(a, "ab", "2001:db8::1/64")
        lab.addr(b, "ba", "192.0.2.2/24")
        lab.addr(b, "ba", "2001:db8::2/64", noprefixroute=True)
        lab.link(b, "ba", mtu=1400)
        lab.route(b, "2001:db8::/64", dev="ba")
        lab.route(a, "198.51.100.0/24", via="192.0.2.2")
        sleeper = lab.spawn(c, ["sleep", "60"])

        assert lab.ping(a, "192.0.2.2", deadline=10)
        assert lab.ping(b, "2001:db8::1", deadline=10)
        assert netlink.get_sysctl("net.ipv4.ip_forward", netns=b) == "1"
        assert netlink.get_sysctl("net.ipv4.ip_forward", netns=a) == "0"
        assert netlink.get_sysctl("net.bridge.bridge-nf-call-iptables", netns=c) == "0"
        routes = lab.run(a, ["ip", "route", "show", "198.51.100.0/24"]).stdout
        assert "via 192.0.2.2" in routes
        assert "mtu 1400" in lab.run(b, ["ip", "link", "show", "ba"]).stdout
        assert "master br0" in lab.run(c, ["ip", "link", "show", "r1"]).stdout
        assert netlink.link_index(root_end) is not None
        assert sorted(lab.namespaces) == sorted([a, b, c])
        assert lab.root_links == [root_end]
        assert sleeper.poll() is None
        prefix = lab.prefix
        found = leftovers(prefix)  # while the lab stands, it finds all of it
        assert found["namespaces"] == sorted([a, b, c])
        assert found["links"] == [root_end]
        assert [p.split()[0] for p in found["processes"]] == [str(sleeper.pid)]
    assert sleeper.poll() is not None
    assert lab.teardown_errors == []
    assert left(prefix) == []
    with pytest.raises(LabError):
        lab.netns("late")


def test_removes_everything_on_an_exception() -> None:
    with pytest.raises(RuntimeError), Lab() as lab:
        lab.netns("x")
        lab.veth(lab.name("x0"), "x1", b_netns=f"{lab.prefix}-x")
        raise RuntimeError("boom")
    assert left(lab.prefix) == []


def test_refuses_what_it_did_not_create() -> None:
    with Lab() as lab:
        ns = lab.netns("n")
        with pytest.raises(LabError):
            lab.veth("eth9", "p9", b_netns=ns)  # a host-side name without the prefix
        lab.veth(lab.name("d0"), "d1", b_netns=ns)
        with pytest.raises(LabError):
            lab.veth(lab.name("d0"), "d2", b_netns=ns)  # exists already
        with pytest.raises(LabError):
            lab.addr("somebody-else", "lo", "192.0.2.9/32")
        with pytest.raises(LabError):
            lab.link(None, "lo", up=True)  # the host's own, not the lab's
        lab.link(None, lab.name("d0"), up=False)
        with pytest.raises(LabError):
            lab.netns("n")
        with pytest.raises(ValueError):
            lab.name("much-too-long-name")
    assert left(lab.prefix) == []


def test_ping_gives_up_at_the_deadline() -> None:
    with Lab() as lab:
        ns = lab.netns("p")
        start = time.monotonic()
        assert not lab.ping(ns, "203.0.113.99", deadline=0.5, wait=0.2)
        assert time.monotonic() - start < 10


def test_stop_kills_by_pid() -> None:
    with Lab() as lab:
        ns = lab.netns("s")
        proc = lab.spawn(ns, ["sh", "-c", "trap '' TERM; sleep 60"])
        assert lab.run(ns, ["true"]).returncode == 0
        time.sleep(0.2)  # let sh install its trap, so that the SIGKILL path is taken
        assert lab.stop(proc, timeout=0.5) == -signal.SIGKILL
        assert lab.processes == []


SCRIPT = textwrap.dedent(
    """
    import signal, sys
    from vswitch.lab.netns import Lab
    lab = Lab(sys.argv[1])
    ns = lab.netns("t")
    lab.veth(lab.name("t0"), "t1", b_netns=ns)
    lab.spawn(ns, ["sleep", "60"])
    print("ready", flush=True)
    if sys.argv[2] == "wait":
        signal.pause()
    """
)


@pytest.mark.parametrize("how", ["sigterm", "atexit"])
def test_removes_everything_when_the_process_ends(how: str) -> None:
    prefix = "vt" + os.urandom(2).hex()
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, prefix, "wait" if how == "sigterm" else "exit"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        assert netns_exists(f"{prefix}-t")
        if how == "sigterm":
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == (143 if how == "sigterm" else 0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert left(prefix) == []
