"""Operating running nodes (issue 4): status, ifconfig, sysctl, events, reload, hooks, logging
and metrics, each through the `vswitch` command line against the gateway lab.

One lab serves the module: the usual pair (gwa advskew 0, gwb advskew 100, preempt on, carp0 on
the LAN with vhid 1, carp1 on the WAN with vhid 2, advbase 1), both with a metrics endpoint in
their own namespace; gwa has log 6 and a hook that appends every transition to a file, gwb has
log 2 and a hook that always outlives its timeout. A `vswitch events` reader per node runs for
the whole module. Every test starts from the steady state (gwa MASTER of both, gwb BACKUP of
both, configs, sysctls and demotion as built) and checks what its commands did through the
event streams, status and logs.
"""

import json
import os
import pty
import re
import select
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from carp.wire import CarpHeader
from vswitch.lab.gateway import Gateway, GatewayLab, pair_specs

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parents[2]
VSWITCH = [sys.executable, "-m", "vswitch"]
METRICS = "127.0.0.1:9812"  # each node has its own namespace: the port is free there
CARPNODES = (("carp0", 1), ("carp1", 2))
SETTLE = 30.0  # generous bound for an election or a takeover (advbase 1: about 4 s)
LOG_A, LOG_B = 6, 2


def vswitch(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it (from this checkout)."""
    return subprocess.run(
        [*VSWITCH, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def ok(*args: str) -> str:
    result = vswitch(*args)
    assert result.returncode == 0, f"vswitch {' '.join(args)}: {result.stderr}"
    return result.stdout


class Events:
    """A `vswitch events` process for one node, read into a list by a thread."""

    def __init__(self, gw: Gateway) -> None:
        self.proc = subprocess.Popen(
            [*VSWITCH, "events", "-s", gw.socket_path],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._lock = threading.Lock()
        self._items: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self._items.append(json.loads(line))

    @property
    def items(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._items)

    def mark(self) -> int:
        return len(self.items)

    def states(self, mark: int = 0) -> list[tuple[str, int, str, str, str]]:
        """(carpif, vhid, old, new, reason) of the state events after `mark`."""
        return [
            (e["carpif"], e["vhid"], e["old"], e["new"], e["reason"])
            for e in self.items[mark:]
            if e["type"] == "state"
        ]

    def wait(self, wanted: Callable[[dict[str, Any]], bool], mark: int = 0) -> dict[str, Any]:
        end = time.monotonic() + SETTLE
        while time.monotonic() < end:
            found = [e for e in self.items[mark:] if wanted(e)]
            if found:
                return found[0]
            time.sleep(0.05)
        raise AssertionError(f"no such event within {SETTLE:g} s; got {self.items[mark:]}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(10)
        self._thread.join(10)


def state(carpif: str, new: str, reason: str | None = None) -> Callable[[dict[str, Any]], bool]:
    def wanted(e: dict[str, Any]) -> bool:
        return (
            e["type"] == "state"
            and e["carpif"] == carpif
            and e["new"] == new
            and (reason is None or e["reason"] == reason)
        )

    return wanted


@dataclass
class Ops:
    lab: GatewayLab
    a: Gateway
    b: Gateway
    events: dict[str, Events]
    hook_file: Path
    configs: dict[str, str]

    def status(self, gw: Gateway) -> dict[str, Any]:
        status = self.lab.request(gw, {"cmd": "status"})
        assert isinstance(status, dict) and "carp" in status, status
        return status

    def carpnode(self, gw: Gateway, carpif: str) -> dict[str, Any]:
        carp = next(c for c in self.status(gw)["carp"] if c["name"] == carpif)
        node: dict[str, Any] = carp["carpnodes"][0]
        return node

    def log(self, gw: Gateway) -> str:
        return Path(gw.log_path).read_text(errors="replace")

    def wait(self, condition: Callable[[], bool], gw: Gateway | None = None) -> None:
        self.lab.wait_for(condition, SETTLE, gw)

    def steady(self) -> bool:
        want_a = {k: "MASTER" for k in CARPNODES}
        want_b = {k: "BACKUP" for k in CARPNODES}
        return self.lab.states(self.a) == want_a and self.lab.states(self.b) == want_b

    def reset(self) -> None:
        """Back to the module's starting point, whatever a test (or its failure) left."""
        for gw, level in ((self.a, LOG_A), (self.b, LOG_B)):
            Path(gw.config_path).write_text(self.configs[gw.name])
            assert isinstance(self.lab.request(gw, {"cmd": "reload"}), list)
            for name, value in (("preempt", 1), ("log", level)):
                self.lab.request(gw, {"cmd": "sysctl", "name": name, "value": value})
            for group, value in self.status(gw)["groups"].items():
                if value:
                    request = {"cmd": "demote", "group": group, "word": "-carpdemote"}
                    self.lab.request(gw, request | {"count": value})
            for carpif, _ in CARPNODES:
                self.lab.request(gw, {"cmd": "ifconfig", "carpif": carpif, "words": ["up"]})
        self.wait(self.steady)


@pytest.fixture(scope="module")
def module_ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ops]:
    hook_file = tmp_path_factory.mktemp("hooks") / "transitions"
    line = f'echo "$VSWITCH_SEQ $VSWITCH_CARPIF $VSWITCH_NEW $VSWITCH_REASON" >> {hook_file}'
    a, b = pair_specs()
    a.log, b.log = LOG_A, LOG_B
    a.metrics = b.metrics = METRICS
    a.hooks = [{"command": ["/bin/sh", "-c", line], "timeout": 10}]
    # a hook that outlives its timeout on every MASTER transition of gwb: killed and counted
    b.hooks = [{"command": ["sleep", "60"], "timeout": 1, "on": ["master"]}]
    with GatewayLab([a, b], clients=1, upstream=False) as lab:
        gwa, gwb = lab.gateways
        configs = {gw.name: Path(gw.config_path).read_text() for gw in lab.gateways}
        lab.start(gwa)
        lab.start(gwb)
        events: dict[str, Events] = {}
        try:
            for gw in lab.gateways:
                events[gw.name] = Events(gw)
            ops = Ops(lab, gwa, gwb, events, hook_file, configs)
            ops.wait(ops.steady)
            yield ops
        finally:
            for reader in events.values():
                reader.close()
    assert lab.lab.teardown_errors == []


