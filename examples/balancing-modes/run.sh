#!/bin/sh
# balancing ip, ip-unicast and ip-stealth on a learning switch and on a hub, in namespaces.
# Usage (root): examples/balancing-modes/run.sh [--quick]
exec sh "$(dirname "$0")/../run-example.sh" "$(dirname "$0")/modes.py" "$@"
