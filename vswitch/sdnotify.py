"""sd_notify(3) for a node run by systemd: READY, RELOADING, STOPPING, STATUS and the watchdog.

Written out rather than taken from the `sdnotify` package (unmaintained): a datagram of
`KEY=value` lines to the AF_UNIX socket named by NOTIFY_SOCKET, a path or an abstract `@name`.
It is a side channel: sends are non-blocking, a failure is counted and logged once, nothing here
raises, and without NOTIFY_SOCKET (not started by systemd) every call does nothing.

The node sends READY=1 once it serves; RELOADING=1 with MONOTONIC_USEC, then READY=1, around a
reload (what `Type=notify-reload` waits for); STOPPING=1 when it bows out; STATUS= with its carp
states (`status_text`); and WATCHDOG=1 every `watchdog_interval()` seconds from its event loop
(`start_watchdog`), so a stuck loop is restarted by systemd.
"""

import errno
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import TYPE_CHECKING

from vswitch.status import CarpIfStatus

if TYPE_CHECKING:
    import asyncio

log = logging.getLogger("vswitch.sdnotify")

ENV_SOCKET = "NOTIFY_SOCKET"
ENV_WATCHDOG_USEC = "WATCHDOG_USEC"
ENV_WATCHDOG_PID = "WATCHDOG_PID"


def socket_address(value: str | None) -> str | bytes | None:
    """NOTIFY_SOCKET as an AF_UNIX address: an absolute path, or `@name` for the abstract
    namespace (a leading NUL byte); None for anything else (unset, relative, vsock:...)."""
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None


def watchdog_usec(environ: Mapping[str, str], pid: int) -> int | None:
    """WATCHDOG_USEC when it is meant for process `pid` (WATCHDOG_PID unset or equal)."""
    owner = environ.get(ENV_WATCHDOG_PID)
    if owner is not None and owner.strip() != str(pid):
        return None  # the watchdog belongs to another process of the unit
    try:
        usec = int(environ.get(ENV_WATCHDOG_USEC, ""))
    except ValueError:
        return None
    return usec if usec > 0 else None


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, as MONOTONIC_USEC= wants it (time.monotonic's clock)."""
    return time.monotonic_ns() // 1000


def status_text(carp: Iterable[CarpIfStatus]) -> str:
    """One line for STATUS= from the carp part of the status (`NodeController.carp_status()`):
    each carp interface with its carpnodes' states, `carp0 MASTER, carp1 2:MASTER 3:BACKUP`
    (vhid:state when it has several)."""
    parts = []
    for carpif in carp:
        nodes = carpif["carpnodes"]
        if len(nodes) == 1:
            states = nodes[0]["state"]
        else:
            states = " ".join(f"{node['vhid']}:{node['state']}" for node in nodes)
        parts.append(f"{carpif['name']} {states}" if nodes else f"{carpif['name']} no carpnodes")
    return ", ".join(parts) if parts else "no carp interfaces"


class Notifier:
    """Messages to the service manager; `from_env()` builds it from systemd's variables."""

    def __init__(self, address: str | bytes | None, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec if address is not None else None
        self.sent = 0
        self.dropped = 0
        self._warned = False
        self._sock: socket.socket | None = None
        if address is not None:
            try:
                self._sock = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
                )
            except OSError as exc:
                self._failed(exc)

    @classmethod
    def from_env(
        cls, environ: MutableMapping[str, str] | None = None, *, unset: bool = False
    ) -> "Notifier":
        """From NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID (os.environ by default). With
        `unset`, the variables are removed, so that processes the node starts (hooks) do not
        speak for the unit (sd_notify's unset_environment)."""
        env = os.environ if environ is None else environ
        notifier = cls(socket_address(env.get(ENV_SOCKET)), watchdog_usec(env, os.getpid()))
        if unset:
            for name in (ENV_SOCKET, ENV_WATCHDOG_USEC, ENV_WATCHDOG_PID):
                env.pop(name, None)
        return notifier

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def stats(self) -> dict[str, int]:
        """The side channel's counters for status: messages sent, and dropped (not sent)."""
        return {"sent": self.sent, "dropped": self.dropped}

    def send(self, *assignments: str) -> bool:
        """One datagram of `KEY=value` lines; False when it could not be sent (or no socket)."""
        if self._sock is None or self.address is None:
            return False
        try:
            self._sock.sendto("\n".join(assignments).encode(), self.address)
        except OSError as exc:
            self._failed(exc)
            return False
        self.sent += 1
        return True

    def ready(self) -> bool:
        return self.send("READY=1")

    def reloading(self, usec: int | None = None) -> bool:
        """RELOADING=1 with MONOTONIC_USEC (now unless given); send ready() when done."""
        return self.send(
            "RELOADING=1", f"MONOTONIC_USEC={monotonic_usec() if usec is None else usec}"
        )

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def status(self, text: str) -> bool:
        # a newline would end the assignment and start another one
        return self.send("STATUS=" + " ".join(text.splitlines()))

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 messages (half of WATCHDOG_USEC, as sd_watchdog_enabled
        advises), or None when systemd watches no watchdog for this process."""
        if self.watchdog_usec is None or not self.enabled:
            return None
        return self.watchdog_usec / 2 / 1_000_000

    def start_watchdog(self, loop: "asyncio.AbstractEventLoop") -> Callable[[], None]:
        """Send WATCHDOG=1 now and every watchdog_interval() from `loop`; returns the function
        that stops it. Nothing happens when the watchdog is off. Timers on the loop itself, so a
        loop that stops turning stops the pings: that is what systemd is watching for."""
        interval = self.watchdog_interval()
        if interval is None:
            return lambda: None
        handle: list[asyncio.TimerHandle] = []

        def ping() -> None:
            self.watchdog()
            handle[:] = [loop.call_later(interval, ping)]

        ping()

        def stop() -> None:
            for timer in handle:
                timer.cancel()
            handle.clear()

        return stop

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _failed(self, exc: OSError) -> None:
        self.dropped += 1
        if not self._warned:
            self._warned = True  # once: a manager that went away would fill the log otherwise
            what = "queue full" if exc.errno == errno.EAGAIN else exc.strerror or str(exc)
            log.warning(
                "sd_notify: cannot reach %s (%s); later failures are only counted",
                self._printable(),
                what,
            )

    def _printable(self) -> str:
        if isinstance(self.address, bytes):
            return "@" + self.address[1:].decode(errors="replace")
        return str(self.address)
