#!/bin/bash
# Control socket end to end with the idle test guest (tests/guests/idle.c):
# ls, info, pause (the guest's tick counter stops), resume, stats, events,
# stop (status 0, socket removed), two VMs with different names, a duplicate
# name refused, a stale socket shown by ls and replaced, --control PATH.
# usage: control_test.sh VMSVC IDLE.elf     (exit 77 = skipped: no /dev/kvm)
set -u
vmsvc=$1 guest=$2
[ -r /dev/kvm ] && [ -w /dev/kvm ] || { echo "skip: /dev/kvm not usable"; exit 77; }
[ -x "$vmsvc" ] && [ -f "$guest" ] || { echo "error: missing $vmsvc or $guest" >&2; exit 2; }

. "$(dirname "$0")/lib.sh"
it_setup ctl
dir=$XDG_RUNTIME_DIR/vmsvc

# start NAME CPUS [extra vmsvc args]: boots the idle guest, sets $last_pid.
start() {
	local name=$1 cpus=$2
	shift 2
	"$vmsvc" run --kernel "$guest" --serial "file:$work/$name.serial" --cpus "$cpus" -m 64M \
		--append "idle.seconds=120" --name "$name" "$@" 2>"$work/$name.err" &
	last_pid=$!
	pids+=("$last_pid")
}
wait_socket() {   # PATH
	for _ in $(seq 100); do [ -S "$1" ] && return 0; sleep 0.1; done
	return 1
}
ticks() { grep -o 'tick [0-9]*' "$work/$1.serial" | tail -1 | cut -d' ' -f2; }
wait_ticks() {    # NAME: until the guest has printed a tick (it is running)
	for _ in $(seq 100); do [ -n "$(ticks "$1")" ] && return 0; sleep 0.1; done
	return 1
}
json_field() { grep -o "\"$2\":[^,}]*" <<<"$1" | head -1 | cut -d: -f2- | tr -d '"'; }

start web 1
web_pid=$last_pid
wait_socket "$dir/web.sock" || { cat "$work/web.err"; fail "web: no socket"; exit 1; }
[ "$(stat -c %a "$dir/web.sock")" = 600 ] && [ "$(stat -c %a "$dir")" = 700 ] && ok "socket 0600 in a 0700 directory" ||
	fail "permissions: $(stat -c %a "$dir/web.sock") $(stat -c %a "$dir")"

# A duplicate name is refused before the guest starts.
if out=$("$vmsvc" run --kernel "$guest" --serial none --name web 2>&1); then
	fail "duplicate name accepted"
else
	st=$?
	[ $st = 2 ] && grep -q "already running" <<<"$out" && ok "duplicate name refused: $out" ||
		fail "duplicate name: status $st: $out"
fi

start db 2
db_pid=$last_pid
wait_socket "$dir/db.sock" || fail "db: no socket"
wait_ticks web || fail "web: guest not ticking"

ls_out=$("$vmsvc" ls)
echo "$ls_out"
grep -Eq "^web +$web_pid +running +1 +64M" <<<"$ls_out" && grep -Eq "^db +$db_pid +running +2 +64M" <<<"$ls_out" &&
	ok "ls lists both VMs" || fail "ls output"

info=$("$vmsvc" info db --json | tr -d ' \n')
[ "$(json_field "$info" vcpus)" = 2 ] && [ "$(json_field "$info" name)" = db ] && ok "info --json" || fail "info: $info"

# Event stream of web, collected until the VM ends.
"$vmsvc" events web >"$work/events" 2>"$work/events.err" &
events_pid=$!
pids+=("$events_pid")
sleep 0.3

"$vmsvc" pause web >/dev/null || fail "pause"
[ "$("$vmsvc" info web --json | tr -d ' \n' | grep -o '"state":"[a-z]*"')" = '"state":"paused"' ] &&
	ok "info says paused" || fail "info after pause"
t0=$(ticks web)
sleep 1.5
t1=$(ticks web)
[ "$t0" = "$t1" ] && ok "tick counter frozen while paused ($t0)" || fail "ticks moved while paused: $t0 -> $t1"
"$vmsvc" pause web >/dev/null || fail "second pause"
"$vmsvc" resume web >/dev/null || fail "resume"
[ "$("$vmsvc" info web --json | tr -d ' \n' | grep -o '"state":"[a-z]*"')" = '"state":"running"' ] &&
	ok "info says running" || fail "info after resume"
sleep 1.5
t2=$(ticks web)
[ "${t2:-0}" -gt "${t1:-0}" ] && ok "ticks advance after resume ($t1 -> $t2)" || fail "ticks after resume: $t1 -> $t2"

stats=$("$vmsvc" stats web --json | tr -d ' \n')
total=$(json_field "$stats" exits_total)
[ "${total:-0}" -gt 0 ] && grep -q '"exit.io":[1-9]' <<<"$stats" && grep -q '"vm.paused":1' <<<"$stats" &&
	ok "stats: $total exits" || fail "stats: $stats"
