#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Installs the Debian packages the project needs. Idempotent: with
# --if-missing it does nothing (and needs no network) when all are there.
# dwarves: pahole, which newer kernels' Kbuild runs for module BTF (the
# 6.12 lane). debootstrap: the Debian 13 chroot the 7.x lane builds in
# (scripts/debian-chroot.sh). groff-base: groff, which lints the man pages.
# dkms: make dkms-install, and make check builds the module with it.
# gnuplot-nox: make bench's charts. rsync: the kernel's kselftest install.
# e2fsprogs: mkfs.ext4, for the VM's ext4 disk (make vm-check).
# flex, bison, bc, libelf-dev: make check-debug builds linux-source-6.1
# (libelf for objtool, which the ORC unwinder needs).
set -eu

pkgs="gcc make libc6-dev liburing-dev pkg-config
      qemu-system-x86 busybox-static cpio gzip xz-utils
      linux-source-6.1 linux-headers-amd64 linux-image-amd64
      gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-system-arm qemu-user-static
      g++ g++-aarch64-linux-gnu wrk curl gdb dwarves debootstrap groff-base dkms
      gnuplot-nox rsync e2fsprogs flex bison bc libelf-dev"

missing() {
	# The arm64 kernel and busybox are fetched as arm64 packages.
	dpkg --print-foreign-architectures | grep -qx arm64 || echo "(arm64 architecture)"
	for p in $pkgs; do
		dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null |
			grep -q '^install ok installed' || echo "$p"
	done
}

if [ "${1:-}" = "--if-missing" ] && [ -z "$(missing)" ]; then
	exit 0
fi
if [ "$(id -u)" != 0 ]; then
	echo "deps.sh: missing packages: $(missing | tr '\n' ' ')" >&2
	echo "deps.sh: run 'sudo make deps' to install them" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
dpkg --add-architecture arm64
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $pkgs
# The VM boots the image whose ABI matches the headers we build against.
kver=$(sh "$(dirname "$0")/kver.sh" amd64)
apt-get install -y -q --no-install-recommends "linux-image-$kver" "linux-headers-$kver"
