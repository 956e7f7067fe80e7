"""carp/explain.py: why a carpnode is MASTER, BACKUP or INIT, and what was refused."""

import itertools
import json
from typing import Any

import pytest

from carp.actions import Transmit, TxKind
from carp.carpif import REJECTS_KEPT
from carp.checksum import inet_checksum
from carp.constants import State
from carp.election import TABLE
from carp.explain import CAUSES, ROWS, SILENCE, explain, render
from carp.host import CarpHost
from carp.params import CarpDev, Sysctls
from carp.timing import master_down_us, seconds
from tests.carp.sim import Sim, advert, carpdev, ifparams, pair

DEV = carpdev("lan0", 1, "192.0.2.1")


def node_of(data: dict[str, Any], carpif: str = "carp0", vhid: int = 1) -> dict[str, Any]:
    (sc,) = [c for c in data["carpifs"] if c["name"] == carpif]
    (node,) = [n for n in sc["carpnodes"] if n["vhid"] == vhid]
    return dict(node)


def rejected(data: dict[str, Any], carpif: str = "carp0") -> list[dict[str, Any]]:
    (sc,) = [c for c in data["carpifs"] if c["name"] == carpif]
    return list(sc["rejected"])


def host_with(*devs: CarpDev, preempt: bool = False, **kw: object) -> CarpHost:
    counter = itertools.count(1)
    params = [ifparams(passphrase=b"secret", **kw)]  # type: ignore[arg-type]
    devices = {d.name: d for d in devs or (DEV,)}
    return CarpHost(
        Sysctls(preempt=preempt, log=7), params, devices, lambda: next(counter).to_bytes(8)
    )


def test_every_election_row_is_worded() -> None:
    assert set(ROWS) == {row.number for row in TABLE}


def test_wrong_pass_on_the_peer() -> None:
    sim = Sim()
    for index, (name, passphrase) in enumerate((("a", b"secret"), ("b", b"other")), 1):
        dev = carpdev("lan0", index, f"192.0.2.{index}")
        sim.add(name, [ifparams(nodes=f"1:{index * 50}", passphrase=passphrase)], [dev])
        sim.connect("seg0", name, "lan0")
    sim.start()
    sim.run_until(20.0)
    assert sorted(sim.masters()) == ["a", "b"]  # neither accepts the other
    data = explain(sim.host("b"), sim.now)
    node = node_of(data)
    assert (node["state"], node["reason"]) == ("MASTER", "master-down timer")
    assert node["peers"] == [] and node["master"] is None
    assert SILENCE in node["why"]
    (refused,) = rejected(data)
    assert (refused["source"], refused["reason"], refused["vhid"]) == ("192.0.2.1", "badauth", 1)
    assert refused["count"] == sim.host("b").stats.badauth > 10
    assert "pass differs" in refused["cause"]
    assert 0 <= refused["last"] <= 1.0
    text = render(data)
    assert "192.0.2.1: badauth x" in text and "the pass differs" in text
    json.dumps(data)  # plain data for the control socket


def test_partition_leaves_the_backup_in_silence() -> None:
    sim = pair(skew_a=0, skew_b=100)
    sim.start()
    sim.run_until(10.0)
    sim.partition({"a"}, {"b"})
    sim.run_until(30.0)
    data = explain(sim.host("b"), sim.now)
    node = node_of(data)
    assert (node["state"], node["reason"]) == ("MASTER", "master-down timer")
    assert node["cause"] is None  # a timer, not an advertisement, made it MASTER
    assert any("master-down timer expired" in line for line in node["why"])
    (peer,) = node["peers"]
    assert peer["source"] == "192.0.2.1" and peer["age"] > 19.0
    assert SILENCE in node["why"]
    assert any(line.startswith("the last advertisement heard is 2") for line in node["why"])
    assert rejected(data) == []  # nothing refused: nothing arrives at all
    # a never heard b (a BACKUP does not advertise): silence there too, by the same rule
    assert SILENCE in node_of(explain(sim.host("a"), sim.now))["why"]


def test_preempted_master_and_the_preempting_node() -> None:
    sim = pair(skew_a=0, skew_b=100, preempt=True)
    sim.start("b")
    sim.run_until(10.0)
    assert sim.masters() == ["b"]
    sim.start("a")
    sim.run_until(20.0)
    assert sim.masters() == ["a"]
    b = node_of(explain(sim.host("b"), sim.now))
    assert (b["state"], b["reason"]) == ("BACKUP", "preempted by a peer")
    assert b["cause"]["row"] == "2a" and b["cause"]["source"] == "192.0.2.1"
    assert b["last"]["row"] == "6"  # later adverts of a only restart the master-down timer
    assert b["last"]["age"] < 1.0
    assert (b["master"]["source"], b["master"]["advskew"]) == ("192.0.2.1", 0)
    assert any("they advertise more often" in line for line in b["why"])
    assert any(line.startswith("becomes MASTER in") for line in b["why"])
    a = node_of(explain(sim.host("a"), sim.now))
    assert (a["state"], a["cause"]["row"]) == ("MASTER", "3")
    assert a["cause"]["rule"] == ROWS["3"]
    assert a["master"] is None
    text = render(explain(sim.host("b"), sim.now))
    assert "vhid 1: BACKUP" in text and "row 6" in text and "master 192.0.2.1" in text


