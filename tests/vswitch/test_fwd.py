"""The pure forwarding core: learning, ageing, flooding, hub, special MACs, hooks, vnet_hdr."""

import itertools
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vswitch.fwd import Emit, Port, Switch

A = bytes.fromhex("020000000001")
B = bytes.fromhex("020000000002")
C = bytes.fromhex("020000000003")
BCAST = b"\xff" * 6
VMAC = bytes.fromhex("00005e000101")  # carp vhid 1
VMAC_IP = bytes.fromhex("01005e000101")  # carp leader MAC in `ip` balancing


def eth(
    dst: bytes, src: bytes, payload: bytes = b"payload", ethertype: bytes = b"\x08\x00"
) -> bytes:
    return dst + src + ethertype + payload


def three(**kw: object) -> tuple[Switch, Port, Port, Port]:
    sw = Switch("lan0", **kw)  # type: ignore[arg-type]
    return sw, sw.add_port("p1"), sw.add_port("p2"), sw.add_port("p3")


def out(sw: Switch) -> dict[str, list[bytes]]:
    return {port.name: frames for port, frames in sw.drain()}


def test_unknown_unicast_floods_then_learned_unicast_goes_to_one_port() -> None:
    sw, p1, p2, _ = three()
    f1 = eth(B, A)
    sw.forward(1.0, p1, [f1])
    assert out(sw) == {"p2": [f1], "p3": [f1]}
    f2 = eth(A, B)
    sw.forward(1.0, p2, [f2])
    assert out(sw) == {"p1": [f2]}
    f3 = eth(B, A, b"again")
    sw.forward(1.0, p1, [f3])
    assert out(sw) == {"p2": [f3]}
    assert sw.lookup(A) == "p1" and sw.lookup(B) == "p2" and sw.lookup(C) is None
    assert sw.table_size == 2


def test_frame_to_a_mac_on_the_ingress_port_is_not_sent_back() -> None:
    sw, p1, _, _ = three()
    sw.forward(1.0, p1, [eth(BCAST, A)])
    out(sw)
    sw.forward(1.0, p1, [eth(A, C)])
    assert out(sw) == {}


def test_broadcast_and_multicast_always_flood_and_are_never_learned_as_source() -> None:
    sw, p1, p2, _ = three()
    mcast = bytes.fromhex("01005e000012")
    sw.forward(1.0, p2, [eth(BCAST, mcast)])  # a multicast source is switched, not learned
    assert sorted(out(sw)) == ["p1", "p3"]
    assert sw.lookup(mcast) is None
    sw.forward(1.0, p1, [eth(BCAST, A), eth(mcast, A)])
    assert out(sw) == {"p2": [eth(BCAST, A), eth(mcast, A)], "p3": [eth(BCAST, A), eth(mcast, A)]}


def test_zero_source_is_not_learned() -> None:
    sw, p1, _, _ = three()
    sw.forward(1.0, p1, [eth(BCAST, bytes(6))])
    assert sw.table_size == 0


def test_hub_mode_floods_known_unicast() -> None:
    sw, p1, p2, _ = three(hub=True)
    sw.forward(1.0, p2, [eth(A, B)])
    sw.forward(1.0, p1, [eth(B, A)])
    assert out(sw) == {"p1": [eth(A, B)], "p2": [eth(B, A)], "p3": [eth(A, B), eth(B, A)]}
    sw.hub = False
    sw.forward(2.0, p1, [eth(B, A)])  # learning mode learns from now on
    sw.forward(2.0, p2, [eth(A, B)])
    assert out(sw) == {"p2": [eth(B, A)], "p3": [eth(B, A)], "p1": [eth(A, B)]}


def test_ageing_removes_silent_stations_and_traffic_refreshes() -> None:
    sw, p1, p2, _ = three(ageing=10.0)
    sw.forward(0.0, p1, [eth(BCAST, A)])
    sw.forward(0.0, p2, [eth(BCAST, B)])
    out(sw)
    sw.forward(8.0, p2, [eth(BCAST, B)])  # B refreshed at 8
    out(sw)
    sw.forward(11.0, p1, [eth(B, A)])  # A seen at 0 expired at 10, relearned now; B still known
    assert out(sw) == {"p2": [eth(B, A)]}
    sw.forward(19.0, p1, [eth(B, A)])  # B last seen 8: gone, flood
    assert sorted(out(sw)) == ["p2", "p3"]
    ages = {mac: (port, age) for mac, port, age in sw.entries(19.0)}
    assert ages == {A: ("p1", 0.0)}


def test_expire_granularity_is_bounded() -> None:
    sw, p1, p2, _ = three(ageing=1.0)
    sw.forward(0.0, p1, [eth(BCAST, A)])
    out(sw)
    # not swept yet within the ageing period...
    sw.forward(0.9, p2, [eth(A, B)])
    assert out(sw) == {"p1": [eth(A, B)]}
    # ...and certainly gone a quarter period after it
    sw.forward(1.26, p2, [eth(A, B)])
    assert sorted(out(sw)) == ["p1", "p3"]


def test_station_move() -> None:
    sw, p1, p2, p3 = three()
    sw.forward(1.0, p1, [eth(BCAST, A)])
    sw.forward(1.0, p3, [eth(BCAST, A)])
    out(sw)
    sw.forward(1.0, p2, [eth(A, B)])
    assert out(sw) == {"p3": [eth(A, B)]}


