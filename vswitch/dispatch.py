"""The request side of the control socket: a parsed request to a call on the node, and back.

`NodeControl` is all the control socket may ask of a running node (vswitch/nodectl.py implements
it); `Dispatcher` turns one request dict into one call and its answer dict (`respond`, `error`)
without any socket, so every command is tested synchronously. Streams (`events`, `capture`) and
every limit on clients are the server's (vswitch/control.py).
"""

import logging
import math
from typing import Any, Protocol

from carp.host import SYSCTL_PREFIX
from carp.ifconfig import IfconfigChange, parse_change, parse_demote
from vswitch.ifconfig_cmd import render_group, render_status
from vswitch.status import NodeStatus
from vswitch.watch import CaptureSession

log = logging.getLogger("vswitch.control")  # the control socket's logger, whichever module logs

SYSCTLS = ("allow", "preempt", "log")  # writable; `stats` is read-only (section 8.1)


class NodeControl(Protocol):
    """What the control socket needs from a running node (vswitch/nodectl.py implements it)."""

    def status(self) -> NodeStatus:
        """A JSON-able snapshot (vswitch/status.py)."""
        ...

    def ifconfig(self, carpif: str, change: IfconfigChange) -> None:
        """Apply a parsed `vswitch ifconfig carpN ...`; ValueError says why it cannot."""
        ...

    def group_demote(self, group: str, adj: int) -> int:
        """`ifconfig -g GROUP [-]carpdemote N`; returns the new counter, ValueError if outside
        0..255 (section 5.1) or the group is unknown."""
        ...

    def sysctl(self, name: str | None, value: int | None) -> dict[str, int]:
        """Short names (allow, preempt, log). name None: all; value None: read; else set and
        return the new value. ValueError for a value the node refuses."""
        ...

    def reload(self) -> list[str]:
        """Re-read the configuration and apply what changed; returns what changed. Raises an
        exception with `errors: list[str]` (carp.config.ConfigError) and changes nothing when
        the file is invalid."""
        ...

    def port(self, switch: str, name: str, words: dict[str, str] | None) -> list[str]:
        """`vswitch port add` (words: the port's key=value settings) or `port del` (None);
        returns what changed. ValueError for an unknown switch or port; an exception with
        `errors` (ConfigError) when the port is refused; nothing changed then."""
        ...

    def impair(self, switch: str, port: str, words: list[str]) -> dict[str, Any]:
        """`vswitch impair SWITCH PORT words`: the port's impairment after the change. ValueError
        names the word, or the unknown switch or port; nothing changed then."""
        ...

    def capture(
        self, switch: str, ports: list[str], *, snaplen: int | None, count: int | None
    ) -> CaptureSession:
        """`vswitch capture`: a new capture of those ports (none: all) of `switch`
        (vswitch/watch.py). ValueError for an unknown switch or port."""
        ...

    def explain(self, carpif: str | None) -> dict[str, Any]:
        """`vswitch explain [carpN]`: {"data": carp/explain.py's data, "text": its rendering}.
        ValueError for an unknown carp interface."""
        ...


def respond(request_id: Any, result: Any) -> dict[str, Any]:
    """The answer to request `request_id`: `{"id", "ok": true, "result"}`."""
    return {"id": request_id, "ok": True, "result": result}


def error(request_id: Any, message: str, errors: list[str] | None = None) -> dict[str, Any]:
    """A refusal: `{"id", "ok": false, "error"}`, with `errors` when a configuration was refused."""
    response = {"id": request_id, "ok": False, "error": message}
    if errors is not None:
        response["errors"] = errors
    return response


