"""Breaking and watching the lab (issue 9) in network namespaces, through the command line:
impairments measured by ping and iperf3, partitions that make two masters and a `conflict`
event, live captures read back by tshark (from a file and from `-w -`), `vswitch explain` on the
usual failures, refusals of bad input, and the balancing-mode matrix of
examples/balancing-modes in quick mode.

The matrix builds its own lab and runs first. One lab then serves the rest: the usual pair
(gwa advskew 0, gwb advskew 100, preempt on, carp0 vhid 1 on the LAN, advbase 1, IPv4 only),
gwa with a hook that runs on `conflict` events only, and one client. Every test starts from gwa
MASTER and gwb BACKUP, nothing impaired, pass and advskews as built. Measurements are asserted
within tolerances wide enough for a small shared machine.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from vswitch.ctl.client import EventReader
from vswitch.lab.gateway import Gateway, GatewayLab, pair_specs

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parents[2]
VSWITCH = [sys.executable, "-m", "vswitch"]
SETTLE = 30.0  # a generous bound for an election or a takeover (advbase 1: about 4 s)
GWA_HOST, GWB_HOST = "192.0.2.11", "192.0.2.12"  # the nodes' host addresses on the LAN
SKEWS = {"gwa": "0", "gwb": "100"}
ELECTED = {"gwa": {("carp0", 1): "MASTER"}, "gwb": {("carp0", 1): "BACKUP"}}
TWO_MASTERS = {"gwa": {("carp0", 1): "MASTER"}, "gwb": {("carp0", 1): "MASTER"}}
TSHARK_CARP = ["-o", "ip.try_heuristic_first:TRUE"]  # protocol 112 is VRRP to tshark otherwise
EPB_INBOUND, EPB_OUTBOUND = 1, 2


def vswitch(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it (from this checkout)."""
    return subprocess.run(
        [*VSWITCH, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def ok(*args: str) -> str:
    result = vswitch(*args)
    assert result.returncode == 0, f"vswitch {' '.join(args)}: {result.stderr}"
    return result.stdout


# -- the balancing-mode matrix (its own lab) --------------------------------------------------

MODES = ("none", "arp", "ip", "ip-unicast", "ip-stealth")
SEGMENTS = ("hub", "learning switch", "learning + monitor", "learning-arp")
STEALTH = "ip-unicast -> ip-stealth"
# what carp(4) says each cell does (examples/balancing-modes/README.md gives the sentences)
MATRIX: dict[tuple[str, str], str] = {
    **{("none", s): "one" for s in SEGMENTS},  # the master of the carpnode, alone
    **{("arp", s): "one" for s in SEGMENTS},  # one client MAC: one node
    **{("ip", s): "split" for s in SEGMENTS},  # a multicast MAC: flooded everywhere
    ("ip-unicast", "hub"): "split",
    ("ip-unicast", "learning switch"): "lost",
    ("ip-unicast", "learning + monitor"): "split",
    ("ip-unicast", "learning-arp"): "lost",
    ("ip-stealth", "hub"): "split",
    ("ip-stealth", "learning switch"): "split",
    ("ip-stealth", "learning + monitor"): "split",
    ("ip-stealth", "learning-arp"): "lost",
    (STEALTH, "before, ip-unicast"): "lost",
    (STEALTH, "stealth, entry fresh"): "lost",
    (STEALTH, "stealth, entry aged"): "split",
}
ROW = re.compile(
    r"^   (?P<mode>\S.{23}) (?P<segment>\S.{19}) +(?P<gwa>\d+)% +(?P<gwb>\d+)% +(?P<lost>\d+)%"
    r" +(?P<twice>\d+)  \S+ +(?:confirms|refutes)$",
    re.M,
)


def seen(row: dict[str, str]) -> str:
    """The cell's outcome from its numbers alone (not from the example's own verdict)."""
    if int(row["lost"]):
        return "lost"
    if int(row["twice"]):
        return "duplicated"
    return "split" if int(row["gwa"]) and int(row["gwb"]) else "one"


def test_the_balancing_matrix_in_quick_mode() -> None:
    proc = subprocess.run(
        [str(ROOT / "examples" / "balancing-modes" / "run.sh"), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHON": sys.executable},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    table = out[out.index("each node's share of the flows, per mode and segment") :]
    cells = {(m["mode"].strip(), m["segment"].strip()): m.groupdict() for m in ROW.finditer(table)}
    assert set(cells) == set(MATRIX), out
    wrong = {cell: seen(row) for cell, row in cells.items() if seen(row) != MATRIX[cell]}
    assert wrong == {}, out
    assert f"{len(MATRIX)} of {len(MATRIX)} cells confirm carp(4)" in out


# -- the pair -----------------------------------------------------------------------------------


class Pair:
    def __init__(self, lab: GatewayLab, hook_file: Path) -> None:
        self.lab = lab
        self.a, self.b = lab.gateways
        self.client = lab.clients[0]
        self.hook_file = hook_file

    def cli(self, gw: Gateway, command: str, *args: str) -> str:
        return ok(command, "-s", gw.socket_path, *args)

    def run(self, gw: Gateway | None, *args: str) -> subprocess.CompletedProcess[str]:
        """`vswitch ...` with gw's socket, not checked."""
        return vswitch(args[0], *(["-s", gw.socket_path] if gw else []), *args[1:])

    def status(self, gw: Gateway) -> dict[str, Any]:
        status: dict[str, Any] = json.loads(self.cli(gw, "status", "--json"))
        return status

    def port(self, gw: Gateway, name: str = "lan", switch: str = "lan0") -> dict[str, Any]:
        (sw,) = [s for s in self.status(gw)["switches"] if s["name"] == switch]
        (port,) = [p for p in sw["ports"] if p["name"] == name]
        return dict(port)

    def states_are(self, want: dict[str, dict[tuple[str, int], str]]) -> bool:
        return all(self.lab.states(gw) == want[gw.name] for gw in self.lab.gateways)

    def wait(self, condition: Callable[[], bool], timeout: float = SETTLE) -> None:
        self.lab.wait_for(condition, timeout)

    def ping(self, *args: str, timeout: float = 60.0) -> str:
        result = self.lab.lab.run(
            self.client, ["ping", "-n", "-q", *args], timeout=timeout, check=False
        )
        return result.stdout

    def restore(self) -> None:
        """Back to the start: nothing impaired, pass and advskews as built, gwa MASTER."""
        for gw in self.lab.gateways:
            for port, switch in (("lan", "lan0"), ("wan", "wan0")):
                self.cli(gw, "impair", switch, port, "clear")
            self.cli(gw, "ifconfig", "carp0", "pass", "secret", "advskew", SKEWS[gw.name])
        self.wait(lambda: self.states_are(ELECTED))


@pytest.fixture(scope="module")
def module_pair() -> Iterator[Pair]:
    hook_dir = Path(tempfile.mkdtemp(prefix="vswatch-hook-", dir="/tmp"))
    hook_file = hook_dir / "conflicts"
    specs = pair_specs("none", ipv6=False, wan=False)
    line = f'echo "$VSWITCH_PEER $VSWITCH_CARPIF $VSWITCH_VHID" >> {hook_file}'
    specs[0].hooks = [{"command": ["/bin/sh", "-c", line], "on": ["conflict"]}]
    try:
        with GatewayLab(specs, clients=1, upstream=False, ipv6=False) as lab:
            for gw in lab.gateways:
                lab.start(gw)
            pair = Pair(lab, hook_file)
            pair.wait(lambda: pair.states_are(ELECTED))
            assert lab.ping(1, GWA_HOST), lab.logs()  # the client knows gwa's MAC from here on
            yield pair
        assert lab.lab.teardown_errors == []
    finally:
        shutil.rmtree(hook_dir, ignore_errors=True)


@pytest.fixture
def pair(module_pair: Pair) -> Pair:
    module_pair.restore()
    return module_pair


# -- impairments, measured ----------------------------------------------------------------------


def rtt(ping_output: str) -> tuple[float, float, float]:
    """min, avg, max of `ping -q`'s summary, in ms."""
    match = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/", ping_output)
    assert match, ping_output
    low, avg, high = (float(g) for g in match.groups())
    return low, avg, high


def loss_percent(ping_output: str) -> float:
    match = re.search(r"([\d.]+)% packet loss", ping_output)
    assert match, ping_output
    return float(match.group(1))


def test_a_delay_on_both_directions_adds_twice_its_value_to_the_round_trip(pair: Pair) -> None:
    low, _, _ = rtt(pair.ping("-c", "5", "-i", "0.2", GWA_HOST))
    assert low < 20  # nothing impaired yet
    assert pair.cli(pair.a, "impair", "lan0", "lan", "delay", "50ms") == "lan0 lan: delay 50ms\n"
    low, avg, _ = rtt(pair.ping("-c", "10", "-i", "0.2", GWA_HOST))
    assert low >= 99.0 and avg <= 160.0, (low, avg)
    port = pair.port(pair.a)
    assert port["impair"]["in"]["config"] == port["impair"]["out"]["config"] == {"delay": "50ms"}
    assert port["impair"]["in"]["passed"] >= 10 and port["impair"]["out"]["passed"] >= 10
    assert "lan0 lan:\n  in  delay 50ms; passed" in pair.cli(pair.a, "impair", "lan0", "lan")


def test_loss_on_one_direction_loses_about_its_share_of_pings(pair: Pair) -> None:
    pair.cli(pair.a, "impair", "lan0", "lan", "in", "loss", "30%")
    lost = loss_percent(pair.ping("-c", "200", "-i", "0.01", "-W", "1", GWA_HOST))
    assert 15.0 <= lost <= 45.0, lost
    port = pair.port(pair.a)
    assert port["impair"]["in"]["drops"]["loss"] >= 30
    assert port["impair"]["out"]["config"] == {}  # the other direction untouched
    assert port["impair"]["out"]["drops"]["loss"] == 0


def test_a_rate_caps_what_iperf3_gets_through(pair: Pair) -> None:
    log = os.path.join(pair.lab.dir, "iperf3.log")
    argv = ["iperf3", "-s", "-1", "-B", GWA_HOST]
    server = pair.lab.lab.spawn(pair.a.netns, argv, log=log)
    listening = ["ss", "-Hltn", "sport", "= :5201"]
    try:
        pair.wait(lambda: bool(pair.lab.lab.run(pair.a.netns, listening).stdout.strip()), 10)
        pair.cli(pair.a, "impair", "lan0", "lan", "in", "rate", "10mbit")
        result = pair.lab.lab.run(
            pair.client, ["iperf3", "-c", GWA_HOST, "-t", "4", "-J"], timeout=60
        )
        received = json.loads(result.stdout)["end"]["sum_received"]["bits_per_second"]
        assert 6e6 <= received <= 11e6, received
        port = pair.port(pair.a)
        assert port["impair"]["in"]["config"] == {"rate": "10mbit"}
    finally:
        pair.lab.lab.stop(server)


# -- partitions, two masters, conflicts ---------------------------------------------------------


def test_a_partition_makes_two_masters_and_clear_one_again(pair: Pair) -> None:
    pair.cli(pair.a, "impair", "lan0", "lan", "partition")
    pair.wait(lambda: pair.states_are(TWO_MASTERS))
    assert pair.lab.link_flags(pair.a.netns)["lan"] >= {"UP", "LOWER_UP"}  # the link stays up
    port = pair.port(pair.a)
    assert port["link"] and port["impair"]["in"]["drops"]["partition"] > 0
    assert port["impair"]["out"]["drops"]["partition"] > 0
    pair.cli(pair.a, "impair", "lan0", "lan", "clear")
    pair.wait(lambda: pair.states_are(ELECTED))


def test_an_out_partition_on_the_masters_uplink_gives_a_conflict_with_the_peer(
    pair: Pair,
) -> None:
    events: list[dict[str, Any]] = []
    lock = threading.Lock()

    def keep(event: dict[str, Any]) -> None:
        with lock:
            events.append(event)

    def conflicts() -> list[dict[str, Any]]:
        with lock:
            return [e for e in events if e["type"] == "conflict"]

    before = pair.status(pair.a)["carp"][0]["carpnodes"][0]["conflicts"]
    with EventReader(pair.a.socket_path, keep):
        # gwb stops hearing gwa and takes over; gwa still hears gwb: a second master
        pair.cli(pair.a, "impair", "lan0", "lan", "out", "partition")
        pair.wait(lambda: bool(conflicts()))
    (first, *_) = conflicts()
    assert (first["carpif"], first["vhid"], first["peer"]) == ("carp0", 1, GWB_HOST)
    assert (first["advbase"], first["advskew"], first["demote"]) == (1, 100, 0)
    assert pair.lab.state(pair.a) == "MASTER"  # a less preferred master does not move it
    assert pair.status(pair.a)["carp"][0]["carpnodes"][0]["conflicts"] > before
    pair.wait(lambda: f"{GWB_HOST} carp0 1" in _read(pair.hook_file), 15)
    text = pair.cli(pair.a, "explain", "carp0")
    assert f"{GWB_HOST} also advertises as master" in text


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


# -- capture --------------------------------------------------------------------------------------


def tshark_fields(source: str | None, data: bytes | None, *fields: str) -> list[list[str]]:
    argv = ["tshark", "-r", source or "-", *TSHARK_CARP, "-T", "fields"]
    argv += [arg for f in fields for arg in ("-e", f)]
    result = subprocess.run(argv, input=data, capture_output=True, timeout=60, check=True)
    return [line.split("\t") for line in result.stdout.decode().splitlines() if line]


def capturing(pair: Pair, *args: str, stdout: int | None = None) -> subprocess.Popen[bytes]:
    """`vswitch capture -s gwa ... ` started, once it says it captures."""
    proc = subprocess.Popen(
        [*VSWITCH, "capture", "-s", pair.a.socket_path, *args],
        cwd=ROOT,
        stdout=stdout if stdout is not None else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    assert line.startswith("capturing on lan0"), line + proc.stderr.read().decode()
    return proc


def check_decoded(rows: list[list[str]]) -> None:
    """ICMP echo requests in and replies out of port lan, gwa's advertisements out of it."""
    found = {(r[0], int(r[1], 0), r[2]) for r in rows}
    assert ("lan", EPB_INBOUND, "ICMP") in found, rows
    assert ("lan", EPB_OUTBOUND, "ICMP") in found, rows
    assert ("lan", EPB_OUTBOUND, "CARP") in found, rows


FIELDS = ("frame.interface_name", "frame.packet_flags_direction", "_ws.col.Protocol")


def test_a_capture_to_a_file_reads_back_in_tshark(pair: Pair, tmp_path: Path) -> None:
    path = tmp_path / "lan0.pcapng"
    proc = capturing(pair, "lan0", "lan", "-w", str(path), "--duration", "4")
    pair.ping("-c", "20", "-i", "0.1", GWA_HOST)
    assert proc.wait(30) == 0
    assert proc.stderr is not None
    summary = proc.stderr.read().decode()
    assert re.search(r"^\d+ frames captured$", summary, re.M), summary
    check_decoded(tshark_fields(str(path), None, *FIELDS))


def test_a_capture_to_stdout_pipes_into_tshark(pair: Pair) -> None:
    proc = capturing(pair, "lan0", "-w", "-", "--duration", "4", stdout=subprocess.PIPE)
    assert proc.stdout is not None
    tshark = subprocess.Popen(
        [
            "tshark",
            "-r",
            "-",
            *TSHARK_CARP,
            "-T",
            "fields",
            *(a for f in FIELDS for a in ("-e", f)),
        ],
        stdin=proc.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    proc.stdout.close()  # tshark holds the pipe now
    pair.ping("-c", "20", "-i", "0.1", GWA_HOST)
    out, _ = tshark.communicate(timeout=60)
    assert proc.wait(30) == 0 and tshark.returncode == 0
    rows = [line.split("\t") for line in out.decode().splitlines() if line]
    check_decoded(rows)
    # every port of the switch: the host port took the requests and gave the replies
    assert {(r[0], r[2]) for r in rows} >= {("lan0", "ICMP")}


def test_a_capture_of_an_unknown_switch_or_port_is_refused(pair: Pair, tmp_path: Path) -> None:
    refused = pair.run(pair.a, "capture", "lan9", "-w", str(tmp_path / "x"), "-c", "1")
    assert refused.returncode == 1
    assert "no switch lan9 (switches: lan0, wan0)" in refused.stderr
    refused = pair.run(pair.a, "capture", "lan0", "lan", "vm9", "-w", "-", "-c", "1")
    assert refused.returncode == 1 and "switch lan0 has no port vm9" in refused.stderr
    assert pair.status(pair.a)["channels"]["capture"]["running"] == 0


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("words", "reason"),
    [
        (["loss", "130%"], "word 1 'loss 130%': 130% is out of range 0..100% (give 0% to 100%)"),
        (["delay", "-5ms"], "word 1 'delay -5ms': -5ms is negative"),
    ],
)
def test_a_bad_impairment_is_refused_with_the_reason(
    pair: Pair, words: list[str], reason: str
) -> None:
    refused = pair.run(pair.a, "impair", "lan0", "lan", *words)
    assert refused.returncode == 1 and reason in refused.stderr, refused.stderr
    assert pair.cli(pair.a, "impair", "lan0", "lan").startswith("lan0 lan: clear")  # unchanged


# -- explain --------------------------------------------------------------------------------------


def test_explain_names_the_peer_whose_pass_differs(pair: Pair) -> None:
    pair.cli(pair.b, "ifconfig", "carp0", "pass", "wrong")
    pair.wait(lambda: pair.states_are(TWO_MASTERS))
    pair.wait(lambda: "badauth" in pair.cli(pair.a, "explain"))
    text = pair.cli(pair.a, "explain", "carp0")
    assert re.search(rf"{GWB_HOST}: badauth x\d+.*the pass differs", text), text
    data = json.loads(pair.cli(pair.a, "explain", "--json"))
    assert data["format"] == 1
    (rejected,) = [r for r in data["carpifs"][0]["rejected"] if r["source"] == GWB_HOST]
    assert rejected["reason"] == "badauth" and rejected["count"] >= 1


def test_explain_behind_a_partition(pair: Pair) -> None:
    pair.cli(pair.a, "impair", "lan0", "lan", "partition")
    pair.wait(lambda: pair.states_are(TWO_MASTERS))
    # gwb took over when gwa fell silent; gwa, cut off, hears nobody
    pair.wait(lambda: "hears no other master" in pair.cli(pair.b, "explain", "carp0"))
    assert "master-down timer expired" in pair.cli(pair.b, "explain", "carp0")
    assert "hears no other master" in pair.cli(pair.a, "explain", "carp0")


def test_explain_a_preempted_master(pair: Pair) -> None:
    pair.cli(pair.a, "ifconfig", "carp0", "advskew", "200")
    preempted = {"gwa": {("carp0", 1): "BACKUP"}, "gwb": {("carp0", 1): "MASTER"}}
    pair.wait(lambda: pair.states_are(preempted))
    text_b = pair.cli(pair.b, "explain", "carp0")
    assert "after row 3: a BACKUP with preempt takes over" in text_b, text_b
    text_a = pair.cli(pair.a, "explain", "carp0")
    assert "after row 2a" in text_a and f"hears master {GWB_HOST}" in text_a, text_a
