#!/bin/bash
# Suspend/resume throughput (section 2 of scripts/bench/state.sh); prints medians and ratios.
#
#   suspend  `vmsvc suspend` of a 512 MiB guest holding realistic content, in GB/s
#            of guest memory (client wall time: pause, state, compress, encrypt,
#            write, fsync, rename), beside a plain copy of the same 512 MiB to
#            the same directory (dd conv=fsync from the page cache).
#   resume   `vmsvc resume`: reading, authenticating, decompressing the file into
#            a fresh memfd (the "read and verified" line vmsvc -v logs), same units.
#
# usage: scripts/bench/state_suspend.sh [RUNS] [SECTION...]   (RUNS default 5; sections: suspend, resume)
# env:   BUILD_DIR   (default build; relative paths are from the repo root)
#        BENCH_DIR   where the files are written (default BUILD_DIR/bench-state): the
#                    disk being measured; /dev/shm shows the CPU-bound rate
#        LEVEL       zstd level for suspend (vmsvc suspend --level; default: vmsvc's)
#
# Guest content (the idle test guest, 512 MiB, content loaded as its initrd):
# 128 MiB of program files and libraries from /usr (code, data, some compressed
# files), 48 MiB of C headers from /usr/include (text), 32 MiB from /dev/urandom
# (encrypted/compressed data); the remaining ~300 MiB are never-written zero
# pages, as in a lightly used guest. The same bytes are dumped for the plain copy.
set -eu

