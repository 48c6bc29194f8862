#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Boots Debian's kernel under QEMU with a busybox initramfs of our own,
# loads the module, runs programs in the guest and brings their output
# back. Programs are linked dynamically, as users' programs are, so the
# host's shared libraries they need are copied in beside them.
#
# Environment (set by the Makefile):
#   VM_ARCH      x86_64 (default) or aarch64
#   VM_KERNEL    the kernel image to boot
#   VM_MODULE    fiber_preempt.ko
#   VM_FILES     files to copy to /fp in the guest (binaries, libraries;
#                a directory is copied whole, a kselftest install tree)
#   VM_RUN       programs run with the module loaded: names under /fp,
#                arguments joined by commas (fairness,--mode,kmod)
#   VM_AFTER     programs run after rmmod
#   VM_GUEST_ENV variables the guest's programs get, NAME=value separated by
#                spaces (FIBER_TEST_SLOWDOWN=4)
#   VM_OUT       output directory: console.log, <program>.out, vm.tap
#   VM_TIMEOUT   seconds before the whole VM is killed (default 900)
#   VM_LOAD_TIMEOUT  seconds for the guest to report the module load before
#                the boot is retried (default 120; at most 3 boots, also when
#                the guest dies before our init runs)
#   VM_TEST_TIMEOUT  seconds before one guest program is killed (default 300)
#   VM_ACCEL     tcg (default) or kvm
#   VM_SMP, VM_MEM   guest CPUs (default 2) and memory (default 1024M)
#   VM_DISK      a raw image of an ext4 filesystem, attached as a virtio disk
#                and mounted at /mnt/ext4 before the module is loaded, so
#                tests can use a file system on a real block device
#   VM_KMODS     the booted kernel's modules tree (lib/modules/<kver>), from
#                which the guest loads virtio_blk, ext4 and what they need
#                for VM_DISK; without the modules the disk is left out
#   A test that drives the machine out of memory announces it by writing
#   "fiber_preempt selftest: OOM kill expected" to /dev/kmsg before, and
#   "fiber_preempt selftest: OOM kill over" after: the stack trace line
#   ("Call Trace:") of an OOM-killer report (from "invoked oom-killer:" to
#   "Killed process") between the two does not count against the kernel
#   log.
#
# Output of program P with arguments A B goes to $VM_OUT/P_A_B.out; checks of the VM itself
# (boot, insmod, rmmod, kernel log, no hang) go to $VM_OUT/vm.tap as TAP.
set -euo pipefail

arch=${VM_ARCH:-x86_64}
out=${VM_OUT:?}
timeout=${VM_TIMEOUT:-900}
test_timeout=${VM_TEST_TIMEOUT:-300}
accel=${VM_ACCEL:-tcg}
smp=${VM_SMP:-2}
mem=${VM_MEM:-1024M}
busybox=${VM_BUSYBOX:-/bin/busybox}

for f in "${VM_KERNEL:?}" "${VM_MODULE:?}" "$busybox"; do
	[ -r "$f" ] || { echo "vm-run.sh: $f not found (run 'make deps')" >&2; exit 1; }
done

rm -rf "$out"
root=$out/root
mkdir -p "$root"/{bin,dev,proc,sys,tmp,fp,lib,lib64}
cp "$busybox" "$root/bin/busybox"
cp "$VM_MODULE" "$root/fp/"
for f in ${VM_FILES:-}; do
	cp -r "$f" "$root/fp/"
done

# The dynamic loader and every library the guest programs need.
copy_libs() {
	local f=$1 lib
	for lib in $(ldd "$f" 2>/dev/null | grep -o '/[^ ]*' || true); do
		# Libraries of the project itself are in VM_FILES, found through LD_LIBRARY_PATH.
		[ -e "$root/fp/$(basename "$lib")" ] && continue
		[ -e "$root$lib" ] && continue
		mkdir -p "$root$(dirname "$lib")"
		cp -L "$lib" "$root$lib"
	done
}
if [ "$arch" = x86_64 ]; then
	for f in $(find "$root/fp" -type f -perm -u+x); do
		copy_libs "$f"
	done
