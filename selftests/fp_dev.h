/* SPDX-License-Identifier: GPL-2.0 */
/* Helpers shared by the selftests that talk to /dev/fiber_preempt directly. */
#ifndef _SELFTESTS_FP_DEV_H
#define _SELFTESTS_FP_DEV_H

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/fiber_preempt.h>

/* A control block the way a library would keep one, aligned as required. */
struct fp_test_ctl {
	struct fiber_preempt_ctl ctl;
} __attribute__((aligned(FIBER_PREEMPT_CTL_ALIGN)));

/* Stands in for a trampoline: never reached, since the slice is huge. */
static void fp_test_upcall(void)
{
	__builtin_trap();
}

static inline int fp_open(void)
{
	return open(FIBER_PREEMPT_DEVICE, O_RDWR | O_CLOEXEC);
}

/*
 * A valid registration that never preempts: the longest slice and one
 * preemptible range that holds no code this thread runs.
 */
static inline void fp_fill_register(struct fiber_preempt_register *reg,
				    struct fp_test_ctl *tctl)
{
	memset(tctl, 0, sizeof(*tctl));
	tctl->ctl.size = sizeof(tctl->ctl);
	memset(reg, 0, sizeof(*reg));
	reg->size = sizeof(*reg);
	reg->ctl = (uintptr_t)&tctl->ctl;
	reg->upcall = (uintptr_t)fp_test_upcall;
	reg->upcall_end = reg->upcall + 16;
	reg->slice_ns = FIBER_PREEMPT_MAX_SLICE_NS;
	reg->nr_ranges = 1;
	reg->ranges[0].start = 0x1000;
	reg->ranges[0].end = 0x2000;
}

/* ioctl() as -errno or 0, so ASSERT_EQ names the errno that came back. */
static inline int fp_ioctl(int fd, unsigned long cmd, void *arg)
{
	return ioctl(fd, cmd, arg) ? -errno : 0;
}

/*
 * Every registration and every open file holds one module reference, so
 * the module's refcount is the count of both: a registration leaked by an
 * exit path shows up here.
 */
static inline int fp_module_refcnt(void)
{
	FILE *f = fopen("/sys/module/fiber_preempt/refcnt", "r");
	int n = -1;

	if (!f)
		return -1;
	if (fscanf(f, "%d", &n) != 1)
		n = -1;
	fclose(f);
	return n;
}

/*
 * The refcount once it is want, or what it is after a second:
 * pthread_join() returns once the kernel clears the thread's tid, in
 * exit_mm(), a little before the exit tracepoint ends the registration.
 */
static inline int fp_settled_refcnt(int want)
{
	int i, n = fp_module_refcnt();

	for (i = 0; i < 1000 && n != want; i++) {
		usleep(1000);
		n = fp_module_refcnt();
	}
	return n;
}

#define FP_REQUIRE_DEVICE(fd) do {					\
	if ((fd) < 0 && errno == ENOENT)				\
		SKIP(return, FIBER_PREEMPT_DEVICE " absent: module not loaded"); \
	ASSERT_LE(0, (fd)) TH_LOG("open: %s", strerror(errno));	\
} while (0)

#endif /* _SELFTESTS_FP_DEV_H */
