"""The balancing modes end to end (carp-protocol.md §6, design.md decisions 3 and 4).

Two gateway nodes with the load-balanced carpnodes of carp(4)'s EXAMPLES (gwa `1:0,2:100`, gwb
`1:100,2:0`): gwa is MASTER of vhid 1 (sorted index 0), gwb of vhid 2 (index 1). Many flows come
from one client namespace holding 32 source addresses; AF_PACKET sockets on the ports of the
LAN/WAN bridges in "seg" show which node each request reached and which node answered it. The
expected node is computed here from the rules of the protocol reference, independently of the
product: §6.5 (fold of src and dst, index = fold % 2) and, for `arp`, the §6.8 hash.
"""

import ipaddress
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager

import pytest

from carp.auth import carp_key, inner_words
from carp.balance import arp_hash
from vswitch.lab.gateway import (
    LAN_VIP,
    LAN_VIP6,
    UPSTREAM,
    Gateway,
    GatewayLab,
    Sniffed,
    client_ip,
    client_ip6,
    pair_specs,
)

pytestmark = pytest.mark.netns

CARPNODES = ("1:0,2:100", "1:100,2:0")
PASSWORD = "secret"  # pair_specs' default
OWNERS = {1: ["gwa"], 2: ["gwb"]}  # vhid -> MASTER once the pair has settled (preempt on)
V4 = [f"192.0.2.{140 + i}" for i in range(32)]
V6 = [f"2001:db8::{0x200 + i:x}" for i in range(32)]
ECHO_PORT = 7777
VRRP_PREFIXES = (b"\x00\x00\x5e\x00\x01", b"\x01\x00\x5e\x00\x01")  # §6.3, either group bit
IP_MODE_MAC = "01:00:5e:00:01:01"  # `ip`: the leader's MAC with the group bit (§6.3)
VHE_MACS = ("00:00:5e:00:01:01", "00:00:5e:00:01:02")  # index 0 / 1, unicast (§6.3)
SETTLE = 30.0  # election with advbase 1 takes ~3-5 s; generous on a shared 2-core machine
FAILOVER = 30.0


# -- the rules, written out here from the protocol reference --------------------------------------


def fold(src: str, dst: str) -> int:
    """§6.5 step 4: XOR of every 32-bit big-endian word of both addresses."""
    x = 0
    for addr in (src, dst):
        packed = ipaddress.ip_address(addr).packed
        for i in range(0, len(packed), 4):
            x ^= int.from_bytes(packed[i : i + 4], "big")
    return x


def lsindex(src: str, dst: str) -> int:
    return fold(src, dst) % 2  # lscount 2


# -- the lab ----------------------------------------------------------------------------------


@contextmanager
def balanced(balancing: str, *, segment: str = "bridge", clients: int = 1) -> Iterator[GatewayLab]:
    with GatewayLab(
        pair_specs(balancing, carpnodes=CARPNODES), clients=clients, segment=segment
    ) as lab:
        yield lab
    assert lab.lab.teardown_errors == []


def start_pair(lab: GatewayLab) -> None:
    for gw in lab.gateways:
        lab.start(gw)


def wait_settled(lab: GatewayLab) -> None:
    lab.wait_for(lambda: lab.masters() == OWNERS, SETTLE)


def lan_port_of_index(lab: GatewayLab) -> dict[int, str]:
    """Sorted carpnode index -> the LAN bridge port of the node MASTER of it."""
    by_name = {gw.name: gw for gw in lab.gateways}
    masters = lab.masters()
    return {
        index: lab.seg_port(by_name[masters[vhid][0]]) for index, vhid in enumerate(sorted(masters))
    }


def gw_ports(lab: GatewayLab, side: str = "lan") -> list[str]:
    return [lab.seg_port(gw, side) for gw in lab.gateways]


# -- reading the sniffed frames ---------------------------------------------------------------


def ip_of(frame: bytes) -> tuple[str, str, int, bytes] | None:
    """(src, dst, protocol, payload) of an IPv4 / IPv6 (no extension header) frame."""
    if frame[12:14] == b"\x08\x00" and len(frame) >= 34:
        hl = (frame[14] & 0x0F) * 4
        src, dst = ipaddress.IPv4Address(frame[26:30]), ipaddress.IPv4Address(frame[30:34])
        return str(src), str(dst), frame[23], frame[14 + hl :]
    if frame[12:14] == b"\x86\xdd" and len(frame) >= 54:
        src6, dst6 = ipaddress.IPv6Address(frame[22:38]), ipaddress.IPv6Address(frame[38:54])
        return str(src6), str(dst6), frame[20], frame[54:]
    return None