@pytest.fixture
def ops(module_ops: Ops) -> Ops:
    module_ops.reset()
    return module_ops


# -- status ----------------------------------------------------------------------------------


def test_status_json(ops: Ops) -> None:
    # -c: the CLI finds the socket through the node's config
    assert stat.S_IMODE(os.stat(ops.a.socket_path).st_mode) == 0o600
    a = json.loads(ok("status", "--json", "-c", ops.a.config_path))
    b = json.loads(ok("status", "--json", "-s", ops.b.socket_path))
    assert (a["node"], b["node"]) == ("gwa", "gwb")
    assert a["sysctl"] == {"allow": 1, "preempt": 1, "log": LOG_A}
    assert a["groups"] == {"carp": 0}
    switches = {sw["name"]: sw for sw in a["switches"]}
    assert set(switches) == {"lan0", "wan0"}
    lan = switches["lan0"]
    assert lan["mode"] == "learning"
    assert lan["mac_table"] >= 2  # at least gwb's host port and the client behind the bridge
    ports = {p["name"]: p for p in lan["ports"]}
    assert {n: p["type"] for n, p in ports.items()} == {
        "lan0": "host",
        "lan": "raw",
        "carp0": "carp",
    }
    assert all(p["link"] for p in ports.values())
    raw = ports["lan"]
    assert raw["tx_packets"] > 0 and raw["tx_bytes"] >= 60 * raw["tx_packets"]
    assert raw["rx_packets"] > 0 and raw["rx_bytes"] > 0
    assert {"rx_drops", "tx_drops"} <= set(raw)
    carp = {c["name"]: c for c in a["carp"]}
    assert carp["carp0"]["carpdev"] == "lan0" and carp["carp1"]["carpdev"] == "wan0"
    assert carp["carp0"]["lladdr"] == "00:00:5e:00:01:01"
    assert carp["carp0"]["addresses"] == ["192.0.2.1/24", "2001:db8::1/64"]
    for c in a["carp"]:
        assert (c["advbase"], c["demote"], c["admin_up"], c["running"]) == (1, 0, True, True)
        assert c["carrier"] is True
        (node,) = c["carpnodes"]
        assert (node["state"], node["advskew"]) == ("MASTER", 0)
        assert node["transitions"] >= 2  # INIT -> BACKUP -> MASTER at least
        assert node["reason"] in ("master-down timer", "preempting a less preferred master")
        assert node["since"] >= 0
    for c in b["carp"]:
        (node,) = c["carpnodes"]
        assert (node["state"], node["advskew"]) == ("BACKUP", 100)
        # the backup hears the master: source, advbase, advskew, demote and age per source
        peers = {p["source"]: p for p in node["peers"]}
        source = "192.0.2.11" if c["name"] == "carp0" else "198.51.100.11"
        assert (peers[source]["advbase"], peers[source]["advskew"]) == (1, 0)
        assert peers[source]["demote"] == 0 and 0 <= peers[source]["age"] < 5
    assert a["carpstats"]["opackets"] > 0 and b["carpstats"]["ipackets"] > 0
    assert a["events"]["subscribers"] >= 1 and a["hooks"]["runs"] >= 2