"$vmsvc" stats web | head -3
regs=$("$vmsvc" regs web --vcpu 0 --json | tr -d ' \n')
grep -q '"index":0' <<<"$regs" && grep -q '"rip":"0x[0-9a-f]*"' <<<"$regs" && grep -q '"mode":"long"' <<<"$regs" &&
	ok "regs: vCPU 0 in long mode" || fail "regs: $regs"
"$vmsvc" regs web --vcpu 99 2>/dev/null && fail "regs --vcpu 99 accepted" || ok "regs: bad vCPU index refused"

# Exit events reach the bus only while a client streams them (docs/bus.md):
# a stream asked for at run time gets them, and the VM goes on afterwards.
exits=$(timeout 20 "$vmsvc" events web --events exit.io --count 3 2>&1)
[ "$(grep -c '"event":"exit.io"' <<<"$exits")" = 3 ] && ok "exit.io stream on demand" || fail "exit stream: $exits"

# Errors: one line, non-zero.
out=$("$vmsvc" pause nosuchvm 2>&1) && fail "pause of a missing VM succeeded"
[ "$(wc -l <<<"$out")" = 1 ] && grep -q "no VM named" <<<"$out" && ok "missing VM: $out" || fail "missing VM: $out"
out=$("$vmsvc" info 'bad name' 2>&1) && fail "bad name accepted"
grep -q "invalid VM name" <<<"$out" && ok "bad name: $out" || fail "bad name: $out"

# stop: graceful, status 0, socket removed, event stream ends with vm.stopped.
"$vmsvc" stop web >/dev/null || fail "stop"
wait "$web_pid"
st=$?
[ $st = 0 ] && ok "stop: exit status 0" || { fail "stop: exit status $st"; cat "$work/web.err"; }
[ ! -e "$dir/web.sock" ] && ok "socket removed at exit" || fail "socket left behind"
for _ in $(seq 50); do kill -0 "$events_pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$events_pid" 2>/dev/null && fail "events client still running after the VM ended"
echo "events:"; cat "$work/events"
for e in vm.paused vm.resumed guest.end vm.stopped; do
	grep -q "\"event\":\"$e\"" "$work/events" || fail "event $e missing"
done
# Two pauses: `vmsvc pause` and the one around `vmsvc regs` (both are real pauses).
[ "$(grep -c '"event":"vm.paused"' "$work/events")" = 2 ] && ok "events stream" || fail "vm.paused count"
grep -q '"event":"exit' "$work/events" && fail "exit events streamed without opt-in"

# A VM killed with SIGKILL leaves a stale socket: ls says so, the name is reusable.
kill -9 "$db_pid"
wait "$db_pid" 2>/dev/null
[ -S "$dir/db.sock" ] || fail "no stale socket after kill -9"
"$vmsvc" ls | grep -Eq "^db +- +stale" && ok "ls shows the stale socket" || fail "ls stale: $("$vmsvc" ls)"
out=$("$vmsvc" info db 2>&1) && fail "info of a stale VM succeeded"
grep -q "not running" <<<"$out" && ok "stale: $out" || fail "stale: $out"
start db 1
db_pid=$last_pid
for _ in $(seq 100); do "$vmsvc" info db >/dev/null 2>&1 && break; sleep 0.1; done
[ "$("$vmsvc" info db --json | tr -d ' \n' | grep -o '"pid":[0-9]*')" = "\"pid\":$db_pid" ] &&
	ok "stale socket replaced" || fail "restart over a stale socket: $(cat "$work/db.err")"

# --control PATH, addressed by path.
start custom 1 --control "$work/custom.sock"
custom_pid=$last_pid
wait_socket "$work/custom.sock" || fail "--control: no socket"
[ "$("$vmsvc" info "$work/custom.sock" --json | tr -d ' \n' | grep -o '"name":"[a-z]*"')" = '"name":"custom"' ] &&
	ok "--control PATH" || fail "--control"
"$vmsvc" ls | grep -q '^custom' && fail "ls lists a socket outside the directory"

# A paused VM can be stopped.
"$vmsvc" pause db >/dev/null || fail "pause db"
"$vmsvc" stop db >/dev/null && "$vmsvc" stop "$work/custom.sock" >/dev/null || fail "stop db/custom"
wait "$db_pid"; st1=$?
wait "$custom_pid"; st2=$?
[ $st1 = 0 ] && [ $st2 = 0 ] && ok "both stopped with status 0 (db while paused)" || fail "stop statuses $st1 $st2"
[ -z "$(ls -A "$dir")" ] && ok "directory empty" || fail "left in $dir: $(ls -A "$dir")"

[ $failures = 0 ] && echo "PASS" || echo "FAILED: $failures"
[ $failures = 0 ]