def test_counters_and_malformed_frames_are_dropped_and_counted() -> None:
    sw, p1, p2, _ = three()
    good = eth(BCAST, A, b"x" * 46)
    sw.forward(1.0, p1, [good, b"", b"\x01" * 13, good])
    assert p1.counters.rx_packets == 4
    assert p1.counters.rx_bytes == 2 * len(good) + 13
    assert p1.counters.rx_malformed == 2
    assert out(sw)["p2"] == [good, good]
    assert p2.counters.rx_packets == 0


def test_table_is_bounded() -> None:
    sw = Switch("s", max_entries=2)
    p1, p2 = sw.add_port("p1"), sw.add_port("p2")
    sw.forward(1.0, p1, [eth(BCAST, A), eth(BCAST, B), eth(BCAST, C)])
    assert sw.table_size == 2 and sw.table_full == 1
    assert sw.lookup(C) is None
    assert len(out(sw)["p2"]) == 3  # still switched
    del p2


@pytest.mark.parametrize("hdr", [10, 12])
def test_vnet_header_offset_is_honoured_and_carried(hdr: int) -> None:
    sw, p1, p2, _ = three(vnet_hdr=hdr)
    h1 = bytes(range(1, hdr + 1))
    sw.forward(1.0, p2, [bytes(hdr) + eth(BCAST, B)])
    out(sw)
    f = h1 + eth(B, A)
    sw.forward(1.0, p1, [f])
    assert out(sw) == {"p2": [f]}
    assert sw.lookup(A) == "p1"
    assert p1.counters.rx_bytes == len(f) - hdr
    sw.forward(1.0, p1, [bytes(hdr) + b"\x00" * 13])  # runt after the header
    assert p1.counters.rx_malformed == 1


def test_vnet_header_length_is_validated() -> None:
    with pytest.raises(ValueError):
        Switch("s", vnet_hdr=4)
    with pytest.raises(ValueError):
        Switch("s", ageing=0)


class Recorder:
    def __init__(self, switch: bool = False, emits: Sequence[Emit] = ()) -> None:
        self.calls: list[tuple[float, str, bytes]] = []
        self.switch = switch
        self.emits = emits

    def special(self, now: float, port: str, frame: bytes) -> tuple[bool, Sequence[Emit]]:
        self.calls.append((now, port, frame))
        return self.switch, self.emits

    def multicast(self, now: float, port: str, frame: bytes) -> Sequence[Emit]:
        self.calls.append((now, port, frame))
        return self.emits


def with_carp() -> tuple[Switch, Port, Port, Port, Port]:
    sw = Switch("lan0")
    p1, p2 = sw.add_port("p1"), sw.add_port("p2")
    host = sw.add_port("host", kernel=True)
    carp = sw.add_port("carp0", kernel=True, flood=False)
    return sw, p1, p2, host, carp


def test_special_mac_goes_to_the_hook_not_to_the_table() -> None:
    sw, p1, _, _, _ = with_carp()
    f = eth(VMAC, A)
    rec = Recorder(emits=[("carp0", f)])
    sw.on_special = rec.special
    sw.set_special_macs([VMAC])
    sw.forward(5.0, p1, [f])
    assert rec.calls == [(5.0, "p1", f)]
    assert out(sw) == {"carp0": [f]}


def test_special_mac_without_hook_is_switched_normally() -> None:
    sw, p1, _, _, _ = with_carp()
    sw.set_special_macs([VMAC])
    sw.forward(5.0, p1, [eth(VMAC, A)])
    assert sorted(out(sw)) == ["host", "p2"]


def test_special_mac_is_never_learned_from_a_kernel_port() -> None:
    sw, p1, _, _, carp = with_carp()
    sw.set_special_macs([VMAC])
    rec = Recorder(emits=[("carp0", b"delivered")])
    sw.on_special = rec.special
    sw.forward(1.0, carp, [eth(BCAST, VMAC)])  # the carp TAP sends with the virtual MAC
    out(sw)
    sw.forward(1.0, p1, [eth(VMAC, A)])
    assert out(sw) == {"carp0": [b"delivered"]}
    assert sw.lookup(VMAC) is None


def test_special_takes_precedence_over_an_earlier_learned_entry_and_is_restored() -> None:
    sw, p1, p2, _, carp = with_carp()
    sw.forward(1.0, carp, [eth(BCAST, VMAC)])  # learned before it became special (kernel port)
    sw.forward(1.0, p2, [eth(BCAST, B)])
    out(sw)
    assert sw.lookup(VMAC) == "carp0"
    rec = Recorder(switch=True)
    sw.on_special = rec.special
    sw.set_special_macs([VMAC])
    assert sw.lookup(VMAC) is None  # the kernel location is not kept
    sw.forward(2.0, p1, [eth(VMAC, A)])
    assert len(rec.calls) == 1
    assert sorted(out(sw)) == ["host", "p2"]  # switched normally: unknown, flooded
    sw.set_special_macs([])
    sw.forward(3.0, p1, [eth(VMAC, A)])
    assert len(rec.calls) == 1  # no longer special


