"""Impairment and live capture on a running node (`vswitch impair`, `vswitch capture`).

The engines are pure and live beside this module: vswitch/impair.py (per port and direction a
delay line with loss, rate and partition) and vswitch/capture.py (a bounded pcapng stream).
Here they are put in the data plane's path, per switch, through one object the data plane
calls when it is there (`SwitchRuntime.watch`, see vswitch/dataplane.py):

- `received(now, port, frames)`: what a port read, before the switch sees it: captured as
  inbound, then impaired (`in`); returns what the switch gets now;
- `sending(now, port, queue)`: what the switch queued for a port, before it is written:
  impaired (`out`, the queue filtered in place), then what is written now captured as outbound.

So a capture shows a port's wire: what its peer sent and what it was given. A switch with
nothing impaired and no capture running has no such object, and the data plane pays one
attribute test per batch for the feature. Held frames leave from one loop timer at the earliest
deadline of every delay line (never a sleep in the forwarding path): inbound ones are switched
as if just read, outbound ones written (`DataPlane.release`).

An impairment is set per port by name: from the node file's `impair` table when the node starts
and when a reload changes that table (or the port itself), and by `vswitch impair` in between.
A vde port's clients (`NAME/N`) take NAME's impairment unless they have their own. A capture
names ports of one switch (none: all of them, and those that come later; a vde port: its
clients); it ends when its reader goes, its count is reached or it is stopped, and then tells
the reader in an Interface Statistics Block how many frames each port lost to its lag.
"""

import asyncio
import contextlib
import logging
import random
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from vswitch.capture import DEFAULT_LIMIT, DEFAULT_SNAPLEN, CaptureWriter
from vswitch.config import PortConfig, SwitchConfig
from vswitch.impair import Direction, ImpairChange, PortImpairment
from vswitch.impairer import Impairer
from vswitch.status import ImpairDirectionStatus, SwitchStatus
from vswitch.system import Clock, Timer

if TYPE_CHECKING:
    from vswitch.dataplane import DataPlane

log = logging.getLogger("vswitch.watch")

IN, OUT = Direction.IN, Direction.OUT
LIVE_KEYS = {"impair", "monitor"}  # port keys applied in place, no new device
BT_ISB = 0x00000005
OPT_ISB_IFDROP = 4  # isb_ifdrop: frames the capture lost (its reader lagged)


def same_device(a: PortConfig | None, b: PortConfig | None) -> bool:
    """Whether two port settings need the same device: they differ at most in what is applied
    in place (`impair`, `monitor`)."""
    if a is None or b is None:
        return a is b
    return type(a) is type(b) and a.model_dump(exclude=LIVE_KEYS) == b.model_dump(exclude=LIVE_KEYS)


def describe(config: PortImpairment) -> str:
    """`in delay 50ms loss 1%, out clear`, or one phrase when both directions are the same."""
    if config.inbound == config.outbound:
        return " ".join(config.inbound.words())
    return f"in {' '.join(config.inbound.words())}, out {' '.join(config.outbound.words())}"


def statistics_block(interface: int, ts: float, dropped: int) -> bytes:
    """A pcapng Interface Statistics Block carrying isb_ifdrop."""
    micros = round(ts * 1_000_000)
    options = struct.pack("<HHQ", OPT_ISB_IFDROP, 8, dropped) + struct.pack("<HH", 0, 0)
    body = struct.pack("<III", interface, micros >> 32, micros & 0xFFFFFFFF) + options
    length = 12 + len(body)
    return struct.pack("<II", BT_ISB, length) + body + struct.pack("<I", length)


