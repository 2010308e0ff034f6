#!/bin/bash
# Fixtures for the introspection (VMI) tests, cached in build/vmi/:
#
#   scripts/vmi-fixtures.sh [--force]
#
#   build/vmi/guest.elf      QEMU `dump-guest-memory` ELF core of the Debian cloud
#                            kernel (build/linux, from scripts/build-linux-guest.sh)
#                            booted under TCG with a busybox initramfs plus our own
#                            overlay that starts known processes (4-level paging)
#   build/vmi/guest-ps.txt   the guest's own process list, taken just before the
#                            dump ("pid ppid uid state comm" per line)
#   build/vmi/guest-serial.log  the guest's serial console (VMI-MOD/VMI-NET lines)
#   build/vmi/guest-la57*    the same with 5-level paging (-cpu qemu64,+la57)
#
# The overlay (a second cpio archive appended to the initramfs; later entries
# replace earlier ones) has its own /init: it starts the worker scripts, waits,
# prints /proc using only shell builtins (so listing forks no process), prints
# VMI-READY and then blocks in the `wait` builtin. Nothing forks after the
# listing, so the guest's process set at dump time equals the printed list.
# Needs: qemu-system-x86_64 (TCG, no KVM), gzip, mkfifo; no root.
set -eu
die() { echo "vmi-fixtures: error: $*" >&2; exit 1; }
say() { echo "vmi-fixtures: $*" >&2; }

REPO=$(cd "$(dirname "$0")/.." && pwd)
LINUX=$REPO/build/linux
OUT=$REPO/build/vmi
FORCE=0; [ "${1:-}" = --force ] && FORCE=1
T0=$(date +%s)

if [ ! -f "$LINUX/vmlinuz" ] || [ ! -f "$LINUX/initramfs.cpio.gz" ]; then
    say "building the Linux guest first (scripts/build-linux-guest.sh)"
    "$REPO/scripts/build-linux-guest.sh" "$LINUX" >&2
fi
BB=$LINUX/extract/bin/busybox
[ -x "$BB" ] || die "no busybox in $LINUX/extract (rerun scripts/build-linux-guest.sh)"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found (apt-get install qemu-system-x86)"
mkdir -p "$OUT"

if [ $FORCE = 0 ] && [ -s "$OUT/guest-la57.elf" ] && [ -s "$OUT/guest-la57-ps.txt" ] &&
   [ "$OUT/guest.elf" -nt "$LINUX/vmlinuz" ] && [ "$OUT/guest.elf" -nt "$0" ]; then
    say "cached: $OUT/guest.elf $OUT/guest-la57.elf"
    exit 0
fi
rm -f "$OUT"/guest*.elf "$OUT"/guest*-ps.txt "$OUT"/*serial.log

# --- overlay initramfs --------------------------------------------------------
OV=$OUT/overlay
rm -rf "$OV"; mkdir -p "$OV/bin" "$OV/etc"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' >"$OV/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$OV/etc/group"
for w in vmi_worker_a vmi_worker_b vmi_worker_c; do
    # A script keeps its own name as the task's comm (the kernel names the task
    # after the file it executed), so the workers are easy to recognise.
    printf '#!/bin/sh\nwhile :; do sleep 1000; done\n' >"$OV/bin/$w"
    chmod 755 "$OV/bin/$w"
done
cat >"$OV/init" <<'INIT'
#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
KVER=$(cat /etc/kernel-release)
while read -r m; do
    [ -n "$m" ] && insmod "/lib/modules/$KVER/$m" 2>/dev/null
done </etc/modules.order
[ -f /lib/vmi/qemu_fw_cfg.ko ] && insmod /lib/vmi/qemu_fw_cfg.ko
ip link set lo up
ip link set eth0 up 2>/dev/null
ip link set eth0 promisc on 2>/dev/null
vmi_worker_a &
vmi_worker_b &
su -s /bin/sh nobody -c /bin/vmi_worker_c &
sleep 3
# Builtins only from here on: no process may appear or vanish.
echo "VMI-PS-BEGIN"
for d in /proc/[0-9]*; do
    p=${d#/proc/}
    read -r line <"$d/stat" || continue
    comm=${line#*(}; comm=${comm%)*}
    rest=${line##*) }
    set -- $rest
    uid=?
    while read -r k v rest2; do
        if [ "$k" = "Uid:" ]; then uid=$v; break; fi
    done <"$d/status"
    echo "VMI-PS $p $2 $uid $1 $comm"
done
echo "VMI-PS-END"
while read -r line; do echo "VMI-MOD $line"; done </proc/modules
for d in /sys/class/net/*; do read -r f <"$d/flags"; echo "VMI-NET ${d##*/} $f"; done
echo "VMI-READY"
wait
INIT
chmod 755 "$OV/init"
# qemu_fw_cfg hands the guest's VMCOREINFO to QEMU (-device vmcoreinfo), so the
# dump carries that note and the tests can cross-check it.
FWCFG=$(find "$LINUX/extract/lib/modules" -name qemu_fw_cfg.ko | head -n 1)
[ -z "$FWCFG" ] || { mkdir -p "$OV/lib/vmi"; cp "$FWCFG" "$OV/lib/vmi/"; }
(cd "$OV" && find . -mindepth 1 | sed 's|^\./||' | LC_ALL=C sort |
    "$BB" cpio -o -H newc -R 0:0 2>/dev/null) | gzip -n >"$OUT/overlay.cpio.gz"
