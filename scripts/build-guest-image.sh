#!/bin/bash
# Build a bootable disk image for `vmsvc run guest.img` (no firmware, no
# bootloader: vmsvc finds /vmlinuz and /initrd.img inside the image).
#
#   scripts/build-guest-image.sh [--gpt|--mbr|--bare] [--size MiB] [OUT.img]
#
#   --gpt   (default) GPT disk, one "Linux root (x86-64)" partition at 1 MiB -> root=/dev/vda1
#   --mbr   MBR disk, one bootable type-0x83 partition at 1 MiB            -> root=/dev/vda1
#   --bare  the ext4 file system alone, no partition table                 -> root=/dev/vda
#   --size  file system size in MiB (default 64)
#   --extract  also write OUT.img.vmlinuz and OUT.img.initrd (to boot the same
#           image under QEMU with -kernel/-initrd, which cannot look inside it)
#   OUT.img defaults to <repo>/build/guest.img (guest-mbr.img, guest-bare.img)
#
# The kernel, busybox and virtio modules come from scripts/build-linux-guest.sh
# (Debian packages, cached in $LINUX_GUEST_DIR, default <repo>/build/linux);
# this script only lays them out as a root file system:
#   /boot/vmlinuz-V, /boot/initrd.img-V, /boot/config-V, /vmlinuz and
#   /initrd.img symlinks, busybox, /sbin/init (busybox init: /etc/inittab,
#   /etc/init.d/rcS, /etc/init.d/console-shell), /lib/modules/V, /etc/fstab.
# The Debian cloud kernel has virtio_blk as a module, so the initrd is needed:
# it is build-linux-guest.sh's initramfs plus a second cpio archive whose /init
# loads the modules, mounts root= and switch_roots (the kernel unpacks
# concatenated archives in order, later files replacing earlier ones).
#
# Needs no root: mke2fs -d populates the file system from a directory, sfdisk
# partitions an image file, debugfs makes the files root-owned.
# Host tools: mke2fs, debugfs (e2fsprogs), sfdisk (fdisk), gzip, dd.
set -eu

die() { echo "build-guest-image: error: $*" >&2; exit 1; }
say() { echo "build-guest-image: $*" >&2; }

REPO=$(cd "$(dirname "$0")/.." && pwd)
LAYOUT=gpt
SIZE_MB=64
OUT=""
EXTRACT=0
while [ $# -gt 0 ]; do
    case $1 in
    --gpt) LAYOUT=gpt ;;
    --mbr) LAYOUT=mbr ;;
    --bare) LAYOUT=bare ;;
    --size) [ $# -ge 2 ] || die "--size needs a value in MiB"; SIZE_MB=$2; shift ;;
    --size=*) SIZE_MB=${1#--size=} ;;
    --extract) EXTRACT=1 ;;
    -h|--help) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1 (try --help)" ;;
    *) [ -z "$OUT" ] || die "only one output image"; OUT=$1 ;;
    esac
    shift
done
case $SIZE_MB in ''|*[!0-9]*) die "--size wants a number of MiB, not '$SIZE_MB'" ;; esac
[ "$SIZE_MB" -ge 24 ] || die "--size $SIZE_MB is too small (the kernel and initrd alone need ~20 MiB)"
if [ -z "$OUT" ]; then
    case $LAYOUT in gpt) OUT=$REPO/build/guest.img ;; mbr) OUT=$REPO/build/guest-mbr.img ;;
                    bare) OUT=$REPO/build/guest-bare.img ;; esac
fi
export PATH=$PATH:/sbin:/usr/sbin
for t in mke2fs debugfs gzip dd; do
    command -v "$t" >/dev/null 2>&1 || die "'$t' not found (apt-get install e2fsprogs)"
done
[ $LAYOUT = bare ] || command -v sfdisk >/dev/null 2>&1 || die "'sfdisk' not found (apt-get install fdisk), or use --bare"

# --- 1. kernel, busybox, modules: built (and cached) by build-linux-guest.sh --
LG=${LINUX_GUEST_DIR:-$REPO/build/linux}
"$REPO/scripts/build-linux-guest.sh" "$LG" >/dev/null || die "scripts/build-linux-guest.sh failed"
LG=$(cd "$LG" && pwd)
KVER=$(cat "$LG/version")
BB=$LG/extract/bin/busybox
for f in "$LG/vmlinuz" "$LG/initramfs.cpio.gz" "$LG/initramfs-root/bin/busybox" "$BB"; do
    [ -e "$f" ] || die "build-linux-guest.sh did not produce $f"
done

mkdir -p "$(dirname "$OUT")"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/vmsvc-guest-image.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

