#!/bin/bash
# Install what vmsvc needs to build and test, from Debian packages.
# Idempotent: skips apt-get when everything is already installed.
set -euo pipefail
PKGS=(build-essential cmake pkg-config
      liburing-dev libzstd-dev libsodium-dev libcmocka-dev
      zlib1g-dev liblzma-dev liblz4-dev libext2fs-dev e2fsprogs fdisk libbpf-dev
      qemu-system-x86 cpio)
missing=()
for p in "${PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	echo "deps: installing ${missing[*]}"
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO=sudo
	$SUDO apt-get update -q
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi
