#!/bin/bash
# Boot the disk image from scripts/build-guest-image.sh with `vmsvc run IMG` and use
# its serial console the way a user would: wait for the shell prompt, type commands,
# check the answers, type `poweroff` and require vmsvc to exit with status 0.
#
#   tests/linux/shell.sh [IMG]     # default $LINUX_SHELL_IMG or <repo>/build/guest.img
#                                  # (the GPT image, built if missing or stale)
#
# The console is vmsvc's default `--serial stdio`: stdin is a FIFO this script writes
# the keystrokes to (Enter is sent as CR, as a terminal does), stdout is the serial log.
# Checks, in order:
#   cat /proc/mounts    the root file system is ROOT (below) on / as ext4
#   ls /                the image's root directory (boot, etc, sbin, vmlinuz, ...)
#   uname -r            the kernel release vmsvc reported booting from the image
#   echo shell-ok-$RANDOM-marker   echoed with $RANDOM expanded by the guest's shell
#   poweroff            the guest powers off and vmsvc exits 0
#
# Environment (all optional):
#   VMSVC                   vmsvc binary (default <repo>/build/vmsvc)
#   LINUX_SHELL_IMG         the image when no IMG argument is given; built with
#                           scripts/build-guest-image.sh if missing or older than it
#   LINUX_GUEST_DIR         kernel/busybox cache for that build (scripts/build-linux-guest.sh)
#   LINUX_SHELL_ROOT        expected root device (default: /dev/vda1 if the image has a
#                           partition table (0x55AA at byte 510), else /dev/vda)
#   LINUX_SHELL_APPEND      --append for vmsvc run (default: scripts/linux-cmdline.sh on
#                           a host without VMX/SVM, none on a VMX/SVM host)
#   LINUX_SHELL_MEM         guest RAM (default 256M without VMX/SVM, else 512M)
#   LINUX_SHELL_TIMEOUT     seconds from start to the shell prompt (default 2400)
#   LINUX_SHELL_CMD_TIMEOUT seconds per command incl. poweroff (default 600)
#   LINUX_SHELL_LOG         serial log (default IMG without .img + .shell.serial.log);
#                           vmsvc's stderr goes next to it (.shell.stderr.log)
#   LINUX_SHELL_NAME        VM name for the control socket (default linux-shell-PID)
#
# Output: progress lines while waiting, the answers, and a timeline (wall seconds,
# vmsvc CPU seconds, guest printk seconds per milestone).
# Exit: 0 pass, 1 fail, 77 skipped (no vmsvc, no /dev/kvm, or no image and no
# mke2fs/debugfs/sfdisk to build one).
set -u

REPO=$(cd "$(dirname "$0")/../.." && pwd)
VMSVC=${VMSVC:-$REPO/build/vmsvc}
IMG=${1:-${LINUX_SHELL_IMG:-$REPO/build/guest.img}}
TIMEOUT=${LINUX_SHELL_TIMEOUT:-2400}
CMD_TIMEOUT=${LINUX_SHELL_CMD_TIMEOUT:-600}
NAME=${LINUX_SHELL_NAME:-linux-shell-$$}
LOG=${LINUX_SHELL_LOG:-${IMG%.img}.shell.serial.log}
ERR=${LOG%.serial.log}.stderr.log
[ "$ERR" != "$LOG" ] || ERR=$LOG.stderr

log() { echo "linux-shell: $*"; }
fail() { log "FAIL: $*"; FAILED=1; }
FAILED=0

