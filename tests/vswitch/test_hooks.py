"""Hooks: serial, ordered, with the event in the environment, bounded, killed on timeout."""

import asyncio
import errno
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from carp.actions import CarrierChanged, Reason, StateChanged
from carp.constants import State
from tests.vswitch.loops import Run
from tests.vswitch.polling import until
from vswitch import hooks
from vswitch.events import EventBus
from vswitch.hooks import ALL_STATES, HookRunner, HookSpec, hook_environment


def sh(script: str, timeout: float = 10.0, on: frozenset[str] = ALL_STATES) -> HookSpec:
    return HookSpec(("/bin/sh", "-c", script), timeout, on)


def transition(bus: EventBus, vhid: int, old: State, new: State) -> None:
    bus.publish_actions(1.0, [StateChanged("carp0", vhid, old, new, Reason.MASTER_DOWN)])


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_hooks_run_serially_in_order_with_the_event(run: Run, tmp_path: Path) -> None:
    log = tmp_path / "log"
    first = sh(
        f'echo "a $VSWITCH_SEQ $VSWITCH_OLD $VSWITCH_NEW start" >> {log}; sleep 0.1;'
        f' echo "a $VSWITCH_SEQ end" >> {log}'
    )
    second = sh(f'echo "b $VSWITCH_SEQ $VSWITCH_CARPIF $VSWITCH_VHID" >> {log}')

    async def scenario() -> None:
        bus = EventBus("gw-a")
        runner = HookRunner([first, second])
        bus.add_listener(runner.submit)
        runner.start()
        transition(bus, 1, State.INIT, State.BACKUP)
        transition(bus, 1, State.BACKUP, State.MASTER)
        transition(bus, 2, State.INIT, State.BACKUP)
        await until(lambda: len(lines(log)) == 9, "nine lines")
        await runner.join()
        assert runner.stats() == {
            "queued": 0,
            "runs": 6,
            "failures": 0,
            "timeouts": 0,
            "overflows": 0,
        }
        await runner.aclose()

    run(scenario())
    assert lines(log) == [
        "a 1 INIT BACKUP start",
        "a 1 end",
        "b 1 carp0 1",
        "a 2 BACKUP MASTER start",
        "a 2 end",
        "b 2 carp0 1",
        "a 3 INIT BACKUP start",
        "a 3 end",
        "b 3 carp0 2",
    ]


def test_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOKTEST_MARK", "from the node")
    out = tmp_path / "env.json"
    dump = f"import json, os; json.dump(dict(os.environ), open('{out}', 'w'))"
    hook = HookSpec((sys.executable, "-c", dump))

    async def scenario() -> None:
        bus = EventBus("gw-b")
        runner = HookRunner([hook])
        bus.add_listener(runner.submit)
        runner.start()
        (event,) = bus.publish_actions(
            2.0, [StateChanged("carp1", 7, State.MASTER, State.BACKUP, Reason.PREEMPTED)]
        )
        await asyncio.wait_for(runner.join(), 20)
        await runner.aclose()
        env = json.loads(out.read_text())
        # the node's own VSWITCH_* variables (e.g. VSWITCH_REQUIRE_NETNS in CI) pass through too
        ours = {k: v for k, v in env.items() if k.startswith("VSWITCH_") and k not in os.environ}
        assert ours == hook_environment(event)
        assert json.loads(env["VSWITCH_EVENT"]) == event.to_dict()
        assert env["VSWITCH_REASON"] == "preempted by a peer"
        assert (env["VSWITCH_NODE"], env["VSWITCH_SEQ"], env["VSWITCH_OLD"]) == (
            "gw-b",
            "1",
            "MASTER",
        )
        assert env["HOOKTEST_MARK"] == "from the node"  # the node's environment is passed on

    asyncio.run(scenario())


def test_on_filters_states_and_other_events_are_ignored(tmp_path: Path) -> None:
    log = tmp_path / "log"
    only_master = sh(f'echo "$VSWITCH_SEQ $VSWITCH_NEW" >> {log}', on=frozenset({"master"}))

    async def scenario() -> None:
        bus = EventBus("gw-a", states=lambda: [])
        runner = HookRunner([only_master])
        bus.add_listener(runner.submit)
        runner.start()
        transition(bus, 1, State.INIT, State.BACKUP)
        transition(bus, 1, State.BACKUP, State.MASTER)
        bus.publish_actions(1.0, [CarrierChanged("carp0", True)])
        bus.publish_link(1.0, "lan0", "vm1", True)
        transition(bus, 1, State.MASTER, State.BACKUP)
        await asyncio.wait_for(runner.join(), 20)
        assert runner.runs == 1
        await runner.aclose()

    asyncio.run(scenario())
    assert lines(log) == ["2 MASTER"]


