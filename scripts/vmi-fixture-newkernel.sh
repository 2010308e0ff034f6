#!/bin/bash
# Offline introspection fixture for the >= 6.4 kallsyms table order (issue 5):
# Debian's cloud kernel from bookworm-backports (6.12), whose bzImage the unit
# test tests/unit/test_vmi_fixtures.c decompresses and checks (symbols, table
# order, BTF member offsets) against golden values and its own section headers.
#
#   scripts/vmi-fixture-newkernel.sh [OUTDIR]    (default build/linux-bpo)
#   -> OUTDIR/vmlinuz, OUTDIR/version, OUTDIR/config
#
# The system's apt sources stay untouched: apt runs with a private source list
# (the backports suite on the mirror the system's Debian source already names)
# and private lists/cache under OUTDIR/apt. Cached: nothing is fetched when
# OUTDIR/vmlinuz exists. Needs apt-get, apt-cache, dpkg-deb and network access
# to the Debian mirror.
set -eu
die() { echo "vmi-fixture-newkernel: error: $*" >&2; exit 1; }
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$REPO/build/linux-bpo}
SUITE=bookworm-backports
if [ -s "$OUT/vmlinuz" ] && [ -s "$OUT/version" ]; then
    echo "vmi-fixture-newkernel: cached: $OUT/vmlinuz ($(cat "$OUT/version"))" >&2
    exit 0
fi
for t in apt-get apt-cache dpkg-deb; do command -v $t >/dev/null || die "$t not found"; done
A=$OUT/apt
mkdir -p "$A/lists/partial" "$A/cache/archives/partial" "$A/sources" "$A/debs"
# The Debian mirror and keyring the system already uses (deb822 or one-line format).
uri=$(awk '/^URIs:/ && /debian\/?$/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
[ -n "$uri" ] || uri=$(awk '$1 == "deb" && $2 ~ /debian\/?$/ {print $2; exit}' \
                           /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
[ -n "$uri" ] || die "no Debian mirror found in the system's apt sources"
key=/usr/share/keyrings/debian-archive-keyring.gpg
[ -r "$key" ] || die "$key missing (apt-get install debian-archive-keyring)"
printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: %s\n' "$uri" "$SUITE" "$key" \
    >"$A/sources/bpo.sources"
APT=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$A/sources" -o "Dir::State::Lists=$A/lists"
     -o "Dir::Cache=$A/cache" -o APT::Get::List-Cleanup=0 -o APT::Sandbox::User=root)
apt-get "${APT[@]}" -q update >"$A/update.log" 2>&1 || { tail -n 5 "$A/update.log" >&2; die "apt-get update ($SUITE) failed"; }
pkg=$(apt-cache "${APT[@]}" depends linux-image-cloud-amd64 2>/dev/null |
      awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$pkg" ] || die "no linux-image-cloud-amd64 in $SUITE"
rm -f "$A"/debs/*.deb
(cd "$A/debs" && apt-get "${APT[@]}" -q download "$pkg" >"$A/download.log" 2>&1) ||
    { tail -n 5 "$A/download.log" >&2; die "apt-get download $pkg failed"; }
rm -rf "$A/x"
dpkg-deb -x "$A"/debs/*.deb "$A/x"
kver=${pkg#linux-image-}
[ -s "$A/x/boot/vmlinuz-$kver" ] || die "$pkg has no /boot/vmlinuz-$kver"
cp "$A/x/boot/vmlinuz-$kver" "$OUT/vmlinuz.tmp" && mv "$OUT/vmlinuz.tmp" "$OUT/vmlinuz"
cp "$A/x/boot/config-$kver" "$OUT/config"
echo "$kver" >"$OUT/version"
rm -rf "$A/x" "$A/debs"
echo "vmi-fixture-newkernel: $OUT/vmlinuz ($kver)" >&2