def test_status_human(ops: Ops) -> None:
    text = ok("status", "-s", ops.b.socket_path)
    assert text.startswith("node gwb  up ")
    assert re.search(r"^lan0\s+learning\s+\d+\s+lan0\s+host\s+up", text, re.M)
    assert re.search(r"^\s+lan\s+raw\s+up\s+\d+", text, re.M)
    assert re.search(r"^carp0\s+lan0\s+up\s+backup\s+none\s+0\s+1\s+BACKUP\s+1\s+100\s", text, re.M)
    assert re.search(r"^carp1\s+wan0\s+up\s+backup\s+none\s+0\s+2\s+BACKUP\s+1\s+100\s", text, re.M)
    assert re.search(r"^carp0\s+1\s+192\.0\.2\.11\s+1\s+0\s+0\s", text, re.M)  # peers heard
    assert "demote counters: carp=0" in text
    assert re.search(r"ipackets [1-9]\d*", text)


def test_status_watch_redraws(ops: Ops) -> None:
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [*VSWITCH, "status", "--watch", "-s", ops.a.socket_path],
        cwd=ROOT,
        stdin=slave,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    screen = b""
    try:
        end = time.monotonic() + SETTLE
        while screen.count(b"\x1b[H\x1b[2J") < 4 and time.monotonic() < end:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                screen += os.read(master, 65536)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(master)
    frames = screen.decode(errors="replace").split("\x1b[H\x1b[2J")[1:]
    assert len(frames) >= 4
    uptimes = [uptime(f) for f in frames[:3]]
    assert len(uptimes) == 3 and uptimes[0] < uptimes[1] < uptimes[2]  # fresh data each time
    assert all("carp0" in f and "MASTER" in f for f in frames[:3])


def uptime(frame: str) -> float:
    """The `up` field of a status screen: "5.3s", "1m02s" or "1h02m03s"."""
    match = re.search(r"^node \S+  up (?:(\d+)h)?(?:(\d+)m)?([\d.]+)s", frame, re.M)
    assert match, frame
    hours, minutes, seconds = match.groups()
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds)


def test_no_node(ops: Ops, tmp_path: Path) -> None:
    result = vswitch("status", "-s", str(tmp_path / "none.sock"))
    assert result.returncode == 1 and "no node is running" in result.stderr
    assert result.stdout == ""


# -- ifconfig ----------------------------------------------------------------------------------


def test_ifconfig_status_lines(ops: Ops) -> None:
    a = ok("ifconfig", "-s", ops.a.socket_path, "carp0").splitlines()
    assert a == [
        "carp0: flags=8843<UP,BROADCAST,RUNNING,SIMPLEX,MULTICAST>",
        "\tlladdr 00:00:5e:00:01:01",
        "\tcarp: MASTER carpdev lan0 vhid 1 advbase 1 advskew 0",
        "\tgroups: carp",
        "\tstatus: master",
        "\tinet 192.0.2.1 netmask 0xffffff00 broadcast 192.0.2.255",
        "\tinet6 2001:db8::1 prefixlen 64",
    ]
    b = ok("ifconfig", "-c", ops.b.config_path).splitlines()
    assert "\tcarp: BACKUP carpdev lan0 vhid 1 advbase 1 advskew 100" in b
    assert "\tcarp: BACKUP carpdev wan0 vhid 2 advbase 1 advskew 100" in b
    assert b.count("\tstatus: backup") == 2
    wrong = vswitch("ifconfig", "-s", ops.a.socket_path, "carp0", "advskew", "255")
    assert wrong.returncode == 1
    assert "word 1 'advskew 255': 255 is out of range 0..254" in wrong.stderr
    missing = vswitch("ifconfig", "-s", ops.a.socket_path, "carp7")
    assert missing.returncode == 1 and "carp7: no such carp interface" in missing.stderr


def test_ifconfig_address_and_pass(ops: Ops) -> None:
    ea, eb = ops.events["gwa"], ops.events["gwb"]
    client = ops.lab.clients[0]
    # a new address (§4.9: INIT, then the election again) answers once gwa is MASTER again
    for gw in (ops.a, ops.b):
        shown = ok("ifconfig", "-s", gw.socket_path, "carp0", "alias", "192.0.2.2/24")
        assert "\tinet 192.0.2.2 netmask 0xffffff00 broadcast 192.0.2.255" in shown
    ops.wait(ops.steady)
    assert ops.lab.lab.ping(client, "192.0.2.2", deadline=SETTLE)
    # another pass on gwa only: its adverts fail the peer's HMAC check, and gwb takes over
    ma, mb = ea.mark(), eb.mark()
    failed = ops.status(ops.b)["carpstats"]["badauth"]
    ok("ifconfig", "-s", ops.a.socket_path, "carp0", "pass", "other")
    eb.wait(state("carp0", "MASTER", "master-down timer"), mb)
    assert ops.status(ops.b)["carpstats"]["badauth"] > failed
    assert ea.states(ma) == []  # a new key keeps the state (SIOCSVH)
    # the same pass again: the split brain heals by the ordinary rules
    ok("ifconfig", "-s", ops.a.socket_path, "carp0", "pass", "secret")
    eb.wait(state("carp0", "BACKUP", "preempted by a peer"), mb)
    assert ea.states(ma) == []