def echoes(
    seen: Iterable[Sniffed], kind: str, ports: Iterable[str], *, inbound: bool
) -> dict[str, list[str]]:
    """Client address -> the ports an echo `kind` ("request" / "reply") of it crossed, in the
    given direction (inbound: sent by the device behind the port)."""
    types = {"request": (1, 8, 58, 128), "reply": (1, 0, 58, 129)}[kind]
    wanted = set(ports)
    out: dict[str, list[str]] = defaultdict(list)
    for s in seen:
        if s.ifname not in wanted or s.inbound != inbound:
            continue
        ip = ip_of(s.frame)
        if ip is None or not ip[3]:
            continue
        src, dst, proto, payload = ip
        if (proto, payload[0]) in ((types[0], types[1]), (types[2], types[3])):
            out[src if kind == "request" else dst].append(s.ifname)
    return out


def forwarded_udp(seen: Iterable[Sniffed], ports: Iterable[str]) -> dict[str, list[str]]:
    """Client address -> the WAN ports its datagram to the upstream left a node on."""
    wanted = set(ports)
    out: dict[str, list[str]] = defaultdict(list)
    for s in seen:
        ip = ip_of(s.frame)
        if s.ifname in wanted and s.inbound and ip and ip[2] == 17 and ip[1] == UPSTREAM:
            out[ip[0]].append(s.ifname)
    return out


def served_by(replies: dict[str, list[str]], sources: list[str]) -> dict[str, list[str]]:
    return {src: replies.get(src, []) for src in sources}


def assert_split(
    lab: GatewayLab, seen: list[Sniffed], sources: list[str], vip: str, answered: dict[str, bool]
) -> None:
    """Every echo answered, by exactly one node (no duplicate on the wire or at the client), the
    one MASTER of index fold(src, vip) % 2; both nodes serve a real share."""
    assert all(answered.values()), [s for s, ok in answered.items() if not ok]
    port_of = lan_port_of_index(lab)
    expected = {src: [port_of[lsindex(src, vip)]] for src in sources}
    assert served_by(echoes(seen, "reply", gw_ports(lab), inbound=True), sources) == expected
    at_client = echoes(seen, "reply", ["c1"], inbound=False)
    assert {src: len(at_client.get(src, [])) for src in sources} == dict.fromkeys(sources, 1)
    shares = [sum(1 for p in expected.values() if p == [port]) for port in port_of.values()]
    assert min(shares) >= len(sources) // 4, shares


def assert_routed_split(lab: GatewayLab, seen: list[Sniffed], counts: dict[str, int]) -> None:
    """Each UDP flow to the upstream is forwarded by exactly one node, the one MASTER of index
    fold(src, upstream) % 2 (ip_input_if filters on src and dst also when forwarding), and its
    one echo comes back."""
    assert counts == dict.fromkeys(V4, 1)
    wan_of = {gw.name: lab.seg_port(gw, "wan") for gw in lab.gateways}
    masters = lab.masters()
    expected = {src: [wan_of[masters[1 + lsindex(src, UPSTREAM)][0]]] for src in V4}
    got = forwarded_udp(seen, wan_of.values())
    assert {src: got.get(src, []) for src in V4} == expected


def vmac_sources(seen: Iterable[Sniffed]) -> list[tuple[str, str]]:
    return [
        (s.ifname, s.frame[6:12].hex(":"))
        for s in seen
        if s.inbound and s.frame[6:11] in VRRP_PREFIXES
    ]


def fdb(lab: GatewayLab, mac: str) -> list[str]:
    """The LAN bridge ports that learned `mac` (dynamic entries only)."""
    out = lab.lab.run(lab.seg, ["bridge", "fdb", "show", "br", "br-lan"]).stdout
    return [
        line.split()[2]
        for line in out.splitlines()
        if line.startswith(mac) and "permanent" not in line
    ]


# -- tests -----------------------------------------------------------------------------------


def test_ip_splits_flows_by_the_fold() -> None:
    """`balancing ip`: the client sends to the multicast carp MAC, the bridge floods it to both
    nodes, each keeps only the flows of the carpnode it is MASTER of (carp_lsdrop)."""
    with balanced("ip") as lab:
        lab.add_addresses(1, [f"{a}/24" for a in V4] + [f"{a}/64" for a in V6])
        lab.udp_echo(lab.up, UPSTREAM, ECHO_PORT)
        start_pair(lab)
        wait_settled(lab)
        sniffer = lab.sniff(["c1", *gw_ports(lab), *gw_ports(lab, "wan")])

        answered = lab.ping_many(1, V4, LAN_VIP)
        seen = sniffer.frames()
        assert_split(lab, seen, V4, LAN_VIP, answered)
        # every request reached both nodes: the split is the nodes' doing, not the bridge's
        requests = served_by(echoes(seen, "request", gw_ports(lab), inbound=False), V4)
        assert all(sorted(p) == gw_ports(lab) for p in requests.values())
        assert lab.neighbour(lab.clients[0], LAN_VIP) == IP_MODE_MAC

        sniffer.clear()
        answered = lab.ping_many(1, V6, LAN_VIP6)
        assert_split(lab, sniffer.frames(), V6, LAN_VIP6, answered)

        sniffer.clear()
        counts = lab.udp_flows(1, V4, UPSTREAM, ECHO_PORT)
        assert_routed_split(lab, sniffer.frames(), counts)


