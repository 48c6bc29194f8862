# SPDX-License-Identifier: GPL-2.0
#
# make            build the module, libfiber, the selftests, examples, benchmarks
# make check      every test: natively on this machine and in a QEMU VM with the module
# make check-kernels  only the kernel matrix (KERNELS): the module built and the
#                 VM suite run for each of those kernels
# make check-debug  the VM suite on a debug kernel of our own (KASAN,
#                 lockdep, DEBUG_ATOMIC_SLEEP, DEBUG_OBJECTS, ...): a kernel
#                 report from any test fails it; not part of make check
# make demo       the fairness demo in the VM: preemption on, then off
# make bench      the benchmarks, each figure printed with its method; charts
#                 of the VM's figures in build/bench/*.svg
# make soak       the register-integrity test in each VM (ARCHES) for
#                 SOAK_PREEMPTIONS kmod preemptions (10^7: long, see README)
# make deps       install the Debian packages all of this needs
#
# ARCH=arm64      build for, and run the VM lane of, arm64 (default x86_64);
#                 make check runs every lane in ARCHES (default: both)
# KVER=, KDIR=    build the module for another kernel (default: the kernel of
#                 Debian's linux-headers-amd64, which the VM boots); on a real
#                 machine: make KDIR=/lib/modules/$(uname -r)/build
# KERNELS=        the other kernels make check builds the module for (x86_64
#                 and arm64) and boots (x86_64), each series:suite of Debian's
#                 (default 6.12:bookworm-backports 7.3:trixie-backports);
#                 KERNELS= for none; make check-kernels runs only those
# CHROOT=trixie   build the module in a Debian chroot of that release (made
#                 once under build/chroot/), for headers whose kbuild tools
#                 need its libraries (make check does so for trixie's kernels)
# VM_ACCEL=kvm    use KVM for the VM (default tcg: software emulation)

ARCH       ?= x86_64
ARCHES     ?= x86_64 arm64
KERNELS    ?= 6.12:bookworm-backports 7.3:trixie-backports
# Debian's amd64 and arm64 kernels come from one source upload: one ABI.
KVER_AMD64 ?= $(shell scripts/kver.sh amd64)
HOST_ARCH  := $(shell uname -m)

ifeq ($(ARCH),arm64)
BUILD      ?= build/arm64
TARGET     := aarch64
KVER       ?= $(subst -amd64,-arm64,$(KVER_AMD64))
# Debian's arm64 kernel, headers and busybox, unpacked from their packages.
ARM64_ROOT  = $(O)/debian-arm64
KDIR       ?= $(ARM64_ROOT)/usr/src/linux-headers-$(KVER)
VMLINUZ    ?= $(ARM64_ROOT)/boot/vmlinuz-$(KVER)
KBUILD_ARCH := ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu-
# liburing for arm64 is unpacked with the kernel and copied next to
# libfiber.so, which finds it there ($ORIGIN).
URING_LIBDIR = $(ARM64_ROOT)/usr/lib/aarch64-linux-gnu
URING_DEP   = $(KDIR)/Makefile
CPPFLAGS   += -I$(ARM64_ROOT)/usr/include
LDFLAGS    += -L$(URING_LIBDIR)
LIB_RPATH   = -Wl,-rpath,'$$ORIGIN'
VM_ENV      = VM_ARCH=aarch64 VM_BUSYBOX=$(ARM64_ROOT)/bin/busybox \
	      VM_SYSROOT_LIBS="$(addprefix /usr/aarch64-linux-gnu/lib/,ld-linux-aarch64.so.1 libc.so.6 libgcc_s.so.1 libstdc++.so.6 libm.so.6) $(URING_LIBDIR)/liburing.so.2"
else ifeq ($(ARCH),x86_64)
BUILD      ?= build
TARGET     := x86_64
KVER       ?= $(KVER_AMD64)
KDIR       ?= /usr/src/linux-headers-$(KVER)
VMLINUZ    ?= /boot/vmlinuz-$(KVER)
else
$(error ARCH=$(ARCH): x86_64 and arm64 are supported)
endif
O          := $(abspath $(BUILD))

# Programs for another architecture are cross-built and run under qemu-user.
ifneq ($(TARGET),$(HOST_ARCH))
CROSS_COMPILE ?= $(TARGET)-linux-gnu-
RUN_TARGET := env QEMU_LD_PREFIX=/usr/$(TARGET)-linux-gnu qemu-$(TARGET)-static
endif
CC         := $(CROSS_COMPILE)gcc
CXX        := $(CROSS_COMPILE)g++
OBJCOPY    := $(CROSS_COMPILE)objcopy
AR         := $(CROSS_COMPILE)ar
CFLAGS     ?= -O2 -g
WARN       := -Wall -Wextra -Werror -Wno-unused-parameter
# The harness's macros compare ints with unsigned values; selftests build
# with -Wall as the kernel's own do.
KSFT_WARN  := -Wall -Werror
CPPFLAGS   += -Iuapi -Ilibfiber/include -D_GNU_SOURCE
KSFT_DIR   := $(O)/ksft
KSFT_INC   := $(KSFT_DIR)/tools/testing/selftests

# ---- the module -------------------------------------------------------------

# KERNEL=6.12 (set by make check's kernel lanes): the module built, and
# the VM suite run, for that kernel, apart from the default one's.
KSUFFIX    := $(if $(KERNEL),-$(KERNEL))
KBUILD_OUT := $(O)/kbuild$(KSUFFIX)
MODULE     := $(KBUILD_OUT)/kmod/fiber_preempt.ko
# CHROOT=trixie: kbuild runs in that chroot, which sees the source tree, the
# build directory and the unpacked kernel (KDIR's ../../..) at their own paths.
KBUILD_RUN := $(if $(CHROOT),scripts/debian-chroot.sh $(CHROOT) $(abspath build)/chroot/$(CHROOT) \
	      --bind $(KBUILD_OUT) --bind $(abspath $(KDIR)/../../..) --)