def test_special_mac_learned_on_the_segment_is_used_when_switching_normally() -> None:
    sw, p1, p2, _, _ = with_carp()
    rec = Recorder(switch=True)
    sw.on_special = rec.special
    sw.forward(1.0, p2, [eth(BCAST, VMAC)])  # another node's master behind p2, learned first
    sw.set_special_macs([VMAC])
    out(sw)
    assert sw.lookup(VMAC) == "p2"
    sw.forward(2.0, p1, [eth(VMAC, A)])
    assert out(sw) == {"p2": [eth(VMAC, A)]}
    sw.forward(2.0, p1, [eth(BCAST, VMAC)])  # the virtual MAC moves to p1 (not a kernel port)
    out(sw)
    sw.forward(2.0, p2, [eth(VMAC, B)])
    assert out(sw) == {"p1": [eth(VMAC, B)]}
    assert sw.lookup(VMAC) == "p1"
    sw.forward(400.0, p2, [eth(VMAC, B)])  # the learned location ages out, the MAC stays special
    assert sorted(out(sw)) == ["host", "p1"]
    assert VMAC in sw.special_macs and len(rec.calls) == 3


def test_owned_special_mac_goes_to_its_owner_only() -> None:
    sw, p1, _, host, _ = with_carp()
    own = bytes.fromhex("02aaaaaaaaaa")
    rec = Recorder(switch=True)
    sw.on_special = rec.special
    sw.forward(1.0, host, [eth(BCAST, own)])  # the host port's own MAC, seen from the kernel
    sw.set_special_macs([VMAC], owners={own: "host"})
    assert sw.special_macs == {VMAC, own} and sw.lookup(own) == "host"
    out(sw)
    advert = eth(own, A, b"unicast advertisement")
    sw.forward(2.0, p1, [advert])
    assert rec.calls == [(2.0, "p1", advert)]
    assert out(sw) == {"host": [advert]}  # not flooded to p2
    sw.set_link("host", False)
    sw.forward(3.0, p1, [advert])
    assert out(sw) == {}  # the owner is down: dropped, not flooded
    sw.set_link("host", True)
    sw.forward(4.0, host, [eth(own, C)])  # from the owner itself: not sent back
    assert out(sw) == {}
    sw.remove_port("host")
    assert sw.lookup(own) is None and own in sw.special_macs
    sw.forward(5.0, p1, [advert])
    assert sorted(out(sw)) == ["p2"]  # nobody owns it now: flooded
    sw.set_special_macs([VMAC])
    assert sw.special_macs == {VMAC}
    with pytest.raises(KeyError):
        sw.set_special_macs([], owners={own: "nope"})


def test_multicast_special_mac_is_flooded_and_delivered() -> None:
    sw, p1, _, _, _ = with_carp()
    f = eth(VMAC_IP, A)
    rec = Recorder(switch=True, emits=[("carp0", f)])
    sw.on_special = rec.special
    mrec = Recorder()
    sw.on_multicast = mrec.multicast
    sw.set_special_macs([VMAC_IP])
    sw.forward(1.0, p1, [f])
    assert out(sw) == {"p2": [f], "host": [f], "carp0": [f]}
    assert mrec.calls == []  # the special hook saw it; the multicast hook is not called twice


def test_hub_mode_special_mac() -> None:
    sw, p1, _, _, _ = with_carp()
    sw.hub = True
    rec = Recorder(switch=True, emits=[("carp0", b"x" * 20)])
    sw.on_special = rec.special
    sw.set_special_macs([VMAC])
    sw.forward(1.0, p1, [eth(VMAC, A), b"short"])
    assert out(sw) == {"p2": [eth(VMAC, A)], "host": [eth(VMAC, A)], "carp0": [b"x" * 20]}
    assert p1.counters.rx_malformed == 1


def test_multicast_hook_runs_after_flooding_and_replies_go_back() -> None:
    sw, p1, _, _, _ = with_carp()
    req = eth(BCAST, A, b"arp-request", b"\x08\x06")
    reply = eth(A, VMAC, b"arp-reply", b"\x08\x06")
    rec = Recorder(emits=[("p1", reply)])
    sw.on_multicast = rec.multicast
    sw.forward(7.0, p1, [req, eth(B, A)])  # the unknown unicast is flooded, no hook
    assert rec.calls == [(7.0, "p1", req)]
    assert out(sw) == {"p1": [reply], "p2": [req, eth(B, A)], "host": [req, eth(B, A)]}


def test_hook_outputs_get_the_right_vnet_header() -> None:
    sw = Switch("s", vnet_hdr=10)
    p1 = sw.add_port("p1")
    sw.add_port("p2")
    gso = bytes(range(1, 11))
    req = eth(BCAST, A, b"0123456789")
    rewrite = eth(C, A, b"0123456789")  # same length: a rewrite of the ingress frame
    new = eth(A, C, b"short")
    rec = Recorder(emits=[("p2", rewrite), ("p1", new)])
    sw.on_multicast = rec.multicast
    sw.forward(1.0, p1, [gso + req])
    assert rec.calls == [(1.0, "p1", req)]  # the hook sees a plain Ethernet frame
    assert out(sw) == {"p2": [gso + req, gso + rewrite], "p1": [bytes(10) + new]}


def test_egress_filter_only_for_kernel_ports_and_rewrites_before_learning() -> None:
    sw, p1, _, host, _ = with_carp()
    own = bytes.fromhex("02aaaaaaaaaa")
    seen: list[str] = []

    def filt(now: float, port: str, frame: bytes) -> bytes | None:
        seen.append(port)
        if frame[12:14] == b"\x08\x06":
            return None
        return frame[:6] + own + frame[12:]

    sw.egress_filter = filt
    sw.forward(1.0, host, [eth(BCAST, VMAC), eth(A, VMAC, b"arp", b"\x08\x06")])
    assert host.counters.rx_filtered == 1 and host.counters.rx_packets == 2
    assert out(sw) == {"p1": [eth(BCAST, own)], "p2": [eth(BCAST, own)]}
    assert sw.lookup(own) == "host" and sw.lookup(VMAC) is None
    sw.forward(1.0, p1, [eth(own, A)])
    assert seen == ["host", "host"]
    assert out(sw) == {"host": [eth(own, A)]}


