#!/bin/bash
# A snapshot of a VM with a virtio-blk disk and a virtio-rng restores. (The snapshot's
# config records the disk as an informational "disk=PATH" line, which restore once
# parsed as a number: "malformed config section".)
#   snapshot_disk.sh VMSVC IDLE_GUEST_ELF
set -u
VMSVC=$1
GUEST=$2
fail() { echo "snapshot_disk: FAIL: $*"; exit 1; }
[ -r /dev/kvm ] || { echo "snapshot_disk: SKIP: no /dev/kvm"; exit 77; }
W=$(mktemp -d)
PID=
cleanup() { [ -z "$PID" ] || kill "$PID" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
NAME=snapdisk-$$
truncate -s 1M "$W/disk.img"

# wait_up NAME: until the VM answers on its control socket (10 s at most).
wait_up() {
    for _ in $(seq 100); do "$VMSVC" info "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
    return 1
}

"$VMSVC" run -k "$GUEST" --append idle.seconds=60 --disk "$W/disk.img" --rng \
    --serial none --name "$NAME" >"$W/run1.log" 2>&1 &
PID=$!
wait_up "$NAME" || { cat "$W/run1.log"; fail "first VM did not come up"; }
"$VMSVC" snapshot "$NAME" "$W/snap" --stop >"$W/snap.log" 2>&1 || { cat "$W/snap.log"; fail "snapshot failed"; }
wait "$PID"
PID=
grep -q '^disk=' "$W/snap/state" || fail "the snapshot does not record the disk (test out of date?)"

"$VMSVC" run --restore "$W/snap" --disk "$W/disk.img" --serial none --name "$NAME-r" >"$W/run2.log" 2>&1 &
PID=$!
wait_up "$NAME-r" || { cat "$W/run2.log"; fail "restore with a disk did not come up"; }
"$VMSVC" stop "$NAME-r" >/dev/null 2>&1 || fail "stop failed"
wait "$PID"
RC=$?
PID=
[ "$RC" = 0 ] || { cat "$W/run2.log"; fail "restored VM exit status $RC"; }
echo "snapshot_disk: PASS"
