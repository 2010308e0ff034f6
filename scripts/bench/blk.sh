#!/bin/bash
# virtio-blk throughput, vmsvc against QEMU, with the test-kit guest's benchmark
# mode (tests/guests/virtio_blk.c, blk.bench=1): sequential 128 KiB and random
# 4 KiB reads and writes at queue depth 1 and 32, polled at CPL3 in the guest.
# Both VMMs get the same image file, the same cache mode and io_uring
# (QEMU: -drive aio=io_uring; vmsvc: its only engine), one vCPU, 128 MiB RAM.
# A host ceiling runs next to them: scripts/bench/blk_host.c does the guest's
# exact pattern (region, request size, depth, op count, random offsets, refill
# on each completion) with io_uring directly on the host, O_DIRECT iff
# cache=none; "host" may use every CPU, "host 1cpu" is pinned (taskset) to one,
# which is what a VMM gets while the guest's vCPU spins on the other core of a
# 2-CPU host; "host 2M" does the sequential depth-32 rows as 2 MiB requests at
# depth 2 (what a VMM that merges adjacent requests, as vmsvc does, could at
# best make of them). It is built on demand with liburing and skipped without it.
# Runs alternate (vmsvc, qemu, host, host 1cpu, host 2M, vmsvc, ...) so that
# host noise hits all; the table shows the median MB/s of each row, vmsvc /
# QEMU, and both VMMs against the ceiling (the best of the host medians).
#
# usage: scripts/bench/blk.sh [--runs N] [--mb MiB] [--cache none|writeback]
#                             [--build DIR] [--image FILE] [--qemu PATH] [--no-host]
#                             [--raw FILE]
#   --runs N      runs per VMM (default 5)
#   --mb MiB      region the guest works on (default 64; the image is MiB + 8)
#   --cache MODE  none (O_DIRECT, default) or writeback (host page cache)
#   --build DIR   build directory with vmsvc and tests/guests/virtio_blk.elf (default build)
#   --image FILE  image to use (created, fully written, if missing; default: a
#                 temporary file under /var/tmp, removed at the end)
#   --no-host     no host ceiling columns
#   --raw FILE    also write every run's numbers there ("vmm test qd=N MB/s")
set -u
here=$(cd "$(dirname "$0")/../.." && pwd)
runs=5 mb=64 cache=none build=$here/build image="" qemu=$(command -v qemu-system-x86_64 || true) host=1 raw=""
while [ $# -gt 0 ]; do
	case "$1" in
	--runs) runs=$2; shift 2 ;;
	--mb) mb=$2; shift 2 ;;
	--cache) cache=$2; shift 2 ;;
	--build) build=$2; shift 2 ;;
	--image) image=$2; shift 2 ;;
	--qemu) qemu=$2; shift 2 ;;
	--no-host) host=0; shift ;;
	--raw) raw=$2; shift 2 ;;
	-h | --help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "blk.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
	esac
done
case "$cache" in none | writeback) ;; *) echo "blk.sh: --cache none or writeback" >&2; exit 2 ;; esac
vmsvc=$build/vmsvc
guest=$build/tests/guests/virtio_blk.elf
for f in "$vmsvc" "$guest"; do
	[ -e "$f" ] || { echo "blk.sh: $f missing (build first: cmake --build $build)" >&2; exit 2; }
