#!/bin/bash
# Run a virtio test guest (tests/guests/virtio_*.c) under vmsvc or QEMU with
# the device it needs, through run_guest.sh (same verdicts, same output).
#
# usage: virtio_guest.sh [--expect VERDICT] CASE vmsvc|qemu BINARY GUEST.elf [APPEND] [TAP_ECHO]
#   CASE: rng | blk | blk-ro | blk-bench | blk-overlay | net
# blk*: a fresh sparse 64 MiB raw image in a temporary directory
#       (VIRTIO_DISK=PATH uses that file instead; blk-ro never writes it).
# blk-overlay: a base image with random data behind a copy-on-write overlay
#       (vmsvc: --disk BASE,overlay=F; QEMU: a qcow2 with BASE as backing
#       file); the guest's read/write test, then a second boot on the same
#       overlay that only verifies (blk.verify=1); the base must stay
#       byte-identical throughout.
# net:  needs root, ip(8) and TAP_ECHO (tests/integration/tap_echo): a
#       network namespace with a tap "vmsvct0" is created, tap_echo reflects
#       the guest's test frames on it, and the VMM runs inside the namespace.
#       Without root/ip/TAP_ECHO the test is skipped (exit 77).
set -u
here=$(cd "$(dirname "$0")" && pwd)
expect=pass
if [ "${1:-}" = --expect ]; then expect=$2; shift 2; fi
if [ $# -lt 4 ]; then
	echo "usage: $0 [--expect VERDICT] rng|blk|blk-ro|blk-bench|blk-overlay|net vmsvc|qemu BINARY GUEST.elf [APPEND] [TAP_ECHO]" >&2
	exit 2
fi
case_=$1 vmm=$2 bin=$3 guest=$4 append=${5:-} tap_echo=${6:-}
timeout_s=${VIRTIO_GUEST_TIMEOUT:-90}

work=$(mktemp -d "${TMPDIR:-/tmp}/virtio_guest.XXXXXX")
ns=""
echo_pid=""
cleanup() {
	[ -n "$echo_pid" ] && kill "$echo_pid" 2>/dev/null && wait "$echo_pid" 2>/dev/null
	[ -n "$ns" ] && ip netns delete "$ns" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

args=()
add() { for a in "$@"; do args+=(--vmm-arg "$a"); done; }
disk=${VIRTIO_DISK:-$work/disk.img}
new_disk() { [ -n "${VIRTIO_DISK:-}" ] || truncate -s 64M "$disk"; }

case "$case_" in
rng)
	if [ "$vmm" = vmsvc ]; then add --rng; else add -device virtio-rng-pci; fi
	;;
blk | blk-bench)
	new_disk
	[ "$case_" = blk-bench ] && append="blk.bench=1${append:+ $append}"
	if [ "$vmm" = vmsvc ]; then
		add --disk "$disk"
	else
		add -drive "file=$disk,if=none,id=d0,format=raw,cache=none,aio=io_uring" \
			-device virtio-blk-pci,drive=d0,serial=vmsvc-test-disk
	fi
	;;
blk-ro)
	new_disk
	append="blk.ro=1${append:+ $append}"
	if [ "$vmm" = vmsvc ]; then
		add --disk "$disk,ro"
	else
		add -drive "file=$disk,if=none,id=d0,format=raw,cache=none,aio=io_uring,readonly=on" \
			-device virtio-blk-pci,drive=d0,serial=vmsvc-test-disk
	fi
	;;
blk-overlay)
	base=$work/base.img
	head -c 8M /dev/urandom >"$base" && truncate -s 64M "$base" || exit 1
	base_sum=$(sha256sum <"$base")
	if [ "$vmm" = vmsvc ]; then
		add --disk "$base,overlay=$work/overlay.img"
	else
		qemu-img create -q -f qcow2 -b "$base" -F raw "$work/overlay.qcow2" || exit 77
		add -drive "file=$work/overlay.qcow2,if=none,id=d0,format=qcow2,cache=none,aio=io_uring" \
			-device virtio-blk-pci,drive=d0,serial=vmsvc-test-disk
	fi
	;;
net)
	if [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null 2>&1 || [ ! -x "$tap_echo" ] || [ ! -e /dev/net/tun ]; then
		echo "net test needs root, ip(8), /dev/net/tun and tap_echo: skipping" >&2
		exit 77
	fi
	ns=vmsvc-net-$$
	tap=vmsvct0
	ip netns add "$ns" || exit 1
	# No IPv6 chatter on the tap (the guest ignores foreign frames anyway).
	ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 2>/dev/null
	ip netns exec "$ns" ip link set lo up
	ip netns exec "$ns" ip tuntap add dev "$tap" mode tap || exit 1
	ip netns exec "$ns" ip link set "$tap" up || exit 1
	ip netns exec "$ns" "$tap_echo" "$tap" "$timeout_s" >"$work/echo.out" 2>"$work/echo.err" &
	echo_pid=$!
	for _ in $(seq 50); do
		grep -q ready "$work/echo.out" 2>/dev/null && break
		sleep 0.1
	done
	grep -q ready "$work/echo.out" || { echo "tap_echo did not start:"; cat "$work/echo.err"; exit 1; } >&2
	if [ "$vmm" = vmsvc ]; then
		add --net "tap=$tap"
	else
		add -netdev "tap,id=n0,ifname=$tap,script=no,downscript=no" -device virtio-net-pci,netdev=n0
	fi
	;;
*)
	echo "unknown case '$case_'" >&2
	exit 2
	;;
esac

run=("$here/run_guest.sh" --expect "$expect" --timeout "$timeout_s" "${args[@]}" "$vmm" "$bin" "$guest" 1 "$append")
if [ "$case_" = blk-overlay ]; then
	base_unchanged() {
		[ "$(sha256sum <"$base")" = "$base_sum" ] && return 0
		echo "the base image changed $1" >&2
		return 1
	}
	"${run[@]}" || exit 1
	base_unchanged "during the read/write run" || exit 1
	# Restart on the same overlay: the guest's writes must still be there.
	"$here/run_guest.sh" --expect "$expect" --timeout "$timeout_s" "${args[@]}" "$vmm" "$bin" "$guest" 1 \
		"blk.verify=1${append:+ $append}" || exit 1
	base_unchanged "during the verify-only run" || exit 1
	exit 0
fi
if [ -n "$ns" ]; then
	ip netns exec "$ns" "${run[@]}"
else
	"${run[@]}"
fi
status=$?
if [ -n "$echo_pid" ]; then
	kill "$echo_pid" 2>/dev/null
	wait "$echo_pid" 2>/dev/null
	echo_pid=""
	cat "$work/echo.err" >&2
fi
exit $status
