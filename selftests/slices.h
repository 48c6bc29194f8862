/* SPDX-License-Identifier: GPL-2.0 */
/* Measures how long preempted fibers really run: shared by a test and a benchmark. */
#ifndef _SELFTESTS_SLICES_H
#define _SELFTESTS_SLICES_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "fiber.h"

#define SLICES_MAX_RUNS	4096

struct slices {
	atomic_bool stop;
	uint64_t start_ns, start_ticks;		/* for the tick rate */
	uint64_t runs_ns[SLICES_MAX_RUNS];	/* each run's length, in counter ticks */
	atomic_int nr_runs;
};

/*
 * The CPU's counter, read in the program's own code: a system call in the
 * loop (clock_gettime of the thread's CPU clock) would be where most
 * preemption signals land, and be deferred there.
 */
static inline uint64_t slices_ticks(void)
{
#if defined(__x86_64__)
	return __builtin_ia32_rdtsc();
#elif defined(__aarch64__)
	uint64_t v;

	__asm__ volatile("isb; mrs %0, cntvct_el0" : "=r"(v));
	return v;
#endif
}

static inline uint64_t slices_mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

/*
 * Spins in the program's own code; every 2^16 iterations looks at its run
 * count: a new run means the last one ended at the previous look, so each
 * run's length is known to within one look (tens of microseconds), in
 * counter ticks (converted by slices_percentile()).
 */
static inline void *slices_spin(void *arg)
{
	struct slices *sl = arg;
	struct fiber_stats st;
	uint64_t runs = 0, start = 0, last = 0, now;
	volatile unsigned long i = 0;
	int n;

	while (!atomic_load_explicit(&sl->stop, memory_order_relaxed)) {
		if (++i & 0xffff)
			continue;
		fiber_stats(fiber_self(), &st);
		now = slices_ticks();
		if (st.runs != runs) {
			/* The first run of each fiber starts before it is seen. */
			if (runs) {
				n = atomic_fetch_add(&sl->nr_runs, 1);
				if (n < SLICES_MAX_RUNS)
					sl->runs_ns[n] = last - start;
			}
			runs = st.runs;
			start = now;
		}
		last = now;
	}
	return NULL;
}

static int slices_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Before the fibers start: the reference for the counter's rate. */
static inline void slices_begin(struct slices *sl)
{
	sl->start_ns = slices_mono_ns();
	sl->start_ticks = slices_ticks();
}

/* Sorts the runs; returns the p-th percentile (0-100) of their lengths in ns. */
static inline uint64_t slices_percentile(struct slices *sl, int p)
{
	double ns_per_tick = (double)(slices_mono_ns() - sl->start_ns) /
			     (double)(slices_ticks() - sl->start_ticks);
	int n = atomic_load(&sl->nr_runs);

	if (n > SLICES_MAX_RUNS)
		n = SLICES_MAX_RUNS;
	if (!n)
		return 0;
	qsort(sl->runs_ns, n, sizeof(sl->runs_ns[0]), slices_cmp);
	return (uint64_t)(sl->runs_ns[(n - 1) * p / 100] * ns_per_tick);
}

#endif /* _SELFTESTS_SLICES_H */
