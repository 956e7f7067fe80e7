"""The gateway pair end to end: election, the VIP from clients (IPv4, IPv6/NDP), routing through
it, failover on `kill -9` and on SIGTERM, preemption, group failover, and the wire format.

One lab (pair_specs, advbase 1) serves the whole module; the `pair` fixture brings it back to
the elected state before every test (both nodes running with preempt on, links up, gwa MASTER
and gwb BACKUP on carp0 and carp1), so each test starts from the same place whatever the one
before it did. Times are taken from the nodes' status ("since", on CLOCK_MONOTONIC like ours)
and from ping -D, and asserted only against generous functional bounds.
"""

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest

from carp.actions import Reason
from carp.l2 import parse_arp
from vswitch.lab.gateway import (
    LAN_VIP,
    LAN_VIP6,
    UPSTREAM,
    WAN_VIP,
    Gateway,
    GatewayLab,
    pair_specs,
)
from vswitch.lab.probe import PingProbe, largest_gap

pytestmark = pytest.mark.netns

CARP0_MAC = "00:00:5e:00:01:01"  # vhid 1, balancing none (§6.3)
CARP1_MAC = "00:00:5e:00:01:02"
ADVBASE = 1
BACKUP_SKEW = 100  # gwb in pair_specs
ELECTED = {
    "gwa": {("carp0", 1): "MASTER", ("carp1", 2): "MASTER"},
    "gwb": {("carp0", 1): "BACKUP", ("carp1", 2): "BACKUP"},
}
MARGIN = 1.0  # seconds of slack on a takeover time (the machine is small and shared)


def master_down(advbase: int, advskew: int) -> float:
    """carp(4): 3 * (advbase + advskew/256) seconds (design.md 1.2)."""
    return 3 * (advbase + advskew / 256)


# -- restoring the elected pair --------------------------------------------------------------


def elected(lab: GatewayLab) -> bool:
    return all(lab.states(gw) == ELECTED[gw.name] for gw in lab.gateways)


def restore(lab: GatewayLab) -> None:
    for gw in lab.gateways:
        for ifname in ("lan", "wan"):
            lab.lab.link(gw.netns, ifname, up=True)
        if not gw.spec.preempt:
            gw.spec.preempt = True
            lab.write_config(gw)
        if gw.proc is not None and gw.proc.poll() is not None:
            lab.lab.stop(gw.proc)  # died in a failed test: forget it
            gw.proc = None
    for gw in lab.gateways:  # gwa first: it is the one preferred
        if gw.proc is None:
            lab.start(gw)
        elif sysctl(lab, gw, "preempt") != 1:
            sysctl(lab, gw, "preempt", 1)
    lab.wait_for(lambda: elected(lab), 20)


@pytest.fixture(scope="module")
def shared_lab() -> Iterator[GatewayLab]:
    with GatewayLab(pair_specs(advbase=ADVBASE), clients=2) as lab:
        yield lab
    assert lab.lab.teardown_errors == []


@pytest.fixture
def pair(shared_lab: GatewayLab) -> tuple[GatewayLab, Gateway, Gateway]:
    restore(shared_lab)
    gwa, gwb = shared_lab.gateways
    return shared_lab, gwa, gwb


# -- reading the nodes -----------------------------------------------------------------------


def status(lab: GatewayLab, gw: Gateway) -> dict[str, Any]:
    st = lab.request(gw, {"cmd": "status"})
    assert isinstance(st, dict) and "carp" in st, st
    return st


def carpif(st: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in st["carp"] if c["name"] == name)


def carpnode(st: dict[str, Any], name: str) -> dict[str, Any]:
    node: dict[str, Any] = carpif(st, name)["carpnodes"][0]
    return node


def peer(st: dict[str, Any], name: str, source: str) -> dict[str, Any] | None:
    return next((p for p in carpnode(st, name)["peers"] if p["source"] == source), None)


def sysctl(lab: GatewayLab, gw: Gateway, name: str, value: int | None = None) -> int:
    request: dict[str, Any] = {"cmd": "sysctl", "name": name}
    if value is not None:
        request["value"] = value
    result = lab.request(gw, request)
    return int(result[f"net.inet.carp.{name}"])


def became_at(lab: GatewayLab, gw: Gateway, name: str) -> float:
    """When (our monotonic clock) the carpnode entered its current state; an upper bound, as
    the reply's travel time is counted in."""
    since = float(carpnode(status(lab, gw), name)["since"])
    return time.monotonic() - since


