"""Running vswitch as a service: --version, the systemd unit, shell completion (run in real bash
and zsh), the man page, and a wheel installed into a clean virtualenv."""

import argparse
import os
import pty
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

from carp.actions import Reason
from carp.datapath import DataPathStats
from carp.stats import CarpStats, IpDropStats
from tests.vswitch.fakenode import FakeNode, NodeThread
from vswitch import cli
from vswitch.accounting import DROP_REASONS
from vswitch.cli import build_parser, main
from vswitch.ctl import complete, manpage
from vswitch.metrics import families
from vswitch.status import NodeStatus

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "contrib" / "systemd" / "vswitch@.service"
MANPAGE = ROOT / "docs" / "vswitch.1"
METRICS_DOC = ROOT / "docs" / "metrics.md"
TROUBLESHOOTING = ROOT / "docs" / "troubleshooting.md"
EXAMPLE = ROOT / "examples" / "load-balancing" / "gwa.toml"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
HEAVY = ("pydantic", "pyroute2", "asyncio", "dpkt", "uvloop", "pytun", "carp", "vswitch.node")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VSWITCH_RUN_DIR")}
    return {**env, **extra}


# --- --version ------------------------------------------------------------------------------


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"vswitch {cli.version()}\n"
    assert cli.version() == metadata.version("vswitch-carp")


def test_version_falls_back_to_pyproject_when_not_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def missing(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", missing)
    assert cli.version() == PYPROJECT["project"]["version"]


def test_version_is_looked_up_only_when_asked() -> None:
    code = (
        "import sys\n"
        "from vswitch.cli import main\n"
        "try:\n"
        "    main(['status', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('importlib.metadata' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "False"


# --- the systemd unit -----------------------------------------------------------------------


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_the_unit_runs_the_instance_file_as_a_notify_service() -> None:
    s = unit_settings()
    assert s["Type"] == ["notify"]
    assert s["ExecStartPre"] == ["vswitch check -c /etc/vswitch/%i.toml"]
    assert s["ExecStart"] == ["vswitch run -c /etc/vswitch/%i.toml"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["RuntimeDirectory"] == ["vswitch"] and s["RuntimeDirectoryPreserve"] == ["yes"]
    assert s["Restart"] == ["on-failure"] and s["WatchdogSec"]
    caps = {"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_SYS_ADMIN"}
    assert set(s["CapabilityBoundingSet"][0].split()) == caps
    assert set(s["AmbientCapabilities"][0].split()) == caps


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    # verify insists that commands exist: name this environment's vswitch instead of systemd's
    # search path (/usr/local/bin, /usr/bin, ...), the one change made to the file
    vswitch = Path(sys.executable).with_name("vswitch")
    if not vswitch.exists():
        pytest.skip(f"no vswitch script beside {sys.executable} (install the project)")
    text = re.sub(r"^(Exec\w*=)vswitch ", rf"\g<1>{vswitch} ", UNIT.read_text(), flags=re.M)
    assert text.count(str(vswitch)) == 2
    unit = tmp_path / "vswitch@.service"
    unit.write_text(text)
    # --man=no: the man page (docs/vswitch.1) need not be installed here
    out = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert [line for line in (out.stdout + out.stderr).splitlines() if "vswitch" in line] == []


# --- completion -----------------------------------------------------------------------------


@pytest.fixture
def bindir(tmp_path: Path) -> Path:
    """A `vswitch` on PATH that runs this source tree (what an installed script would do)."""
    directory = tmp_path / "bin"
    directory.mkdir()
    script = directory / "vswitch"
    script.write_text(f'#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m vswitch "$@"\n')
    script.chmod(0o755)
    return directory


@pytest.fixture
def sockdir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="vscomp", dir="/tmp")  # short: sun_path has 108 bytes
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def served(sockdir: str) -> Iterator[NodeThread]:
    with NodeThread(os.path.join(sockdir, "gw-a.sock")) as node:
        yield node


def script(shell: str) -> str:
    parser = build_parser()
    return complete.bash_script(parser) if shell == "bash" else complete.zsh_script(parser)


def bash_complete(bindir: Path, words: list[str], env: dict[str, str] | None = None) -> list[str]:
    """COMPREPLY for the command line `words` (the last one is the word being completed)."""
    path = bindir / "completion.bash"
    path.write_text(script("bash"))
    quoted = " ".join(
        "'" + w.replace("'", "'\\''") + "'" for w in [str(bindir / "vswitch"), *words]
    )
    program = (
        f"source {path}\n"
        f"COMP_WORDS=({quoted})\n"
        f"COMP_CWORD={len(words)}\n"
        '_vswitch\nprintf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    out = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", program],
        capture_output=True,
        text=True,
        timeout=60,
        env=env or clean_env(),
    )
    assert out.returncode == 0 and out.stderr == "", out.stderr
    return [line for line in out.stdout.splitlines() if line]


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["sta"], ["status"]),
        (["status", "--j"], ["--json"]),
        (["--v"], ["--version"]),
        (["completion", ""], ["bash", "zsh"]),
        (["events", "-s", "/x", "--no"], ["--no-snapshot"]),
        (["events", "--socket", "=", "/x", "--c"], ["--config", "--count"]),
        (["ifconfig", "-"], ["-h", "--help", "-s", "--socket", "-c", "--config", "-g"]),
    ],
)
def test_bash_completes_commands_and_options(
    bindir: Path, words: list[str], expected: list[str]
) -> None:
    assert bash_complete(bindir, words) == expected


