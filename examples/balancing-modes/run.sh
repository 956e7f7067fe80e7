#!/bin/sh
# balancing ip, ip-unicast and ip-stealth on a learning switch and on a hub, in namespaces.
# Usage (root): examples/balancing-modes/run.sh [--quick]
set -e
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
[ -x "$python" ] || python=python3
cd "$root"
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" exec "$python" "$here/modes.py" "$@"
