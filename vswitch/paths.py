"""Where a node's control socket lives unless `[node] control` says otherwise.

The node (vswitch/config.py, vswitch/run.py) and the client commands (vswitch/ctl/) must agree on
it, so it is written once, here, with no imports: the client stays light.
"""

RUN_DIR = "/run/vswitch"


def default_socket(name: str) -> str:
    """The control socket of the node called `name` when its file names none."""
    return f"{RUN_DIR}/{name}.sock"
