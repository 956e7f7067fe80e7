"""The failover probes' parsing and gap finding (vswitch/lab/probe.py) and the labs' preflight
(vswitch/lab/netns.py) as the demo calls it."""

from collections.abc import Callable

from vswitch.lab.demo import HINT
from vswitch.lab.netns import preflight
from vswitch.lab.probe import Reply, largest_gap, parse_ping, ping_summary

PING_OUTPUT = """\
PING 192.0.2.1 (192.0.2.1) 56(84) bytes of data.
[1700000000.100000] 64 bytes from 192.0.2.1: icmp_seq=1 ttl=64 time=0.4 ms
[1700000000.120000] 64 bytes from 192.0.2.1: icmp_seq=2 ttl=64 time=0.4 ms
[1700000000.140000] 64 bytes from 192.0.2.1: icmp_seq=3 ttl=64 time=0.5 ms
[1700000001.500000] From 192.0.2.101 icmp_seq=40 Destination Host Unreachable
[1700000003.900000] 64 bytes from 192.0.2.1: icmp_seq=191 ttl=64 time=0.6 ms
[1700000003.920000] 64 bytes from 192.0.2.1: icmp_seq=192 ttl=64 time=0.3 ms

--- 192.0.2.1 ping statistics ---
192 packets transmitted, 5 received, +1 errors, 97.3958% packet loss, time 3820ms
rtt min/avg/max/mdev = 0.300/0.440/0.600/0.101 ms
"""


def test_parse_ping_keeps_only_echo_replies() -> None:
    replies = parse_ping(PING_OUTPUT)
    assert [r.seq for r in replies] == [1, 2, 3, 191, 192]
    assert replies[3].at == 1700000003.9


def test_ping_summary() -> None:
    assert ping_summary(PING_OUTPUT) == (192, 5, 0.44)
    assert ping_summary("no summary") == (0, 0, None)
    lost = "3 packets transmitted, 0 received, 100% packet loss, time 2003ms\n"
    assert ping_summary(lost) == (3, 0, None)


def test_largest_gap_after_the_event() -> None:
    replies = parse_ping(PING_OUTPUT)
    gap = largest_gap(replies, since=1700000000.5)
    assert gap is not None
    assert round(gap.seconds, 6) == 3.76
    assert (gap.start, gap.end, gap.lost) == (1700000000.14, 1700000003.9, 187)


def test_largest_gap_ignores_silences_that_ended_before_the_event() -> None:
    replies = [Reply(10.0, 1), Reply(15.0, 2), Reply(15.1, 3), Reply(15.3, 4), Reply(15.4, 5)]
    gap = largest_gap(replies, since=15.05)
    assert gap is not None and round(gap.seconds, 6) == 0.2 and gap.lost == 0
    # a long silence that ended after the event counts even though it began before it
    assert largest_gap(replies, since=12.0) == largest_gap(replies, since=0.0)


def test_largest_gap_needs_a_reply_after_the_event() -> None:
    replies = [Reply(1.0, 1), Reply(1.1, 2)]
    assert largest_gap(replies, since=2.0) is None
    assert largest_gap([Reply(3.0, 1)], since=2.0) is None
    assert largest_gap([], since=0.0) is None


def demo_preflight(
    euid: Callable[[], int], which: Callable[[str], str | None], exists: Callable[[str], bool]
) -> str | None:
    return preflight("vswitch demo", hint=HINT, euid=euid, which=which, exists=exists)


def test_preflight_refuses_without_root() -> None:
    reason = demo_preflight(lambda: 1000, lambda t: "/usr/bin/" + t, lambda p: True)
    assert reason is not None and "vswitch demo needs root" in reason and "./dev.sh demo" in reason


def test_preflight_names_missing_tools_and_packages() -> None:
    reason = demo_preflight(lambda: 0, lambda t: None if t == "ping" else "/bin/ip", lambda p: True)
    assert reason is not None
    assert "ping" in reason and "iputils-ping" in reason and "iproute2" not in reason
    assert "./dev.sh demo" in reason
    reason = preflight("failover.py", ("ip", "ucarp", "frob"), euid=lambda: 0, which=lambda t: None)
    assert (
        reason == "failover.py needs ip, ucarp, frob (Debian: apt-get install iproute2 ucarp frob)"
    )


def test_preflight_needs_tun_and_passes_when_all_is_there() -> None:
    which = {"ip": "/bin/ip", "ping": "/bin/ping"}.get
    assert "/dev/net/tun" in (demo_preflight(lambda: 0, which, lambda p: False) or "")
    assert demo_preflight(lambda: 0, which, lambda p: p == "/dev/net/tun") is None
