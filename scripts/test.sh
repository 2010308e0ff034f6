#!/bin/bash
# Install dependencies, build, and run the whole test suite twice: a normal build
# (build/) and an AddressSanitizer + UndefinedBehaviorSanitizer build (build-asan/).
# Unit tests (CMocka) and integration tests (test-kit guests on /dev/kvm, and the
# same guests under QEMU for verdict comparison). Linux boot tests are separate:
# scripts/test-linux.sh (they take many minutes on hosts without VMX/SVM).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
"$ROOT/scripts/deps.sh"
# Real-kernel fixtures for the introspection tests (Debian cloud kernel booted under
# QEMU/TCG, memory dumped; cached in build/vmi). Without them those tests skip.
"$ROOT/scripts/vmi-fixtures.sh" || echo "test.sh: VMI fixtures unavailable; the fixture tests will skip" >&2
JOBS=$(nproc)
# QEMU runs the same guests for verdict comparison. TCG by default: with KVM, QEMU's
# SeaBIOS runs in KVM's emulator on hosts without VMX/SVM and takes ~10-60 s per
# guest. VMSVC_QEMU_ACCEL=kvm scripts/test.sh compares against QEMU on KVM instead.
export VMSVC_QEMU_ACCEL=${VMSVC_QEMU_ACCEL:-tcg}
status=0
for cfg in normal asan; do
	if [ $cfg = normal ]; then dir=$ROOT/build; args=(); else dir=$ROOT/build-asan; args=(-DVMSVC_SANITIZE=ON); fi
	echo "=== $cfg build ($dir) ==="
	BUILD_DIR=$dir "$ROOT/scripts/build.sh" "${args[@]}"
	# Linux boot tests (label linux) are excluded: many minutes on hosts without
	# VMX/SVM (run them with: ctest --test-dir build -L linux). The sanitizer pass
	# also skips the QEMU side (already compared in the normal pass). ctest honours
	# only one -LE, hence one regular expression.
	exclude=linux
	[ $cfg = asan ] && exclude='linux|qemu'

	if ! ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		ctest --test-dir "$dir" --output-on-failure -j"$JOBS" -LE "$exclude"; then
		status=1
	fi
done
exit $status
