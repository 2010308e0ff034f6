#!/bin/bash
# Boot the Debian cloud kernel + busybox initramfs under vmsvc and report how
# far it gets (CMake-independent; run by hand or from CI).
#
#   tests/linux/boot.sh            # uses build/vmsvc and build/linux (built if missing)
#
# Environment (all optional):
#   VMSVC                 vmsvc binary (default <repo>/build/vmsvc)
#   LINUX_GUEST_DIR       output of scripts/build-linux-guest.sh (default <repo>/build/linux)
#   LINUX_BOOT_TIMEOUT    seconds before the guest is stopped (default 900)
#   LINUX_BOOT_MEM        guest RAM (default 256M on a host without VMX/SVM, where initialising
#                         the struct pages of more RAM costs emulated time; else 512M)
#   LINUX_BOOT_INITRD     initramfs (default: initramfs.cpio, uncompressed, on a host without
#                         VMX/SVM, where inflating in the guest costs minutes; else initramfs.cpio.gz)
#   LINUX_BOOT_CMDLINE    kernel command line (default: scripts/linux-cmdline.sh on a
#                         kvm_pvm host, "console=ttyS0" on a VMX/SVM host; vmsvc.autotest=1
#                         is appended so the initramfs powers off by itself)
#   LINUX_BOOT_REQUIRE    milestone that must be reached for exit 0 (default: fpu_done on
#                         a host without VMX/SVM, init on a VMX/SVM host)
#   LINUX_BOOT_STOP_AFTER stop the guest as soon as this milestone is seen (default: none)
#   LINUX_BOOT_LOG        serial log path (default $LINUX_GUEST_DIR/boot-vmsvc.serial.log)
#   LINUX_BOOT_DEVICES    1 (default): attach a virtio-blk disk (an 8 MiB raw image made here),
#                         a virtio-rng and, as root with /dev/net/tun, a virtio-net NIC on a tap
#                         vmsvc creates; 0: no PCI devices (the boot as it was before them)
#   LINUX_BOOT_SNAPSHOT_AT milestone at which to write a snapshot of the running guest
#                         (vmsvc snapshot) to LINUX_BOOT_SNAPSHOT_DIR (default
#                         $LINUX_GUEST_DIR/snapshot-KEY); the guest keeps running. The disk
#                         is then DIR.disk.img and stays.
#   LINUX_BOOT_RESTORE    continue such a snapshot (vmsvc run --restore DIR, disk DIR.disk.img)
#                         instead of booting: minutes saved when only init and later matter
#
# Output: per milestone the wall time, vmsvc's CPU time (load-independent on this host) and
# the guest's printk time.
# Exit: 0 required milestone reached, 1 not reached, 77 skipped (no vmsvc, no /dev/kvm).
set -u

REPO=$(cd "$(dirname "$0")/../.." && pwd)
VMSVC=${VMSVC:-$REPO/build/vmsvc}
GUEST=${LINUX_GUEST_DIR:-$REPO/build/linux}
TIMEOUT=${LINUX_BOOT_TIMEOUT:-900}
LOG=${LINUX_BOOT_LOG:-$GUEST/boot-vmsvc.serial.log}
ERR=${LOG%.serial.log}.stderr.log
[ "$ERR" != "$LOG" ] || ERR=$LOG.stderr

log() { echo "linux-boot: $*"; }

if [ ! -x "$VMSVC" ]; then log "SKIP: no vmsvc at $VMSVC (set VMSVC=...)"; exit 77; fi
if [ ! -r /dev/kvm ]; then log "SKIP: no /dev/kvm"; exit 77; fi
if grep -qwE 'vmx|svm' /proc/cpuinfo; then HWVIRT=1; else HWVIRT=0; fi
# Without VMX/SVM the uncompressed initramfs is wanted (see LINUX_BOOT_INITRD); guest
# directories built by older versions of the script lack it. The rebuild reuses the
# cached .debs (seconds).
if [ ! -f "$GUEST/vmlinuz" ] || [ ! -f "$GUEST/initramfs.cpio.gz" ] ||
   { [ $HWVIRT = 0 ] && [ -z "${LINUX_BOOT_INITRD:-}" ] && [ ! -f "$GUEST/initramfs.cpio" ]; }; then
    log "building the guest into $GUEST"
    "$REPO/scripts/build-linux-guest.sh" "$GUEST" || { log "FAIL: guest build failed"; exit 1; }
