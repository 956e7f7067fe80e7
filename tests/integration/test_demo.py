"""`vswitch demo --quick` end to end: its report, and that it leaves nothing behind.

The demo runs as a separate process group (so a Ctrl-C can be sent to it and everything it
started, as a terminal would), bounded in time; whatever happens, the group is killed by its id
at the end.
"""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from carp.timing import master_down_us, seconds
from vswitch.lab.netns import leftovers

pytestmark = pytest.mark.netns

DEMO = [sys.executable, "-m", "vswitch", "demo", "--quick"]
MASTER_DOWN = seconds(master_down_us(1, 100))  # gwb: advbase 1, advskew 100
MASTER_INTERVAL = 1.0  # gwa: advbase 1, advskew 0: its last advert is up to 1 s before the kill
MARGIN = 1.0  # generous functional bound for a loaded 2-core machine


def _default_sigint() -> None:
    # a shell's background job starts with SIGINT ignored, and Python keeps it so; the demo
    # must get the Ctrl-C this module sends, as from a terminal
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextlib.contextmanager
def demo_process(*args: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [*DEMO, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=_default_sigint,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        assert proc.stdout is not None
        proc.stdout.close()


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("demo")


@pytest.fixture(scope="module")
def quick_run(demo_dir: Path) -> tuple[int, str, dict[str, Any]]:
    path = demo_dir / "report.json"
    with demo_process("--json", str(path), "--plot", str(demo_dir / "failover.svg")) as proc:
        output, _ = proc.communicate(timeout=180)
    return proc.returncode, output, json.loads(path.read_text())


def test_demo_succeeds_and_prints_every_step(quick_run: tuple[int, str, dict[str, Any]]) -> None:
    code, output, report = quick_run
    assert code == 0, output
    assert report["problems"] == [], output
    for heading in (
        "Building the lab",
        "elect a master",
        "Traffic through the virtual address",
        "Failover: kill -9",
        "Preemption",
        "Load balancing: carpnodes 1:0,2:100 / 1:100,2:0, balancing ip",
        "Cleaning up",
        "Report",
    ):
        assert heading in output
    assert report["seconds"] < 60


def test_election_pings_and_flows(quick_run: tuple[int, str, dict[str, Any]]) -> None:
    _, output, report = quick_run
    assert report["election"] == {
        "gwa": {"carp0 vhid 1": "MASTER", "carp1 vhid 2": "MASTER"},
        "gwb": {"carp0 vhid 1": "BACKUP", "carp1 vhid 2": "BACKUP"},
    }
    dsts = {r["dst"] for r in report["pings"]}
    assert dsts == {"192.0.2.1", "2001:db8::1", "198.51.100.200"}
    assert all(r["sent"] > 0 and r["received"] == r["sent"] for r in report["pings"]), output
    assert len(report["flows"]) == report["clients"] >= 2
    assert all(f["bytes"] == 256 * 1024 for f in report["flows"]), output


def test_failover_is_measured_within_the_master_down_window(
    quick_run: tuple[int, str, dict[str, Any]],
) -> None:
    _, output, report = quick_run
    f = report["failover"]
    assert f["expected_master_down"] == pytest.approx(MASTER_DOWN, abs=0.001)
    low, high = MASTER_DOWN - MASTER_INTERVAL - MARGIN, MASTER_DOWN + MARGIN
    for key in ("takeover_carp0", "takeover_carp1"):
        assert f[key] is not None and low <= f[key] <= high, output
    for key in ("outage_vip", "outage_upstream"):
        # the client's silence covers the takeover, and ends soon after it
        assert f[key] is not None and low <= f[key] <= f["takeover_carp0"] + MARGIN, output
        assert f[key.replace("outage", "lost")] > 0


def test_plot_draws_the_failover(
    quick_run: tuple[int, str, dict[str, Any]], demo_dir: Path
) -> None:
    _, output, report = quick_run
    svg = demo_dir / "failover.svg"
    assert f"failover timeline written to {svg}" in output
    root = ET.parse(svg).getroot()
    classes = [e.get("class") for e in root.iter()]
    assert classes.count("band") >= 4, output  # gwa MASTER, KILLED; gwb BACKUP, MASTER
    assert classes.count("mark") == 1 and classes.count("window") == 1
    texts = [e.text or "" for e in root.iter("{http://www.w3.org/2000/svg}text")]
    assert {"gwa carp0", "gwb carp0", "kill -9"} <= set(texts)
    # the longest silence drawn is the outage the report gives for the VIP
    gaps = [m for t in texts if (m := re.fullmatch(r"no reply ([\d.]+) (ms|s)", t))]
    drawn = [float(m.group(1)) / (1000 if m.group(2) == "ms" else 1) for m in gaps]
    assert drawn and max(drawn) == pytest.approx(report["failover"]["outage_vip"], abs=0.002)


def test_preemption_brings_the_master_back(quick_run: tuple[int, str, dict[str, Any]]) -> None:
    _, output, report = quick_run
    p = report["preemption"]
    assert p["reason"] == "preempting a less preferred master"
    assert p["backup_after_spawn"] is not None
    assert p["outage_vip"] is not None and p["outage_vip"] < MARGIN, output


def test_balancing_splits_flows_by_the_hash(quick_run: tuple[int, str, dict[str, Any]]) -> None:
    _, output, report = quick_run
    b = report["balancing"]
    flows = b["flows"]
    assert len(flows) == 8
    assert b["served_twice"] == [] and b["unserved"] == [] and b["not_as_predicted"] == []
    assert all(len(f["served_by"]) == 1 and f["replies"] > 0 for f in flows), output
    assert b["per_node"]["gwa"] > 0 and b["per_node"]["gwb"] > 0
    assert b["per_node"]["gwa"] + b["per_node"]["gwb"] == len(flows)


def test_nothing_is_left_behind(quick_run: tuple[int, str, dict[str, Any]]) -> None:
    _, _, report = quick_run
    assert report["prefix"].startswith("vs")
    assert report["cleanup"] == {"namespaces": [], "links": [], "processes": [], "errors": []}
    assert leftovers(report["prefix"]) == {"namespaces": [], "links": [], "processes": []}


def test_ctrl_c_removes_everything() -> None:
    with demo_process() as proc:
        assert proc.stdout is not None
        prefix = None
        end = time.monotonic() + 90
        for line in proc.stdout:
            m = re.search(r"prefix (vs[0-9a-f]+):", line)
            if m:
                prefix = m.group(1)
            if "Failover: kill -9" in line:
                break
            assert time.monotonic() < end, "the demo did not reach the failover step"
        assert prefix is not None
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, rest
    assert "interrupted" in rest and "nothing named" in rest
    assert leftovers(prefix) == {"namespaces": [], "links": [], "processes": []}


def test_refuses_without_root(tmp_path: Path) -> None:
    # the same command as an unprivileged user: a clear message and exit status 2
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *DEMO],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert "needs root" in result.stderr and "./dev.sh demo" in result.stderr