fi
[ -n "${VM_SYSROOT_LIBS:-}" ] && cp -aL $VM_SYSROOT_LIBS "$root/lib/"

# Prints the files of modules $2... in the modules tree $1, each after the
# modules it depends on; modules built into the kernel print nothing, and
# so does a module named with a trailing '?' that the tree lacks.
module_files() {
	local dir=$1 m name f dep
	shift
	for m; do
		name=${m%\?}
		grep -q "/${name//[-_]/[-_]}\.ko" "$dir/modules.builtin" 2>/dev/null && continue
		f=$(find "$dir/kernel" -name "${name//[-_]/[-_]}.ko*" -print -quit 2>/dev/null)
		if [ -z "$f" ]; then
			[ "$name" != "$m" ] && continue
			echo "vm-run.sh: no module $name in $dir" >&2
			return 1
		fi
		for dep in $(modinfo -F depends "$f" | tr , ' '); do
			module_files "$dir" "$dep" || return 1
		done
		echo "$f"
	done
}

# The disk's modules, uncompressed (busybox insmod takes plain .ko files),
# numbered in load order. crc32c: ext4 and jbd2 ask the crypto API for it
# at mount, and the guest has no modprobe to load it then (7.x calls the
# library directly and has no such module).
disk=()
if [ -n "${VM_DISK:-}" ]; then
	if files=$(module_files "${VM_KMODS:-/nonexistent}" virtio_pci virtio_blk \
		   'crc32c_generic?' ext4); then
		mkdir -p "$root/kmods"
		i=10
		disk=(-drive "file=$VM_DISK,format=raw,if=virtio")
		for f in $(awk '!seen[$0]++' <<<"$files"); do
			dst=$root/kmods/$i-$(basename "${f%%.ko*}").ko
			case $f in
			*.ko.xz) xz -dc "$f" > "$dst" ;;
			*.ko.zst) zstd -qdc "$f" > "$dst" ;;
			*.ko.gz) gzip -dc "$f" > "$dst" ;;
			*) cp "$f" "$dst" ;;
			esac || { echo "vm-run.sh: VM_DISK left out: cannot unpack $f" >&2; disk=(); break; }
			i=$((i + 1))
		done
		[ ${#disk[@]} = 0 ] && rm -rf "$root/kmods"
	else
		echo "vm-run.sh: VM_DISK left out: the modules it needs are not in VM_KMODS=${VM_KMODS:-}" >&2
	fi
fi

cat > "$root/init" <<INIT
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin LD_LIBRARY_PATH=/fp ${VM_GUEST_ENV:-}
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
ip link set lo up
cd /fp
echo "@@FP kernel \$(uname -r) \$(uname -m)"
if [ -d /kmods ]; then
	# None when the kernel has the disk's drivers built in.
	for m in /kmods/*.ko; do
		[ -e \$m ] || continue
		insmod \$m || echo "@@FP disk: insmod \$m failed"
	done
	# The disk's node appears once virtio_blk has probed it.
	for i in 1 2 3 4 5 6 7 8 9 10; do
		[ -b /dev/vda ] && break
		sleep 1
	done
	mkdir -p /mnt/ext4
	mount -t ext4 /dev/vda /mnt/ext4
	echo "@@FP disk rc=\$?"
fi
insmod /fp/$(basename "$VM_MODULE")
echo "@@FP insmod rc=\$?"
run() {
	echo "@@FP begin \$*"
	timeout -s KILL $test_timeout "\$@" 2>&1
	echo "@@FP end rc=\$?"
}
$(for p in ${VM_RUN:-}; do echo "run ./${p//,/ }"; done)
rmmod fiber_preempt
echo "@@FP rmmod rc=\$?"
$(for p in ${VM_AFTER:-}; do echo "run ./${p//,/ }"; done)
echo "@@FP begin dmesg"
dmesg
echo "@@FP end rc=0"
echo "@@FP done"
poweroff -f
INIT
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$out/initramfs.gz"

case $arch in
x86_64)
	qemu=(qemu-system-x86_64 -machine q35 -cpu max)
	# Emulated, the TSC drifts from the HPET under load: the kernel's
	# clocksource watchdog then calls it unstable and patches
	# sched_clock's static key, and on 6.12 under TCG a vCPU hits the
	# patch's int3 unhandled (an oops in sched_clock_cpu, every run).
	console=ttyS0
	kargs=tsc=reliable
	;;
aarch64)
	# Pointer authentication with QEMU's own cheap hash rather than the
	# architected QARMA: the same instructions and faults, and the
	# kernel's signed return addresses no longer dominate the emulation
	# (a boot 15 s instead of 21; bench/preempt's kmod preemption 59 us
	# instead of 224).
	qemu=(qemu-system-aarch64 -machine virt -cpu max,pauth-impdef=on)
	console=ttyAMA0
	kargs=
	;;
*)
	echo "vm-run.sh: unsupported VM_ARCH=$arch" >&2
	exit 1
	;;
esac
[ "$accel" = kvm ] && qemu[2]=host

# Boots the guest; 1 if it got stuck before reporting the module load, 2
# if it died before our init ran. Rarely, under TCG, a vCPU runs code that
# another is patching (static keys): at insmod a guest then hangs with
# both vCPUs spinning, and at boot 7.x dies on an int3 in the timekeeping
# read path (its switch to the TSC clocksource enables the inlined TSC
# read), about one boot in 25. Such a boot is retried, at most twice, and
# the retry is reported in vm.tap.
boot() {
	local qpid waited=0
	rc=0
	timeout -s KILL "$timeout" "${qemu[@]}" -accel "$accel" -smp "$smp" -m "$mem" \
		-nodefaults -display none -no-reboot \
		"${disk[@]}" \
		-serial "file:$out/console.log" \
		-kernel "$VM_KERNEL" -initrd "$out/initramfs.gz" \
		-append "console=$console $kargs panic=-1 quiet" \
		2> "$out/qemu.stderr" &
	qpid=$!
	while kill -0 "$qpid" 2>/dev/null && ! grep -q '^@@FP insmod rc=' "$out/console.log" 2>/dev/null; do
		if [ "$waited" -ge "$load_timeout" ]; then
			kill -TERM "$qpid"
			wait "$qpid" || true
			return 1
		fi
		sleep 1
		waited=$((waited + 1))
	done
	wait "$qpid" || rc=$?
	grep -q '^@@FP kernel ' "$out/console.log" || return 2
	return 0
}

load_timeout=${VM_LOAD_TIMEOUT:-120}
retries=()
start=$(date +%s)
rc=0
for attempt in 1 2 3; do
	failed=0
	boot || failed=$?
	[ "$failed" = 0 ] && break
	if [ "$failed" = 1 ]; then
		retries+=("boot $attempt got no further than '$(tr -d '\r' < "$out/console.log" | tail -n 1)' in ${load_timeout} s")
		rc=124
	else
		retries+=("boot $attempt died before our init: '$(tr -d '\r' < "$out/console.log" |
			grep -m1 -E 'Oops|BUG:|panic' || echo no kernel message)'")
	fi
	[ "$attempt" -lt 3 ] && mv "$out/console.log" "$out/console.stuck$attempt.log"
done
echo "vm-run.sh: VM ran $(( $(date +%s) - start )) s (qemu exit $rc); console: $out/console.log" >&2

# Split the console into one file per guest program.
tr -d '\r' < "$out/console.log" | awk -v dir="$out" '
	/^@@FP begin / {
		name = substr($0, 12); sub("^\\./", "", name); gsub("[ /]", "_", name)
		file = dir "/" name ".out"; printf "" > file; next
	}
	/^@@FP end /   { if (file) { print $0 >> file; close(file) } file = ""; next }
	file           { print >> file }
'

# Checks of the VM run itself.
n=0
tap() { n=$((n + 1)); echo "$1 $n - vm($arch): $2" >> "$out/vm.tap"; }
log=$(tr -d '\r' < "$out/console.log")
if grep -q '^@@FP kernel ' <<<"$log"; then
	tap ok "booted $(grep -m1 '^@@FP kernel ' <<<"$log" | cut -d' ' -f3-)"
else
	tap "not ok" "guest booted to our init"
fi
grep -q '^@@FP insmod rc=0' <<<"$log" && tap ok "module loaded" || tap "not ok" "module loaded"
if [ -n "${VM_DISK:-}" ] && [ ${#disk[@]} = 0 ]; then
	tap ok "ext4 disk # SKIP its modules are not in VM_KMODS=${VM_KMODS:-}"
elif [ -n "${VM_DISK:-}" ]; then
	grep -q '^@@FP disk rc=0' <<<"$log" && tap ok "ext4 disk mounted at /mnt/ext4" ||
		tap "not ok" "ext4 disk mounted at /mnt/ext4"
fi
grep -q '^@@FP rmmod rc=0' <<<"$log" && tap ok "module unloaded cleanly" || tap "not ok" "module unloaded cleanly"
if grep -q '^@@FP done' <<<"$log"; then
	tap ok "ran to the end and powered off"
else
	tap "not ok" "ran to the end and powered off (hang, crash or timeout after ${timeout}s)"
fi
# A stack dump is "Call Trace:" on x86, "Call trace:" on arm64. A debug
# kernel's checkers (make check-debug) report through WARN() or BUG() too,
# but each also has a line of its own, matched by name in case a report's
# header is lost from the log: DEBUG_OBJECTS (ODEBUG:), lockdep's own
# assertions, DEBUG_LIST, HARDENED_USERCOPY, FORTIFY_SOURCE,
# DEBUG_ATOMIC_SLEEP, PROVE_RCU.
bad='WARNING:|BUG:|Oops|general protection|Kernel panic|lockdep|possible (recursive|circular) locking|INFO: task .* blocked|rcu.*stall|Call [Tt]race:|UBSAN|KASAN|refcount_t:'
bad+='|ODEBUG:|DEBUG_LOCKS_WARN_ON|list_(add|del) corruption|usercopy: Kernel memory|detected buffer overflow'
bad+='|kernel BUG at|scheduling while atomic|sleeping function called from invalid context|suspicious RCU usage'
# The kernel log without the lines that match but report nothing (a
# lockdep kernel's boot banner), nor the stack traces of the OOM-killer
# reports that a test announced: their "Call Trace:" lines and their
# frames (function+offset/size, on a debug kernel some named lockdep_*)
# go, and only inside such a report, so anything else still counts, a
# warning printed in the middle of one included (by its "WARNING:" line).
tr -d '\r' < "$out/console.log" | grep -v 'RCU lockdep checking is enabled' | awk '
	/fiber_preempt selftest: OOM kill expected/ { expected = 1 }
	/fiber_preempt selftest: OOM kill over/     { expected = 0; report = 0 }
	expected && /invoked oom-killer: /          { report = 1 }
	report && /Call [Tt]race:/                  { next }
	report && /^\[[ 0-9.]+\] +(\? )?[A-Za-z0-9_.]+\+0x[0-9a-f]+\/0x[0-9a-f]+( \[[A-Za-z0-9_]+\])?$/ { next }
	report && /Killed process [0-9]+ /          { report = 0 }
	{ print }
' > "$out/console.checked.log"
if grep -Eq "$bad" "$out/console.checked.log"; then
	tap "not ok" "guest kernel log clean"
	# sed, not head, reads to the end: grep killed by SIGPIPE would end
	# the script here (pipefail) with no tap line for the report.
	grep -E -B2 -A20 "$bad" "$out/console.checked.log" | sed -n '1,60s/^/# /p' >> "$out/vm.tap"
	grep -E "$bad" "$out/console.checked.log" | sed -n "1,5s/^/vm-run.sh: guest kernel log: /p" >&2
else
	tap ok "guest kernel log clean"
fi
for r in "${retries[@]}"; do
	echo "# $r" >> "$out/vm.tap"
done
echo "1..$n" >> "$out/vm.tap"