.PHONY: all module lib selftests examples benches check check-kernels check-debug kernel-lanes vm-check \
	host-check demo bench deps checkpatch checkpatch-check man-check consumer-check \
	dkms-check ksft-tree ksft-check dkms-install dkms-uninstall clean install soak soak-vm FORCE

all: module lib selftests examples benches

ifeq ($(ARCH),arm64)
$(KDIR)/Makefile:
	scripts/debian-arm64.sh $(KVER) $(ARM64_ROOT)
else
$(KDIR)/Makefile:
	@echo "error: no kernel headers at $(KDIR); run 'make deps' or set KDIR=" >&2
	@exit 1
endif

# Kbuild writes into the source directory, so the module is built in a copy.
module: $(MODULE)
$(MODULE): Kbuild kmod/*.c kmod/*.h kmod/Kbuild kmod/arch/*/*.h uapi/linux/*.h | $(KDIR)/Makefile
	@grep -q '^CONFIG_PREEMPT_NOTIFIERS=y' $(KDIR)/.config || \
		{ echo "error: $(KDIR) lacks CONFIG_PREEMPT_NOTIFIERS=y" >&2; exit 1; }
	@mkdir -p $(KBUILD_OUT)
	cp -r Kbuild kmod uapi $(KBUILD_OUT)/
	$(KBUILD_RUN) $(MAKE) -C $(KDIR) M=$(KBUILD_OUT) $(KBUILD_ARCH) modules

# ---- libfiber ---------------------------------------------------------------

LIB_ARCH   := $(TARGET)
LIB_DIR    := libfiber
LIB_SRCS   := $(LIB_DIR)/sched.c $(LIB_DIR)/runq.c $(LIB_DIR)/lock.c $(LIB_DIR)/io.c $(LIB_DIR)/preempt.c $(LIB_DIR)/unwind.c $(LIB_DIR)/backtrace.c $(LIB_DIR)/dump.c $(LIB_DIR)/stall.c $(LIB_DIR)/symbols.c $(LIB_DIR)/sigmask.c $(LIB_DIR)/sync.c $(LIB_DIR)/arch/$(LIB_ARCH)/context.c \
	      $(LIB_DIR)/arch/$(LIB_ARCH)/switch.S $(LIB_DIR)/arch/$(LIB_ARCH)/upcall.S
LIB_OBJS   := $(patsubst $(LIB_DIR)/%,$(O)/libfiber/%.o,$(LIB_SRCS))
LIB_HDRS   := $(wildcard $(LIB_DIR)/*.h $(LIB_DIR)/include/*.h $(LIB_DIR)/arch/*/*.h) uapi/linux/fiber_preempt.h
LIB_CFLAGS := $(CPPFLAGS) -I$(LIB_DIR) -I$(LIB_DIR)/arch/$(LIB_ARCH) $(CFLAGS) $(WARN) \
	      -fPIC -fno-reorder-blocks-and-partition
LIBFIBER_A := $(O)/lib/libfiber.a
LIBFIBER_SO := $(O)/lib/libfiber.so

lib: $(LIBFIBER_A) $(LIBFIBER_SO)

# All of libfiber's code goes to one section, libfiber_text, so that a
# statically linked program can tell it from its own (__start_/__stop_).
$(O)/libfiber/%.o: $(LIB_DIR)/% $(LIB_HDRS) | $(URING_DEP)
	@mkdir -p $(dir $@)
	$(CC) $(LIB_CFLAGS) -c -o $@.tmp $<
	$(OBJCOPY) --rename-section .text=libfiber_text $@.tmp $@
	@rm -f $@.tmp

