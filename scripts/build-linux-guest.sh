#!/bin/bash
# Build a Linux guest (kernel + busybox initramfs) from Debian packages only.
#
#   scripts/build-linux-guest.sh [OUTDIR]      (default: <repo>/build/linux)
#
# Produces:
#   OUTDIR/vmlinuz             the Debian cloud kernel's bzImage, unchanged
#   OUTDIR/initramfs.cpio.gz   busybox-static + /init + the virtio modules
#   OUTDIR/initramfs.cpio      the same, uncompressed (for the kvm_pvm host: no in-guest inflate)
#   OUTDIR/version             the kernel release (e.g. 6.1.0-56-cloud-amd64)
#   OUTDIR/cmdline-pvm.txt     copy of scripts/linux-cmdline.txt (for this kvm_pvm host)
#   OUTDIR/cmdline-hw.txt      plain command line for VMX/SVM hosts
#
# Needs no root: `apt-get download` works for any user as long as the apt
# lists exist (`apt-get update` must have run once, as root).  Downloads are
# cached in OUTDIR/debs; set LINUX_GUEST_REFRESH=1 to fetch again.
# Tools used: apt-get, dpkg-deb, gzip, and the busybox we download (for cpio),
# so no cpio/kmod packages are needed on the host.
set -eu

die() { echo "build-linux-guest: error: $*" >&2; exit 1; }
say() { echo "build-linux-guest: $*" >&2; }

REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$REPO/build/linux}
META_PKG=${LINUX_GUEST_KERNEL_PKG:-linux-image-cloud-amd64}
BUSYBOX_PKG=busybox-static
# Modules the guest should have; any of them that is built in (or absent)
# is skipped.  Dependencies are added automatically.
WANT_MODULES="virtio virtio_ring virtio_pci virtio_pci_modern_dev virtio_pci_legacy_dev
virtio_blk virtio_net net_failover failover virtio_rng virtio_console"

for t in apt-get dpkg-deb gzip; do
    command -v "$t" >/dev/null 2>&1 || die "'$t' not found (this script needs a Debian host)"
done

mkdir -p "$OUT/debs" || die "cannot create $OUT"
OUT=$(cd "$OUT" && pwd)
DEBS=$OUT/debs

# fetch_deb PKG: download PKG's .deb into $DEBS unless a copy is cached;
# prints the .deb path.
fetch_deb() {
    pkg=$1
    if [ "${LINUX_GUEST_REFRESH:-0}" = 1 ]; then rm -f "$DEBS/${pkg}_"*.deb; fi
    # shellcheck disable=SC2012  # names are apt's, no odd characters
    f=$(ls -1 "$DEBS/${pkg}_"*.deb 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -z "$f" ]; then
        say "downloading $pkg"
        # apt-get download writes to the current directory.  As root it warns
        # that the _apt user cannot write there; that warning is harmless.
        if ! (cd "$DEBS" && apt-get download "$pkg" >"$DEBS/.apt.log" 2>&1); then
            cat "$DEBS/.apt.log" >&2
            die "apt-get download $pkg failed (see apt's message above; if apt knows no packages yet, run 'apt-get update' as root once)"
        fi
        # shellcheck disable=SC2012
        f=$(ls -1 "$DEBS/${pkg}_"*.deb 2>/dev/null | sort -V | tail -n 1 || true)
        [ -n "$f" ] || die "apt-get download $pkg produced no .deb in $DEBS"
    fi
    echo "$f"
}

# --- 1. packages -----------------------------------------------------------
META_DEB=$(fetch_deb "$META_PKG")
# The meta package depends on exactly one versioned image package.
IMG_PKG=$(dpkg-deb -f "$META_DEB" Depends | tr ',' '\n' | sed 's/[ (].*//; s/^ *//' |
          grep '^linux-image-[0-9]' | head -n 1 || true)
[ -n "$IMG_PKG" ] || die "cannot find the linux-image-6.x package in $META_PKG's Depends"
IMG_DEB=$(fetch_deb "$IMG_PKG")
BB_DEB=$(fetch_deb "$BUSYBOX_PKG")

# --- 2. extract (redo only when a .deb is newer than the stamp) -------------
EX=$OUT/extract
STAMP=$EX/.stamp
if [ ! -f "$STAMP" ] || [ "$IMG_DEB" -nt "$STAMP" ] || [ "$BB_DEB" -nt "$STAMP" ] ||
   [ "$(cat "$STAMP" 2>/dev/null)" != "$IMG_DEB $BB_DEB" ]; then
    say "extracting $(basename "$IMG_DEB") and $(basename "$BB_DEB")"
    rm -rf "$EX"; mkdir -p "$EX"
    dpkg-deb -x "$IMG_DEB" "$EX" || die "dpkg-deb -x $IMG_DEB failed"
    dpkg-deb -x "$BB_DEB" "$EX" || die "dpkg-deb -x $BB_DEB failed"
    echo "$IMG_DEB $BB_DEB" >"$STAMP"
