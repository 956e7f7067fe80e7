#!/bin/sh
# carp(4) EXAMPLE 1 in network namespaces: group failover of carp0/carp1 with preempt.
# Usage (root): examples/group-failover/run.sh [--quick]
exec sh "$(dirname "$0")/../run-example.sh" "$(dirname "$0")/failover.py" "$@"
