#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Builds the x86_64 debug kernel make check-debug boots, in $1 (e.g.
# build/debug-kernel): Debian's linux-source-6.1 unpacked to
# $1/linux-source-6.1, configured as tinyconfig with
# scripts/debug-kernel.config merged in, and built: bzImage, and what an
# external module's build needs (modules_prepare, Module.symvers).
#
# After olddefconfig every line of the fragment must hold in .config: a
# dependency the fragment misses makes Kconfig drop an option silently,
# and the lane would then run without the checker it names. Any such line
# fails the build, named.
#
# The tree is reused while the source tarball, the fragment, this script
# and the compiler are the same ($1/stamp, written once the build is
# done); otherwise it is unpacked and built again. Build log:
# $1/build.log.
#
# Environment: DEBUG_KERNEL_SRC, the source tarball (default Debian's
# /usr/src/linux-source-6.1.tar.xz).
set -euo pipefail

out=${1:?usage: debug-kernel.sh OUTDIR}
src=${DEBUG_KERNEL_SRC:-/usr/src/linux-source-6.1.tar.xz}
here=$(cd "$(dirname "$0")" && pwd)
fragment=$here/debug-kernel.config
tree=$out/linux-source-6.1
log=$out/build.log

[ -r "$src" ] || { echo "debug-kernel.sh: $src not found (run 'make deps')" >&2; exit 1; }

stamp=$( { sha256sum < "$src"; sha256sum < "$fragment"; sha256sum < "$0"; gcc --version | head -n 1; } |
	sha256sum | cut -d' ' -f1)
if [ "$(cat "$out/stamp" 2>/dev/null)" = "$stamp" ] && [ -r "$tree/arch/x86/boot/bzImage" ]; then
	echo "debug-kernel.sh: $tree is up to date ($(cat "$tree/include/config/kernel.release"))" >&2
	exit 0
fi

# Called from make: the kernel's make is a build of its own, not a
# sub-make of ours, and takes neither our flags nor our variables.
unset MAKEFLAGS MFLAGS MAKELEVEL MAKEOVERRIDES
kmake() { make -C "$tree" ARCH=x86_64 "$@" >> "$log" 2>&1; }

start=$(date +%s)
rm -rf "$out/stamp" "$tree"
mkdir -p "$out"
: > "$log"
tar -xJf "$src" -C "$out"
[ -r "$tree/Makefile" ] || { echo "debug-kernel.sh: $src did not unpack to $tree" >&2; exit 1; }

fail() {
	echo "debug-kernel.sh: $1; last lines of $log:" >&2
	tail -n 30 "$log" >&2
	exit 1
}
kmake tinyconfig || fail "tinyconfig failed"
(cd "$tree" && scripts/kconfig/merge_config.sh -m .config "$fragment") >> "$log" 2>&1 ||
	fail "merge_config.sh failed"
kmake olddefconfig || fail "olddefconfig failed"

dropped=()
while IFS= read -r line; do
	case $line in
	CONFIG_*=*)
		grep -qxF "$line" "$tree/.config" ||
			dropped+=("$line (got: $(grep -m1 -E "^(# )?${line%%=*}[= ]" "$tree/.config" || echo absent))")
		;;
	"# CONFIG_"*" is not set")
		name=${line#\# }
		name=${name%% *}
		! grep -q "^$name=" "$tree/.config" || dropped+=("$line (got: $(grep -m1 "^$name=" "$tree/.config"))")
		;;
	esac
done < "$fragment"
if [ "${#dropped[@]}" -gt 0 ]; then
	echo "debug-kernel.sh: olddefconfig did not keep these lines of $fragment:" >&2
	printf '  %s\n' "${dropped[@]}" >&2
	exit 1
fi

kmake -j"$(nproc)" bzImage modules_prepare || fail "the kernel build failed"
# Only bzImage is built, so the symbols an external module may use are
# vmlinux's alone (vmlinux.symvers); Kbuild reads them from Module.symvers.
cp "$tree/vmlinux.symvers" "$tree/Module.symvers"

echo "$stamp" > "$out/stamp"
echo "debug-kernel.sh: built $(cat "$tree/include/config/kernel.release") in $(( $(date +%s) - start )) s" >&2
