"""Why each carpnode is MASTER, BACKUP or INIT, in carp(4)'s terms (`vswitch explain`).

`explain(host, now)` reads a CarpHost and returns plain JSON-able data: per carp interface its
running conditions (§4.3, §4.8) and the advertisements it refused (source, reason, likely
cause); per carpnode the master it hears, the values this node advertises (demotion, §5, and
the advskew-240 rule of design.md decision 5), preempt, and the row of the §4.4 table
(carp/election.py) that moved it to its state and that judged the last advertisement.
`render(data)` turns that into the text the client prints. Nothing here changes the host.
"""

from typing import Any

from carp.actions import Reason
from carp.carpif import CarpInterface, CarpNode, Decided, PeerHeard
from carp.constants import State
from carp.host import CarpHost
from carp.timing import is_bowout, preference

# §4.4 rows by their number in election.TABLE, worded for someone asking "why"
ROWS: dict[str, str] = {
    "1": "INIT ignores advertisements",
    "2a": "a MASTER hearing a peer at least as preferred and no more demoted becomes BACKUP",
    "2b": "a MASTER hearing a less demoted peer becomes BACKUP",
    "2'": "a MASTER hearing a less preferred peer stays MASTER (no reply: the peer yields "
    "when it hears our next advertisement)",
    "3": "a BACKUP with preempt takes over from a less preferred, no less demoted master",
    "4": "a BACKUP takes over from a more demoted master, whatever preempt says",
    "5": "a BACKUP takes over from a master advertising so slowly it would time out",
    "6": "a BACKUP hearing its master restarts its master-down timer",
}

# why a node refuses an advertisement (the Rejected.reason of carpif.py), most likely first
CAUSES: dict[str, str] = {
    "badauth": "the pass differs (or the list of virtual addresses: the HMAC covers both)",
    "badttl": "TTL or hop limit is not 255: the advertisement was routed or forwarded",
    "loop": "our own advertisement came back: the segment loops our adverts back",
    "badver": "not CARP version 2 (VRRP also uses protocol 112; try vswitch decode)",
    "badvhid": "a vhid this segment's carp interfaces do not have (another group, or the "
    "peer's vhid or carppeer setting differs)",
    "badlen": "a truncated advertisement",
    "badsum": "the checksum fails: corrupted on the way, or not CARP",
    "ip-notours": "sent to an address that is not this node's (the sender's carppeer)",
}
IP_CAUSE = "the IP layer dropped it: the sender's IP header is malformed"
SILENCE = (
    "hears no other master: normal while the other nodes are BACKUP (a BACKUP is silent); if "
    "another node is MASTER for this vhid too, its advertisements do not arrive: it is cut off, "
    "or multicast is filtered between us (IGMP snooping on a switch, a firewall)"
)
TRANSITIONS: dict[Reason, str] = {
    Reason.START: "the interface started running (INIT -> BACKUP, §4.3)",
    Reason.MASTER_DOWN: "its master-down timer expired: no advertisement from a master for "
    "3 x interval (§4.5)",
    Reason.BOWOUT_HEARD: "the master bowed out (advbase and advskew 255, §4.7)",
    Reason.LINK_DOWN: "the carpdev lost its link (§4.8)",
    Reason.LINK_UP: "the carpdev's link came back (§4.8)",
    Reason.FORCED: "ifconfig state (§4.10)",
    Reason.DOWN: "ifconfig down (§4.7)",
    Reason.RECONFIG: "the interface was reconfigured (§4.9)",
}


def _age(now: float, at: float | None) -> float | None:
    return None if at is None else round(now - at, 3)


def _peer(now: float, source: str, heard: PeerHeard) -> dict[str, Any]:
    return {
        "source": source,
        "advbase": heard.advbase,
        "advskew": heard.advskew,
        "demote": heard.demote,
        "age": _age(now, heard.at),
    }


def _decided(now: float, decided: Decided | None) -> dict[str, Any] | None:
    if decided is None:
        return None
    return {
        "row": decided.row,
        "decision": str(decided.decision),
        "rule": ROWS[decided.row],
        "source": decided.source,
        "age": _age(now, decided.at),
    }


def _compare(host: CarpHost, sc: CarpInterface, vhe: CarpNode, heard: PeerHeard) -> str:
    """How the §4.4 comparison of us with `heard` comes out, in words."""
    d_local = host.demote_count(sc.name)
    mine = preference(sc.advbase, vhe.advskew)
    theirs = preference(heard.advbase, heard.advskew)
    values = (
        f"ours advbase {sc.advbase} advskew {vhe.advskew} demote {d_local}, theirs advbase "
        f"{heard.advbase} advskew {heard.advskew} demote {heard.demote}"
    )
    if heard.demote != d_local:
        who = "we are" if d_local > heard.demote else "they are"
        return f"{who} more demoted, which decides before frequency ({values})"
    if mine == theirs:
        return f"equally preferred: no tie-break, the master keeps it ({values})"
    who = "we advertise" if mine < theirs else "they advertise"
    return f"{who} more often, so are preferred ({values})"


