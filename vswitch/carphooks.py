"""The carp hooks of a switch (fwd.py `on_special`, `on_multicast`, `egress_filter`).

One set of hooks for both places that forward: the node process (workers = 0) and each forwarding
worker (vswitch/worker.py). What differs is passed in: how a hook's actions are carried out
(`run`), where ARP frames go for the neighbour cache (`snoop`), and how a failure is counted.

A hook that raises would leave the switch in the middle of a batch: the frames after it
unswitched and uncounted, the ports unflushed. One frame that trips a bug is dropped and counted
through `failed` instead, and the batch goes on.
"""

import functools
from collections.abc import Callable, Container, Sequence

from carp.actions import Action
from carp.datapath import DataPath
from carp.wire import frame_is_carp
from vswitch.fwd import Emit, Switch

Run = Callable[[float, list[Action]], Sequence[Emit]]
"""(now, actions of the data path) -> frames for the switch to send (deliveries, answers)."""


class CarpHooks:
    def __init__(
        self,
        datapath: DataPath,
        carp_taps: Container[str],
        run: Run,
        snoop: Callable[[float, bytes], None],
        failed: Callable[[str, Exception], None],
        direct: Container[tuple[str, str]] = (),
    ) -> None:
        self.datapath = datapath
        self.carp_taps = carp_taps
        self.run = run
        self.snoop = snoop
        self.failed = failed
        # (switch, port) whose advertisements the protocol reads itself (a worker's raw ports:
        # the node process has a socket of its own for them): here they are only switched on
        self.direct = direct

    def install(self, switch: str, fwd: Switch) -> None:
        # partials, not lambdas: no extra Python frame per frame on the carp path
        fwd.on_special = functools.partial(self.special, switch)
        fwd.on_multicast = functools.partial(self.multicast, switch)
        fwd.egress_filter = functools.partial(self.egress, switch)

    def special(
        self, switch: str, now: float, port: str, frame: bytes
    ) -> tuple[bool, Sequence[Emit]]:
        if self.direct and (switch, port) in self.direct and frame_is_carp(frame):
            return True, ()
        try:
            self.snoop(now, frame)
            emits = self.run(now, self.datapath.input(now, switch, port, frame))
            # a frame this node takes for a unicast virtual MAC (modes none, arp) is for it
            # alone; the multicast MAC of `ip` and the shared MACs of ip-unicast / ip-stealth
            # also go on to the other nodes on the segment (§6.6)
            ip = self.datapath.ip_balanced
            for name, _ in emits:
                if name is not None and name in self.datapath.tap_macs and name not in ip:
                    return False, emits
        except Exception as exc:
            self.failed(f"carp input on switch {switch}", exc)
            return False, ()  # taken by the hook, nothing sent: counted by `failed`
        return True, emits

    def multicast(self, switch: str, now: float, port: str, frame: bytes) -> Sequence[Emit]:
        if self.direct and (switch, port) in self.direct and frame_is_carp(frame):
            return ()
        try:
            self.snoop(now, frame)
            return self.run(now, self.datapath.input(now, switch, port, frame))
        except Exception as exc:
            self.failed(f"carp input on switch {switch}", exc)
            return ()  # the switch floods or counts the frame as it would without a hook

    def egress(self, switch: str, now: float, port: str, frame: bytes) -> bytes | None:
        try:
            return self.datapath.output(switch, frame, port in self.carp_taps)
        except Exception as exc:
            self.failed(f"carp output on switch {switch}", exc)
            return None  # dropped: counted as filtered by the switch
