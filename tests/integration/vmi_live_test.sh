#!/bin/bash
# `vmsvc inspect NAME` on a running VM and `--image` on a vmsvc snapshot, with a
# real Linux kernel (Debian's 6.1 cloud kernel, dumped under QEMU TCG by
# scripts/vmi-fixtures.sh). Linux boots far too slowly under KVM on this host,
# so the dumps are turned into vmsvc snapshots (vmi_core2snap, on a template
# snapshot of the idle test guest), restored with `run --restore DIR --paused`
# (vCPUs never run) and inspected through the control socket. Expected:
#  - ps/lsmod/netdev (table and --json) of the live VM == --image on the dump
#    == --image on the snapshot directory (and on its state file);
#  - ps == the guest's own list (guest-ps.txt: pid, ppid, uid, comm prefix);
#  - check: 0 findings and exit 0 on the clean dump, the rootkit's findings
#    and exit 3 on the infected one, with the live MSRs checked (no "MSRs not
#    available" note), and a critical msr finding when LSTAR is hooked;
#  - --pause on a running VM leaves it running, on a paused VM paused;
#  - a corrupted snapshot gives one line naming the file and offset.
# usage: vmi_live_test.sh VMSVC IDLE.elf VMI_CORE2SNAP FIXTURE_DIR   (77 = skipped)
set -u
vmsvc=$1 idle=$2 core2snap=$3 fix=$4
[ -r /dev/kvm ] && [ -w /dev/kvm ] || { echo "skip: /dev/kvm not usable"; exit 77; }
for f in guest.elf guest-ps.txt guest-infected.elf; do
	[ -s "$fix/$f" ] || { echo "skip: $fix/$f missing (scripts/vmi-fixtures.sh)"; exit 77; }
done
command -v jq >/dev/null || { echo "skip: jq not installed"; exit 77; }

. "$(dirname "$0")/lib.sh"
it_setup vmi-live
tag=wt-vmi-$$
wait_socket() {
	for _ in $(seq 100); do [ -S "$XDG_RUNTIME_DIR/vmsvc/$1.sock" ] && return 0; sleep 0.1; done
	return 1
}
# same WHAT FILE1 FILE2
same() {
	if cmp -s "$2" "$3"; then ok "$1"; else fail "$1"; diff "$2" "$3" | head -20 >&2; fi
}

# Template: a snapshot of the idle guest (1 vCPU, 512 MiB like the dumps).
"$vmsvc" run --kernel "$idle" --serial none --append idle.seconds=600 --name "$tag-tmpl" -q &
pids+=($!)
wait_socket "$tag-tmpl" || { fail "template VM has no socket"; exit 1; }
"$vmsvc" snapshot "$tag-tmpl" "$work/tmpl" --stop >/dev/null || { fail "template snapshot"; exit 1; }
wait

# restore TAG SNAPDIR: a paused VM named $tag-TAG
restore() {
	"$vmsvc" run --restore "$2" --paused --serial none --name "$tag-$1" -q 2>"$work/$1.err" &
	pids+=($!)
	wait_socket "$tag-$1" || { fail "$1: no control socket"; cat "$work/$1.err" >&2; return 1; }
}