root=$(cd "$(dirname "$0")/../.." && pwd)
runs=${1:-5}
shift || true
sections=("$@")
[ ${#sections[@]} -gt 0 ] || sections=(suspend resume)
build=${BUILD_DIR:-build}
case "$build" in /*) ;; *) build=$root/$build ;; esac
vmsvc=$build/vmsvc
guest=$build/tests/guests/idle.elf
bench_dir=${BENCH_DIR:-$build/bench-state}
mem_mib=512

if ! [ "$runs" -ge 1 ] 2>/dev/null; then
	echo "RUNS must be a positive integer, got '$runs'" >&2
	exit 2
fi
if [ ! -x "$vmsvc" ] || [ ! -f "$guest" ]; then
	echo "building vmsvc and the idle guest in $build ..." >&2
	cmake -S "$root" -B "$build" >/dev/null
	cmake --build "$build" -j2 --target vmsvc guest_idle >/dev/null
fi
mkdir -p "$bench_dir"
tmp=$(mktemp -d)
export XDG_RUNTIME_DIR=$tmp/xdg
mkdir -m 700 "$XDG_RUNTIME_DIR"
vm_pid=""
cleanup() {
	[ -n "$vm_pid" ] && kill -9 "$vm_pid" 2>/dev/null
	rm -rf "$tmp" "$bench_dir"/state-bench.*
}
trap cleanup EXIT

now_ns() { date +%s%N; }
# median FILE: median of the numbers in FILE (one per line)
median() { sort -g "$1" | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
gbps() { awk -v b="$1" -v ns="$2" 'BEGIN {printf "%.3f", b / ns}'; }   # bytes / ns = GB/s

# ---- guest content ----
content=$tmp/content.img
{
	find /usr/bin /usr/lib/x86_64-linux-gnu -type f -size +64k 2>/dev/null | sort | xargs cat 2>/dev/null |
		head -c $((128 << 20))
	find /usr/include -type f 2>/dev/null | sort | xargs cat 2>/dev/null | head -c $((48 << 20))
	head -c $((32 << 20)) /dev/urandom
} >"$content"
content_bytes=$(stat -c %s "$content")
# The plain copy's source: the same bytes and the zero remainder, in the page cache.
memimg=$tmp/mem.img
cp "$content" "$memimg"
truncate -s "${mem_mib}M" "$memimg"
cat "$memimg" >/dev/null
head -c 32 /dev/urandom >"$tmp/key"
mem_bytes=$((mem_mib << 20))
echo "guest: ${mem_mib} MiB, $((content_bytes >> 20)) MiB of content (code/text/random), rest zero; files in $bench_dir"

# start_vm NAME: the idle guest with the content as initrd, running.
start_vm() {
	"$vmsvc" run -v --kernel "$guest" --initrd "$content" -m "${mem_mib}M" --append "idle.seconds=100000" \
		--name "$1" --serial "file:$tmp/$1.serial" 2>"$tmp/$1.err" &
	vm_pid=$!
	for _ in $(seq 200); do grep -q tick "$tmp/$1.serial" 2>/dev/null && return 0; sleep 0.05; done
	echo "guest did not start: $(cat "$tmp/$1.err")" >&2
	exit 1
}

# cpu_line WHAT: the CPU time vmsvc logged (all its threads) and the rate two
# otherwise idle cores would give if the work were perfectly split: a bound for
# busy hosts where wall times are dominated by other load.
cpu_line() {
	local c
	c=$(median "$tmp/$1.cpu")
	printf "%-44s %8.0f CPU-ms (median): %.2f GB/s per CPU-second, %.2f GB/s on 2 idle cores at best\n" \
		"  $1 CPU time" "$c" "$(awk -v m="$mem_bytes" -v c="$c" 'BEGIN {print m / c / 1e6}')" \
		"$(awk -v m="$mem_bytes" -v c="$c" 'BEGIN {print 2 * m / c / 1e6}')"
}

plain_copy() {   # appends one plain-copy time (ns) to $tmp/plain.ns
	rm -f "$bench_dir/state-bench.plain"
	local t0 t1
	t0=$(now_ns)
	dd if="$memimg" of="$bench_dir/state-bench.plain" bs=4M conv=fsync status=none
	t1=$(now_ns)
	echo $((t1 - t0)) >>"$tmp/plain.ns"
	rm -f "$bench_dir/state-bench.plain"
}

# suspend_once I: start a VM, suspend it to state-bench.I; appends the time (ns).
suspend_once() {
	local name="wtstate-bench-$$-$1" f="$bench_dir/state-bench.$1" t0 t1
	start_vm "$name"
	t0=$(now_ns)
	"$vmsvc" suspend "$name" "$f" --key-file "$tmp/key" ${LEVEL:+--level "$LEVEL"} >/dev/null 2>"$tmp/susp.err" ||
		{ echo "suspend failed: $(cat "$tmp/susp.err")" >&2; exit 1; }
	t1=$(now_ns)
	wait "$vm_pid" || true
	vm_pid=""
	echo $((t1 - t0)) >>"$tmp/suspend.ns"
	stat -c %s "$f" >>"$tmp/suspend.size"
	sed -n 's/.*suspend: .* in [0-9.]* ms, \([0-9.]*\) CPU-ms.*/\1/p' "$tmp/$name.err" >>"$tmp/suspend.cpu"
}

# resume_once FILE: resume, take the logged load time, stop the VM.
resume_once() {
	local name="wtstate-bench-r$$"
	"$vmsvc" resume "$1" --key-file "$tmp/key" -v --name "$name" --serial none 2>"$tmp/resume.err" &
	vm_pid=$!
	local ms=""
	for _ in $(seq 400); do
		ms=$(sed -n 's/.*read and verified in \([0-9.]*\) ms.*/\1/p' "$tmp/resume.err")
		[ -n "$ms" ] && sed -n 's/.*read and verified in .* ms, \([0-9.]*\) CPU-ms.*/\1/p' "$tmp/resume.err" >>"$tmp/resume.cpu"
		[ -n "$ms" ] && break
		sleep 0.05
	done
	[ -n "$ms" ] || { echo "resume: no timing line: $(cat "$tmp/resume.err")" >&2; exit 1; }
	for _ in $(seq 100); do "$vmsvc" stop "$name" >/dev/null 2>&1 && break; sleep 0.05; done
	wait "$vm_pid" || true
	vm_pid=""
	awk -v ms="$ms" 'BEGIN {printf "%.0f\n", ms * 1e6}' >>"$tmp/resume.ns"
}

: >"$tmp/plain.ns"
for ((i = 0; i < runs; i++)); do plain_copy; done
plain_ns=$(median "$tmp/plain.ns")
plain=$(gbps "$mem_bytes" "$plain_ns")
printf "%-44s %8s GB/s  (median of %d, %.0f ms)\n" "plain copy of the same 512 MiB (dd, fsync)" "$plain" "$runs" \
	"$(awk -v n="$plain_ns" 'BEGIN {print n / 1e6}')"

for sec in "${sections[@]}"; do
	case "$sec" in
	suspend | resume)
		if [ ! -s "$tmp/suspend.ns" ]; then
			: >"$tmp/suspend.ns"
			: >"$tmp/suspend.size"
			: >"$tmp/suspend.cpu"
			for ((i = 0; i < runs; i++)); do suspend_once "$i"; done
		fi
		if [ "$sec" = suspend ]; then
			ns=$(median "$tmp/suspend.ns")
			r=$(gbps "$mem_bytes" "$ns")
			size=$(median "$tmp/suspend.size")
			printf "%-44s %8s GB/s  (median of %d, %.0f ms, file %d MiB = %.1f%%)  %.2fx plain copy\n" \
				"suspend (vmsvc suspend${LEVEL:+ --level $LEVEL})" "$r" "$runs" \
				"$(awk -v n="$ns" 'BEGIN {print n / 1e6}')" $((${size%.*} >> 20)) \
				"$(awk -v s="$size" -v m="$mem_bytes" 'BEGIN {print s * 100 / m}')" \
				"$(awk -v a="$r" -v b="$plain" 'BEGIN {print a / b}')"
			cpu_line suspend
		else
			: >"$tmp/resume.ns"
			: >"$tmp/resume.cpu"
			for ((i = 0; i < runs; i++)); do resume_once "$bench_dir/state-bench.$i"; done
			ns=$(median "$tmp/resume.ns")
			r=$(gbps "$mem_bytes" "$ns")
			printf "%-44s %8s GB/s  (median of %d, %.0f ms)  %.2fx plain copy\n" "resume (read, verify, decompress)" \
				"$r" "$runs" "$(awk -v n="$ns" 'BEGIN {print n / 1e6}')" "$(awk -v a="$r" -v b="$plain" 'BEGIN {print a / b}')"
			cpu_line resume
		fi
		;;
	*)
		echo "unknown section '$sec' (suspend, resume)" >&2
		exit 2
		;;
	esac
done
