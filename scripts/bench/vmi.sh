#!/bin/bash
# Introspection benchmark (issue 5): `vmsvc inspect --image IMG ps` on the
# 512 MiB fixture dump (scripts/vmi-fixtures.sh).
#   cold: a fresh process: open the image, recover kallsyms, the kernel layout,
#         page tables and BTF, then list the processes (the "open" phase plus
#         the first ps, from --timing);
#   warm: a second ps in the same process, symbols and types already known
#         (--repeat N, median of the repeated runs);
#   process: the whole `vmsvc inspect --image IMG ps` command, exec to exit
#         (dynamic loading and unmapping included; informational, no goal).
# Median over RUNS processes (default 7). Goals: cold <= 50 ms, warm <= 1 ms.
#   scripts/bench/vmi.sh [IMAGE] [RUNS]
set -eu
REPO=$(cd "$(dirname "$0")/../.." && pwd)
IMG=${1:-$REPO/build/vmi/guest.elf}
RUNS=${2:-7}
BUILD=${VMSVC_BUILD:-$REPO/build-bench}
[ -s "$IMG" ] || { echo "vmi bench: $IMG missing (run scripts/vmi-fixtures.sh)" >&2; exit 1; }
if [ ! -x "$BUILD/vmsvc" ]; then
    cmake -S "$REPO" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$BUILD" -j2 --target vmsvc >/dev/null
fi
cat "$IMG" >/dev/null   # page cache: measure introspection, not the disk

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
cold=(); warm=(); proc=()
for _ in $(seq 1 "$RUNS"); do
    t0=$(date +%s%N)
    "$BUILD/vmsvc" inspect --image "$IMG" ps >/dev/null
    t1=$(date +%s%N)
    proc+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", (b - a) / 1e6}')")
    out=$("$BUILD/vmsvc" inspect --image "$IMG" --timing --repeat 50 ps 2>&1 >/dev/null)
    # "open X ms, ps Y ms" and "warm ps: median Z ms"
    c=$(echo "$out" | sed -n 's/.*open \([0-9.]*\) ms, ps \([0-9.]*\) ms.*/\1 \2/p' | awk '{print $1 + $2}')
    w=$(echo "$out" | sed -n 's/.*warm ps: median \([0-9.]*\) ms.*/\1/p')
    [ -n "$c" ] && [ -n "$w" ] || { echo "vmi bench: unexpected output: $out" >&2; exit 1; }
    cold+=("$c"); warm+=("$w")
done
C=$(printf '%s\n' "${cold[@]}" | median)
W=$(printf '%s\n' "${warm[@]}" | median)
P=$(printf '%s\n' "${proc[@]}" | median)
verdict() { awk -v v="$1" -v g="$2" 'BEGIN {print (v <= g) ? "ok" : "MISSED"}'; }
printf 'image: %s (%s MiB), %s runs\n' "$IMG" $(( $(stat -c %s "$IMG") >> 20 )) "$RUNS"
printf 'cold ps (recovery + list): median %8.3f ms   goal <= 50 ms  %s\n' "$C" "$(verdict "$C" 50)"
printf 'warm ps (same process):    median %8.3f ms   goal <= 1 ms   %s\n' "$W" "$(verdict "$W" 1)"
printf 'whole process (exec..exit): median %7.3f ms\n' "$P"