fi
if [ -n "${LINUX_BOOT_INITRD:-}" ]; then
    INITRD=$LINUX_BOOT_INITRD
elif [ $HWVIRT = 0 ] && [ -f "$GUEST/initramfs.cpio" ]; then
    INITRD=$GUEST/initramfs.cpio
else
    INITRD=$GUEST/initramfs.cpio.gz
fi
if [ -n "${LINUX_BOOT_CMDLINE:-}" ]; then
    CMDLINE=$LINUX_BOOT_CMDLINE
elif [ $HWVIRT = 1 ]; then
    CMDLINE="console=ttyS0"
else
    CMDLINE=$("$REPO/scripts/linux-cmdline.sh")
fi
case " $CMDLINE " in *" vmsvc.autotest="*) ;; *) CMDLINE="$CMDLINE vmsvc.autotest=1";; esac
if [ $HWVIRT = 1 ]; then MEM=${LINUX_BOOT_MEM:-512M}; else MEM=${LINUX_BOOT_MEM:-256M}; fi
if [ $HWVIRT = 1 ]; then REQUIRE=${LINUX_BOOT_REQUIRE:-init}; else REQUIRE=${LINUX_BOOT_REQUIRE:-fpu_done}; fi
STOP_AFTER=${LINUX_BOOT_STOP_AFTER:-}
SNAP_AT=${LINUX_BOOT_SNAPSHOT_AT:-}
SNAP_DIR=${LINUX_BOOT_SNAPSHOT_DIR:-$GUEST/snapshot-$SNAP_AT}
RESTORE=${LINUX_BOOT_RESTORE:-}
# Unique per run (parallel runs, other worktrees): the control socket and the tap.
VM_NAME=linux-boot-$$
DEVARGS=()
DISK=
TAP=
if [ "${LINUX_BOOT_DEVICES:-1}" = 1 ]; then
    # The disk only has to exist for the driver to bind: zeros, discarded afterwards.
    if [ -n "$RESTORE" ]; then
        DISK=$RESTORE.disk.img       # the snapshot's disk; kept
        [ -f "$DISK" ] || { log "FAIL: no $DISK for the snapshot $RESTORE"; exit 1; }
        SNAPPED=1
    elif [ -n "$SNAP_AT" ]; then
        DISK=$SNAP_DIR.disk.img
        rm -f "$DISK"; truncate -s 8M "$DISK"
    else
        DISK=$(mktemp "${TMPDIR:-/tmp}/linux-boot-disk.XXXXXX") || { log "FAIL: mktemp"; exit 1; }
        truncate -s 8M "$DISK"
    fi
    DEVARGS+=(--disk "$DISK,serial=linux-boot" --rng)
    if [ "$(id -u)" = 0 ] && [ -w /dev/net/tun ]; then
        TAP=lxboot$$                  # <= 15 characters; vmsvc deletes it when it exits
        DEVARGS+=(--net "tap=$TAP,create=on")
    else
        log "no virtio-net NIC: creating a tap needs root and /dev/net/tun"
    fi
fi
# A snapshot refers to the disk, so the disk stays when one was written.
cleanup() { [ -z "$DISK" ] || [ -n "${SNAPPED:-}" ] || rm -f "$DISK"; }
trap cleanup EXIT

# Milestones in boot order: key, label, extended regex on the serial log.
# fpu_done has no regex: it is "some line printed after the x86/fpu: lines".
KEYS=(banner cmdline memory console fpu fpu_done alternatives pci_virtio clocksource lockup inet6 freeing runinit init
      blk_probe blk_ok rng_ok net_ok modules ready killinit panic)
