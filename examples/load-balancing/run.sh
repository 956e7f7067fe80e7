#!/bin/sh
# carp(4) load balancing in network namespaces: carpnodes 1:0,2:100 / 1:100,2:0, balancing ip.
# Usage (root): examples/load-balancing/run.sh [--quick]
exec sh "$(dirname "$0")/../run-example.sh" "$(dirname "$0")/balance.py" "$@"