if [ ! -x "$VMSVC" ]; then log "SKIP: no vmsvc at $VMSVC (set VMSVC=...)"; exit 77; fi
if [ ! -r /dev/kvm ]; then log "SKIP: no /dev/kvm"; exit 77; fi
if grep -qwE 'vmx|svm' /proc/cpuinfo; then HWVIRT=1; else HWVIRT=0; fi
# Without an IMG argument the image is (re)built when it is missing or older than the
# script that builds it, so the check runs on what build-guest-image.sh makes now.
if [ ! -f "$IMG" ] || { [ $# -eq 0 ] && [ "$REPO/scripts/build-guest-image.sh" -nt "$IMG" ]; }; then
    [ $# -eq 0 ] || { log "FAIL: no image $IMG"; exit 1; }
    TOOLS=1
    for t in mke2fs debugfs sfdisk; do
        PATH=$PATH:/sbin:/usr/sbin command -v "$t" >/dev/null 2>&1 || TOOLS=0
    done
    if [ $TOOLS = 1 ]; then
        log "building the GPT image $IMG (scripts/build-guest-image.sh, ~25 s)"
        "$REPO/scripts/build-guest-image.sh" "$IMG" || { log "FAIL: image build failed"; exit 1; }
    elif [ -f "$IMG" ]; then
        log "note: $IMG is older than scripts/build-guest-image.sh and mke2fs/debugfs/sfdisk are missing; using it"
    else
        log "SKIP: no $IMG and no mke2fs/debugfs/sfdisk to build it (apt-get install e2fsprogs fdisk)"
        exit 77
    fi
fi
if [ -n "${LINUX_SHELL_ROOT:-}" ]; then
    ROOT=$LINUX_SHELL_ROOT
elif [ "$(od -An -tx1 -j510 -N2 "$IMG" | tr -d ' \n')" = 55aa ]; then
    ROOT=/dev/vda1    # MBR or GPT (protective MBR): vmsvc passes root=/dev/vda1
else
    ROOT=/dev/vda
fi
if [ -n "${LINUX_SHELL_APPEND+set}" ]; then
    APPEND=$LINUX_SHELL_APPEND
elif [ $HWVIRT = 0 ]; then
    APPEND=$("$REPO/scripts/linux-cmdline.sh")
else
    APPEND=
fi
if [ $HWVIRT = 1 ]; then MEM=${LINUX_SHELL_MEM:-512M}; else MEM=${LINUX_SHELL_MEM:-256M}; fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/linux-shell.XXXXXX") || { log "FAIL: mktemp"; exit 1; }
FIFO=$WORK/console.in
mkfifo "$FIFO" || { log "FAIL: mkfifo $FIFO"; exit 1; }
PID=
cleanup() {
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
        kill -TERM "$PID" 2>/dev/null
        for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$PID" 2>/dev/null || break; sleep 1; done
        kill -KILL "$PID" 2>/dev/null
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP    # so that cleanup stops vmsvc when the script is stopped

mkdir -p "$(dirname "$LOG")"
: >"$LOG"
ARGS=(run "$IMG")
[ -z "$APPEND" ] || ARGS+=(--append "$APPEND")
ARGS+=(--cpu-features emulator-safe --mem "$MEM" --serial stdio --stats -v --name "$NAME")
log "vmsvc:   $VMSVC"
log "image:   $IMG (expected root $ROOT)"
# shell_words ARG...: ARGS as one line to paste into a shell ('...' where needed).
shell_words() {
    local a out=
    for a in "$@"; do
        case $a in *[!A-Za-z0-9_./:=,+-]*|'') a="'${a//\'/\'\\\'\'}'" ;; esac
        out="$out $a"
    done
    echo "${out# }"
}
log "command: vmsvc $(shell_words "${ARGS[@]}")"
log "serial:  $LOG   vmsvc stderr: $ERR"
log "timeouts: ${TIMEOUT}s to the prompt, ${CMD_TIMEOUT}s per command"

# The script keeps the FIFO open read-write, so vmsvc's open does not block and
# vmsvc never sees EOF on its console input while the script runs.
exec 3<>"$FIFO"
# A SIGKILLed script (ctest's timeout) cannot clean up: the kernel then sends vmsvc
# SIGTERM (parent-death signal; setpriv execs vmsvc, so $! is still vmsvc's pid).
pdeath=()
setpriv --pdeathsig TERM true 2>/dev/null && pdeath=(setpriv --pdeathsig TERM)
"${pdeath[@]}" "$VMSVC" "${ARGS[@]}" <"$FIFO" >"$LOG" 2>"$ERR" &
PID=$!
START=$(date +%s.%N)
elapsed() { awk -v s="$START" -v n="$(date +%s.%N)" 'BEGIN { printf "%.1f", n - s }'; }

CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
# cpu_seconds: vmsvc's CPU time so far; on a kvm_pvm host nearly all of it is KVM
# emulating guest kernel instructions, so unlike wall time it hardly depends on load.
cpu_seconds() {
    sed 's/^.*) //' "/proc/$PID/stat" 2>/dev/null |
        awk -v hz="$CLK_TCK" '{ printf "%.1f", ($12 + $13) / hz }' | grep . || echo -
}
guest_time() { sed -n 's/^.*\[ *\([0-9][0-9]*\.[0-9]*\)\].*$/\1/p' <<<"$1" | head -n 1 | grep . || echo -; }
# Without CRs and terminal control sequences (busybox's line editor asks the terminal
# for the cursor position with ESC [ 6 n after each prompt).
clean() { tr -d '\r' | sed 's/\x1b\[[0-9;?]*[A-Za-z]//g'; }
serial() { clean <"$LOG"; }
# serial_since OFFSET: the serial output after byte OFFSET.
serial_since() { tail -c +"$(($1 + 1))" "$LOG" | clean; }
log_size() { stat -c %s "$LOG"; }

# Boot milestones (key, label, regex on the serial log), recorded while waiting.
KEYS=(banner initramfs runinit initrd_init vda rootmnt rootinit shell prompt)
declare -A LABEL=(
    [banner]="Linux version banner" [initramfs]="unpacking the initrd" [runinit]="Run /init"
    [initrd_init]="initramfs /init started" [vda]="virtio_blk: [vda]" [rootmnt]="root mounted by initramfs"
    [rootinit]="rootfs init (rcS) started" [shell]="shell marker" [prompt]="shell prompt")
declare -A RE=(
    [banner]='Linux version [0-9]' [initramfs]='Trying to unpack rootfs image' [runinit]='Run /init as init process'
    [initrd_init]='VMSVC-GUEST: initramfs started' [vda]='virtio_blk virtio[0-9]+: \[vda\]'
    [rootmnt]='VMSVC-GUEST: root /dev/vda[0-9]* mounted' [rootinit]='VMSVC-GUEST: rootfs init started'
    [shell]='VMSVC-GUEST: shell' [prompt]='')
declare -A WALL=() CPU=() GUESTT=()
mark() { # mark KEY LINE
    WALL[$1]=$(elapsed); CPU[$1]=$(cpu_seconds); GUESTT[$1]=$(guest_time "$2")
    log "$(printf '%7ss (cpu %6ss)  %-28s %s' "${WALL[$1]}" "${CPU[$1]}" "${LABEL[$1]}" "${2:0:100}")"
}
scan() {
    local k line
    for k in "${KEYS[@]}"; do
        [ -n "${WALL[$k]:-}" ] || [ -z "${RE[$k]}" ] || {
            line=$(serial | grep -aE -m1 -- "${RE[$k]}") && mark "$k" "$line"
        }
    done
}
# prompt_seen: true when the last line after the shell marker is a shell prompt
# ("vmsvc-guest# " from the image's /etc/profile, or any line ending in "# " or "$ ").
prompt_seen() {
    serial | awk '/VMSVC-GUEST: shell/ { s = 1; last = ""; next } s { last = $0 }
                  END { exit !(s && last ~ /[#$] $/) }'
}

diagnose() {
    log "diagnosis (vmsvc regs/stats $NAME):"
    "$VMSVC" regs "$NAME" 2>&1 | head -n 12 | sed 's/^/    /'
    "$VMSVC" stats "$NAME" 2>&1 | head -n 25 | sed 's/^/    /'
}

# Wait for the prompt, with a progress line a minute.
STATUS=
NEXT_PROGRESS=60
while :; do
    sleep 1
    scan
    if [ -n "${WALL[shell]:-}" ] && prompt_seen; then
        mark prompt "$(serial | tail -n 1)"
        break
    fi
    if ! kill -0 "$PID" 2>/dev/null; then STATUS="vmsvc exited before the prompt"; break; fi
    E=$(elapsed)
    if awk -v e="$E" -v t="$TIMEOUT" 'BEGIN { exit !(e >= t) }'; then STATUS="no prompt after ${TIMEOUT}s"; break; fi
    if awk -v e="$E" -v n="$NEXT_PROGRESS" 'BEGIN { exit !(e >= n) }'; then
        NEXT_PROGRESS=$((NEXT_PROGRESS + 60))
        log "$(printf '%7ss (cpu %6ss)  waiting; last serial line: %s' "$E" "$(cpu_seconds)" \
            "$(serial | grep -a . | tail -n 1 | cut -c1-90)")"
    fi
done

# run_cmd N CMD: type CMD plus an end marker and wait for the marker. The marker is
# typed as @@"END"-N@@ so the line's echo does not match the shell's output @@END-N@@.
# Sets ANSWER (the output between the echoed command line and the marker) and CMD_S.
run_cmd() {
    local n=$1 cmd=$2 off t0 out
    off=$(log_size)
    t0=$(date +%s.%N)
    printf '%s; echo @@"END"-%s@@\r' "$cmd" "$n" >&3
    ANSWER=
    while :; do
        out=$(serial_since "$off")
        if grep -qax -- "@@END-$n@@" <<<"$out"; then
            ANSWER=$(awk -v m="@@END-$n@@" -v e="@@\"END\"-$n@@" \
                '$0 == m { exit } started { print } index($0, e) { started = 1 }' <<<"$out")
            CMD_S=$(awk -v s="$t0" -v n="$(date +%s.%N)" 'BEGIN { printf "%.1f", n - s }')
            log "\$ $cmd    (answered in ${CMD_S}s)"
            sed 's/^/    | /' <<<"$ANSWER"
            return 0
        fi
        if ! kill -0 "$PID" 2>/dev/null; then fail "'$cmd': vmsvc exited"; return 1; fi
        if awk -v s="$t0" -v n="$(date +%s.%N)" -v t="$CMD_TIMEOUT" 'BEGIN { exit !(n - s >= t) }'; then
            fail "'$cmd': no answer after ${CMD_TIMEOUT}s; output so far:"
            sed 's/^/    | /' <<<"$out" | tail -n 20
            diagnose
            return 1
        fi
        sleep 1
    done
}

declare -A CMD_TIME=()
KVER=
RC=
POWEROFF_S=-
if [ -z "$STATUS" ]; then
    # The kernel release vmsvc found in the image: "booting /boot/vmlinuz-VERSION with ...".
    KVER=$(sed -n 's|^.*booting /boot/vmlinuz-\([^ ]*\) .*$|\1|p' "$ERR" | head -n 1)
    VMSVC_ROOT=$(sed -n 's|^.*booting .* root=\([^ ]*\).*$|\1|p' "$ERR" | head -n 1)
    [ -z "$VMSVC_ROOT" ] || [ "$VMSVC_ROOT" = "$ROOT" ] ||
        fail "vmsvc passed root=$VMSVC_ROOT, expected $ROOT"

    if run_cmd 1 'cat /proc/mounts'; then
        CMD_TIME[mounts]=$CMD_S
        grep -qaE "^$ROOT / ext4 rw[, ]" <<<"$ANSWER" ||
            fail "/proc/mounts does not show $ROOT on / as ext4 (rw)"
        # switch_root leaves the initramfs' rootfs mounted underneath; only one
        # file system may be on / as the top.
        [ "$(awk '$2 == "/" && $1 != "rootfs"' <<<"$ANSWER" | wc -l)" = 1 ] ||
            fail "more than one non-rootfs mount on /"
    fi
    if run_cmd 2 'ls /'; then
        CMD_TIME[ls]=$CMD_S
        for d in boot etc sbin bin proc sys dev vmlinuz initrd.img; do
            grep -qaw -- "$d" <<<"$ANSWER" || fail "ls / does not list $d"
        done
    fi
    if run_cmd 3 'uname -r'; then
        CMD_TIME[uname]=$CMD_S
        if [ -n "$KVER" ]; then
            grep -qax -- "$KVER" <<<"$ANSWER" || fail "uname -r is not $KVER (from vmsvc's boot line)"
        else
            grep -qaE '^[0-9]+\.[0-9]+' <<<"$ANSWER" || fail "uname -r printed no release"
        fi
    fi
    if run_cmd 4 'echo shell-ok-$RANDOM-marker'; then
        CMD_TIME[echo]=$CMD_S
        grep -qaxE 'shell-ok-[0-9]+-marker' <<<"$ANSWER" || fail "echo did not come back with \$RANDOM expanded"
    fi
    # poweroff: no end marker (the shell does not come back); vmsvc has to exit 0.
    log "\$ poweroff"
    T0=$(date +%s.%N)
    printf 'poweroff\r' >&3
    while kill -0 "$PID" 2>/dev/null; do
        if awk -v s="$T0" -v n="$(date +%s.%N)" -v t="$CMD_TIMEOUT" 'BEGIN { exit !(n - s >= t) }'; then
            fail "vmsvc still running ${CMD_TIMEOUT}s after poweroff"
            diagnose
            break
        fi
        sleep 1
    done
    POWEROFF_S=$(awk -v s="$T0" -v n="$(date +%s.%N)" 'BEGIN { printf "%.1f", n - s }')
    if ! kill -0 "$PID" 2>/dev/null; then
        wait "$PID"; RC=$?
        PID=
        [ "$RC" = 0 ] || fail "vmsvc exit status $RC after poweroff (expected 0)"
        grep -qa 'powered off' "$ERR" || fail "vmsvc did not report a guest power-off"
    fi
else
    fail "$STATUS"
    kill -0 "$PID" 2>/dev/null && diagnose
fi
CPU_END=$(cpu_seconds)
if [ -n "$PID" ]; then
    cleanup; trap - EXIT
    wait "$PID" 2>/dev/null; RC=$?
fi

echo
echo "=== vmsvc run $(basename "$IMG"): interactive shell check, $(elapsed) s wall, vmsvc exit status ${RC:--} ==="
printf '%-30s %10s %10s %10s\n' "milestone" "wall s" "cpu s" "guest s"
for k in "${KEYS[@]}"; do
    printf '%-30s %10s %10s %10s\n' "${LABEL[$k]}" "${WALL[$k]:--}" "${CPU[$k]:--}" "${GUESTT[$k]:--}"
done
printf '%-30s %10s\n' "cat /proc/mounts answered" "${CMD_TIME[mounts]:--}" "ls / answered" "${CMD_TIME[ls]:--}" \
    "uname -r answered" "${CMD_TIME[uname]:--}" "echo answered" "${CMD_TIME[echo]:--}" \
    "poweroff -> vmsvc exit" "$POWEROFF_S"
echo "(wall s: since vmsvc started; answers: seconds from typing to the end marker)"
echo "--- last serial lines ---"
serial | tail -n 8
echo "--- vmsvc stderr (tail) ---"
tail -n 30 "$ERR"
echo
if [ "$FAILED" = 0 ]; then
    log "PASS: shell on $ROOT (ext4), commands answered, poweroff -> vmsvc exit 0"
    exit 0
fi
log "FAIL (serial log $LOG)"
exit 1
