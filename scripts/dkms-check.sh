#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# Builds the module with DKMS, as make dkms-install does, but in a tree of
# its own (nothing goes to /usr/src or /var/lib/dkms/<module>), for the
# kernel whose headers are at KDIR; then boots that kernel in the VM with
# the module DKMS built and runs the device's tests there, from their
# kselftest install tree, with run_kselftest.sh. TAP on stdout; the VM's
# own checks and the tests' output go to VM_OUT, as vm-check's do.
# Usage: dkms-check.sh WORKDIR VERSION KVER KDIR VM_OUT KSFT_INSTALL
# (VM_KERNEL and the other VM_* in the environment, see vm-run.sh).
work=${1:?} version=${2:?} kver=${3:?} kdir=${4:?} vm_out=${5:?} ksft=${6:?}
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/scripts/tap.sh"

finish() {
	tap_end
	exit
}

if ! command -v dkms >/dev/null; then
	tap ok "dkms build # SKIP dkms is not installed (make deps)"
	tap ok "dkms: the module loads in the VM # SKIP dkms is not installed"
	finish
fi
if [ ! -f "$kdir/Makefile" ]; then
	tap ok "dkms build # SKIP no kernel headers at $kdir"
	tap ok "dkms: the module loads in the VM # SKIP no kernel headers"
	finish
fi

rm -rf "$work"
src=$work/src/fiber-preempt-$version
mkdir -p "$src" "$work/tree"
cp -r "$top/Kbuild" "$top/kmod" "$top/uapi" "$top/dkms.conf" "$src/"
log=$work/dkms.log
set -- -m fiber-preempt -v "$version" --sourcetree "$work/src" --dkmstree "$work/tree"
if dkms add "$@" > "$log" 2>&1 &&
   dkms build "$@" -k "$kver" --kernelsourcedir "$kdir" >> "$log" 2>&1; then
	ko=$(find "$work/tree/fiber-preempt/$version/$kver" -name 'fiber_preempt.ko*' | head -n 1)
fi
if [ -n "${ko:-}" ]; then
	tap ok "dkms build fiber-preempt $version for $kver"
else
	tap "not ok" "dkms build fiber-preempt $version for $kver" "$log"
	tap "not ok" "dkms: the module loads in the VM # no module built"
	finish
fi

VM_MODULE=$ko VM_FILES=$ksft VM_RUN=$(basename "$ksft")/run_kselftest.sh VM_OUT=$vm_out \
VM_TIMEOUT=${VM_TIMEOUT:-300} "$top/scripts/vm-run.sh" > "$work/vm.log" 2>&1
if grep -q '^@@FP insmod rc=0' "$vm_out/console.log" 2>/dev/null; then
	tap ok "dkms: the module it built loads in the VM ($kver)"
else
	tap "not ok" "dkms: the module it built loads in the VM ($kver)" "$work/vm.log"
fi
rm -rf "$vm_out/root" "$vm_out/initramfs.gz"
finish