declare -A LABEL=(
    [banner]="Linux version banner" [cmdline]="Command line:" [memory]="Memory:"
    [console]="console [ttyS0] enabled" [fpu]="x86/fpu: line" [fpu_done]="past FPU init"
    [alternatives]="alternatives patched" [clocksource]="Switched to clocksource"
    [lockup]="soft lockup warning" [inet6]="PF_INET6 (BTF parsed)" [killinit]="Attempted to kill init" [freeing]="Freeing unused kernel"
    [runinit]="Run /init" [init]="/init started" [modules]="virtio modules loaded"
    [ready]="autotest ok / shell" [panic]="Kernel panic"
    [pci_virtio]="PCI: virtio device found" [blk_probe]="virtio_blk: [vda]"
    [blk_ok]="vmsvc: blk DRIVER_OK" [rng_ok]="vmsvc: rng DRIVER_OK" [net_ok]="vmsvc: net DRIVER_OK")
declare -A RE=(
    [banner]='Linux version [0-9]' [cmdline]='Command line:' [memory]='Memory: [0-9]+K'
    [console]='console \[ttyS0\] enabled' [fpu]='x86/fpu:' [fpu_done]=''
    [alternatives]='Freeing SMP alternatives' [clocksource]='Switched to clocksource'
    [lockup]='soft lockup' [inet6]='NET: Registered PF_INET6' [killinit]='Attempted to kill init' [freeing]='Freeing unused kernel'
    [runinit]='Run /init as init process' [init]='VMSVC-GUEST: init started'
    [modules]='VMSVC-GUEST: modules loaded' [ready]='VMSVC-GUEST: (autotest ok|shell)'
    [panic]='Kernel panic'
    [pci_virtio]='pci [0-9a-f:.]+: \[1af4:10[0-9a-f]{2}\]' [blk_probe]='virtio_blk virtio[0-9]+: \[vda\]'
    [blk_ok]='virtio-blk[^:]*: driver ready' [rng_ok]='virtio-rng[^:]*: driver ready' [net_ok]='virtio-net[^:]*: driver ready')
# Milestones found in vmsvc's stderr (device side, needs -v) instead of the serial log.
declare -A IN_STDERR=([blk_ok]=1 [rng_ok]=1 [net_ok]=1)
declare -A WALL=() GUESTT=() CPU=()

# guest_time LINE: the printk timestamp "[   12.345678]" of LINE, or "-".
guest_time() { sed -n 's/^.*\[ *\([0-9][0-9]*\.[0-9]*\)\].*$/\1/p' <<<"$1" | head -n 1 | grep . || echo -; }

# cpu_seconds: CPU time (user + system) vmsvc has used so far. On this host nearly all of
# it is KVM emulating guest instructions, so unlike wall time it does not depend on what
# else the machine is running.
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
cpu_seconds() {
    # Fields after the ")" of the command name: utime and stime are the 12th and 13th.
    sed 's/^.*) //' "/proc/$PID/stat" 2>/dev/null |
        awk -v hz="$CLK_TCK" '{ printf "%.1f", ($12 + $13) / hz }' | grep . || echo -
}

# scan ELAPSED: record every milestone that appeared since the last poll.
scan() {
    local k line
    for k in "${KEYS[@]}"; do
        [ -n "${WALL[$k]:-}" ] && continue
        if [ "$k" = fpu_done ]; then
            line=$(tr -d '\r' <"$LOG" | awk '/x86\/fpu:/ { seen = 1; next } seen && NF { print; exit }')
        elif [ -n "${IN_STDERR[$k]:-}" ]; then
            line=$(grep -aE -m1 -- "${RE[$k]}" "$ERR")
        else
            line=$(tr -d '\r' <"$LOG" | grep -aE -m1 -- "${RE[$k]}")
        fi
        if [ -n "$line" ]; then
            WALL[$k]=$1
            CPU[$k]=$(cpu_seconds)
            GUESTT[$k]=$(guest_time "$line")
            log "$(printf '%7ss (cpu %6ss)  %-24s %s' "$1" "${CPU[$k]}" "${LABEL[$k]}" "${line:0:100}")"
        fi
    done
}

mkdir -p "$(dirname "$LOG")"
: >"$LOG"
log "vmsvc:   $VMSVC"
log "kernel:  $GUEST/vmlinuz ($(cat "$GUEST/version" 2>/dev/null || echo '?')), initrd $INITRD"
log "host:    $([ $HWVIRT = 1 ] && echo 'VMX/SVM' || echo 'no VMX/SVM (kvm_pvm?)'), timeout ${TIMEOUT}s, require '$REQUIRE'"
log "cmdline: $CMDLINE"
log "serial:  $LOG   vmsvc stderr: $ERR"
log "devices: ${DEVARGS[*]:-none}"

