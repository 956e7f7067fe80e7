"""Fixtures of the vswitch unit tests."""

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from tests.vswitch.loops import LOOPS, Run


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Run:
    def runner(coro: Coroutine[Any, Any, None]) -> None:
        with asyncio.Runner(loop_factory=LOOPS[request.param]) as r:
            r.run(asyncio.wait_for(coro, 60))

    return runner