def _raised(host: CarpHost) -> bool:
    """design.md decision 5: preempt on and a carpdev of the node down."""
    return host.preempt() and host.any_carpdev_down()


def _why(host: CarpHost, sc: CarpInterface, vhe: CarpNode, now: float) -> list[str]:
    lines: list[str] = []
    if _raised(host):
        carrying = {c.carpdev for c in host.carpifs.values()}
        down = ", ".join(sorted(d for d, up in host.link.items() if not up and d in carrying))
        lines.append(
            f"advertises advskew {host.advertised_advskew(vhe.advskew)} (configured "
            f"{vhe.advskew}): preempt is on and carpdev {down} is down (design decision 5)"
        )
    if vhe.state is State.INIT:
        if not sc.admin_up:
            lines.append("the interface is down (ifconfig down)")
        elif sc.suppressed:
            lines.append(f"carpdev {sc.carpdev} has no link: INIT until it returns (§4.8)")
        elif not (sc.v4 or sc.v6):
            lines.append("the interface has no address (§4.3)")
        else:
            lines.append("the node has not started the interface yet")
        return lines
    if vhe.cause is not None:
        lines.append(f"{vhe.state} after row {vhe.cause.row}: {ROWS[vhe.cause.row]}")
    else:  # every other reason comes with the advertisement that caused it
        assert vhe.reason is not None  # set by every transition out of INIT
        lines.append(f"{vhe.state} because {TRANSITIONS.get(vhe.reason, vhe.reason)}")
    recent = {s: p for s, p in vhe.peers.items() if now - p.at <= sc.master_down(vhe)}
    if vhe.state is State.MASTER:
        for source, heard in recent.items():
            if is_bowout(heard.advbase, heard.advskew):
                lines.append(f"{source} bowed out (§4.7)")
                continue
            lines.append(f"{source} also advertises as master: {_compare(host, sc, vhe, heard)}")
        if not vhe.peers:
            lines.append(SILENCE)
        elif not recent:
            last = max(vhe.peers.values(), key=lambda p: p.at)
            lines.append(f"the last advertisement heard is {now - last.at:.1f} s old")
            lines.append(SILENCE)
        return lines
    master = _master(vhe)
    if master is not None:
        source, heard = master
        lines.append(f"hears master {source}: {_compare(host, sc, vhe, heard)}")
        if heard.demote == host.demote_count(sc.name) and not host.preempt():
            mine = preference(sc.advbase, vhe.advskew)
            if mine < preference(heard.advbase, heard.advskew):
                lines.append("preempt is off: a more preferred BACKUP waits for the master")
    # a BACKUP always has a master-down timer (carp/vhe.py)
    deadline = min(t for t in (vhe.md, vhe.md6) if t is not None)
    lines.append(f"becomes MASTER in {deadline - now:.2f} s unless a master advertises")
    return lines


def _master(vhe: CarpNode) -> tuple[str, PeerHeard] | None:
    """The source heard last: only masters advertise (a bow-out is a master leaving)."""
    if not vhe.peers:
        return None
    return max(vhe.peers.items(), key=lambda item: item[1].at)


def _carpnode(host: CarpHost, sc: CarpInterface, vhe: CarpNode, now: float) -> dict[str, Any]:
    advertised = host.advertised_advskew(vhe.advskew)
    master = _master(vhe) if vhe.state is State.BACKUP else None
    return {
        "vhid": vhe.vhid,
        "state": str(vhe.state),
        "reason": str(vhe.reason) if vhe.reason is not None else None,
        "since": _age(now, vhe.changed_at),
        "advertised": {
            "advbase": sc.advbase,
            "advskew": advertised,
            "demote": min(host.demote_count(sc.name), 255),
            "configured_advskew": vhe.advskew,
            "advskew_240": _raised(host),
        },
        "master": _peer(now, *master) if master is not None else None,
        "peers": [_peer(now, source, heard) for source, heard in vhe.peers.items()],
        "cause": _decided(now, vhe.cause),
        "last": _decided(now, vhe.decided),
        "conflicts": [{"peer": p, "age": _age(now, at)} for p, at in vhe.conflicts.items()],
        "why": _why(host, sc, vhe, now),
    }