def test_timeout_kills_the_process_group_and_goes_on(run: Run, tmp_path: Path) -> None:
    pids, after = tmp_path / "pids", tmp_path / "after"
    # the child ignores SIGTERM: only the SIGKILL to the group gets rid of it
    stubborn = sh(f"(trap '' TERM; sleep 60) & echo $! > {pids}; trap '' TERM; wait", timeout=0.5)
    next_hook = sh(f"echo ran >> {after}")

    async def scenario() -> None:
        bus = EventBus("gw-a")
        runner = HookRunner([stubborn, next_hook], grace=0.3)
        bus.add_listener(runner.submit)
        runner.start()
        transition(bus, 1, State.BACKUP, State.MASTER)
        await asyncio.wait_for(runner.join(), 30)
        assert runner.timeouts == 1 and runner.failures == 1
        assert runner.failures_by_reason == {"timeout": 1}
        assert lines(after) == ["ran"]
        child = int(pids.read_text())
        await until(lambda: not alive(child), "the hook's child to die")
        await runner.aclose()

    run(scenario())


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead
    except (FileNotFoundError, ProcessLookupError):  # gone, or exiting as we read
        return False


def test_overflow_is_counted_not_blocking(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    go, log = tmp_path / "go", tmp_path / "log"
    waits = sh(f'while [ ! -e {go} ]; do sleep 0.02; done; echo "$VSWITCH_SEQ" >> {log}')

    async def scenario() -> None:
        bus = EventBus("gw-a")
        runner = HookRunner([waits], queue_size=2)
        bus.add_listener(runner.submit)
        runner.start()
        for vhid in range(1, 6):  # no await in between: the worker has not taken any yet
            transition(bus, vhid, State.INIT, State.BACKUP)
        assert runner.overflows == 3
        assert runner.stats()["queued"] == 2
        go.touch()
        await asyncio.wait_for(runner.join(), 20)
        await runner.aclose()

    with caplog.at_level(logging.ERROR, logger="vswitch.hooks"):
        asyncio.run(scenario())
    assert lines(log) == ["1", "2"]
    assert "hooks: queue full (2 waiting), not running hooks for event 3" in caplog.text


def test_failures_are_logged_with_output(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    failing = sh("echo something went wrong >&2; exit 3")
    missing = HookSpec((str(tmp_path / "no-such-hook"),))
    runner_reasons: list[dict[str, int]] = []

    async def scenario() -> None:
        bus = EventBus("gw-a")
        runner = HookRunner([failing, missing])
        bus.add_listener(runner.submit)
        runner.start()
        transition(bus, 1, State.INIT, State.BACKUP)
        await asyncio.wait_for(runner.join(), 20)
        assert runner.stats() == {
            "queued": 0,
            "runs": 1,
            "failures": 2,
            "timeouts": 0,
            "overflows": 0,
        }
        runner_reasons.append(dict(runner.failures_by_reason))
        await runner.aclose()

    with caplog.at_level(logging.WARNING, logger="vswitch.hooks"):
        asyncio.run(scenario())
    assert "hook sh exited with 3 for event 1: something went wrong" in caplog.text
    assert runner_reasons == [{"exit": 1, "spawn": 1}]
    assert "hook no-such-hook: cannot run" in caplog.text


def test_aclose_kills_a_running_hook(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    slow = sh(f"echo $$ > {pid_file}; sleep 60", timeout=120)

    async def scenario() -> None:
        bus = EventBus("gw-a")
        runner = HookRunner([slow])
        bus.add_listener(runner.submit)
        runner.start()
        transition(bus, 1, State.INIT, State.BACKUP)
        await until(lambda: pid_file.exists() and pid_file.read_text().strip() != "", "the hook")
        pid = int(pid_file.read_text())
        await asyncio.wait_for(runner.aclose(), 10)
        await until(lambda: not alive(pid), "the hook to die")

    asyncio.run(scenario())


def test_update_and_from_config() -> None:
    config = SimpleNamespace(command=["/usr/local/bin/notify", "--all"], timeout=3, on=["MASTER"])
    spec = HookSpec.from_config(config)
    assert spec == HookSpec(("/usr/local/bin/notify", "--all"), 3.0, frozenset({"master"}))
    assert spec.name == "notify"
    any_state = HookSpec.from_config(SimpleNamespace(command=["x"], timeout=1.5, on="any"))
    assert any_state.on == ALL_STATES
    assert HookSpec.from_config(SimpleNamespace(command=["x"])).timeout == 10.0
    runner = HookRunner([spec])
    runner.update([any_state])
    assert runner.hooks == (any_state,)


# ---- the worker survives anything one run does ----


def survivor_scenario(
    run: Run, tmp_path: Path, broken: HookSpec, expect: dict[str, int], events: int = 1
) -> None:
    """`broken` runs first for each event; a valid hook after it must still run every time."""
    after = tmp_path / "after"
    valid = sh(f'echo "$VSWITCH_SEQ" >> {after}')

    async def scenario() -> None:
        bus = EventBus("gw-a")
        runner = HookRunner([broken, valid])
        bus.add_listener(runner.submit)
        runner.start()
        for vhid in range(1, events + 1):
            transition(bus, vhid, State.INIT, State.BACKUP)
        await asyncio.wait_for(runner.join(), 20)
        assert runner.failures_by_reason == expect
        assert runner.failures == sum(expect.values())
        await runner.aclose()

    run(scenario())
    assert lines(after) == [str(seq) for seq in range(1, events + 1)]


def test_a_nul_byte_in_an_argument(
    run: Run, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # cut at the NUL (what uvloop's spawn would do) the command would leave `ran` behind
    ran = tmp_path / "ran"
    nul = HookSpec(("/bin/sh", "-c", f"touch {ran}\0; exit 0"))
    with caplog.at_level(logging.ERROR, logger="vswitch.hooks"):
        survivor_scenario(run, tmp_path, nul, {"invalid": 2}, events=2)
    assert "hook sh: a NUL byte in" in caplog.text
    assert not ran.exists()


def test_emfile_at_spawn(run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = asyncio.create_subprocess_exec
    calls = []

    async def spawn(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        calls.append(args[0])
        if args[0] == "/bin/true":
            raise OSError(errno.EMFILE, "Too many open files")
        return await real(*args, **kwargs)

    monkeypatch.setattr(hooks.asyncio, "create_subprocess_exec", spawn)
    survivor_scenario(run, tmp_path, HookSpec(("/bin/true",)), {"spawn": 2}, events=2)
    assert calls == ["/bin/true", "/bin/sh", "/bin/true", "/bin/sh"]


def test_emfile_for_the_output_file(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = tempfile.TemporaryFile
    refuse = [True]

    def temporary_file() -> Any:
        if refuse.pop(0) if refuse else False:
            raise OSError(errno.EMFILE, "Too many open files")
        return real()

    monkeypatch.setattr(hooks.tempfile, "TemporaryFile", temporary_file)
    survivor_scenario(run, tmp_path, HookSpec(("/bin/true",)), {"spawn": 1})


def test_an_unexpected_error_in_a_run(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = hooks.hook_environment
    broken = [True]

    def environment(event: Any) -> dict[str, str]:
        if broken and broken.pop():
            raise RuntimeError("a bug")
        return real(event)

    monkeypatch.setattr(hooks, "hook_environment", environment)
    survivor_scenario(run, tmp_path, HookSpec(("/bin/true",)), {"error": 1})


def test_kill_all_is_synchronous_and_the_worker_goes_on(tmp_path: Path) -> None:
    pid_file, after = tmp_path / "pid", tmp_path / "after"
    slow = sh(f"echo $$ > {pid_file}; sleep 60", timeout=120)
    next_hook = sh(f"echo ran >> {after}")

    async def scenario() -> None:
        bus = EventBus("gw-a")
        runner = HookRunner([slow, next_hook])
        bus.add_listener(runner.submit)
        runner.start()
        assert runner.kill_all() == 0
        transition(bus, 1, State.INIT, State.BACKUP)
        await until(lambda: pid_file.exists() and pid_file.read_text().strip() != "", "the hook")
        pid = int(pid_file.read_text())
        assert runner.kill_all() == 1  # what a node's `finally` does
        await until(lambda: not alive(pid), "the hook to die")
        await asyncio.wait_for(runner.join(), 20)
        assert lines(after) == ["ran"]
        assert runner.failures_by_reason == {"exit": 1}  # killed by SIGKILL
        await runner.aclose()

    asyncio.run(scenario())


def test_a_hook_dies_with_the_loop_without_aclose(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    slow = sh(f"echo $$ > {pid_file}; sleep 60", timeout=120)

    async def scenario() -> None:
        bus = EventBus("gw-a")
        runner = HookRunner([slow])
        bus.add_listener(runner.submit)
        runner.start()
        transition(bus, 1, State.INIT, State.BACKUP)
        await until(lambda: pid_file.exists() and pid_file.read_text().strip() != "", "the hook")
        # returning cancels the worker mid-run: its `finally` kills the process group

    asyncio.run(scenario())
    pid = int(pid_file.read_text())
    asyncio.run(until(lambda: not alive(pid), "the hook to die"))