def test_ifconfig_carppeer_and_advbase(ops: Ops) -> None:
    # unicast advertisements (§1.3): each node names the other as its carppeer
    for gw, peer in ((ops.b, "192.0.2.11"), (ops.a, "192.0.2.12")):
        shown = ok("ifconfig", "-s", gw.socket_path, "carp0", "carppeer", peer)
        assert f"advskew {100 if gw is ops.b else 0} carppeer {peer}" in shown
    ops.wait(ops.steady)
    link = ops.lab.lab.run(ops.b.netns, ["ip", "-j", "link", "show", "lan0"]).stdout
    host_mac = bytes.fromhex(json.loads(link)[0]["address"].replace(":", ""))
    sniffer = ops.lab.sniff([f"lan{ops.b.index}"])  # the bridge port towards gwb
    try:

        def unicast_advert() -> bool:
            return any(
                not seen.inbound
                and seen.frame[:6] == host_mac  # to gwb's own MAC, resolved by gwa
                and seen.frame[12:14] == b"\x08\x00"
                and seen.frame[23] == 112  # CARP
                and seen.frame[30:34] == bytes([192, 0, 2, 12])
                for seen in sniffer.frames()
            )

        ops.wait(unicast_advert)
    finally:
        sniffer.close()
    heard = {p["source"]: p for p in ops.carpnode(ops.b, "carp0")["peers"]}
    assert heard["192.0.2.11"]["age"] < 3
    # advbase: a BACKUP keeps its state, status shows the new value
    eb = ops.events["gwb"]
    mb = eb.mark()
    ok("ifconfig", "-s", ops.b.socket_path, "carp0", "advbase", "2")
    status = ops.status(ops.b)["carp"][0]
    assert (status["advbase"], status["carpnodes"][0]["state"]) == (2, "BACKUP")
    assert eb.states(mb) == []


def test_advskew_on_the_master_lets_the_peer_preempt(ops: Ops) -> None:
    ea, eb = ops.events["gwa"], ops.events["gwb"]
    ma, mb = ea.mark(), eb.mark()
    ok("ifconfig", "-s", ops.a.socket_path, "carp0", "advskew", "200")
    eb.wait(state("carp0", "MASTER", "preempting a less preferred master"), mb)
    ea.wait(state("carp0", "BACKUP", "preempted by a peer"), ma)
    # SIOCSVH keeps the state: the master advertised advskew 200 and was preempted, it never
    # went through INIT; carp1 was not touched
    assert ea.states(ma) == [("carp0", 1, "MASTER", "BACKUP", "preempted by a peer")]
    assert ops.carpnode(ops.a, "carp0")["advskew"] == 200
    assert ops.carpnode(ops.a, "carp1")["state"] == "MASTER"
    assert ("carp0", 1, "BACKUP", "MASTER", "preempting a less preferred master") in eb.states(mb)
    ma = ea.mark()
    ok("ifconfig", "-s", ops.a.socket_path, "carp0", "advskew", "0")
    ea.wait(state("carp0", "MASTER", "preempting a less preferred master"), ma)


def test_forced_states(ops: Ops) -> None:
    ea, eb = ops.events["gwa"], ops.events["gwb"]
    ma, mb = ea.mark(), eb.mark()
    # §4.10: forcing master on the less preferred node lasts until the master's next advert
    ok("ifconfig", "-s", ops.b.socket_path, "carp0", "state", "master")
    eb.wait(state("carp0", "MASTER", "forced"), mb)
    eb.wait(state("carp0", "BACKUP"), mb)
    assert ea.states(ma) == []  # the real master stayed MASTER throughout
    # forcing backup on the master: no bow-out, it becomes MASTER again (by its master-down
    # timer, or by preempting the peer if that timed out first)
    ma = ea.mark()
    ok("ifconfig", "-s", ops.a.socket_path, "carp0", "state", "backup")
    ea.wait(state("carp0", "BACKUP", "forced"), ma)
    ea.wait(state("carp0", "MASTER"), ma)
    assert [s[:2] for s in ea.states(ma)] == [("carp0", 1)] * 2