def _rejected(host: CarpHost, sc: CarpInterface, now: float) -> list[dict[str, Any]]:
    """This interface's refusals and those of its carpdev no interface claimed, newest first."""
    found = [(key, entry, "carpif") for key, entry in sc.rejects.entries.items()]
    segment = host.rejects.get(sc.carpdev)
    if segment is not None:
        found += [(key, entry, "carpdev") for key, entry in segment.entries.items()]
    found.sort(key=lambda item: item[1].last, reverse=True)
    out = []
    for (source, reason), entry, scope in found:
        default = IP_CAUSE if reason.startswith("ip-") else reason
        cause = CAUSES.get(reason, default)
        if reason == "badvhid" and "carppeer" in entry.detail:
            cause = "one side has a unicast carppeer, the other advertises to the group"
        if reason == "badvhid" and entry.detail == "not running":
            cause = "this interface is not running (down, no link or no address)"
        out.append(
            {
                "source": source,
                "reason": reason,
                "vhid": entry.vhid,
                "count": entry.count,
                "first": _age(now, entry.first),
                "last": _age(now, entry.last),
                "detail": entry.detail,
                "cause": cause,
                "scope": scope,  # carpdev: meant for no carp interface of this node
            }
        )
    return out


def explain(host: CarpHost, now: float, carpif: str | None = None) -> dict[str, Any]:
    """Plain data (JSON-able) saying why each carpnode is in its state; one interface or all.
    ValueError for an unknown `carpif`."""
    if carpif is not None and carpif not in host.carpifs:
        raise ValueError(f"no carp interface {carpif}")
    chosen = [sc for name, sc in host.carpifs.items() if carpif in (None, name)]
    return {
        "preempt": host.preempt(),
        "carpdevs_down": sorted(dev for dev, up in host.link.items() if not up),
        "carpifs": [
            {
                "name": sc.name,
                "carpdev": sc.carpdev,
                "balancing": sc.balancing.label,
                "advbase": sc.advbase,
                "peer": str(sc.peer),
                "admin_up": sc.admin_up,
                "suppressed": sc.suppressed,
                "running": sc.is_running,
                "demote": host.demote_count(sc.name),
                "groups": {g: host.groups[g] for g in sc.groups},
                "carpnodes": [_carpnode(host, sc, vhe, now) for vhe in sc.vhes],
                "rejected": _rejected(host, sc, now),
            }
            for sc in chosen
        ],
    }


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s ago"


def render(data: dict[str, Any]) -> str:
    """The text `vswitch explain` prints for `explain()`'s data."""
    preempt = "on" if data["preempt"] else "off"
    lines = [f"net.inet.carp.preempt={int(data['preempt'])} (preempt {preempt})"]
    if data["carpdevs_down"]:
        lines.append(f"carpdevs without link: {', '.join(data['carpdevs_down'])}")
    for sc in data["carpifs"]:
        groups = ", ".join(f"{g} {v}" for g, v in sc["groups"].items())
        running = "running" if sc["running"] else "not running"
        lines.append(
            f"{sc['name']} on {sc['carpdev']}: {running}, balancing {sc['balancing']}, "
            f"advbase {sc['advbase']}, advertises to {sc['peer']}, demote {sc['demote']} "
            f"(groups: {groups})"
        )
        for node in sc["carpnodes"]:
            lines.extend(_render_node(node))
        if sc["rejected"]:
            lines.append("  refused advertisements:")
        for r in sc["rejected"]:
            detail = f", {r['detail']}" if r["detail"] else ""
            if r["scope"] == "carpdev":
                detail += f", for no carp interface on {sc['carpdev']}"
            lines.append(
                f"    {r['source']}: {r['reason']} x{r['count']}{detail}, last "
                f"{_seconds(r['last'])}: {r['cause']}"
            )
    return "\n".join(lines) + "\n"


def _render_node(node: dict[str, Any]) -> list[str]:
    since = "" if node["since"] is None else f" for {node['since']:.1f} s"
    reason = f" ({node['reason']})" if node["reason"] else ""
    ad = node["advertised"]
    raised = f" (configured {ad['configured_advskew']}: decision 5)" if ad["advskew_240"] else ""
    out = [
        f"  vhid {node['vhid']}: {node['state']}{since}{reason}",
        f"    advertises advbase {ad['advbase']} advskew {ad['advskew']}{raised} "
        f"demote {ad['demote']}",
    ]
    master = node["master"]
    if master is not None:
        out.append(
            f"    master {master['source']}: advbase {master['advbase']} advskew "
            f"{master['advskew']} demote {master['demote']}, heard {_seconds(master['age'])}"
        )
    last = node["last"]
    if last is not None:
        out.append(
            f"    last advertisement judged: row {last['row']} ({last['decision']}) from "
            f"{last['source']}, {_seconds(last['age'])}"
        )
    out.extend(f"    - {line}" for line in node["why"])
    return out
