"""Waiting in the unit tests: poll a condition until it holds or a deadline passes, never sleep
a fixed time and hope. The deadline only bounds a failure (generous for a loaded 2-core
machine); a condition that holds returns at the next poll."""

import asyncio
import time
from collections.abc import Callable

TIMEOUT = 20.0  # seconds before a condition that never holds fails the test
INTERVAL = 0.005  # seconds between polls


async def until(
    condition: Callable[[], bool], what: str = "the condition", timeout: float = TIMEOUT
) -> None:
    """Return once `condition()` is true, letting the running event loop turn in between;
    AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(INTERVAL)


def poll(
    condition: Callable[[], bool], what: str = "the condition", timeout: float = TIMEOUT
) -> None:
    """`until` for a test without an event loop (its work runs in other threads or processes,
    or in signal handlers between the main thread's bytecodes)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(INTERVAL)
