#!/bin/sh
# carp(4) load balancing in network namespaces: carpnodes 1:0,2:100 / 1:100,2:0, balancing ip.
# Usage (root): examples/load-balancing/run.sh [--quick]
set -e
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
[ -x "$python" ] || python=python3
cd "$root"
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" exec "$python" "$here/balance.py" "$@"