$(LIBFIBER_A): $(LIB_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@
	$(AR) rcs $@ $^

$(LIBFIBER_SO): $(LIB_OBJS) $(LIB_DIR)/libfiber.map
	@mkdir -p $(dir $@)
	$(CC) -shared -o $@.1 -Wl,-soname,libfiber.so.1 \
		-Wl,--version-script,$(LIB_DIR)/libfiber.map -Wl,-z,noexecstack \
		$(LIB_OBJS) $(LDFLAGS) $(LIB_RPATH) -luring -pthread -ldl
	$(if $(URING_LIBDIR),cp -L $(URING_LIBDIR)/liburing.so.2 $(dir $@))
	ln -sf libfiber.so.1 $@

# Programs link libfiber dynamically, as users' programs do.
LINK_FIBER := -L$(O)/lib -lfiber -Wl,-rpath,'$$ORIGIN/../lib' -pthread

# ---- selftests --------------------------------------------------------------

# Tests of the device alone, and of libfiber in every mode (these also run
# natively, where the kmod variants skip).
SELFTESTS_DEV := device register threads lifetime cpu_time fuzz
SELFTESTS_LIB := fibers fairness preempt_disable errno libc_safety libc_safety_static \
		 safe_points own_malloc preempt_libs sigmask locks locks_static cxa_guard lifecycle slices \
		 signal_handler rseq regs unwind unwind_insn io mutex stealing server backtrace dump stall \
		 tracepoints limits faults \
		 $(if $(filter aarch64,$(TARGET)),sve)
SELFTESTS_AFTER := unloaded
SELFTESTS_VM := $(SELFTESTS_DEV) $(SELFTESTS_LIB)
SELFTEST_BINS := $(addprefix $(O)/selftests/,$(SELFTESTS_VM) $(SELFTESTS_AFTER))
# The device fuzzer runs its own default (60 s or 1,000,000 operations) in
# the first lane, x86_64 on the default kernel, and FUZZ_SECONDS in the
# others (arm64, the kernel matrix); FUZZ_SECONDS=300 for a longer soak
# (with VM_TEST_TIMEOUT=600 in the environment).
FUZZ_SECONDS ?= $(if $(KERNEL)$(filter arm64,$(ARCH)),20)
VM_RUN_TESTS = $(patsubst fuzz,fuzz$(if $(FUZZ_SECONDS),$(comma)--seconds$(comma)$(FUZZ_SECONDS)),$(SELFTESTS_VM))
KSFT_CFLAGS = $(CPPFLAGS) -I$(KSFT_INC) $(CFLAGS) $(KSFT_WARN)

$(KSFT_INC)/kselftest_harness.h:
	scripts/kselftest-headers.sh $(KSFT_DIR)

selftests: $(SELFTEST_BINS)
$(addprefix $(O)/selftests/,$(SELFTESTS_DEV) $(SELFTESTS_AFTER)): $(O)/selftests/%: \
		selftests/%.c selftests/*.h uapi/linux/*.h $(KSFT_INC)/kselftest_harness.h
	@mkdir -p $(dir $@)
	$(CC) $(KSFT_CFLAGS) -o $@ $< -pthread

$(O)/selftests/regs: selftests/regs_$(LIB_ARCH).S
$(O)/selftests/rseq: selftests/rseq_$(LIB_ARCH).S
$(O)/selftests/sve: selftests/sve_$(LIB_ARCH).S
# It runs examples/httpd, found beside it or in ../examples.
$(O)/selftests/server: $(O)/examples/httpd
# It defines fiber_upcall_inject for libfiber and walks with libgcc's unwinder.
$(O)/selftests/unwind: KSFT_LDLIBS := -rdynamic -lgcc_s
$(O)/selftests/fibers: KSFT_LDLIBS := -lm
# It names the frames it finds with dladdr().
$(O)/selftests/backtrace: KSFT_LDLIBS := -rdynamic -ldl
# libfiber linked into the program itself: its own code must still be
# told from the program's (the libfiber_text section), and the program's
# lock calls must still reach libfiber's.
$(O)/selftests/%_static: selftests/%.c selftests/*.h $(LIB_HDRS) \
		$(KSFT_INC)/kselftest_harness.h $(LIBFIBER_A)
	@mkdir -p $(dir $@)
	$(CC) $(KSFT_CFLAGS) -o $@ $< $(LIBFIBER_A) $(LDFLAGS) -l:liburing.a -pthread -ldl

# A library of its own to opt in to preemption.
TEST_LIBSPIN := $(O)/selftests/libfiber_test_spin.so
$(TEST_LIBSPIN): selftests/libspin.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(KSFT_WARN) -shared -fPIC -o $@ $<
$(O)/selftests/preempt_libs $(O)/selftests/stall: $(TEST_LIBSPIN)
$(O)/selftests/preempt_libs $(O)/selftests/stall: \
	KSFT_LDLIBS := -L$(O)/selftests -lfiber_test_spin -Wl,-rpath,'$$ORIGIN'

# C++: function-local statics and their guards.
$(O)/selftests/cxa_guard: selftests/cxa_guard.c selftests/cxa_guard_static.cc selftests/*.h \
		$(LIB_HDRS) $(KSFT_INC)/kselftest_harness.h $(LIBFIBER_SO)
	@mkdir -p $(dir $@)
	$(CC) $(KSFT_CFLAGS) -c -o $@.o $<
	$(CXX) $(CPPFLAGS) $(CFLAGS) $(KSFT_WARN) -c -o $@.cc.o selftests/cxa_guard_static.cc
	$(CXX) -o $@ $@.o $@.cc.o $(LINK_FIBER)
	@rm -f $@.o $@.cc.o

# It calls the internal stack walker, so it links libfiber.a.
$(O)/selftests/unwind_insn: selftests/unwind_insn.c selftests/*.h $(LIB_HDRS) \
		$(KSFT_INC)/kselftest_harness.h $(LIBFIBER_A)
	@mkdir -p $(dir $@)
	$(CC) $(KSFT_CFLAGS) -I$(LIB_DIR) -I$(LIB_DIR)/arch/$(LIB_ARCH) -o $@ $< $(LIBFIBER_A) \
		$(LDFLAGS) -rdynamic -l:liburing.a -pthread -ldl

# regs.c again, with only its soak (make soak), for SOAK_PREEMPTIONS
# preemptions on SOAK_WORKERS workers. One worker by default: on a host of
# two CPUs an emulated guest whose two vCPUs both spin leaves no CPU to the
# emulator's own thread, which runs the guest's timers, and slices of
# 100 us stretch to about 1 ms (1,700 preemptions/s against 7,800 with
# one worker; the guest keeps two vCPUs, so the worker still moves).
SOAK_PREEMPTIONS ?= 10000000
SOAK_WORKERS     ?= 1
$(O)/selftests/regs_soak: selftests/regs.c selftests/regs_$(LIB_ARCH).S selftests/*.h $(LIB_HDRS) \
		$(KSFT_INC)/kselftest_harness.h $(LIBFIBER_SO) FORCE
	@mkdir -p $(dir $@)
	$(CC) $(KSFT_CFLAGS) -DREGS_SOAK=$(SOAK_PREEMPTIONS)ULL -DREGS_SOAK_WORKERS=$(SOAK_WORKERS) -o $@ $< $(filter %.S,$^) $(LINK_FIBER)

# It single-steps a worker into the upcall trampoline, whose bounds
# (hidden symbols) a program sees only with libfiber.a linked in.
$(O)/selftests/faults: selftests/faults.c selftests/*.h $(LIB_HDRS) \
		$(KSFT_INC)/kselftest_harness.h $(LIBFIBER_A)
	@mkdir -p $(dir $@)
	$(CC) $(KSFT_CFLAGS) -o $@ $< $(LIBFIBER_A) $(LDFLAGS) -l:liburing.a -pthread -ldl

$(addprefix $(O)/selftests/,$(filter-out %_static unwind_insn cxa_guard faults,$(SELFTESTS_LIB))): $(O)/selftests/%: \
		selftests/%.c selftests/*.h $(LIB_HDRS) $(KSFT_INC)/kselftest_harness.h $(LIBFIBER_SO)
	@mkdir -p $(dir $@)
	$(CC) $(KSFT_CFLAGS) -o $@ $< $(filter %.S,$^) $(LINK_FIBER) $(KSFT_LDLIBS)

# The device's tests as a kselftest directory (selftests/Makefile, config,
# settings), copied into the kernel tree the harness comes from and built
# there by the kernel's own lib.mk.
KSFT_FP    := $(KSFT_INC)/fiber_preempt
KSFT_FP_FILES := Makefile config settings fp_dev.h $(addsuffix .c,$(SELFTESTS_DEV))
$(KSFT_INC)/lib.mk: | $(KSFT_INC)/kselftest_harness.h
	test -f $@ || scripts/kselftest-headers.sh $(KSFT_DIR)
ksft-tree: $(KSFT_INC)/lib.mk $(addprefix selftests/,$(KSFT_FP_FILES)) uapi/linux/fiber_preempt.h
	@mkdir -p $(KSFT_FP)/include/linux
	cp $(addprefix selftests/,$(KSFT_FP_FILES)) $(KSFT_FP)/
	cp uapi/linux/fiber_preempt.h $(KSFT_FP)/include/linux/

# The same built by lib.mk and installed by the kernel's selftests
# Makefile (run_kselftest.sh, kselftest-list.txt), as TAP; dkms-check runs
# the install in the VM.
KSFT_INSTALL := $(O)/kselftest
ksft-check: ksft-tree
	@mkdir -p $(RESULTS)/ksft
	@{ rm -rf $(KSFT_INSTALL); \
	  if $(MAKE) --no-print-directory -C $(KSFT_FP) CROSS_COMPILE=$(CROSS_COMPILE) \
		> $(O)/ksft-build.log 2>&1; then \
		echo "ok 1 kselftest: fiber_preempt builds with the kernel's lib.mk"; \
	  else echo "not ok 1 kselftest: fiber_preempt builds with the kernel's lib.mk"; \
		tail -n 20 $(O)/ksft-build.log | sed 's/^/# /'; fi; \
	  if ! command -v rsync > /dev/null; then \
		echo "ok 2 kselftest: install # SKIP no rsync (make deps installs it)"; \
	  elif $(MAKE) --no-print-directory -C $(KSFT_INC) TARGETS=fiber_preempt \
		CROSS_COMPILE=$(CROSS_COMPILE) INSTALL_PATH=$(KSFT_INSTALL) install \
		> $(O)/ksft-install.log 2>&1 && \
		[ "$$(grep -c '^fiber_preempt:' $(KSFT_INSTALL)/kselftest-list.txt)" = \
		  $(words $(SELFTESTS_DEV)) ]; then \
		echo "ok 2 kselftest: fiber_preempt installs ($(SELFTESTS_DEV))"; \
	  else echo "not ok 2 kselftest: fiber_preempt installs"; \
		tail -n 20 $(O)/ksft-install.log | sed 's/^/# /'; fi; \
	  echo "1..2"; } > $(RESULTS)/ksft/ksft.tap

# Tests run natively only, by a driver of their own (selftests/NAME.sh
# PROGRAM [RUN_TARGET]): gdb.sh debugs the program with gdb and
# scripts/gdb/libfiber.py.
SELFTESTS_HOST := gdb
SELFTEST_HOST_BINS := $(addprefix $(O)/selftests/,$(SELFTESTS_HOST))
selftests: $(SELFTEST_HOST_BINS)
$(SELFTEST_HOST_BINS): $(O)/selftests/%: selftests/%.c selftests/*.h $(LIB_HDRS) $(LIBFIBER_SO)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(KSFT_WARN) -o $@ $< $(LINK_FIBER)

# ---- examples ---------------------------------------------------------------

EXAMPLES := fairness httpd
EXAMPLE_BINS := $(addprefix $(O)/examples/,$(EXAMPLES))

examples: $(EXAMPLE_BINS)
# The HTTP servers share their parser (examples/http.c).
HTTP_SRCS := examples/http.c examples/http.h
$(O)/examples/httpd: $(HTTP_SRCS)
$(O)/examples/%: examples/%.c $(LIB_HDRS) $(LIBFIBER_SO)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -o $@ $(filter %.c,$^) $(LINK_FIBER)

comma := ,

# ---- benchmarks -------------------------------------------------------------

BENCHES := switch sched io preempt unwind upcall locks slices uring_plain loadgen \
	   $(if $(filter aarch64,$(TARGET)),sigreturn)
BENCH_BINS := $(addprefix $(O)/bench/,$(BENCHES))
BENCH_VM_RUN := preempt,cost upcall unwind slices preempt,slices $(if $(filter aarch64,$(TARGET)),sigreturn preempt$(comma)sve)
# The server benchmark: httpd, the plain loop, the load generator and wrk,
# all in the guest (x86_64: wrk is the host's, with its libraries).
SERVER_BENCH := $(O)/examples/httpd $(O)/bench/uring_plain $(O)/bench/loadgen bench/server.sh
SERVER_VM_FILES := $(if $(filter x86_64,$(TARGET)),$(SERVER_BENCH) $(shell command -v wrk))
SERVER_VM_RUN := $(if $(filter x86_64,$(TARGET)),server.sh$(comma)--modes$(comma)kmod+signal+off)

benches: $(BENCH_BINS)
# They time libfiber's internals (the stack walker, the trampoline), so they
# link libfiber.a.
$(O)/bench/unwind $(O)/bench/upcall: $(O)/bench/%: bench/%.c $(LIB_HDRS) $(LIBFIBER_A)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -I$(LIB_DIR) -I$(LIB_DIR)/arch/$(LIB_ARCH) $(CFLAGS) $(WARN) -o $@ $< \
		$(LIBFIBER_A) $(LDFLAGS) -l:liburing.a -pthread -ldl
$(O)/bench/sigreturn: bench/sigreturn_aarch64.S
# The plain liburing server and the load generator use no libfiber (on
# arm64 they find liburing next to it).
URING_RPATH := $(if $(URING_LIBDIR),-Wl$(comma)-rpath$(comma)'$$ORIGIN/../lib')
$(O)/bench/uring_plain: bench/uring_plain.c $(HTTP_SRCS) | $(URING_DEP)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -Iexamples $(CFLAGS) $(WARN) -o $@ $(filter %.c,$^) $(LDFLAGS) -luring \
		$(URING_RPATH)
$(O)/bench/loadgen: bench/loadgen.c | $(URING_DEP)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -o $@ $< $(LDFLAGS) -luring $(URING_RPATH)
# bench/io drives a ring of its own too.
BENCH_LIBS_io := $(LDFLAGS) -luring
$(O)/bench/%: bench/%.c $(LIB_HDRS) $(LIBFIBER_SO)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -Iselftests $(CFLAGS) $(WARN) -o $@ $< $(filter %.S,$^) $(LINK_FIBER) \
		$(BENCH_LIBS_$(notdir $@))

# User-space costs natively; preemption costs in the VM, where the module
# runs (under TCG the ratios mean something, the absolute times do not).
bench:
	@scripts/deps.sh --if-missing
	@$(MAKE) --no-print-directory all
	@echo "== $(TARGET) on this $$(uname -m) machine$(if $(RUN_TARGET), under qemu-user), $$(nproc) CPUs"
	@$(RUN_TARGET) $(O)/bench/switch
	@$(RUN_TARGET) $(O)/bench/sched
	@$(RUN_TARGET) $(O)/bench/io
	@$(RUN_TARGET) $(O)/bench/preempt cost
	@$(RUN_TARGET) $(O)/bench/unwind
	@$(RUN_TARGET) $(O)/bench/upcall
	@$(RUN_TARGET) $(O)/bench/locks
	@$(RUN_TARGET) $(O)/bench/slices
	@$(if $(RUN_TARGET),echo "server: SKIP natively: qemu-user has no io_uring",bench/server.sh --bin $(O))
	@echo "== VM ($(TARGET), -accel $(or $(VM_ACCEL),tcg), Debian $(KVER))"
	@$(VM_ENV) VM_OUT=$(O)/bench-vm VM_KERNEL=$(VMLINUZ) VM_MODULE=$(MODULE) \
	VM_FILES="$(BENCH_BINS) $(SERVER_VM_FILES) $(LIBFIBER_SO).1" \
	VM_RUN="$(BENCH_VM_RUN) $(SERVER_VM_RUN)" scripts/vm-run.sh
	@cat $(addprefix $(O)/bench-vm/,$(addsuffix .out,$(subst $(comma),_,$(BENCH_VM_RUN) $(SERVER_VM_RUN)))) | \
		grep -v '^@@FP'
	@scripts/bench-plot.sh $(O)/bench "$(TARGET) VM, $(or $(VM_ACCEL),tcg), $(KVER)" \
		$(addprefix $(O)/bench-vm/,$(addsuffix .out,$(subst $(comma),_,$(BENCH_VM_RUN) $(SERVER_VM_RUN))))

# ---- tests ------------------------------------------------------------------

# Every test program's TAP ends up under $(RESULTS), one folder per lane;
# the summary reads them all.
RESULTS ?= $(abspath build)/results

deps:
	scripts/deps.sh

# The first target a fresh machine runs: install what is missing, then run
# every lane: natively (or under qemu-user) and in the VM, per architecture.
check:
	@scripts/deps.sh --if-missing
	@rm -rf $(RESULTS)
	@for a in $(ARCHES); do \
		mkdir -p $(RESULTS)/lane-$$a; \
		built=ok; ran=ok; \
		$(MAKE) --no-print-directory ARCH=$$a RESULTS=$(RESULTS) all || built="not ok"; \
		$(MAKE) --no-print-directory -k ARCH=$$a RESULTS=$(RESULTS) host-check vm-check; \
		[ -f $(RESULTS)/vm-$$a/vm.tap ] || ran="not ok"; \
		printf '%s 1 lane %s: build\n%s 2 lane %s: the VM ran\n' \
			"$$built" $$a "$$ran" $$a > $(RESULTS)/lane-$$a/lane.tap; \
	done; true
	@$(MAKE) --no-print-directory RESULTS=$(RESULTS) kernel-lanes
	@$(MAKE) --no-print-directory RESULTS=$(RESULTS) checkpatch-check man-check consumer-check \
		ksft-check dkms-check
	@scripts/tap-summary.sh $(RESULTS)/*/*.out $(RESULTS)/*/*.tap

# The kernel matrix: for each series:suite in KERNELS, the module built for
# Debian's amd64 and arm64 kernel of that series, and the VM suite run on
# the amd64 one. A suite of another Debian release than this machine's
# (trixie-backports here) builds in a chroot of that release.
kernel-lanes:
	@host=$$(. /etc/os-release && echo "$$VERSION_CODENAME"); \
	for k in $(KERNELS); do \
		series=$${k%%:*}; suite=$${k#*:}; root=$(abspath build)/kernels/$$series; \
		release=$${suite%%-*}; chroot=; [ "$$release" = "$$host" ] || chroot=$$release; \
		mkdir -p $(RESULTS)/lane-x86_64-$$series; \
		built=ok; ran=ok; arm64=ok; \
		[ "$$(cat $$root/kver-arm64 2>/dev/null)" ] || \
			scripts/debian-kernel.sh $$suite $$series $$root || built="not ok"; \
		kver=$$(cat $$root/kver 2>/dev/null); karm=$$(cat $$root/kver-arm64 2>/dev/null); \
		kargs="ARCH=x86_64 KERNEL=$$series KVER=$$kver RESULTS=$(RESULTS) CHROOT=$$chroot \
			KDIR=$$root/usr/src/linux-headers-$$kver VMLINUZ=$$root/boot/vmlinuz-$$kver"; \
		[ "$$built" = ok ] && { $(MAKE) --no-print-directory $$kargs module || built="not ok"; }; \
		[ "$$built" = ok ] && $(MAKE) --no-print-directory -k $$kargs vm-check; \
		[ -f $(RESULTS)/vm-x86_64-$$series/vm.tap ] || ran="not ok"; \
		$(MAKE) --no-print-directory ARCH=arm64 KERNEL=$$series KVER=$$karm CHROOT=$$chroot \
			KDIR=$$root/usr/src/linux-headers-$$karm module || arm64="not ok"; \
		printf '%s 1 kernel %s: module built\n%s 2 kernel %s: the VM ran\n%s 3 kernel %s: arm64 module built\n' \
			"$$built" $$series "$$ran" $$series "$$arm64" $$series > $(RESULTS)/lane-x86_64-$$series/lane.tap; \
	done; true

# The kernel matrix alone (make check-kernels KERNELS="7.2:trixie-backports").
check-kernels:
	@scripts/deps.sh --if-missing
	@rm -rf $(RESULTS)
	@$(MAKE) --no-print-directory RESULTS=$(RESULTS) kernel-lanes
	@scripts/tap-summary.sh $(RESULTS)/*/*.out $(RESULTS)/*/*.tap

# The debug lane: the x86_64 VM suite on linux-source-6.1 built with
# scripts/debug-kernel.config (KASAN, lockdep, DEBUG_ATOMIC_SLEEP,
# DEBUG_OBJECTS, ...; scripts/debug-kernel.sh, reused from
# build/debug-kernel/ while its inputs are unchanged). The lane's TAP
# says the kernel and the module built and the VM ran; vm-run.sh fails
# the run on any report in the guest's log. The checks make the guest
# several times slower under TCG, hence the longer timeouts and
# FIBER_TEST_SLOWDOWN (tests that count events over wall-clock time run
# that much longer, wall-clock bounds are that much wider), and KASAN's
# shadow takes an eighth of its memory, hence the larger guest.
DEBUG_KERNEL := $(abspath build)/debug-kernel
DEBUG_KDIR   := $(DEBUG_KERNEL)/linux-source-6.1
DEBUG_VM_ENV := VM_TIMEOUT=$(or $(VM_TIMEOUT),3600) VM_TEST_TIMEOUT=$(or $(VM_TEST_TIMEOUT),900) \
		VM_LOAD_TIMEOUT=$(or $(VM_LOAD_TIMEOUT),600) VM_MEM=$(or $(VM_MEM),2048M) \
		VM_GUEST_ENV="FIBER_TEST_SLOWDOWN=$(or $(DEBUG_SLOWDOWN),4)"
check-debug:
	@scripts/deps.sh --if-missing
	@rm -rf $(RESULTS)
	@mkdir -p $(RESULTS)/lane-x86_64-debug
	@built=ok; module=ok; ran=ok; \
	scripts/debug-kernel.sh $(DEBUG_KERNEL) || built="not ok"; \
	kargs="ARCH=x86_64 KERNEL=debug KVER=$$(cat $(DEBUG_KDIR)/include/config/kernel.release 2>/dev/null) \
		KDIR=$(DEBUG_KDIR) VMLINUZ=$(DEBUG_KDIR)/arch/x86/boot/bzImage RESULTS=$(RESULTS) \
		FUZZ_SECONDS=$(or $(FUZZ_SECONDS),60) VM_KMODS=$(DEBUG_KDIR)"; \
	[ "$$built" = ok ] && { $(MAKE) --no-print-directory $$kargs module || module="not ok"; }; \
	[ "$$built" = ok ] && [ "$$module" = ok ] && \
		$(DEBUG_VM_ENV) $(MAKE) --no-print-directory -k $$kargs vm-check; \
	[ -f $(RESULTS)/vm-x86_64-debug/vm.tap ] || ran="not ok"; \
	printf '%s 1 debug kernel: built\n%s 2 debug kernel: module built\n%s 3 debug kernel: the VM ran\n' \
		"$$built" "$$module" "$$ran" > $(RESULTS)/lane-x86_64-debug/lane.tap; true
	@scripts/tap-summary.sh $(RESULTS)/*/*.out $(RESULTS)/*/*.tap

# Each program's TAP goes to NAME.out and its exit status to NAME.rc.
host-check: all
	@mkdir -p $(RESULTS)/host-$(ARCH)
	@for t in $(SELFTESTS_LIB); do \
		echo "== host ($(TARGET)): $$t"; \
		timeout -s KILL 600 $(RUN_TARGET) $(O)/selftests/$$t > $(RESULTS)/host-$(ARCH)/$$t.out 2>&1; \
		echo $$? > $(RESULTS)/host-$(ARCH)/$$t.rc; \
		grep -E '^(not )?ok |SKIP' $(RESULTS)/host-$(ARCH)/$$t.out || true; \
	done
	@for t in $(SELFTESTS_HOST); do \
		echo "== host ($(TARGET)): $$t"; \
		timeout -s KILL 600 selftests/$$t.sh $(O)/selftests/$$t $(RUN_TARGET) \
			> $(RESULTS)/host-$(ARCH)/$$t.out 2>&1; \
		echo $$? > $(RESULTS)/host-$(ARCH)/$$t.rc; \
		grep -E '^(not )?ok |SKIP' $(RESULTS)/host-$(ARCH)/$$t.out || true; \
	done

# The kernel's checkpatch.pl on the module. The trace header keeps the
# layout of the kernel's own (TRACE_EVENT() arguments, an EM() list of
# reasons), which --strict flags, so it is checked apart, without those.
CHECKPATCH := perl $(KSFT_DIR)/scripts/checkpatch.pl --no-tree --strict
TRACE_HDR  := kmod/fp_trace.h
CHECKPATCH_TRACE := --ignore OPEN_ENDED_LINE,PARENTHESIS_ALIGNMENT,COMPLEX_MACRO,TRAILING_SEMICOLON
KMOD_SRCS  = $(filter-out $(TRACE_HDR),$(wildcard kmod/*.c kmod/*.h kmod/arch/*/*.h))

