#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Runs a command in a minimal Debian chroot of another release: the kbuild
# tools of a newer suite's kernel (trixie-backports) are linked against
# that release's libc and do not run on this host.
#
#   debian-chroot.sh SUITE DIR [--bind PATH]... -- COMMAND [ARG]...
#
# DIR is made once with debootstrap, from the mirror this machine's apt
# sources name, with only what kbuild needs for an external module: make,
# gcc (native, and the arm64 cross compiler), libc and libelf headers, the
# libraries the kbuild tools link, and pahole for module BTF. A stamp in
# DIR lists those packages: a chroot without it (an interrupted
# debootstrap) or with another list is made again.
#
# The command runs in the current directory, which is bound at the same
# path inside, as is each PATH outside it (the unpacked kernel, the build
# directory): paths mean the same inside and out, and /proc is mounted
# (objtool reads it). The mounts are made in a mount namespace of the
# command's own, so they go away with it however it ends and the host
# never sees them.
set -eu

pkgs="make gcc-14 libc6-dev libelf-dev libssl3t64 zlib1g pahole gcc-14-aarch64-linux-gnu"

if [ "${FP_CHROOT_NS:-}" != 1 ]; then
	suite=${1:?usage: debian-chroot.sh SUITE DIR [--bind PATH]... -- COMMAND...}
	dir=${2:?usage: debian-chroot.sh SUITE DIR [--bind PATH]... -- COMMAND...}
	if [ "$(id -u)" != 0 ]; then
		echo "debian-chroot.sh: debootstrap, mount and chroot need root" >&2
		exit 1
	fi
	stamp=$dir/.debian-chroot-packages
	if [ "$(cat "$stamp" 2>/dev/null)" != "$suite: $pkgs" ]; then
		# A bind mount left under DIR would make rm -rf reach the source tree.
		if grep -q " $(realpath -m "$dir")/" /proc/mounts; then
			echo "debian-chroot.sh: something is mounted under $dir" >&2
			exit 1
		fi
		rm -rf "$dir"
		mkdir -p "$dir"
		mirror=$("$(dirname "$0")/debian-mirror.sh")
		echo "debian-chroot.sh: making a $suite chroot in $dir" >&2
		start=$(date +%s)
		debootstrap --variant=minbase --include="$(echo "$pkgs" | tr ' ' ,)" \
			"$suite" "$dir" "$mirror" > "$dir.log" 2>&1 ||
			{ tail -n 20 "$dir.log" >&2; exit 1; }
		rm -rf "$dir/var/cache/apt/archives"/*.deb
		echo "debian-chroot.sh: made in $(( $(date +%s) - start )) s" >&2
		echo "$suite: $pkgs" > "$stamp"
	fi
	FP_CHROOT_NS=1 exec unshare --mount --propagation private "$0" "$@"
fi

# In the new mount namespace.
dir=$(realpath "$2")
shift 2
bind() {
	mkdir -p "$dir$1"
	mount --bind "$1" "$dir$1"
}
bind "$PWD"
mount -t proc proc "$dir/proc"
while [ "$1" != -- ]; do
	[ "$1" = --bind ] || { echo "debian-chroot.sh: $1: expected --bind or --" >&2; exit 1; }
	path=$(realpath -m "$2")
	case $path/ in
	"$PWD"/*) ;;
	/)
		echo "debian-chroot.sh: will not bind /: unpack the kernel in a directory of its own" >&2
		exit 1
		;;
	*) bind "$path" ;;
	esac
	shift 2
done
shift
exec chroot "$dir" /usr/bin/env -u FP_CHROOT_NS PATH=/usr/sbin:/usr/bin:/sbin:/bin \
	/bin/sh -c 'cd "$0" && exec "$@"' "$PWD" "$@"
