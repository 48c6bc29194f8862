#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Unpacks Debian's arm64 kernel image, its headers, busybox-static and
# liburing into $2 (needs "dpkg --add-architecture arm64", which make deps
# does). Nothing is installed: an arm64 libc next to the cross toolchain's
# would be picked up by qemu-user's loader and hang the programs. The
# headers tree is used as Debian ships it, with its scripts link pointed
# at the host's linux-kbuild-6.1 (installed with the amd64 headers), so
# the module cross-builds with the host's tools.
set -eu
kver=$1
root=$2
debs=$root.debs
rm -rf "$root" "$debs"
mkdir -p "$root" "$debs"
cd "$debs"
apt-get download "linux-image-$kver:arm64" "linux-headers-$kver:arm64" busybox-static:arm64 \
	liburing2:arm64 liburing-dev:arm64
for deb in *.deb; do
	dpkg -x "$deb" "$root"
done
ln -sfn /usr/lib/linux-kbuild-6.1/scripts "$root/usr/src/linux-headers-$kver/scripts"
rm -rf "$debs"