# The same, as one TAP test.
checkpatch-check: $(KSFT_INC)/kselftest_harness.h
	@mkdir -p $(RESULTS)/style
	@( $(CHECKPATCH) --quiet -f $(KMOD_SRCS); r=$$?; \
	  $(CHECKPATCH) --quiet $(CHECKPATCH_TRACE) -f $(TRACE_HDR) || r=1; \
	  exit $$r ) > $(RESULTS)/style/checkpatch.log 2>&1; \
	if [ $$? -eq 0 ]; then echo "ok 1 checkpatch kmod/"; else \
		echo "not ok 1 checkpatch kmod/"; sed 's/^/# /' $(RESULTS)/style/checkpatch.log; \
	fi > $(RESULTS)/style/checkpatch.tap

# The man pages: each lints clean with groff, and every function fiber.h
# declares has one.
man-check:
	@mkdir -p $(RESULTS)/style
	@scripts/man-check.sh man $(LIB_DIR)/include/fiber.h > $(RESULTS)/style/man.tap; true

# A program built as a user's would be: against a staged make install,
# with pkg-config's flags only, dynamically and statically (host only).
consumer-check:
	@mkdir -p $(RESULTS)/consumer
	@$(if $(RUN_TARGET),echo "ok 1 consumer # SKIP $(TARGET) programs do not run natively here",\
		CC=$(CC) scripts/consumer-check.sh $(O)/consumer) > $(RESULTS)/consumer/consumer.tap; true

