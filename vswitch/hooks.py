"""Hooks: commands run on carpnode state changes, as ifstated(8) would be used with carp(4), and
on `conflict` events (a second master heard) for those that ask for them.

The bus hands every event to `HookRunner.submit`, which only queues it (bounded; an overflow is
logged and counted), so the data path never waits for a hook. One worker task runs the matching
hooks serially, event after event, each in its own session with the event in its environment.
A hook that outlives its timeout gets SIGTERM, then SIGKILL, for its whole process group.

Hooks are a side channel: whatever goes wrong with one run (a NUL byte in an argument, EMFILE at
spawn, a child that will not die) is logged, counted in `failures_by_reason` and the worker goes
on with the next hook and event. A hook still running when the node stops is killed with its
process group, by `aclose()` or, from a synchronous `finally`, by `kill_all()`.
"""

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import IO, Any

from vswitch.events import Event, EventType

log = logging.getLogger("vswitch.hooks")

ALL_STATES = frozenset({"init", "backup", "master"})
CONFLICT = "conflict"  # in `on`: run for conflict events too (never part of the default)
OUTPUT_TAIL = 2048  # bytes of a failing hook's output worth logging

# why a hook run failed: the keys of HookRunner.failures_by_reason
EXIT = "exit"  # ran and exited non-zero, or was killed by a signal
TIMEOUT = "timeout"  # outlived its timeout and was killed
SPAWN = "spawn"  # could not be started: no such file, permission, EMFILE, ...
INVALID = "invalid"  # could not even be asked for: a NUL byte in an argument or variable
ERROR = "error"  # anything else that went wrong around the run
REASONS = (EXIT, TIMEOUT, SPAWN, INVALID, ERROR)


@dataclass(frozen=True, slots=True)
class HookSpec:
    """One [[hook]]: an argv (no shell), its timeout, and the new states it runs for (and
    "conflict" for the conflict events)."""

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
        if event.type == EventType.CONFLICT:
            return CONFLICT in self.on
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
        "VSWITCH_PEER": event.peer or "",  # conflict: the other master
    }


class HookRunner:
    def __init__(
        self, hooks: Iterable[HookSpec], queue_size: int = 256, grace: float = 2.0
    ) -> None:
        self.hooks: Sequence[HookSpec] = tuple(hooks)
        self.grace = grace  # between SIGTERM and SIGKILL
        self._queue: asyncio.Queue[Event] = asyncio.Queue(queue_size)
        self._worker: asyncio.Task[None] | None = None
        self._running: set[asyncio.subprocess.Process] = set()
        self.runs = 0
        self.failures = 0
        self.timeouts = 0
        self.overflows = 0
        self.failures_by_reason: Counter[str] = Counter()

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
        self.kill_all()
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None

    def kill_all(self) -> int:
        """SIGKILL the process group of every hook still running; synchronous, so the node can
        call it from any `finally`, with or without a running loop. The number signalled."""
        running = list(self._running)
        for proc in running:
            _signal_group(proc, signal.SIGKILL)
        return len(running)

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
                        await self._run_counted(hook, event)
            finally:
                self._queue.task_done()

    async def _run_counted(self, hook: HookSpec, event: Event) -> None:
        """One hook run whatever happens to it: nothing but cancellation leaves this."""
        try:
            reason = await self._run(hook, event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or a resource error: this run fails, not the worker
            reason = ERROR
            kind = type(exc).__name__
            log.error("hook %s failed for event %d: %s: %s", hook.name, event.seq, kind, exc)
        if reason is not None:
            self.failures += 1
            self.failures_by_reason[reason] += 1

    async def _run(self, hook: HookSpec, event: Event) -> str | None:
        """Run `hook` for `event`; the failure reason, None when it exited 0."""
        extra = hook_environment(event)
        # the config refuses a NUL in a command, but this must hold for any HookSpec: uvloop's
        # spawn would cut the word at the NUL and run something else (asyncio's raises)
        if any("\0" in word for word in (*hook.command, *extra.values())):
            log.error(
                "hook %s: a NUL byte in %r or its environment; not run", hook.name, hook.command
            )
            return INVALID
        env = {**os.environ, **extra}
        try:
            output = tempfile.TemporaryFile()  # noqa: SIM115 (closed by the `with` below)
        except OSError as exc:  # EMFILE, ENOSPC: no room to even start it
            log.error("hook %s: cannot run %s: %s", hook.name, hook.command[0], exc)
            return SPAWN
        with output:
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
                log.error("hook %s: cannot run %s: %s", hook.name, hook.command[0], exc)
                return SPAWN
            self._running.add(proc)
            try:
                code = await self._wait(hook, event, proc)
            finally:
                if proc.returncode is None:  # cancelled or failed while it ran
                    _signal_group(proc, signal.SIGKILL)
                self._running.discard(proc)
            self.runs += 1
            if code is None:
                return TIMEOUT
            if code != 0:
                log.warning(
                    "hook %s exited with %s for event %d: %s",
                    hook.name,
                    code,
                    event.seq,
                    _tail(output) or "(no output)",
                )
                return EXIT
            return None

    async def _wait(
        self, hook: HookSpec, event: Event, proc: asyncio.subprocess.Process
    ) -> int | None:
        """The exit code, or None when the hook timed out and its group was killed."""
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
        try:
            await asyncio.wait_for(proc.wait(), self.grace)
        except TimeoutError:  # stuck in the kernel: the child watcher reaps it when it can
            log.error("hook %s (pid %d) does not die; going on without it", hook.name, proc.pid)
        return None


def _signal_group(proc: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    with contextlib.suppress(OSError):  # already gone (ESRCH), or not ours any more (EPERM)
        os.killpg(proc.pid, sig)


def _tail(output: IO[bytes]) -> str:
    size = output.seek(0, os.SEEK_END)
    output.seek(max(0, size - OUTPUT_TAIL))
    return output.read().decode(errors="replace").strip()
