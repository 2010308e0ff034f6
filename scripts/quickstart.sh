#!/bin/bash
# Install dependencies, build vmsvc, and boot the default demo guest on its console.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
"$ROOT/scripts/deps.sh"
BUILD_DIR=$ROOT/build "$ROOT/scripts/build.sh"
echo "== vmsvc run --kernel build/tests/guests/hello.elf --cpus 2 =="
exec "$ROOT/build/vmsvc" run --kernel "$ROOT/build/tests/guests/hello.elf" --cpus 2 --stats "$@"
