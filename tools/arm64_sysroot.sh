#!/bin/sh
# The arm64 libraries the cross-compiled runtime tests link against
# (libnifti2, libznz, zlib, cmocka), unpacked into a private sysroot.
# Usage: tools/arm64_sysroot.sh DIR   (make check-long calls it)
#
# Why not `apt-get install libnifti2-dev:arm64`: libnifti2-dev is not
# Multi-Arch "same", so installing the arm64 one removes the native one
# the build needs.  The .debs are downloaded with apt-get download and
# unpacked with dpkg-deb -x instead: nothing on the system changes except
# that dpkg knows the arm64 architecture (needed to download its
# packages).
set -eu
dir=${1:?usage: $0 DIR}
stamp="$dir/.complete"
[ -f "$stamp" ] && exit 0
pkgs="libnifti2-2 libnifti2-dev libniftiio-dev libznz3 libznz-dev zlib1g zlib1g-dev libcmocka0 libcmocka-dev libpng16-16 libpng-dev"
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
        echo "error: dpkg does not know the arm64 architecture; run 'dpkg --add-architecture arm64 && apt-get update' as root" >&2
        exit 1
    fi
    echo "arm64: adding the arm64 architecture to dpkg (package lists only)" >&2
    $SUDO dpkg --add-architecture arm64
    $SUDO apt-get update -qq
fi
rm -rf "$dir"
mkdir -p "$dir/debs"
list=""
for p in $pkgs; do list="$list $p:arm64"; done
(cd "$dir/debs" && apt-get download $list >&2) ||
    { echo "error: apt-get download of the arm64 libraries failed; check the network and 'apt-get update'" >&2; exit 1; }
for d in "$dir"/debs/*.deb; do dpkg-deb -x "$d" "$dir"; done
touch "$stamp"