def test_egress_filter_keeps_vnet_header_of_rewrites() -> None:
    sw = Switch("s", vnet_hdr=10)
    host = sw.add_port("host", kernel=True)
    sw.add_port("p1")
    hdr = bytes(range(1, 11))
    sw.egress_filter = lambda now, port, frame: frame[:6] + C + frame[12:]
    sw.forward(1.0, host, [hdr + eth(BCAST, A)])
    assert out(sw) == {"p1": [hdr + eth(BCAST, C)]}
    sw.egress_filter = lambda now, port, frame: frame
    sw.forward(1.0, host, [hdr + eth(BCAST, A)])
    assert out(sw) == {"p1": [hdr + eth(BCAST, A)]}


def test_no_floods_between_kernel_ports_and_carp_port_gets_no_floods() -> None:
    sw, p1, _, host, _ = with_carp()
    sw.forward(1.0, host, [eth(BCAST, C)])
    assert sorted(out(sw)) == ["p1", "p2"]
    sw.forward(1.0, p1, [eth(BCAST, A)])
    assert sorted(out(sw)) == ["host", "p2"]


def test_inject_switches_by_destination_and_never_to_kernel_ports() -> None:
    sw, p1, p2, host, _ = with_carp()
    sw.forward(1.0, p1, [eth(BCAST, A)])
    sw.forward(1.0, host, [eth(BCAST, C)])
    out(sw)
    advert = eth(bytes.fromhex("01005e000012"), VMAC)
    assert sw.inject(advert) == 2
    assert out(sw) == {"p1": [advert], "p2": [advert]}
    assert sw.inject(eth(A, VMAC)) == 1
    assert out(sw) == {"p1": [eth(A, VMAC)]}
    sw.inject(eth(C, VMAC))  # learned on a kernel port: treated as unknown
    assert sorted(out(sw)) == ["p1", "p2"]
    sw.inject(eth(B, VMAC), port="p2")
    assert out(sw) == {"p2": [eth(B, VMAC)]}
    assert sw.inject(eth(B, VMAC), port="nope") == 0
    assert sw.inject(b"runt") == 0
    assert sw.bad_emits == 2 and out(sw) == {}
    del p2


def test_inject_with_vnet_header_prepends_a_zero_header() -> None:
    sw = Switch("s", vnet_hdr=12)
    sw.add_port("p1")
    sw.inject(eth(BCAST, A))
    assert out(sw) == {"p1": [bytes(12) + eth(BCAST, A)]}


def test_link_down_port_gets_no_floods_and_loses_its_entries() -> None:
    sw, p1, p2, p3 = three()
    sw.forward(1.0, p2, [eth(BCAST, B)])
    out(sw)
    sw.set_link("p2", False)
    sw.set_link("p2", False)  # idempotent
    assert sw.lookup(B) is None
    sw.forward(1.0, p1, [eth(B, A)])
    assert out(sw) == {"p3": [eth(B, A)]}
    assert sw.inject(eth(B, A), port="p2") == 0
    assert p2.counters.tx_no_link == 1 and out(sw) == {}
    sw.set_link("p2", True)
    sw.forward(1.0, p1, [eth(B, A)])
    assert sorted(out(sw)) == ["p2", "p3"]
    del p3


def test_remove_port_forgets_its_entries() -> None:
    sw, p1, p2, _ = three()
    sw.forward(1.0, p2, [eth(BCAST, B)])
    sw.remove_port("p2")
    out(sw)
    assert sw.lookup(B) is None
    sw.forward(1.0, p1, [eth(B, A)])
    assert out(sw) == {"p3": [eth(B, A)]}
    with pytest.raises(ValueError):
        sw.add_port("p1")


def test_flush_keeps_special_macs() -> None:
    sw, p1, p2, _ = three()
    sw.forward(1.0, p2, [eth(BCAST, VMAC), eth(BCAST, B)])
    sw.set_special_macs([VMAC])
    assert sw.lookup(VMAC) == "p2"
    sw.flush()
    assert sw.lookup(VMAC) is None and sw.lookup(B) is None and sw.special_macs == {VMAC}
    del p1


def test_bad_hook_output_port_is_counted_not_raised() -> None:
    sw, p1, _, _ = three()
    sw.on_multicast = Recorder(emits=[("nope", eth(A, B))]).multicast
    sw.forward(1.0, p1, [eth(BCAST, A)])
    assert sw.bad_emits == 1


# -- a reference model: the same switch written plainly, checked on random traffic ----------

MACS = [bytes([2, 0, 0, 0, 0, i]) for i in range(1, 5)] + [BCAST, bytes.fromhex("333300000001")]


