"""examples/: each example runs from its README line (`run.sh --quick`), exits 0, shows what it
is about, and leaves nothing behind; Ctrl-C in the middle of one also removes everything."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vswitch.lab.netns import leftovers

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
LAB_LINE = re.compile(r"^lab (vs[0-9a-f]{4}): namespaces \S+, files in (\S+)$", re.M)
TIMEOUT = 240.0  # a generous bound; the quick runs take 10-20 s each

# what each example must show (checked loosely: the numbers come from the lab)
SHOWN = {
    "group-failover": [
        r"gwa\s+INIT\s+BACKUP",
        r"gwb\s+MASTER\s+MASTER",
        r"answered \(through gwb, both ways\)",
    ],
    "load-balancing": [
        r"\(both hosts up\): gwa\s+\d+ .*gwb\s+\d+ .*unanswered\s+0",
        r"\(gwb down\): gwa\s+16 \(100\.0%\)",
    ],
    "balancing-modes": [
        r"ip-unicast\s+learning switch",
        r"ip-stealth\s+hub\s+",
    ],
    "across-hosts": [
        r"client 192\.0\.2\.100 -> 192\.0\.2\.1 over vxlan: answered \(through gwa\)",
        r"^\s+gwb\s+MASTER$",
        r"gwb took over \d+\.\d+ s after the kill",
        r"client 192\.0\.2\.100 -> 192\.0\.2\.1 over vxlan: answered \(through gwb\)",
    ],
}


def run_sh(name: str, *args: str, **popen: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(EXAMPLES / name / "run.sh"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
        **popen,  # type: ignore[call-overload]
    )


def remains(prefix: str, lab_dir: str) -> list[str]:
    """Anything of the lab `prefix` still there: namespaces, host links, processes (its
    directory is named after it), and the directory itself."""
    found = [item for items in leftovers(prefix).values() for item in items]
    return found + ([lab_dir] if os.path.exists(lab_dir) else [])


def gone(prefix: str, lab_dir: str) -> list[str]:
    """remains(), polled for a moment (the last processes may still be exiting)."""
    end = time.monotonic() + 10
    while (left := remains(prefix, lab_dir)) and time.monotonic() < end:
        time.sleep(0.1)
    return left


@pytest.mark.parametrize("name", sorted(SHOWN))
def test_example_runs_and_cleans_up(name: str) -> None:
    proc = run_sh(name, "--quick")
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, out
    match = LAB_LINE.search(out)
    assert match, out
    for pattern in SHOWN[name]:
        assert re.search(pattern, out, re.M), f"{pattern!r} not in\n{out}"
    assert f"lab {match.group(1)} removed" in out
    assert gone(match.group(1), match.group(2)) == []


def test_ctrl_c_removes_the_lab() -> None:
    # a terminal's Ctrl-C: SIGINT to the whole foreground process group (script and nodes)
    proc = run_sh("group-failover", start_new_session=True)
    assert proc.stdout is not None
    out = ""
    try:
        for line in proc.stdout:
            out += line
            if "pull gwa's LAN uplink" in line:
                os.killpg(proc.pid, signal.SIGINT)
                break
        rest, _ = proc.communicate(timeout=TIMEOUT)
        out += rest
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert proc.returncode == 130, out
    assert "interrupted; the lab has been removed" in out
    match = LAB_LINE.search(out)
    assert match, out
    assert gone(match.group(1), match.group(2)) == []