# DKMS builds the module for the default kernel (in a tree of its own),
# and the VM boots that kernel once with what it built and runs the
# device's tests there with run_kselftest.sh (ksft-check's install), the
# VM's own checks too (x86_64 only).
DKMS_VERSION := $(shell sed -n 's/^PACKAGE_VERSION="\(.*\)"$$/\1/p' dkms.conf)
dkms-check:
	@mkdir -p $(RESULTS)/dkms
	@[ -x $(KSFT_INSTALL)/run_kselftest.sh ] || $(MAKE) --no-print-directory ksft-check
	@$(if $(filter x86_64,$(TARGET)),VM_KERNEL=$(VMLINUZ) scripts/dkms-check.sh $(O)/dkms \
		$(DKMS_VERSION) $(KVER) $(KDIR) $(RESULTS)/dkms-vm $(KSFT_INSTALL),\
		echo "ok 1 dkms # SKIP the DKMS check runs for x86_64") > $(RESULTS)/dkms/dkms.tap; true

# The soak: the register-integrity test in the VM, kmod mode, until
# SOAK_PREEMPTIONS preemptions (10^7), per architecture of ARCHES; prints
# preemptions per second and the result.
soak:
	@scripts/deps.sh --if-missing
	@rm -rf $(RESULTS)
	@for a in $(ARCHES); do \
		$(MAKE) --no-print-directory ARCH=$$a RESULTS=$(RESULTS) soak-vm; \
	done; true
	@scripts/tap-summary.sh $(RESULTS)/*/*.out $(RESULTS)/*/*.tap

