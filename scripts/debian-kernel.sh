#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Unpacks a Debian amd64 kernel of another suite (its image, headers and
# kbuild tools), and the arm64 headers of the same version, into $3, for
# the kernel matrix: $1 the suite (e.g. bookworm-backports), $2 the kernel
# series (e.g. 6.12). The newest version of that series in the suite is
# taken; its ABI names (e.g. 6.12.95+deb12-amd64) are written to $3/kver
# and $3/kver-arm64, and the image is at $3/boot/vmlinuz-<kver>. The arm64
# headers use the amd64 package's kbuild tools (their scripts link
# resolves to them), which run here only if they were built for this
# Debian release (for a newer one: scripts/debian-chroot.sh). The suite is
# read from the mirror this machine's apt sources already name, with apt
# state of its own under $3: the system's apt configuration is left as it is.
set -eu
suite=$1
series=$2
root=$3

mirror=$("$(dirname "$0")/debian-mirror.sh")

rm -rf "$root"
mkdir -p "$root/apt/lists/partial" "$root/apt/cache/archives/partial" "$root/debs"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main" \
	> "$root/apt/sources.list"
set -- -o Dir::Etc::sourcelist="$root/apt/sources.list" -o Dir::Etc::sourceparts=- \
	-o Dir::State::Lists="$root/apt/lists" -o Dir::Cache="$root/apt/cache" \
	-o Debug::NoLocking=1
apt-get "$@" -q update >/dev/null
# The image's package is linux-image-$kver-unsigned up to 6.x, and
# linux-binary-unsigned-$kver (its vmlinuz under /usr/lib/modules) in 7.x.
kver=$(apt-cache "$@" search --names-only "^linux-(image|binary-unsigned)-$series\.[0-9.]*[^ ]*-amd64" |
	sed -n -e "s/^linux-image-\($series\.[^ ]*-amd64\)-unsigned .*/\1/p" \
		-e "s/^linux-binary-unsigned-\($series\.[^ ]*-amd64\) .*/\1/p" |
	grep -vE -- '-(rt|cloud)-amd64$' | sort -V | tail -n 1)
[ -n "$kver" ] || { echo "debian-kernel.sh: no linux-image-$series in $suite" >&2; exit 1; }
abi=${kver%-amd64}
image=linux-image-$kver-unsigned
apt-cache "$@" show "$image" >/dev/null 2>&1 || image=linux-binary-unsigned-$kver
cd "$root/debs"
set -- "$@" download "$image" "linux-headers-$kver" \
	"linux-headers-$abi-common" "linux-kbuild-$abi" "linux-headers-$abi-arm64:arm64"
apt-get -q "$@" >/dev/null 2>&1 || apt-get "$@"
for deb in *.deb; do
	dpkg -x "$deb" "$root"
done
cd "$root"
rm -rf debs apt
# The headers name their common part (and from 7.x their own directory)
# by its installed path: point them here.
sed -i -e "s|^include /usr/src/|include $root/usr/src/|" \
	-e "s|^KBUILD_OUTPUT=/usr/src/|KBUILD_OUTPUT=$root/usr/src/|" \
	"usr/src/linux-headers-$kver/Makefile" "usr/src/linux-headers-$abi-arm64/Makefile"
[ -e "boot/vmlinuz-$kver" ] || {
	mkdir -p boot
	ln -s "../usr/lib/modules/$kver/vmlinuz.unsigned" "boot/vmlinuz-$kver"
}
echo "$kver" > kver
echo "$abi-arm64" > kver-arm64
