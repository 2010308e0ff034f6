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
#   build/vmi/guest-infected*  the same (4-level) after loading the test rootkit
#                            tests/vmi/rootkit (built here against Debian's
#                            linux-headers package for that kernel): it hides
#                            the process vmi_hidden and itself, hooks
#                            sys_call_table[kill], inline-hooks __x64_sys_acct,
#                            sets eth0 promiscuous and
#                            opens a kernel packet socket; `arping` holds a
#                            user packet socket. Skipped, with the reason, if
#                            the module cannot be built.
#   build/vmi/guest-infected-pre.elf  the same boot dumped just before insmod
#                            (clean; same KASLR slide: the text baseline)
#   build/vmi/rootkit.log    why the rootkit build failed, if it did
#   build/linux-bpo/vmlinuz  Debian's bookworm-backports cloud kernel (6.12), for
#                            the offline test of the >= 6.4 kallsyms order
#                            (scripts/vmi-fixture-newkernel.sh; optional)
#
# The clean guests must give zero `vmsvc inspect check` findings, so nothing
# in them is promiscuous or holds a packet socket.
#
# The overlay (a second cpio archive appended to the initramfs; later entries
# replace earlier ones) has its own /init: it starts the worker scripts, waits,
# prints /proc using only shell builtins (so listing forks no process), prints
# VMI-READY and then blocks in the `wait` builtin. Nothing forks after the
# listing, so the guest's process set at dump time equals the printed list.
# Needs: qemu-system-x86_64 (TCG, no KVM), gzip, mkfifo; no root. For the
# rootkit: apt-get download (apt lists present), dpkg-deb, make, gcc-12.
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

# --- offline fixture for the >= 6.4 kallsyms order: a newer Debian kernel ----
# (only its bzImage is needed, nothing boots it; optional: the test skips it)
"$REPO/scripts/vmi-fixture-newkernel.sh" "$REPO/build/linux-bpo" ||
    say "no >= 6.4 kernel fixture (tests/unit/test_vmi_fixtures.c will skip it)"

RKSRC=$REPO/tests/vmi/rootkit
if [ $FORCE = 0 ] && [ -s "$OUT/guest-la57.elf" ] && [ -s "$OUT/guest-la57-ps.txt" ] &&
   [ "$OUT/guest.elf" -nt "$LINUX/vmlinuz" ] && [ "$OUT/guest.elf" -nt "$0" ] &&
   { [ -s "$OUT/guest-infected.elf" ] || [ -s "$OUT/rootkit.log" ]; } &&
   [ "$OUT/guest.elf" -nt "$RKSRC/rk.c" ]; then
    say "cached: $OUT/guest.elf $OUT/guest-la57.elf $OUT/guest-infected.elf"
    exit 0
fi
rm -f "$OUT"/guest*.elf "$OUT"/guest*-ps.txt "$OUT"/*serial.log "$OUT/rootkit.log"

# --- the test rootkit, against the kernel's own headers -----------------------
# Debian's headers come in two packages (the flavour's objtree with .config and
# generated headers, and the common srctree) plus linux-kbuild for the build
# tools. The flavour's Makefile includes the common one by absolute path
# (/usr/src/...): point it at our extracted copy instead.
build_rootkit() {
    KVER=$(cat "$LINUX/version")
    H=$OUT/headers
    HDIR=$H/usr/src/linux-headers-$KVER
    if [ ! -f "$HDIR/.config" ]; then
        rm -rf "$H" "$OUT/debs-headers"; mkdir -p "$H" "$OUT/debs-headers"
        common=${KVER%-cloud-amd64}-common
        (cd "$OUT/debs-headers" && apt-get download "linux-headers-$KVER" "linux-headers-$common" \
             "linux-kbuild-${KVER%%.*}.$(echo "$KVER" | cut -d. -f2)") || return 1
        for d in "$OUT"/debs-headers/*.deb; do dpkg-deb -x "$d" "$H" || return 1; done
        sed -i "s|^include /usr/src/|include $H/usr/src/|" "$HDIR/Makefile" || return 1
    fi
    cc=$(sed -n 's/^CONFIG_CC_VERSION_TEXT="\([^ ]*\).*/\1/p' "$HDIR/.config")
    command -v "$cc" >/dev/null || { echo "compiler $cc (the kernel's) not installed"; return 1; }
    rm -rf "$OUT/rootkit"; mkdir -p "$OUT/rootkit"
    cp "$RKSRC/rk.c" "$RKSRC/Kbuild" "$OUT/rootkit/"
    make -C "$HDIR" M="$OUT/rootkit" modules || return 1
    [ -s "$OUT/rootkit/vmi_rk.ko" ]
}
RK=0
if build_rootkit >"$OUT/rootkit.build.log" 2>&1; then
    RK=1; say "rootkit: $OUT/rootkit/vmi_rk.ko"
else
    cp "$OUT/rootkit.build.log" "$OUT/rootkit.log"
    say "rootkit build failed, skipping the infected guest (see $OUT/rootkit.log):"
    tail -n 5 "$OUT/rootkit.log" >&2
fi

