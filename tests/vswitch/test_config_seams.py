"""The operations modules against the real configuration (vswitch/config.py): hooks, defaults,
and a reload refused with ConfigError."""

from tests.vswitch.fakenode import FakeNode
from vswitch.config import CONTROL_DIR, ConfigError, loads_config
from vswitch.configtypes import DEFAULT_METRICS
from vswitch.ctl.client import RUN_DIR
from vswitch.dispatch import Dispatcher
from vswitch.hooks import ALL_STATES, HookSpec
from vswitch.metrics import DEFAULT_LISTEN, parse_listen

CONFIG = """
[node]
name = "gw-a"

[[hook]]
command = "/usr/local/bin/notify --carp 'a b'"
timeout = 2.5
on = ["master", "backup"]

[[hook]]
command = ["/bin/true"]
"""


def test_hooks_from_the_config() -> None:
    config = loads_config(CONFIG)
    specs = [HookSpec.from_config(h) for h in config.hook]
    assert specs == [
        HookSpec(("/usr/local/bin/notify", "--carp", "a b"), 2.5, frozenset({"master", "backup"})),
        HookSpec(("/bin/true",), 10.0, ALL_STATES),
    ]


def test_defaults_agree_with_the_config() -> None:
    config = loads_config(CONFIG)
    assert RUN_DIR == CONTROL_DIR
    assert config.node.control == f"{RUN_DIR}/gw-a.sock"
    assert DEFAULT_LISTEN == DEFAULT_METRICS
    assert config.node.metrics is not None
    assert parse_listen(config.node.metrics) == ("127.0.0.1", 9812)


def test_reload_refused_with_config_errors() -> None:
    node = FakeNode()
    errors = ["carp.carp0.advskew: 255 is out of range 0..254"]

    def refuse() -> list[str]:
        raise ConfigError(errors)

    node.reload = refuse  # type: ignore[method-assign]
    answer = Dispatcher(node).handle({"id": 1, "cmd": "reload"})
    assert answer == {
        "id": 1,
        "ok": False,
        "error": "configuration refused, nothing changed",
        "errors": errors,
    }
