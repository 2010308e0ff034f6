#!/bin/bash
# Encrypted suspend/resume end to end with the idle test guest (tests/guests/idle.c):
# a failed suspend leaves the VM running; suspend (raw key) ends vmsvc with 0 and
# leaves FILE; resume continues the guest to PASS; a wrong key, a flipped byte,
# truncation and a future format version are refused with status 2 and nothing
# runs; a passphrase-file round trip; vmsvc killed with SIGKILL while writing
# leaves the file at the target path intact and nothing else behind; with
# VIRTIO_BLK.elf: a disk overlay's blocks survive suspend/resume (into an
# ephemeral and a new named overlay), a changed base image is refused.
# usage: suspend_test.sh VMSVC IDLE.elf [VIRTIO_BLK.elf]   (exit 77 = skipped: no /dev/kvm)
set -u
vmsvc=$1 guest=$2 blk_guest=${3:-}
[ -r /dev/kvm ] && [ -w /dev/kvm ] || { echo "skip: /dev/kvm not usable"; exit 77; }
[ -x "$vmsvc" ] && [ -f "$guest" ] || { echo "error: missing $vmsvc or $guest" >&2; exit 2; }

. "$(dirname "$0")/lib.sh"
it_setup susp

# start NAME: boots the idle guest (200 MiB: RAM spans 4 memory records), sets $last_pid.
# Unique names: helpers run these tests in parallel on one machine.
start() {
	"$vmsvc" run --kernel "$guest" --serial "file:$work/$1.serial" -m 200M \
		--append "idle.seconds=6" --name "$1" 2>"$work/$1.err" &
	last_pid=$!
	pids+=("$last_pid")
	for _ in $(seq 100); do grep -q 'tick' "$work/$1.serial" 2>/dev/null && return 0; sleep 0.1; done
	cat "$work/$1.err" >&2
	return 1
}
# suspended NAME FILE KEYOPT KEYFILE: suspend, check vmsvc ended with 0 and FILE exists.
suspended() {
	local name=$1 file=$2 pid=$last_pid
	out=$("$vmsvc" suspend "$name" "$file" "$3" "$4" 2>&1) || { fail "suspend $name: $out"; return 1; }
	wait "$pid"
	local st=$?
	[ $st = 0 ] && [ -f "$file" ] && ok "suspend $name: $out (vmsvc exit 0, $(stat -c %s "$file") bytes)" ||
		{ fail "suspend $name: vmsvc status $st, file: $(ls -l "$file" 2>&1)"; cat "$work/$name.err" >&2; return 1; }
	[ -z "$(ls "$file".tmp.* 2>/dev/null)" ] || fail "temp files left: $(ls "$file".tmp.*)"
}
# resumed FILE KEYOPT KEYFILE: the guest continues (no fresh start) and passes.
resumed() {
	local file=$1 serial=$work/resumed.serial
	"$vmsvc" resume "$file" "$2" "$3" --serial "file:$serial" 2>"$work/resume.err"
	local st=$?
	if [ $st = 1 ] && grep -q '^PASS' "$serial" && ! grep -q 'running for' "$serial" &&
	   grep -q 'done after 600 ticks' "$serial"; then
		ok "resume $(basename "$file"): continued from tick $(grep -o 'tick [0-9]*' "$serial" | head -1 | cut -d' ' -f2), PASS"
	else
		fail "resume $(basename "$file"): status $st: $(cat "$work/resume.err") / $(cat "$serial" 2>/dev/null)"
	fi
}
# refused WHAT FILE KEYOPT KEYFILE: status 2, one line on stderr, nothing ran.
refused() {
	local serial=$work/refused.serial
	rm -f "$serial"
	out=$("$vmsvc" resume "$2" "$3" "$4" --serial "file:$serial" 2>&1)
	local st=$?
	if [ $st = 2 ] && [ "$(wc -l <<<"$out")" = 1 ] && [ ! -e "$serial" ]; then
		ok "$1 refused: $out"
	else
		fail "$1: status $st: $out"
	fi
}

head -c 32 /dev/urandom >"$work/key"
head -c 32 /dev/urandom >"$work/wrong"
file=$work/vm.sealed

start raw || { fail "guest did not start"; exit 1; }
# A suspend that cannot be written fails and the VM keeps running.
if out=$("$vmsvc" suspend raw "$work/no/such/dir/f" --key-file "$work/key" 2>&1); then
	fail "suspend into a missing directory succeeded"