if [ $LAYOUT = bare ]; then ROOTDEV=/dev/vda; else ROOTDEV=/dev/vda1; fi

# --- 2. initrd: the busybox initramfs + an /init that mounts root= -----------
mkdir -p "$WORK/initrd-extra"
cat >"$WORK/initrd-extra/init" <<'EOF'
#!/bin/sh
# vmsvc disk-image initramfs: load the virtio modules, mount root=, switch_root.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || true
KVER=$(cat /etc/kernel-release)
echo "VMSVC-GUEST: initramfs started ($KVER)"
while read -r m; do
    [ -n "$m" ] && insmod "/lib/modules/$KVER/$m" 2>/dev/null
done </etc/modules.order
root=/dev/vda; fstype=ext4; mode=ro; init=/sbin/init
for arg in $(cat /proc/cmdline); do
    case $arg in
    root=*) root=${arg#root=} ;;
    rootfstype=*) fstype=${arg#rootfstype=} ;;
    init=*) init=${arg#init=} ;;
    rw) mode=rw ;;
    ro) mode=ro ;;
    esac
done
rescue() { echo "VMSVC-GUEST: initramfs: $*; rescue shell"; setsid cttyhack sh || sh; poweroff -f; }
# Wait for the disk (virtio_blk probes asynchronously); UUID=/LABEL= via findfs.
dev=""
i=0
while [ $i -lt 100 ]; do
    case $root in
    UUID=*|LABEL=*) dev=$(findfs "$root" 2>/dev/null) || dev="" ;;
    *) dev=$root ;;
    esac
    [ -n "$dev" ] && [ -b "$dev" ] && break
    sleep 0.1; i=$((i + 1))
done
[ -n "$dev" ] && [ -b "$dev" ] || rescue "root device $root did not appear"
mkdir -p /newroot
mount -t "$fstype" -o "$mode" "$dev" /newroot || rescue "cannot mount $dev ($fstype, $mode)"
echo "VMSVC-GUEST: root $dev mounted ($fstype, $mode)"
mount --move /dev /newroot/dev 2>/dev/null || true
umount /sys /proc
exec switch_root /newroot "$init"
rescue "switch_root failed"
EOF
chmod 755 "$WORK/initrd-extra/init"
(cd "$WORK/initrd-extra" && echo init | "$BB" cpio -o -H newc -R 0:0 2>/dev/null) | gzip -9 -n >"$WORK/extra.cpio.gz"
cat "$LG/initramfs.cpio.gz" "$WORK/extra.cpio.gz" >"$WORK/initrd.img"

# --- 3. root file system tree ---------------------------------------------------
ROOT=$WORK/root
cp -a "$LG/initramfs-root" "$ROOT"
rm -f "$ROOT/init" "$ROOT/linuxrc"
mkdir -p "$ROOT/boot" "$ROOT/run" "$ROOT/mnt" "$ROOT/var/tmp" "$ROOT/etc/init.d"
cp "$LG/vmlinuz" "$ROOT/boot/vmlinuz-$KVER"
cp "$WORK/initrd.img" "$ROOT/boot/initrd.img-$KVER"
[ ! -f "$LG/config" ] || cp "$LG/config" "$ROOT/boot/config-$KVER"
ln -s "boot/vmlinuz-$KVER" "$ROOT/vmlinuz"
ln -s "boot/initrd.img-$KVER" "$ROOT/initrd.img"
# PID 1 is busybox init (/sbin/init -> busybox), not a shell script: `poweroff`,
# `reboot` and `halt` without -f only signal PID 1, and a shell script as PID 1
# leaves those signals unhandled (the kernel drops them), so the guest would not
# power off when the user types `poweroff`.
ln -sf /bin/busybox "$ROOT/sbin/init"
cat >"$ROOT/etc/inittab" <<'EOF'
# vmsvc guest image: rcS, then one shell on the console; leaving it powers off.
::sysinit:/etc/init.d/rcS
::once:/etc/init.d/console-shell
::ctrlaltdel:/sbin/reboot
::shutdown:/bin/umount -a -r
::shutdown:/bin/sync
EOF
cat >"$ROOT/etc/init.d/rcS" <<'EOF'
#!/bin/sh
# vmsvc guest image system start (root file system on /dev/vda*).  Markers for tests:
#   VMSVC-GUEST: rootfs init started / autotest ok / shell
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
# (Debian's busybox has no mountpoint applet; the initramfs normally moved /dev here.)
grep -q '^[^ ]* /dev ' /proc/mounts || mount -t devtmpfs devtmpfs /dev
mount -o remount,rw / 2>/dev/null
mount -t tmpfs tmpfs /run
hostname -F /etc/hostname 2>/dev/null
echo "VMSVC-GUEST: rootfs init started (root $(awk '$2 == "/" { d = $1 } END { print d }' /proc/mounts), $(cat /etc/kernel-release))"
case " $(cat /proc/cmdline) " in
*" vmsvc.autotest=1 "*)
    echo "VMSVC-GUEST: rootfs $(cat /etc/image-id)"
    echo "VMSVC-GUEST: autotest ok"
    sync; poweroff -f ;;
