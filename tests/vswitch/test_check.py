"""`vswitch check -c node.toml`: exit 0 and the normalised config, or exit 2 and every error."""

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from vswitch import tomlw
from vswitch.cli import main
from vswitch.config import load_config, parse_config
from vswitch.lab.gateway import node_config, pair_specs

DATA = Path(__file__).parent.parent / "data"
ROOT = Path(__file__).parent.parent.parent


def test_valid_config_prints_toml_that_loads_back(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", str(DATA / "node-ifconfig.toml"), "--show-pass"]) == 0
    out = capsys.readouterr()
    assert out.err == ""
    printed = tomllib.loads(out.out)
    assert printed["carp"]["carp0"]["pass"] == "s3cret"
    assert printed["carp"]["carp1"]["carpdev"] == "wan0"  # derived, now explicit
    assert parse_config(printed) == load_config(DATA / "node-keys.toml")


def test_passphrases_are_masked_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", str(DATA / "node-keys.toml")]) == 0
    out = capsys.readouterr().out
    assert "s3cret" not in out
    assert tomllib.loads(out)["carp"]["carp0"]["pass"] == "********"


def test_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", str(DATA / "node-keys.toml"), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert next(iter(printed)) == "format"  # the layout's version, first
    assert printed.pop("format") == 1
    assert printed == load_config(DATA / "node-keys.toml").normalised()
    assert printed["node"]["control"] == "/run/vswitch/gw-a.sock"
    assert printed["carp"]["carp1"]["carpnodes"] == "1:0,2:100"


def test_errors_go_to_stderr_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", str(DATA / "node-broken.toml")]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    lines = out.err.splitlines()
    assert len(lines) == 13
    assert "carp.carp0.carpnodes[1].advskew: 255 is out of range 0..254" in lines
    tun = "switch.lan0.ports[2].type: 'tun' is not one of tap, raw"  # then any newer types
    assert any(line.startswith(tun) for line in lines)


def test_toml_syntax_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[node]\nname = "a"\nname = "b"\n')
    assert main(["check", "-c", str(bad)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"{bad}: line 3, column ")


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", str(tmp_path / "none.toml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_config_option_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["check"])
    assert info.value.code == 2
    assert "-c/--config --schema is required" in capsys.readouterr().err


def test_module_entry_point() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "vswitch", "check", "-c", str(DATA / "node-broken.toml")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "node.name: 'gw a' is not a valid node name" in result.stderr


def test_toml_writer_escapes_strings() -> None:
    data = {
        "t": {"s": 'quote " back \\ tab \t nl \n del \x7f é', "n": [1, 2.5, True]},
        "hook": [{"command": ["a b"]}],
        "nested": {"a": {"x": 1}, "b": {"y": [{"k": "v"}, {"k": "w"}]}},
        "empty": {},
    }
    assert tomllib.loads(tomlw.dumps(data)) == {
        "t": data["t"],
        "hook": data["hook"],
        "nested": data["nested"],
    }


def test_toml_writer_layout_and_values() -> None:
    # the shapes the lab's node files use: inline tables in arrays, tuples, [[hook]], odd keys
    data = {
        "node": {"name": "gwa", "metrics": False, "log": "stderr"},
        "switch": {"lan0": {"host": ("192.0.2.11/24",), "ports": [{"name": "lan"}]}},
        "carp": {"carp0": {"advskew": 100, "a key": 1.5}},
        "hook": [{"command": "true"}, {"command": "false"}],
    }
    text = tomlw.dumps(data)
    assert text.splitlines()[:5] == [
        "[node]",
        'name = "gwa"',
        "metrics = false",
        'log = "stderr"',
        "",
    ]
    assert '[switch.lan0]\nhost = ["192.0.2.11/24"]\nports = [{ name = "lan" }]\n' in text
    assert '[carp.carp0]\nadvskew = 100\n"a key" = 1.5\n' in text
    assert text.count("[[hook]]") == 2
    loaded = tomllib.loads(text)
    assert loaded["switch"]["lan0"]["host"] == ["192.0.2.11/24"]
    assert loaded["carp"]["carp0"] == {"advskew": 100, "a key": 1.5}
    assert loaded["hook"] == data["hook"]
    with pytest.raises(TypeError, match="cannot write None as TOML"):
        tomlw.value(None)


@pytest.mark.parametrize("balancing", ["none", "ip"])
def test_the_labs_node_files_are_valid_and_load_back(balancing: str) -> None:
    # vswitch/lab/gateway.py writes its nodes' files with the same writer
    carpnodes = ("1:0,2:100", "1:100,2:0") if balancing == "ip" else None
    for index, spec in enumerate(pair_specs(balancing, carpnodes=carpnodes), start=1):
        spec.hooks = [{"command": ["/bin/true"], "on": ["master"]}]
        data = node_config(spec, index, f"/tmp/{spec.name}.sock", ipv6=True)
        assert tomllib.loads(tomlw.dumps(data)) == data
        config = parse_config(data)
        assert config.node.control == f"/tmp/{spec.name}.sock"
        assert set(config.carp) == {"carp0", "carp1"}


def test_warnings_go_to_stderr_and_keep_exit_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "open.toml"
    path.write_text(
        '[node]\nname = "gw-a"\n[switch.lan0]\nhost = ["192.0.2.2/24"]\n'
        '[carp.carp0]\naddresses = ["192.0.2.1/24"]\nvhid = 1\n'
    )
    assert main(["check", "-c", str(path)]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: carp.carp0.pass: empty, so any host on the segment")