done
[ -n "$qemu" ] && [ -x "$qemu" ] || { echo "blk.sh: qemu-system-x86_64 not found (--qemu PATH)" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/blkbench.XXXXXX")
own_image=0
cleanup() {
	rm -rf "$work"
	[ "$own_image" = 1 ] && rm -f "$image"
}
trap cleanup EXIT
if [ -z "$image" ]; then
	image=$(mktemp /var/tmp/blkbench-img.XXXXXX)
	own_image=1
fi
if [ ! -s "$image" ]; then
	# Written for real (not sparse): reads must reach allocated blocks.
	head -c $(((mb + 8) << 20)) /dev/urandom >"$image" || exit 1
	sync "$image" 2>/dev/null
fi
append="blk.bench=1 blk.bench_mb=$mb"

vmms="vmsvc qemu"
if [ "$host" = 1 ]; then
	if ${CC:-cc} -O2 -Wall -o "$work/blk_host" "$here/scripts/bench/blk_host.c" -luring 2>"$work/cc.err"; then
		vmms="$vmms host hostm"
		# The last CPU: the one a vCPU started first is least likely to be on.
		if command -v taskset >/dev/null && [ "$(nproc)" -gt 1 ]; then
			host_cpu=$(($(nproc) - 1))
			vmms="$vmms host1"
		fi
	else
		echo "blk.sh: no host ceiling (building scripts/bench/blk_host.c needs liburing-dev):" >&2
		sed 's/^/  /' "$work/cc.err" >&2
	fi
fi
direct=""
[ "$cache" = none ] && direct=--direct

run_vmsvc() {
	timeout 600 "$vmsvc" run -q --kernel "$guest" --serial "file:$1" --cpus 1 --mem 128M --append "$append" \
		--disk "$image,cache=$cache" </dev/null >/dev/null 2>"$1.err"
}
run_qemu() {
	timeout 600 "$qemu" -M pc -accel kvm -cpu host,-arch-capabilities -kernel "$guest" \
		-device isa-debug-exit,iobase=0xf4,iosize=0x04 -serial "file:$1" -display none -no-reboot \
		-nodefaults -smp 1 -m 128M -append "$append" \
		-drive "file=$image,if=none,id=d0,format=raw,cache=$cache,aio=io_uring" \
		-device virtio-blk-pci,drive=d0 </dev/null >/dev/null 2>"$1.err"
}
run_host() {
	timeout 600 "$work/blk_host" $direct "$image" "$mb" </dev/null >"$1" 2>"$1.err"
}
run_hostm() {
	timeout 600 "$work/blk_host" --merged $direct "$image" "$mb" </dev/null >"$1" 2>"$1.err"
}
run_host1() {
	timeout 600 taskset -c "$host_cpu" "$work/blk_host" $direct "$image" "$mb" </dev/null >"$1" 2>"$1.err"
}

# "bench: seq-read qd=32 bs=131072 ... MB/s=123.456" -> "seq-read qd=32 123.456"
collect() {
	local vmm=$1 out=$2
	if ! grep -q '^PASS' "$out"; then
		echo "blk.sh: $vmm run failed:" >&2
		tail -n 5 "$out" "$out.err" >&2
		return 1
	fi
	sed -n 's/^bench: \([a-z-]*\) qd=\([0-9]*\) .*MB\/s=\([0-9.]*\).*/\1 qd=\2 \3/p' "$out" |
		sed "s/^/$vmm /" >>"$work/results"
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
: >"$work/results"
for i in $(seq "$runs"); do
	for vmm in $vmms; do
		out=$work/$vmm.$i.txt
		: >"$out"
		"run_$vmm" "$out"
		collect "$vmm" "$out" || exit 1
		printf '.' >&2
	done
done
echo >&2
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

echo "virtio-blk benchmark: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, load average before/after: $load_before / $load_after"
echo "image ${mb} MiB region on $(df --output=fstype "$image" | tail -1) ($image), cache=$cache, io_uring everywhere; $runs runs each, interleaved; QEMU $("$qemu" --version | head -1 | sed 's/.*version \([^ ]*\).*/\1/')"
[ -n "$raw" ] && cp "$work/results" "$raw"
echo
awk -v host_cpu="${host_cpu:-}" '
{ key = $2 " " $3; v[$1, key, ++n[$1, key]] = $4; if (!(key in seen)) { seen[key] = 1; order[++rows] = key } }
function median(vmm, key,    k, i, j, t, a) {
	k = n[vmm, key]
	if (!k) return 0
	for (i = 1; i <= k; i++) a[i] = v[vmm, key, i]
	for (i = 2; i <= k; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
	return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
}
function ratio(a, b) { return b > 0 ? sprintf("%.2fx", a / b) : "-" }
function mbs(a) { return a > 0 ? sprintf("%.1f", a) : "-" }
END {
	printf "| %-10s | %-5s | %10s | %10s | %10s | %10s | %10s | %10s | %10s | %10s |\n", "test", "depth", "vmsvc MB/s",
		"QEMU MB/s", "vmsvc/QEMU", "host MB/s", "host 1cpu", "host 2M", "vmsvc/ceil", "QEMU/ceil"
	printf "|------------|-------|-----------:|-----------:|-----------:|-----------:|-----------:|-----------:|-----------:|-----------:|\n"
	for (r = 1; r <= rows; r++) {
		split(order[r], p, " ")
		a = median("vmsvc", order[r]); b = median("qemu", order[r])
		h = median("host", order[r]); h1 = median("host1", order[r])
		# Merging changes only the sequential depth-32 rows; elsewhere hostm repeats host.
		hm = order[r] ~ /^seq-.* qd=32$/ ? median("hostm", order[r]) : 0
		c = h > h1 ? h : h1
		c = hm > c ? hm : c
		printf "| %-10s | %-5s | %10.1f | %10.1f | %10s | %10s | %10s | %10s | %10s | %10s |\n", p[1], substr(p[2], 4),
			a, b, ratio(a, b), mbs(h), mbs(h1), mbs(hm), ratio(a, c), ratio(b, c)
	}
	if (n["host", order[1]] > 0)
		printf "\nhost: the same pattern without a VM (scripts/bench/blk_host.c), all CPUs; host 1cpu: pinned to CPU %s;\nhost 2M: sequential depth 32 as 2 MiB requests at depth 2; ceil: the best of them.\n", (host_cpu != "" ? host_cpu : "-")
}' "$work/results"