soak-vm: all $(O)/selftests/regs_soak
	$(VM_ENV) VM_OUT=$(RESULTS)/soak-$(ARCH)$(KSUFFIX) VM_KERNEL=$(VMLINUZ) VM_MODULE=$(MODULE) \
	VM_FILES="$(O)/selftests/regs_soak $(LIBFIBER_SO).1" VM_RUN=regs_soak \
	VM_TIMEOUT=86400 VM_TEST_TIMEOUT=86400 scripts/vm-run.sh
	@rm -rf $(RESULTS)/soak-$(ARCH)$(KSUFFIX)/root $(RESULTS)/soak-$(ARCH)$(KSUFFIX)/initramfs.gz
	@sed -n 's/^# .*:soak:level .*: \([0-9]*\) preemptions in \([0-9.]*\) s (\([0-9]*\)\/s).*/soak: arch=$(ARCH) preemptions=\1 seconds=\2 per_second=\3/p' \
		$(RESULTS)/soak-$(ARCH)$(KSUFFIX)/regs_soak.out
	@grep -E '^(not )?ok ' $(RESULTS)/soak-$(ARCH)$(KSUFFIX)/regs_soak.out | sed 's/^/soak: arch=$(ARCH) result: /'

# The booted kernel's modules tree (beside its boot/ in an unpacked
# package, /lib/modules for the host's own): the guest loads the drivers
# of its ext4 disk from there.
VM_KMODS   ?= $(firstword $(wildcard $(addprefix $(patsubst %/boot/vmlinuz-$(KVER),%,$(VMLINUZ)),\
	      /lib/modules/$(KVER) /usr/lib/modules/$(KVER))))