def test_down_bows_out_and_up_comes_back(ops: Ops) -> None:
    ea, eb = ops.events["gwa"], ops.events["gwb"]
    ma, mb = ea.mark(), eb.mark()
    ok("ifconfig", "-s", ops.a.socket_path, "carp0", "down")
    # the bow-out (advbase/advskew 255) makes the peer take over at once, not by its timer
    eb.wait(state("carp0", "MASTER", "bow-out heard"), mb)
    assert ea.states(ma) == [("carp0", 1, "MASTER", "INIT", "interface down")]
    shown = ok("ifconfig", "-s", ops.a.socket_path, "carp0")
    assert "carp0: flags=8802<BROADCAST,SIMPLEX,MULTICAST>" in shown
    assert "\tcarp: INIT carpdev lan0 vhid 1 advbase 1 advskew 0" in shown
    assert "\tstatus: invalid" in shown
    mb = eb.mark()
    ok("ifconfig", "-s", ops.a.socket_path, "carp0", "up")
    ea.wait(state("carp0", "MASTER", "preempting a less preferred master"), ma)
    eb.wait(state("carp0", "BACKUP", "preempted by a peer"), mb)
    assert ea.states(ma)[1] == ("carp0", 1, "INIT", "BACKUP", "start")


def test_group_demotion_moves_both_and_back(ops: Ops) -> None:
    ea, eb = ops.events["gwa"], ops.events["gwb"]
    ma, mb = ea.mark(), eb.mark()
    text = ok("ifconfig", "-s", ops.a.socket_path, "-g", "carp", "carpdemote", "50")
    assert text.strip() == "carp: carp demote count 50"
    for carpif, _ in CARPNODES:
        eb.wait(state(carpif, "MASTER", "master is more demoted"), mb)
        ea.wait(state(carpif, "BACKUP"), ma)
    status = ops.status(ops.a)
    assert status["groups"] == {"carp": 50}
    assert [c["demote"] for c in status["carp"]] == [50, 50]
    assert ok("ifconfig", "-s", ops.a.socket_path, "-g", "carp").strip() == (
        "carp: carp demote count 50"
    )
    heard = ops.carpnode(ops.b, "carp0")["peers"]  # gwb sees gwa's demoted advertisements
    assert any(p["demote"] == 50 for p in heard)
    refused = vswitch("ifconfig", "-s", ops.a.socket_path, "-g", "carp", "-carpdemote", "60")
    assert refused.returncode == 1 and "not in 0..255" in refused.stderr
    ma = ea.mark()
    text = ok("ifconfig", "-s", ops.a.socket_path, "-g", "carp", "-carpdemote", "50")
    assert text.strip() == "carp: carp demote count 0"
    for carpif, _ in CARPNODES:
        ea.wait(state(carpif, "MASTER", "preempting a less preferred master"), ma)
    demotes = [e for e in ea.items[ma:] if e["type"] == "demote"]
    assert demotes and demotes[-1]["value"] == 0


def test_pulled_uplink_moves_both_interfaces_and_back(ops: Ops) -> None:
    ea, eb = ops.events["gwa"], ops.events["gwb"]
    ma, mb = ea.mark(), eb.mark()
    seg_port = f"lan{ops.a.index}"  # the bridge port of gwa's LAN uplink
    ops.lab.lab.link(ops.lab.seg, seg_port, up=False)
    try:
        # §4.8 and design decision 5: carp0 loses its carpdev and goes INIT, the group is
        # demoted and, with preempt on, carp1 advertises advskew 240: the peer takes it over
        eb.wait(state("carp1", "MASTER", "preempting a less preferred master"), mb)
        heard = {p["source"]: p for p in ops.carpnode(ops.b, "carp1")["peers"]}
        assert (heard["198.51.100.11"]["advskew"], heard["198.51.100.11"]["demote"]) == (240, 1)
        eb.wait(state("carp0", "MASTER"), mb)
        head = [(e["type"], e.get("port"), e.get("up")) for e in ea.items[ma:]][:1]
        assert head == [("link", "lan", False)]  # the cause comes first
        assert ("carp0", 1, "MASTER", "INIT", "link down") in ea.states(ma)
        ea.wait(state("carp1", "BACKUP", "demoted"), ma)
        assert ops.status(ops.a)["groups"] == {"carp": 1}
    finally:
        ma = ea.mark()
        ops.lab.lab.link(ops.lab.seg, seg_port, up=True)
    ea.wait(state("carp0", "BACKUP", "link up"), ma)
    for carpif, _ in CARPNODES:
        ea.wait(state(carpif, "MASTER", "preempting a less preferred master"), ma)
    assert ops.status(ops.a)["groups"] == {"carp": 0}


