#!/bin/sh
# What every examples/*/run.sh does: run its example's Python script with the checkout's code and
# virtualenv (or $PYTHON, else python3), from the repository root.
# Usage: examples/run-example.sh SCRIPT [ARGS...]
set -e
script=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
shift
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
[ -x "$python" ] || python=python3
cd "$root"
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" exec "$python" "$script" "$@"
