#!/bin/bash
# Install dependencies, build vmsvc, and boot the default demo guest on its console.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
"$ROOT/scripts/deps.sh"
BUILD_DIR=$ROOT/build "$ROOT/scripts/build.sh"
echo "== vmsvc run --kernel build/tests/guests/hello.elf --cpus 2 --stats =="
status=0
"$ROOT/build/vmsvc" run --kernel "$ROOT/build/tests/guests/hello.elf" --cpus 2 --stats "$@" || status=$?
# The test-kit guests report through the debug-exit port: writing 0 (pass) makes
# vmsvc exit with (0 << 1) | 1 = 1, like QEMU's isa-debug-exit.
if [ $status -eq 1 ]; then
	echo "== the guest passed (debug-exit code 0 -> vmsvc exit status 1) =="
	exit 0
fi
echo "== vmsvc exited with status $status ==" >&2
exit $status