class Model:
    def __init__(self, ports: list[str], ageing: float) -> None:
        self.ports = ports
        self.ageing = ageing
        self.table: dict[bytes, tuple[str, float]] = {}

    def forward(self, now: float, port: str, frame: bytes) -> list[tuple[str, bytes]]:
        dst, src = frame[:6], frame[6:12]
        self.table = {m: e for m, e in self.table.items() if e[1] >= now - self.ageing}
        if not src[0] & 1:
            self.table[src] = (port, now)
        entry = self.table.get(dst)
        if dst[0] & 1 or entry is None:
            return [(p, frame) for p in self.ports if p != port]
        return [] if entry[0] == port else [(entry[0], frame)]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 2),
            st.sampled_from(MACS),
            st.sampled_from([*MACS[:4], MACS[5]]),
            st.floats(0, 3),
        ),
        max_size=40,
    )
)
def test_matches_a_plain_learning_switch(
    traffic: list[tuple[int, bytes, bytes, float]],
) -> None:
    names = ["p1", "p2", "p3"]
    sw = Switch("s", ageing=4.0)
    ports = [sw.add_port(n) for n in names]
    model = Model(names, 4.0)
    now = 0.0
    for i, (pi, dst, src, step) in enumerate(traffic):
        now += step
        frame = eth(dst, src, i.to_bytes(2, "big"))
        # the switch sweeps lazily (within a quarter of `ageing`); sweep before every frame so
        # that it must age exactly like the model
        expected = model.forward(now, names[pi], frame)
        sw.expire(now)
        sw.forward(now, ports[pi], [frame])
        got = [(p.name, f) for p, frames in sw.drain() for f in frames]
        assert sorted(got) == sorted(expected)


# -- accounting: every frame forwarded or dropped with exactly one reason ---------------------

DROPS = ("rx_malformed", "rx_filtered", "rx_same_port", "rx_no_dest")


def drops(port: Port) -> dict[str, int]:
    return {name: getattr(port.counters, name) for name in DROPS if getattr(port.counters, name)}


def test_each_drop_reason_is_counted_once_per_dropped_frame() -> None:
    sw, p1, p2, host, carp = with_carp()
    sw.forward(1.0, p1, [eth(BCAST, A)])
    sw.forward(1.0, p2, [eth(BCAST, B)])
    out(sw)
    sw.forward(1.0, p1, [eth(A, C), eth(A, C), b"\x01" * 13])  # A is on p1 itself; a runt
    assert out(sw) == {} and drops(p1) == {"rx_same_port": 2, "rx_malformed": 1}
    sw.egress_filter = lambda now, port, frame: None
    sw.forward(1.0, host, [eth(BCAST, C)])
    assert out(sw) == {} and drops(host) == {"rx_filtered": 1}
    sw.egress_filter = None
    sw.forward(1.0, p2, [eth(A, B), eth(C, B), eth(BCAST, B)])  # switched: counted nowhere
    assert out(sw) == {"p1": [eth(A, B), eth(C, B), eth(BCAST, B)], "host": [eth(BCAST, B)]}
    assert drops(p2) == {}
    for name in ("p1", "host"):
        sw.set_link(name, False)
    sw.forward(1.0, p2, [eth(BCAST, B), eth(C, B)])  # nobody up to take them
    assert out(sw) == {} and drops(p2) == {"rx_no_dest": 2}
    assert drops(carp) == {}


def test_a_frame_for_a_special_mac_is_accounted_like_any_other() -> None:
    sw, p1, p2, host, _ = with_carp()
    own = bytes.fromhex("02000000aaaa")
    sw.set_special_macs([VMAC], owners={own: "host"})
    sw.forward(1.0, host, [eth(own, own)])  # the owner sending to itself
    assert out(sw) == {} and drops(host) == {"rx_same_port": 1}
    sw.set_link("host", False)
    sw.forward(1.0, p1, [eth(own, A)])  # the owner is down: nobody else may have it
    assert out(sw) == {} and drops(p1) == {"rx_no_dest": 1}
    sw.set_link("host", True)
    sw.forward(1.0, p2, [eth(BCAST, VMAC)])  # VMAC learned on p2 (another node's master)
    out(sw)
    sw.forward(1.0, p2, [eth(VMAC, B)])  # switched normally: back where it came from
    assert out(sw) == {} and drops(p2) == {"rx_same_port": 1}
    rec = Recorder(switch=False)
    sw.on_special = rec.special
    sw.forward(1.0, p2, [eth(VMAC, B)])  # claimed by the hook: accounted for, not dropped
    assert len(rec.calls) == 1 and drops(p2) == {"rx_same_port": 1}
    sw.on_special = Recorder(switch=True, emits=[("p2", eth(B, VMAC))]).special
    sw.forward(1.0, p2, [eth(VMAC, B)])  # answered: accounted for though switching found none
    assert out(sw) == {"p2": [eth(B, VMAC)]} and drops(p2) == {"rx_same_port": 1}


def test_a_frame_nobody_takes_counts_as_forwarded_only_if_a_hook_answers_it() -> None:
    for hub in (False, True):
        sw = Switch("s", hub=hub)
        p1 = sw.add_port("p1")
        rec = Recorder(emits=[("p1", eth(A, B))])
        sw.on_multicast = rec.multicast
        sw.forward(1.0, p1, [eth(BCAST, A)])
        assert out(sw) == {"p1": [eth(A, B)]} and drops(p1) == {}
        rec.emits = ()
        sw.forward(1.0, p1, [eth(BCAST, A), eth(B, A)])
        assert drops(p1) == {"rx_no_dest": 2} and len(rec.calls) == 2


OWN = bytes.fromhex("02000000aaaa")
ACCOUNT_PORTS = ("p1", "p2", "host", "carp0")
# payload byte 0: what the hooks and the egress filter do with the frame
PLAIN, CLAIM, ANSWER, FILTER = range(4)