else
	# Still running = its tick count grows (within 20 s: on a loaded host the
	# guest's emulated kernel code can go a second without a tick).
	before=$(grep -c tick "$work/raw.serial")
	grew=0
	for _ in $(seq 200); do
		[ "$(grep -c tick "$work/raw.serial")" -gt "$before" ] && { grew=1; break; }
		sleep 0.1
	done
	kill -0 "$last_pid" 2>/dev/null && [ $grew = 1 ] &&
		ok "failed suspend ($out): VM still running" || fail "VM not running after a failed suspend"
fi
suspended raw "$file" --key-file "$work/key"
resumed "$file" --key-file "$work/key"
# The file is not consumed: it resumes again.
resumed "$file" --key-file "$work/key"

refused "wrong key" "$file" --key-file "$work/wrong"
size=$(stat -c %s "$file")
for off in 90 $((size / 2)) $((size - 5)); do
	cp "$file" "$work/flip"
	byte=$(od -An -tu1 -j "$off" -N1 "$file" | tr -d ' ')
	printf "\\$(printf %03o $((byte ^ 0x20)))" | dd of="$work/flip" bs=1 seek="$off" conv=notrunc 2>/dev/null
	refused "byte $off of $size flipped" "$work/flip" --key-file "$work/key"
done
for len in 40 100 $((size / 2)) $((size - 1)); do
	head -c "$len" "$file" >"$work/trunc"
	refused "truncated to $len of $size bytes" "$work/trunc" --key-file "$work/key"
done
cp "$file" "$work/future"
printf '\x09' | dd of="$work/future" bs=1 seek=8 conv=notrunc 2>/dev/null
refused "format version 9" "$work/future" --key-file "$work/key"

# Passphrase file (Argon2id with the default cost).
printf 'correct horse battery staple\n' >"$work/pass"
printf 'incorrect horse\n' >"$work/badpass"
start pass || { fail "guest did not start"; exit 1; }
suspended pass "$work/pass.sealed" --passphrase-file "$work/pass"
refused "wrong passphrase" "$work/pass.sealed" --passphrase-file "$work/badpass"
resumed "$work/pass.sealed" --passphrase-file "$work/pass"

# SIGKILL while the file is being written: the old file at the target path is
# untouched and no temp file is left (the writer's file is unnamed until commit).
# The test hook slows the writer down to 400 ms per 64 MiB memory record.
echo "previous contents" >"$work/kill.sealed"
VMSVC_TEST_SUSPEND_SLOW_MS=400 start killme || { fail "guest did not start"; exit 1; }
kpid=$last_pid
"$vmsvc" suspend killme "$work/kill.sealed" --key-file "$work/key" >"$work/kill.out" 2>&1 &
cpid=$!
writing=""
for _ in $(seq 100); do
	# The unnamed temp file shows up among the VM's descriptors as "DIR/#INODE (deleted)".
	if ls -l "/proc/$kpid/fd" 2>/dev/null | grep -q "$work/#.*(deleted)"; then writing=1; break; fi
	sleep 0.05
done
kill -9 "$kpid"
wait "$kpid" 2>/dev/null
wait "$cpid"
cst=$?
left=$(ls -A "$work" | grep -v -e '^xdg$' -e '\.serial$' -e '\.err$' -e '\.out$' -e '^key$' -e '^wrong$' -e '^pass$' \
	-e '^badpass$' -e '^vm\.sealed$' -e '^pass\.sealed$' -e '^kill\.sealed$' -e '^flip$' -e '^trunc$' -e '^future$')
if [ -z "$writing" ]; then
	fail "kill -9: never saw the suspend file being written"
elif [ "$(cat "$work/kill.sealed")" = "previous contents" ] && [ -z "$left" ] && [ $cst != 0 ]; then
	ok "kill -9 while writing: target intact, nothing left behind, client said: $(head -1 "$work/kill.out")"
else
	fail "kill -9: target now $(head -c 40 "$work/kill.sealed" | od -c | head -1), left: $left, client status $cst"
fi
# Without a previous file nothing appears at all.
VMSVC_TEST_SUSPEND_SLOW_MS=400 start killme2 || { fail "guest did not start"; exit 1; }
kpid=$last_pid
"$vmsvc" suspend killme2 "$work/kill2.sealed" --key-file "$work/key" >/dev/null 2>&1 &
cpid=$!
for _ in $(seq 100); do
	ls -l "/proc/$kpid/fd" 2>/dev/null | grep -q "$work/#.*(deleted)" && break
	sleep 0.05
