"""examples/: every shipped node config passes `vswitch check`, and every example is complete
(node configs, README, an executable run.sh) and listed in examples/README.md."""

import os
import sys
import tomllib
from pathlib import Path

import pytest

from vswitch.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CONFIGS = sorted(EXAMPLES.glob("**/*.toml"))
DIRS = sorted(p for p in EXAMPLES.iterdir() if p.is_dir() and p.name != "__pycache__")


def test_there_are_examples() -> None:
    assert {d.name for d in DIRS} >= {"group-failover", "load-balancing", "balancing-modes"}
    assert len(CONFIGS) >= 2 * len(DIRS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_config_passes_check(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", str(path)]) == 0, capsys.readouterr().err
    assert "[node]" in capsys.readouterr().out


@pytest.mark.parametrize("example", DIRS, ids=lambda p: p.name)
def test_example_is_complete(example: Path) -> None:
    run = example / "run.sh"
    assert os.access(run, os.X_OK)
    assert {"gwa.toml", "gwb.toml", "README.md"} <= {p.name for p in example.iterdir()}
    assert f"examples/{example.name}/run.sh" in (example / "README.md").read_text()
    assert f"examples/{example.name}/run.sh" in (EXAMPLES / "README.md").read_text()
    # run.sh runs one Python script of the example's own
    (script,) = [p for p in example.glob("*.py")]
    assert script.name in run.read_text()


def test_the_lab_gets_its_own_control_socket(tmp_path: Path) -> None:
    sys.path.insert(0, str(EXAMPLES))
    try:
        from exlab import node_config
    finally:
        sys.path.remove(str(EXAMPLES))
    for path in CONFIGS:
        sock = str(tmp_path / f"{path.stem}.sock")
        got = tomllib.loads(node_config(path, sock))
        want = tomllib.loads(path.read_text())
        assert want["node"]["control"] != sock
        want["node"]["control"] = sock
        assert got == want  # only the socket moves
