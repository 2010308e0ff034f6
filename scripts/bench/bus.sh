#!/bin/bash
# Service bus micro-benchmark: cost of bus_publish() without and with
# subscribers of each kind (docs/bus.md). Builds scripts/bench/bus_bench.c with
# the bus sources at -O2 into a temporary directory and runs it.
#
# usage: scripts/bench/bus.sh [PUBLISHES]     (default 20000000 per thread)
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/bus_bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
${CC:-cc} -O2 -D_GNU_SOURCE -I"$root/include" "$root/scripts/bench/bus_bench.c" "$root/src/vmm/bus.c" \
	"$root/src/vmm/err.c" -lpthread -o "$tmp/bus_bench"
echo "host: $(nproc) CPUs, $(uname -r)"
"$tmp/bus_bench" "$@"