if [ -n "$RESTORE" ]; then
    log "restoring $RESTORE (milestones before the snapshot are not in this serial log)"
    "$VMSVC" run --restore "$RESTORE" --serial "file:$LOG" \
        --stats -v --name "$VM_NAME" "${DEVARGS[@]}" </dev/null >"$ERR" 2>&1 &
else
    "$VMSVC" run --kernel "$GUEST/vmlinuz" --initrd "$INITRD" \
        --append "$CMDLINE" --cpu-features emulator-safe --serial "file:$LOG" \
        --mem "$MEM" --stats -v --name "$VM_NAME" "${DEVARGS[@]}" </dev/null >"$ERR" 2>&1 &
fi
PID=$!
START=$(date +%s.%N)
elapsed() { awk -v s="$START" -v n="$(date +%s.%N)" 'BEGIN { printf "%.1f", n - s }'; }

STATUS=running
while :; do
    sleep 1
    E=$(elapsed)
    scan "$E"
    if ! kill -0 "$PID" 2>/dev/null; then STATUS=exited; break; fi
    if [ -n "$SNAP_AT" ] && [ -n "${WALL[$SNAP_AT]:-}" ] && [ -z "${SNAPPED:-}" ]; then
        SNAPPED=1
        rm -rf "$SNAP_DIR"
        if out=$("$VMSVC" snapshot "$VM_NAME" "$SNAP_DIR" 2>&1); then
            log "snapshot at $SNAP_AT written to $SNAP_DIR (restore: $VMSVC run --restore $SNAP_DIR ${DEVARGS[*]}; the disk is kept)"
        else
            log "snapshot at $SNAP_AT failed: $(tail -n 1 <<<"$out")"
        fi
    fi
    if [ -n "$STOP_AFTER" ] && [ -n "${WALL[$STOP_AFTER]:-}" ]; then STATUS="stopped after $STOP_AFTER"; break; fi
    if [ -n "${WALL[panic]:-}" ] && awk -v e="$E" -v p="${WALL[panic]}" 'BEGIN { exit !(e - p > 5) }'; then
        STATUS="stopped after panic"; break
    fi
    if awk -v e="$E" -v t="$TIMEOUT" 'BEGIN { exit !(e >= t) }'; then STATUS="timeout"; break; fi
done

# Stop politely first so vmsvc prints its statistics.
CPU_END=$(cpu_seconds)
if kill -0 "$PID" 2>/dev/null; then
    kill -TERM "$PID" 2>/dev/null
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$PID" 2>/dev/null || break; sleep 1; done
    kill -0 "$PID" 2>/dev/null && kill -KILL "$PID" 2>/dev/null
fi
wait "$PID"; RC=$?
scan "$(elapsed)"

echo
echo "=== Linux guest boot under vmsvc: $STATUS after $(elapsed) s (vmsvc CPU ${CPU_END} s), vmsvc exit status $RC ==="
printf '%-26s %10s %10s %10s\n' "milestone" "wall s" "cpu s" "guest s"
for k in "${KEYS[@]}"; do
    printf '%-26s %10s %10s %10s\n' "${LABEL[$k]}" "${WALL[$k]:--}" "${CPU[$k]:--}" "${GUESTT[$k]:--}"
done
echo "--- last serial lines ---"
tr -d '\r' <"$LOG" | tail -n 5
echo "--- vmsvc stderr (tail) ---"
tail -n 40 "$ERR"
echo

if [ -z "${WALL[banner]:-}" ] && [ -z "$RESTORE" ]; then
    log "FAIL: no 'Linux version' banner on the serial console"
    exit 1
fi
if [ -z "${WALL[$REQUIRE]:-}" ]; then
    log "FAIL: required milestone '$REQUIRE' (${LABEL[$REQUIRE]:-?}) not reached"
    exit 1
fi
log "PASS: banner and '$REQUIRE' (${LABEL[$REQUIRE]:-?}) reached"
exit 0
