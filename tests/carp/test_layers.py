"""The layers of the code (docs/architecture.md): which package may import which.

- carp/ imports nothing of vswitch (it is the sans-IO core; test_sans_io.py checks its I/O);
- the daemon (the modules at the top of vswitch/) imports neither the client commands
  (vswitch/ctl/) nor the lab (vswitch/lab/);
- the client commands import only each other and the few light modules they share with the
  daemon (the status schema and the paths), and nothing heavy: `vswitch status` must answer a
  running node without loading pydantic, pyroute2, asyncio or dpkt;
- vswitch/cli.py names the subcommand modules as strings and imports only the chosen one;
- the daemon and its forwarding workers never load pyroute2 (vswitch/rtnl.py says why: 13 MB
  of RSS per process); the lab may.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CTL_SHARED = frozenset({"vswitch.status", "vswitch.paths"})
HEAVY = ("pydantic", "pyroute2", "asyncio", "dpkt", "uvloop", "pytun", "carp", "vswitch.node")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth of its code (function-level imports too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_carp_imports_nothing_of_vswitch() -> None:
    bad = {
        module_name(p): sorted(n for n in imports(p) if within(n, "vswitch")) for p in files("carp")
    }
    assert {k: v for k, v in bad.items() if v} == {}


def test_the_daemon_imports_neither_ctl_nor_lab() -> None:
    daemon = [p for p in sorted((ROOT / "vswitch").glob("*.py")) if p.name != "cli.py"]
    assert len(daemon) > 10  # the rule is about something
    bad = {
        module_name(p): sorted(
            n for n in imports(p) if within(n, "vswitch.ctl") or within(n, "vswitch.lab")
        )
        for p in daemon
    }
    assert {k: v for k, v in bad.items() if v} == {}


def ctl_may_import(name: str) -> bool:
    if any(within(name, heavy) for heavy in HEAVY):
        return False
    if not within(name, "vswitch") or name == "vswitch" or within(name, "vswitch.ctl"):
        return True
    return any(within(name, shared) for shared in CTL_SHARED)


def test_ctl_imports_no_daemon_module() -> None:
    ctl = files("vswitch/ctl")
    assert ctl
    bad = {module_name(p): sorted(n for n in imports(p) if not ctl_may_import(n)) for p in ctl}
    assert {k: v for k, v in bad.items() if v} == {}
    assert not ctl_may_import("vswitch.node") and not ctl_may_import("pydantic")


def test_cli_names_every_command_by_its_summary() -> None:
    from vswitch.cli import COMMANDS

    for name, (module_name_, summary) in COMMANDS.items():
        source = (ROOT / (module_name_.replace(".", "/") + ".py")).read_text()
        doc = ast.get_docstring(ast.parse(source)) or ""
        assert doc.splitlines()[0] == summary, name


@pytest.mark.parametrize("argv", [["--help"], ["status", "--help"], ["events", "--help"]])
def test_a_client_command_loads_nothing_heavy(argv: list[str]) -> None:
    code = (
        "import sys\n"
        "from vswitch.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"heavy = {HEAVY!r}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m in heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("module", ["vswitch.run", "vswitch.worker", "vswitch.cli"])
def test_the_daemon_does_not_load_pyroute2(module: str) -> None:
    code = (
        f"import sys, {module}; print(sorted(m for m in sys.modules if m.startswith('pyroute2')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
