"""The rtnetlink client: attribute codec, link messages, errors with their extended-ack text, and
real requests to this namespace's kernel that need no privileges (gets and dumps; a refused
request). What needs root (creating, moving, addressing links) runs in the integration tests
and the lab's (tests/vswitch/test_lab.py)."""

import errno
import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vswitch import rtnl
from vswitch.rtnl import IFF_UP, IFLA_IFNAME, IFLA_STATS64, STATS64, Rtnl, attr, parse_attrs


def test_attributes_are_padded_and_nest() -> None:
    name = attr(IFLA_IFNAME, b"eth0\0")
    assert name == struct.pack("=HH", 9, IFLA_IFNAME) + b"eth0\0" + bytes(3)
    nested = attr(18, attr(1, b"veth") + name)
    assert list(parse_attrs(nested)) == [(18, attr(1, b"veth") + name)]
    assert list(parse_attrs(attr(1, b"veth") + name)) == [(1, b"veth"), (IFLA_IFNAME, b"eth0\0")]
    flagged = struct.pack("=HH", 8, 0x8000 | 2) + bytes(4)  # NLA_F_NESTED is not the type
    assert list(parse_attrs(flagged)) == [(2, bytes(4))]
    with pytest.raises(ValueError, match="malformed"):
        list(parse_attrs(struct.pack("=HH", 40, 3) + b"ab"))


def test_link_messages_give_name_flags_and_stats() -> None:
    stats = struct.pack(f"={len(STATS64) + 2}Q", *range(1, len(STATS64) + 3))  # a newer kernel
    body = rtnl.ifinfomsg(7, IFF_UP) + attr(IFLA_IFNAME, b"tap1\0") + attr(IFLA_STATS64, stats)
    link = rtnl.parse_link(body)
    assert (link.index, link.flags, link.name) == (7, IFF_UP, "tap1")
    assert link.stats is not None
    assert (link.stats["rx_packets"], link.stats["tx_dropped"]) == (1, 8)
    assert len(link.stats) == len(STATS64)
    assert rtnl.parse_link(body, stats=False).stats is None  # link events decode none
    older = rtnl.parse_link(rtnl.ifinfomsg(3) + attr(IFLA_STATS64, struct.pack("=4Q", 5, 6, 7, 8)))
    assert older.stats == {"rx_packets": 5, "tx_packets": 6, "rx_bytes": 7, "tx_bytes": 8}
    assert older.name == ""
    with pytest.raises(ValueError):
        rtnl.parse_link(b"\0" * 8)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_link_parser_raises_only_value_error(data: bytes) -> None:
    try:
        link = rtnl.parse_link(data)
    except ValueError:
        return
    assert isinstance(link.name, str)


def test_an_error_carries_the_kernels_text() -> None:
    echo = struct.pack("=IHHII", 16, rtnl.RTM_NEWLINK, 5, 1, 0)
    text = attr(rtnl.NLMSGERR_ATTR_MSG, b"Unknown device type\0")
    body = struct.pack("=i", -errno.EOPNOTSUPP) + echo + text
    assert rtnl._ext_ack(rtnl.NLM_F_CAPPED | rtnl.NLM_F_ACK_TLVS, body) == "Unknown device type"
    assert rtnl._ext_ack(rtnl.NLM_F_CAPPED, body) is None  # no TLVs announced
    full = struct.pack("=IHHII", 24, rtnl.RTM_NEWLINK, 5, 1, 0) + bytes(8)  # uncapped echo
    uncapped = struct.pack("=i", -errno.EOPNOTSUPP) + full + text
    assert rtnl._ext_ack(rtnl.NLM_F_ACK_TLVS, uncapped) == "Unknown device type"
    done = struct.pack("=i", -errno.EINVAL) + attr(rtnl.NLMSGERR_ATTR_MSG, b"Bad filter\0")
    assert rtnl._ext_ack(rtnl.NLM_F_ACK_TLVS, done, echoed=False) == "Bad filter"  # a dump's
    error = rtnl._error(rtnl.RTM_NEWLINK, errno.EOPNOTSUPP, "Unknown device type")
    assert error.errno == errno.EOPNOTSUPP
    assert str(error).endswith("RTM_NEWLINK: Unknown device type")


def test_gets_and_dumps_of_this_namespace() -> None:
    with Rtnl() as conn:
        lo = conn.link("lo")
        assert lo is not None and lo.name == "lo" and lo.index == socket.if_nametoindex("lo")
        assert lo.stats is not None and lo.stats["rx_packets"] >= 0
        assert conn.link("vswitch-nonesuch") is None  # too long for any
        assert conn.link("vsw-nonesuch") is None
        with pytest.raises(LookupError, match="no interface vswitch-nonesuch"):
            conn.index("vswitch-nonesuch")
        assert {link.name for link in conn.links()} == {n for _, n in socket.if_nameindex()}
        # requests on one socket stay in step (each answer matches its sequence number)
        assert [conn.index("lo") for _ in range(3)] == [lo.index] * 3


def test_a_refused_request_raises_with_its_name() -> None:
    with Rtnl() as conn:
        with pytest.raises(OSError) as info:
            conn.add_link("vswitch-t0", "vswitch-no-such-kind")  # EPERM, or no such kind (root)
        assert info.value.errno in (errno.EPERM, errno.EOPNOTSUPP)
        assert "RTM_NEWLINK" in str(info.value)
        assert conn.index("lo") == socket.if_nametoindex("lo")  # the socket goes on after it
