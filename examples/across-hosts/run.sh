#!/bin/sh
# Two gateway nodes on two hosts joined only by a routed underlay share one address over VXLAN.
# Usage (root): examples/across-hosts/run.sh [--quick]
exec sh "$(dirname "$0")/../run-example.sh" "$(dirname "$0")/tunnel.py" "$@"