@settings(max_examples=300, deadline=None)
@given(
    st.booleans(),
    st.lists(
        st.one_of(
            st.tuples(
                st.sampled_from(ACCOUNT_PORTS),
                st.sampled_from([A, B, C, VMAC, VMAC_IP, OWN, BCAST]),
                st.sampled_from([A, B, C, VMAC, OWN]),
                st.integers(PLAIN, FILTER),
                st.booleans(),  # a runt
            ),
            st.tuples(st.sampled_from(ACCOUNT_PORTS), st.booleans()),  # a link change
        ),
        max_size=60,
    ),
)
def test_every_frame_is_forwarded_or_dropped_with_one_reason(
    hub: bool, ops: list[tuple[str, bytes, bytes, int, bool] | tuple[str, bool]]
) -> None:
    sw, *_ = with_carp()
    sw.hub = hub
    sw.set_special_macs([VMAC, VMAC_IP], owners={OWN: "host"})
    reply = eth(A, VMAC, b"R")  # shorter than a tagged frame: never taken for a delivery
    accounted: set[bytes] = set()  # tags claimed or answered by a hook

    def tag(frame: bytes) -> bytes | None:
        return frame[14:19] if len(frame) >= 19 else None

    def special(now: float, port: str, frame: bytes) -> tuple[bool, Sequence[Emit]]:
        t = tag(frame)
        if t is None or t[0] not in (CLAIM, ANSWER):
            return True, ()
        accounted.add(t)
        return (False, ()) if t[0] == CLAIM else (True, [(port, reply)])

    def multicast(now: float, port: str, frame: bytes) -> Sequence[Emit]:
        t = tag(frame)
        if t is None or t[0] != ANSWER:
            return ()
        accounted.add(t)
        return [(port, reply)]

    def egress(now: float, port: str, frame: bytes) -> bytes | None:
        t = tag(frame)
        return None if t is not None and t[0] == FILTER else frame

    sw.on_special, sw.on_multicast, sw.egress_filter = special, multicast, egress
    ingress: dict[bytes, str] = {}
    delivered: set[bytes] = set()
    for i, op in enumerate(ops):
        if len(op) == 2:
            sw.set_link(op[0], op[1])
            continue
        name, dst, src, action, runt = op
        t = bytes([action]) + i.to_bytes(4, "big")
        frame = eth(dst, src, t)[: 13 if runt else None]
        ingress[t] = name
        sw.forward(1.0, sw.ports[name], [frame])
        for _, frames in sw.drain():
            delivered.update(t for t in map(tag, frames) if t is not None)
    forwarded = delivered | accounted
    for name in ACCOUNT_PORTS:
        c = sw.ports[name].counters
        mine = sum(1 for t in forwarded if ingress[t] == name)
        assert c.rx_packets == mine + sum(getattr(c, d) for d in DROPS), name


# -- learning-arp mode and monitor ports (design.md §2) ---------------------------------------


def arp(sha: bytes, eth_src: bytes, op: int = 2, dst: bytes = BCAST, htype: int = 1) -> bytes:
    """An Ethernet frame carrying an ARP packet whose sender hardware address is `sha`."""
    body = htype.to_bytes(2, "big") + b"\x08\x00\x06\x04" + op.to_bytes(2, "big")
    body += sha + bytes([192, 0, 2, 10]) + bytes(6) + bytes([192, 0, 2, 1])
    return eth(dst, eth_src, body, b"\x08\x06")


def test_mode_names_hub_and_arp_learning() -> None:
    sw = Switch("s")
    assert sw.mode == "learning"
    sw.mode = "learning-arp"
    assert (sw.hub, sw.learn_arp, sw.mode) == (False, True, "learning-arp")
    sw.mode = "hub"
    assert (sw.hub, sw.learn_arp) == (True, False)
    assert Switch("s", learn_arp=True).mode == "learning-arp"
    with pytest.raises(ValueError, match="mode 'bridge' is not one of learning, hub"):
        sw.mode = "bridge"
    assert sw.mode == "hub"  # a refused mode changes nothing


@pytest.mark.parametrize("mode", ["learning", "learning-arp"])
def test_arp_sender_address_is_learned_only_in_learning_arp(mode: str) -> None:
    sw, p1, p2, _ = three()
    sw.mode = mode
    # an ip-stealth node answers from its own MAC A with the virtual MAC as sender address
    sw.forward(1.0, p1, [arp(VMAC, A)])
    out(sw)
    sw.forward(2.0, p2, [eth(VMAC, B)])
    if mode == "learning-arp":
        assert sw.lookup(VMAC) == "p1" and sw.lookup(A) == "p1"
        assert out(sw) == {"p1": [eth(VMAC, B)]}  # no longer flooded: balancing breaks
    else:
        assert sw.lookup(VMAC) is None
        assert sorted(out(sw)) == ["p1", "p3"]  # the virtual MAC keeps being flooded


def test_arp_learning_follows_frame_order_within_a_batch() -> None:
    sw, p1, p2, _ = three(learn_arp=True)
    to_vmac = eth(VMAC, B)
    sw.forward(1.0, p2, [eth(BCAST, B)])  # learn B on p2
    out(sw)
    sw.forward(2.0, p1, [eth(B, A, b"1"), arp(VMAC, A), eth(B, A, b"2")])
    assert out(sw) == {"p2": [eth(B, A, b"1"), arp(VMAC, A), eth(B, A, b"2")], "p3": [arp(VMAC, A)]}
    sw.forward(3.0, p2, [to_vmac, arp(VMAC, B), to_vmac])
    # the first goes to where the virtual MAC was; after the ARP it is on the ingress port
    assert out(sw) == {"p1": [to_vmac, arp(VMAC, B)], "p3": [arp(VMAC, B)]}
    assert p2.counters.rx_same_port == 1
    assert sw.lookup(VMAC) == "p2"


