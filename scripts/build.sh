#!/bin/bash
# Configure and build vmsvc (and the test-kit guests) into BUILD_DIR (default build/).
# Extra CMake arguments are passed through, e.g. scripts/build.sh -DVMSVC_SANITIZE=ON
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
cmake -S "$ROOT" -B "$BUILD_DIR" "$@" >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)"