def test_bash_completes_file_arguments(bindir: Path) -> None:
    prefix = str(EXAMPLE.parent / "gw")
    assert bash_complete(bindir, ["check", "-c", prefix]) == [
        str(EXAMPLE.parent / "gwa.toml"),
        str(EXAMPLE.parent / "gwb.toml"),
    ]


def test_bash_asks_the_running_node_for_names(bindir: Path, served: NodeThread) -> None:
    sock = served.server.path
    assert bash_complete(bindir, ["ifconfig", "-s", sock, ""]) == ["carp0", "carp1"]
    assert bash_complete(bindir, ["ifconfig", "-s", sock, "carp1", "carpdev", ""]) == [
        "lan0",
        "lan1",
    ]
    assert bash_complete(bindir, ["ifconfig", "-s", sock, "-g", "u"]) == ["uplink"]
    # an ifconfig word is not an option: `-group` takes a group, not an option list
    assert bash_complete(bindir, ["ifconfig", "-s", sock, "carp0", "-group", ""]) == [
        "carp",
        "uplink",
    ]
    assert bash_complete(bindir, ["ifconfig", "-s", sock, "carp0", "advskew", ""]) == []


def test_bash_completes_nothing_when_no_node_runs(bindir: Path, sockdir: str) -> None:
    env = clean_env(VSWITCH_RUN_DIR=sockdir)  # an empty directory: no node anywhere
    assert bash_complete(bindir, ["ifconfig", ""], env) == []
    assert bash_complete(bindir, ["ifconfig", "-s", f"{sockdir}/none.sock", ""], env) == []


def test_names_mode_prints_names_or_nothing(
    served: NodeThread, sockdir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["completion", "--names", "switch", "-s", served.server.path]) == 0
    assert capsys.readouterr().out == "lan0\nlan1\n"
    assert main(["completion", "--names", "carp", "-s", f"{sockdir}/none.sock"]) == 0
    assert capsys.readouterr() == ("", "")