def both(lab: GatewayLab, gw: Gateway, state: str) -> bool:
    return lab.states(gw) == {("carp0", 1): state, ("carp1", 2): state}


# -- election, the VIP, routing ----------------------------------------------------------------


def test_election_status_and_carrier(pair: tuple[GatewayLab, Gateway, Gateway]) -> None:
    lab, gwa, gwb = pair
    st_a, st_b = status(lab, gwa), status(lab, gwb)
    # the backup hears the master on both segments, with the master's parameters
    for name, source in (("carp0", "192.0.2.11"), ("carp1", "198.51.100.11")):
        heard = peer(st_b, name, source)
        assert heard is not None, carpnode(st_b, name)
        assert (heard["advbase"], heard["advskew"], heard["demote"]) == (ADVBASE, 0, 0)
        assert heard["age"] < master_down(ADVBASE, BACKUP_SKEW)
        assert carpif(st_a, name)["carrier"] is True
        assert carpif(st_b, name)["carrier"] is False
    assert st_b["carpstats"]["ipackets"] > 0
    assert st_b["carpstats"]["badauth"] == 0
    # the carp TAP's carrier as the kernel sees it: up only on the master
    flags_a, flags_b = lab.link_flags(gwa.netns), lab.link_flags(gwb.netns)
    for name in ("carp0", "carp1"):
        assert "LOWER_UP" in flags_a[name] and "NO-CARRIER" not in flags_a[name], flags_a
        assert "NO-CARRIER" in flags_b[name] and "LOWER_UP" not in flags_b[name], flags_b


def test_clients_reach_the_vip_v4_and_v6(pair: tuple[GatewayLab, Gateway, Gateway]) -> None:
    lab, _, _ = pair
    for i, client in enumerate(lab.clients, start=1):
        assert lab.ping(i, LAN_VIP), lab.logs()
        assert lab.ping(i, LAN_VIP6), lab.logs()
        # ARP and NDP for the VIPs are answered by vswitch with the carp MAC
        assert lab.neighbour(client, LAN_VIP) == CARP0_MAC
        assert lab.neighbour(client, LAN_VIP6) == CARP0_MAC


def test_routing_through_the_vip(pair: tuple[GatewayLab, Gateway, Gateway]) -> None:
    lab, _, _ = pair
    # client -> default route via 192.0.2.1 -> gwa -> upstream, replies back via 198.51.100.1
    assert lab.ping(1, UPSTREAM), lab.logs()
    assert lab.ping(2, UPSTREAM), lab.logs()
    assert lab.neighbour(lab.up, WAN_VIP) == CARP1_MAC
    # and the other way: the upstream opens the exchange towards a client
    assert lab.lab.ping(lab.up, "192.0.2.101", deadline=10, wait=0.5)