# A fresh ext4 file system for each run, on a virtio disk: tests that need
# a real block device's file system, not tmpfs, find it at /mnt/ext4.
VM_DISK    := $(O)/vm-ext4$(KSUFFIX).img

vm-check: all
	rm -f $(VM_DISK) && truncate -s 32M $(VM_DISK) && mkfs.ext4 -q -F -b 4096 $(VM_DISK)
	$(VM_ENV) VM_OUT=$(RESULTS)/vm-$(ARCH)$(KSUFFIX) VM_KERNEL=$(VMLINUZ) VM_MODULE=$(MODULE) \
	VM_FILES="$(SELFTEST_BINS) $(TEST_LIBSPIN) $(O)/examples/httpd $(LIBFIBER_SO).1" \
	VM_DISK=$(VM_DISK) VM_KMODS=$(VM_KMODS) \
	VM_RUN="$(VM_RUN_TESTS)" \
	VM_AFTER="$(SELFTESTS_AFTER)" scripts/vm-run.sh
	@rm -rf $(RESULTS)/vm-$(ARCH)$(KSUFFIX)/root $(RESULTS)/vm-$(ARCH)$(KSUFFIX)/initramfs.gz $(VM_DISK)

# The seed example in the VM: preemption by the module, by a signal, then
# none; then short requests to httpd beside long ones, preempted and not.
DEMO_SERVER_RUN := $(if $(filter x86_64,$(TARGET)),server.sh$(comma)--modes$(comma)kmod+off$(comma)--demo)
demo:
	@scripts/deps.sh --if-missing
	@$(MAKE) --no-print-directory all
	@$(VM_ENV) VM_OUT=$(O)/demo VM_KERNEL=$(VMLINUZ) VM_MODULE=$(MODULE) \
	VM_FILES="$(EXAMPLE_BINS) $(SERVER_VM_FILES) $(LIBFIBER_SO).1" \
	VM_RUN="fairness,--mode,kmod fairness,--mode,signal fairness,--mode,off $(DEMO_SERVER_RUN)" \
	scripts/vm-run.sh
	@cat $(addprefix $(O)/demo/fairness_--mode_,kmod.out signal.out off.out) | grep -v '^@@FP'
	@$(if $(DEMO_SERVER_RUN),cat $(O)/demo/$(subst $(comma),_,$(DEMO_SERVER_RUN)).out | grep -v '^@@FP')
	@grep -h '^fairness:' $(O)/demo/fairness_*.out | grep -q 'mode=kmod' || \
		{ echo "demo: the kmod run did not finish; see $(O)/demo/console.log" >&2; exit 1; }