class Dispatcher:
    """Requests to NodeControl calls; synchronous so it is tested without any socket."""

    def __init__(self, node: NodeControl) -> None:
        self.node = node

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        request_id = request.get("id")
        cmd = request.get("cmd")
        handler = {
            "status": self._status,
            "ifconfig": self._ifconfig,
            "demote": self._demote,
            "sysctl": self._sysctl,
            "reload": self._reload,
            "port": self._port,
            "impair": self._impair,
            "explain": self._explain,
        }.get(cmd if isinstance(cmd, str) else "")
        if handler is None:
            return error(request_id, f"unknown command {cmd!r}")
        try:
            return respond(request_id, handler(request))
        except (ValueError, KeyError, TypeError) as exc:
            return error(request_id, str(exc) or type(exc).__name__)
        except Exception as exc:
            errors = getattr(exc, "errors", None)
            if isinstance(errors, list) and all(isinstance(e, str) for e in errors):
                return error(request_id, "configuration refused, nothing changed", errors)
            log.exception("control: %s failed", cmd)
            return error(request_id, f"internal error: {type(exc).__name__}: {exc}")

    def _status(self, request: dict[str, Any]) -> NodeStatus:
        return self.node.status()

    def _ifconfig(self, request: dict[str, Any]) -> str:
        carpif = _optional_str(request, "carpif")
        words = request.get("words", [])
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise ValueError("words: expected a list of strings")
        if words:
            if carpif is None:
                raise ValueError("name the carp interface to change")
            self.node.ifconfig(carpif, parse_change(words))
        return render_status(self.node.status(), carpif)

    def _demote(self, request: dict[str, Any]) -> dict[str, Any]:
        group = _optional_str(request, "group")
        if group is None:
            raise ValueError("group: missing")
        word = _optional_str(request, "word")
        if word is None:
            return {"group": group, "value": None, "text": render_group(self.node.status(), group)}
        count = request.get("count")
        adj = parse_demote(word, None if count is None else str(count))
        value = self.node.group_demote(group, adj)
        return {"group": group, "value": value, "text": f"{group}: carp demote count {value}"}

    def _sysctl(self, request: dict[str, Any]) -> dict[str, Any]:
        name = _optional_str(request, "name")
        value = request.get("value")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{name}: the value must be an integer")
        if name is None:
            values = {SYSCTL_PREFIX + k: v for k, v in self.node.sysctl(None, None).items()}
            return values | self._stats(None)
        short = name.removeprefix(SYSCTL_PREFIX)
        if short == "stats" or short.startswith("stats."):
            if value is not None:
                raise ValueError(f"{SYSCTL_PREFIX}{short}: read-only")
            return self._stats(short.removeprefix("stats").removeprefix("."))
        if short not in SYSCTLS:
            known = ", ".join(SYSCTL_PREFIX + s for s in (*SYSCTLS, "stats"))
            raise ValueError(f"{name}: unknown sysctl (known: {known})")
        old = self.node.sysctl(short, None)[short]
        if value is None:
            return {SYSCTL_PREFIX + short: old}
        new = self.node.sysctl(short, value)[short]
        return {SYSCTL_PREFIX + short: new, "old": old}

    def _stats(self, counter: str | None) -> dict[str, Any]:
        stats = self.node.status()["carpstats"]
        if counter and counter not in stats:
            raise ValueError(f"{SYSCTL_PREFIX}stats.{counter}: no such counter")
        prefix = f"{SYSCTL_PREFIX}stats."
        return {prefix + k: v for k, v in stats.items() if not counter or k == counter}

    def _reload(self, request: dict[str, Any]) -> list[str]:
        return self.node.reload()

    def _port(self, request: dict[str, Any]) -> list[str]:
        """`action` "add" with `settings` {key: value text}, or "del"; `switch`, `name`."""
        action = _optional_str(request, "action")
        switch = _optional_str(request, "switch")
        name = _optional_str(request, "name")
        if action not in ("add", "del"):
            raise ValueError(f"action: {action!r} is not add or del")
        if not switch or not name:
            raise ValueError("name the switch and the port")
        if action == "del":
            return self.node.port(switch, name, None)
        settings = request.get("settings", {})
        if not isinstance(settings, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in settings.items()
        ):
            raise ValueError("settings: expected an object of strings (key=value words)")
        return self.node.port(switch, name, settings)

    def _impair(self, request: dict[str, Any]) -> dict[str, Any]:
        """`switch`, `port`, `words` (e.g. ["in", "delay", "50ms"], or ["clear"])."""
        switch = _optional_str(request, "switch")
        port = _optional_str(request, "port")
        if not switch or not port:
            raise ValueError("name the switch and the port")
        return self.node.impair(switch, port, _strings(request, "words"))

    def _explain(self, request: dict[str, Any]) -> dict[str, Any]:
        return self.node.explain(_optional_str(request, "carpif"))

    def capture(self, request: dict[str, Any]) -> tuple[CaptureSession, float | None]:
        """A `capture` request (`switch`, `ports`?, `snaplen`?, `count`?, `duration`?): its
        session and how long it runs (None: until the reader goes or the count is reached).
        ValueError says what is wrong; nothing was started then."""
        switch = _optional_str(request, "switch")
        if not switch:
            raise ValueError("name the switch to capture on")
        ports = _strings(request, "ports")
        snaplen = _optional_int(request, "snaplen")
        count = _optional_int(request, "count")
        duration = request.get("duration")
        if duration is not None and (
            isinstance(duration, bool)
            or not isinstance(duration, int | float)
            or not 0 < duration < math.inf
        ):
            raise ValueError(f"duration {duration!r}: give a positive number of seconds")
        session = self.node.capture(switch, ports, snaplen=snaplen, count=count)
        return session, None if duration is None else float(duration)


def _strings(request: dict[str, Any], key: str) -> list[str]:
    value = request.get(key, [])
    if not isinstance(value, list) or not all(isinstance(w, str) for w in value):
        raise ValueError(f"{key}: expected a list of strings")
    return value


def _optional_int(request: dict[str, Any], key: str) -> int | None:
    value = request.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"{key}: expected an integer")
    return value


def _optional_str(request: dict[str, Any], key: str) -> str | None:
    value = request.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{key}: expected a string")
    return value
