"""carp/ is sans-IO: no module of it may do I/O or read clocks or randomness, even indirectly.

Every import is checked: the modules below are forbidden; other standard-library modules are
fine; a third-party module must be in ALLOWED_THIRD_PARTY. Calls to print, input, breakpoint and
__import__ are forbidden too: the core returns Log/Transmit actions instead.
"""

import ast
import sys
from pathlib import Path

import pytest

CARP_DIR = Path(__file__).resolve().parents[2] / "carp"

FORBIDDEN = frozenset(
    {
        # named by the project rules
        "socket",
        "asyncio",
        "time",
        "random",
        "secrets",
        "os",
        "subprocess",
        "threading",
        "select",
        "uvloop",
        "pytun",
        "pyroute2",
        "fcntl",
        "datetime",
        # the same things by other roads
        "selectors",
        "socketserver",
        "ssl",
        "http",
        "urllib",
        "signal",
        "multiprocessing",
        "concurrent",
        "sched",
        "shutil",
        "tempfile",
        "glob",
        "io",
        "mmap",
        "ctypes",
        "sys",
        "logging",
        "syslog",
        "uuid",
        "platform",
        "resource",
        "termios",
        "pty",
        "importlib",
    }
)
ALLOWED_THIRD_PARTY = frozenset({"pydantic", "pydantic_core", "dpkt", "carp"})
# printing or prompting is a side effect: the core returns Log actions instead
FORBIDDEN_CALLS = frozenset({"print", "input", "breakpoint", "__import__"})


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, top-level module) of every import; a relative import counts as `carp`."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            name = "carp" if node.level else (node.module or "").split(".")[0]
            found.append((node.lineno, name))
    return found


def forbidden_calls(tree: ast.AST) -> list[tuple[int, str]]:
    return [
        (node.lineno, node.func.id)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in FORBIDDEN_CALLS
    ]


def violations(source: str) -> list[str]:
    tree = ast.parse(source)
    problems = []
    for line, module in imported_modules(tree):
        if module in FORBIDDEN:
            problems.append(f"line {line}: imports {module}")
        elif module not in sys.stdlib_module_names and module not in ALLOWED_THIRD_PARTY:
            problems.append(f"line {line}: imports third-party {module}")
    problems += [f"line {line}: calls {name}()" for line, name in forbidden_calls(tree)]
    return problems


MODULES = sorted(CARP_DIR.rglob("*.py"))


def test_carp_package_found() -> None:
    names = {p.name for p in MODULES}
    assert {"__init__.py", "wire.py", "auth.py", "checksum.py"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(CARP_DIR)))
def test_module_is_sans_io(path: Path) -> None:
    problems = violations(path.read_text())
    assert not problems, f"{path.name}: {problems}"


@pytest.mark.parametrize(
    "source",
    [
        "import socket",
        "import os.path",
        "from time import monotonic",
        "import asyncio as aio",
        "from random import randbytes",
        "import secrets",
        "from datetime import datetime",
        "def f():\n    import subprocess",
        "import threading, struct",
        "import urllib.request",
        "import uvloop",
        "from pyroute2 import IPRoute",
        "import pytun",
        "import fcntl",
        "import select",
        "import importlib\nimportlib.import_module('socket')",
        "__import__('socket')",
        "import numpy",
        "print('hello')",
    ],
)
def test_checker_catches(source: str) -> None:
    assert violations(source)


@pytest.mark.parametrize(
    "source",
    [
        "import hashlib, hmac, struct",
        "from ipaddress import IPv4Address",
        "from carp.wire import parse_ip",
        "from . import wire",
        "from collections.abc import Iterable",
        "from typing import TYPE_CHECKING",
        "import dataclasses, enum, itertools, functools, re, math, operator, tomllib",
        "from pydantic import BaseModel",
        "import dpkt",
        "from pathlib import PurePath",
    ],
)
def test_checker_allows(source: str) -> None:
    assert not violations(source)