# -- sysctl ------------------------------------------------------------------------------------


def test_sysctl_read_and_preempt_off(ops: Ops) -> None:
    everything = ok("sysctl", "-s", ops.a.socket_path).splitlines()
    assert everything[:3] == [
        "net.inet.carp.allow=1",
        "net.inet.carp.preempt=1",
        f"net.inet.carp.log={LOG_A}",
    ]
    assert any(re.fullmatch(r"net\.inet\.carp\.stats\.opackets=[1-9]\d*", s) for s in everything)
    one = ok("sysctl", "-s", ops.b.socket_path, "net.inet.carp.stats.ipackets")
    assert re.fullmatch(r"net\.inet\.carp\.stats\.ipackets=[1-9]\d*\n", one)
    assert vswitch("sysctl", "-s", ops.a.socket_path, "net.inet.carp.nope").returncode == 1
    changed = ok("sysctl", "-s", ops.a.socket_path, "net.inet.carp.preempt=0")
    assert changed == "net.inet.carp.preempt: 1 -> 0\n"
    assert ok("sysctl", "-s", ops.a.socket_path, "preempt") == "net.inet.carp.preempt=0\n"
    # without preempt the preferred node, back from a bow-out, stays BACKUP behind gwb
    ea, eb = ops.events["gwa"], ops.events["gwb"]
    mb = eb.mark()
    ok("ifconfig", "-s", ops.a.socket_path, "carp0", "down")
    eb.wait(state("carp0", "MASTER", "bow-out heard"), mb)
    ma = ea.mark()
    ok("ifconfig", "-s", ops.a.socket_path, "carp0", "up")
    ea.wait(state("carp0", "BACKUP", "start"), ma)
    heard = ops.status(ops.a)["carpstats"]["ipackets"]
    ops.wait(lambda: ops.status(ops.a)["carpstats"]["ipackets"] >= heard + 4)
    assert ops.carpnode(ops.a, "carp0")["state"] == "BACKUP"
    assert ea.states(ma) == [("carp0", 1, "INIT", "BACKUP", "start")]
    ok("sysctl", "-s", ops.a.socket_path, "net.inet.carp.preempt=1")
    ea.wait(state("carp0", "MASTER", "preempting a less preferred master"), ma)


# -- events ------------------------------------------------------------------------------------