checkpatch: $(KSFT_INC)/kselftest_harness.h
	$(CHECKPATCH) -f $(KMOD_SRCS)
	$(CHECKPATCH) $(CHECKPATCH_TRACE) -f $(TRACE_HDR)

PREFIX  ?= /usr/local
LIBDIR  ?= $(PREFIX)/lib
INCDIR  ?= $(PREFIX)/include
MANDIR  ?= $(PREFIX)/share/man

# libfiber for programs: the libraries, fiber.h, a pkg-config file, the man
# pages (a page per call or family, the others .so links to it, as
# liburing's; fiber_preempt(4) for the device).
install: lib
	install -d $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCDIR)
	install -m 644 $(LIBFIBER_A) $(DESTDIR)$(LIBDIR)/
	install -m 755 $(LIBFIBER_SO).1 $(DESTDIR)$(LIBDIR)/
	ln -sf libfiber.so.1 $(DESTDIR)$(LIBDIR)/libfiber.so
	install -m 644 $(LIB_DIR)/include/fiber.h $(DESTDIR)$(INCDIR)/
	install -d $(DESTDIR)$(MANDIR)/man3 $(DESTDIR)$(MANDIR)/man4
	install -m 644 man/*.3 $(DESTDIR)$(MANDIR)/man3/
	install -m 644 man/*.4 $(DESTDIR)$(MANDIR)/man4/
	sed -e 's|@PREFIX@|$(PREFIX)|; s|@LIBDIR@|$(LIBDIR)|; s|@INCDIR@|$(INCDIR)|' \
		$(LIB_DIR)/libfiber.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/libfiber.pc

# DKMS on this machine (root): the module's source goes to
# /usr/src/fiber-preempt-<version>, and DKMS builds and installs it for the
# running kernel, and again for each kernel installed later.
DKMS_SRC := /usr/src/fiber-preempt-$(DKMS_VERSION)
dkms-install:
	rm -rf $(DKMS_SRC)
	install -d $(DKMS_SRC)
	cp -r Kbuild kmod uapi dkms.conf $(DKMS_SRC)/
	dkms status -m fiber-preempt -v $(DKMS_VERSION) | grep -q . || \
		dkms add -m fiber-preempt -v $(DKMS_VERSION)
	dkms build -m fiber-preempt -v $(DKMS_VERSION)
	dkms install -m fiber-preempt -v $(DKMS_VERSION)

dkms-uninstall:
	dkms remove -m fiber-preempt -v $(DKMS_VERSION) --all
	rm -rf $(DKMS_SRC)

clean:
	rm -rf build

# A prerequisite that is always out of date: its target rebuilds every time.
FORCE:
