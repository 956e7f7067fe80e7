"""Hooks: commands run on carpnode state changes, as ifstated(8) would be used with carp(4).

The bus hands every event to `HookRunner.submit`, which only queues it (bounded; an overflow is
logged and counted), so the data path never waits for a hook. One worker task runs the matching
hooks serially, event after event, each in its own session with the event in its environment.
A hook that outlives its timeout gets SIGTERM, then SIGKILL, for its whole process group.
"""

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import IO, Any

from vswitch.events import Event, EventType

log = logging.getLogger("vswitch.hooks")

ALL_STATES = frozenset({"init", "backup", "master"})
OUTPUT_TAIL = 2048  # bytes of a failing hook's output worth logging


@dataclass(frozen=True, slots=True)
class HookSpec:
    """One [[hook]]: an argv (no shell), its timeout, and the new states it runs for."""

    command: tuple[str, ...]
    timeout: float = 10.0
    on: frozenset[str] = ALL_STATES

    @classmethod
    def from_config(cls, hook: Any) -> "HookSpec":
        """From carp.config's HookConfig, or anything with command, timeout and on."""
        on = getattr(hook, "on", None)
        states = ALL_STATES if on is None or on == "any" else frozenset(s.lower() for s in on)
        return cls(tuple(hook.command), float(getattr(hook, "timeout", 10.0)), states)

    def matches(self, event: Event) -> bool:
        return event.type == EventType.STATE and (event.new or "").lower() in self.on

    @property
    def name(self) -> str:
        return os.path.basename(self.command[0])


def hook_environment(event: Event) -> dict[str, str]:
    """The VSWITCH_* variables a hook sees for `event`."""
    return {
        "VSWITCH_EVENT": event.to_json(),
        "VSWITCH_NODE": event.node,
        "VSWITCH_SEQ": str(event.seq),
        "VSWITCH_CARPIF": event.carpif or "",
        "VSWITCH_VHID": "" if event.vhid is None else str(event.vhid),
        "VSWITCH_OLD": event.old or "",
        "VSWITCH_NEW": event.new or "",
        "VSWITCH_REASON": event.reason or "",
    }


class HookRunner:
    def __init__(
        self, hooks: Iterable[HookSpec], queue_size: int = 256, grace: float = 2.0
    ) -> None:
        self.hooks: Sequence[HookSpec] = tuple(hooks)
        self.grace = grace  # between SIGTERM and SIGKILL
        self._queue: asyncio.Queue[Event] = asyncio.Queue(queue_size)
        self._worker: asyncio.Task[None] | None = None
        self._running: asyncio.subprocess.Process | None = None
        self.runs = 0
        self.failures = 0
        self.timeouts = 0
        self.overflows = 0

    def update(self, hooks: Iterable[HookSpec]) -> None:
        """New hooks (a reload); events already queued run with the new list."""
        self.hooks = tuple(hooks)

    def submit(self, event: Event) -> None:
        """An EventBus listener: queue `event` if any hook wants it; never waits."""
        if not any(hook.matches(event) for hook in self.hooks):
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflows += 1
            log.error(
                "hooks: queue full (%d waiting), not running hooks for event %d (%s vhid %s -> %s)",
                self._queue.qsize(),
                event.seq,
                event.carpif,
                event.vhid,
                event.new,
            )

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._work())

    async def join(self) -> None:
        """Wait until every queued event has been handled."""
        await self._queue.join()

    async def aclose(self) -> None:
        """Stop the worker; a hook still running is killed with its process group."""
        if self._running is not None:
            _signal_group(self._running, signal.SIGKILL)
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None

    def stats(self) -> dict[str, int]:
        """The `hooks` section of the status snapshot."""
        return {
            "queued": self._queue.qsize(),
            "runs": self.runs,
            "failures": self.failures,
            "timeouts": self.timeouts,
            "overflows": self.overflows,
        }

    async def _work(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                for hook in self.hooks:
                    if hook.matches(event):
                        await self._run(hook, event)
            finally:
                self._queue.task_done()

    async def _run(self, hook: HookSpec, event: Event) -> None:
        env = {**os.environ, **hook_environment(event)}
        with tempfile.TemporaryFile() as output:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *hook.command,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,  # its own process group, killed as a whole
                )
            except OSError as exc:
                self.failures += 1
                log.error("hook %s: cannot run %s: %s", hook.name, hook.command[0], exc)
                return
            self._running = proc
            try:
                code = await self._wait(hook, event, proc)
            finally:
                self._running = None
            self.runs += 1
            if code != 0:
                self.failures += 1
                log.warning(
                    "hook %s exited with %s for event %d: %s",
                    hook.name,
                    code,
                    event.seq,
                    _tail(output) or "(no output)",
                )

    async def _wait(self, hook: HookSpec, event: Event, proc: asyncio.subprocess.Process) -> int:
        try:
            return await asyncio.wait_for(proc.wait(), hook.timeout)
        except TimeoutError:
            pass
        self.timeouts += 1
        log.error(
            "hook %s timed out after %gs for event %d; killing its process group",
            hook.name,
            hook.timeout,
            event.seq,
        )
        _signal_group(proc, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), self.grace)
        _signal_group(proc, signal.SIGKILL)  # also what is left of the group after the leader
        return await proc.wait()


def _signal_group(proc: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _tail(output: IO[bytes]) -> str:
    size = output.seek(0, os.SEEK_END)
    output.seek(max(0, size - OUTPUT_TAIL))
    return output.read().decode(errors="replace").strip()
