"""The node's forwarding workers (`[node] workers = N`): spawned, fed and counted from here.

With N workers every TAP (ports, host ports, carp TAPs) has N queues and every raw port N
sockets in one PACKET_FANOUT group; worker i reads queue i of each (vswitch/worker.py). The node
process reads none of them: it runs the protocol, the control socket and the socket ports, and
writes to the TAPs and raw ports only what it sends itself (advertisements, ARP) or what its
socket ports send on. So the protocol never waits behind a forwarding batch, and forwarding is
spread over N processes by the kernel's flow hash.

The pool publishes the node's `State` (carp decisions, special MACs, links) to every worker when
it changes, and keeps what each worker last counted (`share`), which the data plane adds to
its own counts. A change of the ports (reload, `vswitch port`, a vde client) starts a new set of
workers with the new layout; each old worker reads on until its successor serves, so the queues
are never unread. Before the node closes a device they read, the workers are stopped and waited
for (`stop_all`): their copies of its fds would keep the TAP. A worker that dies is started
again (counted in `restarts`).
"""

import asyncio
import logging
import socket
import subprocess
import sys
from collections.abc import Callable, Container
from dataclasses import dataclass, field

from carp.datapath import DataPathStats
from vswitch.accounting import Share, add_device_counters, add_port_counters
from vswitch.dataplane import DataPlane
from vswitch.port import set_buffers
from vswitch.raw import RawPort
from vswitch.status import WorkersStatus
from vswitch.tap import TapPort
from vswitch.workerproto import (
    MAX_MESSAGE,
    Layout,
    PortLayout,
    State,
    SwitchLayout,
    WorkerCounts,
    decode,
    encode,
)

log = logging.getLogger("vswitch.workers")
DELEGATED = frozenset(("tap", "raw"))  # the device kinds workers read
STOP_TIMEOUT = 2.0  # seconds a stopped worker has before SIGKILL
READY_TIMEOUT = 5.0  # seconds the set before a relayout reads on if its successor never serves
RESTART_DELAY = 0.2  # seconds before a worker that died is started again (doubled to 10 s)
MAX_RESTART_DELAY = 10.0
MESSAGE_BATCH = 64  # messages read per readiness event
MAX_DRAIN = 4096  # messages read from a stopped worker's channel before it is closed

Handler = Callable[[tuple[object, ...]], None]


def layouts(
    dp: DataPlane,
    count: int,
    carp_taps: set[str],
    state: State,
    direct: Container[tuple[str, str]] = (),
) -> list[Layout]:
    """What worker 0..count-1 serves of the data plane's switches; `direct`: the (switch, port)
    pairs whose advertisements the node reads itself."""
    out = []
    for index in range(count):
        switches = []
        for name, rt in dp.switches.items():
            ports = []
            for pname, dev in rt.devices.items():
                fport = rt.fwd.ports[pname]
                served = dev.kind in DELEGATED
                if served and len(dev.fds) != count:
                    raise ValueError(f"port {pname}: {len(dev.fds)} queues for {count} workers")
                ports.append(
                    PortLayout(
                        name=pname,
                        kind=dev.kind if served else "relay",
                        fd=dev.fds[index] if served else -1,
                        kernel=fport.kernel,
                        flood=fport.flood,
                        monitor=fport.monitor,
                        carp_tap=pname in carp_taps,
                        role=rt.roles.get(pname),
                        bufsize=dev.bufsize if isinstance(dev, TapPort) else 0,
                        max_plain=dev.max_plain if isinstance(dev, RawPort) else 0,
                        skips_outgoing=dev.kernel_skips_outgoing
                        if isinstance(dev, RawPort)
                        else True,
                        direct=(name, pname) in direct,
                    )
                )
            switches.append(
                SwitchLayout(name, rt.fwd.mode, rt.fwd.ageing, rt.offload, tuple(ports))
            )
        out.append(Layout(index, tuple(switches), state))
    return out


@dataclass(eq=False)
class Proc:
    index: int
    layout: Layout
    proc: subprocess.Popen[bytes]
    channel: socket.socket
    ready: bool = False
    stopping: bool = False
    counts: WorkerCounts = field(default_factory=WorkerCounts)
    pending: bytes | None = None  # the newest State that did not fit into the channel
    replaces: "Proc | None" = None  # the worker of the set before, stopped once this one serves
    closing: bool = False  # its channel being drained
    finished: bool = False  # gone, its channel closed, its counts in the pool's past ones


