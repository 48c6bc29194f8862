/* SPDX-License-Identifier: GPL-2.0 */
/* Helpers for the selftests that run libfiber in each preemption mode. */
#ifndef _SELFTESTS_FIBER_TEST_H
#define _SELFTESTS_FIBER_TEST_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fiber.h"

/*
 * A fixture with no state of its own whose tests run once per preemption
 * mode: kmod and signal (variant->mode).
 */
#define FIBER_MODE_FIXTURE(fixture)					\
	FIXTURE(fixture) {};						\
	FIXTURE_SETUP(fixture) {}					\
	FIXTURE_TEARDOWN(fixture) {}					\
	FIXTURE_VARIANT(fixture) { enum fiber_preempt_mode mode; };	\
	FIXTURE_VARIANT_ADD(fixture, kmod) { .mode = FIBER_PREEMPT_KMOD }; \
	FIXTURE_VARIANT_ADD(fixture, signal) { .mode = FIBER_PREEMPT_SIGNAL }

/* Starts the scheduler, or skips the test when the mode cannot run here. */
#define FIBER_START(cfg) do {						\
	int __ret = fiber_sched_start(cfg);				\
	if (__ret == -ENODEV)						\
		SKIP(return, "kmod mode: /dev/fiber_preempt absent (module not loaded)"); \
	ASSERT_EQ(0, __ret) TH_LOG("fiber_sched_start: %s", strerror(-__ret)); \
	ASSERT_EQ((cfg)->mode, fiber_sched_mode());			\
} while (0)

/* Skips when worker 0 has no ring (qemu-user has no io_uring). */
#define SKIP_WITHOUT_RING() do {					\
	struct fiber_worker_stats __st;					\
	ASSERT_EQ(0, fiber_worker_stats(0, &__st));			\
	if (!__st.ring_entries) {					\
		fiber_sched_stop();					\
		SKIP(return, "no io_uring in this kernel or emulator: calls block"); \
	}								\
} while (0)

/*
 * How many times slower than a guest on a production kernel this run may
 * be: FIBER_TEST_SLOWDOWN, which a lane sets when its kernel checks every
 * memory access and lock (make check-debug). Tests that count events over
 * a stretch of wall-clock time run that much longer, and wall-clock bounds
 * are that much wider; what they assert stays the same.
 */
static inline unsigned int test_slowdown(void)
{
	const char *env = getenv("FIBER_TEST_SLOWDOWN");
	long factor = env ? strtol(env, NULL, 10) : 1;

	return factor >= 1 && factor <= 100 ? factor : 1;
}

static inline uint64_t test_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

/* CPU time of the calling thread: the worker's, from inside a fiber. */
static inline uint64_t test_thread_cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

/* Sleeps in 10 ms steps until cond holds or limit_ns have passed. */
#define FIBER_WAIT_FOR(cond, limit_ns) do {				\
	uint64_t __deadline = test_now_ns() + (limit_ns);		\
	while (!(cond) && test_now_ns() < __deadline)			\
		fiber_sleep(10000000);					\
} while (0)

/* Sums one statistic over all workers. */
#define FIBER_STAT_SUM(field) ({					\
	struct fiber_worker_stats __st;					\
	uint64_t __sum = 0;						\
	unsigned int __i;						\
	for (__i = 0; __i < fiber_worker_count(); __i++)		\
		if (!fiber_worker_stats(__i, &__st))			\
			__sum += __st.field;				\
	__sum;								\
})

/* A xorshift generator: fibers get distinct, reproducible values. */
static inline uint64_t test_rand(uint64_t *state)
{
	uint64_t x = *state;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *state = x;
}

#endif /* _SELFTESTS_FIBER_TEST_H */