def test_ip_stealth_never_sources_a_virtual_mac() -> None:
    """`ip-stealth`: from the first election on, no frame on the LAN has a virtual MAC as
    Ethernet source, so the bridge never learns one and keeps flooding; flows still split."""
    with balanced("ip-stealth") as lab:
        lab.add_addresses(1, [f"{a}/24" for a in V4] + [f"{a}/64" for a in V6])
        lab.udp_echo(lab.up, UPSTREAM, ECHO_PORT)
        sniffer = lab.sniff(["c1", *gw_ports(lab), *gw_ports(lab, "wan")])
        start_pair(lab)
        wait_settled(lab)

        answered4 = lab.ping_many(1, V4, LAN_VIP)
        answered6 = lab.ping_many(1, V6, LAN_VIP6)
        counts = lab.udp_flows(1, V4, UPSTREAM, ECHO_PORT)
        seen = sniffer.frames()
        assert_split(lab, seen, V4, LAN_VIP, answered4)
        assert_split(lab, seen, V6, LAN_VIP6, answered6)
        assert_routed_split(lab, seen, counts)

        lan = ["c1", *gw_ports(lab)]
        lan_seen = [s for s in seen if s.ifname in lan]
        from_nodes = [s for s in lan_seen if s.inbound and s.ifname != "c1"]
        assert len(from_nodes) > 2 * len(V4)  # adverts, ARP/NA replies, echo replies
        assert vmac_sources(lan_seen) == []
        # the client still sends to the (unicast) carp MAC, which the bridge must flood
        assert lab.neighbour(lab.clients[0], LAN_VIP) == VHE_MACS[0]
        assert fdb(lab, VHE_MACS[0]) == []


def test_ip_unicast_needs_a_hub() -> None:
    """`ip-unicast` on a hub vs a learning bridge.

    Both nodes answer with the unicast carp MAC 00:00:5e:00:01:01 as Ethernet source (design
    decision 4; current ip_carp.c also advertises from the carp interface MAC for every vhid,
    §6.7). carp(4) and §6.6 say this mode needs a hub or a switch that floods: a learning bridge
    learns the virtual MAC on the port of whichever node sent it last, so traffic to the VIP
    converges to that one port and the flows of the other node's share are lost (that node never
    sees them; the one that does drops them in carp_lsdrop). On the hub (ageing 0) every request
    reaches both nodes and each flow is answered once, by its owner. Measured here: on the hub
    all flows work and split; on the bridge each request reaches exactly one node, a flow is
    answered iff that node owns it, and some flows are lost.
    """
    with ExitStack() as stack:
        hub = stack.enter_context(balanced("ip-unicast", segment="hub"))
        bridge = stack.enter_context(balanced("ip-unicast", segment="bridge"))
        for lab in (hub, bridge):
            lab.add_addresses(1, [f"{a}/24" for a in V4])
            start_pair(lab)
        for lab in (hub, bridge):
            wait_settled(lab)

        hub_sniffer = hub.sniff(["c1", *gw_ports(hub)])
        hub_answered = hub.ping_many(1, V4, LAN_VIP)
        hub_seen = hub_sniffer.frames()
        assert_split(hub, hub_seen, V4, LAN_VIP, hub_answered)
        hub_requests = served_by(echoes(hub_seen, "request", gw_ports(hub), inbound=False), V4)
        assert all(sorted(p) == gw_ports(hub) for p in hub_requests.values())
        assert vmac_sources(hub_seen)  # the hub sees the virtual MAC as source, and ignores it
        assert fdb(hub, VHE_MACS[0]) == []

        bridge_sniffer = bridge.sniff(["c1", *gw_ports(bridge)])
        bridge_answered = bridge.ping_many(1, V4, LAN_VIP)
        bridge_seen = bridge_sniffer.frames()
        assert len(fdb(bridge, VHE_MACS[0])) == 1  # learned on one node's port
        requests = served_by(echoes(bridge_seen, "request", gw_ports(bridge), inbound=False), V4)
        assert all(len(p) == 1 for p in requests.values()), requests  # never flooded
        port_of = lan_port_of_index(bridge)
        owned = {src: requests[src] == [port_of[lsindex(src, LAN_VIP)]] for src in V4}
        assert bridge_answered == owned
        replies = served_by(echoes(bridge_seen, "reply", gw_ports(bridge), inbound=True), V4)
        assert replies == {src: requests[src] if owned[src] else [] for src in V4}
        lost = [src for src, ok in bridge_answered.items() if not ok]
        assert lost  # the other node's share
        assert sum(bridge_answered.values()) < sum(hub_answered.values()) == len(V4)


