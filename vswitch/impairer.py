"""The impairment engine (design.md §2, `vswitch impair`): delay, jitter, loss, rate, partition.

Pure: no I/O and no clock (`now` is passed in) and no global randomness (a `random.Random` is
handed in, so tests and labs can replay a run). Per port and direction a `Line` applies its
`Impairment` (vswitch/impair.py, which parses the words and the node file's table), in this
order:

- `partition`: drop every frame, or with `partition carp` only IP protocol 112 (CARP; VRRP shares
  it), IPv4 and IPv6 (`carp.wire.frame_is_carp`), so the data path keeps working while the nodes
  stop hearing each other;
- `loss`: drop each frame with that probability (0-100 %);
- `rate`: a token bucket (bits/s, a 5 ms burst) in front of a queue bounded to QUEUE_SECONDS of
  backlog; a frame that would wait longer is dropped (`queue`);
- `delay` and `jitter`: the frame leaves `delay` ± a uniform `jitter` later, never before a frame
  that entered before it (a link delays, it does not reorder).

Held frames wait in a time-ordered delay line (a heap) of at most HOLD_FRAMES frames and
HOLD_BYTES bytes (else `limit`); `deadline()` is when the event loop must call `release(now)`,
never a sleep on the forwarding path. A change of impairment applies to frames entering from
then on: frames already held leave at their deadlines.
"""

import heapq
import math
import random
from collections.abc import Iterable, Sequence

from carp.wire import frame_is_carp
from vswitch.impair import Direction, ImpairChange, Impairment, Partition, PortImpairment

BURST_SECONDS = 0.005  # the token bucket holds 5 ms of rate (at least one full frame)
MIN_BURST_BITS = 1514 * 8
QUEUE_SECONDS = 0.5  # backlog the rate queue may hold before it drops (tbf's `latency`)
HOLD_FRAMES = 10_000  # bound of the delay line, per port and direction
HOLD_BYTES = 32 << 20
DROP_REASONS = ("partition", "loss", "queue", "limit")


class Line:
    """One direction of one port: `submit` frames, `release` them when their time comes."""

    def __init__(self, impairment: Impairment, rng: random.Random, *, offset: int = 0) -> None:
        self.impairment = impairment
        self.offset = offset  # a virtio-net header before the Ethernet header
        self.passed = 0
        self.drops: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        self.held_bytes = 0
        self._rng = rng
        self._heap: list[tuple[float, int, bytes]] = []
        self._seq = 0
        self._last = -math.inf  # deadline of the last frame in: none may leave before it
        self._tokens = 0.0  # bits in the bucket at _tok_time (negative: a big frame's debt)
        self._tok_time = -math.inf

    def set(self, impairment: Impairment) -> None:
        """A new impairment for frames entering from now on; the held ones keep their time."""
        if impairment.rate != self.impairment.rate:
            self._tok_time = -math.inf  # a fresh, full bucket
        self.impairment = impairment

    @property
    def held(self) -> int:
        return len(self._heap)

    @property
    def idle(self) -> bool:
        """Nothing to impair and nothing held: the port needs no line."""
        return self.impairment.clear and not self._heap

    def deadline(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def counters(self) -> dict[str, int]:
        return {"passed": self.passed, "held": len(self._heap)} | self.drops

    def submit(self, now: float, frames: Iterable[bytes]) -> list[bytes]:
        """Take frames in; returns those that pass at once (in order), holds or drops the rest."""
        imp = self.impairment
        out: list[bytes] = []
        for frame in frames:
            if imp.partition is Partition.ALL or (
                imp.partition is Partition.CARP and frame_is_carp(frame, self.offset)
            ):
                self.drops["partition"] += 1
                continue
            if imp.loss and self._rng.random() * 100 < imp.loss:
                self.drops["loss"] += 1
                continue
            size = len(frame) - self.offset
            due = now
            bucket: tuple[float, float] | None = None
            if imp.rate:
                bucket = self._bucket(now, size * 8)
                if bucket is None:
                    self.drops["queue"] += 1
                    continue
                due = bucket[0]
            if imp.delay or imp.jitter:
                wander = self._rng.uniform(-imp.jitter, imp.jitter) if imp.jitter else 0.0
                due += max(0.0, imp.delay + wander)
            due = max(due, self._last)
            if due <= now and not self._heap:
                out.append(frame)
                self.passed += 1
            elif len(self._heap) >= HOLD_FRAMES or self.held_bytes + size > HOLD_BYTES:
                self.drops["limit"] += 1
                continue
            else:
                self._seq += 1
                heapq.heappush(self._heap, (due, self._seq, frame))
                self.held_bytes += size
            if bucket is not None:
                self._tok_time, self._tokens = bucket
            self._last = due
        return out

    def _bucket(self, now: float, bits: int) -> tuple[float, float] | None:
        """(departure, tokens left then) for a frame of `bits`, None when it would wait more
        than QUEUE_SECONDS. FIFO: it starts when the frame before it has left."""
        rate = self.impairment.rate
        burst = max(rate * BURST_SECONDS, MIN_BURST_BITS)
        start = max(now, self._tok_time)
        if self._tok_time == -math.inf:
            tokens = burst
        else:
            tokens = min(burst, self._tokens + (start - self._tok_time) * rate)
        need = min(bits, burst)  # a frame larger than the bucket leaves in debt
        depart = start + max(0.0, (need - tokens) / rate)
        if depart - now > QUEUE_SECONDS:
            return None
        return depart, tokens + (depart - start) * rate - bits

    def release(self, now: float) -> list[bytes]:
        """The held frames whose time has come, in order."""
        heap = self._heap
        out: list[bytes] = []
        while heap and heap[0][0] <= now:
            frame = heapq.heappop(heap)[2]
            self.held_bytes -= len(frame) - self.offset
            out.append(frame)
        self.passed += len(out)
        return out


class Impairer:
    """Both directions of one port; a direction gets a Line when first impaired."""

    def __init__(self, rng: random.Random, *, offset: int = 0) -> None:
        self.rng = rng
        self.offset = offset
        self.config = PortImpairment()
        self.lines: dict[Direction, Line] = {}

    def set(self, config: PortImpairment) -> None:
        self.config = config
        for direction in Direction:
            impairment = config.get(direction)
            line = self.lines.get(direction)
            if line is not None:
                line.set(impairment)
            elif not impairment.clear:
                self.lines[direction] = Line(impairment, self.rng, offset=self.offset)

    def apply(self, change: ImpairChange) -> PortImpairment:
        self.set(change.apply(self.config))
        return self.config

    def submit(self, now: float, direction: Direction, frames: Sequence[bytes]) -> list[bytes]:
        line = self.lines.get(direction)
        return list(frames) if line is None else line.submit(now, frames)

    @property
    def idle(self) -> bool:
        """Nothing impaired and nothing held: the port can do without it (and its counters)."""
        return all(line.idle for line in self.lines.values())

    def release(self, now: float) -> dict[Direction, list[bytes]]:
        """The frames due, per direction."""
        out: dict[Direction, list[bytes]] = {}
        for direction, line in self.lines.items():
            frames = line.release(now)
            if frames:
                out[direction] = frames
        return out

    def deadline(self) -> float | None:
        times = [t for t in (line.deadline() for line in self.lines.values()) if t is not None]
        return min(times) if times else None

    def counters(self) -> dict[str, dict[str, int]]:
        return {str(d): line.counters() for d, line in self.lines.items()}