# --- overlay initramfs --------------------------------------------------------
OV=$OUT/overlay
rm -rf "$OV"; mkdir -p "$OV/bin" "$OV/etc"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' >"$OV/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$OV/etc/group"
for w in vmi_worker_a vmi_worker_b vmi_worker_c vmi_hidden; do
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
vmi_worker_a &
vmi_worker_b &
su -s /bin/sh nobody -c /bin/vmi_worker_c &
case " $(cat /proc/cmdline) " in
*" vmi_rk=1 "*)
    # The infected guest: a process to hide, a user packet socket, the rootkit.
    vmi_hidden &
    ip addr add 10.0.2.15/24 dev eth0
    arping -I eth0 10.0.2.2 >/dev/null 2>&1 &
    sleep 1
    # The host dumps the still clean guest now (the same boot, so the same
    # KASLR slide: the kernel text baseline comes from this dump).
    echo "VMI-PRE-READY"
    sleep 8
    sct=$(grep ' sys_call_table$' /proc/kallsyms | cut -d' ' -f1)
    acct=$(grep ' __x64_sys_acct$' /proc/kallsyms | cut -d' ' -f1)
    insmod /lib/vmi/vmi_rk.ko sct=0x$sct acct=0x$acct
    dmesg | grep vmi_rk | sed 's/^/VMI-RK /'
    ;;
esac
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
[ $RK = 0 ] || { mkdir -p "$OV/lib/vmi"; cp "$OUT/rootkit/vmi_rk.ko" "$OV/lib/vmi/"; }
(cd "$OV" && find . -mindepth 1 | sed 's|^\./||' | LC_ALL=C sort |
    "$BB" cpio -o -H newc -R 0:0 2>/dev/null) | gzip -n >"$OUT/overlay.cpio.gz"
cat "$LINUX/initramfs.cpio.gz" "$OUT/overlay.cpio.gz" >"$OUT/initramfs.cpio.gz"

# --- boot under TCG, wait for the listing, dump ----------------------------------
# boot_and_dump TAG CPU: writes $OUT/TAG.elf, $OUT/TAG-ps.txt, $OUT/TAG-serial.log
QPID=
cleanup() { [ -z "$QPID" ] || kill "$QPID" 2>/dev/null || true; rm -f "$OUT/mon.in" "$OUT/mon.out"; }
trap cleanup EXIT
boot_and_dump() {
    tag=$1; cpu=$2; extra=${3:-}; t=$(date +%s)
    MON=$OUT/mon; LOG=$OUT/$tag-serial.log
    rm -f "$MON.in" "$MON.out" "$LOG" "$OUT/$tag.elf.tmp"
    mkfifo "$MON.in" "$MON.out"
    qemu-system-x86_64 -accel tcg -cpu "$cpu" -m 512M -smp 1 -display none -no-reboot \
        -kernel "$LINUX/vmlinuz" -initrd "$OUT/initramfs.cpio.gz" \
        -append "console=ttyS0 panic=-1 quiet $extra" \
        -netdev user,id=n0 -device virtio-net-pci,netdev=n0 -device vmcoreinfo \
        -serial "file:$LOG" -monitor "pipe:$MON" &
    QPID=$!
    exec 3>"$MON.in" 4<"$MON.out"   # open both ends so QEMU's monitor never blocks
    ( cat <&4 >"$OUT/$tag-monitor.log" ) &
    if [ -n "$extra" ]; then
        # The infected guest is dumped twice: clean first (VMI-PRE-READY).
        for _ in $(seq 1 1200); do
            grep -q VMI-PRE-READY "$LOG" 2>/dev/null && break
            kill -0 "$QPID" 2>/dev/null || die "QEMU exited early (see $LOG)"
            sleep 0.1
        done
        grep -q VMI-PRE-READY "$LOG" || die "guest never printed VMI-PRE-READY (see $LOG)"
        echo "dump-guest-memory $OUT/$tag-pre.elf.tmp" >&3
        for _ in $(seq 1 600); do   # the monitor runs one command at a time
            [ -s "$OUT/$tag-pre.elf.tmp" ] && ! grep -q VMI-RK "$LOG" && sleep 1 && break
            sleep 0.1
        done
    fi
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
    if [ -n "$extra" ]; then
        [ -s "$OUT/$tag-pre.elf.tmp" ] || die "no pre-infection dump written"
        mv "$OUT/$tag-pre.elf.tmp" "$OUT/$tag-pre.elf"
    fi
    sed -n 's/\r$//; s/^VMI-PS //p' "$LOG" >"$OUT/$tag-ps.txt"
    say "$tag: $OUT/$tag.elf ($(wc -c <"$OUT/$tag.elf") bytes), $(wc -l <"$OUT/$tag-ps.txt") guest processes, $(( $(date +%s) - t )) s"
}
boot_and_dump guest qemu64          # 4-level paging
boot_and_dump guest-la57 qemu64,+la57   # 5-level paging (TCG emulates LA57)
[ $RK = 0 ] || boot_and_dump guest-infected qemu64 vmi_rk=1
say "done in $(( $(date +%s) - T0 )) s"
