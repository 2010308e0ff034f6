#!/bin/bash
# Run one test-kit guest under a VMM and print a normalised verdict:
#   pass | fail | triple-fault | error
#
# usage: run_guest.sh [--expect VERDICT] [--timeout SECS] vmsvc PATH_TO_VMSVC GUEST.elf CPUS [APPEND]
#        run_guest.sh [--expect VERDICT] [--timeout SECS] qemu  PATH_TO_QEMU  GUEST.elf CPUS [APPEND]
# With --expect the exit status is 0 when the verdict matches, 1 when not
# (the guest's serial output and the VMM's stderr are shown then), and 77
# (ctest "skipped") when the VMM binary is missing. Without it, 0 always.
#
# How verdicts are read:
#   vmsvc: debug-exit status (value<<1)|1: 1 = pass (serial must say PASS),
#          3 = fail; non-zero with "triple fault" on stderr = triple-fault.
#   qemu:  same debug-exit statuses; with -no-reboot a triple fault resets and
#          QEMU exits 0: status 0 with neither PASS nor FAIL on the serial
#          port = triple-fault (kit guests never reset on purpose).
#   a timeout, a crash or anything inconsistent = error.
# QEMU runs with KVM (-cpu host,-arch-capabilities: plain "host" trips over
# MSR 0x10a on this host); VMSVC_QEMU_ACCEL=tcg switches to TCG.
set -u

expect=""
extra=()
limit=${RUN_GUEST_TIMEOUT:-50}
while [ $# -gt 0 ]; do
	case "$1" in
	--expect) expect=$2; shift 2 ;;
	--timeout) limit=$2; shift 2 ;;
	--vmm-arg) extra+=("$2"); shift 2 ;;   # appended to the VMM command (devices)
	*) break ;;
	esac
done
if [ $# -lt 4 ]; then
	echo "usage: $0 [--expect VERDICT] [--timeout SECS] [--vmm-arg ARG]... vmsvc|qemu BINARY GUEST.elf CPUS [APPEND]" >&2
	exit 2
fi
vmm=$1 bin=$2 guest=$3 cpus=$4 append=${5:-}

if ! command -v "$bin" >/dev/null 2>&1; then
	echo "error: $vmm binary '$bin' not found" >&2
	[ -n "$expect" ] && exit 77
	echo error
	exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/run_guest.XXXXXX")
trap 'rm -rf "$work"' EXIT
serial=$work/serial.txt
errlog=$work/stderr.txt
: >"$serial"

case "$vmm" in
vmsvc)
	cmd=("$bin" run --kernel "$guest" --serial "file:$serial" --cpus "$cpus" --mem 128M)
	[ -n "$append" ] && cmd+=(--append "$append")
	;;
qemu)
	accel=${VMSVC_QEMU_ACCEL:-kvm}
	if [ "$accel" = kvm ]; then cpu="host,-arch-capabilities"; else cpu="max"; fi
	# shellcheck disable=SC2054  # the commas belong to QEMU option values
	cmd=("$bin" -M "${VMSVC_QEMU_MACHINE:-pc}" -accel "$accel" -cpu "$cpu" -kernel "$guest"
		-device isa-debug-exit,iobase=0xf4,iosize=0x04 -serial "file:$serial"
		-display none -no-reboot -nodefaults -smp "$cpus" -m 128M)
	[ -n "$append" ] && cmd+=(-append "$append")
	;;
*)
	echo "unknown VMM '$vmm' (vmsvc or qemu)" >&2
	exit 2
	;;
esac

cmd+=("${extra[@]}")
timeout --kill-after=5 "$limit" "${cmd[@]}" </dev/null >"$work/stdout.txt" 2>"$errlog"
status=$?

has() { grep -q -- "$1" "$serial"; }
verdict=error
why=""
if [ $status -eq 124 ] || [ $status -eq 137 ]; then
	why="timed out after ${limit}s"
elif [ $status -eq 1 ]; then
	if has '^PASS'; then verdict=pass; else why="exit status 1 (pass) but no PASS on the serial port"; fi
elif [ $status -eq 3 ]; then
	verdict=fail
elif [ "$vmm" = vmsvc ] && [ $status -ne 0 ] && [ $status -lt 128 ] && grep -qi 'triple fault' "$errlog"; then
	verdict=triple-fault
elif [ "$vmm" = qemu ] && [ $status -eq 0 ] && ! has '^PASS' && ! has '^FAIL'; then
	verdict=triple-fault
else
	why="exit status $status"
fi

echo "$verdict"
if [ -n "$expect" ]; then
	if [ "$verdict" = "$expect" ]; then
		exit 0
	fi
	{
		echo "verdict '$verdict', expected '$expect'${why:+ ($why)}"
		echo "command: ${cmd[*]}"
		echo "--- serial ---"; tail -c 4000 "$serial"
		echo "--- stderr ---"; tail -c 4000 "$errlog"
		echo "--- stdout ---"; tail -c 2000 "$work/stdout.txt"
	} >&2
	exit 1
fi
[ -n "$why" ] && echo "($why)" >&2
exit 0