class WorkerPool:
    def __init__(self, loop: asyncio.AbstractEventLoop, count: int, handler: Handler) -> None:
        self.loop = loop
        self.count = count
        self.handler = handler
        self.procs: list[Proc] = []
        self.retired: list[Proc] = []  # stopped, not yet reaped
        self.restarts = 0
        self.lost = 0  # messages from workers that could not be read
        self.closed = False
        # what workers of earlier sets counted, kept so that totals never go back
        self._past: WorkerCounts = WorkerCounts()
        self._past_shares: dict[str, Share] = {}
        self._buffer = bytearray(MAX_MESSAGE)  # one receive buffer: no 4 MiB per message
        self._view = memoryview(self._buffer)
        # called after each batch of messages (the node's `_due`, as DataPlane.between_batches)
        self.after_batch: Callable[[], None] | None = None

    # -- starting and stopping

    def start(self, new: list[Layout]) -> None:
        """Start a set of workers with these layouts. Each worker of the running set is stopped
        when its successor serves (or after READY_TIMEOUT): their readers overlap for a moment,
        so no queue goes unread. OSError when a worker cannot be started: the running set
        stays, what was started of the new one is stopped."""
        started: list[Proc] = []
        try:
            for layout in new:
                started.append(self._spawn(layout))
        except BaseException:
            for p in started:
                self._retire(p)
            raise
        old, self.procs = self.procs, started
        for i, p in enumerate(old):
            if i < len(started):
                started[i].replaces = p
                self.loop.call_later(READY_TIMEOUT, self._retire, p)
            else:
                self._retire(p)

    def relayout(self, new: list[Layout]) -> None:
        """After a change: new workers when the ports changed, else only the new state."""
        if [p.layout.switches for p in self.procs] != [x.switches for x in new]:
            self.start(new)
        elif new:
            self.publish(new[0].state)

    def stop_all(self) -> None:
        """Stop every worker and wait for it: before the node closes a device they read (a TAP
        stays while any process holds a queue of it, so a new one of that name could not be
        made). `relayout` starts a new set afterwards."""
        for p in self.procs:
            self._retire(p)
        self.procs = []
        for p in list(self.retired):
            self._reap(p, wait=STOP_TIMEOUT)

    def _spawn(self, layout: Layout) -> Proc:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for sock in (parent, child):
            set_buffers(sock, MAX_MESSAGE)
        fds = [p.fd for sw in layout.switches for p in sw.ports if p.fd >= 0]
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "vswitch.worker", str(child.fileno())],
                pass_fds=(child.fileno(), *fds),
                stdin=subprocess.DEVNULL,
            )
        finally:
            child.close()
        try:
            parent.sendall(encode(layout))
        except OSError:
            parent.close()
            proc.kill()
            proc.wait()
            raise
        parent.setblocking(False)
        p = Proc(layout.index, layout, proc, parent)
        self.loop.add_reader(parent.fileno(), self._readable, p)
        return p

    def _retire(self, p: Proc) -> None:
        """Stop a worker: our end of its channel half-closed is its EOF; it sends its last
        counts and exits, and its end closing is ours (`_finish`)."""
        if p.stopping:
            return
        p.stopping = True
        p.ready = False
        self.loop.remove_writer(p.channel.fileno())  # a State may be waiting for room
        try:
            p.channel.shutdown(socket.SHUT_WR)
        except OSError:
            self._finish(p)
        self.retired.append(p)
        self.loop.call_later(STOP_TIMEOUT, self._reap, p)  # a no-op once stop_all reaped it

    def _reap(self, p: Proc, wait: float = 0.0) -> None:
        try:
            p.proc.wait(wait)
        except subprocess.TimeoutExpired:
            p.proc.kill()
            p.proc.wait()
        self._finish(p)
        if p in self.retired:
            self.retired.remove(p)

    def _finish(self, p: Proc) -> None:
        """A stopped worker is gone: what is left in its channel is read (its last counts),
        and its counts go to the past ones."""
        if p.finished or p.closing:
            return
        p.closing = True
        if not self.closed:
            self._drain(p)
        p.finished = True
        self._keep_counts(p)
        self.loop.remove_reader(p.channel.fileno())
        self.loop.remove_writer(p.channel.fileno())
        p.channel.close()

    def _keep_counts(self, p: Proc) -> None:
        for name, share in _shares([p.counts]).items():
            share.macs = frozenset()  # what it learned went with it
            past = self._past_shares.get(name)
            self._past_shares[name] = share if past is None else _add_share(past, share)
        self._past.datapath = _add_stats(self._past.datapath, p.counts.datapath)
        for k, v in p.counts.errors.items():
            self._past.errors[k] = self._past.errors.get(k, 0) + v

    def _died(self, p: Proc) -> None:
        """Its channel ended: a stopped worker's last word, or a worker that died."""
        if p.stopping or self.closed:
            self._finish(p)
            return
        self.restarts += 1
        log.error("forwarding worker %d exited (%s); starting it again", p.index, p.proc.poll())
        p.stopping = True
        p.ready = False
        self._finish(p)
        self.loop.call_later(STOP_TIMEOUT, self._reap, p)  # collect the process
        self.loop.call_later(RESTART_DELAY, self._again, p, RESTART_DELAY)

    def _again(self, p: Proc, delay: float) -> None:
        if self.closed or p not in self.procs:
            return  # replaced or stopped meanwhile
        try:
            self.procs[self.procs.index(p)] = self._spawn(p.layout)
        except Exception as exc:  # retried, slower each time: 1/N of the flows wait for it
            log.error("forwarding worker %d cannot be started: %s", p.index, exc)
            later = min(delay * 2, MAX_RESTART_DELAY)
            self.loop.call_later(later, self._again, p, later)

    def close(self) -> None:
        """Stop every worker and wait for them: their copies of the fds keep the TAPs."""
        if self.closed:
            return
        self.closed = True
        for p in self.procs + self.retired:
            self._finish(p)  # its channel closed: the worker stops
            if p.proc.poll() is None:
                p.proc.terminate()
        for p in self.procs + self.retired:
            try:
                p.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                p.proc.kill()
                p.proc.wait()
        self.procs = []
        self.retired = []

    # -- messages

    def publish(self, state: State) -> None:
        data = encode(state)
        for p in self.procs:
            p.layout = Layout(p.layout.index, p.layout.switches, state)
            p.pending = data
            self._flush(p)

    def _flush(self, p: Proc) -> None:
        if p.pending is None or p.stopping:
            return
        try:
            p.channel.send(p.pending)
        except BlockingIOError:
            self.loop.add_writer(p.channel.fileno(), self._flush_ready, p)
            return
        except OSError:
            return  # the worker is gone: _readable sees it
        p.pending = None

    def _flush_ready(self, p: Proc) -> None:
        if p.stopping:
            return
        self.loop.remove_writer(p.channel.fileno())
        self._flush(p)

    def _readable(self, p: Proc) -> None:
        # a batch of messages at most, then the node's protocol clock gets its turn: frames
        # relayed for socket ports must not hold up an advertisement (DataPlane's batches too)
        self._read(p, MESSAGE_BATCH)
        if self.after_batch is not None:
            self.after_batch()

    def _drain(self, p: Proc) -> None:
        self._read(p, MAX_DRAIN)

    def _read(self, p: Proc, limit: int) -> None:
        view = self._view
        for _ in range(limit):
            if p.finished:
                break  # closed meanwhile (a handler's doing)
            try:
                n = p.channel.recv_into(self._buffer)
            except BlockingIOError:
                break
            except OSError:
                n = 0
            if not n:
                if not p.closing:
                    self._died(p)
                break
            try:
                message = decode(view[:n])
            except Exception:
                self.lost += 1
                continue
            if not isinstance(message, tuple) or len(message) < 2:
                self.lost += 1
            elif message[0] == "counts":
                if isinstance(message[1], WorkerCounts):
                    p.counts = message[1]
                else:
                    self.lost += 1
            elif message[0] == "ready":
                p.ready = True
                if p.replaces is not None:
                    self._retire(p.replaces)  # its successor serves now
                    p.replaces = None
            else:
                self.handler(message)

    # -- counts

    def _live(self) -> list[Proc]:
        return [p for p in self.procs if not p.stopping]

    def _counted(self) -> list[Proc]:
        # workers not finished yet, each once (a dead one waits in procs for its successor);
        # a finished one's counts are in the past ones
        unique = {id(p): p for p in self.procs + self.retired if not p.finished}
        return list(unique.values())

    def share(self, switch: str) -> Share | None:
        shares = _shares([p.counts for p in self._counted()])
        now = shares.get(switch)
        past = self._past_shares.get(switch)
        if now is None or past is None:
            return now or past
        return _add_share(past, now)

    def datapath_stats(self, own: DataPathStats) -> dict[str, int]:
        """The node's own data path figures plus every worker's."""
        total = _add_stats(own, self._past.datapath)
        for p in self._counted():
            total = _add_stats(total, p.counts.datapath)
        return total.as_dict()

    def status(self) -> WorkersStatus:
        errors = dict(self._past.errors)
        for p in self._counted():
            for k, v in p.counts.errors.items():
                errors[k] = errors.get(k, 0) + v
        return {
            "count": self.count,
            "pids": [p.proc.pid for p in self._live()],
            "ready": sum(p.ready for p in self._live()),
            "restarts": self.restarts,
            "lost_messages": self.lost,
            "errors": errors,
        }


def _shares(counts: list[WorkerCounts]) -> dict[str, Share]:
    out: dict[str, Share] = {}
    for c in counts:
        for name, ports in c.ports.items():
            share = Share(
                dict(ports),
                c.macs.get(name, frozenset()),
                c.table_full.get(name, 0),
                c.bad_emits.get(name, 0),
            )
            out[name] = share if name not in out else _add_share(out[name], share)
    return out


def _add_share(a: Share, b: Share) -> Share:
    ports = dict(a.ports)
    for name, (pc, dc) in b.ports.items():
        if name in ports:
            ports[name] = (
                add_port_counters(ports[name][0], pc),
                add_device_counters(ports[name][1], dc),
            )
        else:
            ports[name] = (pc, dc)
    return Share(ports, a.macs | b.macs, a.table_full + b.table_full, a.bad_emits + b.bad_emits)


def _add_stats(a: DataPathStats, b: DataPathStats) -> DataPathStats:
    return DataPathStats(**{k: v + getattr(b, k) for k, v in a.as_dict().items()})
