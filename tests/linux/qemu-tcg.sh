#!/bin/bash
# Check the guest image itself: boot build/linux under QEMU's TCG emulator
# (no KVM involved, a few seconds) and require the initramfs to reach its
# autotest marker with the virtio modules loaded and two virtio devices bound.
#
#   tests/linux/qemu-tcg.sh [GUESTDIR]   (default <repo>/build/linux, built if missing)
#
# Environment: QEMU (default qemu-system-x86_64), LINUX_TCG_TIMEOUT (default 180 s),
# LINUX_TCG_CMDLINE (default: scripts/linux-cmdline.txt, the same line used on this host),
# LINUX_TCG_INITRD (default GUESTDIR/initramfs.cpio.gz; GUESTDIR/initramfs.cpio also works).
# Exit: 0 pass, 1 fail, 77 skipped (no QEMU).
set -u

REPO=$(cd "$(dirname "$0")/../.." && pwd)
GUEST=${1:-${LINUX_GUEST_DIR:-$REPO/build/linux}}
QEMU=${QEMU:-qemu-system-x86_64}
TIMEOUT=${LINUX_TCG_TIMEOUT:-180}
CMDLINE=${LINUX_TCG_CMDLINE:-$(cat "$REPO/scripts/linux-cmdline.txt")}
INITRD=${LINUX_TCG_INITRD:-$GUEST/initramfs.cpio.gz}
LOG=$GUEST/boot-qemu-tcg.log

log() { echo "linux-qemu-tcg: $*"; }
command -v "$QEMU" >/dev/null 2>&1 || { log "SKIP: $QEMU not found"; exit 77; }
if [ ! -f "$GUEST/vmlinuz" ] || [ ! -f "$INITRD" ]; then
    "$REPO/scripts/build-linux-guest.sh" "$GUEST" || { log "FAIL: guest build failed"; exit 1; }
fi

DISK=$(mktemp /tmp/vmsvc-tcg-disk.XXXXXX)
trap 'rm -f "$DISK"' EXIT
truncate -s 1M "$DISK"

log "booting $GUEST/vmlinuz ($(cat "$GUEST/version" 2>/dev/null)) + $(basename "$INITRD") under TCG, timeout ${TIMEOUT}s"
START=$(date +%s.%N)
timeout "$TIMEOUT" "$QEMU" -accel tcg -m 512M -nographic -no-reboot -nic none \
    -kernel "$GUEST/vmlinuz" -initrd "$INITRD" \
    -append "$CMDLINE vmsvc.autotest=1 panic=-1" \
    -device virtio-rng-pci \
    -drive "file=$DISK,format=raw,if=none,id=d0" -device virtio-blk-pci,drive=d0 \
    </dev/null >"$LOG" 2>&1
RC=$?
SECS=$(awk -v s="$START" -v n="$(date +%s.%N)" 'BEGIN { printf "%.1f", n - s }')

tr -d '\r' <"$LOG" | grep -aE 'Linux version|x86/fpu|Run /init|VMSVC-GUEST|Kernel panic|Power down' | sed 's/^/  /'
ok=1
grep -aq 'VMSVC-GUEST: autotest ok' "$LOG" || { log "no autotest marker"; ok=0; }
grep -aq 'VMSVC-GUEST: modules loaded: .*virtio_pci' "$LOG" || { log "virtio modules not loaded"; ok=0; }
# init's own list ("(failed: ...)"), not the kernel's "module verification failed:" line,
# which appears whenever no signing keys are loaded (load_system_certificate_list is
# blacklisted on the command line) and is harmless.
grep -aq '^VMSVC-GUEST: modules loaded:.*(failed:' "$LOG" && { log "some module failed to load"; ok=0; }
devs=$(tr -d '\r' <"$LOG" | sed -n 's/^VMSVC-GUEST: virtio devices: //p' | wc -w)
[ "$devs" -ge 2 ] || { log "expected 2 virtio devices, saw $devs"; ok=0; }
if [ $ok = 1 ] && [ $RC = 0 ]; then
    log "PASS: shell-ready initramfs, $devs virtio devices, powered off after $SECS s (log $LOG)"
    exit 0
fi
log "FAIL: qemu exit $RC after $SECS s (log $LOG)"
exit 1
