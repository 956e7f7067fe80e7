"""CarpHost.replace_carpif: reconfiguration of a running node (§4.9, reload, ifconfig)."""

import pytest

from carp.actions import DemoteChanged, Reason, StateChanged
from carp.constants import State
from tests.carp.sim import ifparams
from tests.carp.test_host import make, states


def test_replace_goes_init_then_backup_and_keeps_order() -> None:
    host = make([ifparams(), ifparams("carp1", "lan1", ("198.51.100.10/24",), "2:0")])
    host.start(0.0)
    host.handle_timer(10.0)  # nobody else: both MASTER
    actions = host.replace_carpif(11.0, "carp0", ifparams(advbase=2))
    assert states(actions) == [
        (State.MASTER, State.INIT, Reason.RECONFIG),
        (State.INIT, State.BACKUP, Reason.START),
    ]
    assert list(host.carpifs) == ["carp0", "carp1"]
    assert host.carpifs["carp0"].advbase == 2
    assert host.carpifs["carp1"].leader.state is State.MASTER  # untouched


def test_a_vhid_clash_changes_nothing() -> None:
    host = make([ifparams(), ifparams("carp1", "lan0", ("192.0.2.20/24",), "2:0")])
    host.start(0.0)
    before = host.carpifs["carp0"]
    with pytest.raises(ValueError, match="vhid 2 already used on lan0"):
        host.replace_carpif(1.0, "carp0", ifparams(nodes="2:0"))
    with pytest.raises(ValueError, match="unknown carpdev"):
        host.replace_carpif(1.0, "carp0", ifparams(carpdev="nope"))
    with pytest.raises(ValueError, match="parameters are for"):
        host.replace_carpif(1.0, "carp0", ifparams("carp9"))
    assert host.carpifs["carp0"] is before
    assert before.leader.state is State.BACKUP


def test_remove_and_add() -> None:
    host = make()
    host.start(0.0)
    removed = host.replace_carpif(1.0, "carp0", None)
    assert states(removed) == [(State.BACKUP, State.INIT, Reason.RECONFIG)]
    assert host.carpifs == {} and host.get_timer() is None
    added = host.replace_carpif(2.0, "carp5", ifparams("carp5", groups=("carp", "edge")))
    assert states(added) == [(State.INIT, State.BACKUP, Reason.START)]
    assert host.groups["edge"] == 0
    assert host.get_timer() is not None


def test_demotion_held_by_the_old_interface_leaves_with_it() -> None:
    host = make()
    host.start(0.0)
    host.set_carpdev_link(1.0, "lan0", False)
    assert host.groups["carp"] == 1
    actions = host.replace_carpif(2.0, "carp0", ifparams(advbase=3))
    assert any(isinstance(a, DemoteChanged) and a.reason == "detach" for a in actions)
    # the new interface on the still-down carpdev is suppressed again (§4.8)
    assert host.groups["carp"] == 1
    assert host.carpifs["carp0"].leader.state is State.INIT
    assert not any(isinstance(a, StateChanged) and a.new is State.BACKUP for a in actions)
