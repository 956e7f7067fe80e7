"""Shared test set-up: integration tests (marker `netns`) need root and network namespaces.

Without them they skip with the reason, unless VSWITCH_REQUIRE_NETNS=1 (CI), where a missing
privilege is a failure.
"""

import os
import shutil
import subprocess

import pytest


def _netns_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, TAP devices)"
    if shutil.which("ip") is None:
        return "needs iproute2 (`ip`)"
    if not os.path.exists("/dev/net/tun"):
        return "needs /dev/net/tun"
    probe = f"vsprobe{os.getpid()}"
    try:
        subprocess.run(["ip", "netns", "add", probe], check=True, capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", probe], check=True, capture_output=True, timeout=10)
    except (subprocess.SubprocessError, OSError) as exc:
        return f"cannot create network namespaces: {exc}"
    return None


_REASON: list[str | None] = []


def netns_reason() -> str | None:
    if not _REASON:
        _REASON.append(_netns_unavailable())
    return _REASON[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    netns_items = [item for item in items if item.get_closest_marker("netns")]
    if not netns_items:
        return
    reason = netns_reason()
    if reason is None:
        return
    if os.environ.get("VSWITCH_REQUIRE_NETNS") == "1":
        for item in netns_items:
            item.add_marker(pytest.mark.usefixtures("_require_netns_failure"))
    else:
        for item in netns_items:
            item.add_marker(pytest.mark.skip(reason=f"integration test skipped: {reason}"))


@pytest.fixture
def _require_netns_failure() -> None:
    reason = netns_reason()
    if reason is not None:
        pytest.fail(f"VSWITCH_REQUIRE_NETNS=1 but {reason}")