fi

KVER=${IMG_PKG#linux-image-}
[ -f "$EX/boot/vmlinuz-$KVER" ] || die "no boot/vmlinuz-$KVER in $IMG_DEB"
MODDIR=$EX/lib/modules/$KVER
[ -d "$MODDIR" ] || die "no lib/modules/$KVER in $IMG_DEB"
BB=$EX/bin/busybox
[ -x "$BB" ] || die "no bin/busybox in $BB_DEB"

# --- 3. modules: closure over the .modinfo "depends=" field -----------------
# Debian ships no modules.dep (depmod runs at install time), so read each
# module's own dependency list; the result is also written as modules.dep.
# Index once: "name path" per module, names with '-' folded to '_'.
INDEX=$OUT/.modindex
(cd "$MODDIR" && find kernel -name '*.ko' | while read -r p; do
    echo "$(basename "$p" .ko | tr '-' '_') $p"
done) >"$INDEX"
mod_file() { awk -v n="$(echo "$1" | tr '-' '_')" '$1 == n { print $2; exit }' "$INDEX"; }
mod_deps() { tr '\0' '\n' <"$MODDIR/$1" | sed -n 's/^depends=//p' | tr ',' ' '; }
is_builtin() {
    n=$(echo "$1" | tr '-' '_')
    sed 's|.*/||; s|\.ko$||' "$MODDIR/modules.builtin" 2>/dev/null | tr '-' '_' | grep -qx "$n"
}

# Closure (worklist), then order so that every module follows its dependencies.
SET=""; BUILTIN=""; MISSING=""
todo=$WANT_MODULES
while [ -n "${todo//[[:space:]]/}" ]; do
    # shellcheck disable=SC2086  # word lists on purpose
    set -- $todo; m=$1; shift; todo="$*"
    if is_builtin "$m"; then
        case " $BUILTIN " in *" $m "*) ;; *) BUILTIN="$BUILTIN $m";; esac; continue
    fi
    f=$(mod_file "$m")
    if [ -z "$f" ]; then
        case " $MISSING " in *" $m "*) ;; *) MISSING="$MISSING $m";; esac; continue
    fi
    case " $SET " in *" $f "*) continue;; esac
    SET="$SET $f"
    todo="$todo $(mod_deps "$f")"
done
ORDER=""
remaining=$SET
while [ -n "${remaining//[[:space:]]/}" ]; do
    progress=0; next=""
    for f in $remaining; do
        ready=1
        for d in $(mod_deps "$f"); do
            df=$(mod_file "$d")
            [ -z "$df" ] && continue          # built in
            case " $ORDER " in *" $df "*) ;; *) ready=0;; esac
        done
        if [ $ready = 1 ]; then ORDER="$ORDER $f"; progress=1; else next="$next $f"; fi
    done
    [ $progress = 1 ] || die "module dependency cycle among:$next"
    remaining=$next
done

# --- 4. initramfs tree -------------------------------------------------------
ROOT=$OUT/initramfs-root
rm -rf "$ROOT"
mkdir -p "$ROOT/bin" "$ROOT/sbin" "$ROOT/usr/bin" "$ROOT/usr/sbin" "$ROOT/proc" \
         "$ROOT/sys" "$ROOT/dev" "$ROOT/tmp" "$ROOT/etc" "$ROOT/root" \
         "$ROOT/lib/modules/$KVER"
cp "$BB" "$ROOT/bin/busybox"
# One symlink per applet, at busybox's own idea of its path.
"$BB" --list-full | while read -r p; do
    [ "$p" = bin/busybox ] && continue
    mkdir -p "$ROOT/$(dirname "$p")"
    ln -sf /bin/busybox "$ROOT/$p"
done
: >"$ROOT/lib/modules/$KVER/modules.dep"
: >"$ROOT/etc/modules.order"
for f in $ORDER; do
    mkdir -p "$ROOT/lib/modules/$KVER/$(dirname "$f")"
    cp "$MODDIR/$f" "$ROOT/lib/modules/$KVER/$f"
    deps=""
    for d in $(mod_deps "$f"); do df=$(mod_file "$d"); [ -n "$df" ] && deps="$deps $df"; done
    echo "$f:$deps" >>"$ROOT/lib/modules/$KVER/modules.dep"
    echo "$f" >>"$ROOT/etc/modules.order"
done
cp "$MODDIR/modules.builtin" "$ROOT/lib/modules/$KVER/" 2>/dev/null || true
# busybox depmod writes a transitive modules.dep plus modules.alias, so the
# guest's modprobe works too; the direct-dependency file above is the fallback.
cp "$ROOT/lib/modules/$KVER/modules.dep" "$OUT/.modules.dep.direct"
if ! "$BB" depmod -b "$ROOT" "$KVER" 2>/dev/null; then
    say "busybox depmod failed; keeping the direct-dependency modules.dep"
    cp "$OUT/.modules.dep.direct" "$ROOT/lib/modules/$KVER/modules.dep"