def test_backup_without_preempt_says_so() -> None:
    sim = pair(skew_a=0, skew_b=100, preempt=False)
    sim.start("b")
    sim.run_until(10.0)
    sim.start("a")
    sim.run_until(20.0)
    assert sim.masters() == ["b"]
    a = node_of(explain(sim.host("a"), sim.now))
    assert a["state"] == "BACKUP" and a["last"]["row"] == "6"
    assert any("we advertise more often" in line for line in a["why"])
    assert any("preempt is off" in line for line in a["why"])


def test_backup_of_a_preferred_master_without_preempt() -> None:
    sim = pair(skew_a=0, skew_b=100)
    sim.start()
    sim.run_until(10.0)
    b = node_of(explain(sim.host("b"), sim.now))
    assert (b["state"], b["reason"], b["cause"]) == ("BACKUP", "start", None)
    assert b["why"][0] == "BACKUP because the interface started running (INIT -> BACKUP, §4.3)"
    assert any("they advertise more often" in line for line in b["why"])
    assert not any("preempt is off" in line for line in b["why"])  # preempt would not help


def test_equal_priorities_have_no_tie_break() -> None:
    host = host_with()
    host.start(0.0)
    host.receive(1.0, "lan0", advert(advskew=0, passphrase=b"secret"))
    (line,) = [w for w in node_of(explain(host, 1.0))["why"] if w.startswith("hears master")]
    assert "equally preferred: no tie-break" in line


def test_master_hearing_a_second_master() -> None:
    host = host_with()
    host.start(0.0)
    host.handle_timer(3.0)
    host.receive(3.5, "lan0", advert(advskew=10, passphrase=b"secret", src="192.0.2.7"))
    node = node_of(explain(host, 3.6))
    assert node["last"]["row"] == "2'"
    assert node["conflicts"] == [{"peer": "192.0.2.7", "age": 0.1}]
    assert any(line.startswith("192.0.2.7 also advertises") for line in node["why"])
    host.receive(3.7, "lan0", advert(advskew=255, advbase=255, passphrase=b"secret"))
    assert "192.0.2.99 bowed out (§4.7)" in node_of(explain(host, 3.8))["why"]


def test_demotion_decides_before_frequency() -> None:
    host = host_with()
    host.start(0.0)
    host.group_demote(0.0, "carp", 2)
    host.receive(1.0, "lan0", advert(advskew=100, passphrase=b"secret"))
    node = node_of(explain(host, 1.0))
    assert node["advertised"]["demote"] == 2
    assert any("we are more demoted" in line for line in node["why"])


def test_advskew_240_while_a_carpdev_is_down() -> None:
    counter = itertools.count(1)
    host = CarpHost(
        Sysctls(preempt=True),
        [
            ifparams(nodes="1:10", passphrase=b"secret"),
            ifparams("carp1", "lan1", ("198.51.100.10/24",), nodes="2:0"),
        ],
        {"lan0": DEV, "lan1": carpdev("lan1", 1, "198.51.100.1")},
        lambda: next(counter).to_bytes(8),
    )
    host.start(0.0)
    assert node_of(explain(host, 0.5))["advertised"]["advskew_240"] is False
    host.set_carpdev_link(1.0, "lan1", False)
    data = explain(host, 1.0)
    assert data["carpdevs_down"] == ["lan1"]
    advertised = node_of(data)["advertised"]
    assert advertised["advskew"] == 240 and advertised["configured_advskew"] == 10
    assert advertised["advskew_240"] is True
    assert any("design decision 5" in line for line in node_of(data)["why"])
    assert "(configured 10: decision 5)" in render(data)


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (lambda h: h.set_admin(1.0, "carp0", False), "the interface is down"),
        (lambda h: h.set_carpdev_link(1.0, "lan0", False), "carpdev lan0 has no link"),
        (lambda h: [], "the node has not started the interface yet"),
        (lambda h: [], "the interface has no address"),
    ],
)
def test_init_says_why(setup, expected) -> None:  # type: ignore[no-untyped-def]
    host = host_with(addresses=() if "no address" in expected else ("192.0.2.10/24",))
    if expected != "the node has not started the interface yet":
        host.start(0.0)
    setup(host)
    node = node_of(explain(host, 2.0))
    assert node["state"] == "INIT"
    assert any(line.startswith(expected) for line in node["why"])


