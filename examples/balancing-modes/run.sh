#!/bin/sh
# every balancing mode against a hub, a learning switch (with and without monitor ports) and a
# learning-arp switch, the segment being a vswitch node, in namespaces.
# Usage (root): examples/balancing-modes/run.sh [--quick]
exec sh "$(dirname "$0")/../run-example.sh" "$(dirname "$0")/modes.py" "$@"
