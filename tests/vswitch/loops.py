"""Run a coroutine on both event loops the node may use (asyncio and uvloop)."""

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import uvloop

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}
Run = Callable[[Coroutine[Any, Any, None]], None]
