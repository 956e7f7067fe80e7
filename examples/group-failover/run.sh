#!/bin/sh
# carp(4) EXAMPLE 1 in network namespaces: group failover of carp0/carp1 with preempt.
# Usage (root): examples/group-failover/run.sh [--quick]
set -e
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
[ -x "$python" ] || python=python3
cd "$root"
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" exec "$python" "$here/failover.py" "$@"
