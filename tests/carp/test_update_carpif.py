"""CarpHost.update_carpif: SIOCSVH changes that keep the carpnodes' state (§4.9)."""

from ipaddress import IPv4Address

import pytest

from carp.actions import StateChanged, Transmit, TxKind
from carp.carpif import keeps_state
from carp.constants import Balancing, State
from carp.timing import interval_us, master_down_us, seconds
from carp.wire import CarpHeader
from tests.carp.sim import ifparams
from tests.carp.test_host import make

BASE = ifparams(passphrase=b"secret")


@pytest.mark.parametrize(
    ("new", "keeps"),
    [
        (ifparams(passphrase=b"secret", advbase=3), True),
        (ifparams(passphrase=b"secret", nodes="1:200"), True),
        (ifparams(passphrase=b"other"), True),
        (ifparams(passphrase=b"secret", carppeer=IPv4Address("192.0.2.99")), True),
        (ifparams(passphrase=b"secret", nodes="2:0"), False),  # the vhid list
        (ifparams(passphrase=b"secret", addresses=("192.0.2.11/24",)), False),
        (ifparams(passphrase=b"secret", balancing=Balancing.IP), False),  # the carp MAC
        (ifparams(passphrase=b"secret", carpdev="lan1"), False),
        (ifparams(passphrase=b"secret", groups=("carp", "edge")), False),
        (ifparams(passphrase=b"secret", admin_up=False), False),
    ],
)
def test_keeps_state(new: object, keeps: bool) -> None:
    assert keeps_state(BASE, new) is keeps  # type: ignore[arg-type]


def test_a_master_keeps_its_state_and_advertises_the_new_advskew() -> None:
    host = make([BASE])
    host.start(0.0)
    host.handle_timer(10.0)  # alone: MASTER
    sc = host.carpifs["carp0"]
    cookie = sc.leader.cookie
    assert sc.leader.state is State.MASTER
    actions = host.update_carpif(10.5, "carp0", ifparams(passphrase=b"secret", nodes="1:200"))
    assert not [a for a in actions if isinstance(a, StateChanged)]
    assert host.carpifs["carp0"] is sc and sc.leader.advskew == 200
    # carp_setrun MASTER: the advertisement timer restarts with the new interval
    assert host.get_timer() == pytest.approx(10.5 + seconds(interval_us(1, 200)))
    adverts = [
        a
        for a in host.handle_timer(host.get_timer() or 0.0)
        if isinstance(a, Transmit) and a.kind is TxKind.ADVERT
    ]
    assert adverts
    header = CarpHeader.unpack(adverts[0].frame[14 + 20 : 14 + 20 + 36])
    assert (header.advskew, header.counter) == (200, cookie)


def test_a_backup_restarts_master_down_with_the_new_advbase() -> None:
    host = make([BASE])
    host.start(0.0)
    assert host.carpifs["carp0"].leader.state is State.BACKUP
    host.update_carpif(1.0, "carp0", ifparams(passphrase=b"secret", advbase=4))
    assert host.carpifs["carp0"].leader.state is State.BACKUP
    assert host.get_timer() == pytest.approx(1.0 + seconds(master_down_us(4, 0)))


def test_a_new_pass_changes_the_hmac() -> None:
    host = make([BASE])
    host.start(0.0)
    sc = host.carpifs["carp0"]
    before = sc.hmac[1].generate(bytes(8))
    host.update_carpif(1.0, "carp0", ifparams(passphrase=b"other"))
    assert sc.hmac[1].generate(bytes(8)) != before
    assert sc.leader.state is State.BACKUP


def test_other_changes_are_refused_and_change_nothing() -> None:
    host = make([BASE])
    host.start(0.0)
    sc = host.carpifs["carp0"]
    with pytest.raises(ValueError, match="replaced"):
        host.update_carpif(1.0, "carp0", ifparams(passphrase=b"secret", nodes="2:0"))
    with pytest.raises(ValueError, match="no carp interface"):
        host.update_carpif(1.0, "carp9", ifparams("carp9"))
    assert host.carpifs["carp0"] is sc and sc.params == BASE