def test_arp_learning_skips_what_is_not_an_ethernet_arp_packet() -> None:
    sw, p1, _, _ = three(learn_arp=True)
    short = arp(VMAC, A)[:30]
    token_ring = arp(VMAC, A, htype=6)
    sw.forward(1.0, p1, [short, token_ring, arp(BCAST, A), arp(bytes(6), A)])
    assert sw.lookup(VMAC) is None
    assert sw.table_size == 1  # only A, the Ethernet source
    assert len(out(sw)["p2"]) == 4  # all still switched
    assert p1.counters.rx_malformed == 0


def test_arp_learning_with_a_vnet_header() -> None:
    sw = Switch("s", vnet_hdr=10, learn_arp=True)
    p1, p2 = sw.add_port("p1"), sw.add_port("p2")
    hdr = b"\x01" + bytes(9)
    sw.forward(1.0, p1, [hdr + arp(VMAC, A)])
    assert sw.lookup(VMAC) == "p1"
    assert out(sw) == {"p2": [hdr + arp(VMAC, A)]}
    sw.forward(2.0, p2, [hdr + eth(VMAC, B)])
    assert out(sw) == {"p1": [hdr + eth(VMAC, B)]}


def test_arp_learning_of_a_special_mac_keeps_it_special() -> None:
    sw, p1, p2, host, carp = with_carp()
    sw.mode = "learning-arp"
    rec = Recorder(switch=True)
    sw.on_special = rec.special
    sw.set_special_macs([VMAC])
    sw.forward(1.0, carp, [arp(VMAC, A)])  # from our own kernel: never a location
    assert sw.lookup(VMAC) is None
    sw.forward(1.0, p2, [arp(VMAC, B)])  # another node answers on the segment
    out(sw)
    assert sw.lookup(VMAC) == "p2"
    sw.forward(2.0, p1, [eth(VMAC, C)])
    assert len(rec.calls) == 1 and out(sw) == {"p2": [eth(VMAC, C)]}
    assert host.counters.rx_packets == 0


def test_monitor_port_gets_a_copy_of_unicast_switched_elsewhere() -> None:
    sw, p1, p2, p3 = three()
    sw.set_monitor("p3", True)
    sw.forward(1.0, p1, [eth(BCAST, A)])
    sw.forward(1.0, p2, [eth(BCAST, B)])
    assert out(sw) == {
        "p2": [eth(BCAST, A)],
        "p3": [eth(BCAST, A), eth(BCAST, B)],
        "p1": [eth(BCAST, B)],
    }  # floods reach the monitor once, as every port
    sw.forward(2.0, p1, [eth(B, A, b"1"), eth(C, A, b"2")])  # C unknown: flooded, one copy
    assert out(sw) == {
        "p2": [eth(B, A, b"1"), eth(C, A, b"2")],
        "p3": [eth(B, A, b"1"), eth(C, A, b"2")],
    }
    sw.forward(3.0, p3, [eth(A, C)])  # the monitor's own frame is not copied back to it
    assert out(sw) == {"p1": [eth(A, C)]}
    sw.forward(4.0, p1, [eth(C, A)])  # a frame for the monitor port itself: one copy
    assert out(sw) == {"p3": [eth(C, A)]}
    sw.set_link("p3", False)
    sw.forward(5.0, p1, [eth(B, A)])
    assert out(sw) == {"p2": [eth(B, A)]}
    sw.set_link("p3", True)
    sw.set_monitor("p3", False)
    sw.forward(6.0, p1, [eth(B, A)])
    assert out(sw) == {"p2": [eth(B, A)]}


def test_monitor_sees_special_macs_switched_normally_and_injected_unicast() -> None:
    sw, p1, p2, _, carp = with_carp()
    mon = sw.add_port("mon", monitor=True)
    own = bytes.fromhex("02aaaaaaaaaa")
    sw.on_special = Recorder(switch=True).special
    sw.forward(1.0, p2, [eth(BCAST, VMAC)])  # another master's virtual MAC behind p2
    sw.forward(1.0, p1, [eth(BCAST, A)])
    sw.set_special_macs([VMAC], owners={own: "host"})
    out(sw)
    sw.forward(2.0, p1, [eth(VMAC, A), eth(own, A)])
    assert out(sw) == {
        "p2": [eth(VMAC, A)],
        "host": [eth(own, A)],
        "mon": [eth(VMAC, A), eth(own, A)],
    }
    assert sw.inject(eth(A, own, b"reply")) == 1  # the node's own unicast, by destination
    assert out(sw) == {"p1": [eth(A, own, b"reply")], "mon": [eth(A, own, b"reply")]}
    assert sw.inject(eth(A, own, b"to"), "p1") == 1  # out of a named port: not switched
    assert out(sw) == {"p1": [eth(A, own, b"to")]}
    assert mon.counters.rx_packets == 0 and carp.counters.rx_packets == 0


def test_hook_output_is_not_mirrored() -> None:
    sw, p1, _, _, _ = with_carp()
    sw.add_port("mon", monitor=True)
    f = eth(VMAC, A)
    sw.on_special = Recorder(emits=[("carp0", f)]).special
    sw.set_special_macs([VMAC])
    sw.forward(1.0, p1, [f])
    assert out(sw) == {"carp0": [f]}


