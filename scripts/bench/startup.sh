#!/bin/bash
# Whole-process startup benchmark: wall time from exec to exit of the `hello`
# test guest (boot, print, debug-exit) under vmsvc, QEMU -M microvm and QEMU
# -M pc, all with the same accelerator. Prints per-VMM medians and the ratios
# vmsvc/QEMU-microvm and vmsvc/QEMU-pc.
#
# usage: scripts/bench/startup.sh [RUNS]       (default 20)
# env:   BUILD_DIR (default build; relative paths are from the repo root)
#        ACCEL     kvm (default) or tcg, used for QEMU
#        QEMU      qemu-system-x86_64 binary (default from PATH)
# Timing uses date +%s%N around each run (no hyperfine needed).
set -eu

root=$(cd "$(dirname "$0")/../.." && pwd)
runs=${1:-${RUNS:-20}}
build=${BUILD_DIR:-build}
case "$build" in /*) ;; *) build=$root/$build ;; esac
accel=${ACCEL:-kvm}
qemu=${QEMU:-qemu-system-x86_64}
vmsvc=$build/vmsvc
guest=$build/tests/guests/hello.elf

if ! [ "$runs" -ge 1 ] 2>/dev/null; then
	echo "RUNS must be a positive integer, got '$runs'" >&2
	exit 2
fi
if [ ! -x "$vmsvc" ] || [ ! -f "$guest" ]; then
	echo "building vmsvc and the hello guest in $build ..." >&2
	cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build "$build" -j"$(nproc)" --target vmsvc guest_hello >/dev/null
fi

if [ "$accel" = kvm ]; then cpu="host,-arch-capabilities"; else cpu="max"; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

now_ns() { date +%s%N; }

# run_many NAME CMD... : times RUNS runs, checks each exits 1 (guest PASS),
# leaves the sorted times (ns) in $tmp/NAME.
run_many() {
	local name=$1
	shift
	: >"$tmp/$name.raw"
	for ((i = 0; i < runs; i++)); do
		local t0 t1 st=0
		t0=$(now_ns)
		"$@" </dev/null >/dev/null 2>"$tmp/$name.err" || st=$?
		t1=$(now_ns)
		if [ "$st" -ne 1 ]; then
			echo "$name: run $i exited $st (expected 1 = guest PASS); stderr:" >&2
			cat "$tmp/$name.err" >&2
			return 1
		fi
		echo $((t1 - t0)) >>"$tmp/$name.raw"
	done
	sort -n "$tmp/$name.raw" >"$tmp/$name"
}

median_ms() {
	awk '{ v[NR] = $1 } END { if (NR % 2) m = v[(NR + 1) / 2]; else m = (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.2f", m / 1e6 }' "$1"
}
minmax_ms() {
	awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.2f..%.2f", lo / 1e6, hi / 1e6 }' "$1"
}

qemu_cmd() {
	local machine=$1
	echo "$qemu" -M "$machine" -accel "$accel" -cpu "$cpu" -kernel "$guest" \
		-device isa-debug-exit,iobase=0xf4,iosize=0x04 -serial "file:$tmp/serial.txt" \
		-display none -no-reboot -nodefaults -smp 1 -m 128M
}

echo "startup benchmark: hello guest, $runs runs each, accel=$accel"
run_many vmsvc "$vmsvc" run --kernel "$guest" --serial "file:$tmp/serial.txt" --cpus 1 --mem 128M
have_qemu=1
command -v "$qemu" >/dev/null 2>&1 || { echo "QEMU ($qemu) not found: vmsvc only" >&2; have_qemu=0; }
if [ $have_qemu = 1 ]; then
	# shellcheck disable=SC2046
	run_many qemu-microvm $(qemu_cmd microvm)
	# shellcheck disable=SC2046
	run_many qemu-pc $(qemu_cmd pc)
fi

printf '%-14s %12s %22s\n' VMM "median ms" "min..max ms"
for n in vmsvc qemu-microvm qemu-pc; do
	[ -f "$tmp/$n" ] || continue
	printf '%-14s %12s %22s\n' "$n" "$(median_ms "$tmp/$n")" "$(minmax_ms "$tmp/$n")"
done
if [ $have_qemu = 1 ]; then
	v=$(median_ms "$tmp/vmsvc") m=$(median_ms "$tmp/qemu-microvm") p=$(median_ms "$tmp/qemu-pc")
	awk -v v="$v" -v m="$m" -v p="$p" 'BEGIN {
		printf "ratio vmsvc/QEMU-microvm: %.3f\n", v / m
		printf "ratio vmsvc/QEMU-pc:      %.3f\n", v / p }'
fi
