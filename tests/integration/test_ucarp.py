"""Interop with ucarp 1.5.2 (Debian): one ucarp node and one vswitch node serve 192.0.2.1 with
vhid 1 and pass "secret", and fail over to each other in both directions.

ucarp's HMAC covers exactly one IPv4 address, so the vswitch carp interface has that one address
and no IPv6. ucarp's quirks (../shared/vectors/README.md): its adverts can reach it up to ~1 s
late (libpcap buffering), its master-down is 3*advbase + advskew/256, it sends nothing on exit.
Its up/down scripts add/remove the address in its own namespace and log the transition.
"""

import json
import subprocess
import sys
import time
from typing import Any

import pytest

from carp.actions import Reason
from vswitch.lab.gateway import LAN_VIP, Gateway, GatewayLab, GatewaySpec
from vswitch.lab.ucarp import UcarpNode

pytestmark = pytest.mark.netns

CARP0_MAC = "00:00:5e:00:01:01"
VSWITCH_SRC = "192.0.2.11"  # gwa's host port: the source of its advertisements
UCARP_SRC = "192.0.2.20"
ADVBASE = 1
UCARP_SKEW = 100
# ucarp's own master-down, plus the second its adverts may take to reach it
UCARP_TAKEOVER = 3 * ADVBASE + UCARP_SKEW / 256 + 1.0
VSWITCH_MASTER_DOWN = 3 * ADVBASE
MARGIN = 1.5


def vswitch_spec() -> GatewaySpec:
    carp0 = {
        "carpdev": "lan0",
        "addresses": [f"{LAN_VIP}/24"],
        "vhid": 1,
        "advbase": ADVBASE,
        "advskew": 0,
        "pass": "secret",
    }
    return GatewaySpec("gwa", {"carp0": carp0})


def carpnode(lab: GatewayLab, gw: Gateway) -> dict[str, Any]:
    st = lab.request(gw, {"cmd": "status"})
    node: dict[str, Any] = st["carp"][0]["carpnodes"][0]
    return node


def ucarp_holds_vip(lab: GatewayLab, u: UcarpNode) -> bool:
    out = lab.lab.run(u.netns, ["ip", "-o", "-4", "addr", "show", "dev", u.ifname]).stdout
    return f" {LAN_VIP}/" in out


def steady(lab: GatewayLab, seconds: float, check: Any) -> None:
    """`check()` must hold at every poll for `seconds` (nothing may change meanwhile)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert check(), lab.logs()
        time.sleep(0.2)


def test_ucarp_and_vswitch_fail_over_to_each_other() -> None:
    with GatewayLab([vswitch_spec()], clients=1, upstream=False, ipv6=False) as lab:
        (gw,) = lab.gateways
        u = lab.add_ucarp("uc", UCARP_SRC, advbase=ADVBASE, advskew=UCARP_SKEW, preempt=True)
        client = lab.clients[0]
        with lab.capture(lab.seg, "br-lan", "ip proto 112", count=400, limit=120) as cap:
            # 1. vswitch is MASTER; ucarp joins and stays backup: it hears a better master
            lab.start(gw)
            lab.wait_for(lambda: lab.state(gw) == "MASTER", 10, gw)
            lab.start_ucarp(u)
            lab.wait_for(lambda: u.transitions() == ["backup"], 10)
            steady(
                lab,
                UCARP_TAKEOVER + MARGIN,
                lambda: lab.state(gw) == "MASTER" and u.transitions() == ["backup"],
            )
            assert not ucarp_holds_vip(lab, u)
            assert lab.ping(1, LAN_VIP), lab.logs()
            assert lab.neighbour(client, LAN_VIP) == CARP0_MAC

            # 2. kill -9 the vswitch master: ucarp takes over
            lab.kill(gw)
            killed = time.monotonic()
            lab.wait_for(lambda: u.transitions()[-1:] == ["master"], UCARP_TAKEOVER + 10)
            assert time.monotonic() - killed < UCARP_TAKEOVER + MARGIN
            assert ucarp_holds_vip(lab, u)
            assert lab.ping(1, LAN_VIP), lab.logs()
            ucarp_mac = lab.neighbour(client, LAN_VIP)
            assert ucarp_mac not in (None, CARP0_MAC)

            # 3. vswitch comes back without preempt: BACKUP under the ucarp master, which it
            # hears with its parameters; it does not time out on ucarp's slower adverts
            gw.spec.preempt = False
            lab.write_config(gw)
            lab.start(gw)
            started = time.monotonic()

            def heard() -> dict[str, Any] | None:
                return next(
                    (p for p in carpnode(lab, gw)["peers"] if p["source"] == UCARP_SRC), None
                )

            lab.wait_for(lambda: heard() is not None, 10, gw)
            ucarp_peer = heard()
            assert ucarp_peer is not None
            assert (ucarp_peer["advbase"], ucarp_peer["advskew"]) == (ADVBASE, UCARP_SKEW)
            steady(
                lab,
                started + VSWITCH_MASTER_DOWN + MARGIN - time.monotonic(),
                lambda: lab.state(gw) == "BACKUP" and u.transitions()[-1] == "master",
            )

            # 4. kill -9 ucarp (and its host: the address it leaves behind goes with the link):
            # vswitch takes over on its master-down timer and announces the VIP again
            lab.kill_ucarp(u)
            lab.lab.link(u.netns, u.ifname, up=False)
            lab.wait_for(lambda: lab.state(gw) == "MASTER", VSWITCH_MASTER_DOWN + 10, gw)
            assert carpnode(lab, gw)["reason"] == Reason.MASTER_DOWN
            assert lab.ping(1, LAN_VIP), lab.logs()
            assert lab.neighbour(client, LAN_VIP) == CARP0_MAC
            # the master's adverts go on; one more makes sure the capture has one of this phase
            before = len(cap.frames())
            lab.wait_for(lambda: len(cap.frames()) > before, 5)

        status = lab.request(gw, {"cmd": "status"})
        assert status["carpstats"]["badauth"] == 0
        assert status["carpstats"]["ipackets"] > 0
        check_capture(cap.path)


def check_capture(path: str) -> None:
    """Both implementations' advertisements are CARP to tshark and accepted by vswitch decode."""
    decode = [sys.executable, "-m", "vswitch", "decode", "--json", "--pass", "secret"]
    out = subprocess.run(
        [*decode, "--vip", LAN_VIP, path],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    reports = [json.loads(line) for line in out.splitlines()]
    sources = {r["src"] for r in reports}
    assert sources == {VSWITCH_SRC, UCARP_SRC}
    for r in reports:
        assert (r["kind"], r["hmac"], r["verdict"]) == ("carp", "ok", "accept"), r
    fields = ["-T", "fields", "-e", "ip.src", "-e", "carp.vhid", "-e", "carp.checksum.status"]
    tshark = subprocess.run(
        ["tshark", "-r", path, "-o", "ip.try_heuristic_first:TRUE", "-Y", "carp", *fields],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    rows = [line.split("\t") for line in tshark.splitlines() if line]
    assert len(rows) == len(reports)
    assert {r[0] for r in rows} == sources
    assert all(r[1:] == ["1", "1"] for r in rows), rows
