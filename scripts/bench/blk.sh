#!/bin/bash
# virtio-blk throughput, vmsvc against QEMU, with the test-kit guest's benchmark
# mode (tests/guests/virtio_blk.c, blk.bench=1): sequential 128 KiB and random
# 4 KiB reads and writes at queue depth 1 and 32, polled at CPL3 in the guest.
# Both VMMs get the same image file, the same cache mode and io_uring
# (QEMU: -drive aio=io_uring; vmsvc: its only engine), one vCPU, 128 MiB RAM.
# Runs alternate (vmsvc, qemu, vmsvc, qemu, ...) so that host noise hits both;
# the table shows the median MB/s of each row and the ratio vmsvc / QEMU.
#
# usage: scripts/bench/blk.sh [--runs N] [--mb MiB] [--cache none|writeback]
#                             [--build DIR] [--image FILE] [--qemu PATH]
#   --runs N      runs per VMM (default 5)
#   --mb MiB      region the guest works on (default 64; the image is MiB + 8)
#   --cache MODE  none (O_DIRECT, default) or writeback (host page cache)
#   --build DIR   build directory with vmsvc and tests/guests/virtio_blk.elf (default build)
#   --image FILE  image to use (created, fully written, if missing; default: a
#                 temporary file under /var/tmp, removed at the end)
set -u
here=$(cd "$(dirname "$0")/../.." && pwd)
runs=5 mb=64 cache=none build=$here/build image="" qemu=$(command -v qemu-system-x86_64 || true)
while [ $# -gt 0 ]; do
	case "$1" in
	--runs) runs=$2; shift 2 ;;
	--mb) mb=$2; shift 2 ;;
	--cache) cache=$2; shift 2 ;;
	--build) build=$2; shift 2 ;;
	--image) image=$2; shift 2 ;;
	--qemu) qemu=$2; shift 2 ;;
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
	for vmm in vmsvc qemu; do
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
echo "image ${mb} MiB region on $(df --output=fstype "$image" | tail -1) ($image), cache=$cache, io_uring on both; $runs runs each, interleaved; QEMU $("$qemu" --version | head -1 | sed 's/.*version \([^ ]*\).*/\1/')"
echo
awk '
{ key = $2 " " $3; v[$1, key, ++n[$1, key]] = $4; if (!(key in seen)) { seen[key] = 1; order[++rows] = key } }
function median(vmm, key,    k, i, j, t, a) {
	k = n[vmm, key]
	for (i = 1; i <= k; i++) a[i] = v[vmm, key, i]
	for (i = 2; i <= k; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
	return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
}
END {
	printf "| %-10s | %-5s | %14s | %14s | %12s |\n", "test", "depth", "vmsvc MB/s", "QEMU MB/s", "vmsvc/QEMU"
	printf "|------------|-------|---------------:|---------------:|-------------:|\n"
	for (r = 1; r <= rows; r++) {
		split(order[r], p, " ")
		a = median("vmsvc", order[r]); b = median("qemu", order[r])
		printf "| %-10s | %-5s | %14.1f | %14.1f | %11.2fx |\n", p[1], substr(p[2], 4), a, b, (b > 0 ? a / b : 0)
	}
}' "$work/results"