def test_badttl_loop_and_not_running_are_recorded() -> None:
    host = host_with()
    host.start(0.0)
    host.receive(1.0, "lan0", advert(passphrase=b"secret", ttl=64, src="192.0.2.5"))
    host.handle_timer(seconds(master_down_us(1, 0)))
    (own,) = [
        a
        for a in host.handle_timer(host.get_timer() or 0.0)
        if isinstance(a, Transmit) and a.kind is TxKind.ADVERT
    ]
    host.receive(5.0, "lan0", own.frame[14:])  # our advertisement comes back
    host.set_admin(6.0, "carp0", False)
    host.receive(6.5, "lan0", advert(passphrase=b"secret", src="192.0.2.6"))
    found = {r["reason"]: r for r in rejected(explain(host, 7.0))}
    assert found["badttl"]["detail"] == "ttl 64" and "routed" in found["badttl"]["cause"]
    assert found["loop"]["source"] == "192.0.2.1" and "loops" in found["loop"]["cause"]
    assert found["badvhid"]["detail"] == "not running"
    assert "not running" in found["badvhid"]["cause"]
    assert list(found) == ["badvhid", "loop", "badttl"]  # newest first


def test_other_vhids_carppeer_mismatch_and_ip_drops() -> None:
    host = host_with()
    host.start(0.0)
    host.receive(1.0, "lan0", advert(vhid=7, passphrase=b"secret", src="192.0.2.7"))
    host.receive(1.5, "lan0", advert(passphrase=b"secret", dst="192.0.2.1", src="192.0.2.8"))
    host.receive(2.0, "lan0", advert(passphrase=b"secret", dst="192.0.2.77", src="192.0.2.9"))
    found = {r["source"]: r for r in rejected(explain(host, 2.0))}
    assert (found["192.0.2.7"]["reason"], found["192.0.2.7"]["detail"]) == ("badvhid", "vhid 7")
    assert found["192.0.2.7"]["cause"] == CAUSES["badvhid"]
    assert found["192.0.2.7"]["scope"] == "carpdev"  # no carp interface here has vhid 7
    assert list(host.rejects) == ["lan0"] and not host.carpifs["carp0"].rejects.entries.get(
        ("192.0.2.7", "badvhid")
    )
    assert found["192.0.2.8"]["scope"] == "carpif"
    assert "carppeer" in found["192.0.2.8"]["detail"]
    assert "unicast carppeer" in found["192.0.2.8"]["cause"]
    assert found["192.0.2.9"]["reason"] == "ip-notours"
    assert found["192.0.2.9"]["cause"] == CAUSES["ip-notours"]
    cut = bytearray(advert(passphrase=b"secret", src="192.0.2.4")[:40])  # 20 of 36 bytes
    cut[2:4] = (40).to_bytes(2, "big")
    cut[10:12] = b"\0\0"
    cut[10:12] = inet_checksum(bytes(cut[:20])).to_bytes(2, "big")
    host.receive(3.0, "lan0", bytes(cut))
    (short,) = [r for r in rejected(explain(host, 3.0)) if r["source"] == "192.0.2.4"]
    assert (short["reason"], short["vhid"], short["scope"]) == ("badlen", None, "carpdev")
    assert short["cause"] == CAUSES["badlen"]
    assert "192.0.2.7: badvhid x1, vhid 7, for no carp interface on lan0" in render(
        explain(host, 3.0)
    )


def test_rejects_are_bounded_and_counted() -> None:
    host = host_with()
    host.start(0.0)
    for n in range(REJECTS_KEPT + 3):
        host.receive(1.0 + n, "lan0", advert(passphrase=b"x", src=f"192.0.2.{100 + n}"))
    host.receive(20.0, "lan0", advert(passphrase=b"x", src=f"192.0.2.{100 + REJECTS_KEPT}"))
    found = rejected(explain(host, 21.0))
    assert len(found) == REJECTS_KEPT
    assert found[0]["source"] == f"192.0.2.{100 + REJECTS_KEPT}" and found[0]["count"] == 2
    assert found[0]["first"] == 21.0 - (1.0 + REJECTS_KEPT)
    assert "192.0.2.100" not in {r["source"] for r in found}


def test_one_interface_or_an_error() -> None:
    host = host_with()
    assert [c["name"] for c in explain(host, 0.0, "carp0")["carpifs"]] == ["carp0"]
    with pytest.raises(ValueError, match="no carp interface carp9"):
        explain(host, 0.0, "carp9")


def test_render_lists_every_carpnode() -> None:
    host = host_with(nodes="1:0,2:100")
    host.start(0.0)
    text = render(explain(host, 1.0))
    assert text.startswith("net.inet.carp.preempt=0 (preempt off)\n")
    assert "carp0 on lan0: running, balancing none" in text
    assert "vhid 1: BACKUP" in text and "vhid 2: BACKUP" in text
    assert f": {State.INIT.name}" not in text