class CaptureSession:
    """One `vswitch capture`: ports of one switch, their pcapng stream, its end."""

    def __init__(
        self,
        switch: "SwitchWatch",
        ports: frozenset[str] | None,
        writer: CaptureWriter,
        *,
        count: int | None,
        wall_offset: float,
    ) -> None:
        self.switch = switch
        self.ports = ports  # None: every port
        self.writer = writer
        self.count = count
        self.wall_offset = wall_offset  # wall clock minus the data plane's clock
        self.stopped = False  # no more frames recorded (count reached, stopped, closed)
        self.closed = False  # the reader went: nothing more is written either
        self._trailer = b""  # the statistics blocks, once stopped
        self._wakeup = asyncio.Event()

    def wants(self, port: str) -> bool:
        # a vde port carries no frames: naming it captures its clients NAME/N
        return self.ports is None or port in self.ports or port.split("/", 1)[0] in self.ports

    def record(self, now: float, port: str, direction: Direction, frames: Sequence[bytes]) -> None:
        ts = now + self.wall_offset
        writer = self.writer
        for frame in frames:
            if self.count is not None and writer.captured >= self.count:
                self.stop()
                break
            writer.record(ts, port, direction, frame)
        self._wakeup.set()

    def describe(self) -> dict[str, Any]:
        """What the acknowledgement of the request says."""
        return {
            "switch": self.switch.name,
            "ports": None if self.ports is None else sorted(self.ports),
            "snaplen": self.writer.snaplen,
            "count": self.count,
        }

    def take(self, max_bytes: int) -> bytes:
        """The next pcapng bytes (at least one block while any wait); the statistics blocks
        come last, after every frame."""
        if self.closed:
            return b""
        data = self.writer.take(max_bytes)
        if not data and self._trailer:
            data, self._trailer = self._trailer, b""
        return data

    @property
    def finished(self) -> bool:
        """Stopped or closed, and everything written was taken."""
        return self.closed or (self.stopped and not self.writer.waiting and not self._trailer)

    async def wait(self, timeout: float | None) -> None:
        """Until frames were recorded, the session stopped, or `timeout` seconds passed."""
        self._wakeup.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout)

    def stop(self) -> None:
        """No more frames; the stream ends with each port's losses (isb_ifdrop)."""
        if self.stopped:
            return
        self.stopped = True
        self.switch.remove_capture(self)
        writer = self.writer
        ts = time.time()
        self._trailer = b"".join(
            statistics_block(interface, ts, writer.lost_by_port.get(port, 0))
            for port, interface in writer.interfaces.items()
        )
        self._wakeup.set()

    def close(self) -> None:
        """The reader went: stop recording and drop what waits."""
        self.stop()
        self.closed = True


class SwitchWatch:
    """Impairments and captures of one switch's ports; the data plane calls it while it has
    anything to do (`active`)."""

    def __init__(self, watch: "Watch", name: str, offset: int) -> None:
        self.watch = watch
        self.name = name
        self.offset = offset  # the switch's virtio-net header length
        self.settings: dict[str, PortImpairment] = {}  # set per port (file or command)
        self.impairers: dict[str, Impairer] = {}
        self.inherited: set[str] = set()  # vde clients impaired with their parent's setting
        self.captures: list[CaptureSession] = []

    @property
    def active(self) -> bool:
        return bool(self.captures) or any(not i.idle for i in self.impairers.values())

    # -- the data plane's calls ----------------------------------------------------------------

    def received(self, now: float, port: str, frames: list[bytes]) -> list[bytes]:
        for capture in self.captures:
            if capture.wants(port):
                capture.record(now, port, IN, frames)
        impairer = self._impairer(port)
        if impairer is None:
            return frames
        line = impairer.lines.get(IN)
        if line is None:
            return frames
        passed = line.submit(now, frames)
        if line.held:
            self.watch.schedule(line.deadline())
        return passed

    def sending(self, now: float, port: str, queue: list[bytes]) -> None:
        impairer = self._impairer(port)
        line = impairer.lines.get(OUT) if impairer is not None else None
        if line is not None:
            queue[:] = line.submit(now, queue)
            if line.held:
                self.watch.schedule(line.deadline())
        if queue:
            for capture in self.captures:
                if capture.wants(port):
                    capture.record(now, port, OUT, queue)

    def _impairer(self, port: str) -> Impairer | None:
        impairer = self.impairers.get(port)
        if impairer is None and "/" in port:
            parent = self.settings.get(port.split("/", 1)[0])
            if parent is not None and port not in self.settings:
                impairer = self._set(port, parent)
                self.inherited.add(port)
        return impairer

    # -- settings ------------------------------------------------------------------------------

    def set(self, port: str, config: PortImpairment) -> None:
        """Port `port` (and the vde clients that inherit from it) impaired so from now on."""
        self.settings[port] = config
        self.inherited.discard(port)
        self._set(port, config)
        for child in [c for c in self.inherited if c.split("/", 1)[0] == port]:
            self._set(child, config)

    def _set(self, port: str, config: PortImpairment) -> Impairer | None:
        impairer = self.impairers.get(port)
        if impairer is None:
            if config == PortImpairment():
                return None
            impairer = self.impairers[port] = Impairer(self.watch.rng, offset=self.offset)
        impairer.set(config)
        return impairer

    def forget(self, keep: Iterable[str]) -> None:
        """Drop what belongs to ports no longer on the switch (their held frames too)."""
        present = set(keep)
        for port in [p for p in self.impairers if p not in present]:
            del self.impairers[port]
            self.inherited.discard(port)
        for port in [p for p in self.settings if p not in present]:
            del self.settings[port]

    def current(self, port: str) -> PortImpairment:
        impairer = self.impairers.get(port)
        return impairer.config if impairer is not None else PortImpairment()

    # -- captures ------------------------------------------------------------------------------

    def add_capture(self, capture: CaptureSession) -> None:
        self.captures.append(capture)

    def remove_capture(self, capture: CaptureSession) -> None:
        if capture in self.captures:
            self.captures.remove(capture)
            self.watch.ended(capture)
        self.watch.install(self.name)

    # -- held frames and status ----------------------------------------------------------------

    def deadline(self) -> float | None:
        times = [d for i in self.impairers.values() if (d := i.deadline()) is not None]
        return min(times) if times else None

    def release(self, now: float) -> list[tuple[str, list[bytes], list[bytes]]]:
        """(port, inbound, outbound) frames due now; the outbound ones are captured here, as
        they are about to be written."""
        out = []
        for port, impairer in self.impairers.items():
            due = impairer.release(now)
            if due:
                outbound = due.get(OUT, [])
                if outbound:
                    for capture in self.captures:
                        if capture.wants(port):
                            capture.record(now, port, OUT, outbound)
                out.append((port, due.get(IN, []), outbound))
        return out

    def port_status(self, port: str) -> dict[str, ImpairDirectionStatus]:
        impairer = self.impairers.get(port)
        if impairer is None:
            return {}
        out: dict[str, ImpairDirectionStatus] = {}
        for direction, line in impairer.lines.items():
            out[str(direction)] = {
                "config": line.impairment.table(),
                "passed": line.passed,
                "held": line.held,
                "drops": dict(line.drops),
            }
        return out