def tshark_carp(path: str, *options: str) -> list[list[str]]:
    """vhid, advskew, demotion and checksum status of every frame tshark decodes as CARP."""
    fields = ["carp.vhid", "carp.advskew", "carp.demotion", "carp.checksum.status"]
    out = subprocess.run(
        ["tshark", "-r", path, *options, "-Y", "carp", "-T", "fields"]
        + [arg for f in fields for arg in ("-e", f)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return [line.split("\t") for line in out.splitlines() if line]


def test_advertisements_decode_as_carp(pair: tuple[GatewayLab, Gateway, Gateway]) -> None:
    lab, _, _ = pair
    with (
        lab.capture(lab.seg, "br-lan", "ip proto 112 or ip6 proto 112", count=6, limit=20) as lan,
        lab.capture(lab.seg, "br-wan", "ip proto 112", count=3, limit=20) as wan,
    ):
        lab.wait_for(lambda: lan.done() and wan.done(), 25)
    for cap, vips, vhid in ((lan, [LAN_VIP, LAN_VIP6], "1"), (wan, [WAN_VIP], "2")):
        frames = cap.frames()
        ipv4 = sum(1 for _, f in frames if f[12:14] == b"\x08\x00")
        # the LAN master advertises over IPv4 and IPv6 alternately, the WAN one over IPv4 only
        assert len(frames) == (6 if cap is lan else 3)
        assert ipv4 == (len(frames) if cap is wan else len(frames) // 2)
        # tshark reads protocol 112 as VRRP unless told to try its heuristics (CARP) first;
        # tshark registers that heuristic for IPv4 only, so IPv6 needs Decode As
        good = [vhid, "0", "0", "1"]  # advskew 0, demote 0, checksum good
        assert tshark_carp(cap.path, "-o", "ip.try_heuristic_first:TRUE") == [good] * ipv4
        assert tshark_carp(cap.path, "-d", "ip.proto==112,carp") == [good] * len(frames)
        argv = [sys.executable, "-m", "vswitch", "decode", "--json", "--pass", "secret"]
        for vip in vips:
            argv += ["--vip", vip]
        decoded = subprocess.run(
            [*argv, cap.path], capture_output=True, text=True, timeout=60, check=True
        ).stdout
        reports = [json.loads(line) for line in decoded.splitlines()]
        assert len(reports) == len(frames)
        for r in reports:
            assert (r["kind"], r["hmac"], r["verdict"]) == ("carp", "ok", "accept"), r
            assert r["ttl"] == 255 and r["vhid"] == int(vhid) and r["advskew"] == 0
        if cap is lan:
            # the master advertises over IPv4 to 224.0.0.18 and over IPv6 to ff02::12
            assert {r["dst"] for r in reports} == {"224.0.0.18", "ff02::12"}


# -- failover ----------------------------------------------------------------------------------


def takeover_announcements(frames: list[tuple[float, bytes]]) -> tuple[bool, bool]:
    """(gratuitous ARP for the IPv4 VIP seen, unsolicited NA for the IPv6 VIP seen)."""
    garp = na = False
    for _, frame in frames:
        arp = parse_arp(frame)
        if arp is not None and arp.gratuitous and arp.spa == IPv4Address(LAN_VIP).packed:
            garp = True
        if (
            frame[12:14] == b"\x86\xdd"
            and frame[20] == 58  # ICMPv6
            and frame[54] == 136  # neighbour advertisement
            and frame[62:78] == IPv6Address(LAN_VIP6).packed
        ):
            na = True
    return garp, na


def test_kill9_failover(pair: tuple[GatewayLab, Gateway, Gateway]) -> None:
    lab, gwa, gwb = pair
    limit = master_down(ADVBASE, BACKUP_SKEW) + MARGIN
    probe = PingProbe(lab.lab, lab.clients[0], LAN_VIP, interval=0.05, deadline=40)
    # what the new master sends into the LAN bridge from the carp MAC: its takeover
    # announcements (gwb is BACKUP until then and sends nothing from that MAC)
    expr = f"(arp or icmp6) and ether src {CARP0_MAC}"
    with (
        probe,
        lab.capture(lab.seg, lab.seg_port(gwb), expr, count=40, limit=40, inbound=True) as cap,
    ):
        lab.wait_for(lambda: len(probe.replies()) >= 5, 10)
        lab.kill(gwa)
        killed = time.time()  # ping -D prints wall-clock times
        assert probe.wait_reply_after(killed, limit + 10), lab.logs()
        lab.wait_for(lambda: len([r for r in probe.replies() if r.at > killed]) >= 5, 10)
        lab.wait_for(lambda: all(takeover_announcements(cap.frames())), 10)
        replies = probe.stop()
    gap = largest_gap(replies, killed)
    assert gap is not None
    # the client is without its gateway for at most the backup's master-down (plus slack)
    assert gap.seconds < limit, gap
    st = status(lab, gwb)
    for name in ("carp0", "carp1"):
        assert carpnode(st, name)["state"] == "MASTER"
        assert carpnode(st, name)["reason"] == Reason.MASTER_DOWN
    assert lab.neighbour(lab.clients[0], LAN_VIP) == CARP0_MAC
    assert lab.ping(1, UPSTREAM), lab.logs()  # carp1 moved too: routing goes on


def test_sigterm_bows_out(pair: tuple[GatewayLab, Gateway, Gateway]) -> None:
    lab, gwa, gwb = pair
    assert {"carp0", "carp1", "lan0", "wan0"} <= set(lab.link_flags(gwa.netns))
    sent = time.monotonic()
    assert lab.stop(gwa) == 0
    lab.wait_for(lambda: both(lab, gwb, "MASTER"), 10)
    for name in ("carp0", "carp1"):
        # at once on the bow-out, far below the master-down of ~4.2 s
        assert became_at(lab, gwb, name) - sent < 1.0
        assert carpnode(status(lab, gwb), name)["reason"] == Reason.BOWOUT_HEARD
    # the node removed the TAPs it created; the lab's veths stay
    assert set(lab.link_flags(gwa.netns)) == {"lo", "lan", "wan"}


def test_preempts_back_after_restart(pair: tuple[GatewayLab, Gateway, Gateway]) -> None:
    lab, gwa, gwb = pair
    lab.stop(gwa)
    lab.wait_for(lambda: both(lab, gwb, "MASTER"), 10)
    lab.start(gwa)
    lab.wait_for(lambda: both(lab, gwa, "MASTER") and both(lab, gwb, "BACKUP"), 15, gwa)
    st_a, st_b = status(lab, gwa), status(lab, gwb)
    for name in ("carp0", "carp1"):
        assert carpnode(st_a, name)["reason"] == Reason.PREEMPT
        assert carpnode(st_b, name)["reason"] == Reason.PREEMPTED
    assert lab.ping(1, UPSTREAM), lab.logs()


def test_without_preempt_the_restarted_node_stays_backup(
    pair: tuple[GatewayLab, Gateway, Gateway],
) -> None:
    lab, gwa, gwb = pair
    assert sysctl(lab, gwb, "preempt", 0) == 0
    gwa.spec.preempt = False
    lab.write_config(gwa)
    lab.stop(gwa)
    lab.wait_for(lambda: both(lab, gwb, "MASTER"), 10)
    lab.start(gwa)
    assert sysctl(lab, gwa, "preempt") == 0

    def hears_gwb() -> bool:
        st = status(lab, gwa)
        return (
            peer(st, "carp0", "192.0.2.12") is not None
            and peer(st, "carp1", "198.51.100.12") is not None
        )

    lab.wait_for(hears_gwb, 10, gwa)
    st_b = status(lab, gwb)
    transitions_b = [carpnode(st_b, n)["transitions"] for n in ("carp0", "carp1")]
    # watch for longer than gwa's own master-down: it neither preempts nor times out
    end = time.monotonic() + master_down(ADVBASE, 0) + MARGIN
    while time.monotonic() < end:
        assert both(lab, gwa, "BACKUP"), lab.logs()
        assert both(lab, gwb, "MASTER"), lab.logs()
        time.sleep(0.2)
    st_a, st_b = status(lab, gwa), status(lab, gwb)
    assert [carpnode(st_a, n)["transitions"] for n in ("carp0", "carp1")] == [1, 1]
    # and gwb never left MASTER in between (not even for a moment between two polls)
    assert [carpnode(st_b, n)["transitions"] for n in ("carp0", "carp1")] == transitions_b


def test_group_failover_on_uplink_loss(pair: tuple[GatewayLab, Gateway, Gateway]) -> None:
    lab, gwa, gwb = pair
    down = time.monotonic()
    lab.lab.link(gwa.netns, "wan", up=False)
    try:

        def failed_over() -> bool:
            return (
                lab.state(gwa, "carp1") == "INIT"
                and lab.state(gwa, "carp0") == "BACKUP"
                and both(lab, gwb, "MASTER")
            )

        lab.wait_for(failed_over, 15, gwa)
        st_a, st_b = status(lab, gwa), status(lab, gwb)
        assert st_a["groups"]["carp"] >= 1
        assert carpif(st_a, "carp0")["demote"] >= 1
        # carp0 moved at once through the demotion (gwb still hears gwa on the LAN, so no
        # master-down there); carp1 because gwb stopped hearing gwa on the WAN
        assert carpnode(st_b, "carp0")["reason"] in (Reason.PREEMPT, Reason.PEER_DEMOTED)
        assert carpnode(st_b, "carp1")["reason"] == Reason.MASTER_DOWN
        assert became_at(lab, gwb, "carp0") - down < master_down(ADVBASE, BACKUP_SKEW)
        # what gwa advertises meanwhile: its demotion, and advskew 240 (design decision 5)
        heard = peer(status(lab, gwb), "carp0", "192.0.2.11")
        assert heard is not None and heard["demote"] >= 1 and heard["advskew"] == 240
        assert lab.ping(1, UPSTREAM), lab.logs()  # the client LAN is routed by gwb now

        lab.lab.link(gwa.netns, "wan", up=True)
        lab.wait_for(lambda: both(lab, gwa, "MASTER") and both(lab, gwb, "BACKUP"), 15, gwa)
        st_a = status(lab, gwa)
        assert st_a["groups"]["carp"] == 0
        assert carpif(st_a, "carp0")["demote"] == 0
        assert lab.ping(1, UPSTREAM), lab.logs()
    finally:
        lab.lab.link(gwa.netns, "wan", up=True)
