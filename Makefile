# SPDX-License-Identifier: GPL-2.0
#
# make            build the module, libfiber, the selftests, examples, benchmarks
# make check      every test: natively on this machine and in a QEMU VM with the module
# make demo       the fairness demo in the VM: preemption on, then off
# make bench      the benchmarks, each figure printed with its method
# make deps       install the Debian packages all of this needs
#
# KVER=, KDIR=    build the module for another kernel (default: the kernel of
#                 Debian's linux-headers-amd64, which the VM boots); on a real
#                 machine: make KDIR=/lib/modules/$(uname -r)/build
# VM_ACCEL=kvm    use KVM for the VM (default tcg: software emulation)

BUILD      ?= build
O          := $(abspath $(BUILD))
KVER       ?= $(shell scripts/kver.sh amd64)
KDIR       ?= /usr/src/linux-headers-$(KVER)
VMLINUZ    ?= /boot/vmlinuz-$(KVER)

CC         ?= gcc
CFLAGS     ?= -O2 -g
WARN       := -Wall -Wextra -Werror -Wno-unused-parameter
# The harness's macros compare ints with unsigned values; selftests build
# with -Wall as the kernel's own do.
KSFT_WARN  := -Wall -Werror
CPPFLAGS   += -Iuapi -Ilibfiber/include -D_GNU_SOURCE
KSFT_DIR   := $(O)/ksft
KSFT_INC   := $(KSFT_DIR)/tools/testing/selftests

# ---- the module -------------------------------------------------------------

MODULE     := $(O)/kbuild/kmod/fiber_preempt.ko

.PHONY: all module lib selftests check vm-check host-check demo bench deps \
	checkpatch clean install

all: module lib selftests

$(KDIR)/Makefile:
	@echo "error: no kernel headers at $(KDIR); run 'make deps' or set KDIR=" >&2
	@exit 1

# Kbuild writes into the source directory, so the module is built in a copy.
module: $(MODULE)
$(MODULE): Kbuild kmod/*.c kmod/Kbuild kmod/arch/*/*.h uapi/linux/*.h | $(KDIR)/Makefile
	@grep -q '^CONFIG_PREEMPT_NOTIFIERS=y' $(KDIR)/.config || \
		{ echo "error: $(KDIR) lacks CONFIG_PREEMPT_NOTIFIERS=y" >&2; exit 1; }
	@mkdir -p $(O)/kbuild
	cp -r Kbuild kmod uapi $(O)/kbuild/
	$(MAKE) -C $(KDIR) M=$(O)/kbuild modules

# ---- selftests --------------------------------------------------------------

SELFTESTS_VM := device register threads lifetime
SELFTESTS_AFTER := unloaded
SELFTEST_BINS := $(addprefix $(O)/selftests/,$(SELFTESTS_VM) $(SELFTESTS_AFTER))

$(KSFT_INC)/kselftest_harness.h:
	scripts/kselftest-headers.sh $(KSFT_DIR)

selftests: $(SELFTEST_BINS)
$(O)/selftests/%: selftests/%.c selftests/*.h uapi/linux/*.h \
		$(KSFT_INC)/kselftest_harness.h
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -I$(KSFT_INC) $(CFLAGS) $(KSFT_WARN) -o $@ $< -pthread

# ---- tests ------------------------------------------------------------------

# Every test program's TAP ends up in $(O)/results; the summary reads them all.
RESULTS := $(O)/results

deps:
	scripts/deps.sh

# The first target a fresh machine runs: install what is missing, then test.
check:
	@scripts/deps.sh --if-missing
	@rm -rf $(RESULTS)
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory -k host-check vm-check || true
	@scripts/tap-summary.sh $(RESULTS)/*/*.out $(RESULTS)/*/*.tap

host-check:
	@mkdir -p $(RESULTS)/host

vm-check: all
	VM_OUT=$(RESULTS)/vm-x86_64 VM_KERNEL=$(VMLINUZ) VM_MODULE=$(MODULE) \
	VM_FILES="$(SELFTEST_BINS)" VM_RUN="$(SELFTESTS_VM)" \
	VM_AFTER="$(SELFTESTS_AFTER)" scripts/vm-run.sh
	@rm -rf $(RESULTS)/vm-x86_64/root $(RESULTS)/vm-x86_64/initramfs.gz

checkpatch: $(KSFT_INC)/kselftest_harness.h
	perl $(KSFT_DIR)/scripts/checkpatch.pl --no-tree --strict -f kmod/*.c kmod/arch/*/*.h

clean:
	rm -rf $(BUILD)