def test_events_snapshot_first_then_ordered(ops: Ops) -> None:
    first = ok("events", "-s", ops.a.socket_path, "--count", "2").splitlines()
    snapshots = [json.loads(line) for line in first]
    assert [(e["type"], e["carpif"], e["vhid"], e["new"]) for e in snapshots] == [
        ("snapshot", "carp0", 1, "MASTER"),
        ("snapshot", "carp1", 2, "MASTER"),
    ]
    seq = ops.status(ops.a)["events"]["seq"]
    assert snapshots[0]["seq"] == snapshots[1]["seq"] <= seq
    # the module's long-lived readers: snapshots first, then every live event with seq + 1
    for name, reader in ops.events.items():
        items = reader.items
        count = len(CARPNODES)
        assert [e["type"] for e in items[:count]] == ["snapshot"] * count, name
        seqs = [e["seq"] for e in items[count:]]
        assert seqs == list(range(items[0]["seq"] + 1, items[0]["seq"] + 1 + len(seqs))), name
        for e in items[count:]:
            assert {"time", "monotonic", "node", "type"} <= set(e)
            if e["type"] == "state":
                assert {"carpif", "vhid", "old", "new", "reason"} <= set(e)
    # a transition now reaches a new subscriber after its snapshot, with a larger seq
    with subprocess.Popen(
        [*VSWITCH, "events", "-s", ops.b.socket_path, "--count", "3"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        head = [json.loads(proc.stdout.readline()) for _ in range(2)]
        ok("ifconfig", "-s", ops.b.socket_path, "carp1", "state", "master")
        live = json.loads(proc.stdout.readline())
        assert proc.wait(SETTLE) == 0
    assert [e["type"] for e in head] == ["snapshot", "snapshot"]
    assert live["seq"] > head[0]["seq"]
    assert (live["type"], live["carpif"], live["old"], live["new"], live["reason"]) == (
        "state",
        "carp1",
        "BACKUP",
        "MASTER",
        "forced",
    )


# -- reload ------------------------------------------------------------------------------------


def edit(path: str, carpif: str, old: str, new: str) -> None:
    """Replace `old` by `new` in the [carp.<carpif>] table of a node's TOML."""
    text = Path(path).read_text()
    start = text.index(f"[carp.{carpif}]")
    end = text.find("\n[", start + 1)
    end = len(text) if end < 0 else end
    table = text[start:end]
    assert old in table
    Path(path).write_text(text[:start] + table.replace(old, new) + text[end:])


def test_reload_keeps_the_state_of_unchanged_interfaces(ops: Ops) -> None:
    ea = ops.events["gwa"]
    before = ops.carpnode(ops.a, "carp0")
    # SIGHUP: carp1 joins a new group, which replaces it (INIT, then back); carp0 is unchanged
    edit(ops.a.config_path, "carp1", 'pass = "secret"', 'pass = "secret"\ngroups = ["uplink"]')
    ma = ea.mark()
    assert ops.a.proc is not None
    os.kill(ops.a.proc.pid, signal.SIGHUP)
    ea.wait(state("carp1", "INIT", "reconfigured"), ma)
    ea.wait(state("carp1", "MASTER"), ma)
    ops.wait(lambda: "vswitch: reloaded (carp1 replaced)" in ops.log(ops.a))
    after = ops.carpnode(ops.a, "carp0")
    assert (after["state"], after["transitions"]) == ("MASTER", before["transitions"])
    assert after["since"] > before["since"]
    assert all(s[0] == "carp1" for s in ea.states(ma))
    assert ops.status(ops.a)["groups"] == {"carp": 0, "uplink": 0}
    # `vswitch reload`: an advskew change is applied in place; nothing changes state
    edit(ops.a.config_path, "carp1", "advskew = 0", "advskew = 50")
    ma = ea.mark()
    assert ok("reload", "-c", ops.a.config_path) == "carp1 updated, state kept\n"
    assert ops.carpnode(ops.a, "carp1")["advskew"] == 50
    assert ops.carpnode(ops.a, "carp1")["state"] == "MASTER"
    assert ok("reload", "-s", ops.a.socket_path) == "nothing changed\n"
    assert ea.states(ma) == []


def test_reload_refuses_a_broken_file_with_the_errors_of_check(ops: Ops) -> None:
    path = ops.a.config_path
    edit(path, "carp0", "advbase = 1", "advbase = 300")
    edit(path, "carp1", "vhid = 2", "vhid = 2\ncolour = 1")
    check = vswitch("check", "-c", path)
    assert check.returncode == 2
    errors = check.stderr.splitlines()
    assert any("advbase" in e for e in errors) and any("colour" in e for e in errors)
    before = ops.carpnode(ops.a, "carp0")
    refused = vswitch("reload", "-c", path)
    assert refused.returncode == 2
    lines = refused.stderr.splitlines()
    assert lines[0] == "vswitch: configuration refused, nothing changed"
    assert [line.strip() for line in lines[1:]] == errors
    assert ops.a.proc is not None
    os.kill(ops.a.proc.pid, signal.SIGHUP)
    for error in errors:
        ops.wait(lambda e=error: f"vswitch: reload refused: {e}" in ops.log(ops.a))
    after = ops.carpnode(ops.a, "carp0")
    assert (after["state"], after["transitions"]) == ("MASTER", before["transitions"])
    assert ops.status(ops.a)["carp"][0]["advbase"] == 1


# -- hooks and logging -------------------------------------------------------------------------


def hook_lines(path: Path) -> list[tuple[int, str, str, str]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        seq, carpif, new, reason = line.split(" ", 3)
        out.append((int(seq), carpif, new, reason))
    return out


def test_hook_sees_every_transition_in_order(ops: Ops) -> None:
    ea = ops.events["gwa"]
    ma = ea.mark()
    ok("ifconfig", "-s", ops.a.socket_path, "-g", "carp", "carpdemote", "10")
    for carpif, _ in CARPNODES:
        ea.wait(state(carpif, "BACKUP"), ma)
    ok("ifconfig", "-s", ops.a.socket_path, "-g", "carp", "-carpdemote", "10")
    for carpif, _ in CARPNODES:
        ea.wait(state(carpif, "MASTER"), ma)
    seen = [
        (e["seq"], e["carpif"], e["new"], e["reason"]) for e in ea.items if e["type"] == "state"
    ]
    ops.wait(lambda: seen[-1][0] in {h[0] for h in hook_lines(ops.hook_file)})
    hooked = hook_lines(ops.hook_file)
    seqs = [h[0] for h in hooked]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)  # serial, in order, once each
    start = ea.items[0]["seq"]
    assert [h for h in hooked if h[0] > start] == seen  # exactly the state events, in order
    assert hooked[:2] == [
        (hooked[0][0], "carp0", "BACKUP", "start"),
        (hooked[1][0], "carp1", "BACKUP", "start"),
    ]
    # gwb became MASTER of both meanwhile; its slow hook neither held that up nor survived
    ops.wait(lambda: ops.status(ops.b)["hooks"]["timeouts"] >= 2)
    assert ops.status(ops.b)["hooks"]["runs"] >= 2


def test_log_threshold(ops: Ops) -> None:
    text = ops.log(ops.b)  # log = 2: BACKUP <-> MASTER changes (LOG_CRIT) only
    assert "carp0: state transition: INIT -> BACKUP" not in text
    assert "carp0: state transition: INIT -> BACKUP" in ops.log(ops.a)  # log = 6 on gwa
    eb, mb = ops.events["gwb"], ops.events["gwb"].mark()
    ok("ifconfig", "-s", ops.a.socket_path, "carp1", "down")
    eb.wait(state("carp1", "MASTER", "bow-out heard"), mb)
    ops.wait(lambda: "carp1: state transition: BACKUP -> MASTER" in ops.log(ops.b))
    # a LOG_NOTICE (5) line: an advertisement with TTL 1 from a client, counted as badttl
    header = CarpHeader(1, 0, 1, 0, bytes(8), bytes(20)).pack()
    send = (
        "import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112); "
        "s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1); "
        "s.sendto(bytes.fromhex(sys.argv[1]), ('224.0.0.18', 0))"
    )

    def inject() -> None:
        count = ops.status(ops.b)["carpstats"]["badttl"]
        ops.lab.lab.run(ops.lab.clients[0], [sys.executable, "-c", send, header.hex()])
        ops.wait(lambda: ops.status(ops.b)["carpstats"]["badttl"] > count)

    inject()
    assert "received ttl" not in ops.log(ops.b)
    ok("sysctl", "-s", ops.b.socket_path, "net.inet.carp.log=5")
    inject()
    ops.wait(lambda: "carp: received ttl 1 != 255 on lan0" in ops.log(ops.b))


# -- metrics -----------------------------------------------------------------------------------

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")


def scrape(ops: Ops, gw: Gateway, path: str = "/metrics") -> tuple[str, str]:
    """GET from inside the node's namespace: (content type or status, body)."""
    fetch = (
        "import sys, urllib.request, urllib.error\n"
        "try:\n"
        "    r = urllib.request.urlopen(sys.argv[1], timeout=10)\n"
        "    print(r.headers['Content-Type']); sys.stdout.write(r.read().decode())\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code)\n"
    )
    url = f"http://{METRICS}{path}"
    out = ops.lab.lab.run(gw.netns, [sys.executable, "-c", fetch, url]).stdout
    head, _, body = out.partition("\n")
    return head, body


def samples(body: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for line in body.splitlines():
        if line.startswith("#") or not line:
            continue
        match = SAMPLE.match(line)
        assert match, line
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        out[(match.group(1), labels)] = float(match.group(3))
    return out


def value(
    data: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return data[(name, frozenset(labels.items()))]


def test_metrics(ops: Ops) -> None:
    kind, body = scrape(ops, ops.a)
    assert kind == "text/plain; version=0.0.4; charset=utf-8"
    a = samples(body)
    b = samples(scrape(ops, ops.b)[1])
    for carpif, vhid in CARPNODES:
        where = {"carpif": carpif, "vhid": str(vhid)}
        assert value(a, "vswitch_carp_state", node="gwa", **where) == 2
        assert value(b, "vswitch_carp_state", node="gwb", **where) == 1
        assert value(a, "vswitch_carp_in_state", node="gwa", state="master", **where) == 1
        assert value(a, "vswitch_carp_in_state", node="gwa", state="backup", **where) == 0
        assert value(b, "vswitch_carp_advskew", node="gwb", **where) == 100
        assert value(a, "vswitch_carp_transitions_total", node="gwa", **where) >= 2
    assert value(b, "vswitch_carp_ipackets_total", node="gwb") > 0
    for counter in ops.status(ops.a)["carpstats"]:  # every carpstats counter is exported
        assert (f"vswitch_carp_{counter}_total", frozenset({("node", "gwa")})) in a
    sent = value(a, "vswitch_carp_opackets_total", node="gwa")
    port = {"node": "gwa", "switch": "lan0", "port": "lan"}
    packets = value(a, "vswitch_port_tx_packets_total", **port)
    assert packets > 0 and value(a, "vswitch_port_tx_bytes_total", **port) >= 60 * packets
    assert value(a, "vswitch_port_rx_packets_total", **port) > 0
    for drops in ("vswitch_port_rx_drops_total", "vswitch_port_tx_drops_total"):
        assert (drops, frozenset(port.items())) in a
    assert value(a, "vswitch_port_link", **port) == 1
    # counters move between scrapes; the master keeps advertising
    ops.wait(
        lambda: (
            value(samples(scrape(ops, ops.a)[1]), "vswitch_carp_opackets_total", node="gwa") > sent
        )
    )
    assert scrape(ops, ops.a, "/other")[0] == "404"