for dump in guest guest-infected; do
	snap=$work/snap-$dump
	"$core2snap" "$work/tmpl" "$fix/$dump.elf" "$snap" >/dev/null || { fail "$dump: vmi_core2snap"; continue; }
	restore "$dump" "$snap" || continue
	name=$tag-$dump
	[ "$("$vmsvc" info "$name" --json | jq -r .state)" = paused ] && ok "$dump: restored VM is paused" ||
		fail "$dump: restored VM is not paused"
	"$vmsvc" inspect "$name" --json info | jq -e '.source | test("copied")' >/dev/null &&
		ok "$dump: restored VM's RAM is a copy" || fail "$dump: restored VM's RAM not reported as copied"
	for view in ps lsmod netdev; do
		for fmt in "" --json; do
			"$vmsvc" inspect "$name" $fmt $view >"$work/live" 2>"$work/live.err" || fail "$dump: live $view $fmt"
			"$vmsvc" inspect --image "$fix/$dump.elf" $fmt $view >"$work/core" 2>/dev/null ||
				fail "$dump: image $view $fmt"
			"$vmsvc" inspect --image "$snap" $fmt $view >"$work/snapdir" 2>/dev/null ||
				fail "$dump: snapshot $view $fmt"
			same "$dump: $view $fmt: live VM == ELF core" "$work/live" "$work/core"
			same "$dump: $view $fmt: snapshot dir == ELF core" "$work/snapdir" "$work/core"
		done
	done
	"$vmsvc" inspect --image "$snap/state" ps >"$work/snapstate" 2>/dev/null
	"$vmsvc" inspect --image "$fix/$dump.elf" ps >"$work/core" 2>/dev/null
	same "$dump: --image DIR/state == ELF core" "$work/snapstate" "$work/core"
	"$vmsvc" inspect "$name" --pause ps >"$work/live" 2>/dev/null
	same "$dump: --pause ps == ELF core" "$work/live" "$work/core"
	[ "$("$vmsvc" info "$name" --json | jq -r .state)" = paused ] && ok "$dump: --pause keeps a paused VM paused" ||
		fail "$dump: --pause resumed a VM the user paused"

	"$vmsvc" inspect "$name" --json check >"$work/check.json"
	status=$?
	if [ $dump = guest ]; then
		[ $status = 0 ] && ok "check: clean guest exits 0" || fail "check: clean guest exit $status"
		n=$(jq '.warnings_or_worse' "$work/check.json")
		[ "$n" = 0 ] && ok "check: clean guest has 0 findings" || fail "check: clean guest has $n findings"
		# The guest's own process list (its /proc has no pid 0; comm may be longer there).
		"$vmsvc" inspect "$name" --json ps | jq -r '.processes[] | select(.pid != 0) | "\(.pid) \(.ppid) \(.uid) \(.comm)"' |
			sort -n >"$work/vmi-ps"
		sort -n "$fix/guest-ps.txt" >"$work/guest-ps"
		if awk 'NR == FNR { line[$1] = $0; next }
			{ split(line[$1], a, " "); if (!($1 in line) || a[2] != $2 || a[3] != $3 || index($5, a[4]) != 1) bad++ }
			END { exit bad || FNR != length(line) }' "$work/vmi-ps" "$work/guest-ps"; then
			ok "ps of the live VM == the guest's own list ($(wc -l <"$work/guest-ps") processes)"
		else
			fail "ps of the live VM differs from guest-ps.txt"
			diff <(cut -d' ' -f1-3 "$work/vmi-ps") <(cut -d' ' -f1-3 "$work/guest-ps") | head >&2
		fi
	else
		[ $status = 3 ] && ok "check: infected guest exits 3" || fail "check: infected guest exit $status"
		for c in tasks modules syscalls netdev packet; do
			jq -e --arg c $c '[.findings[] | select(.check == $c and .severity != "info")] | length > 0' \
				"$work/check.json" >/dev/null && ok "check: infected guest: $c finding" ||
				fail "check: infected guest: no $c finding"
		done
		"$vmsvc" inspect --image "$fix/$dump.elf" --json check >"$work/check-core.json"
		same "check findings: live VM == ELF core" \
			<(jq -c '[.findings[] | select(.severity != "info")]' "$work/check.json") \
			<(jq -c '[.findings[] | select(.severity != "info")]' "$work/check-core.json")
	fi
	# The live VM's MSRs are checked (the dump alone has none).
	jq -e '[.findings[] | select(.check == "msr")] | length == 0' "$work/check.json" >/dev/null &&
		ok "$dump: check used the live MSRs" || fail "$dump: check did not use the live MSRs"
	"$vmsvc" stop "$name" >/dev/null
done

# RAM that is a memfd (`vmsvc resume FILE`) is passed as is, not copied: the
# restored clean guest, suspended and resumed paused.
restore memfd "$work/snap-guest" && {
	head -c 32 /dev/urandom >"$work/key"
	"$vmsvc" suspend "$tag-memfd" "$work/suspended" --key-file "$work/key" >/dev/null 2>&1 ||
		fail "suspend of the restored guest"
	wait_gone() { for _ in $(seq 100); do [ -S "$XDG_RUNTIME_DIR/vmsvc/$1.sock" ] || return 0; sleep 0.1; done; }
	wait_gone "$tag-memfd"
	"$vmsvc" resume "$work/suspended" --key-file "$work/key" --paused --serial none --name "$tag-memfd2" -q \
		2>"$work/memfd2.err" &
	pids+=($!)
	if wait_socket "$tag-memfd2"; then
		"$vmsvc" inspect "$tag-memfd2" --json ps >"$work/live" 2>/dev/null
		"$vmsvc" inspect --image "$fix/guest.elf" --json ps >"$work/core" 2>/dev/null
		same "memfd-backed VM (resume FILE --paused): ps == ELF core" "$work/live" "$work/core"
		"$vmsvc" inspect "$tag-memfd2" --json info | jq -e '.source | test("shared read-only")' >/dev/null &&
			ok "memfd-backed VM: RAM shared, not copied" || fail "memfd-backed VM: RAM was copied"
		"$vmsvc" inspect "$tag-memfd2" check >/dev/null 2>&1 && ok "memfd-backed VM: check clean" ||
			fail "memfd-backed VM: check not clean"
		"$vmsvc" stop "$tag-memfd2" >/dev/null
	else
		fail "resume --paused: no control socket: $(cat "$work/memfd2.err")"
	fi
}