class Watch:
    """The node's impairments and captures: one SwitchWatch per switch and one loop timer for
    every delay line."""

    def __init__(
        self,
        dataplane: "DataPlane",
        clock: Clock,
        *,
        rng: random.Random | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.dataplane = dataplane
        self.clock = clock
        self.rng = rng if rng is not None else random.Random()
        self.wall = wall
        self.switches: dict[str, SwitchWatch] = {}
        self.captured = 0  # frames recorded by captures that ended
        self.lost = 0  # frames captures lost to their readers' lag, of captures that ended
        self.sessions = 0  # captures started
        self.release_errors = 0
        self._timer: Timer | None = None
        self._deadline: float | None = None
        self._closed = False

    def switch(self, name: str) -> SwitchWatch:
        watch = self.switches.get(name)
        if watch is None:
            offset = self.dataplane.switch(name).vnet_hdr
            watch = self.switches[name] = SwitchWatch(self, name, offset)
        return watch

    def install(self, name: str) -> None:
        """Put the switch's watch in the data path while it has something to do, else take it
        out: a switch without impairment or capture pays nothing for them."""
        rt = self.dataplane.switches.get(name)
        watch = self.switches.get(name)
        if rt is not None:
            rt.watch = watch if watch is not None and watch.active else None

    # -- impairment ----------------------------------------------------------------------------

    def _port(self, switch: str, port: str) -> None:
        rt = self.dataplane.switches.get(switch)
        if rt is None:
            known = ", ".join(self.dataplane.switches) or "none"
            raise ValueError(f"no switch {switch} (switches: {known})")
        if port not in rt.fwd.ports:
            known = ", ".join(rt.fwd.ports) or "none"
            raise ValueError(f"switch {switch} has no port {port} (ports: {known})")

    def impair(self, switch: str, port: str, change: ImpairChange) -> PortImpairment:
        """`vswitch impair SWITCH PORT ...`: the port's impairment after the change."""
        self._port(switch, port)
        watch = self.switch(switch)
        config = change.apply(watch.current(port))
        self.set_impairment(switch, port, config)
        return config

    def set_impairment(self, switch: str, port: str, config: PortImpairment) -> None:
        self.switch(switch).set(port, config)
        self.install(switch)

    def impairment(self, switch: str, port: str) -> PortImpairment:
        watch = self.switches.get(switch)
        return watch.current(port) if watch is not None else PortImpairment()

    def configure(self, name: str, after: SwitchConfig, before: SwitchConfig | None) -> list[str]:
        """What the node file says of a switch's ports that applies in place: monitor ports and
        impairments. `before` None: the node starts (every port set); else a reload, which sets
        the ports whose setting or device changed and keeps what `vswitch impair` set on the
        others. Returns what changed."""
        fwd = self.dataplane.switch(name)
        old = {p.name: p for p in before.ports} if before is not None else {}
        changes: list[str] = []
        watch = self.switch(name)
        watch.forget(fwd.ports)
        for port in after.ports:
            if port.name not in fwd.ports:
                continue
            was = old.get(port.name)
            if fwd.ports[port.name].monitor != port.monitor:
                fwd.set_monitor(port.name, port.monitor)
                # vde clients follow their port
                for child in [c for c in fwd.ports if c.startswith(f"{port.name}/")]:
                    fwd.set_monitor(child, port.monitor)
                if before is not None:
                    state = "a monitor port" if port.monitor else "not a monitor port"
                    changes.append(f"switch {name}: port {port.name} {state}")
            wanted = port.impair or PortImpairment()
            fresh = was is None or not same_device(was, port)
            if fresh or (was is not None and was.impair != port.impair):
                if before is not None and watch.current(port.name) != wanted:
                    changes.append(f"switch {name}: port {port.name} impair {describe(wanted)}")
                watch.set(port.name, wanted)
        self.install(name)
        return changes

    # -- the timer -----------------------------------------------------------------------------

    def schedule(self, deadline: float | None) -> None:
        """A delay line holds a frame due at `deadline`: the timer fires by then."""
        if deadline is None or self._closed:
            return
        if self._deadline is not None and self._deadline <= deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._deadline = deadline
        self._timer = self.clock.call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._deadline = None
        now = self.clock()
        for name, watch in self.switches.items():
            for port, inbound, outbound in watch.release(now):
                try:
                    self.dataplane.release(name, port, inbound, outbound)
                except Exception as exc:  # a side channel must not stop the timer
                    self.release_errors += 1
                    log.error("releasing held frames of %s %s failed: %s", name, port, exc)
            self.install(name)
        times = [d for w in self.switches.values() if (d := w.deadline()) is not None]
        self.schedule(min(times) if times else None)

    # -- capture -------------------------------------------------------------------------------

    def capture(
        self,
        switch: str,
        ports: Sequence[str] = (),
        *,
        snaplen: int | None = None,
        count: int | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> CaptureSession:
        """A new capture of `ports` of `switch` (none: all); ValueError names what is wrong."""
        rt = self.dataplane.switches.get(switch)
        if rt is None:
            known = ", ".join(self.dataplane.switches) or "none"
            raise ValueError(f"no switch {switch} (switches: {known})")
        unknown = [p for p in ports if p not in rt.fwd.ports]
        if unknown:
            known = ", ".join(rt.fwd.ports) or "none"
            raise ValueError(f"switch {switch} has no port {', '.join(unknown)} (ports: {known})")
        if count is not None and count <= 0:
            raise ValueError(f"count {count}: give a positive number of frames")
        snap = DEFAULT_SNAPLEN if snaplen is None else snaplen
        if not 0 < snap <= DEFAULT_SNAPLEN:
            raise ValueError(f"snaplen {snap}: give 1 to {DEFAULT_SNAPLEN} bytes")
        watch = self.switch(switch)
        named = sorted(set(ports)) if ports else list(rt.fwd.ports)
        shown = [p for p in named if p in rt.fwd.ports and "/" not in p]
        writer = CaptureWriter(shown, switch=switch, snaplen=snap, limit=limit, offset=watch.offset)
        session = CaptureSession(
            watch,
            frozenset(ports) if ports else None,
            writer,
            count=count,
            wall_offset=self.wall() - self.clock(),
        )
        watch.add_capture(session)
        self.sessions += 1
        self.install(switch)
        return session

    def stats(self) -> dict[str, int]:
        """The `capture` side channel: captures running, frames captured and lost (all time)."""
        running = [c for w in self.switches.values() for c in w.captures]
        return {
            "sessions": self.sessions,
            "running": len(running),
            "captured": self.captured + sum(c.writer.captured for c in running),
            "lost": self.lost + sum(c.writer.lost for c in running),
            "release_errors": self.release_errors,
        }

    def ended(self, session: CaptureSession) -> None:
        """A capture's counters join the totals (called once, when it stops)."""
        self.captured += session.writer.captured
        self.lost += session.writer.lost

    # -- status --------------------------------------------------------------------------------

    def annotate(self, switches: list[SwitchStatus]) -> None:
        """Each impaired port's `impair` in the status snapshot."""
        for sw in switches:
            watch = self.switches.get(sw["name"])
            if watch is None:
                continue
            for port in sw["ports"]:
                shown = watch.port_status(port["name"])
                if shown:
                    port["impair"] = shown

    def close(self) -> None:
        """Stop the timer and every capture (the data plane closes its ports itself)."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for watch in self.switches.values():
            for capture in list(watch.captures):
                capture.close()