esac
EOF
cat >"$ROOT/etc/init.d/console-shell" <<'EOF'
#!/bin/sh
# The console shell, run once by init. setsid: only a session leader can take a
# controlling tty, and this script's children are not one; cttyhack then gives the
# shell the console's tty (ttyS0) as controlling tty, so job control and ^C work.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
echo "VMSVC-GUEST: shell (exit or poweroff to power off)"
setsid cttyhack sh -l
sync
poweroff
EOF
chmod 755 "$ROOT/etc/init.d/rcS" "$ROOT/etc/init.d/console-shell"
echo "$ROOTDEV / ext4 rw 0 1" >"$ROOT/etc/fstab"
echo vmsvc-guest >"$ROOT/etc/hostname"
echo "root::0:0:root:/root:/bin/sh" >"$ROOT/etc/passwd"
echo "root:x:0:" >"$ROOT/etc/group"
echo "vmsvc guest image ($LAYOUT, kernel $KVER)" >"$ROOT/etc/image-id"

# --- 4. ext4 file system -----------------------------------------------------
FS=$WORK/fs.img
mke2fs -q -t ext4 -L vmsvc-root -d "$ROOT" -F "$FS" "${SIZE_MB}M" >"$WORK/mke2fs.log" 2>&1 ||
    { cat "$WORK/mke2fs.log" >&2; die "mke2fs failed (is --size $SIZE_MB large enough?)"; }
if [ "$(id -u)" != 0 ]; then
    # mke2fs -d copies the builder's uid/gid; the guest wants root-owned files.
    (cd "$ROOT" && find . -mindepth 1 | sed 's|^\.||' | while read -r p; do
        printf 'sif "%s" uid 0\nsif "%s" gid 0\n' "$p" "$p"
    done) >"$WORK/chown.debugfs"
    printf 'sif / uid 0\nsif / gid 0\n' >>"$WORK/chown.debugfs"
    debugfs -w -f "$WORK/chown.debugfs" "$FS" >/dev/null 2>&1 || die "debugfs could not chown the files to root"
fi
UUID=$(debugfs -R stats "$FS" 2>/dev/null | sed -n 's/^Filesystem UUID: *//p')

# --- 5. wrap in a partition table ---------------------------------------------
rm -f "$OUT"
case $LAYOUT in
bare)
    mv "$FS" "$OUT" ;;
gpt|mbr)
    # 1 MiB before the partition, 1 MiB after it (room for the backup GPT).
    truncate -s $((SIZE_MB + 2))M "$OUT"
    if [ $LAYOUT = gpt ]; then
        printf 'label: gpt\nstart=2048, size=%d, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name=root\n' \
            $((SIZE_MB * 2048)) >"$WORK/sfdisk.in"
    else
        printf 'label: dos\nstart=2048, size=%d, type=83, bootable\n' $((SIZE_MB * 2048)) >"$WORK/sfdisk.in"
    fi
    sfdisk --no-reread --no-tell-kernel -q "$OUT" <"$WORK/sfdisk.in" >"$WORK/sfdisk.log" 2>&1 ||
        { cat "$WORK/sfdisk.log" >&2; die "sfdisk failed"; }
    dd if="$FS" of="$OUT" bs=1M seek=1 conv=notrunc,sparse status=none || die "dd into $OUT failed"
    ;;
esac

if [ $EXTRACT = 1 ]; then
    cp "$ROOT/boot/vmlinuz-$KVER" "$OUT.vmlinuz"
    cp "$ROOT/boot/initrd.img-$KVER" "$OUT.initrd"
fi

say "image:   $OUT ($LAYOUT, $(du -h --apparent-size "$OUT" | cut -f1) apparent)"
say "kernel:  /boot/vmlinuz-$KVER (+ /boot/initrd.img-$KVER), root $ROOTDEV, UUID $UUID"
say "boot it: vmsvc run $OUT      (vmsvc passes root=$ROOTDEV)"
if [ $EXTRACT = 1 ]; then
    say "qemu:    qemu-system-x86_64 -m 512 -nographic -drive file=$OUT,if=virtio,format=raw \\"
    say "           -kernel $OUT.vmlinuz -initrd $OUT.initrd -append 'root=$ROOTDEV console=ttyS0'"
fi
