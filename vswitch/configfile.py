"""Reading a node's configuration file (the parsing and validation are carp.config's, sans-IO)."""

from pathlib import PurePath

from carp.config import ConfigError, NodeConfig, loads_config


def load_config(path: str | PurePath) -> NodeConfig:
    """Read and validate one node's TOML file; ConfigError lists every problem."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
        text = raw.decode("utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 at byte {exc.start} (TOML is UTF-8)"]) from None
    return loads_config(text, str(path))