# A hooked LSTAR in the VM's CPU state must be found.
lstar=$("$vmsvc" inspect --image "$fix/guest.elf" --json info | jq -r .text)
"$core2snap" "$work/tmpl" "$fix/guest.elf" "$work/snap-hooked" --lstar "$(printf '%x' $((lstar + 0x1234)))" >/dev/null &&
	restore hooked "$work/snap-hooked" && {
	"$vmsvc" inspect "$tag-hooked" --json check >"$work/check.json"
	status=$?
	[ $status = 3 ] && jq -e '[.findings[] | select(.check == "msr" and .severity == "critical")] | length == 1' \
		"$work/check.json" >/dev/null && ok "check: hooked LSTAR found (live VM)" || fail "check: hooked LSTAR not found"
	"$vmsvc" inspect --image "$work/snap-hooked" --json check >"$work/check.json"
	jq -e '[.findings[] | select(.check == "msr" and .severity == "critical")] | length == 1' "$work/check.json" \
		>/dev/null && ok "check: hooked LSTAR found (snapshot)" || fail "check: hooked LSTAR not found in snapshot"
	"$vmsvc" stop "$tag-hooked" >/dev/null
}

# --pause on a running VM: paused while reading, running afterwards.
"$vmsvc" run --kernel "$idle" --serial none --append idle.seconds=600 --name "$tag-run" -q &
pids+=($!)
wait_socket "$tag-run"
"$vmsvc" inspect "$tag-run" --pause info >/dev/null 2>"$work/err"
[ $? = 1 ] && grep -q "no kallsyms" "$work/err" && ok "inspect of a non-Linux guest fails cleanly" ||
	fail "inspect of the idle guest: $(cat "$work/err")"
[ "$("$vmsvc" info "$tag-run" --json | jq -r .state)" = running ] && ok "--pause resumes the VM it paused" ||
	fail "--pause left the VM paused"
# Interrupted while holding the pause: the VM must be resumed all the same.
"$vmsvc" inspect "$tag-run" --pause --repeat 1000 ps >/dev/null 2>&1 &
ipid=$!
sleep 0.05
kill -TERM $ipid
wait $ipid
[ "$("$vmsvc" info "$tag-run" --json | jq -r .state)" = running ] && ok "inspect --pause killed by SIGTERM resumes the VM" ||
	fail "inspect --pause killed by SIGTERM left the VM paused"
"$vmsvc" stop "$tag-run" >/dev/null
"$vmsvc" inspect "$tag-nonexistent" ps 2>"$work/err"
[ $? = 1 ] && [ "$(wc -l <"$work/err")" = 1 ] && ok "unknown VM: one-line error" || fail "unknown VM: $(cat "$work/err")"

# Hostile snapshots: one line naming the file (and offset).
bad=$work/snap-bad
mkdir "$bad"
cp "$work/snap-guest/state" "$bad/state"
ln -s "$work/snap-guest/memory" "$bad/memory"
printf '\x07' | dd of="$bad/state" bs=1 seek=200 conv=notrunc status=none
"$vmsvc" inspect --image "$bad" ps >/dev/null 2>"$work/err"
[ $? = 1 ] && [ "$(wc -l <"$work/err")" = 1 ] && grep -q "$bad/state: offset" "$work/err" &&
	ok "corrupted state: $(cat "$work/err")" || fail "corrupted state: $(cat "$work/err")"
cp "$work/snap-guest/state" "$bad/state"
rm "$bad/memory"
truncate -s 1M "$bad/memory"
"$vmsvc" inspect --image "$bad" ps >/dev/null 2>"$work/err"
[ $? = 1 ] && [ "$(wc -l <"$work/err")" = 1 ] && grep -q "$bad/memory" "$work/err" &&
	ok "short memory file: $(cat "$work/err")" || fail "short memory file: $(cat "$work/err")"

wait
[ $failures = 0 ] && echo "all passed" || echo "$failures failure(s)"
[ $failures = 0 ]
