#!/bin/bash
# Run one guest under vmsvc and under QEMU and require the same verdict (and
# that it is the expected one, so "both broken the same way" still fails).
# usage: compare_vmms.sh EXPECTED VMSVC QEMU GUEST.elf CPUS [APPEND]
# Exit 77 (ctest "skipped") when QEMU is not installed.
set -u
[ $# -ge 5 ] || { echo "usage: $0 EXPECTED VMSVC QEMU GUEST.elf CPUS [APPEND]" >&2; exit 2; }
expected=$1 vmsvc=$2 qemu=$3 guest=$4 cpus=$5 append=${6:-}
here=$(cd "$(dirname "$0")" && pwd)
command -v "$qemu" >/dev/null 2>&1 || { echo "QEMU '$qemu' not found: skipping" >&2; exit 77; }
# --expect: a run that misses the expected verdict shows its serial/stderr.
v_vmsvc=$("$here/run_guest.sh" --expect "$expected" vmsvc "$vmsvc" "$guest" "$cpus" "$append")
v_qemu=$("$here/run_guest.sh" --expect "$expected" qemu "$qemu" "$guest" "$cpus" "$append")
echo "$(basename "$guest"): vmsvc=$v_vmsvc qemu=$v_qemu expected=$expected"
if [ "$v_vmsvc" != "$v_qemu" ]; then
	echo "verdicts differ" >&2
	exit 1
fi
[ "$v_vmsvc" = "$expected" ] || { echo "both VMMs agree on '$v_vmsvc' but '$expected' was expected" >&2; exit 1; }
exit 0