EXTRA = [VMAC, bytes.fromhex("020000000009")]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 2),
            st.sampled_from(MACS),
            st.sampled_from(MACS[:4]),
            st.one_of(st.none(), st.sampled_from([*MACS[:4], *EXTRA])),
        ),
        max_size=30,
    ),
    st.integers(1, 8),
)
def test_learning_arp_batches_switch_like_single_frames(
    traffic: list[tuple[int, bytes, bytes, bytes | None]], size: int
) -> None:
    """However a port's frames are batched, the outputs are those of frame-by-frame switching."""
    one, many = Switch("a", learn_arp=True), Switch("b", learn_arp=True)
    for sw in (one, many):
        for name in ("p1", "p2", "p3"):
            sw.add_port(name, monitor=name == "p3")
    frames = [
        (pi, arp(sha, src, dst=dst) if sha else eth(dst, src, i.to_bytes(2, "big")))
        for i, (pi, dst, src, sha) in enumerate(traffic)
    ]
    singles: list[tuple[str, bytes]] = []
    for pi, frame in frames:
        one.forward(1.0, one.ports[f"p{pi + 1}"], [frame])
        singles += [(p.name, f) for p, fs in one.drain() for f in fs]
    batched: list[tuple[str, bytes]] = []
    # runs of frames from one port, cut into batches of `size`
    for pi, group in itertools.groupby(frames, key=lambda x: x[0]):
        run = [f for _, f in group]
        for start in range(0, len(run), size):
            many.forward(1.0, many.ports[f"p{pi + 1}"], run[start : start + size])
            batched += [(p.name, f) for p, fs in many.drain() for f in fs]
    assert sorted(batched) == sorted(singles)
    assert one.entries(1.0) == many.entries(1.0)


def test_learning_anew_or_a_move_is_told_and_learned_stations_listed_by_port() -> None:
    sw, p1, p2, _ = three()
    told: list[int] = []
    sw.on_stations = lambda: told.append(sw.table_size)
    sw.forward(1.0, p1, [eth(BCAST, A), eth(BCAST, A)])  # once: the second only refreshes
    assert told == [1]
    sw.forward(1.0, p2, [eth(BCAST, B), eth(BCAST, A)])  # B anew, A moved
    assert told == [1, 2, 2]
    sw.set_special_macs([VMAC])
    sw.forward(1.0, p1, [eth(BCAST, VMAC)])  # a virtual MAC from the segment: not a station
    assert told == [1, 2, 2]
    assert sw.learned_on(["p2"]) == {A: "p2", B: "p2"}
    assert sw.learned_on(["p1", "nonesuch"]) == {}


def test_pinned_stations_never_age_and_go_when_left_out_or_seen_elsewhere() -> None:
    sw, p1, p2, _ = three(ageing=10.0)
    sw.set_special_macs([VMAC])
    sw.pin({A: "p3", B: "p3", VMAC: "p3", C: "nonesuch"})  # a special MAC or no port: skipped
    assert sw.lookup(A) == "p3" and sw.lookup(B) == "p3"
    assert sw.lookup(VMAC) is None and sw.lookup(C) is None
    sw.forward(1000.0, p1, [eth(A, C)])  # long past the ageing time
    assert out(sw) == {"p3": [eth(A, C)]}
    sw.pin({A: "p3"})  # B left out
    assert sw.lookup(B) is None and sw.lookup(A) == "p3"
    assert sw.lookup(C) == "p1"  # a station learned here is not touched by a pin
    sw.forward(1001.0, p2, [eth(BCAST, A)])  # A seen on p2: moved, and ages from now on
    sw.pin({})
    assert sw.lookup(A) == "p2"
    sw.expire(1012.0)
    assert sw.lookup(A) is None


def test_a_pin_never_undoes_a_special_mac_or_a_station_learned_here() -> None:
    sw, p1, p2, p3 = three()
    special: list[str] = []
    sw.on_special = lambda now, port, frame: (special.append(port), (False, []))[1]
    sw.pin({VMAC: "p3", A: "p3"})
    sw.set_special_macs([VMAC])  # a reload makes the pinned MAC a carp MAC
    sw.pin({A: "p3"})
    sw.pin({})
    sw.forward(1.0, p1, [eth(VMAC, B)])
    assert special == ["p1"]  # still special: the hook sees it
    sw.forward(2.0, p2, [eth(BCAST, A)])  # A seen here
    sw.pin({A: "p3"})  # the node does not know yet: the move stands
    assert sw.lookup(A) == "p2"
    out(sw)
    sw.forward(3.0, p3, [eth(A, C)])
    assert out(sw) == {"p2": [eth(A, C)]}


def test_pins_leave_a_quarter_of_the_table_to_learning() -> None:
    sw, p1, _, _ = three(max_entries=8)
    sw.forward(1.0, p1, [eth(BCAST, A)])
    many = {bytes((2, 0, 0, 0, 1, i)): "p3" for i in range(10)}
    sw.pin(many)
    assert sw.table_size == 6  # 8 less a quarter, A's entry among them
    sw.forward(1.0, p1, [eth(BCAST, B), eth(BCAST, C)])
    assert sw.lookup(B) == "p1" and sw.lookup(C) == "p1"


def test_stations_aging_out_are_told() -> None:
    sw, p1, _, _ = three(ageing=10.0)
    told: list[float] = []
    sw.forward(1.0, p1, [eth(BCAST, A)])
    sw.on_stations = lambda: told.append(1.0)
    sw.expire(5.0)
    assert told == []
    sw.expire(20.0)
    assert told == [1.0] and sw.lookup(A) is None