cat "$LINUX/initramfs.cpio.gz" "$OUT/overlay.cpio.gz" >"$OUT/initramfs.cpio.gz"

# --- boot under TCG, wait for the listing, dump ----------------------------------
# boot_and_dump TAG CPU: writes $OUT/TAG.elf, $OUT/TAG-ps.txt, $OUT/TAG-serial.log
QPID=
cleanup() { [ -z "$QPID" ] || kill "$QPID" 2>/dev/null || true; rm -f "$OUT/mon.in" "$OUT/mon.out"; }
trap cleanup EXIT
boot_and_dump() {
    tag=$1; cpu=$2; t=$(date +%s)
    MON=$OUT/mon; LOG=$OUT/$tag-serial.log
    rm -f "$MON.in" "$MON.out" "$LOG" "$OUT/$tag.elf.tmp"
    mkfifo "$MON.in" "$MON.out"
    qemu-system-x86_64 -accel tcg -cpu "$cpu" -m 512M -smp 1 -display none -no-reboot \
        -kernel "$LINUX/vmlinuz" -initrd "$OUT/initramfs.cpio.gz" \
        -append "console=ttyS0 panic=-1 quiet" \
        -netdev user,id=n0 -device virtio-net-pci,netdev=n0 -device vmcoreinfo \
        -serial "file:$LOG" -monitor "pipe:$MON" &
    QPID=$!
    exec 3>"$MON.in" 4<"$MON.out"   # open both ends so QEMU's monitor never blocks
    ( cat <&4 >"$OUT/$tag-monitor.log" ) &
    for _ in $(seq 1 1200); do
        grep -q VMI-READY "$LOG" 2>/dev/null && break
        kill -0 "$QPID" 2>/dev/null || die "QEMU exited early (see $LOG)"
        sleep 0.1
    done
    grep -q VMI-READY "$LOG" || die "guest never printed VMI-READY (see $LOG)"
    echo "dump-guest-memory $OUT/$tag.elf.tmp" >&3
    echo "info registers" >&3
    echo "quit" >&3
    wait "$QPID" || true
    QPID=
    exec 3>&- 4<&-
    [ -s "$OUT/$tag.elf.tmp" ] || die "no dump written (see $OUT/$tag-monitor.log)"
    mv "$OUT/$tag.elf.tmp" "$OUT/$tag.elf"
    sed -n 's/\r$//; s/^VMI-PS //p' "$LOG" >"$OUT/$tag-ps.txt"
    say "$tag: $OUT/$tag.elf ($(wc -c <"$OUT/$tag.elf") bytes), $(wc -l <"$OUT/$tag-ps.txt") guest processes, $(( $(date +%s) - t )) s"
}
boot_and_dump guest qemu64          # 4-level paging
boot_and_dump guest-la57 qemu64,+la57   # 5-level paging (TCG emulates LA57)
say "done in $(( $(date +%s) - T0 )) s"
