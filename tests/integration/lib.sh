# Shared by the shell integration tests that run VMs with control sockets
# (control_test.sh, suspend_test.sh, vmi_live_test.sh). Source it after the
# test's own argument checks:   . "$(dirname "$0")/lib.sh"; it_setup PREFIX
#
# it_setup PREFIX: a private work dir ($work, removed on exit) holding its own
# XDG_RUNTIME_DIR (so sockets never collide with other VMs on the machine),
# $pids (VMs to kill -9 on exit), and ok/fail counting into $failures.
it_setup() {
	work=$(mktemp -d "/tmp/vmsvc-$1.XXXXXX")
	export XDG_RUNTIME_DIR=$work/xdg
	mkdir -m 700 "$XDG_RUNTIME_DIR"
	pids=()
	failures=0
	trap it_cleanup EXIT
}
it_cleanup() {
	for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
	wait 2>/dev/null
	rm -rf "$work"
}
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
ok() { echo "ok: $*"; }
