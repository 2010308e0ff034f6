#!/bin/bash
# `vmsvc run --kernel FILE` with a FILE that is not a kernel must fail cleanly:
# non-zero exit (not a signal), exactly one non-empty line on stderr.
# usage: bad_kernel.sh VMSVC FILE
set -u
[ $# -eq 2 ] || { echo "usage: $0 VMSVC FILE" >&2; exit 2; }
vmsvc=$1 file=$2
err=$(mktemp)
trap 'rm -f "$err"' EXIT
timeout 30 "$vmsvc" run --kernel "$file" --mem 128M </dev/null >/dev/null 2>"$err"
status=$?
lines=$(grep -c . "$err")
echo "status $status, stderr: $(head -c 300 "$err")"
if [ $status -eq 0 ] || [ $status -ge 124 ]; then
	echo "expected a non-zero exit status below 124 (no timeout, no signal), got $status" >&2
	exit 1
fi
if [ "$lines" -ne 1 ] || [ "$(wc -l <"$err")" -gt 1 ]; then
	echo "expected exactly one line on stderr, got:" >&2
	cat "$err" >&2
	exit 1
fi
exit 0