fi
rm -f "$OUT/.modules.dep.direct"
echo "$KVER" >"$ROOT/etc/kernel-release"

cat >"$ROOT/init" <<'EOF'
#!/bin/sh
# vmsvc test guest init.  Prints markers the tests look for:
#   VMSVC-GUEST: init started / modules loaded / shell / autotest ok
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || true
echo "VMSVC-GUEST: init started ($(cat /etc/kernel-release), uptime $(cut -d' ' -f1 /proc/uptime) s)"
KVER=$(cat /etc/kernel-release)
loaded=""; failed=""
while read -r m; do
    [ -n "$m" ] || continue
    n=$(basename "$m" .ko)
    if insmod "/lib/modules/$KVER/$m" 2>/dev/null; then loaded="$loaded $n"; else failed="$failed $n"; fi
done </etc/modules.order
echo "VMSVC-GUEST: modules loaded:${loaded:- none}${failed:+ (failed:$failed)}"
echo "VMSVC-GUEST: virtio devices: $(ls /sys/bus/virtio/devices 2>/dev/null | tr '\n' ' ')"
case " $(cat /proc/cmdline) " in
*" vmsvc.autotest=1 "*)
    echo "VMSVC-GUEST: autotest ok"
    poweroff -f ;;
esac
echo "VMSVC-GUEST: shell (exit to power off)"
# cttyhack gives the shell a controlling tty so ^C works on the serial console.
setsid cttyhack sh -l || sh
echo "VMSVC-GUEST: powering off"
poweroff -f
EOF
chmod 755 "$ROOT/init"
cat >"$ROOT/etc/profile" <<'EOF'
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
PS1='vmsvc-guest# '
EOF

# --- 5. pack: the tree with busybox cpio, plus /dev/console as a second
# archive written by hand (mknod would need root; the kernel needs
# /dev/console to give init its stdin/stdout before devtmpfs is mounted).
# newc header: magic + 13 fields of 8 hex digits, name, NUL, pad to 4.
cpio_entry() {  # cpio_entry NAME MODE RDEVMAJ RDEVMIN (no data)
    name=$1; namesize=$(( ${#1} + 1 ))
    printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%s\0' \
        1 "$2" 0 0 1 0 0 0 0 "$3" "$4" "$namesize" 0 "$name"
    pad=$(( (4 - (110 + namesize) % 4) % 4 ))
    [ "$pad" -gt 0 ] && head -c "$pad" /dev/zero
    return 0
}
TMPC=$OUT/.initramfs.cpio
(cd "$ROOT" && find . -mindepth 1 | sed 's|^\./||' | LC_ALL=C sort |
    "$BB" cpio -o -H newc -R 0:0) >"$TMPC" 2>"$OUT/.cpio.log" ||
    { cat "$OUT/.cpio.log" >&2; die "busybox cpio failed"; }
{ cpio_entry dev/console $((0020000 | 0600)) 5 1; cpio_entry TRAILER!!! 0 0 0; } >>"$TMPC"
gzip -9 -n <"$TMPC" >"$OUT/initramfs.cpio.gz.tmp"
mv "$OUT/initramfs.cpio.gz.tmp" "$OUT/initramfs.cpio.gz"
# The same archive uncompressed: on a host whose KVM emulates guest kernel
# code, inflating 1.2 MB in the guest costs minutes; copying 3 MB does not.
mv "$TMPC" "$OUT/initramfs.cpio"
rm -f "$OUT/.cpio.log" "$INDEX"

cp "$EX/boot/vmlinuz-$KVER" "$OUT/vmlinuz"
cp "$EX/boot/config-$KVER" "$OUT/config"
echo "$KVER" >"$OUT/version"
if [ -f "$REPO/scripts/linux-cmdline.txt" ]; then
    "$REPO/scripts/linux-cmdline.sh" >"$OUT/cmdline-pvm.txt"
fi
echo "console=ttyS0" >"$OUT/cmdline-hw.txt"

say "kernel:    $OUT/vmlinuz ($KVER, $(wc -c <"$OUT/vmlinuz") bytes)"
say "initramfs: $OUT/initramfs.cpio.gz ($(wc -c <"$OUT/initramfs.cpio.gz") bytes), uncompressed $OUT/initramfs.cpio ($(wc -c <"$OUT/initramfs.cpio") bytes)"
say "modules:  $(for f in $ORDER; do printf ' %s' "$(basename "$f" .ko)"; done)"
[ -z "$BUILTIN" ] || say "built in: $BUILTIN"
[ -z "$MISSING" ] || say "absent:   $MISSING"
say "command line for this kvm_pvm host (scripts/linux-cmdline.sh):"
echo "  $(cat "$OUT/cmdline-pvm.txt" 2>/dev/null || echo '(missing scripts/linux-cmdline.txt)')"
say "command line for a VMX/SVM host:"
echo "  console=ttyS0"