done
kill -9 "$kpid"
wait "$kpid" "$cpid" 2>/dev/null
[ -z "$(ls "$work" | grep kill2)" ] && ok "kill -9 while writing a new file: nothing at the target path" ||
	fail "kill -9: left $(ls "$work" | grep kill2)"

# Disk overlays: the blocks a guest wrote (into overlay ov1) go into the suspend
# file; resume recreates them and the guest, waiting in the middle of its
# verify run, reads them back.
if [ -n "$blk_guest" ]; then
	head -c 8M /dev/urandom >"$work/base.img"
	truncate -s 64M "$work/base.img"
	sum_before=$(md5sum <"$work/base.img")
	"$vmsvc" run --kernel "$blk_guest" -m 128M --disk "$work/base.img,overlay=$work/ov1.img" \
		--serial "file:$work/blkw.serial" >/dev/null 2>"$work/blkw.err"
	grep -q '^PASS' "$work/blkw.serial" || fail "virtio-blk write run: $(tail -2 "$work/blkw.serial")"
	for mode in ephemeral named; do
		"$vmsvc" run --kernel "$blk_guest" -m 128M --disk "$work/base.img,overlay=$work/ov1.img" \
			--append "blk.verify=1 blk.wait_ticks=400" --name "wtstate-blk-$mode" \
			--serial "file:$work/blk-$mode.serial" 2>"$work/blk-$mode.err" &
		bpid=$!
		pids+=("$bpid")
		for _ in $(seq 100); do grep -q 'waiting, tick' "$work/blk-$mode.serial" 2>/dev/null && break; sleep 0.1; done
		out=$("$vmsvc" suspend "wtstate-blk-$mode" "$work/blk-$mode.sealed" --key-file "$work/key" 2>&1) ||
			fail "suspend with an overlay: $out"
		wait "$bpid"
		[ "$mode" = ephemeral ] && disk="$work/base.img" || disk="$work/base.img,overlay=$work/ov-new.img"
		"$vmsvc" resume "$work/blk-$mode.sealed" --key-file "$work/key" --disk "$disk" \
			--serial "file:$work/blk-$mode.resumed" 2>"$work/blk-$mode.rerr"
		st=$?
		if [ $st = 1 ] && grep -q 'verify-only test passed' "$work/blk-$mode.resumed" &&
		   ! grep -q 'waiting 400 ticks' "$work/blk-$mode.resumed"; then
			ok "overlay blocks after resume ($mode overlay): the guest read back what it wrote"
		else
			fail "overlay resume ($mode): status $st: $(cat "$work/blk-$mode.rerr") / $(tail -3 "$work/blk-$mode.resumed")"
		fi
	done
	[ -s "$work/ov-new.img" ] && ok "named overlay recreated ($(stat -c %s "$work/ov-new.img") bytes)" ||
		fail "named overlay not created"
	refused_disk() {
		out=$("$vmsvc" resume "$work/blk-ephemeral.sealed" --key-file "$work/key" "$@" \
			--serial "file:$work/refused.serial" 2>&1)
		local st=$?
		[ $st = 2 ] && [ "$(wc -l <<<"$out")" = 1 ] && ok "refused: $out" || fail "resume $*: status $st: $out"
	}
	refused_disk --disk "$work/base.img,overlay=$work/ov-new.img"   # exists: would be overwritten
	# A resume that fails after its overlay was created (the name is taken) removes it.
	start wtstate-taken || fail "guest did not start"
	out=$("$vmsvc" resume "$work/blk-ephemeral.sealed" --key-file "$work/key" --name wtstate-taken \
		--disk "$work/base.img,overlay=$work/ov-failed.img" --serial "file:$work/refused.serial" 2>&1)
	st=$?
	kill "$last_pid" 2>/dev/null
	[ $st = 2 ] && [ ! -e "$work/ov-failed.img" ] && ok "failed start: new overlay removed ($out)" ||
		fail "failed start: status $st, overlay: $(ls -l "$work/ov-failed.img" 2>&1)"
	cp "$work/base.img" "$work/other.img"
	printf 'X' | dd of="$work/other.img" bs=1 seek=4096 conv=notrunc 2>/dev/null
	refused_disk --disk "$work/other.img"
	truncate -s 32M "$work/other.img"
	refused_disk --disk "$work/other.img"
	refused_disk
	[ "$(md5sum <"$work/base.img")" = "$sum_before" ] && ok "base image unchanged" || fail "base image was written"
fi

[ $failures = 0 ] && { echo "all suspend tests passed"; exit 0; }
echo "$failures failure(s)"
exit 1