def arp_index(mac: str) -> int:
    """§6.8: carp_hash of the ARP sender hardware address, modulo the 2 carpnodes."""
    key = carp_key(PASSWORD)
    return arp_hash(inner_words(key), key, bytes.fromhex(mac.replace(":", ""))) % 2


def client_macs(per_index: int) -> list[str]:
    """Locally administered client MACs, `per_index` hashing to index 0 and as many to 1."""
    found: dict[int, list[str]] = {0: [], 1: []}
    for n in range(1, 256):
        mac = f"02:00:00:00:00:{n:02x}"
        found[arp_index(mac)].append(mac)
        if min(len(v) for v in found.values()) >= per_index:
            break
    return found[0][:per_index] + found[1][:per_index]


def test_arp_balancing_hands_out_the_mac_of_each_clients_carpnode() -> None:
    """`arp` (historical, design decision 3): ARP and NDP answers carry the MAC of the carpnode
    the requester's hardware address hashes to, from the node MASTER of it; the bridge learns
    each virtual MAC at its master, so each client is served by that node alone."""
    macs = client_macs(2)
    with balanced("arp", clients=len(macs)) as lab:
        for i, mac in enumerate(macs, start=1):
            lab.set_client_mac(i, mac)
        start_pair(lab)
        wait_settled(lab)
        port_of = lan_port_of_index(lab)
        sniffer = lab.sniff([*(f"c{i}" for i in range(1, len(macs) + 1)), *gw_ports(lab)])

        for i, mac in enumerate(macs, start=1):
            index = arp_index(mac)
            assert lab.ping_many(i, [client_ip(i)], LAN_VIP) == {client_ip(i): True}
            assert lab.ping_many(i, [client_ip6(i)], LAN_VIP6) == {client_ip6(i): True}
            ns = lab.clients[i - 1]
            assert lab.neighbour(ns, LAN_VIP) == VHE_MACS[index], (i, mac)
            assert lab.neighbour(ns, LAN_VIP6) == VHE_MACS[index], (i, mac)

        seen = sniffer.frames()
        requests = echoes(seen, "request", gw_ports(lab), inbound=False)
        replies = echoes(seen, "reply", gw_ports(lab), inbound=True)
        for i, mac in enumerate(macs, start=1):
            owner = [port_of[arp_index(mac)]]
            for src in (client_ip(i), str(ipaddress.IPv6Address(client_ip6(i)))):
                assert requests[src] == owner, (i, src)
                assert replies[src] == owner, (i, src)
        assert {arp_index(m) for m in macs} == {0, 1}
        assert fdb(lab, VHE_MACS[0]) == [port_of[0]]
        assert fdb(lab, VHE_MACS[1]) == [port_of[1]]


def test_ip_survivor_serves_every_flow() -> None:
    """`kill -9` of gwa in `ip` mode: gwb becomes MASTER of both carpnodes (and of the WAN
    address), its lsmask covers both indexes, and it answers and forwards every flow alone."""
    with balanced("ip") as lab:
        lab.add_addresses(1, [f"{a}/24" for a in V4])
        lab.udp_echo(lab.up, UPSTREAM, ECHO_PORT)
        start_pair(lab)
        wait_settled(lab)
        gwa, gwb = lab.gateways
        sniffer = lab.sniff(["c1", *gw_ports(lab), *gw_ports(lab, "wan")])
        before = lab.ping_many(1, V4, LAN_VIP)
        assert_split(lab, sniffer.frames(), V4, LAN_VIP, before)

        lab.kill(gwa)
        lab.wait_for(lambda: lab.masters() == {1: ["gwb"], 2: ["gwb"]}, FAILOVER, gwb)
        lab.wait_for(lambda: lab.masters("carp1") == {10: ["gwb"]}, FAILOVER, gwb)
        sniffer.clear()
        answered = lab.ping_many(1, V4, LAN_VIP)
        counts = lab.udp_flows(1, V4, UPSTREAM, ECHO_PORT)
        seen = sniffer.frames()

        assert all(answered.values()), answered
        survivor = survivor_ports(lab, gwb)
        assert served_by(echoes(seen, "reply", gw_ports(lab), inbound=True), V4) == {
            src: [survivor["lan"]] for src in V4
        }
        assert counts == dict.fromkeys(V4, 1)
        got = forwarded_udp(seen, gw_ports(lab, "wan"))
        assert {src: got.get(src, []) for src in V4} == {src: [survivor["wan"]] for src in V4}


def survivor_ports(lab: GatewayLab, gw: Gateway) -> dict[str, str]:
    return {side: lab.seg_port(gw, side) for side in ("lan", "wan")}