def test_names_mode_loads_nothing_heavy(sockdir: str) -> None:
    code = (
        "import sys\n"
        "from vswitch.cli import main\n"
        "main(['completion', '--names', 'carp'])\n"
        f"heavy = {HEAVY!r}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m in heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env=clean_env(VSWITCH_RUN_DIR=sockdir),
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_the_scripts_cover_every_command_and_option() -> None:
    parser = build_parser()
    bash, zsh = script("bash"), script("zsh")
    for cmd in complete.commands(parser):
        assert re.search(rf"^    \['{cmd.name}'\]=", bash, re.M), cmd.name
        assert f"\n_vswitch_{cmd.name}() {{" in zsh, cmd.name
        for arg in cmd.options:
            for flag in arg.flags:
                assert flag in bash.split(f"['{cmd.name}']='")[1].split("'")[0].split()
                assert re.search(rf"[)*]{re.escape(flag)}[+=]?\[", zsh), (cmd.name, flag)


def test_the_completion_command_prints_each_script(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["completion", "bash"]) == 0
    assert capsys.readouterr().out == script("bash")
    assert main(["completion", "zsh"]) == 0
    assert capsys.readouterr().out == script("zsh")
    assert main(["completion"]) == 2
    assert "bash or zsh" in capsys.readouterr().err


def zsh_complete(bindir: Path, typed: str, timeout: float = 30.0) -> str:
    """The command line after typing `typed` and TAB in an interactive zsh with the script
    installed (compinit), read back through a key bound to print $BUFFER to a file."""
    zsh = shutil.which("zsh")
    if zsh is None:
        pytest.skip("zsh is not installed (Debian package zsh)")
    functions = bindir / "functions"
    functions.mkdir(exist_ok=True)
    (functions / "_vswitch").write_text(script("zsh"))
    buffer = bindir / "buffer"
    buffer.unlink(missing_ok=True)
    (bindir / ".zshrc").write_text(
        f"fpath=({functions} $fpath)\n"
        f"path=({bindir} $path)\n"
        "autoload -Uz compinit && compinit -u -D\n"
        f'_dump() {{ print -r -- "$BUFFER" > {buffer}; }}\n'
        "zle -N _dump\n"
        "bindkey '^X' _dump\n"
    )
    master, slave = pty.openpty()
    env = clean_env(ZDOTDIR=str(bindir), HOME=str(bindir), TERM="dumb")
    proc = subprocess.Popen(
        [zsh, "-i"], stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
    )
    os.close(slave)
    try:
        os.write(master, typed.encode() + b"\t\x18")  # TAB, then ^X: dump the buffer
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if select.select([master], [], [], 0.1)[0]:
                try:
                    os.read(master, 65536)  # keep the terminal drained
                except OSError:
                    break
            if buffer.exists() and buffer.read_text().endswith("\n"):
                return buffer.read_text()[:-1]
        raise AssertionError(f"zsh did not complete {typed!r} within {timeout} s")
    finally:
        proc.kill()
        proc.wait()
        os.close(master)


def test_zsh_completes_commands_options_and_node_names(bindir: Path, served: NodeThread) -> None:
    assert zsh_complete(bindir, "vswitch sta") == "vswitch status "
    assert zsh_complete(bindir, "vswitch status --j") == "vswitch status --json "
    sock = served.server.path
    assert zsh_complete(bindir, f"vswitch ifconfig -s {sock} carp1 carpdev l") == (
        f"vswitch ifconfig -s {sock} carp1 carpdev lan"
    )
    assert zsh_complete(bindir, f"vswitch ifconfig -s {sock} -g u") == (
        f"vswitch ifconfig -s {sock} -g uplink "
    )


def test_the_zsh_script_parses() -> None:
    zsh = shutil.which("zsh")
    if zsh is None:
        pytest.skip("zsh is not installed (Debian package zsh)")
    out = subprocess.run([zsh, "-n"], input=script("zsh"), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


# --- the man page ---------------------------------------------------------------------------


def test_the_committed_man_page_is_the_parsers() -> None:
    assert MANPAGE.read_text() == manpage.render(manpage.load_parser()), (
        "docs/vswitch.1 is out of date: python -m vswitch.ctl.manpage > docs/vswitch.1"
    )


def test_the_man_page_documents_every_command_and_option() -> None:
    text = MANPAGE.read_text()
    for cmd in complete.commands(build_parser()):
        assert f'.SS "vswitch {cmd.name}"' in text
        section = text.split(f'.SS "vswitch {cmd.name}"')[1].split(".SS")[0]
        for arg in cmd.options:
            assert all(f"\\fB{manpage.escape(flag)}\\fR" in section for flag in arg.flags)


def test_the_man_page_is_clean_roff() -> None:
    groff = shutil.which("groff")
    if groff is None:
        pytest.skip("groff is not installed (Debian package groff-base)")
    out = subprocess.run(
        [groff, "-man", "-Tutf8", "-ww", "-z"],
        input=MANPAGE.read_text(),
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and out.stderr == "", out.stderr


def test_roff_escaping() -> None:
    assert manpage.escape("--json and ip-unicast") == r"\-\-json and ip-unicast"
    assert manpage.escape(r"a\b") == r"a\eb"
    assert manpage.paragraphs(".dot first") == [".PP", r"\&.dot first"]
    assert manpage.inline("run `vswitch -c x`") == r"run \fBvswitch \-c x\fR"


def test_load_parser_refuses_what_is_not_a_parser() -> None:
    with pytest.raises(TypeError, match="ArgumentParser"):
        manpage.load_parser("os:getcwd")
    assert isinstance(manpage.load_parser(), argparse.ArgumentParser)


# --- docs -----------------------------------------------------------------------------------


def full_status() -> NodeStatus:
    """A snapshot with every optional section, so that every metric family is rendered."""
    status = FakeNode().status()
    status["events"] = {"seq": 3, "subscribers": 1, "dropped": 0}
    status["hooks"] = {"queued": 0, "runs": 2, "failures": 1, "timeouts": 0, "overflows": 0}
    status["counters"] = {"adverts_unresolved": 0, "apply_errors": 0}
    status["datapath"] = DataPathStats().as_dict()
    status["ip_drops"] = IpDropStats().as_dict()
    status["channels"] = {"log": {"dropped": 0}, "control": {"clients": 1, "dropped": 0}}
    status["workers"] = {
        "count": 2,
        "pids": [7, 8],
        "ready": 2,
        "restarts": 0,
        "lost_messages": 0,
        "errors": {"channel full: arp": 1},
        "advert_socket_drops": 0,
    }
    for switch in status["switches"]:
        switch["table_full"] = 0
        for port in switch["ports"]:
            port["forwarded"] = port["rx_packets"]
            port["drops"] = dict.fromkeys(DROP_REASONS, 0)
            drops = {"partition": 0, "loss": 1, "queue": 0, "limit": 0}
            impaired = {"config": {"loss": "1%"}, "passed": 9, "held": 0, "drops": drops}
            port["impair"] = {"in": impaired}
    for carpif in status["carp"]:
        for vhe in carpif["carpnodes"]:
            vhe["conflicts"] = 0
    return status


def test_every_exported_metric_is_documented_and_nothing_else() -> None:
    exported = {family.name for family in families(full_status())}
    documented = set(re.findall(r"`(vswitch_[a-z0-9_]*[a-z0-9])`", METRICS_DOC.read_text()))
    documented |= set(re.findall(r"`(vswitch_[a-z0-9_]*[a-z0-9])[{ ]", METRICS_DOC.read_text()))
    assert exported - documented == set(), "metrics missing from docs/metrics.md"
    assert documented - exported == set(), "docs/metrics.md names metrics nobody exports"


def test_the_troubleshooting_guide_uses_real_commands_and_counters() -> None:
    text = TROUBLESHOOTING.read_text()
    names = {cmd.name for cmd in complete.commands(build_parser())}
    used = set(re.findall(r"`vswitch ([a-z]+)", text))
    assert used and used <= names
    counters = set(re.findall(r"`(bad[a-z]+|[io]packets6?)`", text))
    assert counters and counters <= set(CarpStats.names())
    reasons = {reason.value for reason in Reason}
    quoted = set(re.findall(r"LAST REASON `([a-z -]+)`|reasons alternating\s+`([a-z -]+)`", text))
    assert {r for pair in quoted for r in pair if r} <= reasons


# --- packaging ------------------------------------------------------------------------------


def pip(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(),
    )


def test_the_metadata_is_complete() -> None:
    project = PYPROJECT["project"]
    assert project["license"] == "ISC"
    assert project["requires-python"] == ">=3.11"
    assert project["keywords"] and project["classifiers"]
    assert not [c for c in project["classifiers"] if c.startswith("License ::")]  # PEP 639
    assert "Operating System :: POSIX :: Linux" in project["classifiers"]


def test_a_wheel_installs_into_a_clean_venv_and_runs(tmp_path: Path) -> None:
    probe = pip(
        "download", "--no-deps", "--timeout", "10", "--retries", "0", "-q",
        "-d", str(tmp_path / "probe"), "setuptools>=77", timeout=60,
    )  # fmt: skip
    if probe.returncode != 0:
        tail = (probe.stderr.strip().splitlines() or ["?"])[-1]
        pytest.skip(f"the package index cannot be reached ({tail})")
    # build from a copy: setuptools leaves build/ and *.egg-info in the tree it builds
    source = tmp_path / "src"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "__pycache__", "*.egg-info", "build", "dist", ".*_cache",
            ".hypothesis", "tests", "bench", "examples",
        ),
    )  # fmt: skip
    built = pip("wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(source))
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("vswitch_carp-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    installed = pip("--python", str(venv / "bin" / "python"), "install", "-q", str(wheel))
    assert installed.returncode == 0, installed.stderr
    vswitch = str(venv / "bin" / "vswitch")
    version = subprocess.run(
        [vswitch, "--version"], capture_output=True, text=True, cwd=tmp_path, env=clean_env()
    )
    assert version.stdout == f"vswitch {PYPROJECT['project']['version']}\n", version.stderr
    check = subprocess.run(
        [vswitch, "check", "-c", str(EXAMPLE)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=clean_env(),
    )
    assert check.returncode == 0, check.stderr
    assert 'name = "gwa"' in check.stdout
    # the installed code ran, not this tree's
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import vswitch; print(vswitch.__file__)"],
        capture_output=True, text=True, cwd=tmp_path, env=clean_env(),
    )  # fmt: skip
    assert where.stdout.startswith(str(venv)), where.stdout
